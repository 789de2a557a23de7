// The wire format of the reference design (an older Python service). Its field names and units
// (seconds, snake_case) are frozen: existing clients parse them unchanged.
import { z } from 'zod';
import { ExecutionRequest, HistoryQuery } from '../core/schemas.ts';
import { MIN_TIMEOUT_MS } from '../core/limits.ts';

export const LegacyExecuteRequest = z.strictObject({
  code: ExecutionRequest.shape.code,
  /** Seconds; the reference accepted fractions. */
  timeout: z.number().min(MIN_TIMEOUT_MS / 1000, `must be at least ${MIN_TIMEOUT_MS / 1000} (seconds)`).max(300).optional(),
  context: ExecutionRequest.shape.context,
});

export const LegacyExecuteResponse = z.object({
  success: z.boolean(),
  output: z.string(),
  error: z.string().nullable(),
  /** Seconds. */
  execution_time: z.number(),
  execution_id: z.string(),
});
export type LegacyExecuteResponse = z.infer<typeof LegacyExecuteResponse>;

export const LegacyHistoryQuery = z.strictObject({ limit: HistoryQuery.shape.limit });

export const LegacyHistoryItem = LegacyExecuteResponse.omit({ execution_id: true }).extend({
  execution_id: z.string(),
  timestamp: z.string(),
});
export type LegacyHistoryItem = z.infer<typeof LegacyHistoryItem>;

export const LegacyHistory = z.array(LegacyHistoryItem);

export const LegacyStats = z.object({
  total_executions: z.int(),
  successful: z.int(),
  failed: z.int(),
  /** Seconds. */
  average_time: z.number(),
  history_size: z.int(),
});
export type LegacyStats = z.infer<typeof LegacyStats>;
