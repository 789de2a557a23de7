// The documented local cluster (`npm run cluster`, i.e. `pybox cluster up`): it comes up with two
// API nodes and two workers that serve executions, and SIGINT to the command stops every node it
// started, while the database and the Redis keys it used are kept (as documented) for the next run.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterInfo } from '../../src/core/schemas.ts';
import { execute, removeLabelled, ROOT } from '../support/cluster.ts';
import { flushPrefix, postgresUrl, redisUrl, secondEngineHost, SECOND_ENGINE_HOST } from '../support/servers.ts';

const suffix = randomBytes(6).toString('hex');
const database = `pybox_t_${suffix}`;
const prefix = `pbxt-${suffix}`;
const dir = mkdtempSync(join(tmpdir(), 'pybox-local-cluster-'));
const engineB = secondEngineHost();

interface Row {
  name: string;
  role: string;
  pid: number;
  url: string;
  engine: string;
}

let command: ChildProcess;
let output = '';
let exited: Promise<number | null>;
let rows: Row[] = [];
let commandPid = 0;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

async function databaseExists(): Promise<boolean> {
  const client = new pg.Client({ connectionString: postgresUrl() });
  await client.connect();
  try {
    return (await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount === 1;
  } finally {
    await client.end();
  }
}

async function keysWithPrefix(): Promise<number> {
  const redis = new Redis(redisUrl(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  try {
    const [, keys] = await redis.scan('0', 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    return keys.length;
  } finally {
    redis.disconnect();
  }
}

beforeAll(async () => {
  // A light pool, so four nodes start quickly on a shared machine; the command lays its prefix over it.
  const config = join(dir, 'config.yaml');
  writeFileSync(config, JSON.stringify({ pool: { size: { runc: 1, runsc: 1 }, preload: { runc: [], runsc: [] } }, cluster: { workerSlots: 1, heartbeatMs: 500 } }));
  // At warn the nodes do not log that they listen: the command must see them up by their probes.
  const env: NodeJS.ProcessEnv = { ...process.env, PYBOX_CONFIG: config, PYBOX_RUNTIME: 'runc', PYBOX_LOG_LEVEL: 'warn' };
  // The servers the tests use, as the command would ensure them (or the ones the run was pointed at).
  delete env.PYBOX_POSTGRES_URL;
  delete env.PYBOX_REDIS_URL;
  if (process.env.PYBOX_TEST_REDIS_URL) env.PYBOX_REDIS_URL = redisUrl();
  if (process.env.PYBOX_TEST_POSTGRES_URL) {
    const url = new URL(postgresUrl());
    const admin = new pg.Client({ connectionString: url.toString() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`).finally(() => admin.end());
    url.pathname = `/${database}`;
    env.PYBOX_POSTGRES_URL = url.toString();
  }
  if (!engineB) env.PYBOX_SECOND_ENGINE = '0';
  const args = ['run', '--silent', 'cluster', '--', '--api-ports', '0,0', '--worker-ports', '0,0', '--database', database, '--prefix', prefix, '--state-dir', join(dir, 'state')];
  // Its own process group: if the test fails half-way, afterAll kills the command and its nodes at once.
  command = spawn('npm', args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  command.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  command.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  exited = new Promise((r) => command.on('exit', (code) => r(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  for (let i = 0; i < 2400 && !/Ctrl-C stops the four nodes/.test(output); i++) {
    if (gone) throw new Error(`the command exited before the cluster was up:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!/Ctrl-C stops the four nodes/.test(output)) throw new Error(`the cluster did not come up within 240 s:\n${output}`);
  commandPid = Number(/command pid (\d+)/.exec(output)?.[1]);
  rows = [...output.matchAll(/^ {2}((?:api|worker)-[12]) +(api|worker) +(\d+) +(http:\/\/\S+) +(.+)$/gm)].map((m) => ({
    name: m[1] as string,
    role: m[2] as string,
    pid: Number(m[3]),
    url: m[4] as string,
    engine: (m[5] as string).trim(),
  }));
}, 300_000);

afterAll(async () => {
  if (command?.pid && command.exitCode === null && command.signalCode === null) {
    process.kill(-command.pid, 'SIGKILL');
    await exited;
  }
  for (const host of [undefined, engineB]) await removeLabelled(host, prefix).catch(() => 0);
  const admin = new pg.Client({ connectionString: postgresUrl() });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).finally(() => admin.end());
  await flushPrefix(redisUrl(), `${prefix}:`);
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe('npm run cluster', () => {
  it('prints a table of two API nodes and two workers, the second worker on the second engine when it runs', () => {
    expect(rows.map((r) => [r.name, r.role]), output).toEqual([
      ['api-1', 'api'],
      ['api-2', 'api'],
      ['worker-1', 'worker'],
      ['worker-2', 'worker'],
    ]);
    expect(rows.find((r) => r.name === 'worker-2')?.engine).toBe(engineB ? SECOND_ENGINE_HOST : 'default engine (/var/run/docker.sock)');
    expect(commandPid).toBeGreaterThan(0);
  });

  it('runs code through either API node, and lists its four nodes (local mode: the caller is admin)', async () => {
    for (const api of rows.filter((r) => r.role === 'api')) {
      const res = await execute(api.url, { code: 'print(1)' });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body).toMatchObject({ status: 'completed', stdout: '1\n', runtime: 'runc' });
    }
    const res = await fetch(`${rows[0]?.url}/v1/cluster`);
    expect(res.status).toBe(200);
    const info = ClusterInfo.parse(await res.json());
    expect(info.nodes.map((n) => n.nodeId).sort()).toEqual(['api-1', 'api-2', 'worker-1', 'worker-2']);
    expect(info.nodes.filter((n) => n.role === 'worker').every((n) => n.healthy)).toBe(true);
  });

  it('stops every node it started on SIGINT, and keeps the database and the Redis keys', async () => {
    const pids = rows.map((r) => r.pid);
    expect(pids.every(alive)).toBe(true);
    process.kill(commandPid, 'SIGINT');
    expect(await exited, output).toBe(0);
    for (const pid of [commandPid, ...pids]) expect(alive(pid), `pid ${pid}`).toBe(false);
    expect(output).toMatch(/the nodes have stopped/);
    expect(await databaseExists()).toBe(true);
    expect(await keysWithPrefix()).toBeGreaterThan(0);
  }, 90_000);
});
