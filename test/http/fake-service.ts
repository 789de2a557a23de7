// A stand-in ExecutionService for the HTTP tests: records what it was asked, answers with canned,
// schema-valid values, and throws whatever a test sets in `failWith`.
import { createApp } from '../../src/app.ts';
import type { ExecutionService, Logger, Readiness, RuntimeInfo } from '../../src/core/ports.ts';
import { ExecutionResult, Stats, type ExecutionRequest, type HistoryPage, type HistoryQuery } from '../../src/core/schemas.ts';

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
  byStatus: { completed: 7, error: 2, timeout: 1, oom: 0, output_limit: 0, validation_failed: 0, internal_error: 0 },
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
    execute: [] as Array<{ request: ExecutionRequest; signal: AbortSignal | undefined }>,
    get: [] as string[],
    history: [] as HistoryQuery[],
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

  async execute(request: ExecutionRequest, opts?: { signal?: AbortSignal }): Promise<ExecutionResult> {
    this.calls.execute.push({ request, signal: opts?.signal });
    this.fail('execute');
    return this.result;
  }

  get(id: string): ExecutionResult {
    this.calls.get.push(id);
    this.fail('get');
    return { ...this.result, id };
  }

  history(query: HistoryQuery): HistoryPage {
    this.calls.history.push(query);
    this.fail('history');
    return this.page;
  }

  stats(): Stats {
    this.fail('stats');
    return this.statsValue;
  }

  async runtimes(): Promise<RuntimeInfo> {
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

export function harness() {
  const service = new FakeExecutionService();
  const logger = recordingLogger();
  const app = createApp({ service, logger, bodyLimitBytes: TEST_BODY_LIMIT, version: '9.9.9-test' });
  const post = (path: string, body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
    app.request(path, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { app, service, logger, post };
}

export interface ErrorJson {
  error: { code: string; message: string; details?: Array<{ path: string; message: string }> };
}
