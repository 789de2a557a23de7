// A tests run's result: each case judged from the sandbox's report, the summary, the status of the
// whole, and the top-level fields a tests run leaves empty. Fake outcomes; no Docker.
import { describe, expect, it } from 'vitest';
import type { TestSpec } from '../../src/core/ports.ts';
import { buildResult, failedOutcome, notRun, type ResultDeps, type ResultInput } from '../../src/core/results.ts';
import type { CaseOutcome, SandboxOutcome } from '../../src/core/sandbox.ts';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { capture, ManualClock, outcome, runReport } from './fakes.ts';

const LIMITS = { timeoutMs: 5000, memoryMb: 256, cpus: 1, outputBytes: 50_000 };

const deps = (testOutputBytes = 4096): ResultDeps => ({
  runtime: 'runc',
  limits: { floodBytes: 1_000_000, outputFilesMax: 5, outputFilesMaxBytes: 10_000, testOutputBytes, outputsMax: 10, outputsMaxBytes: 2_097_152 },
  clock: new ManualClock(),
});

function caseOutcome(over: Partial<Omit<CaseOutcome, 'stdout' | 'stderr'>> & { stdout?: string; stderr?: string; capBytes?: number } = {}): CaseOutcome {
  const { stdout = '', stderr = '', capBytes, ...rest } = over;
  return { kind: 'finished', exitCode: 0, signal: null, error: null, durationMs: 12.345, cpuMs: 3, ...rest, stdout: capture(stdout, capBytes), stderr: capture(stderr, capBytes) };
}

const spec = (name: string, over: Partial<TestSpec> = {}): TestSpec => ({ name, compare: 'trimmed', ...over });
const inputs = (n: number) => Array.from({ length: n }, (_, i) => ({ stdin: `${i}\n`, args: [], timeoutMs: 2000 }));

function withCases(o: SandboxOutcome, cases: CaseOutcome[]): SandboxOutcome {
  return { ...o, cases };
}

function build(o: SandboxOutcome, tests: TestSpec[], over: Partial<ResultInput> = {}, d = deps()): ExecutionResult {
  const r = buildResult(d, { id: 'e1', code: 'print(input())', limits: LIMITS, outcome: o, createdAtMs: 0, tests, caseInputs: inputs(tests.length), ...over });
  // Every result is a valid ExecutionResult, tests run or not.
  ExecutionResult.parse(r);
  return r;
}

const finished = (stdout = '', stderr = '') => outcome('finished', { report: runReport(), stdout, stderr, durationMs: 321 });

describe('a tests run that ran every case', () => {
  it('all passed: completed, success, the summary, and no top-level output', () => {
    const specs = [spec('one', { expectedStdout: '1' }), spec('case 2', { expectedStdout: '2' })];
    const r = build(withCases(finished('runner noise', 'more noise'), [caseOutcome({ stdout: '1\n' }), caseOutcome({ stdout: '2\n' })]), specs);
    expect(r.status).toBe('completed');
    expect(r.success).toBe(true);
    expect(r.summary).toEqual({ total: 2, passed: 2, failed: 0, error: 0, timeout: 0, oom: 0, output_limit: 0, not_run: 0 });
    expect(r).toMatchObject({ stdout: '', stderr: '', exitCode: null, signal: null, error: null, truncated: { stdout: false, stderr: false }, durationMs: 321 });
    expect(r.tests?.[0]).toEqual({
      index: 0,
      name: 'one',
      verdict: 'passed',
      exitCode: 0,
      signal: null,
      stdout: '1\n',
      stderr: '',
      truncated: { stdout: false, stderr: false },
      durationMs: 12.3,
      error: null,
      mismatch: null,
    });
    expect(r.feedback).toMatch(/^All 2 test cases passed/);
  });

  it('judges each case: failed, error, timeout, oom, output_limit; completed but not a success', () => {
    const error = { type: 'ValueError', message: 'bad literal', line: 1, traceback: 'Traceback (most recent call last):\nValueError: bad literal\n' };
    const specs = ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => spec(n, { expectedStdout: 'ok' }));
    const r = build(
      withCases(finished(), [
        caseOutcome({ stdout: 'ok' }),
        caseOutcome({ stdout: 'no' }),
        caseOutcome({ exitCode: 1, error, stderr: error.traceback }),
        caseOutcome({ kind: 'timeout', exitCode: null, signal: 9, stdout: 'partial', durationMs: 2000 }),
        caseOutcome({ kind: 'oom', exitCode: 137, signal: 9 }),
        caseOutcome({ kind: 'output_limit', exitCode: null }),
      ]),
      specs,
    );
    expect(r.status).toBe('completed');
    expect(r.success).toBe(false);
    expect(r.tests?.map((t) => t.verdict)).toEqual(['passed', 'failed', 'error', 'timeout', 'oom', 'output_limit']);
    expect(r.summary).toMatchObject({ total: 6, passed: 1, failed: 1, error: 1, timeout: 1, oom: 1, output_limit: 1, not_run: 0 });
    const [, failed, err, timeout, oom, flood] = r.tests ?? [];
    expect(failed?.mismatch).toMatchObject({ line: 1, expected: 'ok', actual: 'no' });
    expect(failed?.message).toBeUndefined();
    expect(err).toMatchObject({ exitCode: 1, error, message: 'ValueError: bad literal', mismatch: null });
    expect(timeout).toMatchObject({ signal: 'SIGKILL', stdout: 'partial', message: 'ran longer than its time limit of 2.00 s and was stopped' });
    expect(oom).toMatchObject({ exitCode: 137, signal: 'SIGKILL', message: 'used more than the memory limit of 256 MB and was stopped' });
    expect(flood).toMatchObject({ signal: 'SIGKILL', message: 'printed more than 1000000 bytes to one stream and was stopped' });
    expect(r.feedback).toMatch(/^1 of 6 test cases passed; 1 failed, 1 ended with an error, 1 ran out of time, 1 ran out of memory, 1 printed too much\./);
    expect(r.feedback).toContain('Test case 2 "b" failed: line 1 differs: expected "ok", got "no"');
  });

  it('names signals and says how a case without an expectation ended', () => {
    const r = build(withCases(finished(), [caseOutcome({ exitCode: 139, signal: 11 }), caseOutcome({ exitCode: 3 })]), [spec('case 1'), spec('case 2')]);
    expect(r.tests?.[0]).toMatchObject({ verdict: 'error', signal: 'SIGSEGV', message: 'killed by SIGSEGV (exit code 139)' });
    expect(r.tests?.[1]).toMatchObject({ verdict: 'error', signal: null, message: 'exited with code 3' });
  });

  it('keeps testOutputBytes of each stream, cut at a character boundary, and says so', () => {
    const big = `${'é'.repeat(10)}tail`;
    const r = build(withCases(finished(), [caseOutcome({ stdout: big, stderr: 'short' })]), [spec('case 1')], {}, deps(7));
    const t = r.tests?.[0];
    expect(t?.stdout).toBe('ééé');
    expect(t?.truncated).toEqual({ stdout: true, stderr: false });
    expect(t?.stderr).toBe('short');
    // Output the sandbox already cut is flagged even when it fits here.
    const cut = build(withCases(finished(), [caseOutcome({ stdout: 'x'.repeat(50), capBytes: 10 })]), [spec('case 1')]);
    expect(cut.tests?.[0]?.truncated.stdout).toBe(true);
  });

  it('compares what the sandbox kept, not the shorter copy in the result', () => {
    const line = 'x'.repeat(100);
    const r = build(withCases(finished(), [caseOutcome({ stdout: `${line}\n` })]), [spec('case 1', { expectedStdout: line, compare: 'exact' })], {}, deps(10));
    expect(r.tests?.[0]?.verdict).toBe('failed');
    expect(r.tests?.[0]?.mismatch?.message).toMatch(/ends with a newline/);
    expect(r.tests?.[0]?.stdout).toBe('x'.repeat(10));
  });
});

describe('a tests run that did not run every case', () => {
  const specs = [spec('case 1', { expectedStdout: '0' }), spec('case 2', { expectedStdout: '1' }), spec('case 3')];

  it('validation failed: every case not_run, the syntax error kept', () => {
    const error = { type: 'SyntaxError', message: 'invalid syntax', line: 1, column: 6, text: 'print(', caret: '     ^' };
    const o = outcome('finished', { report: { v: 1, phase: 'validation', error }, stderr: 'SyntaxError: invalid syntax\n' });
    // Even if a (hostile) sandbox reported cases, none ran.
    const r = build(withCases(o, [caseOutcome({ stdout: '0' })]), specs);
    expect(r.status).toBe('validation_failed');
    expect(r.success).toBe(false);
    expect(r.error).toEqual(error);
    expect(r.stderr).toBe('SyntaxError: invalid syntax\n');
    expect(r.exitCode).toBeNull();
    expect(r.tests?.every((t) => t.verdict === 'not_run' && t.message === 'not run: the code did not pass validation, so no case ran')).toBe(true);
    expect(r.summary).toMatchObject({ total: 3, not_run: 3, passed: 0 });
    expect(r.feedback).toMatch(/^The code was not run: it has a SyntaxError at line 1, column 6: invalid syntax\. None of the 3 test cases was run\./);
  });

  it("the whole run's timeout: the cases judged so far, the rest not_run", () => {
    const o = withCases(outcome('timeout', { durationMs: 9000 }), [
      caseOutcome({ stdout: '0' }),
      caseOutcome({ kind: 'timeout', exitCode: null }),
      caseOutcome({ kind: 'not_run', exitCode: null, durationMs: 0 }),
    ]);
    const r = build(o, specs);
    expect(r.status).toBe('timeout');
    expect(r.success).toBe(false);
    expect(r.signal).toBeNull();
    expect(r.tests?.map((t) => t.verdict)).toEqual(['passed', 'timeout', 'not_run']);
    expect(r.tests?.[2]).toMatchObject({ exitCode: null, signal: null, message: "not run: the execution's total time limit ran out before this case" });
    expect(r.feedback).toMatch(/^The execution was stopped at its total time limit.*1 of 3 test cases passed; 1 ran out of time, 1 was not run\./);
  });

  it('cancelled before it started (no cases reported): every case not_run', () => {
    const r = build(notRun(), specs, { cancellation: { by: 'client', started: false } });
    expect(r.status).toBe('cancelled');
    expect(r.tests?.map((t) => t.verdict)).toEqual(['not_run', 'not_run', 'not_run']);
    expect(r.tests?.[0]?.message).toBe('not run: the execution was cancelled before this case');
    expect(r.feedback).toMatch(/The run was cancelled because the caller went away.*0 of 3 test cases passed; 3 were not run\./s);
  });

  it('a failure on our side: internal_error, every case not_run', () => {
    const r = build(failedOutcome('the worker went away'), specs);
    expect(r.status).toBe('internal_error');
    expect(r.error?.message).toBe('the worker went away');
    expect(r.summary?.not_run).toBe(3);
  });

  it('a finished run that reported fewer cases than it had is our failure, not completed', () => {
    const r = build(withCases(finished(), [caseOutcome({ stdout: '0' })]), specs);
    expect(r.status).toBe('internal_error');
    expect(r.error?.message).toBe('the sandbox reported 1 of 3 test cases');
    expect(r.tests?.map((t) => t.verdict)).toEqual(['passed', 'not_run', 'not_run']);
    expect(r.tests?.[1]?.message).toBe('not run: the sandbox failed before this case');
  });

  it('a finished run that reported no cases at all is our failure too', () => {
    const r = build(finished('hello'), specs);
    expect(r.status).toBe('internal_error');
    expect(r.summary?.not_run).toBe(3);
  });
});

describe('a run without tests', () => {
  it('is built as before: no tests, no summary', () => {
    const r = buildResult(deps(), { id: 'e1', code: 'print(1)', limits: LIMITS, outcome: finished('1\n'), createdAtMs: 0 });
    expect(r.tests).toBeUndefined();
    expect(r.summary).toBeUndefined();
    expect(r).toMatchObject({ status: 'completed', success: true, stdout: '1\n', exitCode: 0 });
  });
});
