// The servers cluster tests use, as scripts/ensure-postgres.sh, ensure-redis.sh and
// ensure-engine-b.sh start them (`npm test` runs `scripts/setup.sh test` first). Each test works in
// a database and a Redis key prefix of its own and removes them at the end, so test files can run
// in parallel, and beside other checkouts' runs, on the same servers.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { Redis } from 'ioredis';

export const SECOND_ENGINE_HOST = 'unix:///var/run/docker-b.sock';
/** Where `scripts/setup.sh test` lists the servers it started (not those it found running). */
export const STARTED_LEDGER = '/var/lib/pybox/test-started';

function portFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d{1,5}$/.test(raw)) throw new Error(`${name} must be a port number, not '${raw}'`);
  return Number(raw);
}

/** The PostgreSQL superuser URL the tests use (PYBOX_TEST_POSTGRES_URL overrides the script's). */
export function postgresUrl(): string {
  return process.env.PYBOX_TEST_POSTGRES_URL || `postgres://pybox:pybox@127.0.0.1:${portFromEnv('PYBOX_PG_PORT', 55432)}/pybox`;
}

/** The Redis URL the tests use (PYBOX_TEST_REDIS_URL overrides the script's). */
export function redisUrl(): string {
  return process.env.PYBOX_TEST_REDIS_URL || `redis://127.0.0.1:${portFromEnv('PYBOX_REDIS_PORT', 56379)}`;
}

export interface TestDatabase {
  /** Connects to the new database as the same user as postgresUrl(). */
  url: string;
  name: string;
  /** Drops it, closing whatever connections are still open to it. Safe to call twice. */
  drop(): Promise<void>;
}

async function asAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: postgresUrl() });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** An empty database of the test's own, on the server of postgresUrl(). */
export async function createTestDatabase(): Promise<TestDatabase> {
  // Hex only: the name goes into SQL as an identifier, which cannot be a bound parameter.
  const name = `pybox_t_${randomBytes(8).toString('hex')}`;
  await asAdmin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(postgresUrl());
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () => asAdmin(async (c) => void (await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))),
  };
}

/** A key prefix no other test uses, e.g. `pbxt:0f3a9c2b71d4:`. */
export function redisPrefix(): string {
  return `pbxt:${randomBytes(6).toString('hex')}:`;
}

/** `prefix` as a literal in a SCAN MATCH pattern. */
function globLiteral(prefix: string): string {
  return prefix.replace(/[\\*?[\]]/g, (c) => `\\${c}`);
}

/** Deletes every key that starts with `prefix` (SCAN + UNLINK: never KEYS, never FLUSHDB). Resolves with how many. */
export async function flushPrefix(url: string, prefix: string): Promise<number> {
  // An empty prefix would match the whole database, other tests' keys included.
  if (prefix.length < 4) throw new Error(`refusing to flush the short prefix '${prefix}'`);
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  try {
    let cursor = '0';
    let removed = 0;
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${globLiteral(prefix)}*`, 'COUNT', 1000);
      cursor = next;
      // MATCH is a pattern; the prefix test is exact.
      const ours = keys.filter((k) => k.startsWith(prefix));
      if (ours.length > 0) removed += await redis.unlink(...ours);
    } while (cursor !== '0');
    return removed;
  } finally {
    redis.disconnect();
  }
}

/**
 * The second Docker engine's URL (DOCKER_HOST form) when it answers, else undefined (as when
 * PYBOX_SECOND_ENGINE=0). Synchronous, so a describe block can be skipped with it.
 */
export function secondEngineHost(): string | undefined {
  if (process.env.PYBOX_SECOND_ENGINE === '0') return undefined;
  const r = spawnSync('docker', ['version', '--format', '{{.Server.Version}}'], {
    env: { ...process.env, DOCKER_HOST: SECOND_ENGINE_HOST },
    stdio: 'ignore',
    timeout: 10_000,
  });
  return r.status === 0 ? SECOND_ENGINE_HOST : undefined;
}
