// What the SQLite and PostgreSQL job stores share so they answer alike: how rows read back as
// jobs, batches and items, which jobs a claim takes, and the checks on what is written.
import { PyboxError } from '../core/errors.ts';
import { resultSummary } from '../core/job-shapes.ts';
import type { BatchRecord, StoredDelivery, StoredJob, WebhookDelivery } from '../core/ports.ts';
import { EXECUTION_STATUSES, ExecutionRequest, type BatchItem, type ExecutionStatus, type WebhookState } from '../core/schemas.ts';
import { DAY_MS, parseStored, zeroByStatus } from './codec.ts';

/** PostgreSQL hands bigint columns back as text; SQLite as numbers. */
type Int = number | string;

/** A job's columns as a claim, createBatch or cancelBatch reads them. */
export interface JobRow {
  seq: Int;
  id: string;
  tenant: string;
  batch_id: string | null;
  idx: number;
  request: string;
  request_id: string | null;
  webhook_url: string | null;
  created_at_ms: Int;
}

export const JOB_COLUMNS = 'seq, id, tenant, batch_id, idx, request, request_id, webhook_url, created_at_ms';

export interface BatchRow {
  id: string;
  tenant: string;
  label: string | null;
  webhook_url: string | null;
  webhook_state: string | null;
  total: Int;
  done: Int;
  /** JSON text (SQLite) or the parsed object (PostgreSQL's jsonb). */
  by_status: string | Record<string, unknown>;
  state: string;
  created_at_ms: Int;
  finished_at_ms: Int | null;
}

export const BATCH_COLUMNS = 'id, tenant, label, webhook_url, webhook_state, total, done, by_status, state, created_at_ms, finished_at_ms';

/**
 * The tenants with jobs not done (`t`, ending with a NULL row), each found by one index seek past
 * the previous one, so a claim costs the number of tenants, not of queued jobs.
 */
export const OPEN_TENANTS = `
  WITH RECURSIVE t(tenant) AS (
    SELECT (SELECT tenant FROM jobs WHERE state <> 'done' ORDER BY tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT tenant FROM jobs WHERE state <> 'done' AND jobs.tenant > t.tenant ORDER BY tenant LIMIT 1) FROM t WHERE t.tenant IS NOT NULL
  )`;

/** A job a claim may take: queued and due, or running under a lease that ran out; `now` is the parameter's text (@now, $1). */
export function claimable(now: string): string {
  return `state <> 'done' AND ((state = 'queued' AND not_before_ms <= ${now}) OR (state = 'running' AND lease_until_ms <= ${now}))`;
}

/** A batch item: its job, and the stored result's JSON once it is done. */
export interface ItemRow {
  idx: number;
  id: string;
  state: string;
  result: string | null;
}

export interface DeliveryRow {
  id: string;
  tenant: string;
  url: string;
  batch_id: string | null;
  body: string;
  attempts: number;
  next_at_ms: Int;
  state: string;
  last_error: string | null;
  last_status: number | null;
}

export const DELIVERY_COLUMNS = 'id, tenant, url, batch_id, body, attempts, next_at_ms, state, last_error, last_status';

/** Bytes of a tenant's webhook signing secret: the 256 bits of the HMAC-SHA256 it keys. */
export const SECRET_BYTES = 32;

/** Longest last_error kept: a receiver's answer is its to choose, the row's size is not. */
export const MAX_ERROR_CHARS = 2000;

export function storedJob(row: JobRow): StoredJob {
  let json: unknown;
  try {
    json = JSON.parse(row.request);
  } catch (e) {
    throw new PyboxError('internal', `stored job ${row.id} has a request that is not valid JSON`, { cause: e });
  }
  const parsed = ExecutionRequest.safeParse(json);
  // Loud, as for stored results: a request shape that changed needs a migration.
  if (!parsed.success) throw new PyboxError('internal', `stored job ${row.id} has a request that does not match the request schema`, { details: parsed.error.issues });
  return {
    id: row.id,
    tenant: row.tenant,
    batchId: row.batch_id,
    index: row.idx,
    request: parsed.data,
    requestId: row.request_id,
    webhookUrl: row.webhook_url,
    createdAtMs: Number(row.created_at_ms),
  };
}

export function batchRecord(row: BatchRow): BatchRecord {
  const counts: unknown = typeof row.by_status === 'string' ? JSON.parse(row.by_status) : row.by_status;
  const byStatus = zeroByStatus();
  if (counts !== null && typeof counts === 'object') {
    for (const [status, n] of Object.entries(counts)) if (status in byStatus && typeof n === 'number') byStatus[status as ExecutionStatus] = n;
  }
  return {
    id: row.id,
    tenant: row.tenant,
    state: row.state as BatchRecord['state'],
    label: row.label,
    total: Number(row.total),
    done: Number(row.done),
    byStatus,
    createdAt: new Date(Number(row.created_at_ms)).toISOString(),
    finishedAt: row.finished_at_ms === null ? null : new Date(Number(row.finished_at_ms)).toISOString(),
    webhook: row.webhook_url === null ? null : { url: row.webhook_url, state: (row.webhook_state ?? 'pending') as WebhookState },
  };
}

export function batchItem(row: ItemRow): BatchItem {
  let result: BatchItem['result'] = null;
  if (row.state === 'done' && row.result !== null) {
    // Output files and figures stay out of a page of items.
    result = resultSummary(parseStored({ id: row.id, result: row.result }));
  }
  return { index: row.idx, executionId: row.id, state: row.state as BatchItem['state'], result };
}

export function delivery(row: DeliveryRow): StoredDelivery {
  return {
    id: row.id,
    tenant: row.tenant,
    url: row.url,
    batchId: row.batch_id,
    body: row.body,
    attempts: row.attempts,
    nextAtMs: Number(row.next_at_ms),
    state: row.state as WebhookState,
    lastError: row.last_error,
    lastStatus: row.last_status,
  };
}

/** A delivery as claimDue hands it out: what to send, without what the outbox keeps about it. */
export function dueDelivery(row: DeliveryRow): WebhookDelivery {
  const { state: _state, lastError: _lastError, lastStatus: _lastStatus, ...due } = delivery(row);
  return due;
}

/** What a claim may take: a job ready to run, and the age it is served by. */
export interface Candidate {
  tenant: string;
  seq: Int;
  created_at_ms: Int;
}

/**
 * Up to `max` of `candidates` (each tenant's in age order), one at a time to the tenant with the
 * fewest jobs running, counting those taken so far; a tie goes to the oldest job. So a tenant with
 * 10,000 queued items and one with 3 share the node's slots, and each gets its own oldest first.
 */
export function pickFairly<T extends Candidate>(candidates: readonly T[], running: ReadonlyMap<string, number>, max: number): T[] {
  const queues = new Map<string, T[]>();
  for (const c of candidates) {
    const q = queues.get(c.tenant);
    if (q) q.push(c);
    else queues.set(c.tenant, [c]);
  }
  const load = new Map([...queues.keys()].map((t) => [t, running.get(t) ?? 0]));
  const picked: T[] = [];
  while (picked.length < max) {
    let best: T | undefined;
    for (const [tenant, q] of queues) {
      const head = q[0];
      if (head === undefined) continue;
      if (best === undefined || isBefore(head, load.get(tenant) ?? 0, best, load.get(best.tenant) ?? 0)) best = head;
    }
    if (best === undefined) break;
    queues.get(best.tenant)?.shift();
    load.set(best.tenant, (load.get(best.tenant) ?? 0) + 1);
    picked.push(best);
  }
  return picked;
}

function isBefore(a: Candidate, loadA: number, b: Candidate, loadB: number): boolean {
  if (loadA !== loadB) return loadA < loadB;
  const ageA = Number(a.created_at_ms);
  const ageB = Number(b.created_at_ms);
  return ageA !== ageB ? ageA < ageB : Number(a.seq) < Number(b.seq);
}

export function checkStatus(status: string): ExecutionStatus {
  if (!(EXECUTION_STATUSES as readonly string[]).includes(status)) throw new RangeError(`'${status}' is not an execution status`);
  return status as ExecutionStatus;
}

/** What createBatch is given must hang together: a slip in the caller would file items under another batch or tenant. */
export function checkBatch(batch: { id: string; tenant: string }, items: readonly StoredJob[]): void {
  if (items.length === 0) throw new RangeError('a batch needs at least one item');
  items.forEach((item, i) => {
    if (item.batchId !== batch.id || item.tenant !== batch.tenant) throw new RangeError(`item ${i} does not belong to batch ${batch.id} of ${batch.tenant}`);
    if (!Number.isSafeInteger(item.index) || item.index < 0) throw new RangeError(`item ${i} has no valid index`);
  });
}

export function checkJob(job: StoredJob): void {
  if (job.batchId !== null) throw new RangeError('a batch item is added with its batch (createBatch)');
}

export function checkMax(max: number): void {
  if (!Number.isSafeInteger(max) || max < 0) throw new RangeError('max must be 0 or a positive integer');
}

/** A time as the stores keep it: whole epoch ms (PostgreSQL's bigint takes no fraction). */
export function ms(time: number): number {
  if (!Number.isFinite(time)) throw new RangeError(`${time} is not a time`);
  return Math.floor(time);
}

/** An error text as kept: bounded, and without NUL (PostgreSQL's text cannot hold one). */
export function errorText(error: string): string {
  return error.replaceAll('\u0000', '\ufffd').slice(0, MAX_ERROR_CHARS);
}

/** How long what has ended is kept: finished batches (with their items) and ended webhook deliveries. */
export interface EndedRetention {
  /** Kept this many days after they ended (the history's store.maxAgeDays); 0 or none keeps them. */
  maxAgeDays?: number | undefined;
}

/** What ended before this is pruned, at nowMs; null when nothing is. */
export function endedBefore(retention: EndedRetention, nowMs: number): number | null {
  const days = retention.maxAgeDays ?? 0;
  if (!Number.isFinite(days) || days < 0) throw new RangeError('maxAgeDays must be 0 or more');
  return days === 0 ? null : ms(nowMs) - days * DAY_MS;
}

/** The seq events are read after: what a client resumes from is its to choose, so anything but a seq is 0. */
export function seqAfter(afterSeq: number): number {
  return Number.isFinite(afterSeq) ? Math.min(Math.max(Math.floor(afterSeq), 0), 2 ** 31 - 1) : 0;
}

/** A cursor over a batch's items is the next index + 1 (codec's cursors start at 1). */
export const itemCursor = (lastIndex: number): number => lastIndex + 2;
export const firstIndexOf = (cursorValue: number): number => cursorValue - 1;
