// The verdicts of test cases: every comparison mode with its edge cases, and judge()'s rules.
import { describe, expect, it } from 'vitest';
import type { TestSpec } from '../../src/core/ports.ts';
import type { CaseOutcome } from '../../src/core/sandbox.ts';
import type { CompareMode, TestMismatch } from '../../src/core/schemas.ts';
import { clip, compare, compileRegex, judge, newCompareContext, REGEX_TOTAL_WORK, SHOWN_CHARS, trimmedLines, withinTolerance, withoutFinalNewlines } from '../../src/core/verdicts.ts';
import { capture } from './fakes.ts';

const ok = (expected: string, actual: string, mode: CompareMode, tolerance?: { relative: number; absolute: number }) =>
  compare(expected, actual, mode, tolerance).ok;

function mismatchOf(expected: string, actual: string, mode: CompareMode, tolerance?: { relative: number; absolute: number }): TestMismatch {
  const c = compare(expected, actual, mode, tolerance);
  if (c.ok) throw new Error(`expected a mismatch of ${JSON.stringify(actual)} against ${JSON.stringify(expected)} (${mode})`);
  return c.mismatch;
}

describe('exact', () => {
  it('passes identical output only', () => {
    expect(ok('3\n', '3\n', 'exact')).toBe(true);
    expect(ok('', '', 'exact')).toBe(true);
    expect(ok('3\n', '3', 'exact')).toBe(false);
    expect(ok('3', '3 ', 'exact')).toBe(false);
    expect(ok('a\nb\n', 'a\r\nb\r\n', 'exact')).toBe(false);
  });

  it('shows the first differing line', () => {
    const m = mismatchOf('a\nb\nc\n', 'a\nB\nc\n', 'exact');
    expect(m).toMatchObject({ line: 2, expected: 'b', actual: 'B' });
    expect(m.message).toBe('line 2 differs: expected "b", got "B"');
  });

  it('names a missing final newline, trailing whitespace and line endings', () => {
    expect(mismatchOf('3\n', '3', 'exact').message).toMatch(/lacks the final newline/);
    expect(mismatchOf('3', '3\n', 'exact').message).toMatch(/ends with a newline the expected output does not have/);
    expect(mismatchOf('a\nb', 'a \nb', 'exact').message).toMatch(/line 1 differs only in trailing whitespace.*"a "/);
    expect(mismatchOf('a\nb\n', 'a\r\nb\r\n', 'exact').message).toMatch(/line 1 differs only in its line ending/);
  });

  it('says when the output is short or goes on', () => {
    const short = mismatchOf('a\nb\nc', 'a\nb', 'exact');
    expect(short).toMatchObject({ line: 3, expected: 'c', actual: '' });
    expect(short.message).toMatch(/ends after 2 lines; expected 3 lines/);
    const long = mismatchOf('a', 'a\nextra', 'exact');
    expect(long).toMatchObject({ line: 2, expected: '', actual: 'extra' });
    expect(long.message).toMatch(/goes on after the expected 1 line: line 2 is "extra"/);
  });

  it('empty output against an expectation', () => {
    const m = mismatchOf('42\n', '', 'exact');
    expect(m.line).toBe(1);
    expect(m.expected).toBe('42');
    expect(m.actual).toBe('');
  });
});

describe('trimmed (the default)', () => {
  it('ignores trailing whitespace of lines, trailing empty lines and \\r\\n', () => {
    expect(ok('1\n2\n', '1  \n2\t\n\n\n', 'trimmed')).toBe(true);
    expect(ok('1\n2', '1\r\n2\r\n', 'trimmed')).toBe(true);
    expect(ok('', '\n\n  \n', 'trimmed')).toBe(true);
    expect(ok('', '', 'trimmed')).toBe(true);
    expect(compare('x\n', 'x').ok).toBe(true);
  });

  it('keeps leading whitespace and inner empty lines', () => {
    expect(ok('a\nb', ' a\nb', 'trimmed')).toBe(false);
    expect(mismatchOf('a\nb', ' a\nb', 'trimmed').message).toMatch(/only in leading whitespace/);
    expect(ok('a\nb', 'a\n\nb', 'trimmed')).toBe(false);
    expect(ok('a\n\nb', 'a\nb', 'trimmed')).toBe(false);
  });

  it('counts lines as the output has them', () => {
    const m = mismatchOf('a\r\nb\r\nc\r\n', 'a\r\nb\r\nd\r\n', 'trimmed');
    expect(m).toMatchObject({ line: 3, expected: 'c', actual: 'd' });
  });

  it('says which line is missing when the output stops early', () => {
    const m = mismatchOf('1\n2\n3\n', '1\n2\n', 'trimmed');
    expect(m).toMatchObject({ line: 3, expected: '3', actual: '' });
    expect(m.message).toMatch(/ends after 2 lines/);
  });

  it('trimmedLines', () => {
    expect(trimmedLines('a \r\n b\t\n\n')).toEqual(['a', ' b']);
    expect(trimmedLines('')).toEqual([]);
  });
});

describe('tokens', () => {
  it('compares whitespace-separated tokens', () => {
    expect(ok('1 2 3', '1\n2\n3\n', 'tokens')).toBe(true);
    expect(ok('1 2 3', '  1\t 2   3  ', 'tokens')).toBe(true);
    expect(ok('', '\n \t\n', 'tokens')).toBe(true);
    expect(ok('1 2', '1 2 3', 'tokens')).toBe(false);
    expect(ok('1.0', '1', 'tokens')).toBe(false);
  });

  it('shows the differing token and its line in the output', () => {
    const m = mismatchOf('1 2 3 4', '1 2\n3 5', 'tokens');
    expect(m).toMatchObject({ line: 2, expected: '4', actual: '5' });
    expect(m.message).toBe('token 4 (line 2) differs: expected "4", got "5"');
  });

  it('says when tokens are missing or extra', () => {
    expect(mismatchOf('a b c', 'a b', 'tokens').message).toMatch(/has 2 tokens, expected 3; token 3 would be "c"/);
    const extra = mismatchOf('a', 'a\n\nb', 'tokens');
    expect(extra).toMatchObject({ line: 3, actual: 'b' });
    expect(mismatchOf('x', '', 'tokens').message).toMatch(/has 0 tokens, expected 1/);
  });
});

describe('float', () => {
  const tol = (absolute: number, relative: number) => ({ absolute, relative });

  it('numbers agree within the default tolerance (absolute 1e-9, relative 1e-6)', () => {
    expect(ok('3.14159', '3.141592', 'float')).toBe(true);
    expect(ok('1000000', '1000000.9', 'float')).toBe(true);
    expect(ok('1000000', '1000001.1', 'float')).toBe(false);
    expect(ok('0.333333', '0.3333333333', 'float')).toBe(true);
    expect(ok('0.5', '0.25', 'float')).toBe(false);
  });

  it('1e-9 against 0 passes at the default absolute tolerance, 1.1e-9 does not', () => {
    expect(ok('0', '1e-9', 'float')).toBe(true);
    expect(ok('0', '-1e-9', 'float')).toBe(true);
    expect(ok('0', '1.1e-9', 'float')).toBe(false);
    expect(ok('0', '1e-9', 'float', tol(0, 0.5))).toBe(false);
  });

  it('the boundary is inclusive, on both tolerances', () => {
    expect(ok('1', '1.5', 'float', tol(0.5, 0))).toBe(true);
    expect(ok('1', '1.5000001', 'float', tol(0.5, 0))).toBe(false);
    // relative: max(|a|,|b|) = 2, so 0.5 * 2 = 1 allows 1 against 2.
    expect(ok('1', '2', 'float', tol(0, 0.5))).toBe(true);
    expect(ok('1', '2.01', 'float', tol(0, 0.5))).toBe(false);
    // Decimal text rounded to binary must not fail a difference exactly at the tolerance.
    expect(ok('0.1', '0.2', 'float', tol(0.1, 0))).toBe(true);
    expect(ok('100.1', '100.2', 'float', tol(0.1, 0))).toBe(true);
    expect(ok('0', '0', 'float', tol(0, 0))).toBe(true);
    expect(ok('0.3', '0.30000000000000004', 'float', tol(0, 0))).toBe(true);
    expect(ok('0.3', '0.3000001', 'float', tol(0, 0))).toBe(false);
  });

  it('reads the decimal forms numbers are printed in', () => {
    expect(ok('1.5 -2 3e2 .5 5. +7', '1.5 -2.0 300 0.5 5 7', 'float')).toBe(true);
    expect(ok('-0', '0', 'float')).toBe(true);
    expect(ok('1E3', '1000.0', 'float')).toBe(true);
  });

  it('nan, inf and other words must be equal strings', () => {
    expect(ok('nan inf -inf', 'nan inf -inf', 'float')).toBe(true);
    expect(ok('nan', 'NaN', 'float')).toBe(false);
    expect(ok('inf', 'Infinity', 'float')).toBe(false);
    expect(ok('inf', '1e999', 'float')).toBe(false);
    expect(ok('1e999', '1e999', 'float')).toBe(true);
    expect(ok('1e999', '2e999', 'float')).toBe(false);
    expect(ok('0x10', '16', 'float')).toBe(false);
    expect(ok('x=1.0', 'x=1.0000001', 'float')).toBe(false);
    expect(ok('total: 3.0', 'total: 3.0000001', 'float')).toBe(true);
    expect(ok('1', 'one', 'float')).toBe(false);
  });

  it('says how far off a number is', () => {
    const m = mismatchOf('1 2 0.25', '1 2\n0.5', 'float');
    expect(m).toMatchObject({ line: 2, expected: '0.25', actual: '0.5' });
    expect(m.message).toMatch(/^token 3 \(line 2\): 0\.5 is not within 5\.00e-7 of 0\.25 \(differs by 0\.250\)$/);
  });

  it('withinTolerance is symmetric', () => {
    for (const [a, b] of [
      [1, 1.0000015],
      [-3, 3],
      [1e300, 1.0000005e300],
    ] as const) {
      expect(withinTolerance(a, b, tol(1e-9, 1e-6))).toBe(withinTolerance(b, a, tol(1e-9, 1e-6)));
    }
  });
});

describe('regex', () => {
  it('the whole output must match, final newlines ignored', () => {
    expect(ok('\\d+', '42\n', 'regex')).toBe(true);
    expect(ok('\\d+', '42\r\n\n', 'regex')).toBe(true);
    expect(ok('\\d+', 'x42\n', 'regex')).toBe(false);
    expect(ok('\\d+', '42x\n', 'regex')).toBe(false);
    expect(ok('\\d+', '42\n43\n', 'regex')).toBe(false);
    expect(ok('(?s)\\d+.*', '42\n43\n', 'regex')).toBe(true);
    expect(ok('\\d+\\n\\d+', '42\n43\n', 'regex')).toBe(true);
    expect(ok('a|ab', 'ab', 'regex')).toBe(true);
    expect(ok('', '\n', 'regex')).toBe(true);
    expect(ok('', 'x', 'regex')).toBe(false);
  });

  it('explicit anchors are allowed and change nothing', () => {
    expect(ok('^ok$', 'ok\n', 'regex')).toBe(true);
    expect(ok('^ok$', 'not ok\n', 'regex')).toBe(false);
    expect(ok('(?m)^ok$', 'ok\nok', 'regex')).toBe(false);
  });

  it('a mismatch shows the pattern and the output, with no line', () => {
    const m = mismatchOf('Result: \\d+', 'Result: none\n', 'regex');
    expect(m.line).toBeNull();
    expect(m.expected).toBe('Result: \\d+');
    expect(m.actual).toBe('Result: none\n');
    expect(m.message).toMatch(/does not match the regular expression/);
  });

  it('RE2 refuses what would not run in linear time', () => {
    expect(compileRegex('(a)\\1')).toHaveProperty('error');
    expect(compileRegex('(?=a)')).toHaveProperty('error');
    expect(compileRegex('(abc')).toMatchObject({ error: expect.stringMatching(/missing closing \)/) });
    expect(compileRegex('a{1001}')).toHaveProperty('error');
    expect(compileRegex('\\d+(?:\\.\\d+)?')).not.toHaveProperty('error');
  });

  it('a pattern that does not compile fails the comparison, it does not throw', () => {
    expect(mismatchOf('(abc', 'abc', 'regex').message).toMatch(/not a valid regular expression/);
  });

  it('the classic catastrophic pattern answers at once', () => {
    expect(ok('(a+)+$', `${'a'.repeat(50_000)}b`, 'regex')).toBe(false);
    expect(ok('(a|aa)*c', 'a'.repeat(50_000), 'regex')).toBe(false);
  });

  it('a match costlier than the budget is not run: failed, saying why', () => {
    // program size ~1000 x 50 kB of output: 5e7, over REGEX_CASE_WORK.
    const pattern = '[ab]*a[ab]{999}';
    const m = mismatchOf(pattern, 'ab'.repeat(25_000), 'regex');
    expect(m.message).toMatch(/^not judged: matching this regular expression/);
    expect(ok(pattern, `a${'b'.repeat(999)}`, 'regex')).toBe(true);
  });

  it('the budget is shared by the cases of one result', () => {
    const ctx = newCompareContext();
    const output = 'x'.repeat(50_000);
    // Each match costs its program size x 50,001, well within REGEX_CASE_WORK: the total runs out first.
    let judged = 0;
    let refused: string | undefined;
    for (let i = 0; i < 10_000 && refused === undefined; i++) {
      const c = compare('x*', output, 'regex', undefined, ctx);
      if (c.ok) judged++;
      else refused = c.mismatch.message;
    }
    expect(refused).toMatch(/^not judged/);
    expect(judged).toBeGreaterThan(10);
    expect(judged).toBeLessThan(REGEX_TOTAL_WORK / 50_000);
    // A fresh result has its own budget.
    expect(compare('x*', output, 'regex').ok).toBe(true);
  });
});

describe('huge inputs', () => {
  const lines = Array.from({ length: 200_000 }, (_, i) => `${i} ${i * 0.5}`).join('\n');
  const changed = lines.replace('199999 99999.5', '199999 99999.75');

  for (const mode of ['exact', 'trimmed', 'tokens', 'float'] as const) {
    it(`${mode}: finds the difference on the last of 200,000 lines`, () => {
      expect(compare(lines, lines, mode).ok).toBe(true);
      const c = compare(lines, changed, mode);
      expect(c.ok).toBe(false);
      if (!c.ok) expect(c.mismatch.line).toBe(200_000);
    });
  }

  it('a megabyte of one line is shown clipped around the difference', () => {
    const a = 'x'.repeat(1_000_000);
    const b = `${'x'.repeat(700_000)}y${'x'.repeat(299_999)}`;
    const m = mismatchOf(a, b, 'exact');
    expect(m.line).toBe(1);
    expect(m.actual.length).toBeLessThanOrEqual(SHOWN_CHARS + 2);
    expect(m.actual).toContain('y');
    expect(m.message.length).toBeLessThan(1000);
    const t = mismatchOf(a, b, 'tokens');
    expect(t.actual).toContain('y');
  });

  it('a long run of newlines that does not end the output is stripped in linear time', () => {
    expect(withoutFinalNewlines('a\r\n\n\r\n')).toBe('a');
    expect(withoutFinalNewlines('a\r')).toBe('a\r');
    expect(withoutFinalNewlines('\n\n')).toBe('');
    // Quadratic with a backtracking /(?:\r?\n)+$/: minutes, not milliseconds.
    const output = `${'\n'.repeat(300_000)}x`;
    expect(withoutFinalNewlines(output)).toBe(output);
    expect(ok('\n*x', output, 'regex')).toBe(true);
    expect(ok('\n*y', output, 'regex')).toBe(false);
  });

  it('regex over a large output stays within the budget', () => {
    expect(ok('(?s).*done', `${'z'.repeat(400_000)}done\n`, 'regex')).toBe(true);
  });
});

describe('clip', () => {
  it('keeps short text whole and never splits a surrogate pair', () => {
    expect(clip('short')).toBe('short');
    const s = '🙂'.repeat(300);
    for (const at of [0, 1, 2, 3, 101, 300, 599]) {
      const c = clip(s, at).replace(/…/g, '');
      expect(c).toBe(Buffer.from(c, 'utf8').toString('utf8'));
      expect(c).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/);
    }
  });
});

// ---- judge --------------------------------------------------------------------------------------

function caseOutcome(over: Partial<Omit<CaseOutcome, 'stdout' | 'stderr'>> & { stdout?: string; stderr?: string; capBytes?: number } = {}): CaseOutcome {
  const { stdout = '', stderr = '', capBytes, ...rest } = over;
  return { kind: 'finished', exitCode: 0, signal: null, error: null, durationMs: 5, cpuMs: null, ...rest, stdout: capture(stdout, capBytes), stderr: capture(stderr, capBytes) };
}

const spec = (over: Partial<TestSpec> = {}): TestSpec => ({ name: 'case 1', compare: 'trimmed', ...over });

describe('judge', () => {
  it('passes on exit 0 when nothing is expected', () => {
    expect(judge(spec(), caseOutcome({ stdout: 'anything' }))).toEqual({ verdict: 'passed', mismatch: null });
  });

  it('a non-zero exit is an error when no exit code is expected', () => {
    expect(judge(spec({ expectedStdout: 'x' }), caseOutcome({ exitCode: 1, stdout: 'x' })).verdict).toBe('error');
    expect(judge(spec(), caseOutcome({ exitCode: null, signal: 11 })).verdict).toBe('error');
  });

  it('an expected exit code must match, then stdout is compared', () => {
    expect(judge(spec({ expectedExitCode: 2 }), caseOutcome({ exitCode: 2 })).verdict).toBe('passed');
    const wrong = judge(spec({ expectedExitCode: 0 }), caseOutcome({ exitCode: 1 }));
    expect(wrong.verdict).toBe('failed');
    expect(wrong.mismatch).toEqual({ line: null, expected: '0', actual: '1', message: 'exit code 1, expected 0' });
    expect(judge(spec({ expectedExitCode: 2, expectedStdout: 'usage' }), caseOutcome({ exitCode: 2, stdout: 'oops' })).verdict).toBe('failed');
    expect(judge(spec({ expectedExitCode: 2, expectedStdout: 'usage' }), caseOutcome({ exitCode: 2, stdout: 'usage\n' })).verdict).toBe('passed');
    expect(judge(spec({ expectedExitCode: 0 }), caseOutcome({ exitCode: null, signal: 9 })).mismatch?.message).toBe('no exit code, expected 0');
  });

  it('the sandbox end of a case is its verdict', () => {
    for (const kind of ['timeout', 'oom', 'output_limit', 'not_run'] as const) {
      expect(judge(spec({ expectedStdout: '' }), caseOutcome({ kind, exitCode: null })).verdict).toBe(kind);
    }
  });

  it('compares with the spec mode and tolerance', () => {
    expect(judge(spec({ expectedStdout: '1.0', compare: 'float', tolerance: { absolute: 0.2, relative: 0 } }), caseOutcome({ stdout: '1.1' })).verdict).toBe('passed');
    expect(judge(spec({ expectedStdout: '1.0', compare: 'float' }), caseOutcome({ stdout: '1.1' })).verdict).toBe('failed');
    expect(judge(spec({ expectedStdout: '1\n', compare: 'exact' }), caseOutcome({ stdout: '1' })).verdict).toBe('failed');
  });

  it('output cut at the output limit is never passed', () => {
    const long = 'y'.repeat(500);
    const cut = caseOutcome({ stdout: long, capBytes: 100 });
    const r = judge(spec({ expectedStdout: '(?s).*', compare: 'regex' }), cut);
    expect(r.verdict).toBe('failed');
    expect(r.mismatch?.message).toMatch(/stdout was cut after 100 characters \(of 500 bytes\)/);
    const differs = judge(spec({ expectedStdout: 'z' }), cut);
    expect(differs.mismatch?.message).toMatch(/^line 1 differs.*; stdout was cut/);
    // Without an expected stdout, the cut does not matter.
    expect(judge(spec(), cut).verdict).toBe('passed');
  });
});
