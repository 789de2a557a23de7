// The execution API proper: run code, fetch one result, page through history.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import type { BatchService } from '../../core/batch-service.ts';
import { PyboxError } from '../../core/errors.ts';
import type { ExecutionService } from '../../core/ports.ts';
import { AsyncExecutionRequest, ExecutionRequest, ExecutionResult, HistoryPage, HistoryQuery, PendingExecution } from '../../core/schemas.ts';
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

/** POST /v1/executions on a node that keeps jobs: `?async=true` queues the run instead of waiting for it. */
const AsyncQuery = z.object({
  async: z.enum(['true', 'false']).optional().describe('true: answer 202 at once and run in the background; poll GET /v1/executions/{id}'),
});

const executeOrQueue = createRoute({
  method: 'post',
  path: '/',
  operationId: 'execute',
  summary: 'Run code and wait for its result, or queue it (async=true)',
  description: 'Without async the body is an ExecutionRequest (a `webhook` field is refused); with async=true it may name a webhook called when the run is done.',
  request: { query: AsyncQuery, body: { required: true, content: { 'application/json': { schema: AsyncExecutionRequest } } } },
  responses: {
    200: { description: 'The run finished; `status` says how', content: { 'application/json': { schema: ExecutionResult } } },
    202: {
      description: 'async=true: queued; GET the Location until it answers 200',
      headers: { Location: { description: 'The execution: /v1/executions/{id}', schema: { type: 'string' } } },
      content: { 'application/json': { schema: PendingExecution } },
    },
    ...errorResponses(...BODY_ERRORS, ...RUN_ERRORS),
  },
});

const getOrPending = createRoute({
  method: 'get',
  path: '/{id}',
  operationId: 'getExecution',
  summary: 'One execution, with its output files; 202 while it is queued or running (async and batch items)',
  request: { params: ExecutionId },
  responses: {
    200: { description: 'OK', content: { 'application/json': { schema: ExecutionResult } } },
    202: {
      description: 'Not done yet; ask again after Retry-After seconds',
      headers: { 'Retry-After': { description: 'Seconds to wait before asking again', schema: { type: 'integer' } } },
      content: { 'application/json': { schema: PendingExecution } },
    },
    ...errorResponses('not_found', 'store_unavailable', 'internal'),
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

/** With `batches` (a node that keeps jobs) POST takes async=true and GET answers 202 for queued runs. */
export function executionRoutes(service: ExecutionService, batches?: BatchService): OpenAPIHono {
  const routes = routeGroup();

  if (batches) {
    serve(routes, executeOrQueue, async (c) => {
      const { webhook, ...request } = c.req.valid('json');
      if (c.req.valid('query').async === 'true') {
        const pending = await batches.submitAsync(callerOf(c), { ...request, ...(webhook ? { webhook } : {}) }, requestIdOf(c));
        return c.json(pending, 202, { Location: `/v1/executions/${encodeURIComponent(pending.id)}` });
      }
      // The same answer the plain request schema gives an unknown field.
      if (webhook !== undefined) throw new PyboxError('invalid_request', 'invalid request body: webhook: unknown field (only with async=true)', { details: [{ path: 'webhook', message: 'unknown field' }] });
      const result = await service.execute(callerOf(c), request, { signal: c.req.raw.signal, requestId: requestIdOf(c) });
      return c.json(result, 200);
    });
  } else {
    serve(routes, execute, async (c) => {
      // Not a silent synchronous run for a client that asked to queue it.
      if (c.req.query('async') === 'true') throw new PyboxError('invalid_request', 'async executions are not available on this server', { details: [{ path: 'async', message: 'not available' }] });
      // A client that hangs up cancels its run instead of holding a slot.
      const result = await service.execute(callerOf(c), c.req.valid('json'), { signal: c.req.raw.signal, requestId: requestIdOf(c) });
      return c.json(result, 200);
    });
  }

  serve(routes, list, async (c) => c.json(await service.history(callerOf(c), c.req.valid('query')), 200));

  if (batches) {
    serve(routes, getOrPending, async (c) => {
      const caller = callerOf(c);
      const { id } = c.req.valid('param');
      // Result, then job, then result again: a job completes only after its result is saved, so one
      // that completes between the first two reads is found by the third.
      const found = await service.get(caller, id).catch(notFoundAsUndefined);
      if (found) return c.json(found, 200);
      const pending = await batches.pending(caller, id);
      if (pending) return c.json(pending, 202, { 'Retry-After': '1' });
      return c.json(await service.get(caller, id), 200);
    });
  } else {
    serve(routes, getOne, async (c) => c.json(await service.get(callerOf(c), c.req.valid('param').id), 200));
  }

  return routes;
}

function notFoundAsUndefined(e: unknown): undefined {
  if (e instanceof PyboxError && e.code === 'not_found') return undefined;
  throw e;
}
