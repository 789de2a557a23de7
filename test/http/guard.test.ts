// Browsers at the edge: in local mode only loopback Host names (and server.allowedHosts) are
// answered, so DNS rebinding reaches nothing; a page of a foreign origin is refused unless
// server.allowedOrigins lists it, with or without keys; a preflight never reaches a route.
import { describe, expect, it } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import type { ApiKeyLookup } from '../../src/core/ports.ts';
import { FakeKeys, harness, type ErrorJson } from './fake-service.ts';

const json = { 'content-type': 'application/json' };
const run = (h: ReturnType<typeof harness>, headers: Record<string, string>) =>
  h.app.request('/v1/executions', { method: 'POST', headers: { ...json, ...headers }, body: '{"code":"print(1)"}' });

describe('Host in local mode', () => {
  it.each(['attacker.example', 'attacker.example:8080', 'localhost.attacker.example', 'localhost@attacker.example', '127.0.0.1.nip.io:8080', 'localhost:80/x', '10.0.0.5:8080', ''])(
    'refuses Host %j with 403 host_not_allowed, naming the setting, and runs nothing',
    async (host) => {
      const h = harness();
      const res = await run(h, { host });
      expect(res.status).toBe(403);
      const body = (await res.json()) as ErrorJson;
      expect(body.error.code).toBe('host_not_allowed');
      expect(body.error.message).toContain('server.allowedHosts');
      expect(h.service.calls.execute).toHaveLength(0);
    },
  );

  it('refuses every route but /healthz, the documents included', async () => {
    const h = harness();
    for (const path of ['/v1/executions', '/v1/executions/x', '/v1/stats', '/api/code-history', '/readyz', '/openapi.json', '/v1/tools', '/nowhere']) {
      expect((await h.app.request(path, { headers: { host: 'attacker.example' } })).status, path).toBe(403);
    }
    expect(h.service.calls.callers).toEqual([]);
    const health = await h.app.request('/healthz', { headers: { host: 'attacker.example' } });
    expect(health.status).toBe(200);
  });

  it.each(['localhost', 'localhost:8080', 'LOCALHOST:1', '127.0.0.1:8080', '127.0.0.2', '[::1]:8080', '[::1]'])('answers Host %j', async (host) => {
    const h = harness();
    expect((await run(h, { host })).status).toBe(200);
    expect(h.service.calls.execute).toHaveLength(1);
  });

  it('answers the names in server.allowedHosts, in any case and on any port', async () => {
    const h = harness({ allowedHosts: ['pybox.lan'] });
    expect((await run(h, { host: 'PyBox.LAN:8080' })).status).toBe(200);
    expect((await run(h, { host: 'other.lan:8080' })).status).toBe(403);
  });

  it('answers a request without a Host header (in-process; every browser sends one)', async () => {
    const h = harness();
    const res = await h.app.request('http://pybox.internal/v1/stats');
    expect(res.status).toBe(200);
  });

  it('is off once keys exist: a keyed server is reached by its operator\'s names, and a rebinding page has no key', async () => {
    const keys = new FakeKeys();
    const key = keys.add('acme');
    const h = harness({ keys });
    expect((await run(h, { host: 'pybox.example.com', authorization: `Bearer ${key}` })).status).toBe(200);
    expect((await run(h, { host: 'attacker.example' })).status).toBe(401);
  });
});

describe('asking whether keys exist', () => {
  it('asks the store once per request (guard and authentication agree), and the first key ends local mode on the next request', async () => {
    const store = new FakeKeys();
    let asked = 0;
    const keys: ApiKeyLookup = { hasKeys: () => (asked++, store.hasKeys()), findKeyByHash: (hash) => store.findKeyByHash(hash) };
    const h = harness({ keys });
    expect((await run(h, { host: 'localhost' })).status).toBe(200);
    expect(asked).toBe(1);
    const key = store.add('acme');
    expect((await run(h, { host: 'localhost' })).status).toBe(401);
    expect(asked).toBe(2);
    expect((await run(h, { host: 'localhost', authorization: `Bearer ${key}` })).status).toBe(200);
    expect(asked).toBe(2); // once keys exist, that is known for good
  });
});

describe('a key store that is away (PostgreSQL stopped)', () => {
  const away: ApiKeyLookup = {
    hasKeys: () => Promise.reject(new PyboxError('store_unavailable', 'the store does not answer', { retryAfterS: 5 })),
    findKeyByHash: () => Promise.reject(new PyboxError('store_unavailable', 'the store does not answer', { retryAfterS: 5 })),
  };

  it('answers 503 store_unavailable with Retry-After on the API, and runs nothing', async () => {
    const h = harness({ keys: away });
    const res = await run(h, { host: 'localhost' });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('5');
    expect(((await res.json()) as ErrorJson).error.code).toBe('store_unavailable');
    expect(h.service.calls.execute).toHaveLength(0);
  });

  it('still answers /readyz, which then says which part is away, and /healthz', async () => {
    const h = harness({ keys: away });
    expect((await h.app.request('/healthz', { headers: { host: 'localhost' } })).status).toBe(200);
    const ready = await h.app.request('/readyz', { headers: { host: 'localhost' } });
    expect(ready.status).toBe(200); // the fake service's readiness: reached, not refused by the guard
  });
});

describe('Origin', () => {
  it.each([
    ['a foreign site', 'https://evil.example'],
    ['another port of the same host', 'http://localhost:9999'],
    ['another scheme on the default port', 'https://localhost'],
    ['an opaque origin', 'null'],
    ['garbage', 'not an origin'],
  ])('refuses %s with 403 origin_not_allowed, naming the setting, and runs nothing', async (_what, origin) => {
    const h = harness();
    const res = await run(h, { host: 'localhost:8080', origin });
    expect(res.status).toBe(403);
    const body = (await res.json()) as ErrorJson;
    expect(body.error.code).toBe('origin_not_allowed');
    expect(body.error.message).toContain('server.allowedOrigins');
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    expect(h.service.calls.execute).toHaveLength(0);
  });

  it("answers the server's own origin (same host and port as Host)", async () => {
    const h = harness();
    expect((await run(h, { host: 'localhost:8080', origin: 'http://localhost:8080' })).status).toBe(200);
    expect((await run(h, { host: 'localhost', origin: 'http://localhost:80' })).status).toBe(200);
    expect(h.service.calls.execute).toHaveLength(2);
  });

  it('refuses a foreign origin with a valid key too', async () => {
    const keys = new FakeKeys();
    const key = keys.add('acme');
    const h = harness({ keys });
    const res = await run(h, { host: 'pybox.example.com', origin: 'https://evil.example', authorization: `Bearer ${key}` });
    expect(res.status).toBe(403);
    expect(h.service.calls.execute).toHaveLength(0);
  });

  it('answers an origin of server.allowedOrigins, with the CORS headers a page needs', async () => {
    const h = harness({ allowedOrigins: ['https://app.example'] });
    const res = await run(h, { host: 'localhost:8080', origin: 'https://app.example' });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(res.headers.get('vary')).toContain('Origin');
    expect(res.headers.get('access-control-expose-headers')).toContain('Retry-After');
    // Its error answers too, so the page can read why.
    const bad = await h.app.request('/v1/executions', { method: 'POST', headers: { ...json, host: 'localhost:8080', origin: 'https://app.example' }, body: '{' });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('access-control-allow-origin')).toBe('https://app.example');
  });

  it('answers the preflight of an allowed origin itself, and refuses a foreign one, never reaching a route', async () => {
    const h = harness({ allowedOrigins: ['https://app.example'] });
    const preflight = (origin: string) =>
      h.app.request('/v1/executions', { method: 'OPTIONS', headers: { host: 'localhost:8080', origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization' } });
    const allowed = await preflight('https://app.example');
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(allowed.headers.get('access-control-allow-methods')).toContain('POST');
    expect(allowed.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization');
    const foreign = await preflight('https://evil.example');
    expect(foreign.status).toBe(403);
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    expect(h.service.calls.callers).toEqual([]);
  });
});
