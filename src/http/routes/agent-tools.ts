// The agent surfaces of the HTTP server: GET /v1/tools (function-calling schemas) and /mcp (the
// same tools over MCP's Streamable HTTP). /mcp's tools call the execution service in-process for
// the caller the app's middleware has authenticated: one request, one charge of the tenant's rate,
// and the call's abort signal (the client cancelling, or hanging up) reaches the execution.
import { Hono } from 'hono';
import { handleMcpHttp, InFlightCalls } from '../../adapters/mcp.ts';
import { serviceBackend } from '../../adapters/service-backend.ts';
import { functionSchemas, selectTools, type ToolSelection } from '../../adapters/tools.ts';
import type { Caller } from '../../core/caller.ts';
import type { ExecutionService, Logger } from '../../core/ports.ts';
import type { SessionApi } from '../../core/session-service.ts';
import { callerOf } from '../auth.ts';
import { requestIdOf } from '../request-log.ts';

export interface ToolListDeps {
  tools: ToolSelection;
}

export interface McpDeps extends ToolListDeps {
  service: ExecutionService;
  logger: Logger;
  bodyLimitBytes: number;
  /** Sessions, for the session tools (offered only with them). */
  sessions?: SessionApi | undefined;
}

export function toolListRoutes(deps: ToolListDeps): Hono {
  const routes = new Hono();
  const list = functionSchemas(selectTools(deps.tools));
  routes.get('/tools', (c) => c.json(list, 200));
  return routes;
}

/** Whose calls a cancellation may reach: the same API key's (the local operator's in local mode). */
const ownerOf = (caller: Caller) => `${caller.tenant}\u0000${caller.keyId ?? ''}`;

export function mcpRoutes(deps: McpDeps): Hono {
  const routes = new Hono();
  const tools = selectTools(deps.tools);
  const inFlight = new InFlightCalls();

  routes.post('/', async (c) => {
    const caller = callerOf(c);
    const backend = serviceBackend({ service: deps.service, caller, logger: deps.logger, requestId: requestIdOf(c), sessions: deps.sessions });
    return handleMcpHttp(c.req.raw, { backend, tools, maxBodyBytes: deps.bodyLimitBytes, inFlight: { calls: inFlight, owner: ownerOf(caller) } });
  });

  // Stateless: no server-initiated stream to open (GET) and no session to end (DELETE).
  routes.on(['GET', 'DELETE'], '/', (c) =>
    c.json({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this MCP endpoint is stateless; POST JSON-RPC requests' }, id: null }, 405, { Allow: 'POST' }),
  );

  return routes;
}
