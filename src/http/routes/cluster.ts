// The deployment as an operator sees it: nodes, roles, health, slots and what waits. For admins
// only (anyone else is told there is no such route, as for the doctor).
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { PyboxError } from '../../core/errors.ts';
import type { ClusterStatus } from '../../core/ports.ts';
import { ClusterInfo } from '../../core/schemas.ts';
import { callerOf } from '../auth.ts';
import { errorResponses } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

const cluster = createRoute({
  method: 'get',
  path: '/cluster',
  operationId: 'cluster',
  summary: 'The nodes of the deployment (roles, health, slots) and the executions waiting (admin keys only once keys exist, 404 for others)',
  responses: {
    200: { description: 'OK', content: { 'application/json': { schema: ClusterInfo } } },
    ...errorResponses('not_found', 'queue_unavailable', 'internal'),
  },
});

export function clusterRoutes(status: ClusterStatus): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, cluster, async (c) => {
    if (!callerOf(c).admin) throw new PyboxError('not_found', `no route for ${c.req.method} ${c.req.path}`);
    return c.json(await status.status(), 200);
  });

  return routes;
}
