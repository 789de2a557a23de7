// The typed client against a scripted fetch: what it sends, how it parses, which error class each
// answer becomes, retries, timeouts. The real service is exercised in test/agents/.
import { describe, expect, it } from 'vitest';
import { clientFromEnv, PyboxClient, type FetchLike } from '../../src/client/client.ts';
import {
  AuthError,
  ConnectionError,
  InvalidRequestError,
  NotFoundError,
  PyboxClientError,
  QueueFullError,
  RateLimitError,
  ServerError,
  ServiceUnavailableError,
  TimeoutError,
  UnexpectedResponseError,
} from '../../src/client/errors.ts';
import { ExecutionResult } from '../../src/core/schemas.ts';

const RESULT = ExecutionResult.parse({
  id: 'exec-1',
  status: 'completed',
  success: true,
  exitCode: 0,
  signal: null,
  stdout: '2\n',
  stderr: '',
  truncated: { stdout: false, stderr: false },
  durationMs: 12,
  error: null,
  feedback: 'The code ran successfully in 0.01 s (exit code 0).\n\nstdout:\n2',
  runtime: 'runc',
  limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 },
  createdAt: '2026-01-01T00:00:00.000Z',
  finishedAt: '2026-01-01T00:00:00.012Z',
});

type Sent = { url: string; init: RequestInit };
const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
const errorBody = (code: string, message = `${code} happened`, details?: unknown) => ({ error: { code, message, ...(details ? { details } : {}) } });

/** A fetch that answers from a list, one response per call, and records what it was sent. */
function scripted(...answers: Array<Response | (() => Response | Promise<Response>)>): FetchLike & { sent: Sent[] } {
  const sent: Sent[] = [];
  const fn = (async (url: string, init: RequestInit) => {
    sent.push({ url, init });
    const next = answers.shift();
    if (!next) throw new Error('no more scripted answers');
    return typeof next === 'function' ? next() : next;
  }) as FetchLike & { sent: Sent[] };
  fn.sent = sent;
  return fn;
}

describe('PyboxClient requests', () => {
  it('posts the request as JSON with the API key, and parses the result', async () => {
    const fetch = scripted(json(200, RESULT));
    const client = new PyboxClient({ baseUrl: 'http://box:9000/', apiKey: 'pk_test', fetch });
    const r = await client.execute({ code: 'print(1+1)', timeoutMs: 5000 });
    expect(r).toEqual(RESULT);
    const { url, init } = fetch.sent[0]!;
    expect(url).toBe('http://box:9000/v1/executions');
    expect(init.method).toBe('POST');
    expect(init.headers).toMatchObject({ authorization: 'Bearer pk_test', 'content-type': 'application/json', accept: 'application/json' });
    expect(JSON.parse(String(init.body))).toEqual({ code: 'print(1+1)', timeoutMs: 5000 });
  });

  it('builds the paths and query strings of the other calls', async () => {
    const page = { items: [RESULT], nextCursor: 'c2' };
    const fetch = scripted(json(200, RESULT), json(200, page), json(200, { items: [], nextCursor: null }));
    const client = new PyboxClient({ fetch });
    await client.get('a/b');
    expect(await client.history({ limit: 5, status: 'error', cursor: 'c1' })).toEqual(page);
    await client.history();
    expect(fetch.sent.map((s) => s.url)).toEqual([
      'http://127.0.0.1:8080/v1/executions/a%2Fb',
      'http://127.0.0.1:8080/v1/executions?limit=5&status=error&cursor=c1',
      'http://127.0.0.1:8080/v1/executions',
    ]);
    expect(fetch.sent[0]!.init.headers).not.toHaveProperty('authorization');
  });

  it('is configured from PYBOX_URL and PYBOX_API_KEY', async () => {
    const fetch = scripted(json(200, RESULT), json(200, RESULT));
    await clientFromEnv({ PYBOX_URL: 'http://elsewhere:1234', PYBOX_API_KEY: 'k' }, { fetch }).get('x');
    await clientFromEnv({ PYBOX_URL: '', PYBOX_API_KEY: '' }, { fetch }).get('x');
    expect(fetch.sent[0]!.url).toBe('http://elsewhere:1234/v1/executions/x');
    expect(fetch.sent[0]!.init.headers).toMatchObject({ authorization: 'Bearer k' });
    expect(fetch.sent[1]!.url).toBe('http://127.0.0.1:8080/v1/executions/x');
    expect(fetch.sent[1]!.init.headers).not.toHaveProperty('authorization');
  });
});

describe('PyboxClient errors', () => {
  const cases: Array<[number, string, typeof PyboxClientError]> = [
    [400, 'invalid_request', InvalidRequestError],
    [413, 'payload_too_large', InvalidRequestError],
    [415, 'unsupported_media_type', InvalidRequestError],
    [401, 'unauthorized', AuthError],
    [403, 'forbidden', AuthError],
    [404, 'not_found', NotFoundError],
    [429, 'rate_limited', RateLimitError],
    [503, 'queue_full', QueueFullError],
    [503, 'engine_unavailable', ServiceUnavailableError],
    [500, 'internal', ServerError],
  ];

  it.each(cases)('maps HTTP %i %s to its class, keeping code, message and details', async (status, code, Class) => {
    const client = new PyboxClient({ fetch: scripted(json(status, errorBody(code, 'why', [{ path: 'code', message: 'x' }]))), retries: 0 });
    const e = await client.stats().catch((err: unknown) => err);
    expect(e).toBeInstanceOf(Class);
    expect(e).toBeInstanceOf(PyboxClientError);
    expect(e).toMatchObject({ status, code, message: 'why', details: [{ path: 'code', message: 'x' }], name: Class.name });
  });

  it('reads Retry-After, and a queue-full error is a ServiceUnavailableError too', async () => {
    const client = new PyboxClient({ fetch: scripted(json(503, errorBody('queue_full'), { 'retry-after': '45' })), retries: 0 });
    const e = await client.stats().catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ServiceUnavailableError);
    expect((e as QueueFullError).retryAfterS).toBe(45);
  });

  it('names the status when the error body is not pybox JSON', async () => {
    const client = new PyboxClient({ fetch: scripted(new Response('<html>bad gateway</html>', { status: 502 })), retries: 0 });
    const e = await client.stats().catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ServerError);
    expect(e).toMatchObject({ code: 'http_502', message: 'HTTP 502 from GET /v1/stats' });
  });

  it('refuses a success answer that does not match the schema', async () => {
    const client = new PyboxClient({ fetch: scripted(json(200, { ...RESULT, status: 'exploded' })) });
    const e = await client.get('x').catch((err: unknown) => err);
    expect(e).toBeInstanceOf(UnexpectedResponseError);
    expect((e as Error).message).toMatch(/^unexpected answer to GET \/v1\/executions\/x/);
  });

  it('wraps a network failure in ConnectionError', async () => {
    const client = new PyboxClient({
      baseUrl: 'http://127.0.0.1:9',
      fetch: async () => {
        throw new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED 127.0.0.1:9') });
      },
    });
    const e = await client.stats().catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ConnectionError);
    expect((e as Error).message).toBe('cannot reach pybox at http://127.0.0.1:9: connect ECONNREFUSED 127.0.0.1:9');
  });

  const hanging: FetchLike = (_url, init) =>
    new Promise((_resolve, reject) => init.signal?.addEventListener('abort', () => reject(init.signal?.reason), { once: true }));

  it('gives up after timeoutMs with TimeoutError', async () => {
    const e = await new PyboxClient({ fetch: hanging, timeoutMs: 50 }).stats().catch((err: unknown) => err);
    expect(e).toBeInstanceOf(TimeoutError);
    expect((e as Error).message).toContain('within 50 ms');
  });

  it("passes the caller's own abort through unchanged", async () => {
    const controller = new AbortController();
    const pending = new PyboxClient({ fetch: hanging }).execute({ code: 'x' }, { signal: controller.signal }).catch((err: unknown) => err);
    controller.abort(new Error('stop'));
    expect(await pending).toEqual(new Error('stop'));
  });
});

describe('PyboxClient retries', () => {
  const busy = () => json(503, errorBody('queue_full'), { 'retry-after': '0' });

  it('retries a busy answer that names a Retry-After, then succeeds', async () => {
    const fetch = scripted(busy(), busy(), json(200, RESULT));
    expect(await new PyboxClient({ fetch }).execute({ code: 'x' })).toEqual(RESULT);
    expect(fetch.sent).toHaveLength(3);
  });

  it('stops after `retries` and throws the last error', async () => {
    const fetch = scripted(busy(), busy());
    await expect(new PyboxClient({ fetch, retries: 1 }).execute({ code: 'x' })).rejects.toBeInstanceOf(QueueFullError);
    expect(fetch.sent).toHaveLength(2);
  });

  it('does not retry what a retry cannot fix, nor waits for long', async () => {
    const bad = scripted(json(400, errorBody('invalid_request')));
    await expect(new PyboxClient({ fetch: bad }).execute({ code: 'x' })).rejects.toBeInstanceOf(InvalidRequestError);
    expect(bad.sent).toHaveLength(1);
    const slow = scripted(json(429, errorBody('rate_limited'), { 'retry-after': '3600' }));
    await expect(new PyboxClient({ fetch: slow }).execute({ code: 'x' })).rejects.toMatchObject({ retryAfterS: 3600 });
    expect(slow.sent).toHaveLength(1);
  });
});
