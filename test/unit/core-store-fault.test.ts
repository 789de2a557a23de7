// The execution service when its store cannot be written: the run that finds out still answers with
// what the code did; later runs are refused (503 store_unavailable) until the store takes writes
// again, and it is tried at most once per Retry-After (a locked database makes each try wait).
import { describe, expect, it } from 'vitest';
import { LOCAL_CALLER } from '../../src/core/caller.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { ExecutionRequest } from '../../src/core/schemas.ts';
import { defaultConfig, localService, ManualClock, MemoryStore, outcome, RecordingLogger, runReport } from './fakes.ts';

function setup() {
  const store = new MemoryStore();
  const clock = new ManualClock();
  let runs = 0;
  let probes = 0;
  const healthy = store.healthy.bind(store);
  store.healthy = () => {
    probes++;
    return healthy();
  };
  let n = 0;
  const service = localService({
    sandboxes: {
      run: async () => {
        runs++;
        return outcome('finished', { report: runReport(), stdout: 'ran\n' });
      },
    },
    engine: { ping: async () => true, imageExists: async () => true },
    store,
    gate: new ConcurrencyGate(2, 10, 3),
    limits: defaultConfig().limits,
    image: 'img',
    runtime: 'runc',
    availableRuntimes: ['runc'],
    clock,
    logger: new RecordingLogger(),
    newId: () => `id-${++n}`,
  });
  return { service, store, clock, counts: () => ({ runs, probes }) };
}

const req = ExecutionRequest.parse({ code: 'print(1)' });

describe('the execution service with a store that cannot be written', () => {
  it('answers the run that finds out, refuses the next ones with 503, and serves again once the store does', async () => {
    const { service, store, clock, counts } = setup();
    await service.execute(LOCAL_CALLER, req);
    store.saveError = new Error('SQLITE_BUSY: database is locked');
    store.isHealthy = false;

    const lost = await service.execute(LOCAL_CALLER, req);
    expect(lost.stdout).toBe('ran\n');
    expect(store.saved.map((r) => r.id)).toEqual(['id-1']);

    const refused = await service.execute(LOCAL_CALLER, req).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PyboxError);
    expect(refused).toMatchObject({
      code: 'store_unavailable',
      retryAfterS: 5,
      message: 'the history store cannot be written (SQLITE_BUSY: database is locked), so no execution is run; retry later',
    });
    expect(counts()).toEqual({ runs: 2, probes: 1 });
    // Within the next 5 s the store is not tried again: refused at once.
    clock.advance(4000);
    await expect(service.execute(LOCAL_CALLER, req)).rejects.toMatchObject({ code: 'store_unavailable' });
    expect(counts()).toEqual({ runs: 2, probes: 1 });
    const readiness = await service.readiness();
    expect(readiness).toMatchObject({ ready: false, checks: { store: false }, message: 'the history store cannot be written (SQLITE_BUSY: database is locked)' });

    store.saveError = undefined;
    store.isHealthy = true;
    clock.advance(1000);
    const again = await service.execute(LOCAL_CALLER, req);
    expect(again.stdout).toBe('ran\n');
    expect(store.saved.map((r) => r.id)).toEqual(['id-1', again.id]);
    expect((await service.readiness()).ready).toBe(true);
  });
});
