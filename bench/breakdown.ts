// Where a run's time goes, measured from outside the service: a ContainerEngine wrapper that
// timestamps every engine call of each container and watches its attached socket for the runner's
// ready and report frames and for the payload going in. The sandbox code under it is pybox's own
// (SandboxRunner, WarmPool), unchanged; only the bench wraps the engine.
import type Docker from 'dockerode';
import type { Duplex } from 'node:stream';
import type { ContainerEngine, ContainerState, SandboxContainer } from '../src/engine/docker-engine.ts';
import { EngineWrapper } from '../src/engine/engine-wrapper.ts';
import { DockerDemuxer, FRAME_READY, FRAME_REPORT, FrameParser } from '../src/engine/protocol.ts';
import { percentile, round1 } from './stats.ts';

/** performance.now() stamps of one container's life; absent when it did not get that far. */
export interface Timeline {
  createStart: number;
  createEnd?: number;
  attachStart?: number;
  attachEnd?: number;
  startStart?: number;
  startEnd?: number;
  /** The runner's ready frame arrived (it waits for its payload). */
  ready?: number;
  /** The first write on the socket: the payload. */
  payloadSent?: number;
  /** The runner's report frame arrived. */
  report?: number;
  removeStart?: number;
  removeEnd?: number;
}

export const PHASES = ['create', 'attach', 'start', 'boot', 'idle', 'run', 'removal'] as const;
export type Phase = (typeof PHASES)[number];

export const PHASE_MEANING: Record<Phase, string> = {
  create: 'engine create call',
  attach: 'engine attach call',
  start: 'engine start call',
  boot: 'start returned -> runner ready (runtime boot, python, runner, preloads)',
  idle: 'runner ready -> payload sent (waiting in the pool; ~0 when a run waited for it)',
  run: 'payload sent -> report (unpack, the code, output)',
  removal: 'engine remove call (kill + delete), in the background',
};

const span = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? b - a : undefined);

/** The duration of each phase of one container's life, where both ends were seen. */
export function phasesOf(t: Timeline): Partial<Record<Phase, number>> {
  const out: Partial<Record<Phase, number>> = {};
  const set = (p: Phase, v: number | undefined) => {
    if (v !== undefined) out[p] = v;
  };
  set('create', span(t.createStart, t.createEnd));
  set('attach', span(t.attachStart, t.attachEnd));
  set('start', span(t.startStart, t.startEnd));
  set('boot', span(t.startEnd, t.ready));
  set('idle', span(t.ready, t.payloadSent));
  set('run', span(t.payloadSent, t.report));
  set('removal', span(t.removeStart, t.removeEnd));
  return out;
}

export interface PhaseSummary {
  phase: Phase;
  samples: number;
  p50: number;
  p95: number;
  mean: number;
}

/** p50, p95 and mean of each phase over many containers (phases no container reached are left out). */
export function summarizePhases(timelines: Timeline[]): PhaseSummary[] {
  const all = timelines.map(phasesOf);
  const out: PhaseSummary[] = [];
  for (const phase of PHASES) {
    const values = all.map((p) => p[phase]).filter((v): v is number => v !== undefined);
    if (values.length === 0) continue;
    const sorted = values.sort((a, b) => a - b);
    const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
    out.push({ phase, samples: sorted.length, p50: round1(percentile(sorted, 50)), p95: round1(percentile(sorted, 95)), mean: round1(mean) });
  }
  return out;
}

/** Wraps an engine (the real one) and records a Timeline for every container created through it. */
export class TimedEngine extends EngineWrapper {
  readonly timelines: Timeline[] = [];

  constructor(
    inner: ContainerEngine,
    private readonly now: () => number = () => performance.now(),
  ) {
    super(inner);
  }

  async create(spec: Docker.ContainerCreateOptions): Promise<SandboxContainer> {
    const t: Timeline = { createStart: this.now() };
    this.timelines.push(t);
    const c = await this.inner.create(spec);
    t.createEnd = this.now();
    return new TimedContainer(c, t, this.now);
  }
}

class TimedContainer implements SandboxContainer {
  constructor(
    private readonly inner: SandboxContainer,
    private readonly t: Timeline,
    private readonly now: () => number,
  ) {}

  get id(): string {
    return this.inner.id;
  }

  async attach(): Promise<Duplex> {
    this.t.attachStart = this.now();
    const socket = await this.inner.attach();
    this.t.attachEnd = this.now();
    this.watch(socket);
    return socket;
  }

  async start(): Promise<void> {
    this.t.startStart = this.now();
    await this.inner.start();
    this.t.startEnd = this.now();
  }

  wait(timeoutMs: number): Promise<number | null> {
    return this.inner.wait(timeoutMs);
  }

  state(): Promise<ContainerState> {
    return this.inner.state();
  }

  async remove(): Promise<void> {
    this.t.removeStart = this.now();
    try {
      await this.inner.remove();
    } finally {
      this.t.removeEnd = this.now();
    }
  }

  /**
   * A second reader of the same bytes: the service's own listener is added in the same tick
   * (nothing arrives before the container starts), and 'data' events go to every listener.
   */
  private watch(socket: Duplex): void {
    const parser = new FrameParser({ maxFrameBytes: 64 * 1024 * 1024, maxReportBytes: 64 * 1024 * 1024 }, (kind) => {
      if (kind === FRAME_READY && this.t.ready === undefined) this.t.ready = this.now();
      if (kind === FRAME_REPORT && this.t.report === undefined) this.t.report = this.now();
    });
    const demux = new DockerDemuxer((stream, data) => {
      if (stream === 'stdout') parser.push(data);
    });
    const onData = (chunk: Buffer) => {
      try {
        demux.push(chunk);
      } catch {
        socket.off('data', onData); // the service judges what is malformed; the bench only stops timing
      }
    };
    socket.on('data', onData);
    const write = socket.write.bind(socket);
    socket.write = ((...args: Parameters<Duplex['write']>) => {
      if (this.t.payloadSent === undefined) this.t.payloadSent = this.now();
      return (write as (...a: Parameters<Duplex['write']>) => boolean)(...args);
    }) as Duplex['write'];
  }
}
