// What the typed client throws: one base class, and a subclass for each case a caller handles
// differently. What the user's code did is never an error here: it is the result's `status`.
import type { ErrorCode } from '../core/errors.ts';

export interface ClientErrorInit {
  /** The service's error code (`invalid_request`, `queue_full`…), or the client's own. */
  code: string;
  /** The HTTP status, when the service answered. */
  status?: number | undefined;
  details?: unknown;
  retryAfterS?: number | undefined;
  cause?: unknown;
}

export class PyboxClientError extends Error {
  readonly code: string;
  readonly status: number | undefined;
  readonly details: unknown;
  /** Seconds after which a retry may succeed, from the service's Retry-After. */
  readonly retryAfterS: number | undefined;

  constructor(message: string, init: ClientErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.status = init.status;
    this.details = init.details;
    this.retryAfterS = init.retryAfterS;
  }
}

/** 400, 413, 415: the request itself is wrong; sending it again will not help. */
export class InvalidRequestError extends PyboxClientError {}
/** 401, 403: the API key is missing, unknown or not allowed to do this. */
export class AuthError extends PyboxClientError {}
/** 404: no such execution (or route). */
export class NotFoundError extends PyboxClientError {}
/** 429: a rate limit or quota of this API key; `retryAfterS` says when to try again. */
export class RateLimitError extends PyboxClientError {}
/** 429 session_limit: the tenant (or the server) has as many sessions as allowed; end one first. */
export class SessionLimitError extends RateLimitError {}
/** 409 session_busy: the session is running another call or file operation; try again when it is over. */
export class SessionBusyError extends PyboxClientError {}
/** 410 session_ended: the session has ended (`details.reason`: deleted, idle, lifetime, failed, shutdown); create a new one. */
export class SessionEndedError extends PyboxClientError {}
/** 503: the service cannot run code right now (engine away, shutting down…); often worth a retry. */
export class ServiceUnavailableError extends PyboxClientError {}
/** 503 queue_full: every execution slot and the queue are busy; retry after `retryAfterS`. */
export class QueueFullError extends ServiceUnavailableError {}
/** 5xx other than 503: a fault of the service. */
export class ServerError extends PyboxClientError {}
/** The service could not be reached (refused, reset, DNS…). */
export class ConnectionError extends PyboxClientError {}
/** No answer within the client's `timeoutMs`. */
export class TimeoutError extends PyboxClientError {}
/** The service answered with something that is not what the API promises. */
export class UnexpectedResponseError extends PyboxClientError {}

/**
 * The class of an error the service reports, by its code: the same whether it comes as an HTTP
 * answer or as an event of a streamed run (whose answer was a 200). A full Record: a new ErrorCode
 * fails to compile until it is placed here.
 */
const CLASS_BY_CODE: Record<ErrorCode, typeof PyboxClientError> = {
  invalid_request: InvalidRequestError,
  unsupported_media_type: InvalidRequestError,
  payload_too_large: InvalidRequestError,
  unauthorized: AuthError,
  host_not_allowed: AuthError,
  origin_not_allowed: AuthError,
  not_found: NotFoundError,
  rate_limited: RateLimitError,
  session_limit: SessionLimitError,
  session_busy: SessionBusyError,
  session_ended: SessionEndedError,
  queue_full: QueueFullError,
  engine_unavailable: ServiceUnavailableError,
  image_missing: ServiceUnavailableError,
  store_unavailable: ServiceUnavailableError,
  queue_unavailable: ServiceUnavailableError,
  no_workers: ServiceUnavailableError,
  shutting_down: ServiceUnavailableError,
  internal: ServerError,
};

const classOfCode = (code: string): typeof PyboxClientError | undefined =>
  Object.hasOwn(CLASS_BY_CODE, code) ? CLASS_BY_CODE[code as ErrorCode] : undefined;

/** The class for an error code of the service's; a code this client does not know is a ServerError. */
export function errorClassForCode(code: string): typeof PyboxClientError {
  return classOfCode(code) ?? ServerError;
}

/** The class for an HTTP error answer: by the service's code, or (a code this client does not know, or none: a proxy's answer) by its status. */
function errorClassFor(status: number, code: string): typeof PyboxClientError {
  const known = classOfCode(code);
  if (known) return known;
  if (status === 401 || status === 403) return AuthError;
  if (status === 404) return NotFoundError;
  if (status === 429) return RateLimitError;
  if (status === 503) return ServiceUnavailableError;
  if (status >= 500) return ServerError;
  if (status >= 400) return InvalidRequestError;
  return UnexpectedResponseError;
}

/** The service's `{error: {code, message, details}}`, read leniently: newer servers may add codes. */
function parseErrorBody(json: unknown): { code: string; message: string; details?: unknown } | null {
  if (typeof json !== 'object' || json === null) return null;
  const error = (json as { error?: unknown }).error;
  if (typeof error !== 'object' || error === null) return null;
  const { code, message, details } = error as Record<string, unknown>;
  if (typeof code !== 'string' || typeof message !== 'string') return null;
  return { code, message, details };
}

/** The error an HTTP error answer stands for, with the service's code, details and Retry-After. */
export function errorFromAnswer(method: string, path: string, response: Response, json: unknown): PyboxClientError {
  const body = parseErrorBody(json);
  const retryAfter = Number(response.headers.get('retry-after'));
  const ErrorClass = errorClassFor(response.status, body?.code ?? '');
  return new ErrorClass(body?.message ?? `HTTP ${response.status} from ${method} ${path}`, {
    code: body?.code ?? `http_${response.status}`,
    status: response.status,
    details: body?.details,
    retryAfterS: response.headers.has('retry-after') && Number.isFinite(retryAfter) ? retryAfter : undefined,
  });
}

/** What to say about a failed fetch: the message of its cause (undici's "fetch failed" says little), else its own. */
export function causeMessage(e: unknown): string {
  return e instanceof Error ? ((e.cause as Error | undefined)?.message ?? e.message) : String(e);
}

/** A body's JSON, or undefined when it is empty or not JSON. */
export function jsonOrUndefined(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
