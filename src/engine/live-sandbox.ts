// A started sandbox: its container, and the attached socket parsed from the moment of attach.
// Before a job claims it, the sandbox only listens: the runner's ready frame marks it ready, and
// an ended stream marks it dead (a pool then discards it). After the claim, every event goes to
// the job's sink. Used by exactly one job, then removed.
import type { Duplex } from 'node:stream';
import type { SandboxContainer } from './docker-engine.ts';
import { DockerDemuxer, FRAME_READY, FrameParser } from './protocol.ts';

export interface SandboxSink {
  frame(kind: number, data: Buffer): void;
  runnerStderr(data: Buffer): void;
  /** The stream ended or failed: the container has stopped or is stopping. */
  ended(reason: string): void;
  violation(message: string): void;
}

type Event = (sink: SandboxSink) => void;

/** Events kept for a sink that has not claimed the sandbox yet; a waiting runner sends almost none. */
const MAX_QUEUED_EVENTS = 256;

export class LiveSandbox {
  private sink: SandboxSink | null = null;
  private queued: Event[] = [];
  private readyWaiters: Array<(ready: boolean) => void> = [];
  private deathWaiters: Array<(reason: string) => void> = [];
  /** The runner announced it waits for its payload. */
  ready = false;
  /** Why the sandbox can no longer be used, once its stream has ended before a claim. */
  dead: string | null = null;

  constructor(
    readonly id: string,
    readonly container: SandboxContainer,
    readonly socket: Duplex,
    limits: { maxFrameBytes: number; maxReportBytes: number },
    /** When it was created and started, for the pool's bookkeeping. */
    readonly preparedAt: number,
  ) {
    const parser = new FrameParser(limits, (kind, data) => {
      if (kind === FRAME_READY) this.markReady(true);
      else this.emit((s) => s.frame(kind, data));
    });
    const demux = new DockerDemuxer((stream, data) => {
      if (stream === 'stdout') parser.push(data);
      else this.emit((s) => s.runnerStderr(Buffer.from(data)));
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        demux.push(chunk);
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        socket.removeAllListeners('data');
        this.emit((s) => s.violation(msg));
      }
    });
    const ended = (reason: string) => {
      if (!this.sink && this.dead === null) {
        this.dead = reason;
        const waiters = this.deathWaiters;
        this.deathWaiters = [];
        for (const w of waiters) w(reason);
      }
      this.markReady(false);
      this.emit((s) => s.ended(reason));
    };
    socket.on('end', () => ended('the sandbox stopped without a report'));
    socket.on('close', () => ended('the sandbox stopped without a report'));
    socket.on('error', (e: Error) => ended(`the connection to the sandbox failed: ${e.message}`));
  }

  /** Resolves true once the runner waits for its payload, false if the sandbox died first. */
  whenReady(): Promise<boolean> {
    if (this.ready) return Promise.resolve(true);
    if (this.dead !== null) return Promise.resolve(false);
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Resolves with the reason if the sandbox dies before a job claims it (never, otherwise). */
  whenDead(): Promise<string> {
    if (this.dead !== null) return Promise.resolve(this.dead);
    return new Promise((resolve) => this.deathWaiters.push(resolve));
  }

  /** Hands every event, past and future, to the job's sink. */
  claim(sink: SandboxSink): void {
    if (this.sink) throw new Error(`sandbox ${this.id} is already claimed`);
    this.sink = sink;
    const queued = this.queued;
    this.queued = [];
    for (const e of queued) e(sink);
  }

  /** Stops listening and closes the socket; the container itself is removed by its owner. */
  close(): void {
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('end');
    this.socket.removeAllListeners('close');
    this.socket.on('error', () => {}); // late errors after the result are of no interest
    this.socket.destroy();
    this.markReady(false);
  }

  private emit(event: Event): void {
    if (this.sink) event(this.sink);
    else if (this.queued.length < MAX_QUEUED_EVENTS) this.queued.push(event);
  }

  private markReady(ready: boolean): void {
    if (ready) this.ready = true;
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w(ready);
  }
}
