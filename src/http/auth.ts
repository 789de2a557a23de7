// Who is calling, and how often: app-level middleware, so every route (including ones added later)
// is covered except the health probes. With no API key in the store (local mode) every request is
// the local operator; once a key exists every request needs one.
import type { Context, MiddlewareHandler } from 'hono';
import { LOCAL_CALLER, type Caller } from '../core/caller.ts';
import { PyboxError } from '../core/errors.ts';
import type { Authenticator } from '../tenancy/authenticator.ts';
import type { RequestLimiter } from '../core/ports.ts';
import { rateLimitHeaders } from './rate-limit-headers.ts';

declare module 'hono' {
  interface ContextVariableMap {
    caller: Caller;
  }
}

/** Orchestrators probe these without credentials; they reveal nothing of any tenant. */
export const OPEN_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz']);

/**
 * The web pages and their assets (routes/web.ts): the same files for everyone, holding nothing of
 * any tenant; the API calls they make carry the key. The browser guard still applies to them.
 */
export function isPublicPage(path: string): boolean {
  return path === '/' || path === '/docs' || /^\/assets\/[^/]+$/.test(path);
}

/** One message for every failure: which check failed is not the client's business. */
const UNAUTHORIZED = 'a valid API key is required: send it as Authorization: Bearer <key>';

export function authenticate(auth: Authenticator): MiddlewareHandler {
  return async function authenticateCaller(c, next) {
    if (OPEN_PATHS.has(c.req.path)) return next();
    if ((c.req.method === 'GET' || c.req.method === 'HEAD') && isPublicPage(c.req.path)) return next();
    if (!(await auth.required(c.req.raw))) {
      c.set('caller', LOCAL_CALLER);
      return next();
    }
    const caller = await auth.authenticate(c.req.header('authorization'));
    if (!caller) throw new PyboxError('unauthorized', UNAUTHORIZED);
    c.set('caller', caller);
    return next();
  };
}

/** Requests per minute per tenant; every answer to a limited tenant carries the RateLimit fields. */
export function limitRate(limiter: RequestLimiter): MiddlewareHandler {
  return async function limitRequestRate(c, next) {
    const caller = c.get('caller') as Caller | undefined;
    const perMinute = caller?.limits.ratePerMinute;
    if (!caller || perMinute == null) return next();
    const decision = await limiter.take(caller.tenant, perMinute);
    if (!decision.allowed) {
      throw new PyboxError('rate_limited', `this tenant may make ${perMinute} requests per minute`, {
        retryAfterS: decision.retryAfterS,
        rateLimit: decision.state,
        details: { limit: 'requests', ratePerMinute: perMinute },
      });
    }
    await next();
    // After the handler, so responses it built itself get them too; a 429 for concurrency keeps its own.
    if (!c.res.headers.has('RateLimit-Policy')) for (const [k, v] of Object.entries(rateLimitHeaders(decision.state))) c.header(k, v);
  };
}

/** The request's caller. Fails closed: a route reached without the auth middleware is a bug, not a guest. */
export function callerOf(c: Context): Caller {
  const caller = c.get('caller') as Caller | undefined;
  if (!caller) throw new PyboxError('internal', 'no caller on this request: the authentication middleware did not run');
  return caller;
}
