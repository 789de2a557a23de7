// Builds a running pybox from a config: engine, sandboxes, store, service and HTTP app, wired
// together. composePybox is the embedded all-in-one node; compose-cluster.ts builds cluster nodes
// from the same parts. main.ts serves what these return; integration tests use them directly.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Hono } from 'hono';
import { createApp } from './app.ts';
import type { Config } from './config/schema.ts';
import { ConcurrencyGate } from './core/concurrency.ts';
import { DefaultExecutionService, type ExecutionServiceDeps } from './core/execution-service.ts';
import { LocalBackend } from './core/local-backend.ts';
import { LocalDispatch } from './core/local-dispatch.ts';
import { SessionManager, type SessionManagerDeps } from './core/session-manager.ts';
import { SessionService } from './core/session-service.ts';
import type { SessionHosts, SessionSandboxes } from './core/sessions.ts';
import { shutdown } from './core/shutdown.ts';
import { NO_OBSERVER, type Clock, type ClusterStatus, type ExecutionStore, type Logger, type Observer } from './core/ports.ts';
import { MeteredRequestLimiter } from './metrics/metered.ts';
import { PrometheusMetrics } from './metrics/prometheus.ts';
import type { RuntimeName } from './core/schemas.ts';
import { DockerEngine, dockerConnection } from './engine/docker-engine.ts';
import { DistinctUids } from './engine/distinct-uids.ts';
import { EngineSessionSandboxes } from './engine/session-sandbox.ts';
import { Doctor } from './doctor/doctor.ts';
import { imageTags } from './engine/image.ts';
import { SandboxRunner } from './engine/run-sandbox.ts';
import { SandboxFactory, type SandboxSettings } from './engine/sandbox.ts';
import { WarmPool } from './pool/warm-pool.ts';
import { knownRuntimes, resolveRuntime } from './engine/runtime.ts';
import { openDatabase } from './store/db.ts';
import { SqliteExecutionStore } from './store/execution-store.ts';
import { SqliteTenantStore } from './store/tenant-store.ts';
import { sqliteJobStores } from './store/open.ts';
import { composeJobsSide, type JobsSide } from './compose-jobs.ts';
import { Authenticator } from './tenancy/authenticator.ts';
import { RateLimiter } from './tenancy/rate-limiter.ts';

export interface Pybox {
  app: Hono;
  pool: WarmPool;
  service: DefaultExecutionService;
  /** Tenants and API keys (the CLI's `keys` commands write the same tables). */
  tenants: SqliteTenantStore;
  /** The execution slots and their per-tenant queues. */
  gate: ConcurrencyGate;
  runtime: RuntimeName;
  /** The runtimes the engine offers (pybox knows runc and runsc). */
  availableRuntimes: RuntimeName[];
  /** The live self-test of the isolation (GET /v1/doctor, `pybox doctor`). */
  doctor: Doctor;
  image: string;
  /** This node's metrics (GET /metrics); undefined when metrics.enabled is false. */
  metrics: PrometheusMetrics | undefined;
  /** Async executions, batches and their webhooks. */
  jobs: JobsSide;
  /** Sessions (/v1/sessions); undefined when sessions.enabled is false or the engine offers none. */
  sessions: { service: SessionService; manager: SessionManager } | undefined;
  /**
   * Shuts down (core/shutdown.ts): refuses new executions at once, gives running ones `graceMs` to
   * finish, cancels the rest, closes `listener` (the HTTP server, when serving), removes every
   * sandbox and closes the store. Safe to call more than once: later calls wait for the first.
   */
  shutdown(graceMs: number, listener?: { close(): Promise<void> }): Promise<void>;
  /** shutdown() letting running executions finish however long they take. */
  close(): Promise<void>;
}

export interface ComposeOptions {
  /** DOCKER_HOST, when set. */
  dockerHost?: string | undefined;
  /** Folder holding the sandbox image's sources, for the `auto` image tag. */
  imagesDir?: string;
  logger: Logger;
  clock?: Clock;
}

export const systemClock: Clock = { now: () => Date.now() };

/** How long shutdown waits for runs that went through the gate without the service (the doctor's). */
const DOCTOR_WAIT_MS = 5000;

async function idleWithin(gate: ConcurrencyGate, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([gate.idle(), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

/** What every sandbox of this configuration is made and read with. */
export function sandboxSettings(config: Config): SandboxSettings {
  return {
    instance: config.engine.instance,
    sandbox: config.sandbox,
    outputBytes: config.limits.outputBytes,
    floodBytes: config.limits.floodBytes,
    outputFilesMax: config.limits.outputFilesMax,
    outputFilesMaxBytes: config.limits.outputFilesMaxBytes,
    outputsMax: config.limits.outputsMax,
    outputsMaxBytes: config.limits.outputsMaxBytes,
    startTimeoutMs: config.engine.startTimeoutMs,
  };
}

/** A node's own engine and what runs on it: sandboxes, pool, gate, the local dispatch and backend. */
export interface EngineSide {
  engine: DockerEngine;
  pool: WarmPool;
  sandboxes: SandboxRunner;
  gate: ConcurrencyGate;
  dispatch: LocalDispatch;
  backend: LocalBackend;
  doctor: Doctor;
  runtime: RuntimeName;
  availableRuntimes: RuntimeName[];
  image: string;
  /** Sandboxes for sessions, one container each; absent when this engine side offers none. */
  sessionSandboxes?: SessionSandboxes | undefined;
  /** Removes every sandbox (after the executions have ended). */
  drain(): Promise<void>;
}

/**
 * Connects to the engine, checks the image, removes what an earlier run left and starts the pool.
 * Results are recorded in `store`; `slots` executions run at once (the gate queues the rest).
 */
export async function composeEngineSide(
  config: Config,
  opts: ComposeOptions & { store: ExecutionStore; slots: number; onRecorded?: (fault: string | null) => void; metrics?: PrometheusMetrics | undefined },
): Promise<EngineSide> {
  const { logger, store, metrics } = opts;
  const clock = opts.clock ?? systemClock;
  const observer = metrics ?? NO_OBSERVER;
  // An engine that goes away is pinged until it is back; then what it still holds of ours is removed.
  const engine = new DockerEngine(dockerConnection(opts.dockerHost, config.engine.socketPath), config.engine.apiTimeoutMs, {
    instance: config.engine.instance,
    logger,
    observer,
  });
  if (!(await engine.ping())) {
    throw new Error(
      `no Docker engine answers at ${opts.dockerHost ?? config.engine.socketPath}: run \`npm run setup\` (it installs and starts one on Debian as root)`,
    );
  }
  const availableRuntimes = knownRuntimes(await engine.runtimes());
  const runtime = resolveRuntime(config.engine.runtime, availableRuntimes);
  const image = config.engine.image === 'auto' ? imageTags(opts.imagesDir ?? join(process.cwd(), 'images')).sandbox : config.engine.image;
  if (!(await engine.imageExists(image))) {
    throw new Error(`the sandbox image ${image} is missing: run \`npm run setup\` to build it`);
  }
  await engine.reapLeftovers('start-up');

  // Every live sandbox runs as a uid of its own, so per-user kernel limits are never shared.
  const [baseUid, gid] = config.sandbox.user.split(':').map(Number) as [number, number];
  // One allocator for executions and sessions alike: no two live sandboxes share a uid.
  const uids = new DistinctUids(engine, baseUid, gid, config.sandbox.uids);
  const factory = new SandboxFactory(uids, sandboxSettings(config), logger, clock, observer);
  const sessionSandboxes = config.sessions.enabled
    ? new EngineSessionSandboxes({
        engine: uids,
        settings: sandboxSettings(config),
        interruptGraceMs: config.sessions.interruptGraceMs,
        logger,
        clock,
      })
    : undefined;
  // With the pool disabled it starts a sandbox for each run.
  const pool = new WarmPool(factory, config.pool, logger, clock, observer);
  const sandboxes = new SandboxRunner(factory, pool, clock);
  // The configuration most requests use (the defaults) is warmed now; others once first asked for.
  pool.warm({ image, runtime, memoryMb: config.limits.defaults.memoryMb, cpus: config.limits.defaults.cpus, preload: [] });
  const gate = new ConcurrencyGate(opts.slots, config.concurrency.maxQueue, config.concurrency.retryAfterS);
  const results = { runtime, limits: config.limits, clock, feedbackBudgetChars: config.feedback.budgetChars };
  const dispatch = new LocalDispatch({ sandboxes, gate, store, image, results, logger, observer, ...(opts.onRecorded ? { onRecorded: opts.onRecorded } : {}) });
  const backend = new LocalBackend({ engine, sandboxes, gate, image, runtime, availableRuntimes, defaults: config.limits.defaults, maxTimeoutMs: config.limits.max.timeoutMs, logger, newId: randomUUID });
  const doctor = new Doctor({
    sandboxes,
    gate,
    image,
    runtime,
    runtimeChoice: config.engine.runtime,
    availableRuntimes,
    limits: config.limits,
    sandbox: config.sandbox,
    clock,
    newId: randomUUID,
  });
  if (metrics) {
    metrics.watchGate(opts.slots, () => gate.stats);
    metrics.watchPool(() => pool.readyByConfig());
    metrics.watchEngine(() => engine.ping());
  }
  const drain = async () => {
    // The doctor's runs go through the gate but not the service: they are waited for, briefly.
    await idleWithin(gate, DOCTOR_WAIT_MS);
    await pool.drain();
    await sandboxes.drain();
    await sessionSandboxes?.drain();
  };
  return { engine, pool, sandboxes, sessionSandboxes, gate, dispatch, backend, doctor, runtime, availableRuntimes, image, drain };
}

/** The one use case, on whichever dispatch and backend the node has (this engine, or the queue). */
export function executionService(
  config: Config,
  parts: Pick<ExecutionServiceDeps, 'dispatch' | 'backend' | 'store' | 'clock' | 'logger'>,
): DefaultExecutionService {
  return new DefaultExecutionService({ ...parts, limits: config.limits, newId: randomUUID, importPolicy: config.importPolicy });
}

/** The embedded all-in-one node: SQLite, limits and queue in memory, this host's engine. */
export async function composePybox(config: Config, opts: ComposeOptions): Promise<Pybox> {
  const { logger } = opts;
  const clock = opts.clock ?? systemClock;
  const db = openDatabase(config.store.path);
  const metrics = config.metrics.enabled ? new PrometheusMetrics({ tenantLabels: config.metrics.tenantLabels }) : undefined;
  const store = new SqliteExecutionStore({ db, maxExecutions: config.store.maxExecutions, maxAgeDays: config.store.maxAgeDays, clock });
  // The service learns of failed saves from the dispatch; it is made after, hence the late binding.
  let onRecorded = (_fault: string | null): void => {};
  let side: EngineSide;
  try {
    side = await composeEngineSide(config, { ...opts, store, slots: config.concurrency.maxConcurrent, onRecorded: (f) => onRecorded(f), metrics });
  } catch (e) {
    db.close();
    throw e;
  }
  const { engine, pool, gate, dispatch, backend, doctor, runtime, availableRuntimes, image } = side;
  const service = executionService(config, { dispatch, backend, store, clock, logger });
  onRecorded = (f) => service.recorded(f);
  const tenants = new SqliteTenantStore(db, clock);
  const startedAt = new Date(clock.now()).toISOString();
  const cluster: ClusterStatus = {
    async status() {
      const { running, queued } = gate.stats;
      const slots = config.concurrency.maxConcurrent;
      const healthy = (await backend.checks()).checks;
      const node = {
        nodeId: config.cluster.nodeId || `${hostname()}-${process.pid}`,
        role: 'all' as const,
        host: hostname(),
        pid: process.pid,
        startedAt,
        seenAt: new Date(clock.now()).toISOString(),
        slots,
        running,
        runtime,
        healthy: healthy.engine && healthy.image,
      };
      return { mode: 'embedded', nodes: [node], slots, running, waiting: queued };
    },
  };
  const sessions = sessionSide(config, side, { store, clock, logger, executions: service, onRecorded: (f) => service.recorded(f), observer: metrics, node: config.cluster.nodeId || `${hostname()}-${process.pid}` });
  const jobStores = sqliteJobStores(db, { maxAgeDays: config.store.maxAgeDays, clock });
  const jobs = composeJobsSide(config, {
    stores: jobStores,
    store,
    tenants,
    service,
    results: { runtime, limits: config.limits, clock, feedbackBudgetChars: config.feedback.budgetChars },
    clock,
    logger,
    // One embedded node per database: its leases are its own across restarts.
    owner: config.cluster.nodeId || 'embedded',
  });
  const app = createApp({
    service,
    doctor,
    cluster,
    batches: jobs.batches,
    webhookSecrets: jobStores.secrets,
    ...(sessions ? { sessions: sessions.service } : {}),
    logger,
    bodyLimitBytes: config.server.bodyLimitBytes,
    allowedHosts: config.server.allowedHosts,
    allowedOrigins: config.server.allowedOrigins,
    auth: new Authenticator(tenants),
    rateLimiter: metrics ? new MeteredRequestLimiter(new RateLimiter(clock), metrics) : new RateLimiter(clock),
    tools: config.tools.enabled,
    ...(metrics ? { observer: metrics, metrics } : {}),
  });

  let stopping: Promise<void> | undefined;
  const stop = (graceMs: number, listener?: { close(): Promise<void> }): Promise<void> => {
    // Nothing more is claimed from the store once shutdown has begun; what runs is waited for.
    jobs.stopClaiming();
    return (stopping ??= shutdown(
      {
        service,
        listener,
        drains: [() => jobs.drain(), ...(sessions ? [() => closeSessions(sessions)] : []), () => side.drain()],
        closers: [() => engine.close(), () => store.close()],
        logger,
      },
      graceMs,
    ));
  };
  try {
    await jobs.start();
  } catch (e) {
    await stop(0);
    throw e;
  }

  return {
    app,
    pool,
    service,
    tenants,
    gate,
    runtime,
    availableRuntimes,
    doctor,
    image,
    metrics,
    jobs,
    sessions,
    shutdown: stop,
    close: () => stop(Number.POSITIVE_INFINITY),
  };
}

/**
 * This node's sessions over its engine's session sandboxes: the manager (SessionHosts) and the
 * service the HTTP layer uses. Undefined when sessions are off or the engine side has no sandboxes for them.
 */
export function sessionSide(
  config: Config,
  side: Pick<EngineSide, 'sessionSandboxes' | 'image' | 'runtime'>,
  parts: { store: ExecutionStore; clock: Clock; logger: Logger; executions: DefaultExecutionService; onRecorded?: (fault: string | null) => void; observer?: Observer | undefined; node: string },
): { service: SessionService; manager: SessionManager } | undefined {
  if (!config.sessions.enabled) return undefined;
  let service: SessionService | undefined;
  const manager = localSessions(config, side, {
    node: parts.node,
    clock: parts.clock,
    logger: parts.logger,
    // The service remembers ended sessions, so their calls are answered 410 with the reason.
    onEnded: (session, reason) => service?.sessionEnded(session, reason),
  });
  if (!manager) return undefined;
  service = sessionService(config, manager, parts);
  return { service, manager };
}

/** This node's own sessions (SessionHosts) over its engine side's session sandboxes; undefined when it has none. */
export function localSessions(
  config: Config,
  side: Pick<EngineSide, 'sessionSandboxes' | 'image' | 'runtime'>,
  parts: Pick<SessionManagerDeps, 'node' | 'clock' | 'logger' | 'onEnded'>,
): SessionManager | undefined {
  if (!side.sessionSandboxes) return undefined;
  return new SessionManager({ sandboxes: side.sessionSandboxes, image: side.image, runtime: side.runtime, config: config.sessions, ...parts });
}

/** The sessions' use case over wherever they live (this node's manager, or the cluster's workers). */
export function sessionService(
  config: Config,
  hosts: SessionHosts,
  parts: { store: ExecutionStore; clock: Clock; logger: Logger; executions: DefaultExecutionService; onRecorded?: ((fault: string | null) => void) | undefined; observer?: Observer | undefined },
): SessionService {
  const { executions, clock } = parts;
  return new SessionService({
    hosts,
    executions,
    store: parts.store,
    config: config.sessions,
    limits: config.limits,
    results: { limits: config.limits, clock, feedbackBudgetChars: config.feedback.budgetChars },
    clock,
    logger: parts.logger,
    newId: randomUUID,
    onRecorded: parts.onRecorded,
    observer: parts.observer,
    accepting: () => executions.accepting,
  });
}

/** Shutdown: every session ends (its sandbox removed) and its last calls are recorded. */
async function closeSessions(sessions: { service: SessionService; manager: SessionManager }): Promise<void> {
  await sessions.manager.closeAll('shutdown');
  await sessions.service.settled();
}
