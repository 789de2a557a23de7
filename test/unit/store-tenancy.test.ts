// SQLite's side of tenancy: tenant-first indexes, the tenancy migration of an existing database,
// and keys kept as hashes only. What both stores must do is in test/contract/store-contract.ts.
import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { result } from '../contract/store-contract.ts';
import { MIGRATIONS, openDatabase } from '../../src/store/db.ts';
import { SqliteExecutionStore } from '../../src/store/execution-store.ts';
import { SqliteTenantStore, storeHasKeys } from '../../src/store/tenant-store.ts';
import { hashApiKey, newApiKey } from '../../src/tenancy/keys.ts';

const T0 = Date.parse('2025-03-01T12:00:00.000Z');

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pybox-tenancy-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function stores(path = ':memory:', maxExecutions = 1000) {
  const db = openDatabase(path);
  const clock = { now: () => T0 };
  const executions = new SqliteExecutionStore({ db, maxExecutions, maxAgeDays: 0, clock });
  const tenants = new SqliteTenantStore(db, clock);
  cleanups.push(() => executions.close());
  return { db, executions, tenants };
}


describe('executions by tenant', () => {
  it('walks tenant-first indexes for scoped reads', () => {
    const { db } = stores();
    const plan = (sql: string) => (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as Array<{ detail: string }>).map((r) => r.detail).join(' | ');
    expect(plan("SELECT seq FROM executions WHERE tenant = 'a' AND seq < 9 ORDER BY seq DESC LIMIT 5")).toContain('executions_tenant_seq');
    expect(plan("SELECT seq FROM executions WHERE tenant = 'a' AND status = 'error' AND seq < 9 ORDER BY seq DESC LIMIT 5")).toContain('executions_tenant_status_seq');
    expect(plan("SELECT duration_ms FROM executions WHERE tenant = 'a' ORDER BY duration_ms LIMIT 1 OFFSET 3")).toContain('executions_tenant_duration');
  });
});

describe('the tenancy migration', () => {
  it('gives every execution of an existing database to the local tenant', async () => {
    const path = join(tempDir(), 'old.db');
    const old = new Database(path);
    old.exec(MIGRATIONS[0] as string);
    old.pragma('user_version = 1');
    const r = result('before-tenancy');
    old
      .prepare('INSERT INTO executions (id, status, success, duration_ms, created_at, finished_at, result) VALUES (?, ?, 1, ?, ?, ?, ?)')
      .run(r.id, r.status, r.durationMs, r.createdAt, r.finishedAt, JSON.stringify(r));
    old.close();
    const { db, executions, tenants } = stores(path);
    expect(db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
    expect(await executions.get('before-tenancy', 'local')).toEqual(r);
    expect(await executions.get('before-tenancy', 'acme')).toBeUndefined();
    expect(await executions.get('before-tenancy')).toEqual(r);
    expect(await tenants.hasKeys()).toBe(false);
  });
});

describe('SqliteTenantStore', () => {
  it('creates a tenant with its first key, keeps only the hash, and finds the key by it with its limits', async () => {
    const path = join(tempDir(), 'keys.db');
    const { db, tenants } = stores(path);
    expect(await tenants.hasKeys()).toBe(false);
    expect(storeHasKeys(path)).toBe(false);
    const key = newApiKey();
    const created = await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(key), limits: { maxConcurrency: 2, ratePerMinute: 30 } });
    expect(created.key).toEqual({ id: 'key_000000000001', tenant: 'acme', admin: false, createdAt: new Date(T0).toISOString(), revokedAt: null });
    expect(created.tenant.limits).toEqual({ maxConcurrency: 2, ratePerMinute: 30, maxTimeoutMs: null, maxMemoryMb: null, maxCpus: null });
    expect(await tenants.hasKeys()).toBe(true);
    expect(storeHasKeys(path)).toBe(true);
    expect(await tenants.findKeyByHash(hashApiKey(key))).toMatchObject({ id: 'key_000000000001', tenant: 'acme', revokedAt: null, limits: { maxConcurrency: 2 } });
    expect(await tenants.findKeyByHash(hashApiKey(newApiKey()))).toBeUndefined();
    const columns = db.prepare('SELECT * FROM api_keys').all() as Array<Record<string, unknown>>;
    expect(JSON.stringify(columns)).not.toContain(key.slice(4));
    db.pragma('wal_checkpoint(TRUNCATE)');
    expect(readFileSync(path).includes(Buffer.from(key.slice(4)))).toBe(false);
  });

});
