// Streaming through a cluster: an execution sent to an API node runs on a worker, and its output
// comes back as it is written (BullMQ job progress, handed on by the API node's QueueEvents) as
// server-sent events, capped, with the result last. One API node and one worker, each its own
// process, on a Redis and a PostgreSQL of the test's own.
//
// Live rather than all at the end, shown without timing: the client hangs up at the first chunk of
// a program that then sleeps for a minute, and the run ends cancelled without its second line.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PyboxClient, type RunStreamEvent } from '../../src/client/client.ts';
import { ClusterInfo, type ExecutionResult } from '../../src/core/schemas.ts';
import { Cluster, PrivatePostgres, PrivateRedis, type NodeProcess } from '../support/cluster.ts';

const OUTPUT_BYTES = 4096;

let redis: PrivateRedis;
let postgres: PrivatePostgres;
let cluster: Cluster;
let api: NodeProcess;
let client: PyboxClient;

async function until(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  [redis, postgres] = await Promise.all([PrivateRedis.start(), PrivatePostgres.start()]);
  cluster = new Cluster({
    postgresUrl: postgres.url,
    redisUrl: redis.url,
    config: {
      engine: { runtime: 'runc' },
      pool: { size: { runc: 1, runsc: 1 }, preload: { runc: [], runsc: [] } },
      limits: { outputBytes: OUTPUT_BYTES },
      cluster: { workerSlots: 2 },
    },
  });
  [api] = await Promise.all([cluster.start('api-a', 'api'), cluster.start('worker-a', 'worker')]);
  client = new PyboxClient({ baseUrl: api.url, retries: 0 });
  await until('a healthy worker', async () => {
    const res = await fetch(`${api.url}/v1/cluster`);
    return ClusterInfo.parse(await res.json()).nodes.some((n) => n.role === 'worker' && n.healthy);
  });
}, 240_000);

afterAll(async () => {
  await cluster?.close();
  await Promise.all([redis?.close(), postgres?.close()]);
}, 120_000);

async function collect(stream: AsyncIterable<RunStreamEvent>): Promise<RunStreamEvent[]> {
  const out: RunStreamEvent[] = [];
  for await (const e of stream) out.push(e);
  return out;
}

const resultOf = (events: RunStreamEvent[]): ExecutionResult => {
  const last = events.at(-1);
  if (last?.type !== 'result') throw new Error(`the stream did not end with a result: ${JSON.stringify(events)}`);
  return last.result;
};

const textOf = (events: RunStreamEvent[], type: 'stdout' | 'stderr') => events.flatMap((e) => (e.type === type ? [e.text] : [])).join('');

describe('streaming through an API node from a worker', () => {
  it('brings what the worker\'s sandbox writes as output events, then the result last', async () => {
    const events = await collect(client.executeStream({ code: 'import time\nprint("first", flush=True)\ntime.sleep(0.5)\nprint("second")', timeoutMs: 20_000 }));
    expect(resultOf(events)).toMatchObject({ status: 'completed', stdout: 'first\nsecond\n' });
    expect(textOf(events, 'stdout')).toBe('first\nsecond\n');
    expect(events.filter((e) => e.type === 'result')).toHaveLength(1);
  });

  it('output arrives while the code runs: a client that hangs up at the first chunk cancels the run on the worker', async () => {
    const before = new Set((await client.history({ limit: 100 })).items.map((r) => r.id));
    const stream = client.executeStream({ code: 'import time\nprint("first", flush=True)\ntime.sleep(60)\nprint("second")', timeoutMs: 120_000 });
    const seen: RunStreamEvent[] = [];
    for await (const e of stream) {
      seen.push(e);
      break; // closes the stream: the API node cancels the run
    }
    expect(seen).toEqual([{ type: 'stdout', text: expect.stringMatching(/^first/) }]);
    let result: ExecutionResult | undefined;
    await until('the cancelled run in the history', async () => {
      result = (await client.history({ limit: 20 })).items.find((r) => !before.has(r.id) && r.status !== 'completed');
      return result !== undefined;
    });
    expect(result).toMatchObject({ status: 'cancelled', stdout: 'first\n' });
  });

  it('streams at most outputBytes of each stream; the result says it was truncated', async () => {
    const code = 'import sys\nfor i in range(300):\n    print("x" * 99)\nsys.stderr.write("y" * 9000)\n';
    const events = await collect(client.executeStream({ code, timeoutMs: 20_000 }));
    const result = resultOf(events);
    expect(Buffer.byteLength(textOf(events, 'stdout'))).toBe(OUTPUT_BYTES);
    expect(textOf(events, 'stdout')).toBe(result.stdout);
    expect(textOf(events, 'stderr')).toBe(result.stderr);
    expect(Buffer.byteLength(textOf(events, 'stderr'))).toBe(OUTPUT_BYTES);
    expect(result.truncated).toEqual({ stdout: true, stderr: true });
  });

  it('a plain request through the same node is not streamed and is answered as before', async () => {
    const result = await client.execute({ code: 'print("plain")' });
    expect(result).toMatchObject({ status: 'completed', stdout: 'plain\n' });
  });
});
