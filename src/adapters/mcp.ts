// pybox's tools as an MCP server (the official TypeScript SDK). One builder serves both transports:
// stdio for `npx pybox mcp`, and Streamable HTTP at /mcp of the HTTP server. A failed run, bad
// arguments or a service fault are tool results with isError set, never protocol errors.
//
// Built on the SDK's low-level Server rather than McpServer.registerTool: McpServer validates the
// arguments with the zod schema before the handler runs, so a deeply nested argument would meet
// its recursive checks before any depth limit, and the model would read the SDK's wording instead
// of the same message every other surface gives. Here tools/list shows exactly the JSON Schemas
// GET /v1/tools serves, and every check is the tool's own (tools.ts).
import { randomUUID } from 'node:crypto';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { CallToolRequestSchema, CancelledNotificationSchema, ListToolsRequestSchema, type CallToolResult, type ImageContent, type Tool } from '@modelcontextprotocol/sdk/types.js';
import pkg from '../../package.json' with { type: 'json' };
import { CallProgress } from './mcp-progress.ts';
import { callTool, inputJsonSchema, outputJsonSchema, type PyboxTool, type ToolBackend, type ToolOutcome } from './tools.ts';

export const MCP_INSTRUCTIONS =
  'pybox runs Python code in an isolated sandbox with no network. Call execute_python_code with a complete ' +
  'script that prints what you need; read the feedback it returns, and when the run failed, fix the code and call it again.';

type RequestId = string | number;

/** One caller's tool calls in flight, as a cancellation coming in another HTTP request finds them. */
export interface CallScope {
  /** Registers a running call; `end` must be called when it is over. */
  start(requestId: RequestId): { signal: AbortSignal; end(): void };
  /** Cancels the caller's call with this id, when exactly one is in flight. */
  cancel(requestId: RequestId, reason: string): void;
}

/**
 * Tool calls in flight on a stateless /mcp. A client cancels a call with `notifications/cancelled`
 * sent in a new HTTP request, which reaches a fresh server that never saw the call: this table,
 * one per app, joins the two by who is calling (the scope's owner: tenant and API key, and the
 * client's Mcp-Session-Id when it sends one) and the JSON-RPC id. Ids are chosen by clients and two
 * clients of one key may use the same one, so an ambiguous id cancels nothing: a cancellation that
 * is not honoured is allowed by MCP, a stranger's run stopped is not.
 */
export class InFlightCalls {
  private readonly calls = new Map<string, Set<AbortController>>();

  scope(owner: string): CallScope {
    const keyOf = (id: RequestId) => `${owner}\u0000${typeof id}:${id}`;
    return {
      start: (requestId) => {
        const key = keyOf(requestId);
        const controller = new AbortController();
        let set = this.calls.get(key);
        if (!set) this.calls.set(key, (set = new Set()));
        set.add(controller);
        return {
          signal: controller.signal,
          end: () => {
            set.delete(controller);
            if (set.size === 0 && this.calls.get(key) === set) this.calls.delete(key);
          },
        };
      },
      cancel: (requestId, reason) => {
        const set = this.calls.get(keyOf(requestId));
        if (set?.size === 1) for (const controller of set) controller.abort(new Error(`cancelled by the client: ${reason}`));
      },
    };
  }

  /** Calls in flight, for tests and diagnostics. */
  get size(): number {
    let n = 0;
    for (const set of this.calls.values()) n += set.size;
    return n;
  }
}

export interface McpServerOptions {
  /** Where the tools run: the typed client (stdio) or the service in-process (/mcp). */
  backend: ToolBackend;
  tools: readonly PyboxTool[];
  /** Aborts running calls, e.g. when the HTTP client of /mcp hangs up. */
  signal?: AbortSignal;
  /** Over stateless HTTP: the caller's calls in flight, so a cancellation in a later request reaches them. */
  calls?: CallScope;
}

/**
 * While a call runs, a progress notification this often, when the host asked for progress: hosts
 * give up on a call after a minute by default, and a run may take five. The code's output goes to
 * such a host as progress notifications too, as it is written (mcp-progress.ts).
 */
export const PROGRESS_INTERVAL_MS = 3000;

/** The tools as tools/list shows them: the same input schemas as GET /v1/tools, and the output schemas. */
export function mcpToolList(tools: readonly PyboxTool[]): Tool[] {
  return tools.map((tool) => ({
    name: tool.name,
    title: tool.title,
    description: tool.description,
    inputSchema: { ...inputJsonSchema(tool), type: 'object' as const },
    outputSchema: { ...outputJsonSchema(tool), type: 'object' as const },
    annotations: { title: tool.title, ...tool.annotations },
  }));
}

/** A run's figures as MCP image content, after the text: a model can look at its plots. */
function figureContent(outcome: ToolOutcome): ImageContent[] {
  return (outcome.result?.outputs ?? []).filter((o) => o.type === 'image/png').map((o) => ({ type: 'image', data: o.data, mimeType: 'image/png' }));
}

/**
 * The structured result without its images' data: they are the image content already, and a host
 * that shows structuredContent to a model as text would hand it megabytes of base64.
 */
function structuredOf(outcome: ToolOutcome): Record<string, unknown> | undefined {
  const structured = outcome.structured;
  if (!structured || !('outputs' in structured) || !structured.outputs) return structured;
  const { outputs, ...rest } = structured;
  const texts = outputs.filter((o) => o.type !== 'image/png');
  return texts.length > 0 ? { ...rest, outputs: texts } : rest;
}

export function createMcpServer(opts: McpServerOptions): Server {
  const server = new Server(
    { name: 'pybox', title: 'pybox Python sandbox', version: pkg.version },
    { capabilities: { tools: {} }, instructions: MCP_INSTRUCTIONS },
  );
  const listed = mcpToolList(opts.tools);
  server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: listed }));

  const calls = opts.calls;
  if (calls) {
    // Replaces the SDK's own handler, which only knows the calls of this one request's server.
    server.setNotificationHandler(CancelledNotificationSchema, (notification) => {
      const { requestId, reason } = notification.params;
      if (requestId !== undefined) calls.cancel(requestId, reason ?? 'no reason given');
    });
  }

  server.setRequestHandler(CallToolRequestSchema, async (request, extra): Promise<CallToolResult> => {
    const registration = calls?.start(extra.requestId);
    const signal = AbortSignal.any([extra.signal, ...(opts.signal ? [opts.signal] : []), ...(registration ? [registration.signal] : [])]);
    const progressToken = request.params._meta?.progressToken;
    const started = Date.now();
    const progress =
      progressToken === undefined
        ? undefined
        : new CallProgress((params) =>
            // A host that went away hears nothing; the call still ends.
            extra.sendNotification({ method: 'notifications/progress', params: { progressToken, ...params } }).catch(() => {}),
          );
    const heartbeat = progress && setInterval(() => progress.heartbeat(Math.round((Date.now() - started) / 1000)), PROGRESS_INTERVAL_MS);
    try {
      const output = progress ? { onStdout: (text: string) => progress.output('stdout', text), onStderr: (text: string) => progress.output('stderr', text) } : {};
      const outcome = await callTool(opts.tools, opts.backend, request.params.name, request.params.arguments ?? {}, { signal, ...output });
      // The last output goes before the result, which ends the call's notifications.
      await progress?.close();
      const result: CallToolResult = { content: [{ type: 'text', text: outcome.text }, ...figureContent(outcome)], isError: outcome.isError };
      const structured = structuredOf(outcome);
      if (structured) result.structuredContent = structured;
      if (outcome.result) result._meta = { 'pybox/execution': { id: outcome.result.id, status: outcome.result.status } };
      return result;
    } catch (e) {
      // The caller's own abort surfaces from the client as its reason; nobody waits for the answer.
      if (signal.aborted) return { content: [{ type: 'text', text: 'The call was cancelled.' }], isError: true };
      throw e;
    } finally {
      clearInterval(heartbeat);
      void progress?.close();
      registration?.end();
    }
  });
  return server;
}

/** Serves the tools on stdin/stdout until the host closes the pipe. Nothing else may write to stdout. */
export async function serveMcpStdio(opts: McpServerOptions): Promise<Server> {
  const server = createMcpServer(opts);
  await server.connect(new StdioServerTransport());
  return server;
}

export interface McpHttpOptions extends Omit<McpServerOptions, 'calls'> {
  maxBodyBytes: number;
  /** The app's calls in flight, and whose this request is (tenant and key), for cancellations. */
  inFlight?: { calls: InFlightCalls; owner: string };
}

/** Initialize requests are a few hundred bytes; a longer body is not one, and is not read twice. */
const MAX_INITIALIZE_BYTES = 64 * 1024;

/** Whether the body is an initialize request; reads no more than MAX_INITIALIZE_BYTES of it. */
async function isInitialize(request: Request): Promise<boolean> {
  const reader = request.body?.getReader();
  if (!reader) return false;
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_INITIALIZE_BYTES) return false;
      chunks.push(value);
    }
    const message: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return typeof message === 'object' && message !== null && (message as { method?: unknown }).method === 'initialize';
  } catch {
    return false;
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Answers one Streamable HTTP request, statelessly: a fresh server and transport per request, so
 * nothing is kept between calls and any number of clients can share the endpoint. Answers stream
 * as SSE, which carries progress and keep-alives through a long run; the server is closed when the
 * answer has been sent or the client has gone, and a client that goes cancels its calls.
 *
 * The answer to `initialize` names a session (Mcp-Session-Id), which clients send back with every
 * later request. Nothing is kept for it: it only tells two clients of one key apart, so that a
 * cancellation reaches the right call.
 */
export async function handleMcpHttp(request: Request, opts: McpHttpOptions): Promise<Response> {
  const session = request.headers.get('mcp-session-id') ?? undefined;
  const initializing = session === undefined && opts.inFlight ? isInitialize(request.clone()) : Promise.resolve(false);
  const calls = opts.inFlight ? opts.inFlight.calls.scope(`${opts.inFlight.owner}\u0000${session ?? ''}`) : undefined;
  const server = createMcpServer({
    ...opts,
    ...(calls ? { calls } : {}),
    signal: opts.signal ? AbortSignal.any([opts.signal, request.signal]) : request.signal,
  });
  const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, maxRequestBodySize: opts.maxBodyBytes });
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    void server.close().catch(() => {});
  };
  try {
    await server.connect(transport);
    const response = await transport.handleRequest(request);
    const headers = new Headers(response.headers);
    if (response.ok && (await initializing)) headers.set('Mcp-Session-Id', randomUUID());
    if (!response.body) {
      close();
      return new Response(null, { status: response.status, statusText: response.statusText, headers });
    }
    request.signal.addEventListener('abort', close, { once: true });
    const body = response.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ flush: close }));
    return new Response(body, { status: response.status, statusText: response.statusText, headers });
  } catch (e) {
    close();
    throw e;
  }
}
