// `pybox run`, `pybox test` and `pybox batch` against a real pybox server (src/main.ts in a child
// process, runc, a config and store of its own). `pybox run` works on any server; `test` and
// `batch` need the server side of test cases and batches (issue 11): that describe is skipped only
// when PYBOX_CLI_SERVER_PARTS=0.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batchCommand } from '../../src/cli/commands/batch.ts';
import { runCommand } from '../../src/cli/commands/run.ts';
import { testCommand } from '../../src/cli/commands/test.ts';
import type { CliContext } from '../../src/cli/context.ts';
import type { TestVerdict } from '../../src/core/schemas.ts';
import { xmllint } from '../support/junit.ts';
import { freePort, startService, type ServiceProcess } from '../support/serve.ts';

const root = join(import.meta.dirname, '../..');
const suiteDir = join(root, 'test/fixtures/suite');
let dir: string;
let service: ServiceProcess;
let url: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pybox-cli-real-'));
  const config = join(dir, 'config.yaml');
  writeFileSync(config, `engine:\n  instance: test-cli-${randomUUID().slice(0, 8)}\n  runtime: runc\n`);
  const port = await freePort();
  service = startService(root, { ...process.env, PYBOX_CONFIG: config, PYBOX_HOST: '127.0.0.1', PYBOX_PORT: String(port), PYBOX_DB: join(dir, 'db.sqlite'), PYBOX_LOG_LEVEL: 'warn' });
  url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    const ready = await fetch(`${url}/readyz`).then((r) => r.ok).catch(() => false);
    if (ready) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  service.child.kill('SIGKILL');
  throw new Error(`pybox did not start:\n${service.log}`);
});

afterAll(async () => {
  if (service) {
    service.child.kill('SIGTERM');
    await service.exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

interface Captured extends CliContext {
  stdout: string;
  stderr: string;
}
function context(): Captured {
  const c: Captured = {
    env: { PYBOX_URL: url, CI: 'true' },
    stdout: '',
    stderr: '',
    out: (line) => void (c.stdout += line + '\n'),
    err: (line) => void (c.stderr += line + '\n'),
    write: (stream, text) => void (stream === 'out' ? (c.stdout += text) : (c.stderr += text)),
  };
  return c;
}

function program(name: string, code: string): string {
  const path = join(dir, name);
  writeFileSync(path, code);
  return path;
}

describe('pybox run against a real server', () => {
  it('writes stdout and stderr as the program did and exits with its code; stdin, args and files reach it', async () => {
    writeFileSync(join(dir, 'input.txt'), '3\n4\n');
    writeFileSync(join(dir, 'table.csv'), 'a,b\n1,2\n');
    const main = program(
      'io.py',
      'import sys\nnums = [int(x) for x in sys.stdin.read().split()]\nprint(sum(nums), *sys.argv[1:], end="")\nprint(open("data/t.csv").read().splitlines()[1], file=sys.stderr)\nsys.exit(7)\n',
    );
    const ctx = context();
    const code = await runCommand(ctx, main, { stdin: join(dir, 'input.txt'), arg: ['x y', 'z'], file: [`${join(dir, 'table.csv')}=data/t.csv`] });
    expect(ctx.stdout).toBe('7 x y z');
    expect(ctx.stderr).toBe('1,2\n');
    expect(code).toBe(7);
  });

  it('an exception exits 1 with its traceback; a syntax error exits 1 naming the line', async () => {
    const raise = context();
    expect(await runCommand(raise, program('raise.py', 'def f():\n    raise ValueError("bad value")\nf()\n'), {})).toBe(1);
    expect(raise.stderr).toMatch(/ValueError: bad value/);
    const syntax = context();
    expect(await runCommand(syntax, program('syntax.py', 'x = (1,\nprint(x)\n'), {})).toBe(1);
    expect(syntax.stderr).toMatch(/SyntaxError/);
    expect(syntax.stderr).toMatch(/line [12]/);
  });

  it('a program stopped at its time limit exits 124 with a message; out of memory 137', async () => {
    const slow = context();
    expect(await runCommand(slow, program('loop.py', 'while True:\n    pass\n'), { timeout: 1000 })).toBe(124);
    expect(slow.stderr).toMatch(/stopped at its time limit \(1000 ms\)/);
    const hog = context();
    expect(await runCommand(hog, program('hog.py', 'x = []\nwhile True:\n    x.append(bytearray(16 << 20))\n'), { memory: 64 })).toBe(137);
    expect(hog.stderr).toMatch(/out of memory \(limit 64 MB\)/);
  });

  it('as a process: `node bin/pybox.mjs run` passes the bytes and the exit code through', async () => {
    program('proc.py', 'import sys\nsys.stdout.write("no newline")\nsys.stderr.write("warn\\n")\nsys.exit(4)\n');
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [join(root, 'bin/pybox.mjs'), 'run', 'proc.py'], { cwd: dir, env: { ...process.env, PYBOX_URL: url }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    expect(r).toEqual({ code: 4, stdout: 'no newline', stderr: 'warn\n' });
  });
});

interface Expected {
  programs: Record<string, { status: string; cases: Record<string, TestVerdict> }>;
}
interface Summary {
  exitCode: number;
  programs: Array<{ name: string; verdict: string; status: string | null; problem: string | null; tests: Array<{ name: string; verdict: TestVerdict; message: string | null }> }>;
}

describe.skipIf(process.env.PYBOX_CLI_SERVER_PARTS === '0')('pybox test and pybox batch against a real server (PYBOX_CLI_SERVER_PARTS=0 skips)', () => {
  it('reports exactly the broken programs of the fixture suite, and a JUnit report that validates', { timeout: 600_000 }, async () => {
    const expected = JSON.parse(readFileSync(join(root, 'test/fixtures/suite-expected.json'), 'utf8')) as Expected;
    const ctx = context();
    const junit = join(dir, 'suite.xml');
    const code = await testCommand(ctx, suiteDir, { concurrency: 4, retries: 10, json: true, junit });
    const summary = JSON.parse(ctx.stdout) as Summary;
    expect(code).toBe(1);
    expect(summary.exitCode).toBe(1);
    expect(summary.programs.length).toBeGreaterThanOrEqual(50);
    for (const p of summary.programs) {
      const broken = expected.programs[p.name];
      const verdicts = Object.fromEntries(p.tests.map((t) => [t.name, t.verdict]));
      if (!broken) {
        expect({ name: p.name, verdict: p.verdict, problem: p.problem, failing: p.tests.filter((t) => t.verdict !== 'passed') }).toEqual({ name: p.name, verdict: 'passed', problem: null, failing: [] });
        continue;
      }
      expect({ name: p.name, status: p.status, verdicts }).toEqual({ name: p.name, status: broken.status, verdicts: broken.cases });
      expect(p.verdict).toBe('failed');
    }
    expect(summary.programs.map((p) => p.name)).toEqual(expect.arrayContaining(Object.keys(expected.programs)));
    const lint = xmllint(junit);
    expect(lint.ok, lint.output).toBe(true);
    const xml = readFileSync(junit, 'utf8');
    expect(xml).toMatch(/<testcase classname="wrong_sum" name="wrong_sum\.1"[^>]*>\s*<failure /);
    expect(xml).toMatch(/<testcase classname="manifest\/infinite_loop" name="never ends"[^>]*>\s*<error [^>]*type="timeout"/);
    expect(xml).toMatch(/<testcase classname="syntax_broken" name="\(execution\)">\s*<error [^>]*type="validation_failed"/);
  });

  it('runs a JSON Lines file as a batch and writes each result in input order', { timeout: 180_000 }, async () => {
    const lines = [
      { code: 'print(sum(map(int, input().split())))', stdin: '2 3\n' },
      { code: 'import sys\nprint(sys.argv[1])', args: ['hello'] },
      { code: 'raise SystemExit(3)' },
      { code: 'print(input()[::-1])', stdin: 'abc\n', tests: undefined },
    ];
    writeFileSync(join(dir, 'batch.jsonl'), lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    const ctx = context();
    const code = await batchCommand(ctx, join(dir, 'batch.jsonl'), { out: join(dir, 'batch-out.jsonl'), label: 'cli test' });
    expect(code).toBe(1);
    const results = readFileSync(join(dir, 'batch-out.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { index: number; status: string; result: { stdout: string; exitCode: number | null } });
    expect(results.map((r) => [r.index, r.status, r.result.stdout, r.result.exitCode])).toEqual([
      [0, 'completed', '5\n', 0],
      [1, 'completed', 'hello\n', 0],
      [2, 'error', '', 3],
      [3, 'completed', 'cba\n', 0],
    ]);
    expect(ctx.stderr).toMatch(/batch \S+ completed: 3 of 4 succeeded/);
  });
});
