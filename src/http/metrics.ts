// What the HTTP layer tells the node's metrics: one report per answered request, labelled by the
// pattern of the route that answered (`/v1/executions/:id`), never by the raw path, whose values
// are the client's to choose and would grow the label set without bound.
import type { MiddlewareHandler } from 'hono';
import type { Observer } from '../core/ports.ts';
import { routePattern } from './route.ts';

/** The label of requests no route matched (404s, refused preflights). */
const UNMATCHED_ROUTE = 'unmatched';

/** Methods reported as themselves; any other (a client may send any token) is counted as OTHER. */
const KNOWN_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

export function observeRequests(observer: Pick<Observer, 'httpRequest'>, now: () => number = () => performance.now()): MiddlewareHandler {
  return async function observeRequest(c, next) {
    const started = now();
    try {
      await next();
    } finally {
      const method = KNOWN_METHODS.has(c.req.method) ? c.req.method : 'OTHER';
      // A throw that escaped every handler still becomes a 500 from the server.
      const status = c.finalized ? c.res.status : 500;
      observer.httpRequest({ route: routePattern(c) ?? UNMATCHED_ROUTE, method, status, durationMs: now() - started });
    }
  };
}
