// The reference design's routes, translated onto the one execution service. A failing user
// program is still HTTP 200 here, as it was there: `success` and `error` carry the outcome.
import { Hono } from 'hono';
import type { ExecutionService } from '../../core/ports.ts';
import type { ExecutionRequest, ExecutionResult } from '../../core/schemas.ts';
import { LegacyExecuteRequest, LegacyHistoryQuery, type LegacyExecuteResponse, type LegacyHistoryItem, type LegacyStats } from '../legacy-schemas.ts';
import { callerOf } from '../auth.ts';
import { readJson, readQuery } from '../validate.ts';

/** The reference put the failure's text in `error`: the parsed exception if any, else what is left. */
function legacyError(r: ExecutionResult): string | null {
  if (r.success) return null;
  if (r.error) return `${r.error.type}: ${r.error.message}`;
  return r.stderr.trim() || r.feedback;
}

function toLegacy(r: ExecutionResult): LegacyExecuteResponse {
  return { success: r.success, output: r.stdout, error: legacyError(r), execution_time: r.durationMs / 1000, execution_id: r.id };
}

export function legacyRoutes(service: ExecutionService): Hono {
  const routes = new Hono();

  routes.post('/execute-code', async (c) => {
    const { code, timeout, context } = await readJson(c, LegacyExecuteRequest);
    // At least 1 ms: a tiny positive timeout must not round to the invalid 0.
    const request: ExecutionRequest = { code };
    if (timeout !== undefined) request.timeoutMs = Math.max(1, Math.round(timeout * 1000));
    if (context !== undefined) request.context = context;
    const result = await service.execute(callerOf(c), request, { signal: c.req.raw.signal });
    return c.json(toLegacy(result), 200);
  });

  routes.get('/code-history', (c) => {
    const { limit } = readQuery(c, LegacyHistoryQuery);
    const items: LegacyHistoryItem[] = service.history(callerOf(c), { limit }).items.map((r) => ({ ...toLegacy(r), timestamp: r.createdAt }));
    return c.json(items, 200);
  });

  routes.get('/code-stats', (c) => {
    const s = service.stats(callerOf(c));
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
