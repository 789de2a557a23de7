// What the service has done and what it runs on.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { ExecutionService } from '../../core/ports.ts';
import { RuntimeInfo, Stats } from '../../core/schemas.ts';
import { callerOf } from '../auth.ts';
import { errorResponses } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

const stats = createRoute({
  method: 'get',
  path: '/stats',
  operationId: 'stats',
  summary: "The caller's executions by status, success rate and durations",
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: Stats } } }, ...errorResponses('store_unavailable', 'internal') },
});

const runtimes = createRoute({
  method: 'get',
  path: '/runtimes',
  operationId: 'runtimes',
  summary: 'The sandbox runtime, image, Python packages and limits',
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: RuntimeInfo } } }, ...errorResponses('engine_unavailable', 'internal') },
});

export function serviceInfoRoutes(service: ExecutionService): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, stats, async (c) => c.json(await service.stats(callerOf(c)), 200));

  serve(routes, runtimes, async (c) => c.json(await service.runtimes(callerOf(c)), 200));

  return routes;
}
