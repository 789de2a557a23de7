// The OpenAPI 3.1 document, generated from the same zod schemas that validate requests, so the
// description cannot drift from what the server accepts and returns.
import { z } from 'zod';
import type { ErrorCode } from '../core/errors.ts';
import { ErrorBody, ExecutionRequest, ExecutionResult, HistoryPage, HistoryQuery, Readiness, RuntimeInfo, Stats, ToolList, UsageQuery, UsageReport } from '../core/schemas.ts';
import { STATUS_BY_CODE } from './errors.ts';
import { LegacyExecuteRequest, LegacyExecuteResponse, LegacyHistory, LegacyHistoryQuery, LegacyStats } from './legacy-schemas.ts';

type JsonSchema = Record<string, unknown>;
type Io = 'input' | 'output';

const Health = z.object({ status: z.literal('ok') });

/** Component name → schema and which side of it a client sees (input for request bodies). */
const COMPONENTS = {
  ExecutionRequest: { schema: ExecutionRequest, io: 'input' },
  ExecutionResult: { schema: ExecutionResult, io: 'output' },
  HistoryPage: { schema: HistoryPage, io: 'output' },
  Stats: { schema: Stats, io: 'output' },
  UsageReport: { schema: UsageReport, io: 'output' },
  ErrorBody: { schema: ErrorBody, io: 'output' },
  RuntimeInfo: { schema: RuntimeInfo, io: 'output' },
  Readiness: { schema: Readiness, io: 'output' },
  Health: { schema: Health, io: 'output' },
  LegacyExecuteRequest: { schema: LegacyExecuteRequest, io: 'input' },
  LegacyExecuteResponse: { schema: LegacyExecuteResponse, io: 'output' },
  LegacyHistory: { schema: LegacyHistory, io: 'output' },
  LegacyStats: { schema: LegacyStats, io: 'output' },
  ToolList: { schema: ToolList, io: 'output' },
} satisfies Record<string, { schema: z.ZodType; io: Io }>;
type ComponentName = keyof typeof COMPONENTS;

const ref = (name: ComponentName) => ({ $ref: `#/components/schemas/${name}` });

/** Rewrites `#/$defs/x` refs, which would resolve against the whole OpenAPI document, to `to(x)`. */
function rewriteRefs(node: unknown, to: (def: string) => string): unknown {
  if (Array.isArray(node)) return node.map((n) => rewriteRefs(n, to));
  if (node === null || typeof node !== 'object') return node;
  return Object.fromEntries(
    Object.entries(node).map(([k, v]) => [k, k === '$ref' && typeof v === 'string' && v.startsWith('#/$defs/') ? to(v.slice('#/$defs/'.length)) : rewriteRefs(v, to)]),
  );
}

function componentSchemas(): Record<string, JsonSchema> {
  const out: Record<string, JsonSchema> = {};
  const entries: [string, { schema: z.ZodType; io: Io }][] = Object.entries(COMPONENTS);
  for (const [name, { schema, io }] of entries) {
    const json = z.toJSONSchema(schema, {
      target: 'draft-2020-12',
      io,
      // A nested schema that is itself a component becomes a reference to it.
      override: ({ zodSchema, jsonSchema, path }) => {
        if (path.length === 0) return;
        const other = entries.find(([, c]) => (c.schema as unknown) === zodSchema && c.io === io);
        if (!other) return;
        for (const key of Object.keys(jsonSchema)) delete (jsonSchema as JsonSchema)[key];
        Object.assign(jsonSchema, { $ref: `#/components/schemas/${other[0]}` });
      },
    }) as JsonSchema;
    const { $schema: _dialect, $defs, ...rest } = json;
    const defName = (def: string) => `${name}_${def.replace(/^_+/, '')}`;
    const to = (def: string) => `#/components/schemas/${defName(def)}`;
    out[name] = rewriteRefs(rest, to) as JsonSchema;
    for (const [def, s] of Object.entries(($defs ?? {}) as Record<string, unknown>)) out[defName(def)] = rewriteRefs(s, to) as JsonSchema;
  }
  return out;
}

const jsonContent = (schema: JsonSchema) => ({ 'application/json': { schema } });

/** Error responses for the given codes, grouped by the status the one error table gives them. */
function errors(...codes: ErrorCode[]): Record<string, unknown> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) byStatus.set(STATUS_BY_CODE[code], [...(byStatus.get(STATUS_BY_CODE[code]) ?? []), code]);
  return Object.fromEntries(
    [...byStatus].map(([status, cs]) => {
      const retry = cs.some((c) => c === 'queue_full' || c === 'engine_unavailable' || c === 'rate_limited');
      const response: Record<string, unknown> = { description: `error: ${cs.join(', ')}`, content: jsonContent(ref('ErrorBody')) };
      const headers: Record<string, unknown> = {};
      if (retry) headers['Retry-After'] = { description: 'Seconds after which a retry may succeed', schema: { type: 'integer' } };
      if (cs.includes('rate_limited')) Object.assign(headers, RATE_LIMIT_HEADERS);
      if (cs.includes('unauthorized')) headers['WWW-Authenticate'] = { description: 'Bearer realm="pybox"', schema: { type: 'string' } };
      if (Object.keys(headers).length > 0) response.headers = headers;
      return [String(status), response];
    }),
  );
}

const ok = (schema: JsonSchema, description = 'OK') => ({ '200': { description, content: jsonContent(schema) } });

function queryParameters(schema: z.ZodType): JsonSchema[] {
  const json = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input' }) as { properties?: Record<string, JsonSchema>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, s]) => ({ name, in: 'query', required: json.required?.includes(name) ?? false, schema: s }));
}

const BODY_ERRORS: ErrorCode[] = ['invalid_request', 'unsupported_media_type', 'payload_too_large'];
const RUN_ERRORS: ErrorCode[] = ['queue_full', 'engine_unavailable', 'image_missing', 'shutting_down', 'internal'];

/** The IETF draft's RateLimit fields, sent on every answer to a rate-limited tenant and on each 429. */
const RATE_LIMIT_HEADERS: Record<string, unknown> = {
  'RateLimit-Policy': { description: 'The quota policy, e.g. `"requests";q=60;w=60` or `"concurrency";q=4`', schema: { type: 'string' } },
  RateLimit: { description: 'What is left of it, e.g. `"requests";r=0;t=2`', schema: { type: 'string' } },
  'RateLimit-Limit': { description: 'Quota units of the policy', schema: { type: 'integer' } },
  'RateLimit-Remaining': { description: 'Units left', schema: { type: 'integer' } },
  'RateLimit-Reset': { description: 'Seconds until the quota is back', schema: { type: 'integer' } },
};

/** Paths any client may call without a key; every other operation needs one once any key exists. */
const OPEN_PATHS = new Set(['/healthz', '/readyz']);

/** Adds the bearer requirement and the 401 and 429 answers to every operation that needs a key. */
function withAuth<P extends Record<string, Record<string, unknown>>>(paths: P): P {
  for (const [path, ops] of Object.entries(paths)) {
    if (OPEN_PATHS.has(path)) continue;
    for (const op of Object.values(ops) as Array<{ responses?: Record<string, unknown>; security?: unknown }>) {
      op.security = [{ apiKey: [] }];
      op.responses = { ...op.responses, ...errors('unauthorized', 'rate_limited') };
    }
  }
  return paths;
}

export function buildOpenApi(version: string) {
  return {
    openapi: '3.1.0',
    info: { title: 'pybox', version, description: 'Runs untrusted Python in hardened, short-lived containers.' },
    paths: withAuth({
      '/v1/executions': {
        post: {
          operationId: 'execute',
          summary: 'Run code and wait for its result',
          requestBody: { required: true, content: jsonContent(ref('ExecutionRequest')) },
          responses: { ...ok(ref('ExecutionResult'), 'The run finished; `status` says how'), ...errors(...BODY_ERRORS, ...RUN_ERRORS) },
        },
        get: {
          operationId: 'listExecutions',
          summary: 'Past executions, newest first',
          parameters: queryParameters(HistoryQuery),
          responses: { ...ok(ref('HistoryPage')), ...errors('invalid_request', 'store_unavailable', 'internal') },
        },
      },
      '/v1/executions/{id}': {
        get: {
          operationId: 'getExecution',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string', maxLength: 100 } }],
          responses: { ...ok(ref('ExecutionResult')), ...errors('not_found', 'internal') },
        },
      },
      '/v1/stats': { get: { operationId: 'stats', responses: { ...ok(ref('Stats')), ...errors('internal') } } },
      '/v1/runtimes': { get: { operationId: 'runtimes', responses: { ...ok(ref('RuntimeInfo')), ...errors('engine_unavailable', 'internal') } } },
      '/healthz': { get: { operationId: 'health', summary: 'Liveness: the process answers', responses: ok(ref('Health')) } },
      '/readyz': {
        get: {
          operationId: 'ready',
          summary: 'Readiness: engine, image and store are usable',
          responses: { ...ok(ref('Readiness'), 'Ready'), '503': { description: 'Not ready', content: jsonContent(ref('Readiness')) } },
        },
      },
      '/openapi.json': { get: { operationId: 'openapi', responses: ok({ type: 'object' }, 'This document') } },
      '/api/execute-code': {
        post: {
          operationId: 'legacyExecute',
          summary: 'Reference-design compatible execution (times in seconds; 200 even when the code fails)',
          requestBody: { required: true, content: jsonContent(ref('LegacyExecuteRequest')) },
          responses: { ...ok(ref('LegacyExecuteResponse')), ...errors(...BODY_ERRORS, ...RUN_ERRORS) },
        },
      },
      '/api/code-history': {
        get: {
          operationId: 'legacyHistory',
          parameters: queryParameters(LegacyHistoryQuery),
          responses: { ...ok(ref('LegacyHistory')), ...errors('invalid_request', 'internal') },
        },
      },
      '/v1/tools': {
        get: {
          operationId: 'tools',
          summary: 'The enabled tools (config tools.enabled) as OpenAI and Anthropic function-calling schemas',
          responses: { ...ok(ref('ToolList')), ...errors('internal') },
        },
      },
      '/mcp': {
        post: {
          operationId: 'mcp',
          summary: 'The same tools over MCP Streamable HTTP: stateless, one JSON-RPC message in, its JSON answer out',
          requestBody: { required: true, content: jsonContent({ type: 'object', description: 'A JSON-RPC 2.0 request or notification' }) },
          responses: { ...ok({ type: 'object', description: 'The JSON-RPC 2.0 response' }), '202': { description: 'A notification, accepted' } },
        },
        get: { operationId: 'mcpStream', summary: 'Not offered: the endpoint keeps no sessions', responses: { '405': { description: 'Method not allowed' } } },
        delete: { operationId: 'mcpEndSession', summary: 'Not offered: the endpoint keeps no sessions', responses: { '405': { description: 'Method not allowed' } } },
      },
      '/api/code-stats': { get: { operationId: 'legacyStats', responses: { ...ok(ref('LegacyStats')), ...errors('internal') } } },
      '/v1/usage': {
        get: {
          operationId: 'usage',
          summary: "The caller's usage (every tenant's for an admin key): executions by status, wall and CPU time, output bytes",
          parameters: queryParameters(UsageQuery),
          responses: { ...ok(ref('UsageReport')), ...errors('invalid_request', 'not_found', 'internal') },
        },
      },
    }),
    components: {
      schemas: componentSchemas(),
      securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'An API key from `pybox keys create`; not needed in local mode (no keys exist)' } },
    },
  };
}
