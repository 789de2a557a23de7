// Sandboxes prepared ahead of demand. A container costs ~100-200 ms to create and start (more under
// gVisor); a started one whose runner already waits for its payload answers in the time the code
// takes. Each sandbox still serves exactly one execution and is then removed: nothing passes from
// one run to the next. The pool only moves the creation off the request's path.
//
// Sandboxes are grouped by what a container is created with (runtime, image, memory, CPUs): a
// group exists for each configuration in use and is emptied once unused for `idleMs`. When a take
// finds a ready sandbox, the replacement starts once the run is recorded and handed on (creating a
// container costs the engine a burst of CPU that would otherwise land on that run and its save).
// When a take finds none ready, demand outruns the pool: the group is "pressed", replacements start
// at the take, several at once (up to `pressedSize`), and without preloading (importing pandas is
// ~0.4 s of CPU, which under sustained load would come straight off throughput) until the group is
// full of ready ones again.
//
// A configuration whose sandboxes keep failing to start (engine errors, a limit too small for the
// runner, sandboxes that die before they are ready) is not retried for ever: after a few failures
// in a row the pool stops warming it, until a sandbox of it starts again or a quiet period passes.
// Its runs meanwhile get a sandbox started for them, and fail with the real reason.
import { NO_OBSERVER, type Clock, type Logger, type Observer } from '../core/ports.ts';
import type { RuntimeName } from '../core/schemas.ts';
import type { SandboxConfig } from '../core/sandbox.ts';
import type { SandboxSource } from '../engine/run-sandbox.ts';
import type { Sandbox, SandboxFactory } from '../engine/sandbox.ts';

export interface PoolSettings {
  enabled: boolean;
  /** Warm sandboxes kept per configuration in use, by runtime. */
  size: Record<RuntimeName, number>;
  /** Sandboxes kept (ready or starting) per configuration while demand outruns the pool, by runtime. */
  pressedSize: Record<RuntimeName, number>;
  /** A configuration unused for this long is emptied. */
  idleMs: number;
  /** Most configurations kept warm at once; the least recently used one is dropped beyond it. */
  maxConfigs: number;
  /** Modules imported in warm sandboxes while they wait, by runtime. */
  preload: Record<RuntimeName, string[]>;
  /** Preloading needs memory: only configurations with at least this much preload. */
  preloadMinMemoryMb: number;
}

interface Group {
  key: string;
  config: SandboxConfig;
  /** Sandboxes not taken yet: preparing or ready, oldest first. */
  entries: Sandbox[];
  lastUsedAt: number;
  /** After a failed preparation, no new one before this time. */
  retryAt: number;
  /** Failed preparations in a row. */
  failures: number;
  /** While set (a time), the configuration is not warmed: its sandboxes keep failing to start. */
  pausedUntil: number | null;
  /** Pressed until this time: PRESSED_HOLD_MS after a take last found nothing ready (0: not pressed). */
  pressedUntil: number;
}

const MAX_BACKOFF_MS = 30_000;
/**
 * How long a group stays pressed after a take last found nothing ready. Waiting for the group to
 * be full of ready sandboxes alone could keep it lean for good: at a steady pace a replacement is
 * always on its way (measured: numpy+pandas under gVisor stayed at ~850 ms after a burst).
 */
export const PRESSED_HOLD_MS = 3000;
/** Failed preparations in a row after which a configuration is no longer warmed. */
export const FAILURES_BEFORE_PAUSE = 3;
/** How long such a configuration is left alone, unless one of its sandboxes starts meanwhile. */
export const PAUSE_MS = 10 * 60_000;

export const poolKey = (c: Pick<SandboxConfig, 'runtime' | 'image' | 'memoryMb' | 'cpus'>) => `${c.runtime}|${c.image}|${c.memoryMb}|${c.cpus}`;

const lean = (config: SandboxConfig): SandboxConfig => ({ ...config, preload: [] });

export class WarmPool implements SandboxSource {
  private readonly groups = new Map<string, Group>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private readonly watched = new WeakSet<Sandbox>();
  private stopped = false;

  constructor(
    private readonly factory: SandboxFactory,
    private readonly settings: PoolSettings,
    private readonly logger: Logger,
    private readonly clock: Clock,
    private readonly observer: Observer = NO_OBSERVER,
  ) {
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, Math.floor(settings.idleMs / 4)));
    this.sweeper.unref();
  }

  /** Fills the group for a configuration now, before the first request asks for it. */
  warm(config: SandboxConfig): void {
    if (!this.settings.enabled || this.stopped) return;
    this.refill(this.group(config));
  }

  /**
   * A ready sandbox for this configuration, else the one that has been preparing the longest (it
   * is ready sooner than a new one would be), else one started now for this job.
   */
  acquire(config: SandboxConfig, jobId: string): Sandbox {
    if (!this.settings.enabled || this.stopped) {
      this.observer.poolTake(config.runtime, false);
      return this.factory.prepare(lean(config), jobId);
    }
    const group = this.group(config);
    group.lastUsedAt = this.clock.now();
    let index = group.entries.findIndex((s) => s.state === 'ready');
    this.observer.poolTake(config.runtime, index >= 0);
    if (index < 0) {
      group.pressedUntil = this.clock.now() + PRESSED_HOLD_MS;
      index = group.entries.findIndex((s) => s.state === 'preparing');
    }
    const taken = index >= 0 ? (group.entries.splice(index, 1)[0] as Sandbox) : this.cold(group, jobId);
    // Pressed: the next take would find nothing either, so the replacements start now.
    if (this.isPressed(group)) this.refill(group);
    return taken;
  }

  /** A sandbox whose job left before its code ran: back into its group, or removed. */
  giveBack(sandbox: Sandbox): void {
    const group = this.groups.get(poolKey(sandbox.config));
    if (this.stopped || !group || !sandbox.unused) {
      void this.factory.remove(sandbox);
      return;
    }
    if (group.entries.length >= this.target(group)) {
      // Full already (its replacement started at the take): keep whichever is nearer to ready.
      const youngest = group.entries.at(-1);
      if (!youngest || youngest.state !== 'preparing' || youngest.preparedAt <= sandbox.preparedAt) {
        void this.factory.remove(sandbox);
        return;
      }
      group.entries.pop();
      void this.factory.remove(youngest);
    }
    const at = group.entries.findIndex((s) => s.preparedAt > sandbox.preparedAt);
    group.entries.splice(at < 0 ? group.entries.length : at, 0, sandbox);
    this.watch(group, sandbox);
  }

  /** A run that took from this configuration is over: time to prepare its replacement. */
  done(config: SandboxConfig): void {
    if (!this.settings.enabled || this.stopped) return;
    const group = this.groups.get(poolKey(config));
    if (group) this.refill(group);
  }

  /** What is warm now, for /v1/runtimes and the benchmark. */
  status(): Array<{ key: string; ready: number; preparing: number; paused: boolean }> {
    return [...this.groups.values()].map((g) => ({
      key: g.key,
      ready: g.entries.filter((s) => s.state === 'ready').length,
      preparing: g.entries.filter((s) => s.state !== 'ready').length,
      paused: g.pausedUntil !== null,
    }));
  }

  /** Ready sandboxes by configuration, for the metrics. */
  readyByConfig(): Array<{ config: SandboxConfig; ready: number }> {
    return [...this.groups.values()].map((g) => ({ config: g.config, ready: g.entries.filter((s) => s.state === 'ready').length }));
  }

  /** Resolves once every group still warmed has its size of ready sandboxes (for tests and benchmarks). */
  async filled(pollMs = 10, timeoutMs = 60_000): Promise<void> {
    const deadline = this.clock.now() + timeoutMs;
    const started = Date.now();
    while (this.clock.now() < deadline && Date.now() - started < timeoutMs) {
      const full = [...this.groups.values()].every(
        (g) => g.pausedUntil !== null || g.entries.filter((s) => s.state === 'ready').length >= this.settings.size[g.config.runtime],
      );
      if (full) return;
      await new Promise((r) => setTimeout(r, pollMs));
    }
    throw new Error('the warm pool did not fill in time');
  }

  /** Stops refilling and removes every warm sandbox (shutdown); resolves once they are gone. */
  async drain(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweeper);
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
    const entries = [...this.groups.values()].flatMap((g) => g.entries);
    this.groups.clear();
    await Promise.allSettled(entries.map((s) => this.factory.remove(s)));
  }

  /** Empties configurations unused for idleMs; runs periodically, public for tests. */
  sweep(): void {
    const cutoff = this.clock.now() - this.settings.idleMs;
    for (const group of this.groups.values()) {
      if (group.lastUsedAt < cutoff) {
        this.logger.debug('warm pool: emptying an idle configuration', { key: group.key });
        this.empty(group);
      }
    }
  }

  private target(group: Group): number {
    const size = this.settings.size[group.config.runtime];
    if (size === 0) return 0;
    return this.isPressed(group) ? Math.max(size, this.settings.pressedSize[group.config.runtime]) : size;
  }

  /** Demand outran the group lately: replacements start several at once, and lean. */
  private isPressed(group: Group): boolean {
    return this.clock.now() < group.pressedUntil;
  }

  private group(config: SandboxConfig): Group {
    const key = poolKey(config);
    let group = this.groups.get(key);
    if (!group) {
      if (this.groups.size >= this.settings.maxConfigs) this.evictLeastRecentlyUsed();
      // Preloaded modules count against the run's memory limit: too little of it, and none.
      const preload = config.memoryMb >= this.settings.preloadMinMemoryMb ? this.settings.preload[config.runtime] : [];
      group = { key, config: { ...config, preload }, entries: [], lastUsedAt: this.clock.now(), retryAt: 0, failures: 0, pausedUntil: null, pressedUntil: 0 };
      this.groups.set(key, group);
    }
    return group;
  }

  private evictLeastRecentlyUsed(): void {
    let oldest: Group | undefined;
    for (const g of this.groups.values()) if (!oldest || g.lastUsedAt < oldest.lastUsedAt) oldest = g;
    if (oldest) this.empty(oldest);
  }

  private empty(group: Group): void {
    this.groups.delete(group.key);
    const entries = group.entries;
    group.entries = [];
    for (const s of entries) void this.factory.remove(s);
  }

  private refill(group: Group): void {
    if (this.stopped || this.groups.get(group.key) !== group) return;
    const now = this.clock.now();
    if (group.pausedUntil !== null) {
      if (now < group.pausedUntil) return;
      // The quiet period is over: try again, but one more failure pauses it at once.
      group.pausedUntil = null;
      group.failures = FAILURES_BEFORE_PAUSE - 1;
    }
    if (now < group.retryAt) return;
    while (group.entries.length < this.target(group)) {
      const sandbox = this.factory.prepare(this.isPressed(group) ? lean(group.config) : group.config);
      group.entries.push(sandbox);
      this.countStart(group, sandbox);
      this.watch(group, sandbox);
    }
  }

  /** A sandbox started for a job because nothing was warm; its start still tells about the configuration. */
  private cold(group: Group, jobId: string): Sandbox {
    const sandbox = this.factory.prepare(lean(group.config), jobId);
    this.countStart(group, sandbox);
    return sandbox;
  }

  private countStart(group: Group, sandbox: Sandbox): void {
    void sandbox.started.then((why) => (why === null ? this.succeeded(group) : this.failed(group, why)));
  }

  /** Takes a sandbox out of its group's entries once it leaves them (taken, failed, removed). */
  private watch(group: Group, sandbox: Sandbox): void {
    if (this.watched.has(sandbox)) return;
    this.watched.add(sandbox);
    sandbox.watch((state, previous) => {
      if (state === 'preparing' || state === 'ready' || state === 'claimed' || state === 'running') return false;
      const i = group.entries.indexOf(sandbox);
      if (i >= 0) group.entries.splice(i, 1);
      // Ready, then died while waiting: as much a failure of the configuration as a failed start.
      if (state === 'failed' && previous === 'ready') this.failed(group, sandbox.failure ?? 'the sandbox died while waiting');
      return true;
    });
  }

  private succeeded(group: Group): void {
    group.failures = 0;
    group.retryAt = 0;
    if (group.pausedUntil !== null) {
      group.pausedUntil = null;
      this.logger.info('warm pool: a configuration starts again; warming it', { key: group.key });
      this.refill(group);
    }
    if (this.isPressed(group) && group.entries.length >= this.settings.size[group.config.runtime] && group.entries.every((s) => s.state === 'ready')) {
      group.pressedUntil = 0;
    }
  }

  private failed(group: Group, why: string): void {
    if (this.stopped || group.pausedUntil !== null) return;
    group.failures++;
    if (group.failures >= FAILURES_BEFORE_PAUSE) {
      group.pausedUntil = this.clock.now() + PAUSE_MS;
      this.logger.warn('warm pool: stopped warming a configuration whose sandboxes fail to start; its runs start their own', {
        key: group.key,
        failures: group.failures,
        why,
        pauseMs: PAUSE_MS,
      });
      return;
    }
    const delayMs = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(group.failures, 10));
    group.retryAt = this.clock.now() + delayMs;
    this.logger.warn('warm pool: a sandbox could not be prepared; retrying later', { key: group.key, why, retryInMs: delayMs });
    const t = setTimeout(() => {
      this.retryTimers.delete(t);
      this.refill(group);
    }, delayMs);
    t.unref();
    this.retryTimers.add(t);
  }
}
