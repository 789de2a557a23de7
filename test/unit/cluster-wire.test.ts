// The queue's wire format: an accepted execution survives the trip through JSON unchanged, and
// whatever else comes out of Redis is refused with a reason.
import { describe, expect, it } from 'vitest';
import { CancelMessage, ExecutionPayload, fromPayload, resultFromWire, toPayload, WireError } from '../../src/cluster/wire.ts';
import type { AcceptedExecution } from '../../src/core/ports.ts';
import type { ExecutionResult } from '../../src/core/schemas.ts';

const limits = { timeoutMs: 5000, memoryMb: 256, cpus: 0.5 };

function accepted(): AcceptedExecution {
  return {
    job: {
      id: '0b6c6a52-8c0e-4a53-9f59-1f8f3b1d2c3e',
      code: 'print(x)',
      stdin: 'in',
      args: ['-v'],
      env: { A: '1' },
      context: { x: [1, { y: null }] },
      files: [{ path: 'data/a.bin', data: Buffer.from([0, 255, 10]) }],
      limits,
      importPolicy: { mode: 'warn', dangerous: ['socket'], safe: [] },
    },
    limits: { ...limits, outputBytes: 50_000 },
    tenant: 'acme',
    maxInFlight: 3,
    createdAtMs: 1_700_000_000_000,
  };
}

/** An accepted execution with test cases (inputs in job.tests, expectations in tests), in the background. */
function withTests(): AcceptedExecution {
  const e = accepted();
  e.job.stdin = '';
  e.job.args = [];
  e.job.tests = [
    { stdin: '1 2\n', args: ['a'], files: [{ path: 'case.bin', data: Buffer.from([1, 0, 254]) }], timeoutMs: 2000 },
    { stdin: '', args: [], files: [], timeoutMs: 5000 },
  ];
  e.tests = [
    { name: 'adds', expectedStdout: '3\n', compare: 'trimmed' },
    { name: 'case 2', expectedExitCode: 0, compare: 'float', tolerance: { relative: 1e-3, absolute: 0 } },
  ];
  e.background = true;
  return e;
}

/** The payload as Redis gives it back: through JSON. */
const viaJson = (v: unknown): unknown => JSON.parse(JSON.stringify(v));

describe('wire', () => {
  it('carries an accepted execution through JSON unchanged', () => {
    const e = accepted();
    expect(fromPayload(viaJson(toPayload(e)))).toEqual(e);
    const plain = accepted();
    delete plain.job.importPolicy;
    const back = fromPayload(viaJson(toPayload(plain)));
    expect(back).toEqual(plain);
    expect('importPolicy' in back.job).toBe(false);
    expect('requestId' in back).toBe(false);
  });

  it('carries test cases, their files, their expectations and the background mark unchanged', () => {
    const e = withTests();
    const payload = viaJson(toPayload(e)) as ExecutionPayload;
    expect(payload.job.tests?.[0]?.files[0]?.base64).toBe(Buffer.from([1, 0, 254]).toString('base64'));
    const back = fromPayload(payload);
    expect(back).toEqual(e);
    expect(back.job.tests?.[0]?.files[0]?.data).toEqual(Buffer.from([1, 0, 254]));
    expect('expectedExitCode' in (back.tests?.[0] ?? {})).toBe(false);
    expect('tests' in fromPayload(viaJson(toPayload(accepted()))).job).toBe(false);
  });

  it.each([
    ['expectations for fewer cases than the job has', (p: ExecutionPayload) => p.tests?.pop(), /tests/],
    ['expectations without cases', (p: ExecutionPayload) => delete p.job.tests, /tests/],
    ['a case file path climbing out', (p: ExecutionPayload) => ((p.job.tests?.[0]?.files[0] as { path: string }).path = '../x'), /job\.tests\.0\.files\.0\.path/],
    ['a case file that is not base64', (p: ExecutionPayload) => ((p.job.tests?.[0]?.files[0] as { base64: string }).base64 = '@@@@'), /base64/],
    ['an unknown key in a case', (p: ExecutionPayload) => ((p.job.tests?.[0] as unknown as Record<string, unknown>).expectedStdout = 'x'), /job\.tests\.0/],
    ['a case without a time limit', (p: ExecutionPayload) => ((p.job.tests?.[1] as unknown as Record<string, unknown>).timeoutMs = 0), /timeoutMs/],
    ['an unknown comparison', (p: ExecutionPayload) => ((p.tests?.[0] as unknown as Record<string, unknown>).compare = 'fuzzy'), /tests\.0\.compare/],
    ['a negative tolerance', (p: ExecutionPayload) => ((p.tests?.[1]?.tolerance as { relative: number }).relative = -1), /tolerance/],
    ['an exit code out of range', (p: ExecutionPayload) => ((p.tests?.[1] as { expectedExitCode: number }).expectedExitCode = 256), /expectedExitCode/],
    ['a case name with a control character', (p: ExecutionPayload) => ((p.tests?.[0] as { name: string }).name = 'a\u0007'), /name/],
    ['too many cases', (p: ExecutionPayload) => {
      const c = p.job.tests?.[1];
      const t = p.tests?.[0];
      if (c && t) {
        p.job.tests = Array.from({ length: 1001 }, () => c);
        p.tests = Array.from({ length: 1001 }, () => t);
      }
    }, /tests/],
    ['case files too large in all', (p: ExecutionPayload) => {
      const big = { path: 'big', base64: 'AAAA'.repeat(10 * 1024 * 1024) }; // 30 MiB a case
      for (const c of p.job.tests ?? []) c.files = Array.from({ length: 5 }, (_, i) => ({ ...big, path: `big${i}` }));
    }, /too large/],
    ['a background mark that is not a boolean', (p: ExecutionPayload) => ((p as unknown as Record<string, unknown>).background = 'yes'), /background/],
  ])('refuses test cases with %s', (_what, spoil, where) => {
    const p = viaJson(toPayload(withTests())) as ExecutionPayload;
    spoil(p);
    expect(() => fromPayload(p)).toThrow(WireError);
    expect(() => fromPayload(p)).toThrow(where);
  });

  it("carries the accepting request's id to the worker", () => {
    const e = { ...accepted(), requestId: 'req-7:a.b_c' };
    const payload = viaJson(toPayload(e)) as ExecutionPayload;
    expect(payload.requestId).toBe('req-7:a.b_c');
    expect(fromPayload(payload)).toEqual(e);
  });

  it.each([
    ['an unknown key', (p: ExecutionPayload) => ((p as unknown as Record<string, unknown>).extra = 1), /extra|Unrecognized/],
    ['another version', (p: ExecutionPayload) => (p.v = 2 as never), /v:/],
    ['a path climbing out', (p: ExecutionPayload) => ((p.job.files[0] as { path: string }).path = '../etc/passwd'), /job\.files\.0\.path/],
    ['bytes that are not base64', (p: ExecutionPayload) => ((p.job.files[0] as { base64: string }).base64 = 'a!b='), /base64/],
    ['a job id with a colon', (p: ExecutionPayload) => (p.job.id = 'a:b:c'), /job\.id/],
    ['a numeric job id', (p: ExecutionPayload) => (p.job.id = '12345'), /job\.id/],
    ['a bad tenant', (p: ExecutionPayload) => (p.tenant = '../x'), /tenant/],
    ['a context nested too deep', (p: ExecutionPayload) => (p.job.context = { x: JSON.parse('['.repeat(70) + ']'.repeat(70)) as [] }), /nest/],
    ['a negative limit', (p: ExecutionPayload) => (p.limits.timeoutMs = -1), /limits\.timeoutMs/],
    ['code too long', (p: ExecutionPayload) => (p.job.code = 'x'.repeat(1_000_001)), /job\.code/],
    ['a request id with a space', (p: ExecutionPayload) => (p.requestId = 'a b'), /requestId/],
    ['a request id too long', (p: ExecutionPayload) => (p.requestId = 'r'.repeat(129)), /requestId/],
    ['a request id that is not a string', (p: ExecutionPayload) => ((p as unknown as Record<string, unknown>).requestId = 7), /requestId/],
  ])('refuses a payload with %s, saying where', (_what, spoil, where) => {
    const p = viaJson(toPayload(accepted())) as ExecutionPayload;
    spoil(p);
    expect(() => fromPayload(p)).toThrow(WireError);
    expect(() => fromPayload(p)).toThrow(where);
  });

  it('refuses what is not an object at all', () => {
    for (const junk of [null, 'run', 42, [], { v: 1 }]) expect(() => fromPayload(junk)).toThrow(/^malformed execution payload: /);
    expect(ExecutionPayload.safeParse(undefined).success).toBe(false);
  });

  it("takes back a result of the same execution only, in the API's shape", () => {
    const result: ExecutionResult = {
      id: accepted().job.id,
      status: 'completed',
      success: true,
      exitCode: 0,
      signal: null,
      stdout: 'hi\n',
      stderr: '',
      truncated: { stdout: false, stderr: false },
      durationMs: 3.2,
      feedback: 'ok',
      runtime: 'runsc',
      limits: { ...limits, outputBytes: 50_000 },
      createdAt: '2026-01-01T00:00:00.000Z',
      finishedAt: '2026-01-01T00:00:01.000Z',
    };
    expect(resultFromWire(viaJson(result), result.id)).toEqual(result);
    expect(() => resultFromWire(viaJson(result), 'another-id')).toThrow(/another execution/);
    expect(() => resultFromWire({ ...result, status: 'pwned' }, result.id)).toThrow(/status/);
    expect(() => resultFromWire({ ...result, files: Array.from({ length: 1001 }, () => ({ path: 'a', size: 0, contentBase64: '' })) }, result.id)).toThrow(/files/);
  });

  it('reads cancel messages strictly', () => {
    expect(CancelMessage.safeParse({ id: 'abc-1', reason: 'client' }).success).toBe(true);
    expect(CancelMessage.safeParse({ id: 'abc-1', reason: 'other' }).success).toBe(false);
    expect(CancelMessage.safeParse({ id: 'abc-1', reason: 'client', more: 1 }).success).toBe(false);
  });
});
