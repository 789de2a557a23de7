// The typed client of pybox's HTTP API. Requests and results are typed by the same zod schemas the
// server validates with, and answers are parsed with them, so a client and a server cannot drift
// apart silently. Every adapter (LangChain, MCP, the example agent) talks to pybox through this.
import type { z } from 'zod';
import { ExecutionResult, HistoryPage, RuntimeInfo, Stats, ToolList, type ExecutionRequest, type ExecutionStatus } from '../core/schemas.ts';
import { ConnectionError, errorClassFor, PyboxClientError, TimeoutError, UnexpectedResponseError } from './errors.ts';

export const DEFAULT_PYBOX_URL = 'http://127.0.0.1:8080';
/** Long enough for the longest run a server allows (300 s) plus time in its queue. */
export const DEFAULT_CLIENT_TIMEOUT_MS = 360_000;
/** Retry-After values above this are not waited for: the error goes to the caller. */
const MAX_RETRY_WAIT_S = 30;

/** What `execute` accepts: the server's request schema, before defaults are applied. */
export type ExecuteRequest = z.input<typeof ExecutionRequest>;
export type HistoryParams = { limit?: number; status?: ExecutionStatus; cursor?: string };

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface PyboxClientOptions {
  /** Where pybox answers; PYBOX_URL for `clientFromEnv`. Default http://127.0.0.1:8080. */
  baseUrl?: string | undefined;
  /** Sent as `Authorization: Bearer <key>`; PYBOX_API_KEY for `clientFromEnv`. */
  apiKey?: string | undefined;
  /** The fetch to use (the global one by default); tests and the in-process /mcp pass their own. */
  fetch?: FetchLike;
  /** Gives up on a request after this long. Default 360 s. */
  timeoutMs?: number;
  /** Retries after a 429 or 503 that says when to come back (Retry-After up to 30 s). Default 2. */
  retries?: number;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
}

export interface CallOptions {
  signal?: AbortSignal | undefined;
}

/** The service's `{error: {code, message, details}}`, read leniently: newer servers may add codes. */
function parseErrorBody(json: unknown): { code: string; message: string; details?: unknown } | null {
  if (typeof json !== 'object' || json === null) return null;
  const error = (json as { error?: unknown }).error;
  if (typeof error !== 'object' || error === null) return null;
  const { code, message, details } = error as Record<string, unknown>;
  if (typeof code !== 'string' || typeof message !== 'string') return null;
  return { code, message, details };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });

export class PyboxClient {
  readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly fetchImpl: FetchLike;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly headers: Record<string, string>;

  constructor(opts: PyboxClientOptions = {}) {
    this.baseUrl = (opts.baseUrl ?? DEFAULT_PYBOX_URL).replace(/\/+$/, '');
    this.apiKey = opts.apiKey === '' ? undefined : opts.apiKey;
    this.fetchImpl = opts.fetch ?? ((url, init) => fetch(url, init));
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_CLIENT_TIMEOUT_MS;
    this.retries = opts.retries ?? 2;
    this.headers = opts.headers ?? {};
  }

  /** Runs code and waits for its result. A failing program is a result (`status`), not an error. */
  execute(request: ExecuteRequest, opts: CallOptions = {}): Promise<ExecutionResult> {
    return this.call('POST', '/v1/executions', ExecutionResult, { body: request, signal: opts.signal });
  }

  /** One stored result. Throws NotFoundError for an unknown id. */
  get(id: string, opts: CallOptions = {}): Promise<ExecutionResult> {
    return this.call('GET', `/v1/executions/${encodeURIComponent(id)}`, ExecutionResult, { signal: opts.signal });
  }

  /** Past executions, newest first; pass `nextCursor` back as `cursor` for the next page. */
  history(params: HistoryParams = {}, opts: CallOptions = {}): Promise<HistoryPage> {
    const query = new URLSearchParams();
    if (params.limit !== undefined) query.set('limit', String(params.limit));
    if (params.status !== undefined) query.set('status', params.status);
    if (params.cursor !== undefined) query.set('cursor', params.cursor);
    const qs = query.toString();
    return this.call('GET', `/v1/executions${qs ? `?${qs}` : ''}`, HistoryPage, { signal: opts.signal });
  }

  stats(opts: CallOptions = {}): Promise<Stats> {
    return this.call('GET', '/v1/stats', Stats, { signal: opts.signal });
  }

  /** The Python version, packages, runtime and limits of the sandbox. */
  runtimes(opts: CallOptions = {}): Promise<RuntimeInfo> {
    return this.call('GET', '/v1/runtimes', RuntimeInfo, { signal: opts.signal });
  }

  /** The tools the server offers, as OpenAI and Anthropic function-calling schemas. */
  tools(opts: CallOptions = {}): Promise<ToolList> {
    return this.call('GET', '/v1/tools', ToolList, { signal: opts.signal });
  }

  private async call<S extends z.ZodType>(method: string, path: string, schema: S, opts: { body?: unknown; signal?: AbortSignal | undefined }): Promise<z.output<S>> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(method, path, schema, opts);
      } catch (e) {
        const wait = e instanceof PyboxClientError && (e.status === 429 || e.status === 503) ? e.retryAfterS : undefined;
        if (wait === undefined || wait > MAX_RETRY_WAIT_S || attempt >= this.retries) throw e;
        await sleep(Math.max(wait, 0.05) * 1000, opts.signal);
      }
    }
  }

  private async once<S extends z.ZodType>(method: string, path: string, schema: S, opts: { body?: unknown; signal?: AbortSignal | undefined }): Promise<z.output<S>> {
    const headers: Record<string, string> = { accept: 'application/json', ...this.headers };
    if (this.apiKey !== undefined) headers.authorization = `Bearer ${this.apiKey}`;
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const url = `${this.baseUrl}${path}`;

    let response: Response;
    let text: string;
    try {
      const init: RequestInit = { method, headers, signal };
      if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
      response = await this.fetchImpl(url, init);
      text = await response.text();
    } catch (e) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? e; // the caller's own abort
      if (timeout.aborted) throw new TimeoutError(`no answer from pybox at ${this.baseUrl} within ${this.timeoutMs} ms`, { code: 'timeout', cause: e });
      const why = e instanceof Error ? ((e.cause as Error | undefined)?.message ?? e.message) : String(e);
      throw new ConnectionError(`cannot reach pybox at ${this.baseUrl}: ${why}`, { code: 'connection_failed', cause: e });
    }

    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!response.ok) {
      const body = parseErrorBody(json);
      const retryAfter = Number(response.headers.get('retry-after'));
      const ErrorClass = errorClassFor(response.status, body?.code ?? '');
      throw new ErrorClass(body?.message ?? `HTTP ${response.status} from ${method} ${path}`, {
        code: body?.code ?? `http_${response.status}`,
        status: response.status,
        details: body?.details,
        retryAfterS: response.headers.has('retry-after') && Number.isFinite(retryAfter) ? retryAfter : undefined,
      });
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      throw new UnexpectedResponseError(`unexpected answer to ${method} ${path}: ${parsed.error.issues[0]?.message ?? 'does not match the API'}`, {
        code: 'unexpected_response',
        status: response.status,
        details: parsed.error.issues,
      });
    }
    return parsed.data;
  }
}

/** A client for the pybox named by PYBOX_URL (default http://127.0.0.1:8080) and PYBOX_API_KEY. */
export function clientFromEnv(env: Record<string, string | undefined>, opts: Omit<PyboxClientOptions, 'baseUrl' | 'apiKey'> = {}): PyboxClient {
  return new PyboxClient({ ...opts, baseUrl: env.PYBOX_URL || DEFAULT_PYBOX_URL, apiKey: env.PYBOX_API_KEY || undefined });
}
