// The service's life around executions: restarts, leftovers of a crash, a full queue, the real
// `npm start` process, and the deployment file.
import { freePort, startService, type ServiceProcess } from '../support/serve.ts';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
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
      expect(ExecutionResult.parse(await again.json())).toEqual({ ...result, code: 'print("remember me")' });
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
      expect(service.log).toContain('"runtime":"runc"');
      expect(service.log).toMatch(/"image":"pybox-python:[0-9a-f]{12}"/);

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

/** pybox's own process on a free port, with a config file of its own (one engine instance per test). */
async function serveWith(yaml: string): Promise<{ service: ServiceProcess; url: string; instance: string }> {
  const dir = tempDir();
  const instance = `test-life-${randomUUID().slice(0, 8)}`;
  const config = join(dir, 'config.yaml');
  writeFileSync(config, `engine:\n  instance: ${instance}\n  runtime: runc\n${yaml}`);
  const port = await freePort();
  const service = startService(root, { ...process.env, PYBOX_CONFIG: config, PYBOX_HOST: '127.0.0.1', PYBOX_PORT: String(port), PYBOX_DB: join(dir, 'db.sqlite'), PYBOX_LOG_LEVEL: 'info' });
  await service.listening(150);
  if (!service.log.includes('pybox listening')) {
    service.child.kill('SIGKILL');
    throw new Error(`pybox did not start:\n${service.log}`);
  }
  live.push({ service, instance });
  return { service, url: `http://127.0.0.1:${port}`, instance };
}

const live: Array<{ service: ServiceProcess; instance: string }> = [];

/** A server that failed its test may not have exited nor removed its sandboxes: both are done here. */
afterEach(async () => {
  for (const { service, instance } of live.splice(0)) {
    if (service.child.exitCode === null && service.child.signalCode === null) {
      service.child.kill('SIGKILL');
      await service.exited;
    }
    for (const id of await labelledContainers(instance)) await docker.getContainer(id).remove({ force: true });
  }
});

/** Resolves with the exit code, or 'still running' once `ms` have passed. */
function exitWithin(service: ServiceProcess, ms: number): Promise<number | null | 'still running'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    service.exited.finally(() => clearTimeout(timer)),
    new Promise<'still running'>((r) => (timer = setTimeout(() => r('still running'), ms))),
  ]);
}

const post = (url: string, body: unknown) =>
  fetch(`${url}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** A client that sends a whole request and hangs up `afterMs` later, without reading the answer. */
function abandon(url: string, body: unknown, afterMs: number): Promise<void> {
  return new Promise((resolve) => {
    const req = httpRequest(`${url}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    req.on('error', () => resolve());
    req.on('close', () => resolve());
    req.end(JSON.stringify(body));
    setTimeout(() => req.destroy(), afterMs);
  });
}

describe('cancellation and shutdown (npm start)', () => {
  it('exits 0 within 2 s of SIGTERM when idle, even with a keep-alive connection open', async () => {
    const { service, url } = await serveWith('');
    try {
      // fetch keeps its connection alive after the answer: a server waiting for it would not exit.
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      service.child.kill('SIGTERM');
      expect(await exitWithin(service, 2000), service.log).toBe(0);
    } finally {
      service.child.kill('SIGKILL'); // no-op once it has exited
    }
  });

  it('refuses new work at once on SIGTERM (503 shutting_down, readyz), then cancels a run past the grace and leaves no container', async () => {
    const { service, url, instance } = await serveWith('server:\n  shutdownGraceMs: 1500\npool:\n  enabled: false\n');
    try {
      const sleeping = post(url, { code: 'import time\nprint("started", flush=True)\ntime.sleep(60)' }).then(
        async (r) => ({ status: r.status, body: (await r.json()) as unknown }),
        (e: unknown) => ({ status: 0, body: String(e) }),
      );
      // Wait until it runs: the container exists.
      for (let i = 0; i < 100 && (await labelledContainers(instance)).length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      await new Promise((r) => setTimeout(r, 500));
      service.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
      const refused = await post(url, { code: 'print(1)' });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toMatch(/^[1-9][0-9]*$/);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('shutting_down');
      const ready = await fetch(`${url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { message?: string }).message).toContain('shutting down');

      // The listener is closed only once every execution is recorded: the waiting client gets its result.
      const answer = await sleeping;
      expect(answer.status, String(answer.body)).toBe(200);
      const r = ExecutionResult.parse(answer.body);
      expect(r.status).toBe('cancelled');
      expect(r.stdout).toBe('started\n');
      expect(r.feedback).toContain('shutting down');
      expect(await exitWithin(service, 20_000)).toBe(0);
      expect(await labelledContainers(instance)).toEqual([]);
    } finally {
      service.child.kill('SIGKILL'); // no-op once it has exited
    }
  });

  it('frees the queue places of clients that hung up: under a flood of them, a new client is served, not refused', async () => {
    const { service, url, instance } = await serveWith('concurrency:\n  maxConcurrent: 1\n  maxQueue: 4\npool:\n  enabled: false\n');
    try {
      const holder = post(url, { code: 'import time\ntime.sleep(3)\nprint("held")' });
      for (let i = 0; i < 100 && (await labelledContainers(instance)).length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      // Four times the queue's room, each client gone 300 ms after sending.
      await Promise.all(Array.from({ length: 16 }, (_, i) => new Promise((r) => setTimeout(r, i * 20)).then(() => abandon(url, { code: 'print("abandoned")' }, 300))));
      const fresh = await post(url, { code: 'print("served")' });
      expect(fresh.status).toBe(200);
      expect(ExecutionResult.parse(await fresh.json())).toMatchObject({ status: 'completed', stdout: 'served\n' });
      expect(ExecutionResult.parse(await (await holder).json()).stdout).toBe('held\n');
      // The abandoned ones that got a place in the queue are on record as cancelled, never run.
      const history = (await (await fetch(`${url}/v1/executions?status=cancelled&limit=100`)).json()) as { items: ExecutionResult[] };
      expect(history.items.length).toBeGreaterThan(0);
      for (const r of history.items) expect(r).toMatchObject({ status: 'cancelled', durationMs: 0, stdout: '' });
      // ...and counted in the stats and the tenant's usage.
      const stats = (await (await fetch(`${url}/v1/stats`)).json()) as { byStatus: Record<string, number> };
      expect(stats.byStatus.cancelled).toBe(history.items.length);
      const usage = (await (await fetch(`${url}/v1/usage`)).json()) as { tenants: Array<{ byStatus: Record<string, number> }> };
      expect(usage.tenants[0]?.byStatus.cancelled).toBe(history.items.length);
      service.child.kill('SIGTERM');
      expect(await exitWithin(service, 20_000)).toBe(0);
      expect(await labelledContainers(instance)).toEqual([]);
    } finally {
      service.child.kill('SIGKILL'); // no-op once it has exited
    }
  });
});
