// The job store contract against PostgreSQL (a second pool is the second node), and what only
// PostgreSQL has: outages reported as store_unavailable, claims and completions that do not wait
// on each other's locks, the plans the claim walks. The server comes from scripts/ensure-postgres.sh
// (test/support/servers.ts); without one these tests fail, they do not skip. This file works in a
// database of its own, dropped at the end, and every store the contract opens gets a schema of its own.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { openStores, postgresJobStores } from '../../src/store/open.ts';
import { connectPostgres, keepPool } from '../../src/store/postgres/connect.ts';
import { PostgresExecutionStore } from '../../src/store/postgres/execution-store.ts';
import { PostgresJobStore } from '../../src/store/postgres/job-store.ts';
import { createTestDatabase, type TestDatabase } from '../support/servers.ts';
import { describeJobStoreContract, job } from './job-store-contract.ts';
import { T0 } from './store-contract.ts';

const RETENTION = { maxExecutions: 1000, maxAgeDays: 0, onClose: keepPool };

let database: Promise<TestDatabase> | undefined;
afterAll(async () => {
  if (database) await (await database).drop();
});

/** A schema of its own in this file's database, migrated; its URL makes every connection use it. */
async function freshSchema(): Promise<{ url: string; drop: () => Promise<void> }> {
  const db = await (database ??= createTestDatabase());
  const schema = `s_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Pool({ connectionString: db.url, max: 1 });
  try {
    await admin.query(`CREATE SCHEMA ${schema}`);
  } finally {
    await admin.end();
  }
  const url = new URL(db.url);
  url.searchParams.set('options', `-c search_path=${schema}`);
  const drop = async () => {
    const p = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      await p.query(`DROP SCHEMA ${schema} CASCADE`);
    } finally {
      await p.end();
    }
  };
  return { url: url.toString(), drop };
}

async function node(url: string, maxAgeDays = 0) {
  const { pool } = await connectPostgres(url, { max: 4 });
  return { pool, executions: new PostgresExecutionStore(pool, RETENTION), ...postgresJobStores(pool, { maxAgeDays }) };
}

describeJobStoreContract('PostgreSQL', async ({ maxAgeDays }) => {
  const { url, drop } = await freshSchema();
  const first = await node(url, maxAgeDays);
  return {
    ...first,
    another: async () => {
      const other = await node(url, maxAgeDays);
      return { ...other, close: () => other.pool.end() };
    },
    cleanup: async () => {
      await first.pool.end();
      await drop();
    },
  };
});

describe('PostgreSQL job stores only', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function schemaNode() {
    const { url, drop } = await freshSchema();
    cleanups.push(drop);
    const n = await node(url);
    cleanups.push(() => n.pool.end());
    return { url, ...n };
  }

  it('report an outage as store_unavailable', async () => {
    const pool = new pg.Pool({ connectionString: 'postgres://pybox:x@127.0.0.1:1/pybox', connectionTimeoutMillis: 500 });
    cleanups.push(() => pool.end());
    const { jobs, outbox, secrets } = postgresJobStores(pool);
    for (const call of [
      () => jobs.claim({ owner: 'n1', max: 1, nowMs: T0, leaseMs: 1000 }),
      () => jobs.createJob(job()),
      () => jobs.complete('a', 'completed', T0),
      () => outbox.claimDue('n1', T0, 1, 1000),
      () => secrets.secret('acme'),
    ]) {
      const e = await call().catch((err: unknown) => err);
      expect(e).toBeInstanceOf(PyboxError);
      expect((e as PyboxError).code).toBe('store_unavailable');
    }
  });

  it('pass over, without waiting, the jobs a claim in progress holds', async () => {
    const n = await schemaNode();
    const a = job();
    const b = job({ createdAtMs: T0 + 1 });
    await n.jobs.createJob(a);
    await n.jobs.createJob(b);
    // Another node's claim, caught between its SELECT ... FOR UPDATE and its commit.
    const holder = await n.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT id FROM jobs WHERE id = $1 FOR UPDATE`, [a.id]);
      const got = await n.jobs.claim({ owner: 'n2', max: 5, nowMs: T0 + 5, leaseMs: 1000 });
      expect(got.map((j) => j.id)).toEqual([b.id]);
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect((await n.jobs.claim({ owner: 'n2', max: 5, nowMs: T0 + 5, leaseMs: 1000 })).map((j) => j.id)).toEqual([a.id]);
  });

  it("drop a done item's request text, never read again", async () => {
    const n = await schemaNode();
    const item = job({ batchId: 'b1', id: 'b1-0' });
    await n.jobs.createBatch({ id: 'b1', tenant: 'acme', label: null, webhookUrl: null, createdAtMs: T0 }, [item]);
    const before = await n.pool.query<{ request: string }>('SELECT request FROM jobs');
    expect(before.rows[0]?.request).toBe(JSON.stringify(item.request));
    await n.jobs.complete('b1-0', 'completed', T0);
    const after = await n.pool.query<{ request: string; state: string }>('SELECT request, state FROM jobs');
    expect(after.rows).toEqual([{ request: '', state: 'done' }]);
  });

  it('claim by index seeks: the open jobs of a tenant, the due deliveries', async () => {
    const n = await schemaNode();
    const client = await n.pool.connect();
    try {
      await client.query('SET enable_seqscan = off');
      const plan = async (sql: string) => (await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`)).rows.map((r) => r['QUERY PLAN']).join('\n');
      expect(await plan(`SELECT seq FROM jobs WHERE tenant = 'a' AND state <> 'done' ORDER BY created_at_ms, seq LIMIT 5`)).toContain('jobs_open');
      expect(await plan(`SELECT seq FROM webhook_deliveries WHERE state = 'pending' AND next_at_ms <= 5 ORDER BY next_at_ms, seq LIMIT 5`)).toContain(
        'webhook_deliveries_due',
      );
      expect(await plan(`SELECT idx FROM jobs WHERE batch_id = 'b' AND idx >= 3 ORDER BY idx LIMIT 5`)).toContain('jobs_batch_idx');
      expect(await plan(`SELECT idx FROM jobs WHERE batch_id = 'b' AND done_seq > 3 ORDER BY done_seq LIMIT 5`)).toContain('jobs_batch_done_seq');
    } finally {
      client.release();
    }
  });

  it('come from open.ts on the execution store’s pool', async () => {
    const { url } = await schemaNode();
    const config = ConfigSchema.parse({ cluster: { postgresUrl: url, redisUrl: 'redis://127.0.0.1:1' } });
    const stores = await openStores(config);
    try {
      // Outage reporting wraps them in a Proxy: the class shows through instanceof.
      expect(stores.jobs).toBeInstanceOf(PostgresJobStore);
      const a = job();
      await stores.jobs.createJob(a);
      expect(await stores.jobs.claim({ owner: 'n1', max: 1, nowMs: T0, leaseMs: 1000 })).toEqual([a]);
      expect((await stores.secrets.secret('acme')).length).toBe(32);
    } finally {
      await stores.executions.close();
      await stores.tenants.close();
    }
  });
});
