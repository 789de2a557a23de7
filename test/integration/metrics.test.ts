// GET /metrics on a real embedded node: real runs on the real engine (completed, error, timeout)
// show up as counters by status, histogram counts, a pool hit after warm-up and container starts,
// under each runtime the engine offers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseExposition, valueOf, type Sample } from '../support/exposition.ts';
import { postJson, realPybox, runtimesUnderTest, type RealPybox } from '../support/real.ts';

const runtimes = await runtimesUnderTest();

describe.each(runtimes)('metrics of real runs under %s', (runtime) => {
  let pybox: RealPybox;

  beforeAll(async () => {
    pybox = await realPybox(runtime, { pool: { enabled: true, size: { runc: 1, runsc: 1 } } });
    await pybox.pool.filled(10, 60_000);
  }, 120_000);

  afterAll(async () => {
    await pybox?.dispose();
  }, 60_000);

  async function scrape(): Promise<Sample[]> {
    const res = await pybox.app.request('/metrics');
    expect(res.status).toBe(200);
    return parseExposition(await res.text());
  }

  it('counts each run by status, with its duration and queue wait, and the pool hit after warm-up', async () => {
    const runs: Array<[string, number | undefined, string]> = [
      ['print("hello")', undefined, 'completed'],
      ['raise ValueError("nope")', undefined, 'error'],
      ['while True:\n    pass', 1000, 'timeout'],
    ];
    let durationMs = 0;
    for (const [code, timeoutMs, status] of runs) {
      const res = await postJson(pybox.app, '/v1/executions', { code, ...(timeoutMs ? { timeoutMs } : {}) });
      expect(res.status, res.text).toBe(200);
      expect((res.json as { status: string }).status).toBe(status);
      durationMs += (res.json as { durationMs: number }).durationMs;
    }
    const s = await scrape();
    for (const status of ['completed', 'error', 'timeout']) expect(valueOf(s, 'pybox_executions_total', { status, runtime }), status).toBe(1);
    expect(valueOf(s, 'pybox_execution_duration_seconds_count', { runtime })).toBe(3);
    // The runs' own durations, as their results say. (The timeout's code ran for most of its
    // second: less when its budget also paid for a sandbox's start, which a pool miss waits for.)
    expect(durationMs).toBeGreaterThan(500);
    expect(valueOf(s, 'pybox_execution_duration_seconds_sum', { runtime })).toBeCloseTo(durationMs / 1000, 3);
    expect(valueOf(s, 'pybox_execution_queue_wait_seconds_count', { runtime })).toBe(3);
    // The first run found the pool filled; later ones may or may not find its replacement ready.
    const hits = valueOf(s, 'pybox_pool_takes_total', { runtime, result: 'hit' }) ?? 0;
    const misses = valueOf(s, 'pybox_pool_takes_total', { runtime, result: 'miss' }) ?? 0;
    expect(hits).toBeGreaterThanOrEqual(1);
    expect(hits + misses).toBe(3);
    // Every run's sandbox started, and the pool's first warm one before them.
    expect(valueOf(s, 'pybox_container_starts_total', { runtime })).toBeGreaterThanOrEqual(3);
    expect(valueOf(s, 'pybox_container_start_failures_total', { runtime })).toBeUndefined();
    expect(valueOf(s, 'pybox_engine_up')).toBe(1);
    expect(valueOf(s, 'pybox_executions_running')).toBe(0);
    expect(valueOf(s, 'pybox_executions_queued')).toBe(0);
    const { memoryMb, cpus } = pybox.config.limits.defaults;
    expect(valueOf(s, 'pybox_pool_warm_sandboxes', { runtime, memory_mb: String(memoryMb), cpus: String(cpus) })).toBeGreaterThanOrEqual(0);
    expect(valueOf(s, 'pybox_http_requests_total', { route: '/v1/executions', method: 'POST', status: '200' })).toBe(3);
  }, 120_000);
});
