// The typed client's streamed runs (executeStream, execute with callbacks) against a scripted fetch:
// the events it yields, the errors events and answers become, the retry before the stream starts,
// and the stream closed when the caller stops early.
import { describe, expect, it } from 'vitest';
import { PyboxClient, type FetchLike, type RunStreamEvent } from '../../src/client/client.ts';
import { ConnectionError, QueueFullError, ServiceUnavailableError, UnexpectedResponseError } from '../../src/client/errors.ts';
import { ExecutionResult } from '../../src/core/schemas.ts';

const RESULT = ExecutionResult.parse({
  id: 'exec-1',
  status: 'completed',
  success: true,
  exitCode: 0,
  signal: null,
  stdout: 'a\nb\n',
  stderr: 'w\n',
  truncated: { stdout: false, stderr: false },
  durationMs: 12,
  error: null,
  feedback: 'ok',
  runtime: 'runc',
  limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 },
  createdAt: '2026-01-01T00:00:00.000Z',
  finishedAt: '2026-01-01T00:00:00.012Z',
});

const ev = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

/** An event-stream answer whose body is `parts`, each a separate chunk (split anywhere). */
function sse(parts: string[], onCancel?: () => void): Response {
  const encoder = new TextEncoder();
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      const part = parts[i++];
      if (part === undefined) controller.close();
      else controller.enqueue(encoder.encode(part));
    },
    cancel: () => onCancel?.(),
  });
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
}

function client(answers: Array<Response | ((init: RequestInit) => Response)>) {
  const sent: Array<{ url: string; init: RequestInit }> = [];
  const fetch: FetchLike = async (url, init) => {
    sent.push({ url, init });
    const next = answers.shift();
    if (!next) throw new Error('no more answers');
    return typeof next === 'function' ? next(init) : next;
  };
  return { c: new PyboxClient({ baseUrl: 'http://pybox.test', fetch }), sent };
}

async function collect(it: AsyncIterable<RunStreamEvent>): Promise<RunStreamEvent[]> {
  const out: RunStreamEvent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

describe('executeStream', () => {
  it('POSTs with Accept: text/event-stream and yields output events, then the result last', async () => {
    const stream = ev('stdout', { text: 'a\n' }) + ': keep-alive\n\n' + ev('stderr', { text: 'w\n' }) + ev('stdout', { text: 'b\n' }) + ev('result', RESULT);
    // Split inside events and inside a line: the parser puts them back together.
    const { c, sent } = client([sse([stream.slice(0, 7), stream.slice(7, 40), stream.slice(40)])]);
    const events = await collect(c.executeStream({ code: 'print(1)' }));
    expect(events).toEqual([
      { type: 'stdout', text: 'a\n' },
      { type: 'stderr', text: 'w\n' },
      { type: 'stdout', text: 'b\n' },
      { type: 'result', result: RESULT },
    ]);
    expect(sent[0]?.url).toBe('http://pybox.test/v1/executions');
    expect(sent[0]?.init.method).toBe('POST');
    expect((sent[0]?.init.headers as Record<string, string>).accept).toBe('text/event-stream');
    expect(JSON.parse(String(sent[0]?.init.body))).toEqual({ code: 'print(1)' });
  });

  it('ignores event types it does not know (a newer server)', async () => {
    const { c } = client([sse([ev('figure', { x: 1 }) + ev('stdout', { text: 'x' }) + ev('result', RESULT)])]);
    expect((await collect(c.executeStream({ code: 'x' }))).map((e) => e.type)).toEqual(['stdout', 'result']);
  });

  it('throws an error event as the error class of its code', async () => {
    const { c } = client([sse([ev('stdout', { text: 'a' }) + ev('error', { error: { code: 'engine_unavailable', message: 'the engine went away' } })])]);
    const seen: RunStreamEvent[] = [];
    const run = (async () => {
      for await (const e of c.executeStream({ code: 'x' })) seen.push(e);
    })();
    await expect(run).rejects.toBeInstanceOf(ServiceUnavailableError);
    await expect(run).rejects.toMatchObject({ code: 'engine_unavailable', message: 'the engine went away' });
    expect(seen).toEqual([{ type: 'stdout', text: 'a' }]);
  });

  it('retries a 503 with Retry-After answered before the stream began', async () => {
    const busy = new Response(JSON.stringify({ error: { code: 'queue_full', message: 'busy' } }), { status: 503, headers: { 'content-type': 'application/json', 'retry-after': '0' } });
    const { c, sent } = client([busy, sse([ev('result', RESULT)])]);
    expect(await collect(c.executeStream({ code: 'x' }))).toEqual([{ type: 'result', result: RESULT }]);
    expect(sent).toHaveLength(2);
  });

  it('a refusal it may not retry is thrown as execute throws it', async () => {
    const busy = () => new Response(JSON.stringify({ error: { code: 'queue_full', message: 'busy' } }), { status: 503, headers: { 'content-type': 'application/json', 'retry-after': '0' } });
    const { c } = client([busy(), busy(), busy()]);
    await expect(collect(c.executeStream({ code: 'x' }))).rejects.toBeInstanceOf(QueueFullError);
  });

  it('takes a plain JSON answer (a server that does not stream) as the result alone', async () => {
    const { c } = client([new Response(JSON.stringify(RESULT), { status: 200, headers: { 'content-type': 'application/json' } })]);
    expect(await collect(c.executeStream({ code: 'x' }))).toEqual([{ type: 'result', result: RESULT }]);
  });

  it('a stream that ends before the result is a ConnectionError', async () => {
    const { c } = client([sse([ev('stdout', { text: 'a' })])]);
    await expect(collect(c.executeStream({ code: 'x' }))).rejects.toBeInstanceOf(ConnectionError);
  });

  it('an event that does not match the API is an UnexpectedResponseError', async () => {
    for (const bad of [ev('stdout', { txt: 'a' }), 'event: result\ndata: {not json\n\n', ev('result', { id: 1 }), ev('error', { nope: true })]) {
      const { c } = client([sse([bad])]);
      await expect(collect(c.executeStream({ code: 'x' }))).rejects.toBeInstanceOf(UnexpectedResponseError);
    }
  });

  it('leaving the loop early closes the stream (which cancels the run on the server)', async () => {
    let cancelled = false;
    let signal: AbortSignal | undefined;
    const { c } = client([
      (init) => {
        signal = init.signal ?? undefined;
        return sse([ev('stdout', { text: 'a' }), ev('stdout', { text: 'b' }), ev('result', RESULT)], () => (cancelled = true));
      },
    ]);
    for await (const e of c.executeStream({ code: 'x' })) {
      expect(e).toEqual({ type: 'stdout', text: 'a' });
      break;
    }
    expect(cancelled).toBe(true);
    expect(signal?.aborted).toBe(true);
  });
});

describe('execute with callbacks', () => {
  it('streams the run, tells each callback its stream\'s text as it comes, and returns the result', async () => {
    const { c, sent } = client([sse([ev('stdout', { text: 'a\n' }), ev('stderr', { text: 'w\n' }), ev('stdout', { text: 'b\n' }), ev('result', RESULT)])]);
    const out: string[] = [];
    const err: string[] = [];
    const result = await c.execute({ code: 'x' }, { onStdout: (t) => out.push(t), onStderr: (t) => err.push(t) });
    expect(result).toEqual(RESULT);
    expect(out).toEqual(['a\n', 'b\n']);
    expect(err).toEqual(['w\n']);
    expect((sent[0]?.init.headers as Record<string, string>).accept).toBe('text/event-stream');
  });

  it('without callbacks it asks for plain JSON, as before', async () => {
    const { c, sent } = client([new Response(JSON.stringify(RESULT), { status: 200, headers: { 'content-type': 'application/json' } })]);
    expect(await c.execute({ code: 'x' })).toEqual(RESULT);
    expect((sent[0]?.init.headers as Record<string, string>).accept).toBe('application/json');
  });
});
