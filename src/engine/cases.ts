// The host's half of test cases: the runner's case frames, checked and collected into the outcome's
// cases. Every frame is hostile: one for a case out of order, out of range, seen before, or with
// output past the cap it was given is a protocol violation (the run fails as internal), never
// trusted. Pure, so every rule is unit-tested without Docker.
import type { CaseOutcome, SandboxCase, SandboxOutcome } from '../core/sandbox.ts';
import { CappedCapture, ReportedOutput } from './output.ts';
import { ProtocolError, type CaseReport } from './protocol.ts';

export { TESTS_MARGIN_MS, TESTS_MARGIN_PER_CASE_MS, TESTS_WALL_CAP_MS, wallLimitMs } from '../core/sandbox.ts';

const notRun = (): CaseOutcome => ({
  kind: 'not_run',
  exitCode: null,
  signal: null,
  error: null,
  stdout: new ReportedOutput(Buffer.alloc(0), 0),
  stderr: new ReportedOutput(Buffer.alloc(0), 0),
  durationMs: 0,
  cpuMs: null,
});

export class CaseCollector {
  private readonly seen: CaseOutcome[] = [];

  constructor(
    /** How many cases the job has. */
    readonly count: number,
    /** The most bytes of each stream the runner was told to keep. */
    private readonly outputBytes: number,
  ) {}

  /** Every case has reported. */
  get complete(): boolean {
    return this.seen.length === this.count;
  }

  /** Cases reported so far. */
  get reported(): number {
    return this.seen.length;
  }

  /** Takes one case report, or throws ProtocolError saying what is wrong with it. */
  take(r: CaseReport): void {
    if (r.index >= this.count) throw new ProtocolError(`a report for test case ${r.index}, of ${this.count}`);
    if (r.index < this.seen.length) throw new ProtocolError(`a second report for test case ${r.index}`);
    if (r.index > this.seen.length) throw new ProtocolError(`a report for test case ${r.index} before case ${this.seen.length}`);
    const ended = r.kind === 'finished' || r.kind === 'oom';
    if (ended && r.exitCode === null) throw new ProtocolError(`test case ${r.index} ended without an exit code`);
    if (!ended && (r.exitCode !== null || r.signal !== null)) throw new ProtocolError(`test case ${r.index} was stopped but has an exit code`);
    if (r.signal !== null && r.exitCode !== 128 + r.signal) throw new ProtocolError(`test case ${r.index} has exit code ${r.exitCode} for signal ${r.signal}`);
    this.seen.push({
      kind: r.kind,
      exitCode: r.exitCode,
      signal: r.signal,
      error: r.error,
      stdout: this.stream(r.index, r.stdout),
      stderr: this.stream(r.index, r.stderr),
      durationMs: r.durationMs,
      cpuMs: r.cpuMs,
    });
  }

  private stream(index: number, s: CaseReport['stdout']): ReportedOutput {
    const kept = Buffer.from(s.b64, 'base64');
    if (kept.length > this.outputBytes) throw new ProtocolError(`test case ${index} kept ${kept.length} bytes of a stream, over the cap of ${this.outputBytes}`);
    if (s.totalBytes < kept.length) throw new ProtocolError(`test case ${index} counts fewer bytes than it kept`);
    return new ReportedOutput(kept, s.totalBytes);
  }

  /**
   * One outcome per case, in order: those reported, then (when the sandbox itself ran out of memory
   * mid-case) the case that was running as oom, and the rest not_run.
   */
  outcomes(runningEndedAs?: 'oom'): CaseOutcome[] {
    const out = [...this.seen];
    if (runningEndedAs && out.length < this.count) out.push({ ...notRun(), kind: runningEndedAs });
    while (out.length < this.count) out.push(notRun());
    return out;
  }
}

/** Every case not_run: the sandbox never ran any (a validation failure, or nothing started). */
export function noCasesRun(count: number): CaseOutcome[] {
  return new CaseCollector(count, 0).outcomes();
}

/** A job's test cases, or undefined for a plain run (an empty list is a plain run too). */
export function casesOf(tests: SandboxCase[] | undefined): SandboxCase[] | undefined {
  return tests && tests.length > 0 ? tests : undefined;
}

/** The outcome of a job cancelled before its code started: nothing ran, every case not_run. */
export function cancelledBeforeStart(capBytes: number, tests?: SandboxCase[]): SandboxOutcome {
  const cases = casesOf(tests);
  return {
    kind: 'cancelled',
    report: null,
    stdout: new CappedCapture(capBytes),
    stderr: new CappedCapture(capBytes),
    durationMs: 0,
    failure: 'cancelled before the code started; nothing ran',
    ...(cases ? { cases: noCasesRun(cases.length) } : {}),
  };
}
