// API keys at the HTTP edge: local mode without keys, one identical 401 for every failure, open
// health probes, the caller handed to the service, and the request-rate limit with its headers.
import { describe, expect, it } from 'vitest';
import { NO_TENANT_LIMITS } from '../../src/core/caller.ts';
import type { StoredApiKey } from '../../src/core/ports.ts';
import { newApiKey } from '../../src/tenancy/keys.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { ManualClock } from '../unit/fakes.ts';
import { FakeKeys as Keys, harness, type ErrorJson } from './fake-service.ts';

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

describe('local mode (no keys)', () => {
  it('serves every route without credentials, as the local admin', async () => {
    const { app, service } = harness();
    expect((await app.request('/v1/executions')).status).toBe(200);
    expect((await app.request('/v1/stats')).status).toBe(200);
    expect(service.calls.callers.map((c) => c.caller)).toEqual([
      { tenant: 'local', keyId: null, admin: true, limits: NO_TENANT_LIMITS },
      { tenant: 'local', keyId: null, admin: true, limits: NO_TENANT_LIMITS },
    ]);
  });

  it('ignores a header it has no key to check against', async () => {
    const { app } = harness();
    expect((await app.request('/v1/stats', { headers: bearer('whatever') })).status).toBe(200);
  });
});

describe('with keys', () => {
  const setup = () => {
    const keys = new Keys();
    const good = keys.add('acme', { limits: { maxConcurrency: 2 } });
    const admin = keys.add('ops', { admin: true });
    const revoked = keys.add('acme', { revoked: true });
    const clock = new ManualClock();
    return { keys, good, admin, revoked, clock, ...harness({ keys, clock }) };
  };

  it('answers a missing, malformed, unknown or revoked key with the same 401', async () => {
    const { app, service, revoked } = setup();
    const attempts: Array<Record<string, string>> = [
      {},
      { authorization: '' },
      { authorization: 'Bearer' },
      { authorization: 'Bearer pbx_nope' },
      { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` },
      bearer(newApiKey()),
      bearer(revoked),
    ];
    const answers = await Promise.all(
      attempts.map(async (headers) => {
        const res = await app.request('/v1/executions', { headers });
        return { status: res.status, body: await res.text(), challenge: res.headers.get('www-authenticate') };
      }),
    );
    for (const a of answers) expect(a).toEqual(answers[0]);
    expect(answers[0]?.status).toBe(401);
    expect(answers[0]?.challenge).toBe('Bearer realm="pybox"');
    expect((JSON.parse(answers[0]?.body ?? '') as ErrorJson).error).toEqual({
      code: 'unauthorized',
      message: 'a valid API key is required: send it as Authorization: Bearer <key>',
    });
    expect(service.calls.callers).toEqual([]);
  });

  it.each([
    ['GET', '/v1/executions'],
    ['GET', '/v1/executions/abc'],
    ['POST', '/v1/executions'],
    ['GET', '/v1/stats'],
    ['GET', '/v1/runtimes'],
    ['GET', '/v1/usage'],
    ['GET', '/openapi.json'],
    ['POST', '/api/execute-code'],
    ['GET', '/api/code-history'],
    ['GET', '/api/code-stats'],
    ['GET', '/no/such/route'],
  ])('requires a key for %s %s', async (method, path) => {
    const { app } = setup();
    const res = await app.request(path, { method, headers: { 'content-type': 'application/json' }, body: method === 'POST' ? '{"code":"1"}' : null });
    expect(res.status).toBe(401);
  });

  it('covers routes mounted after the app was built', async () => {
    const { app, good } = setup();
    app.get('/v1/added-later', (c) => c.json({ tenant: c.get('caller').tenant }));
    expect((await app.request('/v1/added-later')).status).toBe(401);
    expect(await (await app.request('/v1/added-later', { headers: bearer(good) })).json()).toEqual({ tenant: 'acme' });
  });

  it('leaves the health probes open', async () => {
    const { app } = setup();
    expect((await app.request('/healthz')).status).toBe(200);
    expect((await app.request('/readyz')).status).toBe(200);
  });

  it("hands the key's tenant, id, role and limits to the service", async () => {
    const { app, service, good, admin } = setup();
    await app.request('/v1/executions', { method: 'POST', headers: { ...bearer(good), 'content-type': 'application/json' }, body: '{"code":"1"}' });
    await app.request('/v1/executions/x', { headers: bearer(good) });
    await app.request('/v1/usage?tenant=acme', { headers: bearer(admin) });
    expect(service.calls.callers).toEqual([
      { method: 'execute', caller: { tenant: 'acme', keyId: 'key_000000000000', admin: false, limits: { ...NO_TENANT_LIMITS, maxConcurrency: 2 } } },
      { method: 'get', caller: expect.objectContaining({ tenant: 'acme' }) },
      { method: 'usage', caller: { tenant: 'ops', keyId: 'key_000000000001', admin: true, limits: NO_TENANT_LIMITS } },
    ]);
    expect(service.calls.usage).toEqual([{ tenant: 'acme' }]);
  });

  it('refuses a key once revoked, from the next request on', async () => {
    const { app, keys, good } = setup();
    expect((await app.request('/v1/stats', { headers: bearer(good) })).status).toBe(200);
    const row = keys.rows[0] as StoredApiKey;
    row.revokedAt = '2025-06-01T00:00:00.000Z';
    expect((await app.request('/v1/stats', { headers: bearer(good) })).status).toBe(401);
  });

  it('never logs a key', async () => {
    const { app, logger, service, good } = setup();
    const unknown = newApiKey();
    service.failWith.stats = new PyboxError('store_unavailable', 'disk full');
    await app.request('/v1/stats', { headers: bearer(good) });
    await app.request('/v1/stats', { headers: bearer(unknown) });
    service.failWith.stats = new TypeError('boom');
    await app.request('/v1/stats', { headers: bearer(good) });
    expect(logger.entries.length).toBeGreaterThan(0);
    const logged = JSON.stringify(logger.entries);
    expect(logged).not.toContain(good.slice(4));
    expect(logged).not.toContain(unknown.slice(4));
  });
});

describe('request rate per tenant', () => {
  const setup = () => {
    const keys = new Keys();
    const limited = keys.add('slow', { limits: { ratePerMinute: 2 } });
    const free = keys.add('free');
    const clock = new ManualClock();
    return { limited, free, clock, ...harness({ keys, clock }) };
  };

  it('sends the RateLimit fields on every answer to a limited tenant, then 429 with Retry-After', async () => {
    const { app, limited, clock } = setup();
    const first = await app.request('/v1/stats', { headers: bearer(limited) });
    expect(first.status).toBe(200);
    expect(Object.fromEntries([...first.headers].filter(([k]) => k.startsWith('ratelimit')))).toEqual({
      'ratelimit-policy': '"requests";q=2;w=60',
      ratelimit: '"requests";r=1;t=30',
      'ratelimit-limit': '2',
      'ratelimit-remaining': '1',
      'ratelimit-reset': '30',
    });
    // An error answer carries them too.
    const second = await app.request('/v1/executions/x', { headers: bearer(limited), method: 'DELETE' });
    expect(second.status).toBe(404);
    expect(second.headers.get('ratelimit-remaining')).toBe('0');
    const refused = await app.request('/v1/stats', { headers: bearer(limited) });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('30');
    expect(refused.headers.get('ratelimit')).toBe('"requests";r=0;t=60');
    expect(((await refused.json()) as ErrorJson).error).toEqual({
      code: 'rate_limited',
      message: 'this tenant may make 2 requests per minute',
      details: { limit: 'requests', ratePerMinute: 2 },
    });
    clock.advance(30_000);
    expect((await app.request('/v1/stats', { headers: bearer(limited) })).status).toBe(200);
  });

  it('leaves other tenants, and tenants without a rate, alone', async () => {
    const { app, limited, free } = setup();
    for (let i = 0; i < 3; i++) await app.request('/v1/stats', { headers: bearer(limited) });
    for (let i = 0; i < 10; i++) {
      const res = await app.request('/v1/stats', { headers: bearer(free) });
      expect(res.status).toBe(200);
      expect(res.headers.get('ratelimit')).toBeNull();
    }
  });

  it("passes a concurrency 429's own RateLimit fields through", async () => {
    const { app, service, limited } = setup();
    service.failWith.execute = new PyboxError('rate_limited', 'too many at once', {
      retryAfterS: 2,
      rateLimit: { policy: 'concurrency', quota: 1, remaining: 0, resetS: 2 },
    });
    const res = await app.request('/v1/executions', { method: 'POST', headers: { ...bearer(limited), 'content-type': 'application/json' }, body: '{"code":"1"}' });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('2');
    expect(res.headers.get('ratelimit-policy')).toBe('"concurrency";q=1');
    expect(res.headers.get('ratelimit')).toBe('"concurrency";r=0;t=2');
  });
});
