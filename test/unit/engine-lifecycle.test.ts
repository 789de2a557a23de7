// The sandbox lifecycle (engine/sandbox.ts) with a fake engine: the caller's deadline and abort
// signal in every state a job can be in, and removal confirmed on every path.
import { describe, expect, it } from 'vitest';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { OnDemandSource, SandboxRunner } from '../../src/engine/run-sandbox.ts';
import { SandboxFactory, type SandboxSettings } from '../../src/engine/sandbox.ts';
import { testSandboxSettings, deferred, FakeEngine, ManualClock, onStdout, RecordingLogger, reportFrame, runnerFrame, runReport, userStdout, type FakeContainer, type FakeContainerOptions } from './fakes.ts';

const settings: SandboxSettings = testSandboxSettings({ startTimeoutMs: 2000 });

function job(over: Partial<SandboxJob> = {}): SandboxJob {
  return {
    id: 'job-1',
    image: 'img',
    runtime: 'runc',
    code: 'print(1)',
    stdin: '',
    args: [],
    env: {},
    context: {},
    files: [],
    limits: { timeoutMs: 10_000, memoryMb: 256, cpus: 1 },
    ...over,
  };
}

function harness(options: (clock: ManualClock) => FakeContainerOptions = () => ({}), s: SandboxSettings = settings) {
  const clock = new ManualClock();
  const engine = new FakeEngine(options(clock));
  const logger = new RecordingLogger();
  const factory = new SandboxFactory(engine, s, logger, clock);
  const runner = new SandboxRunner(factory, new OnDemandSource(factory), clock);
  return { clock, engine, logger, factory, runner };
}

const ms = (n: number) => new Promise<void>((r) => setTimeout(r, n));
const limits = (timeoutMs: number) => ({ timeoutMs, memoryMb: 256, cpus: 1 });

async function running(h: ReturnType<typeof harness>, j: SandboxJob): Promise<{ outcome: Promise<SandboxOutcome>; container: FakeContainer }> {
  const outcome = h.runner.run(j);
  const container = await h.engine.created.promise;
  await container.socket.firstWrite;
  return { outcome, container };
}

describe('cancellation through the job signal', () => {
  it('an abort before run() is called: cancelled at once, no sandbox started', async () => {
    const h = harness();
    const ac = new AbortController();
    ac.abort();
    const o = await h.runner.run(job({ signal: ac.signal }));
    expect(o.kind).toBe('cancelled');
    expect(o.durationMs).toBe(0);
    expect(o.failure).toMatch(/nothing ran/);
    expect(h.engine.specs).toHaveLength(0);
  });

  it('while waiting for the sandbox to start: cancelled, the payload never sent, the sandbox removed', async () => {
    const gate = deferred<void>();
    const h = harness(() => ({ startGate: gate.promise }));
    const ac = new AbortController();
    const pending = h.runner.run(job({ signal: ac.signal }));
    const container = await h.engine.created.promise;
    await ms(5);
    ac.abort();
    const o = await pending;
    expect(o.kind).toBe('cancelled');
    expect(o.durationMs).toBe(0);
    expect(o.failure).toMatch(/did not run/);
    gate.resolve();
    await h.runner.drain();
    expect(container.socket.writes).toHaveLength(0);
    expect(container.calls).toContain('removed');
    expect(h.factory.size).toBe(0);
  });

  it('while the code runs: cancelled with the output so far, the container killed and removed at once', async () => {
    const removeGate = deferred<void>();
    const h = harness(() => ({ removeGate: removeGate.promise }));
    const ac = new AbortController();
    const r = await running(h, job({ signal: ac.signal }));
    r.container.socket.send(userStdout('before the cancel\n'));
    await ms(5);
    h.clock.advance(250);
    ac.abort();
    const o = await r.outcome;
    expect(o.kind).toBe('cancelled');
    expect(o.stdout.text()).toBe('before the cancel\n');
    expect(o.durationMs).toBe(250);
    expect(r.container.socket.destroyed).toBe(true);
    expect(r.container.calls).toContain('remove'); // asked for at once, not queued
    // Confirmed, not fire-and-forget: drain waits until the removal has finished.
    let drained = false;
    const d = h.runner.drain().then(() => {
      drained = true;
    });
    await ms(5);
    expect(drained).toBe(false);
    removeGate.resolve();
    await d;
    expect(r.container.calls).toContain('removed');
  });

  it('an abort after the outcome changes nothing', async () => {
    const h = harness();
    const ac = new AbortController();
    const r = await running(h, job({ signal: ac.signal }));
    r.container.socket.send(reportFrame(runReport()));
    expect((await r.outcome).kind).toBe('finished');
    ac.abort();
    await h.runner.drain();
    expect(r.container.count('remove')).toBe(1);
  });
});

describe('the caller\'s timeoutMs bounds the whole wait', () => {
  it('runs out while the sandbox still starts: timeout, nothing ran, durationMs 0, in time', async () => {
    const gate = deferred<void>();
    const h = harness(() => ({ startGate: gate.promise }));
    const t0 = Date.now();
    const o = await h.runner.run(job({ limits: limits(60) }));
    const waited = Date.now() - t0;
    expect(o.kind).toBe('timeout');
    expect(o.durationMs).toBe(0);
    expect(o.failure).toMatch(/still starting; the code did not run/);
    expect(waited).toBeLessThan(1000); // the start timeout is 2 s: the caller's limit came first
    gate.resolve();
    await h.runner.drain();
    const c = h.engine.last;
    expect(c.socket.writes).toHaveLength(0);
    expect(c.calls).toContain('removed');
  });

  it('runs out while the code runs: the code gets what the start left, its output is kept', async () => {
    // The start takes 40 ms of the caller's 100.
    const h = harness((clock) => ({ onStart: () => clock.advance(40) }));
    const r = await running(h, job({ limits: limits(100) }));
    r.container.socket.send(userStdout('partial'));
    const o = await r.outcome;
    expect(o.kind).toBe('timeout');
    expect(o.stdout.text()).toBe('partial');
    expect(o.durationMs).toBe(60);
    await h.runner.drain();
    expect(r.container.calls).toContain('removed');
  });

  it('a start slower than startTimeoutMs fails the run when the caller allows longer', async () => {
    const h = harness(() => ({ neverReady: true }), { ...settings, startTimeoutMs: 30 });
    const o = await h.runner.run(job({ limits: limits(5000) }));
    expect(o.kind).toBe('failed');
    expect(o.failure).toBe('the sandbox did not become ready within 30 ms');
    await h.runner.drain();
    expect(h.engine.last.calls).toContain('removed');
  });

  it('a runner SIGKILLed with nothing to say why asks the engine once more: an OOM kill recorded late is oom, not our failure', async () => {
    const late = harness(() => ({ waitResult: 137, state: { oomKilled: false }, laterState: { oomKilled: true } }));
    const r = await running(late, job({ runtime: 'runsc' }));
    r.container.socket.finish();
    expect((await r.outcome).kind).toBe('oom');
    expect(r.container.count('state')).toBe(2);
    await late.runner.drain();
    const never = harness(() => ({ waitResult: 137, state: { oomKilled: false } }));
    const n = await running(never, job({ runtime: 'runsc' }));
    n.container.socket.finish();
    expect((await n.outcome).kind).toBe('failed');
    expect(n.container.count('state')).toBe(2);
    await never.runner.drain();
  });

  it("gVisor: a code's process that ended without saying so gets the engine asked once more; one that said its own exit code is not kept waiting", async () => {
    // Out of memory under gVisor: the sandbox lives on, the code's process dies before its exit mark.
    const late = harness(() => ({ waitResult: 1, state: { exitCode: 1, oomKilled: false }, laterState: { exitCode: 1, oomKilled: true } }));
    const r = await running(late, job({ runtime: 'runsc' }));
    r.container.socket.send(reportFrame(runReport({ exitCode: 1, endSaid: false })));
    r.container.socket.finish();
    expect((await r.outcome).kind).toBe('oom');
    expect(r.container.count('state')).toBe(2);
    await late.runner.drain();
    // sys.exit(1): the program said so, and that is its outcome, settled without asking the engine.
    const said = harness(() => ({ waitResult: 1, state: { exitCode: 1, oomKilled: true } }));
    const s = await running(said, job({ runtime: 'runsc' }));
    s.container.socket.send(reportFrame(runReport({ exitCode: 1, endSaid: true })));
    expect((await s.outcome).kind).toBe('finished');
    expect(s.container.count('state')).toBe(0);
    s.container.socket.finish();
    await said.runner.drain();
  });

  it('a sandbox that dies before it is ready is classified from its exit, not left waiting', async () => {
    const h = harness(() => ({ dieAtStart: true, waitResult: 2, state: { oomKilled: false } }));
    const o = await h.runner.run(job({ runtime: 'runsc', limits: limits(5000) }));
    expect(o.kind).toBe('failed');
    expect(o.failure).toMatch(/^gVisor stopped the sandbox/);
    expect(o.durationMs).toBe(0);
    await h.runner.drain();
    expect(h.engine.last.calls).toContain('removed');
  });
});

describe('removal on every path', () => {
  const paths: Array<[string, FakeContainerOptions, (c: FakeContainer) => void, string]> = [
    ['a report', {}, (c) => c.socket.send(reportFrame(runReport())), 'finished'],
    ['a flood', {}, (c) => c.socket.send(userStdout('x'.repeat(1001))), 'output_limit'],
    ['a protocol violation', {}, (c) => c.socket.send(onStdout(runnerFrame(9, 'x'))), 'failed'],
    ['a stream that ends', { waitResult: 1 }, (c) => c.socket.finish(), 'failed'],
    ['an OOM kill', { waitResult: 137, state: { oomKilled: true } }, (c) => c.socket.send(reportFrame(runReport({ exitCode: 137, signal: 9, memory: { oomKills: 1, failcnt: 0, peakBytes: 1, limitBytes: 1 } }))), 'oom'],
  ];
  it.each(paths)('after %s', async (_what, options, act, kind) => {
    const h = harness(() => options);
    const r = await running(h, job());
    act(r.container);
    expect((await r.outcome).kind).toBe(kind);
    await h.runner.drain();
    expect(r.container.count('remove')).toBe(1);
    expect(r.container.calls.at(-1)).toBe('removed');
    expect(h.factory.size).toBe(0);
  });

  it('after a failed start, the start error is the one the caller gets, a failed removal only logged', async () => {
    const boom = new Error('start failed');
    const h = harness(() => ({ startError: boom, removeError: new Error('engine busy') }));
    await expect(h.runner.run(job())).rejects.toBe(boom);
    await h.runner.drain();
    expect(h.engine.last.calls).toEqual(['attach', 'start', 'remove', 'removed']);
    expect(h.logger.at('warn').map((e) => e.msg)).toContain('container removal failed; the reaper will retry at start-up');
  });

  it('a container that stopped by itself waits while a job waits for a start, never longer than the bound', async () => {
    const h = harness(() => ({}), { ...settings, removals: { concurrency: 1, maxDeferMs: 200, maxQueued: 8 } });
    const r = await running(h, job());
    // A second job waiting for its sandbox to start (its runner never ready) while the first run finishes.
    h.engine.nextOptions = { neverReady: true };
    const ac = new AbortController();
    const second = h.runner.run(job({ id: 'job-2', signal: ac.signal }));
    await ms(5);
    expect(h.factory.waiting()).toBe(1);
    r.container.socket.send(reportFrame(runReport()));
    await r.outcome;
    await ms(20);
    expect(r.container.calls).not.toContain('remove'); // deferred: a job waits for a start
    await ms(300);
    expect(r.container.calls).toContain('removed'); // but not for longer than maxDeferMs
    ac.abort();
    expect((await second).kind).toBe('cancelled');
    await h.runner.drain();
    expect(h.engine.containers.every((c) => c.calls.includes('removed'))).toBe(true);
  });

  it('a container that stopped by itself is removed at once while the pool only refills', async () => {
    const h = harness(() => ({}), { ...settings, removals: { concurrency: 1, maxDeferMs: 5000, maxQueued: 8 } });
    const r = await running(h, job());
    h.engine.nextOptions = { neverReady: true };
    const refill = h.factory.prepare({ image: 'img', runtime: 'runc', memoryMb: 256, cpus: 1, preload: [] });
    await ms(5);
    expect(h.factory.starting()).toBe(1);
    r.container.socket.send(reportFrame(runReport()));
    await r.outcome;
    await ms(5);
    expect(r.container.calls).toContain('removed');
    await h.factory.remove(refill);
    await h.runner.drain();
  });

  it('a container whose code may still run is removed at once, even while another starts', async () => {
    const h = harness(() => ({}), { ...settings, removals: { concurrency: 1, maxDeferMs: 5000, maxQueued: 8 } });
    const r = await running(h, job({ limits: limits(50) }));
    h.engine.nextOptions = { neverReady: true };
    const ac = new AbortController();
    const second = h.runner.run(job({ id: 'job-2', signal: ac.signal }));
    expect((await r.outcome).kind).toBe('timeout');
    await ms(5);
    expect(r.container.calls).toContain('removed');
    ac.abort();
    await second;
    await h.runner.drain();
  });
});
