// What an MCP call with a progressToken sends while it runs (adapters/mcp-progress.ts): output
// gathered per window and per stream into few notifications, heartbeats between, progress that only
// goes up, and nothing after the call is closed.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CallProgress, type ProgressParams } from '../../src/adapters/mcp-progress.ts';

describe('CallProgress', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function progress() {
    const sent: ProgressParams[] = [];
    return { p: new CallProgress(async (params) => void sent.push(params), 100), sent };
  }

  it('gathers one stream\'s output of a window into one notification whose message is the text', async () => {
    const { p, sent } = progress();
    for (const ch of 'hello\n') p.output('stdout', ch);
    expect(sent).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toEqual([{ progress: 1, message: 'hello\n', _meta: { 'pybox/stream': 'stdout' } }]);
  });

  it('keeps the streams apart and in order: a switch of stream sends what came before', () => {
    const { p, sent } = progress();
    p.output('stdout', 'a');
    p.output('stderr', 'E');
    p.output('stdout', 'b');
    p.close();
    expect(sent.map((s) => [s._meta?.['pybox/stream'], s.message, s.progress])).toEqual([
      ['stdout', 'a', 1],
      ['stderr', 'E', 2],
      ['stdout', 'b', 3],
    ]);
  });

  it('progress only goes up, across heartbeats and output', () => {
    const { p, sent } = progress();
    p.heartbeat(3);
    p.output('stdout', 'x');
    p.heartbeat(6);
    for (let i = 0; i < 10; i++) {
      p.output('stdout', 'y');
      p.output('stderr', 'z');
    }
    p.heartbeat(9);
    p.close();
    const values = sent.map((s) => s.progress);
    for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThan(values[i - 1]!);
    expect(sent[0]).toEqual({ progress: 3, message: 'running for 3 s' });
    expect(sent.filter((s) => s.message.startsWith('running for'))).toHaveLength(3);
  });

  it('sends nothing after close', async () => {
    const { p, sent } = progress();
    p.output('stdout', 'last');
    p.close();
    p.output('stdout', 'late');
    p.heartbeat(30);
    await vi.advanceTimersByTimeAsync(1000);
    expect(sent.map((s) => s.message)).toEqual(['last']);
  });

  it('close resolves only once the last notifications are with the transport (the result must follow them)', async () => {
    const releases: Array<() => void> = [];
    const p = new CallProgress(() => new Promise<void>((resolve) => releases.push(resolve)), 100);
    p.output('stdout', 'last words');
    let closed = false;
    const closing = p.close().then(() => (closed = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(releases).toHaveLength(1);
    expect(closed).toBe(false);
    releases[0]!();
    await closing;
    expect(closed).toBe(true);
  });
});
