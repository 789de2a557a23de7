// Builds a cluster node from a config with PostgreSQL and Redis: an API node (HTTP, auth, tenant
// limits, the store; executions go to the queue), a worker (its engine and pool take executions
// from the queue and record their results) or both in one process. The same core as the embedded
// node, with other implementations of its ports.
import { hostname } from 'node:os';
import { OpenAPIHono } from '@hono/zod-openapi';
import type { BlankEnv } from 'hono/types';
import { Redis } from 'ioredis';
import { answerErrors, createApp } from './app.ts';
import { ClusterBackend } from './cluster/cluster-backend.ts';
import { QueueDispatch } from './cluster/queue-dispatch.ts';
import { QueueWorker } from './cluster/queue-worker.ts';
import { RedisAdmission, RedisRateLimiter, tenantLimitError } from './cluster/redis-limits.ts';
import { PatientStore } from './cluster/patient-store.ts';
import { fastFailOptions } from './cluster/connection.ts';
import { ClusterRegistry, type NodeStatus } from './cluster/registry.ts';
import { RemoteSessionHosts } from './cluster/remote-sessions.ts';
import { SessionDirectory } from './cluster/session-directory.ts';
import { SessionWorker } from './cluster/session-worker.ts';
import { composeEngineSide, executionService, localSessions, sessionService, systemClock, type ComposeOptions, type EngineSide } from './compose.ts';
import { composeJobsSide, type JobsSide } from './compose-jobs.ts';
import type { Config } from './config/schema.ts';
import type { DefaultExecutionService } from './core/execution-service.ts';
import { redactUrl } from './core/redact.ts';
import type { ClusterStatus, Readiness, TenantStore } from './core/ports.ts';
import type { SessionEndReason } from './core/schemas.ts';
import type { HostedSession, SessionHosts } from './core/sessions.ts';
import type { SessionService } from './core/session-service.ts';
import { shutdown, type Drainable } from './core/shutdown.ts';
import { healthRoutes } from './http/routes/health.ts';
import { metricsRoutes } from './http/routes/metrics.ts';
import { authenticate } from './http/auth.ts';
import { guardBrowsers } from './http/guard.ts';
import { observeRequests } from './http/metrics.ts';
import { MeteredRequestLimiter } from './metrics/metered.ts';
import { PrometheusMetrics } from './metrics/prometheus.ts';
import { openStores } from './store/open.ts';
import { Authenticator } from './tenancy/authenticator.ts';

export interface ClusterNode {
  role: Config['cluster']['role'];
  nodeId: string;
  /** The API (api and all), or only /healthz, /readyz and /metrics (worker). */
  app: OpenAPIHono<BlankEnv>;
  /** The API side's service (api and all). */
  service: DefaultExecutionService | undefined;
  /** The worker side's engine parts (worker and all). */
  engineSide: EngineSide | undefined;
  tenants: TenantStore;
  /**
   * Where the API side finds sessions (api and all, sessions.enabled): the workers, through Redis.
   * The SessionService of this node is built over it.
   */
  sessionHosts: SessionHosts | undefined;
  /** This node's metrics (GET /metrics); undefined when metrics.enabled is false. */
  metrics: PrometheusMetrics | undefined;
  shutdown(graceMs: number, listener?: { close(): Promise<void> }): Promise<void>;
  close(): Promise<void>;
}

/**
 * What a worker's sessions are built from, when not this node's own SessionManager over its engine
 * side (compose.ts localSessions): tests bring other local hosts.
 */
export interface ClusterSessionParts {
  /**
   * A worker's local sessions. `config` is the worker's own (its engine.instance carries the node
   * id, as its sandboxes' labels must). `onEnded` must be passed on as the manager's own onEnded: a
   * session that ends on its own (idle, lifetime, its sandbox lost) then leaves the directory at
   * once. `closeAll` ends them at shutdown, once the worker takes no more operations, and should
   * resolve once their sandboxes are removed (SessionSandboxes.drain).
   */
  localHosts?: (
    side: EngineSide,
    ctx: { nodeId: string; config: Config; onEnded: (session: HostedSession, reason: SessionEndReason) => void },
  ) => SessionHosts & { closeAll?(reason: SessionEndReason): Promise<void> };
}

/** How long a node waits for Redis at start-up. */
const REDIS_CONNECT_MS = 10_000;
/** How long a worker keeps trying to save a result while the store is away. */
const SAVE_PATIENCE_MS = 30_000;

export async function composeClusterNode(config: Config, opts: ComposeOptions, sessionParts: ClusterSessionParts = {}): Promise<ClusterNode> {
  const { logger } = opts;
  const clock = opts.clock ?? systemClock;
  const { role, postgresUrl, redisUrl, prefix } = config.cluster;
  if (postgresUrl === null || redisUrl === null) throw new Error('a cluster node needs cluster.postgresUrl and cluster.redisUrl');
  const nodeId = config.cluster.nodeId || defaultNodeId(role);
  const { executions: store, tenants, ...jobStores } = await openStores(config, clock, { logger });
  // Commands on a request's path fail fast while Redis is away (503), instead of waiting in a queue.
  const redis = new Redis(fastFailOptions(redisUrl));
  redis.on('error', (e: Error) => logger.debug('redis connection', { error: e.message }));
  // A node that cannot reach Redis at start-up says so and exits; later outages are waited out.
  try {
    await connected(redis, REDIS_CONNECT_MS);
  } catch (e) {
    redis.disconnect();
    await Promise.all([store.close(), tenants.close()]);
    throw new Error(`cannot reach Redis at ${redactUrl(redisUrl)}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const admission = new RedisAdmission(redis, prefix);
  const metrics = config.metrics.enabled ? new PrometheusMetrics({ tenantLabels: config.metrics.tenantLabels }) : undefined;
  const auth = new Authenticator(tenants);
  const registry = new ClusterRegistry({ redis, prefix, nodeId, role, heartbeatMs: config.cluster.heartbeatMs, clock, logger });

  const closers: Array<() => void | Promise<void>> = [];
  const drains: Array<() => Promise<void>> = [];
  // Where each session lives: written by the workers holding them, read by the API nodes.
  const directory = new SessionDirectory({ redis, prefix, logger });

  // The worker side: this host's engine, taking executions from the queue.
  let engineSide: EngineSide | undefined;
  let worker: QueueWorker | undefined;
  let sessionWorker: SessionWorker | undefined;
  const slots = config.cluster.workerSlots ?? config.concurrency.maxConcurrent;
  if (role !== 'api') {
    // Its sandboxes carry its own instance name: its start-up reaper then removes its own leftovers
    // and never the live sandboxes of another worker on a shared engine.
    const own = { ...config, engine: { ...config.engine, instance: `${config.engine.instance}.${nodeId}`.slice(0, 63) } };
    // Nobody else holds a result the worker ran: a save failing during a short outage is tried again.
    const patient = new PatientStore(store, { retryMs: SAVE_PATIENCE_MS, logger });
    engineSide = await composeEngineSide(own, { ...opts, store: patient, slots, metrics });
    worker = new QueueWorker({ connection: redisUrl, prefix, nodeId, slots, lockMs: config.cluster.lockMs, run: engineSide.dispatch, admission, logger });
    await worker.start();
    const side = engineSide;
    const w = worker;
    const graceMs = config.server.shutdownGraceMs;
    let endSessions: () => Promise<void> = async () => {};
    // The worker's own sessions: core's SessionManager over its engine's session sandboxes, unless
    // the caller brings other local hosts (tests).
    const localHosts =
      sessionParts.localHosts ??
      ((side: EngineSide, ctx: { nodeId: string; config: Config; onEnded: (session: HostedSession, reason: SessionEndReason) => void }) =>
        localSessions(ctx.config, side, { node: ctx.nodeId, clock, logger, onEnded: ctx.onEnded }));
    let ended: (s: HostedSession) => void = () => {};
    const local = config.sessions.enabled && config.sessions.maxPerHost > 0 ? localHosts(engineSide, { nodeId, config: own, onEnded: (s) => ended(s) }) : undefined;
    if (local) {
      const sw = new SessionWorker({
        connection: redisUrl,
        prefix,
        nodeId,
        local,
        directory,
        redis,
        maxSessions: config.sessions.maxPerHost,
        lockMs: config.cluster.lockMs,
        refreshMs: config.cluster.heartbeatMs,
        logger,
      });
      ended = (s) => sw.sessionEnded(s);
      await sw.start();
      sessionWorker = sw;
      endSessions = async () => {
        await local.closeAll?.('shutdown');
      };
    }
    const sessionSide = sessionWorker;
    // Executions and session calls under way share one grace; then the sessions end with the node,
    // before its engine drains.
    drains.push(
      async () => {
        await Promise.all([w.close(graceMs), sessionSide?.close(graceMs)]);
        await endSessions();
      },
      () => side.drain(),
    );
    closers.push(() => side.engine.close());
  }
  let engineHealthy = engineSide ? (await engineSide.backend.checks()).checks : undefined;

  // The API side: HTTP, auth and limits; executions go to the queue.
  let service: DefaultExecutionService | undefined;
  let dispatch: QueueDispatch | undefined;
  let jobs: JobsSide | undefined;
  let sessionHosts: RemoteSessionHosts | undefined;
  let sessions: SessionService | undefined;
  let app: OpenAPIHono<BlankEnv>;
  if (role !== 'worker') {
    // Sessions live on the workers (an `all` node's own included): each operation goes to the
    // worker holding the session, through Redis.
    if (config.sessions.enabled) {
      const hosts = new RemoteSessionHosts({
        connection: redisUrl,
        prefix,
        directory,
        redis,
        registry,
        logger,
        retryAfterS: config.concurrency.retryAfterS,
        // A call outlives its limit by its interrupt's grace and a restart of its interpreter.
        callMarginMs: 2 * config.sessions.interruptGraceMs + 30_000,
      });
      sessionHosts = hosts;
      closers.unshift(() => hosts.shutdown());
    }
    const backend = new ClusterBackend({ registry, redis, retryAfterS: config.concurrency.retryAfterS, logger });
    dispatch = new QueueDispatch({
      connection: redisUrl,
      prefix,
      admission,
      tenantLimitError,
      store,
      results: { limits: config.limits, clock, feedbackBudgetChars: config.feedback.budgetChars },
      runtime: () => backend.identity().runtime ?? engineSide?.runtime ?? 'runsc',
      registry,
      maxQueue: config.cluster.maxQueue,
      retryAfterS: config.concurrency.retryAfterS,
      logger,
      onRecorded: (f) => service?.recorded(f),
    });
    const d = dispatch;
    closers.unshift(() => d.close());
    metrics?.watchClusterQueue(() => d.queueDepth());
    service = executionService(config, { dispatch, backend, store, clock, logger });
    // Sessions are checked, counted and recorded here; each operation goes to the worker holding it.
    if (sessionHosts) {
      const executions = service;
      const s = sessionService(config, sessionHosts, { store, clock, logger, executions, onRecorded: (f) => executions.recorded(f), observer: metrics });
      sessions = s;
      drains.unshift(() => s.settled());
    }
    // Async executions and batches are claimed from PostgreSQL by the API nodes and go to the
    // workers through the same queue, behind the interactive runs.
    jobs = composeJobsSide(config, {
      stores: jobStores,
      store,
      tenants,
      service,
      results: { runtime: engineSide?.runtime ?? 'runsc', limits: config.limits, clock, feedbackBudgetChars: config.feedback.budgetChars },
      clock,
      logger,
      owner: nodeId,
    });
    const j = jobs;
    drains.unshift(() => j.drain());
    const status: ClusterStatus = {
      async status() {
        const nodes = await registry.nodes();
        const runners = nodes.filter((n) => n.role !== 'api');
        return {
          mode: 'cluster',
          nodes: nodes.map((n) => ({
            nodeId: n.nodeId,
            role: n.role,
            host: n.host,
            pid: n.pid,
            startedAt: n.startedAt,
            seenAt: n.seenAt,
            slots: n.slots,
            running: n.running,
            runtime: n.runtime ?? null,
            healthy: n.role === 'api' ? null : n.engine === true && n.imageReady === true,
            ...(n.maxSessions !== undefined ? { sessions: { live: n.sessions ?? 0, max: n.maxSessions } } : {}),
          })),
          slots: runners.reduce((a, n) => a + n.slots, 0),
          running: runners.reduce((a, n) => a + n.running, 0),
          waiting: await d.queueDepth(),
        };
      },
    };
    app = createApp({
      service,
      cluster: status,
      ...(engineSide ? { doctor: engineSide.doctor } : {}),
      logger,
      bodyLimitBytes: config.server.bodyLimitBytes,
      allowedHosts: config.server.allowedHosts,
      allowedOrigins: config.server.allowedOrigins,
      auth,
      rateLimiter: metrics ? new MeteredRequestLimiter(new RedisRateLimiter(redis, prefix), metrics) : new RedisRateLimiter(redis, prefix),
      tools: config.tools.enabled,
      batches: jobs.batches,
      webhookSecrets: jobStores.secrets,
      ...(sessions ? { sessions } : {}),
      ...(metrics ? { observer: metrics, metrics } : {}),
    });
  } else {
    // A worker answers the orchestrator's probes only: it has no API of its own.
    const side = engineSide as EngineSide;
    const readiness = async (): Promise<Readiness> => {
      const [backend, storeOk, queue] = await Promise.all([
        side.backend.checks(),
        store.healthy().catch(() => false),
        redis.ping().then(
          () => true,
          () => false,
        ),
      ]);
      const checks = { ...backend.checks, store: storeOk, queue };
      const ready = Object.values(checks).every(Boolean);
      const r: Readiness = { ready, checks, ...side.backend.identity() };
      if (!ready) r.message = backend.message ?? (!storeOk ? 'PostgreSQL does not take writes' : 'Redis does not answer');
      return r;
    };
    app = new OpenAPIHono<BlankEnv>();
    if (metrics) {
      // /metrics alone is guarded and authenticated as on an API node (keys are in PostgreSQL, read
      // through the same store); the probes stay open to the orchestrator by whatever name it uses.
      const guard = guardBrowsers({ keysRequired: (request) => auth.required(request), allowedHosts: config.server.allowedHosts, allowedOrigins: config.server.allowedOrigins });
      app.use(observeRequests(metrics));
      app.use('/metrics', guard, authenticate(auth));
    }
    app.route('/', healthRoutes({ readiness }));
    if (metrics) app.route('/', metricsRoutes(metrics));
    answerErrors(app, logger);
  }

  // Every beat tells the cluster this node is alive, with its slots and its engine's health.
  let beats = 0;
  await registry.start((): NodeStatus => {
    if (engineSide && ++beats % 5 === 0) {
      const side = engineSide;
      void side.backend.checks().then((r) => (engineHealthy = r.checks));
    }
    const report: NodeStatus = {
      slots: engineSide ? slots : 0,
      running: engineSide ? engineSide.gate.stats.running : 0,
    };
    if (sessionWorker) {
      report.sessions = sessionWorker.sessions;
      report.maxSessions = config.sessions.maxPerHost;
    }
    if (engineSide) {
      report.runtime = engineSide.runtime;
      report.image = engineSide.image;
      report.engine = engineHealthy?.engine ?? false;
      report.imageReady = engineHealthy?.image ?? false;
    }
    return report;
  });
  closers.push(
    () => registry.stop(),
    async () => {
      await redis.quit().catch(() => redis.disconnect());
    },
    () => store.close(),
    () => tenants.close(),
  );

  // A worker alone has no service: its worker.close() (a drain) lets its executions finish.
  const idle: Drainable = { pending: 0, stopAccepting() {}, cancelRunning() {}, settled: async () => {} };
  let stopping: Promise<void> | undefined;
  const stop = (graceMs: number, listener?: { close(): Promise<void> }): Promise<void> => {
    jobs?.stopClaiming();
    return (stopping ??= shutdown({ service: service ?? idle, listener, drains, closers, logger }, graceMs));
  };
  if (jobs) {
    try {
      await jobs.start();
    } catch (e) {
      await stop(0);
      throw e;
    }
  }
  return { role, nodeId, app, service, engineSide, sessionHosts, tenants, metrics, shutdown: stop, close: () => stop(Number.POSITIVE_INFINITY) };
}

/** A worker's name must survive its restarts (it finds its leftovers by it): the host's name. */
function defaultNodeId(role: Config['cluster']['role']): string {
  const host = hostname().replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'node';
  return role === 'api' ? `${host.slice(0, 22)}-${process.pid}` : host.slice(0, 30);
}

/** Resolves once the connection is ready, or rejects after `ms`. */
function connected(redis: Redis, ms: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    let last = 'no answer';
    const onError = (e: Error) => (last = e.message);
    const timer = setTimeout(() => {
      redis.off('ready', onReady);
      redis.off('error', onError);
      reject(new Error(`${last} (for ${ms / 1000} s)`));
    }, ms);
    const onReady = () => {
      clearTimeout(timer);
      redis.off('error', onError);
      resolve();
    };
    redis.once('ready', onReady);
    redis.on('error', onError);
  });
}
