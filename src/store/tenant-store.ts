// Tenants and their API keys in SQLite, next to the history. A key is kept as its SHA-256 hash only;
// keys are revoked, never deleted, so "some key exists" never turns back into local mode.
import type { Statement } from 'better-sqlite3';
import type { TenantLimits } from '../core/caller.ts';
import type { Clock, KeyInfo, StoredApiKey, TenantRecord, TenantStore } from '../core/ports.ts';
import { openDatabase, type SqliteDatabase } from './db.ts';


interface TenantRow {
  name: string;
  max_concurrency: number | null;
  rate_per_minute: number | null;
  max_timeout_ms: number | null;
  max_memory_mb: number | null;
  max_cpus: number | null;
  created_at: string;
}

interface KeyRow {
  id: string;
  tenant: string;
  admin: number;
  created_at: string;
  revoked_at: string | null;
}

type KeyWithTenantRow = KeyRow & { hash: Buffer } & Omit<TenantRow, 'name' | 'created_at'>;

const limitsOf = (r: Omit<TenantRow, 'name' | 'created_at'>): TenantLimits => ({
  maxConcurrency: r.max_concurrency,
  ratePerMinute: r.rate_per_minute,
  maxTimeoutMs: r.max_timeout_ms,
  maxMemoryMb: r.max_memory_mb,
  maxCpus: r.max_cpus,
});

const keyInfo = (r: KeyRow): KeyInfo => ({ id: r.id, tenant: r.tenant, admin: r.admin === 1, createdAt: r.created_at, revokedAt: r.revoked_at });

export class SqliteTenantStore implements TenantStore {
  private readonly anyKey: Statement<[], number>;
  private readonly keyByHash: Statement<[Buffer], KeyWithTenantRow>;
  private readonly keyById: Statement<[string], KeyRow>;
  private readonly tenantByName: Statement<[string], TenantRow>;
  private readonly insertTenant: Statement<[Record<string, string | number | null>]>;
  private readonly updateTenant: Statement<[Record<string, string | number | null>]>;
  private readonly insertKey: Statement<[Record<string, string | number | Buffer>]>;
  private readonly revoke: Statement<[string, string]>;
  private readonly allKeys: Statement<[], KeyRow>;
  private readonly allTenants: Statement<[], TenantRow>;
  private readonly clock: Clock;

  constructor(private readonly db: SqliteDatabase, clock?: Clock) {
    this.clock = clock ?? { now: () => Date.now() };
    this.anyKey = db.prepare<[], number>('SELECT EXISTS (SELECT 1 FROM api_keys)').pluck();
    this.keyByHash = db.prepare(
      `SELECT k.id, k.tenant, k.admin, k.hash, k.created_at, k.revoked_at,
              t.max_concurrency, t.rate_per_minute, t.max_timeout_ms, t.max_memory_mb, t.max_cpus
       FROM api_keys k JOIN tenants t ON t.name = k.tenant WHERE k.hash = ?`,
    );
    this.keyById = db.prepare('SELECT id, tenant, admin, created_at, revoked_at FROM api_keys WHERE id = ?');
    this.tenantByName = db.prepare('SELECT * FROM tenants WHERE name = ?');
    this.insertTenant = db.prepare(
      `INSERT INTO tenants (name, max_concurrency, rate_per_minute, max_timeout_ms, max_memory_mb, max_cpus, created_at)
       VALUES (@name, @maxConcurrency, @ratePerMinute, @maxTimeoutMs, @maxMemoryMb, @maxCpus, @createdAt)`,
    );
    this.updateTenant = db.prepare(
      `UPDATE tenants SET max_concurrency = @maxConcurrency, rate_per_minute = @ratePerMinute, max_timeout_ms = @maxTimeoutMs,
         max_memory_mb = @maxMemoryMb, max_cpus = @maxCpus WHERE name = @name`,
    );
    this.insertKey = db.prepare('INSERT INTO api_keys (id, tenant, hash, admin, created_at) VALUES (@id, @tenant, @hash, @admin, @createdAt)');
    this.revoke = db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL');
    this.allKeys = db.prepare('SELECT id, tenant, admin, created_at, revoked_at FROM api_keys ORDER BY rowid');
    this.allTenants = db.prepare('SELECT * FROM tenants ORDER BY name');
  }

  async hasKeys(): Promise<boolean> {
    return this.hasKeysNow();
  }

  /** The same, synchronously: main.ts decides local mode before anything async starts. */
  hasKeysNow(): boolean {
    return this.anyKey.get() === 1;
  }

  async findKeyByHash(hash: Buffer): Promise<StoredApiKey | undefined> {
    const r = this.keyByHash.get(hash);
    if (!r) return undefined;
    return { id: r.id, tenant: r.tenant, admin: r.admin === 1, hash: r.hash, revokedAt: r.revoked_at, limits: limitsOf(r) };
  }

  async tenant(name: string): Promise<TenantRecord | undefined> {
    return this.tenantNow(name);
  }

  private tenantNow(name: string): TenantRecord | undefined {
    const r = this.tenantByName.get(name);
    return r && { name: r.name, limits: limitsOf(r), createdAt: r.created_at };
  }

  async tenants(): Promise<TenantRecord[]> {
    return this.allTenants.all().map((r) => ({ name: r.name, limits: limitsOf(r), createdAt: r.created_at }));
  }

  /**
   * Creates a key (by its hash) for a tenant, creating the tenant if it is new. Limits given here
   * replace the tenant's; limits left out keep their current value (none, for a new tenant).
   */
  async createKey(opts: { id: string; tenant: string; admin: boolean; hash: Buffer; limits: Partial<TenantLimits> }): Promise<{ key: KeyInfo; tenant: TenantRecord }> {
    const createdAt = new Date(this.clock.now()).toISOString();
    const tx = this.db.transaction(() => {
      const current = this.tenantNow(opts.tenant);
      const limits: TenantLimits = { ...(current?.limits ?? { maxConcurrency: null, ratePerMinute: null, maxTimeoutMs: null, maxMemoryMb: null, maxCpus: null }) };
      for (const [k, v] of Object.entries(opts.limits) as Array<[keyof TenantLimits, number | null | undefined]>) if (v !== undefined) limits[k] = v;
      const row = { name: opts.tenant, ...limits };
      if (current) this.updateTenant.run(row);
      else this.insertTenant.run({ ...row, createdAt });
      this.insertKey.run({ id: opts.id, tenant: opts.tenant, hash: opts.hash, admin: opts.admin ? 1 : 0, createdAt });
      return { key: keyInfo(this.keyById.get(opts.id) as KeyRow), tenant: this.tenantNow(opts.tenant) as TenantRecord };
    });
    return tx.immediate();
  }

  async keys(): Promise<KeyInfo[]> {
    return this.allKeys.all().map(keyInfo);
  }

  async key(id: string): Promise<KeyInfo | undefined> {
    const r = this.keyById.get(id);
    return r && keyInfo(r);
  }

  /** The key's id, by its id or by the key itself (its hash); undefined when there is no such key. */
  async resolveKeyId(idOrHash: { id: string } | { hash: Buffer }): Promise<string | undefined> {
    if ('id' in idOrHash) return this.keyById.get(idOrHash.id)?.id;
    return this.keyByHash.get(idOrHash.hash)?.id;
  }

  /** Closes the database (the execution store may share it: closing twice is harmless). */
  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }

  /** Revokes a key at once (the server checks the store on every request). False if it already was. */
  async revokeKey(id: string): Promise<boolean> {
    return this.revoke.run(new Date(this.clock.now()).toISOString(), id).changes === 1;
  }
}

/** Whether the store at `path` holds any API key (opening, and so migrating, it if need be). */
export function storeHasKeys(path: string): boolean {
  const db = openDatabase(path);
  try {
    return new SqliteTenantStore(db).hasKeysNow();
  } finally {
    db.close();
  }
}
