// The execution service per caller: limits clamped to the tenant's maxima within the server's,
// data scoped to the caller's tenant (admin sees all), runs metered to the tenant, fair slots.
import { describe, expect, it } from 'vitest';
import { LOCAL_CALLER, NO_TENANT_LIMITS, type Caller, type TenantLimits } from '../../src/core/caller.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { ExecutionRequest } from '../../src/core/schemas.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { defaultConfig, deferred, localService, ManualClock, MemoryStore, outcome, RecordingLogger, runReport } from './fakes.ts';

const tenant = (name: string, limits: Partial<TenantLimits> = {}, admin = false): Caller => ({
  tenant: name,
  keyId: `key_${name}`,
  admin,
  limits: { ...NO_TENANT_LIMITS, ...limits },
});

function setup(run: (job: SandboxJob) => SandboxOutcome | Promise<SandboxOutcome> = () => outcome('finished', { report: runReport() }), gate = new ConcurrencyGate(4, 10, 3)) {
  const store = new MemoryStore();
  const jobs: SandboxJob[] = [];
  let n = 0;
  const service = localService({
    sandboxes: {
      run: async (job) => {
        jobs.push(job);
        return run(job);
      },
    },
    engine: { ping: async () => true, imageExists: async () => true },
    store,
    gate,
    limits: defaultConfig().limits, // defaults 30 s / 256 MB / 1 CPU, maxima 300 s / 2048 MB / 2 CPUs
    image: 'pybox-python:test',
    runtime: 'runc',
    availableRuntimes: ['runc'],
    clock: new ManualClock(),
    logger: new RecordingLogger(),
    newId: () => `id-${++n}`,
  });
  return { service, store, jobs, gate };
}

const request = (body: Record<string, unknown> = {}) => ExecutionRequest.parse({ code: 'print(1)', ...body });

async function rejection(p: Promise<unknown>): Promise<PyboxError> {
  try {
    await p;
  } catch (e) {
    return e as PyboxError;
  }
  throw new Error('expected a rejection');
}

describe('limits per tenant', () => {
  it("clamps a request to the tenant's maxima", async () => {
    const { service } = setup();
    const small = tenant('small', { maxTimeoutMs: 2000, maxMemoryMb: 128, maxCpus: 0.5 });
    const r = await service.execute(small, request({ timeoutMs: 60_000, memoryMb: 1024, cpus: 2 }));
    expect(r.limits).toMatchObject({ timeoutMs: 2000, memoryMb: 128, cpus: 0.5 });
  });

  it("lowers the defaults to the tenant's maxima, and leaves smaller requests alone", async () => {
    const { service } = setup();
    const small = tenant('small', { maxTimeoutMs: 2000, maxMemoryMb: 128, maxCpus: 0.5 });
    expect((await service.execute(small, request())).limits).toMatchObject({ timeoutMs: 2000, memoryMb: 128, cpus: 0.5 });
    expect((await service.execute(small, request({ timeoutMs: 1500, memoryMb: 64, cpus: 0.25 }))).limits).toMatchObject({ timeoutMs: 1500, memoryMb: 64, cpus: 0.25 });
  });

  it("never lets a tenant's maxima exceed the server's", async () => {
    const { service } = setup();
    const big = tenant('big', { maxTimeoutMs: 10_000_000, maxMemoryMb: 60_000, maxCpus: 32 });
    const r = await service.execute(big, request({ timeoutMs: 9_000_000, memoryMb: 50_000, cpus: 16 }));
    expect(r.limits).toMatchObject({ timeoutMs: 300_000, memoryMb: 2048, cpus: 2 });
  });

  it("reports the caller's own limits from runtimes(), the server's without a caller", async () => {
    const { service } = setup((job) => outcome('finished', { report: runReport(), stdout: job.id.startsWith('probe') ? '{"python": "3.11.2", "packages": {}}' : '' }));
    const small = tenant('small', { maxTimeoutMs: 2000 });
    expect((await service.runtimes(small)).limits).toMatchObject({ defaults: { timeoutMs: 2000 }, max: { timeoutMs: 2000, memoryMb: 2048 } });
    expect((await service.runtimes()).limits).toMatchObject({ defaults: { timeoutMs: 30_000 }, max: { timeoutMs: 300_000 } });
  });

  it("refuses a tenant's execution over its concurrency with rate_limited, and runs another tenant's", async () => {
    const release = deferred<void>();
    const { service } = setup(async () => {
      await release.promise;
      return outcome('finished', { report: runReport() });
    });
    const one = tenant('one', { maxConcurrency: 1 });
    const first = service.execute(one, request());
    const e = await rejection(service.execute(one, request()));
    expect(e.code).toBe('rate_limited');
    expect(e.rateLimit?.policy).toBe('concurrency');
    const other = service.execute(tenant('other', { maxConcurrency: 1 }), request());
    release.resolve();
    expect((await first).status).toBe('completed');
    expect((await other).status).toBe('completed');
  });
});

describe('data per tenant', () => {
  it("answers another tenant's id exactly as an unknown one", async () => {
    const { service } = setup();
    const a = tenant('a');
    const b = tenant('b');
    const mine = await service.execute(a, request());
    expect(await service.get(a, mine.id)).toEqual({ ...mine, code: request().code });
    const theirs = await (async () => {
      try {
        await service.get(b, mine.id);
      } catch (e) {
        return e as PyboxError;
      }
      throw new Error('b read a');
    })();
    const unknown = await (async () => {
      try {
        await service.get(b, 'id-999');
      } catch (e) {
        return e as PyboxError;
      }
      throw new Error('found an unknown id');
    })();
    expect(theirs.code).toBe('not_found');
    expect(unknown.code).toBe('not_found');
    expect(theirs.message.replace(mine.id, 'ID')).toBe(unknown.message.replace('id-999', 'ID'));
  });

  it('scopes history and stats to the tenant, and shows all of them to an admin', async () => {
    const { service } = setup();
    const a = tenant('a');
    const b = tenant('b');
    const admin = tenant('ops', {}, true);
    await service.execute(a, request());
    await service.execute(b, request());
    await service.execute(a, request());
    expect((await service.history(a, { limit: 10 })).items.map((r) => r.id)).toEqual(['id-3', 'id-1']);
    expect((await service.history(b, { limit: 10 })).items.map((r) => r.id)).toEqual(['id-2']);
    expect((await service.history(admin, { limit: 10 })).items.map((r) => r.id)).toEqual(['id-3', 'id-2', 'id-1']);
    expect((await service.stats(a)).total).toBe(2);
    expect((await service.stats(b)).total).toBe(1);
    expect((await service.stats(admin)).total).toBe(3);
    expect((await service.get(admin, 'id-2')).id).toBe('id-2');
    expect((await service.stats(LOCAL_CALLER)).total).toBe(3); // local mode is the operator
  });
});

describe('metering', () => {
  it('meters each run to its tenant with the bytes the code wrote, kept or not', async () => {
    const { service, store } = setup(() => outcome('finished', { report: runReport(), stdout: 'x'.repeat(100), stderr: 'yy', capBytes: 10 }));
    const r = await service.execute(tenant('a'), request());
    expect(r.stdout).toHaveLength(10);
    expect(store.meters.get(r.id)).toEqual({ tenant: 'a', outputBytes: 102 });
  });

  it("gives a tenant its own usage (zeros when it has none) and an admin everyone's or one tenant's", async () => {
    const { service } = setup(() => outcome('finished', { report: runReport({ cpuMs: 5 }), stdout: 'abc', durationMs: 50 }));
    const a = tenant('a');
    const admin = tenant('ops', {}, true);
    await service.execute(a, request());
    await service.execute(a, request());
    expect(await service.usage(a, {})).toMatchObject({ from: null, to: null, tenants: [{ tenant: 'a', executions: 2, wallMs: 100, cpuMs: 10, outputBytes: 6 }] });
    expect((await service.usage(a, { tenant: 'a' })).tenants).toHaveLength(1);
    expect((await service.usage(tenant('b'), {})).tenants).toMatchObject([{ tenant: 'b', executions: 0, outputBytes: 0 }]);
    expect((await service.usage(admin, {})).tenants.map((t) => t.tenant)).toEqual(['a']);
    expect((await service.usage(admin, { tenant: 'z' })).tenants).toMatchObject([{ tenant: 'z', executions: 0 }]);
  });

  it("answers a non-admin asking for another tenant's usage with not_found, and a reversed period as invalid", async () => {
    const { service } = setup();
    await expect(service.usage(tenant('b'), { tenant: 'a' })).rejects.toThrow(expect.objectContaining({ code: 'not_found' }));
    await expect(service.usage(tenant('b'), { from: '2025-02-01', to: '2025-01-01' })).rejects.toThrow(expect.objectContaining({ code: 'invalid_request' }));
  });
});
