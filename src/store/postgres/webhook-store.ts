// Webhook deliveries and signing secrets in PostgreSQL, shared by every node: the same answers as
// SQLite's (store/webhook-store.ts). Each call is one statement, so each is atomic by itself.
import { randomBytes } from 'node:crypto';
import type { Pool } from 'pg';
import type { Clock, StoredDelivery, WebhookDelivery, WebhookOutbox, WebhookSecrets } from '../../core/ports.ts';
import type { WebhookState } from '../../core/schemas.ts';
import { DELIVERY_COLUMNS, SECRET_BYTES, checkMax, delivery, dueDelivery, endedBefore, errorText, ms, type DeliveryRow, type EndedRetention } from '../job-codec.ts';
import { hasNul } from './execution-store.ts';

export class PostgresWebhookOutbox implements WebhookOutbox {
  /** `retention`: deliveries that ended longer ago than that are pruned as new ones are added. */
  constructor(
    private readonly pool: Pool,
    private readonly retention: EndedRetention = {},
  ) {
    endedBefore(retention, 0);
  }

  async enqueue(d: Omit<WebhookDelivery, 'attempts' | 'nextAtMs'>, nowMs: number): Promise<void> {
    const now = ms(nowMs);
    const before = endedBefore(this.retention, now);
    if (before !== null) await this.pool.query('DELETE FROM webhook_deliveries WHERE finished_at_ms < $1', [before]);
    await this.pool.query(
      `INSERT INTO webhook_deliveries (id, tenant, url, batch_id, body, next_at_ms, created_at_ms)
       VALUES ($1, $2, $3, $4, $5, $6, $6)
       ON CONFLICT (id) DO NOTHING`,
      [d.id, d.tenant, d.url, d.batchId, d.body, now],
    );
  }

  /** Deliveries another node is taking are passed over (SKIP LOCKED): none goes to two at once. */
  async claimDue(owner: string, nowMs: number, max: number, leaseMs: number): Promise<WebhookDelivery[]> {
    checkMax(max);
    if (max === 0) return [];
    const now = ms(nowMs);
    const { rows } = await this.pool.query<DeliveryRow & { seq: string }>(
      `UPDATE webhook_deliveries SET owner = $1, lease_until_ms = $2
       WHERE seq IN (
         SELECT seq FROM webhook_deliveries
         WHERE state = 'pending' AND next_at_ms <= $3 AND (lease_until_ms IS NULL OR lease_until_ms <= $3)
         ORDER BY next_at_ms, seq LIMIT $4
         FOR UPDATE SKIP LOCKED
       )
       RETURNING seq, ${DELIVERY_COLUMNS}`,
      [owner, now + ms(leaseMs), now, max],
    );
    rows.sort((a, b) => Number(a.next_at_ms) - Number(b.next_at_ms) || Number(a.seq) - Number(b.seq));
    return rows.map(dueDelivery);
  }

  async delivered(id: string, nowMs: number, httpStatus: number): Promise<void> {
    await this.finish(id, ms(nowMs), 'delivered', null, null, httpStatus);
  }

  async failed(id: string, nowMs: number, outcome: { nextAtMs: number | null; error: string; httpStatus: number | null }): Promise<void> {
    const nextAtMs = outcome.nextAtMs === null ? null : ms(outcome.nextAtMs);
    await this.finish(id, ms(nowMs), nextAtMs === null ? 'failed' : 'pending', nextAtMs, errorText(outcome.error), outcome.httpStatus);
  }

  async get(id: string): Promise<StoredDelivery | undefined> {
    if (hasNul(id)) return undefined;
    const { rows } = await this.pool.query<DeliveryRow>(`SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1`, [id]);
    const row = rows[0];
    return row === undefined ? undefined : delivery(row);
  }

  /**
   * Records an attempt, and when the delivery ends, its batch's webhook state with it. A delivery
   * ends once: a late answer for one that ended already (its lease ran out and another node
   * delivered it) changes nothing.
   */
  private async finish(id: string, now: number, state: WebhookState, nextAtMs: number | null, error: string | null, httpStatus: number | null): Promise<void> {
    if (hasNul(id)) return;
    await this.pool.query(
      `WITH d AS (
         UPDATE webhook_deliveries SET
           attempts = attempts + 1,
           state = $3,
           next_at_ms = COALESCE($4::bigint, next_at_ms),
           last_error = $5,
           last_status = $6,
           owner = NULL,
           lease_until_ms = NULL,
           finished_at_ms = CASE WHEN $3 = 'pending' THEN NULL ELSE $2::bigint END
         WHERE id = $1 AND state = 'pending'
         RETURNING batch_id, state
       )
       UPDATE batches SET webhook_state = d.state FROM d
       WHERE batches.id = d.batch_id AND d.state <> 'pending' AND batches.webhook_url IS NOT NULL`,
      [id, now, state, nextAtMs, error, httpStatus],
    );
  }
}

export class PostgresWebhookSecrets implements WebhookSecrets {
  private readonly clock: Clock;

  constructor(
    private readonly pool: Pool,
    clock?: Clock,
  ) {
    this.clock = clock ?? { now: () => Date.now() };
  }

  async secret(tenant: string): Promise<Buffer> {
    if (hasNul(tenant)) throw new RangeError('a tenant name has no NUL');
    const stored = await this.read(tenant);
    if (stored !== undefined) return stored;
    // Another node may make it first (this insert then waits for it and does nothing): whichever
    // secret was stored is the one, read by a statement of its own that sees it committed.
    const { rows } = await this.pool.query<{ secret: Buffer }>(
      `INSERT INTO webhook_secrets (tenant, secret, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (tenant) DO NOTHING RETURNING secret`,
      [tenant, randomBytes(SECRET_BYTES), ms(this.clock.now())],
    );
    const made = rows[0]?.secret ?? (await this.read(tenant));
    if (made === undefined) throw new Error(`the webhook secret of ${tenant} was not stored`);
    return made;
  }

  async rotate(tenant: string): Promise<Buffer> {
    if (hasNul(tenant)) throw new RangeError('a tenant name has no NUL');
    const fresh = randomBytes(SECRET_BYTES);
    await this.pool.query(
      `INSERT INTO webhook_secrets (tenant, secret, created_at_ms) VALUES ($1, $2, $3)
       ON CONFLICT (tenant) DO UPDATE SET secret = excluded.secret, created_at_ms = excluded.created_at_ms`,
      [tenant, fresh, ms(this.clock.now())],
    );
    return fresh;
  }

  private async read(tenant: string): Promise<Buffer | undefined> {
    const { rows } = await this.pool.query<{ secret: Buffer }>('SELECT secret FROM webhook_secrets WHERE tenant = $1', [tenant]);
    return rows[0]?.secret;
  }
}
