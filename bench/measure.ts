// How requests are sent: one after another, at a fixed pace, or by several clients at once. The
// task is a parameter, so the same drivers time HTTP requests, docker runs and engine lifecycles.

export type Task = () => Promise<unknown>;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

/** n runs one after another, each timed; `between` runs untimed before each. */
export async function sequential(n: number, once: Task, between?: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    if (between) await between();
    const t = performance.now();
    await once();
    out.push(performance.now() - t);
  }
  return out;
}

/**
 * n runs by one client that starts run i at i × intervalMs (an agent's pace), or as soon as run
 * i − 1 returns when that is later.
 */
export async function paced(n: number, intervalMs: number, once: Task): Promise<number[]> {
  const out: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await sleep(t0 + i * intervalMs - performance.now());
    const t = performance.now();
    await once();
    out.push(performance.now() - t);
  }
  return out;
}

/**
 * Two tasks measured side by side by one client, n rounds: round i starts `first` at
 * 2i × intervalMs and `second` at (2i + 1) × intervalMs (or as soon as the run before returns, when
 * that is later). Each task runs every 2 × intervalMs, the machine serves one run per intervalMs, and
 * both see the same machine over the same minutes: a drift of the machine's speed between two
 * separately measured rows does not enter their difference.
 */
export async function pacedPairs(n: number, intervalMs: number, first: Task, second: Task): Promise<{ first: number[]; second: number[] }> {
  const out = { first: [] as number[], second: [] as number[] };
  const t0 = performance.now();
  for (let i = 0; i < 2 * n; i++) {
    await sleep(t0 + i * intervalMs - performance.now());
    const t = performance.now();
    await (i % 2 === 0 ? first : second)();
    (i % 2 === 0 ? out.first : out.second).push(performance.now() - t);
  }
  return out;
}

/** `total` runs by `clients` clients that each send the next as soon as theirs returns. */
export async function clients(total: number, count: number, task: Task): Promise<{ perSecond: number; seconds: number; latencies: number[] }> {
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(count, total) }, async () => {
      while (next < total) {
        next++;
        const t = performance.now();
        await task();
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  return { perSecond: total / seconds, seconds, latencies };
}

/**
 * `count` clients that each send the next run as soon as theirs returns, starting none after
 * `ms`. The rate counts the runs that returned within the window over the window, so runs still
 * in flight at its end (awaited, and their latencies kept) neither pad nor dilute it.
 */
export async function forDuration(ms: number, count: number, task: Task): Promise<{ perSecond: number; seconds: number; completed: number; latencies: number[] }> {
  const latencies: number[] = [];
  let completed = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(
    Array.from({ length: count }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        await task();
        const done = performance.now();
        latencies.push(done - t);
        if (done <= end) completed++;
      }
    }),
  );
  const seconds = ms / 1000;
  return { perSecond: completed / seconds, seconds, completed, latencies };
}
