// Service faults become the one error shape, with the status from the one table.
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, PyboxError, type ErrorCode } from '../../src/core/errors.ts';
import { STATUS_BY_CODE } from '../../src/http/errors.ts';
import { harness, type ErrorJson } from './fake-service.ts';

const EXPECTED: Record<ErrorCode, number> = {
  invalid_request: 400,
  unauthorized: 401,
  unsupported_media_type: 415,
  payload_too_large: 413,
  not_found: 404,
  host_not_allowed: 403,
  origin_not_allowed: 403,
  rate_limited: 429,
  queue_full: 503,
  engine_unavailable: 503,
  image_missing: 503,
  store_unavailable: 503,
  shutting_down: 503,
  queue_unavailable: 503,
  no_workers: 503,
  session_busy: 409,
  session_limit: 429,
  session_ended: 410,
  internal: 500,
};

describe('error mapping', () => {
  it('maps every error code to its status', () => {
    expect(Object.keys(STATUS_BY_CODE).sort()).toEqual([...ERROR_CODES].sort());
    expect(STATUS_BY_CODE).toEqual(EXPECTED);
  });

  it.each(ERROR_CODES.map((code) => [code, EXPECTED[code]] as const))('answers %s thrown by the service with %i', async (code, status) => {
    const { service, post } = harness();
    service.failWith.execute = new PyboxError(code, `failed with ${code}`, { details: { why: code } });
    const res = await post('/v1/executions', { code: 'x' });
    expect(res.status).toBe(status);
    expect(await res.json()).toEqual({ error: { code, message: `failed with ${code}`, details: { why: code } } });
  });

  it('sends Retry-After with queue_full', async () => {
    const { service, post } = harness();
    service.failWith.execute = new PyboxError('queue_full', 'every slot is busy', { retryAfterS: 7 });
    const res = await post('/v1/executions', { code: 'x' });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('7');
    expect(await res.json()).toEqual({ error: { code: 'queue_full', message: 'every slot is busy' } });
  });

  it('sends Retry-After with engine_unavailable, and none when no delay is known', async () => {
    const { service, app, post } = harness();
    service.failWith.execute = new PyboxError('engine_unavailable', 'docker is down', { retryAfterS: 2.5 });
    const res = await post('/v1/executions', { code: 'x' });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('3'); // whole seconds, rounded up
    service.failWith.runtimes = new PyboxError('image_missing', 'no image');
    const other = await app.request('/v1/runtimes');
    expect(other.status).toBe(503);
    expect(other.headers.get('retry-after')).toBeNull();
  });

  it('hides an unexpected error behind a generic 500 and logs it', async () => {
    const { service, logger, post } = harness();
    const bug = new TypeError('cannot read /srv/secret/config of undefined');
    service.failWith.execute = bug;
    const res = await post('/v1/executions', { code: 'x' });
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ error: { code: 'internal', message: 'internal server error' } });
    expect(text).not.toContain('secret');
    expect(text).not.toContain('at ');
    const logged = logger.entries.filter((e) => e.level === 'error');
    expect(logged).toHaveLength(1);
    expect(logged[0]?.fields).toMatchObject({ method: 'POST', path: '/v1/executions', error: bug.message, stack: bug.stack });
  });

  it('treats a thrown non-Error the same way', async () => {
    const { service, post } = harness();
    service.failWith.execute = 'a bare string';
    const res = await post('/v1/executions', { code: 'x' });
    expect(res.status).toBe(500);
    expect(((await res.json()) as ErrorJson).error).toEqual({ code: 'internal', message: 'internal server error' });
  });

  it('logs service-side 5xx faults as warnings, client faults not at all', async () => {
    const { service, logger, post } = harness();
    service.failWith.execute = new PyboxError('store_unavailable', 'disk full');
    await post('/v1/executions', { code: 'x' });
    await post('/v1/executions', { code: 'x', bogus: true });
    // Besides each request's access line.
    expect(logger.entries.filter((e) => e.msg !== 'request').map((e) => [e.level, e.fields?.code])).toEqual([['warn', 'store_unavailable']]);
  });

  it.each([
    ['GET', '/nope'],
    ['GET', '/v1'],
    ['GET', '/v1/executions/a/b'],
    ['GET', '/api/execute-code'],
    ['DELETE', '/v1/executions/abc'],
    ['POST', '/v1/stats'],
  ])('answers %s %s with 404 in the error shape', async (method, path) => {
    const { app } = harness();
    const res = await app.request(path, { method });
    expect(res.status).toBe(404);
    const body = (await res.json()) as ErrorJson;
    expect(body.error.code).toBe('not_found');
    expect(body.error.message).toContain(path);
  });
});
