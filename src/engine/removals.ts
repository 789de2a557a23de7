// Where sandbox containers are removed, with bounded concurrency. Removing a container costs the
// engine CPU (under gVisor: tearing down the sandbox's kernel, its gofer and the rootfs layer), and on
// a 2-core machine that CPU comes straight off the next sandbox's start. So a container that has
// stopped on its own (the runner reported and exited) may wait a little while a job waits for a
// sandbox to start; one that may still run code (timeout, cancel, flood, protocol violation) is
// killed and removed at once. Every removal is confirmed: drain() resolves only once all of them have finished.
import { performance } from 'node:perf_hooks';
import type { Logger } from '../core/ports.ts';
import type { SandboxContainer } from './docker-engine.ts';

export interface RemovalSettings {
  /** Most deferrable removals running at once. */
  concurrency: number;
  /** Longest a deferrable removal waits for starts to finish. */
  maxDeferMs: number;
  /** Beyond this many waiting, removals no longer wait (containers would pile up on the engine). */
  maxQueued: number;
}

export const DEFAULT_REMOVAL_SETTINGS: RemovalSettings = { concurrency: 1, maxDeferMs: 1500, maxQueued: 8 };

interface Queued {
  container: SandboxContainer;
  id: string;
  /** Monotonic time it was queued (scheduling only; nothing reported depends on it). */
  since: number;
  done: () => void;
}

export class RemovalQueue {
  private readonly queue: Queued[] = [];
  private readonly pending = new Set<Promise<void>>();
  private active = 0;
  private timer: NodeJS.Timeout | null = null;
  private draining = false;

  constructor(
    private readonly logger: Logger,
    /** Whether a job waits for a sandbox to start right now: deferrable removals wait while one does. */
    private readonly busy: () => boolean,
    private readonly settings: RemovalSettings = DEFAULT_REMOVAL_SETTINGS,
  ) {}

  /**
   * Removes the container: at once when `urgent`, else in turn. Resolves once it is gone or its
   * removal failed (logged: the reaper removes it later); never rejects.
   */
  remove(container: SandboxContainer, id: string, urgent: boolean): Promise<void> {
    let p: Promise<void>;
    if (urgent) {
      p = this.removeNow(container, id);
    } else {
      p = new Promise<void>((resolve) => {
        this.queue.push({ container, id, since: performance.now(), done: resolve });
      });
      this.pump();
    }
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
    return p;
  }

  /** Something changed (a start finished): deferred removals may go now. */
  pump(): void {
    // A queue that keeps growing means removals fall behind runs: then more may go at once.
    while (this.queue.length > 0 && this.active < this.settings.concurrency + (this.queue.length > this.settings.maxQueued ? 2 : 0)) {
      const head = this.queue[0] as Queued;
      const waited = performance.now() - head.since;
      const hold = !this.draining && this.busy() && waited < this.settings.maxDeferMs && this.queue.length <= this.settings.maxQueued;
      if (hold) {
        this.wakeAfter(this.settings.maxDeferMs - waited);
        return;
      }
      this.queue.shift();
      this.active++;
      void this.removeNow(head.container, head.id).finally(() => {
        this.active--;
        head.done();
        this.pump();
      });
    }
  }

  /** Removals waiting or running. */
  get size(): number {
    return this.pending.size;
  }

  /** Resolves when every removal asked for so far (and any asked for meanwhile) has finished. */
  async drain(): Promise<void> {
    this.draining = true;
    this.pump();
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
    this.draining = false;
  }

  private wakeAfter(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(1, ms));
    this.timer.unref();
  }

  private async removeNow(container: SandboxContainer, id: string): Promise<void> {
    try {
      await container.remove();
    } catch (e) {
      this.logger.warn('container removal failed; the reaper will retry at start-up', { id, error: e });
    }
  }
}
