// What the SQLite and PostgreSQL stores share so they answer alike: the cursor format, how a stored
// result is read back, how timestamps are normalized, and how usage rows add up to a report.
import { invalidField, PyboxError } from '../core/errors.ts';
import { EXECUTION_STATUSES, ExecutionResult, type ExecutionStatus, type TenantUsage } from '../core/schemas.ts';

export const DAY_MS = 86_400_000;

/** Day bounds that include every day, for a usage query without from or to. */
export const FIRST_DAY = '0000-01-01';
export const LAST_DAY = '9999-12-31';

/** A stored result as both stores keep it: its JSON text, with the id it was saved under. */
export interface StoredRow {
  id: string;
  result: string;
}

/** One usage row summed over days: a tenant's executions of one status. */
export interface UsageRow {
  tenant: string;
  status: string;
  executions: number;
  wallMs: number;
  cpuMs: number;
  outputBytes: number;
}

export function zeroByStatus(): Record<ExecutionStatus, number> {
  return Object.fromEntries(EXECUTION_STATUSES.map((s) => [s, 0])) as Record<ExecutionStatus, number>;
}

export function parseStored(row: StoredRow): ExecutionResult {
  let json: unknown;
  try {
    json = JSON.parse(row.result);
  } catch (e) {
    throw new PyboxError('internal', `stored execution ${row.id} is not valid JSON`, { cause: e });
  }
  const parsed = ExecutionResult.safeParse(json);
  if (!parsed.success) {
    // Loud on purpose: a result shape that changed needs a migration, not silently missing history.
    throw new PyboxError('internal', `stored execution ${row.id} does not match the result schema`, { details: parsed.error.issues });
  }
  return parsed.data;
}

/** A stored result as a page of history shows it: rich outputs (figures) and the code left out, GET /v1/executions/{id} has them. */
export function historyItem(row: StoredRow): ExecutionResult {
  const { outputs: _outputs, code: _code, ...item } = parseStored(row);
  return item;
}

/** Age pruning compares ISO strings, which only orders correctly when they all share one form. */
export function normalizeIso(timestamp: string): string {
  const ms = Date.parse(timestamp);
  return Number.isNaN(ms) ? timestamp : new Date(ms).toISOString();
}

export function encodeCursor(seq: number): string {
  return Buffer.from(`s${seq}`, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): number {
  const match = /^s([1-9][0-9]{0,15})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  const seq = match ? Number(match[1]) : Number.NaN;
  // Buffer.from skips characters that are not base64url, so insist on the canonical spelling.
  if (!Number.isSafeInteger(seq) || encodeCursor(seq) !== cursor) throw invalidField('cursor', 'is not a cursor from a previous page');
  return seq;
}

export function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) throw invalidField('limit', 'must be a positive integer');
}

/**
 * A page of `limit` items out of `rows`, read with one row more than asked: that extra row tells
 * whether another page exists without a COUNT, and the cursor then points past the page's last row.
 */
export function pageOf<R, T>(rows: readonly R[], limit: number, map: (row: R) => T, cursorOf: (row: R) => number): { items: T[]; nextCursor: string | null } {
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return { items: page.map((row) => map(row)), nextCursor: rows.length > limit && last !== undefined ? encodeCursor(cursorOf(last)) : null };
}

/** Folds usage rows (in tenant order) into one report entry per tenant. */
export function foldUsage(rows: Iterable<UsageRow>): TenantUsage[] {
  const byTenant = new Map<string, TenantUsage>();
  for (const row of rows) {
    let u = byTenant.get(row.tenant);
    if (!u) {
      u = { tenant: row.tenant, executions: 0, byStatus: zeroByStatus(), wallMs: 0, cpuMs: 0, outputBytes: 0 };
      byTenant.set(row.tenant, u);
    }
    if (row.status in u.byStatus) u.byStatus[row.status as ExecutionStatus] += row.executions;
    u.executions += row.executions;
    u.wallMs += row.wallMs;
    u.cpuMs += row.cpuMs;
    u.outputBytes += row.outputBytes;
  }
  return [...byTenant.values()].map((u) => ({ ...u, wallMs: Math.round(u.wallMs * 10) / 10, cpuMs: Math.round(u.cpuMs * 10) / 10 }));
}

/** Nearest rank (1-based) of the p-th percentile of `total` values: exact, p and total being integers. */
export function nearestRank(p: number, total: number): number {
  return Math.max(1, Math.ceil((p * total) / 100));
}
