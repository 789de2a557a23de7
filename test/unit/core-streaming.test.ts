// The service carries its caller's output listener (ExecuteOptions.onOutput) through the dispatch to
// the sandbox job, and a run without one gets none.
import { describe, expect, it } from 'vitest';
import { LOCAL_CALLER } from '../../src/core/caller.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import type { EngineProbe, Sandboxes } from '../../src/core/ports.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { defaultConfig, localService, ManualClock, MemoryStore, outcome, RecordingLogger, runReport } from './fakes.ts';

/** Plays the sandbox: tells the job's listener of its output, then answers. */
class TalkingSandboxes implements Sandboxes {
  readonly jobs: SandboxJob[] = [];
  async run(job: SandboxJob): Promise<SandboxOutcome> {
    this.jobs.push(job);
    job.onOutput?.('stdout', Buffer.from('hello '));
    job.onOutput?.('stderr', Buffer.from('warn\n'));
    job.onOutput?.('stdout', Buffer.from('world\n'));
    return outcome('finished', { report: runReport(), stdout: 'hello world\n', stderr: 'warn\n' });
  }
}

const probe: EngineProbe = { ping: async () => true, imageExists: async () => true };

function service(sandboxes: Sandboxes) {
  let n = 0;
  return localService({
    sandboxes,
    engine: probe,
    store: new MemoryStore(),
    gate: new ConcurrencyGate(2, 10, 3),
    limits: defaultConfig().limits,
    image: 'pybox-python:test',
    runtime: 'runc',
    availableRuntimes: ['runc'],
    clock: new ManualClock(),
    logger: new RecordingLogger(),
    newId: () => `id-${++n}`,
  });
}

describe('ExecuteOptions.onOutput', () => {
  it('reaches the sandbox job: the caller hears each chunk, in order', async () => {
    const sandboxes = new TalkingSandboxes();
    const heard: string[] = [];
    const result = await service(sandboxes).execute(LOCAL_CALLER, { code: 'print(1)' }, { onOutput: (stream, data) => heard.push(`${stream}:${data.toString()}`) });
    expect(heard).toEqual(['stdout:hello ', 'stderr:warn\n', 'stdout:world\n']);
    expect(result.stdout).toBe('hello world\n');
  });

  it('a run without a listener hands none to the sandbox', async () => {
    const sandboxes = new TalkingSandboxes();
    await service(sandboxes).execute(LOCAL_CALLER, { code: 'print(1)' });
    expect(sandboxes.jobs[0]?.onOutput).toBeUndefined();
  });
});
