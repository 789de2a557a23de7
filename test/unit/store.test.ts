import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import { EXECUTION_STATUSES, type ExecutionResult, type ExecutionStatus } from '../../src/core/schemas.ts';
import { MIGRATIONS, openDatabase } from '../../src/store/db.ts';
import { SqliteExecutionStore } from '../../src/store/execution-store.ts';

const DAY_MS = 86_400_000;
const T0 = Date.parse('2025-03-01T12:00:00.000Z');

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

/** A clock the test moves by hand, so age retention does not depend on when the test runs. */
function manualClock(startMs = T0) {
  const clock = { nowMs: startMs, now: () => clock.nowMs };
  return clock;
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

function result(id: string, over: Partial<ExecutionResult> = {}): ExecutionResult {
  return {
    id,
    status: 'completed',
    success: true,
    exitCode: 0,
    signal: null,
    stdout: 'hello\n',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 12.5,
    feedback: 'ran fine',
    runtime: 'runc',
    limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 },
    createdAt: new Date(T0).toISOString(),
    finishedAt: new Date(T0 + 13).toISOString(),
    ...over,
  };
}

function withStatus(id: string, status: ExecutionStatus, durationMs = 10): ExecutionResult {
  return result(id, { status, success: status === 'completed', durationMs });
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
  it('returns a saved result exactly as it was saved', async () => {
    const { store } = newStore();
    const full = result('a', {
      status: 'error',
      success: false,
      exitCode: 1,
      stderr: 'Traceback…\nZeroDivisionError: division by zero\n',
      error: { type: 'ZeroDivisionError', message: 'division by zero', line: 3, column: null, traceback: 'tb' },
      files: [{ path: 'out/x.txt', size: 2, contentBase64: 'aGk=' }],
      filesDropped: 1,
      runtime: 'runsc',
    });
    await store.save(full);
    expect(await store.get('a')).toEqual(full);
    expect(await store.get('missing')).toBeUndefined();
  });

  it('rejects a second result with the same id and keeps the first', async () => {
    const { store } = newStore();
    await store.save(result('a', { stdout: 'first' }));
    await expect(store.save(result('a', { stdout: 'second' }))).rejects.toThrow(/UNIQUE/);
    expect((await store.get('a'))?.stdout).toBe('first');
    expect((await store.stats()).total).toBe(1);
  });

  it('fails loudly on a stored row that no longer matches the result schema', async () => {
    const { db, store } = newStore();
    await store.save(result('a'));
    db.prepare(`UPDATE executions SET result = json_remove(result, '$.status') WHERE id = 'a'`).run();
    const e = await rejected(store.get('a'));
    expect(e).toBeInstanceOf(PyboxError);
    expect((e as PyboxError).code).toBe('internal');
    expect((e as PyboxError).message).toMatch(/stored execution a does not match/);
  });

  it('lists newest first and filters by status', async () => {
    const { store } = newStore();
    await store.save(withStatus('a', 'completed'));
    await store.save(withStatus('b', 'timeout'));
    await store.save(withStatus('c', 'completed'));
    await store.save(withStatus('d', 'timeout'));
    const all = await store.list({ limit: 10 });
    expect(all.items.map((r) => r.id)).toEqual(['d', 'c', 'b', 'a']);
    expect(all.nextCursor).toBeNull();
    expect((await store.list({ limit: 10, status: 'timeout' })).items.map((r) => r.id)).toEqual(['d', 'b']);
    expect(await store.list({ limit: 10, status: 'oom' })).toEqual({ items: [], nextCursor: null });
  });

  it('pages through three pages with cursors, unaffected by results saved meanwhile', async () => {
    const { store } = newStore();
    for (const id of ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7']) await store.save(result(id));
    const page1 = await store.list({ limit: 3 });
    expect(page1.items.map((r) => r.id)).toEqual(['r7', 'r6', 'r5']);
    expect(page1.nextCursor).toEqual(expect.any(String));

    await store.save(result('r8')); // keyset paging: a newer result must not shift the later pages
    const page2 = await store.list({ limit: 3, cursor: page1.nextCursor ?? undefined });
    expect(page2.items.map((r) => r.id)).toEqual(['r4', 'r3', 'r2']);
    const page3 = await store.list({ limit: 3, cursor: page2.nextCursor ?? undefined });
    expect(page3.items.map((r) => r.id)).toEqual(['r1']);
    expect(page3.nextCursor).toBeNull();
  });

  it('pages a status filter and ends without an empty page when the count divides evenly', async () => {
    const { store } = newStore();
    for (let i = 1; i <= 8; i++) await store.save(withStatus(`r${i}`, i % 2 === 0 ? 'error' : 'completed'));
    const page1 = await store.list({ limit: 2, status: 'error' });
    expect(page1.items.map((r) => r.id)).toEqual(['r8', 'r6']);
    const page2 = await store.list({ limit: 2, status: 'error', cursor: page1.nextCursor ?? undefined });
    expect(page2.items.map((r) => r.id)).toEqual(['r4', 'r2']);
    expect(page2.nextCursor).toBeNull();
  });

  it('rejects cursors it did not hand out', async () => {
    const { store } = newStore();
    await store.save(result('a'));
    const forged = [
      '',
      'not a cursor',
      Buffer.from('s0').toString('base64url'),
      Buffer.from('s-5').toString('base64url'),
      Buffer.from('12').toString('base64url'),
      Buffer.from('s99999999999999999').toString('base64url'),
      `${Buffer.from('s5').toString('base64url')}!!`,
    ];
    for (const cursor of forged) {
      const e = await rejected(store.list({ limit: 5, cursor }));
      expect(e, cursor).toBeInstanceOf(PyboxError);
      expect((e as PyboxError).code, cursor).toBe('invalid_request');
    }
  });

  it('reports zeros and nulls for an empty store', async () => {
    const { store } = newStore();
    expect(await store.stats()).toEqual({
      total: 0,
      byStatus: Object.fromEntries(EXECUTION_STATUSES.map((s) => [s, 0])),
      successRate: null,
      meanDurationMs: null,
      p50DurationMs: null,
      p95DurationMs: null,
    });
  });

  it('computes counts, success rate, mean and nearest-rank percentiles', async () => {
    const { store } = newStore();
    // Durations 10..200 saved out of order, so a wrong ORDER BY would pick the wrong rows.
    const durations = [70, 200, 10, 150, 40, 120, 90, 30, 180, 60, 110, 20, 190, 80, 50, 140, 100, 170, 160, 130];
    for (const [i, durationMs] of durations.entries()) {
      const status: ExecutionStatus = i < 15 ? 'completed' : i < 18 ? 'timeout' : 'error';
      await store.save(withStatus(`r${i}`, status, durationMs));
    }
    const stats = await store.stats();
    expect(stats.total).toBe(20);
    expect(stats.byStatus).toEqual({ completed: 15, error: 2, timeout: 3, oom: 0, output_limit: 0, validation_failed: 0, cancelled: 0, internal_error: 0 });
    expect(stats.successRate).toBe(0.75);
    expect(stats.meanDurationMs).toBe(105);
    // Nearest rank: the value at rank ceil(p/100 * n) of the sorted durations (1-based).
    expect(stats.p50DurationMs).toBe(100); // rank ceil(10) = 10
    expect(stats.p95DurationMs).toBe(190); // rank ceil(19) = 19
  });

  it('rounds the nearest rank up when p/100 * n is not whole', async () => {
    const { store } = newStore();
    for (const [i, durationMs] of [5, 1, 4, 2, 3, 7, 6].entries()) await store.save(withStatus(`r${i}`, 'completed', durationMs));
    const stats = await store.stats();
    expect(stats.p50DurationMs).toBe(4); // rank ceil(3.5) = 4
    expect(stats.p95DurationMs).toBe(7); // rank ceil(6.65) = 7
    expect(stats.meanDurationMs).toBe(4);
  });

  it('keeps only the newest maxExecutions results', async () => {
    const { store } = newStore({ maxExecutions: 3 });
    for (const id of ['r1', 'r2', 'r3', 'r4', 'r5']) await store.save(result(id));
    expect((await store.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['r5', 'r4', 'r3']);
    expect(await store.get('r2')).toBeUndefined();
    expect((await store.stats()).total).toBe(3);
  });

  it('applies a tightened count limit when reopened', async () => {
    const path = join(tempDir(), 'pybox.db');
    const first = newStore({ path, maxExecutions: 10 });
    for (const id of ['r1', 'r2', 'r3', 'r4', 'r5']) await first.store.save(result(id));
    await first.store.close();
    const second = newStore({ path, maxExecutions: 2 });
    expect((await second.store.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['r5', 'r4']);
  });

  it('prunes results older than maxAgeDays, and keeps them all when it is 0', async () => {
    const clock = manualClock();
    const at = (ms: number) => ({ createdAt: new Date(ms).toISOString(), finishedAt: new Date(ms + 5).toISOString() });
    const { store } = newStore({ maxAgeDays: 30, clock });
    await store.save(result('old', at(clock.nowMs)));
    clock.nowMs += 2 * DAY_MS;
    await store.save(result('younger', at(clock.nowMs)));
    clock.nowMs += 29 * DAY_MS; // 'old' is now 31 days old, 'younger' 29
    await store.save(result('new', at(clock.nowMs)));
    expect((await store.list({ limit: 10 })).items.map((r) => r.id)).toEqual(['new', 'younger']);

    const keepAll = newStore({ maxAgeDays: 0, clock: manualClock(T0 + 3650 * DAY_MS) });
    await keepAll.store.save(result('ancient', at(T0)));
    await keepAll.store.save(result('another', at(T0)));
    expect((await keepAll.store.stats()).total).toBe(2);
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
