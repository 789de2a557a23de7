// Which store a node uses: SQLite at store.path (the embedded default), or PostgreSQL when the
// cluster is configured. The server and the `keys` commands open it the same way.
import type { Config } from '../config/schema.ts';
import type { Clock, TenantStore } from '../core/ports.ts';
import { openDatabase } from './db.ts';
import { SqliteTenantStore } from './tenant-store.ts';

export async function openTenantStore(config: Config, clock?: Clock): Promise<TenantStore> {
  return new SqliteTenantStore(openDatabase(config.store.path), clock);
}
