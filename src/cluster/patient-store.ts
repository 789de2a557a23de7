// A worker's store. A result is saved where its code ran, and nobody else holds it: a save that
// fails (PostgreSQL restarting or failing over) is tried again for a while before it is given
// up, so a short outage of the store loses no finished execution. Reads go straight through.
import { isPyboxError } from '../core/errors.ts';
import type { ExecutionMeter, ExecutionStore, Logger } from '../core/ports.ts';
import type { ExecutionResult } from '../core/schemas.ts';

export interface PatientStoreOptions {
  /** How long a failing save is tried again before it is given up. */
  retryMs: number;
  logger: Logger;
  /** Waits between tries (tests pass a fast one). */
  sleep?: (ms: number) => Promise<void>;
}

const FIRST_WAIT_MS = 250;
const LONGEST_WAIT_MS = 4000;

export class PatientStore implements ExecutionStore {
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly inner: ExecutionStore,
    private readonly opts: PatientStoreOptions,
  ) {
    this.sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  async save(result: ExecutionResult, meter?: ExecutionMeter): Promise<void> {
    const deadline = Date.now() + this.opts.retryMs;
    for (let wait = FIRST_WAIT_MS; ; wait = Math.min(wait * 2, LONGEST_WAIT_MS)) {
      try {
        await this.inner.save(result, meter);
        return;
      } catch (e) {
        // Only the store being away is worth waiting out; any other failure would fail again.
        if (!(isPyboxError(e) && e.code === 'store_unavailable') || Date.now() + wait > deadline) throw e;
        this.opts.logger.warn('could not save a result; trying again', { id: result.id, inMs: wait, error: e instanceof Error ? e.message : String(e) });
        await this.sleep(wait);
      }
    }
  }

  get: ExecutionStore['get'] = (id, tenant) => this.inner.get(id, tenant);
  list: ExecutionStore['list'] = (query) => this.inner.list(query);
  stats: ExecutionStore['stats'] = (tenant) => this.inner.stats(tenant);
  usage: ExecutionStore['usage'] = (query) => this.inner.usage(query);
  healthy: ExecutionStore['healthy'] = () => this.inner.healthy();
  close: ExecutionStore['close'] = () => this.inner.close();
}
