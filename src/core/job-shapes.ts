// What the job runner, the batch service and the job stores share: how a result recorded without a
// run is shaped, a batch as its API shows it, and a result as a webhook or a batch item shows it.
import type { Caller } from './caller.ts';
import type { BatchRecord, TestSpec } from './ports.ts';
import type { AppliedLimits, BatchInfo, ExecutionRequest, ExecutionResult } from './schemas.ts';

/** What the service offers to check a request without running it (DefaultExecutionService has both). */
export interface RequestChecks {
  /** Throws invalid_request naming the field, as a run would. */
  check(caller: Caller, req: ExecutionRequest): { limits: AppliedLimits; tests?: TestSpec[] | undefined };
  /** Never throws: the limits a request gets. */
  clampLimits(req: ExecutionRequest, limits: Caller['limits']): AppliedLimits;
}

/**
 * The limits and test expectations a result recorded without a run shows: as checked now, or (a
 * request the server's settings no longer take) just the limits.
 */
export function recordedShape(service: RequestChecks, caller: Caller, req: ExecutionRequest): { limits: AppliedLimits; tests?: TestSpec[] | undefined } {
  try {
    return service.check(caller, req);
  } catch {
    return { limits: service.clampLimits(req, caller.limits) };
  }
}

/** A kept batch as the API shows it: without its tenant. */
export function batchInfoOf(b: BatchRecord): BatchInfo {
  const { tenant: _tenant, ...info } = b;
  return info;
}

/** A result without its output files, rich outputs and code: GET /v1/executions/{id} has them. */
export function resultSummary(r: ExecutionResult): Omit<ExecutionResult, 'files' | 'outputs' | 'code'> {
  const { files: _files, outputs: _outputs, code: _code, ...summary } = r;
  return summary;
}
