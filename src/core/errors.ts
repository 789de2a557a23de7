// Faults of the service itself (never of the user's code, which is reported in the result).
// Each carries a machine-readable code; http/errors.ts maps codes to HTTP statuses in one table.

export const ERROR_CODES = [
  'invalid_request', // the request failed validation
  'unauthorized', // no valid API key (missing, malformed, unknown and revoked look the same)
  'unsupported_media_type', // not application/json
  'payload_too_large', // body over the limit
  'not_found',
  'host_not_allowed', // local mode: the Host header names neither loopback nor server.allowedHosts (DNS rebinding)
  'origin_not_allowed', // a browser's cross-origin request from an origin not in server.allowedOrigins
  'rate_limited', // the tenant is over its request rate or its concurrency
  'queue_full', // every execution slot is busy and the queue is full
  'engine_unavailable', // the Docker engine does not answer
  'image_missing', // the sandbox image is not present
  'store_unavailable', // the history store cannot be written
  'queue_unavailable', // cluster: Redis (the queue and the limits) does not answer
  'no_workers', // cluster: no worker is alive to run executions
  'session_busy', // a session call (or file operation) while another call of the same session runs
  'session_limit', // the tenant or the host has as many sessions as allowed
  'session_ended', // the session has ended (idle, lifetime, deleted, its sandbox lost); create a new one
  'shutting_down',
  'internal', // anything else
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The state of one quota policy, as the RateLimit header fields advertise it. */
export interface RateLimitState {
  /** The policy's name: `requests` (per window) or `concurrency` (at once). */
  policy: string;
  /** Quota units the policy allows (per window, or at once). */
  quota: number;
  remaining: number;
  /** Seconds until the quota is back (in full for a window; one unit for concurrency). */
  resetS: number;
  /** The window, in seconds, for a per-window policy. */
  windowS?: number;
}

export class PyboxError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;
  /** Seconds after which a retry may succeed (queue_full, rate_limited, and every 503). */
  readonly retryAfterS: number | undefined;
  /** The quota that was exceeded (rate_limited). */
  readonly rateLimit: RateLimitState | undefined;

  constructor(code: ErrorCode, message: string, opts: { details?: unknown; retryAfterS?: number; rateLimit?: RateLimitState; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PyboxError';
    this.code = code;
    this.details = opts.details;
    this.retryAfterS = opts.retryAfterS;
    this.rateLimit = opts.rateLimit;
  }
}

export const isPyboxError = (e: unknown): e is PyboxError => e instanceof PyboxError;

/** A 400 about one field of a request: `path` as the request names it, and what is wrong with it. */
export function invalidField(path: string, message: string): PyboxError {
  return new PyboxError('invalid_request', `${path} ${message}`, { details: [{ path, message }] });
}

/**
 * The 429 for a tenant at its ceiling of executions in flight (running or waiting). One builder,
 * so a single node (core/concurrency.ts) and a cluster (cluster/redis-limits.ts) refuse alike.
 */
export function tenantLimitError(maxInFlight: number, retryAfterS: number): PyboxError {
  return new PyboxError('rate_limited', `this tenant already has ${maxInFlight} execution(s) running or waiting, its limit`, {
    retryAfterS,
    details: { limit: 'concurrency', maxConcurrency: maxInFlight },
    rateLimit: { policy: 'concurrency', quota: maxInFlight, remaining: 0, resetS: retryAfterS },
  });
}
