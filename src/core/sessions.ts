// The contracts of sessions: a live interpreter in a sandbox of its own, kept between calls.
//
//   http ──▶ SessionService (core/session-service.ts: tenants, caps, recording results)
//              └─▶ SessionHosts: where sessions live, by id
//                    = SessionManager (core/session-manager.ts), this node's sandboxes
//                    | RemoteSessionHosts (cluster/), calls routed to the worker holding the session
//   SessionManager ──▶ SessionSandboxes (engine/session-sandbox.ts): one container per session
//
// Nothing here knows about Docker, HTTP or Redis.
import type { OutputListener, SandboxOutcome } from './sandbox.ts';
import type { AppliedLimits, RuntimeName, SessionEndReason, SessionFileList } from './schemas.ts';

/** What a session's sandbox is created with (limits already clamped). */
export interface SessionSandboxSpec {
  /** The session's id; the container is labelled with it. */
  id: string;
  image: string;
  runtime: RuntimeName;
  limits: { memoryMb: number; cpus: number };
  /** The environment every call's code sees (laid over the runner's base environment). */
  env: Record<string, string>;
  /** Put in the work directory before the first call. */
  files: Array<{ path: string; data: Buffer }>;
}

/** One call in a session. */
export interface SessionCallJob {
  /** The execution id its result is recorded under. */
  id: string;
  code: string;
  stdin: string;
  /** Written to the work directory before the code runs. */
  files: Array<{ path: string; data: Buffer }>;
  /** The call's own limit: past it the code is interrupted (KeyboardInterrupt), then restarted if it does not stop. */
  timeoutMs: number;
  /** Aborted when the caller no longer wants the result: the call is interrupted, the outcome 'cancelled'. */
  signal?: AbortSignal | undefined;
  onOutput?: OutputListener | undefined;
}

/**
 * How a call ended. kind and report as a run's (SandboxOutcome): 'timeout' when the limit ran out
 * (the code was interrupted), 'oom' when the interpreter was killed at the memory limit.
 */
export interface SessionCallOutcome extends Omit<SandboxOutcome, 'cases'> {
  /** The interpreter was restarted in this call: earlier variables and imports are gone (files stay). */
  stateLost: boolean;
  /** The sandbox itself is gone: the session cannot take another call. */
  sandboxLost: boolean;
}

/** A session's sandbox as the engine runs it: one container with a live interpreter. */
export interface SessionSandbox {
  /** One call at a time; a second while one runs rejects with PyboxError('session_busy'). */
  call(job: SessionCallJob): Promise<SessionCallOutcome>;
  /** Writes files into the work directory (not while a call runs: session_busy). */
  putFiles(files: Array<{ path: string; data: Buffer }>): Promise<void>;
  /** A regular file of the work directory, at most maxBytes (PyboxError not_found / payload_too_large). */
  getFile(path: string, maxBytes: number): Promise<Buffer>;
  /** The regular files of the work directory (at most `max`, `truncated` when there were more). */
  listFiles(max: number): Promise<SessionFileList>;
  /** Kills and removes the container; idempotent; resolves once it is gone. */
  close(): Promise<void>;
  /** Resolves when the sandbox ended on its own (its container stopped), with why. */
  readonly ended: Promise<string>;
}

/** Starts session sandboxes: engine/ implements it over the local engine. */
export interface SessionSandboxes {
  /** Resolves once the runner in it is ready and has its files; rejects with a PyboxError. */
  open(spec: SessionSandboxSpec, signal?: AbortSignal): Promise<SessionSandbox>;
  /** Resolves when every session sandbox closed so far is removed. */
  drain(): Promise<void>;
}

/** A session as its host keeps it. */
export interface HostedSession {
  id: string;
  tenant: string;
  runtime: RuntimeName;
  limits: AppliedLimits;
  idleTimeoutMs: number;
  createdAtMs: number;
  lastUsedAtMs: number;
  expiresAtMs: number;
  calls: number;
  /** The node holding its sandbox. */
  node: string;
}

/** What creating a session needs, once the service has checked and clamped it. */
export interface SessionOpen {
  id: string;
  tenant: string;
  limits: AppliedLimits;
  idleTimeoutMs: number;
  env: Record<string, string>;
  files: Array<{ path: string; data: Buffer }>;
  createdAtMs: number;
}

/**
 * Where sessions live, by id: this node's SessionManager, or in a cluster the worker that holds
 * each session (its calls are routed there). Every method but open rejects with
 * PyboxError('not_found') for a session that is not (or no longer) there.
 */
export interface SessionHosts {
  open(req: SessionOpen, signal?: AbortSignal): Promise<HostedSession>;
  get(id: string): Promise<HostedSession>;
  /** Sessions alive, of one tenant or (undefined) of all. */
  list(tenant?: string): Promise<HostedSession[]>;
  call(id: string, job: SessionCallJob): Promise<{ outcome: SessionCallOutcome; session: HostedSession; runtime: RuntimeName }>;
  putFiles(id: string, files: Array<{ path: string; data: Buffer }>): Promise<void>;
  getFile(id: string, path: string, maxBytes: number): Promise<Buffer>;
  listFiles(id: string, max: number): Promise<SessionFileList>;
  close(id: string, reason: SessionEndReason): Promise<void>;
  /**
   * Hosts several nodes share (a cluster's) count a tenant's sessions where every node sees them.
   * Takes a place for session `id`, which is about to be opened, if the tenant's live sessions and
   * the places taken for those being opened are fewer than `max`, in one step every node sees:
   * true, or false at the cap. The place becomes the session's when it opens. Without this method
   * (one node's hosts), the session service counts a tenant's sessions itself.
   */
  reserve?(tenant: string, id: string, max: number): Promise<boolean>;
  /** Gives back the place reserve() took for a session whose open failed (or was never tried). */
  unreserve?(tenant: string, id: string): Promise<void>;
}
