// The execution history in PostgreSQL, shared by every node of a cluster: the same semantics as
// the SQLite store (newest-first keyset paging, retention by count and age, usage that outlives
// the history, statistics computed in SQL), and the same answers.
import type { Pool, PoolClient } from 'pg';
import { LOCAL_TENANT } from '../../core/caller.ts';
import { PyboxError } from '../../core/errors.ts';
import type { Clock, ExecutionMeter, ExecutionStore } from '../../core/ports.ts';
import type { ExecutionResult, ExecutionStatus, HistoryPage, Stats, TenantUsage } from '../../core/schemas.ts';
import { DAY_MS, FIRST_DAY, LAST_DAY, checkLimit, decodeCursor, foldUsage, historyItem, nearestRank, pageOf, normalizeIso, parseStored, zeroByStatus } from '../codec.ts';
import { inTransaction } from './tx.ts';

/**
 * The advisory lock every save takes (any fixed number, distinct from the migrations' lock).
 * Saves from all nodes run one at a time: a save's seq is drawn after the previous save committed,
 * so seq order is commit order (a reader paging with a cursor never has an older seq appear
 * behind it later), and two saves never prune the same rows in different orders (no deadlocks).
 * A save holds it for a few short statements, far less than any execution takes.
 */
export const SAVE_LOCK = 7_310_402_562;

/** The SQLSTATE pybox_save_execution raises for an id stored already under another result. */
const ALREADY_STORED = 'PBX01';

export interface PostgresExecutionStoreOptions {
  /** Newest executions kept. */
  maxExecutions: number;
  /** Executions older than this are pruned; 0 keeps them regardless of age. */
  maxAgeDays: number;
  clock?: Clock;
  /**
   * What close() does with the pool, once. By default it ends it: the store owns the pool. Pass
   * `keepPool` when the pool is the caller's, or a share of it (sharePool) when stores share one.
   */
  onClose?: () => Promise<void>;
}

interface PageRow {
  seq: string; // bigint arrives as text
  id: string;
  result: string;
}

const byTenant = (tenant: string | undefined, next: number): string => (tenant === undefined ? '' : `tenant = $${next} AND `);

export class PostgresExecutionStore implements ExecutionStore {
  private readonly maxExecutions: number;
  private readonly maxAgeMs: number;
  private readonly clock: Clock;
  private readonly onClose: () => Promise<void>;
  private closed = false;

  constructor(
    private readonly pool: Pool,
    opts: PostgresExecutionStoreOptions,
  ) {
    if (!Number.isSafeInteger(opts.maxExecutions) || opts.maxExecutions < 1) throw new RangeError('maxExecutions must be a positive integer');
    if (!Number.isFinite(opts.maxAgeDays) || opts.maxAgeDays < 0) throw new RangeError('maxAgeDays must be 0 or more');
    this.maxExecutions = opts.maxExecutions;
    this.maxAgeMs = opts.maxAgeDays * DAY_MS;
    this.clock = opts.clock ?? { now: () => Date.now() };
    this.onClose = opts.onClose ?? (() => this.pool.end());
  }

  /**
   * A store that has applied its retention once already: it may have been tightened since the
   * last start, or the cluster idled past maxAgeDays. (The schema must be migrated: connectPostgres.)
   */
  static async open(pool: Pool, opts: PostgresExecutionStoreOptions): Promise<PostgresExecutionStore> {
    const store = new PostgresExecutionStore(pool, opts);
    await store.prune();
    return store;
  }

  /**
   * Without a meter (older callers, tests) the run counts toward the local tenant, its kept output
   * as its output. Saving the very result already stored under its id (same JSON, same tenant) is
   * a success that changes nothing; another result under a stored id is refused.
   */
  async save(result: ExecutionResult, meter?: ExecutionMeter): Promise<void> {
    this.assertOpen();
    const m = meter ?? { tenant: LOCAL_TENANT, outputBytes: Buffer.byteLength(result.stdout) + Buffer.byteLength(result.stderr) };
    const finishedAt = normalizeIso(result.finishedAt);
    const json = JSON.stringify(result);
    // One statement, one round trip (migration 2's pybox_save_execution): the lock, the insert,
    // the usage and the prune run on the server. A save's statements sent one by one each waited
    // for a worker's event loop, busy replacing the sandbox just used, to take the answer.
    try {
      await this.pool.query({
        name: 'pybox_save_execution',
        text: 'SELECT pybox_save_execution($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)',
        values: [
          result.id,
          m.tenant,
          result.status,
          result.success,
          result.durationMs,
          this.instant(result.createdAt),
          this.instant(result.finishedAt),
          json,
          finishedAt.slice(0, 10),
          result.cpuMs ?? 0,
          m.outputBytes,
          this.maxExecutions,
          this.maxAgeMs > 0 ? new Date(this.clock.now() - this.maxAgeMs).toISOString() : null,
        ],
      });
    } catch (e) {
      // Another result under a stored id. The same one again (a save retried after its commit went
      // through but the answer was lost) is a success that changes nothing: done already, counted once.
      if ((e as { code?: unknown }).code === ALREADY_STORED) throw new PyboxError('internal', `an execution with id ${result.id} is already stored`);
      throw e;
    }
  }

  async get(id: string, tenant?: string): Promise<ExecutionResult | undefined> {
    this.assertOpen();
    // PostgreSQL text cannot hold NUL, so no stored id has one; a hostile id with one is just unknown.
    if (hasNul(id) || (tenant !== undefined && hasNul(tenant))) return undefined;
    const { rows } = await this.pool.query<PageRow>(
      `SELECT seq, id, result FROM executions WHERE ${byTenant(tenant, 2)}id = $1`,
      tenant === undefined ? [id] : [id, tenant],
    );
    const row = rows[0];
    return row === undefined ? undefined : parseStored(row);
  }

  async list(query: { limit: number; status?: ExecutionStatus | undefined; cursor?: string | undefined; tenant?: string | undefined }): Promise<HistoryPage> {
    this.assertOpen();
    const { limit, status, cursor, tenant } = query;
    checkLimit(limit);
    const before = cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor(cursor);
    if ((tenant !== undefined && hasNul(tenant)) || (status !== undefined && hasNul(status))) return { items: [], nextCursor: null };
    // One row more than asked tells whether another page exists without a COUNT.
    const params: Array<string | number> = [before, limit + 1];
    const where: string[] = [];
    if (tenant !== undefined) where.push(`tenant = $${params.push(tenant)}`);
    if (status !== undefined) where.push(`status = $${params.push(status)}`);
    where.push('seq < $1');
    const { rows } = await this.pool.query<PageRow>(`SELECT seq, id, result FROM executions WHERE ${where.join(' AND ')} ORDER BY seq DESC LIMIT $2`, params);
    return pageOf(rows, limit, historyItem, (last) => Number(last.seq));
  }

  /** Read in one REPEATABLE READ snapshot, so the counts and the ranks the percentiles use agree. */
  async stats(tenant?: string): Promise<Stats> {
    this.assertOpen();
    const byStatus = zeroByStatus();
    if (tenant !== undefined && hasNul(tenant)) return emptyStats(byStatus);
    const scope = tenant === undefined ? '' : 'WHERE tenant = $1';
    const scoped = tenant === undefined ? [] : [tenant];
    return inTransaction(this.pool, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async (c) => {
      const head = await c.query<{ counts: Record<string, number> | null; mean: number | null }>(
        `SELECT (SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM executions ${scope} GROUP BY status) AS c) AS counts,
                (SELECT avg(duration_ms) FROM executions ${scope}) AS mean`,
        scoped,
      );
      let total = 0;
      for (const [status, n] of Object.entries(head.rows[0]?.counts ?? {})) {
        total += n;
        if (status in byStatus) byStatus[status as ExecutionStatus] = n;
      }
      if (total === 0) return emptyStats(byStatus);
      // Nearest rank, read as the k-th duration by walking the (tenant,) duration index.
      const at = (param: number) => `(SELECT duration_ms FROM executions ${scope} ORDER BY duration_ms OFFSET $${param} LIMIT 1)`;
      const next = scoped.length + 1;
      const ranks = await c.query<{ p50: number | null; p95: number | null }>(`SELECT ${at(next)} AS p50, ${at(next + 1)} AS p95`, [
        ...scoped,
        nearestRank(50, total) - 1,
        nearestRank(95, total) - 1,
      ]);
      return {
        total,
        byStatus,
        successRate: byStatus.completed / total,
        meanDurationMs: head.rows[0]?.mean ?? null,
        p50DurationMs: ranks.rows[0]?.p50 ?? null,
        p95DurationMs: ranks.rows[0]?.p95 ?? null,
      };
    });
  }

  async usage(query: { tenant?: string | undefined; from?: string | undefined; to?: string | undefined }): Promise<TenantUsage[]> {
    this.assertOpen();
    const { tenant, from = FIRST_DAY, to = LAST_DAY } = query;
    if ([tenant, from, to].some((s) => s !== undefined && hasNul(s))) return [];
    // Sums as float8: exact for integers below 2^53, and they arrive as numbers, not numeric text.
    const { rows } = await this.pool.query<{ tenant: string; status: string; executions: number; wall_ms: number; cpu_ms: number; output_bytes: number }>(
      `SELECT tenant, status, sum(executions)::float8 AS executions, sum(wall_ms) AS wall_ms, sum(cpu_ms) AS cpu_ms,
              sum(output_bytes)::float8 AS output_bytes
       FROM usage WHERE ${byTenant(tenant, 3)}day >= $1 AND day <= $2
       GROUP BY tenant, status ORDER BY tenant`,
      tenant === undefined ? [from, to] : [from, to, tenant],
    );
    return foldUsage(rows.map((r) => ({ tenant: r.tenant, status: r.status, executions: r.executions, wallMs: r.wall_ms, cpuMs: r.cpu_ms, outputBytes: r.output_bytes })));
  }

  /** Proves the database takes writes by rewriting one tiny row; any failure means it does not. */
  async healthy(): Promise<boolean> {
    if (this.closed) return false;
    try {
      await this.pool.query(`INSERT INTO meta (key, value) VALUES ('health_checked_at', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, [
        new Date(this.clock.now()).toISOString(),
      ]);
      return true;
    } catch {
      return false;
    }
  }

  /** Ends the pool, or releases this store's share of it; closing twice is harmless. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.onClose();
  }

  /** Applies retention now (a save does it too). */
  async prune(): Promise<void> {
    this.assertOpen();
    await inTransaction(this.pool, 'BEGIN', async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1)', [SAVE_LOCK]);
      const { rows } = await c.query<{ newest: string | null }>('SELECT max(seq) AS newest FROM executions');
      const newest = rows[0]?.newest;
      if (newest != null) await this.pruneIn(c, Number(newest));
    });
  }

  /**
   * seq only grows, so the newest maxExecutions rows are those above newestSeq - maxExecutions:
   * one index range delete instead of counting the table, a lookup when there is nothing to prune.
   * A failed save leaves a gap in seq (sequences are not rolled back), so after one the store keeps
   * up to maxExecutions minus the gaps among the newest rows, never more.
   */
  private async pruneIn(c: PoolClient, newestSeq: number): Promise<void> {
    await c.query('DELETE FROM executions WHERE seq <= $1', [newestSeq - this.maxExecutions]);
    if (this.maxAgeMs > 0) await c.query('DELETE FROM executions WHERE created_at < $1', [new Date(this.clock.now() - this.maxAgeMs).toISOString()]);
  }

  /**
   * A timestamp for a timestamptz column. Results carry ISO times, but the schema allows any text,
   * which SQLite keeps as it is: a result is never refused over its time, it is stored as of now
   * (its JSON keeps the text).
   */
  private instant(timestamp: string): string {
    const ms = Date.parse(timestamp);
    return new Date(Number.isNaN(ms) ? this.clock.now() : ms).toISOString();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('the execution store is closed');
  }
}

function emptyStats(byStatus: Record<ExecutionStatus, number>): Stats {
  return { total: 0, byStatus, successRate: null, meanDurationMs: null, p50DurationMs: null, p95DurationMs: null };
}

export function hasNul(text: string): boolean {
  return text.includes('\u0000');
}
