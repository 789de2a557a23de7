// What travels through Redis for sessions in a cluster: each operation on a session is a BullMQ job
// on the queue of the worker holding it (its data below, by job name), answered by the job's
// return value (a reply: ok with its data, or an error code), a call's output as the job's
// progress. Every side parses what it reads as strictly as a request: whoever can write to Redis
// can write these, so the bounds are those an API node itself would have let through.
import { z } from 'zod';
import { TENANT_NAME } from '../core/caller.ts';
import { ERROR_CODES, PyboxError } from '../core/errors.ts';
import { BASE64 } from '../core/results.ts';
import type { CapturedOutput, SandboxReport } from '../core/sandbox.ts';
import type { HostedSession, SessionCallOutcome } from '../core/sessions.ts';
import { ExecutionError, ExecutionRequest, FilePath, RuntimeName, SessionEndReason, type SessionFileList } from '../core/schemas.ts';
import { NodeReport } from './registry.ts';
import { ExecutionId, WireFiles, fromWireFiles, printable, summarize, toWireFiles } from './wire.ts';

const V = 1;

/** A session's id (and a call's): as an execution's, it ends up in Redis keys and job data. */
export const SessionId = ExecutionId;
export const NodeId = NodeReport.shape.nodeId;
const Tenant = z.string().regex(TENANT_NAME);

const whole = (max: number) => z.int().min(0).max(max);
const epochMs = whole(Number.MAX_SAFE_INTEGER);
/** The most bytes a download, or one stream of a call's output, may be (the settings' maxima). */
const MAX_BYTES = 256 * 1024 * 1024;
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;
const b64 = (maxBytes: number) =>
  z
    .string()
    .max(Math.ceil(maxBytes / 3) * 4)
    .refine((s) => s.length % 4 === 0 && BASE64.test(s), 'must be base64');

/** An AppliedLimits within the request schema's sanity ranges. */
const Limits = z.strictObject({
  timeoutMs: z.int().min(1).max(86_400_000),
  memoryMb: z.int().min(1).max(1_048_576),
  cpus: z.number().positive().max(1024),
  outputBytes: z.int().min(1).max(MAX_OUTPUT_BYTES),
});

/**
 * A hosted session as the directory and the replies carry it. A plain object (unknown keys dropped,
 * not refused), so a node of a newer version that writes more is still read by older ones.
 */
export const HostedRecord = z.object({
  id: SessionId,
  tenant: Tenant,
  runtime: RuntimeName,
  limits: Limits,
  idleTimeoutMs: whole(7 * 86_400_000),
  createdAtMs: epochMs,
  lastUsedAtMs: epochMs,
  expiresAtMs: epochMs,
  calls: whole(Number.MAX_SAFE_INTEGER),
  node: NodeId,
});
// What is read is exactly a HostedSession: a field core adds and this lacks fails to compile.
const recordMatchesCore: z.ZodType<HostedSession> = HostedRecord;
void recordMatchesCore;

const Files = WireFiles;

// ---- jobs ---------------------------------------------------------------------------------------

/** A BullMQ job id of ours: an operation's name and a random UUID (never a number, never ':'). */
export const JobId = z.string().regex(/^[a-z]{1,12}-[0-9a-f-]{36}$/);

const base = { v: z.literal(V), tenant: Tenant };
const onSession = { ...base, session: SessionId };

export const OpenData = z.strictObject({
  ...base,
  op: z.literal('open'),
  open: z.strictObject({
    id: SessionId,
    limits: Limits,
    idleTimeoutMs: whole(7 * 86_400_000),
    env: ExecutionRequest.shape.env.unwrap(),
    files: Files,
    createdAtMs: epochMs,
  }),
});
export const CallData = z.strictObject({
  ...onSession,
  op: z.literal('call'),
  call: z.strictObject({
    id: ExecutionId,
    code: ExecutionRequest.shape.code,
    stdin: ExecutionRequest.shape.stdin.unwrap(),
    files: Files,
    timeoutMs: z.int().min(1).max(86_400_000),
  }),
});
export const PutData = z.strictObject({ ...onSession, op: z.literal('put'), files: Files });
export const GetData = z.strictObject({ ...onSession, op: z.literal('get'), path: FilePath, maxBytes: z.int().min(1).max(MAX_BYTES) });
export const ListData = z.strictObject({ ...onSession, op: z.literal('list'), max: z.int().min(1).max(100_000) });
export const CloseData = z.strictObject({ ...onSession, op: z.literal('close'), reason: SessionEndReason });
/** Stops a running call (or an open under way): the job id of that call, on the same queue. */
export const InterruptData = z.strictObject({ ...onSession, op: z.literal('interrupt'), target: JobId });

export const SessionJobData = z.discriminatedUnion('op', [OpenData, CallData, PutData, GetData, ListData, CloseData, InterruptData]);
export type SessionJobData = z.infer<typeof SessionJobData>;
export type SessionOp = SessionJobData['op'];

/** Job data as a worker reads it, or an Error saying what is wrong (the job name must be its op). */
export function parseJobData(name: string, data: unknown): SessionJobData | Error {
  const parsed = SessionJobData.safeParse(data);
  if (!parsed.success) return new Error(`malformed session job: ${summarize(parsed.error)}`);
  if (parsed.data.op !== name) return new Error('the job name is not its operation');
  return parsed.data;
}

export { fromWireFiles, toWireFiles };

// ---- replies ------------------------------------------------------------------------------------

const MAX_MESSAGE_CHARS = 1000;

export const ErrorReply = z.strictObject({
  ok: z.literal(false),
  code: z.enum(ERROR_CODES),
  message: z.string().max(MAX_MESSAGE_CHARS * 4),
  retryAfterS: z.int().min(0).max(86_400).optional(),
});
export type ErrorReply = z.infer<typeof ErrorReply>;

const Captured = z.strictObject({ text: z.string().max(MAX_OUTPUT_BYTES), totalBytes: whole(Number.MAX_SAFE_INTEGER), truncated: z.boolean() });

const boundedJson = <T extends z.ZodType>(schema: T, maxChars: number) => schema.refine((v) => JSON.stringify(v).length <= maxChars, `at most ${maxChars} characters as JSON`);

/**
 * The runner's report as core reads it (SandboxReport), bounded. Keys core does not read (the
 * engine's memory figures) are dropped, not refused.
 */
const WireReport = z.discriminatedUnion('phase', [
  z.object({ v: z.literal(1), phase: z.literal('setup'), message: z.string().max(4096) }),
  z.object({ v: z.literal(1), phase: z.literal('validation'), error: boundedJson(ExecutionError, 1_000_000) }),
  z.object({
    v: z.literal(1),
    phase: z.literal('run'),
    exitCode: z.int().min(0).max(511),
    signal: z.int().min(1).max(64).nullable(),
    error: boundedJson(ExecutionError, 1_000_000).nullable(),
    files: z.array(z.object({ path: z.string().min(1).max(1024), size: whole(MAX_BYTES), base64: b64(MAX_BYTES) })).max(1000),
    filesDropped: whole(1_000_000),
    flooded: z.boolean(),
    cpuMs: z.number().min(0).max(1e10).nullable().optional(),
    flaggedImports: z.array(z.object({ module: z.string().max(200), line: z.int().min(1).nullable() })).max(1000).optional(),
    outputs: z.array(z.object({ type: z.string().max(64), data: z.string().max(Math.ceil(MAX_OUTPUT_BYTES / 3) * 4), kind: z.enum(['figure', 'result']) })).max(1000).optional(),
    outputsDropped: whole(1_000_000).optional(),
  }),
]);
const reportMatchesCore: z.ZodType<SandboxReport> = WireReport;
void reportMatchesCore;

const WireOutcome = z.strictObject({
  kind: z.enum(['finished', 'timeout', 'oom', 'output_limit', 'cancelled', 'failed']),
  report: WireReport.nullable(),
  stdout: Captured,
  stderr: Captured,
  durationMs: z.number().min(0).max(1e12),
  failure: z.string().max(4096).optional(),
  stateLost: z.boolean(),
  sandboxLost: z.boolean(),
});
type WireOutcome = z.infer<typeof WireOutcome>;

const FileList = z.strictObject({
  files: z.array(z.strictObject({ path: z.string().min(1).max(4096), size: whole(Number.MAX_SAFE_INTEGER) })).max(100_000),
  truncated: z.boolean(),
});
const fileListMatchesCore: z.ZodType<SessionFileList> = FileList;
void fileListMatchesCore;

const ok = z.literal(true);
export const REPLIES = {
  open: z.strictObject({ ok, session: HostedRecord }),
  call: z.strictObject({ ok, outcome: WireOutcome, session: HostedRecord, runtime: RuntimeName }),
  put: z.strictObject({ ok }),
  /** The bytes wait under downloadKey(prefix, job id), not in the reply (see there). */
  get: z.strictObject({ ok, size: whole(MAX_BYTES) }),
  list: z.strictObject({ ok, list: FileList }),
  close: z.strictObject({ ok }),
  interrupt: z.strictObject({ ok }),
} as const satisfies Record<SessionOp, z.ZodType>;
export type Reply<O extends SessionOp> = z.infer<(typeof REPLIES)[O]>;

/** A worker's reply as it came back: its data, or the PyboxError it carries; a WireError-like Error when malformed. */
export function parseReply<O extends SessionOp>(op: O, value: unknown): Reply<O> {
  const failed = ErrorReply.safeParse(value);
  if (failed.success) throw errorOf(failed.data);
  const parsed = REPLIES[op].safeParse(value);
  if (!parsed.success) throw new PyboxError('internal', `the worker's reply could not be read: ${summarize(parsed.error)}`);
  return parsed.data as Reply<O>;
}

/** How a worker answers a failed operation: the error's code when it is ours, internal otherwise. */
export function errorReply(e: unknown): ErrorReply {
  if (e instanceof PyboxError) {
    const r: ErrorReply = { ok: false, code: e.code, message: clean(e.message) };
    if (e.retryAfterS !== undefined && Number.isSafeInteger(e.retryAfterS) && e.retryAfterS >= 0 && e.retryAfterS <= 86_400) r.retryAfterS = e.retryAfterS;
    return r;
  }
  return { ok: false, code: 'internal', message: 'the worker holding the session failed this operation' };
}

function errorOf(r: ErrorReply): PyboxError {
  return new PyboxError(r.code, clean(r.message), r.retryAfterS === undefined ? {} : { retryAfterS: r.retryAfterS });
}

/** A message from another node (hostile), short. */
const clean = (message: string): string => printable(message, MAX_MESSAGE_CHARS);

// ---- a call's outcome ---------------------------------------------------------------------------

export function outcomeToWire(o: SessionCallOutcome): WireOutcome {
  const w: WireOutcome = {
    kind: o.kind,
    report: o.report,
    stdout: capturedToWire(o.stdout),
    stderr: capturedToWire(o.stderr),
    durationMs: o.durationMs,
    stateLost: o.stateLost,
    sandboxLost: o.sandboxLost,
  };
  if (o.failure !== undefined) w.failure = o.failure.slice(0, 4096);
  return w;
}

const capturedToWire = (c: CapturedOutput) => ({ text: c.text(), totalBytes: c.totalBytes, truncated: c.truncated });

/** A call's outcome back from the wire; each stream's text cut to `outputBytes` characters (it is never more). */
export function outcomeFromWire(w: WireOutcome, outputBytes: number): SessionCallOutcome {
  const o: SessionCallOutcome = {
    kind: w.kind,
    report: w.report,
    stdout: capturedFromWire(w.stdout, outputBytes),
    stderr: capturedFromWire(w.stderr, outputBytes),
    durationMs: w.durationMs,
    stateLost: w.stateLost,
    sandboxLost: w.sandboxLost,
  };
  if (w.failure !== undefined) o.failure = clean(w.failure);
  return o;
}

function capturedFromWire(c: z.infer<typeof Captured>, outputBytes: number): CapturedOutput {
  const cut = c.text.length > outputBytes;
  const text = cut ? c.text.slice(0, outputBytes) : c.text;
  return { totalBytes: Math.max(c.totalBytes, Buffer.byteLength(text)), truncated: c.truncated || cut, text: () => text };
}

// ---- a call's output as job progress ------------------------------------------------------------

/** Most bytes of output one progress message carries (the worker flushes sooner). */
export const MAX_PROGRESS_BYTES = 256 * 1024;

export const OutputProgress = z.strictObject({
  seq: z.int().min(1).max(Number.MAX_SAFE_INTEGER),
  chunks: z
    .array(z.strictObject({ s: z.enum(['stdout', 'stderr']), b: b64(MAX_PROGRESS_BYTES) }))
    .min(1)
    .max(256),
});
export type OutputProgress = z.infer<typeof OutputProgress>;

// ---- downloads ---------------------------------------------------------------------------------

/**
 * Where a worker leaves a downloaded file's bytes for the API node that asked: a reply travels
 * in the queue's event stream too, which every API node reads and Redis keeps a while, so
 * megabytes there would be copied to every node and held long. The key is read once and deleted.
 */
export const downloadKey = (prefix: string, jobId: string): string => `${prefix}:session-download:${jobId}`;
/** How long a download waits for its API node to take it. */
export const DOWNLOAD_KEPT_MS = 120_000;

// ---- names --------------------------------------------------------------------------------------

/**
 * The queue of a worker's session operations. BullMQ refuses ':' in a queue name, which a node id
 * may hold; '%' never occurs in one, so the escape cannot make two nodes' names equal.
 */
export const sessionQueueName = (nodeId: string): string => `sessions.${nodeId.replace(/:/g, '%3A')}`;

