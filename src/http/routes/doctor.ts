// GET /v1/doctor: the live self-test (src/doctor). It starts real sandboxes, so it is not cheap:
// it is for an operator (an admin key once keys exist; anyone else is told there is no such route),
// its sandboxes take slots of the concurrency gate like any run, and concurrent calls share one run.
// 200 when every check passes, 503 when one fails (the isolation this host promises does not hold).
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { PyboxError } from '../../core/errors.ts';
import type { Doctor } from '../../doctor/doctor.ts';
import { callerOf } from '../auth.ts';
import { DoctorReport, errorResponses } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

const doctorRoute = createRoute({
  method: 'get',
  path: '/doctor',
  operationId: 'doctor',
  summary: 'Live self-test of the isolation (starts sandboxes; admin keys only once keys exist, 404 for others)',
  responses: {
    200: { description: 'Every check passed', content: { 'application/json': { schema: DoctorReport } } },
    503: { description: 'A check failed: the isolation this host promises does not hold', content: { 'application/json': { schema: DoctorReport } } },
    ...errorResponses('not_found', 'internal'),
  },
});

export function doctorRoutes(doctor: Pick<Doctor, 'run'>): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, doctorRoute, async (c) => {
    if (!callerOf(c).admin) throw new PyboxError('not_found', `no route for ${c.req.method} ${c.req.path}`);
    const report = await doctor.run();
    return report.ok ? c.json(report, 200) : c.json(report, 503);
  });

  return routes;
}
