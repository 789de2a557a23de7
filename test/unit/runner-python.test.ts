// The sandbox runner's pure parts (images/python/pybox_runner), unit-tested by Python's unittest on
// the host: no Docker. No bytecode is written, so the image's content hash stays what it was.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const runnerDir = join(import.meta.dirname, '../../images/python');

describe('the Python runner\'s unit tests', () => {
  it('pass', () => {
    const r = spawnSync('python3', ['-B', '-m', 'unittest', 'discover', '-s', 'tests', '-v'], {
      cwd: runnerDir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PYTHONDONTWRITEBYTECODE: '1' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    const report = `${r.stdout}${r.stderr}`;
    expect(r.status, report).toBe(0);
    const ran = /Ran (\d+) tests?/.exec(report);
    expect(Number(ran?.[1] ?? 0), report).toBeGreaterThanOrEqual(20);
    expect(report).toMatch(/\nOK\b/);
  });
});
