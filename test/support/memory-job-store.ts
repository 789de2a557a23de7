// In-memory JobStore and WebhookSecrets for tests (the outbox is memory-outbox.ts's), kept as close to the ports'
// documented behaviour as a map can be: leases with expiry, fair claims (fewest running first, each
// tenant's oldest first), per-batch completion seqs, exactly one batchFinished per batch.
import { randomBytes } from 'node:crypto';
import type { BatchRecord, JobStore, StoredJob, WebhookSecrets } from '../../src/core/ports.ts';
import { EXECUTION_STATUSES, type BatchInfo, type BatchItem, type ExecutionResult, type ExecutionStatus, type PendingState, type WebhookState } from '../../src/core/schemas.ts';

interface JobRow {
  job: StoredJob;
  state: 'queued' | 'running' | 'done';
  owner: string | null;
  leaseUntilMs: number;
  notBeforeMs: number;
  status: ExecutionStatus | null;
}

interface BatchRow {
  record: BatchRecord;
  seq: number;
  events: Array<{ seq: number; index: number }>;
}

const iso = (ms: number) => new Date(ms).toISOString();
const zeroCounts = () => Object.fromEntries(EXECUTION_STATUSES.map((s) => [s, 0])) as Record<ExecutionStatus, number>;

export class MemoryJobStore implements JobStore {
  readonly jobs = new Map<string, JobRow>();
  readonly batches = new Map<string, BatchRow>();
  /** Calls made, for tests that check what the runner asked. */
  readonly calls = { claim: 0, renew: [] as Array<{ owner: string; ids: string[]; untilMs: number }>, release: [] as Array<{ id: string; notBeforeMs: number }>, complete: [] as string[] };
  /** Set to make every method throw it. */
  failWith: Error | undefined;

  /** `resultOf` finds a done item's result (the ExecutionStore, same id). */
  constructor(private readonly resultOf: (id: string) => Promise<ExecutionResult | undefined> = async () => undefined) {}

  private check(): void {
    if (this.failWith) throw this.failWith;
  }

  async createBatch(batch: { id: string; tenant: string; label: string | null; webhookUrl: string | null; createdAtMs: number }, items: StoredJob[]): Promise<void> {
    this.check();
    if (this.batches.has(batch.id)) throw new Error(`batch ${batch.id} exists`);
    const record: BatchRecord = {
      id: batch.id,
      tenant: batch.tenant,
      state: 'running',
      label: batch.label,
      total: items.length,
      done: 0,
      byStatus: zeroCounts(),
      createdAt: iso(batch.createdAtMs),
      finishedAt: null,
      webhook: batch.webhookUrl === null ? null : { url: batch.webhookUrl, state: 'pending' },
    };
    this.batches.set(batch.id, { record, seq: 0, events: [] });
    for (const job of items) this.add(job);
  }

  async createJob(job: StoredJob): Promise<void> {
    this.check();
    this.add(job);
  }

  private add(job: StoredJob): void {
    if (this.jobs.has(job.id)) throw new Error(`job ${job.id} exists`);
    this.jobs.set(job.id, { job: structuredClone(job), state: 'queued', owner: null, leaseUntilMs: 0, notBeforeMs: 0, status: null });
  }

  async claim(opts: { owner: string; max: number; nowMs: number; leaseMs: number; skipTenants?: string[] | undefined }): Promise<StoredJob[]> {
    this.check();
    this.calls.claim++;
    const skip = new Set(opts.skipTenants ?? []);
    const running = new Map<string, number>();
    for (const r of this.jobs.values()) if (r.state === 'running' && r.leaseUntilMs > opts.nowMs) running.set(r.job.tenant, (running.get(r.job.tenant) ?? 0) + 1);
    const claimable = (r: JobRow) =>
      !skip.has(r.job.tenant) && ((r.state === 'queued' && r.notBeforeMs <= opts.nowMs) || (r.state === 'running' && r.leaseUntilMs <= opts.nowMs));
    const out: StoredJob[] = [];
    while (out.length < opts.max) {
      const candidates = [...this.jobs.values()].filter(claimable);
      if (candidates.length === 0) break;
      candidates.sort(
        (a, b) =>
          (running.get(a.job.tenant) ?? 0) - (running.get(b.job.tenant) ?? 0) || a.job.createdAtMs - b.job.createdAtMs || a.job.index - b.job.index || (a.job.id < b.job.id ? -1 : 1),
      );
      const row = candidates[0] as JobRow;
      row.state = 'running';
      row.owner = opts.owner;
      row.leaseUntilMs = opts.nowMs + opts.leaseMs;
      running.set(row.job.tenant, (running.get(row.job.tenant) ?? 0) + 1);
      out.push(structuredClone(row.job));
    }
    return out;
  }

  async renew(owner: string, ids: string[], untilMs: number): Promise<void> {
    this.check();
    this.calls.renew.push({ owner, ids: [...ids], untilMs });
    for (const id of ids) {
      const r = this.jobs.get(id);
      if (r && r.state === 'running' && r.owner === owner) r.leaseUntilMs = untilMs;
    }
  }

  async release(id: string, notBeforeMs: number): Promise<void> {
    this.check();
    this.calls.release.push({ id, notBeforeMs });
    const r = this.jobs.get(id);
    if (!r || r.state === 'done') return;
    r.state = 'queued';
    r.owner = null;
    r.notBeforeMs = notBeforeMs;
  }

  async requeueOwned(owner: string): Promise<number> {
    this.check();
    let n = 0;
    for (const r of this.jobs.values()) {
      if (r.state === 'running' && r.owner === owner) {
        r.state = 'queued';
        r.owner = null;
        r.notBeforeMs = 0;
        n++;
      }
    }
    return n;
  }

  async complete(id: string, status: ExecutionStatus, nowMs: number): Promise<{ batchFinished: BatchRecord | null }> {
    this.check();
    this.calls.complete.push(id);
    const r = this.jobs.get(id);
    if (!r || r.state === 'done') return { batchFinished: null };
    r.state = 'done';
    r.status = status;
    r.owner = null;
    if (r.job.batchId === null) return { batchFinished: null };
    const b = this.batches.get(r.job.batchId);
    if (!b) return { batchFinished: null };
    b.record.done++;
    b.record.byStatus[status]++;
    b.seq++;
    b.events.push({ seq: b.seq, index: r.job.index });
    if (b.record.done < b.record.total) return { batchFinished: null };
    // A batch DELETE ended early stays `cancelled`; either way it is finished now, once.
    if (b.record.state === 'running') b.record.state = this.cancelled.has(b.record.id) ? 'cancelled' : 'completed';
    b.record.finishedAt = iso(nowMs);
    return { batchFinished: structuredClone(b.record) };
  }

  private readonly cancelled = new Set<string>();

  async openJobs(tenant: string): Promise<number> {
    this.check();
    return [...this.jobs.values()].filter((r) => r.state !== 'done' && r.job.tenant === tenant).length;
  }

  async pending(id: string, tenant?: string): Promise<{ state: PendingState; batchId: string | null; createdAt: string } | undefined> {
    this.check();
    const r = this.jobs.get(id);
    if (!r || r.state === 'done' || (tenant !== undefined && r.job.tenant !== tenant)) return undefined;
    return { state: r.state, batchId: r.job.batchId, createdAt: iso(r.job.createdAtMs) };
  }

  async batch(id: string, tenant?: string): Promise<BatchRecord | undefined> {
    this.check();
    const b = this.batches.get(id);
    if (!b || (tenant !== undefined && b.record.tenant !== tenant)) return undefined;
    return structuredClone(b.record);
  }

  private async item(row: JobRow): Promise<BatchItem> {
    let result: BatchItem['result'] = null;
    if (row.state === 'done') {
      const full = await this.resultOf(row.job.id);
      if (full) {
        const { files: _files, outputs: _outputs, ...summary } = full;
        result = summary;
      }
    }
    return { index: row.job.index, executionId: row.job.id, state: row.state, result };
  }

  private itemsOf(batchId: string): JobRow[] {
    return [...this.jobs.values()].filter((r) => r.job.batchId === batchId).sort((a, b) => a.job.index - b.job.index);
  }

  async batchItems(id: string, query: { limit: number; cursor?: string | undefined }): Promise<{ items: BatchItem[]; nextCursor: string | null }> {
    this.check();
    const after = query.cursor === undefined ? -1 : Number.parseInt(query.cursor, 10);
    if (!Number.isSafeInteger(after)) return { items: [], nextCursor: null };
    const rows = this.itemsOf(id).filter((r) => r.job.index > after);
    const page = rows.slice(0, query.limit);
    const items = await Promise.all(page.map((r) => this.item(r)));
    const last = page.at(-1);
    return { items, nextCursor: rows.length > query.limit && last ? String(last.job.index) : null };
  }

  async batchEvents(id: string, afterSeq: number, limit: number): Promise<Array<{ seq: number; item: BatchItem }>> {
    this.check();
    const b = this.batches.get(id);
    if (!b) return [];
    const rows = this.itemsOf(id);
    const out: Array<{ seq: number; item: BatchItem }> = [];
    for (const e of b.events.filter((ev) => ev.seq > afterSeq).slice(0, limit)) {
      const row = rows.find((r) => r.job.index === e.index) as JobRow;
      out.push({ seq: e.seq, item: await this.item(row) });
    }
    return out;
  }

  async listBatches(query: { tenant?: string | undefined; limit: number; cursor?: string | undefined }): Promise<{ items: BatchInfo[]; nextCursor: string | null }> {
    this.check();
    // Newest first: by creation time, then by insertion order reversed.
    const all = [...this.batches.values()]
      .map((b, order) => ({ b, order }))
      .filter(({ b }) => query.tenant === undefined || b.record.tenant === query.tenant)
      .sort((x, y) => y.b.record.createdAt.localeCompare(x.b.record.createdAt) || y.order - x.order);
    const start = query.cursor === undefined ? 0 : Number.parseInt(query.cursor, 10);
    if (!Number.isSafeInteger(start) || start < 0) return { items: [], nextCursor: null };
    const page = all.slice(start, start + query.limit);
    const items = page.map(({ b }) => {
      const { tenant: _tenant, ...info } = structuredClone(b.record);
      return info;
    });
    return { items, nextCursor: start + query.limit < all.length ? String(start + query.limit) : null };
  }

  async cancelBatch(id: string, owner: string, nowMs: number, leaseMs: number): Promise<StoredJob[]> {
    this.check();
    const b = this.batches.get(id);
    if (!b) return [];
    this.cancelled.add(id);
    const taken: StoredJob[] = [];
    for (const r of this.itemsOf(id)) {
      if (r.state !== 'queued') continue;
      r.state = 'running';
      r.owner = owner;
      r.leaseUntilMs = nowMs + leaseMs;
      taken.push(structuredClone(r.job));
    }
    return taken;
  }

  async setBatchWebhook(id: string, state: WebhookState): Promise<void> {
    this.check();
    const b = this.batches.get(id);
    if (b?.record.webhook) b.record.webhook.state = state;
  }

  /** The state of a job, for assertions. */
  stateOf(id: string): JobRow['state'] | undefined {
    return this.jobs.get(id)?.state;
  }
}

export class MemoryWebhookSecrets implements WebhookSecrets {
  private readonly secrets = new Map<string, Buffer>();

  async secret(tenant: string): Promise<Buffer> {
    let s = this.secrets.get(tenant);
    if (!s) {
      s = randomBytes(32);
      this.secrets.set(tenant, s);
    }
    return s;
  }

  async rotate(tenant: string): Promise<Buffer> {
    const s = randomBytes(32);
    this.secrets.set(tenant, s);
    return s;
  }
}
