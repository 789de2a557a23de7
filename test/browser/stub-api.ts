// A stand-in for pybox's API that speaks the contract of issue 12 (server-sent events, sessions,
// rich outputs) before the real server does, so the page's side of it is tested now: the real web
// routes serve the pages, and these few routes answer as the plan and src/core/schemas.ts say.
import { deflateSync, crc32 } from 'node:zlib';
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { ExecutionResult, ResultOutput, RuntimeInfo, SessionInfo } from '../../src/core/schemas.ts';
import { DEFAULT_WEB_DIR, webRoutes } from '../../src/http/routes/web.ts';

/** A PNG of `w`×`h` pixels, one colour: enough for the page to show it as a figure. */
export function solidPng(w: number, h: number, rgb: [number, number, number]): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(w, 0);
  header.writeUInt32BE(h, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const row = Buffer.concat([Buffer.from([0]), Buffer.alloc(w * 3).map((_, i) => rgb[i % 3] ?? 0)]);
  const pixels = deflateSync(Buffer.concat(Array.from({ length: h }, () => row)));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header), chunk('IDAT', pixels), chunk('IEND', Buffer.alloc(0))]);
}

const LIMITS = { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 1_048_576 };

function result(id: string, over: Partial<ExecutionResult>): ExecutionResult {
  const now = new Date().toISOString();
  return {
    id,
    status: 'completed',
    success: true,
    exitCode: 0,
    signal: null,
    stdout: '',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 123,
    feedback: 'The code ran and exited 0.',
    runtime: 'runc',
    limits: LIMITS,
    createdAt: now,
    finishedAt: now,
    ...over,
  };
}

export interface StubApi {
  app: Hono;
  /** Lets the run that waits send the rest of its stream and its result. */
  release(): void;
  /** Session ids deleted so far. */
  readonly deleted: string[];
  /** Session ids opened so far. */
  readonly opened: string[];
}

export function stubApi(): StubApi {
  const app = new Hono();
  const history: ExecutionResult[] = [];
  const sessions = new Map<string, number>();
  const deleted: string[] = [];
  const opened: string[] = [];
  let released: () => void = () => undefined;
  let gate = new Promise<void>((r) => (released = r));
  let seq = 0;

  app.route('/', webRoutes(DEFAULT_WEB_DIR));

  const runtimes: RuntimeInfo = {
    runtime: 'runc',
    availableRuntimes: ['runc'],
    image: 'stub',
    python: '3.11',
    packages: {},
    limits: { defaults: { timeoutMs: 10_000, memoryMb: 256, cpus: 1 }, max: { timeoutMs: 60_000, memoryMb: 1024, cpus: 2 }, outputBytes: 1_048_576, floodBytes: 8_388_608 },
  };
  app.get('/v1/runtimes', (c) => c.json(runtimes));
  app.get('/v1/executions', (c) => c.json({ items: [...history].reverse(), nextCursor: null }));
  app.get('/v1/executions/:id', (c) => {
    const found = history.find((r) => r.id === c.req.param('id'));
    return found ? c.json(found) : c.json({ error: { code: 'not_found', message: 'no such execution' } }, 404);
  });

  const figure: ResultOutput = { type: 'image/png', kind: 'figure', data: solidPng(320, 200, [31, 78, 140]).toString('base64') };
  const table: ResultOutput = { type: 'text/html', kind: 'result', data: '<table><tr><th>a</th></tr><tr><td>cell-1</td></tr></table><script>parent.document.title="owned"</script>' };

  app.post('/v1/executions', (c) => {
    const id = `stub-${++seq}`;
    const done = result(id, {
      stdout: 'step 1\nstep 2\n',
      stderr: 'a warning\n',
      outputs: [figure, table],
      files: [{ path: 'out/report.txt', size: 6, contentBase64: Buffer.from('report').toString('base64') }],
      feedback: 'The code ran and exited 0. It produced 1 figure.',
    });
    history.push(done);
    if (!(c.req.header('accept') ?? '').includes('text/event-stream')) return c.json(done);
    return streamSSE(c, async (s) => {
      await s.writeSSE({ event: 'stdout', data: JSON.stringify({ text: 'step 1\n' }) });
      await gate;
      gate = new Promise<void>((r) => (released = r));
      await s.writeSSE({ event: 'stderr', data: JSON.stringify({ text: 'a warning\n' }) });
      await s.writeSSE({ event: 'stdout', data: JSON.stringify({ text: 'step 2\n' }) });
      await s.writeSSE({ event: 'result', data: JSON.stringify(done) });
    });
  });

  app.post('/v1/sessions', (c) => {
    const id = `sess-${++seq}-${'x'.repeat(8)}`;
    sessions.set(id, 0);
    opened.push(id);
    const now = new Date().toISOString();
    const info: SessionInfo = { id, state: 'active', runtime: 'runc', limits: LIMITS, idleTimeoutMs: 600_000, createdAt: now, lastUsedAt: now, idleExpiresAt: now, expiresAt: now, calls: 0, endedReason: null };
    return c.json(info, 201);
  });
  app.post('/v1/sessions/:id/executions', async (c) => {
    const id = c.req.param('id');
    const calls = sessions.get(id);
    if (calls === undefined) return c.json({ error: { code: 'not_found', message: 'no such session' } }, 404);
    sessions.set(id, calls + 1);
    const body = (await c.req.json()) as { code: string };
    const done = result(`stub-${++seq}`, {
      stdout: `call ${calls + 1} of ${id}\n`,
      outputs: [{ type: 'text/plain', kind: 'result', data: `${body.code.length} characters` }],
      session: { sessionId: id, call: calls + 1, stateLost: false, ended: false },
    });
    history.push(done);
    return streamSSE(c, async (s) => {
      await s.writeSSE({ event: 'stdout', data: JSON.stringify({ text: done.stdout }) });
      await s.writeSSE({ event: 'result', data: JSON.stringify(done) });
    });
  });
  app.delete('/v1/sessions/:id', (c) => {
    deleted.push(c.req.param('id'));
    sessions.delete(c.req.param('id'));
    return c.body(null, 204);
  });

  return { app, release: () => released(), deleted, opened };
}
