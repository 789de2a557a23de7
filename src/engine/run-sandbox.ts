// One execution in one container: create → attach → start → send the payload → read frames until
// the runner's report, the timeout or a flood → remove. Every path ends with the container removed;
// removal runs in the background so the caller gets its result as soon as the output is complete.
import type { Duplex } from 'node:stream';
import type { Config } from '../config/schema.ts';
import type { Clock, Logger } from '../core/ports.ts';
import type { RuntimeName } from '../core/schemas.ts';
import { buildPayload } from './archive.ts';
import { containerSpec } from './container-spec.ts';
import type { ContainerEngine, SandboxContainer } from './docker-engine.ts';
import { CappedCapture } from './output.ts';
import { DockerDemuxer, FRAME_REPORT, FRAME_STDOUT, FrameParser, parseReport, ProtocolError, type RunnerReport } from './protocol.ts';

export interface SandboxJob {
  id: string;
  image: string;
  runtime: RuntimeName;
  code: string;
  stdin: string;
  args: string[];
  env: Record<string, string>;
  context: Record<string, unknown>;
  files: Array<{ path: string; data: Buffer }>;
  limits: { timeoutMs: number; memoryMb: number; cpus: number };
}

export type OutcomeKind = 'finished' | 'timeout' | 'oom' | 'output_limit' | 'failed';

export interface SandboxOutcome {
  kind: OutcomeKind;
  report: RunnerReport | null;
  stdout: CappedCapture;
  stderr: CappedCapture;
  durationMs: number;
  /** Why a run failed on our side (kind 'failed'), for the log and the result. */
  failure?: string;
}

export interface SandboxSettings {
  instance: string;
  sandbox: Config['sandbox'];
  outputBytes: number;
  floodBytes: number;
  outputFilesMax: number;
  outputFilesMaxBytes: number;
}

/** How long to wait for a container to stop when we need its final state (OOM or crash). */
const EXIT_WAIT_MS = 5_000;
/** The runner relays in 64 KiB chunks; anything larger is not from the runner. */
const MAX_FRAME_BYTES = 1024 * 1024;

export class SandboxRunner {
  private readonly removals = new Set<Promise<void>>();

  constructor(
    private readonly engine: ContainerEngine,
    private readonly settings: SandboxSettings,
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {}

  async run(job: SandboxJob): Promise<SandboxOutcome> {
    const payload = await buildPayload({
      code: job.code,
      stdin: job.stdin,
      files: job.files,
      request: {
        args: job.args,
        env: job.env,
        context: job.context,
        caps: {
          floodBytes: this.settings.floodBytes,
          maxFiles: this.settings.outputFilesMax,
          maxFileBytes: this.settings.outputFilesMaxBytes,
        },
      },
    });
    const container = await this.engine.create(
      containerSpec({ id: job.id, instance: this.settings.instance, image: job.image, runtime: job.runtime, limits: job.limits, sandbox: this.settings.sandbox }),
    );
    try {
      const socket = await container.attach();
      return await this.drive(container, socket, job, payload);
    } finally {
      this.removeInBackground(container, job.id);
    }
  }

  /** Resolves when every background removal started so far has finished. */
  async drain(): Promise<void> {
    while (this.removals.size > 0) await Promise.allSettled([...this.removals]);
  }

  private removeInBackground(container: SandboxContainer, id: string): void {
    const p = container
      .remove()
      .catch((e: unknown) => this.logger.warn('container removal failed; the reaper will retry at start-up', { id, error: e }))
      .finally(() => this.removals.delete(p));
    this.removals.add(p);
  }

  private drive(container: SandboxContainer, socket: Duplex, job: SandboxJob, payload: Buffer): Promise<SandboxOutcome> {
    const { outputBytes, floodBytes, outputFilesMaxBytes } = this.settings;
    const stdout = new CappedCapture(outputBytes);
    const stderr = new CappedCapture(outputBytes);
    const runnerStderr = new CappedCapture(8192);
    let startedAt = this.clock.now();

    return new Promise<SandboxOutcome>((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;

      const stop = () => {
        settled = true;
        clearTimeout(timer);
        socket.removeAllListeners('data');
        socket.on('error', () => {}); // late socket errors after the result are of no interest
        socket.destroy();
      };
      const settle = (kind: OutcomeKind, report: RunnerReport | null, failure?: string, durationMs?: number) => {
        if (settled) return;
        stop();
        const outcome: SandboxOutcome = { kind, report, stdout, stderr, durationMs: durationMs ?? this.clock.now() - startedAt };
        if (failure !== undefined) outcome.failure = failure;
        resolve(outcome);
      };

      // A SIGKILL we did not send, or a runner that vanished, is most likely the OOM killer: only
      // the engine knows for sure, once the container has stopped.
      let exiting = false;
      const settleAfterExit = (report: RunnerReport | null, failure: string) => {
        if (settled || exiting) return;
        exiting = true;
        clearTimeout(timer); // the container has stopped or is stopping: a timeout can no longer apply
        const durationMs = this.clock.now() - startedAt;
        void (async () => {
          let oom = false;
          let exitCode: number | null = null;
          try {
            exitCode = await container.wait(EXIT_WAIT_MS);
            // Under gVisor the host's OOM killer takes the whole sandbox, and the engine does not
            // always flag it: a SIGKILL (137) we did not send, with no report, is the memory limit.
            oom = (await container.state()).oomKilled || (report === null && exitCode === 137);
          } catch (e) {
            this.logger.warn('could not read the final state of a sandbox', { id: job.id, error: e });
          }
          // The time spent waiting here is ours, not the user's: report the duration from before it.
          if (oom) settle('oom', report, undefined, durationMs);
          else if (report) settle('finished', report, undefined, durationMs);
          else {
            const detail = runnerStderr.text().trim();
            const why = `${failure} (exit code ${exitCode ?? 'unknown'})${detail ? `: ${detail.slice(-500)}` : ''}`;
            settle('failed', null, why, durationMs);
          }
        })();
      };

      const parser = new FrameParser(
        { maxFrameBytes: MAX_FRAME_BYTES, maxReportBytes: Math.ceil((outputFilesMaxBytes * 4) / 3) + 1024 * 1024 },
        (kind, data) => {
          if (kind === FRAME_REPORT) {
            const report = parseReport(data);
            if (report.phase === 'run' && report.flooded) settle('output_limit', report);
            else if (report.phase === 'run' && report.signal === 9) settleAfterExit(report, 'killed');
            else settle('finished', report);
            return;
          }
          const capture = kind === FRAME_STDOUT ? stdout : stderr;
          capture.push(data);
          if (capture.totalBytes > floodBytes) settle('output_limit', null);
        },
      );
      const demux = new DockerDemuxer((stream, data) => {
        if (stream === 'stdout') parser.push(data);
        else runnerStderr.push(data);
      });

      socket.on('data', (chunk: Buffer) => {
        if (settled) return;
        try {
          demux.push(chunk);
        } catch (e) {
          const msg = e instanceof ProtocolError || e instanceof Error ? e.message : String(e);
          this.logger.warn('sandbox protocol violation', { id: job.id, error: msg });
          settle('failed', null, `sandbox protocol violation: ${msg}`);
        }
      });
      const onEnd = () => settleAfterExit(null, 'the sandbox stopped without a report');
      socket.on('end', onEnd);
      socket.on('close', onEnd);
      socket.on('error', (e: Error) => {
        if (!settled) settleAfterExit(null, `the connection to the sandbox failed: ${e.message}`);
      });

      container
        .start()
        .then(() => {
          if (settled || exiting) return; // it already stopped: no timer, nothing to send
          startedAt = this.clock.now();
          timer = setTimeout(() => settle('timeout', null), job.limits.timeoutMs);
          socket.write(payload);
        })
        .catch((e: unknown) => {
          if (settled) return;
          stop();
          reject(e); // an engine that cannot start containers is a fault of the service (503)
        });
    });
  }
}
