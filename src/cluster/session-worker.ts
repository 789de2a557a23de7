// A worker's side of cluster sessions: it takes the operations on its sessions from a BullMQ queue
// of its own (API nodes route each session's operations to the worker holding it), does them on
// this node's SessionHosts (the SessionManager over its engine), and answers with the job's return
// value; a call's output goes back as the job's progress while it runs. It keeps the session
// directory up to date: an entry on open, renewed every heartbeat (so a dead worker's entries
// expire), removed on close and when a session ends on its own.
//
// Every job names the tenant the API node found in the directory: an operation on a session of
// another tenant is answered not_found, as for one that does not exist.
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { PyboxError } from '../core/errors.ts';
import type { Logger } from '../core/ports.ts';
import type { HostedSession, SessionHosts } from '../core/sessions.ts';
import { patientOptions, within, type RedisEndpoint } from './connection.ts';
import type { SessionDirectory } from './session-directory.ts';
import {
  DOWNLOAD_KEPT_MS,
  MAX_PROGRESS_BYTES,
  downloadKey,
  errorReply,
  fromWireFiles,
  outcomeToWire,
  parseJobData,
  sessionQueueName,
  type ErrorReply,
  type OutputProgress,
  type Reply,
  type SessionJobData,
  type SessionOp,
} from './session-wire.ts';

export interface SessionWorkerDeps {
  connection: RedisEndpoint;
  prefix: string;
  nodeId: string;
  /** This node's sessions (the SessionManager). */
  local: SessionHosts;
  directory: SessionDirectory;
  /** Plain commands (downloads' bytes are left under a key of their own). */
  redis: Redis;
  /** The most sessions this node holds (sessions.maxPerHost): it sizes the queue's concurrency. */
  maxSessions: number;
  /** How long a job stays this worker's without a renewal of its lock (cluster.lockMs). */
  lockMs: number;
  /** How often directory entries are renewed (cluster.heartbeatMs); they live three times this. */
  refreshMs: number;
  logger: Logger;
  /** How long a call's output gathers before it is sent as progress (default 50 ms). */
  progressWindowMs?: number | undefined;
}

/** Renewals an entry outlives: as a node's report in the registry. */
const MISSED_REFRESHES = 3;
/** Interrupts for calls not (yet) running here are kept this long, at most this many. */
const EARLY_INTERRUPT_MS = 60_000;
const MAX_EARLY_INTERRUPTS = 10_000;
/** Ended sessions are remembered this long (past any renewal or reply under way), at most this many. */
const ENDED_KEPT_MS = 60_000;
const MAX_ENDED = 100_000;

interface Active {
  tenant: string;
  session: string;
  controller: AbortController;
}

type AnyReply = Reply<SessionOp> | ErrorReply;

export class SessionWorker {
  private readonly worker: Worker<unknown, AnyReply>;
  /** Calls and opens under way, by job id: what an interrupt job stops. */
  private readonly active = new Map<string, Active>();
  /** Interrupts that came before their job ran (or for a job never seen), by job id: whose, and until when. */
  private readonly early = new Map<string, { tenant: string; session: string; until: number }>();
  /** Sessions whose entries this worker wrote and has not removed: tenant by session id. */
  private readonly written = new Map<string, string>();
  /**
   * Sessions that ended lately, until when: a renewal or a call's reply that read the session just
   * before it ended must not write its entry back.
   */
  private readonly ended = new Map<string, number>();
  private refresher: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> = Promise.resolve();
  private held = 0;
  private started: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(private readonly deps: SessionWorkerDeps) {
    // Each session runs one call at a time, and an open takes a place: twice the sessions leaves
    // room for quick operations and interrupts beside every session's call.
    const concurrency = Math.min(Math.max(2 * deps.maxSessions + 8, 8), 4096);
    this.worker = new Worker<unknown, AnyReply>(sessionQueueName(deps.nodeId), (job) => this.process(job), {
      connection: patientOptions(deps.connection),
      prefix: deps.prefix,
      name: deps.nodeId,
      autorun: false,
      concurrency,
      lockDuration: deps.lockMs,
      stalledInterval: Math.max(1000, Math.floor(deps.lockMs / 2)),
      // An operation whose worker went away is failed, never done twice: a call may have run partly.
      maxStalledCount: 0,
    });
    this.worker.on('error', (e) => deps.logger.warn('session queue worker error', { error: e.message }));
  }

  /** Sessions this node holds, as last counted (for its heartbeat report). */
  get sessions(): number {
    return this.held;
  }

  /**
   * Forgets what a previous life of this node left (its sessions died with it): operations still
   * queued for them and their directory entries; then takes jobs and renews entries.
   */
  start(): Promise<void> {
    this.started ??= (async () => {
      const { deps } = this;
      const queue = new Queue(sessionQueueName(deps.nodeId), { connection: patientOptions(deps.connection), prefix: deps.prefix });
      try {
        await queue.drain(true);
      } finally {
        await queue.close();
      }
      for (const s of await deps.directory.list()) {
        if (s.node === deps.nodeId) await deps.directory.remove(s);
      }
      this.worker.run().catch((e: unknown) => deps.logger.error('the session queue worker stopped', { error: e }));
      await this.worker.waitUntilReady();
      this.refresher = setInterval(() => {
        this.refreshing = this.refreshing.then(() => this.refresh());
      }, deps.refreshMs);
      this.refresher.unref();
      this.refreshing = this.refresh();
    })();
    return this.started;
  }

  /** Told by the SessionManager (its onEnded) that a session ended on its own: its entry goes at once. */
  sessionEnded(session: Pick<HostedSession, 'id' | 'tenant'>): void {
    if (this.ended.size < MAX_ENDED) this.ended.set(session.id, Date.now() + ENDED_KEPT_MS);
    if (!this.written.has(session.id)) return;
    this.written.delete(session.id);
    this.deps.directory.remove(session).catch((e: unknown) => this.deps.logger.warn('could not remove a session from the directory', { session: session.id, error: e }));
  }

  /**
   * Takes no more operations, lets those under way finish for graceMs, then interrupts the calls
   * still running, and removes this node's directory entries (its sessions end with it).
   */
  close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      if (this.refresher) clearInterval(this.refresher);
      const timer = setTimeout(() => {
        for (const a of this.active.values()) a.controller.abort('shutdown');
      }, graceMs);
      try {
        await this.worker.close();
      } finally {
        clearTimeout(timer);
      }
      await within(this.refreshing, 5000, 'the last renewal').catch(() => {});
      const left = [...this.written].map(([id, tenant]) => ({ id, tenant }));
      this.written.clear();
      await within(Promise.allSettled(left.map((s) => this.deps.directory.remove(s))), 5000, 'removing the directory entries').catch(() => {});
    })();
    return this.closing;
  }

  // ---- the directory ----------------------------------------------------------------------------

  private get ttlMs(): number {
    return this.deps.refreshMs * MISSED_REFRESHES;
  }

  /** The session as the directory files it: held by this node, whatever name the manager gives it. */
  private async file(s: HostedSession): Promise<HostedSession> {
    const filed = { ...s, node: this.deps.nodeId };
    if (this.ended.has(filed.id)) return filed;
    this.written.set(filed.id, filed.tenant);
    await this.deps.directory.put(filed, this.ttlMs);
    return filed;
  }

  /** Renews the entries of every live session, and removes those of sessions gone since. */
  private async refresh(): Promise<void> {
    try {
      const live = await this.deps.local.list();
      this.held = live.length;
      const ids = new Set(live.map((s) => s.id));
      const gone = [...this.written].filter(([id]) => !ids.has(id)).map(([id, tenant]) => ({ id, tenant }));
      for (const s of gone) this.written.delete(s.id);
      await Promise.all([...live.map((s) => this.file(s)), ...gone.map((s) => this.deps.directory.remove(s))]);
    } catch (e) {
      this.deps.logger.warn('could not renew the session directory', { error: e instanceof Error ? e.message : String(e) });
    }
    const now = Date.now();
    for (const [id, mark] of this.early) if (mark.until <= now) this.early.delete(id);
    for (const [id, until] of this.ended) if (until <= now) this.ended.delete(id);
  }

  // ---- operations --------------------------------------------------------------------------------

  private async process(job: Job<unknown, AnyReply>): Promise<AnyReply> {
    const data = parseJobData(job.name, job.data);
    // Failed at once, never retried, and the worker goes on with the next job.
    if (data instanceof Error) throw new UnrecoverableError(data.message);
    if (job.id === undefined) throw new UnrecoverableError('a job without an id');
    try {
      return await this.run(job.id, job, data);
    } catch (e) {
      if (!(e instanceof PyboxError)) this.deps.logger.error('a session operation failed', { op: data.op, job: job.id, error: e instanceof Error ? e.message : String(e) });
      return errorReply(e);
    }
  }

  private async run(jobId: string, job: Job<unknown, AnyReply>, data: SessionJobData): Promise<AnyReply> {
    const { local } = this.deps;
    switch (data.op) {
      case 'open': {
        const { open } = data;
        return await this.track(jobId, data.tenant, open.id, async (signal) => {
          const s = await local.open({ ...open, tenant: data.tenant, files: fromWireFiles(open.files) }, signal);
          this.held++;
          return { ok: true, session: await this.file(s) };
        });
      }
      case 'call': {
        await this.owned(data.session, data.tenant);
        const { call } = data;
        return await this.track(jobId, data.tenant, data.session, async (signal) => {
          const progress = new ProgressSender(job, this.deps.progressWindowMs ?? 50, this.deps.logger);
          try {
            const r = await local.call(data.session, {
              id: call.id,
              code: call.code,
              stdin: call.stdin,
              files: fromWireFiles(call.files),
              timeoutMs: call.timeoutMs,
              signal,
              onOutput: (stream, bytes) => progress.push(stream, bytes),
            });
            return { ok: true, outcome: outcomeToWire(r.outcome), session: await this.file(r.session), runtime: r.runtime };
          } finally {
            // Every chunk is out before the reply: the API node hands them on before the result.
            await progress.close();
          }
        });
      }
      case 'put':
        await this.owned(data.session, data.tenant);
        await local.putFiles(data.session, fromWireFiles(data.files));
        return { ok: true };
      case 'get': {
        await this.owned(data.session, data.tenant);
        const bytes = await local.getFile(data.session, data.path, data.maxBytes);
        if (bytes.length > data.maxBytes) throw new PyboxError('payload_too_large', `the file is larger than ${data.maxBytes} bytes`);
        await this.deps.redis.set(downloadKey(this.deps.prefix, jobId), bytes, 'PX', DOWNLOAD_KEPT_MS);
        return { ok: true, size: bytes.length };
      }
      case 'list': {
        await this.owned(data.session, data.tenant);
        const list = await local.listFiles(data.session, data.max);
        return { ok: true, list: { files: list.files.slice(0, data.max), truncated: list.truncated || list.files.length > data.max } };
      }
      case 'close': {
        const s = await this.owned(data.session, data.tenant);
        await local.close(data.session, data.reason);
        this.sessionEnded(s);
        this.held = Math.max(0, this.held - 1);
        return { ok: true };
      }
      case 'interrupt': {
        const a = this.active.get(data.target);
        if (a) {
          // Only the session's own tenant, on that session, stops it.
          if (a.tenant === data.tenant && a.session === data.session) a.controller.abort('client');
        } else if (this.early.size < MAX_EARLY_INTERRUPTS) {
          this.early.set(data.target, { tenant: data.tenant, session: data.session, until: Date.now() + EARLY_INTERRUPT_MS });
        }
        return { ok: true };
      }
    }
  }

  /** The session, when it is here and the tenant's; not_found otherwise, alike. */
  private async owned(id: string, tenant: string): Promise<HostedSession> {
    const s = await this.deps.local.get(id);
    if (s.tenant !== tenant) throw new PyboxError('not_found', `no session with id ${id}`);
    return s;
  }

  /** Runs an operation an interrupt job may stop (one that came first stops it at once). */
  private async track<T>(jobId: string, tenant: string, session: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    this.active.set(jobId, { tenant, session, controller });
    const mark = this.early.get(jobId);
    this.early.delete(jobId);
    if (mark && mark.tenant === tenant && mark.session === session) controller.abort('client');
    try {
      return await fn(controller.signal);
    } finally {
      this.active.delete(jobId);
    }
  }
}

/**
 * A call's output, gathered for a short window and sent as the job's progress, in order: one
 * message per window rather than one Redis write per chunk the sandbox relays.
 */
class ProgressSender {
  private pending: Array<{ s: 'stdout' | 'stderr'; b: Buffer }> = [];
  private bytes = 0;
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly job: Job<unknown, unknown>,
    private readonly windowMs: number,
    private readonly logger: Logger,
  ) {}

  push(stream: 'stdout' | 'stderr', data: Buffer): void {
    if (this.closed || data.length === 0) return;
    // Split so that no message is over the bound a reader accepts.
    for (let at = 0; at < data.length; at += MAX_PROGRESS_BYTES) {
      const part = data.subarray(at, at + MAX_PROGRESS_BYTES);
      if (this.bytes + part.length > MAX_PROGRESS_BYTES) this.flush();
      const last = this.pending.at(-1);
      if (last && last.s === stream) last.b = Buffer.concat([last.b, part]);
      else this.pending.push({ s: stream, b: Buffer.from(part) });
      this.bytes += part.length;
    }
    this.timer ??= setTimeout(() => this.flush(), this.windowMs);
  }

  /** Sends what is pending and waits until every message is written. */
  async close(): Promise<void> {
    this.flush();
    this.closed = true;
    await this.chain;
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const message: OutputProgress = { seq: ++this.seq, chunks: this.pending.map((c) => ({ s: c.s, b: c.b.toString('base64') })) };
    this.pending = [];
    this.bytes = 0;
    this.chain = this.chain
      .then(() => this.job.updateProgress(message))
      .catch((e: unknown) => this.logger.debug('could not send a call\'s output', { job: this.job.id, error: e instanceof Error ? e.message : String(e) }));
  }
}
