// The cluster node as composeClusterNode builds it, sessions wired in: an API node and a worker in
// this process, on a PostgreSQL and a Redis of this file's own (started and stopped by pid). The
// worker's local sessions are the in-memory fake (the SessionManager is given by the caller); its
// engine side runs no sandbox (no warm pool, an image already present). A session opened through
// the API node's sessionHosts lands on the worker, which reports it; its calls reach the worker.
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionDirectory } from '../../src/cluster/session-directory.ts';
import { composeClusterNode, type ClusterNode } from '../../src/compose-cluster.ts';
import { LOCAL_TENANT } from '../../src/core/caller.ts';
import { ConfigSchema, type Config } from '../../src/config/schema.ts';
import { PrivatePostgres, PrivateRedis, removeLabelled } from '../support/cluster.ts';
import { FakeSessionHosts } from '../support/fake-session-hosts.ts';
import { RecordingLogger } from '../unit/fakes.ts';

let redis: PrivateRedis | undefined;
let postgres: PrivatePostgres | undefined;
const nodes: ClusterNode[] = [];
const instance = `test-cs-${randomBytes(4).toString('hex')}`;
const local = new FakeSessionHosts();
let api: ClusterNode;
const prefix = `pbxcs${randomBytes(3).toString('hex')}`;

async function presentImage(): Promise<string> {
  const images = await new Docker().listImages({ filters: { reference: ['pybox-python'] } });
  const tag = images.flatMap((i) => i.RepoTags ?? []).find((t) => t.startsWith('pybox-python:'));
  if (!tag) throw new Error('no pybox-python image is present: run `node --import tsx scripts/build-image.ts`');
  return tag;
}

beforeAll(async () => {
  [redis, postgres] = await Promise.all([PrivateRedis.start(), PrivatePostgres.start()]);
  const image = await presentImage();
  const config = (role: 'api' | 'worker', nodeId: string): Config =>
    ConfigSchema.parse({
      cluster: { role, nodeId, postgresUrl: postgres?.url, redisUrl: redis?.url, prefix, heartbeatMs: 200 },
      engine: { runtime: 'runc', image, instance },
      pool: { enabled: false },
      log: { level: 'error' },
      sessions: { maxPerHost: 3, maxPerTenant: 2 },
    });
  nodes.push(await composeClusterNode(config('worker', 'cs-worker'), { logger: new RecordingLogger() }, { localHosts: () => local }));
  api = await composeClusterNode(config('api', 'cs-api'), { logger: new RecordingLogger() });
  nodes.push(api);
}, 120_000);

afterAll(async () => {
  for (const n of nodes.reverse()) await n.close().catch(() => undefined);
  await removeLabelled(undefined, instance);
  await redis?.close();
  await postgres?.close();
}, 120_000);

describe('a composed cluster with sessions', () => {
  it('opens a session through the API node on the worker, which reports it, and routes its calls there', async () => {
    const hosts = api.sessionHosts;
    expect(hosts).toBeDefined();
    if (!hosts) return;
    const id = `sess-${randomBytes(6).toString('hex')}`;
    const opened = await hosts.open({ id, tenant: 'acme', limits: { timeoutMs: 5000, memoryMb: 256, cpus: 1, outputBytes: 1000 }, idleTimeoutMs: 60_000, env: {}, files: [], createdAtMs: Date.now() });
    expect(opened).toMatchObject({ id, tenant: 'acme', node: 'cs-worker' });
    const r = await hosts.call(id, { id: 'call-1', code: 'print(1)', stdin: '', files: [], timeoutMs: 5000 });
    expect(r.outcome.stdout.text()).toBe('ran print(1)\n');
    expect(local.calls.map((c) => c.session)).toEqual([id]);
    await hosts.close(id, 'deleted');
    expect(local.closed).toEqual([{ id, reason: 'deleted' }]);
  });

  it("counts against a tenant's cap the place another API node holds for a session it is opening", async () => {
    const commands = new Redis(redis?.url ?? '');
    try {
      const directory = new SessionDirectory({ redis: commands, prefix });
      // Another API node's open, under way: its place is taken in Redis.
      expect(await directory.reserve(LOCAL_TENANT, 'opening-elsewhere', 2, 60_000)).toBe(true);
      const create = () => api.app.request('/v1/sessions', { method: 'POST', headers: { 'content-type': 'application/json', host: 'localhost' }, body: '{}' });
      const first = await create();
      expect(first.status).toBe(201);
      const refused = await create();
      expect(refused.status).toBe(429);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('session_limit');
      // Its open failed: the place is given back, and this node may open the tenant's second.
      await directory.unreserve(LOCAL_TENANT, 'opening-elsewhere');
      const second = await create();
      expect(second.status).toBe(201);
      for (const res of [first, second]) {
        const { id } = (await res.json()) as { id: string };
        expect((await api.app.request(`/v1/sessions/${id}`, { method: 'DELETE', headers: { host: 'localhost' } })).status).toBe(200);
      }
      expect(await directory.count(LOCAL_TENANT)).toBe(0);
    } finally {
      commands.disconnect();
    }
  });
});
