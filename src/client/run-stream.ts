// A run streamed as server-sent events (POST /v1/executions, and session calls, with
// Accept: text/event-stream), read over fetch: `stdout` and `stderr` events become output events,
// `result` ends the iteration, and `error` is thrown as the client's error for its code. Each
// event is parsed with the API's schemas: the stream is as untrusted as any answer.
import type { EventSourceMessage } from 'eventsource-parser';
import { ErrorBody, ExecutionResult, OutputChunk } from '../core/schemas.ts';
import { ConnectionError, PyboxClientError, UnexpectedResponseError, errorClassForCode, jsonOrUndefined } from './errors.ts';
import { readEvents } from './event-stream.ts';

/** What a streamed run yields: its output as it is written, then its result (always last). */
export type RunStreamEvent = { type: 'stdout' | 'stderr'; text: string } | { type: 'result'; result: ExecutionResult };

function unexpected(message: string, details?: unknown): UnexpectedResponseError {
  return new UnexpectedResponseError(message, { code: 'unexpected_response', details });
}

function parseJson(message: EventSourceMessage, where: string): unknown {
  try {
    return JSON.parse(message.data);
  } catch {
    throw unexpected(`unexpected ${message.event ?? 'message'} event from ${where}: not JSON`);
  }
}

/** An event as what it stands for; null for an event type a newer server may send. */
function parseEvent(message: EventSourceMessage, where: string): RunStreamEvent | PyboxClientError | null {
  const { event } = message;
  if (event === 'stdout' || event === 'stderr') {
    const chunk = OutputChunk.safeParse(parseJson(message, where));
    if (!chunk.success) throw unexpected(`unexpected ${event} event from ${where}`, chunk.error.issues);
    return { type: event, text: chunk.data.text };
  }
  if (event === 'result') {
    const result = ExecutionResult.safeParse(parseJson(message, where));
    if (!result.success) throw unexpected(`unexpected result event from ${where}: ${result.error.issues[0]?.message ?? 'does not match the API'}`, result.error.issues);
    return { type: 'result', result: result.data };
  }
  if (event === 'error') {
    const body = ErrorBody.safeParse(parseJson(message, where));
    if (!body.success) throw unexpected(`unexpected error event from ${where}`, body.error.issues);
    const { code, message: text, details } = body.data.error;
    const ErrorClass = errorClassForCode(code);
    return new ErrorClass(text, { code, details });
  }
  return null;
}

/**
 * The events of a streamed run's answer (a 2xx), until its result. An answer in plain JSON (a
 * server that does not stream) is its result alone. A failed read (the caller's abort, a timeout,
 * a dropped connection) is thrown as `failed` makes it.
 */
export async function* readRunStream(response: Response, where: string, failed: (e: unknown) => unknown): AsyncGenerator<RunStreamEvent> {
  const type = (response.headers.get('content-type') ?? '').toLowerCase();
  if (type.startsWith('application/json')) {
    let text: string;
    try {
      text = await response.text();
    } catch (e) {
      throw failed(e);
    }
    const result = ExecutionResult.safeParse(jsonOrUndefined(text));
    if (!result.success) throw unexpected(`unexpected answer from ${where}: ${result.error.issues[0]?.message ?? 'does not match the API'}`, result.error.issues);
    yield { type: 'result', result: result.data };
    return;
  }
  if (!type.startsWith('text/event-stream') || response.body === null) {
    throw new UnexpectedResponseError(`unexpected answer from ${where}: ${type || 'no content type'}, not an event stream`, { code: 'unexpected_response', status: response.status });
  }
  const events = readEvents(response.body, (message) => parseEvent(message, where), { tooBig: `an event from ${where}`, failed });
  for await (const event of events) {
    if (event instanceof PyboxClientError) throw event;
    yield event;
    if (event.type === 'result') return;
  }
  throw new ConnectionError(`the event stream from ${where} ended before the result`, { code: 'connection_failed' });
}

