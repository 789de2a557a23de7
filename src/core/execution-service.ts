// The one use case of pybox: take a validated request, clamp it to the server's limits, run it in
// a fresh sandbox, turn what happened into a result (status, output, parsed error, feedback), keep
// it in the store and return it.
//
// Every execution can be cancelled: by its caller's signal (the client went away) or by shutdown.
// One still waiting for a slot leaves the queue at once; a running one passes the signal to the
// sandbox side, which stops it. Either way it is recorded (status cancelled) and metered, and the
// caller gets that result, whether or not anybody still listens.
import { setMaxListeners } from 'node:events';
import { constants } from 'node:os';
import type { Config, ImportPolicy } from '../config/schema.ts';
import { codeJob, type SandboxJob, type SandboxOutcome, type SandboxReport } from './sandbox.ts';
import { visibleTenant, type Caller, type TenantLimits } from './caller.ts';
import { WaitCancelled, type ConcurrencyGate } from './concurrency.ts';
import { PyboxError } from './errors.ts';
import { renderFeedback, type Cancellation, type FeedbackInput } from './feedback.ts';
import { MIN_CPUS, MIN_MEMORY_MB, MIN_TIMEOUT_MS } from './limits.ts';
import type { Clock, EngineProbe, ExecutionService, ExecutionStore, Logger, Readiness, RuntimeInfo, Sandboxes } from './ports.ts';
import {
  EXECUTION_STATUSES,
  type AppliedLimits,
  type ExecutionRequest,
  type ExecutionResult,
  type ExecutionStatus,
  type HistoryPage,
  type HistoryQuery,
  type OutputFile,
  type RuntimeName,
  type Stats,
  type TenantUsage,
  type UsageQuery,
  type UsageReport,
} from './schemas.ts';
import type { LimitSet } from '../config/schema.ts';

export interface ExecutionServiceDeps {
  sandboxes: Sandboxes;
  engine: EngineProbe;
  store: ExecutionStore;
  gate: ConcurrencyGate;
  limits: Config['limits'];
  image: string;
  runtime: RuntimeName;
  availableRuntimes: RuntimeName[];
  clock: Clock;
  logger: Logger;
  newId: () => string;
  /** Most characters of a result's feedback text; the default budget when absent. */
  feedbackBudgetChars?: number;
  /** Imports flagged or blocked before the code runs (hygiene for models); off when absent. */
  importPolicy?: ImportPolicy;
}

/** Signal numbers to names; aliases (SIGIOT for 6) come later in the table and are skipped. */
const SIGNAL_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(constants.signals)) if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** Printable, no backslash, at most 1024 characters: returned names end up in logs and feedback. */
const SAFE_RETURNED_PATH = /^[^\p{Cc}\p{Cf}\\]{1,1024}$/u;

const PROBE_CODE = `import sys, json, importlib.metadata as m
pk = {}
for n in ("numpy", "pandas", "matplotlib"):
    try:
        pk[n] = m.version(n)
    except Exception:
        pass
print(json.dumps({"python": sys.version.split()[0], "packages": pk}))`;

/** How long after a failed store write a run is refused before the store is tried again, in seconds. */
const STORE_RETRY_S = 5;
/** Retry-After of a run refused because the service is shutting down: time for a restart or another replica. */
const SHUTDOWN_RETRY_S = 5;
/** The abort reason of the service's own signals, telling a shutdown from a client that went away. */
const SHUTDOWN = Symbol('pybox shutdown');

/** A signal aborted as soon as any of its sources is; dispose() unhooks it from them (they outlive it). */
function linkedSignal(sources: ReadonlyArray<AbortSignal | undefined>): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const hooks: Array<() => void> = [];
  for (const source of sources) {
    if (!source) continue;
    if (source.aborted) {
      controller.abort(source.reason);
      break;
    }
    const onAbort = () => controller.abort(source.reason);
    source.addEventListener('abort', onAbort, { once: true });
    hooks.push(() => source.removeEventListener('abort', onAbort));
  }
  return { signal: controller.signal, dispose: () => hooks.forEach((h) => h()) };
}

export class DefaultExecutionService implements ExecutionService {
  private probe: Promise<{ python: string | null; packages: Record<string, string> }> | undefined;
  /** Why the last save failed, until a write succeeds again: new runs are refused meanwhile. */
  private storeFault: string | null = null;
  /** When the store was last tried while faulty: a locked database makes each try wait (busy_timeout). */
  private storeProbedAt = Number.NEGATIVE_INFINITY;
  /** Aborted when shutdown begins: executions still waiting for a slot leave the queue. */
  private readonly stopWaiting = new AbortController();
  /** Aborted when shutdown's grace is over: executions still running are stopped. */
  private readonly stopRunning = new AbortController();
  /** Executions accepted and not yet recorded; settled() waits for none. */
  private inFlight = 0;
  private settledWaiters: Array<() => void> = [];

  constructor(private readonly deps: ExecutionServiceDeps) {
    // Every execution in flight listens to these two (and unhooks when it ends): as many listeners
    // as executions is the design, not a leak, so Node's warning past 10 does not apply.
    setMaxListeners(0, this.stopWaiting.signal, this.stopRunning.signal);
  }

  /** The server's maxima lowered to a tenant's, and the defaults kept within them. */
  effectiveLimits(tenant?: TenantLimits): { defaults: LimitSet; max: LimitSet } {
    const server = this.deps.limits;
    // A tenant's ceiling below a floor would leave nothing that can run: the floor holds instead.
    const lower = (serverMax: number, tenantMax: number | null | undefined, floor: number) =>
      tenantMax == null ? serverMax : Math.min(serverMax, Math.max(tenantMax, floor));
    const max: LimitSet = {
      timeoutMs: lower(server.max.timeoutMs, tenant?.maxTimeoutMs, MIN_TIMEOUT_MS),
      memoryMb: lower(server.max.memoryMb, tenant?.maxMemoryMb, MIN_MEMORY_MB),
      cpus: lower(server.max.cpus, tenant?.maxCpus, MIN_CPUS),
    };
    const defaults: LimitSet = {
      timeoutMs: Math.min(server.defaults.timeoutMs, max.timeoutMs),
      memoryMb: Math.min(server.defaults.memoryMb, max.memoryMb),
      cpus: Math.min(server.defaults.cpus, max.cpus),
    };
    return { defaults, max };
  }

  /**
   * The request's limits, each defaulted and then clamped to the tenant's maximum, itself within the
   * server's. Never raised: the request schema refuses values below the floors, and the config's
   * defaults and maxima are at least the floors.
   */
  clampLimits(req: Pick<ExecutionRequest, 'timeoutMs' | 'memoryMb' | 'cpus'>, tenant?: TenantLimits): AppliedLimits {
    const { defaults, max } = this.effectiveLimits(tenant);
    const { outputBytes } = this.deps.limits;
    return {
      timeoutMs: Math.min(req.timeoutMs ?? defaults.timeoutMs, max.timeoutMs),
      memoryMb: Math.min(req.memoryMb ?? defaults.memoryMb, max.memoryMb),
      cpus: Math.min(req.cpus ?? defaults.cpus, max.cpus),
      outputBytes,
    };
  }

  /** Whether new executions are taken (false once shutdown has begun). */
  get accepting(): boolean {
    return !this.stopWaiting.signal.aborted;
  }

  /** Executions accepted and not yet recorded (waiting or running). */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Shutdown begins: new executions are refused (shutting_down, 503) and those still waiting for a
   * slot are cancelled; running ones go on.
   */
  stopAccepting(): void {
    if (!this.stopWaiting.signal.aborted) this.stopWaiting.abort(SHUTDOWN);
  }

  /** Shutdown's grace is over: every execution still running is stopped and recorded as cancelled. */
  cancelRunning(): void {
    this.stopAccepting();
    if (!this.stopRunning.signal.aborted) this.stopRunning.abort(SHUTDOWN);
  }

  /** Resolves once every execution accepted so far has been recorded. */
  settled(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  async execute(caller: Caller, req: ExecutionRequest, opts: { signal?: AbortSignal | undefined } = {}): Promise<ExecutionResult> {
    if (!this.accepting) {
      throw new PyboxError('shutting_down', 'the service is shutting down and takes no new executions; retry shortly', { retryAfterS: SHUTDOWN_RETRY_S });
    }
    const files = this.decodeFiles(req.files ?? []);
    assertFloors(req);
    const limits = this.clampLimits(req, caller.limits);
    const id = this.deps.newId();
    const createdAt = this.deps.clock.now();
    const job: SandboxJob = {
      id,
      image: this.deps.image,
      runtime: this.deps.runtime,
      code: req.code,
      stdin: req.stdin ?? '',
      args: req.args ?? [],
      env: req.env ?? {},
      context: req.context ?? {},
      files,
      limits,
    };
    const policy = this.deps.importPolicy;
    if (policy && policy.mode !== 'off') {
      job.importPolicy = { mode: policy.mode, dangerous: policy.dangerousModules, safe: policy.safeModules };
    }
    this.assertStoreWritable();
    this.inFlight++;
    try {
      return await this.runAndRecord(caller, job, limits, req.code, createdAt, opts.signal);
    } finally {
      this.inFlight--;
      if (this.inFlight === 0) {
        const waiters = this.settledWaiters;
        this.settledWaiters = [];
        for (const w of waiters) w();
      }
    }
  }

  private async runAndRecord(
    caller: Caller,
    job: SandboxJob,
    limits: AppliedLimits,
    code: string,
    createdAt: number,
    signal: AbortSignal | undefined,
  ): Promise<ExecutionResult> {
    const { id } = job;
    // Waiting ends with shutdown's start; running, with its grace. The caller's signal ends either.
    const waiting = linkedSignal([signal, this.stopWaiting.signal]);
    const running = linkedSignal([signal, this.stopRunning.signal]);
    job.signal = running.signal;
    let outcome: SandboxOutcome;
    let cancellation: Cancellation | undefined;
    try {
      outcome = await this.deps.gate.run(() => this.deps.sandboxes.run(job), {
        tenant: caller.tenant,
        maxInFlight: caller.limits.maxConcurrency,
        signal: waiting.signal,
      });
      if (outcome.kind === 'cancelled') {
        // The sandbox side reports the code's own time: 0 when the payload never reached the runner.
        cancellation = { by: running.signal.reason === SHUTDOWN ? 'shutdown' : 'client', started: outcome.durationMs > 0 };
      }
    } catch (e) {
      if (!(e instanceof WaitCancelled)) throw e;
      outcome = notRun();
      cancellation = { by: e.reason === SHUTDOWN ? 'shutdown' : 'client', started: false };
    } finally {
      waiting.dispose();
      running.dispose();
    }
    const result = this.toResult(id, code, limits, outcome, createdAt, cancellation);
    if (result.status === 'internal_error') this.deps.logger.error('execution failed on our side', { id, why: result.error?.message });
    if (cancellation) this.deps.logger.info('execution cancelled', { id, by: cancellation.by, started: cancellation.started });
    try {
      this.deps.store.save(result, { tenant: caller.tenant, outputBytes: outcome.stdout.totalBytes + outcome.stderr.totalBytes });
      this.storeFault = null;
    } catch (e) {
      this.storeFault = e instanceof Error ? e.message : String(e);
      // The caller still gets what its code did; only the history entry is lost, and we say so.
      this.deps.logger.error('could not record an execution in the store', { id, error: e });
    }
    return result;
  }

  get(caller: Caller, id: string): ExecutionResult {
    // Another tenant's id is looked up in the caller's scope and missed, exactly like an unknown one.
    const found = this.deps.store.get(id, visibleTenant(caller));
    if (!found) throw new PyboxError('not_found', `no execution with id ${id}`);
    return found;
  }

  history(caller: Caller, query: HistoryQuery): HistoryPage {
    return this.deps.store.list({ ...query, tenant: visibleTenant(caller) });
  }

  stats(caller: Caller): Stats {
    return this.deps.store.stats(visibleTenant(caller));
  }

  usage(caller: Caller, query: UsageQuery): UsageReport {
    if (query.from !== undefined && query.to !== undefined && query.from > query.to) {
      throw new PyboxError('invalid_request', 'from must not be after to', { details: [{ path: 'from', message: 'must not be after to' }] });
    }
    // A non-admin naming another tenant is answered as if that tenant did not exist.
    if (!caller.admin && query.tenant !== undefined && query.tenant !== caller.tenant) {
      throw new PyboxError('not_found', `no usage for tenant ${query.tenant}`);
    }
    const tenant = caller.admin ? query.tenant : caller.tenant;
    let tenants = this.deps.store.usage({ tenant, from: query.from, to: query.to });
    if (tenant !== undefined && tenants.length === 0) tenants = [noUsage(tenant)];
    return { from: query.from ?? null, to: query.to ?? null, tenants };
  }

  async runtimes(caller?: Caller): Promise<RuntimeInfo> {
    this.probe ??= this.probePython().catch((e: unknown) => {
      this.probe = undefined; // try again on the next call
      this.deps.logger.warn('could not probe the sandbox image', { error: e });
      return { python: null, packages: {} };
    });
    const { python, packages } = await this.probe;
    const { outputBytes, floodBytes } = this.deps.limits;
    const { defaults, max } = this.effectiveLimits(caller?.limits);
    return {
      runtime: this.deps.runtime,
      availableRuntimes: this.deps.availableRuntimes,
      image: this.deps.image,
      python,
      packages,
      limits: { defaults, max, outputBytes, floodBytes },
    };
  }

  /**
   * After a save failed, a run is refused (503) until the store takes a write again: a result that
   * cannot be kept cannot be fetched by its id nor counted in its tenant's usage.
   */
  private assertStoreWritable(): void {
    if (this.storeFault === null) return;
    const now = this.deps.clock.now();
    // Tried again at most once per Retry-After, not on every request: against a locked database each
    // try blocks the whole process for the store's busy timeout.
    if (now - this.storeProbedAt >= STORE_RETRY_S * 1000) {
      this.storeProbedAt = now;
      if (this.deps.store.healthy()) {
        this.storeFault = null;
        return;
      }
    }
    throw new PyboxError('store_unavailable', `the history store cannot be written (${this.storeFault}), so no execution is run; retry later`, {
      retryAfterS: STORE_RETRY_S,
    });
  }

  async readiness(): Promise<Readiness> {
    if (!this.accepting) {
      // Orchestrators stop routing here; nothing is probed, the engine and store are being closed.
      return { ready: false, checks: { engine: false, image: false, store: false }, runtime: this.deps.runtime, image: this.deps.image, message: 'the service is shutting down' };
    }
    const engine = await this.deps.engine.ping();
    const image = engine ? await this.deps.engine.imageExists(this.deps.image).catch(() => false) : false;
    const store = this.deps.store.healthy();
    if (store) this.storeFault = null;
    const ready = engine && image && store;
    const readiness: Readiness = { ready, checks: { engine, image, store }, runtime: this.deps.runtime, image: this.deps.image };
    if (!ready) {
      readiness.message = !engine
        ? 'the Docker engine does not answer'
        : !image
          ? `the sandbox image ${this.deps.image} is missing: run \`npm run setup\``
          : `the history store cannot be written${this.storeFault ? ` (${this.storeFault})` : ''}`;
    }
    return readiness;
  }

  private async probePython(): Promise<{ python: string | null; packages: Record<string, string> }> {
    const limits = this.clampLimits({ timeoutMs: 30_000 });
    const outcome = await this.deps.gate.run(
      () =>
        this.deps.sandboxes.run(
          codeJob({ id: `probe-${this.deps.newId()}`, image: this.deps.image, runtime: this.deps.runtime, code: PROBE_CODE, limits, signal: this.stopRunning.signal }),
        ),
      { signal: this.stopWaiting.signal },
    );
    const text = outcome.stdout.text().trim();
    const parsed = JSON.parse(text) as { python?: unknown; packages?: unknown };
    const packages: Record<string, string> = {};
    if (parsed.packages && typeof parsed.packages === 'object') {
      for (const [k, v] of Object.entries(parsed.packages)) if (typeof v === 'string') packages[k] = v;
    }
    return { python: typeof parsed.python === 'string' ? parsed.python : null, packages };
  }

  private decodeFiles(files: NonNullable<ExecutionRequest['files']>): SandboxJob['files'] {
    const seen = new Set<string>();
    const out: SandboxJob['files'] = [];
    let total = 0;
    for (const [i, f] of files.entries()) {
      if (seen.has(f.path)) throw invalid(`files[${i}].path`, `duplicate path ${f.path}`);
      seen.add(f.path);
      if (f.encoding === 'base64' && (f.content.length % 4 !== 0 || !BASE64.test(f.content))) {
        throw invalid(`files[${i}].content`, 'is not valid base64');
      }
      const data = Buffer.from(f.content, f.encoding === 'base64' ? 'base64' : 'utf8');
      total += data.length;
      if (total > this.deps.limits.inputFilesMaxBytes) {
        throw invalid('files', `input files exceed ${this.deps.limits.inputFilesMaxBytes} bytes in total`);
      }
      out.push({ path: f.path, data });
    }
    // A path cannot be both a file and a directory (a and a/b).
    for (const p of seen) {
      const parts = p.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (seen.has(dir)) throw invalid('files', `${dir} is both a file and a directory`);
      }
    }
    return out;
  }

  private toResult(id: string, code: string, limits: AppliedLimits, o: SandboxOutcome, createdAtMs: number, cancellation?: Cancellation): ExecutionResult {
    const base = {
      stdout: o.stdout.text(),
      stderr: o.stderr.text(),
      truncated: { stdout: o.stdout.truncated, stderr: o.stderr.truncated },
      durationMs: Math.round(o.durationMs * 10) / 10,
      runtime: this.deps.runtime,
      limits,
    };
    const r = o.report;
    let status: ExecutionStatus;
    let exitCode: number | null = null;
    let signal: string | null = null;
    let error: ExecutionResult['error'] = null;
    let files: OutputFile[] | undefined;
    let filesDropped: number | undefined;
    let cpuMs: number | null = null;
    const runReport = r?.phase === 'run' ? r : null;
    if (runReport) {
      exitCode = runReport.exitCode;
      signal = runReport.signal ? (SIGNAL_NAMES.get(runReport.signal) ?? `SIG${runReport.signal}`) : null;
      error = runReport.error;
      cpuMs = runReport.cpuMs ?? null;
      ({ files, dropped: filesDropped } = this.acceptFiles(runReport));
    }
    switch (o.kind) {
      case 'timeout':
        status = 'timeout';
        // With durationMs 0 the budget ran out while the sandbox was still starting: nothing was killed.
        signal = o.durationMs > 0 ? 'SIGKILL' : null;
        break;
      case 'oom':
        status = 'oom';
        // What the runner saw of the code's end, when it outlived it; else the kernel's SIGKILL.
        if (!runReport) {
          exitCode = 137;
          signal = 'SIGKILL';
        }
        break;
      case 'output_limit':
        status = 'output_limit';
        signal = 'SIGKILL';
        break;
      case 'cancelled':
        status = 'cancelled';
        break;
      case 'failed':
        status = 'internal_error';
        error = { type: 'InternalError', message: o.failure ?? 'the sandbox failed', line: null };
        break;
      case 'finished':
        if (r?.phase === 'validation') {
          status = 'validation_failed';
          error = r.error;
        } else if (r?.phase === 'setup') {
          status = 'internal_error';
          error = { type: 'InternalError', message: r.message, line: null };
        } else {
          status = exitCode === 0 ? 'completed' : 'error';
        }
        break;
    }
    // Keys in reading order: what happened first, then the output, then the details.
    const partial: FeedbackInput = {
      status,
      success: status === 'completed',
      exitCode,
      signal,
      stdout: base.stdout,
      stderr: base.stderr,
      truncated: base.truncated,
      durationMs: base.durationMs,
      cpuMs,
      error,
      runtime: base.runtime,
      limits: base.limits,
    };
    if (files) partial.files = files;
    if (filesDropped) partial.filesDropped = filesDropped;
    const finishedAt = this.deps.clock.now();
    return {
      id,
      ...partial,
      feedback: renderFeedback(partial, code, {
        budgetChars: this.deps.feedbackBudgetChars,
        floodBytes: this.deps.limits.floodBytes,
        flaggedImports: runReport?.flaggedImports ?? [],
        ...(cancellation ? { cancellation } : {}),
      }),
      createdAt: new Date(createdAtMs).toISOString(),
      finishedAt: new Date(finishedAt).toISOString(),
    };
  }

  /** Re-checks files returned from inside the sandbox: their names and sizes are hostile too. */
  private acceptFiles(report: Extract<SandboxReport, { phase: 'run' }>): { files: OutputFile[]; dropped: number } {
    const { outputFilesMax, outputFilesMaxBytes } = this.deps.limits;
    const files: OutputFile[] = [];
    let dropped = report.filesDropped;
    let total = 0;
    for (const f of report.files) {
      const segments = f.path.split('/');
      const nameOk =
        SAFE_RETURNED_PATH.test(f.path) && !f.path.startsWith('/') && segments.every((s) => s !== '' && s !== '.' && s !== '..');
      const size = Buffer.byteLength(f.base64, 'base64');
      const b64Ok = f.base64.length % 4 === 0 && BASE64.test(f.base64) && size === f.size;
      if (!nameOk || !b64Ok || files.length >= outputFilesMax || total + size > outputFilesMaxBytes) {
        dropped++;
        continue;
      }
      total += size;
      files.push({ path: f.path, size, contentBase64: f.base64 });
    }
    return { files, dropped };
  }
}

/**
 * The request schema refuses limits below the floors; this holds for callers that build a request
 * in-process (adapters translating their own units) the same way, with the same message.
 */
function assertFloors(req: Pick<ExecutionRequest, 'timeoutMs' | 'memoryMb' | 'cpus'>): void {
  const floors = [
    ['timeoutMs', req.timeoutMs, MIN_TIMEOUT_MS, 'ms'],
    ['memoryMb', req.memoryMb, MIN_MEMORY_MB, 'MB'],
    ['cpus', req.cpus, MIN_CPUS, 'CPUs'],
  ] as const;
  for (const [path, value, floor, unit] of floors) {
    if (value !== undefined && !(value >= floor)) throw invalid(path, `must be at least ${floor} (${unit})`);
  }
}

/** The outcome of an execution cancelled before it got a slot: nothing ran, nothing was printed. */
function notRun(): SandboxOutcome {
  const empty = { totalBytes: 0, truncated: false, text: () => '' };
  return { kind: 'cancelled', report: null, stdout: empty, stderr: empty, durationMs: 0 };
}

function noUsage(tenant: string): TenantUsage {
  const byStatus = Object.fromEntries(EXECUTION_STATUSES.map((s) => [s, 0])) as Record<ExecutionStatus, number>;
  return { tenant, executions: 0, byStatus, wallMs: 0, cpuMs: 0, outputBytes: 0 };
}

function invalid(path: string, message: string): PyboxError {
  return new PyboxError('invalid_request', `${path} ${message}`, { details: [{ path, message }] });
}
