// Which OCI runtime executions use. `auto` prefers gVisor (runsc) where the engine offers it: a
// user-space kernel between the code and the host is a stronger boundary than runc alone.
import { RUNTIMES, type RuntimeName } from '../core/schemas.ts';

export type RuntimeChoice = 'auto' | RuntimeName;

export function knownRuntimes(engineRuntimes: string[]): RuntimeName[] {
  return RUNTIMES.filter((r) => engineRuntimes.includes(r));
}

export function resolveRuntime(choice: RuntimeChoice, available: RuntimeName[]): RuntimeName {
  if (choice === 'auto') {
    if (available.includes('runsc')) return 'runsc';
    if (available.includes('runc')) return 'runc';
    throw new Error(`the Docker engine offers neither runc nor runsc (it has: ${available.join(', ') || 'none'})`);
  }
  if (!available.includes(choice)) {
    throw new Error(
      `engine.runtime is ${choice}, but the Docker engine does not offer it` +
        (choice === 'runsc' ? ': install gVisor (runsc) and register it in /etc/docker/daemon.json, or set runtime: auto' : ''),
    );
  }
  return choice;
}

/** One line saying which runtime sandboxes use and why, for the start-up log and the doctor. */
export function runtimeSummary(choice: RuntimeChoice, runtime: RuntimeName, available: RuntimeName[]): string {
  const name = runtime === 'runsc' ? 'gVisor (runsc)' : 'runc';
  if (choice === 'auto') {
    return runtime === 'runsc'
      ? `${name}: engine.runtime is auto and the engine offers gVisor`
      : `${name}: engine.runtime is auto and the engine has no gVisor (runsc), so sandboxes share the host's kernel; install gVisor for a stronger boundary`;
  }
  const other = available.filter((r) => r !== runtime);
  return `${name}: set by engine.runtime${other.length > 0 ? ` (the engine also offers ${other.join(', ')})` : ''}`;
}
