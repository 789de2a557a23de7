// Runs async executions and batch items in the background: claims jobs from the JobStore (shared by
// every node), runs each through the execution service as its tenant, holds its lease while it runs,
// and completes it once its result is saved. At most `jobs.concurrency` at once on this node; the
// rest of the node's slots stay free for interactive runs. Fairness across tenants is the store's
// claim order (fewest running first); a tenant already at its ceiling on this node is not claimed for.
//
// Nothing is lost: a job is only completed once its result is in the ExecutionStore. A run the
// dispatch could not take (full, rate-limited, no workers, store down, shutting down) is given back
// with a wait. A node that dies holding jobs lets their leases run out (any node claims them again);
// the same node restarting requeues them at once. A job whose result is already saved (the node died
// between saving and completing) is completed without a second run.
//
// Shutdown. Results are written once per id (the ExecutionStore refuses a second result under the
// same id), so a job the service has started cannot be put back once the service records it. stop()
// therefore stops claiming at once, gives back the jobs claimed but not yet handed to the service
// (and those the service refuses as shutting_down), and lets the rest end with the service's own
// shutdown: they finish within its grace period, and only those still running after it are recorded
// as cancelled (their result says the service shut down) and completed, so that even they end with a
// result. A hard kill records nothing: those jobs run again after the restart (requeueOwned).
import { EventEmitter } from 'node:events';
import type { Config } from '../config/schema.ts';
import { NO_TENANT_LIMITS, type Caller } from './caller.ts';
import { PyboxError, type ErrorCode } from './errors.ts';
import type { BatchRecord, Clock, ExecutionService, ExecutionStore, JobStore, Logger, StoredJob, TenantStore, WebhookOutbox } from './ports.ts';
import { buildResult, failedOutcome, type ResultDeps } from './results.ts';
import type { ExecutionResult, ExecutionStatus, WebhookEvent } from './schemas.ts';
import { batchInfoOf, recordedShape, resultSummary, type RequestChecks } from './job-shapes.ts';

/** A job that ended here: its result is saved and the store counts it done. */
export interface JobCompletion {
  job: StoredJob;
  status: ExecutionStatus;
  /** The batch, when this was its last item. */
  batchFinished: BatchRecord | null;
}

export interface JobRunnerDeps {
  jobs: JobStore;
  /** Where results are saved (the dispatch saves them; the runner reads them back, and saves its own failures). */
  store: Pick<ExecutionStore, 'get' | 'save'>;
  /** Runs a job as its tenant; check and clampLimits shape the failure the runner records itself. */
  service: Pick<ExecutionService, 'execute'> & RequestChecks;
  /** Where webhook calls are queued; none are made without it. */
  outbox?: WebhookOutbox | undefined;
  clock: Clock;
  logger: Logger;
  /**
   * This node's id: the owner of the leases it takes. It must stay the same across the node's
   * restarts (requeueOwned finds its jobs by it) and differ from every other node's (a restart would
   * otherwise requeue jobs another node is running).
   */
  owner: string;
  config: Config['jobs'];
  /** The tenant's caller: jobs run with the tenant's limits as they are when the job runs. */
  callerFor: (tenant: string) => Promise<Caller>;
  /** For the result the runner records when a job cannot be run at all. */
  results: ResultDeps;
}

/**
 * A delivery's id follows from what finished, so queueing it again (a job completed twice after a
 * lease ran out, or after a crash between queueing and completing) is the same delivery: the outbox
 * keeps the first, and receivers see one Pybox-Webhook-Id.
 */
export const executionDeliveryId = (executionId: string) => `execution-${executionId}`;
export const batchDeliveryId = (batchId: string) => `batch-${batchId}`;

/** Refusals that say "not now": the job goes back to the queue and is tried again later. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'rate_limited',
  'queue_full',
  'queue_unavailable',
  'no_workers',
  'store_unavailable',
  'shutting_down',
  'engine_unavailable',
  'image_missing',
]);

/** The longest a refused job waits before it is claimable again. */
const MAX_RETRY_WAIT_MS = 60_000;

/** callerFor over the tenant store: the tenant's own ceilings, none for a tenant it does not know (local mode). */
export function tenantCallers(tenants: Pick<TenantStore, 'tenant'>): (tenant: string) => Promise<Caller> {
  return async (tenant) => {
    const record = await tenants.tenant(tenant);
    return { tenant, keyId: null, admin: false, limits: record?.limits ?? NO_TENANT_LIMITS };
  };
}

export class JobRunner {
  private readonly emitter = new EventEmitter();
  /** Jobs claimed here and not yet completed or given back, by id. */
  private readonly inFlight = new Map<string, StoredJob>();
  /** The most jobs each tenant may have in flight, as last seen (null: no ceiling). */
  private readonly ceilings = new Map<string, number | null>();
  /** Jobs handed to the service, by tenant: what a tenant's ceiling counts on this node. */
  private readonly startedByTenant = new Map<string, number>();
  private started = false;
  private stopped = false;
  private claiming = false;
  private claimAgain = false;
  private pollTimer: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private settledWaiters: Array<() => void> = [];

  constructor(private readonly deps: JobRunnerDeps) {
    // SSE streams listen here, one per open stream: many listeners are the design.
    this.emitter.setMaxListeners(0);
  }

  /** Jobs this node is running now. */
  get running(): number {
    return this.inFlight.size;
  }

  /** Called with every job that ends on this node; returns the unsubscribe. */
  onCompleted(listener: (c: JobCompletion) => void): () => void {
    this.emitter.on('completed', listener);
    return () => this.emitter.off('completed', listener);
  }

  /** Requeues what this node held before a restart, then claims jobs until stop(). */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    try {
      const requeued = await this.deps.jobs.requeueOwned(this.deps.owner);
      if (requeued > 0) this.deps.logger.info('jobs held before the restart are queued again', { jobs: requeued, owner: this.deps.owner });
    } catch (e) {
      // Not fatal: their leases run out and they are claimed again, only later.
      this.deps.logger.warn('could not requeue the jobs held before the restart', { owner: this.deps.owner, error: e });
    }
    if (this.stopped) return;
    this.renewTimer = setInterval(() => void this.renew(), Math.max(10, Math.floor(this.deps.config.leaseMs / 3)));
    this.renewTimer.unref();
    this.wake();
  }

  /** Jobs were submitted (on this node): claim now instead of at the next poll. */
  wake(): void {
    if (!this.started || this.stopped) return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    void this.claimLoop();
  }

  /**
   * Stops claiming at once. Jobs in the service go on until it ends them (see the top of this
   * file); settled() resolves once each is completed or given back.
   */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.pollTimer);
    if (this.inFlight.size === 0) this.stopRenewing();
  }

  /** Resolves once no job is in flight here. */
  settled(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  private stopRenewing(): void {
    clearInterval(this.renewTimer);
    this.renewTimer = undefined;
  }

  private async claimLoop(): Promise<void> {
    this.claiming = true;
    clearTimeout(this.pollTimer);
    try {
      do {
        this.claimAgain = false;
        const free = this.deps.config.concurrency - this.inFlight.size;
        if (free <= 0 || this.stopped) break;
        const jobs = await this.deps.jobs.claim({
          owner: this.deps.owner,
          max: free,
          nowMs: this.deps.clock.now(),
          leaseMs: this.deps.config.leaseMs,
          skipTenants: this.tenantsAtCeiling(),
        });
        for (const job of jobs) {
          this.inFlight.set(job.id, job);
          void this.run(job);
        }
        // A full claim may have left more behind.
        if (jobs.length === free) this.claimAgain = true;
      } while (this.claimAgain && !this.stopped);
    } catch (e) {
      this.deps.logger.warn('could not claim jobs; trying again at the next poll', { error: e });
    } finally {
      this.claiming = false;
      if (!this.stopped) {
        this.pollTimer = setTimeout(() => this.wake(), this.deps.config.pollMs);
        this.pollTimer.unref();
      }
    }
  }

  private tenantsAtCeiling(): string[] {
    const counts = new Map<string, number>();
    for (const job of this.inFlight.values()) counts.set(job.tenant, (counts.get(job.tenant) ?? 0) + 1);
    return [...counts].filter(([tenant, n]) => {
      const ceiling = this.ceilings.get(tenant);
      return ceiling != null && n >= ceiling;
    }).map(([tenant]) => tenant);
  }

  private async renew(): Promise<void> {
    if (this.inFlight.size === 0) return;
    const ids = [...this.inFlight.keys()];
    try {
      await this.deps.jobs.renew(this.deps.owner, ids, this.deps.clock.now() + this.deps.config.leaseMs);
    } catch (e) {
      this.deps.logger.warn('could not renew the leases of running jobs', { jobs: ids.length, error: e });
    }
  }

  private async run(job: StoredJob): Promise<void> {
    const ids = { id: job.id, tenant: job.tenant, batchId: job.batchId, requestId: job.requestId };
    let started = false;
    try {
      const saved = await this.deps.store.get(job.id);
      if (saved) {
        // Saved before this node (or another) could complete it: no second run.
        await this.complete(job, saved);
        return;
      }
      if (this.stopped) {
        await this.deps.jobs.release(job.id, this.deps.clock.now());
        return;
      }
      const caller = await this.deps.callerFor(job.tenant);
      const ceiling = caller.limits.maxConcurrency;
      this.ceilings.set(job.tenant, ceiling);
      // A claim made before the tenant's ceiling was known may hold more of its jobs than it allows.
      if (ceiling !== null && (this.startedByTenant.get(job.tenant) ?? 0) >= ceiling) {
        await this.deps.jobs.release(job.id, this.deps.clock.now() + this.deps.config.pollMs);
        return;
      }
      this.startedByTenant.set(job.tenant, (this.startedByTenant.get(job.tenant) ?? 0) + 1);
      started = true;
      let result: ExecutionResult;
      try {
        result = await this.deps.service.execute(caller, job.request, {
          job: { id: job.id, createdAtMs: job.createdAtMs },
          requestId: job.requestId ?? undefined,
        });
      } catch (e) {
        if (e instanceof PyboxError && RETRYABLE.has(e.code)) {
          // The service is going down: this node takes no more, and the job is free for others at once.
          if (e.code === 'shutting_down') this.stop();
          const waitMs = e.code === 'shutting_down' ? 0 : Math.min(MAX_RETRY_WAIT_MS, Math.max(this.deps.config.pollMs, (e.retryAfterS ?? 1) * 1000));
          this.deps.logger.debug('job refused for now; queued again', { ...ids, code: e.code, waitMs });
          await this.deps.jobs.release(job.id, this.deps.clock.now() + waitMs);
          return;
        }
        // Anything else would refuse it again every time: it ends with a result saying why.
        this.deps.logger.error('job could not be run; recorded as an internal error', { ...ids, error: e });
        result = this.failure(job, caller, e instanceof Error ? e.message : String(e));
      }
      // The dispatch only logs a save it could not make; a job done without its result would be lost.
      if (!(await this.deps.store.get(job.id))) {
        try {
          await this.deps.store.save({ ...result, code: job.request.code }, { tenant: job.tenant, outputBytes: Buffer.byteLength(result.stdout) + Buffer.byteLength(result.stderr) });
        } catch (e) {
          this.deps.logger.warn('the result of a job could not be saved; it will run again', { ...ids, error: e });
          await this.deps.jobs.release(job.id, this.deps.clock.now() + MAX_RETRY_WAIT_MS / 4);
          return;
        }
      }
      await this.complete(job, result);
    } catch (e) {
      // The store failed: the job keeps its lease until it runs out, then it is claimed again.
      this.deps.logger.error('job left for another try after a store failure', { ...ids, error: e });
    } finally {
      if (started) {
        const n = (this.startedByTenant.get(job.tenant) ?? 1) - 1;
        if (n > 0) this.startedByTenant.set(job.tenant, n);
        else this.startedByTenant.delete(job.tenant);
      }
      this.inFlight.delete(job.id);
      if (this.inFlight.size === 0) {
        if (this.stopped) this.stopRenewing();
        const waiters = this.settledWaiters;
        this.settledWaiters = [];
        for (const w of waiters) w();
      }
      this.wake();
    }
  }

  private failure(job: StoredJob, caller: Caller, why: string): ExecutionResult {
    const { limits, tests } = recordedShape(this.deps.service, caller, job.request);
    return buildResult(this.deps.results, {
      id: job.id,
      code: job.request.code,
      limits,
      outcome: failedOutcome(`the job could not be run: ${why}`),
      createdAtMs: job.createdAtMs,
      tests,
    });
  }

  /**
   * Completes a job whose result is saved: queues its webhook (an async execution's) or its batch's
   * (when this was the batch's last item), and tells the listeners. Also used for items a batch
   * DELETE recorded as cancelled.
   */
  async complete(job: StoredJob, result: ExecutionResult): Promise<void> {
    const { clock, outbox } = this.deps;
    // Queued before the job is done: should completing fail, the job is claimed again and this is
    // queued again (the same delivery), rather than never.
    if (outbox && job.webhookUrl !== null) {
      const id = executionDeliveryId(job.id);
      const event: WebhookEvent = { type: 'execution.finished', id, createdAt: new Date(clock.now()).toISOString(), execution: resultSummary(result) };
      await outbox.enqueue({ id, tenant: job.tenant, url: job.webhookUrl, batchId: null, body: JSON.stringify(event) }, clock.now());
    }
    const { batchFinished } = await this.deps.jobs.complete(job.id, result.status, clock.now());
    if (batchFinished) {
      this.deps.logger.info('batch finished', { batchId: batchFinished.id, tenant: batchFinished.tenant, total: batchFinished.total, state: batchFinished.state });
      if (outbox && batchFinished.webhook) {
        const id = batchDeliveryId(batchFinished.id);
        const event: WebhookEvent = { type: 'batch.finished', id, createdAt: new Date(clock.now()).toISOString(), batch: batchInfoOf(batchFinished) };
        try {
          await outbox.enqueue({ id, tenant: batchFinished.tenant, url: batchFinished.webhook.url, batchId: batchFinished.id, body: JSON.stringify(event) }, clock.now());
        } catch (e) {
          // complete() hands the finished batch out once only: this delivery cannot be queued again.
          this.deps.logger.error('could not queue the webhook of a finished batch', { batchId: batchFinished.id, error: e });
          await this.deps.jobs.setBatchWebhook(batchFinished.id, 'failed').catch(() => {});
        }
      }
    }
    this.emitter.emit('completed', { job, status: result.status, batchFinished } satisfies JobCompletion);
  }
}
