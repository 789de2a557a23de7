// Test-case verdicts, computed on the host from what the sandbox reported (never trusted from
// inside it): how a case's stdout compares with the expected one, in five modes, and which verdict
// a case gets from its end, its exit code and that comparison. Pure functions; the output and the
// expectations are hostile, so every comparison is linear in their size (regular expressions
// through RE2, with a work budget on top).
import { RE2JS } from 're2js';
import type { CaseOutcome } from './sandbox.ts';
import type { TestSpec } from './ports.ts';
import type { CompareMode, TestMismatch, TestVerdict, Tolerance } from './schemas.ts';

/** Characters of a line or token shown in a mismatch. */
export const SHOWN_CHARS = 200;
/** The default tolerance of `float`, as the request schema defaults it. */
export const DEFAULT_TOLERANCE: Tolerance = { relative: 1e-6, absolute: 1e-9 };
/**
 * Characters of the regular expressions of one request, all cases together. Compiling costs about
 * a microsecond per character (re2js, measured on this machine, noisy): 256 Ki keeps a request's
 * compiling within a fraction of a second on the node that validates it and the one that judges it.
 */
export const MAX_REGEX_CHARS = 262_144;
/**
 * RE2 runs in time linear in the input, but the factor is the pattern's program size: a pattern
 * such as `[ab]*a[ab]{999}` (program ~1,000) took ~0.6 s over 50 kB of output here (noisy).
 * Matching blocks the node's event loop, so each match is allowed program size x output length
 * up to REGEX_CASE_WORK, and one result's matches REGEX_TOTAL_WORK in all (~0.25 s and ~1.3 s at
 * that rate). A case beyond the budget is failed, saying why, instead of matched.
 */
export const REGEX_CASE_WORK = 20_000_000;
export const REGEX_TOTAL_WORK = 100_000_000;

export type Comparison = { ok: true } | { ok: false; mismatch: TestMismatch };

/** Compiled regular expressions and the matching budget left, shared by the cases of one result. */
export interface CompareContext {
  regexes: Map<string, RE2JS | RegexError>;
  workLeft: number;
}

export const newCompareContext = (): CompareContext => ({ regexes: new Map(), workLeft: REGEX_TOTAL_WORK });

export interface RegexError {
  error: string;
}

/** Compiles an expected output of mode `regex` (RE2 syntax); the error says why it does not compile. */
export function compileRegex(pattern: string): RE2JS | RegexError {
  try {
    return RE2JS.compile(pattern);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    return { error: message.replace(/^error parsing regexp: /, '') };
  }
}

const isRegexError = (r: RE2JS | RegexError): r is RegexError => !(r instanceof RE2JS);

// ---- showing a difference -------------------------------------------------------------------------

const isHighSurrogate = (c: number) => c >= 0xd800 && c <= 0xdbff;
const isLowSurrogate = (c: number) => c >= 0xdc00 && c <= 0xdfff;

/** At most SHOWN_CHARS of `s`, a window around `at` (where it differs) when it is longer; never half a surrogate pair. */
export function clip(s: string, at = 0): string {
  if (s.length <= SHOWN_CHARS) return s;
  let start = Math.max(0, Math.min(at - 60, s.length - SHOWN_CHARS));
  let end = start + SHOWN_CHARS;
  if (start > 0 && isLowSurrogate(s.charCodeAt(start))) start++;
  if (end < s.length && isHighSurrogate(s.charCodeAt(end - 1))) end--;
  return `${start > 0 ? '…' : ''}${s.slice(start, end)}${end < s.length ? '…' : ''}`;
}

/** A shown value in a message: quoted, with invisible characters (\r, \t, trailing spaces) visible. */
const quote = (s: string, at = 0) => JSON.stringify(clip(s, at));

function commonPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

// ---- line-based comparisons ---------------------------------------------------------------------

/** The first line at which two lists of lines differ, as a mismatch; null when they are equal. */
function firstDifferentLine(expected: readonly string[], actual: readonly string[], hint: (e: string, a: string) => string | null): TestMismatch | null {
  const n = Math.max(expected.length, actual.length);
  for (let i = 0; i < n; i++) {
    const e = expected[i];
    const a = actual[i];
    if (e === a) continue;
    const line = i + 1;
    if (a === undefined) {
      return {
        line,
        expected: clip(e ?? ''),
        actual: '',
        message: `the output ends after ${plural(actual.length, 'line')}; expected ${plural(expected.length, 'line')}, line ${line} being ${quote(e ?? '')}`,
      };
    }
    if (e === undefined) {
      return {
        line,
        expected: '',
        actual: clip(a),
        message: `the output goes on after the expected ${plural(expected.length, 'line')}: line ${line} is ${quote(a)}`,
      };
    }
    const at = commonPrefix(e, a);
    const why = hint(e, a);
    return {
      line,
      expected: clip(e, at),
      actual: clip(a, at),
      message: `line ${line} differs${why ? ` ${why}` : ''}: expected ${quote(e, at)}, got ${quote(a, at)}`,
    };
  }
  return null;
}

function compareExact(expected: string, actual: string): Comparison {
  if (expected === actual) return { ok: true };
  const e = expected.split('\n');
  const a = actual.split('\n');
  const mismatch = firstDifferentLine(e, a, (el, al) => {
    if (el.replace(/\r$/, '') === al.replace(/\r$/, '')) return 'only in its line ending (\\r\\n against \\n)';
    if (el.trimEnd() === al.trimEnd()) return 'only in trailing whitespace (compare "trimmed" ignores it)';
    return null;
  });
  if (mismatch === null) return { ok: true };
  // The commonest exact-mode failure: everything equal but the final newline.
  if (expected === `${actual}\n`) mismatch.message = `the output lacks the final newline the expected output ends with (compare "trimmed" ignores it)`;
  else if (actual === `${expected}\n`) mismatch.message = `the output ends with a newline the expected output does not have (compare "trimmed" ignores it)`;
  return { ok: false, mismatch };
}

/** Lines without \r\n, trailing whitespace and trailing empty lines: what `trimmed` compares. */
export function trimmedLines(text: string): string[] {
  const lines = text.split('\n').map((l) => l.trimEnd());
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

function compareTrimmed(expected: string, actual: string): Comparison {
  const mismatch = firstDifferentLine(trimmedLines(expected), trimmedLines(actual), (e, a) =>
    e.trimStart() === a.trimStart() ? 'only in leading whitespace (compare "tokens" ignores it)' : null,
  );
  return mismatch === null ? { ok: true } : { ok: false, mismatch };
}

// ---- token-based comparisons --------------------------------------------------------------------

interface Token {
  text: string;
  line: number;
}

function tokens(text: string): Token[] {
  const out: Token[] = [];
  let line = 1;
  let scanned = 0;
  for (const m of text.matchAll(/\S+/g)) {
    for (let i = scanned; i < m.index; i++) if (text.charCodeAt(i) === 10) line++;
    scanned = m.index;
    out.push({ text: m[0], line });
  }
  return out;
}

/** A finite number written in decimal: 3, -0.5, 1e-9, .5, 2. (not inf, nan, 0x10 or 1_000). */
const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

function asNumber(token: string): number | null {
  if (!DECIMAL.test(token)) return null;
  const n = Number(token);
  return Number.isFinite(n) ? n : null;
}

/** Whether two numbers agree: |a-b| <= max(absolute, relative * max(|a|, |b|)). */
export function withinTolerance(a: number, b: number, tolerance: Tolerance): boolean {
  const scale = Math.max(Math.abs(a), Math.abs(b));
  const allowed = Math.max(tolerance.absolute, tolerance.relative * scale);
  // Both were rounded from decimal text to binary, each by up to half an ulp: a difference exactly at
  // the tolerance (1 against 1.5, absolute 0.5) must not fail by that rounding.
  return Math.abs(a - b) <= allowed + 2 * Number.EPSILON * scale;
}

function compareTokens(expected: string, actual: string, tolerance: Tolerance | null): Comparison {
  const e = tokens(expected);
  const a = tokens(actual);
  const n = Math.max(e.length, a.length);
  for (let i = 0; i < n; i++) {
    const et = e[i];
    const at = a[i];
    const index = i + 1;
    if (at === undefined) {
      return {
        ok: false,
        mismatch: {
          line: null,
          expected: clip(et?.text ?? ''),
          actual: '',
          message: `the output has ${plural(a.length, 'token')}, expected ${e.length}; token ${index} would be ${quote(et?.text ?? '')}`,
        },
      };
    }
    if (et === undefined) {
      return {
        ok: false,
        mismatch: {
          line: at.line,
          expected: '',
          actual: clip(at.text),
          message: `the output has more than the expected ${plural(e.length, 'token')}: token ${index} (line ${at.line}) is ${quote(at.text)}`,
        },
      };
    }
    if (et.text === at.text) continue;
    if (tolerance) {
      const x = asNumber(et.text);
      const y = asNumber(at.text);
      if (x !== null && y !== null) {
        if (withinTolerance(x, y, tolerance)) continue;
        const allowed = Math.max(tolerance.absolute, tolerance.relative * Math.max(Math.abs(x), Math.abs(y)));
        return {
          ok: false,
          mismatch: {
            line: at.line,
            expected: clip(et.text),
            actual: clip(at.text),
            message: `token ${index} (line ${at.line}): ${clip(at.text)} is not within ${allowed.toPrecision(3)} of ${clip(et.text)} (differs by ${Math.abs(x - y).toPrecision(3)})`,
          },
        };
      }
    }
    const c = commonPrefix(et.text, at.text);
    return {
      ok: false,
      mismatch: {
        line: at.line,
        expected: clip(et.text, c),
        actual: clip(at.text, c),
        message: `token ${index} (line ${at.line}) differs: expected ${quote(et.text, c)}, got ${quote(at.text, c)}`,
      },
    };
  }
  return { ok: true };
}

// ---- regular expressions ------------------------------------------------------------------------

/**
 * `text` without its trailing \n and \r\n. A loop, not /(?:\r?\n)+$/: on a backtracking engine that
 * pattern is quadratic in a run of newlines that does not end the text (50,000 took 3.5 s here).
 */
export function withoutFinalNewlines(text: string): string {
  let end = text.length;
  for (;;) {
    if (text.charCodeAt(end - 1) !== 10) break;
    end -= text.charCodeAt(end - 2) === 13 ? 2 : 1;
  }
  return text.slice(0, end);
}

function compareRegex(pattern: string, actual: string, ctx: CompareContext): Comparison {
  let re = ctx.regexes.get(pattern);
  if (re === undefined) {
    re = compileRegex(pattern);
    ctx.regexes.set(pattern, re);
  }
  const fail = (message: string): Comparison => ({ ok: false, mismatch: { line: null, expected: clip(pattern), actual: clip(actual), message } });
  // Checked when the request was accepted; a pattern that got here anyway is reported, not thrown.
  if (isRegexError(re)) return fail(`the expected output is not a valid regular expression: ${re.error}`);
  // print() ends its output with a newline that a pattern would rarely spell out.
  const subject = withoutFinalNewlines(actual);
  const work = re.programSize() * (subject.length + 1);
  if (work > REGEX_CASE_WORK || work > ctx.workLeft) {
    return fail(
      `not judged: matching this regular expression against ${subject.length} characters of output would cost too much (program size ${re.programSize()}); use a simpler pattern or compare mode`,
    );
  }
  ctx.workLeft -= work;
  if (re.testExact(subject)) return { ok: true };
  return fail('the output does not match the regular expression (the whole output must match; final newlines are ignored)');
}

// ---- the comparison and the verdict -------------------------------------------------------------

/**
 * Compares a case's stdout with the expected one. Modes: exact (byte for byte), trimmed (trailing
 * whitespace of each line, \r of \r\n and trailing empty lines ignored), tokens (whitespace-separated),
 * float (tokens; numbers within the tolerance, other tokens equal), regex (the whole output, final
 * newlines ignored, matches the RE2 pattern).
 */
export function compare(expected: string, actual: string, mode: CompareMode = 'trimmed', tolerance: Tolerance = DEFAULT_TOLERANCE, ctx: CompareContext = newCompareContext()): Comparison {
  switch (mode) {
    case 'exact':
      return compareExact(expected, actual);
    case 'trimmed':
      return compareTrimmed(expected, actual);
    case 'tokens':
      return compareTokens(expected, actual, null);
    case 'float':
      return compareTokens(expected, actual, tolerance);
    case 'regex':
      return compareRegex(expected, actual, ctx);
  }
}

export interface Judgement {
  verdict: TestVerdict;
  mismatch: TestMismatch | null;
}

/**
 * A case's verdict. The sandbox's end of it first (not_run, timeout, oom, output_limit); then the
 * exit code: an expected one must match (else failed), otherwise non-zero is an error; then stdout
 * against expectedStdout when there is one. Nothing expected: passed on exit 0.
 */
export function judge(spec: TestSpec, outcome: CaseOutcome, ctx: CompareContext = newCompareContext()): Judgement {
  switch (outcome.kind) {
    case 'not_run':
    case 'timeout':
    case 'oom':
    case 'output_limit':
      return { verdict: outcome.kind, mismatch: null };
    case 'finished':
      break;
  }
  const exitCode = outcome.exitCode;
  if (spec.expectedExitCode !== undefined) {
    if (exitCode !== spec.expectedExitCode) {
      const got = exitCode === null ? 'no exit code' : `exit code ${exitCode}`;
      return {
        verdict: 'failed',
        mismatch: { line: null, expected: String(spec.expectedExitCode), actual: exitCode === null ? '' : String(exitCode), message: `${got}, expected ${spec.expectedExitCode}` },
      };
    }
  } else if (exitCode !== 0) {
    return { verdict: 'error', mismatch: null };
  }
  if (spec.expectedStdout === undefined) return { verdict: 'passed', mismatch: null };
  const c = compare(spec.expectedStdout, outcome.stdout.text(), spec.compare, spec.tolerance ?? DEFAULT_TOLERANCE, ctx);
  if (outcome.stdout.truncated) {
    // Only the first outputBytes were kept: a match of that part says nothing about the rest.
    const cut = `stdout was cut after ${outcome.stdout.text().length} characters (of ${outcome.stdout.totalBytes} bytes) at the output limit, so it cannot be judged whole`;
    if (c.ok) return { verdict: 'failed', mismatch: { line: null, expected: '', actual: '', message: cut } };
    return { verdict: 'failed', mismatch: { ...c.mismatch, message: `${c.mismatch.message}; ${cut}` } };
  }
  return c.ok ? { verdict: 'passed', mismatch: null } : { verdict: 'failed', mismatch: c.mismatch };
}
