// A stand-in for a pybox server answering the routes the CLI and the client use (executions, sync
// and async, with test cases; batches with paging, events and cancellation) per the contracts in
// src/core/schemas.ts, so the CLI is tested without Docker and without the server's own parts.
//
// The fake "runs" every program as `cat`: its stdout is its stdin (then its arguments, one per
// line). Comment lines in the code steer it:
//   # fake: exit N            the program exits N (status error when N != 0)
//   # fake: stderr TEXT       it writes TEXT to stderr
//   # fake: status S          the execution ends with status S (timeout, oom, validation_failed…)
//   # fake: verdict NAME=V    the case named NAME gets verdict V (timeout, oom, error…)
//   # fake: http N            the request is answered with HTTP N (an error body)
//   # fake: busy N            the first N requests of this code get 503 queue_full, Retry-After: 0
//   # fake: slow MS           the answer takes MS milliseconds
// A batch labelled `drop-after-N` ends its first event stream after N events, without `done`; one
// labelled `hang` sends no event at all until the client goes away.
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import {
  BatchRequest,
  EXECUTION_STATUSES,
  ExecutionRequest,
  TEST_VERDICTS,
  type BatchInfo,
  type BatchItem,
  type ExecutionResult,
  type ExecutionStatus,
  type TestResult,
  type TestSummary,
  type TestVerdict,
} from '../../src/core/schemas.ts';
import { serveApp, type Served } from './serve.ts';

interface Directives {
  exit: number;
  stderr: string;
  status?: ExecutionStatus;
  verdicts: Map<string, TestVerdict>;
  http?: number;
  busy: number;
  slowMs: number;
}

function directives(code: string): Directives {
  const d: Directives = { exit: 0, stderr: '', verdicts: new Map(), busy: 0, slowMs: 0 };
  for (const line of code.split('\n')) {
    const m = /^# fake: (\w+) (.*)$/.exec(line.trim());
    if (!m) continue;
    const [, what, rest] = m as unknown as [string, string, string];
    if (what === 'exit') d.exit = Number(rest);
    else if (what === 'stderr') d.stderr += rest + '\n';
    else if (what === 'status') d.status = rest as ExecutionStatus;
    else if (what === 'verdict') {
      const eq = rest.lastIndexOf('=');
      d.verdicts.set(rest.slice(0, eq), rest.slice(eq + 1) as TestVerdict);
    } else if (what === 'http') d.http = Number(rest);
    else if (what === 'busy') d.busy = Number(rest);
    else if (what === 'slow') d.slowMs = Number(rest);
  }
  return d;
}

const trimmed = (s: string) =>
  s
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n')
    .replace(/\n+$/, '');

export interface FakePybox extends Served {
  /** Every valid execution request received (sync, async and batch items), in order. */
  requests: ExecutionRequest[];
  /** The most execution requests that were being answered at once. */
  maxInFlight: number;
  /** Headers of each events request (Last-Event-ID). */
  eventRequests: Array<string | null>;
  cancelled: string[];
  resetMaxInFlight(): void;
}

export async function startFakePybox(): Promise<FakePybox> {
  const state = {
    requests: [] as ExecutionRequest[],
    maxInFlight: 0,
    inFlight: 0,
    busySeen: new Map<string, number>(),
    eventRequests: [] as Array<string | null>,
    cancelled: [] as string[],
    executions: new Map<string, { result: ExecutionResult; polls: number }>(),
    batches: new Map<string, { info: BatchInfo; items: BatchItem[]; dropAfter: number | null; connections: number }>(),
    seq: 0,
  };
  const now = () => new Date().toISOString();
  const newId = (prefix: string) => `${prefix}-${++state.seq}`;

  function run(request: ExecutionRequest): ExecutionResult {
    const d = directives(request.code);
    const base = {
      id: newId('exec'),
      signal: null,
      truncated: { stdout: false, stderr: false },
      durationMs: 7,
      feedback: 'fake',
      runtime: 'runc' as const,
      limits: { timeoutMs: request.timeoutMs ?? 30_000, memoryMb: request.memoryMb ?? 256, cpus: 1, outputBytes: 50_000 },
      createdAt: now(),
      finishedAt: now(),
    };
    if (!request.tests) {
      const status: ExecutionStatus = d.status ?? (d.exit === 0 ? 'completed' : 'error');
      const stdout = (request.stdin ?? '') + (request.args ?? []).map((a) => `${a}\n`).join('');
      return {
        ...base,
        status,
        success: status === 'completed',
        exitCode: status === 'completed' || status === 'error' ? d.exit : null,
        stdout: status === 'validation_failed' ? '' : stdout,
        stderr: d.stderr,
        error: status === 'validation_failed' ? { type: 'SyntaxError', message: 'invalid syntax', line: 1, column: 5, text: request.code.split('\n')[0] ?? '', caret: '    ^' } : null,
      };
    }
    const tests: TestResult[] = request.tests.map((c, index) => {
      const name = c.name ?? `case ${index + 1}`;
      const stdout = (c.stdin ?? '') + (c.args ?? []).map((a) => `${a}\n`).join('');
      let verdict: TestVerdict = d.verdicts.get(name) ?? 'passed';
      let mismatch: TestResult['mismatch'] = null;
      if (d.status === 'validation_failed') verdict = 'not_run';
      else if (!d.verdicts.has(name)) {
        if (c.expectedExitCode !== undefined && c.expectedExitCode !== d.exit) {
          verdict = 'failed';
          mismatch = { line: null, expected: String(c.expectedExitCode), actual: String(d.exit), message: `exit code ${d.exit}, expected ${c.expectedExitCode}` };
        } else if (c.expectedExitCode === undefined && d.exit !== 0) verdict = 'error';
        else if (c.expectedStdout !== undefined && trimmed(c.expectedStdout) !== trimmed(stdout)) {
          verdict = 'failed';
          mismatch = { line: 1, expected: c.expectedStdout, actual: stdout, message: 'line 1 differs' };
        }
      }
      return {
        index,
        name,
        verdict,
        exitCode: verdict === 'not_run' || verdict === 'timeout' || verdict === 'oom' ? null : d.exit,
        signal: null,
        stdout: verdict === 'not_run' ? '' : stdout,
        stderr: d.stderr,
        truncated: { stdout: false, stderr: false },
        durationMs: 3,
        mismatch,
        ...(verdict === 'error' ? { error: { type: 'RuntimeError', message: 'boom', line: 2, traceback: 'Traceback (most recent call last):\n  File "main.py", line 2\nRuntimeError: boom\n' } } : {}),
      };
    });
    const summary = Object.fromEntries([['total', tests.length], ...TEST_VERDICTS.map((v) => [v, tests.filter((t) => t.verdict === v).length])]) as TestSummary;
    const status = d.status ?? 'completed';
    return {
      ...base,
      status,
      success: status === 'completed' && summary.passed === summary.total,
      exitCode: null,
      stdout: '',
      stderr: '',
      tests,
      summary,
      error: status === 'validation_failed' ? { type: 'SyntaxError', message: 'invalid syntax', line: 1 } : null,
    };
  }

  const invalid = (issues: Array<{ path: PropertyKey[]; message: string }>) => ({
    error: { code: 'invalid_request', message: 'the request is not valid', details: issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })) },
  });

  const app = new Hono();
  app.post('/v1/executions', async (c) => {
    const body = (await c.req.json()) as Record<string, unknown>;
    const isAsync = c.req.query('async') === 'true';
    const { webhook: _webhook, ...rest } = body;
    const parsed = ExecutionRequest.safeParse(isAsync ? rest : body);
    if (!parsed.success) return c.json(invalid(parsed.error.issues), 400);
    const request = parsed.data;
    const d = directives(request.code);
    if (d.http) return c.json({ error: { code: d.http === 404 ? 'not_found' : 'internal', message: `fake HTTP ${d.http}` } }, d.http as 500);
    if (d.busy > 0) {
      const seen = state.busySeen.get(request.code) ?? 0;
      state.busySeen.set(request.code, seen + 1);
      if (seen < d.busy) return c.json({ error: { code: 'queue_full', message: 'every slot is busy' } }, 503, { 'retry-after': '0' });
    }
    state.requests.push(request);
    state.inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    try {
      await new Promise((r) => setTimeout(r, d.slowMs || 25));
      const result = run(request);
      if (isAsync) {
        state.executions.set(result.id, { result, polls: 0 });
        return c.json({ id: result.id, state: 'queued', batchId: null, createdAt: result.createdAt }, 202, { location: `/v1/executions/${result.id}` });
      }
      return c.json(result);
    } finally {
      state.inFlight--;
    }
  });

  app.get('/v1/executions/:id', (c) => {
    const entry = state.executions.get(c.req.param('id'));
    if (!entry) return c.json({ error: { code: 'not_found', message: 'no such execution' } }, 404);
    if (entry.polls++ < 2) return c.json({ id: entry.result.id, state: entry.polls === 1 ? 'queued' : 'running', batchId: null, createdAt: entry.result.createdAt }, 202, { 'retry-after': '1' });
    return c.json(entry.result);
  });

  app.post('/v1/batches', async (c) => {
    const parsed = BatchRequest.safeParse(await c.req.json());
    if (!parsed.success) return c.json(invalid(parsed.error.issues), 400);
    if (parsed.data.items.length > 50) return c.json({ error: { code: 'invalid_request', message: 'at most 50 items', details: [{ path: 'items', message: 'at most 50 items' }] } }, 400);
    const id = newId('batch');
    const items: BatchItem[] = parsed.data.items.map((request, index) => {
      state.requests.push(request);
      const { files: _files, ...result } = run(request);
      return { index, executionId: result.id, state: 'done', result };
    });
    const byStatus = Object.fromEntries(EXECUTION_STATUSES.map((s) => [s, items.filter((i) => i.result?.status === s).length])) as BatchInfo['byStatus'];
    const label = parsed.data.label ?? null;
    const info: BatchInfo = { id, state: 'completed', label, total: items.length, done: items.length, byStatus, createdAt: now(), finishedAt: now(), webhook: null };
    const drop = label ? /^drop-after-(\d+)$/.exec(label) : null;
    state.batches.set(id, { info, items, dropAfter: drop ? Number(drop[1]) : null, connections: 0 });
    return c.json({ ...info, state: 'running', done: 0, finishedAt: null }, 202, { location: `/v1/batches/${id}` });
  });

  app.get('/v1/batches/:id', (c) => {
    const batch = state.batches.get(c.req.param('id'));
    if (!batch) return c.json({ error: { code: 'not_found', message: 'no such batch' } }, 404);
    const limit = Number(c.req.query('limit') ?? 100);
    const from = Number(c.req.query('cursor') ?? 0);
    const items = batch.items.slice(from, from + limit);
    const next = from + limit < batch.items.length ? String(from + limit) : null;
    return c.json({ ...batch.info, items, nextCursor: next });
  });

  app.get('/v1/batches/:id/events', (c) => {
    const batch = state.batches.get(c.req.param('id'));
    if (!batch) return c.json({ error: { code: 'not_found', message: 'no such batch' } }, 404);
    const last = c.req.header('last-event-id') ?? null;
    state.eventRequests.push(last);
    const connection = batch.connections++;
    return streamSSE(c, async (stream) => {
      if (batch.info.label === 'hang') return new Promise<void>((resolve) => stream.onAbort(resolve));
      let sent = 0;
      for (const item of batch.items) {
        const seq = item.index + 1;
        if (last !== null && seq <= Number(last)) continue;
        if (connection === 0 && batch.dropAfter !== null && sent >= batch.dropAfter) return; // the connection drops
        await stream.writeSSE({ event: 'item', id: String(seq), data: JSON.stringify({ batchId: batch.info.id, seq, item }) });
        sent++;
      }
      await stream.writeSSE({ event: 'done', data: JSON.stringify(batch.info) });
    });
  });

  app.delete('/v1/batches/:id', (c) => {
    const batch = state.batches.get(c.req.param('id'));
    if (!batch) return c.json({ error: { code: 'not_found', message: 'no such batch' } }, 404);
    state.cancelled.push(batch.info.id);
    return c.json({ ...batch.info, state: 'cancelled' });
  });

  const served = await serveApp(app);
  return {
    ...served,
    get requests() {
      return state.requests;
    },
    get maxInFlight() {
      return state.maxInFlight;
    },
    get eventRequests() {
      return state.eventRequests;
    },
    get cancelled() {
      return state.cancelled;
    },
    resetMaxInFlight: () => void (state.maxInFlight = 0),
  };
}
