// Runs one job: take a sandbox for its configuration from the source (a warm pool, or prepared on
// demand), run the job in it (its life is in sandbox.ts), and remove it, on every path.
import { buildPayload } from './archive.ts';
import { cancelledBeforeStart, casesOf, wallLimitMs } from './cases.ts';
import type { Clock, Sandboxes } from '../core/ports.ts';
import { RECORD_WAIT_MS, configOf, type SandboxConfig, type SandboxJob, type SandboxOutcome } from '../core/sandbox.ts';
import type { Sandbox, SandboxFactory } from './sandbox.ts';

/** Where a job's sandbox comes from. */
export interface SandboxSource {
  /** A sandbox for this configuration: ready, on its way, or started now for this job. */
  acquire(config: SandboxConfig, jobId: string): Sandbox;
  /** A job that never ran code in it lets it go (cancelled or out of time while it started). */
  giveBack(sandbox: Sandbox): void;
  /** A job that acquired for this configuration is over. */
  done(config: SandboxConfig): void;
}

/** No pool: every job gets a sandbox started for it. */
export class OnDemandSource implements SandboxSource {
  constructor(private readonly factory: SandboxFactory) {}

  acquire(config: SandboxConfig, jobId: string): Sandbox {
    return this.factory.prepare(config, jobId);
  }

  giveBack(sandbox: Sandbox): void {
    void this.factory.remove(sandbox);
  }

  done(): void {}
}

export class SandboxRunner implements Sandboxes {
  /** Clean-ups waiting for their callers' recordings (SandboxJob.recorded). */
  private readonly waiting = new Set<Promise<void>>();

  constructor(
    private readonly factory: SandboxFactory,
    private readonly source: SandboxSource,
    private readonly clock: Clock,
  ) {}

  async run(job: SandboxJob): Promise<SandboxOutcome> {
    // The caller's timeoutMs is its whole budget, counted from here: the wait for a sandbox (a cold
    // start under gVisor, or a start that never completes at cpus 0.01) comes out of it, and what is
    // left bounds the code's run. A budget spent before the code started is a timeout in which
    // nothing ran (durationMs 0); reading a stopped container's final state may add under a second.
    // With test cases the budget is the sum of their limits plus a margin (cases.ts).
    const deadline = this.clock.now() + wallLimitMs(job);
    const tests = casesOf(job.tests);
    if (job.signal?.aborted) return cancelledBeforeStart(this.factory.settings.outputBytes, tests);
    const { settings } = this.factory;
    const payload = await buildPayload({
      code: job.code,
      stdin: tests ? '' : job.stdin,
      files: job.files,
      request: {
        args: tests ? [] : job.args,
        env: job.env,
        context: job.context,
        ...(job.importPolicy ? { importPolicy: job.importPolicy } : {}),
        caps: {
          floodBytes: settings.floodBytes,
          maxFiles: settings.outputFilesMax,
          maxFileBytes: settings.outputFilesMaxBytes,
          outputBytes: settings.outputBytes,
          maxOutputs: settings.outputsMax,
          maxOutputBytes: settings.outputsMaxBytes,
        },
        ...(tests ? { tests: tests.map((c) => ({ timeoutMs: c.timeoutMs })) } : {}),
      },
      ...(tests ? { cases: tests.map((c) => ({ args: c.args, stdin: c.stdin, files: c.files })) } : {}),
    });
    if (job.signal?.aborted) return cancelledBeforeStart(settings.outputBytes, tests);
    const config = configOf(job);
    const sandbox = this.source.acquire(config, job.id);
    try {
      return await sandbox.run({ job, payload, deadline });
    } finally {
      // Every path ends here. A sandbox whose code never ran may serve another job; one whose code
      // may still run (timeout, cancel, flood) is removed at once; one that stopped on its own, and
      // the pool's replacement, wait for the caller's recording (SandboxJob.recorded), and then for
      // the turn of the event loop after it: the engine requests they make (a removal, a create)
      // are built on this thread, which first sends the caller its answer.
      const stopped = !sandbox.unused && sandbox.stoppedOnItsOwn;
      if (sandbox.unused) this.source.giveBack(sandbox);
      else if (!stopped) void this.factory.remove(sandbox);
      const afterwards = () => {
        if (stopped) void this.factory.remove(sandbox);
        this.source.done(config);
      };
      if (job.recorded === undefined) afterwards();
      else {
        const waiting = settledWithin(job.recorded, RECORD_WAIT_MS)
          .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
          .then(afterwards);
        this.waiting.add(waiting);
        void waiting.finally(() => this.waiting.delete(waiting));
      }
    }
  }

  /** Resolves when every removal started so far, or waiting for a recording, has finished. */
  async drain(): Promise<void> {
    await Promise.all(this.waiting);
    return this.factory.drain();
  }
}

/** Resolves once `p` settles (either way) or after `ms`, whichever comes first. */
function settledWithin(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    p.then(done, done);
  });
}
