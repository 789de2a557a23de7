// Webhook deliveries (an outbox, so retries survive a restart) and each tenant's signing secret,
// in SQLite. A delivery that ends also ends its batch's webhook state, in the same transaction.
import { randomBytes } from 'node:crypto';
import type { Statement, Transaction } from 'better-sqlite3';
import type { Clock, StoredDelivery, WebhookDelivery, WebhookOutbox, WebhookSecrets } from '../core/ports.ts';
import type { WebhookState } from '../core/schemas.ts';
import type { SqliteDatabase } from './db.ts';
import { DELIVERY_COLUMNS, SECRET_BYTES, checkMax, delivery, dueDelivery, endedBefore, errorText, ms, type DeliveryRow, type EndedRetention } from './job-codec.ts';

type Params = Record<string, string | number | null>;

export class SqliteWebhookOutbox implements WebhookOutbox {
  private readonly insert: Statement<[Params]>;
  private readonly due: Statement<[Params], DeliveryRow & { seq: number }>;
  private readonly lease: Statement<[Params]>;
  private readonly finish: Statement<[Params], { batch_id: string | null; state: string }>;
  private readonly followBatch: Statement<[string, string]>;
  private readonly byId: Statement<[string], DeliveryRow>;
  private readonly prune: Statement<[number]>;
  private readonly claimTx: Transaction<(owner: string, now: number, max: number, until: number) => WebhookDelivery[]>;
  private readonly finishTx: Transaction<(params: Params) => void>;

  /** `retention`: deliveries that ended longer ago than that are pruned as new ones are added. */
  constructor(
    db: SqliteDatabase,
    private readonly retention: EndedRetention = {},
  ) {
    endedBefore(retention, 0);
    this.insert = db.prepare(
      `INSERT INTO webhook_deliveries (id, tenant, url, batch_id, body, next_at_ms, created_at_ms)
       VALUES (@id, @tenant, @url, @batchId, @body, @now, @now)
       ON CONFLICT (id) DO NOTHING`,
    );
    this.due = db.prepare(
      `SELECT seq, ${DELIVERY_COLUMNS} FROM webhook_deliveries
       WHERE state = 'pending' AND next_at_ms <= @now AND (lease_until_ms IS NULL OR lease_until_ms <= @now)
       ORDER BY next_at_ms, seq LIMIT @max`,
    );
    this.lease = db.prepare('UPDATE webhook_deliveries SET owner = @owner, lease_until_ms = @until WHERE seq = @seq');
    // A delivery ends once: a late answer for one that ended already (its lease ran out and another
    // node delivered it) changes nothing.
    this.finish = db.prepare(
      `UPDATE webhook_deliveries SET
         attempts = attempts + 1,
         state = @state,
         next_at_ms = COALESCE(@nextAtMs, next_at_ms),
         last_error = @error,
         last_status = @status,
         owner = NULL,
         lease_until_ms = NULL,
         finished_at_ms = CASE WHEN @state = 'pending' THEN NULL ELSE @now END
       WHERE id = @id AND state = 'pending'
       RETURNING batch_id, state`,
    );
    this.followBatch = db.prepare('UPDATE batches SET webhook_state = ? WHERE id = ? AND webhook_url IS NOT NULL');
    this.byId = db.prepare(`SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?`);
    this.prune = db.prepare('DELETE FROM webhook_deliveries WHERE finished_at_ms < ?');
    this.claimTx = db.transaction((owner: string, now: number, max: number, until: number) => {
      const rows = this.due.all({ now, max });
      for (const row of rows) this.lease.run({ seq: row.seq, owner, until });
      return rows.map(dueDelivery);
    });
    this.finishTx = db.transaction((params: Params) => {
      const row = this.finish.get(params);
      if (row?.batch_id != null && row.state !== 'pending') this.followBatch.run(row.state, row.batch_id);
    });
  }

  async enqueue(d: Omit<WebhookDelivery, 'attempts' | 'nextAtMs'>, nowMs: number): Promise<void> {
    const before = endedBefore(this.retention, nowMs);
    if (before !== null) this.prune.run(before);
    this.insert.run({ id: d.id, tenant: d.tenant, url: d.url, batchId: d.batchId, body: d.body, now: ms(nowMs) });
  }

  async claimDue(owner: string, nowMs: number, max: number, leaseMs: number): Promise<WebhookDelivery[]> {
    checkMax(max);
    if (max === 0) return [];
    const now = ms(nowMs);
    // Read first, outside a write transaction: a poll that finds nothing due never waits on (or
    // holds) the database's write lock, which would block this whole process while another holds it.
    if (this.due.all({ now, max: 1 }).length === 0) return [];
    return this.claimTx.immediate(owner, now, max, now + ms(leaseMs));
  }

  async delivered(id: string, nowMs: number, httpStatus: number): Promise<void> {
    this.finishTx.immediate({ id, now: ms(nowMs), state: 'delivered', nextAtMs: null, error: null, status: httpStatus });
  }

  async failed(id: string, nowMs: number, outcome: { nextAtMs: number | null; error: string; httpStatus: number | null }): Promise<void> {
    const state: WebhookState = outcome.nextAtMs === null ? 'failed' : 'pending';
    this.finishTx.immediate({
      id,
      now: ms(nowMs),
      state,
      nextAtMs: outcome.nextAtMs === null ? null : ms(outcome.nextAtMs),
      error: errorText(outcome.error),
      status: outcome.httpStatus,
    });
  }

  async get(id: string): Promise<StoredDelivery | undefined> {
    const row = this.byId.get(id);
    return row === undefined ? undefined : delivery(row);
  }
}

export class SqliteWebhookSecrets implements WebhookSecrets {
  private readonly read: Statement<[string], Buffer>;
  private readonly make: Statement<[string, Buffer, number]>;
  private readonly replace: Statement<[string, Buffer, number]>;

  private readonly clock: Clock;

  constructor(db: SqliteDatabase, clock?: Clock) {
    this.clock = clock ?? { now: () => Date.now() };
    this.read = db.prepare<[string], Buffer>('SELECT secret FROM webhook_secrets WHERE tenant = ?').pluck();
    this.make = db.prepare('INSERT INTO webhook_secrets (tenant, secret, created_at_ms) VALUES (?, ?, ?) ON CONFLICT (tenant) DO NOTHING');
    this.replace = db.prepare(
      `INSERT INTO webhook_secrets (tenant, secret, created_at_ms) VALUES (?, ?, ?)
       ON CONFLICT (tenant) DO UPDATE SET secret = excluded.secret, created_at_ms = excluded.created_at_ms`,
    );
  }

  async secret(tenant: string): Promise<Buffer> {
    const stored = this.read.get(tenant);
    if (stored !== undefined) return stored;
    // Another process may make it first: whichever secret was stored is the one.
    this.make.run(tenant, randomBytes(SECRET_BYTES), ms(this.clock.now()));
    const made = this.read.get(tenant);
    if (made === undefined) throw new Error(`the webhook secret of ${tenant} was not stored`);
    return made;
  }

  async rotate(tenant: string): Promise<Buffer> {
    const fresh = randomBytes(SECRET_BYTES);
    this.replace.run(tenant, fresh, ms(this.clock.now()));
    return fresh;
  }
}
