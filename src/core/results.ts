// What happened, as data: a sandbox's outcome turned into an execution's result (status, exit code
// and signal, output, parsed error, files, feedback). The node that ran the code builds it, so the
// runtime it names is the one the code really ran under.
import { constants } from 'node:os';
import type { Config } from '../config/schema.ts';
import type { SandboxOutcome, SandboxReport } from './sandbox.ts';
import { renderFeedback, type Cancellation, type FeedbackInput } from './feedback.ts';
import type { Clock } from './ports.ts';
import type { AppliedLimits, ExecutionResult, ExecutionStatus, OutputFile, RuntimeName } from './schemas.ts';

/** Signal numbers to names; aliases (SIGIOT for 6) come later in the table and are skipped. */
const SIGNAL_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(constants.signals)) if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name);
export const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** Printable, no backslash, at most 1024 characters: returned names end up in logs and feedback. */
const SAFE_RETURNED_PATH = /^[^\p{Cc}\p{Cf}\\]{1,1024}$/u;

export interface ResultDeps {
  runtime: RuntimeName;
  limits: Pick<Config['limits'], 'floodBytes' | 'outputFilesMax' | 'outputFilesMaxBytes'>;
  clock: Clock;
  /** Most characters of a result's feedback text; the default budget when absent. */
  feedbackBudgetChars?: number | undefined;
}

export interface ResultInput {
  id: string;
  code: string;
  limits: AppliedLimits;
  outcome: SandboxOutcome;
  createdAtMs: number;
  cancellation?: Cancellation | undefined;
}

/** The outcome of an execution cancelled before it got a slot: nothing ran, nothing was printed. */
export function notRun(): SandboxOutcome {
  return { kind: 'cancelled', report: null, stdout: EMPTY, stderr: EMPTY, durationMs: 0 };
}

/** The outcome of an execution that failed on pybox's side before or while it ran (`why` is shown). */
export function failedOutcome(why: string): SandboxOutcome {
  return { kind: 'failed', report: null, stdout: EMPTY, stderr: EMPTY, durationMs: 0, failure: why };
}

const EMPTY = { totalBytes: 0, truncated: false, text: () => '' };

export function buildResult(deps: ResultDeps, input: ResultInput): ExecutionResult {
  const { id, code, limits, outcome: o, createdAtMs, cancellation } = input;
  const base = {
    stdout: o.stdout.text(),
    stderr: o.stderr.text(),
    truncated: { stdout: o.stdout.truncated, stderr: o.stderr.truncated },
    durationMs: Math.round(o.durationMs * 10) / 10,
    runtime: deps.runtime,
    limits,
  };
  const r = o.report;
  let status: ExecutionStatus;
  let exitCode: number | null = null;
  let signal: string | null = null;
  let error: ExecutionResult['error'] = null;
  let files: OutputFile[] | undefined;
  let filesDropped: number | undefined;
  let cpuMs: number | null = null;
  const runReport = r?.phase === 'run' ? r : null;
  if (runReport) {
    exitCode = runReport.exitCode;
    signal = runReport.signal ? (SIGNAL_NAMES.get(runReport.signal) ?? `SIG${runReport.signal}`) : null;
    error = runReport.error;
    cpuMs = runReport.cpuMs ?? null;
    ({ files, dropped: filesDropped } = acceptFiles(deps, runReport));
  }
  switch (o.kind) {
    case 'timeout':
      status = 'timeout';
      // With durationMs 0 the budget ran out while the sandbox was still starting: nothing was killed.
      signal = o.durationMs > 0 ? 'SIGKILL' : null;
      break;
    case 'oom':
      status = 'oom';
      // What the runner saw of the code's end, when it outlived it; else the kernel's SIGKILL.
      if (!runReport) {
        exitCode = 137;
        signal = 'SIGKILL';
      }
      break;
    case 'output_limit':
      status = 'output_limit';
      signal = 'SIGKILL';
      break;
    case 'cancelled':
      status = 'cancelled';
      break;
    case 'failed':
      status = 'internal_error';
      error = { type: 'InternalError', message: o.failure ?? 'the sandbox failed', line: null };
      break;
    case 'finished':
      if (r?.phase === 'validation') {
        status = 'validation_failed';
        error = r.error;
      } else if (r?.phase === 'setup') {
        status = 'internal_error';
        error = { type: 'InternalError', message: r.message, line: null };
      } else {
        status = exitCode === 0 ? 'completed' : 'error';
      }
      break;
  }
  // Keys in reading order: what happened first, then the output, then the details.
  const partial: FeedbackInput = {
    status,
    success: status === 'completed',
    exitCode,
    signal,
    stdout: base.stdout,
    stderr: base.stderr,
    truncated: base.truncated,
    durationMs: base.durationMs,
    cpuMs,
    error,
    runtime: base.runtime,
    limits: base.limits,
  };
  if (files) partial.files = files;
  if (filesDropped) partial.filesDropped = filesDropped;
  const finishedAt = deps.clock.now();
  return {
    id,
    ...partial,
    feedback: renderFeedback(partial, code, {
      budgetChars: deps.feedbackBudgetChars,
      floodBytes: deps.limits.floodBytes,
      flaggedImports: runReport?.flaggedImports ?? [],
      ...(cancellation ? { cancellation } : {}),
    }),
    createdAt: new Date(createdAtMs).toISOString(),
    finishedAt: new Date(finishedAt).toISOString(),
  };
}

/** Re-checks files returned from inside the sandbox: their names and sizes are hostile too. */
function acceptFiles(deps: ResultDeps, report: Extract<SandboxReport, { phase: 'run' }>): { files: OutputFile[]; dropped: number } {
  const { outputFilesMax, outputFilesMaxBytes } = deps.limits;
  const files: OutputFile[] = [];
  let dropped = report.filesDropped;
  let total = 0;
  for (const f of report.files) {
    const segments = f.path.split('/');
    const nameOk = SAFE_RETURNED_PATH.test(f.path) && !f.path.startsWith('/') && segments.every((s) => s !== '' && s !== '.' && s !== '..');
    const size = Buffer.byteLength(f.base64, 'base64');
    const b64Ok = f.base64.length % 4 === 0 && BASE64.test(f.base64) && size === f.size;
    if (!nameOk || !b64Ok || files.length >= outputFilesMax || total + size > outputFilesMaxBytes) {
      dropped++;
      continue;
    }
    total += size;
    files.push({ path: f.path, size, contentBase64: f.base64 });
  }
  return { files, dropped };
}
