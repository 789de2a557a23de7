// Sessions in a cluster against a real Redis: two API nodes (two RemoteSessionHosts, each on its
// own connections) and two workers (SessionWorkers over fake local SessionHosts that record what
// reaches them). A session opened through one API node is used through the other and its
// operations reach the worker holding it; output arrives as it is produced, a cancel reaches the
// worker, and a session whose worker went away answers with an error instead of hanging.
//
// Redis: a private redis-server this file starts and stops (by pid), or PYBOX_TEST_REDIS_URL.
import { randomBytes, randomUUID } from 'node:crypto';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import type { AppliedLimits } from '../../src/core/schemas.ts';
import type { HostedSession, SessionCallJob, SessionOpen } from '../../src/core/sessions.ts';
import { redisOptionsOf } from '../../src/cluster/connection.ts';
import { ClusterRegistry, type NodeReport } from '../../src/cluster/registry.ts';
import { RemoteSessionHosts } from '../../src/cluster/remote-sessions.ts';
import { SessionDirectory } from '../../src/cluster/session-directory.ts';
import { SessionWorker } from '../../src/cluster/session-worker.ts';
import { sessionQueueName } from '../../src/cluster/session-wire.ts';
import { PrivateRedis } from '../support/cluster.ts';
import { FakeSessionHosts as FakeLocal } from '../support/fake-session-hosts.ts';
import { RecordingLogger } from '../unit/fakes.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const HEARTBEAT_MS = 200;
const LIMITS: AppliedLimits = { timeoutMs: 10_000, memoryMb: 256, cpus: 1, outputBytes: 1000 };

interface WorkerNode {
  name: string;
  local: FakeLocal;
  worker: SessionWorker;
  registry: ClusterRegistry;
}

let redis: PrivateRedis | undefined;
let url: string;
const prefix = `pbxs${randomBytes(4).toString('hex')}`;
const connections: Redis[] = [];
const logger = new RecordingLogger();
let apiA: RemoteSessionHosts;
let apiB: RemoteSessionHosts;
let directory: SessionDirectory;
const workers = new Map<string, WorkerNode>();

function connect(): Redis {
  const r = new Redis(url, { maxRetriesPerRequest: 1 });
  r.on('error', () => {});
  connections.push(r);
  return r;
}

function apiNode(): RemoteSessionHosts {
  const commands = connect();
  return new RemoteSessionHosts({
    connection: url,
    prefix,
    directory: new SessionDirectory({ redis: commands, prefix, logger }),
    redis: commands,
    registry: new ClusterRegistry({ redis: commands, prefix, nodeId: 'reader', role: 'api', heartbeatMs: HEARTBEAT_MS, clock: Date, logger }),
    logger,
    retryAfterS: 1,
    watchMs: 100,
    nodesCacheMs: 100,
  });
}

async function startWorker(name: string, maxSessions = 4): Promise<WorkerNode> {
  const commands = connect();
  const local = new FakeLocal();
  const worker = new SessionWorker({
    connection: url,
    prefix,
    nodeId: name,
    local,
    directory: new SessionDirectory({ redis: commands, prefix, logger }),
    redis: commands,
    maxSessions,
    lockMs: 2000,
    refreshMs: HEARTBEAT_MS,
    logger,
    progressWindowMs: 20,
  });
  local.onEnded = (s) => worker.sessionEnded(s);
  await worker.start();
  const registry = new ClusterRegistry({ redis: commands, prefix, nodeId: name, role: 'worker', heartbeatMs: HEARTBEAT_MS, clock: Date, logger });
  await registry.start(() => ({ slots: 1, running: 0, sessions: worker.sessions, maxSessions }));
  const node = { name, local, worker, registry };
  workers.set(name, node);
  return node;
}

/** Registry and directory as a worker that died left them: its report gone, nothing answering. */
async function die(node: WorkerNode): Promise<void> {
  await node.registry.stop();
}

let seq = 0;
const openReq = (tenant: string, files: Array<{ path: string; data: Buffer }> = []): SessionOpen => ({
  id: `sess-${randomBytes(6).toString('hex')}-${++seq}`,
  tenant,
  limits: LIMITS,
  idleTimeoutMs: 600_000,
  env: { A: '1' },
  files,
  createdAtMs: Date.now(),
});
const callJob = (code: string, over: Partial<SessionCallJob> = {}): SessionCallJob => ({ id: `call-${randomBytes(6).toString('hex')}`, code, stdin: '', files: [], timeoutMs: 5000, ...over });

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (e) {
    return e instanceof PyboxError ? e.code : `not a PyboxError: ${String(e)}`;
  }
}

/** Waits until the registry (as API node A reads it) shows `node` with `sessions` sessions. */
async function reported(node: string, sessions: number): Promise<void> {
  const reader = new ClusterRegistry({ redis: connections[0] as Redis, prefix, nodeId: 'r', role: 'api', heartbeatMs: HEARTBEAT_MS, clock: Date });
  for (let i = 0; i < 100; i++) {
    const n = (await reader.nodes()).find((x) => x.nodeId === node);
    if (n?.sessions === sessions) return;
    await sleep(50);
  }
  throw new Error(`${node} never reported ${sessions} session(s)`);
}

beforeAll(async () => {
  if (process.env.PYBOX_TEST_REDIS_URL) url = process.env.PYBOX_TEST_REDIS_URL;
  else {
    redis = await PrivateRedis.start();
    url = redis.url;
  }
  directory = new SessionDirectory({ redis: connect(), prefix, logger });
  apiA = apiNode();
  apiB = apiNode();
  await startWorker('w1');
  await startWorker('w2');
}, 60_000);

afterAll(async () => {
  for (const w of workers.values()) w.local.release();
  await Promise.allSettled([apiA?.shutdown(), apiB?.shutdown()]);
  await Promise.allSettled([...workers.values()].map(async (w) => {
    await w.worker.close(0);
    await w.registry.stop();
  }));
  if (!redis && connections[0]) {
    // A shared Redis: this file's keys go (SCAN + UNLINK of its own prefix only).
    let cursor = '0';
    do {
      const [next, keys] = await connections[0].scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await connections[0].unlink(...keys);
    } while (cursor !== '0');
  }
  for (const c of connections) c.disconnect();
  await redis?.close();
}, 60_000);

describe('sessions in a cluster', () => {
  it('opens a session through one API node and uses it through the other, on the worker holding it', async () => {
    const req = openReq('acme', [{ path: 'data.txt', data: Buffer.from('hello') }]);
    const opened = await apiA.open(req);
    const holder = workers.get(opened.node) as WorkerNode;
    expect(holder).toBeDefined();
    const other = [...workers.values()].find((w) => w !== holder) as WorkerNode;
    expect(opened).toMatchObject({ id: req.id, tenant: 'acme', runtime: 'runc', limits: LIMITS, calls: 0 });

    // B finds it through the directory, and lists it for its tenant only.
    expect(await apiB.get(req.id)).toMatchObject({ id: req.id, tenant: 'acme', node: holder.name });
    expect((await apiB.list('acme')).map((s) => s.id)).toContain(req.id);
    expect((await apiB.list('other')).map((s) => s.id)).not.toContain(req.id);

    const r = await apiB.call(req.id, callJob('x = 1'));
    expect(r.outcome).toMatchObject({ kind: 'finished', stateLost: false, sandboxLost: false, report: { phase: 'run', cpuMs: 3, outputs: [{ type: 'text/plain', data: '42', kind: 'result' }] } });
    expect(r.outcome.stdout.text()).toBe('ran x = 1\n');
    expect(r.session).toMatchObject({ id: req.id, calls: 1, node: holder.name });
    expect(r.runtime).toBe('runc');
    expect(holder.local.calls.map((c) => c.session)).toEqual([req.id]);
    expect(other.local.calls).toEqual([]);
    // The call count the worker wrote back is what the other node sees.
    expect((await apiA.get(req.id)).calls).toBe(1);

    // Files go to and come from the same worker's session.
    await apiA.putFiles(req.id, [{ path: 'b/c.bin', data: Buffer.from([0, 1, 2, 255]) }]);
    expect(await apiB.listFiles(req.id, 10)).toEqual({ files: [{ path: 'data.txt', size: 5 }, { path: 'b/c.bin', size: 4 }], truncated: false });
    expect(await apiB.listFiles(req.id, 1)).toEqual({ files: [{ path: 'data.txt', size: 5 }], truncated: true });
    expect(await apiB.getFile(req.id, 'b/c.bin', 100)).toEqual(Buffer.from([0, 1, 2, 255]));
    // The bytes came through a key of their own, read once.
    expect(await (connections[0] as Redis).keys(`${prefix}:session-download:*`)).toEqual([]);
    expect(await codeOf(apiB.getFile(req.id, 'data.txt', 2))).toBe('payload_too_large');
    expect(await codeOf(apiB.getFile(req.id, 'missing', 2))).toBe('not_found');

    await apiB.close(req.id, 'deleted');
    expect(holder.local.closed).toContainEqual({ id: req.id, reason: 'deleted' });
    expect(await codeOf(apiA.get(req.id))).toBe('not_found');
    expect(await codeOf(apiA.call(req.id, callJob('1')))).toBe('not_found');
    expect((await apiA.list('acme')).map((s) => s.id)).not.toContain(req.id);
  });

  it('hands on a call\'s output as it is produced, before the result, cut at the session\'s outputBytes', async () => {
    const req = openReq('acme');
    const holder = workers.get((await apiA.open(req)).node) as WorkerNode;
    const seen: string[] = [];
    let resolved = false;
    const call = apiB.call(req.id, callJob('stream', { onOutput: (s, b) => seen.push(`${s}:${b.toString()}${resolved ? ' (late)' : ''}`) }));
    // The first chunk arrives while the call still runs.
    for (let i = 0; i < 100 && seen.length === 0; i++) await sleep(20);
    expect(seen).toEqual(['stdout:one\n']);
    holder.local.streamOn();
    const r = await call;
    resolved = true;
    expect(seen).toEqual(['stdout:one\n', 'stderr:two\n', 'stdout:three\n']);
    expect(r.outcome.stdout.text()).toBe('one\nthree\n');
    expect(r.outcome.stderr.text()).toBe('two\n');

    let relayed = 0;
    await apiA.call(req.id, callJob('flood', { onOutput: (_s, b) => (relayed += b.length) }));
    expect(relayed).toBe(LIMITS.outputBytes);
    await apiA.close(req.id, 'deleted');
  });

  it('stops a running call when its caller cancels, through the other API node', async () => {
    const req = openReq('acme');
    const opened = await apiA.open(req);
    const holder = workers.get(opened.node) as WorkerNode;
    const abort = new AbortController();
    const job = callJob('wait', { onOutput: () => abort.abort('client'), signal: abort.signal, timeoutMs: 600_000 });
    const r = await apiB.call(req.id, job);
    expect(r.outcome.kind).toBe('cancelled');
    expect(holder.local.cancelled).toEqual([job.id]);

    // A cancel that comes before the call is taken still stops it.
    const early = new AbortController();
    early.abort('client');
    const job2 = callJob('wait', { signal: early.signal, timeoutMs: 600_000 });
    expect((await apiA.call(req.id, job2)).outcome.kind).toBe('cancelled');
    expect(holder.local.cancelled).toEqual([job.id, job2.id]);
    await apiA.close(req.id, 'deleted');
  });

  it('lets an interrupt stop a call only when it names the call\'s own tenant and session', async () => {
    const req = openReq('acme');
    const opened = await apiA.open(req);
    const holder = workers.get(opened.node) as WorkerNode;
    const job = callJob('wait', { timeoutMs: 600_000 });
    const call = apiB.call(req.id, job);
    const queue = new Queue(sessionQueueName(opened.node), { connection: redisOptionsOf(url), prefix });
    try {
      let target: string | undefined;
      for (let i = 0; i < 100 && !target; i++) {
        target = (await queue.getActive()).find((j) => j.name === 'call')?.id;
        if (!target) await sleep(20);
      }
      expect(target).toBeDefined();
      const interrupt = (tenant: string, session: string) =>
        queue.add('interrupt', { v: 1, op: 'interrupt', tenant, session, target }, { jobId: `interrupt-${randomUUID()}`, removeOnComplete: true });
      await interrupt('mallory', req.id);
      await interrupt('acme', 'sess-someone-else');
      // Give both a moment to be taken: the call goes on.
      for (let i = 0; i < 50 && ((await queue.getJobCounts('wait')).wait ?? 0) > 0; i++) await sleep(20);
      await sleep(200);
      expect(holder.local.cancelled).not.toContain(job.id);
      await interrupt('acme', req.id);
      expect((await call).outcome.kind).toBe('cancelled');
      expect(holder.local.cancelled).toContain(job.id);
    } finally {
      await queue.close();
    }
    await apiA.close(req.id, 'deleted');
  });

  it('gives up on a call its worker does not answer within its limit and a margin, and stops it there', async () => {
    const commands = connect();
    const impatient = new RemoteSessionHosts({
      connection: url,
      prefix,
      directory: new SessionDirectory({ redis: commands, prefix, logger }),
      redis: commands,
      registry: new ClusterRegistry({ redis: commands, prefix, nodeId: 'reader', role: 'api', heartbeatMs: HEARTBEAT_MS, clock: Date, logger }),
      logger,
      retryAfterS: 1,
      callMarginMs: 100,
    });
    try {
      const opened = await impatient.open(openReq('acme'));
      const holder = workers.get(opened.node) as WorkerNode;
      // 'wait' ignores its limit: only an interrupt ends it.
      const job = callJob('wait', { timeoutMs: 300 });
      expect(await codeOf(impatient.call(opened.id, job))).toBe('internal');
      for (let i = 0; i < 100 && !holder.local.cancelled.includes(job.id); i++) await sleep(20);
      expect(holder.local.cancelled).toContain(job.id);
      await impatient.close(opened.id, 'deleted');
    } finally {
      await impatient.shutdown();
    }
  });

  it('refuses an open with no worker to hold it (503) and with every worker full (429)', async () => {
    const report = (nodeId: string, sessions: number, maxSessions: number): NodeReport => ({
      nodeId, role: 'worker', startedAt: '', seenAt: '', pid: 1, host: 'h', slots: 1, running: 0, sessions, maxSessions,
    });
    const hostsOver = (nodes: NodeReport[]) =>
      new RemoteSessionHosts({ connection: url, prefix, directory, redis: connections[0] as Redis, registry: { nodes: async () => nodes }, logger, retryAfterS: 7 });
    expect(await codeOf(hostsOver([]).open(openReq('acme')))).toBe('no_workers');
    // A worker that reports no sessions holds none.
    expect(await codeOf(hostsOver([{ ...report('x', 0, 0) }]).open(openReq('acme')))).toBe('no_workers');
    const full = hostsOver([report('x', 2, 2), report('y', 5, 4)]);
    const e = await full.open(openReq('acme')).catch((err: unknown) => err);
    expect(e).toMatchObject({ code: 'session_limit', retryAfterS: 7 });
  });

  it('opens each session on the worker with the fewest sessions', async () => {
    // Sessions of the tests before are closed: wait until both workers say so.
    await Promise.all([reported('w1', 0), reported('w2', 0)]);
    const first = await apiA.open(openReq('spread'));
    await reported(first.node, 1);
    const second = await apiB.open(openReq('spread'));
    expect(second.node).not.toBe(first.node);
    await Promise.all([apiA.close(first.id, 'deleted'), apiA.close(second.id, 'deleted')]);
  });

  it('refuses on the worker an operation whose job names another tenant than the session\'s', async () => {
    const req = openReq('acme');
    const opened = await apiA.open(req);
    // Whoever can write Redis can queue a job naming any tenant: the worker checks it against the session's.
    const name = sessionQueueName(opened.node);
    const queue = new Queue(name, { connection: redisOptionsOf(url), prefix });
    const events = new QueueEvents(name, { connection: redisOptionsOf(url), prefix });
    try {
      await events.waitUntilReady();
      const ask = async (op: string, data: Record<string, unknown>) => {
        const job = await queue.add(op, { v: 1, op, tenant: 'mallory', session: req.id, ...data }, { jobId: `${op}-${randomUUID()}` });
        return (await job.waitUntilFinished(events, 10_000)) as unknown;
      };
      expect(await ask('call', { call: { id: 'steal-1', code: 'steal', stdin: '', files: [], timeoutMs: 1000 } })).toMatchObject({ ok: false, code: 'not_found' });
      expect(await ask('get', { path: 'x', maxBytes: 10 })).toMatchObject({ ok: false, code: 'not_found' });
      expect(await ask('close', { reason: 'deleted' })).toMatchObject({ ok: false, code: 'not_found' });
      expect(workers.get(opened.node)?.local.calls.some((c) => c.code === 'steal')).toBe(false);
      expect((await apiB.get(req.id)).tenant).toBe('acme');
    } finally {
      await Promise.all([queue.close(), events.close()]);
    }
    await apiA.close(req.id, 'deleted');
  });

  it('ignores a malformed directory entry', async () => {
    const r = connections[0] as Redis;
    await r.set(`${prefix}:session:forged-1`, JSON.stringify({ id: 'forged-1', tenant: 'acme', node: 'w1' }), 'PX', 10_000);
    await r.zadd(`${prefix}:sessions:t:acme`, Date.now() + 10_000, 'forged-1');
    expect(await codeOf(apiA.get('forged-1'))).toBe('not_found');
    expect((await apiA.list('acme')).map((s) => s.id)).not.toContain('forged-1');
    await r.del(`${prefix}:session:forged-1`);
  });

  it('keeps the directory as the worker\'s sessions end on their own', async () => {
    const a = await apiA.open(openReq('ending'));
    const b = await apiA.open(openReq('ending'));
    const holderA = workers.get(a.node) as WorkerNode;
    const holderB = workers.get(b.node) as WorkerNode;
    // The manager tells of a session that ended (idle): its entry goes at once.
    holderA.local.sessions.delete(a.id);
    holderA.worker.sessionEnded(a);
    for (let i = 0; i < 50 && (await directory.get(a.id)); i++) await sleep(20);
    expect(await directory.get(a.id)).toBeUndefined();
    // Gone without a word: the next renewal drops it.
    holderB.local.sessions.delete(b.id);
    for (let i = 0; i < 50 && (await directory.get(b.id)); i++) await sleep(20);
    expect(await directory.get(b.id)).toBeUndefined();
    expect(await codeOf(apiB.get(b.id))).toBe('not_found');
  });

  it('drops a session whose sandbox was lost in a call, and does not file it again with the reply', async () => {
    const opened = await apiA.open(openReq('lost'));
    const r = await apiB.call(opened.id, callJob('lose'));
    expect(r.outcome).toMatchObject({ kind: 'failed', sandboxLost: true });
    for (let i = 0; i < 50 && (await directory.get(opened.id)); i++) await sleep(20);
    expect(await directory.get(opened.id)).toBeUndefined();
    // Past a renewal or two, it is still not back.
    await sleep(3 * HEARTBEAT_MS);
    expect(await directory.get(opened.id)).toBeUndefined();
    expect(await apiA.list('lost')).toEqual([]);
  });

  it('forgets, when it starts, what an earlier life of the worker left: its entries and its queued operations', async () => {
    const stale = { id: 'sess-stale-1', tenant: 'acme', runtime: 'runc' as const, limits: LIMITS, idleTimeoutMs: 1000, createdAtMs: 1, lastUsedAtMs: 1, expiresAtMs: 2, calls: 0, node: 'w-reborn' };
    await directory.put(stale, 60_000);
    const queue = new Queue(sessionQueueName('w-reborn'), { connection: redisOptionsOf(url), prefix });
    try {
      const open = { v: 1, op: 'open', tenant: 'acme', open: { id: 'sess-queued-1', limits: LIMITS, idleTimeoutMs: 1000, env: {}, files: [], createdAtMs: 1 } };
      await queue.add('open', open, { jobId: `open-${randomUUID()}` });
      const reborn = await startWorker('w-reborn');
      expect(await directory.get('sess-stale-1')).toBeUndefined();
      await sleep(300);
      expect(reborn.local.sessions.size).toBe(0);
      expect(await queue.getJobCounts('wait', 'active')).toEqual({ wait: 0, active: 0 });
      await die(reborn);
    } finally {
      await queue.close();
    }
  });

  it('answers promptly with an error for a session whose worker went away during a call', async () => {
    // Named to sort first: with no more sessions than the others, it is the one chosen.
    const dying = await startWorker('a1-dying', 100);
    const opened = await apiA.open(openReq('doomed'));
    expect(opened.node).toBe('a1-dying');
    const hung = codeOf(apiB.call(opened.id, callJob('hang', { timeoutMs: 600_000 })));
    for (let i = 0; i < 100 && !dying.local.calls.some((c) => c.session === opened.id); i++) await sleep(20);
    expect(dying.local.calls.map((c) => c.session)).toEqual([opened.id]);
    await die(dying);
    // Never the call's ten minutes: the wait ends once the registry no longer lists the worker.
    expect(await hung).toBe('session_ended');
    expect(await codeOf(apiA.get(opened.id))).toBe('not_found');
    expect((await apiA.list('doomed')).map((s) => s.id)).not.toContain(opened.id);
    dying.local.release();
  });

  it('answers session_ended for a call on a session whose worker is no longer listed, then not_found', async () => {
    const gone = await startWorker('a2-gone', 100);
    const opened = await apiA.open(openReq('doomed'));
    expect(opened.node).toBe('a2-gone');
    await die(gone);
    expect(await codeOf(apiB.call(opened.id, callJob('1', { timeoutMs: 600_000 })))).toBe('session_ended');
    expect(gone.local.calls).toEqual([]);
    expect(await codeOf(apiB.get(opened.id))).toBe('not_found');
    // Closing a session whose worker is gone: already closed.
    expect(await codeOf(apiA.close(opened.id, 'deleted'))).toBe('not_found');
  });
});

describe('the session directory', () => {
  const entry = (id: string, tenant: string): HostedSession => ({
    id,
    tenant,
    runtime: 'runsc',
    limits: LIMITS,
    idleTimeoutMs: 1000,
    createdAtMs: 1,
    lastUsedAtMs: 2,
    expiresAtMs: 3,
    calls: 0,
    node: 'nobody',
  });

  it('lists and counts a tenant\'s sessions, and forgets an entry its worker stopped renewing', async () => {
    await directory.put(entry('dir-keep', 'dirt'), 10_000);
    await directory.put(entry('dir-lapse', 'dirt'), 300);
    await directory.put(entry('dir-other', 'dirt2'), 10_000);
    expect((await directory.list('dirt')).map((s) => s.id).sort()).toEqual(['dir-keep', 'dir-lapse']);
    expect(await directory.count('dirt')).toBe(2);
    expect((await directory.list()).map((s) => s.id)).toEqual(expect.arrayContaining(['dir-keep', 'dir-lapse', 'dir-other']));
    await sleep(400);
    expect(await directory.get('dir-lapse')).toBeUndefined();
    expect((await directory.list('dirt')).map((s) => s.id)).toEqual(['dir-keep']);
    expect(await directory.count('dirt')).toBe(1);
    await directory.remove(entry('dir-keep', 'dirt'));
    await directory.remove(entry('dir-other', 'dirt2'));
    expect(await directory.list('dirt')).toEqual([]);
    expect(await directory.count('dirt2')).toBe(0);
  });

  it("gives a tenant no more places than its cap between two API nodes taking them at once, and lists none of them", async () => {
    const tenant = `capt-${randomBytes(3).toString('hex')}`;
    const ids = Array.from({ length: 10 }, (_, i) => `place-${i}-${randomBytes(3).toString('hex')}`);
    const taken = await Promise.all(ids.map((id, i) => (i % 2 === 0 ? apiA : apiB).reserve(tenant, id, 3)));
    expect(taken.filter(Boolean)).toHaveLength(3);
    expect(await directory.count(tenant)).toBe(3);
    // A place is no session: nothing is listed until a worker files one.
    expect(await apiA.list(tenant)).toEqual([]);
    const held = ids.filter((_, i) => taken[i]);
    const [first, second, third] = held as [string, string, string];
    // Taking a place already held changes nothing.
    expect(await apiB.reserve(tenant, first, 3)).toBe(true);
    expect(await directory.count(tenant)).toBe(3);
    // A place given back is free for the next open, on either node.
    await apiB.unreserve(tenant, third);
    expect(await directory.count(tenant)).toBe(2);
    const opened = await apiA.open({ ...openReq(tenant), id: third });
    expect(await apiB.reserve(tenant, third, 3)).toBe(true);
    expect(await directory.count(tenant)).toBe(3);
    expect((await apiB.list(tenant)).map((s) => s.id)).toEqual([opened.id]);
    expect(await apiA.reserve(tenant, 'one-too-many', 3)).toBe(false);
    // An opened session keeps its place when its opener gives the place back (an open whose answer was lost).
    await apiA.unreserve(tenant, third);
    expect(await directory.count(tenant)).toBe(3);
    await apiA.close(opened.id, 'deleted');
    for (const id of [first, second]) await apiA.unreserve(tenant, id);
    expect(await directory.count(tenant)).toBe(0);
  });

  it('lets the place of a node that never gave it back lapse', async () => {
    const tenant = `lapse-${randomBytes(3).toString('hex')}`;
    expect(await directory.reserve(tenant, 'p1', 1, 300)).toBe(true);
    expect(await directory.reserve(tenant, 'p2', 1, 300)).toBe(false);
    await sleep(400);
    expect(await directory.count(tenant)).toBe(0);
    expect(await directory.reserve(tenant, 'p2', 1, 300)).toBe(true);
    await expect(directory.reserve(tenant, 'p3', -1, 300)).rejects.toThrow(RangeError);
    await expect(directory.reserve(tenant, 'p3', 1, 0)).rejects.toThrow(RangeError);
  });

  it("does not list under a tenant an entry that names another tenant", async () => {
    const r = connections[0] as Redis;
    await directory.put(entry('dir-theirs', 'dirt3'), 10_000);
    await r.zadd(`${prefix}:sessions:t:dirt4`, Date.now() + 10_000, 'dir-theirs');
    expect(await directory.list('dirt4')).toEqual([]);
    await directory.remove(entry('dir-theirs', 'dirt3'));
    await r.del(`${prefix}:sessions:t:dirt4`);
  });
});
