// Requests per minute per tenant, as token buckets: a tenant may burst up to its whole minute's
// quota at once, and regains one request every 60/N seconds. In memory, for one node; a cluster counts in Redis (cluster/redis-limits.ts).
import type { Clock, RateDecision, RequestLimiter } from '../core/ports.ts';

interface Bucket {
  tokens: number;
  atMs: number;
  perMinute: number;
}


const WINDOW_S = 60;
/** Full buckets are dropped when the map grows past this (they carry no state a new one lacks). */
const SWEEP_AT = 10_000;

export class RateLimiter implements RequestLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly clock: Clock) {}

  /** Takes one request from `key`'s bucket if there is one to take. */
  async take(key: string, perMinute: number): Promise<RateDecision> {
    return this.takeNow(key, perMinute);
  }

  takeNow(key: string, perMinute: number): RateDecision {
    const now = this.clock.now();
    const perMs = perMinute / (WINDOW_S * 1000);
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= SWEEP_AT) this.sweep(now);
      b = { tokens: perMinute, atMs: now, perMinute };
      this.buckets.set(key, b);
    }
    // A changed limit (keys create --rate-per-minute) applies at once, never as a gift of tokens.
    if (b.perMinute !== perMinute) {
      b.tokens = Math.min(b.tokens, perMinute);
      b.perMinute = perMinute;
    }
    b.tokens = Math.min(perMinute, b.tokens + Math.max(0, now - b.atMs) * perMs);
    b.atMs = now;
    const allowed = b.tokens >= 1;
    if (allowed) b.tokens -= 1;
    const msToFull = (perMinute - b.tokens) / perMs;
    const msToNext = b.tokens >= 1 ? 0 : (1 - b.tokens) / perMs;
    return {
      allowed,
      retryAfterS: Math.max(1, Math.ceil(msToNext / 1000)),
      state: { policy: 'requests', quota: perMinute, remaining: Math.floor(b.tokens), resetS: Math.ceil(msToFull / 1000), windowS: WINDOW_S },
    };
  }

  private sweep(now: number): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + (now - b.atMs) * (b.perMinute / (WINDOW_S * 1000)) >= b.perMinute) this.buckets.delete(key);
    }
  }
}
