// A run answered as server-sent events: `stdout` / `stderr` chunks as the code prints them, then
// the `result` last, or one `error` when the run could not be done. (A minimal version: the
// streaming part of the project owns this file and keeps its own.)
import { StringDecoder } from 'node:string_decoder';
import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { Logger } from '../core/ports.ts';
import type { OutputListener } from '../core/sandbox.ts';
import type { ExecutionResult } from '../core/schemas.ts';
import { errorReply } from './errors.ts';
import { requestIdOf } from './request-log.ts';

const KEEP_ALIVE_MS = 15_000;

export function streamRun(c: Context, run: (onOutput: OutputListener, signal: AbortSignal) => Promise<ExecutionResult>, logger: Logger): Response {
  const response = streamSSE(c, async (stream) => {
    const stop = new AbortController();
    stream.onAbort(() => stop.abort());
    c.req.raw.signal.addEventListener('abort', () => stop.abort(), { once: true });
    const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
    // Events are written in order: each waits for the one before.
    let chain = Promise.resolve();
    const send = (event: string, data: unknown) => {
      chain = chain.then(() => stream.writeSSE({ event, data: JSON.stringify(data) })).catch(() => {});
      return chain;
    };
    const onOutput: OutputListener = (name, data) => {
      const text = decoders[name].write(data);
      if (text !== '') void send(name, { text });
    };
    const heartbeat = setInterval(() => void stream.write(': keep-alive\n\n').catch(() => {}), KEEP_ALIVE_MS);
    try {
      const result = await run(onOutput, stop.signal);
      for (const name of ['stdout', 'stderr'] as const) {
        const rest = decoders[name].end();
        if (rest !== '') void send(name, { text: rest });
      }
      await send('result', result);
    } catch (e) {
      const { body } = errorReply(e, logger, { method: c.req.method, path: c.req.path, requestId: requestIdOf(c) });
      await send('error', body);
    } finally {
      clearInterval(heartbeat);
    }
  });
  response.headers.set('Cache-Control', 'no-store');
  response.headers.set('X-Accel-Buffering', 'no');
  return response;
}
