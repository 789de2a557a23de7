// The session routes through the whole app (authentication, body limits, the one error table),
// over the real SessionService and SessionManager with fake session sandboxes.
import { describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { buildOpenApi } from '../../src/http/openapi.ts';
import { ExecutionResult, SessionFileList, SessionInfo, SessionList } from '../../src/core/schemas.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { RateLimiter } from '../../src/tenancy/rate-limiter.ts';
import { settle, sessionStack } from '../support/fake-sessions.ts';
import { FakeExecutionService, FakeKeys, recordingLogger, TEST_BODY_LIMIT, type ErrorJson } from './fake-service.ts';

function setup(opts: Parameters<typeof sessionStack>[0] = {}, withSessions = true) {
  const stack = sessionStack(opts);
  const keys = new FakeKeys();
  const alice = keys.add('alice');
  const bob = keys.add('bob');
  const app = createApp({
    service: new FakeExecutionService(),
    logger: recordingLogger(),
    bodyLimitBytes: TEST_BODY_LIMIT,
    auth: new Authenticator(keys),
    rateLimiter: new RateLimiter({ now: () => Date.now() }),
    ...(withSessions ? { sessions: stack.service } : {}),
  });
  const as = (key: string) => {
    const auth = { authorization: `Bearer ${key}` };
    const json = { ...auth, 'content-type': 'application/json' };
    return {
      post: (path: string, body: unknown, headers: Record<string, string> = {}) => app.request(path, { method: 'POST', headers: { ...json, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) }),
      put: (path: string, body: unknown) => app.request(path, { method: 'PUT', headers: json, body: JSON.stringify(body) }),
      get: (path: string) => app.request(path, { headers: auth }),
      del: (path: string) => app.request(path, { method: 'DELETE', headers: auth }),
    };
  };
  return { app, stack, alice: as(alice), bob: as(bob) };
}

async function created(res: Response): Promise<SessionInfo> {
  expect(res.status).toBe(201);
  return SessionInfo.parse(await res.json());
}

/** The events of an SSE body, in order. */
function events(text: string): Array<{ event: string; data: unknown }> {
  return text
    .split('\n\n')
    .filter((block) => block.includes('data:'))
    .map((block) => {
      const lines = block.split('\n');
      const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim() ?? 'message';
      const data = lines
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n');
      return { event, data: JSON.parse(data) as unknown };
    });
}

describe('/v1/sessions', () => {
  it('creates (201, Location), lists, shows, runs calls that keep state, and deletes', async () => {
    const { alice } = setup();
    const info = await created(await alice.post('/v1/sessions', { memoryMb: 256, timeoutMs: 5000 }));
    expect(info).toMatchObject({ state: 'active', calls: 0, limits: { memoryMb: 256, timeoutMs: 5000 } });

    const again = await alice.post('/v1/sessions', {});
    expect(again.headers.get('location')).toBe(`/v1/sessions/${(await created(again)).id}`);

    const list = SessionList.parse(await (await alice.get('/v1/sessions')).json());
    expect(list.items.map((s) => s.id)[0]).toBe(info.id);
    expect(list.items).toHaveLength(2);

    const first = await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'x = 20' });
    expect(first.status).toBe(200);
    const second = await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'y = x + 22\nprint(y)' });
    const result = ExecutionResult.parse(await second.json());
    expect(result).toMatchObject({ status: 'completed', stdout: '42\n', session: { sessionId: info.id, call: 2, stateLost: false, ended: false } });
    expect(result.limits.timeoutMs).toBe(5000);

    const shown = SessionInfo.parse(await (await alice.get(`/v1/sessions/${info.id}`)).json());
    expect(shown.calls).toBe(2);

    const deleted = await alice.del(`/v1/sessions/${info.id}`);
    expect(deleted.status).toBe(200);
    expect(SessionInfo.parse(await deleted.json())).toMatchObject({ state: 'ended', endedReason: 'deleted' });

    const gone = await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'print(y)' });
    expect(gone.status).toBe(410);
    expect(((await gone.json()) as ErrorJson).error).toMatchObject({ code: 'session_ended', details: { reason: 'deleted' } });
    expect(SessionInfo.parse(await (await alice.get(`/v1/sessions/${info.id}`)).json()).state).toBe('ended');
  });

  it("answers another tenant's session exactly as an unknown one, on every route", async () => {
    const { alice, bob } = setup();
    const info = await created(await alice.post('/v1/sessions', {}));
    const pairs: Array<[(id: string) => Response | Promise<Response>, string]> = [
      [(id) => bob.get(`/v1/sessions/${id}`), 'get'],
      [(id) => bob.del(`/v1/sessions/${id}`), 'delete'],
      [(id) => bob.post(`/v1/sessions/${id}/executions`, { code: 'x = 1' }), 'call'],
      [(id) => bob.put(`/v1/sessions/${id}/files`, { files: [{ path: 'a', content: 'a' }] }), 'put'],
      [(id) => bob.get(`/v1/sessions/${id}/files`), 'list files'],
      [(id) => bob.get(`/v1/sessions/${id}/files/a`), 'get file'],
    ];
    for (const [call, what] of pairs) {
      const foreign = await call(info.id);
      const unknown = await call('no-such-session');
      expect(foreign.status, what).toBe(404);
      expect(unknown.status, what).toBe(404);
      const a = (await foreign.json()) as ErrorJson;
      const b = (await unknown.json()) as ErrorJson;
      expect(a.error.code).toBe('not_found');
      expect(a.error.message.replace(info.id, 'X')).toBe(b.error.message.replace('no-such-session', 'X'));
    }
    expect(SessionList.parse(await (await bob.get('/v1/sessions')).json()).items).toEqual([]);
    // Alice's session is untouched.
    expect((await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'x = 1' })).status).toBe(200);
  });

  it('streams a call as server-sent events with Accept: text/event-stream, the result last', async () => {
    const { alice } = setup();
    const info = await created(await alice.post('/v1/sessions', {}));
    await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'x = 1\ny = 2' });
    const res = await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'print(x)\nprint(y)' }, { accept: 'text/event-stream' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const got = events(await res.text());
    expect(got.map((e) => e.event)).toEqual(['stdout', 'stdout', 'result']);
    expect(got.slice(0, 2).map((e) => (e.data as { text: string }).text).join('')).toBe('1\n2\n');
    expect(ExecutionResult.parse(got[2]!.data)).toMatchObject({ stdout: '1\n2\n', session: { call: 2 } });
  });

  it('answers a streamed call to an ended session as a plain 410, before any stream starts', async () => {
    const { alice } = setup();
    const info = await created(await alice.post('/v1/sessions', {}));
    await alice.del(`/v1/sessions/${info.id}`);
    const res = await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'x = 1' }, { accept: 'text/event-stream' });
    expect(res.status).toBe(410);
    expect(res.headers.get('content-type')).toContain('application/json');
    expect(((await res.json()) as ErrorJson).error.code).toBe('session_ended');
  });

  it('refuses a call while another runs (409 session_busy)', async () => {
    const { alice } = setup();
    const info = await created(await alice.post('/v1/sessions', {}));
    const running = alice.post(`/v1/sessions/${info.id}/executions`, { code: 'sleep' });
    await settle();
    const busy = await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'x = 1' });
    expect(busy.status).toBe(409);
    expect(((await busy.json()) as ErrorJson).error.code).toBe('session_busy');
    // Ending the session stops the running call.
    await alice.del(`/v1/sessions/${info.id}`);
    const stopped = ExecutionResult.parse(await (await running).json());
    expect(stopped).toMatchObject({ status: 'internal_error', session: { ended: true } });
  });

  it('uploads, lists and downloads files (raw bytes, path percent-encoded as one segment)', async () => {
    const { alice } = setup({ sessions: { maxDownloadBytes: 1024 } });
    const info = await created(await alice.post('/v1/sessions', { files: [{ path: 'start.txt', content: 'go' }] }));
    const put = await alice.put(`/v1/sessions/${info.id}/files`, {
      files: [
        { path: 'data/in.csv', content: 'a,b\n1,2\n' },
        { path: 'big.bin', content: Buffer.alloc(1500, 7).toString('base64'), encoding: 'base64' },
      ],
    });
    expect(put.status).toBe(200);
    expect(SessionFileList.parse(await put.json()).files.map((f) => f.path)).toEqual(['big.bin', 'data/in.csv', 'start.txt']);
    const listed = SessionFileList.parse(await (await alice.get(`/v1/sessions/${info.id}/files`)).json());
    expect(listed).toEqual({ files: [{ path: 'big.bin', size: 1500 }, { path: 'data/in.csv', size: 8 }, { path: 'start.txt', size: 2 }], truncated: false });

    const file = await alice.get(`/v1/sessions/${info.id}/files/${encodeURIComponent('data/in.csv')}`);
    expect(file.status).toBe(200);
    expect(file.headers.get('content-type')).toBe('application/octet-stream');
    expect(file.headers.get('content-disposition')).toBe("attachment; filename*=UTF-8''in.csv");
    expect(file.headers.get('x-content-type-options')).toBe('nosniff');
    expect(Buffer.from(await file.arrayBuffer()).toString()).toBe('a,b\n1,2\n');

    expect((await alice.get(`/v1/sessions/${info.id}/files/big.bin`)).status).toBe(413);
    expect((await alice.get(`/v1/sessions/${info.id}/files/missing.txt`)).status).toBe(404);
    // A path no file can have is a 404 too, never a look outside the work directory.
    expect((await alice.get(`/v1/sessions/${info.id}/files/${encodeURIComponent('../etc/passwd')}`)).status).toBe(404);
    const reserved = await alice.put(`/v1/sessions/${info.id}/files`, { files: [{ path: '../x', content: '' }] });
    expect(reserved.status).toBe(400);
  });

  it('validates bodies: unknown fields, bad limits, over the body limit, not JSON', async () => {
    const { alice } = setup();
    expect((await alice.post('/v1/sessions', { nope: 1 })).status).toBe(400);
    expect((await alice.post('/v1/sessions', { timeoutMs: 1 })).status).toBe(400);
    expect((await alice.post('/v1/sessions', { idleTimeoutMs: 10 })).status).toBe(400);
    const info = await created(await alice.post('/v1/sessions', {}));
    expect((await alice.post(`/v1/sessions/${info.id}/executions`, {})).status).toBe(400);
    expect((await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'x = 1', args: [] })).status).toBe(400);
    expect((await alice.post(`/v1/sessions/${info.id}/executions`, { code: 'x'.repeat(TEST_BODY_LIMIT + 10) })).status).toBe(413);
    expect((await alice.post(`/v1/sessions/${info.id}/executions`, 'not json')).status).toBe(400);
    expect((await alice.put(`/v1/sessions/${info.id}/files`, { files: [] })).status).toBe(400);
  });

  it('answers 429 session_limit past the per-tenant cap, 401 without a key', async () => {
    const { alice, app } = setup({ sessions: { maxPerTenant: 1 } });
    await created(await alice.post('/v1/sessions', {}));
    const refused = await alice.post('/v1/sessions', {});
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as ErrorJson).error.code).toBe('session_limit');
    expect((await app.request('/v1/sessions')).status).toBe(401);
  });

  it('serves no session routes without sessions, and documents them with', async () => {
    const without = setup({}, false);
    expect((await without.alice.post('/v1/sessions', {})).status).toBe(404);
    const { app, alice } = setup();
    const doc = buildOpenApi(
      app.openAPIRegistry.definitions.flatMap((d) => (d.type === 'route' ? [d.route] : [])),
      'test',
    );
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/v1/sessions'))).toEqual([
      '/v1/sessions',
      '/v1/sessions/{id}',
      '/v1/sessions/{id}/executions',
      '/v1/sessions/{id}/files',
      '/v1/sessions/{id}/files/{path}',
    ]);
    const served = await alice.get('/openapi.json');
    expect(served.status).toBe(200);
    const paths = ((await served.json()) as { paths: Record<string, Record<string, unknown>> }).paths;
    expect(Object.keys(paths['/v1/sessions/{id}/files/{path}'] ?? {})).toEqual(['get']);
  });
});
