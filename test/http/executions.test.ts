// POST/GET /v1/executions: what reaches the service, and what is turned away before it.
import { describe, expect, it } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import { harness, sampleResult, type ErrorJson } from './fake-service.ts';

const paths = (body: ErrorJson) => (body.error.details ?? []).map((d) => d.path);

describe('POST /v1/executions', () => {
  it('passes the parsed request to the service and returns its result', async () => {
    const { service, post } = harness();
    const res = await post('/v1/executions', { code: 'print(1)', timeoutMs: 5000, cpus: 0.5, files: [{ path: 'data/a.txt', content: 'x' }], context: { v: [1, { a: null }] } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(sampleResult());
    expect(service.calls.execute).toHaveLength(1);
    // `encoding` is filled in by the schema's default: the service sees the parsed value, not the raw one.
    expect(service.calls.execute[0]?.request).toStrictEqual({
      code: 'print(1)',
      timeoutMs: 5000,
      cpus: 0.5,
      files: [{ path: 'data/a.txt', content: 'x', encoding: 'utf8' }],
      context: { v: [1, { a: null }] },
    });
    expect(service.calls.execute[0]?.signal).toBeInstanceOf(AbortSignal);
  });

  it('accepts a charset parameter on the media type', async () => {
    const { post } = harness();
    const res = await post('/v1/executions', { code: 'x' }, { 'content-type': 'Application/JSON; charset=utf-8' });
    expect(res.status).toBe(200);
  });

  it('rejects an unknown field and names it', async () => {
    const { service, post } = harness();
    const res = await post('/v1/executions', { code: 'x', bogus: 1 });
    expect(res.status).toBe(400);
    const body = (await res.json()) as ErrorJson;
    expect(body.error.code).toBe('invalid_request');
    expect(body.error.details).toEqual([{ path: 'bogus', message: 'unknown field' }]);
    expect(service.calls.execute).toHaveLength(0);
  });

  it('rejects an unknown field inside a nested object at its full path', async () => {
    const { post } = harness();
    const res = await post('/v1/executions', { code: 'x', files: [{ path: 'a', content: '', mode: 7 }] });
    expect(paths((await res.json()) as ErrorJson)).toEqual(['files[0].mode']);
  });

  it.each([
    ['code is a number', { code: 123 }, 'code'],
    ['code is missing', {}, 'code'],
    ['code is empty', { code: '' }, 'code'],
    ['args is a string', { code: 'x', args: 'a b' }, 'args'],
    ['env value is a number', { code: 'x', env: { A: 1 } }, 'env.A'],
    ['a file path escapes', { code: 'x', files: [{ path: '../etc/passwd', content: '' }] }, 'files[0].path'],
    ['a context key is a keyword', { code: 'x', context: { class: 1 } }, 'context.class'],
    ['cpus is a string', { code: 'x', cpus: '2' }, 'cpus'],
  ])('rejects wrong types: %s', async (_name, body, path) => {
    const { service, post } = harness();
    const res = await post('/v1/executions', body);
    expect(res.status).toBe(400);
    expect(paths((await res.json()) as ErrorJson)).toContain(path);
    expect(service.calls.execute).toHaveLength(0);
  });

  it.each([0, -5, 1.5, 86_400_001, 1e12])('rejects timeoutMs %s', async (timeoutMs) => {
    const { service, post } = harness();
    const res = await post('/v1/executions', { code: 'x', timeoutMs });
    expect(res.status).toBe(400);
    expect(paths((await res.json()) as ErrorJson)).toEqual(['timeoutMs']);
    expect(service.calls.execute).toHaveLength(0);
  });

  it.each(['timeoutMs', 'memoryMb', 'cpus'])('rejects %s of 1e999, which JSON.parse turns into Infinity', async (field) => {
    const { service, post } = harness();
    expect(JSON.parse('1e999')).toBe(Infinity);
    const res = await post('/v1/executions', `{"code":"x","${field}":1e999}`);
    expect(res.status).toBe(400);
    expect(paths((await res.json()) as ErrorJson)).toEqual([field]);
    expect(service.calls.execute).toHaveLength(0);
  });

  it.each(['{"code":', 'print(1)', '', "{'code': 'x'}"])('rejects a body that is not JSON: %j', async (text) => {
    const { service, post } = harness();
    const res = await post('/v1/executions', text);
    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorJson).error.code).toBe('invalid_request');
    expect(service.calls.execute).toHaveLength(0);
  });

  it.each(['null', '[]', '"code"'])('rejects JSON that is not an object: %s', async (text) => {
    const { post } = harness();
    const res = await post('/v1/executions', text);
    expect(res.status).toBe(400);
  });

  it.each<Record<string, string>>([{ 'content-type': 'text/plain' }, { 'content-type': 'application/jsonx' }, {}])('answers 415 for content-type %j', async (headers) => {
    const { service, post } = harness();
    const res = await post('/v1/executions', { code: 'x' }, headers);
    expect(res.status).toBe(415);
    expect(((await res.json()) as ErrorJson).error.code).toBe('unsupported_media_type');
    expect(service.calls.execute).toHaveLength(0);
  });
});

describe('GET /v1/executions/:id', () => {
  it('returns the stored result', async () => {
    const { app, service } = harness();
    const res = await app.request('/v1/executions/abc-123');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(sampleResult({ id: 'abc-123' }));
    expect(service.calls.get).toEqual(['abc-123']);
  });

  it('answers 404 in the error shape when the service has no such id', async () => {
    const { app, service } = harness();
    service.failWith.get = new PyboxError('not_found', 'no execution with id nope');
    const res = await app.request('/v1/executions/nope');
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { code: 'not_found', message: 'no execution with id nope' } });
  });

  it('answers 404 without asking the service for an absurd id', async () => {
    const { app, service } = harness();
    for (const id of ['x'.repeat(101), 'a%20b', '%00']) {
      const res = await app.request(`/v1/executions/${id}`);
      expect(res.status, id).toBe(404);
      expect(((await res.json()) as ErrorJson).error.code).toBe('not_found');
    }
    expect(service.calls.get).toEqual([]);
    expect((await app.request(`/v1/executions/${'x'.repeat(100)}`)).status).toBe(200);
  });
});

describe('GET /v1/executions', () => {
  it('defaults the limit and returns the page', async () => {
    const { app, service } = harness();
    const res = await app.request('/v1/executions');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ items: [sampleResult()], nextCursor: null });
    expect(service.calls.history).toStrictEqual([{ limit: 20 }]);
  });

  it('passes limit, status and cursor parsed', async () => {
    const { app, service } = harness();
    const res = await app.request('/v1/executions?limit=5&status=timeout&cursor=abc');
    expect(res.status).toBe(200);
    expect(service.calls.history).toStrictEqual([{ limit: 5, status: 'timeout', cursor: 'abc' }]);
  });

  it.each([
    ['limit=0', 'limit'],
    ['limit=501', 'limit'],
    ['limit=abc', 'limit'],
    ['limit=2.5', 'limit'],
    ['limit=1e999', 'limit'],
    ['status=running', 'status'],
    [`cursor=${'c'.repeat(201)}`, 'cursor'],
    ['offset=10', 'offset'],
  ])('rejects %s', async (query, path) => {
    const { app, service } = harness();
    const res = await app.request(`/v1/executions?${query}`);
    expect(res.status).toBe(400);
    expect(paths((await res.json()) as ErrorJson)).toEqual([path]);
    expect(service.calls.history).toEqual([]);
  });
});

describe('context variable names', () => {
  it('says why a context key was refused', async () => {
    const h = harness();
    const res = await h.app.request('/v1/executions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ code: 'print(1)', context: { 'not valid': 1 } }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { details: Array<{ path: string; message: string }> } };
    expect(body.error.details).toContainEqual({ path: 'context.not valid', message: 'invalid name: must be a Python identifier (a letter or _, then letters, digits or _)' });
  });
});
