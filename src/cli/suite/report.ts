// What `pybox test` says at the end: the failing cases in a few lines each, a table of the programs
// (cases passed of total, the verdicts, time), the totals, the exit code; or all of it as JSON.
import { TEST_VERDICTS, type TestResult, type TestVerdict } from '../../core/schemas.ts';
import type { ProgramOutcome } from './runner.ts';

/** 0: every case of every program passed; 1: some did not; 2: some program could not be run by pybox. */
const TEST_EXIT = { passed: 0, failed: 1, unrun: 2 } as const;

export function exitCodeFor(outcomes: ProgramOutcome[]): number {
  if (outcomes.some((o) => o.verdict === 'unrun')) return TEST_EXIT.unrun;
  if (outcomes.some((o) => o.verdict === 'failed')) return TEST_EXIT.failed;
  return TEST_EXIT.passed;
}

/** Shortens text for one line of a terminal: control characters shown, long text cut. */
export function clip(text: string, max: number): string {
  // eslint-disable-next-line no-control-regex
  const shown = text.replace(/\n/g, '\\n').replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return shown.length <= max ? shown : `${shown.slice(0, max - 1)}…`;
}

function caseProblem(t: TestResult): string {
  // The server's message already says where ("line 15 differs…").
  if (t.mismatch) return t.mismatch.message;
  if (t.error) return `${t.error.type}: ${t.error.message}${t.error.line !== null && t.error.line !== undefined ? ` (line ${t.error.line})` : ''}`;
  if (t.message) return t.message;
  if (t.verdict === 'error') return `exit code ${t.exitCode ?? t.signal ?? '?'}`;
  return t.verdict;
}

/** A few lines per failing program: what went wrong with its first failing cases. */
export function failureDetails(outcomes: ProgramOutcome[], perProgram = 3): string[] {
  const lines: string[] = [];
  for (const o of outcomes) {
    if (o.verdict === 'passed') continue;
    if (o.verdict === 'unrun') {
      lines.push(`✗ ${o.program.name}: not run: ${clip(o.problem ?? 'unknown', 300)}`);
      continue;
    }
    const r = o.result!;
    if (r.status !== 'completed') {
      const why = r.error ? `${r.error.type}: ${r.error.message}${r.error.line ? ` (line ${r.error.line})` : ''}` : r.status;
      lines.push(`✗ ${o.program.name}: ${r.status}: ${clip(why, 300)}`);
    }
    const bad = (r.tests ?? []).filter((t) => t.verdict !== 'passed' && !(t.verdict === 'not_run' && r.status !== 'completed'));
    for (const t of bad.slice(0, perProgram)) {
      lines.push(`✗ ${o.program.name} › ${t.name}: ${t.verdict}: ${clip(caseProblem(t), 300)}`);
      // An exit code's mismatch says it all in its message; an output's shows both sides.
      if (t.mismatch && t.verdict === 'failed' && !/^exit code /.test(t.mismatch.message)) {
        lines.push(`    expected: ${clip(t.mismatch.expected, 200)}`);
        lines.push(`    actual:   ${clip(t.mismatch.actual, 200)}`);
      }
    }
    if (bad.length > perProgram) lines.push(`  … and ${bad.length - perProgram} more failing case(s) of ${o.program.name}`);
  }
  return lines;
}

const COLUMNS: Array<{ title: string; verdict: TestVerdict }> = [
  { title: 'failed', verdict: 'failed' },
  { title: 'error', verdict: 'error' },
  { title: 'timeout', verdict: 'timeout' },
  { title: 'oom', verdict: 'oom' },
  { title: 'output', verdict: 'output_limit' },
  { title: 'not run', verdict: 'not_run' },
];

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)}s`;
}

export function resultWord(o: ProgramOutcome): string {
  return o.verdict === 'passed' ? 'PASS' : o.verdict === 'failed' ? 'FAIL' : 'NOT RUN';
}

/** The table of programs and the totals line. */
export function summaryTable(outcomes: ProgramOutcome[], wallMs: number): string[] {
  const rows: string[][] = [['program', 'passed', ...COLUMNS.map((c) => c.title), 'time', 'result']];
  for (const o of outcomes) {
    const s = o.result?.summary;
    const total = s?.total ?? o.program.cases.length;
    rows.push([
      clip(o.program.name, 48),
      `${s?.passed ?? 0}/${total}`,
      ...COLUMNS.map((c) => (s ? String(s[c.verdict]) : '-')),
      seconds(o.wallMs),
      resultWord(o),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd();
  const t = totals(outcomes);
  return [
    line(rows[0]!),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.slice(1).map(line),
    '',
    `${t.programs.passed} of ${outcomes.length} programs passed` +
      (t.programs.failed ? `, ${t.programs.failed} failed` : '') +
      (t.programs.unrun ? `, ${t.programs.unrun} not run` : '') +
      `; ${t.cases.passed} of ${t.cases.total} cases passed; ${seconds(wallMs)}`,
  ];
}

export function totals(outcomes: ProgramOutcome[]) {
  const cases = Object.fromEntries([['total', 0], ...TEST_VERDICTS.map((v) => [v, 0])]) as Record<'total' | TestVerdict, number>;
  for (const o of outcomes) {
    const s = o.result?.summary;
    if (s) for (const k of ['total', ...TEST_VERDICTS] as const) cases[k] += s[k];
    else {
      cases.total += o.program.cases.length;
      cases.not_run += o.program.cases.length;
    }
  }
  const count = (v: ProgramOutcome['verdict']) => outcomes.filter((o) => o.verdict === v).length;
  return { programs: { total: outcomes.length, passed: count('passed'), failed: count('failed'), unrun: count('unrun') }, cases };
}

/** The machine summary of --json. */
export function jsonSummary(outcomes: ProgramOutcome[], wallMs: number) {
  return {
    exitCode: exitCodeFor(outcomes),
    durationMs: Math.round(wallMs),
    totals: totals(outcomes),
    programs: outcomes.map((o) => ({
      name: o.program.name,
      file: o.program.file,
      verdict: o.verdict,
      status: o.result?.status ?? null,
      executionId: o.result?.id ?? null,
      problem: o.problem ?? null,
      durationMs: Math.round(o.wallMs),
      summary: o.result?.summary ?? null,
      error: o.result?.error ?? null,
      tests: (o.result?.tests ?? []).map((t) => ({
        name: t.name,
        verdict: t.verdict,
        durationMs: t.durationMs,
        exitCode: t.exitCode,
        message: t.verdict === 'passed' ? null : caseProblem(t),
        ...(t.mismatch ? { mismatch: t.mismatch } : {}),
      })),
    })),
  };
}
