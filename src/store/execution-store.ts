// The execution history in SQLite: one row per result, newest-first keyset paging, retention by
// count and age, and statistics computed in SQL so no request ever loads the whole table.
import type { Statement, Transaction } from 'better-sqlite3';
import { LOCAL_TENANT } from '../core/caller.ts';
import type { Clock, ExecutionMeter, ExecutionStore } from '../core/ports.ts';
import type { ExecutionResult, ExecutionStatus, HistoryPage, Stats, TenantUsage } from '../core/schemas.ts';
import type { SqliteDatabase } from './db.ts';
import { DAY_MS, FIRST_DAY, LAST_DAY, type StoredRow as StoredResult, type UsageRow, checkLimit, decodeCursor, foldUsage, historyItem, nearestRank, pageOf, normalizeIso, parseStored, zeroByStatus } from './codec.ts';

type StoredRow = StoredResult & { seq: number };

export interface SqliteExecutionStoreOptions {
  db: SqliteDatabase;
  /** Newest executions kept. */
  maxExecutions: number;
  /** Executions older than this are pruned; 0 keeps them regardless of age. */
  maxAgeDays: number;
  clock?: Clock;
}

export class SqliteExecutionStore implements ExecutionStore {
  private readonly db: SqliteDatabase;
  private readonly maxExecutions: number;
  private readonly maxAgeMs: number;
  private readonly clock: Clock;
  private readonly insertStmt: Statement<[Record<string, string | number>]>;
  private readonly pruneUpToSeq: Statement<[number]>;
  private readonly pruneBefore: Statement<[string]>;
  private readonly newestSeq: Statement<[], number | null>;
  private readonly meterStmt: Statement<[Record<string, string | number>]>;
  private readonly byId: Statement<[string], StoredRow>;
  private readonly page: Statement<[number, number], StoredRow>;
  private readonly pageOfStatus: Statement<[string, number, number], StoredRow>;
  private readonly countsByStatus: Statement<[], { status: string; n: number }>;
  private readonly meanDuration: Statement<[], number | null>;
  private readonly durationAtRank: Statement<[number], number>;
  // The same reads, within one tenant (each walks a tenant-first index).
  private readonly byIdOfTenant: Statement<[string, string], StoredRow>;
  private readonly pageOfTenant: Statement<[string, number, number], StoredRow>;
  private readonly pageOfTenantStatus: Statement<[string, string, number, number], StoredRow>;
  private readonly countsByStatusOfTenant: Statement<[string], { status: string; n: number }>;
  private readonly meanDurationOfTenant: Statement<[string], number | null>;
  private readonly durationAtRankOfTenant: Statement<[string, number], number>;
  private readonly usageRows: Statement<[Record<string, string | null>], UsageRow>;
  private readonly probe: Statement<[string]>;
  private readonly saveTx: Transaction<(result: ExecutionResult, meter: ExecutionMeter) => void>;
  private readonly statsTx: (tenant: string | undefined) => Stats;

  constructor(opts: SqliteExecutionStoreOptions) {
    if (!Number.isSafeInteger(opts.maxExecutions) || opts.maxExecutions < 1) throw new RangeError('maxExecutions must be a positive integer');
    if (!Number.isFinite(opts.maxAgeDays) || opts.maxAgeDays < 0) throw new RangeError('maxAgeDays must be 0 or more');
    const db = opts.db;
    this.db = db;
    this.maxExecutions = opts.maxExecutions;
    this.maxAgeMs = opts.maxAgeDays * DAY_MS;
    this.clock = opts.clock ?? { now: () => Date.now() };

    this.insertStmt = db.prepare(
      `INSERT INTO executions (id, status, success, duration_ms, created_at, finished_at, result, tenant)
       VALUES (@id, @status, @success, @durationMs, @createdAt, @finishedAt, @result, @tenant)`,
    );
    this.meterStmt = db.prepare(
      `INSERT INTO usage (tenant, day, status, executions, wall_ms, cpu_ms, output_bytes)
       VALUES (@tenant, @day, @status, 1, @wallMs, @cpuMs, @outputBytes)
       ON CONFLICT (tenant, day, status) DO UPDATE SET
         executions = executions + 1,
         wall_ms = wall_ms + excluded.wall_ms,
         cpu_ms = cpu_ms + excluded.cpu_ms,
         output_bytes = output_bytes + excluded.output_bytes`,
    );
    this.pruneUpToSeq = db.prepare('DELETE FROM executions WHERE seq <= ?');
    this.pruneBefore = db.prepare('DELETE FROM executions WHERE created_at < ?');
    this.newestSeq = db.prepare<[], number | null>('SELECT MAX(seq) FROM executions').pluck();
    this.byId = db.prepare('SELECT seq, id, result FROM executions WHERE id = ?');
    this.page = db.prepare('SELECT seq, id, result FROM executions WHERE seq < ? ORDER BY seq DESC LIMIT ?');
    this.pageOfStatus = db.prepare('SELECT seq, id, result FROM executions WHERE status = ? AND seq < ? ORDER BY seq DESC LIMIT ?');
    this.countsByStatus = db.prepare('SELECT status, COUNT(*) AS n FROM executions GROUP BY status');
    this.meanDuration = db.prepare<[], number | null>('SELECT AVG(duration_ms) FROM executions').pluck();
    this.durationAtRank = db.prepare<[number], number>('SELECT duration_ms FROM executions ORDER BY duration_ms LIMIT 1 OFFSET ?').pluck();
    this.byIdOfTenant = db.prepare('SELECT seq, id, result FROM executions WHERE id = ? AND tenant = ?');
    this.pageOfTenant = db.prepare('SELECT seq, id, result FROM executions WHERE tenant = ? AND seq < ? ORDER BY seq DESC LIMIT ?');
    this.pageOfTenantStatus = db.prepare(
      'SELECT seq, id, result FROM executions WHERE tenant = ? AND status = ? AND seq < ? ORDER BY seq DESC LIMIT ?',
    );
    this.countsByStatusOfTenant = db.prepare('SELECT status, COUNT(*) AS n FROM executions WHERE tenant = ? GROUP BY status');
    this.meanDurationOfTenant = db.prepare<[string], number | null>('SELECT AVG(duration_ms) FROM executions WHERE tenant = ?').pluck();
    this.durationAtRankOfTenant = db
      .prepare<[string, number], number>('SELECT duration_ms FROM executions WHERE tenant = ? ORDER BY duration_ms LIMIT 1 OFFSET ?')
      .pluck();
    this.usageRows = db.prepare(
      `SELECT tenant, status, SUM(executions) AS executions, SUM(wall_ms) AS wallMs, SUM(cpu_ms) AS cpuMs, SUM(output_bytes) AS outputBytes
       FROM usage WHERE (@tenant IS NULL OR tenant = @tenant) AND day >= @from AND day <= @to
       GROUP BY tenant, status ORDER BY tenant`,
    );
    this.probe = db.prepare(
      `INSERT INTO meta (key, value) VALUES ('health_checked_at', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
    );

    this.saveTx = db.transaction((result: ExecutionResult, meter: ExecutionMeter) => {
      const finishedAt = normalizeIso(result.finishedAt);
      const info = this.insertStmt.run({
        id: result.id,
        status: result.status,
        success: result.success ? 1 : 0,
        durationMs: result.durationMs,
        createdAt: normalizeIso(result.createdAt),
        finishedAt,
        result: JSON.stringify(result),
        tenant: meter.tenant,
      });
      this.meterStmt.run({
        tenant: meter.tenant,
        day: finishedAt.slice(0, 10),
        status: result.status,
        wallMs: result.durationMs,
        cpuMs: result.cpuMs ?? 0,
        outputBytes: meter.outputBytes,
      });
      this.prune(Number(info.lastInsertRowid));
    });
    // One snapshot, so the counts and the ranks the percentiles use agree with each other.
    this.statsTx = db.transaction((tenant: string | undefined) => this.computeStats(tenant));

    // Retention may have been tightened since the last run, or the service idled past maxAgeDays.
    if (!db.readonly) {
      const newest = this.newestSeq.get();
      if (newest != null) db.transaction(() => this.prune(newest)).immediate();
    }
  }

  /** Without a meter (older callers, tests) the run counts toward the local tenant, its kept output as its output. */
  async save(result: ExecutionResult, meter?: ExecutionMeter): Promise<void> {
    this.saveTx.immediate(result, meter ?? { tenant: LOCAL_TENANT, outputBytes: Buffer.byteLength(result.stdout) + Buffer.byteLength(result.stderr) });
  }

  async get(id: string, tenant?: string): Promise<ExecutionResult | undefined> {
    const row = tenant === undefined ? this.byId.get(id) : this.byIdOfTenant.get(id, tenant);
    return row === undefined ? undefined : parseStored(row);
  }

  async list(query: { limit: number; status?: ExecutionStatus | undefined; cursor?: string | undefined; tenant?: string | undefined }): Promise<HistoryPage> {
    const { limit, status, cursor, tenant } = query;
    checkLimit(limit);
    const before = cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor(cursor);
    // One row more than asked tells whether another page exists without a COUNT.
    const rows =
      tenant === undefined
        ? status === undefined
          ? this.page.all(before, limit + 1)
          : this.pageOfStatus.all(status, before, limit + 1)
        : status === undefined
          ? this.pageOfTenant.all(tenant, before, limit + 1)
          : this.pageOfTenantStatus.all(tenant, status, before, limit + 1);
    return pageOf(rows, limit, historyItem, (last) => last.seq);
  }

  async stats(tenant?: string): Promise<Stats> {
    return this.statsTx(tenant);
  }

  async usage(query: { tenant?: string | undefined; from?: string | undefined; to?: string | undefined }): Promise<TenantUsage[]> {
    return foldUsage(this.usageRows.all({ tenant: query.tenant ?? null, from: query.from ?? FIRST_DAY, to: query.to ?? LAST_DAY }));
  }

  /** Proves the database takes writes by rewriting one tiny row; any failure means it does not. */
  async healthy(): Promise<boolean> {
    try {
      this.probe.run(new Date(this.clock.now()).toISOString());
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }

  /**
   * seq only grows, so the newest maxExecutions rows are those above newestSeq - maxExecutions:
   * one index range delete instead of counting the table. Both deletes seek an index, so running
   * them on every save costs a lookup when there is nothing to prune.
   */
  private prune(newestSeq: number): void {
    this.pruneUpToSeq.run(newestSeq - this.maxExecutions);
    if (this.maxAgeMs > 0) this.pruneBefore.run(new Date(this.clock.now() - this.maxAgeMs).toISOString());
  }

  private computeStats(tenant: string | undefined): Stats {
    const byStatus = zeroByStatus();
    let total = 0;
    const counts = tenant === undefined ? this.countsByStatus.all() : this.countsByStatusOfTenant.all(tenant);
    for (const { status, n } of counts) {
      total += n;
      if (status in byStatus) byStatus[status as ExecutionStatus] = n;
    }
    if (total === 0) {
      return { total, byStatus, successRate: null, meanDurationMs: null, p50DurationMs: null, p95DurationMs: null };
    }
    return {
      total,
      byStatus,
      successRate: byStatus.completed / total,
      meanDurationMs: (tenant === undefined ? this.meanDuration.get() : this.meanDurationOfTenant.get(tenant)) ?? null,
      p50DurationMs: this.percentile(50, total, tenant),
      p95DurationMs: this.percentile(95, total, tenant),
    };
  }

  /** Nearest-rank: the smallest duration with at least p% of all durations at or below it. */
  private percentile(p: number, total: number, tenant: string | undefined): number | null {
    const rank = nearestRank(p, total);
    return (tenant === undefined ? this.durationAtRank.get(rank - 1) : this.durationAtRankOfTenant.get(tenant, rank - 1)) ?? null;
  }
}
