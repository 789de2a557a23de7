// The JobRunner over the in-memory JobStore: claims within its concurrency, fair across tenants,
// leases held while a job runs, refusals given back, restarts, no second run of a saved result, and
// each webhook queued once.
import { afterEach, describe, expect, it } from 'vitest';
import { NO_TENANT_LIMITS, type Caller, type TenantLimits } from '../../src/core/caller.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { batchDeliveryId, executionDeliveryId, JobRunner, tenantCallers, type JobCompletion } from '../../src/core/job-runner.ts';
import type { ExecuteOptions, StoredJob } from '../../src/core/ports.ts';
import { buildResult } from '../../src/core/results.ts';
import { WebhookEvent, type AppliedLimits, type ExecutionRequest, type ExecutionResult } from '../../src/core/schemas.ts';
import { MemoryJobStore } from '../support/memory-job-store.ts';
import { MemoryOutbox } from '../support/memory-outbox.ts';
import { defaultConfig, deferred, MemoryStore, outcome, RecordingLogger, runReport } from './fakes.ts';

const clock = { now: () => Date.now() };
const LIMITS: AppliedLimits = { timeoutMs: 1000, memoryMb: 128, cpus: 1, outputBytes: 1000 };
const results = { runtime: 'runc' as const, limits: defaultConfig().limits, clock };

function resultFor(id: string, status: 'completed' | 'error' = 'completed'): ExecutionResult {
  return buildResult(results, { id, code: 'print(1)', limits: LIMITS, outcome: outcome('finished', { report: runReport({ exitCode: status === 'completed' ? 0 : 1 }), stdout: 'x' }), createdAtMs: clock.now() });
}

/** A service that saves a result for each job as the dispatch would; `behave` decides how each run goes. */
class FakeService {
  readonly calls: Array<{ caller: Caller; request: ExecutionRequest; opts: ExecuteOptions | undefined }> = [];
  running = 0;
  maxRunning = 0;
  behave: (id: string, n: number) => Promise<void> = async () => {};
  constructor(private readonly store: MemoryStore) {}
  async execute(caller: Caller, request: ExecutionRequest, opts?: ExecuteOptions): Promise<ExecutionResult> {
    this.calls.push({ caller, request, opts });
    const id = opts?.job?.id as string;
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      await this.behave(id, this.calls.filter((c) => c.opts?.job?.id === id).length);
    } finally {
      this.running--;
    }
    const r = resultFor(id);
    await this.store.save(r, { tenant: caller.tenant, outputBytes: 1 });
    return r;
  }
  check(): { limits: AppliedLimits } {
    return { limits: LIMITS };
  }
  clampLimits(): AppliedLimits {
    return LIMITS;
  }
}

const runners: JobRunner[] = [];
afterEach(async () => {
  for (const r of runners.splice(0)) {
    r.stop();
    await r.settled();
  }
});

function setup(opts: { concurrency?: number; leaseMs?: number; owner?: string; limits?: Record<string, Partial<TenantLimits>>; clock?: { now: () => number } } = {}) {
  const store = new MemoryStore();
  const jobs = new MemoryJobStore((id) => store.get(id));
  const outbox = new MemoryOutbox();
  const service = new FakeService(store);
  const logger = new RecordingLogger();
  const make = (owner: string, s: FakeService = service) => {
    const runner = new JobRunner({
      jobs,
      store,
      service: s,
      outbox,
      clock,
      logger,
      owner,
      ...(opts.clock ? { clock: opts.clock } : {}),
      config: { maxBatchItems: 1000, maxOpenPerTenant: 10_000, concurrency: opts.concurrency ?? 2, leaseMs: opts.leaseMs ?? 5000, pollMs: 20 },
      callerFor: async (tenant) => ({ tenant, keyId: null, admin: false, limits: { ...NO_TENANT_LIMITS, ...opts.limits?.[tenant] } }),
      results,
    });
    runners.push(runner);
    return runner;
  };
  const runner = make(opts.owner ?? 'node-1');
  const completions: JobCompletion[] = [];
  runner.onCompleted((c) => completions.push(c));
  return { store, jobs, outbox, service, logger, runner, make, completions };
}

let seq = 0;
function job(tenant: string, over: Partial<StoredJob> = {}): StoredJob {
  seq++;
  return { id: `job-${seq}`, tenant, batchId: null, index: 0, request: { code: `print(${seq})` }, requestId: null, webhookUrl: null, createdAtMs: seq, ...over };
}

function batchOf(tenant: string, id: string, n: number, createdAtMs: number): StoredJob[] {
  return Array.from({ length: n }, (_, index) => job(tenant, { batchId: id, index, createdAtMs, id: `${id}-${index}` }));
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('JobRunner', () => {
  it('runs a job as its tenant with its own id and acceptance time, then completes it', async () => {
    const { jobs, runner, service, store, completions } = setup();
    const j = job('team-a', { requestId: 'req-1' });
    await jobs.createJob(j);
    await runner.start();
    await until(() => jobs.stateOf(j.id) === 'done', 'the job to be done');
    expect(service.calls).toHaveLength(1);
    expect(service.calls[0]?.caller).toMatchObject({ tenant: 'team-a', admin: false });
    expect(service.calls[0]?.opts).toMatchObject({ job: { id: j.id, createdAtMs: j.createdAtMs }, requestId: 'req-1' });
    expect(await store.get(j.id)).toBeDefined();
    expect(completions.map((c) => [c.job.id, c.status])).toEqual([[j.id, 'completed']]);
  });

  it('takes turns between two tenants\' batches instead of running the older one first', async () => {
    const { jobs, runner, service } = setup({ concurrency: 2 });
    await jobs.createBatch({ id: 'b-a', tenant: 'team-a', label: null, webhookUrl: null, createdAtMs: 1 }, batchOf('team-a', 'b-a', 10, 1));
    await jobs.createBatch({ id: 'b-b', tenant: 'team-b', label: null, webhookUrl: null, createdAtMs: 2 }, batchOf('team-b', 'b-b', 10, 2));
    await runner.start();
    await until(() => service.calls.length === 20 && runner.running === 0, 'every item to run');
    const tenants = service.calls.map((c) => c.caller.tenant);
    // Older team-a alone would fill the first ten; fairly, team-b gets its turn from the start.
    expect(new Set(tenants.slice(0, 2))).toEqual(new Set(['team-a', 'team-b']));
    const firstTen = tenants.slice(0, 10);
    expect(firstTen.filter((t) => t === 'team-b').length).toBeGreaterThanOrEqual(4);
    expect((await jobs.batch('b-a'))?.state).toBe('completed');
    expect((await jobs.batch('b-b'))?.state).toBe('completed');
  });

  it('runs at most jobs.concurrency at once, and at most a tenant\'s own ceiling', async () => {
    const { jobs, runner, service } = setup({ concurrency: 3, limits: { solo: { maxConcurrency: 1 } } });
    const gates = new Map<string, ReturnType<typeof deferred<void>>>();
    service.behave = (id) => {
      const d = deferred<void>();
      gates.set(id, d);
      return d.promise;
    };
    for (let i = 0; i < 6; i++) await jobs.createJob(job('team-a'));
    await runner.start();
    await until(() => service.running === 3, 'three runs');
    // Nothing more is claimed while the three run.
    await new Promise((r) => setTimeout(r, 100));
    expect(service.running).toBe(3);
    for (const d of gates.values()) d.resolve();
    await until(() => service.calls.length === 6 && service.running === 3, 'the next three');
    for (const d of gates.values()) d.resolve();
    await until(() => runner.running === 0, 'all to end');
    expect(service.maxRunning).toBe(3);

    // A tenant with a ceiling of one: its jobs run one at a time though slots are free.
    const soloCalls = () => service.calls.filter((c) => c.caller.tenant === 'solo').length;
    let soloRunning = 0;
    let soloMax = 0;
    service.behave = async () => {
      soloRunning++;
      soloMax = Math.max(soloMax, soloRunning);
      await new Promise((r) => setTimeout(r, 20));
      soloRunning--;
    };
    for (let i = 0; i < 4; i++) await jobs.createJob(job('solo'));
    runner.wake();
    await until(() => soloCalls() === 4 && runner.running === 0, 'solo jobs');
    expect(soloMax).toBe(1);
  });

  it('renews its leases while a job runs, so another node never takes it', async () => {
    // The leases' clock moves only when the test moves it, less than a lease at a time and only
    // after node-1 has renewed: a stalled event loop (a loaded CI host) cannot let a lease lapse,
    // and a runner that stopped renewing fails the wait for its next renewal.
    let nowMs = Date.now();
    const { jobs, runner, service, make } = setup({ leaseMs: 90, clock: { now: () => nowMs } });
    const other = make('node-2');
    const done = deferred<void>();
    service.behave = () => done.promise;
    try {
      const j = job('team-a');
      await jobs.createJob(j);
      await runner.start();
      await until(() => service.running === 1, 'the run to start');
      await other.start();
      const renewals = () => jobs.calls.renew.filter((c) => c.owner === 'node-1' && c.ids.includes(j.id));
      // Five lease lengths go by, 60 ms at a time; node-2 polls all along.
      for (let step = 0; step < 8; step++) {
        const seen = renewals().length;
        nowMs += 60;
        await until(() => renewals().some((c, i) => i >= seen && c.untilMs === nowMs + 90), 'a renewal at the moved clock');
        await new Promise((r) => setTimeout(r, 40));
      }
      expect(service.calls).toHaveLength(1);
      done.resolve();
      await until(() => jobs.stateOf(j.id) === 'done', 'completion');
      expect(service.calls).toHaveLength(1);
    } finally {
      done.resolve();
    }
  });

  it('gives a job refused for now (rate_limited) back with a wait, and runs it later', async () => {
    const { jobs, runner, service } = setup();
    service.behave = async (_id, n) => {
      if (n === 1) throw new PyboxError('rate_limited', 'too many', { retryAfterS: 0.05 });
    };
    const j = job('team-a');
    await jobs.createJob(j);
    const before = Date.now();
    await runner.start();
    await until(() => jobs.stateOf(j.id) === 'done', 'completion');
    expect(service.calls).toHaveLength(2);
    expect(jobs.calls.release).toHaveLength(1);
    expect(jobs.calls.release[0]?.notBeforeMs).toBeGreaterThanOrEqual(before + 50);
  });

  it('records a job that cannot be run at all as an internal error, so it still ends with a result', async () => {
    const { jobs, runner, service, store, completions } = setup();
    service.behave = async () => {
      throw new PyboxError('invalid_request', 'files exceed the limit');
    };
    const j = job('team-a');
    await jobs.createJob(j);
    await runner.start();
    await until(() => jobs.stateOf(j.id) === 'done', 'completion');
    const saved = await store.get(j.id);
    expect(saved?.status).toBe('internal_error');
    expect(saved?.error?.message).toContain('files exceed the limit');
    expect(completions[0]?.status).toBe('internal_error');
  });

  it('after a restart requeues what it held and runs it', async () => {
    const { jobs, runner, service } = setup({ owner: 'node-1' });
    const j = job('team-a');
    await jobs.createJob(j);
    // Held by node-1 with a long lease when it went down.
    await jobs.claim({ owner: 'node-1', max: 1, nowMs: Date.now(), leaseMs: 3_600_000 });
    expect(jobs.stateOf(j.id)).toBe('running');
    await runner.start();
    await until(() => jobs.stateOf(j.id) === 'done', 'completion');
    expect(service.calls).toHaveLength(1);
  });

  it('completes a job whose result is already saved without running it again', async () => {
    const { jobs, runner, service, store, completions } = setup();
    const j = job('team-a', { batchId: 'b1', index: 0 });
    await jobs.createBatch({ id: 'b1', tenant: 'team-a', label: null, webhookUrl: null, createdAtMs: 1 }, [j]);
    await jobs.claim({ owner: 'node-1', max: 1, nowMs: Date.now(), leaseMs: 3_600_000 });
    await store.save(resultFor(j.id, 'error'), { tenant: 'team-a', outputBytes: 0 });
    await runner.start();
    await until(() => jobs.stateOf(j.id) === 'done', 'completion');
    expect(service.calls).toHaveLength(0);
    expect(completions[0]?.status).toBe('error');
    expect((await jobs.batch('b1'))?.byStatus.error).toBe(1);
  });

  it('queues one webhook per async execution and one per finished batch', async () => {
    const { jobs, runner, outbox } = setup();
    const a = job('team-a', { webhookUrl: 'https://hooks.example/one' });
    await jobs.createJob(a);
    await jobs.createBatch({ id: 'b1', tenant: 'team-b', label: 'nightly', webhookUrl: 'https://hooks.example/batch', createdAtMs: 5 }, batchOf('team-b', 'b1', 3, 5));
    await runner.start();
    await until(() => jobs.stateOf(a.id) === 'done' && jobs.stateOf('b1-2') === 'done' && jobs.stateOf('b1-0') === 'done' && jobs.stateOf('b1-1') === 'done', 'all done');
    await until(() => outbox.rows.size >= 2, 'deliveries');
    const all = [...outbox.rows.values()];
    expect(all).toHaveLength(2);
    const exec = outbox.rows.get(executionDeliveryId(a.id));
    const batch = outbox.rows.get(batchDeliveryId('b1'));
    expect(exec).toMatchObject({ tenant: 'team-a', url: 'https://hooks.example/one', batchId: null });
    expect(WebhookEvent.parse(JSON.parse(exec?.body ?? ''))).toMatchObject({ type: 'execution.finished', id: exec?.id, execution: { id: a.id, status: 'completed' } });
    expect(batch).toMatchObject({ tenant: 'team-b', url: 'https://hooks.example/batch', batchId: 'b1' });
    expect(WebhookEvent.parse(JSON.parse(batch?.body ?? ''))).toMatchObject({ type: 'batch.finished', batch: { id: 'b1', state: 'completed', total: 3, done: 3, label: 'nightly' } });
    expect(JSON.parse(batch?.body ?? '{}').batch.tenant).toBeUndefined();
  });

  it('queues the webhook once when a job is completed again after a crash between queueing and completing', async () => {
    const { jobs, runner, outbox, store, service } = setup();
    const a = job('team-a', { webhookUrl: 'https://hooks.example/one' });
    await jobs.createJob(a);
    await jobs.claim({ owner: 'node-1', max: 1, nowMs: Date.now(), leaseMs: 3_600_000 });
    // What the node did before it died: saved the result and queued the delivery, not completed.
    await store.save(resultFor(a.id), { tenant: 'team-a', outputBytes: 0 });
    await outbox.enqueue({ id: executionDeliveryId(a.id), tenant: 'team-a', url: 'https://hooks.example/one', batchId: null, body: '{"first":true}' }, Date.now());
    await runner.start();
    await until(() => jobs.stateOf(a.id) === 'done', 'completion');
    expect(service.calls).toHaveLength(0);
    expect([...outbox.rows.keys()]).toEqual([executionDeliveryId(a.id)]);
    expect(outbox.rows.get(executionDeliveryId(a.id))?.body).toBe('{"first":true}');
  });

  it('on stop claims nothing more, and gives back a job the service refuses as shutting down', async () => {
    const { jobs, runner, service } = setup();
    service.behave = async () => {
      throw new PyboxError('shutting_down', 'bye', { retryAfterS: 5 });
    };
    const j = job('team-a');
    await jobs.createJob(j);
    await runner.start();
    await until(() => jobs.calls.release.length === 1, 'the release');
    runner.stop();
    await runner.settled();
    const claims = jobs.calls.claim;
    expect(jobs.stateOf(j.id)).toBe('queued');
    // Given back for another node (or this one after its restart) at once.
    expect(jobs.calls.release[0]?.notBeforeMs).toBeLessThanOrEqual(Date.now());
    await new Promise((r) => setTimeout(r, 100));
    expect(jobs.calls.claim).toBe(claims);
  });

  it('tenantCallers gives a job its tenant\'s limits, none for a tenant without a record', async () => {
    const limits: TenantLimits = { ...NO_TENANT_LIMITS, maxConcurrency: 2, maxTimeoutMs: 5000 };
    const callerFor = tenantCallers({ tenant: async (name) => (name === 'team-a' ? { name, limits, createdAt: '2024-01-01T00:00:00.000Z' } : undefined) });
    expect(await callerFor('team-a')).toEqual({ tenant: 'team-a', keyId: null, admin: false, limits });
    expect(await callerFor('local')).toEqual({ tenant: 'local', keyId: null, admin: false, limits: NO_TENANT_LIMITS });
  });
});
