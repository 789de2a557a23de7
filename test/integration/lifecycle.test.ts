// The service's life around executions: restarts, leftovers of a crash, a full queue, the real
// `npm start` process, and the deployment file.
import { freePort, startService } from '../support/serve.ts';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { imageTags } from '../../src/engine/image.ts';
import { docker, labelledContainers, postJson, realPybox } from '../support/real.ts';

const root = join(import.meta.dirname, '../..');
const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pybox-life-'));
  dirs.push(d);
  return d;
};

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('service lifecycle', () => {
  it('keeps history and stats across a restart', async () => {
    const dir = tempDir();
    const first = await realPybox('runc', {}, dir);
    const res = await postJson(first.app, '/v1/executions', { code: 'print("remember me")' });
    const result = ExecutionResult.parse(res.json);
    await first.dispose();

    const second = await realPybox('runc', {}, dir);
    try {
      const again = await second.app.request(`/v1/executions/${result.id}`);
      expect(again.status).toBe(200);
      expect(ExecutionResult.parse(await again.json())).toEqual(result);
      const stats = (await (await second.app.request('/v1/stats')).json()) as { total: number };
      expect(stats.total).toBe(1);
    } finally {
      await second.dispose();
    }
  });

  it('removes sandboxes an earlier process left behind when it starts', async () => {
    const image = imageTags(join(root, 'images')).sandbox;
    const instance = `reap-${Date.now()}`;
    const orphan = await docker.createContainer({
      Image: image,
      Labels: { 'pybox.execution': 'orphan-from-a-crash', 'pybox.instance': instance },
      OpenStdin: true,
      HostConfig: { NetworkMode: 'none', LogConfig: { Type: 'none', Config: {} } },
    });
    await orphan.start();
    expect(await labelledContainers()).toContain(orphan.id);
    const other = await realPybox('runc', { engine: { instance: `other-${Date.now()}` } });
    await other.dispose(); // another deployment's start-up leaves it alone...
    expect(await labelledContainers()).toContain(orphan.id);
    const pybox = await realPybox('runc', { engine: { instance } }); // ...its own removes it
    try {
      expect(await labelledContainers()).not.toContain(orphan.id);
    } finally {
      await pybox.dispose();
    }
  });

  it('answers 503 with Retry-After when every slot and the queue are taken, and runs the rest', async () => {
    const pybox = await realPybox('runc', { concurrency: { maxConcurrent: 1, maxQueue: 1, retryAfterS: 7 } });
    try {
      const slow = { code: 'import time\ntime.sleep(1.5)\nprint("done")' };
      const send = () => pybox.app.request('/v1/executions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(slow) });
      const responses = await Promise.all([send(), send(), send()]);
      const statuses = responses.map((r) => r.status).sort();
      expect(statuses).toEqual([200, 200, 503]);
      const refused = responses.find((r) => r.status === 503);
      expect(refused?.headers.get('retry-after')).toBe('7');
      expect(((await refused?.json()) as { error: { code: string } }).error.code).toBe('queue_full');
    } finally {
      await pybox.dispose();
    }
  });
});

describe('npm start', () => {
  it('serves on PYBOX_HOST:PYBOX_PORT, logs where, with which runtime and image, and stops cleanly', async () => {
    const port = await freePort();
    const dir = tempDir();
    const service = startService(root, { ...process.env, PYBOX_HOST: '127.0.0.1', PYBOX_PORT: String(port), PYBOX_DB: join(dir, 'db.sqlite'), PYBOX_RUNTIME: 'runc' });
    const { child, exited } = service;
    try {
      await service.listening(150);
      expect(service.log).toContain(`pybox listening on http://127.0.0.1:${port}`);
      expect(service.log).toContain('runtime=runc');
      expect(service.log).toMatch(/image=pybox-python:[0-9a-f]{12}/);

      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(ready.status).toBe(200);
      const res = await fetch(`http://127.0.0.1:${port}/v1/executions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code: 'print(6 * 7)' }),
      });
      expect(ExecutionResult.parse(await res.json())).toMatchObject({ status: 'completed', stdout: '42\n' });
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('refuses to start with a bad setting and names it', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: root,
      env: { ...process.env, PYBOX_PORT: 'eighty' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('PYBOX_PORT');
  });
});

describe('docker-compose.yml', () => {
  it('passes docker-compose config', () => {
    const found = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
    if (found.error) {
      if (process.env.CI) throw new Error('docker-compose is not installed; setup installs it on Debian');
      return;
    }
    const r = spawnSync('docker-compose', ['config', '-q'], { cwd: root, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
