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

/** Arguments passed to the program (sys.argv[1:]). */
const Args = z.array(z.string().max(4096).refine(noNul, 'must not contain NUL')).max(64);

/** How a test case's stdout is compared with its expected stdout (core/verdicts.ts). */
export const COMPARE_MODES = ['exact', 'trimmed', 'tokens', 'float', 'regex'] as const;
export const CompareMode = z
  .enum(COMPARE_MODES)
  .describe(
    'exact: byte for byte; trimmed (default): trailing whitespace of each line, \\r of \\r\\n and final newlines ignored; tokens: whitespace-separated tokens; float: tokens, numbers within the tolerance, other tokens equal; regex: expectedStdout is a regular expression (RE2 syntax, linear time) the whole output must match, final newlines ignored',
  );
export type CompareMode = z.infer<typeof CompareMode>;

/** For `float`: two numbers agree when |a-b| <= max(absolute, relative * max(|a|, |b|)). */
export const Tolerance = z.strictObject({
  relative: z.number().min(0).max(1).default(1e-6),
  absolute: z.number().min(0).max(1e12).default(1e-9),
});
export type Tolerance = z.infer<typeof Tolerance>;

/** Most test cases one execution may carry. */
export const MAX_TESTS = 1000;

/**
 * One test case: the program run again, as a fresh process in a fresh work directory, with this
 * input, and its output compared with the expectation. With no expectation at all, a case passes
 * when the program exits 0.
 */
export const TestCase = z.strictObject({
  name: z.string().min(1).max(200).regex(/^[^\p{Cc}]+$/u, 'must be printable').optional(),
  stdin: z.string().max(1_000_000).optional(),
  args: Args.optional(),
  /** Input files of this case only, laid over the execution's own `files`. */
  files: z.array(InputFile).max(64).optional(),
  expectedStdout: z.string().max(1_000_000).optional(),
  expectedExitCode: z.int().min(0).max(255).optional(),
  compare: CompareMode.optional(),
  tolerance: Tolerance.optional(),
  /** This case's own time limit; the execution's `timeoutMs` when absent. */
  timeoutMs: z.int().min(MIN_TIMEOUT_MS, `must be at least ${MIN_TIMEOUT_MS} (ms): the shortest a run can be sure to meet`).max(86_400_000).optional(),
});
export type TestCase = z.infer<typeof TestCase>;

/**
 * A request to run code. The limits' lower bounds are the floors a sandbox needs to run at all
 * (core/limits.ts): below them a request is refused naming the floor, never silently raised. Their
 * upper bounds are a sanity range; the service then clamps them to the server's maxima, so no
 * request value ever reaches the engine unclamped.
 */
export const ExecutionRequest = z.strictObject({
  code: z.string().min(1).max(1_000_000),
  stdin: z.string().max(1_000_000).optional(),
  args: Args.optional(),
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
  /**
   * Test cases: the program is run once per case (stdin, args, files of the case) instead of once,
   * each case with its own time limit, and each gets a verdict. `stdin` and `args` are then given
   * per case (a request with both is refused); `files` are given to every case.
   */
  tests: z.array(TestCase).min(1).max(MAX_TESTS).optional(),
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

/**
 * A test case's verdict: passed or failed (the program ran and its output or exit code was or was
 * not the expected one), the program's own end (error: it raised or exited non-zero when no exit
 * code was expected; timeout; oom; output_limit), or not_run (the program could not run at all, or
 * the execution ended before the case's turn).
 */
export const TEST_VERDICTS = ['passed', 'failed', 'error', 'timeout', 'oom', 'output_limit', 'not_run'] as const;
export const TestVerdict = z.enum(TEST_VERDICTS);
export type TestVerdict = z.infer<typeof TestVerdict>;

/** Where a failed case's output first differs from the expectation (lines counted from 1). */
export const TestMismatch = z.object({
  /** The first differing line; null when the comparison is not by line (regex). */
  line: z.int().nullable(),
  expected: z.string(),
  actual: z.string(),
  /** What differs, in words: "exit code 1, expected 0", "token 3: 0.5 is not within 1e-6 of 0.25". */
  message: z.string(),
});
export type TestMismatch = z.infer<typeof TestMismatch>;

export const TestResult = z.object({
  index: z.int(),
  /** The case's name, or `case <index+1>`. */
  name: z.string(),
  verdict: TestVerdict,
  exitCode: z.int().nullable(),
  signal: z.string().nullable(),
  /** The case's output, capped at limits.testOutputBytes each (the comparison saw up to outputBytes). */
  stdout: z.string(),
  stderr: z.string(),
  truncated: z.object({ stdout: z.boolean(), stderr: z.boolean() }),
  durationMs: z.number(),
  error: ExecutionError.nullable().optional(),
  mismatch: TestMismatch.nullable().optional(),
  /** Why a case was not run, or what else a reader should know. */
  message: z.string().optional(),
});
export type TestResult = z.infer<typeof TestResult>;

/** Counts of the cases by verdict. */
export const TestSummary = z.object({
  total: z.int(),
  passed: z.int(),
  failed: z.int(),
  error: z.int(),
  timeout: z.int(),
  oom: z.int(),
  output_limit: z.int(),
  not_run: z.int(),
});
export type TestSummary = z.infer<typeof TestSummary>;

/**
 * A rich output of a run: a figure (matplotlib, `plt.show()` or still open at the end) as a PNG,
 * or, in a session, the value of a call's last expression as a notebook shows it (text/plain, and
 * text/html or text/markdown for objects that provide them, such as pandas DataFrames).
 * `data` is base64 for images, text otherwise.
 */
export const OUTPUT_TYPES = ['image/png', 'text/plain', 'text/html', 'text/markdown'] as const;
export const ResultOutput = z.object({
  type: z.enum(OUTPUT_TYPES),
  data: z.string(),
  /** figure: drawn with matplotlib; result: the value of the last expression (sessions). */
  kind: z.enum(['figure', 'result']),
});
export type ResultOutput = z.infer<typeof ResultOutput>;

/** Where a session call ran, and what it did to the session's state. */
export const SessionCallInfo = z.object({
  sessionId: z.string(),
  /** 1 for the session's first call. */
  call: z.int(),
  /**
   * The interpreter was restarted during this call (it did not stop when interrupted, or it was
   * killed): variables and imports from earlier calls are gone; files in the work directory stay.
   */
  stateLost: z.boolean(),
  /** The session's sandbox is gone (it ran out of memory as a whole, or failed): the session has ended. */
  ended: z.boolean(),
});
export type SessionCallInfo = z.infer<typeof SessionCallInfo>;

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
  /**
   * With test cases: one entry per case, in order. `status` is then `completed` when every case was
   * run and judged (passed or not), and `success` is true only when every case passed.
   */
  tests: z.array(TestResult).optional(),
  summary: TestSummary.optional(),
  /** Figures, and in a session the last expression's value; capped (limits.outputsMax, outputsMaxBytes). */
  outputs: z.array(ResultOutput).optional(),
  /** Rich outputs that were not returned (over the count or size cap, or not valid). */
  outputsDropped: z.int().optional(),
  /** Present for a call in a session. */
  session: SessionCallInfo.optional(),
  /**
   * The code that ran, as kept with the result: in GET /v1/executions/{id}, not in the answer to
   * the run itself (whose caller has it) nor in history pages.
   */
  code: z.string().optional(),
  feedback: z.string(),
  runtime: RuntimeName,
  limits: AppliedLimits,
  createdAt: z.string(),
  finishedAt: z.string(),
});
export type ExecutionResult = z.infer<typeof ExecutionResult>;

export const ExecutionSummary = ExecutionResult.omit({ files: true, outputs: true, code: true });

/**
 * Where pybox POSTs when an async execution or a batch finishes. Only addresses the operator allows
 * (webhooks.allow) are called; by default nothing private, loopback or link-local.
 */
export const WebhookTarget = z.strictObject({
  url: z
    .string()
    .max(2048)
    .regex(/^https?:\/\/[^\s/?#@]+(?:[/?#][^\s]*)?$/, 'must be an http(s) URL without credentials'),
});
export type WebhookTarget = z.infer<typeof WebhookTarget>;

/** POST /v1/executions?async=true: the request, and optionally where to say it is done. */
export const AsyncExecutionRequest = ExecutionRequest.extend({ webhook: WebhookTarget.optional() });
export type AsyncExecutionRequest = z.infer<typeof AsyncExecutionRequest>;

/** An execution accepted and not finished yet (async, or an item of a batch). */
export const PENDING_STATES = ['queued', 'running'] as const;
export const PendingState = z.enum(PENDING_STATES);
export type PendingState = z.infer<typeof PendingState>;

/** 202 of POST /v1/executions?async=true, and of GET /v1/executions/{id} until it is done. */
export const PendingExecution = z.object({
  id: z.string(),
  state: PendingState,
  /** The batch it belongs to, if any. */
  batchId: z.string().nullable(),
  createdAt: z.string(),
});
export type PendingExecution = z.infer<typeof PendingExecution>;

/** Most items a batch may hold, whatever the server's configuration says. */
export const MAX_BATCH_ITEMS = 100_000;

/** POST /v1/batches. The server refuses more items than its jobs.maxBatchItems. */
export const BatchRequest = z.strictObject({
  items: z.array(ExecutionRequest).min(1).max(MAX_BATCH_ITEMS),
  webhook: WebhookTarget.optional(),
  /** A name of the caller's choosing, shown back. */
  label: z.string().min(1).max(200).regex(/^[^\p{Cc}]+$/u, 'must be printable').optional(),
});
export type BatchRequest = z.infer<typeof BatchRequest>;

/** running: items wait or run; completed: every item has its result; cancelled: DELETE ended it early (every item still has a result). */
export const BATCH_STATES = ['running', 'completed', 'cancelled'] as const;
export const BatchState = z.enum(BATCH_STATES);
export type BatchState = z.infer<typeof BatchState>;

export const WEBHOOK_STATES = ['pending', 'delivered', 'failed'] as const;
export const WebhookState = z.enum(WEBHOOK_STATES);
export type WebhookState = z.infer<typeof WebhookState>;

export const BatchInfo = z.object({
  id: z.string(),
  state: BatchState,
  label: z.string().nullable(),
  total: z.int(),
  /** Items with a result. */
  done: z.int(),
  /** Results so far, by status. */
  byStatus: z.record(ExecutionStatus, z.int()),
  createdAt: z.string(),
  finishedAt: z.string().nullable(),
  /** The webhook and how its delivery went; null without one. */
  webhook: z.object({ url: z.string(), state: WebhookState }).nullable(),
});
export type BatchInfo = z.infer<typeof BatchInfo>;

export const BatchItem = z.object({
  index: z.int(),
  executionId: z.string(),
  state: z.enum(['queued', 'running', 'done']),
  /** The result, once done (output files left out: GET /v1/executions/{executionId} has them). */
  result: ExecutionSummary.nullable(),
});
export type BatchItem = z.infer<typeof BatchItem>;

/** A page's query: how many, and where the previous page ended (its opaque `nextCursor`). */
const pageQuery = (defaultLimit: number) =>
  z.strictObject({
    limit: z.coerce.number().int().min(1).max(500).default(defaultLimit),
    cursor: z.string().max(200).optional(),
  });

export const BatchItemsQuery = pageQuery(100);
export type BatchItemsQuery = z.infer<typeof BatchItemsQuery>;

/** GET /v1/batches/{id}: the batch and a page of its items, in index order. */
export const BatchPage = BatchInfo.extend({ items: z.array(BatchItem), nextCursor: z.string().nullable() });
export type BatchPage = z.infer<typeof BatchPage>;

/** One event of GET /v1/batches/{id}/events (`event: item`); `event: done` carries the BatchInfo. */
export const BatchItemEvent = z.object({ batchId: z.string(), seq: z.int(), item: BatchItem });
export type BatchItemEvent = z.infer<typeof BatchItemEvent>;

/** GET /v1/batches: the caller's batches, newest first (every tenant's for an admin key). */
export const BatchListQuery = pageQuery(20);
export type BatchListQuery = z.infer<typeof BatchListQuery>;

export const BatchList = z.object({ items: z.array(BatchInfo), nextCursor: z.string().nullable() });
export type BatchList = z.infer<typeof BatchList>;

/** GET /v1/webhooks/secret: the key the tenant's webhooks are signed with (HMAC-SHA256), as `whsec_` and base64url. */
export const WebhookSecret = z.object({ secret: z.string() });
export type WebhookSecret = z.infer<typeof WebhookSecret>;

/** What a webhook POSTs (JSON), signed with the tenant's secret (see the README). */
export const WebhookEvent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('execution.finished'), id: z.string(), createdAt: z.string(), execution: ExecutionSummary }),
  z.object({ type: z.literal('batch.finished'), id: z.string(), createdAt: z.string(), batch: BatchInfo }),
]);
export type WebhookEvent = z.infer<typeof WebhookEvent>;

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
  /** Sessions it holds, and the most it may hold (absent for a node that holds none). */
  sessions: z.object({ live: z.int(), max: z.int() }).optional(),
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

// ---- sessions ------------------------------------------------------------------------------------

/**
 * POST /v1/sessions: a live Python interpreter in a sandbox of its own, hardened as an execution's,
 * whose variables, imports and files persist from one call to the next. Limits are clamped to the
 * caller's maxima as an execution's are; `timeoutMs` is each call's default time limit.
 */
export const SessionRequest = z.strictObject({
  timeoutMs: ExecutionRequest.shape.timeoutMs,
  memoryMb: ExecutionRequest.shape.memoryMb,
  cpus: ExecutionRequest.shape.cpus,
  env: ExecutionRequest.shape.env,
  /** Files put in the work directory before the first call. */
  files: ExecutionRequest.shape.files,
  /** Ends the session after this long without a call (within the server's sessions.idleTimeoutMs maximum). */
  idleTimeoutMs: z.int().min(1000).max(86_400_000).optional(),
});
export type SessionRequest = z.infer<typeof SessionRequest>;

export const SESSION_STATES = ['active', 'ended'] as const;
export const SessionState = z.enum(SESSION_STATES);
export type SessionState = z.infer<typeof SessionState>;

/** Why a session ended: deleted by its caller, idle too long, past its lifetime, its sandbox lost, the server stopping. */
export const SESSION_END_REASONS = ['deleted', 'idle', 'lifetime', 'failed', 'shutdown'] as const;
export const SessionEndReason = z.enum(SESSION_END_REASONS);
export type SessionEndReason = z.infer<typeof SessionEndReason>;

export const SessionInfo = z.object({
  id: z.string(),
  state: SessionState,
  runtime: RuntimeName,
  /** Each call's limits (timeoutMs is the default a call may lower or raise within the maximum). */
  limits: AppliedLimits,
  idleTimeoutMs: z.int(),
  createdAt: z.string(),
  lastUsedAt: z.string(),
  /** When it ends if left idle from now on, and when it ends at the latest. */
  idleExpiresAt: z.string(),
  expiresAt: z.string(),
  /** Calls made so far. */
  calls: z.int(),
  endedReason: SessionEndReason.nullable(),
});
export type SessionInfo = z.infer<typeof SessionInfo>;

export const SessionList = z.object({ items: z.array(SessionInfo) });
export type SessionList = z.infer<typeof SessionList>;

/** POST /v1/sessions/{id}/executions: code run in the session's live interpreter. */
export const SessionCallRequest = z.strictObject({
  code: ExecutionRequest.shape.code,
  stdin: ExecutionRequest.shape.stdin,
  /** Written to the work directory before the code runs (replacing files of the same path). */
  files: ExecutionRequest.shape.files,
  timeoutMs: ExecutionRequest.shape.timeoutMs,
});
export type SessionCallRequest = z.infer<typeof SessionCallRequest>;

/** PUT /v1/sessions/{id}/files: files written to the session's work directory. */
export const SessionFilesUpload = z.strictObject({ files: z.array(InputFile).min(1).max(64) });
export type SessionFilesUpload = z.infer<typeof SessionFilesUpload>;

export const SessionFileEntry = z.object({ path: z.string(), size: z.int() });
export const SessionFileList = z.object({ files: z.array(SessionFileEntry), truncated: z.boolean() });
export type SessionFileList = z.infer<typeof SessionFileList>;

// ---- streaming ---------------------------------------------------------------------------------

/**
 * With `Accept: text/event-stream`, POST /v1/executions and POST /v1/sessions/{id}/executions
 * answer with server-sent events: `stdout` and `stderr` events (data: {"text": "..."}) as output
 * is produced, up to limits.outputBytes per stream, then one `result` event (data: the
 * ExecutionResult) last; or one `error` event (data: the ErrorBody) when the run could not be done.
 */
export const STREAM_EVENTS = ['stdout', 'stderr', 'result', 'error'] as const;
export const OutputChunk = z.object({ text: z.string() });
export type OutputChunk = z.infer<typeof OutputChunk>;
