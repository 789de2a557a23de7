// Middleware shared by every route: the body size limit, and a guard that lets app.onError see
// every throw.
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { PyboxError } from '../core/errors.ts';

/**
 * Refuses bodies over `maxBytes` before they are buffered: hono's bodyLimit trusts Content-Length
 * when there is one (Node's parser never reads past it) and otherwise counts the streamed bytes.
 */
export function limitBody(maxBytes: number): MiddlewareHandler {
  const limit = bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new PyboxError('payload_too_large', `the request body exceeds ${maxBytes} bytes`, { details: { limitBytes: maxBytes } });
    },
  });
  return async function limitBodySize(c, next) {
    return limit(c, next);
  };
}

/** Hono hands only Error instances to onError; anything else thrown would escape as a crash. */
export function wrapNonErrors(): MiddlewareHandler {
  return async function wrapThrownValues(_c, next) {
    try {
      await next();
    } catch (e) {
      throw e instanceof Error ? e : new Error(`non-Error thrown: ${String(e)}`, { cause: e });
    }
  };
}
