// Connects a node to the cluster's PostgreSQL: one pool, bounded in every wait, with the schema
// brought up to date before anything uses it.
import pg from 'pg';
import { redactUrl } from '../../core/redact.ts';
import type { Logger } from '../../core/ports.ts';
import { migrate } from './migrations.ts';

export interface PostgresConnectOptions {
  /** Connections in the pool at most (default 10). */
  max?: number;
  /** How long to wait for a connection, new or from the pool, before failing (default 5000). */
  connectTimeoutMs?: number;
  /** Longest a statement may run on the server before it is cancelled (default 15000). */
  statementTimeoutMs?: number;
  logger?: Logger;
}

/**
 * Creates the pool and migrates the schema (safe when several nodes start at once). The caller
 * owns the pool: hand it to a store (whose close() ends it by default), to several
 * (sharePool), or keep it (keepPool) and end it itself. Fails, with the password left out of the message, when the database cannot be
 * reached or migrated; nothing is left open then.
 */
export async function connectPostgres(url: string, opts: PostgresConnectOptions = {}): Promise<{ pool: pg.Pool }> {
  const statementTimeoutMs = opts.statementTimeoutMs ?? 15_000;
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
    statement_timeout: statementTimeoutMs,
    // A server that stops answering (a cut network) never cancels anything: the client gives up too.
    query_timeout: statementTimeoutMs + 5000,
    // A node that dies inside a transaction must not hold its locks (the save lock) for long.
    idle_in_transaction_session_timeout: 30_000,
    keepAlive: true,
    application_name: 'pybox',
  });
  // An idle connection that fails (the server restarted, the network dropped) is an 'error' event
  // on the pool; unheard, it would crash the process. The pool drops that connection by itself.
  pool.on('error', (e) => opts.logger?.warn('postgres: an idle connection failed', { error: e.message }));
  try {
    const applied = await migrate(pool);
    if (applied.length > 0) opts.logger?.info('postgres: schema migrated', { versions: applied.join(',') });
  } catch (e) {
    await pool.end().catch(() => {});
    throw new Error(`cannot open the PostgreSQL store at ${redactUrl(url)}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return { pool };
}

export { redactUrl };

/** For a store whose pool is the caller's: its close() leaves the pool open. */
export const keepPool = async (): Promise<void> => {};

/**
 * Splits one pool into `n` shares, for n stores that use it: each store's close() releases its
 * share (once), and the pool ends when the last share is released.
 */
export function sharePool(pool: pg.Pool, n: number): Array<() => Promise<void>> {
  let open = n;
  return Array.from({ length: n }, () => {
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      if (--open === 0) await pool.end();
    };
  });
}
