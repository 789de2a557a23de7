// The job store contract against SQLite, on a file (a second connection to it is the second node),
// and what open.ts hands a node without cluster.postgresUrl.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import { openDatabase } from '../../src/store/db.ts';
import { SqliteExecutionStore } from '../../src/store/execution-store.ts';
import { CLAIMABLE, OPEN_TENANTS, SqliteJobStore } from '../../src/store/job-store.ts';
import { openStores, sqliteJobStores } from '../../src/store/open.ts';
import { SqliteWebhookOutbox, SqliteWebhookSecrets } from '../../src/store/webhook-store.ts';
import { describeJobStoreContract, job } from './job-store-contract.ts';
import { T0 } from './store-contract.ts';

const RETENTION = { maxExecutions: 1000, maxAgeDays: 0 };

describeJobStoreContract('SQLite', async ({ maxAgeDays }) => {
  const dir = mkdtempSync(join(tmpdir(), 'pybox-jobs-'));
  const path = join(dir, 'pybox.db');
  const db = openDatabase(path);
  return {
    executions: new SqliteExecutionStore({ db, ...RETENTION }),
    ...sqliteJobStores(db, { maxAgeDays }),
    another: async () => {
      const other = openDatabase(path);
      return { executions: new SqliteExecutionStore({ db: other, ...RETENTION }), ...sqliteJobStores(other, { maxAgeDays }), close: async () => void other.close() };
    },
    cleanup: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('SQLite job store only', () => {
  it("drops a done item's request text, never read again", async () => {
    const db = openDatabase(':memory:');
    try {
      const { jobs } = sqliteJobStores(db);
      const item = job({ batchId: 'b1', id: 'b1-0' });
      await jobs.createBatch({ id: 'b1', tenant: 'acme', label: null, webhookUrl: null, createdAtMs: T0 }, [item]);
      expect(db.prepare('SELECT request FROM jobs').pluck().get()).toBe(JSON.stringify(item.request));
      await jobs.complete('b1-0', 'completed', T0);
      expect(db.prepare('SELECT request, state FROM jobs').all()).toEqual([{ request: '', state: 'done' }]);
    } finally {
      db.close();
    }
  });
  it('claims by index seeks: the tenants with open jobs, a tenant’s open jobs, the due deliveries', () => {
    const db = openDatabase(':memory:');
    try {
      const plan = (sql: string, params: Record<string, unknown> = {}) =>
        db
          .prepare<[Record<string, unknown>], { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`)
          .all(params)
          .map((r) => r.detail)
          .join(' | ');
      const tenants = plan(`${OPEN_TENANTS} SELECT tenant FROM t WHERE tenant IS NOT NULL`);
      expect(tenants).toContain('SEARCH jobs USING INDEX jobs_open (tenant>?)');
      expect(tenants).not.toMatch(/SCAN jobs(?! USING INDEX jobs_open)/);
      expect(plan(`SELECT seq FROM jobs WHERE tenant = @tenant AND ${CLAIMABLE} ORDER BY created_at_ms, seq LIMIT 4`, { tenant: 'a', now: 1 })).toBe(
        'SEARCH jobs USING INDEX jobs_open (tenant=?)',
      );
      expect(plan(`SELECT seq FROM webhook_deliveries WHERE state = 'pending' AND next_at_ms <= 5 ORDER BY next_at_ms, seq LIMIT 4`)).toContain(
        'INDEX webhook_deliveries_due',
      );
      expect(plan(`SELECT idx FROM jobs WHERE batch_id = 'b' AND idx >= 3 ORDER BY idx LIMIT 5`)).toContain('jobs_batch_idx');
      expect(plan(`SELECT idx FROM jobs WHERE batch_id = 'b' AND done_seq > 3 ORDER BY done_seq LIMIT 5`)).toContain('jobs_batch_done_seq');
      expect(plan(`SELECT seq FROM jobs WHERE owner = 'n1' AND state = 'running'`)).toContain('jobs_running');
    } finally {
      db.close();
    }
  });
});

describe('open.ts job stores without cluster.postgresUrl', () => {
  it('are SQLite, on the execution store’s database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pybox-open-'));
    try {
      const stores = await openStores(ConfigSchema.parse({ store: { path: join(dir, 'pybox.db') } }));
      expect(stores.jobs).toBeInstanceOf(SqliteJobStore);
      expect(stores.outbox).toBeInstanceOf(SqliteWebhookOutbox);
      expect(stores.secrets).toBeInstanceOf(SqliteWebhookSecrets);
      const a = job();
      await stores.jobs.createJob(a);
      expect(await stores.jobs.claim({ owner: 'n1', max: 1, nowMs: T0, leaseMs: 1000 })).toEqual([a]);
      await stores.executions.close();
      await stores.tenants.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
