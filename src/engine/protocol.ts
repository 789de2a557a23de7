// The host's half of the runner protocol (images/python/pybox_runner/ has the other half).
//
// Two layers arrive on the attached socket, and every byte of both is hostile:
//   1. Docker's multiplexing: [stream 1|2][0 0 0][u32 length][payload] (no TTY).
//   2. Inside the container's stdout, the runner's frames: [kind][u32 length][payload], where
//      kind 1 = the user's stdout, 2 = the user's stderr, 3 = the final report (JSON),
//      4 = ready (the runner waits for its payload), 5 = one test case's end (JSON, before the report);
//      in a session (no report): 6 = a call's end (JSON), 7 = a reply to the payload or a host frame (JSON).
// Both parsers bound what they buffer and fail closed on anything malformed.
// In a session the host writes frames of the same layout on stdin after the payload (HOST_*).
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
/** Session mode: a call's end (JSON, CallEnd), after all of the call's output. */
export const FRAME_CALL_END = 6;
/** Session mode: the answer to the payload, or to a PUT, GET or LIST (JSON, Reply). */
export const FRAME_REPLY = 7;

/** Host → runner frames in session mode, after the payload. */
export const HOST_CALL = 1;
export const HOST_INTERRUPT = 2;
export const HOST_PUT = 3;
export const HOST_GET = 4;
export const HOST_LIST = 5;
export type HostFrameKind = typeof HOST_CALL | typeof HOST_INTERRUPT | typeof HOST_PUT | typeof HOST_GET | typeof HOST_LIST;

/** A frame for the runner's stdin: [kind][u32 BE length][payload]. */
export function encodeHostFrame(kind: HostFrameKind, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head[0] = kind;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

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

/** What the parser accepts. Kinds 6 and 7 (session mode) are unknown kinds unless their bounds are given. */
export interface FrameLimits {
  maxFrameBytes: number;
  maxReportBytes: number;
  maxCaseBytes?: number;
  maxCallEndBytes?: number;
  /** Read when a reply's header arrives: the bound of the reply expected next. */
  maxReplyBytes?: () => number;
}

/**
 * Parses the runner's frames. A frame may be at most `maxFrameBytes` (reports are bounded by
 * `maxReportBytes`, case frames by `maxCaseBytes`, session frames by theirs); a larger or unknown
 * frame is a protocol violation and ends the run. A frame's bytes are joined once, when all of
 * them are there: a large frame in many socket chunks costs one copy, not one per chunk.
 */
export class FrameParser {
  private chunks: Buffer[] = [];
  private size = 0;
  private next: { kind: number; size: number } | null = null;

  constructor(
    private readonly limits: FrameLimits,
    private readonly onFrame: (kind: number, payload: Buffer) => void,
  ) {}

  private maxFor(kind: number): number {
    const l = this.limits;
    switch (kind) {
      case FRAME_STDOUT:
      case FRAME_STDERR:
      case FRAME_READY:
        return l.maxFrameBytes;
      case FRAME_REPORT:
        return l.maxReportBytes;
      case FRAME_CASE:
        return l.maxCaseBytes ?? l.maxFrameBytes;
      case FRAME_CALL_END:
        if (l.maxCallEndBytes !== undefined) return l.maxCallEndBytes;
        break;
      case FRAME_REPLY:
        if (l.maxReplyBytes !== undefined) return l.maxReplyBytes();
        break;
    }
    throw new ProtocolError(`unknown frame kind ${kind}`);
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size >= 5) {
      // A header is checked once, when it arrives; its frame then waits for its bytes.
      if (!this.next) {
        const head = this.header();
        const kind = head[0] ?? 0;
        const size = head.readUInt32BE(1);
        const max = this.maxFor(kind);
        if (size > max) throw new ProtocolError(`frame of ${size} bytes is over the limit of ${max}`);
        this.next = { kind, size };
      }
      const { kind, size } = this.next;
      if (this.size < 5 + size) break;
      this.next = null;
      const frame = this.take(5 + size);
      this.onFrame(kind, frame.subarray(5));
    }
  }

  /** The first five bytes, in the first chunk (joined with the next ones when split). */
  private header(): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length >= 5) return first;
    const joined = Buffer.concat(this.chunks, this.size);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    this.size -= n;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const c = this.chunks[0] as Buffer;
      if (c.length <= need) {
        parts.push(c);
        this.chunks.shift();
        need -= c.length;
      } else {
        parts.push(c.subarray(0, need));
        this.chunks[0] = c.subarray(need);
        need = 0;
      }
    }
    return Buffer.concat(parts, n);
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
    /**
     * Whether the code's process said it was over before it ended (its exit mark): false when it
     * was killed, crashed, or ran out of memory before it could. Absent from older runners.
     */
    endSaid: z.boolean().optional(),
  }),
]);
export type RunnerReport = z.infer<typeof RunnerReport>;

function parseJsonFrame<T>(payload: Buffer, schema: z.ZodType<T>, what: string): T {
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new ProtocolError(`${what} is not JSON`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new ProtocolError(`${what} is malformed: ${parsed.error.issues[0]?.message ?? ''}`);
  return parsed.data;
}

export const parseReport = (payload: Buffer): RunnerReport => parseJsonFrame(payload, RunnerReport, 'the runner report');

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

export const parseCaseReport = (payload: Buffer): CaseReport => parseJsonFrame(payload, CaseReport, 'a test case report');

// ---- session mode --------------------------------------------------------------------------

/** A rich output as the runner passes it on (checked again by core: type, base64, caps). */
const CallOutput = z.strictObject({ type: z.string().max(100), data: z.string(), kind: z.enum(['figure', 'result']) });

/** A call's end in a session, as the runner reports it. Validated strictly: it comes from inside the sandbox. */
export const CallEnd = z
  .strictObject({
    v: z.literal(1),
    id: z.string().max(256),
    kind: z.enum(['finished', 'timeout', 'oom', 'output_limit', 'cancelled']),
    phase: z.enum(['run', 'validation']),
    exitCode: z.int().min(0).max(511).nullable(),
    signal: z.int().min(1).max(64).nullable(),
    error: ExecutionError.nullable(),
    outputs: z.array(CallOutput).max(1000),
    outputsDropped: z.int().min(0).max(1e9),
    cpuMs: z.number().min(0).max(1e10).nullable(),
    wallMs: z.number().min(0).max(1e10),
    stateLost: z.boolean(),
  })
  .refine((e) => e.phase === 'run' || e.error !== null, { message: 'a validation failure names its error' });
export type CallEnd = z.infer<typeof CallEnd>;

/** The runner's answer to the payload or to a PUT, GET or LIST. */
export const Reply = z.union([
  z.strictObject({
    ok: z.literal(true),
    /** GET: the file's bytes, base64. */
    data: z.string().optional(),
    /** LIST: the work directory's regular files. */
    files: z.array(z.strictObject({ path: z.string().min(1).max(4096), size: z.int().min(0).max(Number.MAX_SAFE_INTEGER) })).max(100_000).optional(),
    truncated: z.boolean().optional(),
  }),
  z.strictObject({ ok: z.literal(false), code: z.enum(['not_found', 'too_large', 'invalid']), message: z.string().max(4096) }),
]);
export type Reply = z.infer<typeof Reply>;

export const parseCallEnd = (payload: Buffer): CallEnd => parseJsonFrame(payload, CallEnd, "a call's end");
export const parseReply = (payload: Buffer): Reply => parseJsonFrame(payload, Reply, 'a reply');

/** The most bytes a call's end may take: every rich output at its cap as ASCII-escaped JSON, and an error's worth. */
export function maxCallEndFrameBytes(outputsMax: number, outputsMaxBytes: number): number {
  return (outputsMax + 1) * (6 * outputsMaxBytes + 1024) + 1024 * 1024;
}
