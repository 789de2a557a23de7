// The execution API proper: run code, fetch one result, page through history.
import { Hono } from 'hono';
import { PyboxError } from '../../core/errors.ts';
import type { ExecutionService } from '../../core/ports.ts';
import { ExecutionRequest, HistoryQuery } from '../../core/schemas.ts';
import { callerOf } from '../auth.ts';
import { readJson, readQuery } from '../validate.ts';

// Ids are UUIDs today; this only turns away values no store could ever hold.
const PLAUSIBLE_ID = /^[\x21-\x7e]{1,100}$/;

export function executionRoutes(service: ExecutionService): Hono {
  const routes = new Hono();

  routes.post('/', async (c) => {
    const request = await readJson(c, ExecutionRequest);
    // A client that hangs up cancels its run instead of holding a slot.
    const result = await service.execute(callerOf(c), request, { signal: c.req.raw.signal });
    return c.json(result, 200);
  });

  routes.get('/', (c) => c.json(service.history(callerOf(c), readQuery(c, HistoryQuery)), 200));

  routes.get('/:id', (c) => {
    const id = c.req.param('id');
    if (!PLAUSIBLE_ID.test(id)) throw new PyboxError('not_found', 'no execution with that id');
    return c.json(service.get(callerOf(c), id), 200);
  });

  return routes;
}
