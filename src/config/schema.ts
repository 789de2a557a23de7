// Every setting of pybox, with its default. config/default.yaml documents each one; load.ts reads
// that file, lays the environment overrides over it and parses it with this schema (fail fast).
import { z } from 'zod';
import { MIN_CPUS, MIN_MEMORY_MB, MIN_TIMEOUT_MS } from '../core/limits.ts';
import { LOG_FORMATS, LOG_LEVELS } from '../core/logger.ts';
import { allowEntryProblem } from '../webhooks/address-policy.ts';

/** Defaults and maxima alike must allow a run to work: at least the floors a sandbox needs. */
const Limits = z.strictObject({
  timeoutMs: z.int().min(MIN_TIMEOUT_MS, `must be at least ${MIN_TIMEOUT_MS} (ms), the shortest limit a run can meet`).max(3_600_000),
  memoryMb: z.int().min(MIN_MEMORY_MB, `must be at least ${MIN_MEMORY_MB} (MB), the memory a sandbox needs to run at all`).max(65_536),
  cpus: z.number().min(MIN_CPUS, `must be at least ${MIN_CPUS} (CPUs), the share a sandbox needs to start in time`).max(64),
});

/** A dotted Python module name, as written after `import`. */
const ModuleName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/, 'must be a dotted module name').max(200);
/** Modules that reach for the network, processes or raw memory: none of it is useful in a sandbox without network or privileges. */
const DEFAULT_DANGEROUS_MODULES = [
  'subprocess',
  'socket',
  'ctypes',
  'multiprocessing',
  'pty',
  'ftplib',
  'smtplib',
  'http.client',
  'http.server',
  'urllib.request',
  'requests',
];

const PreloadList = z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_.]*$/, 'must be a module name')).max(32);

export const ConfigSchema = z.strictObject({
  server: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: z.int().min(0).max(65_535).default(8080),
      bodyLimitBytes: z.int().min(1024).max(256 * 1024 * 1024).default(20 * 1024 * 1024),
      /** How long a client may take to send its request headers. */
      headersTimeoutMs: z.int().min(1000).max(600_000).default(10_000),
      /** How long a client may take to send a whole request. */
      requestTimeoutMs: z.int().min(1000).max(3_600_000).default(30_000),
      shutdownGraceMs: z.int().min(0).max(600_000).default(10_000),
      /**
       * Host names answered in local mode (no API keys) besides localhost, 127.0.0.1 and [::1]: a
       * request addressed to any other name is refused, so a web page cannot reach pybox by DNS
       * rebinding. No port: any port of a listed name is answered.
       */
      allowedHosts: z
        .array(z.string().regex(/^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?)+$|^\[[0-9A-Fa-f:.]+\]$/, 'must be a host name or a bracketed IPv6 address, without a port'))
        .max(64)
        .default([]),
      /**
       * Origins (scheme://host[:port]) whose web pages may call pybox from a browser, keys or not.
       * A request carrying any other Origin than pybox's own is refused.
       */
      allowedOrigins: z
        .array(z.string().regex(/^https?:\/\/(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/, 'must be an origin: http(s)://host[:port], without a path'))
        .max(64)
        .default([]),
    })
    .prefault({}),
  engine: z
    .strictObject({
      /** Docker socket path; DOCKER_HOST (unix:// or tcp://) wins when set. */
      socketPath: z.string().min(1).default('/var/run/docker.sock'),
      runtime: z.enum(['auto', 'runc', 'runsc']).default('auto'),
      /** Sandbox image; `auto` means the tag setup builds from images/ (pybox-python:<hash>). */
      image: z.string().min(1).default('auto'),
      /** Per-call timeout for engine API calls (not for the user's code). */
      apiTimeoutMs: z.int().min(1000).max(300_000).default(30_000),
      /**
       * Name of this deployment on the engine. Sandboxes carry it as a label, and the start-up
       * reaper removes only leftovers with the same name, never another deployment's live work.
       */
      instance: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'must be 1-63 letters, digits, _ . -').default('pybox'),
      /** How long a started sandbox may take to say it is ready before its run fails. */
      startTimeoutMs: z.int().min(1000).max(300_000).default(30_000),
    })
    .prefault({}),
  sandbox: z
    .strictObject({
      /** uid:gid the code runs as; must not be 0. */
      user: z.string().regex(/^[1-9][0-9]*:[1-9][0-9]*$/, 'must be uid:gid, neither 0').default('10001:10001'),
      /**
       * How many uids, from user's uid up, sandboxes take: each live sandbox gets one no other has,
       * so per-user kernel limits (inotify instances, pipe buffers) are never shared. 1: one uid for all.
       */
      uids: z.int().min(1).max(65_536).default(256),
      pidsLimit: z.int().min(8).max(4096).default(128),
      /** gVisor's own threads count against the pids limit: it needs more room. */
      pidsLimitRunsc: z.int().min(64).max(4096).default(256),
      workTmpfsMb: z.int().min(1).max(4096).default(64),
      tmpTmpfsMb: z.int().min(1).max(4096).default(64),
      tmpfsInodes: z.int().min(64).max(1_000_000).default(4096),
      shmMb: z.int().min(1).max(1024).default(16),
      nofile: z.int().min(16).max(65_536).default(256),
      fsizeMb: z.int().min(1).max(4096).default(64),
    })
    .prefault({}),
  limits: z
    .strictObject({
      defaults: Limits.default({ timeoutMs: 30_000, memoryMb: 256, cpus: 1 }),
      max: Limits.default({ timeoutMs: 300_000, memoryMb: 2048, cpus: 2 }),
      /** Bytes kept of each of stdout and stderr; the rest is counted and dropped. */
      outputBytes: z.int().min(1024).max(64 * 1024 * 1024).default(50_000),
      /** A stream that produces more than this ends the run with status output_limit. */
      floodBytes: z.int().min(1024).max(1024 * 1024 * 1024).default(1_000_000),
      inputFilesMaxBytes: z.int().min(0).max(256 * 1024 * 1024).default(10 * 1024 * 1024),
      outputFilesMax: z.int().min(0).max(1000).default(20),
      outputFilesMaxBytes: z.int().min(0).max(256 * 1024 * 1024).default(5 * 1024 * 1024),
      /** Bytes of each stream kept per test case in the result (the comparison sees up to outputBytes). */
      testOutputBytes: z.int().min(0).max(64 * 1024 * 1024).default(4096),
      /** Rich outputs (figures, a session call's displayed value) kept per run; more are counted in outputsDropped. */
      outputsMax: z.int().min(0).max(100).default(10),
      /** Bytes of one rich output (a PNG, or a displayed text) at most. */
      outputsMaxBytes: z.int().min(1024).max(64 * 1024 * 1024).default(2 * 1024 * 1024),
    })
    .prefault({})
    .refine((l) => l.defaults.timeoutMs <= l.max.timeoutMs && l.defaults.memoryMb <= l.max.memoryMb && l.defaults.cpus <= l.max.cpus, {
      message: 'limits.defaults must not exceed limits.max',
    })
    .refine((l) => l.floodBytes >= l.outputBytes, { message: 'limits.floodBytes must be at least limits.outputBytes' }),
  concurrency: z
    .strictObject({
      maxConcurrent: z.int().min(1).max(1024).default(4),
      maxQueue: z.int().min(0).max(100_000).default(64),
      /** Retry-After (seconds) sent with a 503 when the queue is full. */
      retryAfterS: z.int().min(1).max(3600).default(2),
    })
    .prefault({}),
  pool: z
    .strictObject({
      /** Keep sandboxes started ahead of demand; each still serves one execution only. */
      enabled: z.boolean().default(true),
      /** Warm sandboxes kept per configuration in use, by runtime. */
      size: z
        .strictObject({ runc: z.int().min(0).max(256).default(2), runsc: z.int().min(0).max(256).default(3) })
        .prefault({}),
      /**
       * Sandboxes kept (ready or starting) per configuration while demand outruns the pool, by
       * runtime: that many starts run at once instead of one per run. Never below `size`.
       */
      pressedSize: z
        .strictObject({ runc: z.int().min(0).max(256).default(4), runsc: z.int().min(0).max(256).default(4) })
        .prefault({}),
      /** A configuration unused for this long is emptied. */
      idleMs: z.int().min(1000).max(86_400_000).default(300_000),
      /** Most configurations (runtime, memory, CPUs) kept warm at once. */
      maxConfigs: z.int().min(1).max(64).default(4),
      /** Modules imported in warm sandboxes while they wait, so the user's import is free; by runtime. */
      preload: z
        .strictObject({ runc: PreloadList.default(['numpy', 'pandas']), runsc: PreloadList.default(['numpy', 'pandas']) })
        .prefault({}),
      /** Preloaded modules count against the run's memory: only configurations with at least this much preload. */
      preloadMinMemoryMb: z.int().min(0).max(1_048_576).default(192),
    })
    .prefault({}),
  store: z
    .strictObject({
      path: z.string().min(1).default('./data/pybox.db'),
      /** Newest executions kept; older ones are pruned. */
      maxExecutions: z.int().min(100).max(100_000_000).default(100_000),
      /** Executions older than this are pruned; 0 keeps them regardless of age. */
      maxAgeDays: z.int().min(0).max(36_500).default(30),
    })
    .prefault({}),
  /**
   * Past one host. With no URLs this node is the embedded all-in-one (SQLite, limits and queue in
   * memory). With both, history and keys live in PostgreSQL, limits and the queue in Redis, and
   * the node takes the role given: api (HTTP, no engine), worker (an engine, no HTTP) or both.
   */
  cluster: z
    .strictObject({
      role: z.enum(['all', 'api', 'worker']).default('all'),
      /** postgres://user:password@host:port/database (PYBOX_POSTGRES_URL). */
      postgresUrl: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').nullable().default(null),
      /** redis://[:password@]host:port[/db] (PYBOX_REDIS_URL). */
      redisUrl: z.string().regex(/^rediss?:\/\//, 'must be a redis:// URL').nullable().default(null),
      /**
       * This node's name in GET /v1/cluster, and (on a worker) in its sandboxes' labels, so that a
       * worker that comes back removes its own leftovers and never another worker's sandboxes.
       * Keep it stable across restarts. Empty: the host name (worker, all), with the process id (api).
       */
      nodeId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,29}$|^$/, 'must be 1-30 letters, digits, _ . -').default(''),
      /** Prefix of every Redis key pybox writes, so clusters can share a Redis. */
      prefix: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/, 'must be 1-32 letters, digits, _ . -').default('pybox'),
      /** Executions a worker runs at once; absent: concurrency.maxConcurrent. */
      workerSlots: z.int().min(1).max(1024).nullable().default(null),
      /** Executions waiting in the cluster's queue at most; more get 503 queue_full. */
      maxQueue: z.int().min(0).max(1_000_000).default(1000),
      /** How often a node tells the cluster it is alive; three missed beats and it counts as gone. */
      heartbeatMs: z.int().min(200).max(60_000).default(2000),
      /**
       * A worker that stops renewing an execution's lock this long (it was killed, its host went
       * away) loses it: the execution ends internal_error within this plus one stalled check.
       */
      lockMs: z.int().min(1000).max(600_000).default(10_000),
    })
    .prefault({})
    .refine((c) => (c.postgresUrl === null) === (c.redisUrl === null), { message: 'cluster.postgresUrl and cluster.redisUrl go together: set both or neither' })
    .refine((c) => c.role === 'all' || c.postgresUrl !== null, { message: 'cluster.role api or worker needs cluster.postgresUrl and cluster.redisUrl' }),
  /** Sessions: a live interpreter per session, in a sandbox of its own (POST /v1/sessions). */
  sessions: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** A session with no call for this long ends (a request may ask for less). */
      idleTimeoutMs: z.int().min(1000).max(86_400_000).default(10 * 60_000),
      /** A session ends this long after it was created, however busy. */
      maxLifetimeMs: z.int().min(1000).max(7 * 86_400_000).default(60 * 60_000),
      /** Most live sessions one tenant may hold (across the cluster). */
      maxPerTenant: z.int().min(0).max(100_000).default(8),
      /** Most live sessions one node (embedded, or a worker) holds. */
      maxPerHost: z.int().min(0).max(100_000).default(32),
      /** Most bytes one file download from a session may carry. */
      maxDownloadBytes: z.int().min(1024).max(256 * 1024 * 1024).default(10 * 1024 * 1024),
      /** How long an interrupted call may take to stop before its interpreter is restarted. */
      interruptGraceMs: z.int().min(100).max(60_000).default(2000),
    })
    .prefault({}),
  /** Async executions and batches: kept in the store, run in the background beside interactive runs. */
  jobs: z
    .strictObject({
      /** Most items one batch may hold. */
      maxBatchItems: z.int().min(1).max(100_000).default(1000),
      /** Most async executions and batch items one tenant may have waiting or running at once; more get 429. */
      maxOpenPerTenant: z.int().min(1).max(10_000_000).default(10_000),
      /**
       * Background items this node runs at once. They take slots like any run, so fewer than the
       * node's slots leaves room for interactive runs. 0: the node runs none (an API node that only accepts).
       */
      concurrency: z.int().min(0).max(1024).default(2),
      /** How long a node holds a claimed job before another may take it (renewed while it runs). */
      leaseMs: z.int().min(1000).max(3_600_000).default(30_000),
      /** How often the store is asked for jobs when nothing woke the node. */
      pollMs: z.int().min(50).max(60_000).default(1000),
    })
    .prefault({}),
  /** Webhooks called when an async execution or a batch finishes. */
  webhooks: z
    .strictObject({
      /**
       * Where webhooks may go besides public addresses: host names, IP addresses or CIDR ranges
       * (10.0.0.0/8, 127.0.0.1, hooks.internal). Private, loopback and link-local addresses are
       * refused unless listed here.
       */
      allow: z
        .array(
          z
            .string()
            .min(1)
            .max(253)
            .superRefine((entry, ctx) => {
              const problem = allowEntryProblem(entry);
              if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
            }),
        )
        .max(256)
        .default([]),
      /** Refuse every public address too: only `allow` is called. */
      allowPublic: z.boolean().default(true),
      timeoutMs: z.int().min(100).max(120_000).default(10_000),
      /** Tries before a delivery is given up (the first included); the waits double from 1 s. */
      maxAttempts: z.int().min(1).max(30).default(8),
    })
    .prefault({}),
  feedback: z
    .strictObject({
      /** Most characters of the `feedback` text written for a language model; long output keeps its head and tail. */
      budgetChars: z.int().min(500).max(1_000_000).default(4000),
    })
    .prefault({}),
  tools: z
    .strictObject({
      /** Which tools the agent surfaces offer (MCP, /v1/tools, the LangChain helper's default). */
      enabled: z
        .strictObject({
          execute_python_code: z.boolean().default(true),
          sandbox_info: z.boolean().default(true),
          get_execution: z.boolean().default(false),
          /** Sessions for MCP hosts and function-calling agents; served only where sessions are. */
          python_session_run: z.boolean().default(true),
          python_session_close: z.boolean().default(true),
        })
        .prefault({}),
    })
    .prefault({}),
  /**
   * Hygiene for models, not a security boundary (the container is): imports found in the code's
   * syntax tree before it runs are checked against these lists.
   */
  importPolicy: z
    .strictObject({
      mode: z.enum(['off', 'warn', 'block']).default('warn'),
      dangerousModules: z.array(ModuleName).max(1000).default(DEFAULT_DANGEROUS_MODULES),
      safeModules: z.array(ModuleName).max(1000).default([]),
    })
    .prefault({}),
  /** GET /metrics (the Prometheus text format); an admin key once keys exist. */
  metrics: z
    .strictObject({
      enabled: z.boolean().default(true),
      /**
       * Tenants that get a label of their own on per-tenant metrics; every other tenant is counted as
       * `other`, so a flood of new tenants cannot grow the label set without bound.
       */
      tenantLabels: z.array(z.string().min(1).max(64)).max(100).default([]),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(LOG_LEVELS).default('info'),
      /** json: one object per line; pretty: readable; auto: pretty when stderr is a terminal, else json. */
      format: z.enum(LOG_FORMATS).default('auto'),
    })
    .prefault({}),
});

export type Config = z.infer<typeof ConfigSchema>;
export type LimitSet = z.infer<typeof Limits>;
export type ImportPolicy = Config['importPolicy'];
export type ToolsConfig = Config['tools'];
export type ClusterConfig = Config['cluster'];
