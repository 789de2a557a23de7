// The service's side of jobs: a job keeps the id and acceptance time it was given at submission and
// runs as a background item; check() refuses what execute() would refuse, without running anything.
import { describe, expect, it } from 'vitest';
import { LOCAL_CALLER, NO_TENANT_LIMITS } from '../../src/core/caller.ts';
import { DefaultExecutionService } from '../../src/core/execution-service.ts';
import { PyboxError } from '../../src/core/errors.ts';
import type { AcceptedExecution, Dispatch, ExecutionBackend } from '../../src/core/ports.ts';
import { buildResult } from '../../src/core/results.ts';
import { defaultConfig, ManualClock, MemoryStore, outcome, RecordingLogger, runReport } from './fakes.ts';

function setup() {
  const accepted: AcceptedExecution[] = [];
  const clock = new ManualClock(Date.UTC(2025, 0, 2));
  const config = defaultConfig();
  const dispatch: Dispatch = {
    async submit(execution) {
      accepted.push(execution);
      return buildResult({ runtime: 'runc', limits: config.limits, clock }, { id: execution.job.id, code: execution.job.code, limits: execution.limits, outcome: outcome('finished', { report: runReport() }), createdAtMs: execution.createdAtMs });
    },
  };
  const backend = { describe: async () => { throw new Error('unused'); }, identity: () => ({ runtime: 'runc' as const, image: 'i' }), checks: async () => ({ checks: { engine: true, image: true } }) } satisfies ExecutionBackend;
  let n = 0;
  const service = new DefaultExecutionService({ dispatch, backend, store: new MemoryStore(), limits: { ...config.limits, inputFilesMaxBytes: 10 }, clock, logger: new RecordingLogger(), newId: () => `new-${++n}` });
  return { service, accepted, clock };
}

describe('DefaultExecutionService and jobs', () => {
  it('runs a job under its own id and acceptance time, as a background item', async () => {
    const { service, accepted } = setup();
    const result = await service.execute(LOCAL_CALLER, { code: 'print(1)' }, { job: { id: 'job-7', createdAtMs: Date.UTC(2024, 5, 1) } });
    expect(result.id).toBe('job-7');
    expect(result.createdAt).toBe('2024-06-01T00:00:00.000Z');
    expect(accepted[0]).toMatchObject({ job: { id: 'job-7' }, createdAtMs: Date.UTC(2024, 5, 1), background: true });
  });

  it('gives an interactive run a new id, not a background one', async () => {
    const { service, accepted, clock } = setup();
    const result = await service.execute(LOCAL_CALLER, { code: 'print(1)' });
    expect(result.id).toBe('new-1');
    expect(accepted[0]?.createdAtMs).toBe(clock.now());
    expect(accepted[0]?.background).toBeUndefined();
  });

  it('check() clamps like a run and refuses what a run refuses, running nothing', () => {
    const { service, accepted } = setup();
    const caller = { ...LOCAL_CALLER, admin: false, limits: { ...NO_TENANT_LIMITS, maxTimeoutMs: 2000 } };
    expect(service.check(caller, { code: 'x', timeoutMs: 60_000 }).limits.timeoutMs).toBe(2000);
    const refusals = [
      { req: { code: 'x', files: [{ path: 'a', content: '1', encoding: 'utf8' as const }, { path: 'a', content: '2', encoding: 'utf8' as const }] }, path: 'files[1].path' },
      { req: { code: 'x', files: [{ path: 'a', content: '01234567890', encoding: 'utf8' as const }] }, path: 'files' },
      { req: { code: 'x', timeoutMs: 1 }, path: 'timeoutMs' },
    ];
    for (const { req, path } of refusals) {
      let err: unknown;
      try {
        service.check(caller, req);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PyboxError);
      expect((err as PyboxError).code).toBe('invalid_request');
      expect((err as PyboxError).details).toEqual([{ path, message: expect.any(String) }]);
    }
    expect(accepted).toHaveLength(0);
  });
});
