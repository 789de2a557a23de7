// Request ids and the access line, in-process: a valid X-Request-Id comes back as it was sent, any
// other is replaced and never echoed or logged; every answer carries one, errors included; each
// request leaves one line with its route, status, time and tenant, never its query or key. Then
// the execution service itself (fake sandboxes, a real pino logger): the execution line carries
// the request id, and a run whose every input and output holds a marker leaves no marker in any line.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { createLogger } from '../../src/core/logger.ts';
import type { Sandboxes } from '../../src/core/ports.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { defaultConfig, localService, ManualClock, MemoryStore, outcome, runReport } from '../unit/fakes.ts';
import { FakeKeys, harness, TEST_BODY_LIMIT } from './fake-service.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const json = { 'content-type': 'application/json' };

describe('X-Request-Id', () => {
  it.each(['abc', 'req-42', 'a.b:c_d-e', '0', 'X'.repeat(128), '3f2c1b9e-1a2b-4c3d-8e9f-0a1b2c3d4e5f'])('echoes a valid id: %s', async (id) => {
    const { service, post } = harness();
    const res = await post('/v1/executions', { code: 'print(1)' }, { ...json, 'X-Request-Id': id });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe(id);
    expect(service.calls.execute[0]?.requestId).toBe(id);
  });

  it.each([
    ['empty', ''],
    ['too long', 'X'.repeat(129)],
    ['a space', 'a b'],
    ['markup', '<script>alert(1)</script>'],
    ['a slash', 'a/b'],
    ['a quote', 'a"b'],
    ['a comma list', 'a,b'],
    ['Latin-1', 'caf\u00e9'],
  ])('replaces an invalid id (%s) with a new one, never echoed nor logged', async (_name, id) => {
    const { service, logger, post } = harness();
    const res = await post('/v1/executions', { code: 'print(1)' }, { ...json, 'X-Request-Id': id });
    expect(res.status).toBe(200);
    const answered = res.headers.get('x-request-id');
    expect(answered).toMatch(UUID);
    expect(service.calls.execute[0]?.requestId).toBe(answered);
    const access = logger.entries.filter((e) => e.msg === 'request');
    expect(access.map((e) => e.fields?.requestId)).toEqual([answered]);
    if (id.length > 1) expect(JSON.stringify(logger.entries)).not.toContain(id);
  });

  it('makes up a different id for each request that brings none', async () => {
    const { app } = harness();
    const ids = await Promise.all([1, 2, 3].map(async () => (await app.request('/v1/stats')).headers.get('x-request-id')));
    for (const id of ids) expect(id).toMatch(UUID);
    expect(new Set(ids).size).toBe(3);
  });

  it('answers the id on errors too: 400, 401, 403, 404, 413, 415, 429, 500, 503', async () => {
    const keys = new FakeKeys();
    const limitedKey = keys.add('team-a', { limits: { ratePerMinute: 1 } });
    const other = { ...json, authorization: `Bearer ${keys.add('team-b')}` };
    const { app, service, post } = harness({ keys });
    const cases: Array<[number, () => Response | Promise<Response>]> = [
      [400, () => post('/v1/executions', { code: 1 }, { ...other, 'X-Request-Id': 'r-400' })],
      [401, () => post('/v1/executions', { code: 'x' }, { ...json, 'X-Request-Id': 'r-401' })],
      [403, () => app.request('/v1/stats', { headers: { ...other, origin: 'https://evil.example', 'X-Request-Id': 'r-403' } })],
      // The one request team-a's rate allows, then one too many.
      [404, () => app.request('/nope', { headers: { authorization: `Bearer ${limitedKey}`, 'X-Request-Id': 'r-404' } })],
      [429, () => app.request('/v1/stats', { headers: { authorization: `Bearer ${limitedKey}`, 'X-Request-Id': 'r-429' } })],
    ];
    for (const [status, call] of cases) {
      const res = await call();
      expect(res.status).toBe(status);
      expect(res.headers.get('x-request-id')).toBe(`r-${status}`);
    }
    const big = await post('/v1/executions', { code: 'x'.repeat(TEST_BODY_LIMIT) }, { ...other, 'X-Request-Id': 'r-413' });
    expect([big.status, big.headers.get('x-request-id')]).toEqual([413, 'r-413']);
    const text = await post('/v1/executions', 'code', { ...other, 'content-type': 'text/plain', 'X-Request-Id': 'r-415' });
    expect([text.status, text.headers.get('x-request-id')]).toEqual([415, 'r-415']);
    service.failWith.execute = new TypeError('a bug');
    const bug = await post('/v1/executions', { code: 'x' }, { ...other, 'X-Request-Id': 'r-500' });
    expect([bug.status, bug.headers.get('x-request-id')]).toEqual([500, 'r-500']);
    service.failWith.execute = new PyboxError('queue_full', 'full', { retryAfterS: 1 });
    const full = await post('/v1/executions', { code: 'x' }, { ...other, 'X-Request-Id': 'r-503' });
    expect([full.status, full.headers.get('x-request-id'), full.headers.get('retry-after')]).toEqual([503, 'r-503', '1']);
  });

  it('may be sent and read by a page of an allowed origin (CORS)', async () => {
    const { app } = harness({ allowedOrigins: ['https://app.example'] });
    const preflight = await app.request('/v1/executions', { method: 'OPTIONS', headers: { host: 'localhost:8080', origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, x-request-id' } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('x-request-id');
    const res = await app.request('/v1/stats', { headers: { host: 'localhost:8080', origin: 'https://app.example', 'X-Request-Id': 'page-1' } });
    expect(res.headers.get('x-request-id')).toBe('page-1');
    expect(res.headers.get('access-control-expose-headers')?.toLowerCase()).toContain('x-request-id');
  });

  it('reaches the service from /mcp tool calls and from the reference design route', async () => {
    const { app, service, post } = harness();
    await post('/api/execute-code', { code: 'print(1)' }, { ...json, 'X-Request-Id': 'legacy-1' });
    const client = new Client({ name: 'pybox-test', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL('http://localhost/mcp'), {
      fetch: async (url, init) => app.request(String(url), init),
      requestInit: { headers: { 'X-Request-Id': 'mcp-1' } },
    });
    await client.connect(transport);
    try {
      await client.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)' } });
    } finally {
      await client.close();
    }
    expect(service.calls.execute.map((c) => c.requestId)).toEqual(['legacy-1', 'mcp-1']);
  });
});

describe('the access line', () => {
  it('names method, route pattern, path, status, duration, tenant and request id: one line per request', async () => {
    const keys = new FakeKeys();
    const key = keys.add('team-a');
    const { app, logger } = harness({ keys });
    const res = await app.request('/v1/executions/abc-123', { headers: { authorization: `Bearer ${key}`, 'X-Request-Id': 'get-1' } });
    expect(res.status).toBe(200);
    const access = logger.entries.filter((e) => e.msg === 'request');
    expect(access).toHaveLength(1);
    expect(access[0]?.level).toBe('info');
    expect(access[0]?.fields).toEqual({
      requestId: 'get-1',
      method: 'GET',
      route: '/v1/executions/:id',
      path: '/v1/executions/abc-123',
      status: 200,
      durationMs: expect.any(Number),
      tenant: 'team-a',
    });
    expect(JSON.stringify(logger.entries)).not.toContain(key.slice(4));
  });

  it('leaves the query string out, and the key of a refused request', async () => {
    const keys = new FakeKeys();
    const key = keys.add('team-a');
    const { app, logger } = harness({ keys });
    await app.request('/v1/executions?limit=5&cursor=SECRET-CURSOR-VALUE', { headers: { authorization: `Bearer ${key}` } });
    await app.request('/v1/stats?token=SECRET-QUERY', { headers: { authorization: 'Bearer pbx_not-a-real-key-SECRET' } });
    const access = logger.entries.filter((e) => e.msg === 'request');
    expect(access.map((e) => [e.fields?.route, e.fields?.path, e.fields?.status, e.fields?.tenant])).toEqual([
      ['/v1/executions', '/v1/executions', 200, 'team-a'],
      ['/v1/stats', '/v1/stats', 401, undefined],
    ]);
    expect(JSON.stringify(logger.entries)).not.toMatch(/SECRET/);
  });

  it('has no route for a path nothing serves, and logs health probes at debug only', async () => {
    const { app, logger } = harness();
    await app.request('/no/such/thing');
    await app.request('/healthz');
    await app.request('/readyz');
    const access = logger.entries.filter((e) => e.msg === 'request');
    expect(access.map((e) => [e.level, e.fields?.route, e.fields?.status])).toEqual([
      ['info', null, 404],
      ['debug', '/healthz', 200],
      ['debug', '/readyz', 200],
    ]);
  });

  it('the error lines of a request carry its id', async () => {
    const { service, logger, post } = harness();
    service.failWith.execute = new PyboxError('store_unavailable', 'disk full');
    await post('/v1/executions', { code: 'x' }, { ...json, 'X-Request-Id': 'fail-1' });
    service.failWith.execute = new TypeError('a bug');
    await post('/v1/executions', { code: 'x' }, { ...json, 'X-Request-Id': 'fail-2' });
    expect(logger.entries.filter((e) => e.msg !== 'request').map((e) => [e.level, e.fields?.requestId])).toEqual([
      ['warn', 'fail-1'],
      ['error', 'fail-2'],
    ]);
  });
});

// ---- the real service behind the app, on fake sandboxes, logging through pino --------------------

const MARKER = 'SeCrEt-MaRkEr-7f3a9c';

class EchoingSandboxes implements Sandboxes {
  readonly jobs: SandboxJob[] = [];
  constructor(private readonly next: (job: SandboxJob) => SandboxOutcome) {}
  async run(job: SandboxJob): Promise<SandboxOutcome> {
    this.jobs.push(job);
    return this.next(job);
  }
}

function realService(next: (job: SandboxJob) => SandboxOutcome) {
  const lines: string[] = [];
  const logger = createLogger('debug', { format: 'json', destination: { write: (s: string) => void lines.push(s) } });
  const sandboxes = new EchoingSandboxes(next);
  const config = defaultConfig();
  let n = 0;
  const service = localService({
    sandboxes,
    engine: { ping: async () => true, imageExists: async () => true },
    store: new MemoryStore(),
    gate: new ConcurrencyGate(2, 10, 3),
    limits: config.limits,
    image: 'pybox-python:test',
    runtime: 'runc',
    availableRuntimes: ['runc'],
    clock: new ManualClock(),
    logger,
    newId: () => `exec-${++n}`,
  });
  const keys = new FakeKeys();
  const key = keys.add('team-a');
  const app = createApp({ service, logger, bodyLimitBytes: 1 << 20, auth: new Authenticator(keys) });
  const parsed = () => lines.join('').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  return { app, key, lines, parsed, sandboxes };
}

describe('the execution line (the real service, pino)', () => {
  it('carries the request id, tenant, status, runtime, times and exit code, beside the access line', async () => {
    const { app, key, parsed } = realService(() => outcome('finished', { report: runReport({ exitCode: 3 }), durationMs: 42 }));
    const res = await app.request('/v1/executions', { method: 'POST', headers: { ...json, authorization: `Bearer ${key}`, 'X-Request-Id': 'run-1' }, body: JSON.stringify({ code: 'import sys; sys.exit(3)' }) });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('run-1');
    const lines = parsed();
    const execution = lines.filter((l) => l.msg === 'execution');
    expect(execution).toHaveLength(1);
    expect(execution[0]).toMatchObject({
      level: 'info',
      executionId: 'exec-1',
      requestId: 'run-1',
      tenant: 'team-a',
      status: 'error',
      runtime: 'runc',
      durationMs: 42,
      queueWaitMs: 0,
      exitCode: 3,
      signal: null,
    });
    expect(typeof execution[0]?.totalMs).toBe('number');
    const access = lines.filter((l) => l.msg === 'request');
    expect(access).toHaveLength(1);
    expect(access[0]).toMatchObject({ level: 'info', requestId: 'run-1', method: 'POST', route: '/v1/executions', status: 200, tenant: 'team-a' });
  });

  it('a run whose code, stdin, args, env, context, files and output hold a marker leaves no marker in any line', async () => {
    const { app, key, lines, parsed, sandboxes } = realService(() =>
      outcome('finished', {
        report: runReport({ exitCode: 1, error: { type: 'ValueError', message: MARKER, line: 1, traceback: `ValueError: ${MARKER}\n` } }),
        stdout: `out ${MARKER}\n`,
        stderr: `err ${MARKER}\n`,
      }),
    );
    const body = {
      code: `print("${MARKER}")\nraise ValueError("${MARKER}")`,
      stdin: MARKER,
      args: [MARKER],
      env: { TOKEN: MARKER },
      context: { token: MARKER },
      files: [{ path: 'data/secret.txt', content: MARKER }],
    };
    const res = await app.request('/v1/executions', { method: 'POST', headers: { ...json, authorization: `Bearer ${key}`, 'X-Request-Id': 'marker-1' }, body: JSON.stringify(body) });
    expect(res.status).toBe(200);
    // The marker did go in and come out: the run saw it and the client got it back.
    expect(JSON.stringify(sandboxes.jobs[0])).toContain(MARKER);
    expect(await res.text()).toContain(MARKER);
    const all = parsed();
    expect(all.map((l) => l.msg)).toEqual(expect.arrayContaining(['execution', 'request']));
    const raw = lines.join('');
    expect(raw).not.toContain(MARKER);
    expect(raw).not.toContain(key.slice(4));
  });

  it('an internal failure is a warning with the request id, and its why line names the request too', async () => {
    const { app, key, parsed } = realService(() => outcome('failed', { failure: 'the engine went away' }));
    await app.request('/v1/executions', { method: 'POST', headers: { ...json, authorization: `Bearer ${key}`, 'X-Request-Id': 'fail-1' }, body: '{"code":"x"}' });
    const lines = parsed().filter((l) => l.requestId === 'fail-1');
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      ['error', 'execution failed on our side'],
      ['warn', 'execution'],
      ['info', 'request'],
    ]);
  });
});
