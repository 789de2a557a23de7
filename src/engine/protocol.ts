// The host's half of the runner protocol (images/python/pybox_runner/ has the other half).
//
// Two layers arrive on the attached socket, and every byte of both is hostile:
//   1. Docker's multiplexing: [stream 1|2][0 0 0][u32 length][payload] (no TTY).
//   2. Inside the container's stdout, the runner's frames: [kind][u32 length][payload], where
//      kind 1 = the user's stdout, 2 = the user's stderr, 3 = the final report (JSON),
//      4 = ready (the runner waits for its payload), 5 = one test case's end (JSON, before the report).
// Both parsers bound what they buffer and fail closed on anything malformed.
import { z } from 'zod';
import { ExecutionError, OUTPUT_TYPES } from '../core/schemas.ts';
import type { SandboxReport } from '../core/sandbox.ts';

export const FRAME_STDOUT = 1;
export const FRAME_STDERR = 2;
export const FRAME_REPORT = 3;
/** Empty; the runner is waiting for its payload (a warm sandbox is ready). */
export const FRAME_READY = 4;
/** One test case's end (JSON, CaseReport): once per case, in order, before the final report. */
export const FRAME_CASE = 5;

/** Docker copies container output in chunks of at most 32 KiB; anything far larger is not Docker. */
const MAX_DOCKER_FRAME_BYTES = 16 * 1024 * 1024;

/** Splits a Docker attach stream into its stdout and stderr bytes. */
export class DockerDemuxer {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly onData: (stream: 'stdout' | 'stderr', data: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let buf = this.pending;
    while (buf.length >= 8) {
      const size = buf.readUInt32BE(4);
      if (size > MAX_DOCKER_FRAME_BYTES) throw new ProtocolError(`engine frame of ${size} bytes is over the limit`);
      if (buf.length < 8 + size) break;
      const kind = buf[0];
      const payload = buf.subarray(8, 8 + size);
      if (kind === 1) this.onData('stdout', payload);
      else if (kind === 2) this.onData('stderr', payload);
      // 0 (stdin echo) and anything else: ignored.
      buf = buf.subarray(8 + size);
    }
    this.pending = buf.length === 0 ? Buffer.alloc(0) : buf;
  }
}

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

/**
 * Parses the runner's frames. A frame may be at most `maxFrameBytes` (reports are bounded by
 * `maxReportBytes`, case frames by `maxCaseBytes`); a larger or unknown frame is a protocol
 * violation and ends the run.
 */
export class FrameParser {
  // Chunks not yet parsed, and their total length: a large frame (a report with figures) arrives in
  // hundreds of chunks, which are joined once when it is complete, not once per chunk (quadratic).
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(
    private readonly limits: { maxFrameBytes: number; maxReportBytes: number; maxCaseBytes?: number },
    private readonly onFrame: (kind: number, payload: Buffer) => void,
  ) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= 5) {
      const head = this.joined(5);
      const kind = head[0] ?? 0;
      const size = head.readUInt32BE(1);
      const max =
        kind === FRAME_REPORT ? this.limits.maxReportBytes : kind === FRAME_CASE ? (this.limits.maxCaseBytes ?? this.limits.maxFrameBytes) : this.limits.maxFrameBytes;
      if (kind < FRAME_STDOUT || kind > FRAME_CASE) throw new ProtocolError(`unknown frame kind ${kind}`);
      if (size > max) throw new ProtocolError(`frame of ${size} bytes is over the limit of ${max}`);
      if (this.buffered < 5 + size) break;
      const buf = this.joined(5 + size);
      this.onFrame(kind, buf.subarray(5, 5 + size));
      this.drop(5 + size);
    }
  }

  /** The first chunk, made to hold at least `n` buffered bytes (joining chunks only when needed). */
  private joined(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length >= n) return first;
    const all = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [all];
    return all;
  }

  /** Forgets the first `n` bytes (a parsed frame); they are all in the first chunk. */
  private drop(n: number): void {
    const first = this.chunks[0] as Buffer;
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
  }
}

const ReturnedFile = z.object({
  path: z.string().min(1).max(1024),
  size: z.int().min(0),
  base64: z.string(),
});

/** Room one rich output takes in a report at most: its data as long as outputsMaxBytes in base64 (texts are held to that too), plus its type and kind. */
const RICH_OUTPUT_OVERHEAD = 256;

/** The most bytes a report's rich outputs may add to it (images/python/pybox_runner/rich.py, wire_limit, agrees). */
export function maxOutputsReportBytes(outputsMax: number, outputsMaxBytes: number): number {
  return outputsMax * (4 * Math.ceil(outputsMaxBytes / 3) + RICH_OUTPUT_OVERHEAD);
}

/** A rich output as the runner reports it; core checks its data (base64, PNG, size) and the caps. */
export const ReportedOutput = z.strictObject({
  type: z.enum(OUTPUT_TYPES),
  data: z.string(),
  kind: z.enum(['figure', 'result']),
});

/** The runner's final report. Validated strictly: it comes from inside the sandbox. */
export const RunnerReport = z.discriminatedUnion('phase', [
  z.object({ v: z.literal(1), phase: z.literal('setup'), message: z.string().max(4096) }),
  z.object({
    v: z.literal(1),
    phase: z.literal('validation'),
    error: ExecutionError,
  }),
  z.object({
    v: z.literal(1),
    phase: z.literal('run'),
    exitCode: z.int().min(0).max(511),
    signal: z.int().min(1).max(64).nullable(),
    error: ExecutionError.nullable(),
    files: z.array(ReturnedFile).max(10_000),
    filesDropped: z.int().min(0),
    flooded: z.boolean(),
    /** CPU time (user + system) of the user's program, as the kernel counted it. */
    cpuMs: z.number().min(0).max(1e10).nullable().optional(),
    /**
     * The kernel's accounting of the container's memory cgroup, read by the runner after the code's
     * process has ended (runc; absent under gVisor, which keeps no OOM counter the runner could read).
     * `oomKills` > 0: the kernel killed a process of the sandbox for the memory limit.
     */
    memory: z
      .object({
        oomKills: z.int().min(0).nullable(),
        failcnt: z.int().min(0).nullable(),
        peakBytes: z.int().min(0).nullable(),
        limitBytes: z.int().min(0).nullable(),
      })
      .optional(),
    /** Imports the import policy flagged (warn mode); the code ran anyway. */
    flaggedImports: z.array(z.object({ module: z.string().max(200), line: z.int().min(1).nullable() })).max(1000).optional(),
    /** Figures the code drew (plt.show(), or left open), within the caps the request named (maxOutputs, maxOutputBytes). */
    outputs: z.array(ReportedOutput).max(100).optional(),
    /** Figures over those caps, or that could not be drawn. */
    outputsDropped: z.int().min(0).max(2 ** 31).optional(),
  }),
]);
export type RunnerReport = z.infer<typeof RunnerReport>;

export function parseReport(payload: Buffer): RunnerReport {
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new ProtocolError('the runner report is not JSON');
  }
  const parsed = RunnerReport.safeParse(json);
  if (!parsed.success) throw new ProtocolError(`the runner report is malformed: ${parsed.error.issues[0]?.message ?? ''}`);
  return parsed.data;
}

// The report core reads is this schema's output: a change here that core does not know of fails to compile.
const reportMatchesCore: z.ZodType<SandboxReport> = RunnerReport;
void reportMatchesCore;

/** The most bytes a case frame may take: both streams kept in full (base64) and a traceback's worth. */
export function maxCaseFrameBytes(outputBytes: number): number {
  return 2 * Math.ceil(outputBytes / 3) * 4 + 256 * 1024;
}

const BASE64_TEXT = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const CaseStream = z.strictObject({
  b64: z.string().regex(BASE64_TEXT, 'must be base64'),
  totalBytes: z.int().min(0).max(Number.MAX_SAFE_INTEGER),
  truncated: z.boolean(),
});

/** One test case's end as the runner reports it. Validated strictly: it comes from inside the sandbox. */
export const CaseReport = z.strictObject({
  v: z.literal(1),
  index: z.int().min(0).max(1_000_000),
  kind: z.enum(['finished', 'timeout', 'oom', 'output_limit']),
  exitCode: z.int().min(0).max(511).nullable(),
  signal: z.int().min(1).max(64).nullable(),
  error: ExecutionError.nullable(),
  durationMs: z.number().min(0).max(1e10),
  cpuMs: z.number().min(0).max(1e10).nullable(),
  stdout: CaseStream,
  stderr: CaseStream,
});
export type CaseReport = z.infer<typeof CaseReport>;

export function parseCaseReport(payload: Buffer): CaseReport {
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new ProtocolError('a test case report is not JSON');
  }
  const parsed = CaseReport.safeParse(json);
  if (!parsed.success) throw new ProtocolError(`a test case report is malformed: ${parsed.error.issues[0]?.message ?? ''}`);
  return parsed.data;
}
