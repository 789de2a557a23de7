// Sessions as the HTTP layer (and the in-process agent tools) see them: who may create, see, call
// and end which session, with what limits, and each call recorded as an execution is.
//
// A session belongs to the tenant that created it. Another tenant's session id is answered as an
// unknown one (404). A session that ended recently is remembered (bounded in number and age), so a
// call to it is answered 410 session_ended with the reason rather than a bare 404.
import type { Config } from '../config/schema.ts';
import type { Caller } from './caller.ts';
import { assertFloors, decodeFiles, type DefaultExecutionService, type InputBudget } from './execution-service.ts';
import { invalidField, PyboxError } from './errors.ts';
import type { Cancellation } from './feedback.ts';
import { cancelReasonOf, recordResult } from './local-dispatch.ts';
import { NO_OBSERVER, type Clock, type ExecutionStore, type Logger, type Observer } from './ports.ts';
import { buildResult, type ResultDeps } from './results.ts';
import type { OutputListener } from './sandbox.ts';
import type { ExecutionResult, SessionCallRequest, SessionEndReason, SessionFileList, SessionFilesUpload, SessionInfo, SessionList, SessionRequest } from './schemas.ts';
import type { HostedSession, SessionCallJob, SessionHosts } from './sessions.ts';

export interface SessionServiceDeps {
  hosts: SessionHosts;
  /** The execution service's clamping, so a session's limits are an execution's. */
  executions: Pick<DefaultExecutionService, 'clampLimits' | 'effectiveLimits'>;
  store: ExecutionStore;
  config: Config['sessions'];
  limits: Pick<Config['limits'], 'inputFilesMaxBytes'>;
  /** How results are built (ResultDeps without the runtime: the host that ran the call names it). */
  results: Omit<ResultDeps, 'runtime'>;
  clock: Clock;
  logger: Logger;
  newId: () => string;
  /** Told after each save whether it worked (the execution service refuses runs while saves fail). */
  onRecorded?: ((fault: string | null) => void) | undefined;
  /** How many ended sessions are remembered for their 410 answer; 10 000 when absent. */
  endedMemory?: number | undefined;
  /** Whether new work is taken (false once shutdown has begun: creates and calls get shutting_down). */
  accepting?: (() => boolean) | undefined;
  /** Told of every call that ends, as of every execution (metrics). */
  observer?: Pick<Observer, 'executionFinished'> | undefined;
}

export interface SessionCallOptions {
  /** Aborted when the caller no longer wants the result: the call is interrupted and ends cancelled. */
  signal?: AbortSignal | undefined;
  onOutput?: OutputListener | undefined;
  requestId?: string | undefined;
}

/** What the HTTP layer and the in-process agent tools use of the service. */
export type SessionApi = Pick<SessionService, 'create' | 'get' | 'list' | 'delete' | 'call' | 'putFiles' | 'listFiles' | 'getFile'>;

/** The most files one listing returns. */
export const MAX_LISTED_FILES = 1000;
/** How long an ended session is remembered. */
const ENDED_TTL_MS = 24 * 60 * 60_000;

interface Ended {
  tenant: string;
  info: SessionInfo;
  atMs: number;
}

const iso = (ms: number) => new Date(ms).toISOString();

export class SessionService {
  /** Recently ended sessions by id, oldest first (a Map keeps insertion order). */
  private readonly ended = new Map<string, Ended>();
  /** Sessions being created per tenant: they count against the tenant's cap before they exist. */
  private readonly creating = new Map<string, number>();
  /** Calls not yet recorded; settled() waits for none. */
  private inFlight = 0;
  private settledWaiters: Array<() => void> = [];

  constructor(private readonly deps: SessionServiceDeps) {}

  async create(caller: Caller, req: SessionRequest, opts: { signal?: AbortSignal | undefined } = {}): Promise<SessionInfo> {
    const { deps } = this;
    const { config } = deps;
    if (!config.enabled) throw new PyboxError('not_found', 'sessions are not enabled on this server');
    this.assertAccepting();
    assertFloors(req);
    const limits = deps.executions.clampLimits(req, caller.limits);
    const files = decodeFiles(req.files ?? [], 'files', this.budget());
    const idleTimeoutMs = Math.min(req.idleTimeoutMs ?? config.idleTimeoutMs, config.idleTimeoutMs);
    const tenant = caller.tenant;
    const open = { id: deps.newId(), tenant, limits, idleTimeoutMs, env: req.env ?? {}, files, createdAtMs: deps.clock.now() };
    const refused = () =>
      new PyboxError('session_limit', `this tenant has ${config.maxPerTenant} session(s), its limit; end one (DELETE /v1/sessions/{id}) first`, {
        details: { limit: 'sessions_per_tenant', max: config.maxPerTenant },
      });
    const { hosts } = deps;
    if (hosts.reserve && hosts.unreserve) {
      // Hosts shared by several nodes: the place is taken where every node counts.
      if (!(await hosts.reserve(tenant, open.id, config.maxPerTenant))) throw refused();
      try {
        return this.infoOf(await hosts.open(open, opts.signal));
      } catch (e) {
        await hosts.unreserve(tenant, open.id).catch((err: unknown) => deps.logger.warn('could not give back a session place', { tenant, session: open.id, error: err }));
        throw e;
      }
    }
    const pending = this.creating.get(tenant) ?? 0;
    this.creating.set(tenant, pending + 1);
    try {
      const alive = (await hosts.list(tenant)).length;
      if (alive + pending >= config.maxPerTenant) throw refused();
      return this.infoOf(await hosts.open(open, opts.signal));
    } finally {
      const left = (this.creating.get(tenant) ?? 1) - 1;
      if (left > 0) this.creating.set(tenant, left);
      else this.creating.delete(tenant);
    }
  }

  async get(caller: Caller, id: string): Promise<SessionInfo> {
    const hosted = await this.find(caller, id, { endedAs: 'info' });
    return 'state' in hosted ? hosted : this.infoOf(hosted);
  }

  async list(caller: Caller): Promise<SessionList> {
    const items = (await this.deps.hosts.list(caller.tenant)).sort((a, b) => a.createdAtMs - b.createdAtMs || a.id.localeCompare(b.id));
    return { items: items.map((h) => this.infoOf(h)) };
  }

  /** Ends the caller's session; deleting one that already ended answers its final state again. */
  async delete(caller: Caller, id: string): Promise<SessionInfo> {
    const hosted = await this.find(caller, id, { endedAs: 'info' });
    if ('state' in hosted) return hosted;
    try {
      await this.deps.hosts.close(id, 'deleted');
    } catch (e) {
      if (!(e instanceof PyboxError && e.code === 'not_found')) throw e;
    }
    // Closing told the listener; a host that does not (a remote one) is remembered here.
    const ended = this.ended.get(id);
    if (ended) return ended.info;
    this.sessionEnded(hosted, 'deleted');
    return this.ended.get(id)?.info ?? this.endedInfo(hosted, 'deleted');
  }

  /** Runs code in the caller's session; the result is recorded as an execution of its tenant. */
  async call(caller: Caller, id: string, req: SessionCallRequest, opts: SessionCallOptions = {}): Promise<ExecutionResult> {
    this.inFlight++;
    try {
      return await this.callAndRecord(caller, id, req, opts);
    } finally {
      this.inFlight--;
      if (this.inFlight === 0) for (const w of this.settledWaiters.splice(0)) w();
    }
  }

  /** Resolves once every call begun so far has been recorded (shutdown waits for it before closing the store). */
  settled(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  private async callAndRecord(caller: Caller, id: string, req: SessionCallRequest, opts: SessionCallOptions): Promise<ExecutionResult> {
    const { deps } = this;
    const session = await this.find(caller, id, { endedAs: 'error' });
    this.assertAccepting();
    assertFloors(req);
    const budget = this.budget();
    const files = decodeFiles(req.files ?? [], 'files', budget);
    const stdin = req.stdin ?? '';
    budget.used += Buffer.byteLength(stdin, 'utf8');
    if (budget.used > budget.max) throw invalidField('stdin', `${budget.what} exceed ${budget.max} bytes in total`);
    const maxTimeoutMs = deps.executions.effectiveLimits(caller.limits).max.timeoutMs;
    const timeoutMs = Math.min(req.timeoutMs ?? session.limits.timeoutMs, maxTimeoutMs);
    const createdAtMs = deps.clock.now();
    const job: SessionCallJob = { id: deps.newId(), code: req.code, stdin, files, timeoutMs, signal: opts.signal, onOutput: opts.onOutput };
    let called;
    try {
      called = await deps.hosts.call(id, job);
    } catch (e) {
      throw this.endedInstead(caller, id, e);
    }
    const { outcome, session: after, runtime } = called;
    const cancellation: Cancellation | undefined =
      outcome.kind === 'cancelled' ? { by: opts.signal?.aborted ? cancelReasonOf(opts.signal) : 'shutdown', started: outcome.durationMs > 0 } : undefined;
    const limits = { ...after.limits, timeoutMs };
    const built = buildResult({ ...deps.results, runtime }, { id: job.id, code: req.code, limits, outcome, createdAtMs, cancellation });
    const ended = outcome.sandboxLost;
    const notes: string[] = [];
    if (outcome.stateLost) notes.push("The session's interpreter was restarted during this call: variables and imports from earlier calls are gone; files in the work directory remain.");
    if (ended) notes.push('The session has ended (its sandbox was lost); create a new session to go on.');
    const result: ExecutionResult = {
      ...built,
      feedback: notes.length > 0 ? `${built.feedback}\n\n${notes.join('\n')}` : built.feedback,
      session: { sessionId: id, call: after.calls, stateLost: outcome.stateLost, ended },
    };
    if (ended && !this.ended.has(id)) this.sessionEnded(after, 'failed');
    const ids = { id: job.id, session: id, tenant: caller.tenant, requestId: opts.requestId };
    if (result.status === 'internal_error') deps.logger.error('session call failed on our side', { ...ids, why: result.error?.message });
    deps.logger.info('session call', { ...ids, status: result.status, durationMs: result.durationMs, stateLost: outcome.stateLost });
    (deps.observer ?? NO_OBSERVER).executionFinished({ status: result.status, runtime, durationMs: result.durationMs, queueWaitMs: 0 });
    await recordResult({ store: deps.store, logger: deps.logger, onRecorded: deps.onRecorded }, caller.tenant, result, outcome.stdout.totalBytes + outcome.stderr.totalBytes, req.code);
    return result;
  }

  async putFiles(caller: Caller, id: string, upload: SessionFilesUpload): Promise<SessionFileList> {
    await this.find(caller, id, { endedAs: 'error' });
    const files = decodeFiles(upload.files, 'files', this.budget());
    try {
      await this.deps.hosts.putFiles(id, files);
      return await this.deps.hosts.listFiles(id, MAX_LISTED_FILES);
    } catch (e) {
      throw this.endedInstead(caller, id, e);
    }
  }

  async listFiles(caller: Caller, id: string): Promise<SessionFileList> {
    await this.find(caller, id, { endedAs: 'error' });
    try {
      return await this.deps.hosts.listFiles(id, MAX_LISTED_FILES);
    } catch (e) {
      throw this.endedInstead(caller, id, e);
    }
  }

  /** A regular file of the session's work directory, at most sessions.maxDownloadBytes. */
  async getFile(caller: Caller, id: string, path: string): Promise<Buffer> {
    await this.find(caller, id, { endedAs: 'error' });
    // Checked again by the sandbox; a path that could leave the work directory is no file of it.
    if (!isWorkPath(path)) throw new PyboxError('not_found', 'no such file in the session\'s work directory');
    try {
      return await this.deps.hosts.getFile(id, path, this.deps.config.maxDownloadBytes);
    } catch (e) {
      throw this.endedInstead(caller, id, e);
    }
  }

  /** A session ended (told by the host, or seen here): remembered for its 410 answers. */
  sessionEnded(session: HostedSession, reason: SessionEndReason): void {
    const now = this.deps.clock.now();
    this.ended.delete(session.id);
    this.ended.set(session.id, { tenant: session.tenant, info: this.endedInfo(session, reason), atMs: now });
    const max = this.deps.endedMemory ?? 10_000;
    for (const [id, e] of this.ended) {
      if (this.ended.size <= max && now - e.atMs < ENDED_TTL_MS) break;
      this.ended.delete(id);
    }
  }

  private assertAccepting(): void {
    if (this.deps.accepting && !this.deps.accepting()) {
      throw new PyboxError('shutting_down', 'the service is shutting down and takes no new session work; retry shortly', { retryAfterS: 5 });
    }
  }

  private budget(): InputBudget {
    return { used: 0, max: this.deps.limits.inputFilesMaxBytes, what: 'input files' };
  }

  /**
   * The caller's live session; an ended one is its final info (`endedAs: 'info'`) or a 410
   * (`'error'`); anything else, another tenant's included, is not_found.
   */
  private async find(caller: Caller, id: string, opts: { endedAs: 'info' | 'error' }): Promise<HostedSession | SessionInfo> {
    let hosted: HostedSession | undefined;
    try {
      hosted = await this.deps.hosts.get(id);
    } catch (e) {
      if (!(e instanceof PyboxError && e.code === 'not_found')) throw e;
    }
    if (hosted && hosted.tenant === caller.tenant) return hosted;
    if (!hosted) {
      const ended = this.recentlyEnded(caller, id);
      if (ended) {
        if (opts.endedAs === 'info') return ended.info;
        throw endedError(id, ended.info);
      }
    }
    throw new PyboxError('not_found', `no session with id ${id}`);
  }

  private recentlyEnded(caller: Caller, id: string): Ended | undefined {
    const ended = this.ended.get(id);
    if (!ended || ended.tenant !== caller.tenant || this.deps.clock.now() - ended.atMs >= ENDED_TTL_MS) return undefined;
    return ended;
  }

  /** A session that went away between the look-up and the operation: 410 when it is known to have ended. */
  private endedInstead(caller: Caller, id: string, e: unknown): unknown {
    if (!(e instanceof PyboxError && e.code === 'not_found')) return e;
    const ended = this.recentlyEnded(caller, id);
    return ended ? endedError(id, ended.info) : e;
  }

  private infoOf(h: HostedSession): SessionInfo {
    return {
      id: h.id,
      state: 'active',
      runtime: h.runtime,
      limits: h.limits,
      idleTimeoutMs: h.idleTimeoutMs,
      createdAt: iso(h.createdAtMs),
      lastUsedAt: iso(h.lastUsedAtMs),
      idleExpiresAt: iso(Math.min(h.lastUsedAtMs + h.idleTimeoutMs, h.expiresAtMs)),
      expiresAt: iso(h.expiresAtMs),
      calls: h.calls,
      endedReason: null,
    };
  }

  private endedInfo(h: HostedSession, reason: SessionEndReason): SessionInfo {
    const now = iso(this.deps.clock.now());
    return { ...this.infoOf(h), state: 'ended', idleExpiresAt: now, endedReason: reason };
  }
}

/** A relative path with / separators and no empty, . or .. segment, printable, at most 255 characters. */
export function isWorkPath(path: string): boolean {
  return (
    path.length >= 1 &&
    path.length <= 255 &&
    /^[\x20-\x7e\u00a0-\uffff]+$/.test(path) &&
    !path.startsWith('/') &&
    !path.includes('\\') &&
    path.split('/').every((s) => s !== '' && s !== '.' && s !== '..')
  );
}

const END_WORDS: Record<SessionEndReason, string> = {
  deleted: 'it was deleted',
  idle: 'it was idle longer than its idle timeout',
  lifetime: 'it reached its maximum lifetime',
  failed: 'its sandbox was lost',
  shutdown: 'the server shut down',
};

function endedError(id: string, info: SessionInfo): PyboxError {
  const reason = info.endedReason ?? 'deleted';
  return new PyboxError('session_ended', `session ${id} has ended: ${END_WORDS[reason]}; create a new session`, { details: { sessionId: id, reason } });
}
