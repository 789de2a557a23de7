// How a run's end is classified: from what the runner reported (if anything), how the container
// exited and what the engine says about it. Pure functions, so every case is unit-tested without
// Docker; run-sandbox.ts gathers the facts and only calls these.
//
// `oom` comes only from real accounting, never from "SIGKILL and no report":
// - runc: the runner survives the code (it is PID 1, and the kernel picks the code first), and
//   reports the container memory cgroup's OOM-kill counter (`report.memory.oomKills`).
// - gVisor: there is no counter inside; when the limit is hit the host's OOM killer takes the whole
//   sandbox, or a process of it while the sandbox lives on, and the engine records it
//   (State.OOMKilled, or its `oom` event when that arrives after the exit). The engine's word is
//   read once the container has stopped.
// The code cannot kill or stop the runner (see images/python/pybox_runner/relay.py): whatever it
// does to itself is in the report as its own outcome.
import { PyboxError } from '../core/errors.ts';
import type { RuntimeName } from '../core/schemas.ts';
import type { ContainerState, SandboxContainer } from './docker-engine.ts';
import type { RunnerReport } from './protocol.ts';

/** How long a runner SIGKILLed with nothing to say why waits before the engine is asked again. */
export const LATE_EXIT_FACTS_MS = 1000;

/**
 * What the engine says of a container that stopped (or is stopping): its exit code and state, or
 * why they could not be read. Waits at most waitMs for the exit. An end an OOM kill may explain that
 * the engine has not recorded yet (mayBeLateOom) gets the engine asked once more
 * LATE_EXIT_FACTS_MS later: on a loaded host the engine may record the OOM kill a moment after the exit.
 */
export async function readExitFacts(
  container: SandboxContainer | null,
  waitMs: number,
  report: RunnerReport | null,
  onError: (e: unknown) => void,
): Promise<Pick<ExitFacts, 'exitCode' | 'state' | 'engineLost'>> {
  let exitCode: number | null = null;
  let state: ContainerState | null = null;
  let engineLost: string | null = null;
  try {
    if (container) {
      exitCode = await container.wait(waitMs);
      state = await container.state();
      if (mayBeLateOom(report, exitCode, state)) {
        await new Promise((r) => setTimeout(r, LATE_EXIT_FACTS_MS));
        state = await container.state();
      }
    }
  } catch (e) {
    if (e instanceof PyboxError && e.code === 'engine_unavailable') engineLost = `the connection to the Docker engine was lost while the code ran: ${e.message}`;
    onError(e);
  }
  return { exitCode, state, engineLost };
}

/**
 * Whether an OOM kill the engine has not recorded yet may explain an end nothing else explains:
 * the runner itself died by SIGKILL with no report, or it reported that the code's process ended
 * without saying so (endSaid false: killed, crashed, or under gVisor out of memory before it could).
 * A program that exits with an error of its own (sys.exit(1)) says so, and is never kept waiting.
 */
export function mayBeLateOom(report: RunnerReport | null, exitCode: number | null, state: ContainerState): boolean {
  if (state.oomKilled || state.killedFromOutside === true || state.gone === true) return false;
  if (report === null) return exitCode === 137;
  return report.phase === 'run' && report.endSaid === false;
}

export interface ExitFacts {
  runtime: RuntimeName;
  /** The runner's report, if one arrived. */
  report: RunnerReport | null;
  /** The container's exit code, null if it could not be read. */
  exitCode: number | null;
  /** The engine's view of the stopped container, null if it could not be read. */
  state: ContainerState | null;
  /** Why the state could not be read, when the engine itself went away. */
  engineLost: string | null;
  /** What ended our stream (e.g. 'the sandbox stopped without a report'). */
  streamEnd: string;
  /** The tail of the runner's own stderr, for the reason of a failure. */
  runnerStderr: string;
  /** The process limit under gVisor, named in the reason when gVisor stops the sandbox. */
  pidsLimitRunsc: number;
}

export type ExitVerdict = { kind: 'oom' | 'finished'; report: RunnerReport | null } | { kind: 'failed'; failure: string };

type RunReport = Extract<RunnerReport, { phase: 'run' }>;

const failedRun = (r: RunReport): boolean => r.exitCode !== 0 || r.signal !== null;

/**
 * What to do with a report as it arrives: settle at once, or first wait for the container to stop
 * and read the engine's state ('wait_for_exit', then classifyExit). Only a failed run under gVisor
 * that may have hit the memory limit waits: killed by a signal, ended without saying its own exit
 * code (endSaid false, or a runner too old to tell), or with a MemoryError. An ordinary exception,
 * or an exit code the program gave itself (sys.exit(1)), never pays for the engine's answer.
 */
export function classifyReport(runtime: RuntimeName, report: RunnerReport): 'output_limit' | 'oom' | 'finished' | 'wait_for_exit' {
  if (report.phase !== 'run') return 'finished';
  if (report.flooded) return 'output_limit';
  if (!failedRun(report)) return 'finished';
  const kills = report.memory?.oomKills;
  if (kills !== undefined && kills !== null) return kills > 0 ? 'oom' : 'finished';
  if (runtime !== 'runsc') return 'finished';
  if (report.signal !== null) return 'wait_for_exit';
  if (report.error === null) return report.endSaid === true ? 'finished' : 'wait_for_exit';
  return report.error.type === 'MemoryError' ? 'wait_for_exit' : 'finished';
}

export function classifyExit(f: ExitFacts): ExitVerdict {
  const oomByEngine = f.state?.oomKilled ?? false;
  if (f.report) {
    const r = f.report;
    if (r.phase === 'run' && failedRun(r)) {
      const kills = r.memory?.oomKills;
      const oom = kills !== undefined && kills !== null ? kills > 0 : oomByEngine;
      if (oom) return { kind: 'oom', report: r };
    }
    return { kind: 'finished', report: r };
  }
  // No report: the runner itself is gone. The code cannot do that; the kernel (memory limit), the
  // engine's user or pybox's side can.
  if (oomByEngine) return { kind: 'oom', report: null };
  let outside: string | null = f.engineLost; // why it ended, when it was not the code nor the kernel
  if (f.state?.gone) outside = 'the sandbox container was removed from outside pybox while the code ran';
  else if (f.state?.killedFromOutside) outside = 'the sandbox container was killed from outside pybox (through the engine) while the code ran';
  const detail = f.runnerStderr.trim();
  const why =
    outside ??
    (f.runtime === 'runsc' && f.exitCode === 2
      ? // gVisor's kernel is a Go program: a fatal error of its runtime exits with 2. Here that is
        // nearly always the process limit: each process of the code costs gVisor host processes.
        `gVisor stopped the sandbox (its kernel exited with code 2), as it does when the code starts more processes than the sandbox's process limit (${f.pidsLimitRunsc} host processes) can hold`
      : `${f.streamEnd} (exit code ${f.exitCode ?? 'unknown'})${detail ? `: ${detail.slice(-500)}` : ''}`);
  return { kind: 'failed', failure: why };
}
