// An API node's Dispatch: accepted executions go to the workers through a BullMQ queue in Redis,
// and their results come back as the jobs' return values. A worker records the result itself; this
// side records only what no worker did: an execution withdrawn from the queue before any worker
// took it (cancelled), and one whose worker went away (internal_error).
//
// Fairness across the cluster: a job's priority is its tenant's executions in flight when it was
// admitted, so a tenant's first job goes ahead of a flooding tenant's hundredth; FIFO within a
// priority. Results arrive by one shared QueueEvents stream; a slow sweep reads the jobs still
// awaited directly, so a missed event (Redis restarted, the stream trimmed) or a worker that died
// with no other worker free to notice never leaves a client waiting for good. A streamed
// execution's output comes by the same stream, as its job's progress (cluster/output-progress.ts).
import { Queue, QueueEvents, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { PyboxError } from '../core/errors.ts';
import { cancelReasonOf, recordResult, resultOf } from '../core/local-dispatch.ts';
import type { AcceptedExecution, CancelReason, Dispatch, DispatchEvents, ExecutionStore, Logger } from '../core/ports.ts';
import { failedOutcome, notRun, type ResultDeps } from '../core/results.ts';
import type { ExecutionResult, RuntimeName } from '../core/schemas.ts';
import { wallLimitMs } from '../core/sandbox.ts';
import { fastFailOptions, patientOptions, within, type RedisEndpoint } from './connection.ts';
import { OutputReceiver } from './output-progress.ts';
import { runsExecutions, type NodeReport } from './registry.ts';
import { CANCEL_MARK_MS, JOB_NAME, QUEUE_NAME, cancelChannel, cancelMarkKey, printable, resultFromWire, toPayload, type Admission, type ExecutionPayload } from './wire.ts';

/** BullMQ's lowest priority; 1 is its highest. */
export const MAX_PRIORITY = 2_097_152;

/**
 * Background items (async executions, batch items) rank behind every interactive run: their
 * priorities start past any tenant's plausible count in flight.
 */
export const BACKGROUND_PRIORITY = 1_000_000;

/** A job's BullMQ priority: its tenant's executions in flight, background ones behind all interactive ones. */
export function priorityOf(inFlight: number, background: boolean): number {
  if (!Number.isFinite(inFlight)) return MAX_PRIORITY;
  const own = Math.max(Math.trunc(inFlight), 1);
  return Math.min(background ? BACKGROUND_PRIORITY + own : Math.min(own, BACKGROUND_PRIORITY - 1), MAX_PRIORITY);
}

/** Where the live nodes are listed (ClusterRegistry). */
export interface NodeDirectory {
  nodes(): Promise<NodeReport[]>;
}

export interface QueueDispatchDeps {
  connection: RedisEndpoint;
  prefix: string;
  admission: Admission;
  /** The 429 for a tenant at its ceiling of executions in flight (redis-limits.ts's tenantLimitError). */
  tenantLimitError: (maxInFlight: number, retryAfterS: number) => Error;
  store: ExecutionStore;
  /** For the results this node builds itself; the runtime they name is the workers'. */
  results: Omit<ResultDeps, 'runtime'>;
  /** The runtime the workers run; absent, the one the live workers last reported, else runsc. */
  runtime?: (() => RuntimeName) | undefined;
  /** Executions waiting in the queue at most; more are refused with queue_full. */
  maxQueue: number;
  retryAfterS: number;
  registry: NodeDirectory;
  logger: Logger;
  /** How long an admission is held at most if neither this node nor the worker releases it. */
  leaseMs?: ((e: AcceptedExecution) => number) | undefined;
  /** Told after each save whether it worked (the service refuses runs while saves fail). */
  onRecorded?: ((fault: string | null) => void) | undefined;
  /** How often jobs still awaited are read directly. */
  sweepMs?: number | undefined;
  /** How long one Redis step of submit() may take before it counts as Redis being away. */
  redisTimeoutMs?: number | undefined;
  /** How long the live workers' list is trusted before it is read again (default WORKERS_CACHE_MS). */
  workersCacheMs?: number | undefined;
  /** How long a finished job stays in Redis (the sweep reads it there if its event was missed). */
  keepFinishedS?: number | undefined;
}

/**
 * How long the live workers' list is trusted. A worker counts as gone only after three missed
 * heartbeats (6 s by default) anyway; the list is read again ahead of need at half this age.
 */
const WORKERS_CACHE_MS = 2000;

/** Events kept in the queue's stream (about): each finished one holds a whole result. */
const EVENTS_KEPT = 2000;
/** Finished jobs kept at most (each holds its result), besides their age. */
const FINISHED_KEPT = 1000;

/** An admission outlives its execution's time limit by this, to cover the wait in the queue. */
const LEASE_MARGIN_MS = 5 * 60_000;

const STALLED_WHY = 'it stopped renewing its hold on the job, as a worker that crashed or lost its connection to Redis does';

interface Waiter {
  execution: AcceptedExecution;
  resolve: (r: ExecutionResult) => void;
  reject: (e: unknown) => void;
  /** A result was handed over (or the wait was given up). */
  settled: boolean;
  /** A failure is being turned into a result. */
  failing: boolean;
  /** The job is in Redis. */
  queued: boolean;
  /** Taking the job out of the queue: true if it was taken out before any worker took it. */
  removal?: Promise<boolean>;
  /** The removal is under way (the sweep leaves the job alone meanwhile). */
  removing: boolean;
  /** Sweeps in a row that saw the job active with no worker's lock on it. */
  lockMissing: number;
  /** Sweeps in a row that did not find the job at all. */
  missing: number;
  /** A streamed execution: where its output goes as the worker reports it. */
  output?: OutputReceiver | undefined;
}

export class QueueDispatch implements Dispatch {
  private readonly queue: Queue<ExecutionPayload>;
  /** Made once Redis has answered: BullMQ cannot close one that never connected. */
  private events: QueueEvents | undefined;
  /** Plain commands of its own (cancel messages, locks): BullMQ's client exposes only what BullMQ uses. */
  private readonly commands: Redis;
  private readonly waiters = new Map<string, Waiter>();
  private readonly sweeper: NodeJS.Timeout;
  private sweeping = false;
  private eventsReady: Promise<unknown> = Promise.resolve();
  private workers: { at: number; list: NodeReport[] } | undefined;
  private workersRead: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly deps: QueueDispatchDeps) {
    const { prefix, logger } = deps;
    // Commands on a request's path fail fast; the event stream waits out an outage and reconnects.
    // Every event of a finished job carries its whole result, and so does the finished job itself:
    // both are kept short (a result missed there is still in the store, which the sweep reads).
    this.queue = new Queue<ExecutionPayload>(QUEUE_NAME, {
      connection: fastFailOptions(deps.connection, this.timeoutMs),
      prefix,
      streams: { events: { maxLen: EVENTS_KEPT } },
    });
    this.queue.on('error', (e) => logger.debug('queue connection error', { error: e.message }));
    this.commands = new Redis(fastFailOptions(deps.connection, this.timeoutMs));
    this.commands.on('error', (e: Error) => logger.debug('Redis connection error', { error: e.message }));
    this.sweeper = setInterval(() => void this.sweep(), deps.sweepMs ?? 5000);
    this.sweeper.unref();
  }

  private get timeoutMs(): number {
    return this.deps.redisTimeoutMs ?? 2000;
  }

  /** Executions submitted through this node and not yet answered. */
  get pending(): number {
    return this.waiters.size;
  }

  /** Jobs waiting in the cluster's queue (not yet taken by a worker). */
  async queueDepth(): Promise<number> {
    const c = await within(this.queue.getJobCounts('wait', 'prioritized'), this.timeoutMs, 'counting the queue');
    return (c.wait ?? 0) + (c.prioritized ?? 0);
  }

  async submit(execution: AcceptedExecution, signals: { waiting: AbortSignal; running: AbortSignal }, events: DispatchEvents = {}): Promise<ExecutionResult> {
    if (this.closed) throw new PyboxError('shutting_down', 'this node is shutting down and takes no new executions; retry shortly', { retryAfterS: this.deps.retryAfterS });
    if (signals.waiting.aborted) return this.recordCancelled(execution, cancelReasonOf(signals.waiting));
    // Known to be away (its connection lost and retrying): refused at once, not after a timeout.
    if (this.commands.status === 'reconnecting' || this.commands.status === 'end') throw this.unavailable(new Error(`Redis connection ${this.commands.status}`));
    await this.assertWorkers();
    const { inFlight } = await this.admitWithRoom(execution);
    const id = execution.job.id;
    const waiter = this.register(execution);
    // Test cases report their output in the result only: nothing to stream.
    const streamed = events.output !== undefined && execution.job.tests === undefined;
    if (streamed && events.output) waiter.output = new OutputReceiver(events.output, execution.limits.outputBytes);
    try {
      await within(this.listen(), this.timeoutMs, 'listening for results');
      await within(
        this.queue.add(JOB_NAME, { ...toPayload(execution), ...(streamed ? { stream: true } : {}) }, {
          jobId: id,
          priority: priorityOf(inFlight, execution.background === true),
          attempts: 1,
          removeOnComplete: { age: this.deps.keepFinishedS ?? 300, count: FINISHED_KEPT },
          removeOnFail: { age: this.deps.keepFinishedS ?? 300, count: FINISHED_KEPT },
        }),
        this.timeoutMs,
        'queueing the execution',
      );
    } catch (e) {
      this.waiters.delete(id);
      this.release(execution);
      throw this.unavailable(e);
    }
    waiter.queued = true;
    this.readWorkersAhead();
    // A background item outlives this node's shutdown: it stays in the queue, a worker runs and
    // records it, and the job runner that submitted it gives the job back (shutting_down) to be
    // completed from that record after the restart, instead of a cancelled result.
    const leftForLater = (by: CancelReason) => {
      if (by !== 'shutdown' || execution.background !== true || waiter.settled) return false;
      waiter.settled = true;
      waiter.reject(new PyboxError('shutting_down', 'this node is shutting down; the execution stays queued and is recorded by the worker that runs it', { retryAfterS: this.deps.retryAfterS }));
      return true;
    };
    const onWaiting = () => {
      if (leftForLater(cancelReasonOf(signals.waiting))) return;
      waiter.removal ??= this.withdraw(waiter, cancelReasonOf(signals.waiting));
    };
    const onRunning = () => {
      if (leftForLater(cancelReasonOf(signals.running))) return;
      void this.stop(waiter, cancelReasonOf(signals.running));
    };
    const hook = (signal: AbortSignal, fn: () => void) => (signal.aborted ? fn() : signal.addEventListener('abort', fn, { once: true }));
    hook(signals.waiting, onWaiting);
    hook(signals.running, onRunning);
    try {
      return await waiter.promise;
    } finally {
      signals.waiting.removeEventListener('abort', onWaiting);
      signals.running.removeEventListener('abort', onRunning);
      this.waiters.delete(id);
      this.release(execution);
    }
  }

  /** Stops taking executions and closes the connections; executions still awaited end with shutting_down. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    for (const w of this.waiters.values()) {
      if (w.settled) continue;
      w.settled = true;
      w.reject(new PyboxError('shutting_down', 'this node shut down before the result came back; the execution may still run and be recorded', { retryAfterS: this.deps.retryAfterS }));
    }
    const closing = Promise.allSettled([this.queue.close(), this.events?.close()]);
    await within(closing, 5000, 'closing the queue').catch((e: unknown) => this.deps.logger.warn('the queue did not close cleanly', { error: e instanceof Error ? e.message : String(e) }));
    this.commands.disconnect();
  }

  /** The shared stream of finished jobs, listened to from before the first job went in. */
  private listen(): Promise<unknown> {
    if (!this.events) {
      // From a minute back rather than from "now": events between connecting and the first read
      // are not lost, and older ones match no waiter.
      const events = new QueueEvents(QUEUE_NAME, { connection: patientOptions(this.deps.connection), prefix: this.deps.prefix, lastEventId: `${Date.now() - 60_000}-0` });
      events.on('error', (e) => this.deps.logger.debug('queue events connection error', { error: e.message }));
      events.on('completed', ({ jobId, returnvalue }) => this.onCompleted(jobId, returnvalue));
      events.on('failed', ({ jobId, failedReason }) => void this.fail(jobId, failedReason));
      events.on('progress', ({ jobId, data }) => this.onProgress(jobId, data));
      this.events = events;
      this.eventsReady = events.waitUntilReady();
    }
    return this.eventsReady;
  }

  // ---- before the job goes in ------------------------------------------------------------------

  private get workersCacheMs(): number {
    return this.deps.workersCacheMs ?? WORKERS_CACHE_MS;
  }

  private workersAge(): number {
    return this.workers ? performance.now() - this.workers.at : Number.POSITIVE_INFINITY;
  }

  /** The live workers' list is read when it is older than workersCacheMs (see readWorkersAhead). */
  private async assertWorkers(): Promise<void> {
    if (this.workersAge() > this.workersCacheMs) {
      try {
        await this.readWorkers();
      } catch (e) {
        throw this.unavailable(e);
      }
    }
    if (!this.workers || this.workers.list.length === 0) {
      throw new PyboxError('no_workers', 'no worker is alive to run executions; retry shortly', { retryAfterS: this.deps.retryAfterS });
    }
  }

  /**
   * Past half its life the list is read again in the background, once a request's job is in the
   * queue: off every request's path (the registry's reads share a connection with admissions), so
   * at a steady pace (a request at least every workersCacheMs) no request waits for them.
   */
  private readWorkersAhead(): void {
    if (this.workersAge() <= this.workersCacheMs / 2) return;
    this.readWorkers().catch((e: unknown) => this.deps.logger.debug('could not list the workers', { error: e instanceof Error ? e.message : String(e) }));
  }

  /** Reads the live workers, once for every request that needs it meanwhile; dated from when the read began. */
  private readWorkers(): Promise<void> {
    this.workersRead ??= (async () => {
      const at = performance.now();
      try {
        const nodes = await within(this.deps.registry.nodes(), this.timeoutMs, 'listing the workers');
        this.workers = { at, list: nodes.filter(runsExecutions) };
      } finally {
        this.workersRead = undefined;
      }
    })();
    return this.workersRead;
  }

  /**
   * The queue's depth and the tenant's admission, read side by side (two round trips on two
   * connections, at the cost of one). A full queue is refused first, as if the admission had not
   * been asked; an admission taken for an execution refused after all is given back.
   */
  private async admitWithRoom(e: AcceptedExecution): Promise<{ inFlight: number }> {
    const leaseMs = this.deps.leaseMs?.(e) ?? wallLimitMs(e.job) + LEASE_MARGIN_MS;
    const [depth, decision] = await Promise.allSettled([
      this.queueDepth(),
      within(this.deps.admission.admit({ tenant: e.tenant, id: e.job.id, maxInFlight: e.maxInFlight, leaseMs }), this.timeoutMs, 'admitting the execution'),
    ]);
    const admitted = decision.status === 'fulfilled' && decision.value.admitted;
    const refuse = (error: unknown): never => {
      if (admitted) this.release(e);
      throw error;
    };
    if (depth.status === 'rejected') return refuse(this.unavailable(depth.reason));
    if (depth.value >= this.deps.maxQueue) {
      return refuse(new PyboxError('queue_full', `${depth.value} executions are waiting for a worker, the most the cluster queues`, { retryAfterS: this.deps.retryAfterS }));
    }
    if (decision.status === 'rejected') return refuse(this.unavailable(decision.reason));
    if (!decision.value.admitted) throw this.deps.tenantLimitError(e.maxInFlight ?? 0, this.deps.retryAfterS);
    return decision.value;
  }

  private register(execution: AcceptedExecution): Waiter & { promise: Promise<ExecutionResult> } {
    let resolve!: (r: ExecutionResult) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<ExecutionResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const waiter = { execution, resolve, reject, settled: false, failing: false, queued: false, removing: false, lockMissing: 0, missing: 0, promise };
    this.waiters.set(execution.job.id, waiter);
    return waiter;
  }

  private unavailable(e: unknown): PyboxError {
    if (e instanceof PyboxError) return e;
    this.deps.logger.warn('Redis did not answer', { error: e instanceof Error ? e.message : String(e) });
    return new PyboxError('queue_unavailable', 'the cluster queue (Redis) does not answer; retry shortly', { retryAfterS: this.deps.retryAfterS, cause: e });
  }

  private release(e: AcceptedExecution): void {
    this.deps.admission.release(e.tenant, e.job.id).catch((err: unknown) => this.deps.logger.warn('could not release an admission', { id: e.job.id, error: err }));
  }

  // ---- results ---------------------------------------------------------------------------------

  private settle(w: Waiter, result: ExecutionResult): void {
    if (w.settled) return;
    w.settled = true;
    w.resolve(result);
  }

  /** A streamed execution's output, as its worker reported it: handed on until the result is in. */
  private onProgress(id: string, data: unknown): void {
    const w = this.waiters.get(id);
    if (!w?.output || w.settled || w.failing) return;
    try {
      if (!w.output.take(data)) this.deps.logger.debug('ignored a progress event that is not output', { id });
    } catch (e) {
      // The listener's fault (it must not throw): its stream is over, the execution goes on.
      w.output = undefined;
      this.deps.logger.warn('an output listener failed; the run goes on without it', { id, error: e instanceof Error ? e.message : String(e) });
    }
  }

  private onCompleted(id: string, value: unknown): void {
    const w = this.waiters.get(id);
    if (!w || w.settled || w.failing) return;
    try {
      this.settle(w, resultFromWire(value, id));
    } catch (e) {
      void this.fail(id, `its result could not be read: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** The job failed (its worker went away, or could not run it): what the worker recorded, else internal_error. */
  private async fail(id: string, reason: string | undefined): Promise<void> {
    const w = this.waiters.get(id);
    if (!w || w.settled || w.failing) return;
    w.failing = true;
    const { execution } = w;
    // A worker that died after recording its result, before handing it back, left it in the store.
    const stored = await this.recorded(id);
    if (stored) {
      const { code: _code, ...answer } = stored; // the code stays in the store, as on every answer
      return this.settle(w, answer);
    }
    const stalled = reason?.includes('stalled') ?? false;
    const why = stalled ? STALLED_WHY : failureText(reason);
    this.deps.logger.error('an execution failed on a worker', { id, reason: why });
    const what = stalled ? 'the worker running this execution went away' : 'the worker could not finish this execution';
    const result = resultOf(this.resultDeps(), execution, failedOutcome(`${what} (${why}); it may have run partly; retry is safe`));
    await recordResult(this.deps, execution.tenant, result, 0, execution.job.code);
    this.settle(w, result);
  }

  private async recorded(id: string): Promise<ExecutionResult | undefined> {
    try {
      return await this.deps.store.get(id);
    } catch {
      return undefined;
    }
  }

  private resultDeps(): ResultDeps {
    return { ...this.deps.results, runtime: this.runtime() };
  }

  private runtime(): RuntimeName {
    return this.deps.runtime?.() ?? this.workers?.list.find((n) => n.runtime)?.runtime ?? 'runsc';
  }

  // ---- cancellation ----------------------------------------------------------------------------

  private async recordCancelled(execution: AcceptedExecution, by: CancelReason): Promise<ExecutionResult> {
    const result = resultOf(this.resultDeps(), execution, notRun(), { by, started: false });
    this.deps.logger.info('execution cancelled', { id: execution.job.id, by, started: false });
    await recordResult(this.deps, execution.tenant, result, 0, execution.job.code);
    return result;
  }

  /** Takes the job out of the queue if no worker has it: true when it was, and the waiter has its cancelled result. */
  private async withdraw(w: Waiter, by: CancelReason): Promise<boolean> {
    const id = w.execution.job.id;
    let removed: number;
    w.removing = true;
    try {
      // BullMQ refuses to remove a job a worker holds (its lock): that one goes on to the running path.
      removed = await within(this.queue.remove(id), this.timeoutMs, 'withdrawing the execution');
    } catch (e) {
      this.deps.logger.warn('could not withdraw an execution from the queue', { id, error: e instanceof Error ? e.message : String(e) });
      return false;
    } finally {
      w.removing = false;
    }
    if (removed !== 1 || w.settled || w.failing) return removed === 1;
    // A job that had already finished is removed too: then its worker recorded it, and that result stands.
    w.failing = true;
    const stored = await this.recorded(id);
    this.settle(w, stored ?? (await this.recordCancelled(w.execution, by)));
    return true;
  }

  /** Tells the workers to stop the execution, unless it was withdrawn before any took it. */
  private async stop(w: Waiter, by: CancelReason): Promise<void> {
    if (w.removal && (await w.removal)) return;
    if (w.settled) return;
    const { prefix } = this.deps;
    const id = w.execution.job.id;
    try {
      await within(
        this.commands
          .multi()
          .set(cancelMarkKey(prefix, id), by, 'PX', CANCEL_MARK_MS)
          .publish(cancelChannel(prefix), JSON.stringify({ id, reason: by }))
          .exec(),
        this.timeoutMs,
        'cancelling the execution',
      );
    } catch (e) {
      this.deps.logger.warn('could not tell the workers to stop an execution', { id, error: e instanceof Error ? e.message : String(e) });
    }
  }

  // ---- the safety net --------------------------------------------------------------------------

  private async sweep(): Promise<void> {
    if (this.sweeping || this.closed || this.waiters.size === 0) return;
    this.sweeping = true;
    try {
      for (const w of [...this.waiters.values()]) {
        if (!w.queued || w.settled || w.failing || w.removing) continue;
        await this.check(w).catch((e: unknown) => this.deps.logger.debug('could not read a job', { id: w.execution.job.id, error: e instanceof Error ? e.message : String(e) }));
      }
    } finally {
      this.sweeping = false;
    }
  }

  private async check(w: Waiter): Promise<void> {
    const id = w.execution.job.id;
    const job: Job<ExecutionPayload> | undefined = await within(this.queue.getJob(id), this.timeoutMs, 'reading a job');
    if (!job) {
      // Gone from Redis (it lost its data, or the finished job was cleaned before its event came).
      if (++w.missing >= 2) await this.fail(id, 'the queue lost the job, as when Redis restarts without its data');
      return;
    }
    w.missing = 0;
    const state = await within(job.getState(), this.timeoutMs, 'reading a job state');
    if (state === 'completed') return this.onCompleted(id, job.returnvalue);
    if (state === 'failed') return this.fail(id, job.failedReason);
    if ((state === 'waiting' || state === 'prioritized') && job.deferredFailure) {
      // BullMQ put a stalled job back to fail it when a worker next takes it: none may be free.
      await this.queue.remove(id).catch(() => 0);
      return this.fail(id, job.deferredFailure);
    }
    if (state === 'active') {
      // A lock missing twice in a row: its worker is gone and no live worker has checked yet.
      const locked = (await within(this.commands.exists(`${this.queue.toKey(id)}:lock`), this.timeoutMs, 'reading a job lock')) === 1;
      w.lockMissing = locked ? 0 : w.lockMissing + 1;
      if (w.lockMissing >= 2) await this.fail(id, 'job stalled: no worker holds it');
    }
  }
}

/** A job's failed reason (hostile: anyone may write it) as a short clause for a model and a log. */
function failureText(reason: string | undefined): string {
  return reason ? printable(reason, 300) : 'no reason was given';
}
