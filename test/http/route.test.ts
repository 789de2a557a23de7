// http/route.ts: a route is documented the moment it is served, and answers with this API's own
// errors whether it is served with `serve` or with the library's `openapi()`.
import { createRoute, OpenAPIHono, type RouteConfig } from '@hono/zod-openapi';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { errorReply } from '../../src/http/errors.ts';
import { routeGroup, routingPath, serve } from '../../src/http/route.ts';
import { recordingLogger, type ErrorJson } from './fake-service.ts';

const Body = z.strictObject({ a: z.string() });

function app(group: OpenAPIHono): OpenAPIHono {
  const root = new OpenAPIHono();
  root.route('/g', group);
  root.onError((err, c) => {
    const { status, body, headers } = errorReply(err, recordingLogger(), { method: c.req.method, path: c.req.path });
    return c.json(body, status, headers);
  });
  return root;
}

const post = (a: OpenAPIHono, body: string, contentType = 'application/json') => a.request('/g/x', { method: 'POST', headers: { 'content-type': contentType }, body });

type Add = (g: OpenAPIHono, route: RouteConfig) => void;
const withServe: Add = (g, route) => serve(g, route, (c) => c.body(null, 200));
const withLibrary: Add = (g, route) => void g.openapi(route, (c) => c.body(null, 200));

describe.each([
  ['serve', withServe],
  ['the library\'s openapi()', withLibrary],
] as const)('a route added with %s', (_how, add) => {
  const build = () => {
    const g = routeGroup();
    add(g, createRoute({ method: 'post', path: '/x', request: { body: { required: true, content: { 'application/json': { schema: Body } } } }, responses: { 200: { description: 'ok' } } }));
    return app(g);
  };

  it('is in the registry under its full path', () => {
    const routes = build().openAPIRegistry.definitions.flatMap((d) => (d.type === 'route' ? [`${d.route.method} ${d.route.path}`] : []));
    expect(routes).toEqual(['post /g/x']);
  });

  it('answers a valid body', async () => {
    expect((await post(build(), '{"a":"x"}')).status).toBe(200);
  });

  it('refuses a wrong body with invalid_request and the paths', async () => {
    const res = await post(build(), '{"b":1}');
    expect(res.status).toBe(400);
    const body = (await res.json()) as ErrorJson;
    expect(body.error.code).toBe('invalid_request');
    expect(body.error.details).toEqual(expect.arrayContaining([{ path: 'b', message: 'unknown field' }, expect.objectContaining({ path: 'a' })]));
  });

  it('refuses bad JSON and a wrong media type with their own codes', async () => {
    const bad = await post(build(), '{');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as ErrorJson).error.code).toBe('invalid_request');
    const text = await post(build(), '{"a":"x"}', 'text/plain');
    expect(text.status).toBe(415);
    expect(((await text.json()) as ErrorJson).error.code).toBe('unsupported_media_type');
  });
});

describe('serve', () => {
  it('answers a path parameter its schema refuses as not_found, with the schema\'s message', async () => {
    const g = routeGroup();
    serve(g, createRoute({ method: 'get', path: '/{id}', request: { params: z.object({ id: z.string().regex(/^\d+$/, 'no thing with that id') }) }, responses: { 200: { description: 'ok' } } }), (c) => c.json({ id: c.req.valid('param').id }, 200));
    const a = app(g);
    expect(await (await a.request('/g/12')).json()).toEqual({ id: '12' });
    const res = await a.request('/g/abc');
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { code: 'not_found', message: 'no thing with that id' } });
  });

  it('keeps the first value of a repeated query parameter, as before', async () => {
    const g = routeGroup();
    serve(g, createRoute({ method: 'get', path: '/q', request: { query: z.strictObject({ n: z.coerce.number() }) }, responses: { 200: { description: 'ok' } } }), (c) => c.json(c.req.valid('query'), 200));
    expect(await (await app(g).request('/g/q?n=1&n=2')).json()).toEqual({ n: 1 });
  });

  it('maps OpenAPI paths to routing paths', () => {
    expect(routingPath('/v1/executions/{id}')).toBe('/v1/executions/:id');
    expect(routingPath('/a/{b}/c/{d}')).toBe('/a/:b/c/:d');
  });
});
