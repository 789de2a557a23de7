// GET /metrics in process: known executions through the real service, dispatch and gate (with fake
// sandboxes), and the exposed figures checked exactly; the route's protection and its labels' bounds.
import { describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { DefaultExecutionService } from '../../src/core/execution-service.ts';
import { LocalBackend } from '../../src/core/local-backend.ts';
import { LocalDispatch } from '../../src/core/local-dispatch.ts';
import type { ApiKeyLookup, Sandboxes } from '../../src/core/ports.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { MeteredRequestLimiter } from '../../src/metrics/metered.ts';
import { PrometheusMetrics } from '../../src/metrics/prometheus.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { RateLimiter } from '../../src/tenancy/rate-limiter.ts';
import { parseExposition, valueOf } from '../support/exposition.ts';
import { defaultConfig, deferred, ManualClock, MemoryStore, outcome, RecordingLogger, runReport } from '../unit/fakes.ts';
import { FakeKeys, NO_KEYS } from './fake-service.ts';

const engine = { ping: async () => true, imageExists: async () => true };

/** The code names the outcome: `ok`, `fail`, `slow` (timeout), `hold` (waits for `release`). */
function node(opts: { keys?: ApiKeyLookup; slots?: number } = {}) {
  const clock = new ManualClock();
  const logger = new RecordingLogger();
  const config = defaultConfig();
  const metrics = new PrometheusMetrics({ tenantLabels: ['team-a'] });
  const gate = new ConcurrencyGate(opts.slots ?? 4, 10, 1);
  const held = deferred<void>();
  const sandboxes: Sandboxes = {
    async run(job: SandboxJob): Promise<SandboxOutcome> {
      if (job.code === 'hold') await held.promise;
      if (job.code === 'fail') return outcome('finished', { report: runReport({ exitCode: 1 }), durationMs: 1500 });
      if (job.code === 'slow') return outcome('timeout', { durationMs: 1000 });
      return outcome('finished', { report: runReport(), durationMs: 200 });
    },
  };
  const store = new MemoryStore();
  const results = { runtime: 'runc' as const, limits: config.limits, clock };
  let n = 0;
  const newId = () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
  const dispatch = new LocalDispatch({ sandboxes, gate, store, image: 'img', results, logger, observer: metrics });
  const backend = new LocalBackend({ engine, sandboxes, gate, image: 'img', runtime: 'runc', availableRuntimes: ['runc'], defaults: config.limits.defaults, maxTimeoutMs: config.limits.max.timeoutMs, logger, newId });
  const service = new DefaultExecutionService({ dispatch, backend, store, limits: config.limits, clock, logger, newId });
  metrics.watchGate(opts.slots ?? 4, () => gate.stats);
  const app = createApp({
    service,
    logger,
    bodyLimitBytes: 1 << 20,
    auth: new Authenticator(opts.keys ?? NO_KEYS),
    rateLimiter: new MeteredRequestLimiter(new RateLimiter(clock), metrics),
    observer: metrics,
    metrics,
  });
  const run = (code: string, key?: string) =>
    app.request('/v1/executions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', host: 'localhost', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ code }),
    });
  const scrape = async (key?: string) => {
    const res = await app.request('/metrics', { headers: { host: 'localhost', ...(key ? { authorization: `Bearer ${key}` } : {}) } });
    expect(res.status).toBe(200);
    return parseExposition(await res.text());
  };
  return { app, clock, gate, held, run, scrape };
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !check(); i++) await new Promise((r) => setTimeout(r, 2));
  expect(check()).toBe(true);
}

describe('GET /metrics', () => {
  it('counts executions by status and runtime, with their durations and queue waits, exactly', async () => {
    const { run, scrape } = node();
    for (const code of ['ok', 'ok', 'fail', 'slow']) expect((await run(code)).status).toBe(200);
    const s = await scrape();
    expect(valueOf(s, 'pybox_executions_total', { status: 'completed', runtime: 'runc' })).toBe(2);
    expect(valueOf(s, 'pybox_executions_total', { status: 'error', runtime: 'runc' })).toBe(1);
    expect(valueOf(s, 'pybox_executions_total', { status: 'timeout', runtime: 'runc' })).toBe(1);
    expect(valueOf(s, 'pybox_executions_total', { status: 'oom' })).toBeUndefined();
    // Durations 0.2, 0.2, 1.5 and 1 s: two at or under 0.25, all four at or under 2.5.
    expect(valueOf(s, 'pybox_execution_duration_seconds_bucket', { runtime: 'runc', le: '0.1' })).toBe(0);
    expect(valueOf(s, 'pybox_execution_duration_seconds_bucket', { runtime: 'runc', le: '0.25' })).toBe(2);
    expect(valueOf(s, 'pybox_execution_duration_seconds_bucket', { runtime: 'runc', le: '1' })).toBe(3);
    expect(valueOf(s, 'pybox_execution_duration_seconds_bucket', { runtime: 'runc', le: '2.5' })).toBe(4);
    expect(valueOf(s, 'pybox_execution_duration_seconds_count', { runtime: 'runc' })).toBe(4);
    expect(valueOf(s, 'pybox_execution_duration_seconds_sum', { runtime: 'runc' })).toBeCloseTo(2.9, 9);
    // The manual clock stood still: no run waited.
    expect(valueOf(s, 'pybox_execution_queue_wait_seconds_count', { runtime: 'runc' })).toBe(4);
    expect(valueOf(s, 'pybox_execution_queue_wait_seconds_sum', { runtime: 'runc' })).toBe(0);
    expect(valueOf(s, 'pybox_executions_running')).toBe(0);
    expect(valueOf(s, 'pybox_executions_queued')).toBe(0);
    expect(valueOf(s, 'pybox_execution_slots')).toBe(4);
    expect(valueOf(s, 'pybox_http_requests_total', { route: '/v1/executions', method: 'POST', status: '200' })).toBe(4);
    expect(valueOf(s, 'pybox_http_request_duration_seconds_count', { route: '/v1/executions', method: 'POST' })).toBe(4);
    // Default process metrics share the node's registry.
    expect(valueOf(s, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
  });

  it('reads running and queued at scrape time, and measures a queue wait from acceptance to a slot', async () => {
    const { run, scrape, gate, held, clock } = node({ slots: 1 });
    const first = run('hold');
    await until(() => gate.stats.running === 1);
    const second = run('ok');
    await until(() => gate.stats.queued === 1);
    let s = await scrape();
    expect(valueOf(s, 'pybox_executions_running')).toBe(1);
    expect(valueOf(s, 'pybox_executions_queued')).toBe(1);
    clock.advance(2000);
    held.resolve();
    expect((await first).status).toBe(200);
    expect((await second).status).toBe(200);
    s = await scrape();
    expect(valueOf(s, 'pybox_executions_running')).toBe(0);
    expect(valueOf(s, 'pybox_executions_queued')).toBe(0);
    expect(valueOf(s, 'pybox_execution_queue_wait_seconds_count', { runtime: 'runc' })).toBe(2);
    expect(valueOf(s, 'pybox_execution_queue_wait_seconds_sum', { runtime: 'runc' })).toBe(2);
    expect(valueOf(s, 'pybox_execution_queue_wait_seconds_bucket', { runtime: 'runc', le: '1' })).toBe(1);
    expect(valueOf(s, 'pybox_execution_queue_wait_seconds_bucket', { runtime: 'runc', le: '2.5' })).toBe(2);
  });

  it('labels HTTP requests by route pattern, never by the raw path', async () => {
    const { app, scrape } = node();
    const id = '0badc0de-0000-4000-8000-000000000000';
    expect((await app.request(`/v1/executions/${id}`, { headers: { host: 'localhost' } })).status).toBe(404);
    expect((await app.request('/no/such/place-4242', { headers: { host: 'localhost' } })).status).toBe(404);
    expect((await app.request('/healthz')).status).toBe(200);
    const res = await app.request('/metrics', { headers: { host: 'localhost' } });
    const text = await res.text();
    expect(text).not.toContain(id);
    expect(text).not.toContain('place-4242');
    const s = parseExposition(text);
    expect(valueOf(s, 'pybox_http_requests_total', { route: '/v1/executions/:id', method: 'GET', status: '404' })).toBe(1);
    expect(valueOf(s, 'pybox_http_requests_total', { route: 'unmatched', method: 'GET', status: '404' })).toBe(1);
    expect(valueOf(s, 'pybox_http_requests_total', { route: '/healthz', method: 'GET', status: '200' })).toBe(1);
    expect((await scrape()).length).toBeGreaterThan(0);
  });

  it('counts rate-limit refusals by tenant, named only when listed in metrics.tenantLabels', async () => {
    const keys = new FakeKeys();
    const admin = keys.add('ops', { admin: true });
    const listed = keys.add('team-a', { limits: { ratePerMinute: 1 } });
    const unlisted = [keys.add('team-z', { limits: { ratePerMinute: 1 } }), keys.add('team-y', { limits: { ratePerMinute: 1 } })];
    const { app, scrape } = node({ keys });
    const stats = (key: string) => app.request('/v1/stats', { headers: { authorization: `Bearer ${key}` } });
    for (const key of [listed, ...unlisted]) {
      expect((await stats(key)).status).toBe(200);
      expect((await stats(key)).status).toBe(429);
    }
    expect((await stats(listed)).status).toBe(429);
    const res = await app.request('/metrics', { headers: { authorization: `Bearer ${admin}` } });
    const text = await res.text();
    expect(text).not.toContain('team-z');
    expect(text).not.toContain('team-y');
    const s = parseExposition(text);
    expect(valueOf(s, 'pybox_rate_limited_total', { tenant: 'team-a' })).toBe(2);
    expect(valueOf(s, 'pybox_rate_limited_total', { tenant: 'other' })).toBe(2);
    expect(valueOf(s, 'pybox_http_requests_total', { route: '/v1/stats', method: 'GET', status: '429' })).toBe(4);
    expect((await scrape(admin)).length).toBeGreaterThan(0);
  });

  it('needs an admin key once keys exist: 401 without a key, 404 for other tenants', async () => {
    const keys = new FakeKeys();
    const admin = keys.add('ops', { admin: true });
    const user = keys.add('team-a');
    const { app } = node({ keys });
    expect((await app.request('/metrics')).status).toBe(401);
    expect((await app.request('/metrics', { headers: { authorization: `Bearer ${user}` } })).status).toBe(404);
    const res = await app.request('/metrics', { headers: { authorization: `Bearer ${admin}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  });

  it('is open on loopback in local mode, and refuses other Host names there', async () => {
    const { app } = node();
    expect((await app.request('/metrics', { headers: { host: '127.0.0.1:8080' } })).status).toBe(200);
    expect((await app.request('/metrics', { headers: { host: 'rebound.example' } })).status).toBe(403);
  });

  it('is in the OpenAPI document, as text/plain', async () => {
    const { app } = node();
    const res = await app.request('/openapi.json', { headers: { host: 'localhost' } });
    const text = await res.text();
    expect(res.status, text).toBe(200);
    const doc = JSON.parse(text) as {
      paths: Record<string, { get?: { responses: Record<string, { content?: Record<string, unknown> }> } }>;
    };
    expect(Object.keys(doc.paths['/metrics']?.get?.responses['200']?.content ?? {})).toEqual(['text/plain']);
  });
});
