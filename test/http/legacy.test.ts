// The reference design's routes: its field names, its units (seconds) and its habit of answering
// 200 when the user's code failed.
import { describe, expect, it } from 'vitest';
import { harness, sampleResult, type ErrorJson } from './fake-service.ts';

const failed = sampleResult({
  id: 'exec-2',
  status: 'error',
  success: false,
  exitCode: 1,
  stdout: 'partial\n',
  stderr: 'Traceback (most recent call last):\nKeyError: \'k\'\n',
  durationMs: 250,
  error: { type: 'KeyError', message: "'k'", line: 1 },
  feedback: "The code failed with KeyError: 'k'",
});

describe('POST /api/execute-code', () => {
  it('runs the code with the timeout in milliseconds and answers in the reference fields', async () => {
    const { service, post } = harness();
    const res = await post('/api/execute-code', { code: 'print(v)', timeout: 2.5, context: { v: 21 } });
    expect(res.status).toBe(200);
    expect(service.calls.execute.map((c) => c.request)).toStrictEqual([{ code: 'print(v)', timeoutMs: 2500, context: { v: 21 } }]);
    expect(await res.json()).toStrictEqual({ success: true, output: 'hello\n', error: null, execution_time: 1.234, execution_id: 'exec-1' });
  });

  it('leaves the timeout to the service when none is given', async () => {
    const { service, post } = harness();
    await post('/api/execute-code', { code: 'x' });
    expect(service.calls.execute[0]?.request).toStrictEqual({ code: 'x' });
  });

  it('refuses a timeout under the floor in its own unit (seconds), and accepts 1 s to 300 s', async () => {
    const { service, post } = harness();
    const tiny = await post('/api/execute-code', { code: 'x', timeout: 0.0001 });
    expect(tiny.status).toBe(400);
    expect(JSON.stringify(await tiny.json())).toContain('at least 1 (seconds)');
    expect((await post('/api/execute-code', { code: 'x', timeout: 1 })).status).toBe(200);
    expect((await post('/api/execute-code', { code: 'x', timeout: 300 })).status).toBe(200);
    expect(service.calls.execute.map((c) => c.request.timeoutMs)).toEqual([1000, 300_000]);
  });

  it('answers 200 with success false and the exception as the error when the code fails', async () => {
    const { service, post } = harness();
    service.result = failed;
    const res = await post('/api/execute-code', { code: 'raise KeyError("k")' });
    expect(res.status).toBe(200);
    expect(await res.json()).toStrictEqual({ success: false, output: 'partial\n', error: "KeyError: 'k'", execution_time: 0.25, execution_id: 'exec-2' });
  });

  it('falls back to stderr, then to the feedback, when there is no parsed exception', async () => {
    const { service, post } = harness();
    service.result = { ...failed, error: null, stderr: 'killed\n' };
    expect(((await (await post('/api/execute-code', { code: 'x' })).json()) as { error: string }).error).toBe('killed');
    service.result = { ...failed, status: 'timeout', error: null, stderr: '', feedback: 'The code was stopped: time limit.' };
    expect(((await (await post('/api/execute-code', { code: 'x' })).json()) as { error: string }).error).toBe('The code was stopped: time limit.');
  });

  it.each([
    ['timeout 0', { code: 'x', timeout: 0 }, 'timeout'],
    ['negative timeout', { code: 'x', timeout: -1 }, 'timeout'],
    ['timeout over 300 s', { code: 'x', timeout: 300.5 }, 'timeout'],
    ['timeout as a string', { code: 'x', timeout: '10' }, 'timeout'],
    ['unknown field', { code: 'x', language: 'python' }, 'language'],
    ['code missing', { timeout: 1 }, 'code'],
    ['context not an object', { code: 'x', context: [1] }, 'context'],
    ['context key not an identifier', { code: 'x', context: { 'a-b': 1 } }, 'context.a-b'],
  ])('rejects %s with 400', async (_name, body, path) => {
    const { service, post } = harness();
    const res = await post('/api/execute-code', body);
    expect(res.status).toBe(400);
    const err = (await res.json()) as ErrorJson;
    expect(err.error.code).toBe('invalid_request');
    expect(err.error.details?.map((d) => d.path)).toContain(path);
    expect(service.calls.execute).toHaveLength(0);
  });

  it('rejects a timeout of 1e999 with 400', async () => {
    const { service, post } = harness();
    const res = await post('/api/execute-code', '{"code":"x","timeout":1e999}');
    expect(res.status).toBe(400);
    expect(service.calls.execute).toHaveLength(0);
  });

  it('requires application/json like every other route', async () => {
    const { post } = harness();
    expect((await post('/api/execute-code', '{"code":"x"}', { 'content-type': 'text/plain' })).status).toBe(415);
  });
});

describe('GET /api/code-history', () => {
  it('lists the newest executions in the reference fields, without code', async () => {
    const { app, service } = harness();
    service.page = { items: [failed, sampleResult()], nextCursor: 'more' };
    const res = await app.request('/api/code-history');
    expect(res.status).toBe(200);
    expect(service.calls.history).toStrictEqual([{ limit: 20 }]);
    expect(await res.json()).toStrictEqual([
      { execution_id: 'exec-2', success: false, output: 'partial\n', error: "KeyError: 'k'", execution_time: 0.25, timestamp: failed.createdAt },
      { execution_id: 'exec-1', success: true, output: 'hello\n', error: null, execution_time: 1.234, timestamp: '2024-01-01T00:00:00.000Z' },
    ]);
  });

  it('passes the limit and validates it', async () => {
    const { app, service } = harness();
    expect((await app.request('/api/code-history?limit=2')).status).toBe(200);
    expect(service.calls.history).toStrictEqual([{ limit: 2 }]);
    for (const q of ['limit=0', 'limit=-1', 'limit=x', 'status=error']) {
      expect((await app.request(`/api/code-history?${q}`)).status, q).toBe(400);
    }
    expect(service.calls.history).toHaveLength(1);
  });
});

describe('GET /api/code-stats', () => {
  it('derives the reference counters, with the average in seconds', async () => {
    const { app } = harness();
    const res = await app.request('/api/code-stats');
    expect(res.status).toBe(200);
    expect(await res.json()).toStrictEqual({ total_executions: 10, successful: 7, failed: 3, average_time: 1.5, history_size: 10 });
  });

  it('reports an average of 0 before anything ran', async () => {
    const { app, service } = harness();
    service.statsValue = {
      total: 0,
      byStatus: { completed: 0, error: 0, timeout: 0, oom: 0, output_limit: 0, validation_failed: 0, cancelled: 0, internal_error: 0 },
      successRate: null,
      meanDurationMs: null,
      p50DurationMs: null,
      p95DurationMs: null,
    };
    expect(await (await app.request('/api/code-stats')).json()).toStrictEqual({ total_executions: 0, successful: 0, failed: 0, average_time: 0, history_size: 0 });
  });
});
