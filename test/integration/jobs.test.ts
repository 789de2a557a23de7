// Async executions, batches and webhooks on a real embedded pybox (src/main.ts in a child process,
// runc, SQLite): a batch survives its server being stopped and killed mid-way, and webhooks reach a
// real receiver, signed with the tenant's secret.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PyboxClient } from '../../src/client/client.ts';
import type { BatchItemEvent, WebhookEvent } from '../../src/core/schemas.ts';
import { verifyWebhook } from '../../src/webhooks/signature.ts';
import { freePort, startService, type ServiceProcess } from '../support/serve.ts';

const root = join(import.meta.dirname, '../..');
let dir: string;
let port: number;
let service: ServiceProcess | undefined;
let receiver: Server;
let receiverUrl: string;
const received: Array<{ headers: IncomingMessage['headers']; body: string }> = [];

async function start(): Promise<ServiceProcess> {
  const s = startService(root, {
    ...process.env,
    PYBOX_CONFIG: join(dir, 'config.yaml'),
    PYBOX_HOST: '127.0.0.1',
    PYBOX_PORT: String(port),
    PYBOX_DB: join(dir, 'db.sqlite'),
    PYBOX_LOG_LEVEL: 'warn',
  });
  for (let i = 0; i < 300; i++) {
    if (await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false)) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  s.child.kill('SIGKILL');
  throw new Error(`pybox did not start:\n${s.log}`);
}

async function stop(signal: NodeJS.Signals): Promise<void> {
  if (!service) return;
  service.child.kill(signal);
  await service.exited;
  service = undefined;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pybox-jobs-'));
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  // One job at a time, leases short enough for a killed server's jobs to be claimed again soon.
  writeFileSync(
    join(dir, 'config.yaml'),
    [
      'engine:',
      `  instance: test-jobs-${randomUUID().slice(0, 8)}`,
      '  runtime: runc',
      'jobs:',
      '  concurrency: 1',
      '  leaseMs: 3000',
      '  pollMs: 200',
      'webhooks:',
      "  allow: ['127.0.0.1']",
      'server:',
      '  shutdownGraceMs: 20000',
      '',
    ].join('\n'),
  );
  port = await freePort();
  service = await start();
});

afterAll(async () => {
  await stop('SIGTERM');
  await new Promise<void>((r) => receiver.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

const client = () => new PyboxClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 120_000 });

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 90_000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('jobs on a real embedded server', () => {
  it('an async execution answers 202 at once and its result later; its webhook arrives signed with the tenant secret', async () => {
    const c = client();
    const pending = await c.submit({ code: 'print(6 * 7)' }, { webhook: { url: receiverUrl } });
    expect(['queued', 'running']).toContain(pending.state);
    const result = await c.waitFor(pending.id, { intervalMs: 100 });
    expect(result.status).toBe('completed');
    expect(result.stdout).toBe('42\n');
    const secret = ((await (await fetch(`http://127.0.0.1:${port}/v1/webhooks/secret`)).json()) as { secret: string }).secret;
    const hook = await until('the execution webhook', async () => received.find((r) => r.body.includes(pending.id)));
    verifyWebhook({ secret, headers: hook.headers, body: hook.body });
    const event = JSON.parse(hook.body) as WebhookEvent;
    expect(event.type).toBe('execution.finished');
    if (event.type === 'execution.finished') expect(event.execution.stdout).toBe('42\n');
    expect(() => verifyWebhook({ secret, headers: hook.headers, body: hook.body.replace('42', '43') })).toThrow();
  });

  it('a batch survives a graceful stop and a crash of its server: every item ends with its own result', async () => {
    const c = client();
    const n = 5;
    const items = Array.from({ length: n }, (_, i) => ({ code: `import time\ntime.sleep(1.2)\nprint(${i} * 10)` }));
    const batch = await c.createBatch({ items, webhook: { url: receiverUrl }, label: 'restart' });
    expect(batch.total).toBe(n);
    // Stopped gracefully once one item is done: the running one finishes, the queued wait in the store.
    await until('a first item', async () => ((await c.getBatch(batch.id)).done >= 1 ? true : undefined));
    await stop('SIGTERM');
    service = await start();
    // Killed while an item runs: its lease is this node's own, so the restarted node runs it again.
    await until('an item running after the restart', async () => ((await c.getBatch(batch.id)).items.some((i) => i.state === 'running') ? true : undefined));
    await stop('SIGKILL');
    service = await start();
    const done = await until('the batch to finish', async () => {
      const page = await c.getBatch(batch.id);
      return page.state === 'completed' ? page : undefined;
    });
    expect(done.done).toBe(n);
    expect(done.byStatus.completed).toBe(n);
    for (const item of done.items) {
      expect(item.state).toBe('done');
      expect(item.result?.stdout).toBe(`${item.index * 10}\n`);
    }
    // The event stream, read after the restarts, still gives every item once and then the end.
    const seen: BatchItemEvent[] = [];
    for await (const e of c.batchEvents(batch.id)) {
      if (e.type === 'item') seen.push(e.data);
      else expect(e.data.state).toBe('completed');
    }
    expect(seen.map((e) => e.item.index).sort()).toEqual([0, 1, 2, 3, 4]);
    expect(new Set(seen.map((e) => e.seq)).size).toBe(n);
    // One batch.finished call, whatever the restarts did.
    const hooks = await until('the batch webhook', async () => {
      const found = received.filter((r) => r.body.includes(batch.id) && r.body.includes('batch.finished'));
      return found.length > 0 ? found : undefined;
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(received.filter((r) => r.body.includes(batch.id) && r.body.includes('batch.finished'))).toHaveLength(1);
    expect(new Set(hooks.map((h) => h.headers['pybox-webhook-id'])).size).toBe(1);
  }, 180_000);
});
