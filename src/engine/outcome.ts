// How a run that ended without a clean report from the runner is classified: from what the runner
// reported (if anything), how the container exited and what the engine says about it. A pure
// function, so every case is unit-tested without Docker; run-sandbox.ts gathers the facts.
import type { SandboxReport } from '../core/sandbox.ts';
import type { RuntimeName } from '../core/schemas.ts';
import type { ContainerState } from './docker-engine.ts';

export interface ExitFacts {
  runtime: RuntimeName;
  /** The runner's report, if one arrived (e.g. the child was killed by a signal). */
  report: SandboxReport | null;
  /** The container's exit code, null if it could not be read. */
  exitCode: number | null;
  /** The engine's view of the stopped container, null if it could not be read. */
  state: ContainerState | null;
  /** Why the state could not be read, when the engine itself went away. */
  engineLost: string | null;
  /** What ended our stream (e.g. 'killed', 'the sandbox stopped without a report'). */
  streamEnd: string;
  /** The tail of the runner's own stderr, for the reason of a failure. */
  runnerStderr: string;
  /** The process limit under gVisor, named in the reason when gVisor stops the sandbox. */
  pidsLimitRunsc: number;
}

export type ExitVerdict = { kind: 'oom' | 'finished'; report: SandboxReport | null } | { kind: 'failed'; failure: string };

export function classifyExit(f: ExitFacts): ExitVerdict {
  let outside: string | null = f.engineLost; // why it ended, when it was not the code nor the kernel
  if (f.state?.gone) outside = 'the sandbox container was removed from outside pybox while the code ran';
  else if (f.state?.killedFromOutside) outside = 'the sandbox container was killed from outside pybox (through the engine) while the code ran';
  // Under gVisor the host's OOM killer takes the whole sandbox, and the engine does not
  // always flag it: a SIGKILL (137) we did not send, with no report, is the memory limit.
  // (Under runc the engine flags every OOM kill; there a bare 137 is something else.)
  const oom = (f.state?.oomKilled ?? false) || (f.runtime === 'runsc' && f.report === null && f.exitCode === 137 && outside === null);
  if (oom) return { kind: 'oom', report: f.report };
  if (f.report) return { kind: 'finished', report: f.report };
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
