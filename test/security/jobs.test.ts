// Attacks through async executions, batches and webhooks, on a real pybox over HTTP under each
// runtime: webhooks aimed at the host itself or its neighbours (literal addresses in their many
// spellings are refused at submission, names that resolve there are refused before any connection),
// batches that try to outgrow their limits, and one tenant reaching for another's batch.
import Database from 'better-sqlite3';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { hashApiKey, newApiKey, newKeyId } from '../../src/tenancy/keys.ts';
import { battery, runtimesUnderTest, type Case, type Reply } from './support.ts';

const runtimes = await runtimesUnderTest();

/** A receiver on loopback that only counts: any connection it gets is a webhook that went where it must not. */
let trap: Server;
let trapPort: number;
let trapHits = 0;
beforeAll(async () => {
  trap = createServer((req, res) => {
    trapHits++;
    res.writeHead(204).end();
  });
  await new Promise<void>((r) => trap.listen(0, '127.0.0.1', r));
  trapPort = (trap.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => trap.close(() => r())));

async function pending(c: Case, id: string, ms = 30_000): Promise<Reply> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await c.request(`/v1/executions/${id}`);
    if (r.status !== 202 || Date.now() > end) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}

describe.each(runtimes)('jobs and webhooks under %s', (runtime) => {
  const sec = battery(runtime);

  sec('webhooks to the host, its network or the metadata service are refused at submission, in every spelling', async (c) => {
    const targets = [
      `http://127.0.0.1:${trapPort}/`,
      `http://2130706433:${trapPort}/`,
      `http://0x7f.1:${trapPort}/`,
      `http://127.1:${trapPort}/`,
      `http://[::1]:${trapPort}/`,
      `http://[::ffff:127.0.0.1]:${trapPort}/`,
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.1/',
      'http://192.168.1.1/',
      'http://0.0.0.0/',
      'http://user:pass@example.com/',
      'file:///etc/passwd',
    ];
    for (const url of targets) {
      const r = await c.request('/v1/executions?async=true', { method: 'POST', body: { code: 'print(1)', webhook: { url } } });
      expect(r.status, `${url}: ${r.text}`).toBe(400);
      const b = await c.request('/v1/batches', { method: 'POST', body: { items: [{ code: 'print(1)' }], webhook: { url } } });
      expect(b.status, `${url}: ${b.text}`).toBe(400);
    }
    expect(trapHits).toBe(0);
  });

  sec('a webhook to a name that resolves to loopback is refused before any connection, and the run is still recorded', async (c) => {
    const before = trapHits;
    const r = await c.request('/v1/executions?async=true', { method: 'POST', body: { code: `print("${c.marker}")`, webhook: { url: `http://localhost:${trapPort}/hook` } } });
    expect(r.status, r.text).toBe(202);
    const id = (r.json as { id: string }).id;
    const done = await pending(c, id);
    expect(done.status).toBe(200);
    expect(done.json).toMatchObject({ status: 'completed', stdout: `${c.marker}\n` });
    // The delivery was tried and given up for good, naming why; the trap saw nothing.
    const db = new Database(c.pybox.config.store.path, { readonly: true });
    try {
      let row: { state: string; last_error: string | null } | undefined;
      for (let i = 0; i < 100; i++) {
        row = db.prepare('SELECT state, last_error FROM webhook_deliveries WHERE id = ?').get(`execution-${id}`) as typeof row;
        if (row?.state === 'failed') break;
        await new Promise((res) => setTimeout(res, 100));
      }
      expect(row?.state).toBe('failed');
      expect(row?.last_error).toMatch(/loopback/);
    } finally {
      db.close();
    }
    expect(trapHits).toBe(before);
  });

  sec('a batch cannot outgrow its limits: too many items, an item over the limits, a body over the size limit', async (c) => {
    const max = c.pybox.config.jobs.maxBatchItems;
    const tooMany = await c.request('/v1/batches', { method: 'POST', body: { items: Array.from({ length: max + 1 }, () => ({ code: 'print(1)' })) } });
    expect(tooMany.status).toBe(400);
    expect(tooMany.text).toContain('items');
    const overLimit = await c.request('/v1/batches', { method: 'POST', body: { items: [{ code: 'print(1)' }, { code: 'print(2)', memoryMb: 1 }] } });
    expect(overLimit.status).toBe(400);
    expect((overLimit.json as { error: { details: Array<{ path: string }> } }).error.details[0]?.path).toBe('items[1].memoryMb');
    const huge = 'x'.repeat(c.pybox.config.server.bodyLimitBytes + 1);
    const tooBig = await c.request('/v1/batches', { method: 'POST', body: { items: [{ code: huge }] } });
    expect(tooBig.status).toBe(413);
    // Nothing of them was kept.
    expect((await c.request('/v1/batches')).json).toMatchObject({ items: [] });
  });

  sec('a tenant cannot see, follow or cancel another tenant\'s batch, nor read its items as executions', async (c) => {
    const keyA = { id: newKeyId(), key: newApiKey() };
    const keyB = { id: newKeyId(), key: newApiKey() };
    await c.pybox.tenants.createKey({ id: keyA.id, tenant: 'alpha', admin: false, hash: hashApiKey(keyA.key), limits: {} });
    await c.pybox.tenants.createKey({ id: keyB.id, tenant: 'beta', admin: false, hash: hashApiKey(keyB.key), limits: {} });
    c.authorize(`Bearer ${keyA.key}`);
    const created = await c.request('/v1/batches', { method: 'POST', body: { items: [{ code: `print("${c.marker}")` }] } });
    expect(created.status).toBe(202);
    const id = (created.json as { id: string }).id;
    const page = await c.request(`/v1/batches/${id}`);
    c.authorize(`Bearer ${keyB.key}`);
    for (const [method, path] of [
      ['GET', `/v1/batches/${id}`],
      ['GET', `/v1/batches/${id}/events`],
      ['DELETE', `/v1/batches/${id}`],
    ] as const) {
      const r = await c.request(path, { method });
      expect(r.status, `${method} ${path}`).toBe(404);
    }
    const itemId = (page.json as { items: Array<{ executionId: string }> }).items[0]?.executionId as string;
    expect((await c.request(`/v1/executions/${itemId}`)).status).toBe(404);
    expect((await c.request('/v1/batches')).json).toMatchObject({ items: [] });
    // Its owner still gets it to the end.
    c.authorize(`Bearer ${keyA.key}`);
    expect((await pending(c, itemId)).json).toMatchObject({ status: 'completed', stdout: `${c.marker}\n` });
  });
});
