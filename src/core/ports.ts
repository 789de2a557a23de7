// The seams between pybox's parts. core depends on these interfaces only; main.ts wires the real
// implementations (engine/, store/) and tests hand in fakes.
import type { ExecutionRequest, ExecutionResult, HistoryPage, HistoryQuery, RuntimeName, Stats, ExecutionStatus } from './schemas.ts';
import type { LimitSet } from '../config/schema.ts';

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface Clock {
  now(): number; // epoch milliseconds
}

/** Where results are kept. Implemented by store/execution-store.ts over SQLite. */
export interface ExecutionStore {
  save(result: ExecutionResult): void;
  get(id: string): ExecutionResult | undefined;
  /** Newest first. */
  list(query: { limit: number; status?: ExecutionStatus | undefined; cursor?: string | undefined }): HistoryPage;
  stats(): Stats;
  /** Whether the store can be written right now. */
  healthy(): boolean;
  close(): void;
}

export interface RuntimeInfo {
  runtime: RuntimeName;
  availableRuntimes: RuntimeName[];
  image: string;
  python: string | null;
  packages: Record<string, string>;
  limits: { defaults: LimitSet; max: LimitSet; outputBytes: number; floodBytes: number };
}

export interface Readiness {
  ready: boolean;
  checks: { engine: boolean; image: boolean; store: boolean };
  runtime: RuntimeName | null;
  image: string;
  message?: string;
}

/** The one use case of pybox, as the HTTP layer (and later the adapters) see it. */
export interface ExecutionService {
  execute(request: ExecutionRequest, opts?: { signal?: AbortSignal }): Promise<ExecutionResult>;
  /** Throws PyboxError('not_found'). */
  get(id: string): ExecutionResult;
  history(query: HistoryQuery): HistoryPage;
  stats(): Stats;
  runtimes(): Promise<RuntimeInfo>;
  readiness(): Promise<Readiness>;
}
