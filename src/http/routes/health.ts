// Probes for orchestrators: liveness says the process answers, readiness says it can run code.
import { Hono } from 'hono';
import type { ExecutionService } from '../../core/ports.ts';

export function healthRoutes(service: ExecutionService): Hono {
  const routes = new Hono();

  // Deliberately touches nothing: a failing dependency must not get a live process restarted.
  routes.get('/healthz', (c) => c.json({ status: 'ok' }, 200));

  routes.get('/readyz', async (c) => {
    const readiness = await service.readiness();
    return c.json(readiness, readiness.ready ? 200 : 503);
  });

  return routes;
}
