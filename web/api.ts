// pybox's HTTP API as the page uses it: same origin, the tab's API key as a Bearer header (never in a
// URL), and runs read as server-sent events when the server streams them, as one JSON answer when not.
import { createParser } from 'eventsource-parser';
import type { ExecutionRequest, ExecutionResult, HistoryPage, RuntimeInfo, SessionCallRequest, SessionInfo, SessionRequest } from '../src/core/schemas.ts';

/** A refusal of the server, with its error code (`unauthorized`, `session_ended`, ...). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export type OutputStream = 'stdout' | 'stderr';

export interface RunHandlers {
  /** A chunk of output as the code writes it (only when the server streams). */
  onOutput(stream: OutputStream, text: string): void;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The body of an error answer, whatever shape it came in. */
async function errorOf(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  return errorFromBody(res.status, text);
}

function errorFromBody(status: number, text: string): ApiError {
  try {
    const body: unknown = JSON.parse(text);
    if (isObject(body) && isObject(body.error) && typeof body.error.code === 'string' && typeof body.error.message === 'string') {
      return new ApiError(status, body.error.code, body.error.message);
    }
  } catch {
    // not JSON: said below
  }
  return new ApiError(status, 'http_error', `the server answered ${status}${text ? `: ${text.slice(0, 200)}` : ''}`);
}

/** Enough of a result to render it; what is absent is treated as empty by the renderer. */
function asResult(value: unknown): ExecutionResult {
  if (!isObject(value) || typeof value.id !== 'string' || typeof value.status !== 'string') {
    throw new ApiError(0, 'bad_answer', 'the server sent something that is not an execution result');
  }
  return value as unknown as ExecutionResult;
}

export interface ApiOptions {
  /** Where the API is: the page's own location, so a path prefix of a proxy in front is kept. */
  base: URL;
  /** The tab's API key, or null in local mode. */
  key(): string | null;
}

export class Api {
  constructor(private readonly opts: ApiOptions) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const key = this.opts.key();
    return { ...extra, ...(key ? { Authorization: `Bearer ${key}` } : {}) };
  }

  private url(path: string): string {
    // Relative to the page: `v1/...` from `/` or from a proxy's `/pybox/`.
    return new URL(path, this.opts.base).toString();
  }

  private async json(path: string, init: RequestInit = {}): Promise<unknown> {
    const res = await fetch(this.url(path), { ...init, headers: this.headers({ Accept: 'application/json', ...(init.body ? { 'Content-Type': 'application/json' } : {}) }) });
    if (!res.ok) throw await errorOf(res);
    if (res.status === 204) return null;
    return (await res.json()) as unknown;
  }

  runtimes(): Promise<RuntimeInfo> {
    return this.json('v1/runtimes') as Promise<RuntimeInfo>;
  }

  history(cursor?: string): Promise<HistoryPage> {
    const q = new URLSearchParams({ limit: '20', ...(cursor ? { cursor } : {}) });
    return this.json(`v1/executions?${q}`) as Promise<HistoryPage>;
  }

  async execution(id: string): Promise<ExecutionResult> {
    return asResult(await this.json(`v1/executions/${encodeURIComponent(id)}`));
  }

  run(request: ExecutionRequest, handlers: RunHandlers, signal: AbortSignal): Promise<ExecutionResult> {
    return this.stream('v1/executions', request, handlers, signal);
  }

  openSession(request: SessionRequest): Promise<SessionInfo> {
    return this.json('v1/sessions', { method: 'POST', body: JSON.stringify(request) }) as Promise<SessionInfo>;
  }

  callSession(id: string, request: SessionCallRequest, handlers: RunHandlers, signal: AbortSignal): Promise<ExecutionResult> {
    return this.stream(`v1/sessions/${encodeURIComponent(id)}/executions`, request, handlers, signal);
  }

  async closeSession(id: string, opts: { keepalive?: boolean } = {}): Promise<void> {
    const res = await fetch(this.url(`v1/sessions/${encodeURIComponent(id)}`), { method: 'DELETE', headers: this.headers(), keepalive: opts.keepalive ?? false });
    // Already gone is what was wanted.
    if (!res.ok && res.status !== 404 && res.status !== 410) throw await errorOf(res);
  }

  /**
   * POSTs a run asking for server-sent events: `stdout`/`stderr` chunks, then `result` (or `error`).
   * A server that does not stream answers with the result as JSON, which is taken as it is.
   */
  private async stream(path: string, body: unknown, handlers: RunHandlers, signal: AbortSignal): Promise<ExecutionResult> {
    const res = await fetch(this.url(path), {
      method: 'POST',
      headers: this.headers({ 'Content-Type': 'application/json', Accept: 'text/event-stream, application/json;q=0.5' }),
      body: JSON.stringify(body),
      signal,
    });
    if (!res.ok) throw await errorOf(res);
    const type = res.headers.get('content-type') ?? '';
    if (!type.startsWith('text/event-stream') || !res.body) return asResult((await res.json()) as unknown);

    let result: ExecutionResult | undefined;
    let failure: ApiError | undefined;
    const parser = createParser({
      onEvent(event) {
        if (event.event === 'stdout' || event.event === 'stderr') {
          const chunk: unknown = JSON.parse(event.data);
          if (isObject(chunk) && typeof chunk.text === 'string') handlers.onOutput(event.event, chunk.text);
        } else if (event.event === 'result') {
          result = asResult(JSON.parse(event.data));
        } else if (event.event === 'error') {
          failure = errorFromBody(0, event.data);
        }
      },
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.feed(value);
    }
    if (failure) throw failure;
    if (!result) throw new ApiError(0, 'stream_ended', 'the output stream ended without a result');
    return result;
  }
}
