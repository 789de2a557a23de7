// A WebhookOutbox in memory, for tests of the deliverer. It follows the port's contract as the
// SQL outboxes do: claimDue hands out due, unleased pending deliveries (soonest first) and leases
// them; delivered and failed count the try (attempts + 1) and end the lease.
import type { WebhookDelivery, WebhookOutbox } from '../../src/core/ports.ts';
import type { WebhookState } from '../../src/core/schemas.ts';

export interface StoredDelivery extends WebhookDelivery {
  state: WebhookState;
  lastError: string | null;
  lastStatus: number | null;
  leaseOwner: string | null;
  leaseUntilMs: number | null;
}

export type OutboxCall =
  | { op: 'claimDue'; owner: string; nowMs: number; max: number; leaseMs: number; ids: string[] }
  | { op: 'delivered'; id: string; nowMs: number; httpStatus: number }
  | { op: 'failed'; id: string; nowMs: number; nextAtMs: number | null; error: string; httpStatus: number | null };

export class MemoryOutbox implements WebhookOutbox {
  readonly rows = new Map<string, StoredDelivery>();
  readonly calls: OutboxCall[] = [];

  async enqueue(delivery: Omit<WebhookDelivery, 'attempts' | 'nextAtMs'>, nowMs: number): Promise<void> {
    if (this.rows.has(delivery.id)) return;
    this.rows.set(delivery.id, { ...delivery, attempts: 0, nextAtMs: nowMs, state: 'pending', lastError: null, lastStatus: null, leaseOwner: null, leaseUntilMs: null });
  }

  async claimDue(owner: string, nowMs: number, max: number, leaseMs: number): Promise<WebhookDelivery[]> {
    const due = [...this.rows.values()]
      .filter((r) => r.state === 'pending' && r.nextAtMs <= nowMs && (r.leaseUntilMs === null || r.leaseUntilMs <= nowMs))
      .sort((a, b) => a.nextAtMs - b.nextAtMs)
      .slice(0, max);
    for (const r of due) {
      r.leaseOwner = owner;
      r.leaseUntilMs = nowMs + leaseMs;
    }
    this.calls.push({ op: 'claimDue', owner, nowMs, max, leaseMs, ids: due.map((r) => r.id) });
    return due.map((r) => ({ id: r.id, tenant: r.tenant, url: r.url, batchId: r.batchId, body: r.body, attempts: r.attempts, nextAtMs: r.nextAtMs }));
  }

  async delivered(id: string, nowMs: number, httpStatus: number): Promise<void> {
    this.calls.push({ op: 'delivered', id, nowMs, httpStatus });
    const r = this.rows.get(id);
    if (!r || r.state !== 'pending') return;
    Object.assign(r, { state: 'delivered', attempts: r.attempts + 1, lastStatus: httpStatus, lastError: null, leaseOwner: null, leaseUntilMs: null });
  }

  async failed(id: string, nowMs: number, outcome: { nextAtMs: number | null; error: string; httpStatus: number | null }): Promise<void> {
    this.calls.push({ op: 'failed', id, nowMs, ...outcome });
    const r = this.rows.get(id);
    if (!r || r.state !== 'pending') return;
    Object.assign(r, {
      state: outcome.nextAtMs === null ? 'failed' : 'pending',
      nextAtMs: outcome.nextAtMs ?? r.nextAtMs,
      attempts: r.attempts + 1,
      lastError: outcome.error,
      lastStatus: outcome.httpStatus,
      leaseOwner: null,
      leaseUntilMs: null,
    });
  }

  async get(id: string): Promise<(WebhookDelivery & { state: WebhookState; lastError: string | null; lastStatus: number | null }) | undefined> {
    const r = this.rows.get(id);
    if (!r) return undefined;
    const { leaseOwner: _o, leaseUntilMs: _u, ...rest } = r;
    return { ...rest };
  }

  /** The failed() and delivered() calls for one delivery, in order. */
  outcomes(id: string): Array<Extract<OutboxCall, { op: 'delivered' | 'failed' }>> {
    return this.calls.filter((c): c is Extract<OutboxCall, { op: 'delivered' | 'failed' }> => c.op !== 'claimDue' && c.id === id);
  }
}
