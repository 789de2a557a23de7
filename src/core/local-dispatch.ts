// Executions run on this node: through the concurrency gate (the slots and the tenants' fair
// queues) to this node's sandboxes, then recorded in the store. The all-in-one node dispatches
// here directly; a cluster worker dispatches here what it takes from the queue.
import { PyboxError } from './errors.ts';
import type { ConcurrencyGate } from './concurrency.ts';
import { WaitCancelled } from './concurrency.ts';
import type { Cancellation } from './feedback.ts';
import { NO_OBSERVER, type AcceptedExecution, type CancelReason, type Dispatch, type DispatchEvents, type ExecutionStore, type Logger, type Observer, type Sandboxes } from './ports.ts';
import { buildResult, notRun, type ResultDeps } from './results.ts';
import type { SandboxJob, SandboxOutcome } from './sandbox.ts';
import type { ExecutionResult } from './schemas.ts';

export interface LocalDispatchDeps {
  sandboxes: Sandboxes;
  gate: ConcurrencyGate;
  store: ExecutionStore;
  image: string;
  results: ResultDeps;
  logger: Logger;
  /** Told after each save whether it worked: null, or why not (the service refuses runs meanwhile). */
  onRecorded?: (fault: string | null) => void;
  /** Told of every execution that ends here (metrics). */
  observer?: Observer;
}

/** The CancelReason an aborted signal carries: the service's own 'shutdown', else its client went. */
export function cancelReasonOf(signal: AbortSignal): CancelReason {
  return signal.reason === 'shutdown' ? 'shutdown' : 'client';
}

export class LocalDispatch implements Dispatch {
  constructor(private readonly deps: LocalDispatchDeps) {}

  async submit(execution: AcceptedExecution, signals: { waiting: AbortSignal; running: AbortSignal }, events: DispatchEvents = {}): Promise<ExecutionResult> {
    const { deps } = this;
    let recorded!: () => void;
    const job: SandboxJob = {
      ...execution.job,
      image: deps.image,
      runtime: deps.results.runtime,
      signal: signals.running,
      recorded: new Promise<void>((resolve) => (recorded = resolve)),
    };
    if (events.output) job.onOutput = events.output;
    try {
      return await this.runAndRecord(execution, job, signals, events);
    } finally {
      if (execution.handedOver === undefined) recorded();
      else execution.handedOver.then(recorded, recorded);
    }
  }

  private async runAndRecord(
    execution: AcceptedExecution,
    job: SandboxJob,
    signals: { waiting: AbortSignal; running: AbortSignal },
    events: DispatchEvents,
  ): Promise<ExecutionResult> {
    const { deps } = this;
    let outcome: SandboxOutcome;
    let cancellation: Cancellation | undefined;
    // From acceptance (on an API node, for a run that came through the cluster's queue) to a slot.
    let startedAtMs: number | undefined;
    try {
      outcome = await deps.gate.run(
        () => {
          startedAtMs = deps.results.clock.now();
          events.started?.();
          return deps.sandboxes.run(job);
        },
        {
          tenant: execution.tenant,
          maxInFlight: execution.maxInFlight,
          signal: signals.waiting,
        },
      );
      // The sandbox side reports the code's own time: 0 when the payload never reached the runner.
      if (outcome.kind === 'cancelled') cancellation = { by: cancelReasonOf(signals.running), started: outcome.durationMs > 0 };
    } catch (e) {
      if (!(e instanceof WaitCancelled)) throw e;
      // A background item that never started is given back to its job runner, to run after the
      // restart, rather than recorded as cancelled.
      if (execution.background === true && cancelReasonOf(signals.waiting) === 'shutdown') {
        throw new PyboxError('shutting_down', 'the service is shutting down; the job goes back to the queue', { retryAfterS: 1 });
      }
      outcome = notRun();
      cancellation = { by: cancelReasonOf(signals.waiting), started: false };
    }
    const result = resultOf(deps.results, execution, outcome, cancellation);
    const ids = { id: job.id, requestId: execution.requestId, tenant: execution.tenant };
    if (result.status === 'internal_error') deps.logger.error('execution failed on our side', { ...ids, why: result.error?.message });
    const queueWaitMs = Math.max(0, (startedAtMs ?? deps.results.clock.now()) - execution.createdAtMs);
    (deps.observer ?? NO_OBSERVER).executionFinished({ status: result.status, runtime: result.runtime, durationMs: result.durationMs, queueWaitMs });
    if (cancellation) deps.logger.info('execution cancelled', { ...ids, by: cancellation.by, started: cancellation.started });
    await recordResult(deps, execution.tenant, result, outcome.stdout.totalBytes + outcome.stderr.totalBytes, job.code);
    return result;
  }
}

/** The result of an accepted execution that ended with `outcome`, wherever it ran (or did not). */
export function resultOf(results: ResultDeps, execution: AcceptedExecution, outcome: SandboxOutcome, cancellation?: Cancellation): ExecutionResult {
  return buildResult(results, {
    id: execution.job.id,
    code: execution.job.code,
    limits: execution.limits,
    outcome,
    createdAtMs: execution.createdAtMs,
    cancellation,
    tests: execution.tests,
    caseInputs: execution.job.tests,
  });
}

/** Saves a result; a failed save is logged and reported, never thrown: the caller still gets what its code did. */
export async function recordResult(
  deps: Pick<LocalDispatchDeps, 'store' | 'logger' | 'onRecorded'>,
  tenant: string,
  result: ExecutionResult,
  outputBytes: number,
  code?: string,
): Promise<void> {
  try {
    // The code is kept with its result (GET /v1/executions/{id} shows it), not sent back with it.
    await deps.store.save(code === undefined ? result : { ...result, code }, { tenant, outputBytes });
    deps.onRecorded?.(null);
  } catch (e) {
    deps.onRecorded?.(e instanceof Error ? e.message : String(e));
    deps.logger.error('could not record an execution in the store', { id: result.id, tenant, error: e });
  }
}
