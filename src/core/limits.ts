// The smallest limits a run can be given and still work: below them the sandbox's own runner cannot
// start or finish `print(1)`, and the caller would get an outcome that blames its code (an `oom`
// for memory, a start that never completes for CPUs). Requests below are refused (400) and
// configurations below stop start-up, both naming the floor. Imports nothing: config/ uses them too.

/** Memory a sandbox needs for its runner and a trivial run, in MiB (provisional, being measured per runtime). */
export const MIN_MEMORY_MB = 64;
/** CPU share under which a sandbox cannot start within the engine's start timeout (provisional). */
export const MIN_CPUS = 0.1;
/**
 * Shortest time limit, in milliseconds. At the CPU floor a warm gVisor sandbox takes ~190 ms for
 * `print(1)` (runc ~15 ms), so a 100 ms limit there could only ever time out (measured, noisy).
 */
export const MIN_TIMEOUT_MS = 1000;
