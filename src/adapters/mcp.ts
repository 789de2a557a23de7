// pybox's tools as an MCP server (the official TypeScript SDK). One builder serves both transports:
// stdio for `npx pybox mcp`, and Streamable HTTP at /mcp of the HTTP server. A failed run, bad
// arguments or an unreachable service are tool results with isError set, never protocol errors.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import pkg from '../../package.json' with { type: 'json' };
import type { PyboxClient } from '../client/client.ts';
import type { PyboxTool } from './tools.ts';

export const MCP_INSTRUCTIONS =
  'pybox runs Python code in an isolated sandbox with no network. Call execute_python_code with a complete ' +
  'script that prints what you need; read the feedback it returns, and when the run failed, fix the code and call it again.';

export interface McpServerOptions {
  client: PyboxClient;
  tools: readonly PyboxTool[];
  /** Aborts running calls, e.g. when the HTTP client of /mcp hangs up. */
  signal?: AbortSignal;
}

/**
 * While a call runs, a progress notification this often, when the host asked for progress: hosts
 * give up on a call after a minute by default, and a run may take five.
 */
export const PROGRESS_INTERVAL_MS = 3000;

export function createMcpServer(opts: McpServerOptions): McpServer {
  const server = new McpServer({ name: 'pybox', title: 'pybox Python sandbox', version: pkg.version }, { instructions: MCP_INSTRUCTIONS });
  for (const tool of opts.tools) {
    server.registerTool(
      tool.name,
      { title: tool.title, description: tool.description, inputSchema: tool.input, annotations: tool.annotations },
      async (args: unknown, extra) => {
        const signal = opts.signal ? AbortSignal.any([extra.signal, opts.signal]) : extra.signal;
        const progressToken = extra._meta?.progressToken;
        const started = Date.now();
        const heartbeat =
          progressToken === undefined
            ? undefined
            : setInterval(() => {
                const elapsedS = Math.round((Date.now() - started) / 1000);
                extra
                  .sendNotification({ method: 'notifications/progress', params: { progressToken, progress: elapsedS, message: `running for ${elapsedS} s` } })
                  .catch(() => {}); // a host that went away hears nothing; the call still ends
              }, PROGRESS_INTERVAL_MS);
        try {
          const outcome = await tool.call(opts.client, args, { signal });
          const meta = outcome.result ? { _meta: { 'pybox/execution': { id: outcome.result.id, status: outcome.result.status } } } : {};
          return { content: [{ type: 'text' as const, text: outcome.text }], isError: outcome.isError, ...meta };
        } finally {
          clearInterval(heartbeat);
        }
      },
    );
  }
  return server;
}

/** Serves the tools on stdin/stdout until the host closes the pipe. Nothing else may write to stdout. */
export async function serveMcpStdio(opts: McpServerOptions): Promise<McpServer> {
  const server = createMcpServer(opts);
  await server.connect(new StdioServerTransport());
  return server;
}

/**
 * Answers one Streamable HTTP request, statelessly: a fresh server and transport per request, so
 * nothing is kept between calls and any number of clients can share the endpoint. Answers stream
 * as SSE, which carries progress and keep-alives through a long run; the server is closed when the
 * answer has been sent or the client has gone.
 */
export async function handleMcpHttp(request: Request, opts: McpServerOptions & { maxBodyBytes: number }): Promise<Response> {
  const server = createMcpServer({ ...opts, signal: request.signal });
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
    if (!response.body) {
      close();
      return response;
    }
    request.signal.addEventListener('abort', close, { once: true });
    const body = response.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ flush: close }));
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  } catch (e) {
    close();
    throw e;
  }
}
