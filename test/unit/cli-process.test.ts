// The three commands as a user runs them: `node bin/pybox.mjs ...` in a child process against the
// fake server, for what only a real process shows: bytes on stdout/stderr, the exit code, --help.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakePybox, type FakePybox } from '../support/fake-pybox.ts';
import { xmllint } from '../support/junit.ts';

const root = join(import.meta.dirname, '../..');
let fake: FakePybox;
let dir: string;
beforeAll(async () => {
  fake = await startFakePybox();
  dir = mkdtempSync(join(tmpdir(), 'pybox-cli-proc-'));
});
afterAll(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs the CLI asynchronously: the fake server answers from this process's event loop. */
function pybox(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, 'bin/pybox.mjs'), ...args], { cwd: dir, env: { ...process.env, CI: 'true', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('the pybox command', () => {
  it('run: the output as it came and the exit code of the program', async () => {
    writeFileSync(join(dir, 'main.py'), '# fake: exit 3\n# fake: stderr oops\n');
    writeFileSync(join(dir, 'in.txt'), 'no newline');
    const r = await pybox(['run', 'main.py', '--stdin', 'in.txt', '--arg', 'x', '--url', fake.url]);
    expect(r).toEqual({ code: 3, stdout: 'no newlinex\n', stderr: 'oops\n' });
    const timeout = await pybox(['run', 'main.py'], { PYBOX_URL: fake.url });
    expect(timeout.code).toBe(3);
    writeFileSync(join(dir, 'slow.py'), '# fake: status timeout\n');
    const t = await pybox(['run', 'slow.py'], { PYBOX_URL: fake.url });
    expect(t.code).toBe(124);
    expect(t.stderr).toMatch(/stopped at its time limit/);
  });

  it('test: table on stdout, progress on stderr, JUnit report, exit 1', async () => {
    const suite = join(dir, 'suite');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(suite);
    for (const [name, text] of Object.entries({ 'a.py': 'x', 'a.in': '1', 'a.out': '1', 'b.py': 'y', 'b.in': '1', 'b.out': '2' })) writeFileSync(join(suite, name), text);
    const r = await pybox(['test', 'suite', '--junit', 'report.xml', '--url', fake.url]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^✗ b › b: failed/m);
    expect(r.stdout).toMatch(/1 of 2 programs passed, 1 failed; 1 of 2 cases passed/);
    expect(r.stderr).toMatch(/\[[12]\/2\] FAIL b {2}0\/1 cases/);
    expect(r.stderr).toContain('JUnit report written to report.xml');
    expect(xmllint(join(dir, 'report.xml')).ok).toBe(true);
  });

  it('batch: results as JSON Lines, exit 0', async () => {
    writeFileSync(join(dir, 'in.jsonl'), `${JSON.stringify({ code: 'a', stdin: 'A' })}\n${JSON.stringify({ code: 'b', stdin: 'B' })}\n`);
    const r = await pybox(['batch', 'in.jsonl', '--out', 'out.jsonl'], { PYBOX_URL: fake.url });
    expect(r.code).toBe(0);
    expect(readFileSync(join(dir, 'out.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { result: { stdout: string } }).result.stdout)).toEqual(['A', 'B']);
  });

  it('--help documents the exit codes', async () => {
    const run = await pybox(['run', '--help']);
    expect(run.stdout).toMatch(/124 +stopped at its time limit/);
    expect(run.stdout).toMatch(/137 +out of memory/);
    const test = await pybox(['test', '--help']);
    expect(test.stdout).toMatch(/X\.1\.in \/ X\.1\.out/);
    expect(test.stdout).toMatch(/2 +some program could not be run by pybox/);
    const batch = await pybox(['batch', '--help']);
    expect(batch.stdout).toMatch(/Exit codes: 0 every item succeeded/);
  });
});
