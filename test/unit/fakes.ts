// Fakes and small helpers shared by the engine-* and core-* unit tests. No Docker, no network.
import { Duplex } from 'node:stream';
import type Docker from 'dockerode';
import { extract, type Header } from 'tar-stream';
import { ConfigSchema, type Config } from '../../src/config/schema.ts';
import type { Clock, EngineProbe, ExecutionMeter, ExecutionStore, Logger, Sandboxes } from '../../src/core/ports.ts';
import { EXECUTION_STATUSES, type ExecutionResult, type ExecutionStatus, type HistoryPage, type RuntimeName, type Stats, type TenantUsage } from '../../src/core/schemas.ts';
import type { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { DefaultExecutionService } from '../../src/core/execution-service.ts';
import { LocalBackend } from '../../src/core/local-backend.ts';
import { LocalDispatch } from '../../src/core/local-dispatch.ts';
import type { ContainerEngine, ContainerState, SandboxContainer } from '../../src/engine/docker-engine.ts';
import type { LabelledContainer } from '../../src/engine/reaper.ts';
import { CappedCapture } from '../../src/engine/output.ts';
import { FRAME_READY, type RunnerReport } from '../../src/engine/protocol.ts';
import type { OutcomeKind, SandboxOutcome } from '../../src/core/sandbox.ts';
import type { SandboxSettings } from '../../src/engine/sandbox.ts';

/** The configuration with every default, as the service would load it from an empty file. */
export const defaultConfig = (): Config => ConfigSchema.parse({});

/** Sandbox settings for tests of the engine and the pool: small caps, the default sandbox. */
export const testSandboxSettings = (over: Partial<SandboxSettings> = {}): SandboxSettings => ({
  instance: 'pybox-test',
  sandbox: defaultConfig().sandbox,
  outputBytes: 100,
  floodBytes: 1000,
  outputFilesMax: 7,
  outputFilesMaxBytes: 4096,
  outputsMax: 3,
  outputsMaxBytes: 4096,
  startTimeoutMs: 500,
  ...over,
});

export class ManualClock implements Clock {
  constructor(public t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

export type LogLevelName = 'debug' | 'info' | 'warn' | 'error';
export interface LogEntry {
  level: LogLevelName;
  msg: string;
  fields: Record<string, unknown> | undefined;
}

export class RecordingLogger implements Logger {
  readonly entries: LogEntry[] = [];
  private add(level: LogLevelName, msg: string, fields?: Record<string, unknown>): void {
    this.entries.push({ level, msg, fields });
  }
  debug(msg: string, fields?: Record<string, unknown>): void {
    this.add('debug', msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.add('info', msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.add('warn', msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.add('error', msg, fields);
  }
  at(level: LogLevelName): LogEntry[] {
    return this.entries.filter((e) => e.level === level);
  }
}

// ---- wire encoding ---------------------------------------------------------------------------

const asBuffer = (p: Buffer | string): Buffer => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p);

/** One runner frame: [kind][u32 BE length][payload]. */
export function runnerFrame(kind: number, payload: Buffer | string): Buffer {
  const body = asBuffer(payload);
  const head = Buffer.alloc(5);
  head[0] = kind;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** One Docker multiplexing frame: [stream][0 0 0][u32 BE length][payload]. */
export function dockerFrame(stream: number, payload: Buffer | string): Buffer {
  const body = asBuffer(payload);
  const head = Buffer.alloc(8);
  head[0] = stream;
  head.writeUInt32BE(body.length, 4);
  return Buffer.concat([head, body]);
}

/** Runner frames as the container's stdout carries them: wrapped in one Docker stdout frame. */
export const onStdout = (...frames: Buffer[]): Buffer => dockerFrame(1, Buffer.concat(frames));

export const userStdout = (text: Buffer | string): Buffer => onStdout(runnerFrame(1, text));
export const userStderr = (text: Buffer | string): Buffer => onStdout(runnerFrame(2, text));
export const reportFrame = (report: unknown): Buffer => onStdout(runnerFrame(3, JSON.stringify(report)));

export type RunReport = Extract<RunnerReport, { phase: 'run' }>;

export function runReport(overrides: Partial<RunReport> = {}): RunReport {
  return { v: 1, phase: 'run', exitCode: 0, signal: null, error: null, files: [], filesDropped: 0, flooded: false, ...overrides };
}

// ---- tar ----------------------------------------------------------------------------------------

export interface TarEntry {
  header: Header;
  data: Buffer;
}

export async function readTar(archive: Buffer): Promise<TarEntry[]> {
  const ex = extract();
  ex.end(archive);
  const entries: TarEntry[] = [];
  for await (const entry of ex) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(Buffer.from(chunk as Uint8Array));
    entries.push({ header: entry.header, data: Buffer.concat(chunks) });
  }
  return entries;
}

// ---- a fake Docker engine -----------------------------------------------------------------------

/** The attached socket: what the runner writes is recorded, what the "container" sends is pushed. */
export class FakeSocket extends Duplex {
  readonly writes: Buffer[] = [];
  finished = false;
  readonly firstWrite: Promise<Buffer>;
  private onFirstWrite: ((b: Buffer) => void) | undefined;

  constructor() {
    super();
    this.firstWrite = new Promise<Buffer>((resolve) => {
      this.onFirstWrite = resolve;
    });
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writes.push(chunk);
    this.onFirstWrite?.(chunk);
    this.onFirstWrite = undefined;
    cb();
  }

  send(...chunks: Buffer[]): void {
    for (const c of chunks) this.push(c);
  }

  /** The container's output ends (the attach stream sees EOF). */
  finish(): void {
    this.finished = true;
    this.push(null);
  }
}

export interface FakeContainerOptions {
  attachError?: Error;
  startError?: Error;
  /** What wait() resolves with (the exit code, or null for "did not stop in time"). */
  waitResult?: number | null;
  state?: Partial<ContainerState>;
  /** The state from the second read on (an engine that records the OOM kill late). */
  laterState?: Partial<ContainerState>;
  /** Runs inside wait(), e.g. to advance a clock. */
  onWait?: () => void;
  onStart?: () => void;
  /** The runner never says it is ready (a hung start). */
  neverReady?: boolean;
  /** The sandbox dies as it starts, before its runner is ready (its stream ends). */
  dieAtStart?: boolean;
  /** start() does not resolve before this promise does. */
  startGate?: Promise<void>;
  /** wait() does not resolve before this promise does. */
  waitGate?: Promise<void>;
  removeError?: Error;
  /** remove() does not finish before this promise does. */
  removeGate?: Promise<void>;
}

export class FakeContainer implements SandboxContainer {
  readonly id: string;
  readonly socket = new FakeSocket();
  readonly calls: string[] = [];
  readonly waitTimeouts: number[] = [];

  constructor(
    id: string,
    private readonly opts: FakeContainerOptions = {},
    /** The container's name, from its spec. */
    readonly name = id,
  ) {
    this.id = id;
  }

  count(call: string): number {
    return this.calls.filter((c) => c === call).length;
  }

  async attach(): Promise<Duplex> {
    this.calls.push('attach');
    if (this.opts.attachError) throw this.opts.attachError;
    return this.socket;
  }

  async start(): Promise<void> {
    this.calls.push('start');
    this.opts.onStart?.();
    if (this.opts.startGate) await this.opts.startGate;
    if (this.opts.startError) throw this.opts.startError;
    if (this.opts.dieAtStart) {
      this.socket.finish();
      return;
    }
    // As the real runner does once it waits for its payload.
    if (!this.opts.neverReady && !this.socket.finished) this.socket.send(onStdout(runnerFrame(FRAME_READY, '')));
  }

  async wait(timeoutMs: number): Promise<number | null> {
    this.calls.push('wait');
    this.waitTimeouts.push(timeoutMs);
    this.opts.onWait?.();
    if (this.opts.waitGate) await this.opts.waitGate;
    return this.opts.waitResult === undefined ? 0 : this.opts.waitResult;
  }

  async state(): Promise<ContainerState> {
    const later = this.opts.laterState !== undefined && this.calls.includes('state');
    this.calls.push('state');
    return { running: false, exitCode: this.opts.waitResult ?? 0, oomKilled: false, ...(later ? this.opts.laterState : this.opts.state) };
  }

  async remove(): Promise<void> {
    this.calls.push('remove');
    if (this.opts.removeGate) await this.opts.removeGate;
    this.calls.push('removed');
    if (this.opts.removeError) throw this.opts.removeError;
  }
}

export class FakeEngine implements ContainerEngine {
  readonly specs: Docker.ContainerCreateOptions[] = [];
  readonly containers: FakeContainer[] = [];
  createError: Error | undefined;
  pingResult = true;
  runtimeNames: string[] = ['runc'];
  images = new Set<string>();
  /** Resolves with the first container created. */
  readonly created = deferred<FakeContainer>();
  /** Options for the next container created only (then back to the engine's own). */
  nextOptions: FakeContainerOptions | undefined;

  constructor(private readonly containerOptions: FakeContainerOptions = {}) {}

  get last(): FakeContainer {
    const c = this.containers.at(-1);
    if (!c) throw new Error('no container was created');
    return c;
  }

  async ping(): Promise<boolean> {
    return this.pingResult;
  }
  async runtimes(): Promise<string[]> {
    return this.runtimeNames;
  }
  async imageExists(image: string): Promise<boolean> {
    return this.images.has(image);
  }
  async create(spec: Docker.ContainerCreateOptions): Promise<SandboxContainer> {
    this.specs.push(spec);
    if (this.createError) throw this.createError;
    const c = new FakeContainer(`c${this.containers.length + 1}`, this.nextOptions ?? this.containerOptions, spec.name);
    this.nextOptions = undefined;
    this.containers.push(c);
    this.created.resolve(c);
    return c;
  }
  /** Containers the reaper removed, by id. */
  readonly removedById: string[] = [];
  async listLabelled(_instance: string): Promise<LabelledContainer[]> {
    return this.containers.filter((c) => !this.removedById.includes(c.id) && !c.calls.includes('removed')).map((c) => ({ id: c.id, name: c.name }));
  }
  async removeById(id: string): Promise<void> {
    this.removedById.push(id);
  }
}

// ---- core fakes ---------------------------------------------------------------------------------

export function capture(text: Buffer | string, capBytes = 50_000): CappedCapture {
  const c = new CappedCapture(capBytes);
  const data = asBuffer(text);
  if (data.length > 0) c.push(data);
  return c;
}

export interface OutcomeParts {
  report?: RunnerReport | null;
  stdout?: string;
  stderr?: string;
  durationMs?: number;
  failure?: string;
  capBytes?: number;
}

export function outcome(kind: OutcomeKind, parts: OutcomeParts = {}): SandboxOutcome {
  const o: SandboxOutcome = {
    kind,
    report: parts.report ?? null,
    stdout: capture(parts.stdout ?? '', parts.capBytes),
    stderr: capture(parts.stderr ?? '', parts.capBytes),
    durationMs: parts.durationMs ?? 12.34,
  };
  if (parts.failure !== undefined) o.failure = parts.failure;
  return o;
}

export class MemoryStore implements ExecutionStore {
  readonly saved: ExecutionResult[] = [];
  /** The meter of each saved result, by id. */
  readonly meters = new Map<string, ExecutionMeter>();
  saveError: Error | undefined;
  isHealthy = true;

  async save(result: ExecutionResult, meter: ExecutionMeter = { tenant: 'local', outputBytes: 0 }): Promise<void> {
    if (this.saveError) throw this.saveError;
    this.saved.push(result);
    this.meters.set(result.id, meter);
  }
  private visible(tenant: string | undefined): ExecutionResult[] {
    return this.saved.filter((r) => tenant === undefined || this.meters.get(r.id)?.tenant === tenant);
  }
  async get(id: string, tenant?: string): Promise<ExecutionResult | undefined> {
    return this.visible(tenant).find((r) => r.id === id);
  }
  async list(query: { limit: number; status?: ExecutionStatus | undefined; tenant?: string | undefined }): Promise<HistoryPage> {
    const items = [...this.visible(query.tenant)].reverse().filter((r) => !query.status || r.status === query.status);
    return { items: items.slice(0, query.limit).map(({ outputs: _outputs, ...item }) => item), nextCursor: null };
  }
  async stats(tenant?: string): Promise<Stats> {
    const rows = this.visible(tenant);
    const byStatus = Object.fromEntries(EXECUTION_STATUSES.map((st) => [st, rows.filter((r) => r.status === st).length]));
    return { total: rows.length, byStatus: byStatus as Stats['byStatus'], successRate: null, meanDurationMs: null, p50DurationMs: null, p95DurationMs: null };
  }
  async usage(query: { tenant?: string | undefined }): Promise<TenantUsage[]> {
    const out = new Map<string, TenantUsage>();
    for (const r of this.visible(query.tenant)) {
      const meter = this.meters.get(r.id) as ExecutionMeter;
      let u = out.get(meter.tenant);
      if (!u) {
        u = { tenant: meter.tenant, executions: 0, byStatus: Object.fromEntries(EXECUTION_STATUSES.map((st) => [st, 0])) as Stats['byStatus'], wallMs: 0, cpuMs: 0, outputBytes: 0 };
        out.set(meter.tenant, u);
      }
      u.executions++;
      u.byStatus[r.status]++;
      u.wallMs += r.durationMs;
      u.cpuMs += r.cpuMs ?? 0;
      u.outputBytes += meter.outputBytes;
    }
    return [...out.values()];
  }
  async healthy(): Promise<boolean> {
    return this.isHealthy;
  }
  async close(): Promise<void> {}
}

/** A promise with its resolve and reject exposed. */
export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

// ---- the execution service as a node composes it ------------------------------------------------

export interface LocalServiceParts {
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
}

/**
 * The service over this node's sandboxes, wired as src/compose.ts wires it (LocalDispatch,
 * LocalBackend, failed saves reported back to the service), so the core tests exercise that path.
 */
export function localService(parts: LocalServiceParts): DefaultExecutionService {
  const { sandboxes, engine, store, gate, limits, image, runtime, availableRuntimes, clock, logger, newId } = parts;
  const results = { runtime, limits, clock };
  let onRecorded = (_fault: string | null): void => {};
  const dispatch = new LocalDispatch({ sandboxes, gate, store, image, results, logger, onRecorded: (f) => onRecorded(f) });
  const backend = new LocalBackend({ engine, sandboxes, gate, image, runtime, availableRuntimes, defaults: limits.defaults, maxTimeoutMs: limits.max.timeoutMs, logger, newId });
  const service = new DefaultExecutionService({ dispatch, backend, store, limits, clock, logger, newId });
  onRecorded = (f) => service.recorded(f);
  return service;
}
