// One transaction on one pooled connection, rolled back when the work fails.
import type { Pool, PoolClient } from 'pg';

/**
 * Runs `work` between `begin` and COMMIT on a connection of its own. When the work fails the
 * transaction is rolled back and the work's error rethrown. When BEGIN, COMMIT or ROLLBACK itself
 * fails, or the connection fails while it is held, the connection's state is unknown: it is
 * destroyed instead of going back to the pool.
 */
export async function inTransaction<T>(pool: Pool, begin: string, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  // A held connection that fails (the server shuts down, the network drops) emits 'error', even
  // beside the query it fails; the pool listens only to idle ones, and an unheard 'error' would end
  // the process. Heard here, it breaks the connection; the statement under way fails on its own.
  const failed = (e: Error) => (broken ??= e);
  client.on('error', failed);
  try {
    await control(client, begin, (e) => (broken = e));
    let value: T;
    try {
      value = await work(client);
    } catch (e) {
      await control(client, 'ROLLBACK', (rollbackError) => (broken = rollbackError)).catch(() => {});
      throw e;
    }
    await control(client, 'COMMIT', (e) => (broken = e));
    return value;
  } finally {
    // A broken connection keeps the listener: it is destroyed, and may still report its end.
    if (broken === undefined) client.removeListener('error', failed);
    client.release(broken);
  }
}

async function control(client: PoolClient, sql: string, onFailure: (e: Error) => void): Promise<void> {
  try {
    await client.query(sql);
  } catch (e) {
    const error = e instanceof Error ? e : new Error(String(e));
    onFailure(error);
    throw error;
  }
}
