// The smallest limits a run can be given and still work: below them the sandbox's own runner cannot
// start or finish `print(1)`, and the caller would get an outcome that blames its code (an `oom`
// for memory, a start that never completes for CPUs). Requests below are refused (400) and
// configurations below stop start-up, both naming the floor. Imports nothing: config/ uses them too.

/**
 * Memory a sandbox needs for its runner and a trivial run, in MiB. Measured (2026-11-26, 3-6 tries
 * each): runc runs `print(1)` from 12 MB; gVisor fails at 24-30 MB, is flaky at 32 and works from
 * 36. One floor for both runtimes, with room above gVisor's need.
 */
export const MIN_MEMORY_MB = 64;
/**
 * CPU share a cold sandbox needs to start and run `print(1)` in a couple of seconds. Measured on a
 * loaded machine: runc 1.1-1.35 s at 0.1; gVisor 5-8 s at 0.1, 1.6-2.2 s at 0.25. Below it a run
 * would mostly spend its time limit starting.
 */
export const MIN_CPUS = 0.25;
/**
 * Shortest time limit, in milliseconds. At the CPU floor a warm gVisor sandbox takes ~190 ms for
 * `print(1)` (runc ~15 ms), so a 100 ms limit there could only ever time out (measured, noisy).
 */
export const MIN_TIMEOUT_MS = 1000;
