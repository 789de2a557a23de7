// What a tenant used: executions by status, wall and CPU time, output. An admin key sees every tenant.
import { Hono } from 'hono';
import type { ExecutionService } from '../../core/ports.ts';
import { UsageQuery } from '../../core/schemas.ts';
import { callerOf } from '../auth.ts';
import { readQuery } from '../validate.ts';

export function usageRoutes(service: ExecutionService): Hono {
  const routes = new Hono();

  routes.get('/usage', (c) => c.json(service.usage(callerOf(c), readQuery(c, UsageQuery)), 200));

  return routes;
}
