// GET /v1/tools and /mcp as they answer. Their sub-apps (routes/agent-tools.ts) are not built with
// route.ts's `serve` (/mcp is answered by the MCP SDK's Streamable HTTP transport), so their
// operations are described here and registered beside them; the route listing test
// (test/http/openapi.test.ts) fails if the methods served and the methods described differ.
import type { RouteConfig } from '@hono/zod-openapi';
import { ToolList } from '../core/schemas.ts';
import { errorResponses } from './openapi.ts';
import { JsonRpcBody, JsonRpcErrorResponse, JsonRpcMessage } from './jsonrpc-schemas.ts';

const rpcError = (description: string) => ({ description, content: { 'application/json': { schema: JsonRpcErrorResponse } } });

const stateless = {
  405: {
    ...rpcError('Not offered: the endpoint is stateless, with no server-initiated stream to open and no session to end'),
    headers: { Allow: { description: 'POST', schema: { type: 'string' as const } } },
  },
};

export const TOOL_LIST_OPERATIONS: readonly RouteConfig[] = [
  {
    method: 'get',
    path: '/v1/tools',
    operationId: 'tools',
    summary: 'The enabled tools (config tools.enabled) as OpenAI and Anthropic function-calling schemas',
    responses: { 200: { description: 'OK', content: { 'application/json': { schema: ToolList } } }, ...errorResponses('internal') },
  },
];

export const MCP_OPERATIONS: readonly RouteConfig[] = [
  {
    method: 'post',
    path: '/mcp',
    operationId: 'mcp',
    summary: 'The tools of GET /v1/tools over MCP Streamable HTTP, statelessly: one JSON-RPC message (or batch) in, its answer out',
    description:
      'The client must accept both `application/json` and `text/event-stream` (else 406). A request is answered as an event stream whose `message` events carry ' +
      'JSON-RPC messages (progress notifications, then the response); notifications and responses alone are accepted with 202. Tool calls run as the caller, ' +
      'with the same authentication, quotas and limits as POST /v1/executions; a call cancelled by its client (a cancellation notification, or a closed stream) ends its execution as `cancelled`.',
    request: { body: { required: true, content: { 'application/json': { schema: JsonRpcBody } } } },
    responses: {
      200: {
        description: 'The answer to the request(s)',
        headers: {
          'Mcp-Session-Id': {
            description:
              'On the answer to `initialize` only: a name for this client, nothing stored. Sent back on later requests, it tells a cancellation ' +
              '(`notifications/cancelled`, which arrives in a request of its own) which of the key\'s calls it means.',
            schema: { type: 'string' as const },
          },
        },
        content: {
          'text/event-stream': { schema: { type: 'string' as const, description: 'Server-sent events; the data of each `message` event is one JSON-RPC message (JsonRpcMessage)' } },
          'application/json': { schema: JsonRpcMessage },
        },
      },
      202: { description: 'Only notifications or responses were sent: accepted, no body' },
      400: rpcError('Not JSON, or not a JSON-RPC message (code -32700 or -32600)'),
      406: rpcError('The Accept header does not list both application/json and text/event-stream'),
      415: rpcError('The body is not application/json'),
      ...errorResponses('payload_too_large', 'internal'),
    },
  },
  { method: 'get', path: '/mcp', operationId: 'mcpStream', summary: 'Not offered: the endpoint keeps no sessions', responses: stateless },
  { method: 'delete', path: '/mcp', operationId: 'mcpEndSession', summary: 'Not offered: the endpoint keeps no sessions', responses: stateless },
];
