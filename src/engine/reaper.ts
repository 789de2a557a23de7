// The one reaper: removes sandbox containers of this instance that no live sandbox of this process
// holds. It runs at start-up (leftovers of an earlier process: a crash, a kill -9, a power cut,
// a worker restarted later) and again each time the engine answers after it went away (a removal
// that failed meanwhile, or a create whose answer was lost). Containers are found by their labels,
// never by name: another deployment (another instance label) on the same engine is left alone.
import type { Logger } from '../core/ports.ts';

export interface LabelledContainer {
  id: string;
  /** The container's name, without Docker's leading slash. */
  name: string;
}

/** What the reaper needs of the engine. */
export interface ReapableEngine {
  /** Every sandbox container of this instance, running or not. */
  listLabelled(instance: string): Promise<LabelledContainer[]>;
  removeById(id: string): Promise<void>;
}

export class Reaper {
  private running: Promise<number> | null = null;

  constructor(
    private readonly engine: ReapableEngine,
    private readonly instance: string,
    private readonly logger: Logger,
    /** Whether this process holds the container of that name (it is alive, or being created). */
    private readonly held: (name: string) => boolean,
  ) {}

  /** Removes every unheld container of this instance; resolves with how many were removed. */
  reap(occasion: 'start-up' | 'engine back'): Promise<number> {
    // One pass at a time: a second caller shares the pass under way.
    this.running ??= this.pass(occasion).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async pass(occasion: string): Promise<number> {
    const stray = (await this.engine.listLabelled(this.instance)).filter((c) => !this.held(c.name));
    const results = await Promise.allSettled(stray.map((c) => this.engine.removeById(c.id)));
    const removed = results.filter((r) => r.status === 'fulfilled').length;
    if (stray.length > 0) {
      this.logger.info('removed sandboxes this process does not hold', { occasion, removed, failed: stray.length - removed });
    }
    return removed;
  }
}
