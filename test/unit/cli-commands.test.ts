// `pybox run`, `pybox test` and `pybox batch` in-process against a fake pybox server
// (test/support/fake-pybox.ts): what they send, print and write, and their exit codes.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { batchCommand } from '../../src/cli/commands/batch.ts';
import { runCommand } from '../../src/cli/commands/run.ts';
import { testCommand } from '../../src/cli/commands/test.ts';
import type { CliContext } from '../../src/cli/context.ts';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { xmllint } from '../support/junit.ts';
import { startFakePybox, type FakePybox } from '../support/fake-pybox.ts';

let fake: FakePybox;
let dir: string;
beforeAll(async () => {
  fake = await startFakePybox();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pybox-cli-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

function files(map: Record<string, string>): void {
  for (const [path, text] of Object.entries(map)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
}

interface Captured extends CliContext {
  stdout: string;
  stderr: string;
  outLines: string[];
  errLines: string[];
}

function context(extra: Partial<CliContext> = {}): Captured {
  const c: Captured = {
    env: { PYBOX_URL: fake.url },
    stdout: '',
    stderr: '',
    outLines: [],
    errLines: [],
    out: (line) => {
      c.outLines.push(line);
      c.stdout += line + '\n';
    },
    err: (line) => {
      c.errLines.push(line);
      c.stderr += line + '\n';
    },
    write: (stream, text) => {
      if (stream === 'out') c.stdout += text;
      else c.stderr += text;
    },
    ...extra,
  };
  return c;
}

describe('pybox run', () => {
  it("writes the program's stdout and stderr as they are and exits with its code", async () => {
    files({ 'main.py': '# fake: stderr warning: careful\n', 'in.txt': 'line 1\nno newline at the end', 'data.bin': '\u00ff\u0000' });
    writeFileSync(join(dir, 'data.bin'), Buffer.from([0xff, 0x00, 0x01]));
    const ctx = context();
    const code = await runCommand(ctx, join(dir, 'main.py'), { stdin: join(dir, 'in.txt'), arg: ['a b', 'c'], file: [join(dir, 'data.bin'), `${join(dir, 'in.txt')}=inputs/x.txt`], timeout: 5000, memory: 128 });
    expect(code).toBe(0);
    expect(ctx.stdout).toBe('line 1\nno newline at the enda b\nc\n');
    expect(ctx.stderr).toBe('warning: careful\n');
    expect(fake.requests.at(-1)).toMatchObject({
      args: ['a b', 'c'],
      timeoutMs: 5000,
      memoryMb: 128,
      files: [
        { path: 'data.bin', content: Buffer.from([0xff, 0x00, 0x01]).toString('base64'), encoding: 'base64' },
        { path: 'inputs/x.txt', content: 'line 1\nno newline at the end', encoding: 'utf8' },
      ],
    });
  });

  const endings: Array<[string, string, number, RegExp]> = [
    ['its own non-zero exit', '# fake: exit 3', 3, /^$/],
    ['a timeout', '# fake: status timeout', 124, /stopped at its time limit \(30000 ms\)/],
    ['out of memory', '# fake: status oom', 137, /out of memory \(limit 256 MB\)/],
    ['an output flood', '# fake: status output_limit', 125, /more output than the sandbox allows/],
    ['a syntax error', 'def f(:\n# fake: status validation_failed', 1, /line 1\n    def f\(:\n +\^\nSyntaxError: invalid syntax/],
    ["the sandbox's own failure", '# fake: status internal_error', 2, /the sandbox failed/],
    ['a service error', '# fake: http 500', 2, /pybox run: fake HTTP 500 \[500 internal\]/],
  ];
  it.each(endings)('ends with %s: exit code and message', async (_what, code, exit, stderr) => {
    files({ 'main.py': code });
    const ctx = context();
    expect(await runCommand(ctx, join(dir, 'main.py'), {})).toBe(exit);
    expect(ctx.stderr).toMatch(stderr);
  });

  it('--json prints the whole result and keeps the exit code; --stdin - reads our own stdin', async () => {
    files({ 'main.py': '# fake: exit 4' });
    const ctx = context({ stdin: Readable.from([Buffer.from('from a pipe\n')]) });
    expect(await runCommand(ctx, join(dir, 'main.py'), { json: true, stdin: '-' })).toBe(4);
    const result = ExecutionResult.parse(JSON.parse(ctx.stdout));
    expect(result).toMatchObject({ status: 'error', exitCode: 4, stdout: 'from a pipe\n' });
  });

  it('refuses an invalid request before sending it, and a missing file', async () => {
    files({ 'main.py': 'print(1)' });
    const before = fake.requests.length;
    const ctx = context();
    expect(await runCommand(ctx, join(dir, 'main.py'), { timeout: 10 })).toBe(2);
    expect(ctx.stderr).toMatch(/pybox run: timeoutMs: must be at least 1000/);
    expect(await runCommand(ctx, join(dir, 'nope.py'), {})).toBe(2);
    expect(ctx.stderr).toMatch(/ENOENT/);
    expect(fake.requests.length).toBe(before);
  });

  it('says so when it cannot reach the server', async () => {
    files({ 'main.py': 'print(1)' });
    const ctx = context({ env: { PYBOX_URL: 'http://127.0.0.1:9' } });
    expect(await runCommand(ctx, join(dir, 'main.py'), {})).toBe(2);
    expect(ctx.stderr).toMatch(/cannot reach pybox at http:\/\/127\.0\.0\.1:9/);
  });
});

/** A suite for the fake server: its programs echo their stdin, so a case passes when .in equals .out. */
function echoSuite(): void {
  files({
    'echo_ok.py': 'print(input())',
    'echo_ok.1.in': 'a\n',
    'echo_ok.1.out': 'a\n',
    'echo_ok.2.in': 'b\n',
    'echo_ok.2.out': 'b  \n\n',
    'wrong.py': 'print(1)',
    'wrong.1.in': 'x\n',
    'wrong.1.out': 'y\n',
    'wrong.2.in': 'z\n',
    'wrong.2.out': 'z\n',
    'crash.py': '# fake: exit 1\n',
    'crash.in': 'q\n',
    'syntax.py': 'def f(:\n# fake: status validation_failed\n',
    'syntax.in': '1\n',
    'syntax.out': '1\n',
    'slow.py': '# fake: verdict never ends=timeout\n# fake: verdict hog=oom\n',
    'pybox-tests.yaml': `programs:
  - program: slow.py
    cases:
      - {name: fine, stdin: "1", expectedStdout: "1"}
      - {name: never ends, stdin: "1"}
      - {name: hog}
  - program: exit3.py
    cases:
      - {name: exits 3, expectedExitCode: 3}
`,
    'exit3.py': '# fake: exit 3\n',
  });
}

describe('pybox test', () => {
  it('runs each program as one execution with its cases, prints the failures and a table, writes JUnit, exits 1', async () => {
    echoSuite();
    const ctx = context();
    const junit = join(dir, 'report.xml');
    const before = fake.requests.length;
    const code = await testCommand(ctx, dir, { concurrency: 4, retries: 5, junit });
    expect(code).toBe(1);
    const sent = fake.requests.slice(before);
    expect(sent).toHaveLength(6);
    expect(sent.find((r) => r.code === 'print(input())')!.tests).toEqual([
      { name: 'echo_ok.1', stdin: 'a\n', expectedStdout: 'a\n' },
      { name: 'echo_ok.2', stdin: 'b\n', expectedStdout: 'b  \n\n' },
    ]);
    // Plain progress (no terminal): one line per program on stderr.
    expect(ctx.errLines.filter((l) => /^\[\d\/6\] (PASS|FAIL|NOT RUN) /.test(l))).toHaveLength(6);
    expect(ctx.stderr).toContain('pybox test: 6 programs, 10 cases, 4 at once');
    const out = ctx.stdout;
    expect(out).toMatch(/✗ wrong › wrong\.1: failed: line 1 differs\n {4}expected: y\\n\n {4}actual: {3}x\\n/);
    expect(out).toMatch(/✗ crash › crash: error: RuntimeError: boom \(line 2\)/);
    expect(out).toMatch(/✗ syntax: validation_failed: SyntaxError: invalid syntax \(line 1\)/);
    expect(out).toMatch(/✗ slow › never ends: timeout/);
    const row = (name: string) => ctx.outLines.find((l) => l.startsWith(name + ' '))!.split(/\s+/);
    expect(row('echo_ok')).toEqual(['echo_ok', '2/2', '0', '0', '0', '0', '0', '0', expect.stringMatching(/s$/), 'PASS']);
    expect(row('wrong')).toEqual(['wrong', '1/2', '1', '0', '0', '0', '0', '0', expect.any(String), 'FAIL']);
    expect(row('slow')).toEqual(['slow', '1/3', '0', '0', '1', '1', '0', '0', expect.any(String), 'FAIL']);
    expect(row('syntax')).toEqual(['syntax', '0/1', '0', '0', '0', '0', '0', '1', expect.any(String), 'FAIL']);
    expect(row('exit3')[1]).toBe('1/1');
    expect(out).toMatch(/2 of 6 programs passed, 4 failed; 5 of 10 cases passed; [\d.]+s\n$/);

    const xml = readFileSync(junit, 'utf8');
    expect(xmllint(junit)).toEqual({ ok: true, output: expect.stringContaining('validates') });
    expect(xml).toMatch(/<testsuites name="pybox-cli-\w+" tests="11" failures="1" errors="4" skipped="1">/);
    expect(xml).toMatch(/<testcase classname="wrong" name="wrong\.1" time="[\d.]+">\s*<failure message="line 1 differs" type="failed"><!\[CDATA\[first difference on line 1\nexpected:\ny\n\nactual:\nx\n\]\]><\/failure>/);
    expect(xml).toMatch(/<testcase classname="slow" name="never ends"[^>]*>\s*<error message="stopped at its time limit" type="timeout"\/>/);
    expect(xml).toMatch(/<testcase classname="syntax" name="\(execution\)">\s*<error message="SyntaxError: invalid syntax" type="validation_failed"/);
    expect(xml).toMatch(/<testcase classname="syntax" name="syntax"[^>]*>\s*<skipped\/>/);
  });

  it('exits 0 when every case passes, and --json prints a machine summary', async () => {
    files({ 'a.py': 'x', 'a.in': '1', 'a.out': '1', 'b.py': 'y', 'b.1.in': '2', 'b.1.out': '2' });
    const ctx = context();
    expect(await testCommand(ctx, dir, { concurrency: 2, retries: 5, json: true })).toBe(0);
    const summary = JSON.parse(ctx.stdout) as { exitCode: number; totals: unknown; programs: Array<{ name: string; verdict: string; tests: unknown[] }> };
    expect(summary.exitCode).toBe(0);
    expect(summary.totals).toMatchObject({ programs: { total: 2, passed: 2, failed: 0, unrun: 0 }, cases: { total: 2, passed: 2 } });
    expect(summary.programs.map((p) => [p.name, p.verdict, p.tests.length])).toEqual([
      ['a', 'passed', 1],
      ['b', 'passed', 1],
    ]);
  });

  it('a program the service refuses is not run (exit 2) and the others go on; a busy service is waited for', async () => {
    files({ 'down.py': '# fake: http 500\n', 'down.in': '1', 'busy.py': '# fake: busy 2\n', 'busy.in': '1', 'fine.py': 'z', 'fine.in': '1', 'fine.out': '1' });
    const ctx = context();
    const junit = join(dir, 'r.xml');
    expect(await testCommand(ctx, dir, { concurrency: 4, retries: 5, junit })).toBe(2);
    expect(ctx.stdout).toMatch(/✗ down: not run: fake HTTP 500 \[500 internal\]/);
    expect(ctx.outLines.find((l) => l.startsWith('busy '))).toMatch(/PASS$/);
    expect(ctx.outLines.find((l) => l.startsWith('fine '))).toMatch(/PASS$/);
    expect(ctx.outLines.find((l) => l.startsWith('down '))).toMatch(/NOT RUN$/);
    expect(ctx.stderr).toContain('1 program(s) could not be run by pybox');
    expect(xmllint(junit).ok).toBe(true);
    expect(readFileSync(junit, 'utf8')).toMatch(/<testcase classname="down" name="\(execution\)">\s*<error message="fake HTTP 500 \[500 internal\]" type="not_run"\/>/);
  });

  it('runs at most --concurrency programs at once', async () => {
    const many: Record<string, string> = {};
    for (let i = 0; i < 6; i++) Object.assign(many, { [`p${i}.py`]: `# fake: slow 120\n# ${i}`, [`p${i}.in`]: '1' });
    files(many);
    fake.resetMaxInFlight();
    expect(await testCommand(context(), dir, { concurrency: 2, retries: 5 })).toBe(0);
    expect(fake.maxInFlight).toBe(2);
  });

  it('draws a live bar on a terminal', async () => {
    files({ 'a.py': 'x', 'a.in': '1', 'a.out': '1', 'b.py': 'y', 'b.in': '2', 'b.out': '3' });
    let drawn = '';
    const tty = Object.assign(new Writable({ write: (chunk: Buffer, _enc, done) => ((drawn += chunk.toString()), done()) }), { isTTY: true, columns: 120 });
    const ctx = context({ tty });
    expect(await testCommand(ctx, dir, { concurrency: 1, retries: 5 })).toBe(1);
    expect(drawn).toMatch(/0\/2 programs \| 0 passed, 0 failed, 0 not run/);
    expect(drawn).toMatch(/2\/2 programs \| 1 passed, 1 failed, 0 not run/);
    expect(drawn).not.toContain('{passed}');
    expect(ctx.errLines.some((l) => /^\[\d\/2\]/.test(l))).toBe(false);
    // CI set: plain lines even on a terminal.
    drawn = '';
    const ci = context({ tty, env: { PYBOX_URL: fake.url, CI: 'true' } });
    await testCommand(ci, dir, { concurrency: 1, retries: 5 });
    expect(drawn).toBe('');
    expect(ci.errLines.filter((l) => /^\[\d\/2\]/.test(l))).toHaveLength(2);
  });

  it('a bad suite exits 2 with the reason', async () => {
    files({ 'pybox-tests.yaml': 'programs: 3\n' });
    const ctx = context();
    expect(await testCommand(ctx, dir, { concurrency: 4, retries: 5 })).toBe(2);
    expect(ctx.stderr).toMatch(/pybox test: .*pybox-tests\.yaml: programs: Invalid input: expected array/);
  });
});

describe('pybox batch', () => {
  const line = (o: unknown) => JSON.stringify(o);

  it('submits the lines as one batch, follows its events and writes results in input order', async () => {
    files({ 'in.jsonl': [line({ code: 'a', stdin: 'one\n' }), '', line({ code: '# fake: exit 2', stdin: 'two\n' }), line({ code: 'c', args: ['x'] })].join('\n') + '\n' });
    const ctx = context();
    const before = fake.requests.length;
    expect(await batchCommand(ctx, join(dir, 'in.jsonl'), { out: join(dir, 'out.jsonl'), progress: 'plain' })).toBe(1);
    expect(fake.requests.slice(before).map((r) => r.code)).toEqual(['a', '# fake: exit 2', 'c']);
    const results = readFileSync(join(dir, 'out.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { line: number; index: number; status: string; success: boolean; result: { stdout: string } });
    expect(results.map((r) => [r.line, r.index, r.status, r.success, r.result.stdout])).toEqual([
      [1, 0, 'completed', true, 'one\n'],
      [3, 1, 'error', false, 'two\n'],
      [4, 2, 'completed', true, 'x\n'],
    ]);
    expect(ctx.errLines.filter((l) => /^\[\d\/3\] item \d/.test(l))).toHaveLength(3);
    expect(ctx.stderr).toMatch(/batch batch-\d+ completed: 2 of 3 succeeded \(2 completed, 1 error\); results in/);
  });

  it('resumes a dropped event stream with Last-Event-ID and exits 0 when every item succeeded', async () => {
    const items = Array.from({ length: 5 }, (_, i) => line({ code: `print(${i})`, stdin: `${i}\n` }));
    files({ 'in.jsonl': items.join('\n') });
    const ctx = context();
    const before = fake.eventRequests.length;
    expect(await batchCommand(ctx, join(dir, 'in.jsonl'), { label: 'drop-after-2', progress: 'plain' })).toBe(0);
    expect(fake.eventRequests.slice(before)).toEqual([null, '2']);
    expect(ctx.outLines.map((l) => (JSON.parse(l) as { index: number }).index)).toEqual([0, 1, 2, 3, 4]);
  });

  it('reports bad lines by number and submits nothing', async () => {
    files({ 'in.jsonl': [line({ code: 'ok' }), '{not json', line({ code: 'x', timeoutMs: 5 }), line({ cod: 'typo' })].join('\n') });
    const ctx = context();
    const before = fake.requests.length;
    expect(await batchCommand(ctx, join(dir, 'in.jsonl'), {})).toBe(2);
    expect(ctx.errLines.filter((l) => l.includes('in.jsonl: line'))).toEqual([
      expect.stringMatching(/in\.jsonl: line 2: not JSON/),
      expect.stringMatching(/in\.jsonl: line 3: timeoutMs: must be at least 1000/),
      expect.stringMatching(/in\.jsonl: line 4: code: Invalid input/),
      expect.stringMatching(/in\.jsonl: line 4: request: Unrecognized key: "cod"/),
    ]);
    expect(ctx.stderr).toContain('nothing was submitted');
    expect(fake.requests.length).toBe(before);
  });

  it("passes on the server's refusal of a batch over its limit", async () => {
    files({ 'in.jsonl': Array.from({ length: 51 }, () => line({ code: 'x' })).join('\n') });
    const ctx = context();
    expect(await batchCommand(ctx, join(dir, 'in.jsonl'), {})).toBe(2);
    expect(ctx.stderr).toMatch(/the batch was refused: at most 50 items \(items: at most 50 items\) \[400 invalid_request\]/);
  });

  it('cancels the batch when interrupted while following it, and exits 130', async () => {
    files({ 'in.jsonl': line({ code: 'x' }) });
    const interrupt = new AbortController();
    const ctx = context();
    const cancelledBefore = fake.cancelled.length;
    const pending = batchCommand(ctx, join(dir, 'in.jsonl'), { label: 'hang', progress: 'plain' }, interrupt.signal);
    for (let i = 0; i < 100 && !ctx.stderr.includes('items'); i++) await new Promise((r) => setTimeout(r, 20));
    interrupt.abort(new Error('interrupted'));
    expect(await pending).toBe(130);
    expect(fake.cancelled.slice(cancelledBefore)).toEqual([expect.stringMatching(/^batch-\d+$/)]);
    expect(ctx.stderr).toMatch(/interrupted: batch batch-\d+ cancelled with 1 of 1 items done/);
    expect(ctx.outLines).toEqual([]);
  });
});
