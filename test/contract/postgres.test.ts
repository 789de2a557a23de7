// The store contract against PostgreSQL, and what only PostgreSQL has: migrations that nodes run
// at once, a pool that survives its connections failing, health on a server that refuses writes.
// The server comes from scripts/ensure-postgres.sh (test/support/servers.ts: postgresUrl()); without
// one these tests fail, they do not skip. This file works in a database of its own, dropped at the
// end, and every store the contract opens gets a schema of its own in it.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import { PyboxError } from '../../src/core/errors.ts';
import type { Logger } from '../../src/core/ports.ts';
import { configuredStoreHasKeys, openExecutionStore, openStores, openTenantStore } from '../../src/store/open.ts';
import { connectPostgres, keepPool, redactUrl, sharePool } from '../../src/store/postgres/connect.ts';
import { PostgresExecutionStore, SAVE_LOCK } from '../../src/store/postgres/execution-store.ts';
import { MIGRATIONS } from '../../src/store/postgres/migrations.ts';
import { PostgresTenantStore } from '../../src/store/postgres/tenant-store.ts';
import { inTransaction } from '../../src/store/postgres/tx.ts';
import { hashApiKey, newApiKey } from '../../src/tenancy/keys.ts';
import { createTestDatabase, postgresUrl, type TestDatabase } from '../support/servers.ts';
import { describeStoreContract, manualClock, result } from './store-contract.ts';

const SERVER_URL = postgresUrl();

/** The URL of `database` on the test server, optionally with a search_path for every connection. */
function urlOf(database: string, schema?: string): string {
  const u = new URL(SERVER_URL);
  u.pathname = `/${database}`;
  if (schema !== undefined) u.searchParams.set('options', `-c search_path=${schema}`);
  return u.toString();
}

const createdDatabases: TestDatabase[] = [];
async function freshDatabase(): Promise<string> {
  const db = await createTestDatabase();
  createdDatabases.push(db);
  return db.name;
}

// Made by the first test that needs it: without a server, every test fails with the reason.
let fileDatabase: Promise<string> | undefined;
const database = (): Promise<string> => (fileDatabase ??= freshDatabase());
afterAll(async () => {
  for (const db of createdDatabases.splice(0)) await db.drop();
});

/** A schema of its own in this file's database, migrated, and a pool whose connections use it. */
async function freshSchema(): Promise<{ url: string; schema: string; pool: pg.Pool }> {
  const schema = `s_${randomBytes(6).toString('hex')}`;
  const db = await database();
  const admin = new pg.Pool({ connectionString: urlOf(db), max: 1 });
  try {
    await admin.query(`CREATE SCHEMA ${schema}`);
  } finally {
    await admin.end();
  }
  const url = urlOf(db, schema);
  const { pool } = await connectPostgres(url, { max: 4 });
  return { url, schema, pool };
}

describeStoreContract('PostgreSQL', async (opts) => {
  const { url, schema, pool } = await freshSchema();
  const executions = await PostgresExecutionStore.open(pool, { ...opts, onClose: keepPool });
  const tenants = new PostgresTenantStore(pool, { clock: opts.clock, onClose: keepPool });
  return {
    executions,
    tenants,
    // Another node: a pool of its own (migrating finds nothing to do), which the store owns.
    another: async (more) => PostgresExecutionStore.open((await connectPostgres(url, { max: 4 })).pool, more),
    cleanup: async () => {
      await executions.close();
      await tenants.close();
      try {
        await pool.query(`DROP SCHEMA ${schema} CASCADE`);
      } finally {
        await pool.end();
      }
    },
  };
});

describe('PostgreSQL only', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function schemaPool(): Promise<{ url: string; pool: pg.Pool }> {
    const { url, schema, pool } = await freshSchema();
    cleanups.push(async () => {
      try {
        await pool.query(`DROP SCHEMA ${schema} CASCADE`);
      } finally {
        await pool.end();
      }
    });
    return { url, pool };
  }

  const messages = () => {
    const lines: string[] = [];
    const log = (level: string) => (msg: string, fields?: Record<string, unknown>) => lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
    const logger: Logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
    return { lines, logger };
  };

  describe('migrations', () => {
    it('are applied once when several nodes start at once, and recorded by version', async () => {
      const fresh = await freshDatabase();
      const pools = await Promise.all(Array.from({ length: 4 }, () => connectPostgres(urlOf(fresh), { max: 1 })));
      const migrated = await Promise.all(pools.map(({ pool }) => pool.query<{ version: number }>('SELECT version FROM pybox_schema_migrations ORDER BY version')));
      for (const { pool } of pools) await pool.end();
      expect(migrated[0]?.rows.map((r) => r.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
      const { lines, logger } = messages();
      const again = await connectPostgres(urlOf(fresh), { logger });
      await again.pool.end();
      expect(lines.filter((l) => l.includes('schema migrated'))).toEqual([]);
    });

    it('logs the versions it applies', async () => {
      const { lines, logger } = messages();
      const { pool } = await connectPostgres(urlOf(await freshDatabase()), { logger });
      await pool.end();
      expect(lines).toEqual([`info postgres: schema migrated ${JSON.stringify({ versions: MIGRATIONS.map((_, i) => i + 1).join(',') })}`]);
    });

    it('refuse a database from a newer schema, without the password in the message, and leave nothing open', async () => {
      const { url, pool } = await schemaPool();
      await pool.query('INSERT INTO pybox_schema_migrations (version) VALUES ($1)', [MIGRATIONS.length + 1]);
      // A name of its own for the connections of this attempt, to see that none is left behind.
      const probe = `probe_${randomBytes(4).toString('hex')}`;
      const probeUrl = new URL(url);
      probeUrl.searchParams.set('application_name', probe);
      const e = await connectPostgres(probeUrl.toString()).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(Error);
      expect((e as Error).message).toContain(`schema version ${MIGRATIONS.length + 1}, newer than this pybox knows (${MIGRATIONS.length})`);
      const password = new URL(SERVER_URL).password;
      expect((e as Error).message).toContain(redactUrl(probeUrl.toString()));
      if (password !== '') expect((e as Error).message).not.toContain(`:${password}@`);
      const left = async () => (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [probe])).rows[0]?.n;
      for (let i = 0; i < 100 && (await left()) !== 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(await left()).toBe(0);
    });

    it('fail within the connect timeout when no server answers, without the password in the message', async () => {
      const e = await connectPostgres('postgres://pybox:s3cret-pw@127.0.0.1:1/pybox', { connectTimeoutMs: 1000 }).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect((e as Error).message).toMatch(/^cannot open the PostgreSQL store at postgres:\/\/pybox:\*\*\*@127\.0\.0\.1:1\/pybox: /);
      expect((e as Error).message).not.toContain('s3cret-pw');
    });

    it('save under the lock that prune() and nodes saving statement by statement (before version 2) take', () => {
      // Had the numbers parted, saves of the two kinds (a cluster mid-upgrade) would not take turns.
      expect(MIGRATIONS[1]).toContain(`pg_advisory_xact_lock(${SAVE_LOCK})`);
    });

    it("commit a save without waiting for the log's flush, and only the save", async () => {
      const { pool } = await schemaPool();
      const client = await pool.connect();
      try {
        const setting = async () => (await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]?.synchronous_commit;
        expect(await setting()).toBe('on');
        await client.query('BEGIN');
        await client.query(
          "SELECT pybox_save_execution('sync-probe', 't', 'completed', true, 1, now(), now(), '{}', '2026-11-26', 0, 0, 1000, NULL)",
        );
        expect(await setting()).toBe('off');
        await client.query('ROLLBACK');
        // Nothing else this connection commits afterwards is relaxed.
        expect(await setting()).toBe('on');
      } finally {
        client.release();
      }
    });

    it('index every scoped read the way SQLite does', async () => {
      const { pool } = await schemaPool();
      const client = await pool.connect();
      try {
        // Tiny tables are read whole; forbidding that shows which index the query can walk.
        await client.query('SET enable_seqscan = off');
        const plan = async (sql: string) => (await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`)).rows.map((r) => r['QUERY PLAN']).join('\n');
        expect(await plan("SELECT seq FROM executions WHERE tenant = 'a' AND seq < 9 ORDER BY seq DESC LIMIT 5")).toContain('executions_tenant_seq');
        expect(await plan("SELECT seq FROM executions WHERE tenant = 'a' AND status = 'error' AND seq < 9 ORDER BY seq DESC LIMIT 5")).toContain(
          'executions_tenant_status_seq',
        );
        expect(await plan("SELECT seq FROM executions WHERE status = 'error' AND seq < 9 ORDER BY seq DESC LIMIT 5")).toContain('executions_status_seq');
        expect(await plan("SELECT duration_ms FROM executions WHERE tenant = 'a' ORDER BY duration_ms OFFSET 3 LIMIT 1")).toContain('executions_tenant_duration');
        expect(await plan('SELECT duration_ms FROM executions ORDER BY duration_ms OFFSET 3 LIMIT 1')).toContain('executions_duration');
        expect(await plan("DELETE FROM executions WHERE created_at < '2025-01-01'")).toContain('executions_created_at');
        expect(await plan('SELECT id FROM api_keys WHERE hash = $$\\x00$$::bytea')).toContain('api_keys_hash_key');
      } finally {
        client.release();
      }
    });
  });

  describe('stores', () => {
    it('fail loudly on a stored row that no longer matches the result schema', async () => {
      const { pool } = await schemaPool();
      const store = new PostgresExecutionStore(pool, { maxExecutions: 100, maxAgeDays: 0, onClose: keepPool });
      await store.save(result('a'));
      await pool.query(`UPDATE executions SET result = (result::jsonb - 'status')::text WHERE id = 'a'`);
      const e = await store.get('a').catch((err: unknown) => err);
      expect(e).toBeInstanceOf(PyboxError);
      expect((e as PyboxError).code).toBe('internal');
      expect((e as PyboxError).message).toMatch(/stored execution a does not match/);
    });

    it('take a save again that already went through (its answer lost) as done, counted once; refuse another result under its id', async () => {
      const { pool } = await schemaPool();
      const store = new PostgresExecutionStore(pool, { maxExecutions: 100, maxAgeDays: 0, onClose: keepPool });
      await store.save(result('a'), { tenant: 't', outputBytes: 5 });
      await store.save(result('a'), { tenant: 't', outputBytes: 5 });
      expect((await store.stats()).total).toBe(1);
      expect(await store.usage({ tenant: 't' })).toMatchObject([{ executions: 1, outputBytes: 5 }]);
      for (const [other, tenant] of [[result('a', { stdout: 'other' }), 't'], [result('a'), 'u']] as const) {
        const e = await store.save(other, { tenant, outputBytes: 5 }).catch((err: unknown) => err);
        expect(e).toBeInstanceOf(PyboxError);
        expect((e as PyboxError).message).toBe('an execution with id a is already stored');
      }
      expect(await store.get('a')).toEqual(result('a'));
      expect(await store.usage({})).toMatchObject([{ tenant: 't', executions: 1 }]);
    });

    it('keep a key as its hash only', async () => {
      const { pool } = await schemaPool();
      const tenants = new PostgresTenantStore(pool, { onClose: keepPool });
      const key = newApiKey();
      await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(key), limits: {} });
      const { rows } = await pool.query('SELECT *, encode(hash, $$escape$$) AS raw FROM api_keys');
      expect(rows).toHaveLength(1);
      expect(JSON.stringify(rows)).not.toContain(key.slice(4));
      expect(JSON.stringify(rows)).not.toContain(Buffer.from(key.slice(4)).toString('hex'));
    });

    it('let two nodes create keys for the same new tenant at once', async () => {
      const { url, pool } = await schemaPool();
      const other = (await connectPostgres(url, { max: 2 })).pool;
      cleanups.push(() => other.end());
      const nodes = [new PostgresTenantStore(pool, { onClose: keepPool }), new PostgresTenantStore(other, { onClose: keepPool })];
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (nodes[i % 2] as PostgresTenantStore).createKey({ id: `key_00000000000${i}`, tenant: 'acme', admin: false, hash: hashApiKey(newApiKey()), limits: {} }),
        ),
      );
      expect((await nodes[0]?.tenants())?.map((t) => t.name)).toEqual(['acme']);
      expect(await nodes[1]?.keys()).toHaveLength(10);
    });

    it('are unhealthy, without throwing, on a connection that refuses writes and on a server that does not answer', async () => {
      const { url, pool } = await schemaPool();
      const writable = new PostgresExecutionStore(pool, { maxExecutions: 100, maxAgeDays: 0, onClose: keepPool });
      await writable.save(result('a'));
      // What a read-only replica or a database set read-only looks like to pybox.
      const readOnlyUrl = new URL(url);
      readOnlyUrl.searchParams.set('options', `${readOnlyUrl.searchParams.get('options') ?? ''} -c default_transaction_read_only=on`);
      const readOnly = new PostgresExecutionStore(new pg.Pool({ connectionString: readOnlyUrl.toString(), max: 1 }), { maxExecutions: 100, maxAgeDays: 0 });
      cleanups.push(() => readOnly.close());
      expect(await readOnly.get('a')).toEqual(result('a'));
      expect(await readOnly.healthy()).toBe(false);
      expect(await writable.healthy()).toBe(true);

      const gone = new PostgresExecutionStore(new pg.Pool({ connectionString: 'postgres://pybox:x@127.0.0.1:1/pybox', connectionTimeoutMillis: 1000 }), {
        maxExecutions: 100,
        maxAgeDays: 0,
      });
      cleanups.push(() => gone.close());
      expect(await gone.healthy()).toBe(false);
      await expect(gone.get('a')).rejects.toThrow();
    });

    it('keep working, and the process alive, when the server ends idle connections', async () => {
      const { lines, logger } = messages();
      const { url, pool: other } = await schemaPool();
      const { pool } = await connectPostgres(url, { max: 2, logger });
      const store = new PostgresExecutionStore(pool, { maxExecutions: 100, maxAgeDays: 0 });
      cleanups.push(() => store.close());
      await store.save(result('a'));
      const pids = await Promise.all([pool.connect(), pool.connect()].map(async (p) => {
        const client = await p;
        try {
          return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
        } finally {
          client.release();
        }
      }));
      expect(pool.idleCount).toBe(2);
      await other.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [pids]);
      for (let i = 0; i < 50 && pool.idleCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(pool.idleCount).toBe(0);
      expect(lines.filter((l) => l.startsWith('warn postgres: an idle connection failed'))).toHaveLength(2);
      expect(await store.get('a')).toEqual(result('a'));
      expect(await store.healthy()).toBe(true);
    });

    it('keep the process alive when the server ends a connection held in a transaction between its statements', async () => {
      const { url, pool: other } = await schemaPool();
      const { pool } = await connectPostgres(url, { max: 1 });
      cleanups.push(() => pool.end());
      // Between two statements the connection is checked out and no query listens on it: the
      // client's 'error' would end the process unless the transaction hears it.
      const failed = inTransaction(pool, 'BEGIN', async (client) => {
        const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
        await other.query('SELECT pg_terminate_backend($1)', [pid]);
        await new Promise((r) => setTimeout(r, 200)); // the server's goodbye arrives meanwhile
        await client.query('SELECT 1');
      });
      await expect(failed).rejects.toThrow();
      // The broken connection was destroyed, not given back: the next transaction gets a new one.
      expect(await inTransaction(pool, 'BEGIN', async (client) => (await client.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one)).toBe(1);
    });

    it('throw once closed, and end an owned pool', async () => {
      const { url } = await schemaPool();
      const { pool } = await connectPostgres(url, { max: 1 });
      const store = new PostgresExecutionStore(pool, { maxExecutions: 100, maxAgeDays: 0 });
      await store.close();
      expect(pool.ended).toBe(true);
      await expect(store.get('a')).rejects.toThrow(/closed/);
      await expect(store.save(result('a'))).rejects.toThrow(/closed/);
    });
  });

  describe('open.ts with cluster.postgresUrl', () => {
    const configOf = (url: string) => ConfigSchema.parse({ store: { maxExecutions: 100 }, cluster: { postgresUrl: url, redisUrl: 'redis://127.0.0.1:1' } });

    it('opens PostgreSQL stores, each on a pool of its own, with the store settings for retention', async () => {
      const { url } = await schemaPool();
      const config = configOf(url);
      const executions = await openExecutionStore(config, manualClock());
      cleanups.push(() => executions.close());
      const tenants = await openTenantStore(config, manualClock());
      cleanups.push(() => tenants.close());
      expect(executions).toBeInstanceOf(PostgresExecutionStore);
      expect(tenants).toBeInstanceOf(PostgresTenantStore);
      for (let i = 0; i < 101; i++) await executions.save(result(`r${i}`));
      expect((await executions.stats()).total).toBe(100);
      expect(await configuredStoreHasKeys(config)).toBe(false);
      await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(newApiKey()), limits: {} });
      expect(await configuredStoreHasKeys(config)).toBe(true);
      await tenants.close();
      expect(await executions.healthy()).toBe(true); // its pool is its own
    });

    it('opens both stores on one pool, ended when the second of them closes, in either order', async () => {
      const { url } = await schemaPool();
      for (const order of [['executions', 'tenants'], ['tenants', 'executions']] as const) {
        const stores = await openStores(configOf(url), manualClock());
        expect(stores.executions).toBeInstanceOf(PostgresExecutionStore);
        expect(stores.tenants).toBeInstanceOf(PostgresTenantStore);
        await stores.executions.save(result(`x-${order[0]}`));
        expect(await stores.tenants.hasKeys()).toBe(false);
        await stores[order[0]].close();
        await stores[order[0]].close(); // twice: still one share
        const survivor = stores[order[1]];
        if (survivor instanceof PostgresExecutionStore) expect(await survivor.healthy()).toBe(true);
        else expect(await stores.tenants.hasKeys()).toBe(false);
        await survivor.close();
      }
    });

    it('shares a pool: each share releases once, and the last one ends it', async () => {
      let ended = 0;
      const pool = { end: async () => void ended++ } as unknown as pg.Pool;
      const [a, b] = sharePool(pool, 2) as [() => Promise<void>, () => Promise<void>];
      await a();
      await a();
      expect(ended).toBe(0);
      await b();
      await b();
      expect(ended).toBe(1);
    });

    it('fails to open when the server does not answer', async () => {
      const config = configOf('postgres://pybox:pw@127.0.0.1:1/pybox');
      await expect(openExecutionStore(config, undefined, { connectTimeoutMs: 500 })).rejects.toThrow(/cannot open the PostgreSQL store/);
    });
  });
});
