// The seams between pybox's parts. core depends on these interfaces only; main.ts wires the real
// implementations (engine/, store/) and tests hand in fakes.
import type { AppliedLimits, BatchInfo, BatchItem, ClusterInfo, CompareMode, PendingState, Tolerance, WebhookState, ExecutionRequest, ExecutionResult, HistoryPage, HistoryQuery, Readiness, RuntimeInfo, RuntimeName, Stats, ExecutionStatus, TenantUsage, UsageQuery, UsageReport } from './schemas.ts';
import type { OutputListener, SandboxJob, SandboxOutcome } from './sandbox.ts';
import type { Caller, TenantLimits } from './caller.ts';
import type { RateLimitState } from './errors.ts';

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface Clock {
  now(): number; // epoch milliseconds
}

/** What an execution is metered by, besides its result. */
export interface ExecutionMeter {
  tenant: string;
  /** stdout + stderr bytes the code wrote, kept or not. */
  outputBytes: number;
}

/**
 * Where results are kept, with the usage they add up to. Implemented by store/execution-store.ts
 * over SQLite. `tenant` scopes a read to one tenant; absent, it reads every tenant's (admin).
 */
export interface ExecutionStore {
  /** Keeps the result and adds it to its tenant's usage, in one transaction. */
  save(result: ExecutionResult, meter?: ExecutionMeter): Promise<void>;
  get(id: string, tenant?: string): Promise<ExecutionResult | undefined>;
  /** Newest first. */
  list(query: { limit: number; status?: ExecutionStatus | undefined; cursor?: string | undefined; tenant?: string | undefined }): Promise<HistoryPage>;
  stats(tenant?: string): Promise<Stats>;
  /** Usage per tenant over whole UTC days, for tenants that have any; never pruned with history. */
  usage(query: { tenant?: string | undefined; from?: string | undefined; to?: string | undefined }): Promise<TenantUsage[]>;
  /** Whether the store can be written right now. */
  healthy(): Promise<boolean>;
  close(): Promise<void>;
}

/** An API key as the store keeps it: its hash (never the key), with its tenant's limits. */
export interface StoredApiKey {
  id: string;
  tenant: string;
  admin: boolean;
  hash: Buffer;
  revokedAt: string | null;
  limits: TenantLimits;
}

/** What authentication needs of the key store. Implemented by store/tenant-store.ts. */
export interface ApiKeyLookup {
  /** Whether any key was ever created (revoked ones included). */
  hasKeys(): Promise<boolean>;
  /** One indexed lookup by the SHA-256 of a key. */
  findKeyByHash(hash: Buffer): Promise<StoredApiKey | undefined>;
}

export interface TenantRecord {
  name: string;
  limits: TenantLimits;
  createdAt: string;
}

export interface KeyInfo {
  id: string;
  tenant: string;
  admin: boolean;
  createdAt: string;
  revokedAt: string | null;
}

/**
 * Tenants and their keys, as the `keys` commands manage them. Keys are kept as their SHA-256 hash
 * only, and revoked, never deleted. Every node reads the same store on every request, so a key
 * created or revoked anywhere takes effect everywhere at once.
 */
export interface TenantStore extends ApiKeyLookup {
  tenant(name: string): Promise<TenantRecord | undefined>;
  tenants(): Promise<TenantRecord[]>;
  /**
   * Creates a key (by its hash) for a tenant, creating the tenant if it is new. Limits given here
   * replace the tenant's; limits left out keep their current value (none, for a new tenant).
   */
  createKey(opts: { id: string; tenant: string; admin: boolean; hash: Buffer; limits: Partial<TenantLimits> }): Promise<{ key: KeyInfo; tenant: TenantRecord }>;
  keys(): Promise<KeyInfo[]>;
  key(id: string): Promise<KeyInfo | undefined>;
  /** The key's id, by its id or by the key itself (its hash); undefined when there is no such key. */
  resolveKeyId(idOrHash: { id: string } | { hash: Buffer }): Promise<string | undefined>;
  /** Revokes a key at once. False if it already was. */
  revokeKey(id: string): Promise<boolean>;
  close(): Promise<void>;
}

/** What a rate limit decided for one request. */
export interface RateDecision {
  allowed: boolean;
  state: RateLimitState;
  /** Seconds until one more request is allowed, when this one was not. */
  retryAfterS: number;
}

/** Requests per minute per key: in this process (one node) or in Redis (a cluster). */
export interface RequestLimiter {
  /** Takes one request from `key`'s bucket if there is one to take. */
  take(key: string, perMinute: number): Promise<RateDecision>;
}

export type { Readiness, RuntimeInfo };

/** Runs sandbox jobs: engine/ (a local Docker engine and its warm pool) provides the real one. */
export interface Sandboxes {
  run(job: SandboxJob): Promise<SandboxOutcome>;
}

/** What readiness needs to know of the engine. */
export interface EngineProbe {
  ping(): Promise<boolean>;
  imageExists(image: string): Promise<boolean>;
}

export interface ExecuteOptions {
  /** Aborted when the caller no longer wants the result: the execution is cancelled. */
  signal?: AbortSignal | undefined;
  /** The request's id (core/request-id.ts), carried into the execution's log lines on every node. */
  requestId?: string | undefined;
  /**
   * A job's execution (async or batch item): it has its id and acceptance time already, and yields
   * to interactive runs (AcceptedExecution.background).
   */
  job?: { id: string; createdAtMs: number } | undefined;
  /**
   * Told of the code's output as it is produced (streaming): each stream's bytes up to
   * limits.outputBytes, in order, all of it before the result. Bytes: a chunk may end inside a
   * UTF-8 character. Must not throw. Nothing is told for test cases (their output is in the result).
   */
  onOutput?: OutputListener | undefined;
}

/**
 * The one use case of pybox, as the HTTP layer (and later the adapters) see it. The caller comes
 * first: what it may see, how far its limits go and whose usage a run counts toward all follow from it.
 */
export interface ExecutionService {
  execute(caller: Caller, request: ExecutionRequest, opts?: ExecuteOptions): Promise<ExecutionResult>;
  /** Throws PyboxError('not_found'), for another tenant's id exactly as for an unknown one. */
  get(caller: Caller, id: string): Promise<ExecutionResult>;
  history(caller: Caller, query: HistoryQuery): Promise<HistoryPage>;
  stats(caller: Caller): Promise<Stats>;
  /** Throws PyboxError('not_found') when a non-admin names another tenant. */
  usage(caller: Caller, query: UsageQuery): Promise<UsageReport>;
  /** The limits shown are the caller's (its tenant's maxima within the server's) when one is given. */
  runtimes(caller?: Caller): Promise<RuntimeInfo>;
  readiness(): Promise<Readiness>;
}

/**
 * An execution an API node accepted: validated, clamped and given an id. It is all a node needs to
 * run and record it, and it travels as it is (files as bytes) to a worker. The image and runtime
 * are the running node's, not the accepting one's.
 */
export interface AcceptedExecution {
  job: Omit<SandboxJob, 'image' | 'runtime' | 'signal' | 'recorded'>;
  /** The limits as applied (the job's, with the output cap), as the result reports them. */
  limits: AppliedLimits;
  tenant: string;
  /** The tenant's most executions in flight (running or waiting); null for no ceiling. */
  maxInFlight: number | null;
  createdAtMs: number;
  /** The id of the request that asked for it, for the log lines of whichever node runs it. */
  requestId?: string | undefined;
  /** The test cases' expectations (job.tests holds their inputs), index for index. */
  tests?: TestSpec[] | undefined;
  /**
   * A background item (async execution or batch item): it yields to interactive runs where the
   * dispatch can order its queue (the cluster's queue gives it a lower priority).
   */
  background?: boolean | undefined;
  /**
   * Settles once the result has been handed on beyond the dispatch (a worker's: BullMQ took it).
   * The sandbox's clean-up waits for it as for the recording (SandboxJob.recorded, bounded).
   */
  handedOver?: Promise<unknown>;
}

/** What a test case expects, as core judges it (core/verdicts.ts); its inputs go to the sandbox. */
export interface TestSpec {
  /** The case's name as shown: its own, or `case <n>`. */
  name: string;
  expectedStdout?: string | undefined;
  expectedExitCode?: number | undefined;
  compare: CompareMode;
  tolerance?: Tolerance | undefined;
}

/** Why an execution was cancelled: the abort reason of the signals handed to Dispatch.submit. */
export type CancelReason = 'client' | 'shutdown';

/**
 * Where accepted executions run and are recorded: this node's sandboxes (core/local-dispatch.ts)
 * or, in a cluster, a queue to the workers (cluster/queue-dispatch.ts).
 */
export interface Dispatch {
  /**
   * Runs the execution, records its result and resolves with it, cancelled ones included. `waiting`
   * aborting before the execution started takes it out of the queue; `running` aborting stops it.
   * Their abort reason is a CancelReason. Rejects with a PyboxError when it cannot be taken
   * (queue_full, rate_limited for the tenant's concurrency, queue_unavailable).
   */
  submit(execution: AcceptedExecution, signals: { waiting: AbortSignal; running: AbortSignal }, events?: DispatchEvents): Promise<ExecutionResult>;
}

/** What a dispatch tells its caller while an execution goes through it, when it knows. */
export interface DispatchEvents {
  /** A slot was granted and the sandbox is being asked to run it: the wait in the queue is over. */
  started?(): void;
  /** The code's output as it is produced (ExecuteOptions.onOutput), wherever it runs. */
  output?: OutputListener | undefined;
}

/** What the executions' side of a node offers: the runtime they get, and whether it is ready. */
export interface ExecutionBackend {
  /** The runtime, image and Python the executions get (probed once, then kept). */
  describe(opts?: { signal?: AbortSignal }): Promise<BackendInfo>;
  /** The runtime and image as known now, without probing anything (null: no worker seen yet). */
  identity(): { runtime: RuntimeName | null; image: string };
  /** Whether executions can run now, part by part; `message` says what is missing. */
  checks(): Promise<{ checks: BackendChecks; message?: string }>;
}

export interface BackendInfo {
  runtime: RuntimeName;
  availableRuntimes: RuntimeName[];
  image: string;
  python: string | null;
  packages: Record<string, string>;
}

/** engine and image always; queue and workers on cluster nodes. */
export interface BackendChecks {
  engine: boolean;
  image: boolean;
  queue?: boolean;
  workers?: boolean;
}

/** GET /v1/cluster: what the deployment is made of (one embedded node, or the cluster's nodes). */
export interface ClusterStatus {
  status(): Promise<ClusterInfo>;
}

/**
 * What a node's parts report as they work, for its metrics (src/metrics turns them into Prometheus
 * series). Every method is cheap, synchronous and never throws; NO_OBSERVER is the default where
 * metrics are off or a part is built without one.
 */
export interface Observer {
  /** An execution this node ran (or dropped from its queue) ended; its queue wait counts from acceptance. */
  executionFinished(e: { status: ExecutionStatus; runtime: RuntimeName; durationMs: number; queueWaitMs: number }): void;
  /** A run asked the warm pool for a sandbox: hit when a ready one was there. */
  poolTake(runtime: RuntimeName, hit: boolean): void;
  /** A sandbox's start was decided: its runner said it is ready, or it could not start. */
  sandboxStart(runtime: RuntimeName, ok: boolean): void;
  /** A call to the container engine failed; `operation` is one of a fixed set of names. */
  engineError(operation: string, unavailable: boolean): void;
  /** A request was answered; `route` is the route's pattern (or `unmatched`), never the raw path. */
  httpRequest(r: { route: string; method: string; status: number; durationMs: number }): void;
  /** A tenant was refused by its request-rate limit. */
  rateLimited(tenant: string): void;
}

export const NO_OBSERVER: Observer = {
  executionFinished() {},
  poolTake() {},
  sandboxStart() {},
  engineError() {},
  httpRequest() {},
  rateLimited() {},
};

/** The node's metrics as an exposition (GET /metrics). */
export interface MetricsExposition {
  contentType: string;
  render(): Promise<string>;
}

/** An async execution or a batch item, kept until it has run: what it needs to run after a restart too. */
export interface StoredJob {
  /** The execution's id: its result is saved under it in the ExecutionStore. */
  id: string;
  tenant: string;
  /** The batch it belongs to, and its place there; null and 0 for an async execution. */
  batchId: string | null;
  index: number;
  request: ExecutionRequest;
  /** The id of the HTTP request that submitted it, for the log lines. */
  requestId: string | null;
  /** An async execution's own webhook (a batch has one for the whole batch). */
  webhookUrl: string | null;
  createdAtMs: number;
}

/** A batch as kept: its counts are updated as its items complete. */
export type BatchRecord = BatchInfo & { tenant: string };

/**
 * Async executions and batches, kept so that a restart loses none (store/ over SQLite and
 * PostgreSQL). A job is queued, then claimed by a node for a lease (running), then done. A node that
 * dies holding jobs lets its leases run out, and any node claims them again.
 */
export interface JobStore {
  /** Adds a batch and all its items (queued), in one transaction. */
  createBatch(batch: { id: string; tenant: string; label: string | null; webhookUrl: string | null; createdAtMs: number }, items: StoredJob[]): Promise<void>;
  /** Adds one async execution (queued). */
  createJob(job: StoredJob): Promise<void>;
  /**
   * Takes up to `max` jobs for `owner` until nowMs + leaseMs: queued ones whose notBefore has come,
   * and running ones whose lease ran out. Fair: tenants with the fewest running jobs first, each
   * tenant's oldest first, no tenant in `skipTenants`.
   */
  claim(opts: { owner: string; max: number; nowMs: number; leaseMs: number; skipTenants?: string[] | undefined }): Promise<StoredJob[]>;
  /** Extends the leases `owner` holds on these jobs. */
  renew(owner: string, ids: string[], untilMs: number): Promise<void>;
  /** Gives a claimed job back (its tenant had no room): queued again, not claimed before notBeforeMs. */
  release(id: string, notBeforeMs: number): Promise<void>;
  /** Jobs `owner` held when it stopped (a restart of the same node): queued again at once. Returns how many. */
  requeueOwned(owner: string): Promise<number>;
  /**
   * The job's result is saved (ExecutionStore, same id): the job is done, its status counted in its
   * batch. Returns the batch when this was its last item (exactly once per batch), else null.
   * Completing a job that is already done changes nothing and returns null.
   */
  complete(id: string, status: ExecutionStatus, nowMs: number): Promise<{ batchFinished: BatchRecord | null }>;
  /** How many of the tenant's jobs are not done yet (queued or running): what its cap counts. */
  openJobs(tenant: string): Promise<number>;
  /** A job not done yet, as its tenant (or an admin: tenant undefined) may see it. */
  pending(id: string, tenant?: string): Promise<{ state: PendingState; batchId: string | null; createdAt: string } | undefined>;
  batch(id: string, tenant?: string): Promise<BatchRecord | undefined>;
  /** A page of the batch's items in index order, done ones with their result (without files). */
  batchItems(id: string, query: { limit: number; cursor?: string | undefined }): Promise<{ items: BatchItem[]; nextCursor: string | null }>;
  /** Items completed after `afterSeq` (each completion gets the batch's next seq, from 1), in seq order. */
  batchEvents(id: string, afterSeq: number, limit: number): Promise<Array<{ seq: number; item: BatchItem }>>;
  /** The tenant's batches (all for undefined), newest first. */
  listBatches(query: { tenant?: string | undefined; limit: number; cursor?: string | undefined }): Promise<{ items: BatchInfo[]; nextCursor: string | null }>;
  /**
   * Takes the batch's queued items out of the queue for `owner` (they become running, leased), so
   * the caller can record them as cancelled and complete them; marks the batch as cancelled once
   * complete. Items already running go on.
   */
  cancelBatch(id: string, owner: string, nowMs: number, leaseMs: number): Promise<StoredJob[]>;
  /** Sets how the batch's webhook delivery went. */
  setBatchWebhook(id: string, state: WebhookState): Promise<void>;
}

/** One webhook call to make (or made), kept so that retries survive a restart. */
export interface WebhookDelivery {
  id: string;
  tenant: string;
  url: string;
  /** The batch whose delivery state follows this one, if any. */
  batchId: string | null;
  /** The JSON body, as signed and sent. */
  body: string;
  attempts: number;
  nextAtMs: number;
}

/** A delivery as the outbox keeps it: where it stands, and what the last try got. */
export type StoredDelivery = WebhookDelivery & { state: WebhookState; lastError: string | null; lastStatus: number | null };

/** The webhook calls waiting or retrying (an outbox); any node may claim due ones for a lease. */
export interface WebhookOutbox {
  enqueue(delivery: Omit<WebhookDelivery, 'attempts' | 'nextAtMs'>, nowMs: number): Promise<void>;
  /** Up to `max` deliveries due at nowMs, leased to `owner` for leaseMs. */
  claimDue(owner: string, nowMs: number, max: number, leaseMs: number): Promise<WebhookDelivery[]>;
  /** Answered 2xx: done. */
  delivered(id: string, nowMs: number, httpStatus: number): Promise<void>;
  /** Failed: tried again at nextAtMs, or given up for good when null. */
  failed(id: string, nowMs: number, outcome: { nextAtMs: number | null; error: string; httpStatus: number | null }): Promise<void>;
  get(id: string): Promise<StoredDelivery | undefined>;
}

/** Each tenant's webhook signing secret, made on first use. */
export interface WebhookSecrets {
  secret(tenant: string): Promise<Buffer>;
  /** A new secret replaces the old at once. */
  rotate(tenant: string): Promise<Buffer>;
}
