// Executions through the cluster's queue against a real Redis, without Docker: the workers run a
// fake Dispatch. Each test gets a key prefix of its own (a cluster of its own); every key under
// this file's prefix is deleted at the end.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Queue, type QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClusterBackend } from '../../src/cluster/cluster-backend.ts';
import { redisOptionsOf } from '../../src/cluster/connection.ts';
import { QueueDispatch, type QueueDispatchDeps } from '../../src/cluster/queue-dispatch.ts';
import { QueueWorker } from '../../src/cluster/queue-worker.ts';
import { ClusterRegistry, type NodeReport } from '../../src/cluster/registry.ts';
import { QUEUE_NAME, cancelMarkKey, type Admission } from '../../src/cluster/wire.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { LocalDispatch } from '../../src/core/local-dispatch.ts';
import type { AcceptedExecution, Dispatch, ExecutionMeter, ExecutionStore, Logger, Sandboxes } from '../../src/core/ports.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import type { ExecutionResult, ExecutionStatus, HistoryPage, Stats, TenantUsage } from '../../src/core/schemas.ts';

const REDIS_URL = process.env.PYBOX_TEST_REDIS_URL ?? 'redis://127.0.0.1:56379';
const FILE_PREFIX = `pbq-${process.pid}-${Date.now().toString(36)}`;
let prefixes = 0;
const newPrefix = (): string => `${FILE_PREFIX}-${++prefixes}`;

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };
const clock = { now: () => Date.now() };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// ---- fakes ---------------------------------------------------------------------------------------

/** The store an API node records in: only what the dispatch itself records lands here. */
class RecordingStore implements ExecutionStore {
  readonly saved: Array<{ result: ExecutionResult; meter: ExecutionMeter | undefined }> = [];
  async save(result: ExecutionResult, meter?: ExecutionMeter): Promise<void> {
    this.saved.push({ result, meter });
  }
  async get(id: string): Promise<ExecutionResult | undefined> {
    return this.saved.find((s) => s.result.id === id)?.result;
  }
  async list(): Promise<HistoryPage> {
    return { items: this.saved.map((s) => s.result), nextCursor: null };
  }
  async stats(): Promise<Stats> {
    throw new Error('not used');
  }
  async usage(): Promise<TenantUsage[]> {
    return [];
  }
  async healthy(): Promise<boolean> {
    return true;
  }
  async close(): Promise<void> {}
}

/** Executions in flight per tenant, as RedisAdmission counts them: inFlight includes the one admitted. */
class FakeAdmission implements Admission {
  readonly held = new Map<string, Set<string>>();
  readonly released: string[] = [];
  private of(tenant: string): Set<string> {
    let s = this.held.get(tenant);
    if (!s) this.held.set(tenant, (s = new Set()));
    return s;
  }
  async admit(a: { tenant: string; id: string; maxInFlight: number | null }): Promise<{ admitted: boolean; inFlight: number }> {
    const s = this.of(a.tenant);
    if (a.maxInFlight !== null && s.size >= a.maxInFlight) return { admitted: false, inFlight: s.size };
    s.add(a.id);
    return { admitted: true, inFlight: s.size };
  }
  async release(tenant: string, id: string): Promise<void> {
    this.of(tenant).delete(id);
    this.released.push(id);
  }
}

function fakeResult(e: AcceptedExecution, status: ExecutionStatus, stdout = ''): ExecutionResult {
  return {
    id: e.job.id,
    status,
    success: status === 'completed',
    exitCode: status === 'completed' ? 0 : null,
    signal: null,
    stdout,
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 1,
    feedback: `fake ${status}`,
    runtime: 'runc',
    limits: e.limits,
    createdAt: new Date(e.createdAtMs).toISOString(),
    finishedAt: new Date().toISOString(),
  };
}

/** A worker's LocalDispatch stand-in: answers at once, or holds each run until released or cancelled. */
class FakeRun implements Dispatch {
  readonly seen: Array<{ execution: AcceptedExecution; cancelledBy?: unknown }> = [];
  private readonly holds = new Map<string, (how: 'done' | 'cancelled') => void>();
  constructor(private readonly hold = false) {}

  async submit(execution: AcceptedExecution, signals: { waiting: AbortSignal; running: AbortSignal }): Promise<ExecutionResult> {
    const entry: { execution: AcceptedExecution; cancelledBy?: unknown } = { execution };
    this.seen.push(entry);
    const files = execution.job.files.map((f) => `${f.path}:${f.data.toString('hex')}`).join(',');
    if (!this.hold) return fakeResult(execution, 'completed', `ran ${execution.job.code} files=${files} max=${execution.maxInFlight}`);
    const how = await new Promise<'done' | 'cancelled'>((resolve) => {
      this.holds.set(execution.job.id, resolve);
      const onAbort = () => {
        entry.cancelledBy = signals.running.reason;
        resolve('cancelled');
      };
      if (signals.running.aborted) onAbort();
      else signals.running.addEventListener('abort', onAbort, { once: true });
    });
    this.holds.delete(execution.job.id);
    return fakeResult(execution, how === 'done' ? 'completed' : 'cancelled');
  }

  release(id: string): void {
    this.holds.get(id)?.('done');
  }
  ids(): string[] {
    return this.seen.map((s) => s.execution.job.id);
  }
}

/** Sandboxes that hold each run until released (exit 0, a line of output) or its signal aborts. */
class HoldingSandboxes implements Sandboxes {
  readonly started: string[] = [];
  private readonly releases = new Map<string, () => void>();
  async run(job: SandboxJob): Promise<SandboxOutcome> {
    this.started.push(job.id);
    const released = await new Promise<boolean>((resolve) => {
      this.releases.set(job.id, () => resolve(true));
      if (job.signal?.aborted) resolve(false);
      job.signal?.addEventListener('abort', () => resolve(false), { once: true });
    });
    const text = released ? `hello from ${job.id}\n` : '';
    const stdout = { totalBytes: Buffer.byteLength(text), truncated: false, text: () => text };
    const stderr = { totalBytes: 0, truncated: false, text: () => '' };
    if (!released) return { kind: 'cancelled', report: null, stdout, stderr, durationMs: 3 };
    return { kind: 'finished', report: { v: 1, phase: 'run', exitCode: 0, signal: null, error: null, files: [], filesDropped: 0, flooded: false }, stdout, stderr, durationMs: 3 };
  }
  release(id: string): void {
    this.releases.get(id)?.();
  }
}

function execution(tenant = 'acme', over: Partial<AcceptedExecution['job']> = {}, maxInFlight: number | null = null): AcceptedExecution {
  const limits = { timeoutMs: 5000, memoryMb: 256, cpus: 1 };
  return {
    job: { id: randomUUID(), code: 'print(1)', stdin: '', args: [], env: {}, context: {}, files: [], limits, ...over },
    limits: { ...limits, outputBytes: 50_000 },
    tenant,
    maxInFlight,
    createdAtMs: Date.now(),
  };
}

/** The two signals the service hands over, both ended by one client going away. */
function clientSignals(): { signals: { waiting: AbortSignal; running: AbortSignal }; leave: () => void } {
  const waiting = new AbortController();
  const running = new AbortController();
  return {
    signals: { waiting: waiting.signal, running: running.signal },
    leave: () => {
      waiting.abort('client');
      running.abort('client');
    },
  };
}

const workerNode = (over: Partial<NodeReport> = {}): NodeReport => ({
  nodeId: 'w1',
  role: 'worker',
  startedAt: new Date().toISOString(),
  seenAt: new Date().toISOString(),
  pid: 1,
  host: 'h',
  slots: 1,
  running: 0,
  runtime: 'runc',
  ...over,
});

// ---- a cluster per test ----------------------------------------------------------------------------

const cleanups: Array<() => Promise<unknown>> = [];
let admin: Redis;

beforeAll(async () => {
  admin = new Redis({ ...redisOptionsOf(REDIS_URL), maxRetriesPerRequest: 1 });
  await admin.ping();
});

afterEach(async () => {
  while (cleanups.length > 0) await (cleanups.pop() as () => Promise<unknown>)().catch(() => {});
});

afterAll(async () => {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${FILE_PREFIX}-*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await admin.del(...keys);
  } while (cursor !== '0');
  await admin.quit();
});

function cluster(over: Partial<QueueDispatchDeps> = {}) {
  const prefix = newPrefix();
  const store = new RecordingStore();
  const admission = new FakeAdmission();
  const dispatch = new QueueDispatch({
    connection: REDIS_URL,
    prefix,
    admission,
    tenantLimitError: (max, retryAfterS) => new PyboxError('rate_limited', `at most ${max} in flight`, { retryAfterS }),
    store,
    results: { limits: { floodBytes: 1_000_000, outputFilesMax: 20, outputFilesMaxBytes: 5_000_000, testOutputBytes: 4096, outputsMax: 10, outputsMaxBytes: 2_097_152 }, clock },
    maxQueue: 100,
    retryAfterS: 2,
    registry: { nodes: async () => [workerNode()] },
    logger: quiet,
    ...over,
  });
  cleanups.push(() => dispatch.close());
  const worker = async (run: Dispatch, opts: { slots?: number; lockMs?: number } = {}) => {
    const w = new QueueWorker({ connection: REDIS_URL, prefix, nodeId: `w-${randomUUID()}`, slots: opts.slots ?? 1, lockMs: opts.lockMs ?? 5000, run, admission, logger: quiet });
    // Workers close before the dispatch (cleanups run last first).
    cleanups.push(() => w.close(0));
    await w.start();
    return w;
  };
  return { prefix, store, admission, dispatch, worker };
}

// ---- tests ---------------------------------------------------------------------------------------

describe('QueueDispatch and QueueWorker', () => {
  it('carries an execution to a worker and its result back', async () => {
    const c = cluster();
    const run = new FakeRun();
    await c.worker(run);
    const e = execution('acme', { code: 'print(42)', files: [{ path: 'data/in.bin', data: Buffer.from([0, 1, 254, 255]) }] }, 3);
    const { signals } = clientSignals();
    const result = await c.dispatch.submit(e, signals);
    expect(result.id).toBe(e.job.id);
    expect(result.status).toBe('completed');
    // The tenant's ceiling was applied by the API node; the worker runs it with none.
    expect(result.stdout).toBe('ran print(42) files=data/in.bin:0001feff max=null');
    expect(run.seen[0]?.execution.tenant).toBe('acme');
    expect(run.seen[0]?.execution.limits).toEqual(e.limits);
    // Recorded by the worker (LocalDispatch), not by the API node.
    expect(c.store.saved).toHaveLength(0);
    await waitFor('both sides to release the admission', () => c.admission.released.filter((id) => id === e.job.id).length === 2);
    expect(c.admission.held.get('acme')?.size).toBe(0);
  });

  it('runs as many executions at once as the workers have slots; the next one waits', async () => {
    const c = cluster();
    const runA = new FakeRun(true);
    const runB = new FakeRun(true);
    await c.worker(runA, { slots: 1 });
    await c.worker(runB, { slots: 1 });
    const executions = [execution(), execution(), execution()];
    const results = executions.map((e) => c.dispatch.submit(e, clientSignals().signals));
    await waitFor('two executions to start', () => runA.seen.length + runB.seen.length === 2);
    expect(runA.seen).toHaveLength(1);
    expect(runB.seen).toHaveLength(1);
    await sleep(300);
    expect(runA.seen.length + runB.seen.length).toBe(2);
    expect(await c.dispatch.queueDepth()).toBe(1);
    for (const id of [...runA.ids(), ...runB.ids()]) (runA.ids().includes(id) ? runA : runB).release(id);
    await waitFor('the third to start', () => runA.seen.length + runB.seen.length === 3);
    for (const r of [runA, runB]) for (const id of r.ids()) r.release(id);
    const done = await Promise.all(results);
    expect(done.map((r) => r.status)).toEqual(['completed', 'completed', 'completed']);
  });

  it("puts a newcomer tenant's first execution ahead of a flooding tenant's later ones", async () => {
    const c = cluster();
    const run = new FakeRun(true);
    await c.worker(run, { slots: 1 });
    const a1 = execution('flood');
    const results = [c.dispatch.submit(a1, clientSignals().signals)];
    await waitFor('the first to start', () => run.seen.length === 1);
    const a2 = execution('flood');
    const a3 = execution('flood');
    const b1 = execution('newcomer');
    for (const [i, e] of [a2, a3, b1].entries()) {
      results.push(c.dispatch.submit(e, clientSignals().signals));
      await waitFor('the job to be queued', async () => (await c.dispatch.queueDepth()) === i + 1);
    }
    for (let k = 1; k <= 4; k++) {
      await waitFor(`execution ${k} to start`, () => run.seen.length === k);
      run.release(run.ids()[k - 1] as string);
    }
    await Promise.all(results);
    expect(run.ids()).toEqual([a1.job.id, b1.job.id, a2.job.id, a3.job.id]);
  });

  it('withdraws an execution cancelled while it waits: no worker runs it, and it is recorded cancelled', async () => {
    const c = cluster();
    const run = new FakeRun(true);
    await c.worker(run, { slots: 1 });
    const busy = execution();
    const first = c.dispatch.submit(busy, clientSignals().signals);
    await waitFor('the first to start', () => run.seen.length === 1);
    const waiting = execution();
    const client = clientSignals();
    const pending = c.dispatch.submit(waiting, client.signals);
    await waitFor('the second to be queued', async () => (await c.dispatch.queueDepth()) === 1);
    client.leave();
    const result = await pending;
    expect(result.status).toBe('cancelled');
    expect(result.feedback).toMatch(/cancel/i);
    expect(c.store.saved.map((s) => [s.result.id, s.result.status])).toEqual([[waiting.job.id, 'cancelled']]);
    expect(c.store.saved[0]?.meter?.tenant).toBe('acme');
    expect(await c.dispatch.queueDepth()).toBe(0);
    // The worker goes on with later work and never sees the withdrawn one.
    run.release(busy.job.id);
    await first;
    const later = execution();
    const laterResult = c.dispatch.submit(later, clientSignals().signals);
    await waitFor('the later one to start', () => run.seen.length === 2);
    run.release(later.job.id);
    await laterResult;
    expect(run.ids()).toEqual([busy.job.id, later.job.id]);
    await waitFor('the admission to be released', () => c.admission.released.includes(waiting.job.id));
  });

  it("stops an execution cancelled while it runs: the worker's signal aborts with reason 'client'", async () => {
    const c = cluster();
    const run = new FakeRun(true);
    await c.worker(run, { slots: 1 });
    const e = execution();
    const client = clientSignals();
    const pending = c.dispatch.submit(e, client.signals);
    await waitFor('it to start', () => run.seen.length === 1);
    client.leave();
    const result = await pending;
    expect(result.status).toBe('cancelled');
    expect(run.seen[0]?.cancelledBy).toBe('client');
    // The worker's result stands; the API node records nothing of its own.
    expect(c.store.saved).toHaveLength(0);
  });

  it('cancels an execution whose cancel was marked before a worker took it (the mark is read beside the start)', async () => {
    const c = cluster();
    const run = new FakeRun(true);
    const e = execution();
    // As if its client left while the job was being taken: published to nobody, marked for the worker.
    await admin.set(cancelMarkKey(c.prefix, e.job.id), 'client', 'PX', 60_000);
    await c.worker(run, { slots: 1 });
    const result = await c.dispatch.submit(e, clientSignals().signals);
    expect(result.status).toBe('cancelled');
    expect(run.seen[0]?.cancelledBy).toBe('client');
  });

  it('stops running executions with reason shutdown when a worker closes past its grace', async () => {
    const c = cluster();
    const run = new FakeRun(true);
    const w = await c.worker(run, { slots: 1 });
    const pending = c.dispatch.submit(execution(), clientSignals().signals);
    await waitFor('it to start', () => run.seen.length === 1);
    await w.close(100);
    const result = await pending;
    expect(result.status).toBe('cancelled');
    expect(run.seen[0]?.cancelledBy).toBe('shutdown');
  });

  for (const path of ['stalled-job check of a live worker', 'sweep alone (no worker left)'] as const) {
    it(`answers internal_error, recorded, when the worker running an execution is killed (${path})`, async () => {
      const survives = path === 'stalled-job check of a live worker';
      // With a survivor the sweep is kept out of the way, so BullMQ's own path is what answers.
      const c = cluster({ sweepMs: survives ? 600_000 : 500 });
      const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./support/queue-worker-child.ts', import.meta.url))], {
        env: { ...process.env, PBQ_REDIS_URL: REDIS_URL, PBQ_PREFIX: c.prefix, PBQ_LOCK_MS: '2000' },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      cleanups.push(async () => killed(child));
      let out = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor('the child worker to be ready', () => out.includes('ready\n'), 30_000);
      const e = execution();
      const pending = c.dispatch.submit(e, clientSignals().signals);
      await waitFor('the child to take it', () => out.includes(`started ${e.job.id}`));
      // A live worker notices the dead one's expired lock and, with maxStalledCount 0, never reruns it.
      const survivor = new FakeRun();
      if (survives) await c.worker(survivor, { slots: 1, lockMs: 2000 });
      const killedAt = Date.now();
      child.kill('SIGKILL');
      const result = await pending;
      console.log(`worker killed -> internal_error after ${Date.now() - killedAt} ms by the ${path} (lockMs 2000)`);
      expect(result.status).toBe('internal_error');
      expect(result.error?.message).toMatch(/worker running this execution went away \(it stopped renewing its hold.*may have run partly; retry is safe/);
      expect(c.store.saved.map((s) => [s.result.id, s.result.status])).toEqual([[e.job.id, 'internal_error']]);
      expect(survivor.ids()).not.toContain(e.job.id);
    }, 60_000);
  }

  it('still answers when the completed event is missed: the sweep reads the job itself', async () => {
    const c = cluster({ sweepMs: 300 });
    const run = new FakeRun(true);
    await c.worker(run, { slots: 1 });
    const e = execution();
    const pending = c.dispatch.submit(e, clientSignals().signals);
    await waitFor('it to start', () => run.seen.length === 1);
    // As if Redis had restarted between the job finishing and its event being read.
    const events = (c.dispatch as unknown as { events: QueueEvents }).events;
    events.removeAllListeners('completed');
    expect(events.listenerCount('completed')).toBe(0);
    run.release(e.job.id);
    const result = await pending;
    expect(result.status).toBe('completed');
    expect(result.id).toBe(e.job.id);
  });

  it("runs through a worker's LocalDispatch: the worker records, and a cancel reaches an execution waiting in its gate", async () => {
    const c = cluster();
    const workerStore = new RecordingStore();
    const sandboxes = new HoldingSandboxes();
    const local = new LocalDispatch({
      sandboxes,
      gate: new ConcurrencyGate(1, 10, 2),
      store: workerStore,
      image: 'pybox-python:test',
      results: { runtime: 'runc', limits: { floodBytes: 1_000_000, outputFilesMax: 20, outputFilesMaxBytes: 5_000_000, testOutputBytes: 4096, outputsMax: 10, outputsMaxBytes: 2_097_152 }, clock },
      logger: quiet,
    });
    // Two jobs taken at once, one sandbox slot: the second waits in the worker's own gate.
    await c.worker(local, { slots: 2 });
    const queue = new Queue(QUEUE_NAME, { connection: redisOptionsOf(REDIS_URL), prefix: c.prefix });
    cleanups.push(() => queue.close());
    const a = execution();
    const b = execution();
    const clientB = clientSignals();
    const resultA = c.dispatch.submit(a, clientSignals().signals);
    await waitFor('a to run', () => sandboxes.started.includes(a.job.id));
    const resultB = c.dispatch.submit(b, clientB.signals);
    await waitFor('b to be taken by the worker', async () => (await queue.getJobState(b.job.id)) === 'active');
    clientB.leave();
    const cancelled = await resultB;
    expect(cancelled.status).toBe('cancelled');
    expect(sandboxes.started).not.toContain(b.job.id);
    sandboxes.release(a.job.id);
    const completed = await resultA;
    expect(completed).toMatchObject({ status: 'completed', stdout: `hello from ${a.job.id}\n`, runtime: 'runc' });
    // Both recorded by the node that ran them, none by the API node.
    expect(workerStore.saved.map((s) => [s.result.id, s.result.status])).toEqual([
      [b.job.id, 'cancelled'],
      [a.job.id, 'completed'],
    ]);
    expect(workerStore.saved[1]?.meter).toEqual({ tenant: 'acme', outputBytes: `hello from ${a.job.id}\n`.length });
    expect(c.store.saved).toHaveLength(0);
  });

  it('refuses with queue_full once as many executions wait as the cap allows', async () => {
    // No worker takes anything: the jobs stay queued.
    const c = cluster({ maxQueue: 2 });
    const clients = [clientSignals(), clientSignals()];
    const queued = clients.map((cl) => c.dispatch.submit(execution(), cl.signals));
    await waitFor('two queued', async () => (await c.dispatch.queueDepth()) === 2);
    const third = execution();
    const refused = await c.dispatch.submit(third, clientSignals().signals).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PyboxError);
    expect((refused as PyboxError).code).toBe('queue_full');
    expect((refused as PyboxError).retryAfterS).toBe(2);
    // Its admission was asked beside the queue's depth: given back, it holds no place.
    await waitFor('the refused admission to be released', () => c.admission.released.includes(third.job.id));
    expect(c.admission.held.get(third.tenant)?.has(third.job.id)).toBe(false);
    expect(c.admission.held.get(third.tenant)?.size).toBe(2);
    for (const cl of clients) cl.leave();
    expect((await Promise.all(queued)).map((r) => r.status)).toEqual(['cancelled', 'cancelled']);
  });

  it("refuses with the tenant's 429 past its ceiling of executions in flight", async () => {
    const c = cluster();
    const client = clientSignals();
    const first = c.dispatch.submit(execution('acme', {}, 1), client.signals);
    await waitFor('one queued', async () => (await c.dispatch.queueDepth()) === 1);
    const refused = await c.dispatch.submit(execution('acme', {}, 1), clientSignals().signals).catch((e: unknown) => e);
    expect((refused as PyboxError).code).toBe('rate_limited');
    client.leave();
    await first;
  });

  it('reads the live workers again ahead of need, without making a request wait for the read', async () => {
    let reads = 0;
    let hang: (() => void) | undefined;
    const registry = {
      nodes: async () => {
        // The second read (the one ahead of need) hangs until the test lets it go.
        if (++reads === 2) await new Promise<void>((r) => (hang = r));
        return [workerNode()];
      },
    };
    const c = cluster({ registry, workersCacheMs: 4000 });
    await c.worker(new FakeRun());
    expect((await c.dispatch.submit(execution(), clientSignals().signals)).status).toBe('completed');
    expect(reads).toBe(1);
    // Past half the cache's life: the list is read again, and the request goes on meanwhile.
    await sleep(2100);
    expect((await c.dispatch.submit(execution(), clientSignals().signals)).status).toBe('completed');
    expect(reads).toBe(2);
    // A read under way is not started again.
    expect((await c.dispatch.submit(execution(), clientSignals().signals)).status).toBe('completed');
    expect(reads).toBe(2);
    hang?.();
  });

  it('refuses with no_workers when no worker is alive', async () => {
    const c = cluster({ registry: { nodes: async () => [workerNode({ role: 'api' })] } });
    const refused = await c.dispatch.submit(execution(), clientSignals().signals).catch((e: unknown) => e);
    expect((refused as PyboxError).code).toBe('no_workers');
    expect((refused as PyboxError).retryAfterS).toBe(2);
  });

  it('refuses with queue_unavailable, quickly, when Redis does not answer', async () => {
    const c = cluster({ connection: 'redis://127.0.0.1:1', redisTimeoutMs: 500 });
    const started = Date.now();
    const refused = await c.dispatch.submit(execution(), clientSignals().signals).catch((e: unknown) => e);
    console.log(`queue_unavailable after ${Date.now() - started} ms (redisTimeoutMs 500)`);
    expect((refused as PyboxError).code).toBe('queue_unavailable');
    expect((refused as PyboxError).retryAfterS).toBe(2);
    // Once its connection is known lost, the next one is refused without waiting out a timeout.
    const again = Date.now();
    const refusedAgain = await c.dispatch.submit(execution(), clientSignals().signals).catch((e: unknown) => e);
    console.log(`queue_unavailable again after ${Date.now() - again} ms`);
    expect((refusedAgain as PyboxError).code).toBe('queue_unavailable');
    // An admission asked beside the failed read of the queue is given back: nobody holds a place.
    expect([...c.admission.held.values()].every((ids) => ids.size === 0)).toBe(true);
  }, 15_000);

  it('fails a malformed job with a clear reason and goes on working', async () => {
    const c = cluster();
    const run = new FakeRun();
    await c.worker(run);
    const queue = new Queue(QUEUE_NAME, { connection: redisOptionsOf(REDIS_URL), prefix: c.prefix });
    cleanups.push(() => queue.close());
    const bad = await queue.add('run', { v: 1, job: { id: '../../etc', code: 'x' } }, { jobId: 'bad-job', attempts: 3 });
    await waitFor('the bad job to fail', async () => (await bad.getState()) === 'failed');
    const failed = await queue.getJob('bad-job');
    expect(failed?.failedReason).toMatch(/^malformed execution payload: /);
    expect(failed?.attemptsMade).toBe(1);
    expect(run.seen).toHaveLength(0);
    const ok = await c.dispatch.submit(execution(), clientSignals().signals);
    expect(ok.status).toBe('completed');
  });
});

describe('ClusterRegistry and ClusterBackend', () => {
  it('lists live nodes; a stopped one leaves at once, one that stops beating leaves when its report expires', async () => {
    const prefix = newPrefix();
    const redis = new Redis(redisOptionsOf(REDIS_URL));
    cleanups.push(() => redis.quit());
    const reg = (nodeId: string, r: Redis = redis) => new ClusterRegistry({ redis: r, prefix, nodeId, role: 'worker', heartbeatMs: 200, clock });
    const a = reg('node-a');
    const b = reg('node-b');
    const lostRedis = new Redis(redisOptionsOf(REDIS_URL));
    lostRedis.on('error', () => {});
    const c = reg('node-c', lostRedis);
    await a.start(() => ({ slots: 2, running: 1, runtime: 'runsc', engine: true, imageReady: true }));
    await b.start(() => ({ slots: 4, running: 0 }));
    await c.start(() => ({ slots: 1, running: 0 }));
    cleanups.push(() => a.stop(), () => b.stop(), () => c.stop());
    // Someone else's junk under the prefix is ignored, not trusted.
    await redis.set(`${prefix}:node:evil`, '{"nodeId":"evil","role":"root"}', 'PX', 5000);
    const all = await a.nodes();
    expect(all.map((n) => n.nodeId)).toEqual(['node-a', 'node-b', 'node-c']);
    expect(all[0]).toMatchObject({ role: 'worker', slots: 2, running: 1, runtime: 'runsc', pid: process.pid });
    await a.stop();
    expect((await b.nodes()).map((n) => n.nodeId)).toEqual(['node-b', 'node-c']);
    // node-c's connection to Redis goes away: its heartbeats stop, and three beats later so does it.
    lostRedis.disconnect();
    await waitFor('node-c to expire', async () => !(await b.nodes()).some((n) => n.nodeId === 'node-c'), 3000);
    expect((await b.nodes()).map((n) => n.nodeId)).toEqual(['node-b']);
  });

  it("describes and checks the executions' side from the live workers' reports", async () => {
    const prefix = newPrefix();
    const redis = new Redis(redisOptionsOf(REDIS_URL));
    cleanups.push(() => redis.quit());
    const registry = new ClusterRegistry({ redis, prefix, nodeId: 'api-1', role: 'api', heartbeatMs: 1000, clock });
    const backend = new ClusterBackend({ registry, redis, retryAfterS: 2, logger: quiet });
    await registry.start(() => ({ slots: 0, running: 0 }));
    cleanups.push(() => registry.stop());
    expect(backend.identity()).toEqual({ runtime: null, image: '' });
    await expect(backend.describe()).rejects.toMatchObject({ code: 'no_workers' });
    expect(await backend.checks()).toEqual({ checks: { engine: false, image: false, queue: true, workers: false }, message: 'no worker is alive' });
    const worker = new ClusterRegistry({ redis, prefix, nodeId: 'worker-1', role: 'worker', heartbeatMs: 1000, clock });
    await worker.start(() => ({ slots: 4, running: 0, runtime: 'runsc', image: 'pybox-python:abc', python: '3.12.1', packages: { numpy: '2.0' }, engine: true, imageReady: false }));
    cleanups.push(() => worker.stop());
    const checked = await backend.checks();
    expect(checked.checks).toEqual({ engine: true, image: false, queue: true, workers: true });
    expect(checked.message).toBe('no worker has the sandbox image');
    expect(await backend.describe()).toEqual({ runtime: 'runsc', availableRuntimes: ['runsc'], image: 'pybox-python:abc', python: '3.12.1', packages: { numpy: '2.0' } });
    expect(backend.identity()).toEqual({ runtime: 'runsc', image: 'pybox-python:abc' });
  });
});

async function killed(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
}
