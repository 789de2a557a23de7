// What every store of pybox must do, whatever keeps the data: one suite, run against SQLite
// (sqlite.test.ts) and PostgreSQL (postgres.test.ts), so the two can only answer alike.
import { afterEach, describe, expect, it } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import type { Clock, ExecutionStore, TenantStore } from '../../src/core/ports.ts';
import { EXECUTION_STATUSES, type ExecutionResult, type ExecutionStatus } from '../../src/core/schemas.ts';
import { hashApiKey, newApiKey } from '../../src/tenancy/keys.ts';

export const DAY_MS = 86_400_000;
export const T0 = Date.parse('2025-03-01T12:00:00.000Z');

/** How a store is opened: its retention, and the clock it prunes and stamps by. */
export interface StoreOptions {
  maxExecutions: number;
  maxAgeDays: number;
  clock: Clock;
}

export interface ContractStores {
  executions: ExecutionStore;
  tenants: TenantStore;
  /**
   * Another execution store on the same data, with its own connection(s): a second node, or this
   * one restarted with other settings. The suite closes it.
   */
  another(opts: StoreOptions): Promise<ExecutionStore>;
  /** Closes what makeStores opened (the stores may be closed already) and removes their data. */
  cleanup(): Promise<void>;
}

/** Opens both stores on empty data. */
export type MakeStores = (opts: StoreOptions) => Promise<ContractStores>;

export interface ContractOptions {
  /** Saves each of the two nodes makes in the concurrency tests (default 50). */
  concurrentSaves?: number;
}

/** A clock the test moves by hand, so age retention does not depend on when the test runs. */
export function manualClock(startMs = T0): Clock & { nowMs: number } {
  const clock = { nowMs: startMs, now: () => clock.nowMs };
  return clock;
}

export function result(id: string, over: Partial<ExecutionResult> = {}): ExecutionResult {
  return {
    id,
    status: 'completed',
    success: true,
    exitCode: 0,
    signal: null,
    stdout: 'hello\n',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 12.5,
    cpuMs: 4,
    feedback: 'ran fine',
    runtime: 'runc',
    limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 },
    createdAt: new Date(T0).toISOString(),
    finishedAt: new Date(T0 + 13).toISOString(),
    ...over,
  };
}

export function withStatus(id: string, status: ExecutionStatus, over: Partial<ExecutionResult> = {}): ExecutionResult {
  return result(id, { status, success: status === 'completed', ...over });
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

/** Every item of a history, walking its pages. */
async function everything(store: ExecutionStore, query: { status?: ExecutionStatus; tenant?: string } = {}, limit = 7): Promise<ExecutionResult[]> {
  const all: ExecutionResult[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await store.list({ ...query, limit, cursor });
    all.push(...page.items);
    if (page.nextCursor === null) return all;
    cursor = page.nextCursor;
  }
}

const NO_LIMITS = { maxConcurrency: null, ratePerMinute: null, maxTimeoutMs: null, maxMemoryMb: null, maxCpus: null };

export function describeStoreContract(name: string, makeStores: MakeStores, opts: ContractOptions = {}): void {
  const concurrentSaves = opts.concurrentSaves ?? 50;

  describe(`store contract: ${name}`, () => {
    // Everything a test opens is closed and removed afterwards, even when it fails.
    const cleanups: Array<() => Promise<void>> = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });

    async function open(over: Partial<StoreOptions> = {}): Promise<ContractStores> {
      const stores = await makeStores({ maxExecutions: 1000, maxAgeDays: 0, clock: manualClock(), ...over });
      cleanups.push(() => stores.cleanup());
      return stores;
    }

    async function another(stores: ContractStores, opts: StoreOptions): Promise<ExecutionStore> {
      const store = await stores.another(opts);
      cleanups.push(() => store.close());
      return store;
    }

    describe('executions', () => {
      it('returns a saved result exactly as it was saved, hostile text included', async () => {
        const { executions: s } = await open();
        const full = result('a', {
          status: 'error',
          success: false,
          exitCode: 1,
          // NUL, a lone surrogate, an emoji, quotes and backslashes: all of it is a program's output.
          stdout: 'nul:\u0000 lone:\ud800 emoji:🐍 "quoted" back\\slash\n',
          stderr: 'Traceback…\nZeroDivisionError: division by zero\n',
          cpuMs: null,
          error: { type: 'ZeroDivisionError', message: 'division by zero', line: 3, column: null, traceback: 'tb' },
          files: [{ path: 'out/x.txt', size: 2, contentBase64: 'aGk=' }],
          filesDropped: 1,
          durationMs: 0.1 + 0.2, // not exactly representable in decimal: must come back bit for bit
          runtime: 'runsc',
        });
        await s.save(full);
        expect(await s.get('a')).toEqual(full);
        expect((await s.get('a'))?.durationMs).toBe(0.1 + 0.2);
        expect(await s.get('missing')).toBeUndefined();
        expect(await s.get('a\u0000')).toBeUndefined();
        expect(await s.get("a' OR '1'='1")).toBeUndefined();
      });

      it('keeps rich outputs (figures) and the code for get, and leaves them out of a page of history', async () => {
        const { executions: s } = await open();
        const outputs: ExecutionResult['outputs'] = [
          { type: 'image/png', data: 'iVBORw0KGgo=', kind: 'figure' },
          { type: 'text/html', data: '<table>\u2603</table>', kind: 'result' },
        ];
        const full = result('fig', { outputs, outputsDropped: 2, code: 'import matplotlib\nprint("\u2603")' });
        await s.save(full);
        expect(await s.get('fig')).toEqual(full);
        const [item] = (await s.list({ limit: 5 })).items;
        expect(item).not.toHaveProperty('outputs');
        expect(item).not.toHaveProperty('code');
        expect(item).toEqual({ ...result('fig'), outputsDropped: 2 });
      });

      it('keeps a result whose times are not ISO text, as it was given', async () => {
        const { executions: s } = await open({ maxAgeDays: 30 });
        const odd = result('odd', { createdAt: 'yesterday-ish', finishedAt: 'not a time' });
        await s.save(odd, { tenant: 't', outputBytes: 1 });
        expect(await s.get('odd')).toEqual(odd);
        expect((await s.list({ limit: 5, tenant: 't' })).items).toEqual([odd]);
      });

      it('rejects a second result with the same id and keeps the first, uncounted', async () => {
        const { executions: s } = await open();
        await s.save(result('a', { stdout: 'first' }), { tenant: 't', outputBytes: 5 });
        await expect(s.save(result('a', { stdout: 'second' }), { tenant: 't', outputBytes: 6 })).rejects.toThrow();
        expect((await s.get('a'))?.stdout).toBe('first');
        expect((await s.stats()).total).toBe(1);
        expect(await s.usage({ tenant: 't' })).toMatchObject([{ executions: 1, outputBytes: 5 }]);
        await s.save(result('b'), { tenant: 't', outputBytes: 1 }); // and the store goes on working
        expect((await s.stats()).total).toBe(2);
      });

      it('lists newest first and filters by status', async () => {
        const { executions: s } = await open();
        await s.save(withStatus('a', 'completed'));
        await s.save(withStatus('b', 'timeout'));
        await s.save(withStatus('c', 'completed'));
        await s.save(withStatus('d', 'timeout'));
        const all = await s.list({ limit: 10 });
        expect(all.items.map((r) => r.id)).toEqual(['d', 'c', 'b', 'a']);
        expect(all.nextCursor).toBeNull();
        expect((await s.list({ limit: 10, status: 'timeout' })).items.map((r) => r.id)).toEqual(['d', 'b']);
        expect(await s.list({ limit: 10, status: 'oom' })).toEqual({ items: [], nextCursor: null });
      });

      it('pages through three pages with cursors, unaffected by results saved meanwhile', async () => {
        const { executions: s } = await open();
        for (const id of ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7']) await s.save(result(id));
        const page1 = await s.list({ limit: 3 });
        expect(page1.items.map((r) => r.id)).toEqual(['r7', 'r6', 'r5']);
        expect(page1.nextCursor).toEqual(expect.any(String));
        await s.save(result('r8')); // keyset paging: a newer result must not shift the later pages
        const page2 = await s.list({ limit: 3, cursor: page1.nextCursor ?? undefined });
        expect(page2.items.map((r) => r.id)).toEqual(['r4', 'r3', 'r2']);
        const page3 = await s.list({ limit: 3, cursor: page2.nextCursor ?? undefined });
        expect(page3.items.map((r) => r.id)).toEqual(['r1']);
        expect(page3.nextCursor).toBeNull();
      });

      it('pages a status filter and ends without an empty page when the count divides evenly', async () => {
        const { executions: s } = await open();
        for (let i = 1; i <= 8; i++) await s.save(withStatus(`r${i}`, i % 2 === 0 ? 'error' : 'completed'));
        const page1 = await s.list({ limit: 2, status: 'error' });
        expect(page1.items.map((r) => r.id)).toEqual(['r8', 'r6']);
        const page2 = await s.list({ limit: 2, status: 'error', cursor: page1.nextCursor ?? undefined });
        expect(page2.items.map((r) => r.id)).toEqual(['r4', 'r2']);
        expect(page2.nextCursor).toBeNull();
      });

      it('rejects cursors it did not hand out, and limits that are not positive integers', async () => {
        const { executions: s } = await open();
        await s.save(result('a'));
        const forged = [
          '',
          'not a cursor',
          Buffer.from('s0').toString('base64url'),
          Buffer.from('s-5').toString('base64url'),
          Buffer.from('12').toString('base64url'),
          Buffer.from('s99999999999999999').toString('base64url'),
          `${Buffer.from('s5').toString('base64url')}!!`,
          Buffer.from("s1' OR 1=1 --").toString('base64url'),
        ];
        for (const cursor of forged) {
          const e = await rejection(s.list({ limit: 5, cursor }));
          expect(e, cursor).toBeInstanceOf(PyboxError);
          expect((e as PyboxError).code, cursor).toBe('invalid_request');
        }
        for (const limit of [0, -1, 1.5, Number.NaN]) {
          expect(((await rejection(s.list({ limit }))) as PyboxError).code, String(limit)).toBe('invalid_request');
        }
      });

      it('get, list and stats see one tenant only, or every tenant without one', async () => {
        const { executions: s } = await open();
        await s.save(result('a1', { durationMs: 10 }), { tenant: 'a', outputBytes: 3 });
        await s.save(withStatus('b1', 'error', { durationMs: 1000 }), { tenant: 'b', outputBytes: 3 });
        await s.save(result('a2', { durationMs: 30 }), { tenant: 'a', outputBytes: 3 });
        expect((await s.get('a1', 'a'))?.id).toBe('a1');
        expect(await s.get('a1', 'b')).toBeUndefined();
        expect((await s.get('a1'))?.id).toBe('a1');
        expect((await s.list({ limit: 10, tenant: 'a' })).items.map((r) => r.id)).toEqual(['a2', 'a1']);
        expect((await s.list({ limit: 10, tenant: 'b' })).items.map((r) => r.id)).toEqual(['b1']);
        expect((await s.list({ limit: 10, tenant: 'a', status: 'error' })).items).toEqual([]);
        expect((await s.list({ limit: 10, tenant: 'b', status: 'error' })).items.map((r) => r.id)).toEqual(['b1']);
        expect((await s.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['a2', 'b1', 'a1']);
        expect(await s.stats('a')).toMatchObject({ total: 2, successRate: 1, meanDurationMs: 20, p50DurationMs: 10, p95DurationMs: 30 });
        expect(await s.stats('b')).toMatchObject({ total: 1, successRate: 0, p95DurationMs: 1000 });
        expect(await s.stats('nobody')).toMatchObject({ total: 0, successRate: null });
        expect(await s.stats()).toMatchObject({ total: 3 });
      });

      it('pages one tenant with cursors that skip the other tenant rows', async () => {
        const { executions: s } = await open();
        for (let i = 0; i < 7; i++) await s.save(result(`x${i}`), { tenant: i % 2 === 0 ? 'even' : 'odd', outputBytes: 0 });
        const first = await s.list({ limit: 2, tenant: 'even' });
        expect(first.items.map((r) => r.id)).toEqual(['x6', 'x4']);
        const second = await s.list({ limit: 2, tenant: 'even', cursor: first.nextCursor ?? undefined });
        expect(second.items.map((r) => r.id)).toEqual(['x2', 'x0']);
        expect(second.nextCursor).toBeNull();
      });
    });

    describe('stats', () => {
      it('reports zeros and nulls for an empty store', async () => {
        const { executions: s } = await open();
        expect(await s.stats()).toEqual({
          total: 0,
          byStatus: Object.fromEntries(EXECUTION_STATUSES.map((st) => [st, 0])),
          successRate: null,
          meanDurationMs: null,
          p50DurationMs: null,
          p95DurationMs: null,
        });
      });

      it('computes counts, success rate, mean and nearest-rank percentiles', async () => {
        const { executions: s } = await open();
        // Durations 10..200 saved out of order, so a wrong ORDER BY would pick the wrong rows.
        const durations = [70, 200, 10, 150, 40, 120, 90, 30, 180, 60, 110, 20, 190, 80, 50, 140, 100, 170, 160, 130];
        for (const [i, durationMs] of durations.entries()) {
          const status: ExecutionStatus = i < 15 ? 'completed' : i < 18 ? 'timeout' : 'error';
          await s.save(withStatus(`r${i}`, status, { durationMs }));
        }
        const stats = await s.stats();
        expect(stats.total).toBe(20);
        expect(stats.byStatus).toEqual({ completed: 15, error: 2, timeout: 3, oom: 0, output_limit: 0, validation_failed: 0, cancelled: 0, internal_error: 0 });
        expect(stats.successRate).toBe(0.75);
        expect(stats.meanDurationMs).toBe(105);
        // Nearest rank: the value at rank ceil(p/100 * n) of the sorted durations (1-based).
        expect(stats.p50DurationMs).toBe(100); // rank 10
        expect(stats.p95DurationMs).toBe(190); // rank 19
      });

      it('rounds the nearest rank up when p/100 * n is not whole, and ranks exactly where p/100 * n is', async () => {
        const { executions: s } = await open();
        for (const [i, durationMs] of [5, 1, 4, 2, 3, 7, 6].entries()) await s.save(withStatus(`r${i}`, 'completed', { durationMs }));
        const stats = await s.stats();
        expect(stats.p50DurationMs).toBe(4); // rank ceil(3.5) = 4
        expect(stats.p95DurationMs).toBe(7); // rank ceil(6.65) = 7
        expect(stats.meanDurationMs).toBe(4);

        // 60 values: 0.95 * 60 is 57.00000000000001 in floating point; the rank must still be 57.
        const { executions: t } = await open();
        for (let i = 1; i <= 60; i++) await t.save(withStatus(`s${i}`, 'completed', { durationMs: i }));
        expect(await t.stats()).toMatchObject({ total: 60, p50DurationMs: 30, p95DurationMs: 57 });
      });
    });

    describe('retention', () => {
      it('keeps only the newest maxExecutions results', async () => {
        const { executions: s } = await open({ maxExecutions: 3 });
        for (const id of ['r1', 'r2', 'r3', 'r4', 'r5']) await s.save(result(id));
        expect((await s.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['r5', 'r4', 'r3']);
        expect(await s.get('r2')).toBeUndefined();
        expect((await s.stats()).total).toBe(3);
      });

      it('applies a tightened count limit when reopened', async () => {
        const stores = await open({ maxExecutions: 10 });
        for (const id of ['r1', 'r2', 'r3', 'r4', 'r5']) await stores.executions.save(result(id));
        const reopened = await another(stores, { maxExecutions: 2, maxAgeDays: 0, clock: manualClock() });
        expect((await reopened.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['r5', 'r4']);
      });

      it('prunes results older than maxAgeDays, and keeps them all when it is 0', async () => {
        const clock = manualClock();
        const at = (ms: number) => ({ createdAt: new Date(ms).toISOString(), finishedAt: new Date(ms + 5).toISOString() });
        const { executions: s } = await open({ maxAgeDays: 30, clock });
        await s.save(result('old', at(clock.nowMs)));
        clock.nowMs += 2 * DAY_MS;
        await s.save(result('younger', at(clock.nowMs)));
        clock.nowMs += 29 * DAY_MS; // 'old' is now 31 days old, 'younger' 29
        await s.save(result('new', at(clock.nowMs)));
        expect((await s.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['new', 'younger']);

        const keepAll = await open({ maxAgeDays: 0, clock: manualClock(T0 + 3650 * DAY_MS) });
        await keepAll.executions.save(result('ancient', at(T0)));
        await keepAll.executions.save(result('another', at(T0)));
        expect((await keepAll.executions.stats()).total).toBe(2);
      });

      it('prunes by age when reopened after idling past maxAgeDays', async () => {
        const stores = await open({ maxAgeDays: 30 });
        await stores.executions.save(result('idle'));
        const later = await another(stores, { maxExecutions: 1000, maxAgeDays: 30, clock: manualClock(T0 + 31 * DAY_MS) });
        expect(await later.get('idle')).toBeUndefined();
        expect((await later.stats()).total).toBe(0);
      });

      it('compares ages by instant, whatever the offset a timestamp was written with', async () => {
        const clock = manualClock(T0 + 30 * DAY_MS);
        const { executions: s } = await open({ maxAgeDays: 30, clock });
        // 30 days and one hour old, written with a +02:00 offset that makes its text look younger.
        await s.save(result('offset', { createdAt: '2025-03-01T13:00:00.000+02:00', finishedAt: '2025-03-01T13:00:01.000+02:00' }));
        await s.save(result('fresh', { createdAt: new Date(clock.nowMs).toISOString(), finishedAt: new Date(clock.nowMs).toISOString() }));
        expect((await s.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['fresh']);
      });
    });

    describe('usage', () => {
      it('adds up executions by status, wall time, CPU time and output bytes per tenant', async () => {
        const { executions: s } = await open();
        await s.save(result('1', { durationMs: 100.5, cpuMs: 40 }), { tenant: 'a', outputBytes: 10 });
        await s.save(withStatus('2', 'timeout', { durationMs: 2000, cpuMs: 1500 }), { tenant: 'a', outputBytes: 5 });
        await s.save(withStatus('3', 'validation_failed', { durationMs: 20, cpuMs: null }), { tenant: 'a', outputBytes: 0 });
        await s.save(result('4', { durationMs: 7 }), { tenant: 'b', outputBytes: 1_000_000 });
        await s.save(result('5', { durationMs: 1 }), { tenant: 'B', outputBytes: 1 });
        const a = await s.usage({ tenant: 'a' });
        expect(a).toHaveLength(1);
        expect(a[0]).toMatchObject({ tenant: 'a', executions: 3, wallMs: 2120.5, cpuMs: 1540, outputBytes: 15 });
        expect(a[0]?.byStatus).toMatchObject({ completed: 1, timeout: 1, validation_failed: 1, error: 0, oom: 0 });
        // Tenants in byte order, as SQLite's BINARY collation sorts them: 'B' before 'a'.
        expect((await s.usage({})).map((u) => [u.tenant, u.executions, u.outputBytes])).toEqual([
          ['B', 1, 1],
          ['a', 3, 15],
          ['b', 1, 1_000_000],
        ]);
        expect(await s.usage({ tenant: 'nobody' })).toEqual([]);
      });

      it('counts by the UTC day a run finished, and filters whole days', async () => {
        const { executions: s } = await open();
        const on = (day: number) => ({ createdAt: new Date(T0 + day * DAY_MS).toISOString(), finishedAt: new Date(T0 + day * DAY_MS + 5).toISOString() });
        await s.save(result('d0', on(0)), { tenant: 'a', outputBytes: 1 });
        await s.save(result('d1', on(1)), { tenant: 'a', outputBytes: 2 });
        await s.save(result('d2', on(2)), { tenant: 'a', outputBytes: 4 });
        // 23:30 at -05:00 is 04:30 UTC the next day: counted on the UTC day.
        await s.save(result('d3', { createdAt: '2025-03-04T23:00:00-05:00', finishedAt: '2025-03-04T23:30:00-05:00' }), { tenant: 'a', outputBytes: 8 });
        expect((await s.usage({ tenant: 'a', from: '2025-03-02' }))[0]?.outputBytes).toBe(14);
        expect((await s.usage({ tenant: 'a', to: '2025-03-02' }))[0]?.outputBytes).toBe(3);
        expect((await s.usage({ tenant: 'a', from: '2025-03-02', to: '2025-03-02' }))[0]?.outputBytes).toBe(2);
        expect((await s.usage({ tenant: 'a', from: '2025-03-05', to: '2025-03-05' }))[0]?.outputBytes).toBe(8);
        expect((await s.usage({ tenant: 'a', from: '2025-03-04', to: '2025-03-04' }))).toEqual([]);
        expect(await s.usage({ tenant: 'a', from: '2025-04-01' })).toEqual([]);
      });

      it('is kept when the history it came from is pruned', async () => {
        const { executions: s } = await open({ maxExecutions: 100 });
        for (let i = 0; i < 150; i++) await s.save(result(`r${i}`), { tenant: 'a', outputBytes: 1 });
        expect((await s.stats('a')).total).toBe(100);
        expect((await s.usage({ tenant: 'a' }))[0]).toMatchObject({ executions: 150, outputBytes: 150 });
      });

      it('meters a save without a meter to the local tenant, by its kept output', async () => {
        const { executions: s } = await open();
        await s.save(result('x', { stdout: 'héllo', stderr: 'e' }));
        expect((await s.get('x', 'local'))?.id).toBe('x');
        expect(await s.usage({})).toMatchObject([{ tenant: 'local', executions: 1, outputBytes: 7 }]);
      });
    });

    describe('health', () => {
      it('is healthy while it takes writes, not once closed, and closing twice is harmless', async () => {
        const { executions: s } = await open();
        expect(await s.healthy()).toBe(true);
        await s.save(result('a'));
        expect(await s.healthy()).toBe(true);
        await s.close();
        expect(await s.healthy()).toBe(false);
        await s.close();
      });
    });

    describe('tenants and keys', () => {
      it('creates a tenant with its first key and finds the key by its hash, with its limits', async () => {
        const { tenants } = await open();
        expect(await tenants.hasKeys()).toBe(false);
        const key = newApiKey();
        const created = await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(key), limits: { maxConcurrency: 2, ratePerMinute: 30 } });
        expect(created.key).toEqual({ id: 'key_000000000001', tenant: 'acme', admin: false, createdAt: new Date(T0).toISOString(), revokedAt: null });
        expect(created.tenant).toEqual({ name: 'acme', limits: { ...NO_LIMITS, maxConcurrency: 2, ratePerMinute: 30 }, createdAt: new Date(T0).toISOString() });
        expect(await tenants.hasKeys()).toBe(true);
        const found = await tenants.findKeyByHash(hashApiKey(key));
        expect(found).toEqual({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(key), revokedAt: null, limits: { ...NO_LIMITS, maxConcurrency: 2, ratePerMinute: 30 } });
        expect(Buffer.isBuffer(found?.hash)).toBe(true);
        expect(await tenants.findKeyByHash(hashApiKey(newApiKey()))).toBeUndefined();
        expect(await tenants.findKeyByHash(Buffer.alloc(0))).toBeUndefined();
        expect(await tenants.tenant('acme')).toEqual(created.tenant);
        expect(await tenants.tenant('nobody')).toBeUndefined();
        expect(await tenants.key('key_000000000001')).toEqual(created.key);
        expect(await tenants.key('key_ffffffffffff')).toBeUndefined();
      });

      it('a later key with limits replaces those limits, keeps the others, and null clears one; an admin key is marked so', async () => {
        const { tenants } = await open();
        await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(newApiKey()), limits: { maxConcurrency: 2, maxMemoryMb: 512, maxCpus: 1.5 } });
        const second = await tenants.createKey({ id: 'key_000000000002', tenant: 'acme', admin: true, hash: hashApiKey(newApiKey()), limits: { maxConcurrency: 5 } });
        expect(second.tenant.limits).toEqual({ ...NO_LIMITS, maxConcurrency: 5, maxMemoryMb: 512, maxCpus: 1.5 });
        expect(second.tenant.createdAt).toBe(new Date(T0).toISOString());
        expect(second.key.admin).toBe(true);
        const third = await tenants.createKey({ id: 'key_000000000003', tenant: 'acme', admin: false, hash: hashApiKey(newApiKey()), limits: { maxMemoryMb: null } });
        expect(third.tenant.limits).toEqual({ ...NO_LIMITS, maxConcurrency: 5, maxCpus: 1.5 });
        expect((await tenants.keys()).map((k) => [k.id, k.admin])).toEqual([
          ['key_000000000001', false],
          ['key_000000000002', true],
          ['key_000000000003', false],
        ]);
        expect((await tenants.tenants()).map((t) => t.name)).toEqual(['acme']);
      });

      it('lists tenants in byte order and keys in the order they were created', async () => {
        const { tenants } = await open();
        const names = ['beta', 'Alpha', 'alpha', 'Beta'];
        for (const [i, tenant] of names.entries()) {
          await tenants.createKey({ id: `key_00000000000${9 - i}`, tenant, admin: false, hash: hashApiKey(newApiKey()), limits: {} });
        }
        expect((await tenants.tenants()).map((t) => t.name)).toEqual(['Alpha', 'Beta', 'alpha', 'beta']);
        expect((await tenants.keys()).map((k) => k.tenant)).toEqual(names);
      });

      it('refuses a key whose id or hash exists already, and changes nothing then', async () => {
        const { tenants } = await open();
        const hash = hashApiKey(newApiKey());
        await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash, limits: { maxConcurrency: 1 } });
        await expect(tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: true, hash: hashApiKey(newApiKey()), limits: { maxConcurrency: 9 } })).rejects.toThrow();
        await expect(tenants.createKey({ id: 'key_000000000002', tenant: 'other', admin: true, hash, limits: {} })).rejects.toThrow();
        expect((await tenants.tenant('acme'))?.limits.maxConcurrency).toBe(1);
        expect(await tenants.tenant('other')).toBeUndefined();
        expect((await tenants.keys()).map((k) => k.id)).toEqual(['key_000000000001']);
      });

      it('revokes by id once, finds keys by id or by hash, and keeps revoked keys counted', async () => {
        const clock = manualClock();
        const { tenants } = await open({ clock });
        const key = newApiKey();
        await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(key), limits: {} });
        expect(await tenants.resolveKeyId({ id: 'key_000000000001' })).toBe('key_000000000001');
        expect(await tenants.resolveKeyId({ hash: hashApiKey(key) })).toBe('key_000000000001');
        expect(await tenants.resolveKeyId({ id: 'key_ffffffffffff' })).toBeUndefined();
        expect(await tenants.resolveKeyId({ hash: hashApiKey(newApiKey()) })).toBeUndefined();
        clock.nowMs += 60_000;
        expect(await tenants.revokeKey('key_000000000001')).toBe(true);
        expect(await tenants.revokeKey('key_000000000001')).toBe(false);
        expect(await tenants.revokeKey('key_ffffffffffff')).toBe(false);
        const revokedAt = new Date(T0 + 60_000).toISOString();
        expect((await tenants.findKeyByHash(hashApiKey(key)))?.revokedAt).toBe(revokedAt);
        expect((await tenants.key('key_000000000001'))?.revokedAt).toBe(revokedAt);
        expect(await tenants.hasKeys()).toBe(true);
        expect(await tenants.keys()).toHaveLength(1);
      });
    });

    describe('two nodes at once', () => {
      it(`keep seq order consistent and usage exact (${concurrentSaves} saves each, in parallel)`, async () => {
        const stores = await open();
        const nodes = [stores.executions, await another(stores, { maxExecutions: 1000, maxAgeDays: 0, clock: manualClock() })];
        // Each node saves its own runs one after another, both nodes at the same time.
        await Promise.all(
          nodes.map(async (node, n) => {
            for (let i = 0; i < concurrentSaves; i++) await node.save(result(`n${n}-${i}`, { durationMs: n + 1 }), { tenant: `t${n}`, outputBytes: 10 });
          }),
        );
        for (const node of nodes) {
          const all = await everything(node);
          expect(all).toHaveLength(2 * concurrentSaves);
          expect(new Set(all.map((r) => r.id)).size).toBe(2 * concurrentSaves);
          // Newest first: each node's runs appear in the reverse of the order it saved them.
          for (const n of [0, 1]) {
            const mine = all.filter((r) => r.id.startsWith(`n${n}-`)).map((r) => r.id);
            expect(mine).toEqual(Array.from({ length: concurrentSaves }, (_, i) => `n${n}-${concurrentSaves - 1 - i}`));
            expect((await everything(node, { tenant: `t${n}` }, 3)).map((r) => r.id)).toEqual(mine);
          }
          expect(await node.stats()).toMatchObject({ total: 2 * concurrentSaves, meanDurationMs: 1.5, p50DurationMs: 1, p95DurationMs: 2 });
          expect((await node.usage({})).map((u) => [u.tenant, u.executions, u.outputBytes, u.wallMs])).toEqual([
            ['t0', concurrentSaves, 10 * concurrentSaves, concurrentSaves],
            ['t1', concurrentSaves, 10 * concurrentSaves, 2 * concurrentSaves],
          ]);
        }
      });

      it('commit in seq order: a reader only ever sees new results appear at the head', async () => {
        const stores = await open();
        const nodes = [stores.executions, await another(stores, { maxExecutions: 1000, maxAgeDays: 0, clock: manualClock() })];
        const violations: string[] = [];
        let done = false;
        let reads = 0;
        // Had an older seq committed after a newer one, it would show up behind results already
        // seen, where a client paging with a cursor has already passed and never sees it.
        const reader = (async () => {
          let seen: string[] = [];
          while (!done) {
            const ids = (await stores.executions.list({ limit: 10_000 })).items.map((r) => r.id);
            const old = ids.slice(ids.length - seen.length);
            if (old.join() !== seen.join()) violations.push(`after [${seen.join()}] came [${ids.join()}]`);
            seen = ids;
            reads++;
            await new Promise((r) => setImmediate(r));
          }
        })();
        // Started over a few turns of the event loop, so the reader reads between them even where
        // a save completes at once (SQLite); on a server they are all in flight together anyway.
        await Promise.all(
          Array.from({ length: 2 * concurrentSaves }, async (_, i) => {
            for (let t = 0; t < i % 10; t++) await new Promise((r) => setImmediate(r));
            await (nodes[i % 2] as ExecutionStore).save(result(`c${i}`), { tenant: 'same', outputBytes: 1 });
          }),
        );
        done = true;
        await reader;
        expect(violations).toEqual([]);
        expect(reads).toBeGreaterThan(1);
        expect(await everything(stores.executions)).toHaveLength(2 * concurrentSaves);
      });

      it('prune to exactly the newest maxExecutions and count every save when all are in flight at once', async () => {
        const max = 3; // below the saves in flight, so a prune that missed an uncommitted row would leave one more
        const stores = await open({ maxExecutions: max });
        const nodes = [stores.executions, await another(stores, { maxExecutions: max, maxAgeDays: 0, clock: manualClock() })];
        await Promise.all(
          Array.from({ length: 2 * concurrentSaves }, (_, i) => (nodes[i % 2] as ExecutionStore).save(result(`p${i}`), { tenant: 'same', outputBytes: 1 })),
        );
        const kept = await everything(stores.executions);
        expect(kept).toHaveLength(max);
        expect((await stores.executions.stats()).total).toBe(max);
        expect(await stores.executions.usage({ tenant: 'same' })).toMatchObject([{ executions: 2 * concurrentSaves, outputBytes: 2 * concurrentSaves, byStatus: { completed: 2 * concurrentSaves } }]);
        // The ones kept are the newest: one more save pushes out exactly the oldest kept.
        const oldest = kept[kept.length - 1] as ExecutionResult;
        await stores.executions.save(result('last'), { tenant: 'same', outputBytes: 1 });
        expect(await stores.executions.get(oldest.id)).toBeUndefined();
        expect((await everything(stores.executions)).map((r) => r.id)).toEqual(['last', ...kept.slice(0, -1).map((r) => r.id)]);
      });
    });
  });
}
