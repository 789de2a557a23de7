// The data model of an execution: what a caller may ask for and what it gets back. These zod
// schemas are the single source for request validation, the OpenAPI document and the typed client.
import { z } from 'zod';
import { TENANT_NAME } from './caller.ts';
import { ERROR_CODES } from './errors.ts';
import { MIN_CPUS, MIN_MEMORY_MB, MIN_TIMEOUT_MS } from './limits.ts';
import { CONTEXT_NAME_RULE, ContextName } from './python-names.ts';

export const EXECUTION_STATUSES = [
  'completed',
  'error',
  'timeout',
  'oom',
  'output_limit',
  'validation_failed',
  'cancelled',
  'internal_error',
] as const;
export const ExecutionStatus = z.enum(EXECUTION_STATUSES);
export type ExecutionStatus = z.infer<typeof ExecutionStatus>;

export const RUNTIMES = ['runc', 'runsc'] as const;
export const RuntimeName = z.enum(RUNTIMES);
export type RuntimeName = z.infer<typeof RuntimeName>;

const noNul = (s: string) => !s.includes('\0');

/** A path of an input file, relative to the work directory. Checked again inside the sandbox. */
export const FilePath = z
  .string()
  .min(1)
  .max(255)
  .refine(noNul, 'must not contain NUL')
  .refine((p) => !p.startsWith('/') && !p.includes('\\'), 'must be a relative path with / separators')
  .refine((p) => p.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..'), 'must not contain empty, . or .. segments')
  .refine((p) => p.split('/').length <= 8, 'must be at most 8 segments deep')
  .refine((p) => p !== 'main.py' && !p.startsWith('.pybox/') && p !== '.pybox' && !p.startsWith('out/') && p !== 'out', 'main.py, out/ and .pybox/ are reserved')
  .refine((p) => /^[\x20-\x7e\u00a0-\uffff]+$/.test(p), 'must be printable');

export const InputFile = z.strictObject({
  path: FilePath,
  content: z.string().max(16 * 1024 * 1024),
  encoding: z.enum(['utf8', 'base64']).default('utf8'),
});
export type InputFile = z.infer<typeof InputFile>;

/**
 * A request to run code. The limits' lower bounds are the floors a sandbox needs to run at all
 * (core/limits.ts): below them a request is refused naming the floor, never silently raised. Their
 * upper bounds are a sanity range; the service then clamps them to the server's maxima, so no
 * request value ever reaches the engine unclamped.
 */
export const ExecutionRequest = z.strictObject({
  code: z.string().min(1).max(1_000_000),
  stdin: z.string().max(1_000_000).optional(),
  args: z.array(z.string().max(4096).refine(noNul, 'must not contain NUL')).max(64).optional(),
  env: z
    .record(
      z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be a valid variable name'),
      z.string().max(32_768).refine(noNul, 'must not contain NUL'),
    )
    .refine((e) => Object.keys(e).length <= 64, 'at most 64 variables')
    .optional(),
  files: z.array(InputFile).max(64).optional(),
  context: z
    .record(ContextName, z.json())
    .optional()
    .describe(`Global variables of the program, each holding its JSON value. Each name must be ${CONTEXT_NAME_RULE}.`),
  timeoutMs: z.int().min(MIN_TIMEOUT_MS, `must be at least ${MIN_TIMEOUT_MS} (ms): the shortest a run can be sure to meet`).max(86_400_000).optional(),
  memoryMb: z.int().min(MIN_MEMORY_MB, `must be at least ${MIN_MEMORY_MB} (MB), the memory a sandbox needs to run at all`).max(1_048_576).optional(),
  cpus: z.number().min(MIN_CPUS, `must be at least ${MIN_CPUS} (CPUs), the share a sandbox needs to start in time`).max(1024).optional(),
});
export type ExecutionRequest = z.infer<typeof ExecutionRequest>;

/** Limits actually applied to a run: the request's (or the defaults), lowered to the caller's maxima. */
export const AppliedLimits = z.object({
  timeoutMs: z.int(),
  memoryMb: z.int(),
  cpus: z.number(),
  outputBytes: z.int(),
});
export type AppliedLimits = z.infer<typeof AppliedLimits>;

export const ExecutionError = z.object({
  type: z.string(),
  message: z.string(),
  line: z.int().nullable(),
  column: z.int().nullable().optional(),
  /** The offending source line and a caret under the column (syntax errors). */
  text: z.string().nullable().optional(),
  caret: z.string().nullable().optional(),
  traceback: z.string().nullable().optional(),
});
export type ExecutionError = z.infer<typeof ExecutionError>;

export const OutputFile = z.object({
  path: z.string(),
  size: z.int(),
  contentBase64: z.string(),
});
export type OutputFile = z.infer<typeof OutputFile>;

export const ExecutionResult = z.object({
  id: z.string(),
  status: ExecutionStatus,
  success: z.boolean(),
  exitCode: z.int().nullable(),
  signal: z.string().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  truncated: z.object({ stdout: z.boolean(), stderr: z.boolean() }),
  durationMs: z.number(),
  /** CPU time (user + system) the code used, when the sandbox could measure it. */
  cpuMs: z.number().nullable().optional(),
  error: ExecutionError.nullable().optional(),
  files: z.array(OutputFile).optional(),
  /** Output files that were not returned (links, odd names, over the count or size cap). */
  filesDropped: z.int().optional(),
  feedback: z.string(),
  runtime: RuntimeName,
  limits: AppliedLimits,
  createdAt: z.string(),
  finishedAt: z.string(),
});
export type ExecutionResult = z.infer<typeof ExecutionResult>;

export const ExecutionSummary = ExecutionResult.omit({ files: true });

export const HistoryQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(20),
  status: ExecutionStatus.optional(),
  /** Opaque cursor from a previous page's `nextCursor`. */
  cursor: z.string().max(200).optional(),
});
export type HistoryQuery = z.infer<typeof HistoryQuery>;

export const HistoryPage = z.object({
  items: z.array(ExecutionResult),
  nextCursor: z.string().nullable(),
});
export type HistoryPage = z.infer<typeof HistoryPage>;

export const Stats = z.object({
  total: z.int(),
  byStatus: z.record(ExecutionStatus, z.int()),
  successRate: z.number().nullable(),
  meanDurationMs: z.number().nullable(),
  p50DurationMs: z.number().nullable(),
  p95DurationMs: z.number().nullable(),
});
export type Stats = z.infer<typeof Stats>;

/** A UTC calendar day, YYYY-MM-DD. */
const UtcDay = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a day as YYYY-MM-DD')
  .refine((d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)) && new Date(`${d}T00:00:00Z`).toISOString().startsWith(d), 'must be a real day');

export const UsageQuery = z.strictObject({
  /** First UTC day counted (inclusive); from the beginning when absent. */
  from: UtcDay.optional(),
  /** Last UTC day counted (inclusive); up to now when absent. */
  to: UtcDay.optional(),
  /** One tenant only. Admin keys may name any tenant; other keys only their own. */
  tenant: z.string().regex(TENANT_NAME, 'must be a tenant name').optional(),
});
export type UsageQuery = z.infer<typeof UsageQuery>;

/** What one tenant used: executions (by status), wall and CPU time, output produced. */
export const TenantUsage = z.object({
  tenant: z.string(),
  executions: z.int(),
  byStatus: z.record(ExecutionStatus, z.int()),
  /** Total wall-clock time of the executions, in milliseconds. */
  wallMs: z.number(),
  /** Total CPU time (user + system) the code used, in milliseconds, where measured. */
  cpuMs: z.number(),
  /** Bytes written to stdout and stderr, counted before the caps (kept or not). */
  outputBytes: z.int(),
});
export type TenantUsage = z.infer<typeof TenantUsage>;

export const UsageReport = z.object({
  from: z.string().nullable(),
  to: z.string().nullable(),
  /** The caller's tenant, or every tenant with usage in the period for an admin key. */
  tenants: z.array(TenantUsage),
});
export type UsageReport = z.infer<typeof UsageReport>;

export const ErrorBody = z.object({
  error: z.object({
    code: z.enum(ERROR_CODES),
    message: z.string(),
    details: z.unknown().optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

/** The limits a run may ask for: the defaults, or the most. */
export const LimitSet = z.object({ timeoutMs: z.int(), memoryMb: z.int(), cpus: z.number() });

/** GET /v1/runtimes: what the sandboxes run and within which limits. */
export const RuntimeInfo = z.object({
  runtime: RuntimeName,
  availableRuntimes: z.array(RuntimeName),
  image: z.string(),
  python: z.string().nullable(),
  packages: z.record(z.string(), z.string()),
  limits: z.object({ defaults: LimitSet, max: LimitSet, outputBytes: z.int(), floodBytes: z.int() }),
});
export type RuntimeInfo = z.infer<typeof RuntimeInfo>;

/** GET /readyz: whether engine, image and store are usable, and which is not. */
export const Readiness = z.object({
  ready: z.boolean(),
  checks: z.object({
    engine: z.boolean(),
    image: z.boolean(),
    store: z.boolean(),
    /** Cluster nodes: Redis, which carries the queue and the limits, answers. */
    queue: z.boolean().optional(),
    /** API nodes: at least one worker is alive. */
    workers: z.boolean().optional(),
  }),
  runtime: RuntimeName.nullable(),
  image: z.string(),
  message: z.string().optional(),
});
export type Readiness = z.infer<typeof Readiness>;

/** GET /v1/tools: the agent tools as OpenAI and Anthropic function-calling definitions. */
export const ToolList = z.object({
  openai: z.array(
    z.object({
      type: z.literal('function'),
      function: z.object({ name: z.string(), description: z.string(), parameters: z.record(z.string(), z.unknown()) }),
    }),
  ),
  anthropic: z.array(z.object({ name: z.string(), description: z.string(), input_schema: z.record(z.string(), z.unknown()) })),
});
export type ToolList = z.infer<typeof ToolList>;

/** One node of the deployment, as it last reported itself. */
export const ClusterNode = z.object({
  nodeId: z.string(),
  role: z.enum(['all', 'api', 'worker']),
  host: z.string(),
  pid: z.int(),
  startedAt: z.string(),
  /** When it last reported; a node silent for three heartbeats is dropped from the list. */
  seenAt: z.string(),
  /** Executions it runs at once (0 for an API node). */
  slots: z.int(),
  running: z.int(),
  runtime: RuntimeName.nullable(),
  /** Its engine answers and has the image (null for an API node). */
  healthy: z.boolean().nullable(),
});
export type ClusterNode = z.infer<typeof ClusterNode>;

/** GET /v1/cluster: the nodes, their slots, and what waits. */
export const ClusterInfo = z.object({
  /** embedded: one all-in-one node on SQLite; cluster: nodes on PostgreSQL and Redis. */
  mode: z.enum(['embedded', 'cluster']),
  nodes: z.array(ClusterNode),
  /** Slots of the live nodes that run executions, and how many are busy. */
  slots: z.int(),
  running: z.int(),
  /** Executions accepted and waiting for a slot. */
  waiting: z.int(),
});
export type ClusterInfo = z.infer<typeof ClusterInfo>;
