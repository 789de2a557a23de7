// The one reaper (engine/reaper.ts): what it removes at start-up and after the engine came back.
import { describe, expect, it } from 'vitest';
import { Reaper, type LabelledContainer, type ReapableEngine } from '../../src/engine/reaper.ts';
import { deferred, RecordingLogger } from './fakes.ts';

class Listing implements ReapableEngine {
  readonly asked: string[] = [];
  readonly removed: string[] = [];
  failRemoval = new Set<string>();
  gate: Promise<void> | undefined;
  constructor(private readonly byInstance: Record<string, LabelledContainer[]>) {}
  async listLabelled(instance: string): Promise<LabelledContainer[]> {
    this.asked.push(instance);
    if (this.gate) await this.gate;
    return this.byInstance[instance] ?? [];
  }
  async removeById(id: string): Promise<void> {
    if (this.failRemoval.has(id)) throw new Error('engine busy');
    this.removed.push(id);
  }
}

const containers = {
  mine: [
    { id: 'a', name: 'pybox-job-a' },
    { id: 'b', name: 'pybox-warm-b' },
    { id: 'c', name: 'pybox-job-c' },
  ],
  theirs: [{ id: 'z', name: 'pybox-job-z' }],
};

describe('Reaper', () => {
  it('at start-up removes every container of its own instance, none of another', async () => {
    const engine = new Listing(containers);
    const logger = new RecordingLogger();
    const removed = await new Reaper(engine, 'mine', logger, () => false).reap('start-up');
    expect(removed).toBe(3);
    expect(engine.asked).toEqual(['mine']);
    expect(engine.removed.sort()).toEqual(['a', 'b', 'c']);
    expect(logger.at('info')[0]?.fields).toEqual({ occasion: 'start-up', removed: 3, failed: 0 });
  });

  it('after the engine came back leaves the containers this process still holds', async () => {
    const engine = new Listing(containers);
    const held = new Set(['pybox-warm-b']);
    const removed = await new Reaper(engine, 'mine', new RecordingLogger(), (n) => held.has(n)).reap('engine back');
    expect(removed).toBe(2);
    expect(engine.removed.sort()).toEqual(['a', 'c']);
  });

  it('counts a removal that failed, and logs nothing when there is nothing to do', async () => {
    const engine = new Listing(containers);
    engine.failRemoval.add('c');
    const logger = new RecordingLogger();
    expect(await new Reaper(engine, 'mine', logger, () => false).reap('start-up')).toBe(2);
    expect(logger.at('info')[0]?.fields).toEqual({ occasion: 'start-up', removed: 2, failed: 1 });
    const quiet = new RecordingLogger();
    expect(await new Reaper(new Listing({}), 'mine', quiet, () => false).reap('start-up')).toBe(0);
    expect(quiet.entries).toEqual([]);
  });

  it('runs one pass at a time: a second caller shares the pass under way', async () => {
    const engine = new Listing(containers);
    const gate = deferred<void>();
    engine.gate = gate.promise;
    const reaper = new Reaper(engine, 'mine', new RecordingLogger(), () => false);
    const first = reaper.reap('start-up');
    const second = reaper.reap('engine back');
    gate.resolve();
    expect(await first).toBe(3);
    expect(await second).toBe(3);
    expect(engine.asked).toEqual(['mine']);
    expect(engine.removed).toHaveLength(3);
  });
});
