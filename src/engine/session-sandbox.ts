// A session's sandbox: one container per session, hardened as an execution's (containerSpec, a uid
// of its own), whose runner keeps a live interpreter between calls (pybox_runner/session.py).
//
//   starting ──READY, payload, REPLY (and PUT of the files)──▶ open ──close()──▶ closed
//                                                                │
//                 stream ends, container dies, protocol violation, backstop ──▶ lost (ended resolves)
//
// The runner enforces each call's limits (interrupt, then a fresh interpreter); the host only keeps
// a backstop: a call that has not ended well past its limit and grace kills the whole sandbox.
// Everything that comes out of the container is hostile: frames are bounded and checked, and any
// that breaks the protocol ends the session.
import type { Duplex } from 'node:stream';
import { PyboxError } from '../core/errors.ts';
import type { Clock, Logger } from '../core/ports.ts';
import type { OutcomeKind, SandboxReport } from '../core/sandbox.ts';
import type { SessionCallJob, SessionCallOutcome, SessionSandbox, SessionSandboxes, SessionSandboxSpec } from '../core/sessions.ts';
import type { SessionFileList } from '../core/schemas.ts';
import { buildSessionPayload, filesArchive } from './archive.ts';
import { closeSocket, listenToRunner } from './attached-socket.ts';
import { containerSpec } from './container-spec.ts';
import type { ContainerEngine, SandboxContainer } from './docker-engine.ts';
import { classifyExit, readExitFacts } from './outcome.ts';
import { CappedCapture } from './output.ts';
import {
  FRAME_CALL_END,
  FRAME_READY,
  FRAME_REPLY,
  FRAME_REPORT,
  FRAME_STDERR,
  FRAME_STDOUT,
  FrameParser,
  HOST_CALL,
  HOST_GET,
  HOST_INTERRUPT,
  HOST_LIST,
  HOST_PUT,
  encodeHostFrame,
  maxCallEndFrameBytes,
  parseCallEnd,
  parseReply,
  parseReport,
  type CallEnd,
  type HostFrameKind,
  type Reply,
} from './protocol.ts';
import type { SandboxSettings } from './sandbox.ts';

export interface SessionSandboxesDeps {
  /**
   * Creates the containers. Pass the same DistinctUids the SandboxFactory uses: a session's
   * container then never shares a uid with another live sandbox (session or execution).
   */
  engine: ContainerEngine;
  settings: SandboxSettings;
  /** How long an interrupted call may take to stop before its interpreter is restarted (sessions.interruptGraceMs). */
  interruptGraceMs: number;
  logger: Logger;
  clock: Clock;
}

/** Past a call's limit and grace, how long the runner gets to restart its interpreter and say so. */
export const BACKSTOP_MARGIN_MS = 10_000;
/** How long the runner gets to answer a PUT, GET or LIST, or its payload. */
const REPLY_TIMEOUT_MS = 30_000;
/** How long a lost sandbox's final state is waited for (to tell a memory kill from a failure). */
const EXIT_WAIT_MS = 5_000;
/** The runner relays output in 64 KiB chunks. */
const MAX_OUTPUT_FRAME_BYTES = 1024 * 1024;
/** Output the runner may add to a call's streams beyond floodBytes (its own syntax error report). */
const FLOOD_SLACK_BYTES = 256 * 1024;
/** Replies other than a file's bytes: ok, an error message, or a listing (the runner keeps those under 4 MiB). */
const SMALL_REPLY_BYTES = 64 * 1024;
const LIST_REPLY_BYTES = 4 * 1024 * 1024 + 64 * 1024;
export const SESSION_LABEL = 'pybox.session';

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

export class EngineSessionSandboxes implements SessionSandboxes {
  private readonly removals = new Set<Promise<void>>();

  constructor(private readonly deps: SessionSandboxesDeps) {}

  async open(spec: SessionSandboxSpec, signal?: AbortSignal): Promise<SessionSandbox> {
    const sandbox = new EngineSessionSandbox(spec, this.deps, (p) => this.track(p));
    try {
      await sandbox.start(signal);
      return sandbox;
    } catch (e) {
      await sandbox.close();
      throw e;
    }
  }

  async drain(): Promise<void> {
    while (this.removals.size > 0) await Promise.allSettled([...this.removals]);
  }

  private track(p: Promise<void>): void {
    this.removals.add(p);
    void p.finally(() => this.removals.delete(p));
  }
}

interface PendingReply {
  maxBytes: number;
  timer: NodeJS.Timeout;
  resolve: (r: Reply) => void;
  reject: (e: unknown) => void;
}

interface RunningCall {
  job: SessionCallJob;
  /** The call's output listener, until it throws once (then it is told nothing more), as a run's is. */
  onOutput: SessionCallJob['onOutput'];
  stdout: CappedCapture;
  stderr: CappedCapture;
  startedAt: number;
  timer: NodeJS.Timeout | undefined;
  interrupted: boolean;
  onAbort: () => void;
  resolve: (o: SessionCallOutcome) => void;
}

type State = 'starting' | 'open' | 'lost' | 'closed';

export class EngineSessionSandbox implements SessionSandbox {
  readonly ended: Promise<string>;
  private endedWith: (why: string) => void = () => {};
  private state: State = 'starting';
  private created: Promise<SandboxContainer | null> = Promise.resolve(null);
  private container: SandboxContainer | null = null;
  private socket: Duplex | null = null;
  private readonly runnerStderr = new CappedCapture(8192);
  private readonly replies: PendingReply[] = [];
  private onReady: ((why: string | null) => void) | null = null;
  private running: RunningCall | null = null;
  /** A call holds the session from its files' PUT to its end. */
  private busy = false;
  private removal: Promise<void> | null = null;

  constructor(
    private readonly spec: SessionSandboxSpec,
    private readonly deps: SessionSandboxesDeps,
    private readonly track: (removal: Promise<void>) => void,
  ) {
    this.ended = new Promise((resolve) => {
      this.endedWith = resolve;
    });
  }

  // ---- start ---------------------------------------------------------------------------------

  /** Creates, attaches and starts the container; waits for READY; sends the payload and the files. */
  async start(signal?: AbortSignal): Promise<void> {
    const { engine, settings } = this.deps;
    const aborted = () => signal?.aborted === true || this.state === 'closed';
    const base = containerSpec({
      id: `session-${this.spec.id}`,
      instance: settings.instance,
      image: this.spec.image,
      runtime: this.spec.runtime,
      limits: this.spec.limits,
      sandbox: settings.sandbox,
    });
    const create = { ...base, Labels: { ...base.Labels, [SESSION_LABEL]: this.spec.id } };
    const creating = engine.create(create);
    // close() waits for the create, whatever its outcome, so nothing it made is left behind.
    this.created = creating.then(
      (c) => (this.container = c),
      () => null,
    );
    const container = await creating; // an engine error reaches the caller as itself
    if (aborted()) throw this.startAbandoned(signal);
    const socket = await container.attach();
    this.socket = socket;
    this.listen(socket);
    const ready = new Promise<string | null>((resolve) => {
      this.onReady = resolve;
    });
    const startTimer = setTimeout(() => this.onReady?.(`the session's sandbox did not become ready within ${settings.startTimeoutMs} ms`), settings.startTimeoutMs);
    const onAbort = () => this.onReady?.('cancelled');
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await container.start();
      const why = await ready;
      if (why !== null) {
        if (aborted()) throw this.startAbandoned(signal);
        throw new PyboxError('internal', `the session's sandbox could not start: ${why}`);
      }
    } finally {
      clearTimeout(startTimer);
      signal?.removeEventListener('abort', onAbort);
      this.onReady = null;
    }
    const payload = await buildSessionPayload({
      session: true,
      env: this.spec.env,
      caps: {
        floodBytes: settings.floodBytes,
        outputBytes: settings.outputBytes,
        maxOutputs: this.deps.settings.outputsMax,
        maxOutputBytes: this.deps.settings.outputsMaxBytes,
        interruptGraceMs: this.deps.interruptGraceMs,
      },
    });
    const answered = this.expectReply(SMALL_REPLY_BYTES);
    socket.write(payload);
    const reply = await answered;
    if (!reply.ok) throw new PyboxError('internal', `the session's sandbox refused its payload: ${reply.message}`);
    if (aborted()) throw this.startAbandoned(signal);
    this.state = 'open';
    if (this.spec.files.length > 0) await this.put(this.spec.files);
    if (signal?.aborted) throw this.startAbandoned(signal);
  }

  private startAbandoned(signal?: AbortSignal): PyboxError {
    const reason: unknown = signal?.reason;
    if (reason instanceof PyboxError) return reason;
    return new PyboxError('internal', 'opening the session was cancelled');
  }

  // ---- frames --------------------------------------------------------------------------------

  private listen(socket: Duplex): void {
    const { outputsMax, outputsMaxBytes } = this.deps.settings;
    const parser = new FrameParser(
      {
        maxFrameBytes: MAX_OUTPUT_FRAME_BYTES,
        maxReportBytes: SMALL_REPLY_BYTES,
        maxCaseBytes: 0,
        maxCallEndBytes: maxCallEndFrameBytes(outputsMax, outputsMaxBytes),
        maxReplyBytes: () => this.replies[0]?.maxBytes ?? SMALL_REPLY_BYTES,
      },
      (kind, data) => this.onFrame(kind, data),
    );
    listenToRunner(socket, parser, this.runnerStderr, {
      violation: (msg) => {
        if (this.state !== 'lost' && this.state !== 'closed') this.violation(msg);
      },
      ended: (e) => this.streamEnded(e ? `the connection to the session sandbox failed: ${e.message}` : 'the session sandbox stopped'),
    });
  }

  private onFrame(kind: number, data: Buffer): void {
    if (this.state === 'lost' || this.state === 'closed') return;
    switch (kind) {
      case FRAME_READY:
        if (!this.onReady) return this.violation('a second ready frame');
        this.onReady(null);
        return;
      case FRAME_STDOUT:
      case FRAME_STDERR:
        return this.onOutput(kind, data);
      case FRAME_CALL_END: {
        let end: CallEnd;
        try {
          end = parseCallEnd(data);
        } catch (e) {
          return this.violation(messageOf(e));
        }
        return this.onCallEnd(end);
      }
      case FRAME_REPLY: {
        const pending = this.replies.shift();
        if (!pending) return this.violation('a reply nobody asked for');
        clearTimeout(pending.timer);
        let reply: Reply;
        try {
          reply = parseReply(data);
        } catch (e) {
          pending.reject(new PyboxError('internal', 'the session sandbox broke its protocol'));
          return this.violation(messageOf(e));
        }
        pending.resolve(reply);
        return;
      }
      case FRAME_REPORT: {
        // Only a runner that gives up sends a report in a session: it cannot go on.
        let why = 'the session runner stopped';
        try {
          const report = parseReport(data);
          if (report.phase === 'setup') why = `the session runner stopped: ${report.message}`;
        } catch {
          // the reason stays generic
        }
        return this.lose(why, 'failed');
      }
      default:
        return this.violation(`a frame of kind ${kind} in a session`);
    }
  }

  private onOutput(kind: number, data: Buffer): void {
    const r = this.running;
    if (!r) return this.violation('output while no call runs');
    const { floodBytes } = this.deps.settings;
    const capture = kind === FRAME_STDOUT ? r.stdout : r.stderr;
    // The capture already cut and copied the part it keeps: the listener gets exactly that.
    const kept = capture.push(data);
    if (kept !== null && r.onOutput) {
      try {
        r.onOutput(kind === FRAME_STDOUT ? 'stdout' : 'stderr', kept);
      } catch (e) {
        r.onOutput = undefined;
        this.deps.logger.warn('an output listener failed; the call goes on without it', { id: r.job.id, error: e });
      }
    }
    if (capture.totalBytes > floodBytes + FLOOD_SLACK_BYTES) this.violation('output past the flood limit');
  }

  private onCallEnd(end: CallEnd): void {
    const r = this.running;
    if (!r) return this.violation("a call's end while no call runs");
    if (end.id !== r.job.id) return this.violation("a call's end for another call");
    const report: SandboxReport =
      end.phase === 'validation' && end.error
        ? { v: 1, phase: 'validation', error: end.error }
        : {
            v: 1,
            phase: 'run',
            exitCode: end.exitCode ?? (end.signal !== null ? 128 + end.signal : 1),
            signal: end.signal,
            error: end.error,
            files: [],
            filesDropped: 0,
            flooded: end.kind === 'output_limit',
            cpuMs: end.cpuMs,
            outputs: end.outputs,
            outputsDropped: end.outputsDropped,
          };
    const elapsed = Math.max(0, this.deps.clock.now() - r.startedAt);
    this.settle({
      kind: end.kind,
      report,
      stdout: r.stdout,
      stderr: r.stderr,
      durationMs: Math.min(end.wallMs, elapsed),
      stateLost: end.stateLost,
      sandboxLost: false,
    });
  }

  private violation(why: string): void {
    this.deps.logger.warn('session sandbox protocol violation', { session: this.spec.id, error: why });
    this.lose(`session sandbox protocol violation: ${why}`, 'failed');
  }

  private streamEnded(why: string): void {
    if (this.state === 'lost' || this.state === 'closed') return;
    if (this.onReady) {
      this.onReady(why);
      return this.lose(why, 'failed', false);
    }
    // The container stopped: the engine says whether it was the memory limit.
    const container = this.container;
    this.state = 'lost';
    void (async () => {
      const { exitCode, state, engineLost } = await readExitFacts(container, EXIT_WAIT_MS, null, (e) =>
        this.deps.logger.warn('could not read the final state of a session sandbox', { id: this.spec.id, error: e }),
      );
      const verdict = classifyExit({
        runtime: this.spec.runtime,
        report: null,
        exitCode,
        state,
        engineLost,
        streamEnd: why,
        runnerStderr: this.runnerStderr.text(),
        pidsLimitRunsc: this.deps.settings.sandbox.pidsLimitRunsc,
      });
      if (verdict.kind === 'oom') this.lose('the session ran out of memory', 'oom', true, true);
      else this.lose(verdict.kind === 'failed' ? verdict.failure : why, 'failed', true, true);
    })();
  }

  /**
   * The sandbox is gone (or must go): the running call ends with kind, waiting replies fail,
   * `ended` resolves, and the container is removed.
   */
  private lose(why: string, kind: OutcomeKind, ended = true, already = false): void {
    if (this.state === 'closed' || (this.state === 'lost' && !already)) return;
    this.state = 'lost';
    this.closeSocket();
    const r = this.running;
    if (r) {
      this.settle({
        kind,
        report: null,
        stdout: r.stdout,
        stderr: r.stderr,
        durationMs: Math.max(0, this.deps.clock.now() - r.startedAt),
        failure: why,
        stateLost: true,
        sandboxLost: true,
      });
    }
    this.failReplies(new PyboxError('session_ended', `the session's sandbox ended: ${why}`));
    if (ended) this.endedWith(why);
    void this.remove();
  }

  private settle(outcome: SessionCallOutcome): void {
    const r = this.running;
    if (!r) return;
    this.running = null;
    clearTimeout(r.timer);
    r.job.signal?.removeEventListener('abort', r.onAbort);
    r.resolve(outcome);
  }

  private failReplies(e: unknown): void {
    for (const p of this.replies.splice(0)) {
      clearTimeout(p.timer);
      p.reject(e);
    }
  }

  // ---- requests ------------------------------------------------------------------------------

  private expectReply(maxBytes: number): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.violation(`no reply within ${REPLY_TIMEOUT_MS} ms`);
      }, REPLY_TIMEOUT_MS);
      this.replies.push({ maxBytes, timer, resolve, reject });
    });
  }

  private send(kind: HostFrameKind, payload?: Buffer): void {
    this.socket?.write(encodeHostFrame(kind, payload));
  }

  private ask(kind: HostFrameKind, payload: Buffer, maxBytes: number): Promise<Reply> {
    if (this.state !== 'open') return Promise.reject(this.endedError());
    const answered = this.expectReply(maxBytes);
    this.send(kind, payload);
    return answered;
  }

  private endedError(): PyboxError {
    return new PyboxError('session_ended', "the session's sandbox has ended");
  }

  private async put(files: Array<{ path: string; data: Buffer }>): Promise<void> {
    const reply = await this.ask(HOST_PUT, await filesArchive(files), SMALL_REPLY_BYTES);
    if (!reply.ok) throw new PyboxError(reply.code === 'too_large' ? 'payload_too_large' : 'invalid_request', `the files could not be written: ${reply.message}`);
  }

  // ---- the port ------------------------------------------------------------------------------

  async call(job: SessionCallJob): Promise<SessionCallOutcome> {
    if (this.state !== 'open') throw this.endedError();
    if (this.busy) throw new PyboxError('session_busy', 'a call is already running in this session');
    if (job.signal?.aborted) return this.cancelledBeforeStart();
    this.busy = true;
    try {
      if (job.files.length > 0) {
        await this.put(job.files);
        if (job.signal?.aborted) return this.cancelledBeforeStart();
      }
      if (this.state !== 'open') throw this.endedError();
      return await this.run(job);
    } finally {
      this.busy = false;
    }
  }

  private cancelledBeforeStart(): SessionCallOutcome {
    const none = new CappedCapture(0);
    return { kind: 'cancelled', report: null, stdout: none, stderr: none, durationMs: 0, stateLost: false, sandboxLost: false };
  }

  private run(job: SessionCallJob): Promise<SessionCallOutcome> {
    const { settings, interruptGraceMs, clock } = this.deps;
    return new Promise<SessionCallOutcome>((resolve) => {
      const r: RunningCall = {
        job,
        onOutput: job.onOutput,
        stdout: new CappedCapture(settings.outputBytes),
        stderr: new CappedCapture(settings.outputBytes),
        startedAt: clock.now(),
        timer: undefined,
        interrupted: false,
        onAbort: () => {
          if (this.running !== r || r.interrupted) return;
          r.interrupted = true;
          this.send(HOST_INTERRUPT);
          this.armBackstop(r, interruptGraceMs + BACKSTOP_MARGIN_MS);
        },
        resolve,
      };
      this.running = r;
      this.armBackstop(r, job.timeoutMs + interruptGraceMs + BACKSTOP_MARGIN_MS);
      job.signal?.addEventListener('abort', r.onAbort, { once: true });
      this.send(HOST_CALL, Buffer.from(JSON.stringify({ id: job.id, code: job.code, stdin: job.stdin, timeoutMs: job.timeoutMs })));
    });
  }

  /** The runner did not end the call in time: the whole sandbox goes (only a broken runner gets here). */
  private armBackstop(r: RunningCall, ms: number): void {
    const at = this.deps.clock.now() + ms;
    clearTimeout(r.timer);
    r.timer = setTimeout(() => {
      if (this.running !== r) return;
      this.deps.logger.warn('a session call outlived its limit: its sandbox is removed', { session: this.spec.id, id: r.job.id });
      this.lose(`the call did not end within its time limit and ${this.deps.interruptGraceMs} ms of grace`, r.interrupted && r.job.signal?.aborted ? 'cancelled' : 'timeout');
    }, Math.max(0, at - this.deps.clock.now()));
  }

  async putFiles(files: Array<{ path: string; data: Buffer }>): Promise<void> {
    if (this.state !== 'open') throw this.endedError();
    if (this.busy) throw new PyboxError('session_busy', 'a call is running in this session');
    if (files.length === 0) return;
    await this.put(files);
  }

  async getFile(path: string, maxBytes: number): Promise<Buffer> {
    if (!Number.isInteger(maxBytes) || maxBytes < 0) throw new PyboxError('invalid_request', 'maxBytes must be a whole number of bytes');
    const reply = await this.ask(HOST_GET, Buffer.from(JSON.stringify({ path, maxBytes })), Math.ceil(maxBytes / 3) * 4 + SMALL_REPLY_BYTES);
    if (!reply.ok) {
      if (reply.code === 'not_found') throw new PyboxError('not_found', `no file ${path} in the session's work directory`);
      if (reply.code === 'too_large') throw new PyboxError('payload_too_large', `${path} is larger than ${maxBytes} bytes`);
      throw new PyboxError('invalid_request', `${path}: ${reply.message}`);
    }
    const data = Buffer.from(reply.data ?? '', 'base64');
    if (reply.data === undefined || data.toString('base64') !== reply.data || data.length > maxBytes) {
      this.violation("a file's bytes are not what was asked for");
      throw this.endedError();
    }
    return data;
  }

  async listFiles(max: number): Promise<SessionFileList> {
    if (!Number.isInteger(max) || max < 0) throw new PyboxError('invalid_request', 'max must be a whole number');
    const reply = await this.ask(HOST_LIST, Buffer.from(JSON.stringify({ max })), LIST_REPLY_BYTES);
    if (!reply.ok || reply.files === undefined || reply.files.length > max) {
      this.violation('a listing that is not what was asked for');
      throw this.endedError();
    }
    return { files: reply.files.map((f) => ({ path: f.path, size: f.size })), truncated: reply.truncated ?? false };
  }

  close(): Promise<void> {
    if (this.state !== 'closed') {
      this.state = 'closed';
      this.onReady?.('cancelled');
      this.closeSocket();
      const r = this.running;
      if (r) {
        this.settle({
          kind: 'cancelled',
          report: null,
          stdout: r.stdout,
          stderr: r.stderr,
          durationMs: Math.max(0, this.deps.clock.now() - r.startedAt),
          failure: 'the session was closed while the call ran',
          stateLost: true,
          sandboxLost: true,
        });
      }
      this.failReplies(this.endedError());
    }
    return this.remove();
  }

  /** Kills and removes the container, once; the same promise for every caller. */
  private remove(): Promise<void> {
    if (this.removal) return this.removal;
    const removal = (async () => {
      const container = await this.created;
      if (!container) return;
      try {
        await container.remove();
      } catch (e) {
        this.deps.logger.warn("a session's container could not be removed; the reaper will retry", { session: this.spec.id, error: e });
      }
    })();
    this.removal = removal;
    this.track(removal);
    return removal;
  }

  private closeSocket(): void {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    closeSocket(socket);
  }
}
