// The JSON-RPC 2.0 messages /mcp exchanges, as far as the OpenAPI document describes them: MCP's
// own schemas (the SDK's) say what each method carries.
import { z } from 'zod';

const JsonRpcId = z.union([z.string(), z.int()]);

/** A request (`id` and `method`), a notification (`method`, no `id`) or a response (`id` and `result` or `error`). */
export const JsonRpcMessage = z.looseObject({
  jsonrpc: z.literal('2.0'),
  id: JsonRpcId.optional(),
  method: z.string().optional(),
  params: z.record(z.string(), z.unknown()).optional(),
  result: z.record(z.string(), z.unknown()).optional(),
  error: z.object({ code: z.int(), message: z.string(), data: z.unknown().optional() }).optional(),
});

/** What the transport answers a request it cannot take: `id` is null when it could not read one. */
export const JsonRpcErrorResponse = z.object({
  jsonrpc: z.literal('2.0'),
  error: z.object({ code: z.int(), message: z.string(), data: z.unknown().optional() }),
  id: JsonRpcId.nullable(),
});

/** One message, or a batch of them. */
export const JsonRpcBody = z.union([JsonRpcMessage, z.array(JsonRpcMessage).min(1)]);
