// Async executions, batches and the webhook secret through the HTTP app, over the real service with
// fake sandboxes, the in-memory JobStore and a JobRunner: what a client sees from submission to result.
import { OpenAPIHono } from '@hono/zod-openapi';
import { afterEach, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { batchRoutes } from '../../src/http/routes/batches.ts';
import { PyboxClient } from '../../src/client/client.ts';
import { BatchService, basicWebhookUrlCheck, webhookUrlCheckFrom } from '../../src/core/batch-service.ts';
import { checkWebhookUrl } from '../../src/webhooks/address-policy.ts';
import { LOCAL_CALLER, NO_TENANT_LIMITS } from '../../src/core/caller.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { batchDeliveryId, executionDeliveryId, JobRunner } from '../../src/core/job-runner.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { BatchInfo, BatchItemEvent, BatchList, BatchPage, ExecutionResult, PendingExecution, WebhookEvent } from '../../src/core/schemas.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { MemoryJobStore, MemoryWebhookSecrets } from '../support/memory-job-store.ts';
import { MemoryOutbox } from '../support/memory-outbox.ts';
import type { ExecutionStore, JobStore, WebhookOutbox, WebhookSecrets } from '../../src/core/ports.ts';
import { openDatabase } from '../../src/store/db.ts';
import { SqliteExecutionStore } from '../../src/store/execution-store.ts';
import { sqliteJobStores } from '../../src/store/open.ts';
import { defaultConfig, localService, MemoryStore, outcome, RecordingLogger, runReport } from '../unit/fakes.ts';
import { FakeKeys, type ErrorJson } from './fake-service.ts';
import { decodeWebhookSecret } from '../../src/webhooks/signature.ts';

/** Sandboxes that hold every run until `release()` when `held`, and print the code they ran. */
class HeldSandboxes {
  held = false;
  private waiters: Array<() => void> = [];
  readonly jobs: SandboxJob[] = [];
  async run(job: SandboxJob): Promise<SandboxOutcome> {
    this.jobs.push(job);
    if (this.held) await new Promise<void>((r) => this.waiters.push(r));
    return outcome('finished', { report: runReport({ exitCode: 0 }), stdout: `ran ${job.code}\n` });
  }
  release(): void {
    this.held = false;
    for (const w of this.waiters.splice(0)) w();
  }
}

const runners: JobRunner[] = [];
const closers: Array<() => void> = [];
afterEach(async () => {
  for (const r of runners.splice(0)) {
    r.stop();
    await r.settled();
  }
  for (const close of closers.splice(0)) close();
});

type Stores = { store: ExecutionStore; jobs: JobStore; outbox: WebhookOutbox; secrets: WebhookSecrets; jobCount: () => number };

/** The in-memory fakes, and SQLite as an embedded node keeps them. */
const STORES: Record<'memory' | 'sqlite', () => Stores> = {
  memory: () => {
    const store = new MemoryStore();
    const jobs = new MemoryJobStore((id) => store.get(id));
    return { store, jobs, outbox: new MemoryOutbox(), secrets: new MemoryWebhookSecrets(), jobCount: () => jobs.jobs.size };
  },
  sqlite: () => {
    const db = openDatabase(':memory:');
    closers.push(() => db.close());
    const store = new SqliteExecutionStore({ db, maxExecutions: 1000, maxAgeDays: 0 });
    const count = db.prepare<[], number>('SELECT COUNT(*) FROM jobs').pluck();
    return { store, ...sqliteJobStores(db), jobCount: () => count.get() ?? 0 };
  },
};

function setup(opts: { concurrency?: number; maxBatchItems?: number; maxOpenPerTenant?: number; stores?: keyof typeof STORES } = {}) {
  const clock = { now: () => Date.now() };
  const logger = new RecordingLogger();
  const config = defaultConfig();
  const jobsConfig = { ...config.jobs, concurrency: opts.concurrency ?? 2, pollMs: 20, maxBatchItems: opts.maxBatchItems ?? 50, maxOpenPerTenant: opts.maxOpenPerTenant ?? 10_000 };
  const sandboxes = new HeldSandboxes();
  const { store, jobs, outbox, secrets, jobCount } = STORES[opts.stores ?? 'memory']();
  let n = 0;
  const newId = () => `id-${++n}`;
  const service = localService({
    sandboxes,
    engine: { ping: async () => true, imageExists: async () => true },
    store,
    gate: new ConcurrencyGate(4, 100, 1),
    limits: config.limits,
    image: 'pybox-python:test',
    runtime: 'runc',
    availableRuntimes: ['runc'],
    clock,
    logger,
    newId,
  });
  const results = { runtime: 'runc' as const, limits: config.limits, clock };
  const callerFor = async (tenant: string) => ({ tenant, keyId: null, admin: false, limits: NO_TENANT_LIMITS });
  const runner = new JobRunner({ jobs, store, service, outbox, clock, logger, owner: 'node-1', config: jobsConfig, callerFor, results });
  runners.push(runner);
  const batches = new BatchService({ jobs, runner, service, callerFor, store, results, clock, logger, newId, owner: 'node-1', config: jobsConfig, eventsPollMs: 50 });
  const keys = new FakeKeys();
  const a = keys.add('team-a');
  const b = keys.add('team-b');
  const app = createApp({ service, logger, bodyLimitBytes: 1 << 20, auth: new Authenticator(keys), batches, webhookSecrets: secrets });
  const call = (key: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    app.request(path, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  return { app, call, a, b, sandboxes, runner, jobs, outbox, store, jobCount };
}

async function until<T>(probe: () => Promise<T | undefined>, what: string, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `event:`/`id:`/`data:` blocks of an event stream, comments left out. */
function parseSse(text: string): Array<{ event: string | undefined; id: string | undefined; data: string }> {
  return text
    .split('\n\n')
    .filter((block) => block.trim() !== '' && !block.startsWith(':'))
    .map((block) => {
      const lines = block.split('\n');
      const field = (name: string) => lines.find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
      return { event: field('event'), id: field('id'), data: lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n') };
    });
}

describe.each(['memory', 'sqlite'] as const)('POST /v1/executions?async=true (%s stores)', (stores) => {
  it('answers 202 with the pending execution at once, then GET answers 202 until the result is there', async () => {
    const { call, a, sandboxes, runner } = setup({ stores });
    sandboxes.held = true;
    await runner.start();
    const res = await call(a, 'POST', '/v1/executions?async=true', { code: 'print(1)' });
    expect(res.status).toBe(202);
    const pending = PendingExecution.parse(await res.json());
    expect(pending).toMatchObject({ state: 'queued', batchId: null });
    expect(res.headers.get('location')).toBe(`/v1/executions/${pending.id}`);

    await until(async () => (sandboxes.jobs.length === 1 ? true : undefined), 'the run to start');
    const waiting = await call(a, 'GET', `/v1/executions/${pending.id}`);
    expect(waiting.status).toBe(202);
    expect(waiting.headers.get('retry-after')).toBe('1');
    expect(PendingExecution.parse(await waiting.json())).toMatchObject({ id: pending.id, state: 'running' });
    // The sandbox got the job's own id.
    expect(sandboxes.jobs[0]?.id).toBe(pending.id);

    sandboxes.release();
    const done = await until(async () => {
      const r = await call(a, 'GET', `/v1/executions/${pending.id}`);
      return r.status === 200 ? ExecutionResult.parse(await r.json()) : undefined;
    }, 'the result');
    expect(done).toMatchObject({ id: pending.id, status: 'completed', stdout: 'ran print(1)\n' });
  });

  it('calls the webhook it names once the run is done', async () => {
    const { call, a, runner, outbox } = setup({ stores });
    await runner.start();
    const res = await call(a, 'POST', '/v1/executions?async=true', { code: 'print(2)', webhook: { url: 'https://hooks.example/done' } });
    expect(res.status).toBe(202);
    const { id } = PendingExecution.parse(await res.json());
    const delivery = await until(() => outbox.get(executionDeliveryId(id)), 'the delivery');
    expect(delivery).toMatchObject({ tenant: 'team-a', url: 'https://hooks.example/done', batchId: null });
    expect(WebhookEvent.parse(JSON.parse(delivery.body))).toMatchObject({ type: 'execution.finished', execution: { id, status: 'completed' } });
  });

  it('refuses a webhook without async=true, and checks the request as a run would before queueing it', async () => {
    const { call, a, jobCount } = setup({ stores });
    const sync = await call(a, 'POST', '/v1/executions', { code: 'print(1)', webhook: { url: 'https://hooks.example/x' } });
    expect(sync.status).toBe(400);
    expect(((await sync.json()) as ErrorJson).error.details).toEqual([{ path: 'webhook', message: 'unknown field' }]);
    const dup = await call(a, 'POST', '/v1/executions?async=true', { code: 'x', files: [{ path: 'a.txt', content: '1' }, { path: 'a.txt', content: '2' }] });
    expect(dup.status).toBe(400);
    expect(((await dup.json()) as ErrorJson).error.details?.[0]?.path).toBe('files[1].path');
    const creds = await call(a, 'POST', '/v1/executions?async=true', { code: 'x', webhook: { url: 'https://user:pw@hooks.example/' } });
    expect(creds.status).toBe(400);
    expect(jobCount()).toBe(0);
  });

  it('shows another tenant\'s pending execution as not found', async () => {
    const { call, a, b, sandboxes, runner } = setup({ stores });
    sandboxes.held = true;
    await runner.start();
    const { id } = PendingExecution.parse(await (await call(a, 'POST', '/v1/executions?async=true', { code: 'print(1)' })).json());
    const other = await call(b, 'GET', `/v1/executions/${id}`);
    expect(other.status).toBe(404);
    expect(((await other.json()) as ErrorJson).error.code).toBe('not_found');
    sandboxes.release();
  });
});

describe.each(['memory', 'sqlite'] as const)('/v1/batches (%s stores)', (stores) => {
  const items = (n: number) => Array.from({ length: n }, (_, i) => ({ code: `print(${i})` }));

  it('takes a batch (202 + Location), lists it, pages its items, and shows their results once done', async () => {
    const { call, a, runner } = setup({ stores });
    const res = await call(a, 'POST', '/v1/batches', { items: items(5), label: 'nightly' });
    expect(res.status).toBe(202);
    const info = BatchInfo.parse(await res.json());
    expect(info).toMatchObject({ state: 'running', label: 'nightly', total: 5, done: 0, webhook: null, finishedAt: null });
    expect(res.headers.get('location')).toBe(`/v1/batches/${info.id}`);

    const listed = BatchList.parse(await (await call(a, 'GET', '/v1/batches')).json());
    expect(listed.items.map((x) => x.id)).toEqual([info.id]);

    await runner.start();
    await until(async () => {
      const page = BatchPage.parse(await (await call(a, 'GET', `/v1/batches/${info.id}`)).json());
      return page.state === 'completed' ? page : undefined;
    }, 'the batch to finish');

    const first = BatchPage.parse(await (await call(a, 'GET', `/v1/batches/${info.id}?limit=2`)).json());
    expect(first).toMatchObject({ total: 5, done: 5, state: 'completed' });
    expect(first.byStatus.completed).toBe(5);
    expect(first.items.map((i) => i.index)).toEqual([0, 1]);
    expect(first.nextCursor).not.toBeNull();
    const rest: number[] = [];
    let cursor = first.nextCursor;
    while (cursor) {
      const page = BatchPage.parse(await (await call(a, 'GET', `/v1/batches/${info.id}?limit=2&cursor=${encodeURIComponent(cursor)}`)).json());
      rest.push(...page.items.map((i) => i.index));
      cursor = page.nextCursor;
    }
    expect(rest).toEqual([2, 3, 4]);
    expect(first.items[1]).toMatchObject({ index: 1, state: 'done', result: { status: 'completed', stdout: 'ran print(1)\n' } });
    // Each item's result is an execution of the caller's.
    const one = await call(a, 'GET', `/v1/executions/${first.items[0]?.executionId}`);
    expect(one.status).toBe(200);
  });

  it('streams each completion as an event with its seq, then done, and resumes after Last-Event-ID', async () => {
    const { call, a, runner, sandboxes } = setup({ stores });
    sandboxes.held = true;
    await runner.start();
    const info = BatchInfo.parse(await (await call(a, 'POST', '/v1/batches', { items: items(3) })).json());
    const stream = await call(a, 'GET', `/v1/batches/${info.id}/events`);
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(stream.headers.get('cache-control')).toBe('no-store');
    sandboxes.release();
    const events = parseSse(await stream.text());
    expect(events.map((e) => e.event)).toEqual(['item', 'item', 'item', 'done']);
    const itemEvents = events.slice(0, 3).map((e) => ({ id: e.id, data: BatchItemEvent.parse(JSON.parse(e.data)) }));
    expect(itemEvents.map((e) => e.id)).toEqual(['1', '2', '3']);
    expect(itemEvents.map((e) => e.data.seq)).toEqual([1, 2, 3]);
    expect(itemEvents.map((e) => e.data.item.index).sort()).toEqual([0, 1, 2]);
    expect(itemEvents.every((e) => e.data.batchId === info.id && e.data.item.state === 'done' && e.data.item.result?.status === 'completed')).toBe(true);
    expect(BatchInfo.parse(JSON.parse(events[3]?.data ?? ''))).toMatchObject({ id: info.id, state: 'completed', done: 3 });

    const resumed = parseSse(await (await call(a, 'GET', `/v1/batches/${info.id}/events`, undefined, { 'last-event-id': '2' })).text());
    expect(resumed.map((e) => [e.event, e.id])).toEqual([
      ['item', '3'],
      ['done', undefined],
    ]);
    const bad = await call(a, 'GET', `/v1/batches/${info.id}/events`, undefined, { 'last-event-id': 'x' });
    expect(bad.status).toBe(400);
  });

  it('cancels the queued items (each recorded cancelled) and lets the running one finish', async () => {
    const { call, a, runner, sandboxes, outbox } = setup({ concurrency: 1, stores });
    sandboxes.held = true;
    await runner.start();
    const info = BatchInfo.parse(await (await call(a, 'POST', '/v1/batches', { items: items(4), webhook: { url: 'https://hooks.example/b' } })).json());
    await until(async () => (sandboxes.jobs.length === 1 ? true : undefined), 'the first item to run');
    const res = await call(a, 'DELETE', `/v1/batches/${info.id}`);
    expect(res.status).toBe(200);
    expect(BatchInfo.parse(await res.json())).toMatchObject({ done: 3, state: 'running' });
    sandboxes.release();
    const page = await until(async () => {
      const p = BatchPage.parse(await (await call(a, 'GET', `/v1/batches/${info.id}`)).json());
      return p.done === 4 ? p : undefined;
    }, 'the running item');
    expect(page.state).toBe('cancelled');
    expect(page.byStatus).toMatchObject({ completed: 1, cancelled: 3 });
    expect(page.items.map((i) => i.result?.status)).toEqual(['completed', 'cancelled', 'cancelled', 'cancelled']);
    expect(page.items[1]?.result?.feedback).toContain('the batch it belonged to was cancelled');
    expect(sandboxes.jobs).toHaveLength(1);
    // The batch's webhook is queued when its last item is done; its items have none of their own.
    const delivery = await until(() => outbox.get(batchDeliveryId(info.id)), 'the delivery');
    expect(WebhookEvent.parse(JSON.parse(delivery.body))).toMatchObject({ type: 'batch.finished', id: batchDeliveryId(info.id), batch: { id: info.id, state: 'cancelled', done: 4 } });
    for (const item of page.items) expect(await outbox.get(executionDeliveryId(item.executionId))).toBeUndefined();
  });

  it('refuses a bad item naming it (items[3].timeoutMs), and more items than the server takes', async () => {
    const { call, a, jobCount } = setup({ maxBatchItems: 3, stores });
    const bad = await call(a, 'POST', '/v1/batches', { items: [...items(3).slice(0, 3), { code: 'x', timeoutMs: 1 }] });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as ErrorJson).error.details?.map((d) => d.path)).toContain('items[3].timeoutMs');
    const dup = await call(a, 'POST', '/v1/batches', { items: [{ code: 'x' }, { code: 'y', files: [{ path: 'a', content: '1' }, { path: 'a', content: '2' }] }] });
    expect(dup.status).toBe(400);
    const dupBody = (await dup.json()) as ErrorJson;
    expect(dupBody.error.details).toEqual([{ path: 'items[1].files[1].path', message: 'duplicate path a' }]);
    expect(dupBody.error.message).toBe('items[1].files[1].path duplicate path a');
    const many = await call(a, 'POST', '/v1/batches', { items: items(4) });
    expect(many.status).toBe(400);
    expect(((await many.json()) as ErrorJson).error.details?.[0]?.path).toBe('items');
    const empty = await call(a, 'POST', '/v1/batches', { items: [] });
    expect(empty.status).toBe(400);
    expect(jobCount()).toBe(0);
  });

  it('caps the jobs a tenant has open: past it, 429 with Retry-After until some are done; another tenant is not held back', async () => {
    const { call, a, b, sandboxes, jobCount } = setup({ maxOpenPerTenant: 5, concurrency: 1, stores });
    sandboxes.held = true;
    expect((await call(a, 'POST', '/v1/batches', { items: items(4) })).status).toBe(202);
    const over = await call(a, 'POST', '/v1/batches', { items: items(2) });
    expect(over.status).toBe(429);
    expect(over.headers.get('retry-after')).toBe('10');
    expect(((await over.json()) as ErrorJson).error).toMatchObject({ code: 'rate_limited', details: { limit: 'jobs', maxOpenPerTenant: 5, open: 4 } });
    expect((await call(a, 'POST', '/v1/executions?async=true', { code: 'print(1)' })).status).toBe(202);
    expect((await call(a, 'POST', '/v1/executions?async=true', { code: 'print(1)' })).status).toBe(429);
    expect((await call(b, 'POST', '/v1/batches', { items: items(5) })).status).toBe(202);
    // A batch larger than the cap could never pass: refused as a bad request, not "later".
    expect((await call(b, 'POST', '/v1/batches', { items: items(6) })).status).toBe(400);
    expect(jobCount()).toBe(10);
    sandboxes.release();
  });

  it('answers another tenant\'s batch exactly as an unknown one', async () => {
    const { call, a, b } = setup({ stores });
    const info = BatchInfo.parse(await (await call(a, 'POST', '/v1/batches', { items: items(2) })).json());
    for (const [method, path] of [
      ['GET', `/v1/batches/${info.id}`],
      ['GET', `/v1/batches/${info.id}/events`],
      ['DELETE', `/v1/batches/${info.id}`],
    ] as const) {
      const theirs = await call(b, method, path);
      const unknown = await call(b, method, path.replace(info.id, 'no-such-batch'));
      expect(theirs.status, `${method} ${path}`).toBe(404);
      expect(unknown.status).toBe(404);
      const [t, u] = [(await theirs.json()) as ErrorJson, (await unknown.json()) as ErrorJson];
      expect(t.error.code).toBe('not_found');
      expect(t.error.message.replace(info.id, 'X')).toBe(u.error.message.replace('no-such-batch', 'X'));
    }
    expect(BatchList.parse(await (await call(b, 'GET', '/v1/batches')).json()).items).toEqual([]);
    // Still all queued for its owner: team-b's DELETE took nothing.
    expect(BatchInfo.parse(await (await call(a, 'GET', `/v1/batches/${info.id}`)).json()).done).toBe(0);
  });
});

describe.each(['memory', 'sqlite'] as const)('/v1/webhooks/secret (%s stores)', (stores) => {
  it('gives each tenant its own secret, the same until rotated, never cacheable', async () => {
    const { call, a, b } = setup({ stores });
    const get = async (key: string, method = 'GET', path = '/v1/webhooks/secret') => {
      const res = await call(key, method, path);
      expect(res.status).toBe(200);
      expect(res.headers.get('cache-control')).toBe('no-store');
      return ((await res.json()) as { secret: string }).secret;
    };
    const first = await get(a);
    expect(first).toMatch(/^whsec_[A-Za-z0-9_-]+$/);
    expect(decodeWebhookSecret(first)).toHaveLength(32);
    expect(await get(a)).toBe(first);
    expect(await get(b)).not.toBe(first);
    const rotated = await get(a, 'POST', '/v1/webhooks/secret/rotate');
    expect(rotated).not.toBe(first);
    expect(await get(a)).toBe(rotated);
  });
});

describe('basicWebhookUrlCheck', () => {
  it('takes http(s) URLs with a host and refuses others, credentials and garbage', () => {
    expect(() => basicWebhookUrlCheck('https://hooks.example/x?y=1', 'webhook.url')).not.toThrow();
    expect(() => basicWebhookUrlCheck('http://10.0.0.1:8080/', 'webhook.url')).not.toThrow();
    for (const url of ['ftp://hooks.example/', 'https://u:p@hooks.example/', 'not a url', 'file:///etc/passwd']) {
      let err: unknown;
      try {
        basicWebhookUrlCheck(url, 'webhook.url');
      } catch (e) {
        err = e;
      }
      expect(err, url).toBeInstanceOf(PyboxError);
      expect((err as PyboxError).details).toEqual([{ path: 'webhook.url', message: expect.any(String) }]);
    }
  });
});

describe('webhookUrlCheckFrom', () => {
  it('refuses what the webhook policy\'s syntax check refuses, naming the field', () => {
    const check = webhookUrlCheckFrom(checkWebhookUrl);
    expect(() => check('https://hooks.example/x', 'webhook.url')).not.toThrow();
    let err: unknown;
    try {
      check('https://hooks.example:0/x', 'webhook.url');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PyboxError);
    expect((err as PyboxError).details).toEqual([{ path: 'webhook.url', message: 'must use a port from 1 to 65535' }]);
  });
});

describe('without the jobs side', () => {
  it('serves no batch routes and refuses async=true rather than running synchronously', async () => {
    const keys = new FakeKeys();
    const key = keys.add('team-a');
    const sandboxes = new HeldSandboxes();
    const config = defaultConfig();
    const service = localService({
      sandboxes,
      engine: { ping: async () => true, imageExists: async () => true },
      store: new MemoryStore(),
      gate: new ConcurrencyGate(1, 10, 1),
      limits: config.limits,
      image: 'pybox-python:test',
      runtime: 'runc',
      availableRuntimes: ['runc'],
      clock: { now: () => Date.now() },
      logger: new RecordingLogger(),
      newId: () => 'x',
    });
    const plain = createApp({ service, logger: new RecordingLogger(), bodyLimitBytes: 1 << 20, auth: new Authenticator(keys) });
    const auth = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    expect((await plain.request('/v1/batches', { headers: auth })).status).toBe(404);
    const res = await plain.request('/v1/executions?async=true', { method: 'POST', headers: auth, body: JSON.stringify({ code: 'print(1)' }) });
    expect(res.status).toBe(400);
    expect(sandboxes.jobs).toHaveLength(0);
  });
});

describe('the event stream of a batch that does not finish', () => {
  it('sends heartbeat comments, and stops following the batch once the client goes away', async () => {
    const { runner, jobs } = setup();
    let listeners = 0;
    const counting = {
      wake: () => runner.wake(),
      complete: (job: Parameters<JobRunner['complete']>[0], result: Parameters<JobRunner['complete']>[1]) => runner.complete(job, result),
      onCompleted: (l: Parameters<JobRunner['onCompleted']>[0]) => {
        listeners++;
        const off = runner.onCompleted(l);
        return () => {
          listeners--;
          off();
        };
      },
    };
    const config = defaultConfig();
    const clock = { now: () => Date.now() };
    const limits = { ...config.limits.defaults, outputBytes: config.limits.outputBytes };
    const batches = new BatchService({
      jobs,
      runner: counting,
      service: { check: () => ({ limits }), clampLimits: () => limits },
      callerFor: async (tenant) => ({ tenant, keyId: null, admin: false, limits: NO_TENANT_LIMITS }),
      store: new MemoryStore(),
      results: { runtime: 'runc', limits: config.limits, clock },
      clock,
      logger: new RecordingLogger(),
      newId: () => 'b-1',
      owner: 'node-1',
      config: config.jobs,
      eventsPollMs: 20,
    });
    // Never started: the batch stays queued.
    await batches.createBatch(LOCAL_CALLER, { items: [{ code: 'print(1)' }] });
    const app = new OpenAPIHono();
    app.use(async (c, next) => {
      c.set('caller', LOCAL_CALLER);
      await next();
    });
    app.route('/v1', batchRoutes(batches, new RecordingLogger(), 30));
    const res = await app.request('/v1/batches/b-1/events');
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!text.includes(': keep-alive\n\n')) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the stream ended');
      text += decoder.decode(value);
    }
    expect(listeners).toBe(1);
    await reader.cancel();
    await until(async () => (listeners === 0 ? true : undefined), 'the stream to let go of the batch');
  });
});

describe('the client package against these routes', () => {
  it('submits and waits, creates a batch, follows its events to done, and cancels one', async () => {
    const { app, a, runner, sandboxes } = setup({ concurrency: 1, stores: 'sqlite' });
    const client = new PyboxClient({ baseUrl: 'http://pybox.test', apiKey: a, fetch: async (url, init) => app.request(url, init) });
    await runner.start();
    const pending = await client.submit({ code: 'print(7)' });
    expect((await client.waitFor(pending.id, { intervalMs: 10 })).stdout).toBe('ran print(7)\n');

    const batch = await client.createBatch({ items: [{ code: 'print(1)' }, { code: 'print(2)' }] });
    const seen: string[] = [];
    for await (const e of client.batchEvents(batch.id)) seen.push(e.type === 'item' ? `item ${e.data.seq}` : `done ${e.data.state}`);
    expect(seen).toEqual(['item 1', 'item 2', 'done completed']);

    sandboxes.held = true;
    const other = await client.createBatch({ items: [{ code: 'print(1)' }, { code: 'print(2)' }, { code: 'print(3)' }] });
    await until(async () => (sandboxes.jobs.length === 4 ? true : undefined), 'its first item to run');
    expect(await client.cancelBatch(other.id)).toMatchObject({ done: 2, state: 'running' });
    sandboxes.release();
    const items = [];
    await until(async () => ((await client.getBatch(other.id)).done === 3 ? true : undefined), 'the batch to finish');
    for await (const item of client.batchItems(other.id, { pageSize: 2 })) items.push(item.result?.status);
    expect(items).toEqual(['completed', 'cancelled', 'cancelled']);
  });
});
