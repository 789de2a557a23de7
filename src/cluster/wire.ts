// What travels through Redis between an API node and a worker: an accepted execution as a BullMQ
// job's data (JSON, files' bytes as base64), and the worker's result as the job's return value.
// Both are parsed on the receiving side as strictly as a request: whoever can write to Redis can
// write these, so the bounds are those an API node itself would have let through.
import { z } from 'zod';
import { TENANT_NAME } from '../core/caller.ts';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../core/json-depth.ts';
import type { AcceptedExecution, TestSpec } from '../core/ports.ts';
import { REQUEST_ID_PATTERN } from '../core/request-id.ts';
import { BASE64 } from '../core/results.ts';
import { CompareMode, ExecutionRequest, ExecutionResult, FilePath, MAX_TESTS, TestCase, Tolerance } from '../core/schemas.ts';

const WIRE_VERSION = 1;

/**
 * An execution's id as a job id: BullMQ refuses ids that are integers or hold ':', and the id ends
 * up in Redis keys and logs.
 */
export const ExecutionId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/, 'must be 1-128 letters, digits, _ and -')
  .refine((id) => !/^\d+$/.test(id), 'must not be a number');

/** Most bytes of all input files together (the most limits.inputFilesMaxBytes allows). */
export const MAX_INPUT_FILES_BYTES = 256 * 1024 * 1024;
/** A request's file content is at most 16 Mi characters; as UTF-8 that is at most 48 MiB of bytes. */
const MAX_FILE_BASE64_CHARS = Math.ceil((48 * 1024 * 1024) / 3) * 4;

const request = ExecutionRequest.shape;
const positiveInt = z.int().min(1).max(Number.MAX_SAFE_INTEGER);
const positive = z.number().positive().max(1_000_000);

/** A file as job data: its path and its bytes as base64. */
export const WireFile = z.strictObject({
  path: FilePath,
  base64: z
    .string()
    .max(MAX_FILE_BASE64_CHARS)
    .refine((s) => s.length % 4 === 0 && BASE64.test(s), 'must be base64'),
});

export const fileBytes = (fs: Array<{ base64: string }>): number => fs.reduce((n, f) => n + (f.base64.length / 4) * 3, 0);
/** A job's input files: as many and as large in all as a request may bring. */
export const WireFiles = z
  .array(WireFile)
  .max(64)
  .refine((fs) => fileBytes(fs) <= MAX_INPUT_FILES_BYTES + 64 * 2, 'files too large in all');
export const toWireFiles = (files: Array<{ path: string; data: Buffer }>) => files.map((f) => ({ path: f.path, base64: f.data.toString('base64') }));
export const fromWireFiles = (files: Array<{ path: string; base64: string }>) => files.map((f) => ({ path: f.path, data: Buffer.from(f.base64, 'base64') }));
/** The most characters of all test cases' stdin together: what the largest request body could hold. */
const MAX_TESTS_TEXT_CHARS = 256 * 1024 * 1024;

/** A test case's input as the sandbox runs it (SandboxCase), files as base64. */
const WireCase = z.strictObject({
  stdin: TestCase.shape.stdin.unwrap(),
  args: request.args.unwrap(),
  files: z.array(WireFile).max(64),
  timeoutMs: positiveInt,
});

/** A test case's expectation as core judges it (TestSpec). */
const WireTestSpec = z.strictObject({
  name: z.string().min(1).max(200).regex(/^[^\p{Cc}]+$/u, 'must be printable'),
  expectedStdout: TestCase.shape.expectedStdout,
  expectedExitCode: TestCase.shape.expectedExitCode,
  compare: CompareMode,
  tolerance: Tolerance.optional(),
});

const ModuleList = z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/).max(200)).max(1000);

export const ExecutionPayload = z.strictObject({
  v: z.literal(WIRE_VERSION),
  tenant: z.string().regex(TENANT_NAME),
  maxInFlight: positiveInt.nullable(),
  createdAtMs: z.int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** The accepting request's id, so the worker's log line can be matched to the API node's. */
  requestId: z.string().regex(REQUEST_ID_PATTERN).optional(),
  limits: z.strictObject({ timeoutMs: positiveInt, memoryMb: positiveInt, cpus: positive, outputBytes: positiveInt }),
  job: z.strictObject({
    id: ExecutionId,
    code: request.code,
    stdin: request.stdin.unwrap(),
    args: request.args.unwrap(),
    env: request.env.unwrap(),
    context: request.context.unwrap().refine((c) => !nestsDeeperThan(c, MAX_JSON_DEPTH), `must nest at most ${MAX_JSON_DEPTH} levels`),
    files: WireFiles,
    limits: z.strictObject({ timeoutMs: positiveInt, memoryMb: positiveInt, cpus: positive }),
    importPolicy: z.strictObject({ mode: z.enum(['warn', 'block']), dangerous: ModuleList, safe: ModuleList }).optional(),
    tests: z
      .array(WireCase)
      .min(1)
      .max(MAX_TESTS)
      .refine((cs) => cs.reduce((n, c) => n + c.stdin.length, 0) <= MAX_TESTS_TEXT_CHARS, 'test cases\' stdin too large in all')
      .optional(),
  })
    // Core counts the execution's and every case's files against one budget (inputFilesMaxBytes).
    .refine((j) => fileBytes(j.files) + (j.tests ?? []).reduce((n, c) => n + fileBytes(c.files), 0) <= MAX_INPUT_FILES_BYTES + 64 * 2 * (1 + (j.tests?.length ?? 0)), {
      message: 'files of the execution and its test cases too large in all',
      path: ['tests'],
    }),
  /** The test cases' expectations, index for index with job.tests. */
  tests: z.array(WireTestSpec).min(1).max(MAX_TESTS).optional(),
  /** A background item (async execution or batch item). */
  background: z.boolean().optional(),
  /** Its client streams the output: the worker reports it as the job's progress (output-progress.ts). */
  stream: z.boolean().optional(),
}).refine((p) => (p.tests?.length ?? 0) === (p.job.tests?.length ?? 0), {
  message: 'tests and job.tests must name the same cases',
  path: ['tests'],
});
export type ExecutionPayload = z.infer<typeof ExecutionPayload>;

/** Thrown when what came out of Redis is not what a node of this version writes. */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

/** An accepted execution as a job's data. */
export function toPayload(e: AcceptedExecution): ExecutionPayload {
  const { job } = e;
  const payload: ExecutionPayload = {
    v: WIRE_VERSION,
    tenant: e.tenant,
    maxInFlight: e.maxInFlight,
    createdAtMs: e.createdAtMs,
    limits: { ...e.limits },
    job: {
      id: job.id,
      code: job.code,
      stdin: job.stdin,
      args: job.args,
      env: job.env,
      context: job.context as ExecutionPayload['job']['context'],
      files: toWireFiles(job.files),
      limits: { timeoutMs: job.limits.timeoutMs, memoryMb: job.limits.memoryMb, cpus: job.limits.cpus },
    },
  };
  if (e.requestId !== undefined) payload.requestId = e.requestId;
  if (job.importPolicy) payload.job.importPolicy = { mode: job.importPolicy.mode, dangerous: job.importPolicy.dangerous, safe: job.importPolicy.safe };
  if (job.tests) {
    payload.job.tests = job.tests.map((c) => ({
      stdin: c.stdin,
      args: c.args,
      files: toWireFiles(c.files),
      timeoutMs: c.timeoutMs,
    }));
  }
  if (e.tests) payload.tests = e.tests.map((t) => specToWire(t));
  if (e.background !== undefined) payload.background = e.background;
  return payload;
}

/** A job's data back as an accepted execution; WireError saying what is wrong otherwise. */
export function fromPayload(data: unknown): AcceptedExecution {
  const parsed = ExecutionPayload.safeParse(data);
  if (!parsed.success) throw new WireError(`malformed execution payload: ${summarize(parsed.error)}`);
  const p = parsed.data;
  const { tests: cases, ...job } = p.job;
  const execution: AcceptedExecution = {
    job: { ...job, files: fromWireFiles(p.job.files) },
    limits: p.limits,
    tenant: p.tenant,
    maxInFlight: p.maxInFlight,
    createdAtMs: p.createdAtMs,
  };
  if (p.requestId !== undefined) execution.requestId = p.requestId;
  if (!p.job.importPolicy) delete execution.job.importPolicy;
  if (cases) execution.job.tests = cases.map((c) => ({ stdin: c.stdin, args: c.args, files: fromWireFiles(c.files), timeoutMs: c.timeoutMs }));
  if (p.tests) execution.tests = p.tests.map((t) => specFromWire(t));
  if (p.background !== undefined) execution.background = p.background;
  return execution;
}

type WireTestSpec = z.infer<typeof WireTestSpec>;

/** Optional fields only when set: the spec comes back exactly as it went. */
function specToWire(t: TestSpec): WireTestSpec {
  const w: WireTestSpec = { name: t.name, compare: t.compare };
  if (t.expectedStdout !== undefined) w.expectedStdout = t.expectedStdout;
  if (t.expectedExitCode !== undefined) w.expectedExitCode = t.expectedExitCode;
  if (t.tolerance !== undefined) w.tolerance = { relative: t.tolerance.relative, absolute: t.tolerance.absolute };
  return w;
}

function specFromWire(w: WireTestSpec): TestSpec {
  const t: TestSpec = { name: w.name, compare: w.compare };
  if (w.expectedStdout !== undefined) t.expectedStdout = w.expectedStdout;
  if (w.expectedExitCode !== undefined) t.expectedExitCode = w.expectedExitCode;
  if (w.tolerance !== undefined) t.tolerance = w.tolerance;
  return t;
}

/** A result is plain JSON already; parsed with the API's own schema plus bounds on its collections. */
const WireResult = ExecutionResult.extend({
  id: ExecutionId,
  files: ExecutionResult.shape.files.unwrap().max(1000).optional(),
});

/** A worker's result, as a job's return value came back; WireError otherwise. */
export function resultFromWire(value: unknown, expectedId: string): ExecutionResult {
  const parsed = WireResult.safeParse(value);
  if (!parsed.success) throw new WireError(`malformed execution result: ${summarize(parsed.error)}`);
  if (parsed.data.id !== expectedId) throw new WireError('the result is of another execution');
  return parsed.data;
}

/** The first few issues, short: enough for a log line, an error message and a job's failed reason. */
export function summarize(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
    .join('; ')
    .slice(0, 500);
}

/** Text another node wrote (hostile), fit for a message or a log line: no control or format characters, at most `max`. */
export function printable(text: string, max: number): string {
  const t = text.replace(/[\p{Cc}\p{Cf}]+/gu, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}…` : t;
}

// ---- what API nodes and workers share besides the payloads -------------------------------------

/** The BullMQ queue every execution goes through (its keys start with `${prefix}:executions:`). */
export const QUEUE_NAME = 'executions';
/** The name of every job on it. */
export const JOB_NAME = 'run';

/** The pub/sub channel on which API nodes tell workers to stop a running execution. */
export const cancelChannel = (prefix: string): string => `${prefix}:cancel`;
/**
 * A short-lived mark of the same request: a worker that takes the job after the message was
 * published (it was between taking the job and listening for it) still sees it.
 */
export const cancelMarkKey = (prefix: string, id: string): string => `${prefix}:cancel:${id}`;
export const CANCEL_MARK_MS = 10 * 60_000;

export const CancelMessage = z.strictObject({ id: ExecutionId, reason: z.enum(['client', 'shutdown']) });
export type CancelMessage = z.infer<typeof CancelMessage>;

/**
 * A tenant's executions in flight across the cluster, counted in Redis (cluster/redis-limits.ts
 * implements it). Admitting counts the execution in; release is idempotent (both the API node
 * and the worker release). A lease ends a count its holders never released (both died).
 */
export interface Admission {
  admit(a: { tenant: string; id: string; maxInFlight: number | null; leaseMs: number }): Promise<{ admitted: boolean; inFlight: number }>;
  release(tenant: string, id: string): Promise<void>;
}
