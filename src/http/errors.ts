// Every fault reaches the client through this file: one table from error code to HTTP status, and
// one function turning whatever was thrown into the JSON error body.
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { isPyboxError, PyboxError, type ErrorCode } from '../core/errors.ts';
import type { Logger } from '../core/ports.ts';
import type { ErrorBody } from '../core/schemas.ts';
import { rateLimitHeaders } from './rate-limit-headers.ts';

// Typed as a full Record so that adding an ErrorCode without a status fails to compile.
export const STATUS_BY_CODE: Record<ErrorCode, ContentfulStatusCode> = {
  invalid_request: 400,
  unauthorized: 401,
  unsupported_media_type: 415,
  payload_too_large: 413,
  not_found: 404,
  host_not_allowed: 403,
  origin_not_allowed: 403,
  rate_limited: 429,
  queue_full: 503,
  engine_unavailable: 503,
  image_missing: 503,
  store_unavailable: 503,
  queue_unavailable: 503,
  no_workers: 503,
  session_busy: 409,
  session_limit: 429,
  session_ended: 410,
  shutting_down: 503,
  internal: 500,
};

export interface ErrorReply {
  status: ContentfulStatusCode;
  body: ErrorBody;
  headers: Record<string, string>;
}

/** What hono's own refusals (its validators, body parsing) mean in this API's codes. */
const CODE_OF_HTTP_EXCEPTION: Partial<Record<number, { code: ErrorCode; message: string }>> = {
  400: { code: 'invalid_request', message: 'the request body is not valid JSON' },
  404: { code: 'not_found', message: 'not found' },
  413: { code: 'payload_too_large', message: 'the request body is too large' },
  415: { code: 'unsupported_media_type', message: 'the request body must be application/json' },
};

/** Turns any thrown value into a reply. Faults we did not raise ourselves are logged and hidden. */
export function errorReply(thrown: unknown, logger: Logger, where: { method: string; path: string; requestId?: string | undefined }): ErrorReply {
  const known = thrown instanceof HTTPException ? CODE_OF_HTTP_EXCEPTION[thrown.status] : undefined;
  const err = known ? new PyboxError(known.code, known.message, { cause: thrown }) : thrown;
  if (isPyboxError(err)) {
    const status = STATUS_BY_CODE[err.code];
    if (status >= 500) logger.warn('request failed', { ...where, code: err.code, message: err.message });
    const headers: Record<string, string> = err.retryAfterS === undefined ? {} : { 'Retry-After': String(Math.max(0, Math.ceil(err.retryAfterS))) };
    if (err.rateLimit) Object.assign(headers, rateLimitHeaders(err.rateLimit));
    // RFC 9110: a 401 names the scheme that would be accepted.
    if (err.code === 'unauthorized') headers['WWW-Authenticate'] = 'Bearer realm="pybox"';
    const error: ErrorBody['error'] = { code: err.code, message: err.message };
    if (err.details !== undefined) error.details = err.details;
    return { status, body: { error }, headers };
  }
  // Anything else is a bug or an unexpected failure: its message and stack may expose internals,
  // so they go to the log only.
  logger.error('unhandled error', {
    ...where,
    error: err instanceof Error ? err.message : String(err),
    stack: err instanceof Error ? err.stack : undefined,
  });
  return { status: 500, body: { error: { code: 'internal', message: 'internal server error' } }, headers: {} };
}
