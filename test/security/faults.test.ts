// Faults around the service: the engine going away in the middle of executions and coming back, a
// container killed or removed from outside, the image deleted while serving (the store that cannot
// be written is store-fault.test.ts).
// Each gets a clear error, /readyz tells the truth, nothing already recorded is lost, and the
// service recovers without a restart.
//
// The engine is never touched: it "goes away" behind a small unix-socket proxy this test owns and
// cuts. The image is a tag this test makes and removes; the containers killed are this test's own.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { createConnection, createServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { composePybox, type Pybox } from '../../src/compose.ts';
import { ConfigSchema } from '../../src/config/schema.ts';
import { silentLogger } from '../../src/core/logger.ts';
import { ExecutionResult, type RuntimeName } from '../../src/core/schemas.ts';
import { imageTags } from '../../src/engine/image.ts';
import { listen } from '../../src/server.ts';
import { docker, labelledContainers } from '../support/real.ts';
import { battery, batteryConfig, closeServer, httpRequest, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();
const imagesDir = join(import.meta.dirname, '../../images');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

// The tags the image cases run on: this test's own, made before any pybox starts, removed after.
const imageTag = Object.fromEntries(runtimes.map((rt) => [rt, `pybox-fault-image:${randomUUID().slice(0, 8)}-${rt}`])) as Record<RuntimeName, string>;
const repoAndTag = (t: string) => ({ repo: t.split(':')[0] ?? '', tag: t.split(':')[1] ?? '' });
for (const t of Object.values(imageTag)) await docker.getImage(imageTags(imagesDir).sandbox).tag(repoAndTag(t));
afterAll(async () => {
  for (const t of Object.values(imageTag)) await docker.getImage(t).remove().catch(() => {});
});

/** A unix socket that forwards to the real engine's, and can be cut (every connection closed, new ones refused) and restored. */
class EngineProxy {
  readonly path = join(tmpdir(), `pybox-engine-proxy-${randomUUID().slice(0, 8)}.sock`);
  private server: NetServer | null = null;
  private readonly sockets = new Set<Socket>();

  async start(): Promise<void> {
    const server = createServer((client) => {
      const engine = createConnection('/var/run/docker.sock');
      for (const s of [client, engine]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          engine.destroy();
        });
      }
      client.pipe(engine);
      engine.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, resolve);
    });
    this.server = server;
  }

  /** The engine goes away: every open connection is dropped, new ones find no socket. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  restore(): Promise<void> {
    return this.start();
  }
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe.each(runtimes)('engine faults under %s', (runtime) => {
  it.concurrent('the engine stops in the middle of executions and comes back: runs end clearly, 503 while away, recovery without a restart, nothing left', async () => {
    const proxy = new EngineProxy();
    await proxy.start();
    const dir = mkdtempSync(join(tmpdir(), 'pybox-fault-'));
    dirs.push(dir);
    const instance = `fault-${randomUUID().slice(0, 8)}`;
    const config = ConfigSchema.parse({
      ...batteryConfig(),
      engine: { runtime, instance },
      store: { path: join(dir, 'pybox.db') },
    });
    const pybox: Pybox = await composePybox(config, { dockerHost: `unix://${proxy.path}`, logger: silentLogger, imagesDir });
    const { server, port } = await listen(pybox.app, '127.0.0.1', 0, config.server);
    const url = `http://127.0.0.1:${port}`;
    const req = (path: string, body?: unknown) => httpRequest(url, path, body === undefined ? {} : { method: 'POST', body });
    const result = (reply: { status: number; text: string; json: unknown }) => {
      expect(reply.status, reply.text.slice(0, 500)).toBe(200);
      return ExecutionResult.parse(reply.json);
    };
    let cut = false;
    let cutAt = 0;
    try {
      const before = result(await req('/v1/executions', { code: 'print("before")' }));
      expect(before.status).toBe('completed');

      // Two executions in the middle of their run when the engine goes away.
      const running = [1, 2].map(() => req('/v1/executions', { code: 'import time\nprint("started", flush=True)\ntime.sleep(8)\nprint("never")', timeoutMs: 20_000 }));
      await until('both sandboxes running', async () => (await docker.listContainers({ filters: { label: [`pybox.instance=${instance}`], status: ['running'] } })).length === 2);
      await sleep(1000); // the code has started
      await proxy.cut();
      cut = true;
      cutAt = Date.now();

      for (const reply of await Promise.all(running)) {
        const r = result(reply);
        expect(r.status).toBe('internal_error');
        expect(r.error?.message).toMatch(/^the connection to the Docker engine was lost while the code ran: the Docker engine does not answer/);
        expect(r.feedback).toContain('not a fault of the code');
      }
      // While it is away: new executions get 503 with Retry-After, /readyz says why, /healthz still answers.
      const refused = await req('/v1/executions', { code: 'print(1)' });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect((refused.json as { error: { code: string; message: string } }).error).toMatchObject({ code: 'engine_unavailable' });
      const notReady = await req('/readyz');
      expect(notReady.status).toBe(503);
      expect(notReady.json).toMatchObject({ ready: false, checks: { engine: false }, message: 'the Docker engine does not answer' });
      expect((await req('/healthz')).status).toBe(200);
      // What was recorded before is still served.
      expect((await req(`/v1/executions/${before.id}`)).status).toBe(200);

      // The engine comes back: pybox recovers by itself, and removes what the outage left.
      await proxy.restore();
      cut = false;
      await until('ready again', async () => (await req('/readyz')).status === 200);
      const after = result(await req('/v1/executions', { code: 'print("after")', timeoutMs: 30_000 }));
      expect(after, JSON.stringify({ ...after, feedback: undefined })).toMatchObject({ status: 'completed', stdout: 'after\n' });
      await until('the outage\'s containers removed', async () => (await labelledContainers(instance)).length === 0);
      const history = (await req('/v1/executions?limit=10')).json as { items: ExecutionResult[] };
      expect(history.items.map((i) => i.status)).toEqual(['completed', 'internal_error', 'internal_error', 'completed']);
    } finally {
      await closeServer(server as Server);
      if (cut) await proxy.restore(); // a failed test must not leave its containers behind either
      await pybox.close();
      await proxy.cut();
      const left = await Promise.all(
        (await labelledContainers(instance)).map(async (id) => {
          const info = await docker.getContainer(id).inspect().catch(() => null);
          await docker.getContainer(id).remove({ force: true }).catch(() => {});
          return `${id.slice(0, 12)} ${info?.Name ?? ''} ${info?.State.Status ?? 'gone'} created ${info?.Created ?? ''}`;
        }),
      );
      expect(left, `left after close (outage began ${new Date(cutAt).toISOString()})`).toEqual([]);
    }
  }, 120_000);

  const sec = battery(runtime);

  /** Waits for the case's one running container and returns it. */
  const runningContainer = async (containers: () => string[]) =>
    until('a running sandbox', async () => {
      for (const id of containers()) {
        try {
          if ((await docker.getContainer(id).inspect()).State.Running) return id;
        } catch {
          // gone
        }
      }
      return null;
    });

  sec('a container killed from outside (docker kill) ends its run with a clear error; the service goes on', async ({ request, containers }) => {
    const run = request('/v1/executions', { method: 'POST', body: { code: 'import time\nprint("working", flush=True)\ntime.sleep(15)', timeoutMs: 30_000 } });
    const id = await runningContainer(containers);
    await sleep(1000);
    await docker.getContainer(id).kill();
    const r = ExecutionResult.parse((await run).json);
    expect(r.status).toBe('internal_error');
    expect(r.error?.message).toBe('the sandbox container was killed from outside pybox (through the engine) while the code ran');
    expect(r.stdout).toBe('working\n');
    expect((await request(`/v1/executions/${r.id}`)).status).toBe(200);
  });

  sec('a container removed from outside (docker rm -f) ends its run with a clear error', async ({ request, containers }) => {
    const run = request('/v1/executions', { method: 'POST', body: { code: 'import time\nprint("working", flush=True)\ntime.sleep(15)', timeoutMs: 30_000 } });
    const id = await runningContainer(containers);
    await sleep(1000);
    await docker.getContainer(id).remove({ force: true });
    const r = ExecutionResult.parse((await run).json);
    expect(r.status).toBe('internal_error');
    // docker rm -f kills, then removes: pybox may look in between.
    expect(r.error?.message).toMatch(/^the sandbox container was (removed|killed) from outside pybox/);
  });

  const tag = imageTag[runtime];
  sec(
    'the image deleted while serving: 503 image_missing and /readyz says so; it serves again once the image is back',
    async ({ request, pybox }) => {
      const ok = await request('/v1/executions', { method: 'POST', body: { code: 'print("with image")' } });
      expect(ok.status).toBe(200);
      await docker.getImage(tag).remove(); // only this test's tag: the image itself keeps its other tags
      const refused = await request('/v1/executions', { method: 'POST', body: { code: 'print(1)' } });
      expect(refused.status).toBe(503);
      expect((refused.json as { error: { code: string; message: string } }).error).toEqual({
        code: 'image_missing',
        message: `the sandbox image ${tag} is missing: run \`npm run setup\``,
      });
      const notReady = await request('/readyz');
      expect(notReady.status).toBe(503);
      expect(notReady.json).toMatchObject({ ready: false, checks: { engine: true, image: false, store: true } });
      expect((await request('/v1/executions?limit=5')).status).toBe(200); // history still served
      await docker.getImage(imageTags(imagesDir).sandbox).tag(repoAndTag(tag));
      expect(pybox.image).toBe(tag);
      // (the after-checks then prove it serves again)
    },
    { config: { engine: { image: tag } } },
  );
});
