// A stand-in ExecutionService for the HTTP tests: records what it was asked, answers with canned,
// schema-valid values, and throws whatever a test sets in `failWith`.
import { createApp, type AppDeps } from '../../src/app.ts';
import { EXECUTION_STATUSES, type ExecutionStatus } from '../../src/core/schemas.ts';
import { NO_TENANT_LIMITS, type Caller, type TenantLimits } from '../../src/core/caller.ts';
import type { ApiKeyLookup, Clock, ExecuteOptions, ExecutionService, Logger, Readiness, RuntimeInfo, StoredApiKey } from '../../src/core/ports.ts';
import { hashApiKey, newApiKey } from '../../src/tenancy/keys.ts';
import { ExecutionResult, Stats, type ExecutionRequest, type HistoryPage, type HistoryQuery, type UsageQuery, type UsageReport } from '../../src/core/schemas.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { RateLimiter } from '../../src/tenancy/rate-limiter.ts';

export function sampleResult(overrides: Partial<ExecutionResult> = {}): ExecutionResult {
  return ExecutionResult.parse({
    id: 'exec-1',
    status: 'completed',
    success: true,
    exitCode: 0,
    signal: null,
    stdout: 'hello\n',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 1234,
    error: null,
    feedback: 'The code ran successfully in 1.23 s (exit code 0).',
    runtime: 'runc',
    limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 },
    createdAt: '2024-01-01T00:00:00.000Z',
    finishedAt: '2024-01-01T00:00:01.234Z',
    ...overrides,
  });
}

export const sampleStats: Stats = Stats.parse({
  total: 10,
  byStatus: { completed: 7, error: 2, timeout: 1, oom: 0, output_limit: 0, validation_failed: 0, cancelled: 0, internal_error: 0 },
  successRate: 0.7,
  meanDurationMs: 1500,
  p50DurationMs: 1200,
  p95DurationMs: 4000,
});

export const sampleRuntimes: RuntimeInfo = {
  runtime: 'runsc',
  availableRuntimes: ['runc', 'runsc'],
  image: 'pybox-python:0123456789ab',
  python: '3.12.4',
  packages: { numpy: '2.0.0' },
  limits: {
    defaults: { timeoutMs: 30_000, memoryMb: 256, cpus: 1 },
    max: { timeoutMs: 300_000, memoryMb: 2048, cpus: 2 },
    outputBytes: 50_000,
    floodBytes: 1_000_000,
  },
};

type Method = keyof ExecutionService;

export class FakeExecutionService implements ExecutionService {
  readonly calls = {
    execute: [] as Array<{ request: ExecutionRequest; signal: AbortSignal | undefined; requestId?: string | undefined }>,
    get: [] as string[],
    history: [] as HistoryQuery[],
    usage: [] as UsageQuery[],
    /** The caller of every call, in order. */
    callers: [] as Array<{ method: Method; caller: Caller | undefined }>,
  };
  /** Set a method's entry to make it throw that value. */
  failWith: Partial<Record<Method, unknown>> = {};
  result: ExecutionResult = sampleResult();
  page: HistoryPage = { items: [sampleResult()], nextCursor: null };
  statsValue: Stats = sampleStats;
  readinessValue: Readiness = { ready: true, checks: { engine: true, image: true, store: true }, runtime: 'runc', image: 'pybox-python:0123456789ab' };

  private fail(method: Method): void {
    if (method in this.failWith) throw this.failWith[method];
  }

  async execute(caller: Caller, request: ExecutionRequest, opts?: ExecuteOptions): Promise<ExecutionResult> {
    this.calls.callers.push({ method: 'execute', caller });
    this.calls.execute.push({ request, signal: opts?.signal, requestId: opts?.requestId });
    this.fail('execute');
    return this.result;
  }

  async get(caller: Caller, id: string): Promise<ExecutionResult> {
    this.calls.callers.push({ method: 'get', caller });
    this.calls.get.push(id);
    this.fail('get');
    return { ...this.result, id };
  }

  async history(caller: Caller, query: HistoryQuery): Promise<HistoryPage> {
    this.calls.callers.push({ method: 'history', caller });
    this.calls.history.push(query);
    this.fail('history');
    return this.page;
  }

  async stats(caller: Caller): Promise<Stats> {
    this.calls.callers.push({ method: 'stats', caller });
    this.fail('stats');
    return this.statsValue;
  }

  async usage(caller: Caller, query: UsageQuery): Promise<UsageReport> {
    this.calls.callers.push({ method: 'usage', caller });
    this.calls.usage.push(query);
    this.fail('usage');
    const byStatus = Object.fromEntries(EXECUTION_STATUSES.map((s) => [s, 0])) as Record<ExecutionStatus, number>;
    return { from: query.from ?? null, to: query.to ?? null, tenants: [{ tenant: caller.tenant, executions: 0, byStatus, wallMs: 0, cpuMs: 0, outputBytes: 0 }] };
  }

  async runtimes(caller?: Caller): Promise<RuntimeInfo> {
    this.calls.callers.push({ method: 'runtimes', caller });
    this.fail('runtimes');
    return sampleRuntimes;
  }

  async readiness(): Promise<Readiness> {
    this.fail('readiness');
    return this.readinessValue;
  }
}

export interface LogEntry {
  level: keyof Logger;
  msg: string;
  fields: Record<string, unknown> | undefined;
}

export function recordingLogger(): Logger & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at = (level: keyof Logger) => (msg: string, fields?: Record<string, unknown>) => void entries.push({ level, msg, fields });
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export const TEST_BODY_LIMIT = 4096;

/** API keys in memory: `add` returns a new key for a tenant. */
export class FakeKeys implements ApiKeyLookup {
  readonly rows: StoredApiKey[] = [];
  add(tenant: string, opts: { admin?: boolean; revoked?: boolean; limits?: Partial<TenantLimits> } = {}): string {
    const key = newApiKey();
    this.rows.push({
      id: `key_${String(this.rows.length).padStart(12, '0')}`,
      tenant,
      admin: opts.admin ?? false,
      hash: hashApiKey(key),
      revokedAt: opts.revoked ? '2025-01-01T00:00:00.000Z' : null,
      limits: { ...NO_TENANT_LIMITS, ...opts.limits },
    });
    return key;
  }
  async hasKeys(): Promise<boolean> {
    return this.rows.length > 0;
  }
  async findKeyByHash(hash: Buffer): Promise<StoredApiKey | undefined> {
    return this.rows.find((r) => r.hash.equals(hash));
  }
}

/** No keys at all: local mode. */
export const NO_KEYS: ApiKeyLookup = { hasKeys: async () => false, findKeyByHash: async () => undefined };

export function harness(
  opts: { keys?: ApiKeyLookup; clock?: Clock; doctor?: AppDeps['doctor']; allowedHosts?: string[]; allowedOrigins?: string[]; batches?: AppDeps['batches']; webhookSecrets?: AppDeps['webhookSecrets']; webDir?: string; cluster?: AppDeps['cluster'] } = {},
) {
  const service = new FakeExecutionService();
  const logger = recordingLogger();
  const app = createApp({
    service,
    logger,
    bodyLimitBytes: TEST_BODY_LIMIT,
    version: '9.9.9-test',
    auth: new Authenticator(opts.keys ?? NO_KEYS),
    rateLimiter: new RateLimiter(opts.clock ?? { now: () => Date.now() }),
    ...(opts.doctor ? { doctor: opts.doctor } : {}),
    ...(opts.allowedHosts ? { allowedHosts: opts.allowedHosts } : {}),
    ...(opts.allowedOrigins ? { allowedOrigins: opts.allowedOrigins } : {}),
    ...(opts.batches ? { batches: opts.batches } : {}),
    ...(opts.webhookSecrets ? { webhookSecrets: opts.webhookSecrets } : {}),
    ...(opts.webDir ? { webDir: opts.webDir } : {}),
    ...(opts.cluster ? { cluster: opts.cluster } : {}),
  });
  const post = (path: string, body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
    app.request(path, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { app, service, logger, post };
}

export interface ErrorJson {
  error: { code: string; message: string; details?: Array<{ path: string; message: string }> };
}
