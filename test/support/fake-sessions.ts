// A stand-in for the engine's session sandboxes, and timers moved by hand, for the session tests
// (unit, HTTP, agents). The fake "interpreter" keeps variables between calls and understands a
// tiny language: `name = <int>`, `name = name + <int>`, `print(name)`, and a few commands:
// `sleep` (runs until interrupted), `restart` (the state is lost), `die` (the sandbox is lost),
// `boom` (a NameError-like failure).
import { ConfigSchema, type Config } from '../../src/config/schema.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { DefaultExecutionService } from '../../src/core/execution-service.ts';
import type { Clock, ExecutionMeter, ExecutionStore, Logger } from '../../src/core/ports.ts';
import { SessionService } from '../../src/core/session-service.ts';
import { SessionManager } from '../../src/core/session-manager.ts';
import type { CapturedOutput, SandboxReport } from '../../src/core/sandbox.ts';
import type { ExecutionResult, HistoryPage, SessionFileList, Stats, TenantUsage } from '../../src/core/schemas.ts';
import type { SessionTimers } from '../../src/core/session-manager.ts';
import type { SessionCallJob, SessionCallOutcome, SessionHosts, SessionSandbox, SessionSandboxes, SessionSandboxSpec } from '../../src/core/sessions.ts';

/** A clock and timers that move only when told to. */
export class ManualTime implements Clock, SessionTimers {
  private pending: Array<{ at: number; fn: () => void; handle: number }> = [];
  private next = 1;
  constructor(public t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  set(fn: () => void, ms: number): unknown {
    const handle = this.next++;
    this.pending.push({ at: this.t + Math.max(0, ms), fn, handle });
    return handle;
  }
  clear(handle: unknown): void {
    this.pending = this.pending.filter((p) => p.handle !== handle);
  }
  /** Timers waiting. */
  get waiting(): number {
    return this.pending.length;
  }
  /** Moves time on, firing each timer due on the way (in order). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.pending.sort((a, b) => a.at - b.at);
      const due = this.pending[0];
      if (!due || due.at > end) break;
      this.pending.shift();
      this.t = due.at;
      due.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

/** Lets queued promise callbacks run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((r) => setImmediate(r));
}

function captured(text: string): CapturedOutput {
  const bytes = Buffer.byteLength(text);
  return { totalBytes: bytes, truncated: false, text: () => text };
}

export class FakeSessionSandbox implements SessionSandbox {
  vars = new Map<string, number>();
  files = new Map<string, Buffer>();
  closed = false;
  running = false;
  /** Aborted when the sandbox closes or dies: a running call ends with it. */
  private readonly gone = new AbortController();
  readonly calls: SessionCallJob[] = [];
  readonly ended: Promise<string>;
  private endNow!: (why: string) => void;

  constructor(readonly spec: SessionSandboxSpec) {
    this.ended = new Promise((resolve) => (this.endNow = resolve));
    for (const f of spec.files) this.files.set(f.path, f.data);
  }

  /** The container stops on its own. */
  die(why = 'the container exited'): void {
    this.closed = true;
    this.gone.abort();
    this.endNow(why);
  }

  async call(job: SessionCallJob): Promise<SessionCallOutcome> {
    if (this.running) throw new PyboxError('session_busy', 'busy');
    if (this.closed) throw new Error('call on a closed sandbox');
    this.running = true;
    this.calls.push(job);
    try {
      for (const f of job.files) this.files.set(f.path, f.data);
      return await this.interpret(job);
    } finally {
      this.running = false;
    }
  }

  private async interpret(job: SessionCallJob): Promise<SessionCallOutcome> {
    let stdout = '';
    let stderr = '';
    let stateLost = false;
    const finish = (kind: SessionCallOutcome['kind'], exitCode: number, error: { type: string; message: string; line: number | null } | null, extra: Partial<SessionCallOutcome> = {}) => {
      const report: SandboxReport = { v: 1, phase: 'run', exitCode, signal: null, error, files: [], filesDropped: 0, flooded: false, cpuMs: 1 };
      return { kind, report, stdout: captured(stdout), stderr: captured(stderr), durationMs: 5, stateLost, sandboxLost: false, ...extra };
    };
    const lines = job.code.split('\n');
    for (const [i, raw] of lines.entries()) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      if (line === 'sleep') {
        // Runs until interrupted by the call's signal.
        await new Promise<void>((resolve) => {
          if (job.signal?.aborted || this.gone.signal.aborted) resolve();
          job.signal?.addEventListener('abort', () => resolve(), { once: true });
          this.gone.signal.addEventListener('abort', () => resolve(), { once: true });
        });
        if (this.gone.signal.aborted) return { ...finish('failed', 1, null, { report: null, failure: 'the sandbox was removed' }), sandboxLost: true };
        stderr += 'KeyboardInterrupt\n';
        return finish('cancelled', 1, null, { report: null });
      }
      if (line === 'restart') {
        this.vars.clear();
        stateLost = true;
        return finish('timeout', 1, null, { report: null });
      }
      if (line === 'die') {
        this.die('killed');
        return { ...finish('oom', 137, null, { report: null }), sandboxLost: true };
      }
      const assign = /^(\w+)\s*=\s*(?:(\w+)\s*\+\s*)?(-?\d+)$/.exec(line);
      if (assign) {
        const [, name, base, n] = assign;
        let value = Number(n);
        if (base !== undefined) {
          const b = this.vars.get(base);
          if (b === undefined) return this.nameError(base, i + 1, stdout, stderr, finish);
          value += b;
        }
        this.vars.set(name!, value);
        continue;
      }
      const print = /^print\((\w+)\)$/.exec(line);
      if (print) {
        const value = this.vars.get(print[1]!);
        if (value === undefined) return this.nameError(print[1]!, i + 1, stdout, stderr, finish);
        stdout += `${value}\n`;
        job.onOutput?.('stdout', Buffer.from(`${value}\n`));
        continue;
      }
      stderr += `SyntaxError: cannot read ${line}\n`;
      return finish('finished', 1, { type: 'SyntaxError', message: `cannot read ${line}`, line: i + 1 });
    }
    return finish('finished', 0, null);
  }

  private nameError(
    name: string,
    line: number,
    _stdout: string,
    _stderr: string,
    finish: (kind: SessionCallOutcome['kind'], exitCode: number, error: { type: string; message: string; line: number | null } | null) => SessionCallOutcome,
  ): SessionCallOutcome {
    const outcome = finish('finished', 1, { type: 'NameError', message: `name '${name}' is not defined`, line });
    const text = `${_stderr}NameError: name '${name}' is not defined\n`;
    return { ...outcome, stderr: captured(text) };
  }

  async putFiles(files: Array<{ path: string; data: Buffer }>): Promise<void> {
    for (const f of files) this.files.set(f.path, f.data);
  }

  async getFile(path: string, maxBytes: number): Promise<Buffer> {
    const data = this.files.get(path);
    if (!data) throw new PyboxError('not_found', `no file ${path} in the session's work directory`);
    if (data.length > maxBytes) throw new PyboxError('payload_too_large', `${path} is larger than ${maxBytes} bytes`);
    return data;
  }

  async listFiles(max: number): Promise<SessionFileList> {
    const all = [...this.files].sort(([a], [b]) => a.localeCompare(b)).map(([path, data]) => ({ path, size: data.length }));
    return { files: all.slice(0, max), truncated: all.length > max };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.gone.abort();
    this.endNow('closed');
  }
}

export class FakeSessionSandboxes implements SessionSandboxes {
  readonly opened: FakeSessionSandbox[] = [];
  /** Set to make open reject with it. */
  failWith: unknown;
  /** Set to hold every open until it resolves. */
  gate: Promise<void> | undefined;

  async open(spec: SessionSandboxSpec, signal?: AbortSignal): Promise<SessionSandbox> {
    if (this.failWith !== undefined) throw this.failWith;
    if (this.gate) await this.gate;
    if (signal?.aborted) throw new PyboxError('internal', 'open cancelled');
    const sandbox = new FakeSessionSandbox(spec);
    this.opened.push(sandbox);
    return sandbox;
  }

  byId(id: string): FakeSessionSandbox {
    const found = this.opened.find((s) => s.spec.id === id);
    if (!found) throw new Error(`no fake sandbox ${id}`);
    return found;
  }

  /** Sandboxes opened and not closed. */
  get open_(): FakeSessionSandbox[] {
    return this.opened.filter((s) => !s.closed);
  }

  async drain(): Promise<void> {}
}

// ---- a session stack as compose.ts wires it, over the fake sandboxes ----------------------------

export interface SessionStack {
  time: ManualTime;
  sandboxes: FakeSessionSandboxes;
  manager: SessionManager;
  service: SessionService;
  store: ExecutionStore & { saved: ExecutionResult[] };
  config: Config;
  /** The execution service over the same store (its clamping is the sessions'). */
  executions: DefaultExecutionService;
}

/** A SessionManager and SessionService over fake sandboxes, with `sessions` settings laid over the defaults. */
export function sessionStack(
  over: {
    sessions?: Partial<Config['sessions']>;
    limits?: Partial<Config['limits']>;
    store?: ExecutionStore & { saved: ExecutionResult[] };
    endedMemory?: number;
    /** The hosts the service uses, made from the manager (a cluster's shared hosts, in a test); the manager itself by default. */
    hosts?: (manager: SessionManager) => SessionHosts;
  } = {},
): SessionStack {
  const base = ConfigSchema.parse({});
  const config: Config = { ...base, sessions: { ...base.sessions, ...over.sessions }, limits: { ...base.limits, ...over.limits } };
  const time = new ManualTime();
  const sandboxes = new FakeSessionSandboxes();
  const logger = silentLogger();
  let n = 0;
  const newId = () => `id-${++n}`;
  // One store for both: session calls are found as executions (GET /v1/executions/{id}).
  const store = over.store ?? new ArrayStore();
  const executions = new DefaultExecutionService({
    dispatch: { submit: () => Promise.reject(new Error('not used')) },
    backend: { describe: () => Promise.reject(new Error('not used')), identity: () => ({ runtime: 'runc', image: 'img' }), checks: () => Promise.resolve({ checks: { engine: true, image: true } }) },
    store,
    limits: config.limits,
    clock: time,
    logger,
    newId,
  });
  let service: SessionService | undefined;
  const manager = new SessionManager({
    sandboxes,
    image: 'pybox-python:test',
    runtime: 'runc',
    node: 'node-1',
    config: config.sessions,
    clock: time,
    logger,
    timers: time,
    onEnded: (s, reason) => service?.sessionEnded(s, reason),
  });
  service = new SessionService({ hosts: over.hosts ? over.hosts(manager) : manager, executions, store, config: config.sessions, limits: config.limits, results: { limits: config.limits, clock: time }, clock: time, logger, newId, endedMemory: over.endedMemory, accepting: () => executions.accepting });
  return { time, sandboxes, manager, service, store, config, executions };
}

export function silentLogger(): Logger {
  const nothing = () => {};
  return { debug: nothing, info: nothing, warn: nothing, error: nothing };
}

/** An ExecutionStore keeping results in an array (what the session tests look at). */
export class ArrayStore implements ExecutionStore {
  readonly saved: ExecutionResult[] = [];
  readonly meters = new Map<string, ExecutionMeter>();
  async save(result: ExecutionResult, meter?: ExecutionMeter): Promise<void> {
    this.saved.push(result);
    if (meter) this.meters.set(result.id, meter);
  }
  async get(id: string, tenant?: string): Promise<ExecutionResult | undefined> {
    return this.saved.find((r) => r.id === id && (tenant === undefined || this.meters.get(r.id)?.tenant === tenant));
  }
  async list(): Promise<HistoryPage> {
    return { items: [...this.saved].reverse(), nextCursor: null };
  }
  async stats(): Promise<Stats> {
    throw new Error('not used');
  }
  async usage(): Promise<TenantUsage[]> {
    return [];
  }
  async healthy(): Promise<boolean> {
    return true;
  }
  async close(): Promise<void> {}
}
