// The execution API proper: run code, fetch one result, page through history.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import type { ExecutionService } from '../../core/ports.ts';
import { ExecutionRequest, ExecutionResult, HistoryPage, HistoryQuery } from '../../core/schemas.ts';
import { callerOf } from '../auth.ts';
import { requestIdOf } from '../request-log.ts';
import { BODY_ERRORS, errorResponses, RUN_ERRORS } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

// Ids are UUIDs today; this only turns away values no store could ever hold (as a 404, not a 400).
const ExecutionId = z.object({ id: z.string().regex(/^[\x21-\x7e]{1,100}$/, 'no execution with that id') });

const execute = createRoute({
  method: 'post',
  path: '/',
  operationId: 'execute',
  summary: 'Run code and wait for its result',
  request: { body: { required: true, content: { 'application/json': { schema: ExecutionRequest } } } },
  responses: {
    200: { description: 'The run finished; `status` says how', content: { 'application/json': { schema: ExecutionResult } } },
    ...errorResponses(...BODY_ERRORS, ...RUN_ERRORS),
  },
});

const list = createRoute({
  method: 'get',
  path: '/',
  operationId: 'listExecutions',
  summary: 'Past executions, newest first',
  request: { query: HistoryQuery },
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: HistoryPage } } }, ...errorResponses('invalid_request', 'store_unavailable', 'internal') },
});

const getOne = createRoute({
  method: 'get',
  path: '/{id}',
  operationId: 'getExecution',
  summary: 'One past execution, with its output files',
  request: { params: ExecutionId },
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: ExecutionResult } } }, ...errorResponses('not_found', 'store_unavailable', 'internal') },
});

export function executionRoutes(service: ExecutionService): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, execute, async (c) => {
    // A client that hangs up cancels its run instead of holding a slot.
    const result = await service.execute(callerOf(c), c.req.valid('json'), { signal: c.req.raw.signal, requestId: requestIdOf(c) });
    return c.json(result, 200);
  });

  serve(routes, list, async (c) => c.json(await service.history(callerOf(c), c.req.valid('query')), 200));

  serve(routes, getOne, async (c) => c.json(await service.get(callerOf(c), c.req.valid('param').id), 200));

  return routes;
}
