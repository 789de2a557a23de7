// The log lines about an execution, written alike by the node that accepted it (the service) and
// the worker that ran it: who it is (execution, request, tenant) and figures, never its content.
import type { AcceptedExecution, Logger } from './ports.ts';
import type { ExecutionResult } from './schemas.ts';

/** Who an execution is, on every line about it: never what it runs, reads or prints. */
export function executionIds(e: AcceptedExecution): Record<string, unknown> {
  return { executionId: e.job.id, requestId: e.requestId, tenant: e.tenant };
}

/**
 * The one line an execution's result leaves in the log of the node that accepted it ('execution'),
 * and on a cluster's worker that ran it ('worker execution', with its node id). Figures and
 * names only: the code, its input, environment, context, files and output stay out, and so does
 * the error's text (an exception's message is output too).
 */
export function logExecution(logger: Logger, e: AcceptedExecution, r: ExecutionResult, times: { totalMs: number; queueWaitMs?: number | undefined; nodeId?: string }, msg: 'execution' | 'worker execution' = 'execution'): void {
  const fields: Record<string, unknown> = {
    ...executionIds(e),
    ...(times.nodeId !== undefined ? { nodeId: times.nodeId } : {}),
    status: r.status,
    runtime: r.runtime,
    durationMs: r.durationMs,
    cpuMs: r.cpuMs,
    queueWaitMs: times.queueWaitMs,
    totalMs: Math.max(0, times.totalMs),
    exitCode: r.exitCode,
    signal: r.signal,
    truncated: r.truncated.stdout || r.truncated.stderr,
    files: r.files?.length ?? 0,
    limits: { timeoutMs: r.limits.timeoutMs, memoryMb: r.limits.memoryMb, cpus: r.limits.cpus },
  };
  if (r.status === 'internal_error') logger.warn(msg, fields);
  else logger.info(msg, fields);
}
