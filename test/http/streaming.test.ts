// POST /v1/executions with Accept: text/event-stream, and the streamRun helper behind it: output
// events as the service reports output, the result last, errors as one `error` event once the
// stream has begun (and as plain JSON before), keep-alive comments, and a client that goes away
// cancelling the run. The service is a fake that emits chunks when the test says.
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import type { BatchService } from '../../src/core/batch-service.ts';
import type { Caller } from '../../src/core/caller.ts';
import { PyboxError } from '../../src/core/errors.ts';
import type { ExecuteOptions } from '../../src/core/ports.ts';
import { ErrorBody, ExecutionResult, OutputChunk, type ExecutionRequest } from '../../src/core/schemas.ts';
import { streamRun, wantsEventStream } from '../../src/http/sse.ts';
import { createApp } from '../../src/app.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { FakeExecutionService, NO_KEYS, recordingLogger, sampleResult, TEST_BODY_LIMIT, type ErrorJson } from './fake-service.ts';

const SSE = { 'content-type': 'application/json', accept: 'text/event-stream' };

/** A fake service whose run is a script: it gets the listener and the signal, and says when it is done. */
class ScriptedService extends FakeExecutionService {
  script: (onOutput: NonNullable<ExecuteOptions['onOutput']>, signal: AbortSignal) => Promise<void> = async () => {};
  options: ExecuteOptions | undefined;

  override async execute(caller: Caller, request: ExecutionRequest, opts?: ExecuteOptions): Promise<ExecutionResult> {
    this.options = opts;
    const result = await super.execute(caller, request, opts);
    await this.script(opts?.onOutput ?? (() => {}), opts?.signal ?? new AbortController().signal);
    return result;
  }
}

function setup(opts: { batches?: BatchService } = {}) {
  const service = new ScriptedService();
  const logger = recordingLogger();
  const app = createApp({ service, logger, bodyLimitBytes: TEST_BODY_LIMIT, auth: new Authenticator(NO_KEYS), ...(opts.batches ? { batches: opts.batches } : {}) });
  const post = (body: unknown, headers: Record<string, string> = SSE, path = '/v1/executions', signal?: AbortSignal) =>
    app.request(path, { method: 'POST', headers, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
  return { service, logger, app, post };
}

async function events(res: Response): Promise<EventSourceMessage[]> {
  const out: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (e) => out.push(e) });
  parser.feed(await res.text());
  return out;
}

const text = (es: EventSourceMessage[], type: 'stdout' | 'stderr') => es.filter((e) => e.event === type).map((e) => OutputChunk.parse(JSON.parse(e.data)).text).join('');

const tick = (ms = 5) => new Promise<void>((r) => setTimeout(r, ms));

describe('wantsEventStream', () => {
  it('is true when text/event-stream is asked for and preferred to JSON', () => {
    expect(wantsEventStream('text/event-stream')).toBe(true);
    expect(wantsEventStream('Text/Event-Stream; charset=utf-8')).toBe(true);
    expect(wantsEventStream('application/json;q=0.5, text/event-stream')).toBe(true);
    expect(wantsEventStream(undefined)).toBe(false);
    expect(wantsEventStream('application/json')).toBe(false);
    expect(wantsEventStream('*/*')).toBe(false);
    expect(wantsEventStream('application/json, text/event-stream')).toBe(false);
    expect(wantsEventStream('text/event-stream;q=0')).toBe(false);
  });
});

describe('POST /v1/executions with Accept: text/event-stream', () => {
  it('streams each chunk as a stdout or stderr event as it comes, then the result last', async () => {
    const { service, post } = setup();
    let proceed!: () => void;
    service.script = async (onOutput) => {
      onOutput('stdout', Buffer.from('one\n'));
      onOutput('stderr', Buffer.from('warn\n'));
      await new Promise<void>((r) => (proceed = r));
      onOutput('stdout', Buffer.from('two\n'));
    };
    const res = await post({ code: 'print(1)' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    // The first chunks are readable while the run still goes on.
    let seen = '';
    while (!seen.includes('warn')) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the stream ended early');
      seen += value;
    }
    expect(seen).not.toContain('event: result');
    proceed();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    const es: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (e) => es.push(e) });
    parser.feed(seen);
    expect(es.map((e) => e.event)).toEqual(['stdout', 'stderr', 'stdout', 'result']);
    expect(text(es, 'stdout')).toBe('one\ntwo\n');
    expect(text(es, 'stderr')).toBe('warn\n');
    expect(ExecutionResult.parse(JSON.parse(es.at(-1)!.data))).toEqual(sampleResult());
    expect(service.options?.onOutput).toBeTypeOf('function');
  });

  it('never splits a character: a UTF-8 sequence cut between chunks arrives whole in the later event', async () => {
    const { service, post } = setup();
    const bytes = Buffer.from('héllo €uro\n');
    service.script = async (onOutput) => {
      for (let i = 0; i < bytes.length; i++) onOutput('stdout', bytes.subarray(i, i + 1));
    };
    const es = await events(await post({ code: 'x' }));
    const chunks = es.filter((e) => e.event === 'stdout').map((e) => OutputChunk.parse(JSON.parse(e.data)).text);
    expect(chunks.join('')).toBe('héllo €uro\n');
    expect(chunks.join('')).not.toContain('\uFFFD');
  });

  it('ends a character the output ended inside of as U+FFFD, before the result', async () => {
    const { service, post } = setup();
    service.script = async (onOutput) => onOutput('stdout', Buffer.from([0x61, 0xe2, 0x82]));
    const es = await events(await post({ code: 'x' }));
    expect(es.map((e) => e.event)).toEqual(['stdout', 'stdout', 'result']);
    expect(text(es, 'stdout')).toBe('a\uFFFD');
  });

  it('answers plain JSON without the Accept, and when JSON is as welcome as the stream', async () => {
    const { service, post } = setup();
    service.script = async (onOutput) => onOutput('stdout', Buffer.from('x'));
    for (const accept of [undefined, 'application/json', 'application/json, text/event-stream']) {
      const res = await post({ code: 'x' }, { 'content-type': 'application/json', ...(accept ? { accept } : {}) });
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(ExecutionResult.parse(await res.json())).toEqual(sampleResult());
    }
  });

  it('a request the schema refuses is a plain JSON 400, not a stream', async () => {
    const { service, post } = setup();
    const res = await post({ code: 'x', bogus: 1 });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(((await res.json()) as ErrorJson).error.code).toBe('invalid_request');
    expect(service.calls.execute).toHaveLength(0);
  });

  it('a run the service refuses at once is a plain JSON error with its status and headers', async () => {
    const { service, post } = setup();
    service.failWith.execute = new PyboxError('invalid_request', 'files[0].content: is not valid base64');
    const bad = await post({ code: 'x' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as ErrorJson).error.message).toMatch(/base64/);
    service.failWith.execute = new PyboxError('shutting_down', 'the service is shutting down', { retryAfterS: 5 });
    const down = await post({ code: 'x' });
    expect(down.status).toBe(503);
    expect(down.headers.get('retry-after')).toBe('5');
  });

  it('a run that fails once the stream has begun ends it with one error event in the one error shape', async () => {
    const { service, post } = setup();
    service.script = async (onOutput) => {
      await tick();
      onOutput('stdout', Buffer.from('partial\n'));
      throw new PyboxError('engine_unavailable', 'the Docker engine went away');
    };
    const res = await post({ code: 'x' });
    expect(res.status).toBe(200);
    const es = await events(res);
    expect(es.map((e) => e.event)).toEqual(['stdout', 'error']);
    expect(ErrorBody.parse(JSON.parse(es[1]!.data))).toEqual({ error: { code: 'engine_unavailable', message: 'the Docker engine went away' } });
  });

  it('hides what it did not raise itself: an unexpected fault is `internal`, logged', async () => {
    const { service, post, logger } = setup();
    service.script = async () => {
      await tick();
      throw new Error('secret internals');
    };
    const es = await events(await post({ code: 'x' }));
    expect(JSON.parse(es.at(-1)!.data)).toEqual({ error: { code: 'internal', message: 'internal server error' } });
    expect(logger.entries.some((e) => e.level === 'error' && JSON.stringify(e.fields).includes('secret internals'))).toBe(true);
  });

  it('a client that goes away cancels the run', async () => {
    const { service, post } = setup();
    let aborted!: () => void;
    const wasAborted = new Promise<void>((r) => (aborted = r));
    service.script = async (onOutput, signal) => {
      onOutput('stdout', Buffer.from('started\n'));
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      aborted();
    };
    const res = await post({ code: 'x' });
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    await wasAborted;
    expect(service.options?.signal?.aborted).toBe(true);
  });

  it('async=true cannot be streamed: refused with a 400 that says so, nothing queued', async () => {
    let submitted = 0;
    const batches = { submitAsync: async () => void submitted++ } as unknown as BatchService;
    const { post } = setup({ batches });
    const res = await post({ code: 'x' }, SSE, '/v1/executions?async=true');
    expect(res.status).toBe(400);
    const body = (await res.json()) as ErrorJson;
    expect(body.error.details).toEqual([{ path: 'async', message: 'not with Accept: text/event-stream' }]);
    expect(submitted).toBe(0);
  });

  it('also streams on a node that keeps jobs (without async)', async () => {
    const batches = {} as unknown as BatchService;
    const { service, post } = setup({ batches });
    service.script = async (onOutput) => onOutput('stdout', Buffer.from('hi\n'));
    const es = await events(await post({ code: 'x' }));
    expect(es.map((e) => e.event)).toEqual(['stdout', 'result']);
  });
});

describe('streamRun', () => {
  const logger = recordingLogger();

  it('sends keep-alive comments while the run is quiet', async () => {
    const app = new Hono();
    let proceed!: () => void;
    app.post('/', (c) =>
      streamRun(
        c,
        async () => {
          await new Promise<void>((r) => (proceed = r));
          return sampleResult();
        },
        logger,
        { keepAliveMs: 10 },
      ),
    );
    const res = await app.request('/', { method: 'POST' });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let seen = '';
    while (!seen.includes(': keep-alive\n\n')) seen += (await reader.read()).value ?? '';
    proceed();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    expect(seen).toMatch(/event: result\ndata: \{.*\}\n\n$/);
  });

  it('tells nothing of output that comes after the result', async () => {
    const app = new Hono();
    let late: ((s: 'stdout', d: Buffer) => void) | undefined;
    app.post('/', (c) =>
      streamRun(
        c,
        async (onOutput) => {
          late = onOutput;
          await tick();
          return sampleResult();
        },
        logger,
      ),
    );
    const res = await app.request('/', { method: 'POST' });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let seen = '';
    while (!seen.includes('event: result')) seen += (await reader.read()).value ?? '';
    late?.('stdout', Buffer.from('too late'));
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    expect(seen).not.toContain('too late');
  });
});

describe('the OpenAPI document', () => {
  it('documents the event stream as a 200 answer of POST /v1/executions, on either kind of node', async () => {
    for (const batches of [undefined, {} as unknown as BatchService]) {
      const { app } = setup(batches ? { batches } : {});
      const doc = (await (await app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, { description?: string; responses: Record<string, { content?: Record<string, unknown> }> }>> };
      const post = doc.paths['/v1/executions']?.post;
      expect(Object.keys(post?.responses['200']?.content ?? {}).sort()).toEqual(['application/json', 'text/event-stream']);
      expect(post?.description).toContain('Accept: text/event-stream');
    }
  });
});
