// The life of one sandbox, in one place. A sandbox is one container that serves at most one job
// and is then removed. Its states, and what moves it from one to the next:
//
//   preparing ──ready frame──▶ ready ──run()──▶ running ──report──────────────▶ settled ──▶ removing ──▶ removed
//       │                        │                 │ └─stream ends / SIGKILL─▶ exiting ──▶ settled
//       │ run()                  │                 └─deadline, abort, flood, violation ─▶ settled
//       ▼                        │
//    claimed (a job waits) ──ready frame──▶ running
//       │ └─deadline or abort: the job gives up, the sandbox goes back to preparing (a pool may keep it)
//       └─stream ends ─▶ exiting; create/attach/start fails or start too slow ─▶ settled (job told why)
//
//   preparing / ready ──create/attach/start fails, start too slow, stream ends──▶ failed
//   any state ──remove()──▶ removing ──▶ removed (a job still attached is told first)
//
// The deadline of a job is the caller's whole budget (see SandboxRunner.run): it bounds the wait for
// the sandbox as well as the code's run. remove() is the only way out and every owner calls it
// (the runner in a finally, the pool when it drops one); its promise resolves once the container is
// really gone (or its removal failed and was logged), and the factory's drain() waits for all of them.
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Config } from '../config/schema.ts';
import { PyboxError } from '../core/errors.ts';
import { NO_OBSERVER, type Clock, type Logger, type Observer } from '../core/ports.ts';
import type { OutcomeKind, SandboxConfig, SandboxJob, SandboxOutcome } from '../core/sandbox.ts';
import { closeSocket, listenToRunner } from './attached-socket.ts';
import { containerSpec } from './container-spec.ts';
import type { ContainerEngine, SandboxContainer } from './docker-engine.ts';
import { CaseCollector, cancelledBeforeStart, casesOf } from './cases.ts';
import { classifyExit, classifyReport, readExitFacts } from './outcome.ts';
import { CappedCapture } from './output.ts';
import { FRAME_CASE, FRAME_READY, FRAME_REPORT, FRAME_STDOUT, FrameParser, maxCaseFrameBytes, maxOutputsReportBytes, parseCaseReport, parseReport, type RunnerReport } from './protocol.ts';
import { DEFAULT_REMOVAL_SETTINGS, RemovalQueue, type RemovalSettings } from './removals.ts';

export interface SandboxSettings {
  instance: string;
  sandbox: Config['sandbox'];
  outputBytes: number;
  floodBytes: number;
  outputFilesMax: number;
  outputFilesMaxBytes: number;
  /** Rich outputs (figures) a run returns at most, and the bytes of each (limits.outputsMax, outputsMaxBytes). */
  outputsMax: number;
  outputsMaxBytes: number;
  /** How long a sandbox may take from create to its runner's ready frame before it counts as failed. */
  startTimeoutMs: number;
  removals?: RemovalSettings;
}

export type SandboxState = 'preparing' | 'claimed' | 'ready' | 'running' | 'exiting' | 'settled' | 'failed' | 'removing' | 'removed';

/** What a job brings to a sandbox. */
export interface SandboxRun {
  job: SandboxJob;
  payload: Buffer;
  /** Clock time by which the job must have its outcome (the caller's timeoutMs, counted from run()). */
  deadline: number;
}

/** How long to wait for a stopped container's final state (OOM or crash), at most. */
const EXIT_WAIT_MS = 5_000;
/** Past the deadline, the final state is still worth this long a wait. */
const EXIT_GRACE_MS = 750;
/** The runner relays in 64 KiB chunks; anything larger is not from the runner. */
const MAX_FRAME_BYTES = 1024 * 1024;
/** Frames kept before a job takes the sandbox; a waiting runner sends almost none. */
const MAX_EARLY_FRAMES = 256;

interface Attached {
  run: SandboxRun;
  stdout: CappedCapture;
  stderr: CappedCapture;
  /** With test cases: the cases reported so far. */
  cases: CaseCollector | null;
  /** When the payload was sent: the code's own time starts there. */
  startedAt: number;
  /** The job's output listener, until it throws once (then it is told nothing more). */
  onOutput: SandboxJob['onOutput'];
  timer: NodeJS.Timeout | undefined;
  onAbort: () => void;
  resolve: (o: SandboxOutcome) => void;
  reject: (e: unknown) => void;
}

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

export class Sandbox {
  state: SandboxState = 'preparing';
  /** Why it failed (state 'failed'), for the pool's log. */
  failure: string | null = null;
  readonly preparedAt: number;
  private container: SandboxContainer | null = null;
  private socket: Duplex | null = null;
  private readonly created: Promise<SandboxContainer | null>;
  private readonly runnerStderr = new CappedCapture(8192);
  private early: Array<[number, Buffer]> = [];
  private attached: Attached | null = null;
  private prepareError: unknown = null;
  private startTimer: NodeJS.Timeout | undefined;
  private removal: Promise<void> | null = null;
  /** Whether the container stopped on its own, so its removal may wait its turn. */
  private stoppedByItself = false;
  private readonly watchers = new Set<(state: SandboxState, previous: SandboxState) => void>();
  private startedWith: (why: string | null) => void = () => {};
  /**
   * Resolves once the start is decided: null when the runner said it is ready, else why it could
   * not start (engine error, start timeout, stream ended first). Never, if removed before either.
   */
  readonly started: Promise<string | null> = new Promise((resolve) => {
    this.startedWith = resolve;
  });

  constructor(
    readonly id: string,
    readonly config: SandboxConfig,
    private readonly deps: {
      engine: ContainerEngine;
      settings: SandboxSettings;
      logger: Logger;
      clock: Clock;
      removals: RemovalQueue;
      changed: (s: Sandbox) => void;
    },
  ) {
    this.preparedAt = deps.clock.now();
    this.startTimer = setTimeout(() => this.startFailed(`the sandbox did not become ready within ${deps.settings.startTimeoutMs} ms`), deps.settings.startTimeoutMs);
    this.startTimer.unref();
    this.created = this.prepare();
  }

  /** Still waiting for its first job (a pool may hold it). */
  get unused(): boolean {
    return this.state === 'preparing' || this.state === 'ready';
  }

  /** Its container stopped on its own after the run: nothing of the code can still be running in it. */
  get stoppedOnItsOwn(): boolean {
    return this.stoppedByItself;
  }

  /** Subscribes to state changes until the callback returns true. */
  watch(fn: (state: SandboxState, previous: SandboxState) => boolean): void {
    const w = (state: SandboxState, previous: SandboxState) => {
      if (fn(state, previous)) this.watchers.delete(w);
    };
    this.watchers.add(w);
  }

  // ---- preparation ---------------------------------------------------------------------------

  private async prepare(): Promise<SandboxContainer | null> {
    const { engine, settings } = this.deps;
    try {
      this.container = await engine.create(
        containerSpec({ id: this.id, instance: settings.instance, sandbox: settings.sandbox, limits: this.config, ...this.config }),
      );
    } catch (e) {
      this.startFailed(messageOf(e), e);
      return null;
    }
    if (!this.alive()) return this.container;
    try {
      this.socket = await this.container.attach();
      this.listen(this.socket);
      if (!this.alive()) return this.container;
      await this.container.start();
    } catch (e) {
      this.startFailed(messageOf(e), e);
    }
    return this.container;
  }

  private alive(): boolean {
    return this.state !== 'removing' && this.state !== 'removed' && this.state !== 'failed' && this.state !== 'settled';
  }

  private listen(socket: Duplex): void {
    const limits = {
      maxFrameBytes: MAX_FRAME_BYTES,
      maxReportBytes:
        Math.ceil((this.deps.settings.outputFilesMaxBytes * 4) / 3) + maxOutputsReportBytes(this.deps.settings.outputsMax, this.deps.settings.outputsMaxBytes) + 2 * 1024 * 1024,
      maxCaseBytes: maxCaseFrameBytes(this.deps.settings.outputBytes),
    };
    const parser = new FrameParser(limits, (kind, data) => (kind === FRAME_READY ? this.onReady() : this.onFrame(kind, data)));
    listenToRunner(socket, parser, this.runnerStderr, {
      violation: (msg) => this.onViolation(msg),
      ended: (e) => this.onEnded(e ? `the connection to the sandbox failed: ${e.message}` : 'the sandbox stopped without a report'),
    });
  }

  private onReady(): void {
    clearTimeout(this.startTimer);
    this.startedWith(null);
    if (this.state === 'preparing') this.to('ready');
    else if (this.state === 'claimed') this.send();
  }

  /** Preparation failed, or took longer than the start timeout. */
  private startFailed(reason: string, error?: unknown): void {
    clearTimeout(this.startTimer);
    this.startedWith(reason);
    if (this.state === 'preparing' || this.state === 'ready') {
      this.failure = reason;
      this.prepareError = error ?? null;
      this.closeSocket();
      this.to('failed');
    } else if (this.state === 'claimed') {
      // An engine error reaches the caller as itself (engine_unavailable, image_missing...).
      if (error !== undefined) this.rejectJob(error);
      else this.settle('failed', null, reason, 0);
    }
  }

  // ---- a job ---------------------------------------------------------------------------------

  /**
   * Runs a job in this sandbox: waits for it to be ready (claimed), sends the payload (running),
   * reads frames until the report, the deadline, an abort, a flood or the end of the stream.
   * Rejects only with an engine error that prevented the sandbox from starting.
   */
  run(run: SandboxRun): Promise<SandboxOutcome> {
    if (this.state === 'failed') return Promise.reject(this.prepareError ?? new Error(this.failure ?? 'the sandbox failed'));
    if (this.state !== 'preparing' && this.state !== 'ready') return Promise.reject(new Error(`sandbox ${this.id} cannot take a job while ${this.state}`));
    return new Promise<SandboxOutcome>((resolve, reject) => {
      if (run.job.signal?.aborted) {
        resolve(cancelledBeforeStart(this.deps.settings.outputBytes, run.job.tests));
        return;
      }
      const tests = casesOf(run.job.tests);
      const a: Attached = {
        run,
        stdout: new CappedCapture(this.deps.settings.outputBytes),
        stderr: new CappedCapture(this.deps.settings.outputBytes),
        cases: tests ? new CaseCollector(tests.length, this.deps.settings.outputBytes) : null,
        startedAt: this.deps.clock.now(),
        onOutput: run.job.onOutput,
        timer: undefined,
        onAbort: () => this.abort(),
        resolve,
        reject,
      };
      this.attached = a;
      run.job.signal?.addEventListener('abort', a.onAbort, { once: true });
      if (this.state === 'ready') {
        this.send();
      } else {
        this.to('claimed');
        this.armDeadline();
      }
    });
  }

  private armDeadline(): void {
    const a = this.attached;
    if (!a) return;
    clearTimeout(a.timer);
    a.timer = setTimeout(() => this.expire(), Math.max(0, a.run.deadline - this.deps.clock.now()));
  }

  private send(): void {
    const a = this.attached;
    if (!a || !this.socket) return;
    this.to('running');
    a.startedAt = this.deps.clock.now();
    this.armDeadline();
    const early = this.early;
    this.early = [];
    for (const [kind, data] of early) this.onFrame(kind, data);
    if (this.state === 'running') this.socket.write(a.run.payload);
  }

  private onFrame(kind: number, data: Buffer): void {
    if (this.state !== 'running') {
      if ((this.state === 'preparing' || this.state === 'ready' || this.state === 'claimed') && this.early.length < MAX_EARLY_FRAMES) this.early.push([kind, Buffer.from(data)]);
      return;
    }
    const a = this.attached as Attached;
    if (kind === FRAME_REPORT) {
      let report: RunnerReport;
      try {
        report = parseReport(data);
      } catch (e) {
        this.onViolation(messageOf(e));
        return;
      }
      if (a.cases && report.phase === 'run' && !a.cases.complete) {
        this.onViolation(`the runner reported the end after ${a.cases.reported} of ${a.cases.count} test cases`);
        return;
      }
      // outcome.ts decides: at once, or (a failed gVisor run that may have hit the memory limit)
      // once the engine can say, after the container stopped.
      const verdict = classifyReport(a.run.job.runtime, report);
      if (verdict === 'output_limit') this.settle('output_limit', report);
      else if (verdict === 'wait_for_exit') this.exit(report, 'the code ended abnormally');
      else {
        this.stoppedByItself = true;
        this.settle(verdict, report);
      }
      return;
    }
    if (kind === FRAME_CASE) {
      try {
        if (!a.cases) throw new Error('a test case report for a job without test cases');
        a.cases.take(parseCaseReport(data));
      } catch (e) {
        this.onViolation(messageOf(e));
      }
      return;
    }
    const stream = kind === FRAME_STDOUT ? 'stdout' : 'stderr';
    const capture = stream === 'stdout' ? a.stdout : a.stderr;
    const kept = capture.push(data);
    if (kept !== null && a.onOutput) this.tell(a, stream, kept);
    if (capture.totalBytes > this.deps.settings.floodBytes) this.settle('output_limit', null);
  }

  /**
   * Hands kept output to the job's listener. A listener that throws is a bug on the caller's side:
   * logged once and told nothing more, never allowed to end the run. It may have settled the run
   * meanwhile (an abort fired synchronously from inside it), which the checks after it see.
   */
  private tell(a: Attached, stream: 'stdout' | 'stderr', data: Buffer): void {
    try {
      a.onOutput?.(stream, data);
    } catch (e) {
      a.onOutput = undefined;
      this.deps.logger.warn('an output listener failed; the run goes on without it', { id: a.run.job.id, error: messageOf(e) });
    }
  }

  private onViolation(msg: string): void {
    if (this.state === 'running' || this.state === 'claimed' || this.state === 'exiting') {
      this.deps.logger.warn('sandbox protocol violation', { id: this.attached?.run.job.id ?? this.id, error: msg });
      this.settle('failed', null, `sandbox protocol violation: ${msg}`);
    } else {
      this.startFailed(`sandbox protocol violation: ${msg}`);
    }
  }

  private onEnded(reason: string): void {
    if (this.state === 'preparing' || this.state === 'ready') this.startFailed(reason);
    else if (this.state === 'claimed') {
      this.startedWith(reason);
      this.exit(null, reason);
    } else if (this.state === 'running') this.exit(null, reason);
  }

  /** The deadline passed: while the sandbox still starts, nothing ran; while the code runs, it is stopped. */
  private expire(): void {
    const a = this.attached;
    if (!a) return;
    const now = this.deps.clock.now();
    if (this.state === 'claimed') {
      this.letGo(
        this.outcome('timeout', null, a, 0, `the time limit of ${a.run.job.limits.timeoutMs} ms ran out while the sandbox was still starting; the code did not run`),
      );
    } else if (this.state === 'running') {
      // A run stopped at its limit ran at least what was left of it (timers and clocks differ by a ms).
      this.settle('timeout', null, undefined, Math.max(now - a.startedAt, a.run.deadline - a.startedAt));
    }
  }

  private abort(): void {
    const a = this.attached;
    if (!a) return;
    if (this.state === 'claimed') this.letGo(this.outcome('cancelled', null, a, 0, 'cancelled while the sandbox was starting; the code did not run'));
    else if (this.state === 'running' || this.state === 'exiting') this.settle('cancelled', null, 'cancelled by the caller while the code ran');
  }

  /** The job leaves before its code ran; the sandbox goes on preparing for whoever takes it next. */
  private letGo(outcome: SandboxOutcome): void {
    const a = this.detach();
    if (!a) return;
    this.early = [];
    this.to('preparing');
    a.resolve(outcome);
  }

  /** The stream ended (or the runner reported a SIGKILL): read the container's final state, then classify. */
  private exit(report: RunnerReport | null, streamEnd: string): void {
    const a = this.attached;
    if (!a || (this.state !== 'running' && this.state !== 'claimed')) return;
    const ran = this.state === 'running';
    this.to('exiting');
    clearTimeout(a.timer); // the container has stopped or is stopping: a timeout no longer applies
    const now = this.deps.clock.now();
    const durationMs = ran ? now - a.startedAt : 0;
    const container = this.container;
    // The caller's budget bounds this wait too, with a little grace to learn why it stopped.
    const waitMs = Math.max(100, Math.min(EXIT_WAIT_MS, a.run.deadline + EXIT_GRACE_MS - now));
    void (async () => {
      const { exitCode, state, engineLost } = await readExitFacts(container, waitMs, report, (e) =>
        this.deps.logger.warn('could not read the final state of a sandbox', { id: a.run.job.id, error: e }),
      );
      if (this.state !== 'exiting') return; // cancelled meanwhile
      this.stoppedByItself = exitCode !== null;
      const verdict = classifyExit({
        runtime: a.run.job.runtime,
        report,
        exitCode,
        state,
        engineLost,
        streamEnd,
        runnerStderr: this.runnerStderr.text(),
        pidsLimitRunsc: this.deps.settings.sandbox.pidsLimitRunsc,
      });
      // The time spent waiting here is ours, not the user's: the duration is from before it.
      if (verdict.kind === 'failed') this.settle('failed', null, verdict.failure, durationMs);
      else this.settle(verdict.kind, verdict.report, undefined, durationMs);
    })();
  }

  private settle(kind: OutcomeKind, report: RunnerReport | null, failure?: string, durationMs?: number): void {
    if (this.state !== 'running' && this.state !== 'claimed' && this.state !== 'exiting') return;
    const a = this.detach();
    if (!a) return;
    this.closeSocket();
    this.to('settled');
    a.resolve(this.outcome(kind, report, a, durationMs ?? this.deps.clock.now() - a.startedAt, failure));
  }

  private rejectJob(e: unknown): void {
    const a = this.detach();
    if (!a) return;
    this.closeSocket();
    this.to('settled');
    a.reject(e);
  }

  private detach(): Attached | null {
    const a = this.attached;
    if (!a) return null;
    this.attached = null;
    clearTimeout(a.timer);
    a.run.job.signal?.removeEventListener('abort', a.onAbort);
    return a;
  }

  private outcome(kind: OutcomeKind, report: RunnerReport | null, a: Attached, durationMs: number, failure?: string): SandboxOutcome {
    const o: SandboxOutcome = { kind, report, stdout: a.stdout, stderr: a.stderr, durationMs };
    if (failure !== undefined) o.failure = failure;
    // The case running when the sandbox itself ran out of memory is that case's oom (gVisor kills
    // the whole sandbox at the limit); every other case the sandbox did not reach is not_run.
    if (a.cases) o.cases = a.cases.outcomes(kind === 'oom' && !a.cases.complete ? 'oom' : undefined);
    return o;
  }

  // ---- the end -------------------------------------------------------------------------------

  /**
   * Kills and removes the container, whatever the state; the same promise for every caller. It
   * resolves once the container is gone, or its removal failed (logged; the reaper retries).
   */
  remove(): Promise<void> {
    if (this.removal) return this.removal;
    clearTimeout(this.startTimer);
    if (this.attached) this.settle('failed', null, 'the sandbox was removed while in use');
    // Only a container that stopped by itself may wait its turn; anything else may still run code.
    const urgent = !this.stoppedByItself;
    this.closeSocket();
    const removal = (async () => {
      const container = await this.created;
      if (container) await this.deps.removals.remove(container, this.id, urgent);
    })().finally(() => this.to('removed'));
    this.removal = removal;
    this.to('removing');
    return removal;
  }

  private closeSocket(): void {
    if (this.socket) closeSocket(this.socket);
  }

  private to(state: SandboxState): void {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    for (const w of [...this.watchers]) w(state, previous);
    this.deps.changed(this);
  }
}

/** Makes sandboxes, and removes them: the one place that knows every sandbox alive. */
export class SandboxFactory {
  private readonly alive = new Set<Sandbox>();
  private readonly removals: RemovalQueue;
  private readonly removing = new Set<Promise<void>>();

  constructor(
    private readonly engine: ContainerEngine,
    readonly settings: SandboxSettings,
    private readonly logger: Logger,
    private readonly clock: Clock,
    private readonly observer: Observer = NO_OBSERVER,
  ) {
    // Removals wait only while a job waits for a sandbox to start: then they would slow exactly
    // what a caller is waiting for. Refills of the pool in the background do not hold them back:
    // a removal put off until the pool is full would land on the next run instead (measured).
    this.removals = new RemovalQueue(logger, () => this.waiting() > 0, settings.removals ?? DEFAULT_REMOVAL_SETTINGS);
  }

  /** Starts preparing a sandbox for this configuration (create → attach → start, then ready). */
  prepare(config: SandboxConfig, id: string = `warm-${randomUUID()}`): Sandbox {
    const sandbox = new Sandbox(id, config, {
      engine: this.engine,
      settings: this.settings,
      logger: this.logger,
      clock: this.clock,
      removals: this.removals,
      changed: (s) => this.changed(s),
    });
    this.alive.add(sandbox);
    void sandbox.started.then((why) => this.observer.sandboxStart(config.runtime, why === null));
    return sandbox;
  }

  /** Removes a sandbox; the promise is also waited for by drain(). */
  remove(sandbox: Sandbox): Promise<void> {
    const p = sandbox.remove();
    if (!this.removing.has(p)) {
      this.removing.add(p);
      void p.finally(() => this.removing.delete(p));
    }
    return p;
  }

  /** Sandboxes between create and ready right now. */
  starting(): number {
    let n = 0;
    for (const s of this.alive) if (s.state === 'preparing' || s.state === 'claimed') n++;
    return n;
  }

  /** Sandboxes a job waits for (claimed before they were ready). */
  waiting(): number {
    let n = 0;
    for (const s of this.alive) if (s.state === 'claimed') n++;
    return n;
  }

  /** Sandboxes not yet removed. */
  get size(): number {
    return this.alive.size;
  }

  /** Resolves when every removal asked for so far (and any asked for meanwhile) has finished. */
  async drain(): Promise<void> {
    while (this.removing.size > 0) {
      const waiting = Promise.allSettled([...this.removing]);
      await this.removals.drain();
      await waiting;
    }
    await this.removals.drain();
  }

  private changed(s: Sandbox): void {
    if (s.state === 'failed' || s.state === 'removing') this.remove(s);
    if (s.state === 'removed') this.alive.delete(s);
    if (s.state !== 'claimed') this.removals.pump();
  }
}
