// Browsers are the one client that can be made to call pybox against the will of the person using
// them: any page they open may send requests to it. Two checks, before authentication:
//
// - Host (local mode only). Without API keys, whoever reaches the socket is trusted, and a page can
//   reach a loopback socket by DNS rebinding: its own name, re-resolved to 127.0.0.1, makes the
//   browser treat pybox as the page's own origin. The browser still sends the page's name as Host,
//   so only loopback names (and server.allowedHosts) are answered. A request without a Host header
//   is not a browser's (every browser sends one; only HTTP/1.0 clients and in-process calls do not).
//   With keys the check is off: a rebinding page has no key, and a keyed server is reached by names
//   of its operator's choosing.
// - Origin (always). A browser marks a request a page makes with the page's origin. One from another
//   origin than the server's own (same host and port as Host) is refused unless server.allowedOrigins
//   lists it; a listed origin gets the CORS answers a browser needs, and its preflight (OPTIONS) is
//   answered here, so a preflight never reaches a route.
//
// /healthz is exempt: it reveals nothing and orchestrators probe it by whatever name they use.
import type { MiddlewareHandler } from 'hono';
import { PyboxError } from '../core/errors.ts';
import { isLoopbackHost } from '../tenancy/listen.ts';

export const UNGUARDED_PATHS: ReadonlySet<string> = new Set(['/healthz']);

export interface GuardOptions {
  /** Whether API keys are required (false: local mode), for this request: the first key ends local mode. */
  keysRequired(request: Request): boolean | Promise<boolean>;
  /** Host names answered in local mode besides loopback (config server.allowedHosts). */
  allowedHosts: readonly string[];
  /** Origins whose pages may call pybox from a browser (config server.allowedOrigins). */
  allowedOrigins: readonly string[];
}

// A Host header: a name or bracketed IPv6 literal, and an optional port. Anything else (userinfo,
// paths, spaces) is refused outright rather than handed to a URL parser that might read it another way.
const HOST_HEADER = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/;

/** The name part of a Host header (lower case, IPv6 with brackets), or undefined if it is not one. */
export function hostName(header: string): string | undefined {
  const m = HOST_HEADER.exec(header.trim());
  return m?.[1]?.toLowerCase();
}

/** The ASCII serialisation of an origin (`https://example.org:8443`), or undefined if it is not a web origin. */
export function normalizeOrigin(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  return url.origin;
}

/** Whether an Origin names the host and port the request was sent to (its Host). */
function isSameOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined || hostName(host) === undefined) return false;
  const normalized = normalizeOrigin(origin);
  if (normalized === undefined) return false;
  const url = new URL(normalized);
  try {
    // The default port of the origin's scheme is written as no port, on both sides.
    return new URL(`${url.protocol}//${host.trim()}`).host === url.host;
  } catch {
    return false;
  }
}

const shown = (value: string) => JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}...` : value);

/** Request headers a page may send (the API's own and MCP's); the rest of its preflight is refused by the browser. */
const CORS_ALLOW_HEADERS = 'Authorization, Content-Type, Accept, Last-Event-ID, Mcp-Protocol-Version, Mcp-Session-Id, X-Request-Id';
/** Response headers a page may read besides the simple ones. */
const CORS_EXPOSE_HEADERS = 'Retry-After, RateLimit-Policy, RateLimit, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Mcp-Session-Id, WWW-Authenticate, X-Request-Id';

export function guardBrowsers(opts: GuardOptions): MiddlewareHandler {
  const hosts = new Set(opts.allowedHosts.map((h) => h.toLowerCase()));
  const origins = new Set(opts.allowedOrigins.map((o) => normalizeOrigin(o) ?? o));
  return async function refuseForeignPages(c, next) {
    if (UNGUARDED_PATHS.has(c.req.path)) return next();
    const host = c.req.header('host');
    // A store that cannot say whether keys exist counts as "keys exist": authentication then answers
    // 503 on every path it guards, and /readyz still reports which part is away.
    const keysRequired = await Promise.resolve()
      .then(() => opts.keysRequired(c.req.raw))
      .catch(() => true);
    if (host !== undefined && !keysRequired) {
      const name = hostName(host);
      if (name === undefined || !(hosts.has(name) || isLoopbackHost(name))) {
        throw new PyboxError(
          'host_not_allowed',
          `pybox runs in local mode (no API keys) and answers only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]), not Host ${shown(host)}, ` +
            'so that a web page cannot reach it by DNS rebinding. To use another name for this machine, add it to server.allowedHosts.',
          { details: { host: host.slice(0, 100), setting: 'server.allowedHosts' } },
        );
      }
    }
    const origin = c.req.header('origin');
    if (origin === undefined || isSameOrigin(origin, host)) return next();
    const normalized = normalizeOrigin(origin);
    if (normalized === undefined || !origins.has(normalized)) {
      throw new PyboxError(
        'origin_not_allowed',
        `a browser page at ${shown(origin)} may not call pybox: only pages of its own origin may, and of origins listed in server.allowedOrigins.`,
        { details: { origin: origin.slice(0, 100), setting: 'server.allowedOrigins' } },
      );
    }
    if (c.req.method === 'OPTIONS' && c.req.header('access-control-request-method') !== undefined) {
      return c.body(null, 204, {
        'Access-Control-Allow-Origin': normalized,
        'Access-Control-Allow-Methods': 'GET, POST, PUT, DELETE',
        'Access-Control-Allow-Headers': CORS_ALLOW_HEADERS,
        'Access-Control-Max-Age': '600',
        Vary: 'Origin',
      });
    }
    await next();
    c.res.headers.set('Access-Control-Allow-Origin', normalized);
    c.res.headers.set('Access-Control-Expose-Headers', CORS_EXPOSE_HEADERS);
    c.res.headers.append('Vary', 'Origin');
  };
}
