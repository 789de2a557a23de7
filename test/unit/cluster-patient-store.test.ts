import { describe, expect, it } from 'vitest';
import { PatientStore } from '../../src/cluster/patient-store.ts';
import { PyboxError } from '../../src/core/errors.ts';
import type { ExecutionStore } from '../../src/core/ports.ts';
import type { ExecutionResult } from '../../src/core/schemas.ts';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const result = { id: 'r1' } as ExecutionResult;

function failing(times: number, error = () => new PyboxError('store_unavailable', 'connection refused')): { store: ExecutionStore; saved: string[]; tries: () => number } {
  let n = 0;
  const saved: string[] = [];
  const store = {
    async save(r: ExecutionResult) {
      if (n++ < times) throw error();
      saved.push(r.id);
    },
  } as unknown as ExecutionStore;
  return { store, saved, tries: () => n };
}

describe('PatientStore (a worker saving results through a store outage)', () => {
  it('saves once the store takes writes again, within its patience', async () => {
    const f = failing(3);
    const waits: number[] = [];
    const store = new PatientStore(f.store, { retryMs: 60_000, logger: quiet, sleep: async (ms) => void waits.push(ms) });
    await store.save(result);
    expect(f.saved).toEqual(['r1']);
    expect(waits).toEqual([250, 500, 1000]);
  });

  it('gives up with the store\'s own error once its patience is spent', async () => {
    const f = failing(1000);
    const store = new PatientStore(f.store, { retryMs: 0, logger: quiet, sleep: async () => {} });
    await expect(store.save(result)).rejects.toThrow('connection refused');
    expect(f.tries()).toBe(1);
  });

  it('does not wait out a failure that is not an outage (a duplicate id, a bad row)', async () => {
    const f = failing(1000, () => new PyboxError('internal', 'an execution with id r1 is already stored'));
    const store = new PatientStore(f.store, { retryMs: 60_000, logger: quiet, sleep: async () => {} });
    await expect(store.save(result)).rejects.toThrow('already stored');
    expect(f.tries()).toBe(1);
  });
});
