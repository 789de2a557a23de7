// A node's metrics in the Prometheus format. The one module that imports prom-client: the rest of
// pybox reports through core's Observer port, and gauges are read from their sources at scrape time
// (nothing here polls). Each composed node has a registry of its own, never the library's global one,
// so two nodes in one process (tests, `role: all`) never mix their figures.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { MetricsExposition, Observer } from '../core/ports.ts';
import type { ExecutionStatus, RuntimeName } from '../core/schemas.ts';

/** Seconds: sandboxed runs last from tens of milliseconds to minutes (limits.max.timeoutMs). */
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** Seconds: a wait is nothing on an idle node and up to a run's length or more under load. */
const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Seconds: HTTP answers, from a probe's microseconds to an execution's whole run. */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** The tenant label of tenants not named in metrics.tenantLabels. */
export const OTHER_TENANT = 'other';

/** What a warm-pool group looks like to the gauge of warm sandboxes. */
export interface WarmGroup {
  config: { runtime: RuntimeName; memoryMb: number; cpus: number };
  ready: number;
}

export interface PrometheusMetricsOptions {
  /** Tenants labelled by name (config metrics.tenantLabels); the rest are `other`. */
  tenantLabels: readonly string[];
  /** Node-level labels on every series (role, node id): constant for the process. */
  defaultLabels?: Record<string, string>;
  /** collectDefaultMetrics (process CPU, memory, event loop, GC); on by default. */
  processMetrics?: boolean;
}

export class PrometheusMetrics implements Observer, MetricsExposition {
  readonly registry = new Registry();
  private readonly tenants: ReadonlySet<string>;
  private readonly executions: Counter<'status' | 'runtime'>;
  private readonly duration: Histogram<'runtime'>;
  private readonly queueWait: Histogram<'runtime'>;
  private readonly poolTakes: Counter<'runtime' | 'result'>;
  private readonly sandboxStarts: Counter<'runtime'>;
  private readonly sandboxStartFailures: Counter<'runtime'>;
  private readonly engineErrors: Counter<'operation' | 'kind'>;
  private readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  private readonly httpDuration: Histogram<'route' | 'method'>;
  private readonly rateLimitedCount: Counter<'tenant'>;

  constructor(opts: PrometheusMetricsOptions) {
    this.tenants = new Set(opts.tenantLabels);
    const registers = [this.registry];
    if (opts.defaultLabels) this.registry.setDefaultLabels(opts.defaultLabels);
    this.executions = new Counter({ name: 'pybox_executions_total', help: 'Executions ended on this node, by status and runtime', labelNames: ['status', 'runtime'], registers });
    this.duration = new Histogram({ name: 'pybox_execution_duration_seconds', help: "The code's own run time (the result's durationMs)", labelNames: ['runtime'], buckets: DURATION_BUCKETS, registers });
    this.queueWait = new Histogram({ name: 'pybox_execution_queue_wait_seconds', help: 'From acceptance to an execution slot (or to leaving the queue unrun)', labelNames: ['runtime'], buckets: WAIT_BUCKETS, registers });
    this.poolTakes = new Counter({ name: 'pybox_pool_takes_total', help: 'Sandboxes asked of the warm pool: result="hit" when a ready one was there, "miss" otherwise', labelNames: ['runtime', 'result'], registers });
    this.sandboxStarts = new Counter({ name: 'pybox_container_starts_total', help: 'Sandbox containers whose runner said it is ready', labelNames: ['runtime'], registers });
    this.sandboxStartFailures = new Counter({ name: 'pybox_container_start_failures_total', help: 'Sandbox containers that could not start (engine error, start timeout, died first)', labelNames: ['runtime'], registers });
    this.engineErrors = new Counter({ name: 'pybox_engine_errors_total', help: 'Failed calls to the container engine, by operation; kind="unavailable" when it did not answer', labelNames: ['operation', 'kind'], registers });
    this.httpRequests = new Counter({ name: 'pybox_http_requests_total', help: 'HTTP requests answered, by route pattern, method and status', labelNames: ['route', 'method', 'status'], registers });
    this.httpDuration = new Histogram({ name: 'pybox_http_request_duration_seconds', help: 'Time to answer an HTTP request', labelNames: ['route', 'method'], buckets: HTTP_BUCKETS, registers });
    this.rateLimitedCount = new Counter({ name: 'pybox_rate_limited_total', help: 'Requests refused by a tenant\'s request-rate limit; tenants not in metrics.tenantLabels are "other"', labelNames: ['tenant'], registers });
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  executionFinished(e: { status: ExecutionStatus; runtime: RuntimeName; durationMs: number; queueWaitMs: number }): void {
    this.executions.inc({ status: e.status, runtime: e.runtime });
    this.duration.observe({ runtime: e.runtime }, e.durationMs / 1000);
    this.queueWait.observe({ runtime: e.runtime }, e.queueWaitMs / 1000);
  }

  poolTake(runtime: RuntimeName, hit: boolean): void {
    this.poolTakes.inc({ runtime, result: hit ? 'hit' : 'miss' });
  }

  sandboxStart(runtime: RuntimeName, ok: boolean): void {
    (ok ? this.sandboxStarts : this.sandboxStartFailures).inc({ runtime });
  }

  engineError(operation: string, unavailable: boolean): void {
    this.engineErrors.inc({ operation, kind: unavailable ? 'unavailable' : 'failed' });
  }

  httpRequest(r: { route: string; method: string; status: number; durationMs: number }): void {
    this.httpRequests.inc({ route: r.route, method: r.method, status: String(r.status) });
    this.httpDuration.observe({ route: r.route, method: r.method }, r.durationMs / 1000);
  }

  rateLimited(tenant: string): void {
    this.rateLimitedCount.inc({ tenant: this.tenantLabel(tenant) });
  }

  /** A tenant's label: its name only when the operator listed it. */
  tenantLabel(tenant: string): string {
    return this.tenants.has(tenant) ? tenant : OTHER_TENANT;
  }

  /** Running and queued executions of this node's slots (its concurrency gate), read at scrape time. */
  watchGate(slots: number, stats: () => { running: number; queued: number }): void {
    const registers = [this.registry];
    new Gauge({
      name: 'pybox_executions_running',
      help: "Executions holding one of this node's slots",
      registers,
      collect() {
        this.set(stats().running);
      },
    });
    new Gauge({
      name: 'pybox_executions_queued',
      help: "Executions waiting for one of this node's slots",
      registers,
      collect() {
        this.set(stats().queued);
      },
    });
    new Gauge({
      name: 'pybox_execution_slots',
      help: 'Executions this node runs at once',
      registers,
      collect() {
        this.set(slots);
      },
    });
  }

  /** Executions waiting in the cluster's queue (an API node), read at scrape time. */
  watchClusterQueue(depth: () => Promise<number>): void {
    new Gauge({
      name: 'pybox_cluster_queue_depth',
      help: "Executions waiting in the cluster's queue for a worker",
      registers: [this.registry],
      async collect() {
        // A queue that cannot be read (Redis away) is NaN, not an empty queue.
        this.set(await depth().catch(() => Number.NaN));
      },
    });
  }

  /** Ready warm sandboxes by configuration, read at scrape time. */
  watchPool(groups: () => readonly WarmGroup[]): void {
    new Gauge({
      name: 'pybox_pool_warm_sandboxes',
      help: 'Ready warm sandboxes, by configuration (runtime, memory, CPUs)',
      labelNames: ['runtime', 'memory_mb', 'cpus'],
      registers: [this.registry],
      collect() {
        // Configurations come and go (idle ones are emptied): only those warmed now are shown.
        this.reset();
        const ready = new Map<string, { labels: { runtime: string; memory_mb: string; cpus: string }; n: number }>();
        for (const g of groups()) {
          const labels = { runtime: g.config.runtime, memory_mb: String(g.config.memoryMb), cpus: String(g.config.cpus) };
          const key = `${labels.runtime}|${labels.memory_mb}|${labels.cpus}`;
          const entry = ready.get(key) ?? { labels, n: 0 };
          entry.n += g.ready;
          ready.set(key, entry);
        }
        for (const { labels, n } of ready.values()) this.set(labels, n);
      },
    });
  }

  /** Whether the container engine answers (1) or not (0), asked at scrape time. */
  watchEngine(ping: () => Promise<boolean>): void {
    new Gauge({
      name: 'pybox_engine_up',
      help: 'Whether the container engine answers a ping (1) or not (0)',
      registers: [this.registry],
      async collect() {
        this.set((await ping().catch(() => false)) ? 1 : 0);
      },
    });
  }
}
