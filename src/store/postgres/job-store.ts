// Async executions and batches in PostgreSQL, shared by every node of a cluster: the same answers
// as the SQLite store. Nodes claim at once without waiting on each other (FOR UPDATE SKIP LOCKED:
// a job another node is taking is passed over, never taken twice), and a completion counts in its
// batch under the batch row's lock, so each gets its own seq and one node alone sees the batch end.
// Transactions that lock run at READ COMMITTED whatever the database's default: a statement that
// waited for a lock must see what the holder committed, not fail as a serialization conflict.
import type { Pool } from 'pg';
import { batchInfoOf } from '../../core/job-shapes.ts';
import type { BatchRecord, JobStore, StoredJob } from '../../core/ports.ts';
import type { BatchInfo, BatchItem, ExecutionStatus, PendingState, WebhookState } from '../../core/schemas.ts';
import { checkLimit, decodeCursor, pageOf } from '../codec.ts';
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
} from '../job-codec.ts';
import { hasNul } from './execution-store.ts';
import { inTransaction } from './tx.ts';

const CLAIMABLE = claimable('$1');

const LOCKING = 'BEGIN ISOLATION LEVEL READ COMMITTED';

/** Rows per INSERT of a batch's items, and request text per INSERT at most (whichever comes first). */
const INSERT_ROWS = 500;
const INSERT_BYTES = 4 * 1024 * 1024;

/** The batch's columns as the completion's CTE `b` returns them. */
const B_BATCH_COLUMNS = BATCH_COLUMNS.split(', ').map((col) => `b.${col}`).join(', ');

const ITEM_COLUMNS = `j.idx, j.id, j.state, e.result FROM jobs j LEFT JOIN executions e ON e.id = j.id AND j.state = 'done'`;

export class PostgresJobStore implements JobStore {
  /** `retention`: finished batches older than that are pruned, with their items, as new ones are added. */
  constructor(
    private readonly pool: Pool,
    private readonly retention: EndedRetention = {},
  ) {
    endedBefore(retention, 0); // refuses a bad setting now, not at the first batch
  }

  async createBatch(batch: { id: string; tenant: string; label: string | null; webhookUrl: string | null; createdAtMs: number }, items: StoredJob[]): Promise<void> {
    checkBatch(batch, items);
    const before = endedBefore(this.retention, batch.createdAtMs);
    await inTransaction(this.pool, 'BEGIN', async (c) => {
      if (before !== null) {
        await c.query('DELETE FROM jobs WHERE batch_id IN (SELECT id FROM batches WHERE finished_at_ms < $1)', [before]);
        await c.query('DELETE FROM batches WHERE finished_at_ms < $1', [before]);
      }
      await c.query(
        `INSERT INTO batches (id, tenant, label, webhook_url, webhook_state, total, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [batch.id, batch.tenant, batch.label, batch.webhookUrl, batch.webhookUrl === null ? null : 'pending', items.length, ms(batch.createdAtMs)],
      );
      for (const chunk of chunks(items.map(withText))) await this.insertJobs(c, chunk);
    });
  }

  async createJob(job: StoredJob): Promise<void> {
    checkJob(job);
    await this.insertJobs(this.pool, [withText(job)]);
  }

  async claim(opts: { owner: string; max: number; nowMs: number; leaseMs: number; skipTenants?: string[] | undefined }): Promise<StoredJob[]> {
    checkMax(opts.max);
    if (opts.max === 0) return [];
    const now = ms(opts.nowMs);
    const until = now + ms(opts.leaseMs);
    const skip = (opts.skipTenants ?? []).filter((t) => !hasNul(t));
    return inTransaction(this.pool, LOCKING, async (c) => {
      const running = await c.query<{ tenant: string; n: number }>(
        `SELECT tenant, count(*)::int AS n FROM jobs WHERE state = 'running' AND lease_until_ms > $1 GROUP BY tenant`,
        [now],
      );
      // The open tenants, then each tenant's oldest claimable jobs, locked, and those another claim
      // holds skipped.
      const { rows } = await c.query<JobRow>(
        `${OPEN_TENANTS}
         SELECT j.* FROM (SELECT tenant FROM t WHERE tenant IS NOT NULL AND tenant <> ALL ($3::text[])) AS o
         CROSS JOIN LATERAL (
           SELECT ${JOB_COLUMNS} FROM jobs
           WHERE jobs.tenant = o.tenant AND ${CLAIMABLE}
           ORDER BY created_at_ms, seq LIMIT $2
           FOR UPDATE SKIP LOCKED
         ) AS j`,
        [now, opts.max, skip],
      );
      const picked = pickFairly(rows, new Map(running.rows.map((r) => [r.tenant, r.n])), opts.max);
      if (picked.length > 0) {
        await c.query(`UPDATE jobs SET state = 'running', owner = $1, lease_until_ms = $2 WHERE seq = ANY ($3::bigint[])`, [
          opts.owner,
          until,
          picked.map((r) => r.seq),
        ]);
      }
      return picked.map(storedJob);
    });
  }

  async renew(owner: string, ids: string[], untilMs: number): Promise<void> {
    const live = ids.filter((id) => !hasNul(id));
    if (live.length === 0) return;
    await this.pool.query(`UPDATE jobs SET lease_until_ms = $3 WHERE id = ANY ($2::text[]) AND owner = $1 AND state = 'running'`, [owner, live, ms(untilMs)]);
  }

  async release(id: string, notBeforeMs: number): Promise<void> {
    if (hasNul(id)) return;
    await this.pool.query(
      `UPDATE jobs SET state = 'queued', owner = NULL, lease_until_ms = NULL, not_before_ms = $2 WHERE id = $1 AND state = 'running'`,
      [id, ms(notBeforeMs)],
    );
  }

  async requeueOwned(owner: string): Promise<number> {
    const { rowCount } = await this.pool.query(
      `UPDATE jobs SET state = 'queued', owner = NULL, lease_until_ms = NULL, not_before_ms = 0 WHERE owner = $1 AND state = 'running'`,
      [owner],
    );
    return rowCount ?? 0;
  }

  async complete(id: string, status: ExecutionStatus, nowMs: number): Promise<{ batchFinished: BatchRecord | null }> {
    checkStatus(status);
    const now = ms(nowMs);
    if (hasNul(id)) return { batchFinished: null };
    const batchFinished = await inTransaction(this.pool, LOCKING, async (c) => {
      // Locks the job: a second completion of it waits here, then finds it done. A done job's
      // request is never read again (claims take jobs not done), so its text is dropped.
      const job = await c.query<{ batch_id: string | null }>(
        `UPDATE jobs SET state = 'done', status = $2, owner = NULL, lease_until_ms = NULL, request = '' WHERE id = $1 AND state <> 'done' RETURNING batch_id`,
        [id, status],
      );
      const batchId = job.rows[0]?.batch_id;
      if (batchId === undefined) return null;
      if (batchId === null) {
        // Nothing reads an async execution's job once its result is saved.
        await c.query('DELETE FROM jobs WHERE id = $1', [id]);
        return null;
      }
      // The batch row's lock orders completions: each reads the count the previous one committed.
      // SET reads the old values and RETURNING the new ones: next_seq - 1 is this completion's seq.
      const { rows } = await c.query<BatchRow>(
        `WITH b AS (
           UPDATE batches SET
             done = done + 1,
             next_seq = next_seq + 1,
             by_status = jsonb_set(by_status, ARRAY[$2::text], to_jsonb(COALESCE((by_status ->> $2::text)::int, 0) + 1)),
             state = CASE WHEN done + 1 >= total THEN (CASE WHEN cancel_requested THEN 'cancelled' ELSE 'completed' END) ELSE state END,
             finished_at_ms = CASE WHEN done + 1 >= total THEN $3::bigint ELSE finished_at_ms END
           WHERE id = $1
           RETURNING ${BATCH_COLUMNS}, next_seq - 1 AS done_seq
         )
         UPDATE jobs SET done_seq = b.done_seq FROM b WHERE jobs.id = $4
         RETURNING ${B_BATCH_COLUMNS}`,
        [batchId, status, now, id],
      );
      const batch = rows[0];
      if (batch === undefined) throw new Error(`job ${id} belongs to batch ${batchId}, which is not stored`);
      return Number(batch.done) === Number(batch.total) ? batchRecord(batch) : null;
    });
    return { batchFinished };
  }

  async openJobs(tenant: string): Promise<number> {
    if (hasNul(tenant)) return 0;
    const { rows } = await this.pool.query<{ n: string }>(`SELECT COUNT(*) AS n FROM jobs WHERE tenant = $1 AND state <> 'done'`, [tenant]);
    return Number(rows[0]?.n ?? 0);
  }

  async pending(id: string, tenant?: string): Promise<{ state: PendingState; batchId: string | null; createdAt: string } | undefined> {
    if (hasNul(id) || (tenant !== undefined && hasNul(tenant))) return undefined;
    const { rows } = await this.pool.query<{ state: string; batch_id: string | null; created_at_ms: string }>(
      `SELECT state, batch_id, created_at_ms FROM jobs WHERE id = $1 AND state <> 'done'${tenant === undefined ? '' : ' AND tenant = $2'}`,
      tenant === undefined ? [id] : [id, tenant],
    );
    const row = rows[0];
    if (row === undefined) return undefined;
    return { state: row.state as PendingState, batchId: row.batch_id, createdAt: new Date(Number(row.created_at_ms)).toISOString() };
  }

  async batch(id: string, tenant?: string): Promise<BatchRecord | undefined> {
    if (hasNul(id) || (tenant !== undefined && hasNul(tenant))) return undefined;
    const { rows } = await this.pool.query<BatchRow>(
      `SELECT ${BATCH_COLUMNS} FROM batches WHERE id = $1${tenant === undefined ? '' : ' AND tenant = $2'}`,
      tenant === undefined ? [id] : [id, tenant],
    );
    const row = rows[0];
    return row === undefined ? undefined : batchRecord(row);
  }

  async batchItems(id: string, query: { limit: number; cursor?: string | undefined }): Promise<{ items: BatchItem[]; nextCursor: string | null }> {
    const { limit, cursor } = query;
    checkLimit(limit);
    const from = cursor === undefined ? 0 : firstIndexOf(decodeCursor(cursor));
    if (hasNul(id)) return { items: [], nextCursor: null };
    const { rows } = await this.pool.query<ItemRow>(`SELECT ${ITEM_COLUMNS} WHERE j.batch_id = $1 AND j.idx >= $2 ORDER BY j.idx LIMIT $3`, [
      id,
      from,
      limit + 1,
    ]);
    return pageOf(rows, limit, batchItem, (last) => itemCursor(last.idx));
  }

  async batchEvents(id: string, afterSeq: number, limit: number): Promise<Array<{ seq: number; item: BatchItem }>> {
    checkLimit(limit);
    if (hasNul(id)) return [];
    const { rows } = await this.pool.query<ItemRow & { done_seq: number }>(
      `SELECT j.done_seq, ${ITEM_COLUMNS} WHERE j.batch_id = $1 AND j.done_seq > $2 ORDER BY j.done_seq LIMIT $3`,
      [id, seqAfter(afterSeq), limit],
    );
    return rows.map((row) => ({ seq: row.done_seq, item: batchItem(row) }));
  }

  async listBatches(query: { tenant?: string | undefined; limit: number; cursor?: string | undefined }): Promise<{ items: BatchInfo[]; nextCursor: string | null }> {
    const { tenant, limit, cursor } = query;
    checkLimit(limit);
    const before = cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor(cursor);
    if (tenant !== undefined && hasNul(tenant)) return { items: [], nextCursor: null };
    const { rows } = await this.pool.query<BatchRow & { seq: string }>(
      `SELECT seq, ${BATCH_COLUMNS} FROM batches WHERE ${tenant === undefined ? '' : 'tenant = $3 AND '}seq < $1 ORDER BY seq DESC LIMIT $2`,
      tenant === undefined ? [before, limit + 1] : [before, limit + 1, tenant],
    );
    return pageOf(rows, limit, (r) => batchInfoOf(batchRecord(r)), (last) => Number(last.seq));
  }

  async cancelBatch(id: string, owner: string, nowMs: number, leaseMs: number): Promise<StoredJob[]> {
    const until = ms(nowMs) + ms(leaseMs);
    if (hasNul(id)) return [];
    // Jobs before the batch, as complete() locks them: the two never wait on each other in a circle.
    return inTransaction(this.pool, LOCKING, async (c) => {
      const { rows } = await c.query<JobRow>(
        `UPDATE jobs SET state = 'running', owner = $2, lease_until_ms = $3 WHERE batch_id = $1 AND state = 'queued' RETURNING ${JOB_COLUMNS}`,
        [id, owner, until],
      );
      // A batch still running ends cancelled, even when the cancel found nothing queued any more.
      await c.query(`UPDATE batches SET cancel_requested = true WHERE id = $1 AND state = 'running'`, [id]);
      return rows.sort((a, b) => a.idx - b.idx).map(storedJob);
    });
  }

  async setBatchWebhook(id: string, state: WebhookState): Promise<void> {
    if (hasNul(id)) return;
    await this.pool.query('UPDATE batches SET webhook_state = $2 WHERE id = $1 AND webhook_url IS NOT NULL', [id, state]);
  }

  /** Many jobs in one statement: a batch of thousands is a few round trips, not thousands. */
  private async insertJobs(c: Pick<Pool, 'query'>, jobs: ReadonlyArray<StoredJob & { text: string }>): Promise<void> {
    await c.query(
      `INSERT INTO jobs (id, tenant, batch_id, idx, request, request_id, webhook_url, state, created_at_ms)
       SELECT id, tenant, batch_id, idx, request, request_id, webhook_url, 'queued', created_at_ms
       FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::bigint[])
         AS u(id, tenant, batch_id, idx, request, request_id, webhook_url, created_at_ms)`,
      [
        jobs.map((j) => j.id),
        jobs.map((j) => j.tenant),
        jobs.map((j) => j.batchId),
        jobs.map((j) => j.index),
        jobs.map((j) => j.text),
        jobs.map((j) => j.requestId),
        jobs.map((j) => j.webhookUrl),
        jobs.map((j) => ms(j.createdAtMs)),
      ],
    );
  }
}

const withText = (job: StoredJob): StoredJob & { text: string } => ({ ...job, text: JSON.stringify(job.request) });

/** The items in runs of at most INSERT_ROWS rows and about INSERT_BYTES of request text. */
function* chunks<T extends { text: string }>(items: readonly T[]): Generator<T[]> {
  let chunk: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = item.text.length;
    if (chunk.length > 0 && (chunk.length >= INSERT_ROWS || bytes + size > INSERT_BYTES)) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(item);
    bytes += size;
  }
  if (chunk.length > 0) yield chunk;
}
