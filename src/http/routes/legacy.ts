// The reference design's routes, translated onto the one execution service. A failing user
// program is still HTTP 200 here, as it was there: `success` and `error` carry the outcome.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { ExecutionService } from '../../core/ports.ts';
import type { ExecutionRequest, ExecutionResult } from '../../core/schemas.ts';
import { LegacyExecuteRequest, LegacyExecuteResponse, LegacyHistory, LegacyHistoryQuery, LegacyStats, type LegacyHistoryItem } from '../legacy-schemas.ts';
import { callerOf } from '../auth.ts';
import { requestIdOf } from '../request-log.ts';
import { BODY_ERRORS, errorResponses, RUN_ERRORS } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

/** The reference put the failure's text in `error`: the parsed exception if any, else what is left. */
function legacyError(r: ExecutionResult): string | null {
  if (r.success) return null;
  if (r.error) return `${r.error.type}: ${r.error.message}`;
  return r.stderr.trim() || r.feedback;
}

function toLegacy(r: ExecutionResult): LegacyExecuteResponse {
  return { success: r.success, output: r.stdout, error: legacyError(r), execution_time: r.durationMs / 1000, execution_id: r.id };
}

const execute = createRoute({
  method: 'post',
  path: '/execute-code',
  operationId: 'legacyExecute',
  summary: 'Reference-design compatible execution (times in seconds; 200 even when the code fails)',
  request: { body: { required: true, content: { 'application/json': { schema: LegacyExecuteRequest } } } },
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: LegacyExecuteResponse } } }, ...errorResponses(...BODY_ERRORS, ...RUN_ERRORS) },
});

const history = createRoute({
  method: 'get',
  path: '/code-history',
  operationId: 'legacyHistory',
  summary: 'Reference-design compatible history, newest first',
  request: { query: LegacyHistoryQuery },
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: LegacyHistory } } }, ...errorResponses('invalid_request', 'store_unavailable', 'internal') },
});

const stats = createRoute({
  method: 'get',
  path: '/code-stats',
  operationId: 'legacyStats',
  summary: 'Reference-design compatible statistics (times in seconds)',
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: LegacyStats } } }, ...errorResponses('store_unavailable', 'internal') },
});

export function legacyRoutes(service: ExecutionService): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, execute, async (c) => {
    const { code, timeout, context } = c.req.valid('json');
    const request: ExecutionRequest = { code };
    if (timeout !== undefined) request.timeoutMs = Math.round(timeout * 1000);
    if (context !== undefined) request.context = context;
    const result = await service.execute(callerOf(c), request, { signal: c.req.raw.signal, requestId: requestIdOf(c) });
    return c.json(toLegacy(result), 200);
  });

  serve(routes, history, async (c) => {
    const { limit } = c.req.valid('query');
    const items: LegacyHistoryItem[] = (await service.history(callerOf(c), { limit })).items.map((r) => ({ ...toLegacy(r), timestamp: r.createdAt }));
    return c.json(items, 200);
  });

  serve(routes, stats, async (c) => {
    const s = await service.stats(callerOf(c));
    const successful = s.byStatus.completed ?? 0;
    const body: LegacyStats = {
      total_executions: s.total,
      successful,
      failed: s.total - successful,
      average_time: (s.meanDurationMs ?? 0) / 1000,
      history_size: s.total,
    };
    return c.json(body, 200);
  });

  return routes;
}
