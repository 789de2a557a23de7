// Runs a suite's programs against pybox, `concurrency` at once: each program is ONE execution whose
// cases the server runs in one sandbox. A program the service cannot run (refused, unreachable,
// its fault) is recorded as not run and the others go on; a busy service (429/503 with
// Retry-After) is waited for by the client.
import type { PyboxClient } from '../../client/client.ts';
import { ExecutionRequest, type ExecutionResult } from '../../core/schemas.ts';
import { describeError } from '../remote.ts';
import type { ProgramSpec } from './cases.ts';

/**
 * passed: every case passed. failed: the program ran and some case did not pass (or it could not
 * start: a syntax error, a whole-sandbox limit). unrun: pybox could not run it (the service refused
 * or failed, or its own fault: internal_error, cancelled) - not the program's doing.
 */
export type ProgramVerdict = 'passed' | 'failed' | 'unrun';

export interface ProgramOutcome {
  program: ProgramSpec;
  verdict: ProgramVerdict;
  /** The execution's result, when the service gave one. */
  result?: ExecutionResult;
  /** Why it was not run (unrun). */
  problem?: string;
  /** Wall time of the request, queue included. */
  wallMs: number;
}

export interface RunSuiteOptions {
  concurrency: number;
  /** A program was sent. */
  onStart?(program: ProgramSpec): void;
  /** A program has its outcome. */
  onDone?(outcome: ProgramOutcome): void;
  signal?: AbortSignal;
}

/** The request for one program: its code, files, limits and cases. Refused here when invalid. */
export function requestFor(program: ProgramSpec): { request: ExecutionRequest } | { problem: string } {
  const checked = ExecutionRequest.safeParse({
    code: program.code,
    ...(program.files.length ? { files: program.files } : {}),
    ...(program.timeoutMs !== undefined ? { timeoutMs: program.timeoutMs } : {}),
    ...(program.memoryMb !== undefined ? { memoryMb: program.memoryMb } : {}),
    tests: program.cases,
  });
  if (checked.success) return { request: checked.data };
  const issue = checked.error.issues[0];
  return { problem: `not a valid request: ${issue ? `${issue.path.join('.') || 'request'}: ${issue.message}` : 'refused'}` };
}

export function judge(program: ProgramSpec, result: ExecutionResult, wallMs: number): ProgramOutcome {
  if (result.status === 'internal_error' || result.status === 'cancelled') {
    return { program, result, wallMs, verdict: 'unrun', problem: `the execution ended ${result.status}${result.error ? `: ${result.error.message}` : ''}` };
  }
  if (!result.tests || !result.summary) {
    return { program, result, wallMs, verdict: 'unrun', problem: 'the server returned no test results (does it support test cases?)' };
  }
  const allPassed = result.success && result.summary.passed === result.summary.total && result.summary.total === program.cases.length;
  return { program, result, wallMs, verdict: allPassed ? 'passed' : 'failed' };
}

export async function runSuite(client: PyboxClient, programs: ProgramSpec[], opts: RunSuiteOptions): Promise<ProgramOutcome[]> {
  const outcomes = new Array<ProgramOutcome>(programs.length);
  let next = 0;
  const worker = async () => {
    while (next < programs.length && !opts.signal?.aborted) {
      const index = next++;
      const program = programs[index]!;
      opts.onStart?.(program);
      const started = performance.now();
      let outcome: ProgramOutcome;
      const built = requestFor(program);
      if ('problem' in built) {
        outcome = { program, verdict: 'unrun', problem: built.problem, wallMs: 0 };
      } else {
        try {
          const result = await client.execute(built.request, { signal: opts.signal });
          outcome = judge(program, result, performance.now() - started);
        } catch (e) {
          if (opts.signal?.aborted) throw e;
          outcome = { program, verdict: 'unrun', problem: describeError(e), wallMs: performance.now() - started };
        }
      }
      outcomes[index] = outcome;
      opts.onDone?.(outcome);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency, programs.length)) }, worker));
  return outcomes;
}
