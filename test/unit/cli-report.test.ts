// The reports of `pybox test` from outcomes made here: JUnit XML with hostile program output
// (validated by xmllint against test/fixtures/junit/junit.xsd), the exit code's precedence, the
// summary table and the JSON summary.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ProgramSpec } from '../../src/cli/suite/cases.ts';
import { junitXml, writeJunit } from '../../src/cli/suite/junit.ts';
import { exitCodeFor, jsonSummary, summaryTable } from '../../src/cli/suite/report.ts';
import type { ProgramOutcome } from '../../src/cli/suite/runner.ts';
import { ExecutionResult, TEST_VERDICTS, type TestResult, type TestVerdict } from '../../src/core/schemas.ts';
import { xmllint } from '../support/junit.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pybox-junit-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const spec = (name: string, cases = 1): ProgramSpec => ({ name, file: `/suite/${name}.py`, code: 'x', files: [], cases: Array.from({ length: cases }, () => ({})) });

function testResult(index: number, verdict: TestVerdict, extra: Partial<TestResult> = {}): TestResult {
  return { index, name: `case ${index + 1}`, verdict, exitCode: 0, signal: null, stdout: '', stderr: '', truncated: { stdout: false, stderr: false }, durationMs: 4.5, ...extra };
}

function outcome(name: string, tests: TestResult[], status: ExecutionResult['status'] = 'completed'): ProgramOutcome {
  const summary = Object.fromEntries([['total', tests.length], ...TEST_VERDICTS.map((v) => [v, tests.filter((t) => t.verdict === v).length])]) as ExecutionResult['summary'];
  const passed = tests.every((t) => t.verdict === 'passed');
  const result = ExecutionResult.parse({
    id: `exec-${name}`,
    status,
    success: status === 'completed' && passed,
    exitCode: null,
    signal: null,
    stdout: '',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 10,
    tests,
    summary,
    error: status === 'validation_failed' ? { type: 'SyntaxError', message: 'invalid syntax', line: 3, text: 'def f(:', caret: '      ^' } : null,
    feedback: '',
    runtime: 'runc',
    limits: { timeoutMs: 1000, memoryMb: 64, cpus: 1, outputBytes: 50_000 },
    createdAt: '2026-01-01T00:00:00Z',
    finishedAt: '2026-01-01T00:00:01Z',
  });
  return { program: spec(name, tests.length), verdict: status === 'completed' && passed ? 'passed' : 'failed', result, wallMs: 250 };
}

describe('JUnit report', () => {
  it('stays valid XML of the schema whatever the programs printed', () => {
    const hostile = 'NUL\u0000 BEL\u0007 ESC\u001b[31m ]]> <tag attr="x"> & \uFFFE \uD800 lone surrogate, émoji 🎉';
    const outcomes: ProgramOutcome[] = [
      outcome('hostile <name> & "quotes"', [
        testResult(0, 'passed', { name: `out ${hostile}`, stdout: hostile.repeat(2000), stderr: hostile, truncated: { stdout: true, stderr: false } }),
        testResult(1, 'failed', { mismatch: { line: 1, expected: hostile, actual: '', message: `differs: ${hostile}` } }),
        testResult(2, 'error', { exitCode: 1, error: { type: 'ValueError', message: hostile, line: 2, traceback: `Traceback\n${hostile}` } }),
        testResult(3, 'timeout', { exitCode: null }),
        testResult(4, 'oom', { exitCode: null }),
        testResult(5, 'output_limit'),
        testResult(6, 'not_run', { message: 'the execution ended first' }),
      ]),
      outcome('syntax', [testResult(0, 'not_run')], 'validation_failed'),
      { program: spec('down', 2), verdict: 'unrun', problem: 'HTTP 503 <overloaded>', wallMs: 3 },
    ];
    const report = join(dir, 'report.xml');
    writeJunit(report, outcomes, 'suite');
    const lint = xmllint(report);
    expect(lint.output.slice(0, 600)).toContain('validates');

    expect(lint.ok).toBe(true);
    const xml = readFileSync(report, 'utf8');
    expect(xml).toMatch(/<testsuites name="suite" tests="10" failures="1" errors="6" skipped="2">/);
    expect(xml).not.toMatch(/[\u0000\u0007\u001b]/);
    // Output beyond what a report keeps is cut, and says so.
    expect(xml).toMatch(/\[… \d+ more characters\]/);
    expect(xml).toContain('[output cut by pybox]');
    expect(xml).toMatch(/<testcase classname="syntax" name="\(execution\)">\s*<error message="SyntaxError: invalid syntax" type="validation_failed"><!\[CDATA\[def f\(:\n {6}\^\]\]><\/error>/);
    expect(xml).toMatch(/<testcase classname="down" name="\(execution\)">\s*<error message="HTTP 503 &lt;overloaded>" type="not_run"\/>/);
    expect(xml).toMatch(/name="case 5"[^>]*>\s*<error message="out of memory" type="oom"\/>/);
    expect(xml).toMatch(/name="case 7"[^>]*>\s*<skipped\/>/);
  });

  it('an all-green run is a report without failures', () => {
    const xml = junitXml([outcome('a', [testResult(0, 'passed'), testResult(1, 'passed')])], 'green');
    expect(xml).toMatch(/<testsuites name="green" tests="2" failures="0" errors="0" skipped="0">/);
  });

  it('the schema refuses what a CI server could not read', () => {
    const bad = join(dir, 'bad.xml');
    writeFileSync(bad, '<testsuites><testsuite name="x" tests="one"><testcase/></testsuite></testsuites>');
    const lint = xmllint(bad);
    expect(lint.ok).toBe(false);
    expect(lint.output).toMatch(/tests.*not a valid value|'one' is not a valid value/);
    expect(lint.output).toMatch(/attribute 'name' is required/);
  });
});

describe('exit code, table and JSON summary', () => {
  const green = outcome('green', [testResult(0, 'passed')]);
  const red = outcome('red', [testResult(0, 'passed'), testResult(1, 'failed')]);
  const down: ProgramOutcome = { program: spec('down'), verdict: 'unrun', problem: 'refused', wallMs: 1 };

  it('2 when pybox could not run a program, else 1 when a case did not pass, else 0', () => {
    expect(exitCodeFor([green])).toBe(0);
    expect(exitCodeFor([green, red])).toBe(1);
    expect(exitCodeFor([green, red, down])).toBe(2);
    expect(exitCodeFor([])).toBe(0);
  });

  it('the table has a row per program and the totals', () => {
    const lines = summaryTable([green, red, down], 1500);
    expect(lines[0]).toMatch(/^program +passed +failed +error +timeout +oom +output +not run +time +result$/);
    expect(lines.find((l) => l.startsWith('red'))!.split(/\s+/)).toEqual(['red', '1/2', '1', '0', '0', '0', '0', '0', '0.25s', 'FAIL']);
    expect(lines.find((l) => l.startsWith('down'))!.split(/\s+/)).toEqual(['down', '0/1', '-', '-', '-', '-', '-', '-', '0.00s', 'NOT', 'RUN']);
    expect(lines.at(-1)).toBe('1 of 3 programs passed, 1 failed, 1 not run; 2 of 4 cases passed; 1.50s');
  });

  it('the JSON summary counts programs and cases', () => {
    const s = jsonSummary([green, red, down], 1500);
    expect(s.exitCode).toBe(2);
    expect(s.totals).toEqual({ programs: { total: 3, passed: 1, failed: 1, unrun: 1 }, cases: { total: 4, passed: 2, failed: 1, error: 0, timeout: 0, oom: 0, output_limit: 0, not_run: 1 } });
    expect(s.programs[2]).toMatchObject({ name: 'down', verdict: 'unrun', status: null, problem: 'refused', tests: [] });
  });
});
