// What every job store of pybox must do (async executions, batches, webhook deliveries and secrets),
// whatever keeps the data: one suite, run against SQLite (jobs-sqlite.test.ts) and PostgreSQL
// (jobs-postgres.test.ts), so the two can only answer alike. Times are passed in, never read.
import { afterEach, describe, expect, it } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import type { ExecutionStore, StoredJob } from '../../src/core/ports.ts';
import type { ExecutionStatus } from '../../src/core/schemas.ts';
import type { JobStores } from '../../src/store/open.ts';
import { T0, withStatus } from './store-contract.ts';

/** One node's view of the data: its job stores, and the execution store next to them. */
export interface JobNode extends JobStores {
  executions: ExecutionStore;
}

export interface JobContractStores extends JobNode {
  /** Another node on the same data, with its own connection(s). The suite closes it. */
  another(): Promise<JobNode & { close(): Promise<void> }>;
  /** Closes what makeStores opened and removes its data. */
  cleanup(): Promise<void>;
}

/** Opens the stores on empty data; finished batches and ended deliveries kept maxAgeDays (0: always). */
export type MakeJobStores = (opts: { maxAgeDays: number }) => Promise<JobContractStores>;

const DAY_MS = 86_400_000;

const LEASE = 10_000;

let ids = 0;
/** An async execution (or, with batchId, a batch item) as the runner stores it. */
export function job(over: Partial<StoredJob> = {}): StoredJob {
  ids += 1;
  return {
    id: `exec-${ids}`,
    tenant: 'acme',
    batchId: null,
    index: 0,
    request: { code: `print(${ids})`, stdin: 'nul:\u0000 emoji:🐍 "q" \\', timeoutMs: 5000 },
    requestId: `req-${ids}`,
    webhookUrl: null,
    createdAtMs: T0,
    ...over,
  };
}

function items(batchId: string, n: number, over: Partial<StoredJob> = {}): StoredJob[] {
  return Array.from({ length: n }, (_, index) => job({ batchId, index, id: `${batchId}-item-${index}`, ...over }));
}

const batchOf = (id: string, over: Partial<{ tenant: string; label: string | null; webhookUrl: string | null; createdAtMs: number }> = {}) => ({
  id,
  tenant: 'acme',
  label: null,
  webhookUrl: null,
  createdAtMs: T0,
  ...over,
});

const zero = { completed: 0, error: 0, timeout: 0, oom: 0, output_limit: 0, validation_failed: 0, cancelled: 0, internal_error: 0 };

const idsOf = (jobs: readonly StoredJob[]) => jobs.map((j) => j.id);

export function describeJobStoreContract(name: string, makeStores: MakeJobStores): void {
  describe(`job store contract: ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });

    async function open(maxAgeDays = 0): Promise<JobContractStores> {
      const stores = await makeStores({ maxAgeDays });
      cleanups.push(() => stores.cleanup());
      return stores;
    }

    async function another(stores: JobContractStores): Promise<JobNode> {
      const node = await stores.another();
      cleanups.push(() => node.close());
      return node;
    }

    /** Saves the job's result (as the runner does) and completes it. */
    async function finish(node: JobNode, j: StoredJob, status: ExecutionStatus, nowMs = T0) {
      await node.executions.save(withStatus(j.id, status, { files: [{ path: 'out/a.txt', size: 1, contentBase64: 'YQ==' }] }), { tenant: j.tenant, outputBytes: 1 });
      return node.jobs.complete(j.id, status, nowMs);
    }

    describe('async executions', () => {
      it('are queued, claimed with their request as given, then done and gone', async () => {
        const { jobs } = await open();
        const a = job({ webhookUrl: 'https://hooks.example/a' });
        await jobs.createJob(a);
        expect(await jobs.openJobs('acme')).toBe(1);
        expect(await jobs.openJobs('other')).toBe(0);
        expect(await jobs.pending(a.id)).toEqual({ state: 'queued', batchId: null, createdAt: new Date(T0).toISOString() });
        expect(await jobs.claim({ owner: 'n1', max: 5, nowMs: T0, leaseMs: LEASE })).toEqual([a]);
        expect(await jobs.openJobs('acme')).toBe(1);
        expect(await jobs.pending(a.id, 'acme')).toMatchObject({ state: 'running' });
        expect(await jobs.claim({ owner: 'n2', max: 5, nowMs: T0 + 1, leaseMs: LEASE })).toEqual([]);
        expect(await jobs.complete(a.id, 'completed', T0 + 2)).toEqual({ batchFinished: null });
        expect(await jobs.pending(a.id)).toBeUndefined();
        expect(await jobs.openJobs('acme')).toBe(0);
        expect(await jobs.complete(a.id, 'completed', T0 + 3)).toEqual({ batchFinished: null });
        expect(await jobs.claim({ owner: 'n1', max: 5, nowMs: T0 + LEASE * 2, leaseMs: LEASE })).toEqual([]);
      });

      it('are seen by their tenant and an admin only; hostile ids are just unknown', async () => {
        const { jobs } = await open();
        const a = job();
        await jobs.createJob(a);
        expect(await jobs.pending(a.id, 'other')).toBeUndefined();
        expect(await jobs.pending(a.id, 'acme')).toMatchObject({ state: 'queued' });
        expect(await jobs.pending(a.id)).toMatchObject({ state: 'queued' });
        for (const hostile of [`${a.id}\u0000`, `${a.id}' OR '1'='1`, '']) expect(await jobs.pending(hostile)).toBeUndefined();
        expect(await jobs.pending(a.id, 'acme\u0000')).toBeUndefined();
      });

      it('refuse a second job with the same id, and a batch item added alone', async () => {
        const { jobs } = await open();
        const a = job();
        await jobs.createJob(a);
        await expect(jobs.createJob({ ...a, requestId: 'again' })).rejects.toThrow();
        await expect(jobs.createJob(job({ batchId: 'b1' }))).rejects.toThrow(RangeError);
      });

      it('refuse a completion status that is not one', async () => {
        const { jobs } = await open();
        const a = job();
        await jobs.createJob(a);
        await expect(jobs.complete(a.id, 'finished' as ExecutionStatus, T0)).rejects.toThrow(RangeError);
        expect(await jobs.pending(a.id)).toMatchObject({ state: 'queued' });
      });
    });

    describe('claims', () => {
      it('take at most max, each tenant oldest first, nothing for max 0', async () => {
        const { jobs } = await open();
        const js = [job({ createdAtMs: T0 + 2 }), job({ createdAtMs: T0 }), job({ createdAtMs: T0 + 1 }), job({ createdAtMs: T0 + 1 })];
        for (const j of js) await jobs.createJob(j);
        expect(await jobs.claim({ owner: 'n1', max: 0, nowMs: T0 + 5, leaseMs: LEASE })).toEqual([]);
        // Same age: the one stored first goes first.
        expect(idsOf(await jobs.claim({ owner: 'n1', max: 3, nowMs: T0 + 5, leaseMs: LEASE }))).toEqual(idsOf([js[1], js[2], js[3]] as StoredJob[]));
        expect(idsOf(await jobs.claim({ owner: 'n1', max: 3, nowMs: T0 + 5, leaseMs: LEASE }))).toEqual([js[0]?.id]);
        await expect(jobs.claim({ owner: 'n1', max: -1, nowMs: T0, leaseMs: LEASE })).rejects.toThrow(RangeError);
      });

      it('share the slots among tenants: the fewest running first, then the oldest job', async () => {
        const { jobs } = await open();
        const big = Array.from({ length: 6 }, (_, i) => job({ tenant: 'big', createdAtMs: T0 + i }));
        const small = Array.from({ length: 2 }, (_, i) => job({ tenant: 'small', createdAtMs: T0 + 100 + i }));
        for (const j of [...big, ...small]) await jobs.createJob(j);
        // big's first two are older than anything of small's, then the tenants alternate.
        const first = await jobs.claim({ owner: 'n1', max: 4, nowMs: T0 + 200, leaseMs: LEASE });
        expect(idsOf(first)).toEqual(idsOf([big[0], small[0], big[1], small[1]] as StoredJob[]));
        const third = job({ tenant: 'third', createdAtMs: T0 + 300 });
        await jobs.createJob(third);
        // big runs 2, small 2, third none: third goes first though its job is the newest.
        expect(idsOf(await jobs.claim({ owner: 'n1', max: 2, nowMs: T0 + 400, leaseMs: LEASE }))).toEqual([third.id, big[2]?.id]);
      });

      it('count only live leases as running', async () => {
        const { jobs } = await open();
        const a1 = job({ tenant: 'a', createdAtMs: T0 });
        const a2 = job({ tenant: 'a', createdAtMs: T0 + 1 });
        const b1 = job({ tenant: 'b', createdAtMs: T0 + 2 });
        await jobs.createJob(a1);
        expect(idsOf(await jobs.claim({ owner: 'n1', max: 1, nowMs: T0, leaseMs: LEASE }))).toEqual([a1.id]);
        await jobs.createJob(a2);
        await jobs.createJob(b1);
        // a1's lease ran out: a runs nothing, so its old job a1 (again) comes before b's.
        expect(idsOf(await jobs.claim({ owner: 'n2', max: 1, nowMs: T0 + LEASE, leaseMs: LEASE }))).toEqual([a1.id]);
        // now a runs one: b goes first.
        expect(idsOf(await jobs.claim({ owner: 'n2', max: 1, nowMs: T0 + LEASE, leaseMs: LEASE }))).toEqual([b1.id]);
      });

      it('leave out the tenants in skipTenants', async () => {
        const { jobs } = await open();
        const a = job({ tenant: 'a' });
        const b = job({ tenant: 'b', createdAtMs: T0 + 1 });
        await jobs.createJob(a);
        await jobs.createJob(b);
        expect(idsOf(await jobs.claim({ owner: 'n1', max: 5, nowMs: T0 + 5, leaseMs: LEASE, skipTenants: ['a', 'x\u0000'] }))).toEqual([b.id]);
        expect(idsOf(await jobs.claim({ owner: 'n1', max: 5, nowMs: T0 + 5, leaseMs: LEASE, skipTenants: [] }))).toEqual([a.id]);
      });

      it('take back a job whose lease ran out; a renewed lease holds; the old owner renews nothing', async () => {
        const { jobs } = await open();
        const a = job();
        await jobs.createJob(a);
        await jobs.claim({ owner: 'n1', max: 1, nowMs: T0, leaseMs: LEASE });
        await jobs.renew('n1', [a.id, 'unknown', 'x\u0000'], T0 + 3 * LEASE);
        expect(await jobs.claim({ owner: 'n2', max: 1, nowMs: T0 + 2 * LEASE, leaseMs: LEASE })).toEqual([]);
        await jobs.renew('n2', [a.id], T0 + 10 * LEASE); // not n2's: no effect
        expect(idsOf(await jobs.claim({ owner: 'n2', max: 1, nowMs: T0 + 3 * LEASE, leaseMs: LEASE }))).toEqual([a.id]);
        await jobs.renew('n1', [a.id], T0 + 10 * LEASE); // n1 lost it
        expect(idsOf(await jobs.claim({ owner: 'n3', max: 1, nowMs: T0 + 4 * LEASE, leaseMs: LEASE }))).toEqual([a.id]);
      });

      it('give a released job again once its notBefore has come, and only then', async () => {
        const { jobs } = await open();
        const a = job();
        await jobs.createJob(a);
        await jobs.claim({ owner: 'n1', max: 1, nowMs: T0, leaseMs: LEASE });
        await jobs.release(a.id, T0 + 500);
        expect(await jobs.pending(a.id)).toMatchObject({ state: 'queued' });
        expect(await jobs.claim({ owner: 'n1', max: 1, nowMs: T0 + 499, leaseMs: LEASE })).toEqual([]);
        expect(idsOf(await jobs.claim({ owner: 'n1', max: 1, nowMs: T0 + 500, leaseMs: LEASE }))).toEqual([a.id]);
      });

      it('requeue what a restarted node held, at once, and nothing of other nodes', async () => {
        const { jobs } = await open();
        const [a, b, c] = [job(), job(), job()] as [StoredJob, StoredJob, StoredJob];
        for (const j of [a, b, c]) await jobs.createJob(j);
        await jobs.claim({ owner: 'n1', max: 2, nowMs: T0, leaseMs: LEASE });
        await jobs.claim({ owner: 'n2', max: 1, nowMs: T0, leaseMs: LEASE });
        expect(await jobs.requeueOwned('n1')).toBe(2);
        expect(await jobs.requeueOwned('n1')).toBe(0);
        expect(await jobs.pending(a.id)).toMatchObject({ state: 'queued' });
        expect(await jobs.pending(c.id)).toMatchObject({ state: 'running' });
        expect(idsOf(await jobs.claim({ owner: 'n1', max: 5, nowMs: T0 + 1, leaseMs: LEASE }))).toEqual([a.id, b.id]);
      });

      it('never give one job to two nodes claiming at once', async () => {
        const stores = await open();
        const other = await another(stores);
        const all = Array.from({ length: 60 }, (_, i) => job({ tenant: `t${i % 3}`, createdAtMs: T0 + i }));
        for (const j of all) await stores.jobs.createJob(j);
        const claimed: string[] = [];
        const drain = async (node: JobNode, owner: string) => {
          for (let round = 0; round < 100; round++) {
            const got = await node.jobs.claim({ owner, max: 3, nowMs: T0 + 100, leaseMs: LEASE });
            if (got.length === 0) return;
            claimed.push(...idsOf(got));
          }
        };
        await Promise.all([drain(stores, 'n1'), drain(other, 'n2'), drain(stores, 'n3'), drain(other, 'n4')]);
        expect(claimed).toHaveLength(all.length);
        expect(new Set(claimed).size).toBe(all.length);
      });
    });

    describe('batches', () => {
      it('are stored with their items queued, and shown to their tenant (and an admin) only', async () => {
        const { jobs } = await open();
        await jobs.createBatch(batchOf('b1', { label: 'nightly', webhookUrl: 'https://hooks.example/b' }), items('b1', 3));
        const expected = {
          id: 'b1',
          tenant: 'acme',
          state: 'running',
          label: 'nightly',
          total: 3,
          done: 0,
          byStatus: zero,
          createdAt: new Date(T0).toISOString(),
          finishedAt: null,
          webhook: { url: 'https://hooks.example/b', state: 'pending' },
        };
        expect(await jobs.batch('b1', 'acme')).toEqual(expected);
        expect(await jobs.batch('b1')).toEqual(expected);
        expect(await jobs.batch('b1', 'other')).toBeUndefined();
        expect(await jobs.batch('nope')).toBeUndefined();
        for (const hostile of ['b1\u0000', "b1' OR '1'='1"]) expect(await jobs.batch(hostile)).toBeUndefined();
        expect(await jobs.pending('b1-item-1', 'acme')).toEqual({ state: 'queued', batchId: 'b1', createdAt: new Date(T0).toISOString() });
        expect(await jobs.pending('b1-item-1', 'other')).toBeUndefined();
        await jobs.createBatch(batchOf('b2'), items('b2', 1));
        expect((await jobs.batch('b2'))?.webhook).toBeNull();
      });

      it('are added whole or not at all, and refuse items that are not theirs', async () => {
        const { jobs } = await open();
        await jobs.createJob(job({ id: 'taken' }));
        const clash = items('b1', 3);
        clash[2] = { ...(clash[2] as StoredJob), id: 'taken' };
        await expect(jobs.createBatch(batchOf('b1'), clash)).rejects.toThrow();
        expect(await jobs.batch('b1')).toBeUndefined();
        expect(await jobs.pending('b1-item-0')).toBeUndefined();
        await expect(jobs.createBatch(batchOf('b2'), [])).rejects.toThrow(RangeError);
        await expect(jobs.createBatch(batchOf('b3'), items('other', 2))).rejects.toThrow(RangeError);
        await expect(jobs.createBatch(batchOf('b4'), items('b4', 2, { tenant: 'evil' }))).rejects.toThrow(RangeError);
      });

      it('hold many items, claimed in index order', async () => {
        const { jobs } = await open();
        const many = items('big', 1200);
        await jobs.createBatch(batchOf('big'), many);
        expect((await jobs.batch('big'))?.total).toBe(1200);
        const got = await jobs.claim({ owner: 'n1', max: 5, nowMs: T0, leaseMs: LEASE });
        expect(got.map((j) => j.index)).toEqual([0, 1, 2, 3, 4]);
        expect(got[0]).toEqual(many[0]);
      });

      it('page their items in index order, done ones with their result without files', async () => {
        const stores = await open();
        const { jobs } = stores;
        const its = items('b1', 5);
        await jobs.createBatch(batchOf('b1'), its);
        await jobs.claim({ owner: 'n1', max: 2, nowMs: T0, leaseMs: LEASE });
        await finish(stores, its[1] as StoredJob, 'timeout');
        const page1 = await jobs.batchItems('b1', { limit: 2 });
        expect(page1.items).toEqual([
          { index: 0, executionId: 'b1-item-0', state: 'running', result: null },
          { index: 1, executionId: 'b1-item-1', state: 'done', result: withStatus('b1-item-1', 'timeout') },
        ]);
        expect(page1.items[1]?.result).not.toHaveProperty('files');
        const page2 = await jobs.batchItems('b1', { limit: 2, cursor: page1.nextCursor ?? undefined });
        expect(page2.items.map((i) => [i.index, i.state])).toEqual([
          [2, 'queued'],
          [3, 'queued'],
        ]);
        const page3 = await jobs.batchItems('b1', { limit: 2, cursor: page2.nextCursor ?? undefined });
        expect(page3.items.map((i) => i.index)).toEqual([4]);
        expect(page3.nextCursor).toBeNull();
        expect((await jobs.batchItems('b1', { limit: 5 })).nextCursor).toBeNull();
        expect(await jobs.batchItems('nope', { limit: 5 })).toEqual({ items: [], nextCursor: null });
        for (const forged of ['', 'zzz', 's0', Buffer.from('s1 ').toString('base64url')]) {
          const e = await jobs.batchItems('b1', { limit: 2, cursor: forged }).catch((err: unknown) => err);
          expect(e).toBeInstanceOf(PyboxError);
          expect((e as PyboxError).code).toBe('invalid_request');
        }
        await expect(jobs.batchItems('b1', { limit: 0 })).rejects.toThrow(PyboxError);
      });

      it('count completions by status, each with the next seq, and end with the last one, once', async () => {
        const stores = await open();
        const { jobs } = stores;
        const its = items('b1', 3);
        await jobs.createBatch(batchOf('b1', { webhookUrl: 'https://hooks.example/b' }), its);
        await jobs.claim({ owner: 'n1', max: 3, nowMs: T0, leaseMs: LEASE });
        expect(await finish(stores, its[2] as StoredJob, 'error', T0 + 10)).toEqual({ batchFinished: null });
        expect(await finish(stores, its[0] as StoredJob, 'completed', T0 + 20)).toEqual({ batchFinished: null });
        expect(await jobs.complete('b1-item-0', 'completed', T0 + 21)).toEqual({ batchFinished: null });
        expect(await jobs.batch('b1')).toMatchObject({ state: 'running', done: 2, byStatus: { ...zero, error: 1, completed: 1 }, finishedAt: null });
        const last = await finish(stores, its[1] as StoredJob, 'completed', T0 + 30);
        expect(last.batchFinished).toEqual({
          id: 'b1',
          tenant: 'acme',
          state: 'completed',
          label: null,
          total: 3,
          done: 3,
          byStatus: { ...zero, error: 1, completed: 2 },
          createdAt: new Date(T0).toISOString(),
          finishedAt: new Date(T0 + 30).toISOString(),
          webhook: { url: 'https://hooks.example/b', state: 'pending' },
        });
        expect(await jobs.batch('b1')).toEqual(last.batchFinished);
        expect(await jobs.complete('b1-item-1', 'completed', T0 + 40)).toEqual({ batchFinished: null });
        expect(await jobs.batch('b1')).toEqual(last.batchFinished);
        expect(await jobs.pending('b1-item-1')).toBeUndefined();

        const events = await jobs.batchEvents('b1', 0, 10);
        expect(events.map((e) => [e.seq, e.item.index, e.item.result?.status])).toEqual([
          [1, 2, 'error'],
          [2, 0, 'completed'],
          [3, 1, 'completed'],
        ]);
        expect(events[0]?.item).toEqual({ index: 2, executionId: 'b1-item-2', state: 'done', result: withStatus('b1-item-2', 'error') });
        expect((await jobs.batchEvents('b1', 1, 1)).map((e) => e.seq)).toEqual([2]);
        expect(await jobs.batchEvents('b1', 3, 10)).toEqual([]);
        expect((await jobs.batchEvents('b1', Number.NaN, 10)).map((e) => e.seq)).toEqual([1, 2, 3]);
        expect(await jobs.batchEvents('nope', 0, 10)).toEqual([]);
      });

      it('end exactly once when two nodes complete every item at once, each item twice', async () => {
        const stores = await open();
        const other = await another(stores);
        const its = items('b1', 24);
        await stores.jobs.createBatch(batchOf('b1'), its);
        for (const j of its) await stores.executions.save(withStatus(j.id, 'completed'), { tenant: 'acme', outputBytes: 0 });
        const outcomes = await Promise.all(its.flatMap((j) => [stores.jobs.complete(j.id, 'completed', T0 + 1), other.jobs.complete(j.id, 'completed', T0 + 1)]));
        expect(outcomes.filter((o) => o.batchFinished !== null)).toHaveLength(1);
        expect(await stores.jobs.batch('b1')).toMatchObject({ state: 'completed', done: 24, byStatus: { ...zero, completed: 24 } });
        const seqs = (await other.jobs.batchEvents('b1', 0, 100)).map((e) => e.seq);
        expect(seqs).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
      });

      it('end once, every item done once, when two nodes claim and complete while a third cancels', async () => {
        const stores = await open();
        const other = await another(stores);
        const its = items('b1', 30);
        await stores.jobs.createBatch(batchOf('b1'), its);
        for (const j of its) await stores.executions.save(withStatus(j.id, 'completed'), { tenant: 'acme', outputBytes: 0 });
        const finished: unknown[] = [];
        const completed: string[] = [];
        const work = async (node: JobNode, owner: string) => {
          for (let round = 0; round < 50; round++) {
            const got = await node.jobs.claim({ owner, max: 3, nowMs: T0, leaseMs: LEASE });
            if (got.length === 0) return;
            for (const j of got) {
              const { batchFinished } = await node.jobs.complete(j.id, 'completed', T0 + 1);
              completed.push(j.id);
              if (batchFinished) finished.push(batchFinished);
            }
          }
        };
        const cancel = async () => {
          await new Promise((r) => setTimeout(r, 5));
          for (const j of await other.jobs.cancelBatch('b1', 'api', T0, LEASE)) {
            const { batchFinished } = await other.jobs.complete(j.id, 'cancelled', T0 + 1);
            completed.push(j.id);
            if (batchFinished) finished.push(batchFinished);
          }
        };
        await Promise.all([work(stores, 'n1'), work(other, 'n2'), cancel()]);
        expect(finished).toHaveLength(1);
        expect(completed.sort()).toEqual(its.map((j) => j.id).sort());
        const batch = await stores.jobs.batch('b1');
        expect(batch?.done).toBe(30);
        expect((batch?.byStatus.completed ?? 0) + (batch?.byStatus.cancelled ?? 0)).toBe(30);
        expect((await stores.jobs.batchEvents('b1', 0, 100)).map((e) => e.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      });

      it('are cancelled: the queued items are handed to the canceller, running ones go on, and the batch ends cancelled', async () => {
        const stores = await open();
        const { jobs } = stores;
        const its = items('b1', 5);
        await jobs.createBatch(batchOf('b1'), its);
        const running = await jobs.claim({ owner: 'n1', max: 2, nowMs: T0, leaseMs: LEASE });
        const taken = await jobs.cancelBatch('b1', 'api', T0 + 1, LEASE);
        expect(taken).toEqual(its.slice(2));
        expect(await jobs.pending('b1-item-3')).toMatchObject({ state: 'running' });
        expect(await jobs.claim({ owner: 'n2', max: 5, nowMs: T0 + 2, leaseMs: LEASE })).toEqual([]);
        expect(await jobs.cancelBatch('b1', 'api', T0 + 3, LEASE)).toEqual([]);
        expect(await jobs.batch('b1')).toMatchObject({ state: 'running' });
        for (const j of taken) expect((await finish(stores, j, 'cancelled', T0 + 4)).batchFinished).toBeNull();
        expect((await finish(stores, running[0] as StoredJob, 'completed', T0 + 5)).batchFinished).toBeNull();
        const end = await finish(stores, running[1] as StoredJob, 'completed', T0 + 6);
        expect(end.batchFinished).toMatchObject({ state: 'cancelled', done: 5, byStatus: { ...zero, cancelled: 3, completed: 2 } });
        expect(await jobs.cancelBatch('b1', 'api', T0 + 7, LEASE)).toEqual([]);
        expect(await jobs.cancelBatch('nope', 'api', T0 + 7, LEASE)).toEqual([]);
      });

      it('end cancelled when a cancel found nothing queued any more, and stay completed when it came after the end', async () => {
        const stores = await open();
        const its = items('b1', 1);
        await stores.jobs.createBatch(batchOf('b1'), its);
        await stores.jobs.claim({ owner: 'n1', max: 1, nowMs: T0, leaseMs: LEASE });
        expect(await stores.jobs.cancelBatch('b1', 'api', T0, LEASE)).toEqual([]);
        expect((await finish(stores, its[0] as StoredJob, 'completed')).batchFinished).toMatchObject({ state: 'cancelled', byStatus: { ...zero, completed: 1 } });
        const done = items('b2', 1);
        await stores.jobs.createBatch(batchOf('b2'), done);
        expect((await finish(stores, done[0] as StoredJob, 'completed')).batchFinished).toMatchObject({ state: 'completed' });
        expect(await stores.jobs.cancelBatch('b2', 'api', T0, LEASE)).toEqual([]);
        expect(await stores.jobs.batch('b2')).toMatchObject({ state: 'completed' });
      });

      it('are listed newest first, by tenant, in pages', async () => {
        const { jobs } = await open();
        for (const [id, tenant] of [
          ['b1', 'acme'],
          ['b2', 'other'],
          ['b3', 'acme'],
          ['b4', 'acme'],
        ] as const) {
          await jobs.createBatch(batchOf(id, { tenant }), items(id, 1, { tenant }));
        }
        const page1 = await jobs.listBatches({ tenant: 'acme', limit: 2 });
        expect(page1.items.map((b) => b.id)).toEqual(['b4', 'b3']);
        expect(page1.items[0]).not.toHaveProperty('tenant');
        const page2 = await jobs.listBatches({ tenant: 'acme', limit: 2, cursor: page1.nextCursor ?? undefined });
        expect(page2).toEqual({ items: [expect.objectContaining({ id: 'b1' })], nextCursor: null });
        expect((await jobs.listBatches({ limit: 10 })).items.map((b) => b.id)).toEqual(['b4', 'b3', 'b2', 'b1']);
        expect(await jobs.listBatches({ tenant: 'nobody', limit: 10 })).toEqual({ items: [], nextCursor: null });
        expect(await jobs.listBatches({ tenant: 'acme\u0000', limit: 10 })).toEqual({ items: [], nextCursor: null });
        await expect(jobs.listBatches({ limit: 2, cursor: 'forged' })).rejects.toThrow(PyboxError);
      });

      it('keep how their webhook went', async () => {
        const { jobs } = await open();
        await jobs.createBatch(batchOf('b1', { webhookUrl: 'https://hooks.example/b' }), items('b1', 1));
        await jobs.setBatchWebhook('b1', 'delivered');
        expect((await jobs.batch('b1'))?.webhook).toEqual({ url: 'https://hooks.example/b', state: 'delivered' });
        await jobs.createBatch(batchOf('b2'), items('b2', 1));
        await jobs.setBatchWebhook('b2', 'failed');
        expect((await jobs.batch('b2'))?.webhook).toBeNull();
      });
    });

    describe('webhook outbox', () => {
      const d = (id: string, batchId: string | null = null) => ({ id, tenant: 'acme', url: 'https://hooks.example/x', batchId, body: '{"type":"x","s":"\\u0000🐍"}' });

      it('hands a delivery out when due, to one node for its lease, and retries it when told', async () => {
        const stores = await open();
        const { outbox } = stores;
        await outbox.enqueue(d('w1'), T0);
        await outbox.enqueue({ ...d('w1'), body: 'again' }, T0 + 5); // a second enqueue changes nothing
        expect(await outbox.claimDue('n1', T0 - 1, 10, LEASE)).toEqual([]);
        const first = await outbox.claimDue('n1', T0, 10, LEASE);
        expect(first).toEqual([{ ...d('w1'), attempts: 0, nextAtMs: T0 }]);
        expect(await outbox.claimDue('n2', T0 + 1, 10, LEASE)).toEqual([]);
        await outbox.failed('w1', T0 + 2, { nextAtMs: T0 + 1000, error: 'HTTP 500\u0000 '.repeat(500), httpStatus: 500 });
        const retrying = await outbox.get('w1');
        expect(retrying).toMatchObject({ state: 'pending', attempts: 1, nextAtMs: T0 + 1000, lastStatus: 500 });
        expect(retrying?.lastError?.length).toBeLessThanOrEqual(2000);
        expect(retrying?.lastError).not.toContain('\u0000');
        expect(await outbox.claimDue('n1', T0 + 999, 10, LEASE)).toEqual([]);
        expect(await outbox.claimDue('n2', T0 + 1000, 10, LEASE)).toEqual([{ ...d('w1'), attempts: 1, nextAtMs: T0 + 1000 }]);
        await outbox.delivered('w1', T0 + 1001, 204);
        expect(await outbox.get('w1')).toEqual({ ...d('w1'), attempts: 2, nextAtMs: T0 + 1000, state: 'delivered', lastError: null, lastStatus: 204 });
        expect(await outbox.claimDue('n1', T0 + 10 * LEASE, 10, LEASE)).toEqual([]);
        // A late answer for a delivery that ended changes nothing.
        await outbox.failed('w1', T0 + 1002, { nextAtMs: null, error: 'late', httpStatus: null });
        expect(await outbox.get('w1')).toMatchObject({ state: 'delivered', attempts: 2 });
        expect(await outbox.get('nope')).toBeUndefined();
        expect(await outbox.get('w1\u0000')).toBeUndefined();
      });

      it('hands out again a delivery whose lease ran out, oldest due first, at most max', async () => {
        const { outbox } = await open();
        await outbox.enqueue(d('w2'), T0 + 1);
        await outbox.enqueue(d('w1'), T0);
        await outbox.enqueue(d('w3'), T0 + 2);
        expect((await outbox.claimDue('n1', T0 + 5, 2, LEASE)).map((x) => x.id)).toEqual(['w1', 'w2']);
        expect((await outbox.claimDue('n2', T0 + 5 + LEASE, 5, LEASE)).map((x) => x.id)).toEqual(['w1', 'w2', 'w3']);
        expect(await outbox.claimDue('n2', T0 + 5 + LEASE, 0, LEASE)).toEqual([]);
      });

      it('never hands one delivery to two nodes claiming at once', async () => {
        const stores = await open();
        const other = await another(stores);
        for (let i = 0; i < 40; i++) await stores.outbox.enqueue(d(`w${i}`), T0 + i);
        const claimed: string[] = [];
        const drain = async (node: JobNode, owner: string) => {
          for (let round = 0; round < 100; round++) {
            const got = await node.outbox.claimDue(owner, T0 + 100, 3, LEASE);
            if (got.length === 0) return;
            claimed.push(...got.map((x) => x.id));
          }
        };
        await Promise.all([drain(stores, 'n1'), drain(other, 'n2'), drain(stores, 'n3'), drain(other, 'n4')]);
        expect(claimed).toHaveLength(40);
        expect(new Set(claimed).size).toBe(40);
      });

      it("carries a batch's webhook state with the delivery's end", async () => {
        const { jobs, outbox } = await open();
        for (const id of ['b1', 'b2']) await jobs.createBatch(batchOf(id, { webhookUrl: 'https://hooks.example/b' }), items(id, 1));
        await outbox.enqueue(d('w1', 'b1'), T0);
        await outbox.enqueue(d('w2', 'b2'), T0);
        await outbox.claimDue('n1', T0, 10, LEASE);
        await outbox.failed('w1', T0, { nextAtMs: T0 + 1000, error: 'refused', httpStatus: null });
        expect((await jobs.batch('b1'))?.webhook?.state).toBe('pending');
        await outbox.failed('w1', T0 + 1000, { nextAtMs: null, error: 'refused', httpStatus: null });
        expect(await outbox.get('w1')).toMatchObject({ state: 'failed', attempts: 2, lastError: 'refused', lastStatus: null });
        expect((await jobs.batch('b1'))?.webhook?.state).toBe('failed');
        await outbox.delivered('w2', T0, 200);
        expect((await jobs.batch('b2'))?.webhook?.state).toBe('delivered');
      });
    });

    describe('retention', () => {
      it('prunes batches finished maxAgeDays ago, with their items, and ended deliveries, as new ones come', async () => {
        const stores = await open(1);
        const { jobs, outbox } = stores;
        const old = items('old', 2);
        await jobs.createBatch(batchOf('old'), old);
        await jobs.createBatch(batchOf('unfinished'), items('unfinished', 1));
        for (const j of old) await finish(stores, j, 'completed', T0 + 10);
        await jobs.createBatch(batchOf('b3', { createdAtMs: T0 + 10 + DAY_MS }), items('b3', 1));
        expect(await jobs.batch('old')).toMatchObject({ state: 'completed' }); // a day exactly: kept
        await jobs.createBatch(batchOf('b4', { createdAtMs: T0 + 11 + DAY_MS }), items('b4', 1));
        expect(await jobs.batch('old')).toBeUndefined();
        expect(await jobs.batchItems('old', { limit: 5 })).toEqual({ items: [], nextCursor: null });
        expect(await jobs.batchEvents('old', 0, 5)).toEqual([]);
        expect((await jobs.listBatches({ limit: 10 })).items.map((b) => b.id)).toEqual(['b4', 'b3', 'unfinished']);
        expect(await stores.executions.get('old-item-0')).toBeDefined(); // results follow the history's own retention

        const d = (id: string) => ({ id, tenant: 'acme', url: 'https://hooks.example/x', batchId: null, body: '{}' });
        await outbox.enqueue(d('w1'), T0);
        await outbox.enqueue(d('w2'), T0);
        await outbox.enqueue(d('w3'), T0);
        await outbox.claimDue('n1', T0, 10, LEASE);
        await outbox.delivered('w1', T0 + 5, 200);
        await outbox.failed('w2', T0 + 5, { nextAtMs: null, error: 'gone', httpStatus: 410 });
        await outbox.enqueue(d('w4'), T0 + 6 + DAY_MS);
        expect(await outbox.get('w1')).toBeUndefined();
        expect(await outbox.get('w2')).toBeUndefined();
        expect(await outbox.get('w3')).toMatchObject({ state: 'pending' });
      });
    });

    describe('webhook secrets', () => {
      it('are made once per tenant, the same on every node, and replaced at once by a rotation', async () => {
        const stores = await open();
        const other = await another(stores);
        const [s1, s2] = await Promise.all([stores.secrets.secret('acme'), other.secrets.secret('acme')]);
        expect(s1).toBeInstanceOf(Buffer);
        expect(s1?.length).toBe(32);
        expect(s2).toEqual(s1);
        expect(await stores.secrets.secret('acme')).toEqual(s1);
        const theirs = await stores.secrets.secret('other');
        expect(theirs).not.toEqual(s1);
        const rotated = await other.secrets.rotate('acme');
        expect(rotated.length).toBe(32);
        expect(rotated).not.toEqual(s1);
        expect(await stores.secrets.secret('acme')).toEqual(rotated);
        expect(await stores.secrets.secret('other')).toEqual(theirs);
        // Rotating a tenant's first secret makes it.
        const fresh = await stores.secrets.rotate('new');
        expect(await other.secrets.secret('new')).toEqual(fresh);
      });
    });
  });
}
