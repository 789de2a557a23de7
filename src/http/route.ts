// Every route is served through `serve`: it records the route's definition (createRoute's shape) in
// the app's OpenAPI registry and mounts the handler behind validators read from that same
// definition. What is served and what is documented are then one object: a route cannot be served
// undocumented, nor documented with a schema other than the one that checks its requests.
//
// The validators are this project's own (validate.ts), not the library's: its media-type gate
// accepts a narrower grammar of parameters, its JSON reader has no depth limit, and its query
// reader turns a repeated parameter into an array, so today's answers would change.
import { OpenAPIHono, type RouteConfig, type RouteHandler } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { z } from 'zod';
import { PyboxError } from '../core/errors.ts';
import { invalidRequest, readJson, readQuery } from './validate.ts';

function isZod(schema: unknown): schema is z.ZodType {
  return typeof schema === 'object' && schema !== null && typeof (schema as { safeParse?: unknown }).safeParse === 'function';
}

/** The zod schema of the route's application/json request body, if it has one. */
export function jsonBodySchema(route: RouteConfig): z.ZodType | undefined {
  const media = route.request?.body?.content['application/json'];
  const schema = media && 'schema' in media ? media.schema : undefined;
  return isZod(schema) ? schema : undefined;
}

/** `/v1/executions/{id}` (OpenAPI) as `/v1/executions/:id` (hono). */
export function routingPath(openApiPath: string): string {
  return openApiPath.replaceAll(/\{([^}/]+)\}/g, ':$1');
}

function validators(route: RouteConfig): MiddlewareHandler[] {
  const checks: MiddlewareHandler[] = [];
  const { params, query } = route.request ?? {};
  if (params) {
    // A path parameter no resource could have is the same answer as no such resource.
    checks.push(async (c, next) => {
      const parsed = params.safeParse(c.req.param());
      if (!parsed.success) throw new PyboxError('not_found', parsed.error.issues[0]?.message ?? `no route for ${c.req.method} ${c.req.path}`);
      c.req.addValidatedData('param', parsed.data as Record<string, unknown>);
      await next();
    });
  }
  if (query) {
    checks.push(async (c, next) => {
      c.req.addValidatedData('query', readQuery(c, query) as Record<string, unknown>);
      await next();
    });
  }
  const body = jsonBodySchema(route);
  if (body) {
    checks.push(async (c, next) => {
      c.req.addValidatedData('json', (await readJson(c, body)) as Record<string, unknown>);
      await next();
    });
  }
  return checks;
}

/**
 * A route group. Its routes are served with `serve`; should one be added with the library's own
 * `openapi()` instead, it is still documented, and its validation failures are the same
 * invalid_request errors (the library's media-type and JSON-syntax refusals are mapped to
 * unsupported_media_type and invalid_request by http/errors.ts).
 */
export function routeGroup(): OpenAPIHono {
  return new OpenAPIHono({
    defaultHook: (result) => {
      if (result.success) return;
      if (result.target === 'param') throw new PyboxError('not_found', result.error.issues[0]?.message ?? 'no such resource');
      throw invalidRequest(result.error, result.target === 'json' ? 'request body' : result.target);
    },
  });
}

/**
 * Registers `route` in the app's document and serves it. The handler reads its checked input with
 * `c.req.valid('json' | 'query' | 'param')`, typed from the route, and may only answer with the
 * statuses and bodies the route declares.
 */
export function serve<R extends RouteConfig>(app: OpenAPIHono, route: R, handler: RouteHandler<R>): void {
  app.openAPIRegistry.registerPath(route);
  const handlers = [...validators(route), handler as unknown as MiddlewareHandler];
  app.on([route.method.toUpperCase()], [routingPath(route.path)], ...handlers);
}

/**
 * Registers operations that another sub-app serves (one not built with `serve`, such as /mcp).
 * The route listing test holds them to what that sub-app really answers.
 */
export function describeServed(app: OpenAPIHono, routes: readonly RouteConfig[]): void {
  for (const route of routes) app.openAPIRegistry.registerPath(route);
}

/**
 * The pattern of the route that answered (`/v1/executions/:id`), never the raw path: the last route
 * matched by method, since app-wide middleware matches every path (method ALL). Null when no route
 * answered. The access log and the HTTP metrics label requests by it.
 */
export function routePattern(c: Context): string | null {
  const routes = matchedRoutes(c);
  for (let i = routes.length - 1; i >= 0; i--) {
    const r = routes[i];
    if (r && r.method !== 'ALL') return r.path;
  }
  return null;
}
