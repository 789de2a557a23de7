// Takes due webhook deliveries from the outbox and makes the calls, on every api/all node. A
// delivery is leased while it is tried, so nodes share the work and one that dies only delays
// its deliveries (their leases run out). Delivery is at least once: a receiver drops repeats by
// the Pybox-Webhook-Id header, which is the same on every try of one delivery.
import type { Clock, Logger, WebhookDelivery, WebhookOutbox, WebhookSecrets } from '../core/ports.ts';
import type { PolicyDecision } from './address-policy.ts';
import { webhookHeaders } from './signature.ts';
import { httpTransport, WebhookTimeoutError, type WebhookTransport } from './transport.ts';

/** The first retry waits this long; each one after waits twice the one before. */
const FIRST_RETRY_MS = 1000;
/** No wait between tries is longer. */
const MAX_RETRY_MS = 3_600_000;

/** How long to wait before try `attempt + 1`, after try `attempt` (from 1) failed: doubling, ±20% so retries spread. */
export function retryDelayMs(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(FIRST_RETRY_MS * 2 ** Math.max(0, attempt - 1), MAX_RETRY_MS);
  return Math.round(base * (0.8 + 0.4 * random()));
}

export type SettledState = 'delivered' | 'failed';

export interface WebhookDelivererDeps {
  outbox: WebhookOutbox;
  secrets: WebhookSecrets;
  /** Judges the URL and says which addresses to connect to (AddressPolicy). */
  policy: { check(url: string): Promise<PolicyDecision> };
  /** webhooks.timeoutMs (one try, lookup included) and webhooks.maxAttempts. */
  config: { timeoutMs: number; maxAttempts: number };
  clock: Clock;
  logger: Logger;
  /** This node's id: the outbox's lease owner. */
  owner: string;
  /** Makes the HTTP call; httpTransport() unless a test hands in another. */
  transport?: WebhookTransport;
  /**
   * Told once a delivery is delivered or given up for good. The batch's webhook state needs no hook:
   * the outbox's delivered/failed set it in the same transaction.
   */
  onSettled?: (delivery: WebhookDelivery, state: SettledState) => void | Promise<void>;
  /** How often the outbox is asked for due deliveries when nobody wakes the loop (default 1000 ms). */
  pollMs?: number;
  /** Calls in flight at once on this node (default 4). */
  concurrency?: number;
  /** For the jitter of retry waits (default Math.random). */
  random?: () => number;
}

type TryOutcome = { ok: true; status: number } | { ok: false; permanent: boolean; error: string; status: number | null };

interface InFlight {
  abort: AbortController;
  done: Promise<void>;
}

const MAX_ERROR_CHARS = 300;

export class WebhookDeliverer {
  private readonly transport: WebhookTransport;
  private readonly pollMs: number;
  private readonly concurrency: number;
  private readonly random: () => number;
  private readonly leaseMs: number;
  private readonly inFlight = new Map<number, InFlight>();
  private nextKey = 0;
  private loopDone: Promise<void> | null = null;
  private stopping = false;
  private woken = false;
  private waiter: (() => void) | null = null;

  constructor(private readonly deps: WebhookDelivererDeps) {
    this.transport = deps.transport ?? httpTransport();
    this.pollMs = deps.pollMs ?? 1000;
    this.concurrency = Math.max(1, deps.concurrency ?? 4);
    this.random = deps.random ?? Math.random;
    // A try ends by timeoutMs (the lookup shares it); the rest is room for the outbox and the secret.
    this.leaseMs = deps.config.timeoutMs * 2;
  }

  start(): void {
    if (this.loopDone !== null) return;
    this.stopping = false;
    this.loopDone = this.loop().catch((e: unknown) => this.deps.logger.error('webhook deliverer stopped by an error', { error: describe(e) }));
  }

  /** Something was enqueued (or may be due): look now instead of at the next poll. */
  wake(): void {
    if (this.waiter) this.waiter();
    else this.woken = true;
  }

  /**
   * Stops claiming, waits up to graceMs (default webhooks.timeoutMs) for the calls in flight, then
   * abandons the rest unrecorded: their leases run out and they are tried again (maybe elsewhere).
   */
  async stop(opts: { graceMs?: number } = {}): Promise<void> {
    if (this.loopDone === null) return;
    this.stopping = true;
    this.wake();
    await this.loopDone;
    const settledAll = (): Promise<unknown> => Promise.allSettled([...this.inFlight.values()].map((f) => f.done));
    if (!(await within(settledAll(), opts.graceMs ?? this.deps.config.timeoutMs))) {
      this.deps.logger.warn('webhook calls abandoned at stop', { count: this.inFlight.size });
      for (const f of this.inFlight.values()) f.abort.abort();
      await within(settledAll(), 1000);
    }
    this.loopDone = null;
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      const room = this.concurrency - this.inFlight.size;
      let more = false;
      if (room > 0) {
        try {
          const due = await this.deps.outbox.claimDue(this.deps.owner, this.deps.clock.now(), room, this.leaseMs);
          // Claimed while stopping: left to their leases rather than holding up the stop.
          if (this.stopping) break;
          for (const d of due) this.launch(d);
          more = due.length === room;
        } catch (e) {
          this.deps.logger.error('webhook outbox claim failed', { error: describe(e) });
        }
      }
      if (!more) await this.idle();
    }
  }

  private idle(): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiter = null;
        resolve();
      };
      const timer = setTimeout(done, this.pollMs);
      timer.unref();
      this.waiter = done;
    });
  }

  private launch(d: WebhookDelivery): void {
    const key = this.nextKey++;
    const abort = new AbortController();
    const done = this.deliver(d, abort.signal)
      .catch((e: unknown) => this.deps.logger.error('webhook delivery left for its lease to run out', { deliveryId: d.id, tenant: d.tenant, error: describe(e) }))
      .finally(() => {
        this.inFlight.delete(key);
        this.wake();
      });
    this.inFlight.set(key, { abort, done });
  }

  private async deliver(d: WebhookDelivery, signal: AbortSignal): Promise<void> {
    const attempt = d.attempts + 1;
    const outcome = await this.try(d, signal);
    if (signal.aborted) return;
    const now = this.deps.clock.now();
    const fields = { deliveryId: d.id, tenant: d.tenant, batchId: d.batchId, host: hostForLog(d.url), attempt };
    if (outcome.ok) {
      await this.deps.outbox.delivered(d.id, now, outcome.status);
      this.deps.logger.info('webhook delivered', { ...fields, httpStatus: outcome.status });
      await this.settled(d, 'delivered');
      return;
    }
    const final = outcome.permanent || attempt >= this.deps.config.maxAttempts;
    const nextAtMs = final ? null : now + retryDelayMs(attempt, this.random);
    await this.deps.outbox.failed(d.id, now, { nextAtMs, error: outcome.error, httpStatus: outcome.status });
    this.deps.logger.warn(final ? 'webhook failed for good' : 'webhook failed, will retry', { ...fields, httpStatus: outcome.status, error: outcome.error, nextAtMs });
    if (final) await this.settled(d, 'failed');
  }

  /** One try. Throws only when pybox itself failed (the secret could not be read): that is no try. */
  private async try(d: WebhookDelivery, signal: AbortSignal): Promise<TryOutcome> {
    const { timeoutMs } = this.deps.config;
    const started = performance.now();
    let decision: PolicyDecision;
    try {
      const judged = await within(this.deps.policy.check(d.url), timeoutMs);
      if (judged === null) return { ok: false, permanent: false, error: `the host's addresses were not found within ${timeoutMs} ms`, status: null };
      decision = judged;
    } catch (e) {
      return { ok: false, permanent: false, error: `checking the address failed: ${describe(e)}`, status: null };
    }
    if (!decision.allowed) return { ok: false, permanent: decision.permanent, error: `refused: ${decision.reason}`, status: null };
    const secret = await this.deps.secrets.secret(d.tenant);
    const headers = {
      ...webhookHeaders({ id: d.id, secret, timestampS: Math.floor(this.deps.clock.now() / 1000), body: d.body }),
      'User-Agent': 'pybox-webhook/1',
    };
    const left = Math.max(1, Math.round(timeoutMs - (performance.now() - started)));
    let status: number;
    try {
      ({ status } = await this.transport({ url: decision.url, addresses: decision.addresses, headers, body: d.body, timeoutMs: left, signal }));
    } catch (e) {
      return { ok: false, permanent: false, error: e instanceof WebhookTimeoutError ? `no answer within ${timeoutMs} ms` : describe(e), status: null };
    }
    if (status >= 200 && status < 300) return { ok: true, status };
    if (status >= 300 && status < 400) return { ok: false, permanent: false, error: `answered ${status}; redirects are not followed`, status };
    return { ok: false, permanent: false, error: `answered ${status}`, status };
  }

  private async settled(d: WebhookDelivery, state: SettledState): Promise<void> {
    if (!this.deps.onSettled) return;
    try {
      await this.deps.onSettled(d, state);
    } catch (e) {
      this.deps.logger.error('webhook settled callback failed', { deliveryId: d.id, state, error: describe(e) });
    }
  }
}

/** The promise's value, or null if it takes longer than ms (it is not stopped). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The host only: a webhook URL's path or query may carry the receiver's token. */
function hostForLog(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '(bad URL)';
  }
}

function describe(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.length > MAX_ERROR_CHARS ? `${text.slice(0, MAX_ERROR_CHARS)}…` : text;
}
