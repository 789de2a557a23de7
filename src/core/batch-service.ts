// Async executions and batches as the HTTP layer sees them: submission (each request checked and
// clamped as a synchronous run would be, so a bad item is refused at once naming `items[i]...`),
// reads scoped to the caller's tenant (another tenant's batch is not found, exactly like an unknown
// one), cancellation, and the stream of a batch's item completions.
import { visibleTenant, type Caller } from './caller.ts';
import { invalidField, PyboxError } from './errors.ts';
import type { JobCompletion } from './job-runner.ts';
import { batchInfoOf, recordedShape, type RequestChecks } from './job-shapes.ts';
import type { Clock, ExecutionStore, JobStore, Logger, StoredJob } from './ports.ts';
import { buildResult, notRun, type ResultDeps } from './results.ts';
import type {
  AsyncExecutionRequest,
  BatchInfo,
  BatchItemEvent,
  BatchItemsQuery,
  BatchList,
  BatchListQuery,
  BatchPage,
  BatchRequest,
  ExecutionResult,
  PendingExecution,
} from './schemas.ts';
import type { Config } from '../config/schema.ts';

/** What the batch service needs of the node's JobRunner. */
export interface JobRunnerHandle {
  wake(): void;
  onCompleted(listener: (c: JobCompletion) => void): () => void;
  complete(job: StoredJob, result: ExecutionResult): Promise<void>;
}

/** Checks a webhook URL at submission; throws invalid_request naming `path`. */
export type WebhookUrlCheck = (url: string, path: string) => void;

export interface BatchServiceDeps {
  jobs: JobStore;
  runner: JobRunnerHandle;
  /** Checks and clamps a request as a run would (DefaultExecutionService's check and clampLimits). */
  service: RequestChecks;
  /** The tenant's caller (JobRunner's callerFor): a cancelled item shows its tenant's limits. */
  callerFor: (tenant: string) => Promise<Caller>;
  /** Where results are read, and where a DELETE records the cancelled items. */
  store: Pick<ExecutionStore, 'get' | 'save'>;
  /** For the cancelled results a DELETE records. */
  results: ResultDeps;
  clock: Clock;
  logger: Logger;
  newId: () => string;
  /** This node's id: the owner of the items a DELETE takes out of the queue. */
  owner: string;
  config: Config['jobs'];
  /** The webhook policy's syntactic check; a local one (http/https, no credentials) when absent. */
  checkWebhookUrl?: WebhookUrlCheck | undefined;
  /** How often an event stream asks the store for completions made on other nodes. */
  eventsPollMs?: number | undefined;
}

/** An event of a batch's stream: an item done, then the batch once finished. */
export type BatchStreamEvent = { type: 'item'; event: BatchItemEvent } | { type: 'done'; batch: BatchInfo };

/** Events read from the store at a time. */
const EVENTS_PAGE = 200;
const DEFAULT_EVENTS_POLL_MS = 1000;
/** Retry-After of a submission refused because its tenant has too many jobs open. */
const OPEN_JOBS_RETRY_S = 10;


/** http or https, a host, no user or password: what may be stored before the policy resolves it. */
export function basicWebhookUrlCheck(url: string, path: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalidField(path, 'is not a valid URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw invalidField(path, 'must be an http or https URL');
  if (parsed.username !== '' || parsed.password !== '') throw invalidField(path, 'must not carry credentials');
  if (parsed.hostname === '') throw invalidField(path, 'must name a host');
}

/**
 * A WebhookUrlCheck from a check that answers instead of throwing, such as webhooks/address-policy.ts's
 * checkWebhookUrl (the policy's syntactic part; addresses are checked at delivery).
 */
export function webhookUrlCheckFrom(check: (raw: string) => { ok: true } | { ok: false; reason: string }): WebhookUrlCheck {
  return (url, path) => {
    const verdict = check(url);
    if (!verdict.ok) throw invalidField(path, verdict.reason);
  };
}

/** A service's invalid_request about a request, moved under `prefix` (`items[3].`). */
function under(prefix: string, e: unknown): unknown {
  if (!(e instanceof PyboxError) || e.code !== 'invalid_request') return e;
  const details = Array.isArray(e.details) ? (e.details as Array<{ path?: unknown; message?: unknown }>) : [];
  const moved = details.map((d) => ({ path: `${prefix}${typeof d.path === 'string' && d.path !== '' ? d.path : ''}`.replace(/\.$/, ''), message: String(d.message ?? '') }));
  const first = moved[0];
  const message = first ? `${first.path} ${first.message}` : `${prefix.replace(/\.$/, '')}: ${e.message}`;
  return new PyboxError('invalid_request', message, { details: moved.length > 0 ? moved : [{ path: prefix.replace(/\.$/, ''), message: e.message }] });
}

export class BatchService {
  constructor(private readonly deps: BatchServiceDeps) {}

  /**
   * A tenant's jobs waiting or running are capped (jobs.maxOpenPerTenant): past it a submission gets
   * 429 until some are done. Counted before adding, so submissions racing each other may pass it by
   * one batch at most.
   */
  private async assertRoom(caller: Caller, adding: number): Promise<void> {
    const max = this.deps.config.maxOpenPerTenant;
    if (adding > max) throw invalidField('items', `holds ${adding} items; this server keeps at most ${max} of a tenant's jobs at once`);
    const open = await this.deps.jobs.openJobs(caller.tenant);
    if (open + adding <= max) return;
    throw new PyboxError('rate_limited', `this tenant already has ${open} async executions and batch items waiting or running; at most ${max} at once`, {
      retryAfterS: OPEN_JOBS_RETRY_S,
      details: { limit: 'jobs', maxOpenPerTenant: max, open },
      rateLimit: { policy: 'jobs', quota: max, remaining: Math.max(0, max - open), resetS: OPEN_JOBS_RETRY_S },
    });
  }

  private checkUrl(url: string, path: string): void {
    (this.deps.checkWebhookUrl ?? basicWebhookUrlCheck)(url, path);
  }

  /** POST /v1/executions?async=true: kept as a job, run in the background. */
  async submitAsync(caller: Caller, req: AsyncExecutionRequest, requestId?: string): Promise<PendingExecution> {
    const { webhook, ...request } = req;
    this.deps.service.check(caller, request);
    if (webhook) this.checkUrl(webhook.url, 'webhook.url');
    const createdAtMs = this.deps.clock.now();
    const job: StoredJob = {
      id: this.deps.newId(),
      tenant: caller.tenant,
      batchId: null,
      index: 0,
      request,
      requestId: requestId ?? null,
      webhookUrl: webhook?.url ?? null,
      createdAtMs,
    };
    await this.assertRoom(caller, 1);
    await this.deps.jobs.createJob(job);
    this.deps.runner.wake();
    return { id: job.id, state: 'queued', batchId: null, createdAt: new Date(createdAtMs).toISOString() };
  }

  /** POST /v1/batches: every item checked first; the batch and its items are kept in one go. */
  async createBatch(caller: Caller, req: BatchRequest, requestId?: string): Promise<BatchInfo> {
    const max = this.deps.config.maxBatchItems;
    if (req.items.length > max) throw invalidField('items', `holds ${req.items.length} items; this server takes at most ${max} per batch`);
    req.items.forEach((item, i) => {
      try {
        this.deps.service.check(caller, item);
      } catch (e) {
        throw under(`items[${i}].`, e);
      }
    });
    if (req.webhook) this.checkUrl(req.webhook.url, 'webhook.url');
    const createdAtMs = this.deps.clock.now();
    const id = this.deps.newId();
    const items: StoredJob[] = req.items.map((request, index) => ({
      id: this.deps.newId(),
      tenant: caller.tenant,
      batchId: id,
      index,
      request,
      requestId: requestId ?? null,
      webhookUrl: null,
      createdAtMs,
    }));
    const batch = { id, tenant: caller.tenant, label: req.label ?? null, webhookUrl: req.webhook?.url ?? null, createdAtMs };
    await this.assertRoom(caller, items.length);
    await this.deps.jobs.createBatch(batch, items);
    this.deps.runner.wake();
    const info = await this.deps.jobs.batch(id);
    if (!info) throw new PyboxError('internal', `batch ${id} was not kept`);
    return batchInfoOf(info);
  }

  private async found(caller: Caller, id: string) {
    const batch = await this.deps.jobs.batch(id, visibleTenant(caller));
    if (!batch) throw new PyboxError('not_found', `no batch with id ${id}`);
    return batch;
  }

  async getBatch(caller: Caller, id: string, query: BatchItemsQuery): Promise<BatchPage> {
    const batch = await this.found(caller, id);
    const page = await this.deps.jobs.batchItems(id, { limit: query.limit, cursor: query.cursor });
    return { ...batchInfoOf(batch), items: page.items, nextCursor: page.nextCursor };
  }

  listBatches(caller: Caller, query: BatchListQuery): Promise<BatchList> {
    return this.deps.jobs.listBatches({ tenant: visibleTenant(caller), limit: query.limit, cursor: query.cursor });
  }

  /**
   * DELETE /v1/batches/{id}: its queued items are taken out of the queue and recorded as cancelled
   * (each still ends with a result); items already running go on. Answers the batch as it is then.
   */
  async cancelBatch(caller: Caller, id: string): Promise<BatchInfo> {
    const batch = await this.found(caller, id);
    const { clock, results } = this.deps;
    const taken = await this.deps.jobs.cancelBatch(id, this.deps.owner, clock.now(), this.deps.config.leaseMs);
    const by = { by: 'batch' as const, started: false };
    // Every item is the batch's tenant's: its limits are read once, when the first item needs them.
    let owner: Caller | undefined;
    for (const job of taken) {
      // A result may already be saved (an earlier DELETE cut short); it stands.
      let result = await this.deps.store.get(job.id);
      if (!result) {
        const { limits, tests } = recordedShape(this.deps.service, (owner ??= await this.deps.callerFor(batch.tenant)), job.request);
        result = buildResult(results, { id: job.id, code: job.request.code, limits, outcome: notRun(), createdAtMs: job.createdAtMs, cancellation: by, tests });
        await this.deps.store.save({ ...result, code: job.request.code }, { tenant: job.tenant, outputBytes: 0 });
      }
      await this.deps.runner.complete(job, result);
    }
    if (taken.length > 0) this.deps.logger.info('batch cancelled', { batchId: id, tenant: caller.tenant, cancelled: taken.length });
    return batchInfoOf(await this.found(caller, id));
  }

  /**
   * GET /v1/executions/{id} for an execution not done yet. Undefined when there is no such job (or
   * it is done by now: the caller reads its result again).
   */
  async pending(caller: Caller, id: string): Promise<PendingExecution | undefined> {
    const p = await this.deps.jobs.pending(id, visibleTenant(caller));
    return p ? { id, state: p.state, batchId: p.batchId, createdAt: p.createdAt } : undefined;
  }

  /** Whether the caller may see the batch (throws not_found otherwise); for a stream to check before it starts. */
  async assertVisible(caller: Caller, id: string): Promise<void> {
    await this.found(caller, id);
  }

  /**
   * The batch's completions after `afterSeq`, as they happen, then `done` once it is finished.
   * Woken by this node's runner; completions on other nodes are found by polling the store.
   */
  async *events(caller: Caller, id: string, afterSeq: number, signal?: AbortSignal): AsyncGenerator<BatchStreamEvent> {
    await this.found(caller, id);
    let wakeUp: (() => void) | undefined;
    let woken = false;
    const wake = () => {
      woken = true;
      wakeUp?.();
    };
    const unsubscribe = this.deps.runner.onCompleted((c) => {
      if (c.job.batchId === id) wake();
    });
    signal?.addEventListener('abort', wake, { once: true });
    const pollMs = this.deps.eventsPollMs ?? DEFAULT_EVENTS_POLL_MS;
    let seq = afterSeq;
    try {
      while (!signal?.aborted) {
        woken = false;
        // The batch is read before its events: once it is finished, every completion is in the store.
        const batch = await this.deps.jobs.batch(id);
        if (!batch) return;
        for (;;) {
          const page = await this.deps.jobs.batchEvents(id, seq, EVENTS_PAGE);
          for (const e of page) {
            seq = e.seq;
            yield { type: 'item', event: { batchId: id, seq: e.seq, item: e.item } };
          }
          if (page.length < EVENTS_PAGE) break;
        }
        if (batch.state !== 'running' && batch.done >= batch.total) {
          yield { type: 'done', batch: batchInfoOf(batch) };
          return;
        }
        if (woken || signal?.aborted) continue;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, pollMs);
          wakeUp = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wakeUp = undefined;
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener('abort', wake);
    }
  }
}
