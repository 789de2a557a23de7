// Tenant limits that hold across every API node of a cluster: the request rate (a token bucket) and
// the ceiling on executions in flight (leased places), each decided by one Lua script so that the
// read, the decision and the write are a single atomic step on the Redis server. Time is the
// server's own (TIME), so the API nodes' clocks never matter.
//
// Same semantics as the single-node versions (tenancy/rate-limiter.ts, core/concurrency.ts).
import type { Redis } from 'ioredis';
import { PyboxError } from '../core/errors.ts';
import type { RateDecision, RequestLimiter } from '../core/ports.ts';
export { tenantLimitError } from '../core/errors.ts';

const WINDOW_S = 60;

/** Lua: `now`, the Redis server's clock in ms, so the nodes' clocks never matter. Opens every script here that needs the time. */
export const REDIS_NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// KEYS[1] the bucket (a hash: tokens, at = server ms of the last take). ARGV[1] requests per minute.
// Returns { allowed 0|1, remaining, resetS, retryAfterS }, all integers (Lua numbers returned to
// Redis are truncated to integers, so rounding is done here).
const RATE_TAKE = `
${REDIS_NOW_MS}
local pm = tonumber(ARGV[1])
local perMs = pm / ${WINDOW_S * 1000}
local tokens = pm
local s = redis.call('HMGET', KEYS[1], 'tokens', 'at')
if s[1] and s[2] then
  local elapsed = now - tonumber(s[2])
  if elapsed < 0 then elapsed = 0 end
  -- Capped by today's limit: a lowered one applies at once, a raised one gifts no tokens.
  tokens = math.min(pm, tonumber(s[1]) + elapsed * perMs)
end
local allowed = 0
if tokens >= 1 then
  allowed = 1
  tokens = tokens - 1
end
local msToFull = (pm - tokens) / perMs
local msToNext = 0
if tokens < 1 then msToNext = (1 - tokens) / perMs end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', now)
-- Once full again the bucket holds nothing a fresh one lacks: let it go a window after that.
redis.call('PEXPIRE', KEYS[1], math.ceil(msToFull) + ${WINDOW_S * 1000})
local retry = math.ceil(msToNext / 1000)
if retry < 1 then retry = 1 end
return { allowed, math.floor(tokens), math.ceil(msToFull / 1000), retry }
`;

// Admission and renewal drop the tenant's expired leases first (score = lease expiry, server ms) and
// keep the set itself no longer than its last lease: a dead node's places free themselves.
const SWEEP = `
${REDIS_NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local function expireWithLastLease()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now)) end
end
`;

// KEYS[1] the tenant's leases. ARGV[1] execution id, ARGV[2] ceiling (-1: none), ARGV[3] lease ms.
// Returns { admitted 0|1, in flight }. An id already holding a place is admitted again (its
// lease renewed) without taking a second one, so a retried admit never counts twice. Any set of
// ids scored by their expiry takes places this way (the session directory's tenant sets too).
export const ADMIT = `${SWEEP}
local max = tonumber(ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held then
  if max >= 0 and count >= max then return { 0, count } end
  count = count + 1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
expireWithLastLease()
return { 1, count }
`;

// KEYS[1] the tenant's leases. ARGV[1] execution id, ARGV[2] lease ms. Returns 1 when the id still
// held its place (now extended), 0 when its lease had already expired or it was released.
const RENEW = `${SWEEP}
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
expireWithLastLease()
return 1
`;

// KEYS[1] the tenant's leases. Counts the live ones without writing (a read on any node).
export const COUNT = `
${REDIS_NOW_MS}
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
`;

export type Script = (...args: (string | number)[]) => Promise<unknown>;

/**
 * Registers `lua` on this connection as a command (sent by EVALSHA, loaded on NOSCRIPT) and returns
 * it. Names are pybox's own, so they stay clear of other users of the same connection.
 */
export function script(redis: Redis, name: string, keys: number, lua: string): Script {
  redis.defineCommand(name, { numberOfKeys: keys, lua });
  const fn: unknown = Reflect.get(redis, name);
  if (typeof fn !== 'function') throw new Error(`ioredis did not define the command ${name}`);
  return (...args) => Promise.resolve(Reflect.apply(fn, redis, args) as unknown);
}

function integers(reply: unknown, n: number, what: string): number[] {
  if (!Array.isArray(reply) || reply.length !== n || !reply.every((v) => Number.isSafeInteger(v))) {
    throw new Error(`unexpected reply from Redis for ${what}`);
  }
  return reply as number[];
}

/** Leases are short and renewed; a bound keeps every score and expiry a plain integer for Redis. */
const MAX_LEASE_MS = 86_400_000;

// Checked before a script runs: a script that fails half-way keeps its writes, so nothing it is
// given may make Redis refuse a later command in it.
function whole(v: number, what: string, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(v) || v < 1 || v > max) throw new RangeError(`${what} must be a whole number from 1 to ${max}, not ${v}`);
}

/** Requests per minute per key, one token bucket per key in Redis, shared by every API node. */
export class RedisRateLimiter implements RequestLimiter {
  private readonly takeScript: Script;

  constructor(
    redis: Redis,
    private readonly prefix: string,
  ) {
    this.takeScript = script(redis, 'pyboxRateTake', 1, RATE_TAKE);
  }

  async take(key: string, perMinute: number): Promise<RateDecision> {
    whole(perMinute, 'perMinute');
    const [allowed, remaining, resetS, retryAfterS] = integers(await away(this.takeScript(`${this.prefix}:rate:${key}`, perMinute)), 4, 'a rate limit') as [number, number, number, number];
    return {
      allowed: allowed === 1,
      retryAfterS,
      state: { policy: 'requests', quota: perMinute, remaining, resetS, windowS: WINDOW_S },
    };
  }
}

export interface Admission {
  tenant: string;
  /** The execution's id: the place it holds until released or its lease runs out. */
  id: string;
  /** The tenant's most executions in flight; null for no ceiling (places are still counted). */
  maxInFlight: number | null;
  /** How long the place is held without a renew: bounds what a node that died keeps taken. */
  leaseMs: number;
}

/** A tenant's executions in flight across the cluster, as leased places in Redis. */
export class RedisAdmission {
  private readonly admitScript: Script;
  private readonly renewScript: Script;
  private readonly countScript: Script;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.admitScript = script(redis, 'pyboxAdmit', 1, ADMIT);
    this.renewScript = script(redis, 'pyboxAdmitRenew', 1, RENEW);
    this.countScript = script(redis, 'pyboxAdmitCount', 1, COUNT);
  }

  private key(tenant: string): string {
    return `${this.prefix}:inflight:${tenant}`;
  }

  /** Takes a place for `a.id` unless the tenant is at its ceiling; `inFlight` counts this one when admitted. */
  async admit(a: Admission): Promise<{ admitted: boolean; inFlight: number }> {
    if (a.maxInFlight !== null && !(Number.isSafeInteger(a.maxInFlight) && a.maxInFlight >= 0)) {
      throw new RangeError(`maxInFlight must be a whole number >= 0 or null, not ${a.maxInFlight}`);
    }
    whole(a.leaseMs, 'leaseMs', MAX_LEASE_MS);
    const reply = await away(this.admitScript(this.key(a.tenant), a.id, a.maxInFlight ?? -1, a.leaseMs));
    const [admitted, inFlight] = integers(reply, 2, 'an admission') as [number, number];
    return { admitted: admitted === 1, inFlight };
  }

  async release(tenant: string, id: string): Promise<void> {
    await this.redis.zrem(this.key(tenant), id);
  }

  /** Extends a held place's lease to `leaseMs` from now. False when it was no longer held. */
  async renew(tenant: string, id: string, leaseMs: number): Promise<boolean> {
    whole(leaseMs, 'leaseMs', MAX_LEASE_MS);
    return (await this.renewScript(this.key(tenant), id, leaseMs)) === 1;
  }

  /** The tenant's executions in flight now (live leases). */
  async inFlight(tenant: string): Promise<number> {
    const n = await this.countScript(this.key(tenant));
    if (!Number.isSafeInteger(n)) throw new Error('unexpected reply from Redis for a count');
    return n as number;
  }
}

/** Retry-After while Redis is away: a restart or a failover takes seconds. */
export const REDIS_RETRY_S = 2;

/** A Redis command whose failure is Redis being away: the request gets 503 queue_unavailable, not 500. */
export async function away<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof RangeError || e instanceof PyboxError) throw e;
    throw new PyboxError('queue_unavailable', 'the cluster\'s Redis (queue and limits) does not answer; retry shortly', { retryAfterS: REDIS_RETRY_S, cause: e });
  }
}
