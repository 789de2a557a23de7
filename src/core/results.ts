// What happened, as data: a sandbox's outcome turned into an execution's result (status, exit code
// and signal, output, parsed error, files, feedback). The node that ran the code builds it, so the
// runtime it names is the one the code really ran under.
import { constants } from 'node:os';
import type { Config } from '../config/schema.ts';
import type { CaseOutcome, SandboxOutcome, SandboxReport } from './sandbox.ts';
import { renderFeedback, seconds, summarizeTests, type Cancellation, type CaseInput, type FeedbackInput } from './feedback.ts';
import type { Clock, TestSpec } from './ports.ts';
import { OUTPUT_TYPES, type AppliedLimits, type ExecutionResult, type ExecutionStatus, type OutputFile, type ResultOutput, type RuntimeName, type TestResult, type TestSummary } from './schemas.ts';
import { judge, newCompareContext } from './verdicts.ts';

/** Signal numbers to names; aliases (SIGIOT for 6) come later in the table and are skipped. */
const SIGNAL_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(constants.signals)) if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name);
export const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** Printable, no backslash, at most 1024 characters: returned names end up in logs and feedback. */
const SAFE_RETURNED_PATH = /^[^\p{Cc}\p{Cf}\\]{1,1024}$/u;

export interface ResultDeps {
  runtime: RuntimeName;
  limits: Pick<Config['limits'], 'floodBytes' | 'outputFilesMax' | 'outputFilesMaxBytes' | 'testOutputBytes' | 'outputsMax' | 'outputsMaxBytes'>;
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
  /** The test cases' expectations (AcceptedExecution.tests): the result then has `tests` and `summary`. */
  tests?: readonly TestSpec[] | undefined;
  /** The cases' inputs as the sandbox got them (job.tests), index for index: stdin for the feedback, time limits for the messages. */
  caseInputs?: ReadonlyArray<CaseInput> | undefined;
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
  let outputs: ResultOutput[] = [];
  let outputsDropped = 0;
  let cpuMs: number | null = null;
  const runReport = r?.phase === 'run' ? r : null;
  if (runReport) {
    exitCode = runReport.exitCode;
    signal = runReport.signal ? signalName(runReport.signal) : null;
    error = runReport.error;
    cpuMs = runReport.cpuMs ?? null;
    ({ files, dropped: filesDropped } = acceptFiles(deps, runReport));
    ({ outputs, dropped: outputsDropped } = acceptOutputs(deps, runReport));
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
  let judged: { tests: TestResult[]; summary: TestSummary } | undefined;
  if (input.tests) {
    // A tests run: the program's output is the cases', so the run as a whole shows none, except the
    // syntax error that stopped every case.
    if (status === 'completed' || status === 'error') {
      status = 'completed';
      error = null;
    }
    judged = judgeCases(deps, input, input.tests, status);
    if (status === 'completed' && judged.summary.not_run > 0) {
      // Only a sandbox that broke its contract gets here: a finished run reports every case.
      status = 'internal_error';
      error = { type: 'InternalError', message: `the sandbox reported ${judged.summary.total - judged.summary.not_run} of ${judged.summary.total} test cases`, line: null };
      judged = judgeCases(deps, input, input.tests, status);
    }
    exitCode = null;
    signal = null;
    base.stdout = '';
    const keepStderr = status === 'validation_failed';
    base.truncated = { stdout: false, stderr: keepStderr && base.truncated.stderr };
    if (!keepStderr) base.stderr = '';
  }
  // Keys in reading order: what happened first, then the output, then the details.
  const partial: FeedbackInput = {
    status,
    success: status === 'completed' && (judged === undefined || judged.summary.passed === judged.summary.total),
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
  if (outputs.length > 0) partial.outputs = outputs;
  if (outputsDropped > 0) partial.outputsDropped = outputsDropped;
  if (judged) {
    partial.tests = judged.tests;
    partial.summary = judged.summary;
  }
  const finishedAt = deps.clock.now();
  return {
    id,
    ...partial,
    feedback: renderFeedback(partial, code, {
      budgetChars: deps.feedbackBudgetChars,
      floodBytes: deps.limits.floodBytes,
      flaggedImports: runReport?.flaggedImports ?? [],
      ...(cancellation ? { cancellation } : {}),
      ...(input.caseInputs ? { caseInputs: input.caseInputs } : {}),
    }),
    createdAt: new Date(createdAtMs).toISOString(),
    finishedAt: new Date(finishedAt).toISOString(),
  };
}

const NOT_RUN_BECAUSE: Record<ExecutionStatus, string> = {
  completed: 'the sandbox did not report it',
  error: 'the sandbox did not report it',
  validation_failed: 'the code did not pass validation, so no case ran',
  timeout: "the execution's total time limit ran out before this case",
  oom: 'the sandbox ran out of memory before this case',
  output_limit: 'the execution printed too much before this case',
  cancelled: 'the execution was cancelled before this case',
  internal_error: 'the sandbox failed before this case',
};

const NO_OUTPUT: CaseOutcome = { kind: 'not_run', exitCode: null, signal: null, error: null, stdout: EMPTY, stderr: EMPTY, durationMs: 0, cpuMs: null };

/**
 * One TestResult per spec, judged here from the sandbox's report of each case (hostile: only its
 * kind, exit code and output are used, each checked by judge()); a case it did not report, or every
 * case when the code failed validation, is not_run.
 */
function judgeCases(deps: ResultDeps, input: ResultInput, specs: readonly TestSpec[], status: ExecutionStatus): { tests: TestResult[]; summary: TestSummary } {
  const outcomes = status === 'validation_failed' ? [] : (input.outcome.cases ?? []);
  const ctx = newCompareContext();
  const tests = specs.map((spec, index): TestResult => {
    const o = outcomes[index] ?? NO_OUTPUT;
    const { verdict, mismatch } = judge(spec, o, ctx);
    const stdout = capText(o.stdout.text(), deps.limits.testOutputBytes);
    const stderr = capText(o.stderr.text(), deps.limits.testOutputBytes);
    const killed = verdict === 'timeout' || verdict === 'output_limit' || (verdict === 'oom' && o.exitCode === null);
    const signal = o.signal ? signalName(o.signal) : killed ? 'SIGKILL' : null;
    const result: TestResult = {
      index,
      name: spec.name,
      verdict,
      exitCode: verdict === 'not_run' ? null : o.exitCode,
      signal: verdict === 'not_run' ? null : signal,
      stdout: stdout.text,
      stderr: stderr.text,
      truncated: { stdout: o.stdout.truncated || stdout.cut, stderr: o.stderr.truncated || stderr.cut },
      // Reported from inside the sandbox: a value JSON cannot carry becomes 0.
      durationMs: Number.isFinite(o.durationMs) ? Math.round(o.durationMs * 10) / 10 : 0,
      error: o.error,
      mismatch,
    };
    const message = caseMessage(deps, input, index, verdict, o, signal, status);
    if (message) result.message = message;
    return result;
  });
  return { tests, summary: summarizeTests(tests) };
}

function caseMessage(deps: ResultDeps, input: ResultInput, index: number, verdict: TestResult['verdict'], o: CaseOutcome, signal: string | null, status: ExecutionStatus): string | undefined {
  switch (verdict) {
    case 'passed':
    case 'failed':
      return undefined;
    case 'error':
      if (o.error) return `${o.error.type}${o.error.message ? `: ${o.error.message.slice(0, 500)}` : ''}`;
      if (signal) return `killed by ${signal}${o.exitCode === null ? '' : ` (exit code ${o.exitCode})`}`;
      return `exited with code ${o.exitCode ?? 'unknown'}`;
    case 'timeout': {
      const limit = input.caseInputs?.[index]?.timeoutMs;
      return `ran longer than its time limit${limit ? ` of ${seconds(limit)}` : ''} and was stopped`;
    }
    case 'oom':
      return `used more than the memory limit of ${input.limits.memoryMb} MB and was stopped`;
    case 'output_limit':
      return `printed more than ${deps.limits.floodBytes} bytes to one stream and was stopped`;
    case 'not_run':
      return `not run: ${NOT_RUN_BECAUSE[status]}`;
  }
}

/** At most `cap` bytes of `text` in UTF-8, cut at a character boundary. */
function capText(text: string, cap: number): { text: string; cut: boolean } {
  // Each UTF-16 unit is at most 3 bytes in UTF-8: short texts need no encoding to know they fit.
  if (text.length * 3 <= cap) return { text, cut: false };
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= cap) return { text, cut: false };
  let end = cap;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return { text: bytes.subarray(0, end).toString('utf8'), cut: true };
}

const signalName = (n: number) => SIGNAL_NAMES.get(n) ?? `SIG${n}`;

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

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const OUTPUT_TYPE_SET: ReadonlySet<string> = new Set(OUTPUT_TYPES);
/** With the u flag, \p{Cs} matches only a surrogate without its pair: text JSON clients reject. */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Re-checks the rich outputs (figures) reported from inside the sandbox: a known type and kind;
 * an image canonical base64 of a PNG; a text well-formed; each within outputsMaxBytes, at most
 * outputsMax of them. The rest are counted with those the runner dropped.
 */
function acceptOutputs(deps: ResultDeps, report: Extract<SandboxReport, { phase: 'run' }>): { outputs: ResultOutput[]; dropped: number } {
  const { outputsMax, outputsMaxBytes } = deps.limits;
  const outputs: ResultOutput[] = [];
  const reported = report.outputsDropped ?? 0;
  let dropped = Number.isSafeInteger(reported) && reported > 0 ? reported : 0;
  for (const o of report.outputs ?? []) {
    const output = outputs.length < outputsMax ? acceptedOutput(o, outputsMaxBytes) : null;
    if (output) outputs.push(output);
    else dropped++;
  }
  return { outputs, dropped };
}

function acceptedOutput(o: { type: string; data: string; kind: string }, maxBytes: number): ResultOutput | null {
  if (!OUTPUT_TYPE_SET.has(o.type) || (o.kind !== 'figure' && o.kind !== 'result')) return null;
  const type = o.type as ResultOutput['type'];
  if (type === 'image/png') {
    // Checked on its length before the pattern: a string far too long is refused without scanning it.
    if (o.data.length % 4 !== 0 || o.data.length > 4 * Math.ceil(maxBytes / 3) || !BASE64.test(o.data)) return null;
    if (Buffer.byteLength(o.data, 'base64') > maxBytes) return null;
    if (!Buffer.from(o.data.slice(0, 12), 'base64').subarray(0, 8).equals(PNG_SIGNATURE)) return null;
  } else if (o.data.length > maxBytes || LONE_SURROGATE.test(o.data) || Buffer.byteLength(o.data, 'utf8') > maxBytes) {
    return null;
  }
  return { type, data: o.data, kind: o.kind };
}
