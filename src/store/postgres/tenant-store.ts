// Tenants and their API keys in PostgreSQL, read by every node on every request, so a key created
// or revoked on one node takes effect on all at once. As in SQLite: a key is kept as its SHA-256
// hash only, and keys are revoked, never deleted.
import type { Pool } from 'pg';
import type { TenantLimits } from '../../core/caller.ts';
import type { Clock, KeyInfo, StoredApiKey, TenantRecord, TenantStore } from '../../core/ports.ts';
import { hasNul } from './execution-store.ts';
import { inTransaction } from './tx.ts';

export interface PostgresTenantStoreOptions {
  clock?: Clock;
  /** What close() does with the pool, once; by default it ends it (see PostgresExecutionStoreOptions). */
  onClose?: () => Promise<void>;
}

/** Each limit's column, in TenantLimits' order. */
const LIMIT_COLUMNS: ReadonlyArray<readonly [keyof TenantLimits, string]> = [
  ['maxConcurrency', 'max_concurrency'],
  ['ratePerMinute', 'rate_per_minute'],
  ['maxTimeoutMs', 'max_timeout_ms'],
  ['maxMemoryMb', 'max_memory_mb'],
  ['maxCpus', 'max_cpus'],
];

interface LimitColumns {
  max_concurrency: number | null;
  rate_per_minute: number | null;
  max_timeout_ms: number | null;
  max_memory_mb: number | null;
  max_cpus: number | null;
}

interface TenantRow extends LimitColumns {
  name: string;
  created_at: Date;
}

interface KeyRow {
  id: string;
  tenant: string;
  admin: boolean;
  created_at: Date;
  revoked_at: Date | null;
}

const KEY_COLUMNS = 'id, tenant, admin, created_at, revoked_at';
const TENANT_COLUMNS = 'name, max_concurrency, rate_per_minute, max_timeout_ms, max_memory_mb, max_cpus, created_at';

const limitsOf = (r: LimitColumns): TenantLimits => ({
  maxConcurrency: r.max_concurrency,
  ratePerMinute: r.rate_per_minute,
  maxTimeoutMs: r.max_timeout_ms,
  maxMemoryMb: r.max_memory_mb,
  maxCpus: r.max_cpus,
});

const tenantRecord = (r: TenantRow): TenantRecord => ({ name: r.name, limits: limitsOf(r), createdAt: r.created_at.toISOString() });

const keyInfo = (r: KeyRow): KeyInfo => ({
  id: r.id,
  tenant: r.tenant,
  admin: r.admin,
  createdAt: r.created_at.toISOString(),
  revokedAt: r.revoked_at === null ? null : r.revoked_at.toISOString(),
});

export class PostgresTenantStore implements TenantStore {
  private readonly clock: Clock;
  private readonly onClose: () => Promise<void>;
  private closed = false;

  constructor(
    private readonly pool: Pool,
    opts: PostgresTenantStoreOptions = {},
  ) {
    this.clock = opts.clock ?? { now: () => Date.now() };
    this.onClose = opts.onClose ?? (() => this.pool.end());
  }

  async hasKeys(): Promise<boolean> {
    this.assertOpen();
    const { rows } = await this.pool.query<{ any: boolean }>('SELECT EXISTS (SELECT 1 FROM api_keys) AS any');
    return rows[0]?.any === true;
  }

  async findKeyByHash(hash: Buffer): Promise<StoredApiKey | undefined> {
    this.assertOpen();
    const { rows } = await this.pool.query<KeyRow & LimitColumns & { hash: Buffer }>(
      `SELECT k.id, k.tenant, k.admin, k.hash, k.created_at, k.revoked_at,
              t.max_concurrency, t.rate_per_minute, t.max_timeout_ms, t.max_memory_mb, t.max_cpus
       FROM api_keys k JOIN tenants t ON t.name = k.tenant WHERE k.hash = $1`,
      [hash],
    );
    const r = rows[0];
    if (!r) return undefined;
    return { id: r.id, tenant: r.tenant, admin: r.admin, hash: r.hash, revokedAt: r.revoked_at === null ? null : r.revoked_at.toISOString(), limits: limitsOf(r) };
  }

  async tenant(name: string): Promise<TenantRecord | undefined> {
    this.assertOpen();
    if (hasNul(name)) return undefined;
    const { rows } = await this.pool.query<TenantRow>(`SELECT ${TENANT_COLUMNS} FROM tenants WHERE name = $1`, [name]);
    const r = rows[0];
    return r && tenantRecord(r);
  }

  async tenants(): Promise<TenantRecord[]> {
    this.assertOpen();
    const { rows } = await this.pool.query<TenantRow>(`SELECT ${TENANT_COLUMNS} FROM tenants ORDER BY name`);
    return rows.map(tenantRecord);
  }

  /**
   * Creates a key (by its hash) for a tenant, creating the tenant if it is new. Limits given here
   * replace the tenant's; limits left out keep their current value (none, for a new tenant).
   * One upsert decides which, so two nodes creating keys for the same new tenant never collide.
   */
  async createKey(opts: { id: string; tenant: string; admin: boolean; hash: Buffer; limits: Partial<TenantLimits> }): Promise<{ key: KeyInfo; tenant: TenantRecord }> {
    this.assertOpen();
    const createdAt = new Date(this.clock.now()).toISOString();
    const given = LIMIT_COLUMNS.filter(([k]) => opts.limits[k] !== undefined).map(([, column]) => column);
    const values = LIMIT_COLUMNS.map(([k]) => opts.limits[k] ?? null);
    return inTransaction(this.pool, 'BEGIN', async (c) => {
      const tenant = await c.query<TenantRow>(
        `INSERT INTO tenants AS t (name, max_concurrency, rate_per_minute, max_timeout_ms, max_memory_mb, max_cpus, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (name) DO UPDATE SET
           ${LIMIT_COLUMNS.map(([, column]) => `${column} = CASE WHEN '${column}' = ANY ($8::text[]) THEN excluded.${column} ELSE t.${column} END`).join(',\n           ')}
         RETURNING ${TENANT_COLUMNS}`,
        [opts.tenant, ...values, createdAt, given],
      );
      const key = await c.query<KeyRow>(
        `INSERT INTO api_keys (id, tenant, hash, admin, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING ${KEY_COLUMNS}`,
        [opts.id, opts.tenant, opts.hash, opts.admin, createdAt],
      );
      return { key: keyInfo(key.rows[0] as KeyRow), tenant: tenantRecord(tenant.rows[0] as TenantRow) };
    });
  }

  async keys(): Promise<KeyInfo[]> {
    this.assertOpen();
    const { rows } = await this.pool.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys ORDER BY seq`);
    return rows.map(keyInfo);
  }

  async key(id: string): Promise<KeyInfo | undefined> {
    this.assertOpen();
    if (hasNul(id)) return undefined;
    const { rows } = await this.pool.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = $1`, [id]);
    const r = rows[0];
    return r && keyInfo(r);
  }

  /** The key's id, by its id or by the key itself (its hash); undefined when there is no such key. */
  async resolveKeyId(idOrHash: { id: string } | { hash: Buffer }): Promise<string | undefined> {
    this.assertOpen();
    if ('id' in idOrHash) return (await this.key(idOrHash.id))?.id;
    const { rows } = await this.pool.query<{ id: string }>('SELECT id FROM api_keys WHERE hash = $1', [idOrHash.hash]);
    return rows[0]?.id;
  }

  /** Revokes a key at once (every node checks the store on every request). False if it already was. */
  async revokeKey(id: string): Promise<boolean> {
    this.assertOpen();
    if (hasNul(id)) return false;
    const { rowCount } = await this.pool.query('UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [new Date(this.clock.now()).toISOString(), id]);
    return rowCount === 1;
  }

  /** Ends the pool, or releases this store's share of it; closing twice is harmless. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.onClose();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('the tenant store is closed');
  }
}
