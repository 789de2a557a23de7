// The `feedback` text: what happened in a run, written for a language model that will read it and
// decide what to do next. Plain sentences first (what happened, why a run was stopped and at which
// limit), then the error and the user's own line it points at, then the output, trimmed to a
// budget keeping its head and tail.
import type { ExecutionResult } from './schemas.ts';

export const DEFAULT_FEEDBACK_BUDGET_CHARS = 4000;

export type FeedbackInput = Omit<ExecutionResult, 'feedback' | 'id' | 'createdAt' | 'finishedAt'>;

const isHighSurrogate = (c: number) => c >= 0xd800 && c <= 0xdbff;
const isLowSurrogate = (c: number) => c >= 0xdc00 && c <= 0xdfff;

/** Keeps the head and the tail of `text` within `budget` characters, marking what was cut. */
export function trimMiddle(text: string, budget: number): string {
  if (text.length <= budget) return text;
  const marker = (n: number) => `\n… [${n} characters cut] …\n`;
  const room = Math.max(budget - marker(text.length).length, 0);
  let head = Math.ceil(room * 0.4);
  let tailStart = text.length - (room - head);
  // Never cut a surrogate pair in half: a lone surrogate is not valid Unicode, and strict JSON
  // clients reject it.
  if (head > 0 && isHighSurrogate(text.charCodeAt(head - 1))) head--;
  if (tailStart < text.length && isLowSurrogate(text.charCodeAt(tailStart))) tailStart++;
  return text.slice(0, head) + marker(tailStart - head) + text.slice(tailStart);
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
const bytes = (n: number) => n.toLocaleString('en-US');

function headline(r: FeedbackInput): string {
  const limits = r.limits;
  switch (r.status) {
    case 'completed':
      return `The code ran successfully in ${seconds(r.durationMs)} (exit code 0).`;
    case 'error': {
      if (r.error) return `The code failed with ${r.error.type}: ${r.error.message}`;
      if (r.signal) return `The code was killed by ${r.signal} (exit code ${r.exitCode ?? 'none'}).`;
      return `The code exited with code ${r.exitCode ?? 'unknown'} (non-zero means failure).`;
    }
    case 'timeout':
      return `The code was stopped because it ran longer than the time limit of ${seconds(limits.timeoutMs)}. Output printed before that is shown below. Make it faster, or look for an infinite loop or a blocking call such as input() or a sleep.`;
    case 'oom':
      return `The code was killed because it used more than the memory limit of ${limits.memoryMb} MB. Use less memory: process data in chunks, avoid building huge lists or arrays.`;
    case 'output_limit':
      return `The code was stopped because it printed far too much output (each stream keeps ${bytes(limits.outputBytes)} bytes). Print less: summaries, counts or the first few items instead of everything.`;
    case 'validation_failed':
      return r.error
        ? `The code was not run: it has a ${r.error.type} at line ${r.error.line ?? '?'}${r.error.column ? `, column ${r.error.column}` : ''}: ${r.error.message}`
        : 'The code was not run: it did not pass validation.';
    case 'internal_error':
      return `The sandbox service failed to run the code; this is not a fault of the code itself. You may retry.${r.error ? ` (${r.error.message})` : ''}`;
  }
}

function pointer(r: FeedbackInput, code: string): string | null {
  const e = r.error;
  if (!e || e.line == null) return null;
  if (r.status === 'validation_failed' && e.text) {
    return `Line ${e.line}:\n    ${e.text}${e.caret ? `\n    ${e.caret}` : ''}`;
  }
  const source = code.split('\n')[e.line - 1];
  return source === undefined ? null : `The error points at line ${e.line} of the code:\n    ${source.trim()}`;
}

export function renderFeedback(r: FeedbackInput, code: string, budgetChars = DEFAULT_FEEDBACK_BUDGET_CHARS): string {
  const parts: string[] = [headline(r)];
  const at = pointer(r, code);
  if (at) parts.push(at);
  if (r.status === 'error' && r.error?.traceback) {
    parts.push(`Traceback:\n${trimMiddle(r.error.traceback.trimEnd(), Math.floor(budgetChars / 3))}`);
  }
  const fixed = parts.join('\n\n');
  const room = Math.max(budgetChars - fixed.length, 200);
  const streams: string[] = [];
  const stderrShown = r.status === 'error' && r.error?.traceback ? '' : r.stderr; // the traceback is already shown
  const both = r.stdout.length > 0 && stderrShown.length > 0;
  const share = (s: string) => (both ? Math.floor(room / 2) : room) - 40;
  if (r.stdout.length > 0) {
    streams.push(`stdout${r.truncated.stdout ? ' (cut at the output limit)' : ''}:\n${trimMiddle(r.stdout.trimEnd(), share(r.stdout))}`);
  } else if (r.status === 'completed') {
    streams.push('stdout: (empty: the code printed nothing; use print() to show results)');
  }
  if (stderrShown.length > 0) {
    streams.push(`stderr${r.truncated.stderr ? ' (cut at the output limit)' : ''}:\n${trimMiddle(stderrShown.trimEnd(), share(stderrShown))}`);
  }
  if (r.files && r.files.length > 0) {
    streams.push(`Files returned from out/: ${r.files.map((f) => `${f.path} (${bytes(f.size)} bytes)`).join(', ')}`);
  }
  return [fixed, ...streams].join('\n\n');
}
