// A global cap on executions running at once, with a bounded queue behind it, shared fairly by
// tenants. A full queue is refused at once (503 + Retry-After) rather than left to pile up: waiting
// forever "In Queue" is what users of other sandboxes complain about most.
//
// Fairness, in three rules:
// - Each tenant waits in a queue of its own. A freed slot goes to the waiting tenant with the fewest
//   executions running (max-min fair share of the slots); among equals, to the one served least
//   recently (round robin). So a tenant that floods the host gets its fair share of the slots, and
//   another tenant's requests start as soon as a slot frees instead of behind the whole flood.
//   Within a tenant, and with a single tenant, it is plain FIFO.
// - The queue's room is shared too: when it is full, a newcomer from a tenant with fewer waiting
//   requests displaces the newest waiter of the tenant with the most (who gets the 503 instead), so
//   a flood cannot lock others out of the queue either.
// - A tenant may have a ceiling on its executions in flight (running or waiting); over it, 429.
//
// A waiter whose signal aborts (its client went away, the service is shutting down) leaves the
// queue at once: its place and its share of the tenant's ceiling are free for the next request.
import { PyboxError, tenantLimitError } from './errors.ts';

export interface GateTicket {
  /** Whose execution this is; one shared queue when absent. */
  tenant?: string;
  /** The tenant's most executions in flight (running or waiting); null or absent for no ceiling. */
  maxInFlight?: number | null;
  /** Aborted when nobody wants the result any more: a waiter then leaves the queue (WaitCancelled). */
  signal?: AbortSignal | undefined;
}

/** Thrown by run() when the ticket's signal aborted before the task got a slot: the task never ran. */
export class WaitCancelled extends Error {
  constructor(readonly reason: unknown) {
    super('cancelled while waiting for an execution slot');
    this.name = 'WaitCancelled';
  }
}

interface Waiter {
  /** Arrival order, across tenants. */
  seq: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface TenantSlots {
  running: number;
  waiting: Waiter[];
  /** When it last got a slot (a grant counter); -1 if never since it was last idle. */
  lastGrant: number;
}

export class ConcurrencyGate {
  private running = 0;
  private queued = 0;
  private arrivals = 0;
  private grants = 0;
  /** Only tenants with something running or waiting, so the map stays as small as the load. */
  private readonly tenants = new Map<string, TenantSlots>();

  constructor(
    private readonly maxConcurrent: number,
    private readonly maxQueue: number,
    private readonly retryAfterS: number,
  ) {}

  get stats(): { running: number; queued: number } {
    return { running: this.running, queued: this.queued };
  }

  /** One tenant's share of the stats. */
  statsOf(tenant: string): { running: number; queued: number } {
    const t = this.tenants.get(tenant);
    return { running: t?.running ?? 0, queued: t?.waiting.length ?? 0 };
  }

  /** Resolves once nothing is running or waiting (for a graceful shutdown). */
  async idle(pollMs = 50): Promise<void> {
    while (this.running > 0 || this.queued > 0) await new Promise((r) => setTimeout(r, pollMs));
  }

  async run<T>(task: () => Promise<T>, ticket: GateTicket = {}): Promise<T> {
    const tenant = ticket.tenant ?? '';
    const { signal } = ticket;
    if (signal?.aborted) throw new WaitCancelled(signal.reason);
    await this.acquire(tenant, ticket.maxInFlight ?? null, signal);
    try {
      return await task();
    } finally {
      this.release(tenant);
    }
  }

  private slotsOf(tenant: string): TenantSlots {
    let t = this.tenants.get(tenant);
    if (!t) {
      t = { running: 0, waiting: [], lastGrant: -1 };
      this.tenants.set(tenant, t);
    }
    return t;
  }

  private forgetIfIdle(tenant: string): void {
    const t = this.tenants.get(tenant);
    if (t && t.running === 0 && t.waiting.length === 0) this.tenants.delete(tenant);
  }

  private queueFull(message: string): PyboxError {
    return new PyboxError('queue_full', message, { retryAfterS: this.retryAfterS });
  }

  private acquire(tenant: string, maxInFlight: number | null, signal: AbortSignal | undefined): Promise<void> {
    const t = this.slotsOf(tenant);
    if (maxInFlight !== null && t.running + t.waiting.length >= maxInFlight) {
      this.forgetIfIdle(tenant);
      return Promise.reject(tenantLimitError(maxInFlight, this.retryAfterS));
    }
    // A slot is only ever free while nobody waits: release() hands slots over directly.
    if (this.running < this.maxConcurrent) {
      this.running++;
      t.running++;
      t.lastGrant = this.grants++;
      return Promise.resolve();
    }
    if (this.queued >= this.maxQueue) {
      const heaviest = this.longestQueue();
      if (!heaviest || heaviest.waiting.length <= t.waiting.length + 1) {
        this.forgetIfIdle(tenant);
        return Promise.reject(this.queueFull(`all ${this.maxConcurrent} execution slots are busy and ${this.maxQueue} requests are waiting`));
      }
      // Its newest waiter makes room: the one that has waited least, of the tenant waiting most.
      const displaced = heaviest.waiting.pop() as Waiter;
      this.queued--;
      displaced.reject(this.queueFull(`all ${this.maxConcurrent} execution slots are busy and the queue is full; this tenant had the most requests waiting`));
    }
    return new Promise<void>((resolve, reject) => {
      if (!signal) {
        t.waiting.push({ seq: this.arrivals++, resolve, reject });
        this.queued++;
        return;
      }
      const onAbort = () => this.leave(tenant, waiter, new WaitCancelled(signal.reason));
      // Whichever way it leaves the queue (a slot, a displacement), the listener goes with it.
      const waiter: Waiter = {
        seq: this.arrivals++,
        resolve: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      t.waiting.push(waiter);
      this.queued++;
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Takes a waiter out of its tenant's queue (its signal aborted) and rejects it. */
  private leave(tenant: string, waiter: Waiter, why: unknown): void {
    const t = this.tenants.get(tenant);
    const i = t ? t.waiting.indexOf(waiter) : -1;
    if (!t || i < 0) return; // already granted or displaced
    t.waiting.splice(i, 1);
    this.queued--;
    this.forgetIfIdle(tenant);
    waiter.reject(why);
  }

  private release(tenant: string): void {
    const t = this.slotsOf(tenant);
    t.running--;
    this.running--;
    const next = this.nextTenant();
    if (next) {
      const waiter = next.waiting.shift() as Waiter;
      this.queued--;
      next.running++;
      next.lastGrant = this.grants++;
      this.running++;
      waiter.resolve();
    }
    this.forgetIfIdle(tenant);
  }

  /** The waiting tenant with the fewest running; among equals, the one served least recently, then the one whose head came first. */
  private nextTenant(): TenantSlots | undefined {
    let best: TenantSlots | undefined;
    for (const t of this.tenants.values()) {
      const head = t.waiting[0];
      if (!head) continue;
      if (!best || before(t, head, best, best.waiting[0] as Waiter)) best = t;
    }
    return best;
  }

  private longestQueue(): TenantSlots | undefined {
    let longest: TenantSlots | undefined;
    for (const t of this.tenants.values()) if (t.waiting.length > 0 && (!longest || t.waiting.length > longest.waiting.length)) longest = t;
    return longest;
  }
}

function before(a: TenantSlots, aHead: Waiter, b: TenantSlots, bHead: Waiter): boolean {
  if (a.running !== b.running) return a.running < b.running;
  if (a.lastGrant !== b.lastGrant) return a.lastGrant < b.lastGrant;
  return aHead.seq < bHead.seq;
}
