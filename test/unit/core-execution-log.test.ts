// The service's line per execution: who (execution, request, tenant), how it ended and how long it
// waited for a slot, as the clock saw it; a refused one says why; an in-process caller's request id
// is held to the same rule as a header's.
import { describe, expect, it } from 'vitest';
import { LOCAL_CALLER, NO_TENANT_LIMITS, type Caller } from '../../src/core/caller.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import type { Sandboxes } from '../../src/core/ports.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { ExecutionRequest } from '../../src/core/schemas.ts';
import { defaultConfig, deferred, localService, ManualClock, MemoryStore, outcome, RecordingLogger, runReport } from './fakes.ts';

class HeldSandboxes implements Sandboxes {
  readonly held: Array<{ job: SandboxJob; finish: (o: SandboxOutcome) => void }> = [];
  run(job: SandboxJob): Promise<SandboxOutcome> {
    const d = deferred<SandboxOutcome>();
    this.held.push({ job, finish: d.resolve });
    return d.promise;
  }
}

function setup(slots = 1, maxQueue = 10) {
  const sandboxes = new HeldSandboxes();
  const clock = new ManualClock();
  const logger = new RecordingLogger();
  let n = 0;
  const service = localService({
    sandboxes,
    engine: { ping: async () => true, imageExists: async () => true },
    store: new MemoryStore(),
    gate: new ConcurrencyGate(slots, maxQueue, 3),
    limits: defaultConfig().limits,
    image: 'pybox-python:test',
    runtime: 'runsc',
    availableRuntimes: ['runc', 'runsc'],
    clock,
    logger,
    newId: () => `id-${++n}`,
  });
  return { service, sandboxes, clock, logger };
}

const request = (code = 'print(1)') => ExecutionRequest.parse({ code });
const teamA: Caller = { tenant: 'team-a', keyId: 'key_000000000001', admin: false, limits: NO_TENANT_LIMITS };
const tick = () => new Promise((r) => setImmediate(r));

describe('the execution line', () => {
  it("names the execution, the request and the tenant, the result's figures, and the wait for a slot", async () => {
    const { service, sandboxes, clock, logger } = setup(1);
    const first = service.execute(teamA, request(), { requestId: 'req-1' });
    await tick();
    const second = service.execute(teamA, request(), { requestId: 'req-2' });
    await tick();
    expect(sandboxes.held).toHaveLength(1); // the second waits for the one slot
    clock.advance(250);
    sandboxes.held[0]?.finish(outcome('finished', { report: runReport(), durationMs: 100 }));
    await first;
    await tick();
    clock.advance(40);
    sandboxes.held[1]?.finish(outcome('finished', { report: runReport({ exitCode: 2 }), durationMs: 30 }));
    await second;
    const lines = logger.entries.filter((e) => e.msg === 'execution');
    expect(lines.map((e) => e.level)).toEqual(['info', 'info']);
    expect(lines[0]?.fields).toMatchObject({ executionId: 'id-1', requestId: 'req-1', tenant: 'team-a', status: 'completed', runtime: 'runsc', durationMs: 100, queueWaitMs: 0, totalMs: 250, exitCode: 0 });
    expect(lines[1]?.fields).toMatchObject({ executionId: 'id-2', requestId: 'req-2', tenant: 'team-a', status: 'error', durationMs: 30, queueWaitMs: 250, totalMs: 290, exitCode: 2 });
  });

  it('is a warning for an internal error', async () => {
    const { service, sandboxes, logger } = setup();
    const run = service.execute(LOCAL_CALLER, request());
    await tick();
    sandboxes.held[0]?.finish(outcome('failed', { failure: 'engine gone' }));
    expect((await run).status).toBe('internal_error');
    expect(logger.entries.filter((e) => e.msg === 'execution').map((e) => [e.level, e.fields?.status])).toEqual([['warn', 'internal_error']]);
  });

  it('a refused execution leaves a line with the refusal code, and no result line', async () => {
    const { service, sandboxes, logger } = setup(1, 0);
    const running = service.execute(LOCAL_CALLER, request(), { requestId: 'busy' });
    await tick();
    await expect(service.execute(LOCAL_CALLER, request(), { requestId: 'turned-away' })).rejects.toMatchObject({ code: 'queue_full' });
    const refused = logger.entries.filter((e) => e.msg === 'execution refused');
    expect(refused.map((e) => e.fields)).toEqual([{ executionId: 'id-2', requestId: 'turned-away', tenant: 'local', code: 'queue_full' }]);
    expect(logger.entries.some((e) => e.msg === 'execution' && e.fields?.requestId === 'turned-away')).toBe(false);
    sandboxes.held[0]?.finish(outcome('finished', { report: runReport() }));
    await running;
  });

  it("drops an in-process caller's request id that a header could not have carried", async () => {
    const { service, sandboxes, logger } = setup();
    const run = service.execute(LOCAL_CALLER, request(), { requestId: 'has spaces\nand a newline' });
    await tick();
    sandboxes.held[0]?.finish(outcome('finished', { report: runReport() }));
    await run;
    const line = logger.entries.find((e) => e.msg === 'execution');
    expect(line?.fields?.executionId).toBe('id-1');
    expect(line?.fields?.requestId).toBeUndefined();
  });
});
