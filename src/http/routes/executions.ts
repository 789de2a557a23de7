// The execution API proper: run code, fetch one result, page through history.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { z } from 'zod';
import type { BatchService } from '../../core/batch-service.ts';
import { PyboxError } from '../../core/errors.ts';
import type { ExecutionService, Logger } from '../../core/ports.ts';
import { AsyncExecutionRequest, ExecutionRequest, ExecutionResult, HistoryPage, HistoryQuery, PendingExecution } from '../../core/schemas.ts';
import { callerOf } from '../auth.ts';
import { requestIdOf } from '../request-log.ts';
import { BODY_ERRORS, errorResponses, RUN_ERRORS } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';
import { RUN_EVENT_STREAM, streamRun, wantsEventStream } from '../sse.ts';

// Ids are UUIDs today; this only turns away values no store could ever hold (as a 404, not a 400).
const ExecutionId = z.object({ id: z.string().regex(/^[\x21-\x7e]{1,100}$/, 'no execution with that id') });

const STREAM_DESCRIPTION =
  'With `Accept: text/event-stream` (preferred to application/json) the answer is a stream of server-sent events: ' +
  '`stdout` and `stderr` events (data: {"text": "..."}) as the code writes, up to limits.outputBytes of each stream, ' +
  'then one `result` event (data: the ExecutionResult) last; or one `error` event (data: an ErrorBody) when the run could not be done ' +
  '(a request refused before the run started is a plain JSON error). Comment lines keep an idle stream alive. Closing the stream cancels the run.';

/** The 200 answer: the result as JSON, or the run as server-sent events (STREAM_DESCRIPTION). */
const RESULT_OR_STREAM = {
  description: 'The run finished; `status` says how. Or, with Accept: text/event-stream, its output and result as events',
  content: { 'application/json': { schema: ExecutionResult }, ...RUN_EVENT_STREAM },
};

const execute = createRoute({
  method: 'post',
  path: '/',
  operationId: 'execute',
  summary: 'Run code and wait for its result (or stream it)',
  description: STREAM_DESCRIPTION,
  request: { body: { required: true, content: { 'application/json': { schema: ExecutionRequest } } } },
  responses: {
    200: RESULT_OR_STREAM,
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
  summary: 'Run code and wait for its result (or stream it), or queue it (async=true)',
  description:
    'Without async the body is an ExecutionRequest (a `webhook` field is refused); with async=true it may name a webhook called when the run is done. ' +
    `${STREAM_DESCRIPTION} async=true cannot be streamed (400).`,
  request: { query: AsyncQuery, body: { required: true, content: { 'application/json': { schema: AsyncExecutionRequest } } } },
  responses: {
    200: RESULT_OR_STREAM,
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
export function executionRoutes(service: ExecutionService, batches: BatchService | undefined, logger: Logger): OpenAPIHono {
  const routes = routeGroup();

  /** The run as server-sent events; a client that hangs up cancels it. */
  const streamed = (c: Context, request: ExecutionRequest) =>
    streamRun(c, (onOutput, signal) => service.execute(callerOf(c), request, { signal, requestId: requestIdOf(c), onOutput }), logger);

  if (batches) {
    serve(routes, executeOrQueue, async (c) => {
      const { webhook, ...request } = c.req.valid('json');
      const stream = wantsEventStream(c.req.header('accept'));
      if (c.req.valid('query').async === 'true') {
        // Queued runs have no output to follow here; GET /v1/executions/{id} gives their result.
        if (stream) throw new PyboxError('invalid_request', 'async=true cannot be streamed: ask for application/json, or drop async to follow the run as events', { details: [{ path: 'async', message: 'not with Accept: text/event-stream' }] });
        const pending = await batches.submitAsync(callerOf(c), { ...request, ...(webhook ? { webhook } : {}) }, requestIdOf(c));
        return c.json(pending, 202, { Location: `/v1/executions/${encodeURIComponent(pending.id)}` });
      }
      // The same answer the plain request schema gives an unknown field.
      if (webhook !== undefined) throw new PyboxError('invalid_request', 'invalid request body: webhook: unknown field (only with async=true)', { details: [{ path: 'webhook', message: 'unknown field' }] });
      if (stream) return (await streamed(c, request)) as never;
      const result = await service.execute(callerOf(c), request, { signal: c.req.raw.signal, requestId: requestIdOf(c) });
      return c.json(result, 200);
    });
  } else {
    serve(routes, execute, async (c) => {
      // Not a silent synchronous run for a client that asked to queue it.
      if (c.req.query('async') === 'true') throw new PyboxError('invalid_request', 'async executions are not available on this server', { details: [{ path: 'async', message: 'not available' }] });
      if (wantsEventStream(c.req.header('accept'))) return (await streamed(c, c.req.valid('json'))) as never;
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
