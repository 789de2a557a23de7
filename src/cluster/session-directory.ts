// Where each session of the cluster lives, in Redis: an entry per session (its HostedSession, the
// worker holding it named in `node`) and two sorted sets of ids, one per tenant (listing and
// counting a tenant's sessions on any API node) and one of all. Each entry has an expiry the
// worker holding it renews every heartbeat, and each id in a set is scored with that same expiry,
// so the sessions of a worker that died drop out on their own. Time is the Redis server's (TIME),
// so the nodes' clocks never matter. A session being opened holds a place in its tenant's set, with
// no entry yet, so that every API node counts it against the tenant's cap from the start.
//
// Every entry read is parsed: anyone who can write to Redis can write one.
import type { Redis } from 'ioredis';
import type { Logger } from '../core/ports.ts';
import type { HostedSession } from '../core/sessions.ts';
import { ADMIT, COUNT, REDIS_NOW_MS, script, type Script } from './redis-limits.ts';
import { HostedRecord } from './session-wire.ts';

/** Most sessions read in one listing: far past any tenant's cap or any cluster's hosts. */
const MAX_LISTED = 10_000;
/** An entry is a few hundred bytes; anything much larger was not written by a node. */
const MAX_ENTRY_CHARS = 16 * 1024;

// KEYS[1] the entry, KEYS[2] the tenant's set, KEYS[3] the set of all. ARGV[1] the entry's JSON,
// ARGV[2] its time to live (ms), ARGV[3] the session id. Expired ids go first; each set lives as
// long as its last id.
const PUT = `
${REDIS_NOW_MS}
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[3])
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[i], math.max(1, tonumber(last[2]) - now))
end
return 1
`;

// KEYS[1] a set. ARGV[1] most ids. Drops the expired ids, returns the live ones.
const IDS = `
${REDIS_NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
`;

// KEYS[1] the tenant's set, KEYS[2] the session's entry. ARGV[1] its id. Gives a place back unless
// a worker filed the session meanwhile (an open whose answer was lost): that one keeps its place.
const UNRESERVE = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
`;

export interface SessionDirectoryDeps {
  redis: Redis;
  prefix: string;
  logger?: Logger | undefined;
}

export class SessionDirectory {
  private readonly putScript: Script;
  private readonly idsScript: Script;
  private readonly countScript: Script;
  private readonly reserveScript: Script;
  private readonly unreserveScript: Script;

  constructor(private readonly deps: SessionDirectoryDeps) {
    this.putScript = script(deps.redis, 'pyboxSessionPut', 3, PUT);
    this.idsScript = script(deps.redis, 'pyboxSessionIds', 1, IDS);
    this.countScript = script(deps.redis, 'pyboxSessionCount', 1, COUNT);
    // A place is taken as an execution's admission is: an id in a set scored by its expiry.
    this.reserveScript = script(deps.redis, 'pyboxSessionReserve', 1, ADMIT);
    this.unreserveScript = script(deps.redis, 'pyboxSessionUnreserve', 2, UNRESERVE);
  }

  private entryKey(id: string): string {
    return `${this.deps.prefix}:session:${id}`;
  }

  /** Tenant names never contain ':' nor equal 'all' with it, so the two kinds of set never meet. */
  private tenantKey(tenant: string): string {
    return `${this.deps.prefix}:sessions:t:${tenant}`;
  }

  private get allKey(): string {
    return `${this.deps.prefix}:sessions:all`;
  }

  /** Writes (or renews) a session's entry, to live `ttlMs` unless renewed. */
  async put(session: HostedSession, ttlMs: number): Promise<void> {
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > 86_400_000) throw new RangeError(`ttlMs must be a whole number from 1 to 86400000, not ${ttlMs}`);
    // Only the fields a reader knows, checked as a reader checks them.
    const entry = HostedRecord.parse(session);
    await this.putScript(this.entryKey(entry.id), this.tenantKey(entry.tenant), this.allKey, JSON.stringify(entry), ttlMs, entry.id);
  }

  /** The session's entry, or undefined when there is none (or it is not one a node wrote). */
  async get(id: string): Promise<HostedSession | undefined> {
    const text = await this.deps.redis.get(this.entryKey(id));
    return text === null ? undefined : this.parse(text, id);
  }

  async remove(session: Pick<HostedSession, 'id' | 'tenant'>): Promise<void> {
    await this.deps.redis.multi().del(this.entryKey(session.id)).zrem(this.tenantKey(session.tenant), session.id).zrem(this.allKey, session.id).exec();
  }

  /** The live sessions of a tenant, or (undefined) of every tenant. */
  async list(tenant?: string): Promise<HostedSession[]> {
    const ids = await this.idsScript(tenant === undefined ? this.allKey : this.tenantKey(tenant), MAX_LISTED);
    if (!Array.isArray(ids)) throw new Error('unexpected reply from Redis for a listing of sessions');
    const wanted = ids.filter((id): id is string => typeof id === 'string');
    if (wanted.length === 0) return [];
    const texts = await this.deps.redis.mget(...wanted.map((id) => this.entryKey(id)));
    const sessions: HostedSession[] = [];
    texts.forEach((text, i) => {
      if (text === null) return; // expired between the two reads
      const s = this.parse(text, wanted[i] as string);
      // An entry filed under another tenant's set is not that tenant's.
      if (s && (tenant === undefined || s.tenant === tenant)) sessions.push(s);
    });
    return sessions;
  }

  /**
   * Takes a place among a tenant's at most `max` sessions for session `id`, about to be opened, for
   * `ttlMs` unless its worker files it first: true, or false when the tenant has no place left. The
   * check and the take are one step in Redis, so API nodes opening sessions at once never give a
   * tenant more than `max` between them. Listings skip the place until the session is filed.
   */
  async reserve(tenant: string, id: string, max: number, ttlMs: number): Promise<boolean> {
    if (!Number.isSafeInteger(max) || max < 0) throw new RangeError(`max must be a whole number of 0 or more, not ${max}`);
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > 86_400_000) throw new RangeError(`ttlMs must be a whole number from 1 to 86400000, not ${ttlMs}`);
    const reply = await this.reserveScript(this.tenantKey(tenant), id, max, ttlMs);
    if (!Array.isArray(reply)) throw new Error('unexpected reply from Redis for a session place');
    return reply[0] === 1;
  }

  /** Gives back the place reserve() took, unless the session was filed meanwhile (then it is the session's). */
  async unreserve(tenant: string, id: string): Promise<void> {
    await this.unreserveScript(this.tenantKey(tenant), this.entryKey(id), id);
  }

  /** How many live sessions a tenant has (ids whose entries have not expired), places taken for those being opened included. */
  async count(tenant: string): Promise<number> {
    const n = await this.countScript(this.tenantKey(tenant));
    if (!Number.isSafeInteger(n)) throw new Error('unexpected reply from Redis for a count of sessions');
    return n as number;
  }

  private parse(text: string, id: string): HostedSession | undefined {
    let value: unknown;
    try {
      value = text.length > MAX_ENTRY_CHARS ? undefined : JSON.parse(text);
    } catch {
      value = undefined;
    }
    const parsed = HostedRecord.safeParse(value);
    // An entry under one id that names another is not trusted for either.
    if (parsed.success && parsed.data.id === id) return parsed.data;
    this.deps.logger?.warn('ignored a malformed session entry in Redis', { session: id });
    return undefined;
  }
}
