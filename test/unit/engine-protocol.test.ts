import { describe, expect, it } from 'vitest';
import { DockerDemuxer, FRAME_REPORT, FRAME_STDERR, FRAME_STDOUT, FrameParser, parseReport, ProtocolError } from '../../src/engine/protocol.ts';
import { dockerFrame, runnerFrame, runReport } from './fakes.ts';

type Stream = 'stdout' | 'stderr';

function demuxAll(chunks: Buffer[]): Record<Stream, string> {
  const out: Record<Stream, Buffer[]> = { stdout: [], stderr: [] };
  const d = new DockerDemuxer((s, data) => out[s].push(Buffer.from(data)));
  for (const c of chunks) d.push(c);
  return { stdout: Buffer.concat(out.stdout).toString(), stderr: Buffer.concat(out.stderr).toString() };
}

function parseAll(chunks: Buffer[], limits = { maxFrameBytes: 1024, maxReportBytes: 4096 }): Array<[number, string]> {
  const frames: Array<[number, string]> = [];
  const p = new FrameParser(limits, (kind, payload) => frames.push([kind, payload.toString()]));
  for (const c of chunks) p.push(c);
  return frames;
}

const byteByByte = (buf: Buffer): Buffer[] => [...buf].map((b) => Buffer.from([b]));
const splitAt = (buf: Buffer, i: number): Buffer[] => [buf.subarray(0, i), buf.subarray(i)];

describe('DockerDemuxer', () => {
  const stream = Buffer.concat([
    dockerFrame(1, 'out-one '),
    dockerFrame(2, 'err-one '),
    dockerFrame(1, ''),
    dockerFrame(1, 'out-two'),
    dockerFrame(2, 'err-two'),
  ]);
  const expected = { stdout: 'out-one out-two', stderr: 'err-one err-two' };

  it('routes whole frames to stdout and stderr', () => {
    expect(demuxAll([stream])).toEqual(expected);
  });

  it('routes correctly when fed byte by byte', () => {
    expect(demuxAll(byteByByte(stream))).toEqual(expected);
  });

  it('routes correctly when split at every possible boundary', () => {
    for (let i = 0; i <= stream.length; i++) expect(demuxAll(splitAt(stream, i)), `split at ${i}`).toEqual(expected);
  });

  it('ignores stream 0 (stdin) and unknown stream types but keeps its place', () => {
    const mixed = Buffer.concat([dockerFrame(0, 'stdin echo'), dockerFrame(1, 'A'), dockerFrame(7, 'junk'), dockerFrame(3, 'x'), dockerFrame(2, 'B')]);
    expect(demuxAll([mixed])).toEqual({ stdout: 'A', stderr: 'B' });
    expect(demuxAll(byteByByte(mixed))).toEqual({ stdout: 'A', stderr: 'B' });
  });

  it('delivers nothing for an incomplete frame', () => {
    const f = dockerFrame(1, 'hello');
    expect(demuxAll([f.subarray(0, f.length - 1)])).toEqual({ stdout: '', stderr: '' });
  });
});

describe('FrameParser', () => {
  const frames = Buffer.concat([
    runnerFrame(FRAME_STDOUT, 'hello '),
    runnerFrame(FRAME_STDERR, 'oops'),
    runnerFrame(FRAME_STDOUT, ''),
    runnerFrame(FRAME_STDOUT, 'world'),
    runnerFrame(FRAME_REPORT, '{"v":1}'),
  ]);
  const expected: Array<[number, string]> = [
    [1, 'hello '],
    [2, 'oops'],
    [1, ''],
    [1, 'world'],
    [3, '{"v":1}'],
  ];

  it('parses whole frames in order', () => {
    expect(parseAll([frames])).toEqual(expected);
  });

  it('parses frames fed byte by byte', () => {
    expect(parseAll(byteByByte(frames))).toEqual(expected);
  });

  it('parses frames split at every possible boundary', () => {
    for (let i = 0; i <= frames.length; i++) expect(parseAll(splitAt(frames, i)), `split at ${i}`).toEqual(expected);
  });

  it('parses frames split into three arbitrary pieces', () => {
    for (let i = 1; i < frames.length; i += 3) {
      for (let j = i; j < frames.length; j += 4) {
        expect(parseAll([frames.subarray(0, i), frames.subarray(i, j), frames.subarray(j)])).toEqual(expected);
      }
    }
  });

  it('throws on a header claiming 2 GiB before any payload arrives', () => {
    const header = Buffer.from([FRAME_STDOUT, 0x80, 0, 0, 0]);
    const p = new FrameParser({ maxFrameBytes: 1024, maxReportBytes: 4096 }, () => {
      throw new Error('no frame expected');
    });
    expect(() => p.push(header)).toThrow(ProtocolError);
    expect(() => new FrameParser({ maxFrameBytes: 1024, maxReportBytes: 4096 }, () => {}).push(header)).toThrow(
      'frame of 2147483648 bytes is over the limit of 1024',
    );
  });

  it('throws on an oversize header even when it arrives byte by byte', () => {
    const p = new FrameParser({ maxFrameBytes: 1024, maxReportBytes: 4096 }, () => {});
    const header = Buffer.from([FRAME_STDERR, 0, 0, 0x04, 0x01]); // 1025
    for (const b of byteByByte(header).slice(0, 4)) p.push(b);
    expect(() => p.push(header.subarray(4))).toThrow(ProtocolError);
  });

  it('accepts a frame of exactly maxFrameBytes', () => {
    const payload = 'x'.repeat(1024);
    expect(parseAll([runnerFrame(FRAME_STDOUT, payload)])).toEqual([[1, payload]]);
  });

  it.each([0, 6, 255])('throws on unknown kind %i', (kind) => {
    expect(() => parseAll([runnerFrame(kind, 'x')])).toThrow(ProtocolError);
    expect(() => parseAll([runnerFrame(kind, 'x')])).toThrow(`unknown frame kind ${kind}`);
  });

  it('throws on an unknown kind after good frames, having delivered the good ones', () => {
    const seen: number[] = [];
    const p = new FrameParser({ maxFrameBytes: 1024, maxReportBytes: 4096 }, (k) => seen.push(k));
    expect(() => p.push(Buffer.concat([runnerFrame(1, 'a'), runnerFrame(2, 'b'), runnerFrame(9, 'c')]))).toThrow(ProtocolError);
    expect(seen).toEqual([1, 2]);
  });

  it('applies the report limit to reports and the frame limit to output frames', () => {
    const limits = { maxFrameBytes: 100, maxReportBytes: 1000 };
    const big = 'r'.repeat(1000);
    expect(parseAll([runnerFrame(FRAME_REPORT, big)], limits)).toEqual([[3, big]]);
    expect(() => parseAll([runnerFrame(FRAME_REPORT, big + 'r')], limits)).toThrow(ProtocolError);
    expect(() => parseAll([runnerFrame(FRAME_STDOUT, 'o'.repeat(101))], limits)).toThrow(ProtocolError);
    expect(() => parseAll([runnerFrame(FRAME_STDERR, 'e'.repeat(101))], limits)).toThrow(ProtocolError);
    expect(parseAll([runnerFrame(FRAME_STDOUT, 'o'.repeat(100))], limits)).toEqual([[1, 'o'.repeat(100)]]);
  });

  it('a report limit smaller than the frame limit applies to reports', () => {
    const limits = { maxFrameBytes: 1000, maxReportBytes: 10 };
    expect(() => parseAll([runnerFrame(FRAME_REPORT, 'x'.repeat(11))], limits)).toThrow(ProtocolError);
    expect(parseAll([runnerFrame(FRAME_STDOUT, 'x'.repeat(11))], limits)).toEqual([[1, 'x'.repeat(11)]]);
  });
});

describe('parseReport', () => {
  const parse = (v: unknown) => parseReport(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)));

  it('parses a run report', () => {
    const r = runReport({
      exitCode: 1,
      error: { type: 'ZeroDivisionError', message: 'division by zero', line: 3, traceback: 'Traceback ...' },
      files: [{ path: 'a.txt', size: 2, base64: 'aGk=' }],
      filesDropped: 1,
    });
    expect(parse(r)).toEqual(r);
  });

  it('parses a run report killed by a signal', () => {
    expect(parse(runReport({ exitCode: 137, signal: 9 }))).toEqual(runReport({ exitCode: 137, signal: 9 }));
  });

  it('parses a validation report', () => {
    const r = {
      v: 1,
      phase: 'validation',
      error: { type: 'SyntaxError', message: 'invalid syntax', line: 2, column: 5, text: 'x = = 1', caret: '    ^' },
    };
    expect(parse(r)).toEqual(r);
  });

  it('parses a setup report', () => {
    expect(parse({ v: 1, phase: 'setup', message: 'bad payload: boom' })).toEqual({ v: 1, phase: 'setup', message: 'bad payload: boom' });
  });

  it('parses a report made of the runner\'s own compact JSON', () => {
    const wire = '{"v":1,"phase":"run","exitCode":0,"signal":null,"error":null,"files":[],"filesDropped":0,"flooded":false}';
    expect(parse(wire)).toEqual(runReport());
  });

  const bad: Array<[string, unknown]> = [
    ['non-JSON', 'not json {'],
    ['empty', ''],
    ['truncated JSON', '{"v":1,"phase":"run"'],
    ['invalid UTF-8 garbage', '\uFFFD\uFFFD'],
    ['JSON null', 'null'],
    ['an array', [1, 2]],
    ['wrong version', { ...runReport(), v: 2 }],
    ['missing version', { phase: 'setup', message: 'x' }],
    ['unknown phase', { v: 1, phase: 'done' }],
    ['a huge exitCode', runReport({ exitCode: 1e12 })],
    ['exitCode 512', runReport({ exitCode: 512 })],
    ['negative exitCode', runReport({ exitCode: -1 })],
    ['fractional exitCode', runReport({ exitCode: 1.5 })],
    ['signal 0', runReport({ signal: 0 })],
    ['signal 65', runReport({ signal: 65 })],
    ['negative filesDropped', runReport({ filesDropped: -1 })],
    ['flooded as a string', { ...runReport(), flooded: 'yes' }],
    ['setup message over 4096 chars', { v: 1, phase: 'setup', message: 'm'.repeat(4097) }],
    ['validation without error', { v: 1, phase: 'validation' }],
    ['file with an empty path', runReport({ files: [{ path: '', size: 0, base64: '' }] })],
  ];
  it.each(bad)('rejects %s with a ProtocolError', (_name, v) => {
    expect(() => parse(v)).toThrow(ProtocolError);
  });

  it('names what is malformed', () => {
    expect(() => parse('nope')).toThrow('the runner report is not JSON');
    expect(() => parse({ v: 2 })).toThrow(/^the runner report is malformed/);
  });
});
