// The store that cannot be written: runs are refused with a clear 503, /readyz says so, and nothing
// already recorded is lost. Another process holds the database's write lock, which root cannot write
// through either. A file of its own: while the lock is held, each write pybox tries waits for the
// store's busy timeout and holds the whole process meanwhile, which would stall other cases.
import Database from 'better-sqlite3';
import { describe, expect } from 'vitest';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { battery, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

describe.each(runtimes)('a store that cannot be written, under %s', (runtime) => {
  const sec = battery(runtime);

  sec('the store cannot be written: runs are refused with 503, /readyz says so, nothing recorded is lost', async ({ request, pybox }) => {
    const recorded: string[] = [];
    for (const i of [1, 2, 3]) {
      const r = ExecutionResult.parse((await request('/v1/executions', { method: 'POST', body: { code: `print(${i})` } })).json);
      recorded.push(r.id);
    }
    // Another process holds the database's write lock (root cannot write through it either).
    const locker = new Database(pybox.config.store.path);
    locker.pragma('busy_timeout = 0');
    locker.exec('BEGIN IMMEDIATE');
    try {
      // The first run finds out: it still answers with what the code did, but it is not kept.
      const lost = await request('/v1/executions', { method: 'POST', body: { code: 'print("not kept")' } });
      expect(lost.status).toBe(200);
      const lostId = (lost.json as ExecutionResult).id;
      // From then on runs are refused, and said why.
      const refused = await request('/v1/executions', { method: 'POST', body: { code: 'print(1)' } });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect((refused.json as { error: { code: string; message: string } }).error.code).toBe('store_unavailable');
      expect((refused.json as { error: { message: string } }).error.message).toMatch(/^the history store cannot be written \(.*database is locked.*\), so no execution is run; retry later$/);
      const notReady = await request('/readyz');
      expect(notReady.status).toBe(503);
      expect(notReady.json).toMatchObject({ ready: false, checks: { engine: true, image: true, store: false } });
      expect((notReady.json as { message: string }).message).toMatch(/^the history store cannot be written/);
      // Everything recorded before is still served.
      for (const id of recorded) expect((await request(`/v1/executions/${id}`)).status).toBe(200);
      expect((await request(`/v1/executions/${lostId}`)).status).toBe(404);
    } finally {
      locker.exec('ROLLBACK');
      locker.close();
    }
    expect((await request('/readyz')).status).toBe(200);
    const again = await request('/v1/executions', { method: 'POST', body: { code: 'print("kept again")' } });
    expect(again.status).toBe(200);
    const history = (await request('/v1/executions?limit=10')).json as { items: ExecutionResult[] };
    expect(history.items.map((i) => i.id).slice(1)).toEqual([...recorded].reverse());
  }, { timeoutMs: 120_000, concurrent: false });
});
