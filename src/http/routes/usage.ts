// What a tenant used: executions by status, wall and CPU time, output. An admin key sees every tenant.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { ExecutionService } from '../../core/ports.ts';
import { UsageQuery, UsageReport } from '../../core/schemas.ts';
import { callerOf } from '../auth.ts';
import { errorResponses } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

const usage = createRoute({
  method: 'get',
  path: '/usage',
  operationId: 'usage',
  summary: "The caller's usage (every tenant's for an admin key): executions by status, wall and CPU time, output bytes",
  request: { query: UsageQuery },
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: UsageReport } } }, ...errorResponses('invalid_request', 'not_found', 'store_unavailable', 'internal') },
});

export function usageRoutes(service: ExecutionService): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, usage, async (c) => c.json(await service.usage(callerOf(c), c.req.valid('query')), 200));

  return routes;
}
