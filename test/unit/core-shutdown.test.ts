// The shutdown sequence with fakes: what is stopped, waited for, cancelled and closed, in which order.
import { describe, expect, it } from 'vitest';
import { shutdown, type Drainable, type ShutdownParts } from '../../src/core/shutdown.ts';
import { deferred, RecordingLogger } from './fakes.ts';

/** A service with `n` executions in flight; each ends when finish() or a cancel says so. */
class FakeService implements Drainable {
  readonly log: string[];
  private waiters: Array<() => void> = [];
  constructor(
    public pending: number,
    log: string[],
    /** Whether cancelRunning() ends them (a sandbox side that honours the signal). */
    private readonly cancelEnds = true,
  ) {
    this.log = log;
  }
  stopAccepting(): void {
    this.log.push('stopAccepting');
  }
  cancelRunning(): void {
    this.log.push('cancelRunning');
    if (this.cancelEnds) this.finish();
  }
  settled(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }
  finish(): void {
    this.pending = 0;
    this.log.push('settled');
    for (const w of this.waiters.splice(0)) w();
  }
}

function parts(service: FakeService, log: string[], listener = true): ShutdownParts {
  return {
    service,
    listener: listener
      ? {
          close: async () => {
            log.push('listener closed');
          },
        }
      : undefined,
    drains: [
      async () => {
        log.push('pool drained');
      },
      async () => {
        log.push('runner drained');
      },
    ],
    // The first closer is async: were it not awaited, the store would close before the engine.
    closers: [
      async () => {
        await new Promise((r) => setTimeout(r, 1));
        log.push('engine closed');
      },
      () => void log.push('store closed'),
    ],
    logger: new RecordingLogger(),
  };
}

describe('shutdown', () => {
  it('when idle, closes everything at once without waiting for the grace period', async () => {
    const log: string[] = [];
    // A wait for the grace period would outlast the test's own timeout.
    await shutdown(parts(new FakeService(0, log), log), 60_000);
    expect(log).toEqual(['stopAccepting', 'listener closed', 'pool drained', 'runner drained', 'engine closed', 'store closed']);
  });

  it('lets running executions finish within the grace period and cancels nothing', async () => {
    const log: string[] = [];
    const service = new FakeService(2, log);
    const done = shutdown(parts(service, log), 60_000);
    await new Promise((r) => setTimeout(r, 10));
    expect(log).toEqual(['stopAccepting']); // nothing is closed while they run
    service.finish();
    await done;
    expect(log).toEqual(['stopAccepting', 'settled', 'listener closed', 'pool drained', 'runner drained', 'engine closed', 'store closed']);
  });

  it('cancels what still runs when the grace period is over, then closes', async () => {
    const log: string[] = [];
    const service = new FakeService(1, log);
    await shutdown(parts(service, log), 20);
    expect(log).toEqual(['stopAccepting', 'cancelRunning', 'settled', 'listener closed', 'pool drained', 'runner drained', 'engine closed', 'store closed']);
  });

  it('with a grace of 0 cancels at once', async () => {
    const log: string[] = [];
    await shutdown(parts(new FakeService(3, log), log), 0);
    expect(log.slice(0, 3)).toEqual(['stopAccepting', 'cancelRunning', 'settled']);
  });

  it('with an infinite grace waits as long as the executions take and never cancels', async () => {
    const log: string[] = [];
    const service = new FakeService(1, log);
    const done = shutdown(parts(service, log, false), Number.POSITIVE_INFINITY);
    await new Promise((r) => setTimeout(r, 20));
    expect(log).toEqual(['stopAccepting']);
    service.finish();
    await done;
    expect(log).not.toContain('cancelRunning');
    expect(log.at(-1)).toBe('store closed');
  });

  it('closes nothing before cancelled executions are recorded', async () => {
    const log: string[] = [];
    const service = new FakeService(1, log, false); // cancelling takes a while on the sandbox side
    const done = shutdown(parts(service, log), 0);
    await new Promise((r) => setTimeout(r, 20));
    expect(log).toEqual(['stopAccepting', 'cancelRunning']);
    service.finish();
    await done;
    expect(log.slice(2)).toEqual(['settled', 'listener closed', 'pool drained', 'runner drained', 'engine closed', 'store closed']);
  });

  it('drains in order, each after the one before has finished', async () => {
    const log: string[] = [];
    const pool = deferred<void>();
    const p = parts(new FakeService(0, log), log, false);
    p.drains = [
      async () => {
        await pool.promise;
        log.push('pool drained');
      },
      async () => {
        log.push('runner drained');
      },
    ];
    const done = shutdown(p, 0);
    await new Promise((r) => setTimeout(r, 10));
    expect(log).toEqual(['stopAccepting']);
    pool.resolve();
    await done;
    expect(log).toEqual(['stopAccepting', 'pool drained', 'runner drained', 'engine closed', 'store closed']);
  });
});
