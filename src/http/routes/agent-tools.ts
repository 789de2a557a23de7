// The agent surfaces of the HTTP server: GET /v1/tools (function-calling schemas) and /mcp (the
// same tools over MCP's Streamable HTTP). /mcp reaches pybox through the typed client over this very
// app, in-process: a tool call passes the same authentication, quotas and validation as any
// POST /v1/executions, with the caller's own credentials.
import { Hono } from 'hono';
import { PyboxClient, type FetchLike } from '../../client/client.ts';
import { handleMcpHttp } from '../../adapters/mcp.ts';
import { functionSchemas, selectTools, type ToolSelection } from '../../adapters/tools.ts';

export interface AgentToolsDeps {
  tools: ToolSelection;
  /** The app's own fetch, for the in-process client. */
  fetch: FetchLike;
  bodyLimitBytes: number;
}

/** Headers of the MCP request that the inner API calls carry on: who is calling. */
const FORWARDED = ['authorization', 'x-api-key'];

export function toolListRoutes(deps: AgentToolsDeps): Hono {
  const routes = new Hono();
  const list = functionSchemas(selectTools(deps.tools));
  routes.get('/tools', (c) => c.json(list, 200));
  return routes;
}

export function mcpRoutes(deps: AgentToolsDeps): Hono {
  const routes = new Hono();
  const tools = selectTools(deps.tools);

  routes.post('/', async (c) => {
    const headers: Record<string, string> = {};
    for (const name of FORWARDED) {
      const value = c.req.header(name);
      if (value !== undefined) headers[name] = value;
    }
    // Retries are the MCP client's to decide: a busy server answers the tool call with isError.
    const client = new PyboxClient({ baseUrl: 'http://pybox.internal', fetch: deps.fetch, headers, retries: 0 });
    return handleMcpHttp(c.req.raw, { client, tools, maxBodyBytes: deps.bodyLimitBytes });
  });

  // Stateless: no server-initiated stream to open (GET) and no session to end (DELETE).
  routes.on(['GET', 'DELETE'], '/', (c) =>
    c.json({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this MCP endpoint is stateless; POST JSON-RPC requests' }, id: null }, 405, { Allow: 'POST' }),
  );

  return routes;
}
