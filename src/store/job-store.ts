// Async executions and batches in SQLite, next to the history (the same database, so a batch's
// items read their results with a join). Every change that reads before it writes runs in an
// IMMEDIATE transaction: it holds the write lock from its first read, so two processes on one
// file never take the same job or give a batch's completion seq twice.
import type { Statement, Transaction } from 'better-sqlite3';
import { batchInfoOf } from '../core/job-shapes.ts';
import type { BatchRecord, JobStore, StoredJob } from '../core/ports.ts';
import type { BatchInfo, BatchItem, ExecutionStatus, PendingState, WebhookState } from '../core/schemas.ts';
import { checkLimit, decodeCursor, pageOf } from './codec.ts';
import type { SqliteDatabase } from './db.ts';
import {
  BATCH_COLUMNS,
  JOB_COLUMNS,
  OPEN_TENANTS,
  batchItem,
  batchRecord,
  checkBatch,
  checkJob,
  checkMax,
  checkStatus,
  claimable,
  endedBefore,
  firstIndexOf,
  itemCursor,
  ms,
  pickFairly,
  seqAfter,
  storedJob,
  type BatchRow,
  type EndedRetention,
  type ItemRow,
  type JobRow,
} from './job-codec.ts';

type Params = Record<string, string | number | null>;

export { OPEN_TENANTS };

/** The claim's condition as SQLite's statements name the time (@now). */
export const CLAIMABLE = claimable('@now');

export class SqliteJobStore implements JobStore {
  private readonly insertBatch: Statement<[Params]>;
  private readonly insertJob: Statement<[Params]>;
  private readonly openTenants: Statement<[], string>;
  private readonly claimable: Statement<[Params], JobRow>;
  private readonly runningByTenant: Statement<[number], { tenant: string; n: number }>;
  private readonly take: Statement<[Params]>;
  private readonly renewOne: Statement<[Params]>;
  private readonly releaseOne: Statement<[Params]>;
  private readonly requeue: Statement<[string]>;
  private readonly jobState: Statement<[string], { seq: number; batch_id: string | null; state: string }>;
  private readonly deleteJob: Statement<[number]>;
  private readonly countCompletion: Statement<[Params], BatchRow & { done_seq: number }>;
  private readonly markDone: Statement<[Params]>;
  private readonly openOfTenant: Statement<[string], number>;
  private readonly pendingOf: Statement<[Params], { state: string; batch_id: string | null; created_at_ms: number }>;
  private readonly batchOf: Statement<[Params], BatchRow>;
  private readonly itemsPage: Statement<[string, number, number], ItemRow>;
  private readonly eventsPage: Statement<[string, number, number], ItemRow & { done_seq: number }>;
  private readonly batchesPage: Statement<[number, number], BatchRow & { seq: number }>;
  private readonly batchesPageOfTenant: Statement<[string, number, number], BatchRow & { seq: number }>;
  private readonly queuedOfBatch: Statement<[string], JobRow>;
  private readonly takeQueuedOfBatch: Statement<[Params]>;
  private readonly requestCancel: Statement<[string]>;
  private readonly setWebhook: Statement<[string, string]>;
  private readonly pruneItems: Statement<[number]>;
  private readonly pruneBatches: Statement<[number]>;
  private readonly createBatchTx: Transaction<(batch: Params, items: readonly StoredJob[]) => void>;
  private readonly claimTx: Transaction<(opts: { owner: string; max: number; now: number; until: number; skip: ReadonlySet<string> }) => StoredJob[]>;
  private readonly completeTx: Transaction<(id: string, status: ExecutionStatus, now: number) => BatchRecord | null>;
  private readonly cancelTx: Transaction<(id: string, owner: string, until: number) => StoredJob[]>;
  private readonly renewTx: Transaction<(owner: string, ids: readonly string[], until: number) => void>;

  /** `retention`: finished batches older than that are pruned, with their items, as new ones are added. */
  constructor(db: SqliteDatabase, retention: EndedRetention = {}) {
    endedBefore(retention, 0); // refuses a bad setting now, not at the first batch
    this.insertBatch = db.prepare(
      `INSERT INTO batches (id, tenant, label, webhook_url, webhook_state, total, created_at_ms)
       VALUES (@id, @tenant, @label, @webhookUrl, @webhookState, @total, @createdAtMs)`,
    );
    this.insertJob = db.prepare(
      `INSERT INTO jobs (id, tenant, batch_id, idx, request, request_id, webhook_url, state, created_at_ms)
       VALUES (@id, @tenant, @batchId, @idx, @request, @requestId, @webhookUrl, 'queued', @createdAtMs)`,
    );
    this.openTenants = db.prepare<[], string>(`${OPEN_TENANTS} SELECT tenant FROM t WHERE tenant IS NOT NULL`).pluck();
    this.claimable = db.prepare(`SELECT ${JOB_COLUMNS} FROM jobs WHERE tenant = @tenant AND ${CLAIMABLE} ORDER BY created_at_ms, seq LIMIT @max`);
    this.runningByTenant = db.prepare(`SELECT tenant, COUNT(*) AS n FROM jobs WHERE state = 'running' AND lease_until_ms > ? GROUP BY tenant`);
    this.take = db.prepare(`UPDATE jobs SET state = 'running', owner = @owner, lease_until_ms = @until WHERE seq = @seq`);
    this.renewOne = db.prepare(`UPDATE jobs SET lease_until_ms = @until WHERE id = @id AND owner = @owner AND state = 'running'`);
    this.releaseOne = db.prepare(
      `UPDATE jobs SET state = 'queued', owner = NULL, lease_until_ms = NULL, not_before_ms = @notBefore WHERE id = @id AND state = 'running'`,
    );
    this.requeue = db.prepare(`UPDATE jobs SET state = 'queued', owner = NULL, lease_until_ms = NULL, not_before_ms = 0 WHERE owner = ? AND state = 'running'`);
    this.jobState = db.prepare('SELECT seq, batch_id, state FROM jobs WHERE id = ?');
    this.deleteJob = db.prepare('DELETE FROM jobs WHERE seq = ?');
    // SET reads the old values and RETURNING the new ones: next_seq - 1 is the seq this completion takes.
    this.countCompletion = db.prepare(
      `UPDATE batches SET
         done = done + 1,
         next_seq = next_seq + 1,
         by_status = json_set(by_status, '$.' || @status, COALESCE(json_extract(by_status, '$.' || @status), 0) + 1),
         state = CASE WHEN done + 1 >= total THEN (CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'completed' END) ELSE state END,
         finished_at_ms = CASE WHEN done + 1 >= total THEN @now ELSE finished_at_ms END
       WHERE id = @batchId
       RETURNING ${BATCH_COLUMNS}, next_seq - 1 AS done_seq`,
    );
    // A done job's request is never read again (claims take jobs not done): its text, up to
    // megabytes of code and files, is dropped rather than kept for as long as the batch is.
    this.markDone = db.prepare(
      `UPDATE jobs SET state = 'done', status = @status, done_seq = @doneSeq, owner = NULL, lease_until_ms = NULL, request = '' WHERE seq = @seq`,
    );
    this.openOfTenant = db.prepare<[string], number>(`SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state <> 'done'`).pluck();
    this.pendingOf = db.prepare(`SELECT state, batch_id, created_at_ms FROM jobs WHERE id = @id AND (@tenant IS NULL OR tenant = @tenant) AND state <> 'done'`);
    this.batchOf = db.prepare(`SELECT ${BATCH_COLUMNS} FROM batches WHERE id = @id AND (@tenant IS NULL OR tenant = @tenant)`);
    const itemColumns = `j.idx, j.id, j.state, e.result FROM jobs j LEFT JOIN executions e ON e.id = j.id AND j.state = 'done'`;
    this.itemsPage = db.prepare(`SELECT ${itemColumns} WHERE j.batch_id = ? AND j.idx >= ? ORDER BY j.idx LIMIT ?`);
    this.eventsPage = db.prepare(`SELECT j.done_seq, ${itemColumns} WHERE j.batch_id = ? AND j.done_seq > ? ORDER BY j.done_seq LIMIT ?`);
    this.batchesPage = db.prepare(`SELECT seq, ${BATCH_COLUMNS} FROM batches WHERE seq < ? ORDER BY seq DESC LIMIT ?`);
    this.batchesPageOfTenant = db.prepare(`SELECT seq, ${BATCH_COLUMNS} FROM batches WHERE tenant = ? AND seq < ? ORDER BY seq DESC LIMIT ?`);
    this.queuedOfBatch = db.prepare(`SELECT ${JOB_COLUMNS} FROM jobs WHERE batch_id = ? AND state = 'queued' ORDER BY idx`);
    this.takeQueuedOfBatch = db.prepare(`UPDATE jobs SET state = 'running', owner = @owner, lease_until_ms = @until WHERE batch_id = @id AND state = 'queued'`);
    this.requestCancel = db.prepare(`UPDATE batches SET cancel_requested = 1 WHERE id = ? AND state = 'running'`);
    this.setWebhook = db.prepare('UPDATE batches SET webhook_state = ? WHERE id = ? AND webhook_url IS NOT NULL');

    this.pruneItems = db.prepare('DELETE FROM jobs WHERE batch_id IN (SELECT id FROM batches WHERE finished_at_ms < ?)');
    this.pruneBatches = db.prepare('DELETE FROM batches WHERE finished_at_ms < ?');

    this.createBatchTx = db.transaction((batch: Params, items: readonly StoredJob[]) => {
      const before = endedBefore(retention, Number(batch.createdAtMs));
      if (before !== null) {
        this.pruneItems.run(before);
        this.pruneBatches.run(before);
      }
      this.insertBatch.run(batch);
      for (const item of items) this.insertJob.run(jobParams(item));
    });
    this.claimTx = db.transaction(({ owner, max, now, until, skip }) => {
      const running = new Map(this.runningByTenant.all(now).map((r) => [r.tenant, r.n]));
      const candidates: JobRow[] = [];
      for (const tenant of this.openTenants.all()) {
        if (!skip.has(tenant)) candidates.push(...this.claimable.all({ tenant, now, max }));
      }
      const picked = pickFairly(candidates, running, max);
      for (const row of picked) this.take.run({ seq: row.seq, owner, until });
      return picked.map(storedJob);
    });
    this.completeTx = db.transaction((id: string, status: ExecutionStatus, now: number) => {
      const job = this.jobState.get(id);
      if (job === undefined || job.state === 'done') return null;
      if (job.batch_id === null) {
        // Nothing reads an async execution's job once its result is saved.
        this.deleteJob.run(job.seq);
        return null;
      }
      const batch = this.countCompletion.get({ batchId: job.batch_id, status, now });
      if (batch === undefined) throw new Error(`job ${id} belongs to batch ${job.batch_id}, which is not stored`);
      this.markDone.run({ seq: job.seq, status, doneSeq: batch.done_seq });
      return Number(batch.done) === Number(batch.total) ? batchRecord(batch) : null;
    });
    this.renewTx = db.transaction((owner: string, ids: readonly string[], until: number) => {
      for (const id of ids) this.renewOne.run({ id, owner, until });
    });
    // A batch still running ends cancelled, even when the cancel found nothing queued any more.
    this.cancelTx = db.transaction((id: string, owner: string, until: number) => {
      this.requestCancel.run(id);
      const queued = this.queuedOfBatch.all(id);
      if (queued.length > 0) this.takeQueuedOfBatch.run({ id, owner, until });
      return queued.map(storedJob);
    });
  }

  async createBatch(batch: { id: string; tenant: string; label: string | null; webhookUrl: string | null; createdAtMs: number }, items: StoredJob[]): Promise<void> {
    checkBatch(batch, items);
    const params: Params = {
      id: batch.id,
      tenant: batch.tenant,
      label: batch.label,
      webhookUrl: batch.webhookUrl,
      webhookState: batch.webhookUrl === null ? null : 'pending',
      total: items.length,
      createdAtMs: ms(batch.createdAtMs),
    };
    this.createBatchTx.immediate(params, items);
  }

  async createJob(job: StoredJob): Promise<void> {
    checkJob(job);
    this.insertJob.run(jobParams(job));
  }

  async claim(opts: { owner: string; max: number; nowMs: number; leaseMs: number; skipTenants?: string[] | undefined }): Promise<StoredJob[]> {
    checkMax(opts.max);
    if (opts.max === 0) return [];
    const now = ms(opts.nowMs);
    const skip = new Set(opts.skipTenants ?? []);
    // Read first, outside a write transaction: a poll that finds nothing to claim never waits on (or
    // holds) the database's write lock, which would block this whole process while another holds it.
    const anything = this.openTenants.all().some((tenant) => !skip.has(tenant) && this.claimable.all({ tenant, now, max: 1 }).length > 0);
    if (!anything) return [];
    return this.claimTx.immediate({ owner: opts.owner, max: opts.max, now, until: now + ms(opts.leaseMs), skip });
  }

  async renew(owner: string, ids: string[], untilMs: number): Promise<void> {
    this.renewTx(owner, ids, ms(untilMs));
  }

  async release(id: string, notBeforeMs: number): Promise<void> {
    this.releaseOne.run({ id, notBefore: ms(notBeforeMs) });
  }

  async requeueOwned(owner: string): Promise<number> {
    return this.requeue.run(owner).changes;
  }

  async complete(id: string, status: ExecutionStatus, nowMs: number): Promise<{ batchFinished: BatchRecord | null }> {
    return { batchFinished: this.completeTx.immediate(id, checkStatus(status), ms(nowMs)) };
  }

  async openJobs(tenant: string): Promise<number> {
    return this.openOfTenant.get(tenant) ?? 0;
  }

  async pending(id: string, tenant?: string): Promise<{ state: PendingState; batchId: string | null; createdAt: string } | undefined> {
    const row = this.pendingOf.get({ id, tenant: tenant ?? null });
    if (row === undefined) return undefined;
    return { state: row.state as PendingState, batchId: row.batch_id, createdAt: new Date(row.created_at_ms).toISOString() };
  }

  async batch(id: string, tenant?: string): Promise<BatchRecord | undefined> {
    const row = this.batchOf.get({ id, tenant: tenant ?? null });
    return row === undefined ? undefined : batchRecord(row);
  }

  async batchItems(id: string, query: { limit: number; cursor?: string | undefined }): Promise<{ items: BatchItem[]; nextCursor: string | null }> {
    const { limit, cursor } = query;
    checkLimit(limit);
    const from = cursor === undefined ? 0 : firstIndexOf(decodeCursor(cursor));
    return pageOf(this.itemsPage.all(id, from, limit + 1), limit, batchItem, (last) => itemCursor(last.idx));
  }

  async batchEvents(id: string, afterSeq: number, limit: number): Promise<Array<{ seq: number; item: BatchItem }>> {
    checkLimit(limit);
    return this.eventsPage.all(id, seqAfter(afterSeq), limit).map((row) => ({ seq: row.done_seq, item: batchItem(row) }));
  }

  async listBatches(query: { tenant?: string | undefined; limit: number; cursor?: string | undefined }): Promise<{ items: BatchInfo[]; nextCursor: string | null }> {
    const { tenant, limit, cursor } = query;
    checkLimit(limit);
    const before = cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor(cursor);
    const rows = tenant === undefined ? this.batchesPage.all(before, limit + 1) : this.batchesPageOfTenant.all(tenant, before, limit + 1);
    return pageOf(rows, limit, (r) => batchInfoOf(batchRecord(r)), (last) => last.seq);
  }

  async cancelBatch(id: string, owner: string, nowMs: number, leaseMs: number): Promise<StoredJob[]> {
    return this.cancelTx.immediate(id, owner, ms(nowMs) + ms(leaseMs));
  }

  async setBatchWebhook(id: string, state: WebhookState): Promise<void> {
    this.setWebhook.run(state, id);
  }
}

function jobParams(job: StoredJob): Params {
  return {
    id: job.id,
    tenant: job.tenant,
    batchId: job.batchId,
    idx: job.index,
    request: JSON.stringify(job.request),
    requestId: job.requestId,
    webhookUrl: job.webhookUrl,
    createdAtMs: ms(job.createdAtMs),
  };
}
