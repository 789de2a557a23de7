// The cluster's tenant limits against a real Redis: the token bucket and the leased places in
// flight, each from two limiter instances on two connections (two API nodes) at once. Without a
// Redis these tests fail: scripts/ensure-redis.sh starts one (or set PYBOX_TEST_REDIS_URL).
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisAdmission, RedisRateLimiter, tenantLimitError } from '../../src/cluster/redis-limits.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { RateLimiter } from '../../src/tenancy/rate-limiter.ts';
import { ManualClock } from '../unit/fakes.ts';

const url = process.env.PYBOX_TEST_REDIS_URL ?? 'redis://127.0.0.1:56379';
const prefix = `test-limits-${process.pid}-${randomBytes(4).toString('hex')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A connection that fails at once, rather than retrying forever, when nothing answers. */
async function connect(): Promise<Redis> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  try {
    await r.connect();
    await r.ping();
  } catch (e) {
    r.disconnect();
    throw new Error(`no Redis answers at ${url} (run scripts/ensure-redis.sh, or set PYBOX_TEST_REDIS_URL): ${String(e)}`);
  }
  return r;
}

/** Redis's own clock, in ms: what the scripts refill by. */
async function serverMs(r: Redis): Promise<number> {
  const [s, us] = await r.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

let tenantSeq = 0;
const tenant = () => `tenant-${++tenantSeq}`;

describe('Redis limits', () => {
  // Connected on first use by each test (not in a hook), so without a Redis every test fails
  // rather than being reported as skipped.
  let pair: Promise<{ a: Redis; b: Redis }> | undefined;
  const redis = () =>
    (pair ??= (async () => {
      const a = await connect();
      try {
        return { a, b: await connect() };
      } catch (e) {
        a.disconnect();
        throw e;
      }
    })());

  afterAll(async () => {
    const conns = await pair?.catch(() => undefined);
    if (!conns) return;
    const { a, b } = conns;
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await a.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    if (keys.length > 0) await a.del(...keys);
    expect(await a.keys(`${prefix}:*`)).toEqual([]);
    a.disconnect();
    b.disconnect();
  });

  describe('RedisRateLimiter', () => {
    it('allows a burst of the whole minute, then refuses with Retry-After and RateLimit state', async () => {
      const { a } = await redis();
      const limiter = new RedisRateLimiter(a, prefix);
      const t = tenant();
      const first = await limiter.take(t, 3);
      expect(first).toMatchObject({ allowed: true, state: { policy: 'requests', quota: 3, remaining: 2, resetS: 20, windowS: 60 } });
      expect(await limiter.take(t, 3)).toMatchObject({ allowed: true, state: { remaining: 1, resetS: 40 } });
      expect(await limiter.take(t, 3)).toMatchObject({ allowed: true, state: { remaining: 0, resetS: 60 } });
      const refused = await limiter.take(t, 3);
      expect(refused).toEqual({ allowed: false, retryAfterS: 20, state: { policy: 'requests', quota: 3, remaining: 0, resetS: 60, windowS: 60 } });
      // Another tenant has a bucket of its own.
      expect((await limiter.take(tenant(), 3)).allowed).toBe(true);
    });

    it('decides as the in-memory limiter does, field by field, for a burst past the quota', async () => {
      const { a } = await redis();
      const limiter = new RedisRateLimiter(a, prefix);
      const memory = new RateLimiter(new ManualClock());
      const t = tenant();
      // 6 a minute: every figure is a whole number of seconds, so the milliseconds that pass in
      // Redis between takes (under a second in all) round to the same ones.
      for (let i = 0; i < 8; i++) expect(await limiter.take(t, 6)).toEqual(memory.takeNow(t, 6));
    });

    it('gives one request back every 60/N seconds, by the server clock', async () => {
      const { a } = await redis();
      const limiter = new RedisRateLimiter(a, prefix);
      const t = tenant();
      // 600 a minute: one back every 100 ms.
      const burst = await Promise.all(Array.from({ length: 610 }, () => limiter.take(t, 600)));
      const allowed = burst.filter((d) => d.allowed).length;
      expect(allowed).toBeGreaterThanOrEqual(600);
      // From before the bucket is seen empty, so the time it refills by is all within `elapsed`.
      const from = await serverMs(a);
      let refused = await limiter.take(t, 600);
      while (refused.allowed) refused = await limiter.take(t, 600); // whatever refilled meanwhile
      expect(refused).toMatchObject({ allowed: false, retryAfterS: 1, state: { remaining: 0 } });
      await sleep(350);
      const again = await Promise.all(Array.from({ length: 20 }, () => limiter.take(t, 600)));
      const elapsed = (await serverMs(a)) - from;
      const regained = again.filter((d) => d.allowed).length;
      expect(regained).toBeGreaterThanOrEqual(3);
      // Never more than the time since it was empty pays for, plus the part of one it then held.
      expect(regained).toBeLessThanOrEqual(Math.floor(elapsed / 100) + 1);
    });

    it('applies a lowered limit at once, and a raised one without a gift of tokens', async () => {
      const { a } = await redis();
      const limiter = new RedisRateLimiter(a, prefix);
      const t = tenant();
      for (let i = 0; i < 5; i++) expect((await limiter.take(t, 10)).allowed).toBe(true); // 5 left of 10
      expect(await limiter.take(t, 2)).toMatchObject({ allowed: true, state: { quota: 2, remaining: 1 } });
      expect(await limiter.take(t, 100)).toMatchObject({ allowed: true, state: { quota: 100, remaining: 0 } });
      expect(await limiter.take(t, 100)).toMatchObject({ allowed: false, state: { remaining: 0 } });
    });

    it('never allows more than the quota across two API nodes under 200 concurrent takes', async () => {
      const { a, b } = await redis();
      const nodes = [new RedisRateLimiter(a, prefix), new RedisRateLimiter(b, prefix)];
      const t = tenant();
      const from = await serverMs(a);
      const decisions = await Promise.all(Array.from({ length: 200 }, (_, i) => (nodes[i % 2] as RedisRateLimiter).take(t, 50)));
      const elapsed = (await serverMs(a)) - from;
      const allowed = decisions.filter((d) => d.allowed).length;
      expect(allowed).toBeGreaterThanOrEqual(50);
      // 50 a minute regains one every 1.2 s: only a very slow run may see one more.
      expect(allowed).toBeLessThanOrEqual(50 + Math.floor(elapsed / 1200));
      for (const d of decisions.filter((x) => !x.allowed)) expect(d.retryAfterS).toBeGreaterThanOrEqual(1);
    });

    it('lets an idle bucket expire about a window after it would be full again', async () => {
      const { a } = await redis();
      const limiter = new RedisRateLimiter(a, prefix);
      const t = tenant();
      await limiter.take(t, 600); // full again in 100 ms
      const ttl = await a.pttl(`${prefix}:rate:${t}`);
      expect(ttl).toBeGreaterThan(55_000);
      expect(ttl).toBeLessThanOrEqual(60_100);
    });

    it('refuses a limit that is not a whole number of requests', async () => {
      const { a } = await redis();
      const limiter = new RedisRateLimiter(a, prefix);
      for (const bad of [0, -1, 0.5, Number.NaN, Number.POSITIVE_INFINITY]) await expect(limiter.take(tenant(), bad)).rejects.toThrow(RangeError);
    });
  });

  describe('RedisAdmission', () => {
    it('holds the ceiling across two API nodes under concurrency, and counts this one when admitted', async () => {
      const { a, b } = await redis();
      const nodes = [new RedisAdmission(a, prefix), new RedisAdmission(b, prefix)];
      const t = tenant();
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => (nodes[i % 2] as RedisAdmission).admit({ tenant: t, id: `x${i}`, maxInFlight: 3, leaseMs: 60_000 })),
      );
      const admitted = results.filter((r) => r.admitted);
      expect(admitted).toHaveLength(3);
      expect(admitted.map((r) => r.inFlight).sort()).toEqual([1, 2, 3]);
      for (const r of results.filter((x) => !x.admitted)) expect(r.inFlight).toBe(3);
      expect(await (nodes[1] as RedisAdmission).inFlight(t)).toBe(3);
    });

    it('frees a place on release, on either node', async () => {
      const { a, b } = await redis();
      const one = new RedisAdmission(a, prefix);
      const two = new RedisAdmission(b, prefix);
      const t = tenant();
      expect(await one.admit({ tenant: t, id: 'p', maxInFlight: 2, leaseMs: 60_000 })).toEqual({ admitted: true, inFlight: 1 });
      expect(await two.admit({ tenant: t, id: 'q', maxInFlight: 2, leaseMs: 60_000 })).toEqual({ admitted: true, inFlight: 2 });
      expect(await one.admit({ tenant: t, id: 'r', maxInFlight: 2, leaseMs: 60_000 })).toEqual({ admitted: false, inFlight: 2 });
      await two.release(t, 'p');
      await two.release(t, 'nobody'); // an unknown id frees nothing
      expect(await one.inFlight(t)).toBe(1);
      expect(await one.admit({ tenant: t, id: 'r', maxInFlight: 2, leaseMs: 60_000 })).toEqual({ admitted: true, inFlight: 2 });
      expect(await one.admit({ tenant: t, id: 's', maxInFlight: 2, leaseMs: 60_000 })).toEqual({ admitted: false, inFlight: 2 });
    });

    it('frees the place of an expired lease without a release, and drops the set with its last lease', async () => {
      const { a } = await redis();
      const admission = new RedisAdmission(a, prefix);
      const t = tenant();
      // Leases of half a second: long enough for the next call to come while it holds, on a busy machine.
      expect(await admission.admit({ tenant: t, id: 'dead-node', maxInFlight: 1, leaseMs: 500 })).toEqual({ admitted: true, inFlight: 1 });
      expect(await admission.admit({ tenant: t, id: 'next', maxInFlight: 1, leaseMs: 500 })).toEqual({ admitted: false, inFlight: 1 });
      await sleep(600);
      expect(await admission.inFlight(t)).toBe(0);
      expect(await a.exists(`${prefix}:inflight:${t}`)).toBe(0);
      expect(await admission.admit({ tenant: t, id: 'next', maxInFlight: 1, leaseMs: 60_000 })).toEqual({ admitted: true, inFlight: 1 });
      // The set lives as long as its longest lease.
      expect(await a.pttl(`${prefix}:inflight:${t}`)).toBeGreaterThan(55_000);
    });

    it('keeps a renewed lease past its first expiry, and renews nothing it does not hold', async () => {
      const { a } = await redis();
      const admission = new RedisAdmission(a, prefix);
      const t = tenant();
      expect((await admission.admit({ tenant: t, id: 'long', maxInFlight: 1, leaseMs: 500 })).admitted).toBe(true);
      expect(await admission.renew(t, 'long', 60_000)).toBe(true);
      await sleep(600);
      expect(await admission.inFlight(t)).toBe(1);
      expect((await admission.admit({ tenant: t, id: 'other', maxInFlight: 1, leaseMs: 60_000 })).admitted).toBe(false);
      expect(await admission.renew(t, 'other', 60_000)).toBe(false);
      expect(await admission.inFlight(t)).toBe(1);
      // An expired lease cannot be renewed back: its place may already be someone else's.
      expect((await admission.admit({ tenant: t, id: 'short', maxInFlight: null, leaseMs: 100 })).admitted).toBe(true);
      await sleep(200);
      expect(await admission.renew(t, 'short', 60_000)).toBe(false);
      expect(await admission.inFlight(t)).toBe(1);
    });

    it('always admits without a ceiling, and counts', async () => {
      const { a, b } = await redis();
      const nodes = [new RedisAdmission(a, prefix), new RedisAdmission(b, prefix)];
      const t = tenant();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (nodes[i % 2] as RedisAdmission).admit({ tenant: t, id: `n${i}`, maxInFlight: null, leaseMs: 60_000 })),
      );
      expect(results.every((r) => r.admitted)).toBe(true);
      expect(results.map((r) => r.inFlight).sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(await nodes[0]?.inFlight(t)).toBe(20);
      expect(await nodes[0]?.inFlight(tenant())).toBe(0);
    });

    it('counts an id admitted twice once', async () => {
      const { a } = await redis();
      const admission = new RedisAdmission(a, prefix);
      const t = tenant();
      expect(await admission.admit({ tenant: t, id: 'same', maxInFlight: 1, leaseMs: 60_000 })).toEqual({ admitted: true, inFlight: 1 });
      expect(await admission.admit({ tenant: t, id: 'same', maxInFlight: 1, leaseMs: 60_000 })).toEqual({ admitted: true, inFlight: 1 });
      expect(await admission.inFlight(t)).toBe(1);
    });

    it('refuses a ceiling or lease that makes no sense', async () => {
      const { a } = await redis();
      const admission = new RedisAdmission(a, prefix);
      await expect(admission.admit({ tenant: tenant(), id: 'x', maxInFlight: -1, leaseMs: 1000 })).rejects.toThrow(RangeError);
      await expect(admission.admit({ tenant: tenant(), id: 'x', maxInFlight: 1.5, leaseMs: 1000 })).rejects.toThrow(RangeError);
      await expect(admission.admit({ tenant: tenant(), id: 'x', maxInFlight: 1, leaseMs: 0 })).rejects.toThrow(RangeError);
      await expect(admission.admit({ tenant: tenant(), id: 'x', maxInFlight: 1, leaseMs: 1e300 })).rejects.toThrow(RangeError);
      await expect(admission.renew(tenant(), 'x', Number.NaN)).rejects.toThrow(RangeError);
    });
  });
});

describe('tenantLimitError', () => {
  it("is the very 429 the single node's gate throws at a tenant's ceiling", async () => {
    const gate = new ConcurrencyGate(4, 4, 7);
    let release!: () => void;
    const running = gate.run(() => new Promise<void>((r) => (release = r)), { tenant: 't', maxInFlight: 1 });
    const refused = await gate.run(async () => undefined, { tenant: 't', maxInFlight: 1 }).catch((e: unknown) => e);
    release();
    await running;
    expect(refused).toBeInstanceOf(PyboxError);
    const built = tenantLimitError(1, 7);
    const fields = (e: PyboxError) => ({ code: e.code, message: e.message, details: e.details, retryAfterS: e.retryAfterS, rateLimit: e.rateLimit });
    expect(fields(refused as PyboxError)).toEqual(fields(built));
    expect(fields(built)).toEqual({
      code: 'rate_limited',
      message: 'this tenant already has 1 execution(s) running or waiting, its limit',
      details: { limit: 'concurrency', maxConcurrency: 1 },
      retryAfterS: 7,
      rateLimit: { policy: 'concurrency', quota: 1, remaining: 0, resetS: 7 },
    });
  });
});
