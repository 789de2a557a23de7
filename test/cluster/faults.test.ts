// The cluster's faults, each on servers of the test's own: a worker killed in the middle of runs,
// an API node killed while its clients wait, Redis restarted, PostgreSQL stopped for a while, and
// a rolling restart of every node under steady load.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PyboxClient } from '../../src/client/client.ts';
import { ClusterInfo, ExecutionResult, HistoryPage, Readiness, type BatchPage } from '../../src/core/schemas.ts';
import { Cluster, execute, labelled, PrivatePostgres, PrivateRedis, type NodeProcess } from '../support/cluster.ts';
import { secondEngineHost } from '../support/servers.ts';

let redis: PrivateRedis;
let postgres: PrivatePostgres;
let cluster: Cluster;
const engineB = secondEngineHost();
const LOCK_MS = 3000;

const node = (name: string) => cluster.nodes.get(name) as NodeProcess;

async function getJson(n: NodeProcess, path: string): Promise<{ status: number; body: unknown; headers: Headers }> {
  const res = await fetch(`${n.url}${path}`);
  return { status: res.status, body: await res.json(), headers: res.headers };
}

async function clusterInfo(n: NodeProcess): Promise<ClusterInfo> {
  return ClusterInfo.parse((await getJson(n, '/v1/cluster')).body);
}

async function until(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function history(n: NodeProcess): Promise<ExecutionResult[]> {
  return HistoryPage.parse((await getJson(n, '/v1/executions?limit=200')).body).items;
}

beforeAll(async () => {
  [redis, postgres] = await Promise.all([PrivateRedis.start(), PrivatePostgres.start()]);
  cluster = new Cluster({
    postgresUrl: postgres.url,
    redisUrl: redis.url,
    config: {
      engine: { runtime: 'runc' },
      pool: { size: { runc: 1, runsc: 1 }, preload: { runc: [], runsc: [] } },
      cluster: { workerSlots: 1, lockMs: LOCK_MS },
      server: { shutdownGraceMs: 15_000 },
      // A killed API node's jobs go to the other within this.
      jobs: { leaseMs: 3000, pollMs: 200 },
    },
  });
  await Promise.all([
    cluster.start('api-a', 'api'),
    cluster.start('api-b', 'api'),
    cluster.start('worker-a', 'worker'),
    cluster.start('worker-b', 'worker', { dockerHost: engineB }),
  ]);
  await until('two healthy workers', async () => (await clusterInfo(node('api-a'))).nodes.filter((n) => n.role === 'worker' && n.healthy).length === 2);
}, 240_000);

afterAll(async () => {
  await cluster?.close();
  await Promise.all([redis?.close(), postgres?.close()]);
}, 120_000);

describe('cluster faults', () => {
  it('ends the runs of a worker killed mid-run as internal_error within lock + stalled check, records them, and removes its leftovers when it comes back', async () => {
    const runs = [0, 1].map((i) => execute(node('api-a').url, { code: `import time\ntime.sleep(6)\nprint("run ${i}")` }));
    await until('both workers busy', async () => (await clusterInfo(node('api-a'))).running === 2, 20_000);
    const held = await labelled(undefined, `${cluster.instance}.worker-a`);
    const killedAt = Date.now();
    await cluster.kill('worker-a');
    const results = await Promise.all(runs);
    for (const r of results) expect(r.status).toBe(200);
    const failed = results.map((r) => r.body).filter((b) => b.status === 'internal_error');
    const completed = results.map((r) => r.body).filter((b) => b.status === 'completed');
    expect(failed).toHaveLength(1);
    expect(completed).toHaveLength(1);
    expect(String((failed[0]?.error as { message: string }).message)).toMatch(/worker .*went away/);
    // Bounded: the lock expires after lockMs, a stalled check runs every lockMs / 2 on the live worker.
    const endedAt = Date.parse(String(failed[0]?.finishedAt));
    expect(endedAt - killedAt).toBeLessThan(LOCK_MS * 2 + 5000);
    // Recorded, and nothing stays waiting or running.
    const recorded = await getJson(node('api-b'), `/v1/executions/${String(failed[0]?.id)}`);
    expect(recorded.body).toMatchObject({ status: 'internal_error' });
    const info = await clusterInfo(node('api-b'));
    expect(info.waiting).toBe(0);
    // It comes back under its name: what it left on its engine is removed.
    expect(held.length).toBeGreaterThan(0);
    await cluster.start('worker-a', 'worker');
    const now = await labelled(undefined, `${cluster.instance}.worker-a`);
    expect(now.filter((id) => held.includes(id))).toEqual([]);
  }, 90_000);

  it('finishes and records the runs an API node had handed to workers when it is killed while its clients wait', async () => {
    const marker = `handed-${Date.now()}`;
    const pending = execute(node('api-b').url, { code: `import time\ntime.sleep(2)\nprint("${marker}")` }).catch(() => undefined);
    await until('the run started', async () => (await clusterInfo(node('api-a'))).running >= 1, 10_000);
    await cluster.kill('api-b');
    await pending;
    await until('the run recorded', async () => (await history(node('api-a'))).some((r) => r.stdout === `${marker}\n` && r.status === 'completed'), 20_000);
    await cluster.start('api-b', 'api');
  }, 60_000);

  it('finishes a batch whose API node is killed in the middle of it: the other API node takes its jobs once their leases run out', async () => {
    const a = new PyboxClient({ baseUrl: node('api-a').url });
    const b = new PyboxClient({ baseUrl: node('api-b').url });
    const items = Array.from({ length: 6 }, (_, i) => ({ code: `import time\ntime.sleep(0.7)\nprint(${i} * 3)` }));
    const batch = await b.createBatch({ items });
    // Both API nodes claim jobs; api-b is killed once it holds some.
    await until('an item done', async () => (await a.getBatch(batch.id)).done >= 1, 20_000);
    await cluster.kill('api-b');
    const done = await new Promise<BatchPage>((resolve, reject) => {
      const end = Date.now() + 60_000;
      const poll = async () => {
        const page = await a.getBatch(batch.id);
        if (page.state === 'completed') return resolve(page);
        if (Date.now() > end) return reject(new Error(`batch not finished: ${JSON.stringify({ done: page.done, byStatus: page.byStatus })}`));
        setTimeout(() => void poll().catch(reject), 200);
      };
      void poll().catch(reject);
    });
    expect(done.done).toBe(6);
    for (const item of done.items) expect(item.result, JSON.stringify(item)).toMatchObject({ status: 'completed', stdout: `${item.index * 3}\n` });
    await cluster.start('api-b', 'api');
  }, 120_000);

  it('answers 503 with Retry-After while Redis is away, says so in /readyz, recovers by itself and loses no accepted run', async () => {
    // Runs accepted before the restart: two run, the others wait in the queue (kept in Redis).
    const accepted = Array.from({ length: 4 }, (_, i) => execute(node('api-a').url, { code: `import time\ntime.sleep(1)\nprint("kept ${i}")` }));
    await until('runs queued', async () => (await clusterInfo(node('api-a'))).waiting >= 1, 10_000);
    await redis.down();
    const refused = await execute(node('api-a').url, { code: 'print(1)' });
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ error: { code: 'queue_unavailable' } });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    const ready = await getJson(node('api-a'), '/readyz');
    expect(ready.status).toBe(503);
    expect(Readiness.parse(ready.body).checks.queue).toBe(false);
    await new Promise((r) => setTimeout(r, 1000));
    await redis.up();
    await until('runs accepted again', async () => (await execute(node('api-b').url, { code: 'print("back")' })).status === 200, 30_000);
    const done = await Promise.all(accepted);
    // Status and error beside the output: a run that did not come back whole says how it ended.
    const error = (b: Record<string, unknown>) => (b.error as { message?: unknown } | null | undefined)?.message ?? null;
    expect(done.map((r) => [r.status, r.body.status, r.body.stdout, error(r.body)])).toEqual([0, 1, 2, 3].map((i) => [200, 'completed', `kept ${i}\n`, null]));
    expect((await getJson(node('api-a'), '/readyz')).status).toBe(200);
  }, 90_000);

  it('answers 503 with Retry-After while PostgreSQL is stopped, says so in /readyz, and recovers by itself', async () => {
    await postgres.down();
    const refused = await execute(node('api-a').url, { code: 'print(1)' });
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ error: { code: 'store_unavailable' } });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    const ready = await getJson(node('api-b'), '/readyz');
    expect(ready.status).toBe(503);
    expect(Readiness.parse(ready.body).checks.store).toBe(false);
    await postgres.up();
    await until('runs accepted again', async () => (await execute(node('api-a').url, { code: 'print("back")' })).status === 200, 30_000);
    expect((await getJson(node('api-b'), '/readyz')).status).toBe(200);
  }, 90_000);

  it('loses no execution in a rolling restart of every node under steady load', async () => {
    const apis = ['api-a', 'api-b'];
    let stop = false;
    let sent = 0;
    const outcomes: Array<{ n: number; status: number; stdout: unknown }> = [];
    // A client that retries on the other API node when one refuses (shutting down) or is gone.
    const client = async (offset: number) => {
      for (let i = 0; !stop; i++) {
        const n = sent++;
        let last: { status: number; stdout: unknown } = { status: 0, stdout: null };
        for (let attempt = 0; attempt < 40; attempt++) {
          const target = node(apis[(i + offset + attempt) % 2] as string);
          try {
            const r = await execute(target.url, { code: `print(${n})` });
            last = { status: r.status, stdout: r.body.stdout };
            if (r.status !== 503) break;
          } catch {
            // connection refused: the node is restarting
          }
          await new Promise((r) => setTimeout(r, 250));
        }
        outcomes.push({ n, ...last });
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const clients = [client(0), client(1)];
    for (const name of ['worker-a', 'worker-b', 'api-a', 'api-b']) {
      await new Promise((r) => setTimeout(r, 1500));
      const code = await cluster.stop(name);
      expect(code, `${name} exited ${code}:\n${node(name).log.slice(-3000)}`).toBe(0);
      await cluster.start(name, name.startsWith('api') ? 'api' : 'worker', name === 'worker-b' ? { dockerHost: engineB } : {});
    }
    await new Promise((r) => setTimeout(r, 1500));
    stop = true;
    await Promise.all(clients);
    expect(outcomes.length).toBeGreaterThan(10);
    const lost = outcomes.filter((o) => o.status !== 200 || o.stdout !== `${o.n}\n`);
    expect(lost).toEqual([]);
  }, 180_000);
});
