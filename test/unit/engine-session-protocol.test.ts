// The session half of the runner protocol (engine/protocol.ts, engine/archive.ts): frames 6 and 7,
// the host's frames and the session's payload.
import { describe, expect, it } from 'vitest';
import { buildSessionPayload, filesArchive } from '../../src/engine/archive.ts';
import {
  FRAME_CALL_END,
  FRAME_REPLY,
  FRAME_STDOUT,
  FrameParser,
  HOST_CALL,
  HOST_INTERRUPT,
  ProtocolError,
  encodeHostFrame,
  maxCallEndFrameBytes,
  parseCallEnd,
  parseReply,
} from '../../src/engine/protocol.ts';
import { readTar, runnerFrame } from './fakes.ts';

const callEnd = (over: Record<string, unknown> = {}) => ({
  v: 1,
  id: 'call-1',
  kind: 'finished',
  phase: 'run',
  exitCode: 0,
  signal: null,
  error: null,
  outputs: [],
  outputsDropped: 0,
  cpuMs: 1.5,
  wallMs: 2,
  stateLost: false,
  ...over,
});

const json = (v: unknown) => Buffer.from(JSON.stringify(v));

function collect(limits: ConstructorParameters<typeof FrameParser>[0], chunks: Buffer[]): Array<[number, string]> {
  const frames: Array<[number, string]> = [];
  const p = new FrameParser(limits, (kind, payload) => frames.push([kind, payload.toString()]));
  for (const c of chunks) p.push(c);
  return frames;
}

describe('FrameParser in session mode', () => {
  const session = { maxFrameBytes: 64, maxReportBytes: 64, maxCallEndBytes: 200, maxReplyBytes: () => 100 };

  it('refuses call ends and replies where no session bounds are given (an execution)', () => {
    for (const kind of [FRAME_CALL_END, FRAME_REPLY]) {
      expect(() => collect({ maxFrameBytes: 64, maxReportBytes: 64 }, [runnerFrame(kind, '{}')])).toThrow(ProtocolError);
    }
  });

  it('accepts call ends and replies within their own bounds, and refuses kinds past 7', () => {
    const frames = collect(session, [runnerFrame(FRAME_CALL_END, 'x'.repeat(200)), runnerFrame(FRAME_REPLY, 'y'.repeat(100))]);
    expect(frames.map(([k, p]) => [k, p.length])).toEqual([
      [FRAME_CALL_END, 200],
      [FRAME_REPLY, 100],
    ]);
    expect(() => collect(session, [runnerFrame(FRAME_CALL_END, 'x'.repeat(201))])).toThrow(/over the limit of 200/);
    expect(() => collect(session, [runnerFrame(FRAME_REPLY, 'y'.repeat(101))])).toThrow(/over the limit of 100/);
    expect(() => collect(session, [runnerFrame(8, '')])).toThrow(/unknown frame kind 8/);
  });

  it("reads a reply's bound when its header arrives, before its payload", () => {
    let bound = 10;
    const frames: number[] = [];
    const p = new FrameParser({ ...session, maxReplyBytes: () => bound }, (_k, payload) => frames.push(payload.length));
    const big = runnerFrame(FRAME_REPLY, 'z'.repeat(50));
    expect(() => p.push(big.subarray(0, 5))).toThrow(/over the limit of 10/);
    bound = 50;
    const q = new FrameParser({ ...session, maxReplyBytes: () => bound }, (_k, payload) => frames.push(payload.length));
    q.push(big.subarray(0, 5));
    bound = 1; // a later change does not cut a frame whose header passed
    q.push(big.subarray(5));
    expect(frames).toEqual([50]);
  });

  it('joins a frame split over many chunks, and headers split between chunks', () => {
    const stream = Buffer.concat([runnerFrame(FRAME_STDOUT, 'abc'), runnerFrame(FRAME_CALL_END, 'q'.repeat(150)), runnerFrame(FRAME_STDOUT, '')]);
    for (const size of [1, 2, 3, 4, 5, 6, 7, 64]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < stream.length; i += size) chunks.push(stream.subarray(i, i + size));
      expect(collect(session, chunks)).toEqual([
        [FRAME_STDOUT, 'abc'],
        [FRAME_CALL_END, 'q'.repeat(150)],
        [FRAME_STDOUT, ''],
      ]);
    }
  });
});

describe('host frames', () => {
  it('have the runner frame layout', () => {
    expect(encodeHostFrame(HOST_CALL, Buffer.from('hi'))).toEqual(Buffer.from([1, 0, 0, 0, 2, 0x68, 0x69]));
    expect(encodeHostFrame(HOST_INTERRUPT)).toEqual(Buffer.from([2, 0, 0, 0, 0]));
  });
});

describe('parseCallEnd', () => {
  it('accepts a run, and a validation failure with its error', () => {
    expect(parseCallEnd(json(callEnd()))).toMatchObject({ id: 'call-1', kind: 'finished', exitCode: 0 });
    const error = { type: 'SyntaxError', message: 'invalid syntax', line: 1, column: 5, text: 'def (', caret: '    ^' };
    expect(parseCallEnd(json(callEnd({ phase: 'validation', exitCode: 1, error })))).toMatchObject({ phase: 'validation', error });
    const outputs = [{ type: 'text/plain', data: '42', kind: 'result' }];
    expect(parseCallEnd(json(callEnd({ outputs, outputsDropped: 2, kind: 'timeout', stateLost: true }))).outputs).toEqual(outputs);
  });

  it('refuses anything else: not JSON, unknown fields, out of range, a validation without error', () => {
    const bad: unknown[] = [
      callEnd({ extra: 1 }),
      callEnd({ kind: 'failed' }),
      callEnd({ exitCode: 512 }),
      callEnd({ exitCode: -1 }),
      callEnd({ signal: 0 }),
      callEnd({ wallMs: -1 }),
      callEnd({ outputsDropped: 1.5 }),
      callEnd({ phase: 'validation', error: null }),
      callEnd({ outputs: [{ type: 'text/plain', data: 'x', kind: 'other' }] }),
      callEnd({ outputs: [{ type: 'text/plain', data: 'x', kind: 'result', extra: true }] }),
      callEnd({ stateLost: 'yes' }),
      callEnd({ v: 2 }),
      [],
    ];
    for (const b of bad) expect(() => parseCallEnd(json(b)), JSON.stringify(b)).toThrow(ProtocolError);
    expect(() => parseCallEnd(Buffer.from('{'))).toThrow(/not JSON/);
  });
});

describe('parseReply', () => {
  it('accepts ok answers and the three error codes', () => {
    expect(parseReply(json({ ok: true }))).toEqual({ ok: true });
    expect(parseReply(json({ ok: true, data: 'aGk=' }))).toEqual({ ok: true, data: 'aGk=' });
    expect(parseReply(json({ ok: true, files: [{ path: 'a/b', size: 3 }], truncated: false }))).toMatchObject({ files: [{ path: 'a/b', size: 3 }] });
    for (const code of ['not_found', 'too_large', 'invalid']) expect(parseReply(json({ ok: false, code, message: 'm' }))).toMatchObject({ ok: false, code });
  });

  it('refuses anything else', () => {
    for (const b of [
      { ok: false, code: 'other', message: 'm' },
      { ok: false, code: 'invalid' },
      { ok: true, files: [{ path: '', size: 1 }] },
      { ok: true, files: [{ path: 'a', size: -1 }] },
      { ok: true, extra: 1 },
      { ok: 'yes' },
    ]) {
      expect(() => parseReply(json(b)), JSON.stringify(b)).toThrow(ProtocolError);
    }
  });
});

describe('maxCallEndFrameBytes', () => {
  it('holds every output at its cap escaped as JSON would escape it, and an error', () => {
    const bound = maxCallEndFrameBytes(2, 1000);
    const text = '\u0001'.repeat(1000); // each byte escaped as \u0001: six bytes
    const end = json(callEnd({ outputs: [{ type: 'text/plain', data: text, kind: 'result' }, { type: 'text/html', data: text, kind: 'result' }] }));
    expect(end.length).toBeGreaterThan(12_000);
    expect(end.length).toBeLessThan(bound);
  });
});

describe('the session payload', () => {
  it('holds only the request, and ends right after it with the end-of-archive blocks', async () => {
    const request = { session: true as const, env: { A: 'é' }, caps: { floodBytes: 1, outputBytes: 2, maxOutputs: 3, maxOutputBytes: 4, interruptGraceMs: 5 } };
    const payload = await buildSessionPayload(request);
    const body = Buffer.from(JSON.stringify(request));
    // The runner reads the request's blocks, then exactly 1024 zero bytes, then frames.
    expect(payload.length).toBe(512 + Math.ceil(body.length / 512) * 512 + 1024);
    expect(payload.subarray(payload.length - 1024).every((b) => b === 0)).toBe(true);
    const entries = await readTar(payload);
    expect(entries.map((e) => e.header.name)).toEqual(['.pybox/request.json']);
    expect(JSON.parse(entries[0]?.data.toString() ?? '')).toEqual(request);
  });

  it('puts files in an archive of their own, byte-exact', async () => {
    const files = [
      { path: 'a.txt', data: Buffer.from('one') },
      { path: 'deep/b.bin', data: Buffer.from([0, 255, 1]) },
    ];
    const entries = await readTar(await filesArchive(files));
    expect(entries.map((e) => [e.header.name, [...e.data]])).toEqual(files.map((f) => [f.path, [...f.data]]));
  });
});
