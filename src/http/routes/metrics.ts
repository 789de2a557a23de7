// GET /metrics: the node's metrics in the Prometheus text format. For operators: an admin key once
// keys exist (Prometheus sends it as `Authorization: Bearer`), and anyone else is told there is no
// such route, as for /v1/doctor; in local mode it is open on loopback (the Host guard still applies).
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { PyboxError } from '../../core/errors.ts';
import type { MetricsExposition } from '../../core/ports.ts';
import { callerOf } from '../auth.ts';
import { errorResponses, MetricsText } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

const metricsRoute = createRoute({
  method: 'get',
  path: '/metrics',
  operationId: 'metrics',
  summary: "The node's metrics in the Prometheus text format (admin keys only once keys exist, 404 for others)",
  responses: {
    200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: MetricsText } } },
    ...errorResponses('not_found', 'internal'),
  },
});

export function metricsRoutes(metrics: MetricsExposition): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, metricsRoute, async (c) => {
    if (!callerOf(c).admin) throw new PyboxError('not_found', `no route for ${c.req.method} ${c.req.path}`);
    return c.text(await metrics.render(), 200, { 'Content-Type': metrics.contentType });
  });

  return routes;
}
