// A worker node's side of the queue: it takes executions from BullMQ, runs each through this node's
// own Dispatch (LocalDispatch: the gate, the local sandboxes, the store) and hands the result back
// as the job's return value. The result is recorded here, by the node that ran it, so an API node
// that dies while its client waits loses nothing.
//
// A worker that dies mid-run stops renewing its jobs' locks; with maxStalledCount 0 BullMQ then
// fails those jobs (within lockMs plus one stalled check) and the API node that waits reports it.
//
// A streamed execution's output goes back as the job's progress, in batches (output-progress.ts),
// all of it sent before the result is handed back, so the API node hears it first.
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { logExecution } from '../core/execution-log.ts';
import type { AcceptedExecution, CancelReason, Clock, Dispatch, Logger } from '../core/ports.ts';
import type { ExecutionResult } from '../core/schemas.ts';
import { patientOptions, within, type RedisEndpoint } from './connection.ts';
import { OutputBatcher } from './output-progress.ts';
import { CancelMessage, QUEUE_NAME, cancelChannel, cancelMarkKey, fromPayload, WireError, type Admission, type ExecutionPayload } from './wire.ts';

export interface QueueWorkerDeps {
  connection: RedisEndpoint;
  prefix: string;
  nodeId: string;
  /** Executions run at once (the node's concurrency.maxConcurrent, or cluster.workerSlots). */
  slots: number;
  /** How long a job stays this worker's without a renewal of its lock (cluster.lockMs). */
  lockMs: number;
  /** Runs and records an execution on this node (LocalDispatch). */
  run: Dispatch;
  admission: Admission;
  logger: Logger;
  /** For the times on its executions' log lines; the system clock when absent. */
  clock?: Clock;
}

interface Running {
  waiting: AbortController;
  running: AbortController;
}

const MAX_CANCEL_MESSAGE_CHARS = 1024;
/** Longest a finished job's hand-over is awaited (the sandbox's own wait is shorter: RECORD_WAIT_MS). */
const HANDOVER_WAIT_MS = 5000;
/** Longest the last output batches are awaited before the result is handed back anyway. */
const OUTPUT_FLUSH_WAIT_MS = 5000;

export class QueueWorker {
  private readonly worker: Worker<ExecutionPayload, ExecutionResult>;
  private readonly subscriber: Redis;
  private readonly commands: Redis;
  private readonly active = new Map<string, Running>();
  /** Jobs whose result BullMQ has not taken yet: their sandboxes' clean-up waits (AcceptedExecution.handedOver). */
  private readonly handovers = new Map<string, () => void>();
  private started: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(private readonly deps: QueueWorkerDeps) {
    const { logger } = deps;
    this.worker = new Worker<ExecutionPayload, ExecutionResult>(QUEUE_NAME, (job) => this.process(job), {
      connection: patientOptions(deps.connection),
      prefix: deps.prefix,
      name: deps.nodeId,
      autorun: false,
      concurrency: deps.slots,
      lockDuration: deps.lockMs,
      stalledInterval: Math.max(1000, Math.floor(deps.lockMs / 2)),
      // A job whose worker went away is failed, never run a second time: its code may have run partly.
      maxStalledCount: 0,
    });
    this.worker.on('error', (e) => logger.warn('queue worker error', { error: e.message }));
    this.worker.on('failed', (job, e) => {
      logger.warn('an execution job failed', { id: job?.id, error: e.message });
      if (job?.id !== undefined) this.handOver(job.id);
    });
    // Emitted once BullMQ has stored the result (and announced it): the sandbox may be cleaned up.
    this.worker.on('completed', (job) => {
      if (job.id !== undefined) this.handOver(job.id);
    });
    this.subscriber = new Redis(patientOptions(deps.connection));
    this.subscriber.on('error', (e: Error) => logger.debug('Redis subscriber error', { error: e.message }));
    this.subscriber.on('message', (_channel: string, message: string) => this.onCancel(message));
    this.commands = new Redis(patientOptions(deps.connection));
    this.commands.on('error', (e: Error) => logger.debug('Redis connection error', { error: e.message }));
  }

  /** Executions running on this worker now. */
  get running(): number {
    return this.active.size;
  }

  /** Listens for cancellations, then takes jobs; resolves once both are under way. */
  start(): Promise<void> {
    this.started ??= (async () => {
      await this.subscriber.subscribe(cancelChannel(this.deps.prefix));
      this.worker.run().catch((e: unknown) => this.deps.logger.error('the queue worker stopped', { error: e }));
      await this.worker.waitUntilReady();
    })();
    return this.started;
  }

  /**
   * Takes no more jobs, lets the running ones finish for graceMs, then stops them (they end
   * cancelled by 'shutdown', recorded and handed back), and closes the connections.
   */
  close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      const timer = setTimeout(() => {
        for (const r of this.active.values()) this.abort(r, 'shutdown');
      }, graceMs);
      try {
        await this.worker.close();
      } finally {
        clearTimeout(timer);
        this.subscriber.disconnect();
        this.commands.disconnect();
      }
    })();
    return this.closing;
  }

  private async process(job: Job<ExecutionPayload, ExecutionResult>): Promise<ExecutionResult> {
    let execution: AcceptedExecution;
    try {
      execution = fromPayload(job.data);
    } catch (e) {
      // Failed at once, never retried, and the worker goes on with the next job.
      throw new UnrecoverableError(e instanceof WireError ? e.message : 'unreadable execution payload');
    }
    const id = execution.job.id;
    if (job.id !== id) throw new UnrecoverableError('the job id is not its execution id');
    const controllers: Running = { waiting: new AbortController(), running: new AbortController() };
    this.active.set(id, controllers);
    const handedOver = new Promise<void>((resolve) => this.handovers.set(id, resolve));
    const output =
      job.data.stream === true && execution.job.tests === undefined
        ? new OutputBatcher({
            send: (progress) => job.updateProgress(progress),
            capBytes: execution.limits.outputBytes,
            onError: (e) => this.deps.logger.debug('could not report an execution\'s output', { id, error: e instanceof Error ? e.message : String(e) }),
          })
        : undefined;
    try {
      // A cancel published while this worker was taking the job found nobody listening for it yet.
      // Its mark is read beside the start, not before it: the sandbox is taken and the payload
      // built meanwhile, and the mark (one round trip) cancels the run as it waits to start. Nothing
      // waits for it: a mark read after the run ended aborts nothing.
      void this.commands
        .get(cancelMarkKey(this.deps.prefix, id))
        .then((mark) => {
          if (mark === 'client' || mark === 'shutdown') this.abort(controllers, mark);
        })
        .catch(() => {});
      // The tenant's ceiling was applied cluster-wide when the API node admitted it.
      const clock = this.deps.clock ?? Date;
      const taken = clock.now();
      let queueWaitMs: number | undefined;
      // From acceptance on the API node to a slot here: two hosts' clocks, so only as good as their sync.
      const started = () => (queueWaitMs = Math.max(0, clock.now() - execution.createdAtMs));
      // background: false: the queue already ordered it; an execution this worker took is recorded here whatever ends it.
      const result = await this.deps.run.submit(
        { ...execution, maxInFlight: null, handedOver, background: false },
        { waiting: controllers.waiting.signal, running: controllers.running.signal },
        { started, ...(output ? { output: output.listener } : {}) },
      );
      // Batches still unsent by then are lost to the stream only: the result carries the output.
      if (output) await within(output.flush(), OUTPUT_FLUSH_WAIT_MS, 'sending the last output').catch(() => {});
      logExecution(this.deps.logger, execution, result, { totalMs: clock.now() - taken, queueWaitMs, nodeId: this.deps.nodeId }, 'worker execution');
      return result;
    } finally {
      void output?.flush();
      this.active.delete(id);
      // Should no event come (the job's lock was lost), the wait ends anyway.
      setTimeout(() => this.handOver(id), HANDOVER_WAIT_MS).unref();
      this.deps.admission.release(execution.tenant, id).catch((e: unknown) => this.deps.logger.warn('could not release an admission', { id, error: e }));
    }
  }

  private handOver(id: string): void {
    const resolve = this.handovers.get(id);
    if (!resolve) return;
    this.handovers.delete(id);
    resolve();
  }

  private onCancel(message: string): void {
    if (message.length > MAX_CANCEL_MESSAGE_CHARS) return;
    let value: unknown;
    try {
      value = JSON.parse(message);
    } catch {
      return;
    }
    const parsed = CancelMessage.safeParse(value);
    if (!parsed.success) return;
    const r = this.active.get(parsed.data.id);
    if (r) this.abort(r, parsed.data.reason);
  }

  private abort(r: Running, reason: CancelReason): void {
    r.waiting.abort(reason);
    r.running.abort(reason);
  }
}
