// Golden files pin the feedback text's shape for each status: what a model reads after a run.
// Inputs are built deterministically here; UPDATE_GOLDEN=1 rewrites the files (review the diff).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderFeedback, type CaseInput, type FeedbackInput, type FeedbackOptions } from '../../src/core/feedback.ts';
import { EXECUTION_STATUSES, type ExecutionStatus, type TestResult, type TestSummary, type TestVerdict } from '../../src/core/schemas.ts';

const GOLDEN_DIR = join(import.meta.dirname, '../golden/feedback');
const LIMITS = { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 };
const OPTS: FeedbackOptions = { budgetChars: 4000, floodBytes: 1_000_000 };

function input(status: ExecutionStatus, overrides: Partial<FeedbackInput> = {}): FeedbackInput {
  return {
    status,
    success: status === 'completed',
    exitCode: status === 'completed' ? 0 : null,
    signal: null,
    stdout: '',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 842.5,
    error: null,
    runtime: 'runsc',
    limits: LIMITS,
    ...overrides,
  };
}

const CODE = ['import csv', 'rows = [{"name": "a", "score": 3}, {"name": "b"}]', 'total = 0', 'for row in rows:', '    total += row["score"]', 'print(total)'].join('\n');
const TRACEBACK = [
  'Traceback (most recent call last):',
  '  File "main.py", line 5, in <module>',
  '    total += row["score"]',
  '             ~~~^^^^^^^^^',
  "KeyError: 'score'",
  '',
].join('\n');
const numbered = (n: number, prefix = 'row') => Array.from({ length: n }, (_, i) => `${prefix} ${i}`).join('\n') + '\n';

const CASES: Record<string, { r: FeedbackInput; code?: string; opts?: FeedbackOptions }> = {
  completed: { r: input('completed', { stdout: '3\n' }) },
  'completed-empty': { r: input('completed') },
  'completed-files-and-import-note': {
    r: input('completed', {
      stdout: 'saved\n',
      stderr: 'UserWarning: something minor\n',
      files: [{ path: 'plot.png', size: 20_480, contentBase64: '' }],
    }),
    opts: { ...OPTS, flaggedImports: [{ module: 'socket', line: 2 }, { module: 'urllib.request', line: 4 }] },
  },
  error: {
    r: input('error', { exitCode: 1, stdout: 'loading\n', stderr: TRACEBACK, error: { type: 'KeyError', message: "'score'", line: 5, traceback: TRACEBACK } }),
  },
  'error-exit-code': { r: input('error', { exitCode: 2, stderr: 'usage: main.py FILE\n' }) },
  'error-signal': { r: input('error', { exitCode: 139, signal: 'SIGSEGV' }) },
  timeout: {
    r: input('timeout', { signal: 'SIGKILL', stdout: 'step 1\nstep 2\n', durationMs: 2000.4, limits: { ...LIMITS, timeoutMs: 2000 } }),
  },
  'timeout-silent': { r: input('timeout', { signal: 'SIGKILL', durationMs: 30_000.2 }) },
  oom: { r: input('oom', { exitCode: 137, signal: 'SIGKILL', stdout: 'allocating\n', limits: { ...LIMITS, memoryMb: 128 } }) },
  output_limit: {
    r: input('output_limit', { signal: 'SIGKILL', stdout: numbered(3000), truncated: { stdout: true, stderr: false } }),
  },
  validation_failed: {
    r: input('validation_failed', {
      exitCode: 1,
      stderr: '  File "main.py", line 4\n    for row in rows\n                   ^\nSyntaxError: expected \':\'\n',
      error: { type: 'SyntaxError', message: "expected ':'", line: 4, column: 16, text: 'for row in rows', caret: '               ^' },
    }),
    code: CODE.replace('for row in rows:', 'for row in rows'),
  },
  'validation_failed-indentation': {
    r: input('validation_failed', {
      exitCode: 1,
      error: { type: 'IndentationError', message: "expected an indented block after 'for' statement on line 4", line: 5, column: 1, text: 'total += row["score"]', caret: '^' },
    }),
  },
  'validation_failed-import-policy': {
    r: input('validation_failed', {
      exitCode: 1,
      stderr: '  File "main.py", line 1\n    import subprocess\n    ^\nImportPolicyError: this server\'s import policy blocks subprocess (line 1)\n',
      error: {
        type: 'ImportPolicyError',
        message: "this server's import policy blocks subprocess (line 1)",
        line: 1,
        column: 1,
        text: 'import subprocess',
        caret: '^',
      },
    }),
    code: 'import subprocess\nsubprocess.run(["ls"])',
  },
  'cancelled-client-running': {
    r: input('cancelled', { stdout: 'epoch 1\nepoch 2\n', durationMs: 4210.7 }),
    opts: { ...OPTS, cancellation: { by: 'client', started: true } },
  },
  'cancelled-shutdown-waiting': {
    r: input('cancelled', { durationMs: 0 }),
    opts: { ...OPTS, cancellation: { by: 'shutdown', started: false } },
  },
  internal_error: { r: input('internal_error', { error: { type: 'InternalError', message: 'the sandbox did not start within 30000 ms', line: null } }) },
  'error-over-budget': {
    r: input('error', {
      exitCode: 1,
      stdout: numbered(5000),
      stderr: numbered(5000, 'warning'),
      error: { type: 'RecursionError', message: 'maximum recursion depth exceeded', line: 5, traceback: TRACEBACK.replace("KeyError: 'score'", '  [Previous line repeated 996 more times]\nRecursionError: maximum recursion depth exceeded') },
    }),
    opts: { ...OPTS, budgetChars: 1200 },
  },
};

// ---- runs with test cases ------------------------------------------------------------------------

const ADD_CODE = ['a, b = input().split()', 'print(int(a) + int(b))'].join('\n');
const ADD_TRACEBACK = [
  'Traceback (most recent call last):',
  '  File "main.py", line 2, in <module>',
  '    print(int(a) + int(b))',
  '          ^^^^^^',
  "ValueError: invalid literal for int() with base 10: 'x'",
  '',
].join('\n');

function testResult(index: number, verdict: TestVerdict, overrides: Partial<TestResult> = {}): TestResult {
  return {
    index,
    name: `case ${index + 1}`,
    verdict,
    exitCode: verdict === 'not_run' || verdict === 'timeout' ? null : 0,
    signal: verdict === 'timeout' ? 'SIGKILL' : null,
    stdout: '',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: verdict === 'not_run' ? 0 : 31.4,
    error: null,
    mismatch: null,
    ...overrides,
  };
}

function testsInput(status: ExecutionStatus, tests: TestResult[], overrides: Partial<FeedbackInput> = {}): FeedbackInput {
  const summary: TestSummary = { total: tests.length, passed: 0, failed: 0, error: 0, timeout: 0, oom: 0, output_limit: 0, not_run: 0 };
  for (const t of tests) summary[t.verdict]++;
  return input(status, { exitCode: null, success: status === 'completed' && summary.passed === summary.total, durationMs: 1532.8, tests, summary, ...overrides });
}

const caseInputs = (n: number, over: Record<number, Partial<CaseInput>> = {}): CaseInput[] =>
  Array.from({ length: n }, (_, i) => ({ stdin: `${i} ${i + 1}\n`, args: [], timeoutMs: 2000, ...over[i] }));

const passedCases = (n: number) => Array.from({ length: n }, (_, i) => testResult(i, 'passed', { stdout: `${2 * i + 1}\n` }));

const TESTS_CASES: Record<string, { r: FeedbackInput; code?: string; opts?: FeedbackOptions }> = {
  'tests-all-passed': { r: testsInput('completed', passedCases(12)), opts: { ...OPTS, caseInputs: caseInputs(12) } },
  'tests-failed': {
    r: testsInput('completed', [
      ...passedCases(3),
      testResult(3, 'failed', {
        name: 'negative numbers',
        stdout: '1\n',
        mismatch: { line: 1, expected: '-3', actual: '1', message: 'line 1 differs: expected "-3", got "1"' },
      }),
      testResult(4, 'failed', { stdout: '7', mismatch: { line: 1, expected: '8', actual: '7', message: 'line 1 differs: expected "8", got "7"' } }),
      testResult(5, 'passed', { stdout: '11\n' }),
    ]),
    opts: { ...OPTS, caseInputs: caseInputs(6, { 3: { stdin: '-1 -2\n' } }) },
  },
  'tests-error': {
    r: testsInput('completed', [
      testResult(0, 'passed', { stdout: '3\n' }),
      testResult(1, 'error', {
        name: 'not a number',
        exitCode: 1,
        stderr: ADD_TRACEBACK,
        error: { type: 'ValueError', message: "invalid literal for int() with base 10: 'x'", line: 2, traceback: ADD_TRACEBACK },
        message: "ValueError: invalid literal for int() with base 10: 'x'",
      }),
      testResult(2, 'timeout', { message: 'ran longer than its time limit of 2.00 s and was stopped' }),
    ]),
    code: ADD_CODE,
    opts: { ...OPTS, caseInputs: caseInputs(3, { 1: { stdin: 'x 1\n', args: ['--strict'] } }) },
  },
  'tests-timeout-case': {
    r: testsInput('completed', [testResult(0, 'timeout', { stdout: 'reading\n', message: 'ran longer than its time limit of 2.00 s and was stopped' }), testResult(1, 'passed')]),
    opts: { ...OPTS, caseInputs: caseInputs(2, { 0: { stdin: '' } }) },
  },
  'tests-exit-code': {
    r: testsInput('completed', [
      testResult(0, 'failed', {
        exitCode: 0,
        stdout: 'usage: main.py N\n',
        mismatch: { line: null, expected: '2', actual: '0', message: 'exit code 0, expected 2' },
      }),
    ]),
    opts: { ...OPTS, caseInputs: [{ stdin: '', args: ['--bogus'], timeoutMs: 2000 }] },
  },
  'tests-validation_failed': {
    r: testsInput('validation_failed', [0, 1, 2].map((i) => testResult(i, 'not_run', { message: 'not run: the code did not pass validation, so no case ran' })), {
      stderr: '  File "main.py", line 2\n    print(int(a) + int(b)\n         ^\nSyntaxError: \'(\' was never closed\n',
      error: { type: 'SyntaxError', message: "'(' was never closed", line: 2, column: 6, text: 'print(int(a) + int(b)', caret: '     ^' },
    }),
    code: ADD_CODE.replace('int(b))', 'int(b)'),
    opts: { ...OPTS, caseInputs: caseInputs(3) },
  },
  'tests-whole-timeout': {
    r: testsInput(
      'timeout',
      [
        testResult(0, 'passed', { stdout: '1\n' }),
        testResult(1, 'timeout', { message: 'ran longer than its time limit of 2.00 s and was stopped' }),
        ...[2, 3, 4].map((i) => testResult(i, 'not_run', { message: "not run: the execution's total time limit ran out before this case" })),
      ],
      { durationMs: 9000 },
    ),
    opts: { ...OPTS, caseInputs: caseInputs(5) },
  },
  'tests-over-budget': {
    r: testsInput('completed', [
      testResult(0, 'failed', {
        name: 'a long case name '.repeat(10).trim(),
        stdout: numbered(2000),
        mismatch: { line: 1500, expected: 'row 1499!', actual: 'row 1499', message: 'line 1500 differs: expected "row 1499!", got "row 1499"' },
      }),
      ...Array.from({ length: 30 }, (_, i) => testResult(i + 1, i % 2 ? 'error' : 'oom', { message: 'x' })),
    ]),
    opts: { ...OPTS, budgetChars: 1200, caseInputs: caseInputs(31, { 0: { stdin: numbered(5000, 'input') } }) },
  },
};

describe('feedback golden files', () => {
  for (const [name, { r, code, opts }] of Object.entries({ ...CASES, ...TESTS_CASES })) {
    it(name, () => {
      const text = renderFeedback(r, code ?? CODE, opts ?? OPTS);
      const file = join(GOLDEN_DIR, `${name}.txt`);
      if (process.env.UPDATE_GOLDEN === '1' || !existsSync(file)) {
        if (process.env.CI) throw new Error(`golden file ${file} is missing`);
        mkdirSync(GOLDEN_DIR, { recursive: true });
        writeFileSync(file, text);
      }
      expect(text).toBe(readFileSync(file, 'utf8'));
      expect(text.length).toBeLessThanOrEqual((opts ?? OPTS).budgetChars ?? 4000);
    });
  }

  it('covers every status', () => {
    const statuses = new Set(Object.values(CASES).map((c) => c.r.status));
    expect([...statuses].sort()).toEqual([...EXECUTION_STATUSES].sort());
  });
});

describe('feedback budget', () => {
  const hugeLine = 'x = "' + 'y'.repeat(200_000) + '"';
  const inputs: FeedbackInput[] = [
    input('error', { exitCode: 1, stdout: 'o'.repeat(100_000), error: { type: 'ValueError', message: 'm'.repeat(8192), line: 1, traceback: 't'.repeat(32_768) } }),
    input('validation_failed', { error: { type: 'SyntaxError', message: 'bad', line: 1, column: 3, text: 'q'.repeat(240), caret: '  ^' }, stderr: 'e'.repeat(50_000) }),
    input('completed', { stdout: '🙂'.repeat(30_000), stderr: 'w'.repeat(50_000), files: Array.from({ length: 20 }, (_, i) => ({ path: `out-${'p'.repeat(200)}-${i}.bin`, size: i, contentBase64: '' })) }),
    input('internal_error', { error: { type: 'InternalError', message: 'i'.repeat(4096), line: null } }),
  ];

  it('never exceeds the budget, whatever the parts add up to', () => {
    for (const budget of [500, 777, 1000, 2500, 4000, 10_000]) {
      for (const [i, r] of inputs.entries()) {
        const text = renderFeedback(r, hugeLine, { budgetChars: budget, flaggedImports: Array.from({ length: 50 }, (_, k) => ({ module: `m${k}`, line: k })) });
        expect(text.length, `input ${i}, budget ${budget}`).toBeLessThanOrEqual(budget);
        expect(text.length, `input ${i}, budget ${budget}`).toBeGreaterThan(Math.min(budget, 200));
      }
    }
  });

  it('keeps the head and the tail of long output and says how much was cut', () => {
    const text = renderFeedback(input('completed', { stdout: numbered(10_000) }), CODE, { budgetChars: 1000 });
    expect(text).toContain('\nrow 0\nrow 1\n');
    expect(text.endsWith('row 9999')).toBe(true);
    expect(text).toMatch(/… \[\d+ characters cut\] …/);
  });
});
