// Test cases on the host's side: the payload carries each case's input, every case frame is checked
// as hostile (order, range, repeats, caps, consistency), and the outcome always has one entry per
// case. With fakes: no Docker.
import { describe, expect, it } from 'vitest';
import type { SandboxCase, SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { buildPayload } from '../../src/engine/archive.ts';
import { CaseCollector, TESTS_MARGIN_MS, TESTS_MARGIN_PER_CASE_MS, TESTS_WALL_CAP_MS, wallLimitMs } from '../../src/engine/cases.ts';
import { CaseReport, FRAME_CASE, FrameParser, maxCaseFrameBytes, parseCaseReport, ProtocolError } from '../../src/engine/protocol.ts';
import { OnDemandSource, SandboxRunner } from '../../src/engine/run-sandbox.ts';
import { SandboxFactory } from '../../src/engine/sandbox.ts';
import { FakeEngine, ManualClock, onStdout, readTar, RecordingLogger, reportFrame, runnerFrame, runReport, testSandboxSettings, userStderr, type FakeContainerOptions } from './fakes.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');

function caseReport(index: number, over: Partial<CaseReport> = {}): CaseReport {
  return {
    v: 1,
    index,
    kind: 'finished',
    exitCode: 0,
    signal: null,
    error: null,
    durationMs: 3.5,
    cpuMs: 2,
    stdout: { b64: b64(`out ${index}\n`), totalBytes: `out ${index}\n`.length, truncated: false },
    stderr: { b64: '', totalBytes: 0, truncated: false },
    ...over,
  };
}

const caseFrame = (r: unknown) => onStdout(runnerFrame(FRAME_CASE, typeof r === 'string' ? r : JSON.stringify(r)));

const kase = (over: Partial<SandboxCase> = {}): SandboxCase => ({ stdin: '', args: [], files: [], timeoutMs: 1000, ...over });

describe('CaseCollector', () => {
  it('takes reports in order and gives one outcome per case, the rest not_run', () => {
    const c = new CaseCollector(3, 100);
    c.take(caseReport(0));
    c.take(caseReport(1, { kind: 'timeout', exitCode: null, cpuMs: null }));
    expect(c.complete).toBe(false);
    const out = c.outcomes();
    expect(out.map((o) => o.kind)).toEqual(['finished', 'timeout', 'not_run']);
    expect(out[0]?.stdout.text()).toBe('out 0\n');
    expect(out[2]).toMatchObject({ exitCode: null, signal: null, error: null, durationMs: 0, cpuMs: null });
    expect(out[2]?.stdout.text()).toBe('');
    expect(c.outcomes('oom').map((o) => o.kind)).toEqual(['finished', 'timeout', 'oom']);
    c.take(caseReport(2));
    expect(c.complete).toBe(true);
    expect(c.outcomes('oom').map((o) => o.kind)).toEqual(['finished', 'timeout', 'finished']);
  });

  it.each<[string, (c: CaseCollector) => void, RegExp]>([
    ['an index out of range', (c) => c.take(caseReport(2)), /case 2, of 2/],
    ['the same index twice', (c) => (c.take(caseReport(0)), c.take(caseReport(0))), /second report for test case 0/],
    ['an index ahead of its turn', (c) => c.take(caseReport(1)), /before case 0/],
    ['a finished case without an exit code', (c) => c.take(caseReport(0, { exitCode: null })), /without an exit code/],
    ['a stopped case with an exit code', (c) => c.take(caseReport(0, { kind: 'output_limit', exitCode: 0 })), /stopped but has an exit code/],
    ['a signal that does not match the exit code', (c) => c.take(caseReport(0, { exitCode: 1, signal: 9 })), /exit code 1 for signal 9/],
    ['more output kept than the cap', (c) => c.take(caseReport(0, { stdout: { b64: b64('x'.repeat(101)), totalBytes: 101, truncated: false } })), /over the cap of 100/],
    ['fewer bytes counted than kept', (c) => c.take(caseReport(0, { stderr: { b64: b64('abc'), totalBytes: 2, truncated: false } })), /fewer bytes/],
  ])('refuses %s', (_what, act, message) => {
    const c = new CaseCollector(2, 100);
    expect(() => act(c)).toThrow(ProtocolError);
    expect(() => act(new CaseCollector(2, 100))).toThrow(message);
  });

  it('decides truncation from the counts, not from what the report claims', () => {
    const c = new CaseCollector(1, 100);
    c.take(caseReport(0, { stdout: { b64: b64('abc'), totalBytes: 500, truncated: false } }));
    const [o] = c.outcomes();
    expect([o?.stdout.truncated, o?.stdout.totalBytes, o?.stdout.text()]).toEqual([true, 500, 'abc']);
  });
});

describe('parseCaseReport', () => {
  it('accepts what the runner writes', () => {
    expect(parseCaseReport(Buffer.from(JSON.stringify(caseReport(4))))).toEqual(caseReport(4));
  });

  it.each<[string, unknown]>([
    ['not JSON', '{oops'],
    ['an unknown key', { ...caseReport(0), extra: 1 }],
    ['another version', { ...caseReport(0), v: 2 }],
    ['a kind the runner never sends', { ...caseReport(0), kind: 'not_run' }],
    ['a negative index', { ...caseReport(0), index: -1 }],
    ['output that is not base64', { ...caseReport(0), stdout: { b64: 'a!b=', totalBytes: 3, truncated: false } }],
    ['a negative duration', { ...caseReport(0), durationMs: -1 }],
    ['a signal out of range', { ...caseReport(0), exitCode: 128 + 99, signal: 99 }],
  ])('refuses %s', (_what, value) => {
    const raw = typeof value === 'string' ? value : JSON.stringify(value);
    expect(() => parseCaseReport(Buffer.from(raw))).toThrow(ProtocolError);
  });
});

describe('case frames on the wire', () => {
  it('are bounded by maxCaseBytes, not by the output frame bound', () => {
    const frames: number[] = [];
    const parser = new FrameParser({ maxFrameBytes: 10, maxReportBytes: 10, maxCaseBytes: 50 }, (kind) => frames.push(kind));
    parser.push(runnerFrame(FRAME_CASE, 'x'.repeat(50)));
    expect(frames).toEqual([FRAME_CASE]);
    expect(() => parser.push(runnerFrame(FRAME_CASE, 'x'.repeat(51)))).toThrow(/over the limit of 50/);
    expect(() => new FrameParser({ maxFrameBytes: 10, maxReportBytes: 10 }, () => {}).push(runnerFrame(6, ''))).toThrow(/unknown frame kind 6/);
  });

  it('leave room for both streams in base64 and a traceback', () => {
    const full = JSON.stringify(caseReport(999_999, { stdout: { b64: b64('x'.repeat(4096)), totalBytes: 1e12, truncated: true }, stderr: { b64: b64('y'.repeat(4096)), totalBytes: 1e12, truncated: true } }));
    expect(maxCaseFrameBytes(4096)).toBeGreaterThan(full.length + 64 * 1024);
  });
});

describe('wallLimitMs', () => {
  const limits = { timeoutMs: 5000, memoryMb: 256, cpus: 1 };
  it('is the job timeout without cases, the sum of the cases plus a margin with them, capped', () => {
    expect(wallLimitMs({ limits })).toBe(5000);
    expect(wallLimitMs({ limits, tests: [kase({ timeoutMs: 2000 }), kase({ timeoutMs: 3000 })] })).toBe(5000 + TESTS_MARGIN_MS + 2 * TESTS_MARGIN_PER_CASE_MS);
    expect(wallLimitMs({ limits, tests: Array.from({ length: 1000 }, () => kase({ timeoutMs: 300_000 })) })).toBe(TESTS_WALL_CAP_MS);
    expect(wallLimitMs({ limits: { ...limits, timeoutMs: 86_400_000 }, tests: [kase()] })).toBe(86_400_000);
  });
});

describe('buildPayload with test cases', () => {
  it('puts each case\'s stdin and files in entries of their own, after the execution\'s', async () => {
    const longPath = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(100)}.txt`;
    const archive = await buildPayload({
      code: 'print(1)',
      stdin: '',
      files: [{ path: 'shared.txt', data: Buffer.from('s') }],
      request: { args: [], env: {}, context: {}, caps: { floodBytes: 1000, maxFiles: 1, maxFileBytes: 1, outputBytes: 100 }, tests: [{ timeoutMs: 1000 }, { timeoutMs: 2000 }] },
      cases: [
        { args: ['a', 'ü'], stdin: 'one\n', files: [{ path: longPath, data: Buffer.from('deep') }] },
        { args: [], stdin: '', files: [] },
      ],
    });
    const entries = await readTar(archive);
    expect(entries.map((e) => e.header.name)).toEqual(['.pybox/request.json', 'main.py', 'shared.txt', '.pybox/cases/0/args', '.pybox/cases/0/stdin', `.pybox/cases/0/files/${longPath}`]);
    expect(JSON.parse(entries[3]?.data.toString() ?? '[]')).toEqual(['a', 'ü']);
    expect(entries[4]?.data.toString()).toBe('one\n');
    expect(entries[5]?.data.toString()).toBe('deep');
    // The request the runner keeps holds no case's input: only the time limits.
    expect(JSON.parse(entries[0]?.data.toString() ?? '{}').tests).toEqual([{ timeoutMs: 1000 }, { timeoutMs: 2000 }]);
  });
});

describe('a sandbox running test cases', () => {
  const settings = testSandboxSettings();

  function job(over: Partial<SandboxJob> = {}): SandboxJob {
    return {
      id: 'job-cases',
      image: 'pybox-python:test',
      runtime: 'runc',
      code: 'print(input())',
      stdin: '',
      args: [],
      env: {},
      context: {},
      files: [],
      limits: { timeoutMs: 10_000, memoryMb: 256, cpus: 1 },
      tests: [kase({ stdin: 'a\n', args: ['x'] }), kase({ stdin: 'b\n' }), kase({ stdin: 'c\n' })],
      ...over,
    };
  }

  async function start(j: SandboxJob, options: FakeContainerOptions = {}) {
    const clock = new ManualClock();
    const engine = new FakeEngine(options);
    const factory = new SandboxFactory(engine, settings, new RecordingLogger(), clock);
    const runner = new SandboxRunner(factory, new OnDemandSource(factory), clock);
    const outcome = runner.run(j);
    const container = await engine.created.promise;
    const payload = await container.socket.firstWrite;
    return { outcome, container, payload, runner };
  }

  const failure = (o: SandboxOutcome) => [o.kind, o.failure ?? ''];

  it('sends the cases in the payload and collects one outcome per case', async () => {
    const r = await start(job({ stdin: 'never sent', args: ['never'] }));
    r.container.socket.send(caseFrame(caseReport(0)), caseFrame(caseReport(1, { exitCode: 137, signal: 9 })), caseFrame(caseReport(2)), reportFrame(runReport()));
    const o = await r.outcome;
    expect(o.kind).toBe('finished');
    expect(o.cases?.map((c) => [c.kind, c.exitCode, c.signal, c.stdout.text()])).toEqual([
      ['finished', 0, null, 'out 0\n'],
      ['finished', 137, 9, 'out 1\n'],
      ['finished', 0, null, 'out 2\n'],
    ]);
    const entries = await readTar(r.payload);
    expect(entries.map((e) => e.header.name)).toEqual(['.pybox/request.json', 'main.py', '.pybox/cases/0/args', '.pybox/cases/0/stdin', '.pybox/cases/1/stdin', '.pybox/cases/2/stdin']);
    const request = JSON.parse(entries[0]?.data.toString() ?? '{}');
    expect(request.args).toEqual([]);
    expect(request.caps.outputBytes).toBe(settings.outputBytes);
    expect(request.tests).toEqual([{ timeoutMs: 1000 }, { timeoutMs: 1000 }, { timeoutMs: 1000 }]);
    await r.runner.drain();
  });

  it.each<[string, () => Buffer[]]>([
    ['a case frame out of range', () => [caseFrame(caseReport(0)), caseFrame(caseReport(7))]],
    ['a case frame twice', () => [caseFrame(caseReport(0)), caseFrame(caseReport(0))]],
    ['a malformed case frame', () => [caseFrame('{"v":1')]],
    ['the end before every case', () => [caseFrame(caseReport(0)), reportFrame(runReport())]],
    ['a case frame over its size bound', () => [caseFrame('x'.repeat(maxCaseFrameBytes(settings.outputBytes) + 1))]],
  ])('fails the run as a protocol violation on %s, with the cases seen so far', async (_what, frames) => {
    const r = await start(job());
    r.container.socket.send(...frames());
    const o = await r.outcome;
    expect(failure(o)[0]).toBe('failed');
    expect(o.failure).toMatch(/protocol violation/);
    expect(o.cases).toHaveLength(3);
    expect(o.cases?.slice(1).every((c) => c.kind === 'not_run')).toBe(true);
    await r.runner.drain();
  });

  it('refuses case frames for a job without test cases', async () => {
    const r = await start(job({ tests: undefined }));
    r.container.socket.send(caseFrame(caseReport(0)));
    const o = await r.outcome;
    expect(failure(o)).toEqual(['failed', expect.stringMatching(/protocol violation: a test case report for a job without test cases/)]);
    expect(o.cases).toBeUndefined();
    await r.runner.drain();
  });

  it('a validation failure leaves every case not_run', async () => {
    const r = await start(job());
    const error = { type: 'SyntaxError', message: 'bad', line: 1, column: 1, text: 'x', caret: '^' };
    r.container.socket.send(userStderr('SyntaxError: bad\n'), reportFrame({ v: 1, phase: 'validation', error }));
    const o = await r.outcome;
    expect(o.kind).toBe('finished');
    expect(o.report?.phase).toBe('validation');
    expect(o.cases?.map((c) => c.kind)).toEqual(['not_run', 'not_run', 'not_run']);
    await r.runner.drain();
  });

  it('a sandbox killed for its memory: the case that was running is oom, the rest not_run', async () => {
    const r = await start(job(), { waitResult: 137, state: { oomKilled: true } });
    r.container.socket.send(caseFrame(caseReport(0)));
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('oom');
    expect(o.cases?.map((c) => c.kind)).toEqual(['finished', 'oom', 'not_run']);
    await r.runner.drain();
  });

  it('a sandbox that stops without a report fails with the cases seen so far', async () => {
    const r = await start(job(), { waitResult: 1, state: { oomKilled: false } });
    r.container.socket.send(caseFrame(caseReport(0)), caseFrame(caseReport(1)));
    r.container.socket.finish();
    const o = await r.outcome;
    expect(o.kind).toBe('failed');
    expect(o.cases?.map((c) => c.kind)).toEqual(['finished', 'finished', 'not_run']);
    await r.runner.drain();
  });

  it('a job cancelled before it starts has every case not_run', async () => {
    const clock = new ManualClock();
    const engine = new FakeEngine();
    const factory = new SandboxFactory(engine, settings, new RecordingLogger(), clock);
    const runner = new SandboxRunner(factory, new OnDemandSource(factory), clock);
    const ac = new AbortController();
    ac.abort();
    const o = await runner.run(job({ signal: ac.signal }));
    expect(o.kind).toBe('cancelled');
    expect(o.cases?.map((c) => c.kind)).toEqual(['not_run', 'not_run', 'not_run']);
  });
});
