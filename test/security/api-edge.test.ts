// Attack class: the API edge. Bad JSON, oversized and endless bodies, wrong types, negative, zero,
// huge and non-finite numbers, unknown fields, prototype keys, deep nesting, floods of requests,
// slow or silent clients, oversized headers and request smuggling.
import { connect } from 'node:net';
import { describe, expect } from 'vitest';
import { battery, outOf, py, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

interface RawReply {
  /** What the server sent before it closed (or before the deadline). */
  text: string;
  /** When the server closed the connection, in ms since it was opened; null if it never did. */
  closedAfterMs: number | null;
}

/** Speaks raw HTTP/1.1: sends `parts` with `gapMs` between them and reads until close or `deadlineMs`. */
function rawHttp(url: string, parts: Array<string | Buffer>, opts: { gapMs?: number; deadlineMs?: number } = {}): Promise<RawReply> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const t0 = Date.now();
    const socket = connect(Number(port), '127.0.0.1');
    let text = '';
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      socket.destroy();
      resolve({ text, closedAfterMs: closed ? Date.now() - t0 : null });
    };
    const deadline = setTimeout(() => finish(false), opts.deadlineMs ?? 10_000);
    socket.on('data', (d) => (text += d.toString('latin1')));
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
    let i = 0;
    const next = () => {
      if (done || i >= parts.length) return;
      const part = parts[i++];
      if (part !== undefined && !socket.destroyed) socket.write(part);
      setTimeout(next, opts.gapMs ?? 0);
    };
    socket.on('connect', next);
  });
}

const statusOf = (raw: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);

describe.each(runtimes)('the API edge under %s', (runtime) => {
  const sec = battery(runtime);
  const post = (body: unknown) => ({ method: 'POST', body });
  type ErrorJson = { error: { code: string; message: string; details?: Array<{ path: string; message: string }> } };

  sec('bad JSON, a wrong media type and an empty body are refused with their own codes', async ({ request }) => {
    const cases: Array<[{ method: string; body?: unknown; headers?: Record<string, string> }, number, string]> = [
      [{ method: 'POST', body: '{"code": "print(1)"' }, 400, 'invalid_request'],
      [{ method: 'POST', body: "{'code': 'print(1)'}" }, 400, 'invalid_request'],
      [{ method: 'POST', body: '' }, 400, 'invalid_request'],
      [{ method: 'POST', body: 'code=print(1)', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415, 'unsupported_media_type'],
      [{ method: 'POST', body: '{"code":"print(1)"}', headers: { 'content-type': 'text/plain' } }, 415, 'unsupported_media_type'],
      [{ method: 'POST', body: '[1, 2, 3]' }, 400, 'invalid_request'],
      [{ method: 'POST', body: 'null' }, 400, 'invalid_request'],
    ];
    for (const [init, status, code] of cases) {
      const res = await request('/v1/executions', init);
      expect(res.status, String(init.body)).toBe(status);
      expect((res.json as ErrorJson).error.code).toBe(code);
    }
  });

  sec('wrong types for every field are refused, each naming the field', async ({ request }) => {
    const wrong: Record<string, unknown> = {
      code: 42,
      stdin: ['x'],
      args: 'x',
      env: ['A=1'],
      files: { path: 'x' },
      context: 'x',
      timeoutMs: '1000',
      memoryMb: true,
      cpus: '1',
    };
    for (const [field, value] of Object.entries(wrong)) {
      const body = field === 'code' ? { code: value } : { code: 'print(1)', [field]: value };
      const res = await request('/v1/executions', post(body));
      expect(res.status, field).toBe(400);
      expect((res.json as ErrorJson).error.details?.[0]?.path, field).toBe(field);
    }
  });

  sec('negative, zero, fractional, huge and non-finite numbers are refused; large valid ones are clamped', async ({ request, run, pybox }) => {
    const bad: Array<[string, string]> = [
      ['timeoutMs', '0'],
      ['timeoutMs', '-1'],
      ['timeoutMs', '1.5'],
      ['timeoutMs', '1e400'],
      ['timeoutMs', '-1e400'],
      ['timeoutMs', '1e300'],
      ['memoryMb', '0'],
      ['memoryMb', '-128'],
      ['memoryMb', '9007199254740993'],
      ['cpus', '0'],
      ['cpus', '-2'],
      ['cpus', '1e400'],
    ];
    for (const [field, literal] of bad) {
      const res = await request('/v1/executions', { method: 'POST', body: `{"code":"print(1)","${field}":${literal}}` });
      expect(res.status, `${field}=${literal}`).toBe(400);
      expect((res.json as ErrorJson).error.details?.[0]?.path).toBe(field);
    }
    const r = await run({ code: 'print(1)', timeoutMs: 86_400_000, memoryMb: 1_048_576, cpus: 1024 });
    const { max } = pybox.config.limits;
    expect(r.limits).toMatchObject({ timeoutMs: max.timeoutMs, memoryMb: max.memoryMb, cpus: max.cpus });
  });

  sec('unknown fields are refused by name, at the top and inside files', async ({ request }) => {
    const top = await request('/v1/executions', post({ code: 'print(1)', image: 'alpine', privileged: true }));
    expect(top.status).toBe(400);
    expect((top.json as ErrorJson).error.details?.map((d) => d.path).sort()).toEqual(['image', 'privileged']);
    const nested = await request('/v1/executions', post({ code: 'print(1)', files: [{ path: 'a', content: 'b', mode: 4095 }] }));
    expect(nested.status).toBe(400);
    expect((nested.json as ErrorJson).error.details?.[0]?.path).toBe('files[0].mode');
  });

  sec('prototype keys neither pollute the service nor reach the code as anything but data', async ({ request, run }) => {
    const proto = await request('/v1/executions', { method: 'POST', body: '{"code":"print(1)","__proto__":{"polluted":true}}' });
    expect(proto.status).toBe(400);
    const dunder = await request('/v1/executions', post({ code: 'print(1)', context: { __builtins__: {} } }));
    expect(dunder.status).toBe(400);
    const r = await run({ code: py('out["ctx"] = sorted(k for k in globals() if k.startswith("c"))'), context: JSON.parse('{"constructor":{"prototype":{"polluted":1}}}') as Record<string, unknown> });
    expect(outOf(r).ctx).toContain('constructor');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });

  sec('deeply nested JSON is refused with 400, not a crash; reasonable nesting reaches the code', async ({ request, run }) => {
    for (const depth of [65, 5000, 1_000_000]) {
      const body = `{"code":"print(1)","context":{"a":${'['.repeat(depth)}${']'.repeat(depth)}}}`;
      const res = await request('/v1/executions', { method: 'POST', body });
      expect(res.status, `depth ${depth}`).toBe(400);
      expect((res.json as ErrorJson).error.message).toBe('the request body nests deeper than 64 levels');
    }
    const ok = await run({ code: 'd = 0\nx = a\nwhile isinstance(x, list) and x:\n    x = x[0]\n    d += 1\nprint(d)', context: { a: JSON.parse('['.repeat(60) + ']'.repeat(60)) as unknown } });
    expect(ok.stdout).toBe('59\n');
  });

  sec('a body over the limit is refused with 413 before it is read, with or without a length', async ({ url, pybox }) => {
    const limit = pybox.config.server.bodyLimitBytes;
    // Announces 1 GB and sends nothing: the answer comes at once, the body is never awaited.
    const announced = await rawHttp(url, [`POST /v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${1 << 30}\r\n\r\n`], { deadlineMs: 5000 });
    expect(statusOf(announced.text)).toBe(413);
    // Chunked, without a length: cut off once the limit is passed.
    const chunk = Buffer.alloc(1 << 20, 0x61);
    const parts: Array<string | Buffer> = [`POST /v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`];
    for (let sent = 0; sent <= limit + (1 << 20); sent += chunk.length) parts.push(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
    const chunked = await rawHttp(url, parts, { deadlineMs: 20_000 });
    expect(statusOf(chunked.text)).toBe(413);
    expect(chunked.text).toContain('payload_too_large');
  });

  sec('a flood of concurrent requests gets 503 with Retry-After past the queue; the rest run', async ({ request }) => {
    const slow = { code: 'import time\ntime.sleep(1.5)\nprint("ran")', timeoutMs: 20_000 };
    const answers = await Promise.all(Array.from({ length: 14 }, () => request('/v1/executions', post(slow))));
    const refused = answers.filter((a) => a.status === 503);
    const ran = answers.filter((a) => a.status === 200);
    expect(refused.length + ran.length).toBe(14);
    expect(refused.length).toBe(14 - 2 - 4); // 2 running, 4 waiting
    for (const a of refused) {
      expect(a.headers.get('retry-after')).toBe('2');
      expect((a.json as ErrorJson).error.code).toBe('queue_full');
    }
    for (const a of ran) expect((a.json as { stdout: string }).stdout).toBe('ran\n');
  }, { config: { concurrency: { maxConcurrent: 2, maxQueue: 4, retryAfterS: 2 } } });

  sec('a client that sends its headers slowly, or never finishes them, is cut off at the header timeout', async ({ url, request }) => {
    const silent = rawHttp(url, ['POST /v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\n'], { deadlineMs: 8000 });
    const dripping = rawHttp(url, ['GET /healthz HTTP/1.1\r\n', 'Host: 127.0.0.1\r\n', 'X-A: 1\r\n', 'X-B: 2\r\n', 'X-C: 3\r\n', 'X-D: 4\r\n', 'X-E: 5\r\n', 'X-F: 6\r\n'], { gapMs: 400, deadlineMs: 8000 });
    // Meanwhile the service answers everyone else.
    expect((await request('/healthz')).status).toBe(200);
    for (const raw of [await silent, await dripping]) {
      expect(statusOf(raw.text)).toBe(408);
      expect(raw.closedAfterMs).not.toBeNull();
      expect(raw.closedAfterMs ?? 0).toBeLessThan(1000 + 1500); // headersTimeoutMs + the checking interval + slack
    }
  }, { config: { server: { headersTimeoutMs: 1000, requestTimeoutMs: 2000 } } });

  sec('a client that trickles its body is cut off at the request timeout', async ({ url }) => {
    const head = 'POST /v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n';
    const raw = await rawHttp(url, [head, '{', '"', 'c', 'o', 'd', 'e', '"', ':', '"', 'p', 'r', 'i', 'n', 't'], { gapMs: 300, deadlineMs: 8000 });
    expect(statusOf(raw.text)).toBe(408);
    expect(raw.closedAfterMs ?? 99_999).toBeLessThan(2000 + 1500);
  }, { config: { server: { headersTimeoutMs: 1000, requestTimeoutMs: 2000 } } });

  sec('oversized headers get 431, and a request with both a length and chunking (smuggling) gets 400', async ({ url }) => {
    const big = await rawHttp(url, [`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`], { deadlineMs: 5000 });
    expect(statusOf(big.text)).toBe(431);
    const smuggle = await rawHttp(
      url,
      ['POST /v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'],
      { deadlineMs: 5000 },
    );
    expect(statusOf(smuggle.text)).toBe(400);
    expect(smuggle.text.match(/HTTP\/1\.1 /g)?.length).toBe(1); // the smuggled request is never answered
  });

  sec('unknown routes and methods, and bad query strings, get JSON errors', async ({ request }) => {
    for (const [path, method, status] of [
      ['/v1/nothing', 'GET', 404],
      ['/v1/executions', 'DELETE', 404],
      ['/v1/executions/x', 'PUT', 404],
      ['/../../etc/passwd', 'GET', 404],
      ['/v1/executions?limit=0', 'GET', 400],
      ['/v1/executions?limit=-5', 'GET', 400],
      ['/v1/executions?limit=1e9', 'GET', 400],
      ['/v1/executions?limit=abc', 'GET', 400],
      ['/v1/executions?status=pwned', 'GET', 400],
      ['/v1/executions?cursor=%00%ff', 'GET', 400],
      ['/v1/executions?cursor=czk5OTk5OTk5OTk5OTk5OTk5OTk5', 'GET', 400],
      ['/v1/executions?extra=1', 'GET', 400],
    ] as const) {
      const res = await request(path, { method });
      expect(res.status, `${method} ${path}`).toBe(status);
      expect((res.json as ErrorJson).error.code, `${method} ${path}`).toMatch(/^(not_found|invalid_request)$/);
    }
  });

  sec('strings that are not Unicode (lone surrogates, in values or keys) are refused with 400 at their path, and start no sandbox', async ({ request, containers }) => {
    for (const [body, path] of [
      ['{"code":"print(1)","env":{"A":"\\ud800"}}', 'env.A'],
      ['{"code":"print(1)","context":{"\\udc00":1}}', 'context.\udc00'],
      ['{"code":"print(\'\\ud83d\')"}', 'code'],
    ] as const) {
      const res = await request('/v1/executions', { method: 'POST', body });
      expect(res.status, body).toBe(400);
      expect((res.json as ErrorJson).error.code).toBe('invalid_request');
      expect((res.json as ErrorJson).error.details?.[0]?.path).toBe(path);
    }
    expect(containers()).toEqual([]);
  });

  sec('invalid UTF-8 and NUL bytes in a request are handled, never a 500', async ({ url, run }) => {
    const body = Buffer.concat([Buffer.from('{"code":"print(\'a'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('b\')"}')]);
    const raw = await rawHttp(url, [`POST /v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`, body], { deadlineMs: 15_000 });
    expect(statusOf(raw.text)).toBe(200);
    const nul = await run({ code: 'print(1)\u0000' });
    expect(nul.status).toBe('validation_failed');
    expect(nul.error?.message).toContain('null bytes');
  });
});
