// One execution in one container: take a started sandbox (warm from the pool, or prepared now:
// create → attach → start), send the payload, read frames until the runner's report, the timeout
// or a flood, then remove it. Every path ends with the container removed; removal runs in the
// background so the caller gets its result as soon as the output is complete.
import { randomUUID } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import { PyboxError } from '../core/errors.ts';
import type { Clock, Logger } from '../core/ports.ts';
import type { RuntimeName } from '../core/schemas.ts';
import { buildPayload } from './archive.ts';
import { configOf, type OutcomeKind, type SandboxConfig, type SandboxJob, type SandboxOutcome } from '../core/sandbox.ts';
import { classifyExit, classifyReport } from './outcome.ts';
import { containerSpec } from './container-spec.ts';
import type { ContainerEngine, ContainerState, SandboxContainer } from './docker-engine.ts';
import { LiveSandbox } from './live-sandbox.ts';
import { CappedCapture } from './output.ts';
import { FRAME_REPORT, FRAME_STDOUT, parseReport, type RunnerReport } from './protocol.ts';


/** Where warm sandboxes come from (the pool). null: none for this config, prepare one now. */
export interface WarmSource {
  take(config: SandboxConfig): Promise<LiveSandbox> | null;
  /** Called once a run that asked for this config is over: time to prepare its replacement. */
  replenish(config: SandboxConfig): void;
}

export interface SandboxSettings {
  instance: string;
  sandbox: Config['sandbox'];
  outputBytes: number;
  floodBytes: number;
  outputFilesMax: number;
  outputFilesMaxBytes: number;
  /** How long a started sandbox may take to say it is ready before the run fails. */
  startTimeoutMs: number;
}

/** How long to wait for a container to stop when we need its final state (OOM or crash). */
const EXIT_WAIT_MS = 5_000;
/** The runner relays in 64 KiB chunks; anything larger is not from the runner. */
const MAX_FRAME_BYTES = 1024 * 1024;

export class SandboxRunner {
  private readonly removals = new Set<Promise<void>>();
  private warm: WarmSource | null = null;

  constructor(
    private readonly engine: ContainerEngine,
    private readonly settings: SandboxSettings,
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {}

  /** Lets run() take warm sandboxes from a pool before preparing one itself. */
  useWarmSource(source: WarmSource | null): void {
    this.warm = source;
  }

  async run(job: SandboxJob): Promise<SandboxOutcome> {
    const payload = await buildPayload({
      code: job.code,
      stdin: job.stdin,
      files: job.files,
      request: {
        args: job.args,
        env: job.env,
        context: job.context,
        ...(job.importPolicy ? { importPolicy: job.importPolicy } : {}),
        caps: {
          floodBytes: this.settings.floodBytes,
          maxFiles: this.settings.outputFilesMax,
          maxFileBytes: this.settings.outputFilesMaxBytes,
        },
      },
    });
    const config = configOf(job);
    try {
      const live = (await this.takeWarm(config)) ?? (await this.prepare(config, job.id));
      try {
        return await this.execute(live, job, payload);
      } finally {
        this.discard(live);
      }
    } finally {
      this.warm?.replenish(config);
    }
  }

  /**
   * Creates, attaches and starts a sandbox whose runner then waits for its payload. On any
   * failure the container is removed and the error thrown.
   */
  async prepare(config: SandboxConfig, id: string = `warm-${randomUUID()}`): Promise<LiveSandbox> {
    const container = await this.engine.create(
      containerSpec({ id, instance: this.settings.instance, sandbox: this.settings.sandbox, limits: config, ...config }),
    );
    let live: LiveSandbox | undefined;
    try {
      const socket = await container.attach();
      live = new LiveSandbox(id, container, socket, this.frameLimits(), this.clock.now());
      await container.start();
      return live;
    } catch (e) {
      live?.close();
      this.removeInBackground(container, id);
      throw e;
    }
  }

  /** Closes a sandbox that will not be (or was) used, and removes its container in the background. */
  discard(live: LiveSandbox): void {
    live.close();
    this.removeInBackground(live.container, live.id);
  }

  /** Resolves when every background removal started so far has finished. */
  async drain(): Promise<void> {
    while (this.removals.size > 0) await Promise.allSettled([...this.removals]);
  }

  private async takeWarm(config: SandboxConfig): Promise<LiveSandbox | null> {
    const pending = this.warm?.take(config);
    if (!pending) return null;
    try {
      const live = await pending;
      if (live.dead === null) return live;
      this.discard(live);
    } catch (e) {
      this.logger.warn('a warm sandbox failed; preparing one now', { error: e });
    }
    return null;
  }

  private frameLimits() {
    const reportBytes = Math.ceil((this.settings.outputFilesMaxBytes * 4) / 3) + 2 * 1024 * 1024;
    return { maxFrameBytes: MAX_FRAME_BYTES, maxReportBytes: reportBytes };
  }

  private removeInBackground(container: SandboxContainer, id: string): void {
    const p = container
      .remove()
      .catch((e: unknown) => this.logger.warn('container removal failed; the reaper will retry at start-up', { id, error: e }))
      .finally(() => this.removals.delete(p));
    this.removals.add(p);
  }

  private execute(live: LiveSandbox, job: SandboxJob, payload: Buffer): Promise<SandboxOutcome> {
    const { outputBytes, floodBytes } = this.settings;
    const stdout = new CappedCapture(outputBytes);
    const stderr = new CappedCapture(outputBytes);
    const runnerStderr = new CappedCapture(8192);
    const container = live.container;
    let startedAt = this.clock.now();

    return new Promise<SandboxOutcome>((resolve) => {
      let settled = false;
      let exiting = false;
      let timer: NodeJS.Timeout | undefined;

      const settle = (kind: OutcomeKind, report: RunnerReport | null, failure?: string, durationMs?: number) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        live.close();
        const outcome: SandboxOutcome = { kind, report, stdout, stderr, durationMs: durationMs ?? this.clock.now() - startedAt };
        if (failure !== undefined) outcome.failure = failure;
        resolve(outcome);
      };

      // A SIGKILL we did not send, or a runner that vanished, is most likely the OOM killer: only
      // the engine knows for sure, once the container has stopped.
      const settleAfterExit = (report: RunnerReport | null, failure: string) => {
        if (settled || exiting) return;
        exiting = true;
        clearTimeout(timer); // the container has stopped or is stopping: a timeout can no longer apply
        const durationMs = this.clock.now() - startedAt;
        void (async () => {
          let exitCode: number | null = null;
          let state: ContainerState | null = null;
          let engineLost: string | null = null;
          try {
            exitCode = await container.wait(EXIT_WAIT_MS);
            state = await container.state();
          } catch (e) {
            if (e instanceof PyboxError && e.code === 'engine_unavailable') engineLost = `the connection to the Docker engine was lost while the code ran: ${e.message}`;
            this.logger.warn('could not read the final state of a sandbox', { id: job.id, error: e });
          }
          const verdict = classifyExit({
            runtime: job.runtime,
            report,
            exitCode,
            state,
            engineLost,
            streamEnd: failure,
            runnerStderr: runnerStderr.text(),
            pidsLimitRunsc: this.settings.sandbox.pidsLimitRunsc,
          });
          // The time spent waiting here is ours, not the user's: report the duration from before it.
          if (verdict.kind === 'failed') settle('failed', null, verdict.failure, durationMs);
          else settle(verdict.kind, verdict.report, undefined, durationMs);
        })();
      };

      const violation = (msg: string) => {
        this.logger.warn('sandbox protocol violation', { id: job.id, error: msg });
        settle('failed', null, `sandbox protocol violation: ${msg}`);
      };

      live.claim({
        frame: (kind, data) => {
          if (settled || exiting) return;
          if (kind === FRAME_REPORT) {
            let report: RunnerReport;
            try {
              report = parseReport(data);
            } catch (e) {
              violation(e instanceof Error ? e.message : String(e));
              return;
            }
            const verdict = classifyReport(job.runtime, report);
            if (verdict === 'wait_for_exit') settleAfterExit(report, 'the code ended abnormally');
            else settle(verdict, report);
            return;
          }
          const capture = kind === FRAME_STDOUT ? stdout : stderr;
          capture.push(data);
          if (capture.totalBytes > floodBytes) settle('output_limit', null);
        },
        runnerStderr: (data) => runnerStderr.push(data),
        ended: (reason) => settleAfterExit(null, reason),
        violation,
      });
      if (settled || exiting) return; // it died before the payload could be sent
      // The user's time starts when the runner waits for the payload, not while a container starts.
      const send = () => {
        if (settled || exiting) return;
        startedAt = this.clock.now();
        // A run killed at its limit ran at least the limit (timers and clocks differ by a millisecond).
        timer = setTimeout(() => settle('timeout', null, undefined, Math.max(this.clock.now() - startedAt, job.limits.timeoutMs)), job.limits.timeoutMs);
        live.socket.write(payload);
      };
      if (live.ready) {
        send();
        return;
      }
      timer = setTimeout(
        () => settle('failed', null, `the sandbox did not become ready within ${this.settings.startTimeoutMs} ms`),
        this.settings.startTimeoutMs,
      );
      void live.whenReady().then((ready) => {
        if (!ready) return; // it died: its ended event settles the run
        clearTimeout(timer);
        send();
      });
    });
  }
}
