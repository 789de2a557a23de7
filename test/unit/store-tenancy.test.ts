// The store's side of tenancy: executions scoped by tenant, usage that outlives the history, the
// tenancy migration of an existing database, and tenants with their hashed keys.
import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ExecutionResult, ExecutionStatus } from '../../src/core/schemas.ts';
import { MIGRATIONS, openDatabase } from '../../src/store/db.ts';
import { SqliteExecutionStore } from '../../src/store/execution-store.ts';
import { SqliteTenantStore, storeHasKeys } from '../../src/store/tenant-store.ts';
import { hashApiKey, newApiKey } from '../../src/tenancy/keys.ts';

const T0 = Date.parse('2025-03-01T12:00:00.000Z');
const DAY_MS = 86_400_000;

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

function result(id: string, over: Partial<ExecutionResult> = {}): ExecutionResult {
  return {
    id,
    status: 'completed',
    success: true,
    exitCode: 0,
    signal: null,
    stdout: 'hi\n',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 100,
    cpuMs: 40,
    feedback: 'ok',
    runtime: 'runc',
    limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 },
    createdAt: new Date(T0).toISOString(),
    finishedAt: new Date(T0 + 100).toISOString(),
    ...over,
  };
}

const withStatus = (id: string, status: ExecutionStatus, over: Partial<ExecutionResult> = {}) =>
  result(id, { status, success: status === 'completed', ...over });

describe('executions by tenant', () => {
  it('get, list and stats see one tenant only, or every tenant without one', async () => {
    const { executions: s } = stores();
    await s.save(result('a1', { durationMs: 10 }), { tenant: 'a', outputBytes: 3 });
    await s.save(withStatus('b1', 'error', { durationMs: 1000 }), { tenant: 'b', outputBytes: 3 });
    await s.save(result('a2', { durationMs: 30 }), { tenant: 'a', outputBytes: 3 });
    expect((await s.get('a1', 'a'))?.id).toBe('a1');
    expect(await s.get('a1', 'b')).toBeUndefined();
    expect((await s.get('a1'))?.id).toBe('a1');
    expect((await s.list({ limit: 10, tenant: 'a' })).items.map((r) => r.id)).toEqual(['a2', 'a1']);
    expect((await s.list({ limit: 10, tenant: 'b' })).items.map((r) => r.id)).toEqual(['b1']);
    expect((await s.list({ limit: 10, tenant: 'a', status: 'error' })).items).toEqual([]);
    expect((await s.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['a2', 'b1', 'a1']);
    expect(await s.stats('a')).toMatchObject({ total: 2, successRate: 1, meanDurationMs: 20, p50DurationMs: 10, p95DurationMs: 30 });
    expect(await s.stats('b')).toMatchObject({ total: 1, successRate: 0, p95DurationMs: 1000 });
    expect(await s.stats('nobody')).toMatchObject({ total: 0, successRate: null });
    expect(await s.stats()).toMatchObject({ total: 3 });
  });

  it('pages one tenant with cursors that skip the other tenant rows', async () => {
    const { executions: s } = stores();
    for (let i = 0; i < 7; i++) await s.save(result(`x${i}`), { tenant: i % 2 === 0 ? 'even' : 'odd', outputBytes: 0 });
    const first = await s.list({ limit: 2, tenant: 'even' });
    expect(first.items.map((r) => r.id)).toEqual(['x6', 'x4']);
    const second = await s.list({ limit: 2, tenant: 'even', cursor: first.nextCursor ?? undefined });
    expect(second.items.map((r) => r.id)).toEqual(['x2', 'x0']);
    expect(second.nextCursor).toBeNull();
  });

  it('walks tenant-first indexes for scoped reads', () => {
    const { db } = stores();
    const plan = (sql: string) => (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as Array<{ detail: string }>).map((r) => r.detail).join(' | ');
    expect(plan("SELECT seq FROM executions WHERE tenant = 'a' AND seq < 9 ORDER BY seq DESC LIMIT 5")).toContain('executions_tenant_seq');
    expect(plan("SELECT seq FROM executions WHERE tenant = 'a' AND status = 'error' AND seq < 9 ORDER BY seq DESC LIMIT 5")).toContain('executions_tenant_status_seq');
    expect(plan("SELECT duration_ms FROM executions WHERE tenant = 'a' ORDER BY duration_ms LIMIT 1 OFFSET 3")).toContain('executions_tenant_duration');
  });
});

describe('usage', () => {
  it('adds up executions by status, wall time, CPU time and output bytes per tenant', async () => {
    const { executions: s } = stores();
    await s.save(result('1', { durationMs: 100.5, cpuMs: 40 }), { tenant: 'a', outputBytes: 10 });
    await s.save(withStatus('2', 'timeout', { durationMs: 2000, cpuMs: 1500 }), { tenant: 'a', outputBytes: 5 });
    await s.save(withStatus('3', 'validation_failed', { durationMs: 20, cpuMs: null }), { tenant: 'a', outputBytes: 0 });
    await s.save(result('4', { durationMs: 7 }), { tenant: 'b', outputBytes: 1_000_000 });
    const a = await s.usage({ tenant: 'a' });
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({ tenant: 'a', executions: 3, wallMs: 2120.5, cpuMs: 1540, outputBytes: 15 });
    expect(a[0]?.byStatus).toMatchObject({ completed: 1, timeout: 1, validation_failed: 1, error: 0, oom: 0 });
    expect((await s.usage({})).map((u) => [u.tenant, u.executions, u.outputBytes])).toEqual([
      ['a', 3, 15],
      ['b', 1, 1_000_000],
    ]);
    expect(await s.usage({ tenant: 'nobody' })).toEqual([]);
  });

  it('counts by the UTC day a run finished, and filters whole days', async () => {
    const { executions: s } = stores();
    const on = (day: number) => ({ createdAt: new Date(T0 + day * DAY_MS).toISOString(), finishedAt: new Date(T0 + day * DAY_MS + 5).toISOString() });
    await s.save(result('d0', on(0)), { tenant: 'a', outputBytes: 1 });
    await s.save(result('d1', on(1)), { tenant: 'a', outputBytes: 2 });
    await s.save(result('d2', on(2)), { tenant: 'a', outputBytes: 4 });
    expect((await s.usage({ tenant: 'a', from: '2025-03-02' }))[0]?.outputBytes).toBe(6);
    expect((await s.usage({ tenant: 'a', to: '2025-03-02' }))[0]?.outputBytes).toBe(3);
    expect((await s.usage({ tenant: 'a', from: '2025-03-02', to: '2025-03-02' }))[0]?.outputBytes).toBe(2);
    expect(await s.usage({ tenant: 'a', from: '2025-04-01' })).toEqual([]);
  });

  it('is kept when the history it came from is pruned', async () => {
    const { executions: s } = stores(':memory:', 100);
    for (let i = 0; i < 150; i++) await s.save(result(`r${i}`), { tenant: 'a', outputBytes: 1 });
    expect((await s.stats('a')).total).toBe(100);
    expect((await s.usage({ tenant: 'a' }))[0]).toMatchObject({ executions: 150, outputBytes: 150 });
  });

  it('meters a save without a meter to the local tenant, by its kept output', async () => {
    const { executions: s } = stores();
    await s.save(result('x', { stdout: 'héllo', stderr: 'e' }));
    expect((await s.get('x', 'local'))?.id).toBe('x');
    expect(await s.usage({})).toMatchObject([{ tenant: 'local', executions: 1, outputBytes: 7 }]);
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

  it('a later key with limits replaces those limits and keeps the others; an admin key is marked so', async () => {
    const { tenants } = stores();
    await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(newApiKey()), limits: { maxConcurrency: 2, maxMemoryMb: 512 } });
    const second = await tenants.createKey({ id: 'key_000000000002', tenant: 'acme', admin: true, hash: hashApiKey(newApiKey()), limits: { maxConcurrency: 5 } });
    expect(second.tenant.limits).toMatchObject({ maxConcurrency: 5, maxMemoryMb: 512 });
    expect(second.key.admin).toBe(true);
    expect((await tenants.keys()).map((k) => [k.id, k.admin])).toEqual([
      ['key_000000000001', false],
      ['key_000000000002', true],
    ]);
    expect((await tenants.tenants()).map((t) => t.name)).toEqual(['acme']);
  });

  it('revokes by id once, finds keys by id or by hash, and keeps revoked keys counted', async () => {
    const { tenants } = stores();
    const key = newApiKey();
    await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: hashApiKey(key), limits: {} });
    expect(await tenants.resolveKeyId({ id: 'key_000000000001' })).toBe('key_000000000001');
    expect(await tenants.resolveKeyId({ hash: hashApiKey(key) })).toBe('key_000000000001');
    expect(await tenants.resolveKeyId({ id: 'key_ffffffffffff' })).toBeUndefined();
    expect(await tenants.revokeKey('key_000000000001')).toBe(true);
    expect(await tenants.revokeKey('key_000000000001')).toBe(false);
    expect((await tenants.findKeyByHash(hashApiKey(key)))?.revokedAt).toBe(new Date(T0).toISOString());
    expect(await tenants.hasKeys()).toBe(true);
  });
});
