// The seams between pybox's parts. core depends on these interfaces only; main.ts wires the real
// implementations (engine/, store/) and tests hand in fakes.
import type { ExecutionRequest, ExecutionResult, HistoryPage, HistoryQuery, Readiness, RuntimeInfo, Stats, ExecutionStatus, TenantUsage, UsageQuery, UsageReport } from './schemas.ts';
import type { SandboxJob, SandboxOutcome } from './sandbox.ts';
import type { Caller, TenantLimits } from './caller.ts';

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
  save(result: ExecutionResult, meter?: ExecutionMeter): void;
  get(id: string, tenant?: string): ExecutionResult | undefined;
  /** Newest first. */
  list(query: { limit: number; status?: ExecutionStatus | undefined; cursor?: string | undefined; tenant?: string | undefined }): HistoryPage;
  stats(tenant?: string): Stats;
  /** Usage per tenant over whole UTC days, for tenants that have any; never pruned with history. */
  usage(query: { tenant?: string | undefined; from?: string | undefined; to?: string | undefined }): TenantUsage[];
  /** Whether the store can be written right now. */
  healthy(): boolean;
  close(): void;
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
  hasKeys(): boolean;
  /** One indexed lookup by the SHA-256 of a key. */
  findKeyByHash(hash: Buffer): StoredApiKey | undefined;
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

/**
 * The one use case of pybox, as the HTTP layer (and later the adapters) see it. The caller comes
 * first: what it may see, how far its limits go and whose usage a run counts toward all follow from it.
 */
export interface ExecutionService {
  execute(caller: Caller, request: ExecutionRequest, opts?: { signal?: AbortSignal }): Promise<ExecutionResult>;
  /** Throws PyboxError('not_found'), for another tenant's id exactly as for an unknown one. */
  get(caller: Caller, id: string): ExecutionResult;
  history(caller: Caller, query: HistoryQuery): HistoryPage;
  stats(caller: Caller): Stats;
  /** Throws PyboxError('not_found') when a non-admin names another tenant. */
  usage(caller: Caller, query: UsageQuery): UsageReport;
  /** The limits shown are the caller's (its tenant's maxima within the server's) when one is given. */
  runtimes(caller?: Caller): Promise<RuntimeInfo>;
  readiness(): Promise<Readiness>;
}
