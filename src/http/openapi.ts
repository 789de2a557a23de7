// The OpenAPI 3.1 document, derived from the route definitions the app serves (route.ts registers
// each in the app's registry as it mounts it), with their zod schemas rendered by zod itself.
// The library's own generator is not used: it overflows the stack on recursive schemas such as
// z.json() (the `context` values), which zod's toJSONSchema renders with a $defs reference.
import type { RouteConfig } from '@hono/zod-openapi';
import { z } from 'zod';
import type { ErrorCode } from '../core/errors.ts';
import {
  AsyncExecutionRequest,
  BatchInfo,
  BatchList,
  BatchPage,
  BatchRequest,
  ClusterInfo,
  ErrorBody,
  ExecutionRequest,
  ExecutionResult,
  HistoryPage,
  PendingExecution,
  Readiness,
  RuntimeInfo,
  RuntimeName,
  SessionCallRequest,
  SessionFileList,
  SessionFilesUpload,
  SessionInfo,
  SessionList,
  SessionRequest,
  Stats,
  ToolList,
  UsageReport,
  WebhookSecret,
} from '../core/schemas.ts';
import type { DoctorReport as DoctorReportType } from '../doctor/doctor.ts';
import { isPublicPage, OPEN_PATHS } from './auth.ts';
import { STATUS_BY_CODE } from './errors.ts';
import { JsonRpcBody, JsonRpcErrorResponse, JsonRpcMessage } from './jsonrpc-schemas.ts';
import { UNGUARDED_PATHS } from './guard.ts';
import { LegacyExecuteRequest, LegacyExecuteResponse, LegacyHistory, LegacyStats } from './legacy-schemas.ts';

type JsonSchema = Record<string, unknown>;
type Io = 'input' | 'output';

export const Health = z.object({ status: z.literal('ok') });

/** GET /v1/doctor's report; `satisfies` keeps it the doctor's own type. */
export const DoctorReport = z.object({
  ok: z.boolean(),
  runtime: RuntimeName,
  image: z.string(),
  hostKernel: z.string(),
  checks: z.array(z.object({ name: z.string(), ok: z.boolean(), detail: z.string() })),
  startedAt: z.string(),
  durationMs: z.number(),
}) satisfies z.ZodType<DoctorReportType>;

/** This document itself, as far as a schema can say without describing OpenAPI. */
export const OpenApiDocument = z.looseObject({ openapi: z.string(), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) });

/** GET /metrics: samples in the Prometheus text exposition format 0.0.4. */
export const MetricsText = z.string().meta({ description: 'Prometheus text exposition format 0.0.4' });

/** Component name → schema and which side of it a client sees (input for request bodies). */
const COMPONENTS = {
  ExecutionRequest: { schema: ExecutionRequest, io: 'input' },
  ExecutionResult: { schema: ExecutionResult, io: 'output' },
  HistoryPage: { schema: HistoryPage, io: 'output' },
  AsyncExecutionRequest: { schema: AsyncExecutionRequest, io: 'input' },
  PendingExecution: { schema: PendingExecution, io: 'output' },
  BatchRequest: { schema: BatchRequest, io: 'input' },
  BatchInfo: { schema: BatchInfo, io: 'output' },
  BatchPage: { schema: BatchPage, io: 'output' },
  BatchList: { schema: BatchList, io: 'output' },
  WebhookSecret: { schema: WebhookSecret, io: 'output' },
  SessionRequest: { schema: SessionRequest, io: 'input' },
  SessionInfo: { schema: SessionInfo, io: 'output' },
  SessionList: { schema: SessionList, io: 'output' },
  SessionCallRequest: { schema: SessionCallRequest, io: 'input' },
  SessionFilesUpload: { schema: SessionFilesUpload, io: 'input' },
  SessionFileList: { schema: SessionFileList, io: 'output' },
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
  DoctorReport: { schema: DoctorReport, io: 'output' },
  ClusterInfo: { schema: ClusterInfo, io: 'output' },
  MetricsText: { schema: MetricsText, io: 'output' },
  OpenApiDocument: { schema: OpenApiDocument, io: 'output' },
  JsonRpcBody: { schema: JsonRpcBody, io: 'input' },
  JsonRpcMessage: { schema: JsonRpcMessage, io: 'output' },
  JsonRpcErrorResponse: { schema: JsonRpcErrorResponse, io: 'output' },
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

/** Error responses for the given codes, grouped by the status the one error table gives them. */
export function errorResponses(...codes: ErrorCode[]): Record<string, { description: string; content: { 'application/json': { schema: typeof ErrorBody } }; headers?: Record<string, HeaderObject> }> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) byStatus.set(STATUS_BY_CODE[code], [...(byStatus.get(STATUS_BY_CODE[code]) ?? []), code]);
  return Object.fromEntries(
    [...byStatus].map(([status, cs]) => {
      const headers: Record<string, HeaderObject> = {};
      if (cs.some((c) => c === 'rate_limited' || STATUS_BY_CODE[c] === 503)) {
        headers['Retry-After'] = { description: 'Seconds after which a retry may succeed', schema: { type: 'integer' } };
      }
      if (cs.includes('rate_limited')) Object.assign(headers, RATE_LIMIT_HEADERS);
      if (cs.includes('unauthorized')) headers['WWW-Authenticate'] = { description: 'Bearer realm="pybox"', schema: { type: 'string' } };
      const response = { description: `error: ${cs.join(', ')}`, content: { 'application/json': { schema: ErrorBody } } };
      return [String(status), Object.keys(headers).length > 0 ? { ...response, headers } : response];
    }),
  );
}

interface HeaderObject {
  description: string;
  schema: JsonSchema;
}

/** The IETF draft's RateLimit fields, sent on every answer to a rate-limited tenant and on each 429. */
const RATE_LIMIT_HEADERS: Record<string, HeaderObject> = {
  'RateLimit-Policy': { description: 'The quota policy, e.g. `"requests";q=60;w=60` or `"concurrency";q=4`', schema: { type: 'string' } },
  RateLimit: { description: 'What is left of it, e.g. `"requests";r=0;t=2`', schema: { type: 'string' } },
  'RateLimit-Limit': { description: 'Quota units of the policy', schema: { type: 'integer' } },
  'RateLimit-Remaining': { description: 'Units left', schema: { type: 'integer' } },
  'RateLimit-Reset': { description: 'Seconds until the quota is back', schema: { type: 'integer' } },
};

/** The error codes of a request body that validate.ts refuses, before the handler runs. */
export const BODY_ERRORS: ErrorCode[] = ['invalid_request', 'unsupported_media_type', 'payload_too_large'];
/** What running code may fail with, besides the code's own outcome (which is a 200). */
export const RUN_ERRORS: ErrorCode[] = ['queue_full', 'engine_unavailable', 'image_missing', 'store_unavailable', 'queue_unavailable', 'no_workers', 'shutting_down', 'internal'];

const isZod = (s: unknown): s is z.ZodType => typeof s === 'object' && s !== null && typeof (s as { safeParse?: unknown }).safeParse === 'function';

/** A component reference for a zod schema of the table; a schema given as JSON Schema as it is. */
function schemaFor(schema: unknown, io: Io, where: string): JsonSchema {
  if (!isZod(schema)) return schema as JsonSchema;
  const entries: [string, { schema: z.ZodType; io: Io }][] = Object.entries(COMPONENTS);
  const found = entries.find(([, c]) => (c.schema as unknown) === schema && c.io === io) ?? entries.find(([, c]) => (c.schema as unknown) === schema);
  // Every schema a route uses is named, so the document has one definition of each.
  if (!found) throw new Error(`openapi: ${where} uses a zod schema that is not in COMPONENTS`);
  return ref(found[0] as ComponentName);
}

type Content = Record<string, { schema?: unknown } & Record<string, unknown>>;

function contentFor(content: Content | undefined, io: Io, where: string): Record<string, unknown> | undefined {
  if (!content) return undefined;
  return Object.fromEntries(Object.entries(content).map(([media, m]) => [media, m.schema === undefined ? m : { ...m, schema: schemaFor(m.schema, io, `${where} ${media}`) }]));
}

function parametersOf(schema: unknown, where: 'query' | 'path'): JsonSchema[] {
  if (!isZod(schema)) return [];
  const json = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input' }) as { properties?: Record<string, JsonSchema>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, s]) => ({ name, in: where, required: where === 'path' || (json.required?.includes(name) ?? false), schema: s }));
}

type Responses = Record<string, Record<string, unknown>>;

function operationOf(route: RouteConfig): Record<string, unknown> {
  const where = `${route.method.toUpperCase()} ${route.path}`;
  const { method: _m, path, request, responses, ...rest } = route;
  const op: Record<string, unknown> = { ...rest };
  const parameters = [...parametersOf(request?.params, 'path'), ...parametersOf(request?.query, 'query')];
  if (parameters.length > 0) op.parameters = parameters;
  if (request?.body) {
    const { content, required, ...body } = request.body;
    op.requestBody = { ...body, required: required ?? true, content: contentFor(content as Content, 'input', where) };
  }
  const out: Responses = {};
  for (const [status, r] of Object.entries(responses)) {
    const { content, ...response } = r as Record<string, unknown> & { content?: Content };
    const mapped = contentFor(content, 'output', `${where} ${status}`);
    out[status] = mapped ? { ...response, content: mapped } : response;
  }
  // What the app-level middleware may answer on this path, before the route itself runs.
  const added: Responses = {};
  if (!UNGUARDED_PATHS.has(path)) Object.assign(added, errorResponses('host_not_allowed', 'origin_not_allowed'));
  if (!OPEN_PATHS.has(path) && !isPublicPage(path)) {
    op.security = [{ apiKey: [] }];
    Object.assign(added, errorResponses('unauthorized', 'rate_limited'));
  }
  for (const [status, r] of Object.entries(added)) out[status] ??= { ...r, content: contentFor(r.content as Content, 'output', where) };
  op.responses = out;
  return op;
}

export type OpenApiDoc = ReturnType<typeof buildOpenApi>;

/** The document for the routes registered in an app's registry, in registration order. */
export function buildOpenApi(routes: readonly RouteConfig[], version: string) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const item = (paths[route.path] ??= {});
    if (item[route.method]) throw new Error(`openapi: ${route.method.toUpperCase()} ${route.path} is defined twice`);
    item[route.method] = operationOf(route);
  }
  return {
    openapi: '3.1.0' as const,
    info: { title: 'pybox', version, description: 'Runs untrusted Python in hardened, short-lived containers.' },
    paths,
    components: {
      schemas: componentSchemas(),
      securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'An API key from `pybox keys create`; not needed in local mode (no keys exist)' } },
    },
  };
}
