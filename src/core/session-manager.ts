// This node's sessions: each a sandbox of its own (SessionSandboxes), kept while it is used and
// ended when it has been idle too long, has lived its maximum lifetime, is deleted, loses its
// sandbox or the node shuts down. Implements SessionHosts for the all-in-one node and for a
// cluster worker (whose remote callers reach it through their own SessionHosts).
//
// Each session allows one operation at a time (a call or a file operation): a second one while the
// first runs is refused with session_busy here, so the sandbox never sees two at once.
import type { Config } from '../config/schema.ts';
import { PyboxError } from './errors.ts';
import type { Clock, Logger } from './ports.ts';
import type { RuntimeName, SessionEndReason, SessionFileList } from './schemas.ts';
import type { HostedSession, SessionCallJob, SessionCallOutcome, SessionHosts, SessionOpen, SessionSandbox, SessionSandboxes } from './sessions.ts';

/** Timers as the manager uses them; tests hand in their own to move time by hand. */
export interface SessionTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** Node's timers, unref'd: a session waiting to expire never keeps the process alive. */
export const NODE_TIMERS: SessionTimers = {
  set(fn, ms) {
    // setTimeout's limit is 2^31-1 ms; a longer wait is checked again when this one fires.
    const timer = setTimeout(fn, Math.min(Math.max(0, ms), 2 ** 31 - 1));
    timer.unref();
    return timer;
  },
  clear(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

export interface SessionManagerDeps {
  sandboxes: SessionSandboxes;
  /** The image and runtime every session of this node gets. */
  image: string;
  runtime: RuntimeName;
  /** This node's id, as HostedSession.node reports it. */
  node: string;
  config: Pick<Config['sessions'], 'maxPerHost' | 'maxLifetimeMs'>;
  clock: Clock;
  logger: Logger;
  timers?: SessionTimers | undefined;
  /** Told once of every session that ends, with why (the service remembers them for 410 answers). */
  onEnded?: ((session: HostedSession, reason: SessionEndReason) => void) | undefined;
}

interface Live {
  info: HostedSession;
  sandbox: SessionSandbox;
  /** An operation (call or file operation) is running. */
  busy: boolean;
  timer: unknown;
  ending: Promise<void> | null;
}

export class SessionManager implements SessionHosts {
  private readonly live = new Map<string, Live>();
  /** Sessions being opened: they count against the host's cap. */
  private opening = 0;
  private readonly openings = new Set<AbortController>();
  /** Sessions being closed, so a second close waits for the first. */
  private readonly closing = new Map<string, Promise<void>>();
  private shuttingDown = false;
  private readonly timers: SessionTimers;

  constructor(private readonly deps: SessionManagerDeps) {
    this.timers = deps.timers ?? NODE_TIMERS;
  }

  /** Live sessions on this node, and those being opened. */
  get size(): number {
    return this.live.size + this.opening;
  }

  async open(req: SessionOpen, signal?: AbortSignal): Promise<HostedSession> {
    const { deps } = this;
    if (this.shuttingDown) throw new PyboxError('shutting_down', 'the server is shutting down and opens no new sessions; retry shortly', { retryAfterS: 5 });
    if (this.live.has(req.id) || this.closing.has(req.id)) throw new PyboxError('internal', `a session with id ${req.id} exists already`);
    if (this.size >= deps.config.maxPerHost) {
      throw new PyboxError('session_limit', `this server holds ${deps.config.maxPerHost} session(s), its limit; end one or retry later`, {
        details: { limit: 'sessions_per_host', max: deps.config.maxPerHost },
      });
    }
    this.opening++;
    const controller = new AbortController();
    this.openings.add(controller);
    const onAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    let sandbox: SessionSandbox;
    try {
      sandbox = await deps.sandboxes.open(
        { id: req.id, image: deps.image, runtime: deps.runtime, limits: { memoryMb: req.limits.memoryMb, cpus: req.limits.cpus }, env: req.env, files: req.files },
        controller.signal,
      );
    } finally {
      this.opening--;
      this.openings.delete(controller);
      signal?.removeEventListener('abort', onAbort);
    }
    if (this.shuttingDown || controller.signal.aborted) {
      // Opened while the node began to stop, or after its caller went: nobody will use it.
      await sandbox.close().catch(() => {});
      if (this.shuttingDown) throw new PyboxError('shutting_down', 'the server is shutting down and opens no new sessions; retry shortly', { retryAfterS: 5 });
      throw new PyboxError('internal', 'the session was opened after its request was cancelled');
    }
    const now = deps.clock.now();
    const info: HostedSession = {
      id: req.id,
      tenant: req.tenant,
      runtime: deps.runtime,
      limits: req.limits,
      idleTimeoutMs: req.idleTimeoutMs,
      createdAtMs: req.createdAtMs,
      lastUsedAtMs: now,
      expiresAtMs: req.createdAtMs + deps.config.maxLifetimeMs,
      calls: 0,
      node: deps.node,
    };
    const live: Live = { info, sandbox, busy: false, timer: undefined, ending: null };
    this.live.set(req.id, live);
    // A sandbox that stops on its own (killed, its runner gone) ends its session.
    sandbox.ended.then(
      (why) => {
        if (this.live.get(req.id) !== live) return;
        deps.logger.warn('session sandbox ended on its own', { session: req.id, tenant: req.tenant, why });
        void this.end(live, 'failed');
      },
      () => {},
    );
    this.schedule(live);
    deps.logger.info('session opened', { session: req.id, tenant: req.tenant, runtime: deps.runtime });
    return { ...info };
  }

  async get(id: string): Promise<HostedSession> {
    return { ...this.find(id).info };
  }

  async list(tenant?: string): Promise<HostedSession[]> {
    return [...this.live.values()].filter((l) => tenant === undefined || l.info.tenant === tenant).map((l) => ({ ...l.info }));
  }

  async call(id: string, job: SessionCallJob): Promise<{ outcome: SessionCallOutcome; session: HostedSession; runtime: RuntimeName }> {
    const live = this.find(id);
    const outcome = await this.exclusive(live, 'a call', () => {
      live.info.calls++;
      return live.sandbox.call(job);
    });
    const session = { ...live.info };
    if (outcome.sandboxLost) await this.end(live, 'failed');
    return { outcome, session, runtime: live.info.runtime };
  }

  putFiles(id: string, files: Array<{ path: string; data: Buffer }>): Promise<void> {
    const live = this.find(id);
    return this.exclusive(live, 'a file upload', () => live.sandbox.putFiles(files));
  }

  getFile(id: string, path: string, maxBytes: number): Promise<Buffer> {
    const live = this.find(id);
    return this.exclusive(live, 'a file download', () => live.sandbox.getFile(path, maxBytes));
  }

  listFiles(id: string, max: number): Promise<SessionFileList> {
    const live = this.find(id);
    return this.exclusive(live, 'a file listing', () => live.sandbox.listFiles(max));
  }

  /** Ends a session: its sandbox is removed before this resolves. A second close waits for the first. */
  async close(id: string, reason: SessionEndReason): Promise<void> {
    const live = this.live.get(id);
    if (live) return this.end(live, reason);
    const closing = this.closing.get(id);
    if (closing) return closing;
    throw notHere(id);
  }

  /** Ends every session (shutdown, drain) and refuses new ones; resolves once their sandboxes are gone. */
  async closeAll(reason: SessionEndReason): Promise<void> {
    if (reason === 'shutdown') {
      this.shuttingDown = true;
      for (const c of this.openings) c.abort('shutdown');
    }
    await Promise.all([...[...this.live.values()].map((l) => this.end(l, reason)), ...this.closing.values()]);
  }

  private find(id: string): Live {
    const live = this.live.get(id);
    if (!live || live.ending) throw notHere(id);
    return live;
  }

  /** Runs one operation of the session, refusing a second at the same time; each counts as use. */
  private async exclusive<T>(live: Live, what: string, run: () => Promise<T>): Promise<T> {
    if (live.busy) throw new PyboxError('session_busy', `the session is busy with another call or file operation; ${what} waits until it is over`);
    live.busy = true;
    this.touch(live);
    try {
      return await run();
    } finally {
      live.busy = false;
      if (this.live.get(live.info.id) === live && !live.ending) this.touch(live);
    }
  }

  private touch(live: Live): void {
    live.info.lastUsedAtMs = this.deps.clock.now();
    this.schedule(live);
  }

  /** One timer per session, for whichever comes first: its idle deadline or its lifetime's end. */
  private schedule(live: Live): void {
    if (live.timer !== undefined) this.timers.clear(live.timer);
    const { info } = live;
    // A running operation is use: only the lifetime can end it meanwhile; the idle clock starts
    // again when it is over (touch).
    const idleAt = live.busy ? Number.POSITIVE_INFINITY : info.lastUsedAtMs + info.idleTimeoutMs;
    const at = Math.min(idleAt, info.expiresAtMs);
    live.timer = this.timers.set(() => {
      live.timer = undefined;
      this.expire(live);
    }, at - this.deps.clock.now());
  }

  private expire(live: Live): void {
    if (this.live.get(live.info.id) !== live || live.ending) return;
    const now = this.deps.clock.now();
    const { info } = live;
    if (now >= info.expiresAtMs) {
      void this.end(live, 'lifetime');
      return;
    }
    if (!live.busy && now >= info.lastUsedAtMs + info.idleTimeoutMs) {
      void this.end(live, 'idle');
      return;
    }
    this.schedule(live);
  }

  private end(live: Live, reason: SessionEndReason): Promise<void> {
    if (live.ending) return live.ending;
    const { info } = live;
    if (live.timer !== undefined) this.timers.clear(live.timer);
    live.timer = undefined;
    this.live.delete(info.id);
    live.ending = (async () => {
      this.deps.logger.info('session ended', { session: info.id, tenant: info.tenant, reason, calls: info.calls });
      try {
        this.deps.onEnded?.({ ...info }, reason);
      } catch (e) {
        this.deps.logger.error('session end listener failed', { session: info.id, error: e instanceof Error ? e.message : String(e) });
      }
      try {
        await live.sandbox.close();
      } catch (e) {
        this.deps.logger.warn('could not remove a session sandbox', { session: info.id, error: e instanceof Error ? e.message : String(e) });
      }
    })().finally(() => this.closing.delete(info.id));
    this.closing.set(info.id, live.ending);
    return live.ending;
  }
}

const notHere = (id: string) => new PyboxError('not_found', `no session with id ${id}`);
