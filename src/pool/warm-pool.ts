// Sandboxes prepared ahead of demand. A container costs ~100-200 ms to create and start (more under
// gVisor); a started one whose runner already waits for its payload answers in the time the code
// takes. Each sandbox still serves exactly one execution and is then removed: nothing passes from
// one run to the next. The pool only moves the creation off the request's path.
//
// Sandboxes are grouped by what a container is created with (runtime, image, memory, CPUs): a
// group exists for each configuration in use, is refilled in the background after every take,
// and is emptied once unused for `idleMs`.
import type { Clock, Logger } from '../core/ports.ts';
import type { RuntimeName } from '../core/schemas.ts';
import type { LiveSandbox } from '../engine/live-sandbox.ts';
import type { SandboxConfig } from '../core/sandbox.ts';
import type { WarmSource } from '../engine/run-sandbox.ts';

export interface PoolSettings {
  enabled: boolean;
  /** Warm sandboxes kept per configuration in use, by runtime. */
  size: Record<RuntimeName, number>;
  /** A configuration unused for this long is emptied. */
  idleMs: number;
  /** Most configurations kept warm at once; the least recently used one is dropped beyond it. */
  maxConfigs: number;
  /** Modules imported in warm sandboxes while they wait, by runtime. */
  preload: Record<RuntimeName, string[]>;
}

export interface SandboxPreparer {
  prepare(config: SandboxConfig): Promise<LiveSandbox>;
  discard(live: LiveSandbox): void;
}

interface Entry {
  promise: Promise<LiveSandbox>;
  live: LiveSandbox | null;
}

interface Group {
  config: SandboxConfig;
  entries: Entry[];
  lastUsedAt: number;
  /** After a failed preparation, no new one before this time (engine away, image missing...). */
  retryAt: number;
  failures: number;
  /**
   * Demand outran the pool: a take found no ready sandbox. Preloading costs CPU (importing pandas
   * is ~0.4 s of it), which under sustained load would come straight off throughput, so new
   * sandboxes start lean until the group is full of ready ones again.
   */
  pressed: boolean;
}

const MAX_BACKOFF_MS = 30_000;

export const poolKey = (c: Pick<SandboxConfig, 'runtime' | 'image' | 'memoryMb' | 'cpus'>) => `${c.runtime}|${c.image}|${c.memoryMb}|${c.cpus}`;

export class WarmPool implements WarmSource {
  private readonly groups = new Map<string, Group>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly preparer: SandboxPreparer,
    private readonly settings: PoolSettings,
    private readonly logger: Logger,
    private readonly clock: Clock,
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
   * A ready sandbox for this configuration, else the one that has been preparing the longest
   * (it is ready sooner than a new one would be), else null. The replacement is started by
   * replenish(), once the run is over: creating a container costs the engine a burst of CPU that
   * would otherwise land on the run it is waiting for.
   */
  take(config: SandboxConfig): Promise<LiveSandbox> | null {
    if (!this.settings.enabled || this.stopped) return null;
    const group = this.group(config);
    group.lastUsedAt = this.clock.now();
    const ready = group.entries.findIndex((e) => e.live !== null && e.live.ready && e.live.dead === null);
    const index = ready >= 0 ? ready : group.entries.findIndex((e) => e.live === null);
    const [entry] = index >= 0 ? group.entries.splice(index, 1) : [];
    if (ready < 0) group.pressed = true;
    if (!entry) this.refill(group); // nothing warm: start the refill now, this run goes cold anyway
    return entry ? entry.promise : null;
  }

  /** Brings a configuration's group back to its target, after a run that took from it. */
  replenish(config: SandboxConfig): void {
    if (!this.settings.enabled || this.stopped) return;
    const group = this.groups.get(poolKey(config));
    if (group) this.refill(group);
  }

  /** What is warm now, for /v1/runtimes and the benchmark. */
  status(): Array<{ key: string; ready: number; preparing: number }> {
    return [...this.groups.entries()].map(([key, g]) => ({
      key,
      ready: g.entries.filter((e) => e.live?.ready).length,
      preparing: g.entries.filter((e) => !e.live?.ready).length,
    }));
  }

  /** Resolves once every group has its target of ready sandboxes (for tests and benchmarks). */
  async filled(pollMs = 10, timeoutMs = 60_000): Promise<void> {
    const deadline = this.clock.now() + timeoutMs;
    while (this.clock.now() < deadline) {
      const full = [...this.groups.values()].every((g) => g.entries.filter((e) => e.live?.ready).length >= this.target(g));
      if (full) return;
      await new Promise((r) => setTimeout(r, pollMs));
    }
    throw new Error('the warm pool did not fill in time');
  }

  /** Stops refilling and removes every warm sandbox (shutdown). */
  async drain(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweeper);
    for (const t of this.retryTimers) clearTimeout(t);
    const entries = [...this.groups.values()].flatMap((g) => g.entries);
    this.groups.clear();
    await Promise.allSettled(entries.map((e) => e.promise.then((live) => this.preparer.discard(live))));
  }

  private target(group: Group): number {
    return this.settings.size[group.config.runtime];
  }

  private group(config: SandboxConfig): Group {
    const key = poolKey(config);
    let group = this.groups.get(key);
    if (!group) {
      if (this.groups.size >= this.settings.maxConfigs) this.evictLeastRecentlyUsed();
      group = {
        config: { ...config, preload: this.settings.preload[config.runtime] },
        entries: [],
        lastUsedAt: this.clock.now(),
        retryAt: 0,
        failures: 0,
        pressed: false,
      };
      this.groups.set(key, group);
    }
    return group;
  }

  private evictLeastRecentlyUsed(): void {
    let oldest: [string, Group] | undefined;
    for (const pair of this.groups) if (!oldest || pair[1].lastUsedAt < oldest[1].lastUsedAt) oldest = pair;
    if (oldest) this.empty(oldest[0], oldest[1]);
  }

  private empty(key: string, group: Group): void {
    this.groups.delete(key);
    for (const e of group.entries) void e.promise.then((live) => this.preparer.discard(live), () => {});
    group.entries = [];
  }

  /** Empties configurations unused for idleMs; runs periodically, public for tests. */
  sweep(): void {
    const cutoff = this.clock.now() - this.settings.idleMs;
    for (const [key, group] of this.groups) {
      if (group.lastUsedAt < cutoff) {
        this.logger.debug('warm pool: emptying an idle configuration', { key });
        this.empty(key, group);
      }
    }
  }

  private refill(group: Group): void {
    if (this.stopped || this.clock.now() < group.retryAt) return;
    while (group.entries.length < this.target(group)) group.entries.push(this.spawn(group));
  }

  private spawn(group: Group): Entry {
    const config = group.pressed ? { ...group.config, preload: [] } : group.config;
    const entry: Entry = { promise: this.preparer.prepare(config), live: null };
    const forget = () => {
      const i = group.entries.indexOf(entry);
      if (i >= 0) group.entries.splice(i, 1);
    };
    entry.promise.then(
      async (live) => {
        entry.live = live;
        // A sandbox that dies while waiting (before or after it was ready) is not usable: drop it
        // and try again, slower each time. Once taken, its death is the run's business.
        void live.whenDead().then((reason) => {
          if (!group.entries.includes(entry)) return;
          forget();
          this.preparer.discard(live);
          this.backOff(group, reason);
        });
        if (await live.whenReady()) {
          group.failures = 0;
          if (group.pressed && group.entries.every((e) => e.live?.ready)) group.pressed = false;
        }
      },
      (e: unknown) => {
        forget();
        this.backOff(group, e instanceof Error ? e.message : String(e));
      },
    );
    // A taker awaits this promise; a rejection it did not take must not go unhandled.
    entry.promise.catch(() => {});
    return entry;
  }

  private backOff(group: Group, why: string): void {
    group.failures++;
    const delayMs = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(group.failures, 10));
    group.retryAt = this.clock.now() + delayMs;
    this.logger.warn('warm pool: a sandbox could not be prepared; retrying later', { why, retryInMs: delayMs });
    const t = setTimeout(() => {
      this.retryTimers.delete(t);
      if (this.groups.get(poolKey(group.config)) === group) this.refill(group);
    }, delayMs);
    t.unref();
    this.retryTimers.add(t);
  }
}
