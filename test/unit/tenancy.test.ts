// API keys, the authenticator, the request-rate limiter and the local-mode listen check.
import { describe, expect, it } from 'vitest';
import type { ApiKeyLookup, StoredApiKey } from '../../src/core/ports.ts';
import { NO_TENANT_LIMITS } from '../../src/core/caller.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { hashApiKey, KEY_FORMAT, KEY_ID_FORMAT, newApiKey, newKeyId } from '../../src/tenancy/keys.ts';
import { checkListenAddress, isLoopbackHost } from '../../src/tenancy/listen.ts';
import { RateLimiter } from '../../src/tenancy/rate-limiter.ts';
import { ManualClock } from './fakes.ts';

/** A key lookup that records every hash it is asked for. */
class RecordingKeys implements ApiKeyLookup {
  readonly lookups: Buffer[] = [];
  readonly rows = new Map<string, StoredApiKey>();
  hasKeysCalls = 0;

  add(key: string, over: Partial<StoredApiKey> = {}): StoredApiKey {
    const row: StoredApiKey = { id: newKeyId(), tenant: 'acme', admin: false, hash: hashApiKey(key), revokedAt: null, limits: NO_TENANT_LIMITS, ...over };
    this.rows.set(row.hash.toString('hex'), row);
    return row;
  }
  async hasKeys(): Promise<boolean> {
    this.hasKeysCalls++;
    return this.rows.size > 0;
  }
  async findKeyByHash(hash: Buffer): Promise<StoredApiKey | undefined> {
    this.lookups.push(hash);
    return this.rows.get(hash.toString('hex'));
  }
}

describe('API keys', () => {
  it('are pbx_ and 32 random bytes in base64url, with ids that reveal nothing of them', () => {
    const keys = new Set(Array.from({ length: 200 }, () => newApiKey()));
    expect(keys.size).toBe(200);
    for (const k of keys) {
      expect(k).toMatch(KEY_FORMAT);
      expect(Buffer.from(k.slice(4), 'base64url')).toHaveLength(32);
    }
    expect(newKeyId()).toMatch(KEY_ID_FORMAT);
  });

  it('hash to their SHA-256', () => {
    expect(hashApiKey('abc').toString('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'); // FIPS 180-2 test vector
    expect(hashApiKey('pbx_abc')).toHaveLength(32);
    expect(hashApiKey('pbx_abc').equals(hashApiKey('pbx_abc'))).toBe(true);
    expect(hashApiKey('pbx_abc').equals(hashApiKey('pbx_abd'))).toBe(false);
  });
});

describe('Authenticator', () => {
  const good = newApiKey();
  const revoked = newApiKey();
  const unknown = newApiKey();
  const setup = () => {
    const keys = new RecordingKeys();
    const row = keys.add(good, { tenant: 'acme', limits: { ...NO_TENANT_LIMITS, maxConcurrency: 3 } });
    keys.add(revoked, { revokedAt: '2025-01-01T00:00:00.000Z' });
    return { keys, row, auth: new Authenticator(keys) };
  };

  it('is not required until a key exists, and then for good (asked of the store until then only)', async () => {
    const keys = new RecordingKeys();
    const auth = new Authenticator(keys);
    expect(await auth.required()).toBe(false);
    expect(await auth.required()).toBe(false);
    keys.add(newApiKey(), { revokedAt: 'x' }); // even a revoked one: revoking every key must not reopen local mode
    expect(await auth.required()).toBe(true);
    const calls = keys.hasKeysCalls;
    keys.rows.clear();
    expect(await auth.required()).toBe(true);
    expect(keys.hasKeysCalls).toBe(calls);
  });

  it('asks the store once per request however many checks ask, and again for the next request', async () => {
    const keys = new RecordingKeys();
    const auth = new Authenticator(keys);
    const first = new Request('http://127.0.0.1/v1/executions');
    expect(await Promise.all([auth.required(first), auth.required(first)])).toEqual([false, false]);
    expect(await auth.required(first)).toBe(false);
    expect(keys.hasKeysCalls).toBe(1);
    // The first key ends local mode for the very next request.
    keys.add(newApiKey());
    const second = new Request('http://127.0.0.1/v1/executions');
    expect(await auth.required(second)).toBe(true);
    expect(keys.hasKeysCalls).toBe(2);
  });

  it('turns a valid bearer key into its tenant, key id, role and limits', async () => {
    const { auth, row } = setup();
    expect(await auth.authenticate(`Bearer ${good}`)).toEqual({ tenant: 'acme', keyId: row.id, admin: false, limits: { ...NO_TENANT_LIMITS, maxConcurrency: 3 } });
    expect((await auth.authenticate(`bearer   ${good}`))?.tenant).toBe('acme'); // the scheme is case-insensitive
  });

  const failures: Array<[string, string | undefined]> = [
    ['no header', undefined],
    ['an empty header', ''],
    ['another scheme', `Basic ${good}`],
    ['a bare key', good],
    ['a malformed key', 'Bearer pbx_short'],
    ['a key with a wrong prefix', `Bearer xyz_${good.slice(4)}`],
    ['a huge header', `Bearer ${'x'.repeat(20_000)}`],
    ['an unknown key', `Bearer ${unknown}`],
    ['a revoked key', `Bearer ${revoked}`],
    ['a valid key with trailing junk', `Bearer ${good}x`],
  ];

  it.each(failures)('refuses %s, after hashing and exactly one lookup by a 32-byte hash', async (_what, header) => {
    const { auth, keys } = setup();
    expect(await auth.authenticate(header)).toBeUndefined();
    expect(keys.lookups).toHaveLength(1);
    expect(keys.lookups[0]).toHaveLength(32);
  });

  it('takes about the same time whatever is wrong', async () => {
    const { auth } = setup();
    const kinds = failures.filter(([what]) => what !== 'a huge header').map(([, h]) => h);
    const rounds = 400;
    const samples = kinds.map(() => [] as number[]);
    for (let round = 0; round < rounds; round++) {
      // Interleaved, so drift of the machine hits every kind alike.
      for (const [i, header] of kinds.entries()) {
        const t = process.hrtime.bigint();
        await auth.authenticate(header);
        samples[i]?.push(Number(process.hrtime.bigint() - t));
      }
    }
    const medians = samples.map((s) => s.sort((a, b) => a - b)[Math.floor(s.length / 2)] ?? 0);
    // Each failure hashes once and looks up once: the medians stay within a small factor of each
    // other (a short-circuit on a malformed key would be ~100x faster than a hash and a lookup).
    expect(Math.max(...medians) / Math.min(...medians)).toBeLessThan(3);
  });
});

describe('RateLimiter', () => {
  it('allows a burst of the whole minute, then one more every 60/N seconds, with RateLimit state', async () => {
    const clock = new ManualClock();
    const limiter = new RateLimiter(clock);
    const first = await limiter.take('a', 3);
    expect(first).toMatchObject({ allowed: true, state: { policy: 'requests', quota: 3, remaining: 2, windowS: 60 } });
    expect(first.state.resetS).toBe(20); // one request used, regained in 20 s
    expect((await limiter.take('a', 3)).allowed).toBe(true);
    expect(await limiter.take('a', 3)).toMatchObject({ allowed: true, state: { remaining: 0, resetS: 60 } });
    const refused = await limiter.take('a', 3);
    expect(refused).toMatchObject({ allowed: false, retryAfterS: 20, state: { remaining: 0 } });
    clock.advance(19_000);
    expect(await limiter.take('a', 3)).toMatchObject({ allowed: false, retryAfterS: 1 });
    clock.advance(1_000);
    expect((await limiter.take('a', 3)).allowed).toBe(true);
    expect((await limiter.take('a', 3)).allowed).toBe(false);
  });

  it('keeps one bucket per tenant', async () => {
    const limiter = new RateLimiter(new ManualClock());
    expect((await limiter.take('a', 1)).allowed).toBe(true);
    expect((await limiter.take('a', 1)).allowed).toBe(false);
    expect((await limiter.take('b', 1)).allowed).toBe(true);
  });

  it('applies a lowered limit at once, and a raised one without a gift of tokens', async () => {
    const clock = new ManualClock();
    const limiter = new RateLimiter(clock);
    for (let i = 0; i < 5; i++) await limiter.take('a', 10); // 5 left of 10
    expect(await limiter.take('a', 2)).toMatchObject({ allowed: true, state: { remaining: 1 } });
    expect(await limiter.take('a', 100)).toMatchObject({ allowed: true, state: { remaining: 0 } });
    expect((await limiter.take('a', 100)).allowed).toBe(false);
  });
});

describe('local mode', () => {
  it.each(['127.0.0.1', '127.8.9.10', 'localhost', 'LOCALHOST', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'])('%s is loopback', (h) => {
    expect(isLoopbackHost(h)).toBe(true);
  });

  it.each(['0.0.0.0', '::', '10.0.0.5', '192.168.1.2', 'example.com', '::ffff:10.0.0.1', 'fe80::1', '128.0.0.1', '127.1'])('%s is not', (h) => {
    expect(isLoopbackHost(h)).toBe(false);
  });

  it('serves loopback without keys, refuses anything else without keys, and serves anything with keys', () => {
    expect(checkListenAddress('127.0.0.1', false)).toBe('local');
    expect(() => checkListenAddress('0.0.0.0', false)).toThrow(/refusing to listen on 0\.0\.0\.0: no API key exists.*local mode.*loopback only.*pybox keys create/);
    expect(checkListenAddress('0.0.0.0', true)).toBe('keys');
    expect(checkListenAddress('127.0.0.1', true)).toBe('keys');
  });
});
