// The OpenAPI document, built once per app from the zod schemas.
import { Hono } from 'hono';
import { buildOpenApi } from '../openapi.ts';

export function docsRoutes(version: string): Hono {
  const routes = new Hono();
  let document: ReturnType<typeof buildOpenApi> | undefined;

  routes.get('/openapi.json', (c) => {
    document ??= buildOpenApi(version);
    return c.json(document, 200);
  });

  return routes;
}
