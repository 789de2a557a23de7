// `pybox test PATH`: runs a suite of programs with their test cases on pybox and reports like a test
// runner: live progress, the failing cases, a summary table, an exit code for CI, and optionally a
// JUnit report (--junit) and a machine summary (--json). What a suite is: src/cli/suite/discovery.ts
// (files X.py + X.in/X.out) and src/cli/suite/manifest.ts (pybox-tests.yaml).
import { basename, resolve } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_CLIENT_TIMEOUT_MS } from '../../client/client.ts';
import type { CliContext } from '../context.ts';
import { clientFor, describeError, EXIT_SERVICE, parseWholeNumber, printable, type RemoteOptions } from '../remote.ts';
import { discoverSuite, SuiteError, type Suite } from '../suite/discovery.ts';
import { writeJunit } from '../suite/junit.ts';
import { createProgress } from '../suite/progress.ts';
import { exitCodeFor, failureDetails, jsonSummary, resultWord, summaryTable, totals } from '../suite/report.ts';
import { runSuite, type ProgramOutcome } from '../suite/runner.ts';

interface TestOptions extends RemoteOptions {
  concurrency: number;
  junit?: string;
  json?: boolean;
  progress?: 'bar' | 'plain';
  retries: number;
}

const HELP = `
A suite is a directory of programs X.py, each with its cases beside it:
  X.in / X.out                    one case: standard input, expected standard output
  X.1.in / X.1.out, X.2.in, ...   several cases, in the order of their numbers
  X.args, X.N.args                the case's arguments, one per line (optional)
(an .in without .out passes when the program exits 0; outputs are compared ignoring trailing spaces
and final newlines), and/or a manifest pybox-tests.yaml (or a .yaml file given as PATH) naming
programs, their cases (stdin, args, expectedStdout, expectedExitCode, compare: exact | trimmed |
tokens | float | regex, tolerance, timeoutMs), files and limits. PATH may also be one X.py.

Each program is one execution: the server runs all its cases in one sandbox, each as a fresh process.

Exit codes:
  0   every case of every program passed
  1   some case did not pass (wrong output, error, timeout, oom, a syntax error...)
  2   some program could not be run by pybox (server unreachable or refusing it, internal error),
      or the suite itself could not be read

The server is --url or PYBOX_URL (default http://127.0.0.1:8080), the key --key or PYBOX_API_KEY.`;

export function registerTest(program: Command, ctx: CliContext): void {
  program
    .command('test')
    .description('run a suite of programs with test cases on pybox; summary table, JUnit report, CI exit code')
    .argument('<path>', 'a directory of programs and cases, a .yaml manifest, or one .py program')
    .option('-c, --concurrency <n>', 'programs run at once', parseWholeNumber('--concurrency', 1), 4)
    .option('--junit <file>', 'write a JUnit XML report there')
    .option('--json', 'print a machine-readable summary on stdout instead of the table')
    .option('--progress <mode>', 'bar (a live bar, the default on a terminal) or plain (a line per program)')
    .option('--retries <n>', 'retries of a program when the server is busy (429/503 with Retry-After)', parseWholeNumber('--retries', 0), 5)
    .option('--url <url>', 'the pybox server (or PYBOX_URL)')
    .option('--key <key>', 'API key (or PYBOX_API_KEY)')
    .addHelpText('after', HELP)
    .action(async (path: string, opts: TestOptions) => {
      process.exitCode = await testCommand(ctx, path, opts);
    });
}

/**
 * How long to wait for one program's answer: its cases run one after another in one sandbox, so up to
 * the sum of their limits (the server's default, 30 s, where none is given; the server clamps them
 * to its maxima), plus time in the queue.
 */
function answerBudgetMs(suite: Suite): number {
  const perProgram = suite.programs.map((p) => p.cases.reduce((sum, c) => sum + (c.timeoutMs ?? p.timeoutMs ?? 30_000), 0));
  return Math.max(DEFAULT_CLIENT_TIMEOUT_MS, ...perProgram.map((ms) => ms + 120_000));
}

export async function testCommand(ctx: CliContext, path: string, opts: TestOptions): Promise<number> {
  if (opts.progress !== undefined && opts.progress !== 'bar' && opts.progress !== 'plain') {
    ctx.err(`pybox test: --progress is bar or plain, not "${opts.progress}"`);
    return EXIT_SERVICE;
  }
  let suite: Suite;
  try {
    suite = discoverSuite(path);
  } catch (e) {
    ctx.err(e instanceof SuiteError ? `pybox test: ${e.message}` : `pybox test: cannot read the suite: ${e instanceof Error ? e.message : String(e)}`);
    return EXIT_SERVICE;
  }

  const caseCount = suite.programs.reduce((n, p) => n + p.cases.length, 0);
  ctx.err(`pybox test: ${suite.programs.length} programs, ${caseCount} cases, ${opts.concurrency} at once`);
  if (suite.skipped.length) ctx.err(`pybox test: skipped (no cases): ${suite.skipped.join(', ')}`);

  const counts = { passed: 0, failed: 0, unrun: 0 };
  const progress = createProgress(ctx, {
    total: suite.programs.length,
    unit: 'programs',
    countsFormat: '{passed} passed, {failed} failed, {unrun} not run',
    ...(opts.progress ? { mode: opts.progress } : {}),
  });
  const started = performance.now();
  let outcomes: ProgramOutcome[];
  try {
    const client = clientFor(ctx, opts, { retries: opts.retries, timeoutMs: answerBudgetMs(suite) });
    outcomes = await runSuite(client, suite.programs, {
      concurrency: opts.concurrency,
      onDone: (o) => {
        counts[o.verdict]++;
        const s = o.result?.summary;
        const cases = s ? `${s.passed}/${s.total} cases` : `${o.program.cases.length} cases`;
        const why = o.verdict === 'unrun' ? ` - ${printable(o.problem ?? '')}` : o.result && o.result.status !== 'completed' ? ` (${o.result.status})` : '';
        progress.tick(`${resultWord(o)} ${o.program.name}  ${cases}  ${(o.wallMs / 1000).toFixed(2)}s${why}`, counts);
      },
    });
  } finally {
    progress.stop();
  }
  const wallMs = performance.now() - started;

  if (opts.junit) {
    try {
      writeJunit(opts.junit, outcomes, basename(resolve(path)));
    } catch (e) {
      ctx.err(`pybox test: cannot write the JUnit report ${opts.junit}: ${describeError(e)}`);
      return EXIT_SERVICE;
    }
  }
  if (opts.json) {
    ctx.out(JSON.stringify(jsonSummary(outcomes, wallMs), null, 2));
  } else {
    const details = failureDetails(outcomes);
    if (details.length) {
      for (const line of details) ctx.out(line);
      ctx.out('');
    }
    for (const line of summaryTable(outcomes, wallMs)) ctx.out(line);
  }
  const t = totals(outcomes);
  if (t.programs.unrun > 0) ctx.err(`pybox test: ${t.programs.unrun} program(s) could not be run by pybox`);
  if (opts.junit) ctx.err(`pybox test: JUnit report written to ${opts.junit}`);
  return exitCodeFor(outcomes);
}
