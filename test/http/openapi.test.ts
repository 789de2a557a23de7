// The OpenAPI document: complete, self-consistent, and generated from the validating schemas.
import { describe, expect, it } from 'vitest';
import { harness } from './fake-service.ts';

interface Doc {
  openapi: string;
  info: { version: string };
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, Record<string, unknown>> };
}

async function fetchDoc(): Promise<{ doc: Doc; text: string; contentType: string | null; routes: Array<{ method: string; path: string }> }> {
  const { app } = harness();
  const res = await app.request('/openapi.json');
  expect(res.status).toBe(200);
  const text = await res.text();
  return { doc: JSON.parse(text) as Doc, text, contentType: res.headers.get('content-type'), routes: app.routes };
}

function refsIn(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) node.forEach((n) => refsIn(n, out));
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) k === '$ref' && typeof v === 'string' ? out.push(v) : refsIn(v, out);
  }
  return out;
}

describe('GET /openapi.json', () => {
  it('is an OpenAPI 3.1 JSON document with the given version', async () => {
    const { doc, contentType } = await fetchDoc();
    expect(contentType).toMatch(/^application\/json/);
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info.version).toBe('9.9.9-test');
  });

  it('documents every route the app serves, and nothing else', async () => {
    const { doc, routes } = await fetchDoc();
    const served = routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, '{$1}')}`);
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`));
    expect(documented.sort()).toEqual([...new Set(served)].sort());
    expect(documented).toEqual(expect.arrayContaining(['post /v1/executions', 'get /v1/executions/{id}', 'post /api/execute-code', 'get /readyz']));
  });

  it('holds the component schemas, and every reference resolves', async () => {
    const { doc, text } = await fetchDoc();
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['ExecutionRequest', 'ExecutionResult', 'HistoryPage', 'Stats', 'ErrorBody']));
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
    expect(request.properties.timeoutMs).toMatchObject({ type: 'integer', minimum: 1 });
    expect(doc.components.schemas.HistoryPage).toMatchObject({ properties: { items: { items: { $ref: '#/components/schemas/ExecutionResult' } } } });
    const post = doc.paths['/v1/executions']?.post as { requestBody: unknown; responses: Record<string, unknown> };
    expect(post.requestBody).toMatchObject({ content: { 'application/json': { schema: { $ref: '#/components/schemas/ExecutionRequest' } } } });
    expect(post.responses['200']).toMatchObject({ content: { 'application/json': { schema: { $ref: '#/components/schemas/ExecutionResult' } } } });
    expect(Object.keys(post.responses).sort()).toEqual(['200', '400', '401', '413', '415', '429', '500', '503']);
  });

  it('lists the history query parameters from the query schema', async () => {
    const { doc } = await fetchDoc();
    const get = doc.paths['/v1/executions']?.get as { parameters: Array<{ name: string; in: string }> };
    expect(get.parameters.map((p) => `${p.in}:${p.name}`)).toEqual(['query:limit', 'query:status', 'query:cursor']);
  });
});
