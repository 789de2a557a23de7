// The `feedback` text: what happened in a run, written for a language model that will read it and
// decide what to do next. Plain sentences first (what happened, why a run was stopped and at which
// limit), then the error and the user's own line it points at, then the output, trimmed to a
// budget keeping its head and tail.
import type { SandboxCase } from './sandbox.ts';
import type { ExecutionResult, TestResult, TestSummary, TestVerdict } from './schemas.ts';

export const DEFAULT_FEEDBACK_BUDGET_CHARS = 4000;

export type FeedbackInput = Omit<ExecutionResult, 'feedback' | 'id' | 'createdAt' | 'finishedAt'>;

/** An import the server's import policy flagged (warn mode): the code ran anyway. */
export interface FlaggedImport {
  module: string;
  line: number | null;
}

/** Why a run was cancelled, and whether the code had started by then. */
export interface Cancellation {
  /**
   * Its caller went away (a closed connection, a cancelled tool call), the service shut down, or
   * the batch it belonged to was cancelled (DELETE /v1/batches/{id}).
   */
  by: 'client' | 'shutdown' | 'batch';
  /** The code had begun to run (it may have printed, written files or used time). */
  started: boolean;
}

export interface FeedbackOptions {
  /** The text never exceeds this many characters. */
  budgetChars?: number;
  /** Bytes one stream may produce before the run is stopped (output_limit), to name that limit. */
  floodBytes?: number;
  flaggedImports?: readonly FlaggedImport[];
  /** For a cancelled run: who cancelled it and when. */
  cancellation?: Cancellation;
  /** For a tests run: each case's input, index for index, to show the first failing one's. */
  caseInputs?: ReadonlyArray<CaseInput>;
}

/** What the feedback (and a case's message) shows of a test case's input. */
export type CaseInput = Pick<SandboxCase, 'stdin' | 'args' | 'timeoutMs'>;

/** The error type of a run the import policy blocked (status validation_failed); set by the runner. */
const IMPORT_POLICY_ERROR = 'ImportPolicyError';

const isHighSurrogate = (c: number) => c >= 0xd800 && c <= 0xdbff;
const isLowSurrogate = (c: number) => c >= 0xdc00 && c <= 0xdfff;

/** Keeps the head and the tail of `text` within `budget` characters, marking what was cut. */
export function trimMiddle(text: string, budget: number): string {
  if (text.length <= budget) return text;
  const marker = (n: number) => `\n… [${n} characters cut] …\n`;
  const room = Math.max(budget - marker(text.length).length, 0);
  let head = Math.ceil(room * 0.4);
  let tailStart = text.length - (room - head);
  // Cut at line ends when one is near, so both sides show whole lines.
  const slack = (n: number) => Math.min(Math.floor(n / 4), 200);
  const headEnd = head > 0 ? text.lastIndexOf('\n', head - 1) : -1;
  if (headEnd >= 0 && head - headEnd <= slack(head)) head = headEnd;
  const tailNewline = tailStart > 0 ? text.indexOf('\n', tailStart - 1) : -1;
  if (tailNewline >= 0 && tailNewline + 1 - tailStart <= slack(text.length - tailStart)) tailStart = tailNewline + 1;
  // Never cut a surrogate pair in half: a lone surrogate is not valid Unicode, and strict JSON
  // clients reject it.
  if (head > 0 && isHighSurrogate(text.charCodeAt(head - 1))) head--;
  if (tailStart < text.length && isLowSurrogate(text.charCodeAt(tailStart))) tailStart++;
  return text.slice(0, head) + marker(tailStart - head) + text.slice(tailStart);
}

export const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
const bytes = (n: number) => n.toLocaleString('en-US');
const article = (word: string) => (/^[AEIOU]/i.test(word) ? 'an' : 'a');
/** Source lines and messages are shown whole up to these lengths, else head and tail. */
const SOURCE_LINE_CHARS = 240;
const FLAGGED_SHOWN = 10;

function failure(type: string, message: string): string {
  return message === '' ? type : `${type}: ${message}`;
}

function headline(r: FeedbackInput, opts: FeedbackOptions, messageChars: number): string {
  const text = runHeadline(r, opts, messageChars);
  if (r.status === 'validation_failed' && r.tests) return `${text}${/[.:!?]$/.test(text) ? '' : '.'} ${r.tests.length === 1 ? 'The test case was' : `None of the ${r.tests.length} test cases was`} run.`;
  return text;
}

function runHeadline(r: FeedbackInput, opts: FeedbackOptions, messageChars: number): string {
  const limits = r.limits;
  const message = r.error ? trimMiddle(r.error.message, messageChars) : '';
  switch (r.status) {
    case 'completed':
      return `The code ran successfully in ${seconds(r.durationMs)} (exit code 0).`;
    case 'error': {
      if (r.error) return `The code failed with ${failure(r.error.type, message)}`;
      if (r.signal) return `The code was killed by ${r.signal} (exit code ${r.exitCode ?? 'none'}).`;
      return `The code exited with code ${r.exitCode ?? 'unknown'} (non-zero means failure).`;
    }
    case 'timeout': {
      // The time limit is the caller's whole budget, the sandbox's start included (engine/run-sandbox.ts).
      if (r.durationMs === 0) {
        return `Nothing ran: the time limit of ${seconds(limits.timeoutMs)} ran out while the sandbox was still starting (the service is busy, or the CPU limit is very low). This says nothing about the code: run it again, with a longer time limit or more CPU.`;
      }
      const started = r.durationMs < limits.timeoutMs * 0.9 ? ` Starting the sandbox took part of that time; the code itself ran ${seconds(r.durationMs)}.` : '';
      const shown = r.stdout.length > 0 || r.stderr.length > 0 ? 'Output printed before that is shown below.' : 'It printed nothing before that.';
      return `The code was stopped because it ran longer than the time limit of ${seconds(limits.timeoutMs)}.${started} ${shown} Make it faster, or look for an infinite loop or a blocking call such as input() or a sleep.`;
    }
    case 'oom': {
      const what = r.signal ? 'was killed because it used' : 'failed because it tried to use';
      return `The code ${what} more than the memory limit of ${limits.memoryMb} MB. Use less memory: process data in chunks, avoid building huge lists or arrays.`;
    }
    case 'output_limit': {
      const flood = opts.floodBytes ? ` The output limit is ${bytes(opts.floodBytes)} bytes per stream and this run went past it.` : '';
      return `The code was stopped because it printed far too much output (each stream keeps ${bytes(limits.outputBytes)} bytes).${flood} Print less: summaries, counts or the first few items instead of everything.`;
    }
    case 'validation_failed':
      if (r.error?.type === IMPORT_POLICY_ERROR) {
        return `The code was not run: ${message}. Rewrite the code without the blocked imports.`;
      }
      return r.error
        ? `The code was not run: it has ${article(r.error.type)} ${r.error.type} at line ${r.error.line ?? '?'}${r.error.column ? `, column ${r.error.column}` : ''}: ${message}`
        : 'The code was not run: it did not pass validation.';
    case 'cancelled':
      return cancelledHeadline(r, opts.cancellation);
    case 'internal_error':
      return `The sandbox service failed to run the code; this is not a fault of the code itself. You may retry.${r.error ? ` (${message})` : ''}`;
  }
}

function cancelledHeadline(r: FeedbackInput, c: Cancellation | undefined): string {
  const who =
    c?.by === 'shutdown'
      ? 'the sandbox service was shutting down'
      : c?.by === 'client'
        ? 'the caller went away (the request was closed or cancelled)'
        : c?.by === 'batch'
          ? 'the batch it belonged to was cancelled'
          : 'the caller went away or the service shut down';
  const printed = r.stdout.length > 0 || r.stderr.length > 0;
  const when =
    c === undefined
      ? ''
      : c.started
        ? ` The code had been running for ${seconds(r.durationMs)} and was stopped${printed ? '; what it printed until then is shown below' : ''}.`
        : ' The code had not started: nothing of it ran.';
  return `The run was cancelled because ${who}.${when} This says nothing about the code itself; run it again if you still need the result.`;
}

function pointer(r: FeedbackInput, code: string): string | null {
  const e = r.error;
  if (!e || e.line == null) return null;
  if (r.status === 'validation_failed' && e.text) {
    return `Line ${e.line}:\n    ${trimMiddle(e.text, SOURCE_LINE_CHARS)}${e.caret && e.text.length <= SOURCE_LINE_CHARS ? `\n    ${e.caret}` : ''}`;
  }
  const source = code.split('\n')[e.line - 1];
  return source === undefined ? null : `The error points at line ${e.line} of the code:\n    ${trimMiddle(source.trim(), SOURCE_LINE_CHARS)}`;
}

/** out/ exists before the code runs: code that creates it without exist_ok fails, and should hear why. */
function outDirNote(r: FeedbackInput): string | null {
  const e = r.error;
  if (r.status !== 'error' || e?.type !== 'FileExistsError' || !/'(\.\/)?out\/?'/.test(e.message)) return null;
  return "Note: out/ already exists when the code starts (files written there are returned). Create it with os.makedirs('out', exist_ok=True), or just write into it.";
}

function importNote(flagged: readonly FlaggedImport[]): string | null {
  if (flagged.length === 0) return null;
  const named = flagged.slice(0, FLAGGED_SHOWN).map((f) => `${f.module.slice(0, 100)}${f.line == null ? '' : ` (line ${f.line})`}`);
  const more = flagged.length > FLAGGED_SHOWN ? ` and ${flagged.length - FLAGGED_SHOWN} more` : '';
  return `Note: this server's import policy flags ${named.join(', ')}${more}. The code was allowed to run, but the sandbox has no network and no privileges, so code relying on these modules may not work; prefer the standard library and the installed packages.`;
}

const plural = (n: number, one: string, many: string) => (n === 1 ? one : many);

/** "2 figures were produced (PNG images, in outputs)." and what was not returned; null when neither. */
function figuresNote(r: FeedbackInput): string | null {
  const figures = (r.outputs ?? []).filter((o) => o.kind === 'figure').length;
  const dropped = r.outputsDropped ?? 0;
  const said: string[] = [];
  if (figures > 0) said.push(`${figures} ${plural(figures, 'figure was', 'figures were')} produced (${plural(figures, 'a PNG image', 'PNG images')}, in outputs).`);
  if (dropped > 0) {
    said.push(
      `${dropped} ${figures > 0 ? 'more ' : ''}${plural(dropped, 'output was', 'outputs were')} not returned: over the limit on their number or size, or ${plural(dropped, 'it', 'they')} could not be drawn.`,
    );
  }
  return said.length > 0 ? said.join(' ') : null;
}

/** A session call's displayed value (its text/plain form, briefly), and in which other forms outputs has it. */
function valueNote(r: FeedbackInput, chars: number): string | null {
  const results = (r.outputs ?? []).filter((o) => o.kind === 'result');
  const plain = results.find((o) => o.type === 'text/plain');
  if (!plain) return null;
  const others = results.filter((o) => o.type !== 'text/plain').map((o) => (o.type === 'text/html' ? 'HTML' : 'Markdown'));
  const also = others.length > 0 ? ` (also as ${others.join(' and ')} in outputs)` : '';
  return `Value of the last expression${also}:\n${indent(trimMiddle(plain.data.trimEnd(), chars))}`;
}

/**
 * The feedback text for a result: never longer than `budgetChars`. The headline, the user's line
 * and the traceback come first; stdout and stderr share what is left, head and tail kept.
 */
export function renderFeedback(r: FeedbackInput, code: string, opts: FeedbackOptions = {}): string {
  const budget = opts.budgetChars ?? DEFAULT_FEEDBACK_BUDGET_CHARS;
  if (r.tests && r.status !== 'validation_failed') return renderTestsFeedback(r, r.tests, code, opts, budget);
  const parts: string[] = [headline(r, opts, Math.floor(budget / 5))];
  const figures = figuresNote(r);
  if (figures) parts.push(figures);
  const value = valueNote(r, Math.min(600, Math.floor(budget / 8)));
  if (value) parts.push(value);
  const at = pointer(r, code);
  if (at) parts.push(at);
  if (r.status === 'error' && r.error?.traceback) {
    parts.push(`Traceback:\n${trimMiddle(r.error.traceback.trimEnd(), Math.floor(budget / 3))}`);
  }
  const note = [importNote(opts.flaggedImports ?? []), outDirNote(r)].filter((n) => n !== null).join('\n\n') || null;
  const fixedLength = parts.join('\n\n').length + (note ? note.length + 2 : 0);
  const room = budget - fixedLength;
  const streams: string[] = [];
  // The traceback, or the syntax error's line and caret, already show what stderr holds.
  const stderrShown = (r.status === 'error' && r.error?.traceback) || (r.status === 'validation_failed' && at) ? '' : r.stderr;
  const both = r.stdout.length > 0 && stderrShown.length > 0;
  // Each stream's label and separators take up to ~45 characters of its share.
  const share = Math.max((both ? Math.floor(room / 2) : room) - 45, 0);
  if (r.stdout.length > 0) {
    streams.push(`stdout${r.truncated.stdout ? ' (cut at the output limit)' : ''}:\n${trimMiddle(r.stdout.trimEnd(), share)}`);
  } else if (r.status === 'completed') {
    streams.push(r.outputs?.length ? 'stdout: (empty)' : 'stdout: (empty: the code printed nothing; use print() to show results)');
  }
  if (stderrShown.length > 0) {
    streams.push(`stderr${r.truncated.stderr ? ' (cut at the output limit)' : ''}:\n${trimMiddle(stderrShown.trimEnd(), share)}`);
  }
  if (r.files && r.files.length > 0) {
    const list = `Files returned from out/: ${r.files.map((f) => `${f.path} (${bytes(f.size)} bytes)`).join(', ')}`;
    streams.push(trimMiddle(list, Math.max(Math.floor(room / 4), 80)));
  }
  const text = [...parts, ...streams, ...(note ? [note] : [])].join('\n\n');
  // The guarantee: whatever the parts added up to, the budget holds.
  return trimMiddle(text, budget);
}

// ---- test cases ------------------------------------------------------------------------------------

/** How the counts sentence names each verdict but passed. */
const VERDICT_WORDS: Record<Exclude<TestVerdict, 'passed'>, (n: number) => string> = {
  failed: (n) => `${n} failed`,
  error: (n) => `${n} ended with an error`,
  timeout: (n) => `${n} ran out of time`,
  oom: (n) => `${n} ran out of memory`,
  output_limit: (n) => `${n} printed too much`,
  not_run: (n) => `${n} ${n === 1 ? 'was' : 'were'} not run`,
};

/** "3 of 12 test cases passed; 7 failed, 2 were not run." */
function countsSentence(s: TestSummary): string {
  const others = (Object.keys(VERDICT_WORDS) as Array<keyof typeof VERDICT_WORDS>).filter((v) => s[v] > 0).map((v) => VERDICT_WORDS[v](s[v]));
  const cases = s.total === 1 ? 'test case' : 'test cases';
  return `${s.passed} of ${s.total} ${cases} passed${others.length > 0 ? `; ${others.join(', ')}` : ''}.`;
}

/** The cases counted by verdict (the result's `summary`). */
export function summarizeTests(tests: readonly TestResult[]): TestSummary {
  const s: TestSummary = { total: tests.length, passed: 0, failed: 0, error: 0, timeout: 0, oom: 0, output_limit: 0, not_run: 0 };
  for (const t of tests) s[t.verdict]++;
  return s;
}

function testsHeadline(r: FeedbackInput, s: TestSummary, opts: FeedbackOptions, messageChars: number): string {
  const counts = countsSentence(s);
  switch (r.status) {
    case 'completed':
      if (s.passed === s.total) return s.total === 1 ? `The test case passed (${seconds(r.durationMs)}).` : `All ${s.total} test cases passed (${seconds(r.durationMs)} in all).`;
      return counts;
    case 'timeout':
      if (r.durationMs === 0) return `${runHeadline(r, opts, messageChars)} ${counts}`;
      return `The execution was stopped at its total time limit while it ran the test cases (each case has its own limit, and together they took longer than their sum allows). ${counts}`;
    case 'oom':
      return `The sandbox ran out of memory (the limit is ${r.limits.memoryMb} MB) while it ran the test cases. ${counts}`;
    case 'output_limit':
      return `The execution was stopped because it printed far too much output while it ran the test cases. ${counts}`;
    case 'cancelled':
      return `${cancelledHeadline(r, opts.cancellation)} ${counts}`;
    default:
      return `${runHeadline(r, opts, messageChars)} ${counts}`;
  }
}

/** "Test case 3" or "Test case 3 "adds negatives"": the number always, the name when it has its own. */
function caseLabel(t: TestResult): string {
  const n = t.index + 1;
  return t.name === `case ${n}` ? `Test case ${n}` : `Test case ${n} ${JSON.stringify(t.name)}`;
}

const indent = (text: string) => text.replace(/^/gm, '    ');

/** The first case that did not pass, told so a model can fix the program: what went wrong, on which input. */
function caseBlock(t: TestResult, input: CaseInput | undefined, code: string, room: number): string {
  const label = caseLabel(t);
  const parts: string[] = [];
  let stderrShown = true;
  switch (t.verdict) {
    case 'failed':
      parts.push(`${label} failed: ${t.mismatch?.message ?? 'its output is not the expected one'}.`);
      if (t.mismatch && t.mismatch.line === null && t.mismatch.expected !== '' && /regular expression/.test(t.mismatch.message)) {
        parts.push(`The pattern:\n${indent(t.mismatch.expected)}`);
      }
      break;
    case 'error': {
      const e = t.error;
      parts.push(e ? `${label} failed with ${failure(e.type, trimMiddle(e.message, 400))}` : `${label} ${t.message ?? 'ended with an error'}.`);
      const source = e?.line != null ? code.split('\n')[e.line - 1] : undefined;
      if (e?.line != null && source !== undefined) parts.push(`The error points at line ${e.line} of the code:\n    ${trimMiddle(source.trim(), SOURCE_LINE_CHARS)}`);
      if (e?.traceback) {
        parts.push(`Traceback:\n${trimMiddle(e.traceback.trimEnd(), Math.floor(room / 3))}`);
        stderrShown = false;
      }
      break;
    }
    case 'timeout':
      parts.push(
        `${label} ran longer than its time limit${input ? ` of ${seconds(input.timeoutMs)}` : ''} and was stopped. Look for an infinite loop, a slow algorithm, or input() waiting for more lines than the case's stdin has.`,
      );
      break;
    case 'oom':
      parts.push(`${label} ${t.message ?? 'ran out of memory'}. Use less memory: process data in chunks, avoid building huge lists or arrays.`);
      break;
    case 'output_limit':
      parts.push(`${label} ${t.message ?? 'printed far too much'}. Print only what the case asks for.`);
      break;
    case 'not_run':
    case 'passed':
      parts.push(`${label}: ${t.message ?? t.verdict}.`);
      break;
  }
  if (input) {
    parts.push(input.stdin === '' ? 'Its stdin was empty.' : `Its stdin:\n${indent(trimMiddle(input.stdin.replace(/\n$/, ''), 300))}`);
    if (input.args.length > 0) parts.push(`Its arguments: ${trimMiddle(JSON.stringify(input.args), 300)}`);
  }
  const fixed = parts.join('\n\n').length;
  const stderr = stderrShown ? t.stderr : '';
  const both = t.stdout.length > 0 && stderr.length > 0;
  const share = Math.max(((both ? Math.floor((room - fixed) / 2) : room - fixed) - 60), 0);
  // Too little room left for a useful part of a stream: better none than a marker alone.
  if (share >= 80) {
    const line = t.mismatch?.line ?? null;
    // The result keeps testOutputBytes of the output: the differing line may lie beyond them.
    if (t.stdout.length > share && line !== null && line <= t.stdout.replace(/\n$/, '').split('\n').length) parts.push(linesAround(t.stdout, line, share));
    else if (t.stdout.length > 0) parts.push(`Its stdout${t.truncated.stdout ? ' (cut)' : ''}:\n${trimMiddle(t.stdout.trimEnd(), share)}`);
    else if (t.verdict === 'failed' && t.mismatch?.line !== null) parts.push('Its stdout was empty.');
    if (stderr.length > 0) parts.push(`Its stderr${t.truncated.stderr ? ' (cut)' : ''}:\n${trimMiddle(stderr.trimEnd(), share)}`);
  }
  return parts.join('\n\n');
}

/** Lines of a long output around the one that differs, numbered: the head and tail would miss it. */
function linesAround(stdout: string, line: number, share: number): string {
  const lines = stdout.replace(/\n$/, '').split('\n');
  const from = Math.max(line - 4, 0);
  const shown = lines.slice(from, Math.min(line + 3, lines.length)).map((l, i) => `${String(from + i + 1).padStart(6)} | ${trimMiddle(l, 160)}`);
  return trimMiddle(`Its stdout around line ${line} (of ${lines.length}):\n${shown.join('\n')}`, share);
}

const OTHERS_SHOWN = 10;

/**
 * The feedback of a run with test cases: the counts by verdict, then the first case that did not
 * pass (its input, where its output differs, its error), then which others did not pass.
 */
function renderTestsFeedback(r: FeedbackInput, tests: readonly TestResult[], code: string, opts: FeedbackOptions, budget: number): string {
  const summary = r.summary ?? summarizeTests(tests);
  const parts = [testsHeadline(r, summary, opts, Math.floor(budget / 5))];
  const bad = tests.filter((t) => t.verdict !== 'passed' && t.verdict !== 'not_run');
  const first = bad[0];
  let others = '';
  if (bad.length > 1) {
    const named = bad.slice(1, OTHERS_SHOWN + 1).map((t) => `case ${t.index + 1}${t.name === `case ${t.index + 1}` ? '' : ` ${JSON.stringify(trimMiddle(t.name, 60))}`} (${t.verdict})`);
    const more = bad.length - 1 - named.length;
    others = `Other cases that did not pass: ${named.join(', ')}${more > 0 ? ` and ${more} more` : ''}.`;
  }
  if (first) {
    const room = budget - parts[0]!.length - others.length - 4;
    parts.push(caseBlock(first, opts.caseInputs?.[first.index], code, room));
  }
  if (others) parts.push(others);
  return trimMiddle(parts.join('\n\n'), budget);
}
