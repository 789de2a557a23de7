// Faults of the service itself (never of the user's code, which is reported in the result).
// Each carries a machine-readable code; http/errors.ts maps codes to HTTP statuses in one table.

export const ERROR_CODES = [
  'invalid_request', // the request failed validation
  'unsupported_media_type', // not application/json
  'payload_too_large', // body over the limit
  'not_found',
  'queue_full', // every execution slot is busy and the queue is full
  'engine_unavailable', // the Docker engine does not answer
  'image_missing', // the sandbox image is not present
  'store_unavailable', // the history store cannot be written
  'shutting_down',
  'internal', // anything else
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class PyboxError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;
  /** Seconds after which a retry may succeed (for queue_full and engine_unavailable). */
  readonly retryAfterS: number | undefined;

  constructor(code: ErrorCode, message: string, opts: { details?: unknown; retryAfterS?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PyboxError';
    this.code = code;
    this.details = opts.details;
    this.retryAfterS = opts.retryAfterS;
  }
}

export const isPyboxError = (e: unknown): e is PyboxError => e instanceof PyboxError;
