// The cluster as its users see it: two API nodes and two workers (on two engines where a second
// one runs), on PostgreSQL and Redis. One history and one set of keys for every node, limits that
// hold across the API nodes, and fair sharing across tenants when one floods every node.
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PyboxClient } from '../../src/client/client.ts';
import { ClusterInfo, ExecutionResult, type BatchInfo } from '../../src/core/schemas.ts';
import { Cluster, execute, ROOT, type NodeProcess } from '../support/cluster.ts';
import { createTestDatabase, flushPrefix, redisUrl, secondEngineHost, type TestDatabase } from '../support/servers.ts';

let db: TestDatabase;
let cluster: Cluster;
let apiA: NodeProcess;
let apiB: NodeProcess;
const keys: Record<string, string> = {};

/** `pybox keys …` against the cluster's store (PostgreSQL, from the same settings the nodes use). */
async function keysCli(args: string[]): Promise<string> {
  const child = spawn(process.execPath, ['bin/pybox.mjs', 'keys', ...args], { cwd: ROOT, env: { ...process.env, ...cluster.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  if (code !== 0) throw new Error(`pybox keys ${args.join(' ')} exited ${code}: ${err}`);
  return out.trim().split('\n').at(-1) as string;
}

const auth = (key: string | undefined): Record<string, string> => (key ? { authorization: `Bearer ${key}` } : {});

async function get(node: NodeProcess, path: string, key?: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${node.url}${path}`, { headers: auth(key) });
  return { status: res.status, body: await res.json() };
}

beforeAll(async () => {
  db = await createTestDatabase();
  cluster = new Cluster({
    postgresUrl: db.url,
    redisUrl: redisUrl(),
    config: { engine: { runtime: 'runc' }, pool: { size: { runc: 1, runsc: 1 }, preload: { runc: [], runsc: [] } }, cluster: { workerSlots: 1 } },
  });
  keys.admin = await keysCli(['create', '--tenant', 'ops', '--admin']);
  keys.rate = await keysCli(['create', '--tenant', 'metered', '--rate-per-minute', '4']);
  keys.single = await keysCli(['create', '--tenant', 'single', '--max-concurrency', '1']);
  keys.flood = await keysCli(['create', '--tenant', 'flood']);
  keys.other = await keysCli(['create', '--tenant', 'other']);
  [apiA, apiB] = await Promise.all([
    cluster.start('api-a', 'api'),
    cluster.start('api-b', 'api'),
    cluster.start('worker-a', 'worker'),
    cluster.start('worker-b', 'worker', { dockerHost: secondEngineHost() }),
  ]);
  // Workers join the queue as they listen; the API nodes see them at their next heartbeat.
  for (let i = 0; i < 100; i++) {
    const info = ClusterInfo.safeParse((await get(apiA, '/v1/cluster', keys.admin)).body);
    if (info.success && info.data.nodes.filter((n) => n.role === 'worker' && n.healthy).length === 2) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}, 180_000);

afterAll(async () => {
  await cluster?.close();
  await db?.drop();
  if (cluster) await flushPrefix(redisUrl(), `${cluster.prefix}:`);
}, 120_000);

describe('a cluster of two API nodes and two workers', () => {
  it('runs an execution sent to either API node, and either node finds it afterwards', async () => {
    const a = await execute(apiA.url, { code: 'print("via a")' }, auth(keys.other));
    const b = await execute(apiB.url, { code: 'print("via b")' }, auth(keys.other));
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(b.status, JSON.stringify(b.body)).toBe(200);
    expect(a.body).toMatchObject({ status: 'completed', stdout: 'via a\n', runtime: 'runc' });
    expect(b.body).toMatchObject({ status: 'completed', stdout: 'via b\n' });
    const fetched = await get(apiB, `/v1/executions/${String(a.body.id)}`, keys.other);
    expect(fetched.status).toBe(200);
    expect(ExecutionResult.parse(fetched.body)).toEqual({ ...ExecutionResult.parse(a.body), code: 'print("via a")' });
    // Another tenant does not see it, on any node.
    expect((await get(apiA, `/v1/executions/${String(a.body.id)}`, keys.flood)).status).toBe(404);
  });

  it('lists every node with its role, slots and health in GET /v1/cluster (admins only)', async () => {
    const res = await get(apiB, '/v1/cluster', keys.admin);
    expect(res.status).toBe(200);
    const info = ClusterInfo.parse(res.body);
    expect(info.mode).toBe('cluster');
    expect(info.nodes.map((n) => `${n.nodeId}:${n.role}`).sort()).toEqual(['api-a:api', 'api-b:api', 'worker-a:worker', 'worker-b:worker']);
    for (const n of info.nodes.filter((x) => x.role === 'worker')) expect(n).toMatchObject({ slots: 1, healthy: true, runtime: 'runc' });
    for (const n of info.nodes.filter((x) => x.role === 'api')) expect(n).toMatchObject({ slots: 0, healthy: null });
    expect(info.slots).toBe(2);
    expect((await get(apiB, '/v1/cluster', keys.other)).status).toBe(404);
  });

  it('a worker serves its health probes only: no API, no documents, whatever the key', async () => {
    const worker = cluster.nodes.get('worker-a') as NodeProcess;
    const ready = await get(worker, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({ ready: true, checks: { engine: true, image: true, store: true, queue: true } });
    for (const path of ['/v1/executions', '/v1/cluster', '/v1/doctor', '/openapi.json', '/mcp']) {
      expect((await fetch(`${worker.url}${path}`, { headers: auth(keys.admin) })).status, path).toBe(404);
    }
    const posted = await fetch(`${worker.url}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth(keys.admin) }, body: '{"code":"print(1)"}' });
    expect(posted.status).toBe(404);
  });

  it("serves /metrics on every node's port, to admin keys only (keys from PostgreSQL on workers too)", async () => {
    const done = await execute(apiA.url, { code: 'print("metered")' }, auth(keys.other));
    expect(done.status).toBe(200);
    const texts: string[] = [];
    for (const node of [apiA, apiB, ...['worker-a', 'worker-b'].map((n) => cluster.nodes.get(n) as NodeProcess)]) {
      expect((await fetch(`${node.url}/metrics`)).status, node.url).toBe(401);
      expect((await fetch(`${node.url}/metrics`, { headers: auth(keys.other) })).status, node.url).toBe(404);
      const res = await fetch(`${node.url}/metrics`, { headers: auth(keys.admin) });
      expect(res.status, node.url).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/plain');
      texts.push(await res.text());
    }
    const [a, b, wa, wb] = texts as [string, string, string, string];
    // API nodes: the cluster's queue; workers: their engine, slots and the runs they did.
    for (const t of [a, b]) expect(t).toMatch(/^pybox_cluster_queue_depth \d+$/m);
    for (const t of [wa, wb]) {
      expect(t).toMatch(/^pybox_engine_up 1$/m);
      expect(t).toMatch(/^pybox_execution_slots 1$/m);
    }
    const completed = (t: string) => Number(/^pybox_executions_total\{status="completed",runtime="runc"\} (\d+)$/m.exec(t)?.[1] ?? 0);
    expect(completed(wa) + completed(wb)).toBeGreaterThanOrEqual(1);
    expect(a).toMatch(/^pybox_http_requests_total\{route="\/v1\/executions",method="POST",status="200"\} \d+$/m);
  });

  it('takes a key created or revoked through the store into account on every node at once', async () => {
    const key = await keysCli(['create', '--tenant', 'late']);
    expect((await get(apiA, '/v1/stats', key)).status).toBe(200);
    expect((await get(apiB, '/v1/stats', key)).status).toBe(200);
    await keysCli(['revoke', key]);
    expect((await get(apiA, '/v1/stats', key)).status).toBe(401);
    expect((await get(apiB, '/v1/stats', key)).status).toBe(401);
  });

  it("holds a tenant's request rate across both API nodes: two nodes do not give it twice its quota", async () => {
    const codes = await Promise.all(Array.from({ length: 10 }, (_, i) => get(i % 2 ? apiA : apiB, '/v1/stats', keys.rate).then((r) => r.status)));
    expect(codes.filter((c) => c === 200)).toHaveLength(4);
    expect(codes.filter((c) => c === 429)).toHaveLength(6);
  });

  it("holds a tenant's concurrency across both API nodes", async () => {
    const slow = execute(apiA.url, { code: 'import time\ntime.sleep(3)\nprint("slept")' }, auth(keys.single));
    await new Promise((r) => setTimeout(r, 700));
    const over = await execute(apiB.url, { code: 'print(1)' }, auth(keys.single));
    expect(over.status).toBe(429);
    expect(over.body).toMatchObject({ error: { code: 'rate_limited', details: { limit: 'concurrency', maxConcurrency: 1 } } });
    expect(over.headers.get('retry-after')).not.toBeNull();
    const first = await slow;
    expect(first.body).toMatchObject({ status: 'completed', stdout: 'slept\n' });
    // Its place is free again, on either node.
    expect((await execute(apiB.url, { code: 'print(2)' }, auth(keys.single))).status).toBe(200);
  });

  it("serves a second tenant's runs ahead of a flood that another tenant sends to every API node", async () => {
    // Two slots in all: the flooding tenant sends 10 one-second runs, half to each API node; the
    // other tenant then sends two quick ones. First come, first served would finish them last.
    const finished: string[] = [];
    const track = (name: string, p: ReturnType<typeof execute>) =>
      p.then((r) => {
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        finished.push(name);
      });
    const flood = Array.from({ length: 10 }, (_, i) => track(`a${i}`, execute(i % 2 ? apiA.url : apiB.url, { code: 'import time\ntime.sleep(1)' }, auth(keys.flood))));
    for (let i = 0; i < 100; i++) {
      const info = ClusterInfo.parse((await get(apiA, '/v1/cluster', keys.admin)).body);
      if (info.waiting >= 7) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const quick = [0, 1].map((i) => track(`b${i}`, execute(i % 2 ? apiA.url : apiB.url, { code: `print("quick ${i}")` }, auth(keys.other))));
    await Promise.all([...flood, ...quick]);
    const fifthOfA = finished.filter((n) => n.startsWith('a'))[4] as string;
    expect(finished.indexOf('b0'), finished.join(' ')).toBeLessThan(finished.indexOf(fifthOfA));
    expect(finished.indexOf('b1'), finished.join(' ')).toBeLessThan(finished.indexOf(fifthOfA));
  }, 60_000);

  it('runs a batch across the workers, with test cases, while an interactive run of another tenant goes ahead of it; events read through the other API node', async () => {
    const a = new PyboxClient({ baseUrl: apiA.url, apiKey: keys.flood });
    const b = new PyboxClient({ baseUrl: apiB.url, apiKey: keys.flood });
    const items = Array.from({ length: 6 }, (_, i) => ({
      code: `import time\ntime.sleep(0.8)\nprint(int(input()) + ${i})`,
      tests: [
        { stdin: '1', expectedStdout: `${1 + i}` },
        { stdin: '2', expectedStdout: i === 5 ? 'wrong' : `${2 + i}` },
      ],
    }));
    const batch = await a.createBatch({ items });
    const interactive = await execute(apiB.url, { code: 'print("now")' }, auth(keys.other));
    expect(interactive.body).toMatchObject({ status: 'completed', stdout: 'now\n' });
    const seen: number[] = [];
    let last: BatchInfo | undefined;
    for await (const e of b.batchEvents(batch.id)) {
      if (e.type === 'item') seen.push(e.data.item.index);
      else last = e.data;
    }
    expect(seen.sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(last).toMatchObject({ state: 'completed', done: 6 });
    // The interactive run did not wait for the batch: it was done before the batch was.
    expect(Date.parse(String(interactive.body.finishedAt))).toBeLessThan(Date.parse(last?.finishedAt ?? ''));
    const page = await b.getBatch(batch.id);
    for (const item of page.items) {
      expect(item.result?.status).toBe('completed');
      expect(item.result?.summary).toMatchObject({ total: 2, passed: item.index === 5 ? 1 : 2 });
    }
    expect(page.items[5]?.result?.success).toBe(false);
    // Another tenant cannot see it, through either node.
    expect((await get(apiA, `/v1/batches/${batch.id}`, keys.other)).status).toBe(404);
  }, 120_000);

  it('pins a session to its worker: opened through one API node, called through the other, its state kept; streamed; another tenant cannot reach it', async () => {
    const a = new PyboxClient({ baseUrl: apiA.url, apiKey: keys.other, retries: 0 });
    const b = new PyboxClient({ baseUrl: apiB.url, apiKey: keys.other, retries: 0 });
    const session = await a.createSession();
    try {
      const first = await a.sessionExecute(session.id, { code: 'import os\ncount = 41\nopen("here.txt", "w").write(os.uname().nodename)' });
      expect(first.status, first.stderr).toBe('completed');
      const second = await b.sessionExecute(session.id, { code: 'count += 1\nprint(count, open("here.txt").read() == os.uname().nodename)' });
      expect(second).toMatchObject({ status: 'completed', stdout: '42 True\n', session: { sessionId: session.id, call: 2, stateLost: false } });
      // Its output streams back from the worker through the other API node, the result last.
      const events: string[] = [];
      for await (const e of b.sessionExecuteStream(session.id, { code: 'import time\nprint("one", flush=True)\ntime.sleep(0.3)\nprint("two")\ncount' })) {
        events.push(e.type === 'result' ? `result:${e.result.stdout.trim().replace('\n', ',')}:${e.result.outputs?.[0]?.data}` : `${e.type}:${e.text.trim()}`);
      }
      expect(events.at(-1)).toBe('result:one,two:42');
      expect(events.filter((e) => e.startsWith('stdout:')).join(',')).toContain('one');
      expect((await b.listSessions()).items.map((s) => s.id)).toContain(session.id);
      // GET /v1/cluster counts it on its worker (from the workers' heartbeats).
      await expect
        .poll(
          async () => {
            const info = ClusterInfo.parse((await get(apiA, '/v1/cluster', keys.admin)).body);
            return info.nodes.filter((n) => n.role === 'worker').reduce((sum, n) => sum + (n.sessions?.live ?? 0), 0);
          },
          { timeout: 15_000, interval: 250 },
        )
        .toBe(1);
      // Another tenant: not found on either node, exactly as an unknown id.
      for (const node of [apiA, apiB]) {
        const r = await fetch(`${node.url}/v1/sessions/${session.id}/executions`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth(keys.flood) }, body: JSON.stringify({ code: 'print(count)' }) });
        expect(r.status).toBe(404);
      }
      // The calls are in the one history, through either node.
      const fetched = await get(apiA, `/v1/executions/${second.id}`, keys.other);
      expect(fetched.status).toBe(200);
      expect(fetched.body).toMatchObject({ stdout: '42 True\n', session: { sessionId: session.id } });
    } finally {
      await b.deleteSession(session.id);
    }
    const after = await fetch(`${apiA.url}/v1/sessions/${session.id}/executions`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth(keys.other) }, body: JSON.stringify({ code: 'print(1)' }) });
    expect([404, 410]).toContain(after.status);
  }, 120_000);
});
