// A batch's server-sent events, read over fetch: each `item` event is parsed with the API's schema
// and handed on, `done` ends the stream. A connection that drops before `done` (a proxy's idle
// timeout, a restarted node) is opened again with Last-Event-ID, so no item is lost or repeated.
import type { EventSourceMessage } from 'eventsource-parser';
import { BatchInfo, BatchItemEvent } from '../core/schemas.ts';
import { causeMessage, ConnectionError, errorFromAnswer, jsonOrUndefined, PyboxClientError, UnexpectedResponseError } from './errors.ts';
import { readEvents } from './event-stream.ts';
import { MAX_RETRY_WAIT_S, retryWaitS, sleep } from './wait.ts';

export type BatchEvent = { type: 'item'; data: BatchItemEvent } | { type: 'done'; data: BatchInfo };

export interface BatchEventsOptions {
  /** Resume after this event id (the `seq` of the last item seen). */
  lastEventId?: string | undefined;
  signal?: AbortSignal | undefined;
  /** Connections in a row that may fail (refused, dropped before an event) before giving up. Default 5. */
  reconnects?: number;
  /** Wait before reconnecting, unless the server's `retry:` says otherwise. Default 1000 ms. */
  reconnectDelayMs?: number;
}

type Connect = (lastEventId: string | undefined, signal: AbortSignal) => Promise<Response>;

function parseEvent(message: EventSourceMessage): BatchEvent | null {
  const schema = message.event === 'item' ? BatchItemEvent : message.event === 'done' ? BatchInfo : null;
  if (schema === null) return null; // an event type of a newer server
  let json: unknown;
  try {
    json = JSON.parse(message.data);
  } catch {
    throw new UnexpectedResponseError(`unexpected ${message.event} event from the batch stream: not JSON`, { code: 'unexpected_response' });
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new UnexpectedResponseError(`unexpected ${message.event} event from the batch stream: ${parsed.error.issues[0]?.message ?? 'does not match the API'}`, {
      code: 'unexpected_response',
      details: parsed.error.issues,
    });
  }
  return message.event === 'item' ? { type: 'item', data: parsed.data as BatchItemEvent } : { type: 'done', data: parsed.data as BatchInfo };
}

export async function* followBatchEvents(connect: Connect, opts: BatchEventsOptions & { baseUrl: string }): AsyncGenerator<BatchEvent> {
  let lastEventId = opts.lastEventId;
  let delayMs = opts.reconnectDelayMs ?? 1000;
  const allowed = opts.reconnects ?? 5;
  let failures = 0;
  let lastProblem = 'the stream ended before the batch was done';

  for (;;) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    if (failures > allowed) {
      throw new ConnectionError(`lost the event stream of the batch at ${opts.baseUrl} ${failures} times in a row: ${lastProblem}`, { code: 'connection_failed' });
    }
    if (failures > 0) await sleep(delayMs, opts.signal);

    // Ours, so that leaving the loop early (the caller's `break`) closes the connection.
    const local = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, local.signal]) : local.signal;
    try {
      let response: Response;
      try {
        response = await connect(lastEventId, signal);
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? e;
        lastProblem = causeMessage(e);
        failures++;
        continue;
      }
      if (!response.ok) {
        const text = await response.text().catch(() => '');
        const error = errorFromAnswer('GET', 'events', response, jsonOrUndefined(text));
        const wait = retryWaitS(error);
        if (wait === undefined) throw error;
        lastProblem = error.message;
        failures++;
        delayMs = Math.max(wait * 1000, 50);
        continue;
      }
      const type = response.headers.get('content-type') ?? '';
      if (!type.toLowerCase().startsWith('text/event-stream') || response.body === null) {
        throw new UnexpectedResponseError(`unexpected answer to the batch's events: ${type || 'no content type'}, not an event stream`, { code: 'unexpected_response', status: response.status });
      }

      const parse = (message: EventSourceMessage) => {
        const event = parseEvent(message);
        if (message.id !== undefined && message.id !== '') lastEventId = message.id;
        return event;
      };
      const onRetry = (ms: number) => (delayMs = Math.min(Math.max(ms, 50), MAX_RETRY_WAIT_S * 1000));
      let sawEvent = false;
      try {
        for await (const event of readEvents(response.body, parse, { tooBig: 'an event of the batch stream', onRetry })) {
          sawEvent = true;
          failures = 0;
          yield event;
          if (event.type === 'done') return;
        }
        lastProblem = 'the stream ended before the batch was done';
      } catch (e) {
        if (e instanceof PyboxClientError) throw e;
        if (opts.signal?.aborted) throw opts.signal.reason ?? e;
        lastProblem = causeMessage(e);
      }
      if (!sawEvent) failures++;
      else failures = 1; // it worked a while: reconnect after the usual wait, with a fresh budget
    } finally {
      local.abort();
    }
  }
}
