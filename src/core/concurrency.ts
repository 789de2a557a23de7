// A global cap on executions running at once, with a bounded FIFO queue behind it. A full queue
// is refused at once (503 + Retry-After) rather than left to pile up: waiting forever "In Queue" is
// what users of other sandboxes complain about most.
import { PyboxError } from './errors.ts';

export class ConcurrencyGate {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly maxConcurrent: number,
    private readonly maxQueue: number,
    private readonly retryAfterS: number,
  ) {}

  get stats(): { running: number; queued: number } {
    return { running: this.running, queued: this.waiting.length };
  }

  /** Resolves once nothing is running or waiting (for a graceful shutdown). */
  async idle(pollMs = 50): Promise<void> {
    while (this.running > 0 || this.waiting.length > 0) await new Promise((r) => setTimeout(r, pollMs));
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await task();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.running < this.maxConcurrent) {
      this.running++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxQueue) {
      return Promise.reject(
        new PyboxError('queue_full', `all ${this.maxConcurrent} execution slots are busy and ${this.maxQueue} requests are waiting`, {
          retryAfterS: this.retryAfterS,
        }),
      );
    }
    // The slot is handed over directly by release(), so `running` never dips and a newcomer can't jump the queue.
    return new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }
}
