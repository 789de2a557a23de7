// An API node's SessionHosts: sessions live on the workers, each pinned to the one that opened it.
// A session is opened on the live worker with the fewest sessions that has room; every later
// operation is routed to the worker the session directory (Redis) names, as a job on that
// worker's own BullMQ queue, answered by the job's return value. A call's output comes back as the
// job's progress, handed to the call's onOutput as it arrives; a cancelled call is stopped by
// another job on the same queue.
//
// A worker that goes away takes its sessions with it: a wait on it ends (session_ended) as soon as
// the registry stops listing it, never after the call's whole limit, and its directory entries are
// dropped; a session whose worker is gone is not listed and not found.
import { randomUUID } from 'node:crypto';
import { Queue, QueueEvents, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { PyboxError } from '../core/errors.ts';
import type { Logger } from '../core/ports.ts';
import type { RuntimeName, SessionEndReason, SessionFileList } from '../core/schemas.ts';
import type { HostedSession, SessionCallJob, SessionCallOutcome, SessionHosts, SessionOpen } from '../core/sessions.ts';
import { fastFailOptions, patientOptions, within, type RedisEndpoint } from './connection.ts';
import type { NodeDirectory } from './queue-dispatch.ts';
import { holdsSessions, type NodeReport } from './registry.ts';
import type { SessionDirectory } from './session-directory.ts';
import { printable } from './wire.ts';
import { OutputProgress, downloadKey, outcomeFromWire, parseReply, sessionQueueName, toWireFiles, type Reply, type SessionJobData, type SessionOp } from './session-wire.ts';

export interface RemoteSessionHostsDeps {
  connection: RedisEndpoint;
  prefix: string;
  directory: SessionDirectory;
  /** Plain commands, failing fast (a download's bytes are read from a key of their own). */
  redis: Redis;
  registry: NodeDirectory;
  logger: Logger;
  /** Retry-After of the 503s and 429s this side gives. */
  retryAfterS: number;
  /** How long one Redis step may take before it counts as Redis being away (default 2 s). */
  redisTimeoutMs?: number | undefined;
  /** How long an open may take on its worker: a sandbox's start (default 120 s). */
  openTimeoutMs?: number | undefined;
  /** How long a file operation or a close may take (default 60 s). */
  opTimeoutMs?: number | undefined;
  /** A call's wait beyond its own limit: its interrupt, grace and restart (default 30 s). */
  callMarginMs?: number | undefined;
  /** How often a wait checks that its worker is still alive (default 1 s). */
  watchMs?: number | undefined;
  /** How long the registry's list of nodes is trusted (default 1 s). */
  nodesCacheMs?: number | undefined;
  /** How long a finished job stays in Redis (a wait that missed its event reads it there). */
  keepFinishedS?: number | undefined;
}

/** One worker's queue as this node uses it. */
interface Lane {
  node: string;
  queue: Queue;
  events: QueueEvents;
  ready: Promise<unknown>;
  /** The calls awaiting output, by job id. */
  progress: Map<string, (data: unknown) => void>;
  /** Operations awaited on it now. */
  waits: number;
}

/** The worker holding a job stopped being listed (it died, or lost Redis). */
class WorkerGone extends Error {
  constructor(readonly node: string) {
    super(`worker ${node} went away`);
  }
}

/** The worker did not answer within the operation's bound (it may still be doing it). */
class NoAnswer extends PyboxError {
  constructor(seconds: number) {
    super('internal', `the worker holding the session did not answer within ${seconds} s`);
  }
}

/** Events kept in each worker's stream (about): output chunks and replies. */
const EVENTS_KEPT = 1000;
const FINISHED_KEPT = 200;
/** Workers tried for one open when the first ones turn out full. */
const MAX_OPEN_TRIES = 3;
/** A session place outlives the longest open by this (the opening node may die and never give it back). */
const RESERVE_MARGIN_MS = 30_000;

export class RemoteSessionHosts implements SessionHosts {
  private readonly lanes = new Map<string, Lane>();
  /** Opens under way from this node, by worker: counted with the reports' sessions when choosing. */
  private readonly opening = new Map<string, number>();
  private nodeList: { at: number; byId: Map<string, NodeReport> } | undefined;
  private nodesRead: Promise<Map<string, NodeReport>> | undefined;
  private nodesReadAt = 0;
  private closed = false;

  constructor(private readonly deps: RemoteSessionHostsDeps) {}

  private get timeoutMs(): number {
    return this.deps.redisTimeoutMs ?? 2000;
  }

  async open(req: SessionOpen, signal?: AbortSignal): Promise<HostedSession> {
    this.assertOpen();
    const nodes = [...(await this.nodes(true)).values()].filter(holdsSessions);
    if (nodes.length === 0) throw new PyboxError('no_workers', 'no worker is alive to hold sessions; retry shortly', { retryAfterS: this.deps.retryAfterS });
    const load = (n: NodeReport) => (n.sessions ?? 0) + (this.opening.get(n.nodeId) ?? 0);
    const ranked = nodes.filter((n) => load(n) < (n.maxSessions ?? 0)).sort((a, b) => load(a) - load(b) || (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    if (ranked.length === 0) {
      throw new PyboxError('session_limit', 'every worker holds as many sessions as it may; end one or retry later', {
        retryAfterS: this.deps.retryAfterS,
        details: { limit: 'sessions_per_host' },
      });
    }
    const data: SessionJobData = {
      v: 1,
      op: 'open',
      tenant: req.tenant,
      open: { id: req.id, limits: req.limits, idleTimeoutMs: req.idleTimeoutMs, env: req.env, files: toWireFiles(req.files), createdAtMs: req.createdAtMs },
    };
    let refused: unknown;
    for (const node of ranked.slice(0, MAX_OPEN_TRIES)) {
      this.opening.set(node.nodeId, (this.opening.get(node.nodeId) ?? 0) + 1);
      try {
        const { session } = await this.request(node.nodeId, data, req.id, { timeoutMs: this.openTimeoutMs, signal });
        if (session.id !== req.id || session.tenant !== req.tenant || session.node !== node.nodeId) {
          throw new PyboxError('internal', 'the worker answered the open with another session');
        }
        if (signal?.aborted) {
          // Opened just as its caller went: nobody will use it.
          this.closeQuietly(session, 'deleted');
          throw new PyboxError('internal', 'the session was opened after its request was cancelled');
        }
        return session;
      } catch (e) {
        // Its report was stale: it is full. The next one may not be.
        if (e instanceof PyboxError && e.code === 'session_limit' && !signal?.aborted) {
          refused = e;
          continue;
        }
        if (e instanceof WorkerGone) throw new PyboxError('no_workers', 'the worker chosen for the session went away; retry', { retryAfterS: this.deps.retryAfterS });
        throw e;
      } finally {
        const n = (this.opening.get(node.nodeId) ?? 1) - 1;
        if (n > 0) this.opening.set(node.nodeId, n);
        else this.opening.delete(node.nodeId);
      }
    }
    throw refused;
  }

  /**
   * A place among the tenant's sessions, taken in Redis where every API node counts: the listing
   * first forgets the sessions of workers that went away, as list() does, so they count no more.
   * The place is held as long as an open may take, unless the worker files the session first.
   */
  async reserve(tenant: string, id: string, max: number): Promise<boolean> {
    this.assertOpen();
    await this.list(tenant);
    return await this.redis(this.deps.directory.reserve(tenant, id, max, this.openTimeoutMs + RESERVE_MARGIN_MS), 'taking a session place');
  }

  async unreserve(tenant: string, id: string): Promise<void> {
    await this.redis(this.deps.directory.unreserve(tenant, id), 'giving back a session place');
  }

  async get(id: string): Promise<HostedSession> {
    return await this.locate(id, 'not_found');
  }

  async list(tenant?: string): Promise<HostedSession[]> {
    let [sessions, nodes] = await Promise.all([this.redis(this.deps.directory.list(tenant), 'listing sessions'), this.nodes()]);
    // A worker missing from a list read a moment ago may have just joined: read again before forgetting.
    if (sessions.some((s) => !nodes.has(s.node))) nodes = await this.nodes(true);
    const alive: HostedSession[] = [];
    for (const s of sessions) {
      if (nodes.has(s.node)) alive.push(s);
      else this.forget(s);
    }
    return alive;
  }

  async call(id: string, job: SessionCallJob): Promise<{ outcome: SessionCallOutcome; session: HostedSession; runtime: RuntimeName }> {
    const at = await this.locate(id, 'session_ended');
    const data: SessionJobData = {
      v: 1,
      op: 'call',
      tenant: at.tenant,
      session: id,
      call: { id: job.id, code: job.code, stdin: job.stdin, files: toWireFiles(job.files), timeoutMs: job.timeoutMs },
    };
    const onProgress = job.onOutput ? relay(job.onOutput, at.limits.outputBytes) : undefined;
    const timeoutMs = job.timeoutMs + (this.deps.callMarginMs ?? 30_000);
    const reply = await this.on(at, () => this.request(at.node, data, id, { timeoutMs, signal: job.signal, onProgress }));
    const { session } = reply;
    if (session.id !== id || session.tenant !== at.tenant || session.node !== at.node) throw new PyboxError('internal', 'the worker answered the call for another session');
    return { outcome: outcomeFromWire(reply.outcome, at.limits.outputBytes), session, runtime: reply.runtime };
  }

  async putFiles(id: string, files: Array<{ path: string; data: Buffer }>): Promise<void> {
    const at = await this.locate(id, 'session_ended');
    await this.on(at, () => this.request(at.node, { v: 1, op: 'put', tenant: at.tenant, session: id, files: toWireFiles(files) }, id, { timeoutMs: this.opTimeoutMs }));
  }

  async getFile(id: string, path: string, maxBytes: number): Promise<Buffer> {
    const at = await this.locate(id, 'session_ended');
    let jobId = '';
    const reply = await this.on(at, () =>
      this.request(at.node, { v: 1, op: 'get', tenant: at.tenant, session: id, path, maxBytes }, id, { timeoutMs: this.opTimeoutMs, onJob: (j) => (jobId = j) }),
    );
    const key = downloadKey(this.deps.prefix, jobId);
    // Read once: the key goes with the read (GETDEL needs Redis 6.2; a transaction does it on any).
    const [got] = (await this.redis(this.deps.redis.multi().getBuffer(key).del(key).exec(), 'reading the file')) ?? [];
    const bytes = got?.[1];
    if (!Buffer.isBuffer(bytes)) throw new PyboxError('internal', 'the file the worker read was not found in Redis');
    if (bytes.length !== reply.size || bytes.length > maxBytes) throw new PyboxError('internal', 'the worker answered with another file than asked for');
    return bytes;
  }

  async listFiles(id: string, max: number): Promise<SessionFileList> {
    const at = await this.locate(id, 'session_ended');
    const { list } = await this.on(at, () => this.request(at.node, { v: 1, op: 'list', tenant: at.tenant, session: id, max }, id, { timeoutMs: this.opTimeoutMs }));
    return { files: list.files.slice(0, max), truncated: list.truncated || list.files.length > max };
  }

  async close(id: string, reason: SessionEndReason): Promise<void> {
    let at: HostedSession;
    try {
      at = await this.locate(id, 'session_ended');
    } catch (e) {
      // Its worker is gone, and the session with it: closed already.
      if (e instanceof PyboxError && e.code === 'session_ended') return;
      throw e;
    }
    try {
      await this.on(at, () => this.request(at.node, { v: 1, op: 'close', tenant: at.tenant, session: id, reason }, id, { timeoutMs: this.opTimeoutMs }));
    } catch (e) {
      if (e instanceof PyboxError && e.code === 'session_ended') return;
      // Not on its worker any more: its entry is stale.
      if (e instanceof PyboxError && e.code === 'not_found') this.forget(at);
      throw e;
    }
  }

  /** Stops taking operations and closes the connections; operations still awaited end with shutting_down. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const lanes = [...this.lanes.values()];
    this.lanes.clear();
    const closing = Promise.allSettled(lanes.flatMap((l) => [l.queue.close(), l.events.close()]));
    await within(closing, 5000, 'closing the session queues').catch((e: unknown) => this.deps.logger.warn('the session queues did not close cleanly', { error: e instanceof Error ? e.message : String(e) }));
  }

  // ---- where sessions are -----------------------------------------------------------------------

  private get opTimeoutMs(): number {
    return this.deps.opTimeoutMs ?? 60_000;
  }

  private get openTimeoutMs(): number {
    return this.deps.openTimeoutMs ?? 120_000;
  }

  private assertOpen(): void {
    if (this.closed) throw new PyboxError('shutting_down', 'this node is shutting down; retry shortly', { retryAfterS: this.deps.retryAfterS });
  }

  /**
   * The session's entry, its worker alive. A session whose worker is gone answers `gone`:
   * not_found where the caller's tenant is not known yet (get: another tenant must not learn it
   * existed), session_ended where the service has already found it to be the caller's.
   */
  private async locate(id: string, gone: 'not_found' | 'session_ended'): Promise<HostedSession> {
    this.assertOpen();
    const entry = await this.redis(this.deps.directory.get(id), 'finding the session');
    if (!entry) throw notHere(id);
    if ((await this.nodes()).has(entry.node) || (await this.nodes(true)).has(entry.node)) return entry;
    this.forget(entry);
    throw gone === 'not_found' ? notHere(id) : workerGone(id);
  }

  /** An operation on the worker holding `at`: its going away ends the session (and its entry). */
  private async on<T>(at: HostedSession, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      if (!(e instanceof WorkerGone)) throw e;
      this.forget(at);
      throw workerGone(at.id);
    }
  }

  private forget(s: HostedSession): void {
    this.deps.directory.remove(s).catch((e: unknown) => this.deps.logger.debug('could not remove a session from the directory', { session: s.id, error: e instanceof Error ? e.message : String(e) }));
  }

  private closeQuietly(s: HostedSession, reason: SessionEndReason): void {
    this.request(s.node, { v: 1, op: 'close', tenant: s.tenant, session: s.id, reason }, s.id, { timeoutMs: this.opTimeoutMs }).catch((e: unknown) =>
      this.deps.logger.warn('could not close a session nobody wants', { session: s.id, error: e instanceof Error ? e.message : String(e) }),
    );
  }

  /** The live nodes by id: read again when older than nodesCacheMs (or when `fresh`), one read at a time. */
  private async nodes(fresh = false): Promise<Map<string, NodeReport>> {
    const asked = performance.now();
    const age = this.nodeList ? asked - this.nodeList.at : Number.POSITIVE_INFINITY;
    if (!fresh && this.nodeList && age <= (this.deps.nodesCacheMs ?? 1000)) return this.nodeList.byId;
    // A fresh list is one read after it was asked for, not one already under way.
    if (fresh && this.nodesRead && this.nodesReadAt < asked) await this.nodesRead.catch(() => undefined);
    this.nodesRead ??= (async () => {
      const at = performance.now();
      this.nodesReadAt = at;
      try {
        const list = await this.redis(this.deps.registry.nodes(), 'listing the workers');
        const byId = new Map(list.map((n) => [n.nodeId, n]));
        this.nodeList = { at, byId };
        this.closeIdleLanes(byId);
        return byId;
      } finally {
        this.nodesRead = undefined;
      }
    })();
    return this.nodesRead;
  }

  /** A Redis step on a request's path: bounded, and Redis away is a 503. */
  private async redis<T>(p: Promise<T>, what: string): Promise<T> {
    try {
      return await within(p, this.timeoutMs, what);
    } catch (e) {
      throw unavailable(e, this.deps.retryAfterS);
    }
  }

  // ---- the queues -------------------------------------------------------------------------------

  private lane(node: string): Lane {
    let lane = this.lanes.get(node);
    if (lane) return lane;
    const { deps } = this;
    const name = sessionQueueName(node);
    const queue = new Queue(name, { connection: fastFailOptions(deps.connection, this.timeoutMs), prefix: deps.prefix, streams: { events: { maxLen: EVENTS_KEPT } } });
    queue.on('error', (e) => deps.logger.debug('session queue connection error', { node, error: e.message }));
    // From a minute back rather than from "now": output sent between connecting and the first read is not lost.
    const events = new QueueEvents(name, { connection: patientOptions(deps.connection), prefix: deps.prefix, lastEventId: `${Date.now() - 60_000}-0` });
    events.on('error', (e) => deps.logger.debug('session queue events connection error', { node, error: e.message }));
    const progress = new Map<string, (data: unknown) => void>();
    events.on('progress', ({ jobId, data }) => progress.get(jobId)?.(data));
    lane = { node, queue, events, ready: events.waitUntilReady(), progress, waits: 0 };
    // A lane whose readiness fails is made again next time (its waiters fail on their own).
    const made = lane;
    made.ready.catch(() => {
      if (this.lanes.get(node) === made) this.dropLane(made);
    });
    this.lanes.set(node, lane);
    return lane;
  }

  /** Lanes of workers no longer listed, with nothing awaited on them, are closed. */
  private closeIdleLanes(alive: Map<string, NodeReport>): void {
    for (const lane of this.lanes.values()) if (!alive.has(lane.node) && lane.waits === 0) this.dropLane(lane);
  }

  private dropLane(lane: Lane): void {
    this.lanes.delete(lane.node);
    void Promise.allSettled([lane.queue.close(), lane.events.close()]);
  }

  /** Sends one operation to a worker and awaits its reply. */
  private async request<O extends SessionOp>(
    node: string,
    data: Extract<SessionJobData, { op: O }>,
    session: string,
    opts: { timeoutMs: number; signal?: AbortSignal | undefined; onProgress?: ((data: unknown) => void) | undefined; onJob?: ((jobId: string) => void) | undefined },
  ): Promise<Reply<O>> {
    const lane = this.lane(node);
    const jobId = `${data.op}-${randomUUID()}`;
    opts.onJob?.(jobId);
    const keep = { age: this.deps.keepFinishedS ?? 60, count: FINISHED_KEPT };
    lane.waits++;
    let job: Job;
    try {
      await within(lane.ready, this.timeoutMs, "listening to the worker's queue");
      if (opts.onProgress) lane.progress.set(jobId, opts.onProgress);
      job = await within(lane.queue.add(data.op, data, { jobId, attempts: 1, removeOnComplete: keep, removeOnFail: keep }), this.timeoutMs, 'queueing a session operation');
    } catch (e) {
      lane.progress.delete(jobId);
      lane.waits--;
      throw unavailable(e, this.deps.retryAfterS);
    }
    const { signal } = opts;
    const onAbort = () => this.interrupt(lane, data.tenant, session, jobId);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return parseReply(data.op, await this.reply(lane, job, opts.timeoutMs));
    } catch (e) {
      // Given up on: a call or an open still under way there is stopped (a late open closes its sandbox).
      if (e instanceof NoAnswer && (data.op === 'call' || data.op === 'open')) onAbort();
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      lane.progress.delete(jobId);
      lane.waits--;
    }
  }

  /** The job's return value; WorkerGone as soon as its worker is no longer listed. */
  private reply(lane: Lane, job: Job, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let done = false;
      let checking = false;
      const settle = (fn: () => void) => {
        if (done) return;
        done = true;
        clearInterval(watch);
        fn();
      };
      const watch = setInterval(() => {
        if (done || checking) return;
        checking = true;
        this.nodes()
          .then((nodes) => {
            if (nodes.has(lane.node)) return;
            // Taken out so that a worker of the same name, restarted, does not run it.
            lane.queue.remove(job.id ?? '').catch(() => 0);
            settle(() => reject(new WorkerGone(lane.node)));
          })
          // The registry unreadable: the wait's own bound still holds.
          .catch(() => {})
          .finally(() => (checking = false));
      }, this.deps.watchMs ?? 1000);
      job.waitUntilFinished(lane.events, timeoutMs).then(
        (value: unknown) => settle(() => resolve(value)),
        (e: unknown) => settle(() => reject(this.failure(lane, e, timeoutMs))),
      );
    });
  }

  /** What a failed wait means: its worker died holding the job, the wait ran out, or this node is closing. */
  private failure(lane: Lane, e: unknown, timeoutMs: number): Error {
    const reason = e instanceof Error ? e.message : String(e);
    if (this.closed) return new PyboxError('shutting_down', 'this node shut down before the session operation was answered', { retryAfterS: this.deps.retryAfterS });
    if (reason.includes('stalled')) return new WorkerGone(lane.node);
    if (reason.includes('timed out before finishing')) return new NoAnswer(Math.round(timeoutMs / 1000));
    this.deps.logger.error('a session operation failed on its worker', { node: lane.node, reason: printable(reason, 300) });
    return new PyboxError('internal', 'the worker holding the session could not do this operation');
  }

  /** Tells the worker to stop a call (or an open) under way. */
  private interrupt(lane: Lane, tenant: string, session: string, target: string): void {
    const data: SessionJobData = { v: 1, op: 'interrupt', tenant, session, target };
    lane.queue.add('interrupt', data, { jobId: `interrupt-${randomUUID()}`, attempts: 1, removeOnComplete: true, removeOnFail: true }).catch((e: unknown) =>
      this.deps.logger.warn('could not tell a worker to stop a session call', { session, error: e instanceof Error ? e.message : String(e) }),
    );
  }
}

/** A call's output as it arrives: in order, each stream cut at the session's outputBytes (what a local call gets). */
function relay(onOutput: NonNullable<SessionCallJob['onOutput']>, outputBytes: number): (data: unknown) => void {
  let seq = 0;
  const sent = { stdout: 0, stderr: 0 };
  return (data) => {
    const parsed = OutputProgress.safeParse(data);
    if (!parsed.success || parsed.data.seq <= seq) return;
    seq = parsed.data.seq;
    for (const c of parsed.data.chunks) {
      const room = outputBytes - sent[c.s];
      if (room <= 0) continue;
      let bytes = Buffer.from(c.b, 'base64');
      if (bytes.length > room) bytes = bytes.subarray(0, room);
      sent[c.s] += bytes.length;
      try {
        onOutput(c.s, bytes);
      } catch {
        // A listener must not throw; one that does loses its output, not the call.
      }
    }
  };
}

const notHere = (id: string) => new PyboxError('not_found', `no session with id ${id}`);

const workerGone = (id: string) =>
  new PyboxError('session_ended', `session ${id} has ended: the worker holding it went away, and its state with it; create a new session`, {
    details: { sessionId: id, reason: 'failed' },
  });

function unavailable(e: unknown, retryAfterS: number): PyboxError {
  if (e instanceof PyboxError) return e;
  return new PyboxError('queue_unavailable', "the cluster's Redis (queue and sessions) does not answer; retry shortly", { retryAfterS, cause: e });
}
