import { describe, expect, it } from 'vitest';
import type { ContainerState } from '../../src/engine/docker-engine.ts';
import { classifyExit, classifyReport, type ExitFacts } from '../../src/engine/outcome.ts';
import type { RunnerReport } from '../../src/engine/protocol.ts';

type Run = Extract<RunnerReport, { phase: 'run' }>;

const run = (over: Partial<Run> = {}): Run => ({
  v: 1,
  phase: 'run',
  exitCode: 0,
  signal: null,
  error: null,
  files: [],
  filesDropped: 0,
  flooded: false,
  ...over,
});
const killed = (signal: number, over: Partial<Run> = {}) => run({ exitCode: 128 + signal, signal, ...over });
const memory = (oomKills: number) => ({ oomKills, failcnt: 0, peakBytes: 1, limitBytes: 2 });
const exception = (type: string) => ({ type, message: 'm', line: 1 });

const stopped = (over: Partial<ContainerState> = {}): ContainerState => ({ running: false, exitCode: 137, oomKilled: false, ...over });

const facts = (over: Partial<ExitFacts> = {}): ExitFacts => ({
  runtime: 'runc',
  report: null,
  exitCode: 137,
  state: stopped(),
  engineLost: null,
  streamEnd: 'the sandbox stopped without a report',
  runnerStderr: '',
  pidsLimitRunsc: 256,
  ...over,
});

describe('classifyReport', () => {
  it('settles a successful run at once, under both runtimes', () => {
    expect(classifyReport('runc', run())).toBe('finished');
    expect(classifyReport('runsc', run())).toBe('finished');
  });

  it('settles setup and validation reports at once', () => {
    expect(classifyReport('runsc', { v: 1, phase: 'setup', message: 'bad env' })).toBe('finished');
    expect(classifyReport('runsc', { v: 1, phase: 'validation', error: exception('SyntaxError') })).toBe('finished');
  });

  it('a flood is the output limit', () => {
    expect(classifyReport('runc', killed(9, { flooded: true, memory: memory(1) }))).toBe('output_limit');
  });

  it('runc: the kernel\'s OOM-kill counter decides, with no engine call', () => {
    expect(classifyReport('runc', killed(9, { memory: memory(1) }))).toBe('oom');
    expect(classifyReport('runc', run({ exitCode: 1, error: exception('subprocess.CalledProcessError'), memory: memory(2) }))).toBe('oom');
    expect(classifyReport('runc', killed(9, { memory: memory(0) }))).toBe('finished');
    // Without a counter (an old runner), a SIGKILL is the code's own outcome: never taken for oom.
    expect(classifyReport('runc', killed(9))).toBe('finished');
  });

  it('a run that succeeded is never oom, even if something of it was OOM-killed', () => {
    expect(classifyReport('runc', run({ memory: memory(3) }))).toBe('finished');
  });

  it('gVisor: a failed run that may have hit the limit waits for the engine\'s word', () => {
    expect(classifyReport('runsc', killed(9))).toBe('wait_for_exit');
    expect(classifyReport('runsc', run({ exitCode: 1 }))).toBe('wait_for_exit');
    expect(classifyReport('runsc', run({ exitCode: 1, error: exception('MemoryError') }))).toBe('wait_for_exit');
  });

  it('gVisor: an ordinary exception does not wait', () => {
    expect(classifyReport('runsc', run({ exitCode: 1, error: exception('ZeroDivisionError') }))).toBe('finished');
  });

  it("gVisor: an exit code the code's process gave itself (sys.exit) does not wait; one it did not say does", () => {
    expect(classifyReport('runsc', run({ exitCode: 1, endSaid: true }))).toBe('finished');
    expect(classifyReport('runsc', run({ exitCode: 3, endSaid: false }))).toBe('wait_for_exit');
    // Said or not, a signal or a MemoryError may be the memory limit's doing.
    expect(classifyReport('runsc', killed(9, { endSaid: true }))).toBe('wait_for_exit');
    expect(classifyReport('runsc', run({ exitCode: 1, error: exception('MemoryError'), endSaid: true }))).toBe('wait_for_exit');
  });
});

describe('classifyExit', () => {
  it('a report with the kernel\'s OOM count is oom; without one it is the code\'s own outcome', () => {
    expect(classifyExit(facts({ report: killed(9, { memory: memory(1) }) })).kind).toBe('oom');
    expect(classifyExit(facts({ report: killed(9, { memory: memory(0) }), state: stopped({ oomKilled: true }) })).kind).toBe('finished');
  });

  it('gVisor: a failed run the engine flags as OOM-killed is oom, with its report', () => {
    const report = run({ exitCode: 1 });
    expect(classifyExit(facts({ runtime: 'runsc', report, exitCode: 1, state: stopped({ exitCode: 1, oomKilled: true }) }))).toEqual({ kind: 'oom', report });
    expect(classifyExit(facts({ runtime: 'runsc', report, exitCode: 1, state: stopped({ exitCode: 1 }) }))).toEqual({ kind: 'finished', report });
  });

  it('a code that killed itself is its own outcome, not oom', () => {
    const report = killed(9);
    expect(classifyExit(facts({ runtime: 'runsc', report, exitCode: 137 }))).toEqual({ kind: 'finished', report });
  });

  it('a successful run is never oom', () => {
    expect(classifyExit(facts({ runtime: 'runsc', report: run(), exitCode: 0, state: stopped({ exitCode: 0, oomKilled: true }) })).kind).toBe('finished');
  });

  it('no report and the engine saw the OOM killer: oom, under both runtimes', () => {
    for (const runtime of ['runc', 'runsc'] as const) expect(classifyExit(facts({ runtime, state: stopped({ oomKilled: true }) }))).toEqual({ kind: 'oom', report: null });
  });

  it('no report and a SIGKILL the engine does not explain: a failure of ours, never oom', () => {
    for (const runtime of ['runc', 'runsc'] as const) {
      const v = classifyExit(facts({ runtime }));
      expect(v.kind).toBe('failed');
      if (v.kind === 'failed') expect(v.failure).toMatch(/^the sandbox stopped without a report \(exit code 137\)/);
    }
  });

  it('killed or removed from outside: a failure naming it', () => {
    const k = classifyExit(facts({ runtime: 'runsc', state: stopped({ killedFromOutside: true }) }));
    expect(k).toEqual({ kind: 'failed', failure: expect.stringMatching(/killed from outside pybox/) });
    const g = classifyExit(facts({ state: { running: false, exitCode: null, oomKilled: false, gone: true }, exitCode: null }));
    expect(g).toEqual({ kind: 'failed', failure: expect.stringMatching(/removed from outside pybox/) });
  });

  it('the engine lost: a failure naming it', () => {
    const v = classifyExit(facts({ state: null, exitCode: null, engineLost: 'the connection to the Docker engine was lost' }));
    expect(v).toEqual({ kind: 'failed', failure: 'the connection to the Docker engine was lost' });
  });

  it('gVisor exiting with 2 names the process limit', () => {
    const v = classifyExit(facts({ runtime: 'runsc', exitCode: 2, state: stopped({ exitCode: 2 }) }));
    expect(v).toEqual({ kind: 'failed', failure: expect.stringMatching(/process limit \(256 host processes\)/) });
  });

  it('the runner\'s own diagnostics end the reason', () => {
    const v = classifyExit(facts({ exitCode: 1, state: stopped({ exitCode: 1 }), runnerStderr: 'Traceback: boom\n' }));
    expect(v).toEqual({ kind: 'failed', failure: 'the sandbox stopped without a report (exit code 1): Traceback: boom' });
  });
});
