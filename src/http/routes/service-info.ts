// What the service has done and what it runs on.
import { Hono } from 'hono';
import type { ExecutionService } from '../../core/ports.ts';
import { callerOf } from '../auth.ts';

export function serviceInfoRoutes(service: ExecutionService): Hono {
  const routes = new Hono();

  routes.get('/stats', (c) => c.json(service.stats(callerOf(c)), 200));

  routes.get('/runtimes', async (c) => c.json(await service.runtimes(callerOf(c)), 200));

  return routes;
}
