// The one loop that reads server-sent events over fetch, for the run stream and the batch stream:
// bytes are decoded and parsed as they arrive, each event is turned into what it stands for by
// `parse`, and a parse failure or an oversized event ends the read before the chunk's events go on.
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { UnexpectedResponseError, type PyboxClientError } from './errors.ts';

/** Bounds one event in memory: a result or batch item carries at most its output files and figures. */
export const MAX_EVENT_BYTES = 64 * 1024 * 1024;

export interface ReadEventsOptions {
  /** Names the stream in the error for an oversized event. */
  tooBig: string;
  /** The server's `retry:` field, in ms. */
  onRetry?: (ms: number) => void;
  /** What a failed read (an abort, a dropped connection) is thrown as; as it is by default. */
  failed?: (e: unknown) => unknown;
}

/** What `parse` makes of each event, in order (null: skipped), until the body ends. */
export async function* readEvents<T>(body: ReadableStream<Uint8Array>, parse: (message: EventSourceMessage) => T | null, opts: ReadEventsOptions): AsyncGenerator<T> {
  const ready: T[] = [];
  let problem: PyboxClientError | null = null;
  const parser = createParser({
    maxBufferSize: MAX_EVENT_BYTES,
    onEvent: (message) => {
      if (problem) return;
      try {
        const event = parse(message);
        if (event !== null) ready.push(event);
      } catch (e) {
        problem = e as PyboxClientError;
      }
    },
    ...(opts.onRetry ? { onRetry: opts.onRetry } : {}),
    onError: (e) => {
      if (e.type === 'max-buffer-size-exceeded') problem = new UnexpectedResponseError(`${opts.tooBig} is over ${MAX_EVENT_BYTES} bytes`, { code: 'unexpected_response' });
    },
  });
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw opts.failed ? opts.failed(e) : e;
      }
      if (chunk.done) return;
      parser.feed(chunk.value);
      if (problem) throw problem;
      for (const event of ready.splice(0)) yield event;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
