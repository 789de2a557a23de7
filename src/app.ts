// The HTTP application: route groups over one ExecutionService, one place where errors become
// responses. Everything it uses is handed in, so tests build it with a fake service. Route groups
// are OpenAPIHono apps whose routes are served through http/route.ts, so each one is in the
// OpenAPI document the moment it is served.
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { BlankEnv } from 'hono/types';
import pkg from '../package.json' with { type: 'json' };
import { PyboxError } from './core/errors.ts';
import type { ClusterStatus, ExecutionService, Logger, MetricsExposition, Observer, RequestLimiter, WebhookSecrets } from './core/ports.ts';
import type { BatchService } from './core/batch-service.ts';
import type { SessionApi } from './core/session-service.ts';
import { sessionRoutes } from './http/routes/sessions.ts';
import { batchRoutes, webhookSecretRoutes } from './http/routes/batches.ts';
import { observeRequests } from './http/metrics.ts';
import { metricsRoutes } from './http/routes/metrics.ts';
import { errorReply } from './http/errors.ts';
import { docsRoutes } from './http/routes/docs.ts';
import { DEFAULT_WEB_DIR, webRoutes } from './http/routes/web.ts';
import { executionRoutes } from './http/routes/executions.ts';
import { healthRoutes } from './http/routes/health.ts';
import { legacyRoutes } from './http/routes/legacy.ts';
import { serviceInfoRoutes } from './http/routes/service-info.ts';
import { limitBody, wrapNonErrors } from './http/middleware.ts';
import { logRequests, requestIdOf } from './http/request-log.ts';
import { authenticate, limitRate } from './http/auth.ts';
import { usageRoutes } from './http/routes/usage.ts';
import type { Authenticator } from './tenancy/authenticator.ts';
import { RateLimiter } from './tenancy/rate-limiter.ts';
import { clusterRoutes } from './http/routes/cluster.ts';
import { mcpRoutes, toolListRoutes } from './http/routes/agent-tools.ts';
import { DEFAULT_TOOLS, SESSION_TOOL_NAMES, type ToolSelection } from './adapters/tools.ts';
import type { Doctor } from './doctor/doctor.ts';
import { doctorRoutes } from './http/routes/doctor.ts';
import { guardBrowsers } from './http/guard.ts';
import { MCP_OPERATIONS, TOOL_LIST_OPERATIONS } from './http/agent-tools-doc.ts';
import { describeServed } from './http/route.ts';

export interface AppDeps {
  service: ExecutionService;
  logger: Logger;
  bodyLimitBytes: number;
  /** API keys; with none in its store, every request is the local operator (local mode). */
  auth: Authenticator;
  /** Requests per minute per tenant; a fresh one on the system clock when absent. */
  rateLimiter?: RequestLimiter;
  /** Shown in the OpenAPI document; package.json's by default. */
  version?: string;
  /** Tools offered at /v1/tools and /mcp (config tools.enabled); the defaults when absent. */
  tools?: ToolSelection;
  /** What the deployment is made of, behind GET /v1/cluster; the route is absent without it. */
  cluster?: ClusterStatus;
  /** The live self-test behind GET /v1/doctor; the route is absent without it. */
  doctor?: Pick<Doctor, 'run'>;
  /** Host names answered in local mode besides loopback (config server.allowedHosts); none when absent. */
  allowedHosts?: readonly string[];
  /** Origins whose browser pages may call pybox (config server.allowedOrigins); none when absent. */
  allowedOrigins?: readonly string[];
  /** Told of every answered request (metrics); none when absent. */
  observer?: Pick<Observer, 'httpRequest'>;
  /** The node's metrics behind GET /metrics; the route is absent without them. */
  metrics?: MetricsExposition;
  /** Ids for requests that bring no valid X-Request-Id; random UUIDs when absent. */
  newRequestId?: () => string;
  /**
   * Async executions and batches (POST /v1/executions?async=true, /v1/batches); without them those
   * routes are not served and GET /v1/executions/{id} knows only finished runs.
   */
  batches?: BatchService;
  /** The tenants' webhook secrets behind /v1/webhooks/secret; the routes are absent without them. */
  webhookSecrets?: WebhookSecrets;
  /** Where the web pages were built (scripts/build-web.ts); this package's build/web when absent. */
  webDir?: string;
  /** Sessions (/v1/sessions and the session tools); the routes are absent without them. */
  sessions?: SessionApi;
}

/** What an error's log line says of its request. */
const where = (c: Context) => ({ method: c.req.method, path: c.req.path, requestId: requestIdOf(c) });

export function createApp(deps: AppDeps): OpenAPIHono<BlankEnv> {
  const { service, logger } = deps;
  const app = new OpenAPIHono<BlankEnv>();

  // First: every answer carries the request's id and leaves its access line, refusals included.
  app.use(logRequests({ logger, ...(deps.newRequestId ? { newId: deps.newRequestId } : {}) }));
  // Every answer is counted, refusals by the guard and authentication included.
  if (deps.observer) app.use(observeRequests(deps.observer));
  app.use(wrapNonErrors());
  // Before authentication: a page the operator visits must not get to ask, with or without a key.
  app.use(guardBrowsers({ keysRequired: (request) => deps.auth.required(request), allowedHosts: deps.allowedHosts ?? [], allowedOrigins: deps.allowedOrigins ?? [] }));
  // Before anything else reads the request: who is calling, and whether it may call now. As
  // app-level middleware it covers every route, including ones mounted later and unknown paths.
  app.use(authenticate(deps.auth));
  app.use(limitRate(deps.rateLimiter ?? new RateLimiter({ now: () => Date.now() })));
  // Every route, including unknown ones: no body is buffered past the limit anywhere.
  app.use(limitBody(deps.bodyLimitBytes));

  app.route('/', healthRoutes(service));
  const documented = () => app.openAPIRegistry.definitions.flatMap((d) => (d.type === 'route' ? [d.route] : []));
  app.route('/', docsRoutes(deps.version ?? pkg.version, documented));
  app.route('/', webRoutes(deps.webDir ?? DEFAULT_WEB_DIR));
  app.route('/v1/executions', executionRoutes(service, deps.batches, logger));
  if (deps.batches) app.route('/v1', batchRoutes(deps.batches, logger));
  if (deps.webhookSecrets) app.route('/v1', webhookSecretRoutes(deps.webhookSecrets));
  if (deps.sessions) app.route('/v1', sessionRoutes(deps.sessions, logger));
  app.route('/v1', serviceInfoRoutes(service));
  app.route('/api', legacyRoutes(service));
  app.route('/v1', usageRoutes(service));
  if (deps.doctor) app.route('/v1', doctorRoutes(deps.doctor));
  if (deps.cluster) app.route('/v1', clusterRoutes(deps.cluster));
  if (deps.metrics) app.route('/', metricsRoutes(deps.metrics));
  // /mcp's tools call the service in-process, for the caller authenticated above.
  // The session tools are offered only where sessions are served.
  const selection = deps.tools ?? DEFAULT_TOOLS;
  const tools = deps.sessions ? selection : Object.fromEntries(Object.entries(selection).filter(([name]) => !(SESSION_TOOL_NAMES as readonly string[]).includes(name)));
  const agentTools = { tools, bodyLimitBytes: deps.bodyLimitBytes, service, logger, sessions: deps.sessions };
  app.route('/v1', toolListRoutes(agentTools));
  describeServed(app, TOOL_LIST_OPERATIONS);
  app.route('/mcp', mcpRoutes(agentTools));
  describeServed(app, MCP_OPERATIONS);

  answerErrors(app, logger);
  return app;
}

/** Unknown routes and every error answered in the one error shape, with the request's log fields. */
export function answerErrors(app: OpenAPIHono<BlankEnv>, logger: Logger): void {
  app.notFound((c) => {
    const { status, body } = errorReply(new PyboxError('not_found', `no route for ${c.req.method} ${c.req.path}`), logger, where(c));
    return c.json(body, status);
  });
  app.onError((err, c) => {
    const { status, body, headers } = errorReply(err, logger, where(c));
    return c.json(body, status, headers);
  });
}
