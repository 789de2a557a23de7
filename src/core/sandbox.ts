// The contract between core and whatever runs sandboxes: the job core hands over and the outcome it
// gets back. engine/ (a local Docker engine and its warm pool) implements it today; a queue to a
// remote worker can implement the same port later. Nothing here knows about Docker.
import type { ExecutionError, RuntimeName } from './schemas.ts';

export interface SandboxJob {
  id: string;
  image: string;
  runtime: RuntimeName;
  code: string;
  stdin: string;
  args: string[];
  env: Record<string, string>;
  context: Record<string, unknown>;
  files: Array<{ path: string; data: Buffer }>;
  limits: { timeoutMs: number; memoryMb: number; cpus: number };
  /**
   * Test cases: the runner runs the code once per case instead of once (each a fresh process in a
   * fresh work directory holding `files` and the case's own files, with the case's stdin, args and
   * time limit), and the outcome has one CaseOutcome per case. `stdin` and `args` above are empty then.
   */
  tests?: SandboxCase[];
  /** Checked by the runner on the code's syntax tree before it runs; absent when the policy is off. */
  importPolicy?: { mode: 'warn' | 'block'; dangerous: string[]; safe: string[] };
  /**
   * Aborted when the caller no longer wants the result (its client went away, or the service is
   * shutting down): the run is stopped, its sandbox removed, and the outcome is 'cancelled'.
   */
  signal?: AbortSignal;
  /**
   * Settles once the caller is done with the outcome (has recorded it). Until then, for at most
   * RECORD_WAIT_MS, the pool's replacement and the removal of a container that stopped on its own
   * wait: the burst of engine CPU they cost would otherwise land on the recording (a PostgreSQL
   * round trip took several times longer under it). A container that may still run code (timeout,
   * cancel, flood) is removed at once regardless.
   */
  recorded?: Promise<unknown>;
  /**
   * Told of the code's output as the sandbox relays it (streaming): the bytes of each stream up to
   * limits.outputBytes, in order, never after the outcome. Bytes, not text: a chunk may end inside
   * a UTF-8 character (decode with a StringDecoder per stream).
   */
  onOutput?: OutputListener;
}

/** Output as it is produced: the stream and its next bytes. Must not throw. */
export type OutputListener = (stream: 'stdout' | 'stderr', data: Buffer) => void;

/** One test case as the sandbox runs it (its expectation stays with core: see TestSpec). */
export interface SandboxCase {
  stdin: string;
  args: string[];
  /** This case's files, laid over the job's (a case's file wins over a job's file of the same path). */
  files: Array<{ path: string; data: Buffer }>;
  timeoutMs: number;
}

/**
 * How one test case ended inside the sandbox:
 * - finished: the program exited (exitCode, signal, error as for a run);
 * - timeout: the case's own time limit ran out and the runner killed it;
 * - oom: the memory limit was hit while the case ran;
 * - output_limit: the case's output went past the flood limit;
 * - not_run: the execution ended (timeout, oom of the whole sandbox, cancel, failure) before this case ran.
 */
export type CaseOutcomeKind = 'finished' | 'timeout' | 'oom' | 'output_limit' | 'not_run';

export interface CaseOutcome {
  kind: CaseOutcomeKind;
  exitCode: number | null;
  /** The signal number that ended the program, if one did. */
  signal: number | null;
  error: ExecutionError | null;
  /** Kept up to limits.outputBytes per stream, like a run's. */
  stdout: CapturedOutput;
  stderr: CapturedOutput;
  durationMs: number;
  cpuMs: number | null;
}

/** The longest a sandbox's removal and replacement wait for the caller's recording (SandboxJob.recorded). */
export const RECORD_WAIT_MS = 500;

/** A job that runs code alone: no stdin, arguments, environment, context or files. */
export function codeJob(fields: Pick<SandboxJob, 'id' | 'image' | 'runtime' | 'code' | 'limits'> & { signal?: AbortSignal | undefined }): SandboxJob {
  const { signal, ...rest } = fields;
  return { ...rest, stdin: '', args: [], env: {}, context: {}, files: [], ...(signal ? { signal } : {}) };
}

/** What a container is created with: sandboxes are interchangeable when these are equal. */
export interface SandboxConfig {
  image: string;
  runtime: RuntimeName;
  memoryMb: number;
  cpus: number;
  /** Modules the runner imports while it waits (warm sandboxes only). */
  preload: string[];
}

export const configOf = (job: SandboxJob): SandboxConfig => ({
  image: job.image,
  runtime: job.runtime,
  memoryMb: job.limits.memoryMb,
  cpus: job.limits.cpus,
  preload: [],
});

/**
 * How a run ended, as far as the sandbox side can tell:
 * - finished: the runner reported (the code exited, failed validation, or the runner's setup failed);
 * - timeout: the wall-clock limit ran out; output until then is kept;
 * - oom: the memory limit was hit, as the kernel's or gVisor's own accounting shows;
 * - output_limit: a stream went past the flood limit;
 * - cancelled: the job's signal was aborted before it finished;
 * - failed: pybox's side failed (engine, sandbox, protocol); `failure` says why.
 */
export type OutcomeKind = 'finished' | 'timeout' | 'oom' | 'output_limit' | 'cancelled' | 'failed';

/** One output stream as captured: its kept bytes as text, and how much there was in all. */
export interface CapturedOutput {
  /** Every byte the stream produced, kept or not. */
  readonly totalBytes: number;
  readonly truncated: boolean;
  text(): string;
}

/** A file the code left under out/, as the runner reported it (hostile: checked again by core). */
export interface ReportedFile {
  path: string;
  size: number;
  base64: string;
}

/** The runner's final report, after the engine validated its shape. */
export type SandboxReport =
  | { v: 1; phase: 'setup'; message: string }
  | { v: 1; phase: 'validation'; error: ExecutionError }
  | {
      v: 1;
      phase: 'run';
      exitCode: number;
      signal: number | null;
      error: ExecutionError | null;
      files: ReportedFile[];
      filesDropped: number;
      flooded: boolean;
      cpuMs?: number | null | undefined;
      flaggedImports?: Array<{ module: string; line: number | null }> | undefined;
      /** Figures (and in a session the last expression's value), as the runner captured them. */
      outputs?: ReportedRichOutput[] | undefined;
      /** Rich outputs the runner did not send (over its caps). */
      outputsDropped?: number | undefined;
    };

/** A rich output as the runner reported it: hostile, checked again by core (type, base64, caps). */
export interface ReportedRichOutput {
  type: string;
  data: string;
  kind: 'figure' | 'result';
}

export interface SandboxOutcome {
  kind: OutcomeKind;
  report: SandboxReport | null;
  stdout: CapturedOutput;
  stderr: CapturedOutput;
  /** The code's own wall time: from the payload reaching the runner to the end. */
  durationMs: number;
  /** Why a run failed on our side (kind 'failed'), or what stopped it, for the log and the result. */
  failure?: string;
  /**
   * With test cases (job.tests): one per case, in order, always as many as the job had: cases the
   * sandbox never reached are not_run. The report is then the runner's summary of the whole run.
   */
  cases?: CaseOutcome[];
}

/** Time the whole sandbox gets beyond the sum of its cases' limits: its start, and each case's set-up. */
export const TESTS_MARGIN_MS = 10_000;
export const TESTS_MARGIN_PER_CASE_MS = 250;
/** The most a sandbox running test cases may last, whatever its cases' limits add up to. */
export const TESTS_WALL_CAP_MS = 60 * 60_000;

/**
 * The wall-clock limit of a job: its timeoutMs, or with test cases the sum of the cases' limits plus
 * a margin (capped: cases past the cap end not_run). Never less than the job's own timeoutMs.
 */
export function wallLimitMs(job: Pick<SandboxJob, 'limits' | 'tests'>): number {
  const tests = job.tests;
  if (!tests || tests.length === 0) return job.limits.timeoutMs;
  const sum = tests.reduce((n, c) => n + c.timeoutMs, 0);
  const total = sum + TESTS_MARGIN_MS + TESTS_MARGIN_PER_CASE_MS * tests.length;
  return Math.max(job.limits.timeoutMs, Math.min(total, TESTS_WALL_CAP_MS));
}
