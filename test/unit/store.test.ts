// What is particular to SQLite: opening, migrating, a corrupt row, a read-only file. Everything
// both stores must do is in test/contract/store-contract.ts, run against SQLite and PostgreSQL.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { manualClock, result } from '../contract/store-contract.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { MIGRATIONS, openDatabase } from '../../src/store/db.ts';
import { SqliteExecutionStore } from '../../src/store/execution-store.ts';


// Everything a test opens is closed and removed afterwards, even when it fails.
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pybox-store-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}


function newStore(opts: { path?: string; maxExecutions?: number; maxAgeDays?: number; clock?: { now(): number }; readonly?: boolean } = {}) {
  const db = openDatabase(opts.path ?? ':memory:', { readonly: opts.readonly ?? false });
  const store = new SqliteExecutionStore({
    db,
    maxExecutions: opts.maxExecutions ?? 1000,
    maxAgeDays: opts.maxAgeDays ?? 0,
    clock: opts.clock ?? manualClock(),
  });
  cleanups.push(() => store.close());
  return { db, store };
}


async function rejected(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

describe('openDatabase', () => {
  it('creates the parent directory, sets the pragmas, and a reopen keeps history without re-running migrations', async () => {
    const path = join(tempDir(), 'nested', 'dir', 'pybox.db');
    const first = newStore({ path });
    expect(first.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(first.db.pragma('synchronous', { simple: true })).toBe(1); // NORMAL
    expect(first.db.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(first.db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(first.db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
    await first.store.save(result('kept'));
    await first.store.close();

    // Migration 1 is a bare CREATE TABLE: had the reopen run it again, openDatabase would throw.
    const second = newStore({ path });
    expect(second.db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
    expect(await second.store.get('kept')).toEqual(result('kept'));
  });

  it('refuses a database from a newer schema', () => {
    const path = join(tempDir(), 'pybox.db');
    const { db } = newStore({ path });
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.close();
    expect(() => openDatabase(path)).toThrow(`schema version ${MIGRATIONS.length + 1}, newer than this pybox knows (${MIGRATIONS.length})`);
  });
});

describe('SqliteExecutionStore', () => {
  it('fails loudly on a stored row that no longer matches the result schema', async () => {
    const { db, store } = newStore();
    await store.save(result('a'));
    db.prepare(`UPDATE executions SET result = json_remove(result, '$.status') WHERE id = 'a'`).run();
    const e = await rejected(store.get('a'));
    expect(e).toBeInstanceOf(PyboxError);
    expect((e as PyboxError).code).toBe('internal');
    expect((e as PyboxError).message).toMatch(/stored execution a does not match/);
  });

  it('is healthy while it takes writes, and not once it cannot', async () => {
    const path = join(tempDir(), 'pybox.db');
    const writable = newStore({ path });
    expect(await writable.store.healthy()).toBe(true);
    await writable.store.save(result('a'));
    await writable.store.close();
    expect(await writable.store.healthy()).toBe(false); // closed: nothing can be written
    await writable.store.close(); // closing twice is harmless

    // Tests run as root, which ignores chmod, so a 0444 file would stay writable here. Opening the
    // file read-only puts SQLite in the same state a non-root pybox reaches on a read-only file or
    // mount (writes fail with SQLITE_READONLY), and healthy() must notice through its real write.
    const readonly = newStore({ path, readonly: true });
    expect(await readonly.store.get('a')).toEqual(result('a'));
    expect(await readonly.store.healthy()).toBe(false);
  });
});
