// The OpenAPI document, built once per app from the routes its registry holds: every route served
// through route.ts's `serve` is in it, and /mcp's description (mcp-doc.ts) beside it.
import { createRoute, OpenAPIHono, type RouteConfig } from '@hono/zod-openapi';
import { buildOpenApi, OpenApiDocument, type OpenApiDoc } from '../openapi.ts';
import { serve } from '../route.ts';

const openapi = createRoute({
  method: 'get',
  path: '/openapi.json',
  operationId: 'openapi',
  summary: 'This document',
  responses: { 200: { description: 'The OpenAPI 3.1 document of this server', content: { 'application/json': { schema: OpenApiDocument } } } },
});

/** `routes` is read on the first request, once every route group is mounted. */
export function docsRoutes(version: string, routes: () => readonly RouteConfig[]): OpenAPIHono {
  const app = new OpenAPIHono();
  let document: OpenApiDoc | undefined;

  serve(app, openapi, (c) => {
    document ??= buildOpenApi(routes(), version);
    return c.json(document, 200);
  });

  return app;
}
