// The store contract against SQLite, on a file (a second connection to it is the second node).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import { openDatabase } from '../../src/store/db.ts';
import { SqliteExecutionStore } from '../../src/store/execution-store.ts';
import { configuredStoreHasKeys, openExecutionStore, openStores, openTenantStore } from '../../src/store/open.ts';
import { SqliteTenantStore } from '../../src/store/tenant-store.ts';
import { describeStoreContract, manualClock, result } from './store-contract.ts';

describeStoreContract('SQLite', async (opts) => {
  const dir = mkdtempSync(join(tmpdir(), 'pybox-contract-'));
  const path = join(dir, 'pybox.db');
  const db = openDatabase(path);
  const executions = new SqliteExecutionStore({ db, ...opts });
  const tenants = new SqliteTenantStore(db, opts.clock);
  return {
    executions,
    tenants,
    another: async (more) => new SqliteExecutionStore({ db: openDatabase(path), ...more }),
    cleanup: async () => {
      await executions.close();
      await tenants.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('open.ts without cluster.postgresUrl', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('opens SQLite stores at store.path, with its retention', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pybox-open-'));
    dirs.push(dir);
    const config = ConfigSchema.parse({ store: { path: join(dir, 'pybox.db'), maxExecutions: 100 } });
    const executions = await openExecutionStore(config, manualClock());
    const tenants = await openTenantStore(config, manualClock());
    const both = await openStores(config, manualClock());
    try {
      expect(executions).toBeInstanceOf(SqliteExecutionStore);
      expect(tenants).toBeInstanceOf(SqliteTenantStore);
      expect(both.executions).toBeInstanceOf(SqliteExecutionStore);
      expect(both.tenants).toBeInstanceOf(SqliteTenantStore);
      for (let i = 0; i < 101; i++) await executions.save(result(`r${i}`));
      expect((await both.executions.stats()).total).toBe(100);
      expect(await both.executions.get('r0')).toBeUndefined();
      expect(await configuredStoreHasKeys(config)).toBe(false);
      await tenants.createKey({ id: 'key_000000000001', tenant: 'acme', admin: false, hash: Buffer.alloc(32, 1), limits: {} });
      expect(await both.tenants.hasKeys()).toBe(true);
      expect(await configuredStoreHasKeys(config)).toBe(true);
    } finally {
      await executions.close();
      await tenants.close();
      await both.executions.close();
      await both.tenants.close();
    }
  });
});
