// A sandbox tells its job's output listener of the code's output as it is relayed (streaming): the
// bytes each stream keeps (up to outputBytes), in order, never after the outcome, and a listener
// that throws never ends the run. With a fake engine: the frames arrive exactly as sent here.
import { describe, expect, it } from 'vitest';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { OnDemandSource, SandboxRunner } from '../../src/engine/run-sandbox.ts';
import { SandboxFactory } from '../../src/engine/sandbox.ts';
import { FakeEngine, ManualClock, onStdout, RecordingLogger, reportFrame, runnerFrame, runReport, testSandboxSettings, userStderr, userStdout, type FakeContainer } from './fakes.ts';

// outputBytes 100, floodBytes 1000 (fakes.ts).
const settings = testSandboxSettings({ startTimeoutMs: 2000 });

type Told = Array<[string, string]>;

function job(told: Told, over: Partial<SandboxJob> = {}): SandboxJob {
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
    onOutput: (stream, data) => told.push([stream, data.toString('latin1')]),
    ...over,
  };
}

function harness() {
  const clock = new ManualClock();
  const engine = new FakeEngine();
  const logger = new RecordingLogger();
  const factory = new SandboxFactory(engine, settings, logger, clock);
  const runner = new SandboxRunner(factory, new OnDemandSource(factory), clock);
  return { engine, logger, runner };
}

async function running(h: ReturnType<typeof harness>, j: SandboxJob): Promise<{ outcome: Promise<SandboxOutcome>; container: FakeContainer }> {
  const outcome = h.runner.run(j);
  const container = await h.engine.created.promise;
  await container.socket.firstWrite;
  return { outcome, container };
}

const tick = () => new Promise<void>((r) => setTimeout(r, 5));

describe('a job\'s output listener', () => {
  it('is told each stream\'s bytes as they come, in order, before the outcome', async () => {
    const h = harness();
    const told: Told = [];
    const r = await running(h, job(told));
    r.container.socket.send(userStdout('one\n'));
    await tick();
    expect(told).toEqual([['stdout', 'one\n']]);
    r.container.socket.send(userStderr('oops\n'), userStdout('two\n'));
    await tick();
    expect(told).toEqual([
      ['stdout', 'one\n'],
      ['stderr', 'oops\n'],
      ['stdout', 'two\n'],
    ]);
    r.container.socket.send(reportFrame(runReport()));
    const o = await r.outcome;
    expect(o.kind).toBe('finished');
    expect(o.stdout.text()).toBe('one\ntwo\n');
    await h.runner.drain();
  });

  it('hears at most outputBytes per stream: what the result keeps, nothing past the cap', async () => {
    const h = harness();
    const told: Told = [];
    const r = await running(h, job(told));
    r.container.socket.send(userStdout('a'.repeat(60)), userStdout('b'.repeat(60)), userStdout('c'.repeat(60)), userStderr('e'.repeat(150)));
    r.container.socket.send(reportFrame(runReport()));
    const o = await r.outcome;
    const heard = (stream: string) => told.filter(([s]) => s === stream).map(([, d]) => d).join('');
    expect(heard('stdout')).toBe(`${'a'.repeat(60)}${'b'.repeat(40)}`);
    expect(heard('stderr')).toBe('e'.repeat(100));
    expect(told.filter(([s]) => s === 'stdout')).toHaveLength(2); // the third chunk was past the cap: not told at all
    expect(o.stdout.truncated).toBe(true);
    expect(o.stdout.text()).toBe(heard('stdout'));
    await h.runner.drain();
  });

  it('hears nothing after the outcome, even of frames that came in the same read', async () => {
    const h = harness();
    const told: Told = [];
    const r = await running(h, job(told));
    r.container.socket.send(onStdout(runnerFrame(1, 'before\n'), runnerFrame(3, JSON.stringify(runReport())), runnerFrame(1, 'after\n')));
    const o = await r.outcome;
    await tick();
    expect(o.kind).toBe('finished');
    expect(told).toEqual([['stdout', 'before\n']]);
    await h.runner.drain();
  });

  it('a listener that throws is logged once and dropped; the run goes on and its output is kept', async () => {
    const h = harness();
    let calls = 0;
    const r = await running(
      h,
      job([], {
        onOutput: () => {
          calls++;
          throw new Error('the client is gone');
        },
      }),
    );
    r.container.socket.send(userStdout('one\n'), userStdout('two\n'));
    r.container.socket.send(reportFrame(runReport()));
    const o = await r.outcome;
    expect(o.kind).toBe('finished');
    expect(o.stdout.text()).toBe('one\ntwo\n');
    expect(calls).toBe(1);
    expect(h.logger.entries.filter((e) => e.msg.includes('output listener'))).toHaveLength(1);
    await h.runner.drain();
  });

  it('a listener that cancels the run from inside itself stops it: the outcome is cancelled, nothing more is told', async () => {
    const h = harness();
    const told: Told = [];
    const ac = new AbortController();
    const r = await running(
      h,
      job(told, {
        signal: ac.signal,
        onOutput: (stream, data) => {
          told.push([stream, data.toString('latin1')]);
          ac.abort();
        },
      }),
    );
    r.container.socket.send(onStdout(runnerFrame(1, 'first\n'), runnerFrame(1, 'second\n')));
    const o = await r.outcome;
    expect(o.kind).toBe('cancelled');
    expect(told).toEqual([['stdout', 'first\n']]);
    await h.runner.drain();
  });
});
