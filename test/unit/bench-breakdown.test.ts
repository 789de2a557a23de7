// Where a run's time goes: phases from one container's timestamps, and their summary over many;
// the timing wrapper stamps each engine call and the runner's frames on the attached socket.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { phasesOf, summarizePhases, TimedEngine, type Timeline } from '../../bench/breakdown.ts';
import type { ContainerEngine, SandboxContainer } from '../../src/engine/docker-engine.ts';
import { FRAME_READY, FRAME_REPORT } from '../../src/engine/protocol.ts';

const full: Timeline = {
  createStart: 0,
  createEnd: 10,
  attachStart: 10,
  attachEnd: 11,
  startStart: 11,
  startEnd: 200,
  ready: 350,
  payloadSent: 400,
  report: 430,
  removeStart: 431,
  removeEnd: 531,
};

/** Docker's multiplexed stdout frame around one runner frame. */
function dockerFrame(kind: number, payload: Buffer): Buffer {
  const runner = Buffer.concat([Buffer.from([kind, 0, 0, 0, 0]), payload]);
  runner.writeUInt32BE(payload.length, 1);
  const head = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);
  head.writeUInt32BE(runner.length, 4);
  return Buffer.concat([head, runner]);
}

describe('bench breakdown', () => {
  it('turns timestamps into phase durations', () => {
    expect(phasesOf(full)).toEqual({ create: 10, attach: 1, start: 189, boot: 150, idle: 50, run: 30, removal: 100 });
  });

  it('leaves out the phases a container did not reach', () => {
    expect(phasesOf({ createStart: 5, createEnd: 9, removeStart: 20, removeEnd: 25 })).toEqual({ create: 4, removal: 5 });
  });

  it('summarises each phase over many containers, skipping phases none reached', () => {
    const later = { ...full, startEnd: 300, ready: 400, payloadSent: 400, report: 450 };
    const s = summarizePhases([full, later, { createStart: 0, createEnd: 30 }]);
    expect(s.map((p) => p.phase)).toEqual(['create', 'attach', 'start', 'boot', 'idle', 'run', 'removal']);
    expect(s[0]).toEqual({ phase: 'create', samples: 3, p50: 10, p95: 30, mean: 16.7 });
    expect(s.find((p) => p.phase === 'idle')).toEqual({ phase: 'idle', samples: 2, p50: 0, p95: 50, mean: 25 });
    expect(summarizePhases([])).toEqual([]);
  });

  it('stamps engine calls, the ready and report frames and the first write, passing everything through', async () => {
    let clock = 0;
    const socket = new PassThrough();
    const written: Buffer[] = [];
    socket.write = ((chunk: Buffer) => {
      written.push(chunk);
      return true;
    }) as typeof socket.write;
    const container: SandboxContainer = {
      id: 'c1',
      attach: async () => socket,
      start: async () => {
        clock = 100;
      },
      wait: async () => 0,
      state: async () => ({ running: false, exitCode: 0, oomKilled: false }),
      remove: async () => {
        clock = 500;
      },
    };
    const inner: Pick<ContainerEngine, 'create'> = { create: async () => container };
    const engine = new TimedEngine(inner as ContainerEngine, () => clock);
    const seen: Buffer[] = [];

    const c = await engine.create({});
    const s = await c.attach();
    s.on('data', (d: Buffer) => seen.push(d)); // the service's own reader still gets every byte
    await c.start();
    clock = 150;
    socket.emit('data', dockerFrame(FRAME_READY, Buffer.alloc(0)));
    clock = 160;
    s.write(Buffer.from('payload'));
    clock = 170;
    s.write(Buffer.from('more'));
    clock = 190;
    socket.emit('data', dockerFrame(FRAME_REPORT, Buffer.from('{}')));
    clock = 200;
    await c.remove();

    expect(engine.timelines).toEqual([
      { createStart: 0, createEnd: 0, attachStart: 0, attachEnd: 0, startStart: 0, startEnd: 100, ready: 150, payloadSent: 160, report: 190, removeStart: 200, removeEnd: 500 },
    ]);
    expect(Buffer.concat(written).toString()).toBe('payloadmore');
    expect(seen).toHaveLength(2);
  });

  it('stops timing a socket that sends garbage, without throwing into the stream', async () => {
    const socket = new PassThrough();
    const container = { id: 'c', attach: async () => socket } as unknown as SandboxContainer;
    const engine = new TimedEngine({ create: async () => container } as unknown as ContainerEngine, () => 1);
    await (await engine.create({})).attach();
    const bad = Buffer.from([1, 0, 0, 0, 0, 0, 0, 5, 9, 0, 0, 0, 0]); // runner frame kind 9
    expect(() => socket.emit('data', bad)).not.toThrow();
    expect(socket.listenerCount('data')).toBe(0);
    expect(engine.timelines[0]?.ready).toBeUndefined();
  });
});
