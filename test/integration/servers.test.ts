// The servers cluster tests rely on answer, the test helpers clean up what they make, and the
// scripts that start the servers are idempotent (a second run prints the same URL and starts
// nothing new).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { imageTags } from '../../src/engine/image.ts';
import { createTestDatabase, flushPrefix, postgresUrl, redisPrefix, redisUrl, SECOND_ENGINE_HOST, secondEngineHost } from '../support/servers.ts';

const root = join(import.meta.dirname, '../..');

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

function runScript(name: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [join(root, 'scripts', name)], { encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('PostgreSQL for tests', () => {
  it('gives each test a fresh database that drop() removes', async () => {
    const db = await createTestDatabase();
    let dropped = false;
    try {
      const rows = await withClient(db.url, async (c) => {
        expect((await c.query<{ n: string }>('SELECT count(*) AS n FROM pg_tables WHERE schemaname = $1', ['public'])).rows[0]?.n).toBe('0');
        await c.query('CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)');
        await c.query('INSERT INTO t VALUES ($1, $2)', [1, 'é ok']);
        return (await c.query<{ id: number; v: string }>('SELECT id, v FROM t')).rows;
      });
      expect(rows).toEqual([{ id: 1, v: 'é ok' }]);

      // A connection still open to it does not stop the drop (WITH (FORCE)).
      const lingering = new pg.Client({ connectionString: db.url });
      lingering.on('error', () => undefined);
      await lingering.connect();
      await db.drop();
      dropped = true;
      await lingering.end().catch(() => undefined);
      const left = await withClient(postgresUrl(), (c) => c.query('SELECT 1 FROM pg_database WHERE datname = $1', [db.name]));
      expect(left.rowCount).toBe(0);
      await db.drop(); // twice is harmless
    } finally {
      if (!dropped) await db.drop();
    }
  });
});

describe('Redis for tests', () => {
  it('keeps a test\'s keys under its prefix and flushPrefix removes only those', async () => {
    const mine = redisPrefix();
    const other = redisPrefix();
    expect(mine).not.toBe(other);
    const redis = new Redis(redisUrl(), { maxRetriesPerRequest: 2 });
    try {
      expect(await redis.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
      for (let i = 0; i < 25; i++) await redis.set(`${mine}k${i}`, `v${i}`);
      await redis.set(`${other}k`, 'theirs');
      expect(await redis.get(`${mine}k7`)).toBe('v7');

      expect(await flushPrefix(redisUrl(), mine)).toBe(25);
      expect(await redis.exists(`${mine}k0`, `${mine}k24`)).toBe(0);
      expect(await redis.get(`${other}k`)).toBe('theirs');
    } finally {
      await flushPrefix(redisUrl(), mine);
      await flushPrefix(redisUrl(), other);
      redis.disconnect();
    }
    await expect(flushPrefix(redisUrl(), '')).rejects.toThrow(/short prefix/);
  });
});

describe('ensure scripts', () => {
  // A URL from the environment means a server these scripts do not manage.
  it.skipIf(!!process.env.PYBOX_TEST_POSTGRES_URL)('ensure-postgres.sh prints the same URL twice and nothing else', () => {
    const first = runScript('ensure-postgres.sh');
    const second = runScript('ensure-postgres.sh');
    expect(first.status, first.stderr).toBe(0);
    expect(second.status, second.stderr).toBe(0);
    expect(first.stdout).toBe(`${postgresUrl()}\n`);
    expect(second.stdout).toBe(first.stdout);
    // Already running: the second run has nothing to start.
    expect(second.stderr).not.toMatch(/starting|initialising/);
  }, 320_000);

  it.skipIf(!!process.env.PYBOX_TEST_REDIS_URL)('ensure-redis.sh prints the same URL twice and nothing else', () => {
    const first = runScript('ensure-redis.sh');
    const second = runScript('ensure-redis.sh');
    expect(first.status, first.stderr).toBe(0);
    expect(second.status, second.stderr).toBe(0);
    expect(first.stdout).toBe(`${redisUrl()}\n`);
    expect(second.stdout).toBe(first.stdout);
    expect(second.stderr).not.toMatch(/starting/);
  }, 320_000);

  it.skipIf(process.env.PYBOX_SECOND_ENGINE === '0')('ensure-engine-b.sh prints the same socket twice, with this checkout\'s sandbox image on it', () => {
    const first = runScript('ensure-engine-b.sh');
    const second = runScript('ensure-engine-b.sh');
    expect(first.status, first.stderr).toBe(0);
    expect(second.status, second.stderr).toBe(0);
    expect(first.stdout).toBe(`${SECOND_ENGINE_HOST}\n`);
    expect(second.stdout).toBe(first.stdout);
    expect(second.stderr).not.toMatch(/starting|copying/);
    expect(secondEngineHost()).toBe(SECOND_ENGINE_HOST);
    const tag = imageTags(join(root, 'images')).sandbox;
    const inspect = spawnSync('docker', ['image', 'inspect', tag], { env: { ...process.env, DOCKER_HOST: SECOND_ENGINE_HOST }, stdio: 'ignore' });
    expect(inspect.status).toBe(0);
  }, 320_000);
});
