// gVisor by default where it exists: `runtime: auto` picks runsc when the engine has it, runc
// otherwise, and says so at start-up, in /readyz and in /v1/runtimes. The real `npm start` process,
// whose HTTP server also cuts a silent client at its header timeout.
import { freePort } from '../support/serve.ts';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { labelledContainers } from '../support/real.ts';
import { runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();
const root = join(import.meta.dirname, '../..');

describe('runtime: auto, in the real server process', () => {
  it('picks gVisor when the engine has it and says so at start-up, in /readyz and /v1/runtimes; cuts a silent client', async () => {
    const expected = runtimes.includes('runsc') ? 'runsc' : 'runc';
    const dir = mkdtempSync(join(tmpdir(), 'pybox-auto-'));
    const instance = `auto-${randomUUID().slice(0, 8)}`;
    const configPath = join(dir, 'pybox.yaml');
    // Only what differs from the defaults; engine.runtime stays auto.
    writeFileSync(configPath, `engine:\n  instance: ${instance}\nserver:\n  headersTimeoutMs: 1000\n  requestTimeoutMs: 2000\n`);
    const port = await freePort();
    const env: Record<string, string | undefined> = { ...process.env, PYBOX_CONFIG: configPath, PYBOX_PORT: String(port), PYBOX_HOST: '127.0.0.1', PYBOX_DB: join(dir, 'db.sqlite') };
    delete env.PYBOX_RUNTIME;
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: root, env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      for (let i = 0; i < 300 && !log.includes('pybox listening'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(log).toContain(`pybox listening on http://127.0.0.1:${port}`);
      expect(log).toContain(`"runtime":"${expected}"`);
      if (expected === 'runsc') expect(log).toMatch(/"level":"info"[^\n]*"msg":"sandboxes run under gVisor \(runsc\): engine\.runtime is auto and the engine offers gVisor/);
      else expect(log).toMatch(/"level":"warn"[^\n]*"msg":"sandboxes run under runc: engine\.runtime is auto and the engine has no gVisor/);

      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ ready: true, runtime: expected });
      const info = (await (await fetch(`http://127.0.0.1:${port}/v1/runtimes`)).json()) as { runtime: string; availableRuntimes: string[] };
      expect(info.runtime).toBe(expected);
      expect(info.availableRuntimes).toEqual(runtimes);
      const run = (await (await fetch(`http://127.0.0.1:${port}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"code":"print(6*7)"}' })).json()) as { runtime: string; stdout: string };
      expect(run).toMatchObject({ runtime: expected, stdout: '42\n' });

      // A client that opens a connection and never finishes its headers is cut at headersTimeoutMs.
      const t0 = Date.now();
      const answer = await new Promise<{ text: string; ms: number }>((resolve) => {
        let text = '';
        const s = connect(port, '127.0.0.1', () => s.write('POST /v1/executions HTTP/1.1\r\nHost: x\r\n'));
        s.on('data', (d) => (text += d.toString()));
        s.on('close', () => resolve({ text, ms: Date.now() - t0 }));
        setTimeout(() => s.destroy(), 10_000);
      });
      expect(answer.text).toMatch(/^HTTP\/1\.1 408 /);
      expect(answer.ms).toBeLessThan(2500);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(await labelledContainers(instance)).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});
