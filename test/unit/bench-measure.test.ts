// The bench's drivers: how many runs each starts, in what order, and how many at once.
import { describe, expect, it } from 'vitest';
import { clients, forDuration, paced, pacedPairs, sequential } from '../../bench/measure.ts';

describe('bench drivers', () => {
  it('sequential runs n times, one at a time, with the untimed step before each', async () => {
    const events: string[] = [];
    let i = 0;
    const out = await sequential(3, async () => events.push(`run${i++}`), async () => events.push('between'));
    expect(out).toHaveLength(3);
    expect(events).toEqual(['between', 'run0', 'between', 'run1', 'between', 'run2']);
    expect(out.every((v) => v >= 0)).toBe(true);
  });

  it('paced runs n times and never two at once', async () => {
    let running = 0;
    let most = 0;
    const out = await paced(4, 1, async () => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 2));
      running--;
    });
    expect(out).toHaveLength(4);
    expect(most).toBe(1);
  });

  it('pacedPairs alternates the two tasks, one at a time, each timed in its own list', async () => {
    const order: string[] = [];
    let running = 0;
    let most = 0;
    const task = (name: string, ms: number) => async () => {
      order.push(name);
      most = Math.max(most, ++running);
      if (ms > 0) await new Promise((r) => setTimeout(r, ms));
      running--;
    };
    const out = await pacedPairs(3, 1, task('a', 0), task('b', 50));
    expect(order).toEqual(['a', 'b', 'a', 'b', 'a', 'b']);
    expect(most).toBe(1);
    expect(out.first).toHaveLength(3);
    expect(out.second).toHaveLength(3);
    // Each list holds its own task's times: b's runs are the slow ones.
    expect(Math.min(...out.second)).toBeGreaterThan(Math.max(...out.first));
  });

  it('clients runs exactly total tasks with at most count at once', async () => {
    let running = 0;
    let most = 0;
    let runs = 0;
    const r = await clients(10, 3, async () => {
      runs++;
      most = Math.max(most, ++running);
      await new Promise((res) => setTimeout(res, 1));
      running--;
    });
    expect(runs).toBe(10);
    expect(r.latencies).toHaveLength(10);
    expect(most).toBe(3);
    expect(r.perSecond).toBeGreaterThan(0);
  });

  it('clients starts no more workers than there are tasks', async () => {
    let most = 0;
    let running = 0;
    await clients(2, 16, async () => {
      most = Math.max(most, ++running);
      await new Promise((res) => setTimeout(res, 1));
      running--;
    });
    expect(most).toBe(2);
  });

  it('a failing task fails the driver', async () => {
    await expect(clients(3, 2, async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(sequential(2, async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
  });

  it('forDuration keeps count clients busy until the window ends, and rates only what returned within it', async () => {
    let running = 0;
    let most = 0;
    let started = 0;
    const t0 = performance.now();
    const r = await forDuration(60, 3, async () => {
      started++;
      most = Math.max(most, ++running);
      await new Promise((res) => setTimeout(res, 25));
      running--;
    });
    const elapsed = performance.now() - t0;
    expect(most).toBe(3);
    // Runs started before the end are awaited: every start has a latency.
    expect(r.latencies).toHaveLength(started);
    expect(elapsed).toBeGreaterThanOrEqual(60);
    // The last round of each client ends after the window: counted as latencies, not in the rate.
    expect(r.completed).toBeLessThan(started);
    expect(r.seconds).toBe(0.06);
    expect(r.perSecond).toBeCloseTo(r.completed / 0.06, 6);
  });

  it('forDuration fails when a task fails', async () => {
    await expect(forDuration(50, 2, async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
  });
});
