// Every request gets an id and leaves one access line. The id is the client's X-Request-Id when it
// is a plain token (core/request-id.ts), else a new random one; it is answered in the same header,
// errors included, handed to the service for the execution's own line, and carried by the job to
// the worker that runs it.
//
// The access line names the route's pattern (/v1/executions/:id), the path without its query (a
// query may carry values nobody should find in a log), the status, the time and the tenant. It
// never holds a header, a body or a query value.
import { randomUUID } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import type { Caller } from '../core/caller.ts';
import type { Logger } from '../core/ports.ts';
import { isValidRequestId } from '../core/request-id.ts';
import { OPEN_PATHS } from './auth.ts';
import { routePattern } from './route.ts';

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
  }
}

export const REQUEST_ID_HEADER = 'X-Request-Id';
/** A path longer than this is cut in the access line (the route pattern says which route it was). */
const MAX_LOGGED_PATH_CHARS = 256;

export interface RequestLogOptions {
  logger: Logger;
  /** New ids for requests that bring none (or an invalid one); random UUIDs when absent. */
  newId?: () => string;
  /** Milliseconds, monotonic; performance.now when absent. */
  now?: () => number;
}

/** The client's id when it is acceptable, else a new one: what it sent otherwise goes nowhere. */
function acceptRequestId(given: string | undefined, newId: () => string = randomUUID): string {
  return isValidRequestId(given) ? given : newId();
}

/** The request's id, set by logRequests (undefined for an app built without it). */
export function requestIdOf(c: Context): string | undefined {
  return c.get('requestId') as string | undefined;
}

export function logRequests(opts: RequestLogOptions): MiddlewareHandler {
  const { logger } = opts;
  const newId = opts.newId ?? randomUUID;
  const now = opts.now ?? (() => performance.now());
  return async function logRequest(c, next) {
    const started = now();
    const id = acceptRequestId(c.req.header(REQUEST_ID_HEADER), newId);
    c.set('requestId', id);
    let status = 500;
    try {
      await next();
      status = c.res.status;
    } finally {
      // Set last, so no handler's own headers (or a Response it built) can drop it.
      c.header(REQUEST_ID_HEADER, id);
      const caller = c.get('caller') as Caller | undefined;
      const path = c.req.path;
      const fields = {
        requestId: id,
        method: c.req.method,
        route: routePattern(c),
        path: path.length > MAX_LOGGED_PATH_CHARS ? `${path.slice(0, MAX_LOGGED_PATH_CHARS)}…` : path,
        status,
        durationMs: Math.round((now() - started) * 10) / 10,
        tenant: caller?.tenant,
      };
      // Orchestrators probe health every few seconds: those lines only at debug.
      if (OPEN_PATHS.has(path)) logger.debug('request', fields);
      else logger.info('request', fields);
    }
  };
}
