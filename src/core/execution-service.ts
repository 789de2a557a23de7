// The one use case of pybox: take a validated request, clamp it to the server's limits, run it in
// a fresh sandbox, turn what happened into a result (status, output, parsed error, feedback), keep
// it in the store and return it.
//
// Every execution can be cancelled: by its caller's signal (the client went away) or by shutdown.
// One still waiting for a slot leaves the queue at once; a running one passes the signal to the
// sandbox side, which stops it. Either way it is recorded (status cancelled) and metered, and the
// caller gets that result, whether or not anybody still listens.
import { setMaxListeners } from 'node:events';
import type { Config, ImportPolicy, LimitSet } from '../config/schema.ts';
import { visibleTenant, type Caller, type TenantLimits } from './caller.ts';
import { invalidField, PyboxError } from './errors.ts';
import { MIN_CPUS, MIN_MEMORY_MB, MIN_TIMEOUT_MS } from './limits.ts';
import type { AcceptedExecution, CancelReason, Clock, Dispatch, ExecuteOptions, ExecutionBackend, ExecutionService, ExecutionStore, Logger, Readiness, RuntimeInfo, TestSpec } from './ports.ts';
import { isValidRequestId } from './request-id.ts';
import { executionIds, logExecution } from './execution-log.ts';
import { BASE64 } from './results.ts';
import type { SandboxCase } from './sandbox.ts';
import { compileRegex, MAX_REGEX_CHARS } from './verdicts.ts';
import {
  EXECUTION_STATUSES,
  type AppliedLimits,
  type ExecutionRequest,
  type ExecutionResult,
  type ExecutionStatus,
  type HistoryPage,
  type HistoryQuery,
  type Stats,
  type TenantUsage,
  type UsageQuery,
  type UsageReport,
} from './schemas.ts';

export interface ExecutionServiceDeps {
  /** Where accepted executions run and are recorded: this node, or the cluster's workers. */
  dispatch: Dispatch;
  /** What the executions get (runtime, image, Python) and whether they can run now. */
  backend: ExecutionBackend;
  store: ExecutionStore;
  limits: Config['limits'];
  clock: Clock;
  logger: Logger;
  newId: () => string;
  /** Imports flagged or blocked before the code runs (hygiene for models); off when absent. */
  importPolicy?: ImportPolicy | undefined;
}

/** How long after a failed store write a run is refused before the store is tried again, in seconds. */
const STORE_RETRY_S = 5;
/** Retry-After of a run refused because the service is shutting down: time for a restart or another replica. */
const SHUTDOWN_RETRY_S = 5;
/** The abort reason of the service's own signals, telling a shutdown from a client that went away. */
const SHUTDOWN: CancelReason = 'shutdown';

/**
 * A signal aborted as soon as any of its sources is, with a CancelReason: 'shutdown' when the
 * service's own signal aborted, else 'client'. dispose() unhooks it from the sources (they outlive it).
 */
function linkedSignal(sources: ReadonlyArray<AbortSignal | undefined>): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const hooks: Array<() => void> = [];
  const reasonOf = (source: AbortSignal): CancelReason => (source.reason === SHUTDOWN ? SHUTDOWN : 'client');
  for (const source of sources) {
    if (!source) continue;
    if (source.aborted) {
      controller.abort(reasonOf(source));
      break;
    }
    const onAbort = () => controller.abort(reasonOf(source));
    source.addEventListener('abort', onAbort, { once: true });
    hooks.push(() => source.removeEventListener('abort', onAbort));
  }
  return { signal: controller.signal, dispose: () => hooks.forEach((h) => h()) };
}

export class DefaultExecutionService implements ExecutionService {
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

  async execute(caller: Caller, req: ExecutionRequest, opts: ExecuteOptions = {}): Promise<ExecutionResult> {
    if (!this.accepting) {
      throw new PyboxError('shutting_down', 'the service is shutting down and takes no new executions; retry shortly', { retryAfterS: SHUTDOWN_RETRY_S });
    }
    const execution = this.accept(caller, req, opts);
    await this.assertStoreWritable();
    this.inFlight++;
    // Waiting ends with shutdown's start; running, with its grace. The caller's signal ends either.
    const waiting = linkedSignal([opts.signal, this.stopWaiting.signal]);
    const running = linkedSignal([opts.signal, this.stopRunning.signal]);
    let queueWaitMs: number | undefined;
    const started = () => {
      queueWaitMs = Math.max(0, this.deps.clock.now() - execution.createdAtMs);
    };
    try {
      const result = await this.deps.dispatch.submit(execution, { waiting: waiting.signal, running: running.signal }, { started, output: opts.onOutput });
      logExecution(this.deps.logger, execution, result, { totalMs: this.deps.clock.now() - execution.createdAtMs, queueWaitMs });
      return result;
    } catch (e) {
      this.deps.logger.info('execution refused', { ...executionIds(execution), code: e instanceof PyboxError ? e.code : 'internal' });
      throw e;
    } finally {
      waiting.dispose();
      running.dispose();
      this.inFlight--;
      if (this.inFlight === 0) {
        const waiters = this.settledWaiters;
        this.settledWaiters = [];
        for (const w of waiters) w();
      }
    }
  }

  /**
   * Checks and clamps a request exactly as execute() would, without running it (a batch's items are
   * refused at submission). Throws invalid_request; returns the limits the run would get, and its
   * test cases' expectations (for a result recorded without a run: a cancelled batch item).
   */
  check(caller: Caller, req: ExecutionRequest): Pick<AcceptedExecution, 'limits' | 'tests'> {
    const { limits, tests } = this.accept(caller, req, { job: { id: '', createdAtMs: 0 } });
    return { limits, tests };
  }

  /** The request validated, clamped and given its id: every check of a request lives here, once. */
  private accept(caller: Caller, req: ExecutionRequest, opts: ExecuteOptions): AcceptedExecution {
    assertFloors(req);
    const limits = this.clampLimits(req, caller.limits);
    const { files, tests } = this.acceptInputs(req, limits, caller.limits);
    // A job was given its id and acceptance time when it was submitted; it keeps them.
    const id = opts.job?.id ?? this.deps.newId();
    const execution: AcceptedExecution = {
      job: { id, code: req.code, stdin: req.stdin ?? '', args: req.args ?? [], env: req.env ?? {}, context: req.context ?? {}, files, limits },
      limits,
      tenant: caller.tenant,
      maxInFlight: caller.limits.maxConcurrency,
      createdAtMs: opts.job?.createdAtMs ?? this.deps.clock.now(),
    };
    if (tests) {
      execution.job.tests = tests.cases;
      execution.tests = tests.specs;
    }
    if (opts.job) execution.background = true;
    // In-process callers hand an id in directly: it goes into log lines and onto the queue, so the same rule holds.
    if (isValidRequestId(opts.requestId)) execution.requestId = opts.requestId;
    const policy = this.deps.importPolicy;
    if (policy && policy.mode !== 'off') {
      execution.job.importPolicy = { mode: policy.mode, dangerous: policy.dangerousModules, safe: policy.safeModules };
    }
    return execution;
  }

  /** Told by the dispatch after each save: while saves fail, the service refuses runs (store_unavailable). */
  recorded(fault: string | null): void {
    this.storeFault = fault;
  }

  async get(caller: Caller, id: string): Promise<ExecutionResult> {
    // Another tenant's id is looked up in the caller's scope and missed, exactly like an unknown one.
    const found = await this.deps.store.get(id, visibleTenant(caller));
    if (!found) throw new PyboxError('not_found', `no execution with id ${id}`);
    return found;
  }

  history(caller: Caller, query: HistoryQuery): Promise<HistoryPage> {
    return this.deps.store.list({ ...query, tenant: visibleTenant(caller) });
  }

  stats(caller: Caller): Promise<Stats> {
    return this.deps.store.stats(visibleTenant(caller));
  }

  async usage(caller: Caller, query: UsageQuery): Promise<UsageReport> {
    if (query.from !== undefined && query.to !== undefined && query.from > query.to) {
      throw new PyboxError('invalid_request', 'from must not be after to', { details: [{ path: 'from', message: 'must not be after to' }] });
    }
    // A non-admin naming another tenant is answered as if that tenant did not exist.
    if (!caller.admin && query.tenant !== undefined && query.tenant !== caller.tenant) {
      throw new PyboxError('not_found', `no usage for tenant ${query.tenant}`);
    }
    const tenant = caller.admin ? query.tenant : caller.tenant;
    let tenants = await this.deps.store.usage({ tenant, from: query.from, to: query.to });
    if (tenant !== undefined && tenants.length === 0) tenants = [noUsage(tenant)];
    return { from: query.from ?? null, to: query.to ?? null, tenants };
  }

  async runtimes(caller?: Caller): Promise<RuntimeInfo> {
    const info = await this.deps.backend.describe({ signal: this.stopRunning.signal });
    const { outputBytes, floodBytes } = this.deps.limits;
    const { defaults, max } = this.effectiveLimits(caller?.limits);
    return { ...info, limits: { defaults, max, outputBytes, floodBytes } };
  }

  /**
   * After a save failed, a run is refused (503) until the store takes a write again: a result that
   * cannot be kept cannot be fetched by its id nor counted in its tenant's usage.
   */
  private async assertStoreWritable(): Promise<void> {
    if (this.storeFault === null) return;
    const now = this.deps.clock.now();
    // Tried again at most once per Retry-After, not on every request: against a locked database each
    // try blocks the whole process for the store's busy timeout.
    if (now - this.storeProbedAt >= STORE_RETRY_S * 1000) {
      this.storeProbedAt = now;
      if (await this.deps.store.healthy().catch(() => false)) {
        this.storeFault = null;
        return;
      }
    }
    throw new PyboxError('store_unavailable', `the history store cannot be written (${this.storeFault}), so no execution is run; retry later`, {
      retryAfterS: STORE_RETRY_S,
    });
  }

  async readiness(): Promise<Readiness> {
    const identity = this.deps.backend.identity();
    if (!this.accepting) {
      // Orchestrators stop routing here; nothing is probed, the engine and store are being closed.
      return { ready: false, checks: { engine: false, image: false, store: false }, ...identity, message: 'the service is shutting down' };
    }
    const [backend, store] = await Promise.all([this.deps.backend.checks(), this.deps.store.healthy().catch(() => false)]);
    if (store) this.storeFault = null;
    const ready = store && Object.values(backend.checks).every(Boolean);
    const readiness: Readiness = { ready, checks: { ...backend.checks, store }, ...this.deps.backend.identity() };
    if (!ready) {
      readiness.message = backend.message ?? `the history store cannot be written${this.storeFault ? ` (${this.storeFault})` : ''}`;
    }
    return readiness;
  }

  /**
   * The request's inputs, checked and decoded: its files and, with test cases, each case's input
   * (for the sandbox) and expectation (for the verdicts). Every input byte counts against
   * inputFilesMaxBytes: the files, and each case's files and stdin. Throws invalid_request naming the
   * field. `limits` are the request's as applied; a case's own time limit is clamped like them.
   */
  private acceptInputs(
    req: Pick<ExecutionRequest, 'files' | 'tests' | 'stdin' | 'args'>,
    limits: AppliedLimits,
    tenant?: TenantLimits,
  ): { files: AcceptedExecution['job']['files']; tests?: { cases: SandboxCase[]; specs: TestSpec[] } } {
    const budget: InputBudget = { used: 0, max: this.deps.limits.inputFilesMaxBytes, what: req.tests ? "input files and the test cases' files and stdin" : 'input files' };
    const files = decodeFiles(req.files ?? [], 'files', budget);
    if (!req.tests) return { files };
    // A case's stdin and args replace the run's: both given is a mistake the caller should hear of.
    for (const field of ['stdin', 'args'] as const) {
      if (req[field] !== undefined) throw invalidField(field, 'must not be given with tests: give each test case its own');
    }
    const maxTimeoutMs = this.effectiveLimits(tenant).max.timeoutMs;
    const execPaths = new Set(files.map((f) => f.path));
    const cases: SandboxCase[] = [];
    const specs: TestSpec[] = [];
    const patterns = new Map<string, string | null>();
    let regexChars = 0;
    for (const [i, t] of req.tests.entries()) {
      const at = `tests[${i}]`;
      if (t.timeoutMs !== undefined && !(t.timeoutMs >= MIN_TIMEOUT_MS)) throw invalidField(`${at}.timeoutMs`, `must be at least ${MIN_TIMEOUT_MS} (ms)`);
      const caseFiles = decodeFiles(t.files ?? [], `${at}.files`, budget);
      // Laid over the run's files: the same path replaces one, but a file cannot also be a directory.
      assertNoFileDirClash(new Set([...execPaths, ...caseFiles.map((f) => f.path)]), `${at}.files`);
      const stdin = t.stdin ?? '';
      budget.used += Buffer.byteLength(stdin, 'utf8');
      if (budget.used > budget.max) throw invalidField(`${at}.stdin`, `${budget.what} exceed ${budget.max} bytes in total`);
      const compare = t.compare ?? 'trimmed';
      if (compare === 'regex' && t.expectedStdout !== undefined) {
        regexChars += t.expectedStdout.length;
        if (regexChars > MAX_REGEX_CHARS) throw invalidField(`${at}.expectedStdout`, `the test cases' regular expressions exceed ${MAX_REGEX_CHARS} characters in total`);
        let error = patterns.get(t.expectedStdout);
        if (error === undefined) {
          const re = compileRegex(t.expectedStdout);
          error = 'error' in re ? re.error : null;
          patterns.set(t.expectedStdout, error);
        }
        if (error !== null) throw invalidField(`${at}.expectedStdout`, `is not a valid regular expression (RE2 syntax): ${error}`);
      }
      cases.push({ stdin, args: t.args ?? [], files: caseFiles, timeoutMs: Math.min(t.timeoutMs ?? limits.timeoutMs, maxTimeoutMs) });
      const spec: TestSpec = { name: t.name ?? `case ${i + 1}`, compare };
      if (t.expectedStdout !== undefined) spec.expectedStdout = t.expectedStdout;
      if (t.expectedExitCode !== undefined) spec.expectedExitCode = t.expectedExitCode;
      if (t.tolerance !== undefined) spec.tolerance = t.tolerance;
      specs.push(spec);
    }
    return { files, tests: { cases, specs } };
  }
}

/** Input bytes of one request counted so far, against its most. */
export interface InputBudget {
  used: number;
  max: number;
  /** What is counted, for the message. */
  what: string;
}

export function decodeFiles(files: NonNullable<ExecutionRequest['files']>, at: string, budget: InputBudget): AcceptedExecution['job']['files'] {
  const seen = new Set<string>();
  const out: AcceptedExecution['job']['files'] = [];
  for (const [i, f] of files.entries()) {
    if (seen.has(f.path)) throw invalidField(`${at}[${i}].path`, `duplicate path ${f.path}`);
    seen.add(f.path);
    if (f.encoding === 'base64' && (f.content.length % 4 !== 0 || !BASE64.test(f.content))) {
      throw invalidField(`${at}[${i}].content`, 'is not valid base64');
    }
    const data = Buffer.from(f.content, f.encoding === 'base64' ? 'base64' : 'utf8');
    budget.used += data.length;
    if (budget.used > budget.max) throw invalidField(at, `${budget.what} exceed ${budget.max} bytes in total`);
    out.push({ path: f.path, data });
  }
  assertNoFileDirClash(seen, at);
  return out;
}

/** A path cannot be both a file and a directory (a and a/b). */
function assertNoFileDirClash(paths: ReadonlySet<string>, at: string): void {
  for (const p of paths) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (paths.has(dir)) throw invalidField(at, `${dir} is both a file and a directory`);
    }
  }
}

/**
 * The request schema refuses limits below the floors; this holds for callers that build a request
 * in-process (adapters translating their own units) the same way, with the same message.
 */
export function assertFloors(req: Pick<ExecutionRequest, 'timeoutMs' | 'memoryMb' | 'cpus'>): void {
  const floors = [
    ['timeoutMs', req.timeoutMs, MIN_TIMEOUT_MS, 'ms'],
    ['memoryMb', req.memoryMb, MIN_MEMORY_MB, 'MB'],
    ['cpus', req.cpus, MIN_CPUS, 'CPUs'],
  ] as const;
  for (const [path, value, floor, unit] of floors) {
    if (value !== undefined && !(value >= floor)) throw invalidField(path, `must be at least ${floor} (${unit})`);
  }
}

function noUsage(tenant: string): TenantUsage {
  const byStatus = Object.fromEntries(EXECUTION_STATUSES.map((s) => [s, 0])) as Record<ExecutionStatus, number>;
  return { tenant, executions: 0, byStatus, wallMs: 0, cpuMs: 0, outputBytes: 0 };
}

