import { PyboxError } from '../../src/core/errors.ts';
import { describe, expect, it } from 'vitest';
import { containerSpec } from '../../src/engine/container-spec.ts';
import { FRAME_STDERR, FRAME_STDOUT } from '../../src/engine/protocol.ts';
import { RECORD_WAIT_MS, type SandboxJob, type SandboxOutcome } from '../../src/core/sandbox.ts';
import { OnDemandSource, SandboxRunner } from '../../src/engine/run-sandbox.ts';
import { SandboxFactory, type SandboxSettings } from '../../src/engine/sandbox.ts';
import {
  testSandboxSettings,
  deferred,
  dockerFrame,
  FakeEngine,
  ManualClock,
  onStdout,
  readTar,
  RecordingLogger,
  reportFrame,
  runnerFrame,
  runReport,
  userStderr,
  userStdout,
  type FakeContainer,
  type FakeContainerOptions,
} from './fakes.ts';

const settings: SandboxSettings = testSandboxSettings();

function job(overrides: Partial<SandboxJob> = {}): SandboxJob {
  return {
    id: 'job-1',
    image: 'pybox-python:test',
    runtime: 'runc',
    code: 'print("hi")\n',
    stdin: '',
    args: ['a1'],
    env: { K: 'v' },
    context: { n: 3 },
    files: [{ path: 'in.txt', data: Buffer.from('input') }],
    limits: { timeoutMs: 10_000, memoryMb: 256, cpus: 1 },
    ...overrides,
  };
}

interface Harness {
  engine: FakeEngine;
  clock: ManualClock;
  logger: RecordingLogger;
  factory: SandboxFactory;
  runner: SandboxRunner;
}

function harness(options: (clock: ManualClock) => FakeContainerOptions = () => ({})): Harness {
  const clock = new ManualClock();
  const engine = new FakeEngine(options(clock));
  const logger = new RecordingLogger();
  const factory = new SandboxFactory(engine, settings, logger, clock);
  return { engine, clock, logger, factory, runner: new SandboxRunner(factory, new OnDemandSource(factory), clock) };
}

interface Running {
  outcome: Promise<SandboxOutcome>;
  container: FakeContainer;
  payload: Buffer;
}

/** Starts a run and waits until the payload has been written to the container's stdin. */
async function start(h: Harness, j: SandboxJob = job()): Promise<Running> {
  const outcome = h.runner.run(j);
  const container = await h.engine.created.promise;
  const payload = await container.socket.firstWrite;
  return { outcome, container, payload };
}

const ms = (n: number) => new Promise<void>((r) => setTimeout(r, n));

describe('SandboxRunner: a normal run', () => {
  it('resolves finished with stdout, stderr and the report, then removes the container', async () => {
    const h = harness();
    const r = await start(h);
    const report = runReport({ exitCode: 0 });
    r.container.socket.send(userStdout('hello\n'), userStderr('careful\n'), userStdout('world\n'), reportFrame(report));
    const o = await r.outcome;
    expect(o.kind).toBe('finished');
    expect(o.report).toEqual(report);
    expect(o.stdout.text()).toBe('hello\nworld\n');
    expect(o.stderr.text()).toBe('careful\n');
    expect(o.stdout.truncated).toBe(false);
    expect(o.failure).toBeUndefined();
    await h.runner.drain();
    expect(r.container.calls).toEqual(['attach', 'start', 'remove', 'removed']);
  });

  it('creates the container from containerSpec for the job', async () => {
    const h = harness();
    const j = job({ runtime: 'runsc', limits: { timeoutMs: 5000, memoryMb: 512, cpus: 0.5 } });
    const r = await start(h, j);
    r.container.socket.send(reportFrame(runReport()));
    await r.outcome;
    expect(h.engine.specs).toEqual([containerSpec({ id: j.id, instance: 'pybox-test', image: j.image, runtime: 'runsc', limits: j.limits, sandbox: settings.sandbox })]);
  });

  it('measures the duration from after start() until the report, with the clock', async () => {
    const h = harness((clock) => ({ onStart: () => clock.advance(700) }));
    const r = await start(h);
    h.clock.advance(1234);
    r.container.socket.send(reportFrame(runReport()));
    expect((await r.outcome).durationMs).toBe(1234);
  });

  it('writes a tar payload whose first entry is .pybox/request.json with the caps', async () => {
    const h = harness();
    const j = job({ stdin: 'some input' });
    const r = await start(h, j);
    r.container.socket.send(reportFrame(runReport()));
    await r.outcome;
    expect(r.container.socket.writes).toHaveLength(1);
    const entries = await readTar(r.payload);
    expect(entries.map((e) => e.header.name)).toEqual(['.pybox/request.json', '.pybox/stdin', 'main.py', 'in.txt']);
    expect(JSON.parse(entries[0]?.data.toString() ?? 'null')).toEqual({
      args: ['a1'],
      env: { K: 'v' },
      context: { n: 3 },
      caps: { floodBytes: 1000, maxFiles: 7, maxFileBytes: 4096, outputBytes: 100, maxOutputs: 3, maxOutputBytes: 4096 },
    });
    expect(entries[2]?.data.toString()).toBe(j.code);
    expect(entries[3]?.data.toString()).toBe('input');
  });

  it('copes with Docker and runner frames split at arbitrary points (byte by byte)', async () => {
    const h = harness();
    const r = await start(h);
    const inner = Buffer.concat([runnerFrame(FRAME_STDOUT, 'abc'), runnerFrame(FRAME_STDERR, 'def'), runnerFrame(3, JSON.stringify(runReport({ exitCode: 3 })))]);
    // The runner's byte stream cut into Docker frames at odd places, then fed one byte at a time.
    const wire = Buffer.concat([onStdout(inner.subarray(0, 2)), dockerFrame(2, 'runner diag'), onStdout(inner.subarray(2, 9)), onStdout(inner.subarray(9))]);
    for (const b of wire) r.container.socket.send(Buffer.from([b]));
    const o = await r.outcome;
    expect(o.kind).toBe('finished');
    expect(o.stdout.text()).toBe('abc');
    expect(o.stderr.text()).toBe('def');
    expect(o.report).toEqual(runReport({ exitCode: 3 }));
  });

  it('does not let the runner\'s own stderr reach the user\'s stderr', async () => {
    const h = harness();
    const r = await start(h);
    r.container.socket.send(dockerFrame(2, 'runner diagnostics'), reportFrame(runReport()));
    const o = await r.outcome;
    expect(o.stderr.text()).toBe('');
    expect(o.stdout.text()).toBe('');
  });

  it('returns before the background removal has finished; drain() waits for it', async () => {
    const gate = deferred<void>();
    const h = harness(() => ({ removeGate: gate.promise }));
    const r = await start(h);
    r.container.socket.send(reportFrame(runReport()));
    expect((await r.outcome).kind).toBe('finished');
    expect(r.container.calls).toEqual(['attach', 'start', 'remove']);
    let drained = false;
    const d = h.runner.drain().then(() => {
      drained = true;
    });
    await ms(5);
    expect(drained).toBe(false);
    gate.resolve();
    await d;
    expect(r.container.calls).toEqual(['attach', 'start', 'remove', 'removed']);
  });

  it('a failed removal is logged and does not fail the run', async () => {
    const h = harness(() => ({ removeError: new Error('daemon busy') }));
    const r = await start(h);
    r.container.socket.send(reportFrame(runReport()));
    expect((await r.outcome).kind).toBe('finished');
    await h.runner.drain();
    expect(h.logger.at('warn').map((e) => e.msg)).toEqual(['container removal failed; the reaper will retry at start-up']);
    expect(h.logger.at('warn')[0]?.fields?.['id']).toBe('job-1');
  });
});

describe("SandboxRunner: after the run, the caller's recording", () => {
  const removed = async (c: FakeContainer) => {
    for (let i = 0; i < 200 && c.count('remove') === 0; i++) await ms(5);
    return c.count('remove');
  };

  it('is waited for before a container that stopped on its own is removed', async () => {
    const h = harness();
    const recorded = deferred<void>();
    const r = await start(h, job({ recorded: recorded.promise }));
    r.container.socket.send(reportFrame(runReport()));
    expect((await r.outcome).kind).toBe('finished');
    // Draining (shutdown) waits for it too.
    const drained = h.runner.drain();
    await ms(30);
    expect(r.container.count('remove')).toBe(0);
    recorded.resolve();
    await drained;
    expect(r.container.calls).toEqual(['attach', 'start', 'remove', 'removed']);
  });

  it('is not waited for when the code may still run: a timed-out container is removed at once', async () => {
    const h = harness();
    const recorded = deferred<void>();
    const r = await start(h, job({ recorded: recorded.promise, limits: { timeoutMs: 50, memoryMb: 256, cpus: 1 } }));
    h.clock.advance(50);
    expect((await r.outcome).kind).toBe('timeout');
    expect(await removed(r.container)).toBe(1);
    recorded.resolve();
  });

  it('is waited for RECORD_WAIT_MS at most', async () => {
    const h = harness();
    const r = await start(h, job({ recorded: new Promise(() => {}) }));
    r.container.socket.send(reportFrame(runReport()));
    await r.outcome;
    await ms(RECORD_WAIT_MS + 50);
    expect(await removed(r.container)).toBe(1);
  });
});

describe('SandboxRunner: limits', () => {
  it('times out with the partial stdout sent before, and removes the container', async () => {
    const h = harness();
    const r = await start(h, job({ limits: { timeoutMs: 50, memoryMb: 256, cpus: 1 } }));
    r.container.socket.send(userStdout('partial '), userStdout('output'));
    h.clock.advance(50);
    const o = await r.outcome;
    expect(o.kind).toBe('timeout');
    expect(o.report).toBeNull();
    expect(o.stdout.text()).toBe('partial output');
    expect(o.durationMs).toBe(50);
    expect(r.container.socket.destroyed).toBe(true);
    await h.runner.drain();
    expect(r.container.count('remove')).toBe(1);
    expect(r.container.count('wait')).toBe(0);
  });

  it('does not time out before timeoutMs', async () => {
    const h = harness();
    const r = await start(h, job({ limits: { timeoutMs: 200, memoryMb: 256, cpus: 1 } }));
    await ms(40);
    r.container.socket.send(reportFrame(runReport()));
    expect((await r.outcome).kind).toBe('finished');
  });

  it('stops a stdout flood on the host side: output_limit, capped capture, no report', async () => {
    const h = harness();
    const r = await start(h);
    const chunk = 'a'.repeat(400);
    r.container.socket.send(userStdout(chunk), userStdout(chunk), userStdout(chunk), reportFrame(runReport()));
    const o = await r.outcome;
    expect(o.kind).toBe('output_limit');
    expect(o.report).toBeNull();
    expect(o.stdout.totalBytes).toBe(1200);
    expect(o.stdout.text()).toBe('a'.repeat(100));
    expect(o.stdout.truncated).toBe(true);
    expect(r.container.socket.destroyed).toBe(true);
    await h.runner.drain();
    expect(r.container.count('remove')).toBe(1);
  });

  it('stops a stderr flood the same way', async () => {
    const h = harness();
    const r = await start(h);
    r.container.socket.send(userStderr('e'.repeat(1001)));
    const o = await r.outcome;
    expect(o.kind).toBe('output_limit');
    expect(o.stderr.totalBytes).toBe(1001);
  });

  it('exactly floodBytes of output is not a flood', async () => {
    const h = harness();
    const r = await start(h);
    r.container.socket.send(userStdout('b'.repeat(600)), userStdout('b'.repeat(400)), reportFrame(runReport()));
    const o = await r.outcome;
    expect(o.kind).toBe('finished');
    expect(o.stdout.totalBytes).toBe(1000);
    expect(o.stdout.truncated).toBe(true);
  });

  it('a report with flooded:true is output_limit and keeps the report', async () => {
    const h = harness();
    const r = await start(h);
    const report = runReport({ exitCode: 137, signal: 9, flooded: true });
    r.container.socket.send(userStdout('x'), reportFrame(report));
    const o = await r.outcome;
    expect(o.kind).toBe('output_limit');
    expect(o.report).toEqual(report);
    expect(r.container.count('wait')).toBe(0);
  });
});

describe('SandboxRunner: a SIGKILL we did not send', () => {
  const killed = runReport({ exitCode: 137, signal: 9 });

  it('runc: is oom when the kernel\'s OOM-kill counter in the report says so, without asking the engine', async () => {
    const h = harness(() => ({ state: { oomKilled: false } }));
    const r = await start(h);
    const report = runReport({ exitCode: 137, signal: 9, memory: { oomKills: 1, failcnt: 0, peakBytes: 10, limitBytes: 10 } });
    r.container.socket.send(reportFrame(report));
    const o = await r.outcome;
    expect(o.kind).toBe('oom');
    expect(r.container.count('state')).toBe(0);
  });

  it('gVisor: is oom when the engine says the container was OOM-killed', async () => {
    const h = harness((clock) => ({ waitResult: 137, state: { oomKilled: true }, onWait: () => clock.advance(4000) }));
    const r = await start(h, job({ runtime: 'runsc' }));
    h.clock.advance(300);
    r.container.socket.send(userStdout('before'), reportFrame(killed));
    const o = await r.outcome;
    expect(o.kind).toBe('oom');
    expect(o.report).toEqual(killed);
    expect(o.stdout.text()).toBe('before');
    expect(o.durationMs).toBe(300); // the time spent waiting for the engine is not the user's
    expect(r.container.waitTimeouts).toEqual([5000]);
    expect(r.container.calls.slice(0, 4)).toEqual(['attach', 'start', 'wait', 'state']);
    await h.runner.drain();
    expect(r.container.count('remove')).toBe(1);
  });

  it('gVisor: is finished (with the report) when the engine says it was not OOM', async () => {
    const h = harness(() => ({ waitResult: 137, state: { oomKilled: false } }));
    const r = await start(h, job({ runtime: 'runsc' }));
    r.container.socket.send(reportFrame(killed));
    const o = await r.outcome;
    expect(o.kind).toBe('finished');
    expect(o.report).toEqual(killed);
    expect(r.container.count('state')).toBe(1);
  });

  it.each([6, 11, 15])('signal %i does not ask the engine', async (signal) => {
    const h = harness(() => ({ state: { oomKilled: true } }));
    const r = await start(h);
    r.container.socket.send(reportFrame(runReport({ exitCode: 128 + signal, signal })));
    expect((await r.outcome).kind).toBe('finished');
    expect(r.container.count('state')).toBe(0);
  });
});

describe('SandboxRunner: a stream that ends without a report', () => {
  it('is oom when the engine says so', async () => {
    const h = harness(() => ({ waitResult: 137, state: { oomKilled: true } }));
    const r = await start(h);
    r.container.socket.send(userStdout('so far'));
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('oom');
    expect(o.report).toBeNull();
    expect(o.stdout.text()).toBe('so far');
    await h.runner.drain();
    expect(r.container.count('remove')).toBe(1);
  });

  it('under gVisor too, a SIGKILL (137) the engine does not flag is a failure, never taken for oom', async () => {
    const h = harness(() => ({ waitResult: 137, state: { oomKilled: false } }));
    const r = await start(h, job({ runtime: 'runsc' }));
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toContain('exit code 137');
  });

  it('under runc, where the engine flags every OOM kill, a bare 137 is a failure, not oom', async () => {
    const h = harness(() => ({ waitResult: 137, state: { oomKilled: false } }));
    const r = await start(h, job({ runtime: 'runc' }));
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toContain('exit code 137');
  });

  it('says so when the container was killed or removed from outside pybox, even under gVisor', async () => {
    for (const [state, text] of [
      [{ killedFromOutside: true }, 'killed from outside pybox'],
      [{ gone: true }, 'removed from outside pybox'],
    ] as const) {
      const h = harness(() => ({ waitResult: 137, state: { oomKilled: false, ...state } }));
      const r = await start(h, job({ runtime: 'runsc' }));
      r.container.socket.finish();
      const o = await r.outcome;
      expect(o.kind).toBe('failed');
      expect(o.failure).toContain(text);
    }
  });

  it('says so when the connection to the engine is lost during the run', async () => {
    const h = harness(() => ({
      onWait: () => {
        throw new PyboxError('engine_unavailable', 'the Docker engine does not answer (wait: ECONNREFUSED)');
      },
    }));
    const r = await start(h);
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toBe('the connection to the Docker engine was lost while the code ran: the Docker engine does not answer (wait: ECONNREFUSED)');
  });

  it('names the process limit when gVisor\'s kernel exits with 2 and no report', async () => {
    const h = harness(() => ({ waitResult: 2, state: { oomKilled: false } }));
    const r = await start(h, job({ runtime: 'runsc' }));
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toMatch(/^gVisor stopped the sandbox \(its kernel exited with code 2\).*process limit \(\d+ host processes\)/);
  });

  it('is failed with the exit code and the runner\'s stderr otherwise', async () => {
    const h = harness(() => ({ waitResult: 70, state: { oomKilled: false } }));
    const r = await start(h);
    r.container.socket.send(dockerFrame(2, 'Traceback: runner broke\n'));
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.report).toBeNull();
    expect(o.failure).toBe('the sandbox stopped without a report (exit code 70): Traceback: runner broke');
    await h.runner.drain();
    expect(r.container.count('remove')).toBe(1);
  });

  it('says the exit code is unknown when the container did not stop in time', async () => {
    const h = harness(() => ({ waitResult: null }));
    const r = await start(h);
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toBe('the sandbox stopped without a report (exit code unknown)');
  });

  it('a connection error is failed with its message', async () => {
    const h = harness(() => ({ waitResult: 1 }));
    const r = await start(h);
    r.container.socket.destroy(new Error('socket hang up'));
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toBe('the connection to the sandbox failed: socket hang up (exit code 1)');
  });
});

describe('SandboxRunner: a container that stops before start() has returned', () => {
  // Regression test: when the attach stream ends before start() resolves (a runner that dies at
  // once), the sandbox is exiting (src/engine/sandbox.ts); no deadline may be armed afterwards. If
  // reading the final state takes longer than timeoutMs, the run must still be reported from that
  // state (failed/oom), not as a timeout of the user's code.
  it('is reported from the final state, not as a timeout', async () => {
    const waitGate = deferred<void>();
    const waitCalled = deferred<void>();
    let container: FakeContainer | undefined;
    const h = harness(() => ({
      waitResult: 70,
      onStart: () => container?.socket.finish(),
      onWait: () => waitCalled.resolve(),
      waitGate: waitGate.promise,
    }));
    const outcome = h.runner.run(job({ limits: { timeoutMs: 20, memoryMb: 256, cpus: 1 } }));
    container = await h.engine.created.promise;
    await waitCalled.promise; // the stream has ended: the runner is reading the final state
    await ms(60); // longer than timeoutMs
    waitGate.resolve();
    const o = await outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toBe('the sandbox stopped without a report (exit code 70)');
  });
});

describe('SandboxRunner: protocol violations', () => {
  it.each([
    ['a garbage frame kind', onStdout(runnerFrame(7, 'x')), 'sandbox protocol violation: unknown frame kind 7'],
    ['a frame over 1 MiB', onStdout(Buffer.from([FRAME_STDOUT, 0x00, 0x10, 0x00, 0x01])), 'sandbox protocol violation: frame of 1048577 bytes is over the limit of 1048576'],
    ['a report that is not JSON', onStdout(runnerFrame(3, '{oops')), 'sandbox protocol violation: the runner report is not JSON'],
  ])('%s ends the run as failed', async (_what, bytes, failure) => {
    const h = harness();
    const r = await start(h);
    r.container.socket.send(userStdout('ok'), bytes, reportFrame(runReport()));
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toBe(failure);
    expect(o.report).toBeNull();
    expect(o.stdout.text()).toBe('ok');
    expect(h.logger.at('warn').map((e) => e.msg)).toContain('sandbox protocol violation');
    await h.runner.drain();
    expect(r.container.count('remove')).toBe(1);
  });

  it('a report of the wrong shape ends the run as failed', async () => {
    const h = harness();
    const r = await start(h);
    r.container.socket.send(reportFrame({ ...runReport(), exitCode: 100_000 }));
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.failure).toMatch(/^sandbox protocol violation: the runner report is malformed/);
  });
});

describe('SandboxRunner: engine failures', () => {
  it('create throwing: run rejects and there is nothing to remove', async () => {
    const h = harness();
    const boom = new Error('create failed');
    h.engine.createError = boom;
    await expect(h.runner.run(job())).rejects.toBe(boom);
    await h.runner.drain();
    expect(h.engine.containers).toHaveLength(0);
    expect(h.engine.specs).toHaveLength(1);
  });

  it('attach throwing: run rejects and the container is still removed', async () => {
    const boom = new Error('attach failed');
    const h = harness(() => ({ attachError: boom }));
    await expect(h.runner.run(job())).rejects.toBe(boom);
    await h.runner.drain();
    expect(h.engine.last.calls).toEqual(['attach', 'remove', 'removed']);
  });

  it('start throwing: run rejects and the container is still removed', async () => {
    const boom = new Error('start failed');
    const h = harness(() => ({ startError: boom }));
    await expect(h.runner.run(job())).rejects.toBe(boom);
    await h.runner.drain();
    const c = h.engine.last;
    expect(c.calls).toEqual(['attach', 'start', 'remove', 'removed']);
    expect(c.socket.destroyed).toBe(true);
    expect(c.socket.writes).toHaveLength(0);
  });
});
