// Probes for orchestrators: liveness says the process answers, readiness says it can run code.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { ExecutionService } from '../../core/ports.ts';
import { Readiness } from '../../core/schemas.ts';
import { errorResponses, Health } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

const health = createRoute({
  method: 'get',
  path: '/healthz',
  operationId: 'health',
  summary: 'Liveness: the process answers',
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: Health } } } },
});

const ready = createRoute({
  method: 'get',
  path: '/readyz',
  operationId: 'ready',
  summary: 'Readiness: engine, image and store are usable (on cluster nodes also Redis, and on API nodes a live worker); checks says which part is away',
  responses: {
    200: { description: 'Ready', content: { 'application/json': { schema: Readiness } } },
    503: { description: 'Not ready', content: { 'application/json': { schema: Readiness } } },
    ...errorResponses('internal'),
  },
});

/** A worker node serves these two alone: it has no API, only a readiness of its own. */
export function healthRoutes(service: Pick<ExecutionService, 'readiness'>): OpenAPIHono {
  const routes = routeGroup();

  // Deliberately touches nothing: a failing dependency must not get a live process restarted.
  serve(routes, health, (c) => c.json({ status: 'ok' as const }, 200));

  serve(routes, ready, async (c) => {
    const readiness = await service.readiness();
    return readiness.ready ? c.json(readiness, 200) : c.json(readiness, 503);
  });

  return routes;
}
