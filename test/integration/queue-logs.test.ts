// A request followed across a cluster by its id, against a real Redis and without Docker: the API
// node's service writes its 'execution' line, the worker that ran the job its 'worker execution'
// line, both with the request id the job carried, and neither with anything the code held.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { redisOptionsOf } from '../../src/cluster/connection.ts';
import { QueueDispatch } from '../../src/cluster/queue-dispatch.ts';
import { QueueWorker } from '../../src/cluster/queue-worker.ts';
import type { Admission } from '../../src/cluster/wire.ts';
import { LOCAL_CALLER } from '../../src/core/caller.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { DefaultExecutionService } from '../../src/core/execution-service.ts';
import type { AcceptedExecution, Dispatch, DispatchEvents, ExecutionBackend, Logger } from '../../src/core/ports.ts';
import { ExecutionRequest, type ExecutionResult } from '../../src/core/schemas.ts';
import { defaultConfig, MemoryStore } from '../unit/fakes.ts';

const REDIS_URL = process.env.PYBOX_TEST_REDIS_URL ?? 'redis://127.0.0.1:56379';
const PREFIX = `pbqlog-${process.pid}-${Date.now().toString(36)}`;
const MARKER = `MaRkEr-${randomUUID().slice(0, 8)}`;

interface Entry {
  level: string;
  msg: string;
  fields: Record<string, unknown> | undefined;
}
function recording(): Logger & { entries: Entry[] } {
  const entries: Entry[] = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void entries.push({ level, msg, fields });
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

const admission: Admission = { admit: async () => ({ admitted: true, inFlight: 1 }), release: async () => {} };

/** The worker's LocalDispatch stand-in: a slot at once, then a result whose output holds the marker. */
class EchoRun implements Dispatch {
  readonly seen: AcceptedExecution[] = [];
  async submit(e: AcceptedExecution, _signals: { waiting: AbortSignal; running: AbortSignal }, events?: DispatchEvents): Promise<ExecutionResult> {
    this.seen.push(e);
    events?.started?.();
    return {
      id: e.job.id,
      status: 'error',
      success: false,
      exitCode: 1,
      signal: null,
      stdout: `${e.job.code} ${e.job.stdin} ${MARKER}`,
      stderr: `ValueError: ${MARKER}`,
      truncated: { stdout: false, stderr: false },
      durationMs: 7,
      error: { type: 'ValueError', message: MARKER, line: 1 },
      feedback: `failed: ${MARKER}`,
      runtime: 'runsc',
      limits: e.limits,
      createdAt: new Date(e.createdAtMs).toISOString(),
      finishedAt: new Date().toISOString(),
    };
  }
}

const backend: ExecutionBackend = {
  describe: async () => ({ runtime: 'runsc', availableRuntimes: ['runsc'], image: 'img', python: null, packages: {} }),
  identity: () => ({ runtime: 'runsc', image: 'img' }),
  checks: async () => ({ checks: { engine: true, image: true } }),
};

afterAll(async () => {
  const admin = new Redis({ ...redisOptionsOf(REDIS_URL), maxRetriesPerRequest: 1 });
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await admin.del(...keys);
  } while (cursor !== '0');
  await admin.quit();
});

describe('logs across the queue', () => {
  it("the API node's execution line and the worker's share the request id; no line holds the run's content", async () => {
    const apiLog = recording();
    const workerLog = recording();
    const clock = { now: () => Date.now() };
    const dispatch = new QueueDispatch({
      connection: REDIS_URL,
      prefix: PREFIX,
      admission,
      tenantLimitError: (max, retryAfterS) => new PyboxError('rate_limited', `at most ${max}`, { retryAfterS }),
      store: new MemoryStore(),
      results: { limits: defaultConfig().limits, clock },
      maxQueue: 10,
      retryAfterS: 2,
      registry: { nodes: async () => [{ nodeId: 'w1', role: 'worker', startedAt: '', seenAt: new Date().toISOString(), pid: 1, host: 'h', slots: 1, running: 0, runtime: 'runsc' }] },
      logger: apiLog,
    });
    const run = new EchoRun();
    const worker = new QueueWorker({ connection: REDIS_URL, prefix: PREFIX, nodeId: 'worker-logs-1', slots: 1, lockMs: 5000, run, admission, logger: workerLog });
    const service = new DefaultExecutionService({ dispatch, backend, store: new MemoryStore(), limits: defaultConfig().limits, clock, logger: apiLog, newId: randomUUID });
    try {
      await worker.start();
      const request = ExecutionRequest.parse({ code: `print("${MARKER}")`, stdin: MARKER, env: { K: MARKER }, context: { k: MARKER }, files: [{ path: 'in.txt', content: MARKER }] });
      const result = await service.execute(LOCAL_CALLER, request, { requestId: 'cluster-req-1' });
      expect(result.stdout).toContain(MARKER);
      expect(run.seen[0]?.requestId).toBe('cluster-req-1');

      const apiLine = apiLog.entries.filter((e) => e.msg === 'execution');
      expect(apiLine).toHaveLength(1);
      expect(apiLine[0]?.fields).toMatchObject({ executionId: result.id, requestId: 'cluster-req-1', tenant: 'local', status: 'error', runtime: 'runsc', durationMs: 7, exitCode: 1 });
      const workerLine = workerLog.entries.filter((e) => e.msg === 'worker execution');
      expect(workerLine).toHaveLength(1);
      expect(workerLine[0]?.level).toBe('info');
      expect(workerLine[0]?.fields).toMatchObject({ executionId: result.id, requestId: 'cluster-req-1', tenant: 'local', nodeId: 'worker-logs-1', status: 'error', durationMs: 7, exitCode: 1 });
      expect(workerLine[0]?.fields?.queueWaitMs).toEqual(expect.any(Number));
      expect(JSON.stringify([apiLog.entries, workerLog.entries])).not.toContain(MARKER);
    } finally {
      await worker.close(0);
      await dispatch.close();
    }
  });
});
