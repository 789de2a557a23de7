// The `feedback` text: what happened in a run, written for a language model that will read it and
// decide what to do next. Plain sentences first (what happened, why a run was stopped and at which
// limit), then the error and the user's own line it points at, then the output, trimmed to a
// budget keeping its head and tail.
import type { ExecutionResult } from './schemas.ts';

export const DEFAULT_FEEDBACK_BUDGET_CHARS = 4000;

export type FeedbackInput = Omit<ExecutionResult, 'feedback' | 'id' | 'createdAt' | 'finishedAt'>;

/** An import the server's import policy flagged (warn mode): the code ran anyway. */
export interface FlaggedImport {
  module: string;
  line: number | null;
}

/** Why a run was cancelled, and whether the code had started by then. */
export interface Cancellation {
  /** Its caller went away (a closed connection, a cancelled tool call), or the service shut down. */
  by: 'client' | 'shutdown';
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
}

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

const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
const bytes = (n: number) => n.toLocaleString('en-US');
const article = (word: string) => (/^[AEIOU]/i.test(word) ? 'an' : 'a');
/** Source lines and messages are shown whole up to these lengths, else head and tail. */
const SOURCE_LINE_CHARS = 240;
const FLAGGED_SHOWN = 10;

function failure(type: string, message: string): string {
  return message === '' ? type : `${type}: ${message}`;
}

function headline(r: FeedbackInput, opts: FeedbackOptions, messageChars: number): string {
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
    c?.by === 'shutdown' ? 'the sandbox service was shutting down' : c?.by === 'client' ? 'the caller went away (the request was closed or cancelled)' : 'the caller went away or the service shut down';
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

/**
 * The feedback text for a result: never longer than `budgetChars`. The headline, the user's line
 * and the traceback come first; stdout and stderr share what is left, head and tail kept.
 */
export function renderFeedback(r: FeedbackInput, code: string, opts: FeedbackOptions = {}): string {
  const budget = opts.budgetChars ?? DEFAULT_FEEDBACK_BUDGET_CHARS;
  const parts: string[] = [headline(r, opts, Math.floor(budget / 5))];
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
    streams.push('stdout: (empty: the code printed nothing; use print() to show results)');
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
