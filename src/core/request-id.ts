// A request's id follows it from the HTTP edge into the execution's log lines, and through the
// queue to the worker that runs it. One rule for what an id may be, wherever one is read.

/**
 * What a client may send as X-Request-Id: short, and characters that can neither split a log line
 * nor smuggle markup or a header. Anything else is replaced, never echoed or logged.
 */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

export function isValidRequestId(value: unknown): value is string {
  return typeof value === 'string' && REQUEST_ID_PATTERN.test(value);
}
