// Which store a node uses: SQLite at store.path (the embedded default), or PostgreSQL when the
// cluster is configured. The server and the `keys` commands open it the same way.
import type { Config } from '../config/schema.ts';
import type { Pool } from 'pg';
import type { Clock, ExecutionStore, JobStore, TenantStore, WebhookOutbox, WebhookSecrets } from '../core/ports.ts';
import { openDatabase, type SqliteDatabase } from './db.ts';
import { SqliteExecutionStore } from './execution-store.ts';
import { SqliteJobStore } from './job-store.ts';
import { connectPostgres, sharePool, type PostgresConnectOptions } from './postgres/connect.ts';
import { PostgresExecutionStore } from './postgres/execution-store.ts';
import { PostgresJobStore } from './postgres/job-store.ts';
import { reportingOutages } from './postgres/outage.ts';
import { PostgresTenantStore } from './postgres/tenant-store.ts';
import { PostgresWebhookOutbox, PostgresWebhookSecrets } from './postgres/webhook-store.ts';
import { SqliteTenantStore } from './tenant-store.ts';
import { SqliteWebhookOutbox, SqliteWebhookSecrets } from './webhook-store.ts';

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
 * Async executions, batches and webhooks, kept where the node's executions are (a batch's items
 * read their results with a join). They own nothing to close: they live as long as the database
 * or pool they are made on, so stop what uses them before closing the execution and tenant stores.
 */
export interface JobStores {
  jobs: JobStore;
  outbox: WebhookOutbox;
  secrets: WebhookSecrets;
}

/**
 * The job stores on a SQLite connection (the one the execution store uses: compose.ts). Finished
 * batches and ended deliveries are kept `maxAgeDays` (store.maxAgeDays; 0 keeps them).
 */
export function sqliteJobStores(db: SqliteDatabase, opts: { maxAgeDays?: number; clock?: Clock | undefined } = {}): JobStores {
  const retention = { maxAgeDays: opts.maxAgeDays };
  return { jobs: new SqliteJobStore(db, retention), outbox: new SqliteWebhookOutbox(db, retention), secrets: new SqliteWebhookSecrets(db, opts.clock) };
}

/** The job stores on a PostgreSQL pool (migrated: connectPostgres), their outages reported as store_unavailable. */
export function postgresJobStores(pool: Pool, opts: { maxAgeDays?: number; clock?: Clock | undefined } = {}): JobStores {
  const retention = { maxAgeDays: opts.maxAgeDays };
  return {
    jobs: reportingOutages(new PostgresJobStore(pool, retention)),
    outbox: reportingOutages(new PostgresWebhookOutbox(pool, retention)),
    secrets: reportingOutages(new PostgresWebhookSecrets(pool, opts.clock)),
  };
}

/**
 * All the stores on one SQLite connection or one PostgreSQL pool, as a node that serves requests
 * uses them. Close the execution and tenant stores when none is used any more (the job stores
 * first stopped): PostgreSQL's pool ends when the second closes, SQLite's connection when the
 * first does (closing it again is harmless).
 */
export async function openStores(config: Config, clock?: Clock, opts: OpenStoreOptions = {}): Promise<{ executions: ExecutionStore; tenants: TenantStore } & JobStores> {
  const retention = { maxExecutions: config.store.maxExecutions, maxAgeDays: config.store.maxAgeDays, ...(clock && { clock }) };
  const url = config.cluster.postgresUrl;
  if (url === null) {
    // Either store's close() closes the database; closing it twice is harmless.
    const db = openDatabase(config.store.path);
    return { executions: new SqliteExecutionStore({ db, ...retention }), tenants: new SqliteTenantStore(db, clock), ...sqliteJobStores(db, { maxAgeDays: config.store.maxAgeDays, clock }) };
  }
  const { pool } = await connectPostgres(url, opts);
  const [executionsShare, tenantsShare] = sharePool(pool, 2) as [() => Promise<void>, () => Promise<void>];
  try {
    const executions = await PostgresExecutionStore.open(pool, { ...retention, onClose: executionsShare });
    const tenants = new PostgresTenantStore(pool, { ...(clock && { clock }), onClose: tenantsShare });
    // An outage answers 503 store_unavailable with Retry-After, whichever store met it.
    return { executions: reportingOutages(executions), tenants: reportingOutages(tenants), ...postgresJobStores(pool, { maxAgeDays: config.store.maxAgeDays, clock }) };
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
