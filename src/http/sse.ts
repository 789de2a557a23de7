// A run answered as server-sent events (POST /v1/executions and session calls with
// `Accept: text/event-stream`): `stdout` and `stderr` events (data {"text"}) as the code writes,
// then one `result` event (the ExecutionResult) last; or one `error` event (the ErrorBody) when the
// run could not be done. Comment lines keep an idle stream alive through proxies. A client that
// goes away cancels the run, as it does a plain request.
//
// Each stream's bytes are decoded with a StringDecoder of its own, so a character split between
// two chunks arrives whole in the later event. The output is capped where it is produced (the
// sandbox, limits.outputBytes per stream), so what waits here for a slow client is bounded too.
import { StringDecoder } from 'node:string_decoder';
import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { Logger } from '../core/ports.ts';
import type { OutputListener } from '../core/sandbox.ts';
import type { ExecutionResult } from '../core/schemas.ts';
import { errorReply } from './errors.ts';
import { requestIdOf } from './request-log.ts';

/** A route's 200 content for a streamed run, beside its application/json (OpenAPI). */
export const RUN_EVENT_STREAM = {
  'text/event-stream': {
    schema: { type: 'string' as const, description: 'Server-sent events: `stdout`, `stderr` (data {"text"}), then `result` (data ExecutionResult) or `error` (data ErrorBody)' },
  },
};

/** An idle stream gets a comment line this often. */
export const SSE_KEEPALIVE_MS = 15_000;

export interface StreamRunOptions {
  keepAliveMs?: number;
}

/** What a streamed run does: told where its output goes and when its client is gone, it returns the result. */
export type StreamedRun = (onOutput: OutputListener, signal: AbortSignal) => Promise<ExecutionResult>;

/**
 * Whether the client asked for an event stream: `text/event-stream` is acceptable, and preferred
 * to `application/json` (a client that takes both equally, as MCP clients say, gets plain JSON).
 */
export function wantsEventStream(accept: string | undefined): boolean {
  if (accept === undefined) return false;
  let stream = 0;
  let json = 0;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.split(';').map((s) => s.trim().toLowerCase());
    let q = 1;
    for (const p of params) {
      const m = /^q=([01](?:\.\d{0,3})?)$/.exec(p);
      if (m) q = Number(m[1]);
    }
    if (type === 'text/event-stream') stream = Math.max(stream, q);
    else if (type === 'application/json') json = Math.max(json, q);
  }
  return stream > 0 && stream > json;
}

/** One event as it goes on the wire. JSON holds no raw line breaks, so the data is one line. */
const sseEvent = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

/**
 * Runs `run` and answers with its events. A run refused before it got anywhere (the service found
 * the request invalid, or cannot take it now) is answered as a plain error, with its status and
 * headers: the stream starts once the run is under way. Async, for that reason.
 */
export async function streamRun(c: Context, run: StreamedRun, logger: Logger, opts: StreamRunOptions = {}): Promise<Response> {
  const controller = new AbortController();
  const cancel = () => controller.abort('client');
  const request = c.req.raw.signal;
  if (request.aborted) cancel();
  else request.addEventListener('abort', cancel, { once: true });

  const pending: string[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  const push = (text: string) => {
    pending.push(text);
    wake?.();
  };
  const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  const onOutput: OutputListener = (stream, data) => {
    if (finished) return;
    const text = decoders[stream].write(data);
    if (text !== '') push(sseEvent(stream, { text }));
  };

  let running: Promise<ExecutionResult>;
  try {
    running = run(onOutput, controller.signal);
  } catch (e) {
    running = Promise.reject(e);
  }
  // What the service refuses without waiting on anything (its checks of the request, a shutdown)
  // has settled once the microtasks queued so far have run: still in time for a plain answer.
  const early = await Promise.race([running.then(() => false, () => true), new Promise<false>((resolve) => setImmediate(() => resolve(false)))]);
  if (early) {
    request.removeEventListener('abort', cancel);
    await running; // throws: app.onError answers it
  }

  void running.then(
    (result) => {
      for (const stream of ['stdout', 'stderr'] as const) {
        // A character the output ended inside of: U+FFFD, as the result's own text has it.
        const rest = decoders[stream].end();
        if (rest !== '') push(sseEvent(stream, { text: rest }));
      }
      finished = true;
      push(sseEvent('result', result));
    },
    (e: unknown) => {
      finished = true;
      push(sseEvent('error', errorReply(e, logger, { method: c.req.method, path: c.req.path, requestId: requestIdOf(c) }).body));
    },
  );

  const keepAliveMs = opts.keepAliveMs ?? SSE_KEEPALIVE_MS;
  const response = streamSSE(c, async (stream) => {
    stream.onAbort(cancel);
    // Only into a quiet stream: a comment never queues up behind output a slow client has not read.
    const keepAlive = setInterval(() => {
      if (pending.length === 0) push(': keep-alive\n\n');
    }, keepAliveMs);
    try {
      for (;;) {
        if (pending.length === 0) {
          if (finished) break;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        const batch = pending.splice(0).join('');
        if (!stream.aborted) await stream.write(batch);
      }
    } finally {
      clearInterval(keepAlive);
      request.removeEventListener('abort', cancel);
    }
  });
  response.headers.set('Cache-Control', 'no-store');
  response.headers.set('X-Accel-Buffering', 'no');
  return response;
}
