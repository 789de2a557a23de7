// Which store a node uses: SQLite at store.path (the embedded default), or PostgreSQL when the
// cluster is configured. The server and the `keys` commands open it the same way.
import type { Config } from '../config/schema.ts';
import type { Clock, ExecutionStore, TenantStore } from '../core/ports.ts';
import { openDatabase } from './db.ts';
import { SqliteExecutionStore } from './execution-store.ts';
import { connectPostgres, sharePool, type PostgresConnectOptions } from './postgres/connect.ts';
import { PostgresExecutionStore } from './postgres/execution-store.ts';
import { reportingOutages } from './postgres/outage.ts';
import { PostgresTenantStore } from './postgres/tenant-store.ts';
import { SqliteTenantStore } from './tenant-store.ts';

/** How a PostgreSQL store connects (pool size, timeouts, logger); SQLite ignores it. */
export type OpenStoreOptions = PostgresConnectOptions;

/** The tenant store, on a connection (SQLite) or pool (PostgreSQL) of its own that its close() ends. */
export async function openTenantStore(config: Config, clock?: Clock, opts: OpenStoreOptions = {}): Promise<TenantStore> {
  const url = config.cluster.postgresUrl;
  if (url === null) return new SqliteTenantStore(openDatabase(config.store.path), clock);
  // The keys commands make a few queries: a small pool.
  const { pool } = await connectPostgres(url, { max: 2, ...opts });
  return reportingOutages(new PostgresTenantStore(pool, { ...(clock && { clock }) }));
}

/** The execution store, on a connection (SQLite) or pool (PostgreSQL) of its own that its close() ends. */
export async function openExecutionStore(config: Config, clock?: Clock, opts: OpenStoreOptions = {}): Promise<ExecutionStore> {
  const retention = { maxExecutions: config.store.maxExecutions, maxAgeDays: config.store.maxAgeDays, ...(clock && { clock }) };
  const url = config.cluster.postgresUrl;
  if (url === null) return new SqliteExecutionStore({ db: openDatabase(config.store.path), ...retention });
  const { pool } = await connectPostgres(url, opts);
  try {
    return reportingOutages(await PostgresExecutionStore.open(pool, retention));
  } catch (e) {
    await pool.end().catch(() => {});
    throw e;
  }
}

/**
 * Both stores on one SQLite connection or one PostgreSQL pool, as a node that serves requests
 * uses them. Close both, when neither is used any more: PostgreSQL's pool ends when the second
 * closes, SQLite's connection when the first does (closing it again is harmless).
 */
export async function openStores(config: Config, clock?: Clock, opts: OpenStoreOptions = {}): Promise<{ executions: ExecutionStore; tenants: TenantStore }> {
  const retention = { maxExecutions: config.store.maxExecutions, maxAgeDays: config.store.maxAgeDays, ...(clock && { clock }) };
  const url = config.cluster.postgresUrl;
  if (url === null) {
    // Either store's close() closes the database; closing it twice is harmless.
    const db = openDatabase(config.store.path);
    return { executions: new SqliteExecutionStore({ db, ...retention }), tenants: new SqliteTenantStore(db, clock) };
  }
  const { pool } = await connectPostgres(url, opts);
  const [executionsShare, tenantsShare] = sharePool(pool, 2) as [() => Promise<void>, () => Promise<void>];
  try {
    const executions = await PostgresExecutionStore.open(pool, { ...retention, onClose: executionsShare });
    const tenants = new PostgresTenantStore(pool, { ...(clock && { clock }), onClose: tenantsShare });
    // An outage answers 503 store_unavailable with Retry-After, whichever store met it.
    return { executions: reportingOutages(executions), tenants: reportingOutages(tenants) };
  } catch (e) {
    await pool.end().catch(() => {});
    throw e;
  }
}

/** Whether the configured store holds any API key (what decides local mode), opening it briefly. */
export async function configuredStoreHasKeys(config: Config, opts: OpenStoreOptions = {}): Promise<boolean> {
  const store = await openTenantStore(config, undefined, opts);
  try {
    return await store.hasKeys();
  } finally {
    await store.close();
  }
}
