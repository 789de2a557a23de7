// GET /v1/doctor: the live self-test (src/doctor). It starts real sandboxes, so it is not cheap:
// it is for an operator (an admin key once keys exist; anyone else is told there is no such route),
// its sandboxes take slots of the concurrency gate like any run, and concurrent calls share one run.
// 200 when every check passes, 503 when one fails (the isolation this host promises does not hold).
import { Hono } from 'hono';
import { PyboxError } from '../../core/errors.ts';
import type { Doctor } from '../../doctor/doctor.ts';
import { callerOf } from '../auth.ts';

export function doctorRoutes(doctor: Doctor): Hono {
  const routes = new Hono();

  routes.get('/doctor', async (c) => {
    if (!callerOf(c).admin) throw new PyboxError('not_found', `no route for ${c.req.method} ${c.req.path}`);
    const report = await doctor.run();
    return c.json(report, report.ok ? 200 : 503);
  });

  return routes;
}
