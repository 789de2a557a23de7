// Strings that are not Unicode: a lone surrogate (a `\ud800` escape with no partner) cannot be
// encoded for the sandbox, and once reached the runner as a fault reported as the code's own
// (exit code 70). Every request body is refused with a 400 naming the path, keys included.
import { describe, expect, it } from 'vitest';
import { illFormedStringAt } from '../../src/http/validate.ts';
import { harness, type ErrorJson } from './fake-service.ts';

describe('request bodies with lone surrogates', () => {
  it.each([
    ['an env value', '{"code":"print(1)","env":{"A":"\\ud800"}}', 'env.A'],
    ['the code', '{"code":"print(\'\\udc00\')"}', 'code'],
    ['an argument', '{"code":"x","args":["ok","a\\ud83d"]}', 'args[1]'],
    ['stdin', '{"code":"x","stdin":"\\udfff\\ud800"}', 'stdin'],
    ['a file path', '{"code":"x","files":[{"path":"a\\ud800.txt","content":""}]}', 'files[0].path'],
    ['a value deep in context', '{"code":"x","context":{"v":[1,{"w":["\\ud800"]}]}}', 'context.v[1].w[0]'],
    ['a context key', '{"code":"x","context":{"\\ud800":1}}', 'context.\ud800'],
    ['an unknown field\'s name', '{"code":"x","\\udc00":1}', '\udc00'],
  ])('refuses %s with 400 invalid_request at its path, and runs nothing', async (_what, body, path) => {
    const h = harness();
    const res = await h.post('/v1/executions', body);
    expect(res.status).toBe(400);
    const json = (await res.json()) as ErrorJson;
    expect(json.error.code).toBe('invalid_request');
    expect(json.error.details).toEqual([{ path, message: expect.stringContaining('well-formed Unicode') }]);
    expect(json.error.message).toContain('lone surrogate');
    expect(h.service.calls.execute).toHaveLength(0);
  });

  it('refuses them on the legacy route too', async () => {
    const h = harness();
    const res = await h.post('/api/execute-code', '{"code":"x","context":{"s":"\\ud800"}}');
    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorJson).error.details).toEqual([{ path: 'context.s', message: expect.any(String) }]);
    expect(h.service.calls.execute).toHaveLength(0);
  });

  it('passes surrogate pairs (escaped or not) and replacement characters through unchanged', async () => {
    const h = harness();
    const res = await h.post('/v1/executions', '{"code":"print(\'\\ud83d\\ude00 😀 \ufffd\')","env":{"E":"\\ud834\\udd1e"}}');
    expect(res.status).toBe(200);
    expect(h.service.calls.execute[0]?.request).toMatchObject({ code: "print('😀 😀 \ufffd')", env: { E: '𝄞' } });
  });
});

describe('illFormedStringAt', () => {
  it('finds the path of an ill-formed string or key, or nothing', () => {
    expect(illFormedStringAt({ a: ['ok', 'x\ud800'] })).toBe('a[1]');
    expect(illFormedStringAt('\udc00')).toBe('');
    expect(illFormedStringAt({ ['k\ud800']: 1 })).toBe('k\ud800');
    expect(illFormedStringAt({ a: [1, null, true, { b: '😀' }] })).toBeUndefined();
  });
});
