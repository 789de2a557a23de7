// The OpenAPI document: derived from the routes the app serves, complete in both directions, and
// describing what the app really answers (statuses, media types and bodies checked against it).
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../src/doctor/doctor.ts';
import { harness } from './fake-service.ts';
import { MIN_TIMEOUT_MS } from '../../src/core/limits.ts';
import { BatchService } from '../../src/core/batch-service.ts';
import { NO_TENANT_LIMITS } from '../../src/core/caller.ts';
import type { AppliedLimits } from '../../src/core/schemas.ts';
import { MemoryJobStore, MemoryWebhookSecrets } from '../support/memory-job-store.ts';
import { defaultConfig, MemoryStore, RecordingLogger } from '../unit/fakes.ts';

interface Operation {
  operationId?: string;
  parameters?: Array<{ name: string; in: string; required?: boolean }>;
  requestBody?: { required?: boolean; content: Record<string, { schema: unknown }> };
  responses: Record<string, { description: string; content?: Record<string, { schema: unknown }> }>;
  security?: unknown;
}

interface Doc {
  openapi: string;
  info: { version: string };
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Record<string, unknown>>; securitySchemes: Record<string, unknown> };
}

const report: DoctorReport = { ok: true, runtime: 'runc', image: 'pybox-python:test', hostKernel: '6.1.0', checks: [{ name: 'network', ok: true, detail: 'none' }], startedAt: '2024-01-01T00:00:00.000Z', durationMs: 5 };

/** Batches over in-memory stores; nothing runs them (no runner), which these tests do not need. */
function idleBatches(): BatchService {
  const config = defaultConfig();
  const clock = { now: () => Date.now() };
  const limits: AppliedLimits = { ...config.limits.defaults, outputBytes: config.limits.outputBytes };
  return new BatchService({
    jobs: new MemoryJobStore(),
    runner: { wake() {}, onCompleted: () => () => {}, complete: async () => {} },
    service: { check: () => ({ limits }), clampLimits: () => limits },
    callerFor: async (tenant) => ({ tenant, keyId: null, admin: false, limits: NO_TENANT_LIMITS }),
    store: new MemoryStore(),
    results: { runtime: 'runc', limits: config.limits, clock },
    clock,
    logger: new RecordingLogger(),
    newId: () => 'batch-1',
    owner: 'node-1',
    config: config.jobs,
  });
}

/** An app with every optional route group, so every route it can serve is served. */
function fullHarness() {
  const cluster = { status: async () => ({ mode: 'embedded' as const, nodes: [], slots: 2, running: 0, waiting: 0 }) };
  return harness({ doctor: { run: async () => report }, batches: idleBatches(), webhookSecrets: new MemoryWebhookSecrets(), cluster });
}

async function fetchDoc(h = fullHarness()): Promise<{ doc: Doc; text: string; contentType: string | null }> {
  const res = await h.app.request('/openapi.json');
  expect(res.status).toBe(200);
  const text = await res.text();
  return { doc: JSON.parse(text) as Doc, text, contentType: res.headers.get('content-type') };
}

function refsIn(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) node.forEach((n) => refsIn(n, out));
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) k === '$ref' && typeof v === 'string' ? out.push(v) : refsIn(v, out);
  }
  return out;
}

const operations = (doc: Doc) => Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })));

describe('GET /openapi.json', () => {
  it('is an OpenAPI 3.1 JSON document with the given version', async () => {
    const { doc, contentType } = await fetchDoc();
    expect(contentType).toMatch(/^application\/json/);
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info.version).toBe('9.9.9-test');
  });

  it('documents every route the app serves (app.routes), and serves every operation it documents', async () => {
    for (const h of [fullHarness(), harness()]) {
      const { doc } = await fetchDoc(h);
      // Middleware is registered for ALL methods; every route proper has its method.
      const served = new Set(h.app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, '{$1}')}`));
      const documented = operations(doc).map(({ method, path }) => `${method} ${path}`);
      expect(documented.sort()).toEqual([...served].sort());
    }
    const { doc } = await fetchDoc();
    expect(operations(doc).map(({ method, path }) => `${method} ${path}`)).toEqual(
      expect.arrayContaining(['post /v1/executions', 'get /v1/executions', 'get /v1/executions/{id}', 'get /v1/doctor', 'get /v1/cluster', 'get /v1/tools', 'get /v1/usage', 'post /mcp', 'get /mcp', 'delete /mcp', 'get /openapi.json', 'get /docs', 'get /docs/plain', 'get /', 'get /assets/{name}', 'get /healthz', 'get /readyz', 'post /api/execute-code', 'get /api/code-history', 'get /api/code-stats']),
    );
    // Without a doctor there is no such route, and the document says so.
    expect(Object.keys((await fetchDoc(harness())).doc.paths)).not.toContain('/v1/doctor');
  });

  it('answers each documented operation with a documented status, media type and body', async () => {
    const h = fullHarness();
    const { doc } = await fetchDoc(h);
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    ajv.addSchema(doc, 'doc');
    const schemaOf = (schema: unknown) => {
      const { $ref } = schema as { $ref?: string };
      if ($ref) return ajv.getSchema(`doc${$ref}`);
      return ajv.compile(schema as object);
    };
    const checked: string[] = [];
    for (const { path, method, op } of operations(doc)) {
      const url = path.replace(/\{\w+\}/g, 'exec-1');
      const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
      const body = method === 'post' ? (path === '/mcp' ? JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }) : '{}') : null;
      const res = await h.app.request(url, { method: method.toUpperCase(), headers, body });
      const status = String(res.status);
      const where = `${method} ${path} -> ${status}`;
      const documented = op.responses[status];
      expect(documented, `${where} is not documented`).toBeDefined();
      const mediaType = res.headers.get('content-type')?.split(';')[0] ?? null;
      if (!documented?.content) {
        expect(mediaType, where).toBeNull();
        continue;
      }
      expect(Object.keys(documented.content), where).toContain(mediaType);
      const text = await res.text();
      if (mediaType === 'application/json') {
        const validate = schemaOf(documented.content[mediaType]?.schema);
        expect(validate, where).toBeDefined();
        const ok = validate?.(JSON.parse(text));
        expect(ok, `${where}: ${JSON.stringify(validate?.errors)}`).toBe(true);
        checked.push(where);
      }
    }
    // The app's own answers, each valid against the schema documented for it.
    expect(checked).toEqual(expect.arrayContaining(['post /v1/executions -> 400', 'get /v1/executions -> 200', 'get /v1/executions/{id} -> 200', 'get /v1/doctor -> 200', 'get /mcp -> 405', 'get /openapi.json -> 200']));
  });

  it('holds the component schemas, and every reference resolves', async () => {
    const { doc, text } = await fetchDoc();
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['ExecutionRequest', 'ExecutionResult', 'HistoryPage', 'Stats', 'ErrorBody', 'DoctorReport', 'JsonRpcMessage']));
    const refs = refsIn(doc);
    expect(refs.length).toBeGreaterThan(10);
    for (const ref of refs) {
      expect(ref).toMatch(/^#\/components\/schemas\//);
      expect(doc.components.schemas[ref.slice('#/components/schemas/'.length)], ref).toBeDefined();
    }
    // A zod $defs reference would resolve against the whole document, where there is none.
    expect(text).not.toContain('#/$defs/');
    expect(text).not.toContain('"$schema"');
  });

  it('describes the request as strict and the result by reference', async () => {
    const { doc } = await fetchDoc();
    const request = doc.components.schemas.ExecutionRequest as { additionalProperties: unknown; required: string[]; properties: Record<string, Record<string, unknown>> };
    expect(request.additionalProperties).toBe(false);
    expect(request.required).toEqual(['code']);
    expect(request.properties.timeoutMs).toMatchObject({ type: 'integer', minimum: MIN_TIMEOUT_MS });
    expect(doc.components.schemas.HistoryPage).toMatchObject({ properties: { items: { items: { $ref: '#/components/schemas/ExecutionResult' } } } });
    const post = doc.paths['/v1/executions']?.post;
    // With the jobs side the body may name a webhook (async=true only); without it, the plain request.
    expect(post?.requestBody).toMatchObject({ required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/AsyncExecutionRequest' } } } });
    expect((await fetchDoc(harness())).doc.paths['/v1/executions']?.post?.requestBody).toMatchObject({ content: { 'application/json': { schema: { $ref: '#/components/schemas/ExecutionRequest' } } } });
    expect(post?.responses['202']).toMatchObject({ content: { 'application/json': { schema: { $ref: '#/components/schemas/PendingExecution' } } } });
    expect(post?.responses['200']).toMatchObject({ content: { 'application/json': { schema: { $ref: '#/components/schemas/ExecutionResult' } } } });
    expect(Object.keys(post?.responses ?? {}).sort()).toEqual(['200', '202', '400', '401', '403', '413', '415', '429', '500', '503']);
    expect(post?.security).toEqual([{ apiKey: [] }]);
    expect(doc.components.securitySchemes).toMatchObject({ apiKey: { type: 'http', scheme: 'bearer' } });
  });

  it('leaves the probes open and only /healthz unguarded', async () => {
    const { doc } = await fetchDoc();
    expect(doc.paths['/healthz']?.get?.security).toBeUndefined();
    expect(Object.keys(doc.paths['/healthz']?.get?.responses ?? {})).toEqual(['200']);
    expect(doc.paths['/readyz']?.get?.security).toBeUndefined();
    expect(Object.keys(doc.paths['/readyz']?.get?.responses ?? {}).sort()).toEqual(['200', '403', '500', '503']);
  });

  it('lists the query and path parameters from the schemas that check them', async () => {
    const { doc } = await fetchDoc();
    expect(doc.paths['/v1/executions']?.get?.parameters?.map((p) => `${p.in}:${p.name}`)).toEqual(['query:limit', 'query:status', 'query:cursor']);
    expect(doc.paths['/v1/executions/{id}']?.get?.parameters).toEqual([{ name: 'id', in: 'path', required: true, schema: expect.objectContaining({ type: 'string' }) }]);
    expect(doc.paths['/v1/usage']?.get?.parameters?.map((p) => p.name)).toEqual(['from', 'to', 'tenant']);
  });

  it('describes /mcp as it answers: JSON-RPC in, an event stream or JSON out, and its 400, 406, 413 and 415', async () => {
    const { doc } = await fetchDoc();
    const post = doc.paths['/mcp']?.post;
    expect(Object.keys(post?.responses['200']?.content ?? {}).sort()).toEqual(['application/json', 'text/event-stream']);
    expect(Object.keys(post?.responses ?? {})).toEqual(expect.arrayContaining(['200', '202', '400', '406', '413', '415']));
    const h = fullHarness();
    const send = (headers: Record<string, string>, body: string) => h.app.request('/mcp', { method: 'POST', headers, body });
    const both = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const ping = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' });
    const answers = {
      stream: await send(both, ping),
      notification: await send(both, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })),
      notJson: await send(both, '{'),
      jsonOnly: await send({ ...both, accept: 'application/json' }, ping),
      text: await send({ ...both, 'content-type': 'text/plain' }, ping),
      big: await send(both, 'x'.repeat(5000)),
    };
    expect(answers.stream.status).toBe(200);
    expect(answers.stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(answers.notification.status).toBe(202);
    expect(answers.notJson.status).toBe(400);
    expect(answers.jsonOnly.status).toBe(406);
    expect(answers.text.status).toBe(415);
    expect(answers.big.status).toBe(413);
    for (const res of Object.values(answers)) expect(post?.responses[String(res.status)], String(res.status)).toBeDefined();
  });
});

describe('GET /docs/plain', () => {
  it('shows every documented operation on a page that runs and loads nothing', async () => {
    const h = fullHarness();
    const { doc } = await fetchDoc(h);
    const res = await h.app.request('/docs/plain');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('content-security-policy')).toBe("default-src 'none'; style-src 'unsafe-inline'");
    const html = await res.text();
    for (const { method, path } of operations(doc)) expect(html).toContain(`<code>${method.toUpperCase()} ${path}</code>`);
    expect(html).not.toMatch(/<script|src=/i);
  });
});
