// A streamed execution's output between a worker and an API node (cluster/output-progress.ts): the
// worker's batches (few sends for many writes, in order, within the cap, all sent by flush) and the
// API node's receiver (the cap again, anything else than output progress ignored).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { OutputBatcher, OutputProgress, OutputReceiver } from '../../src/cluster/output-progress.ts';

const decode = (batches: OutputProgress[]) => batches.flatMap((b) => b.pyboxOutput.map(([s, d]) => [s === 0 ? 'stdout' : 'stderr', Buffer.from(d, 'base64').toString()] as const));

describe('OutputBatcher (the worker)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function batcher(capBytes = 1000, batchBytes = 100) {
    const sent: OutputProgress[] = [];
    const errors: unknown[] = [];
    const b = new OutputBatcher({ send: async (p) => void sent.push(p), capBytes, onError: (e) => errors.push(e), windowMs: 100, batchBytes });
    return { b, sent, errors };
  }

  it('gathers the writes of one window into one send, consecutive writes to a stream as one chunk, in order', async () => {
    const { b, sent } = batcher();
    b.listener('stdout', Buffer.from('a'));
    b.listener('stdout', Buffer.from('b'));
    b.listener('stderr', Buffer.from('E'));
    b.listener('stdout', Buffer.from('c'));
    expect(sent).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toHaveLength(1);
    expect(decode(sent)).toEqual([
      ['stdout', 'ab'],
      ['stderr', 'E'],
      ['stdout', 'c'],
    ]);
    b.listener('stdout', Buffer.from('d'));
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toHaveLength(2);
    await b.flush();
  });

  it('sends a full batch at once, without waiting for the window', async () => {
    const { b, sent } = batcher(10_000, 100);
    b.listener('stdout', Buffer.alloc(150, 'x'));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(1);
    await b.flush();
  });

  it('sends at most capBytes of each stream, however much comes', async () => {
    const { b, sent } = batcher(10);
    for (let i = 0; i < 5; i++) {
      b.listener('stdout', Buffer.from('12345'));
      b.listener('stderr', Buffer.from('abcdefgh'));
    }
    await b.flush();
    const out = decode(sent);
    expect(out.filter(([s]) => s === 'stdout').map(([, t]) => t).join('')).toBe('1234512345');
    expect(out.filter(([s]) => s === 'stderr').map(([, t]) => t).join('')).toBe('abcdefghab');
  });

  it('flush sends what is left and resolves once it is sent; later output is not sent', async () => {
    const { b, sent } = batcher();
    b.listener('stdout', Buffer.from('last'));
    await b.flush();
    expect(decode(sent)).toEqual([['stdout', 'last']]);
    b.listener('stdout', Buffer.from('late'));
    await vi.advanceTimersByTimeAsync(200);
    expect(sent).toHaveLength(1);
  });

  it('a failed send is reported, and later batches still go', async () => {
    const sent: OutputProgress[] = [];
    const errors: unknown[] = [];
    let first = true;
    const b = new OutputBatcher({
      send: async (p) => {
        if (first) {
          first = false;
          throw new Error('Redis away');
        }
        sent.push(p);
      },
      capBytes: 1000,
      onError: (e) => errors.push(e),
      windowMs: 100,
    });
    b.listener('stdout', Buffer.from('lost'));
    await vi.advanceTimersByTimeAsync(100);
    b.listener('stdout', Buffer.from('kept'));
    await b.flush();
    expect(errors).toHaveLength(1);
    expect(decode(sent)).toEqual([['stdout', 'kept']]);
  });
});

describe('OutputReceiver (the API node)', () => {
  const progress = (...chunks: Array<[0 | 1, string]>) => ({ pyboxOutput: chunks.map(([s, t]) => [s, Buffer.from(t).toString('base64')]) });

  it('hands each chunk on as bytes, stream by stream, within the cap', () => {
    const heard: Array<[string, string]> = [];
    const r = new OutputReceiver((stream, data) => heard.push([stream, data.toString()]), 6);
    expect(r.take(progress([0, 'abcd'], [1, 'xy']))).toBe(true);
    expect(r.take(progress([0, 'efgh'], [1, 'zzzzzz']))).toBe(true);
    expect(r.take(progress([0, 'more']))).toBe(true);
    expect(heard).toEqual([
      ['stdout', 'abcd'],
      ['stderr', 'xy'],
      ['stdout', 'ef'],
      ['stderr', 'zzzz'],
    ]);
  });

  it('ignores what is not output progress: numbers, other objects, bad base64, unknown streams', () => {
    const heard: unknown[] = [];
    const r = new OutputReceiver((...a) => heard.push(a), 100);
    for (const bad of [42, 'text', null, { progress: 1 }, { pyboxOutput: [[0, 'not base64!']] }, { pyboxOutput: [[2, 'YQ==']] }, { pyboxOutput: [[0, 'YQ==']], extra: 1 }]) {
      expect(r.take(bad)).toBe(false);
    }
    expect(heard).toEqual([]);
  });
});
