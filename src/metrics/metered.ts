// Decorators that report to the node's metrics around existing ports, so the parts they wrap stay
// unaware of metrics.
import type { Observer, RateDecision, RequestLimiter } from '../core/ports.ts';

/** Counts the refusals of a request limiter, by tenant (the limiter's key is the tenant). */
export class MeteredRequestLimiter implements RequestLimiter {
  constructor(
    private readonly inner: RequestLimiter,
    private readonly observer: Pick<Observer, 'rateLimited'>,
  ) {}

  async take(key: string, perMinute: number): Promise<RateDecision> {
    const decision = await this.inner.take(key, perMinute);
    if (!decision.allowed) this.observer.rateLimited(key);
    return decision;
  }
}
