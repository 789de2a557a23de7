import { describe, expect, it } from 'vitest';
import { ConcurrencyGate, WaitCancelled } from '../../src/core/concurrency.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { deferred } from './fakes.ts';

const tick = () => new Promise<void>((r) => setTimeout(r, 0));

/** A task that records when it starts and runs until released. */
function blocker<T>(log: string[], name: string, value: T) {
  const gate = deferred<void>();
  return {
    release: () => gate.resolve(),
    fail: (e: unknown) => gate.reject(e),
    task: async (): Promise<T> => {
      log.push(name);
      await gate.promise;
      return value;
    },
  };
}

async function caught(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

describe('ConcurrencyGate', () => {
  it('never runs more than maxConcurrent tasks at once and returns every result', async () => {
    const gate = new ConcurrencyGate(3, 100, 2);
    let running = 0;
    let peak = 0;
    const task = (i: number) => async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 1 + (i % 4)));
      running--;
      return i * 10;
    };
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => gate.run(task(i))));
    expect(peak).toBe(3);
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i * 10));
    expect(gate.stats).toEqual({ running: 0, queued: 0 });
  });

  it('reports running and queued counts', async () => {
    const gate = new ConcurrencyGate(2, 10, 2);
    const log: string[] = [];
    const tasks = ['a', 'b', 'c', 'd', 'e'].map((n) => blocker(log, n, n));
    const runs = tasks.map((t) => gate.run(t.task));
    await tick();
    expect(gate.stats).toEqual({ running: 2, queued: 3 });
    expect(log).toEqual(['a', 'b']);
    for (const t of tasks) t.release();
    await Promise.all(runs);
    expect(gate.stats).toEqual({ running: 0, queued: 0 });
  });

  it('starts waiting tasks in FIFO order', async () => {
    const gate = new ConcurrencyGate(1, 10, 2);
    const log: string[] = [];
    const names = ['1', '2', '3', '4', '5', '6'];
    const tasks = names.map((n) => blocker(log, n, n));
    const runs = tasks.map((t) => gate.run(t.task));
    await tick();
    expect(log).toEqual(['1']);
    for (const [i, t] of tasks.entries()) {
      t.release();
      await runs[i];
      await tick();
      expect(log).toEqual(names.slice(0, i + 2));
    }
    expect(await Promise.all(runs)).toEqual(names);
  });

  it('hands a freed slot to the oldest waiter, not to a newcomer', async () => {
    const gate = new ConcurrencyGate(1, 10, 2);
    const log: string[] = [];
    const a = blocker(log, 'a', 'a');
    const b = blocker(log, 'b', 'b');
    const c = blocker(log, 'c', 'c');
    const ra = gate.run(a.task);
    const rb = gate.run(b.task);
    await tick();
    a.release();
    await ra;
    // A newcomer arriving right after the release must queue behind b.
    const rc = gate.run(c.task);
    await tick();
    expect(log).toEqual(['a', 'b']);
    expect(gate.stats).toEqual({ running: 1, queued: 1 });
    b.release();
    c.release();
    await Promise.all([rb, rc]);
    expect(log).toEqual(['a', 'b', 'c']);
  });

  it('refuses at once with queue_full and retryAfterS when the queue is full', async () => {
    const gate = new ConcurrencyGate(1, 2, 7);
    const log: string[] = [];
    const held = ['a', 'b', 'c'].map((n) => blocker(log, n, n));
    const runs = held.map((t) => gate.run(t.task));
    let called = false;
    const err = await caught(
      gate.run(async () => {
        called = true;
      }),
    );
    expect(err).toBeInstanceOf(PyboxError);
    const pe = err as PyboxError;
    expect(pe.code).toBe('queue_full');
    expect(pe.retryAfterS).toBe(7);
    expect(pe.message).toBe('all 1 execution slots are busy and 2 requests are waiting');
    expect(called).toBe(false);
    expect(gate.stats).toEqual({ running: 1, queued: 2 });
    for (const t of held) t.release();
    expect(await Promise.all(runs)).toEqual(['a', 'b', 'c']);
  });

  it('with maxQueue 0 refuses as soon as every slot is busy', async () => {
    const gate = new ConcurrencyGate(2, 0, 1);
    const log: string[] = [];
    const a = blocker(log, 'a', 1);
    const b = blocker(log, 'b', 2);
    const runs = [gate.run(a.task), gate.run(b.task)];
    const err = await caught(gate.run(async () => 3));
    expect((err as PyboxError).code).toBe('queue_full');
    a.release();
    b.release();
    expect(await Promise.all(runs)).toEqual([1, 2]);
    expect(await gate.run(async () => 4)).toBe(4);
  });

  it('accepts again once the queue has room', async () => {
    const gate = new ConcurrencyGate(1, 1, 1);
    const log: string[] = [];
    const a = blocker(log, 'a', 'a');
    const b = blocker(log, 'b', 'b');
    const ra = gate.run(a.task);
    const rb = gate.run(b.task);
    await expect(gate.run(async () => 'x')).rejects.toBeInstanceOf(PyboxError);
    a.release();
    await ra;
    const rc = gate.run(async () => 'c'); // b is running now, the queue is empty
    b.release();
    expect(await Promise.all([rb, rc])).toEqual(['b', 'c']);
  });

  it('a failing task releases its slot and passes its error on', async () => {
    const gate = new ConcurrencyGate(1, 10, 1);
    const boom = new Error('boom');
    const log: string[] = [];
    const a = blocker(log, 'a', 'a');
    const ra = gate.run(a.task);
    const rb = gate.run(async () => 'b');
    a.fail(boom);
    await expect(ra).rejects.toBe(boom);
    expect(await rb).toBe('b');
    expect(gate.stats).toEqual({ running: 0, queued: 0 });
  });

  it('a task that throws synchronously also releases its slot', async () => {
    const gate = new ConcurrencyGate(1, 10, 1);
    const boom = new Error('sync');
    await expect(
      gate.run((): Promise<never> => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(gate.stats).toEqual({ running: 0, queued: 0 });
    expect(await gate.run(async () => 'next')).toBe('next');
  });

  it('idle() resolves at once when nothing runs', async () => {
    await new ConcurrencyGate(1, 1, 1).idle(1);
  });

  it('idle() resolves only once every running and waiting task is done', async () => {
    const gate = new ConcurrencyGate(1, 10, 1);
    const log: string[] = [];
    const a = blocker(log, 'a', 'a');
    const b = blocker(log, 'b', 'b');
    const runs = [gate.run(a.task), gate.run(b.task)];
    let idle = false;
    const waiting = gate.idle(2).then(() => {
      idle = true;
    });
    a.release();
    await runs[0];
    await new Promise((r) => setTimeout(r, 10));
    expect(idle).toBe(false);
    b.release();
    await waiting;
    expect(idle).toBe(true);
    expect(gate.stats).toEqual({ running: 0, queued: 0 });
  });
});

describe('ConcurrencyGate across tenants', () => {
  const as = (tenant: string, maxInFlight: number | null = null) => ({ tenant, maxInFlight });

  it('gives a freed slot to the waiting tenant with the fewest running, not to the oldest waiter', async () => {
    const gate = new ConcurrencyGate(2, 100, 2);
    const log: string[] = [];
    const a = Array.from({ length: 6 }, (_, i) => blocker(log, `a${i + 1}`, i));
    const b = Array.from({ length: 2 }, (_, i) => blocker(log, `b${i + 1}`, i));
    const ra = a.map((t) => gate.run(t.task, as('A')));
    await tick();
    const rb = b.map((t) => gate.run(t.task, as('B'))); // arrive after all of A's
    await tick();
    expect(log).toEqual(['a1', 'a2']);
    expect(gate.statsOf('A')).toEqual({ running: 2, queued: 4 });
    expect(gate.statsOf('B')).toEqual({ running: 0, queued: 2 });
    a[0]?.release();
    await ra[0];
    await tick();
    expect(log).toEqual(['a1', 'a2', 'b1']); // B runs nothing: it goes first
    a[1]?.release();
    await ra[1];
    await tick();
    expect(log.at(-1)).toBe('a3'); // now A runs nothing and B one
    b[0]?.release();
    await rb[0];
    await tick();
    expect(log.at(-1)).toBe('b2');
    for (const t of [...a, ...b]) t.release();
    await Promise.all([...ra, ...rb]);
    expect(log).toEqual(['a1', 'a2', 'b1', 'a3', 'b2', 'a4', 'a5', 'a6']);
    expect(gate.stats).toEqual({ running: 0, queued: 0 });
  });

  it('alternates between tenants that both keep the host busy', async () => {
    const gate = new ConcurrencyGate(1, 100, 2);
    const log: string[] = [];
    const tasks = ['a1', 'a2', 'a3', 'b1', 'b2', 'b3', 'c1'].map((n) => ({ n, t: blocker(log, n, n) }));
    const runs = tasks.map(({ n, t }) => gate.run(t.task, as(n[0] as string)));
    await tick();
    for (let i = 0; i < tasks.length; i++) {
      const running = tasks.find(({ n }) => n === log.at(-1));
      running?.t.release();
      await tick();
      await tick();
    }
    await Promise.all(runs);
    // Round robin: each turn goes to the waiting tenant served least recently.
    expect(log).toEqual(['a1', 'b1', 'c1', 'a2', 'b2', 'a3', 'b3']);
  });

  it('refuses a tenant over its ceiling of executions in flight with rate_limited, leaving others alone', async () => {
    const gate = new ConcurrencyGate(1, 10, 4);
    const log: string[] = [];
    const a1 = blocker(log, 'a1', 1);
    const a2 = blocker(log, 'a2', 2);
    const runs = [gate.run(a1.task, as('A', 2)), gate.run(a2.task, as('A', 2))]; // one running, one waiting
    const err = (await caught(gate.run(async () => 3, as('A', 2)))) as PyboxError;
    expect(err).toBeInstanceOf(PyboxError);
    expect(err.code).toBe('rate_limited');
    expect(err.retryAfterS).toBe(4);
    expect(err.rateLimit).toEqual({ policy: 'concurrency', quota: 2, remaining: 0, resetS: 4 });
    const b = gate.run(async () => 'b', as('B', 2)); // another tenant still queues
    expect(gate.stats).toEqual({ running: 1, queued: 2 });
    a1.release();
    a2.release();
    expect(await Promise.all([...runs, b])).toEqual([1, 2, 'b']);
    expect(await gate.run(async () => 'again', as('A', 2))).toBe('again');
  });

  it('when the queue is full, a lighter tenant displaces the newest waiter of the heaviest', async () => {
    const gate = new ConcurrencyGate(1, 3, 5);
    const log: string[] = [];
    const a = Array.from({ length: 4 }, (_, i) => blocker(log, `a${i + 1}`, `a${i + 1}`));
    const ra = a.map((t) => gate.run(t.task, as('A')));
    const settled = ra.map((p) => p.then(
      (v) => v,
      (e: unknown) => e,
    ));
    await tick();
    expect(gate.stats).toEqual({ running: 1, queued: 3 });
    const rb = gate.run(async () => 'b', as('B'));
    const displaced = (await settled[3]) as PyboxError; // A's newest waiter
    expect(displaced).toBeInstanceOf(PyboxError);
    expect(displaced.code).toBe('queue_full');
    expect(displaced.retryAfterS).toBe(5);
    expect(gate.statsOf('A')).toEqual({ running: 1, queued: 2 });
    expect(gate.statsOf('B')).toEqual({ running: 0, queued: 1 });
    // B holds one waiting place now: a second B request would leave it no lighter than A, so it is refused.
    const second = (await caught(gate.run(async () => 'b2', as('B')))) as PyboxError;
    expect(second.code).toBe('queue_full');
    for (const t of a) t.release();
    expect(await rb).toBe('b');
    expect(await Promise.all(settled.slice(0, 3))).toEqual(['a1', 'a2', 'a3']);
    expect(log).toEqual(['a1', 'a2', 'a3']); // B's task logs nothing
  });

  it('forgets tenants once they have nothing running or waiting', async () => {
    const gate = new ConcurrencyGate(2, 10, 1);
    await Promise.all(['x', 'y', 'z'].map((t) => gate.run(async () => t, as(t))));
    expect((gate as unknown as { tenants: Map<string, unknown> }).tenants.size).toBe(0);
  });
});

describe('ConcurrencyGate: cancelled waiters', () => {
  it('a waiter whose signal aborts leaves the queue at once, its task never runs, and its place is free', async () => {
    const gate = new ConcurrencyGate(1, 1, 4);
    const log: string[] = [];
    const running = blocker(log, 'running', 'r');
    const first = gate.run(running.task);
    const abandoned = new AbortController();
    const waiting = caught(gate.run(async () => log.push('abandoned'), { signal: abandoned.signal }));
    await tick();
    expect(gate.stats).toEqual({ running: 1, queued: 1 });
    abandoned.abort('client gone');
    const e = (await waiting) as WaitCancelled;
    expect(e).toBeInstanceOf(WaitCancelled);
    expect(e.reason).toBe('client gone');
    expect(gate.stats).toEqual({ running: 1, queued: 0 });
    // The freed place is taken by a newcomer instead of a queue_full refusal.
    const next = gate.run(async () => 'next');
    await tick();
    expect(gate.stats).toEqual({ running: 1, queued: 1 });
    running.release();
    expect(await first).toBe('r');
    expect(await next).toBe('next');
    expect(log).toEqual(['running']);
  });

  it('under a flood of abandoned waiters, later requests are queued and served, not refused', async () => {
    const gate = new ConcurrencyGate(1, 4, 1);
    const log: string[] = [];
    const running = blocker(log, 'running', 'r');
    const first = gate.run(running.task);
    for (let i = 0; i < 50; i++) {
      const c = new AbortController();
      const p = caught(gate.run(async () => log.push(`flood ${i}`), { signal: c.signal }));
      await tick();
      c.abort();
      expect(await p).toBeInstanceOf(WaitCancelled);
    }
    expect(gate.stats).toEqual({ running: 1, queued: 0 });
    const served = [gate.run(async () => 'a'), gate.run(async () => 'b')];
    running.release();
    expect(await Promise.all([first, ...served])).toEqual(['r', 'a', 'b']);
    expect(log).toEqual(['running']);
  });

  it('frees the place a cancelled waiter took under its tenant\'s ceiling', async () => {
    const gate = new ConcurrencyGate(1, 10, 1);
    const log: string[] = [];
    const running = blocker(log, 'a1', 'a1');
    const first = gate.run(running.task, { tenant: 'A', maxInFlight: 2 });
    const c = new AbortController();
    const waiting = caught(gate.run(async () => 'a2', { tenant: 'A', maxInFlight: 2, signal: c.signal }));
    await tick();
    expect(((await caught(gate.run(async () => 'a3', { tenant: 'A', maxInFlight: 2 }))) as PyboxError).code).toBe('rate_limited');
    c.abort();
    expect(await waiting).toBeInstanceOf(WaitCancelled);
    const third = gate.run(async () => 'a3', { tenant: 'A', maxInFlight: 2 });
    running.release();
    expect(await Promise.all([first, third])).toEqual(['a1', 'a3']);
  });

  it('a signal aborted before the call is refused at once and touches no count', async () => {
    const gate = new ConcurrencyGate(1, 1, 1);
    const c = new AbortController();
    c.abort('early');
    let ran = false;
    const e = await caught(gate.run(async () => (ran = true), { tenant: 'A', signal: c.signal }));
    expect(e).toBeInstanceOf(WaitCancelled);
    expect(ran).toBe(false);
    expect(gate.stats).toEqual({ running: 0, queued: 0 });
    expect((gate as unknown as { tenants: Map<string, unknown> }).tenants.size).toBe(0);
  });

  it('an abort after the slot was granted does nothing to the gate: the task decides what it means', async () => {
    const gate = new ConcurrencyGate(1, 1, 1);
    const c = new AbortController();
    const log: string[] = [];
    const task = blocker(log, 't', 't');
    const run = gate.run(task.task, { signal: c.signal });
    await tick();
    c.abort();
    expect(gate.stats).toEqual({ running: 1, queued: 0 });
    task.release();
    expect(await run).toBe('t');
    expect(gate.stats).toEqual({ running: 0, queued: 0 });
  });

  it('a waiter granted a slot later and then aborted is not taken out of any queue twice', async () => {
    const gate = new ConcurrencyGate(1, 2, 1);
    const log: string[] = [];
    const a = blocker(log, 'a', 'a');
    const b = blocker(log, 'b', 'b');
    const c = new AbortController();
    const ra = gate.run(a.task);
    const rb = gate.run(b.task, { signal: c.signal });
    const rc = gate.run(async () => 'c');
    await tick();
    a.release();
    await ra;
    await tick();
    expect(log).toEqual(['a', 'b']);
    c.abort(); // b runs: its abort must not drop c from the queue
    expect(gate.stats).toEqual({ running: 1, queued: 1 });
    b.release();
    expect(await Promise.all([rb, rc])).toEqual(['b', 'c']);
  });
});
