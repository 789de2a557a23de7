// The typed client of pybox's HTTP API. Requests and results are typed by the same zod schemas the
// server validates with, and answers are parsed with them, so a client and a server cannot drift
// apart silently. Every adapter (LangChain, MCP, the example agent) talks to pybox through this.
import type { z } from 'zod';
import {
  BatchInfo,
  BatchPage,
  ExecutionResult,
  HistoryPage,
  PendingExecution,
  RuntimeInfo,
  SessionFileList,
  SessionInfo,
  SessionList,
  Stats,
  ToolList,
  type SessionCallRequest,
  type SessionRequest,
  type BatchItem,
  type BatchRequest,
  type ExecutionRequest,
  type ExecutionStatus,
  type WebhookTarget,
} from '../core/schemas.ts';
import { causeMessage, ConnectionError, errorFromAnswer, jsonOrUndefined, TimeoutError, UnexpectedResponseError } from './errors.ts';
import { retryWaitS, sleep } from './wait.ts';
import { followBatchEvents, type BatchEvent, type BatchEventsOptions } from './sse.ts';
import { readRunStream, type RunStreamEvent } from './run-stream.ts';

export const DEFAULT_PYBOX_URL = 'http://127.0.0.1:8080';
/** Long enough for the longest run a server allows (300 s) plus time in its queue. */
export const DEFAULT_CLIENT_TIMEOUT_MS = 360_000;

/** What `execute` accepts: the server's request schema, before defaults are applied. */
export type ExecuteRequest = z.input<typeof ExecutionRequest>;
export type HistoryParams = { limit?: number; status?: ExecutionStatus; cursor?: string };
/** What `createBatch` accepts: the server's batch schema, before defaults are applied. */
export type CreateBatchRequest = z.input<typeof BatchRequest>;
export type BatchPageParams = { limit?: number; cursor?: string };
/** What `createSession` accepts: the server's session schema, before defaults are applied. */
export type CreateSessionRequest = z.input<typeof SessionRequest>;
/** What `sessionExecute` accepts: code, and optionally stdin, files and a time limit for this call. */
export type SessionExecuteRequest = z.input<typeof SessionCallRequest>;
/** A file to upload: text (utf8) or bytes (sent as base64). */
export type UploadFile = { path: string; content: string | Uint8Array; encoding?: 'utf8' | 'base64' };

/** An execution's state as GET /v1/executions/{id} tells it: its result, or that it still waits or runs. */
export type ExecutionState = { done: true; result: ExecutionResult } | { done: false; pending: PendingExecution };

export interface WaitOptions extends CallOptions {
  /** How long to wait between two looks. Default 1000 (the server's Retry-After for a pending execution is 1 s). */
  intervalMs?: number;
}

export type { BatchEvent, BatchEventsOptions } from './sse.ts';
export type { RunStreamEvent } from './run-stream.ts';

/** `execute` with callbacks: the run is streamed, and each chunk of output handed to them as it comes. */
export interface ExecuteCallOptions extends CallOptions {
  onStdout?: ((text: string) => void) | undefined;
  onStderr?: ((text: string) => void) | undefined;
}

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

  /**
   * Runs code and waits for its result. A failing program is a result (`status`), not an error.
   * With `onStdout` or `onStderr` the run is streamed and they are told of its output as it comes.
   */
  async execute(request: ExecuteRequest, opts: ExecuteCallOptions = {}): Promise<ExecutionResult> {
    if (opts.onStdout === undefined && opts.onStderr === undefined) return this.call('POST', '/v1/executions', ExecutionResult, { body: request, signal: opts.signal });
    for await (const event of this.executeStream(request, opts)) {
      if (event.type === 'result') return event.result;
      if (event.type === 'stdout') opts.onStdout?.(event.text);
      else opts.onStderr?.(event.text);
    }
    // readRunStream ends with a result or throws.
    throw new UnexpectedResponseError('the stream ended without a result', { code: 'unexpected_response' });
  }

  /**
   * Runs code and yields its output as it is written (server-sent events): `stdout` and `stderr`
   * events up to the server's outputBytes of each stream, then the `result` (always last). A
   * refusal is thrown as `execute` throws it. Leaving the loop early closes the stream, which
   * cancels the run.
   */
  executeStream(request: ExecuteRequest, opts: CallOptions = {}): AsyncGenerator<RunStreamEvent> {
    return this.streamCall('/v1/executions', request, opts);
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

  /**
   * Queues code to run and returns at once (POST /v1/executions?async=true); `getExecution` or
   * `waitFor` give its result later. With `webhook`, the server also POSTs there when it is done.
   */
  submit(request: ExecuteRequest, opts: CallOptions & { webhook?: WebhookTarget | undefined } = {}): Promise<PendingExecution> {
    const body = opts.webhook === undefined ? request : { ...request, webhook: opts.webhook };
    return this.call('POST', '/v1/executions?async=true', PendingExecution, { body, signal: opts.signal });
  }

  /** An execution's result if it is done (200), else what it is doing (202). */
  async getExecution(id: string, opts: CallOptions = {}): Promise<ExecutionState> {
    const path = `/v1/executions/${encodeURIComponent(id)}`;
    const answer = await this.request('GET', path, { signal: opts.signal });
    if (answer.status === 202) return { done: false, pending: parseAnswer('GET', path, PendingExecution, answer) };
    return { done: true, result: parseAnswer('GET', path, ExecutionResult, answer) };
  }

  /** Looks at an execution until it is done, and returns its result. Stops with `signal`. */
  async waitFor(id: string, opts: WaitOptions = {}): Promise<ExecutionResult> {
    const interval = opts.intervalMs ?? 1000;
    for (;;) {
      const state = await this.getExecution(id, { signal: opts.signal });
      if (state.done) return state.result;
      await sleep(interval, opts.signal);
    }
  }

  /** Queues every item of a batch (POST /v1/batches); the server refuses more than its jobs.maxBatchItems. */
  createBatch(request: CreateBatchRequest, opts: CallOptions = {}): Promise<BatchInfo> {
    return this.call('POST', '/v1/batches', BatchInfo, { body: request, signal: opts.signal });
  }

  /** A batch and one page of its items, in index order; pass `nextCursor` back as `cursor`. */
  getBatch(id: string, params: BatchPageParams = {}, opts: CallOptions = {}): Promise<BatchPage> {
    const query = new URLSearchParams();
    if (params.limit !== undefined) query.set('limit', String(params.limit));
    if (params.cursor !== undefined) query.set('cursor', params.cursor);
    const qs = query.toString();
    return this.call('GET', `/v1/batches/${encodeURIComponent(id)}${qs ? `?${qs}` : ''}`, BatchPage, { signal: opts.signal });
  }

  /** Every item of a batch, page after page, in index order. */
  async *batchItems(id: string, params: { pageSize?: number } = {}, opts: CallOptions = {}): AsyncGenerator<BatchItem> {
    let cursor: string | undefined;
    do {
      const page = await this.getBatch(id, { ...(params.pageSize !== undefined ? { limit: params.pageSize } : {}), ...(cursor !== undefined ? { cursor } : {}) }, opts);
      yield* page.items;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  /**
   * The batch's events as they happen (GET /v1/batches/{id}/events, server-sent events): one
   * `item` per finished item, then `done` with the batch, and the iteration ends. A dropped
   * connection is resumed from the last event seen (Last-Event-ID).
   */
  batchEvents(id: string, opts: BatchEventsOptions = {}): AsyncGenerator<BatchEvent> {
    return followBatchEvents(
      (lastEventId, signal) => {
        const headers = this.headersFor(false, 'text/event-stream');
        if (lastEventId !== undefined) headers['last-event-id'] = lastEventId;
        return this.fetchImpl(`${this.baseUrl}/v1/batches/${encodeURIComponent(id)}/events`, { method: 'GET', headers, signal });
      },
      { ...opts, baseUrl: this.baseUrl },
    );
  }

  /** Cancels a batch's queued items (they end `cancelled`) and returns the batch as it is then. */
  async cancelBatch(id: string, opts: CallOptions = {}): Promise<BatchInfo> {
    const path = `/v1/batches/${encodeURIComponent(id)}`;
    const answer = await this.request('DELETE', path, { signal: opts.signal });
    // A server may answer 204 with no body: the batch's state is then asked for.
    if (answer.json === undefined) return this.getBatch(id, { limit: 1 }, opts);
    return parseAnswer('DELETE', path, BatchInfo, answer);
  }

  // ---- sessions ----------------------------------------------------------------------------------

  /** Starts a session: a live interpreter whose variables, imports and files persist between calls. */
  createSession(request: CreateSessionRequest = {}, opts: CallOptions = {}): Promise<SessionInfo> {
    return this.call('POST', '/v1/sessions', SessionInfo, { body: request, signal: opts.signal });
  }

  /** A session; a recently ended one has state `ended` and its `endedReason`. Throws NotFoundError for an unknown id. */
  getSession(id: string, opts: CallOptions = {}): Promise<SessionInfo> {
    return this.call('GET', sessionPath(id), SessionInfo, { signal: opts.signal });
  }

  /** The caller's live sessions. */
  listSessions(opts: CallOptions = {}): Promise<SessionList> {
    return this.call('GET', '/v1/sessions', SessionList, { signal: opts.signal });
  }

  /** Ends a session (its sandbox is removed) and returns it as it ended. */
  deleteSession(id: string, opts: CallOptions = {}): Promise<SessionInfo> {
    return this.call('DELETE', sessionPath(id), SessionInfo, { signal: opts.signal });
  }

  /**
   * Runs code in the session's live interpreter. The result is an execution's, with `session`
   * (call number, stateLost, ended). Aborting `signal` interrupts the call. Throws
   * SessionBusyError while another call runs, SessionEndedError once the session has ended.
   */
  sessionExecute(id: string, request: SessionExecuteRequest, opts: CallOptions = {}): Promise<ExecutionResult> {
    return this.call('POST', `${sessionPath(id)}/executions`, ExecutionResult, { body: request, signal: opts.signal });
  }

  /** Writes files into the session's work directory; returns the directory's files after it. */
  putSessionFiles(id: string, files: readonly UploadFile[], opts: CallOptions = {}): Promise<SessionFileList> {
    const body = {
      files: files.map((f) =>
        typeof f.content === 'string' ? { path: f.path, content: f.content, encoding: f.encoding ?? 'utf8' } : { path: f.path, content: Buffer.from(f.content).toString('base64'), encoding: 'base64' as const },
      ),
    };
    return this.call('PUT', `${sessionPath(id)}/files`, SessionFileList, { body, signal: opts.signal });
  }

  /** The regular files of the session's work directory. */
  listSessionFiles(id: string, opts: CallOptions = {}): Promise<SessionFileList> {
    return this.call('GET', `${sessionPath(id)}/files`, SessionFileList, { signal: opts.signal });
  }

  /** One file of the session's work directory, as bytes. */
  async getSessionFile(id: string, path: string, opts: CallOptions = {}): Promise<Uint8Array> {
    // The path travels as one segment: its slashes percent-encoded.
    const answer = await this.request('GET', `${sessionPath(id)}/files/${encodeURIComponent(path)}`, { signal: opts.signal, binary: true });
    return answer.bytes ?? new Uint8Array();
  }

  /**
   * A session as an object: `await client.session()` creates one; `run(code)` calls it, `upload`,
   * `download` and `files` reach its work directory, `close()` ends it (once; later calls do nothing).
   */
  async session(request: CreateSessionRequest = {}, opts: CallOptions = {}): Promise<Session> {
    return this.attachSession((await this.createSession(request, opts)).id);
  }

  /** A Session object for an existing session id (nothing is asked of the server until it is used). */
  attachSession(id: string): Session {
    let closed: Promise<SessionInfo> | undefined;
    return {
      id,
      run: (code, more = {}, opts = {}) => this.sessionExecute(id, { ...more, code }, opts),
      upload: (files, opts = {}) => this.putSessionFiles(id, files, opts),
      files: (opts = {}) => this.listSessionFiles(id, opts),
      download: (path, opts = {}) => this.getSessionFile(id, path, opts),
      info: (opts = {}) => this.getSession(id, opts),
      close: (opts = {}) => (closed ??= this.deleteSession(id, opts)),
    };
  }

  /**
   * Runs code in the session's live interpreter and yields its output as it is produced, then the
   * result (as executeStream does for an execution).
   */
  sessionExecuteStream(id: string, request: SessionExecuteRequest, opts: CallOptions = {}): AsyncGenerator<RunStreamEvent> {
    return this.streamCall(`${sessionPath(id)}/executions`, request, opts);
  }

  /**
   * POSTs `body` to a run's `path` asking for server-sent events, and yields the run's events. Until
   * the stream begins it is retried as any request is (a 429 or 503 that says when to come back);
   * then never (the code may have run). Bounded by the client's timeoutMs as a whole.
   */
  private async *streamCall(path: string, body: unknown, opts: CallOptions): AsyncGenerator<RunStreamEvent> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    // Ours too, so that a caller leaving the loop early closes the connection.
    const local = new AbortController();
    const signal = AbortSignal.any([timeout, local.signal, ...(opts.signal ? [opts.signal] : [])]);
    const failed = (e: unknown): unknown => {
      if (opts.signal?.aborted) return opts.signal.reason ?? e;
      if (timeout.aborted) return new TimeoutError(`no result from pybox at ${this.baseUrl} within ${this.timeoutMs} ms`, { code: 'timeout', cause: e });
      return new ConnectionError(`lost the stream from pybox at ${this.baseUrl}: ${causeMessage(e)}`, { code: 'connection_failed', cause: e });
    };
    try {
      const response = await this.retrying(async () => {
        let response: Response;
        try {
          response = await this.fetchImpl(`${this.baseUrl}${path}`, { method: 'POST', headers: this.headersFor(true, 'text/event-stream'), body: JSON.stringify(body), signal });
        } catch (e) {
          throw this.unreachable(e, opts.signal, timeout);
        }
        if (response.ok) return response;
        const text = await response.text().catch(() => '');
        throw errorFromAnswer('POST', path, response, jsonOrUndefined(text));
      }, opts.signal);
      yield* readRunStream(response, `POST ${path}`, failed);
    } finally {
      local.abort();
    }
  }

  private async call<S extends z.ZodType>(method: string, path: string, schema: S, opts: { body?: unknown; signal?: AbortSignal | undefined }): Promise<z.output<S>> {
    return parseAnswer(method, path, schema, await this.request(method, path, opts));
  }

  /** One request, retried while the server is busy and says when to come back; a non-2xx answer throws. */
  private request(method: string, path: string, opts: { body?: unknown; signal?: AbortSignal | undefined; binary?: boolean }): Promise<Answer> {
    return this.retrying(() => this.once(method, path, opts), opts.signal);
  }

  /** `attempt` again while it fails with a 429 or 503 that says when to come back, up to `retries` times. */
  private async retrying<T>(attempt: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    for (let tries = 0; ; tries++) {
      try {
        return await attempt();
      } catch (e) {
        const wait = retryWaitS(e);
        if (wait === undefined || tries >= this.retries) throw e;
        await sleep(Math.max(wait, 0.05) * 1000, signal);
      }
    }
  }

  /** What a fetch that got no answer is thrown as: the caller's own abort, a timeout, or a connection error. */
  private unreachable(e: unknown, callerSignal: AbortSignal | undefined, timeout: AbortSignal): unknown {
    if (callerSignal?.aborted) return callerSignal.reason ?? e;
    if (timeout.aborted) return new TimeoutError(`no answer from pybox at ${this.baseUrl} within ${this.timeoutMs} ms`, { code: 'timeout', cause: e });
    return new ConnectionError(`cannot reach pybox at ${this.baseUrl}: ${causeMessage(e)}`, { code: 'connection_failed', cause: e });
  }

  private headersFor(withBody: boolean, accept = 'application/json'): Record<string, string> {
    const headers: Record<string, string> = { accept, ...this.headers };
    if (this.apiKey !== undefined) headers.authorization = `Bearer ${this.apiKey}`;
    if (withBody) headers['content-type'] = 'application/json';
    return headers;
  }

  private async once(method: string, path: string, opts: { body?: unknown; signal?: AbortSignal | undefined; binary?: boolean }): Promise<Answer> {
    const headers = this.headersFor(opts.body !== undefined, opts.binary ? 'application/octet-stream, application/json' : 'application/json');
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const url = `${this.baseUrl}${path}`;

    let response: Response;
    let text: string;
    let bytes: Uint8Array | undefined;
    try {
      const init: RequestInit = { method, headers, signal };
      if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
      response = await this.fetchImpl(url, init);
      if (opts.binary && response.ok) {
        bytes = new Uint8Array(await response.arrayBuffer());
        text = '';
      } else {
        text = await response.text();
      }
    } catch (e) {
      throw this.unreachable(e, opts.signal, timeout);
    }

    if (bytes) return { status: response.status, json: undefined, bytes };
    const json = jsonOrUndefined(text);
    if (!response.ok) throw errorFromAnswer(method, path, response, json);
    return { status: response.status, json };
  }
}

interface Answer {
  status: number;
  json: unknown;
  bytes?: Uint8Array;
}

const sessionPath = (id: string) => `/v1/sessions/${encodeURIComponent(id)}`;

/** A session of `client.session()`: its calls and files, and close() to end it. */
export interface Session {
  readonly id: string;
  /** Runs code in the session's interpreter (state persists from one run to the next). */
  run(code: string, more?: Omit<SessionExecuteRequest, 'code'>, opts?: CallOptions): Promise<ExecutionResult>;
  upload(files: readonly UploadFile[], opts?: CallOptions): Promise<SessionFileList>;
  files(opts?: CallOptions): Promise<SessionFileList>;
  download(path: string, opts?: CallOptions): Promise<Uint8Array>;
  info(opts?: CallOptions): Promise<SessionInfo>;
  /** Ends the session; calling it again returns the same answer. */
  close(opts?: CallOptions): Promise<SessionInfo>;
}

function parseAnswer<S extends z.ZodType>(method: string, path: string, schema: S, answer: Answer): z.output<S> {
  const parsed = schema.safeParse(answer.json);
  if (!parsed.success) {
    throw new UnexpectedResponseError(`unexpected answer to ${method} ${path}: ${parsed.error.issues[0]?.message ?? 'does not match the API'}`, {
      code: 'unexpected_response',
      status: answer.status,
      details: parsed.error.issues,
    });
  }
  return parsed.data;
}

/** A client for the pybox named by PYBOX_URL (default http://127.0.0.1:8080) and PYBOX_API_KEY. */
export function clientFromEnv(env: Record<string, string | undefined>, opts: Omit<PyboxClientOptions, 'baseUrl' | 'apiKey'> = {}): PyboxClient {
  return new PyboxClient({ ...opts, baseUrl: env.PYBOX_URL || DEFAULT_PYBOX_URL, apiKey: env.PYBOX_API_KEY || undefined });
}
