// The execution service with test cases: what it refuses (400 naming the field), what it hands the
// sandbox (job.tests) and the verdicts it gets back, through the service as a node composes it.
import { describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/schema.ts';
import { LOCAL_CALLER, type Caller } from '../../src/core/caller.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { PyboxError } from '../../src/core/errors.ts';
import type { Sandboxes } from '../../src/core/ports.ts';
import type { CaseOutcome, SandboxCase, SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { ExecutionRequest } from '../../src/core/schemas.ts';
import { MAX_REGEX_CHARS } from '../../src/core/verdicts.ts';
import { capture, defaultConfig, localService, ManualClock, MemoryStore, outcome, RecordingLogger, runReport } from './fakes.ts';

/** Runs each case as `print(input())` would: its stdin back on stdout, or what `respond` says. */
class CaseSandboxes implements Sandboxes {
  readonly jobs: SandboxJob[] = [];
  constructor(private readonly respond: (c: SandboxCase, i: number) => Partial<CaseOutcome> & { out?: string } = (c) => ({ out: c.stdin })) {}
  async run(job: SandboxJob): Promise<SandboxOutcome> {
    this.jobs.push(job);
    const o = outcome('finished', { report: runReport(), durationMs: 40 });
    if (!job.tests) return o;
    o.cases = job.tests.map((c, i) => {
      const { out = '', ...rest } = this.respond(c, i);
      return { kind: 'finished', exitCode: 0, signal: null, error: null, durationMs: 3, cpuMs: null, stdout: capture(out), stderr: capture(''), ...rest };
    });
    return o;
  }
}

function setup(opts: { limits?: Partial<Config['limits']>; respond?: ConstructorParameters<typeof CaseSandboxes>[0] } = {}) {
  const sandboxes = new CaseSandboxes(opts.respond);
  const store = new MemoryStore();
  let n = 0;
  const service = localService({
    sandboxes,
    engine: { ping: async () => true, imageExists: async () => true },
    store,
    gate: new ConcurrencyGate(2, 10, 3),
    limits: { ...defaultConfig().limits, inputFilesMaxBytes: 100, ...opts.limits },
    image: 'pybox-python:test',
    runtime: 'runc',
    availableRuntimes: ['runc'],
    clock: new ManualClock(),
    logger: new RecordingLogger(),
    newId: () => `id-${++n}`,
  });
  return { service, sandboxes, store };
}

const request = (body: Record<string, unknown>): ExecutionRequest => ExecutionRequest.parse({ code: 'print(input())\n', ...body });

async function refusal(p: Promise<unknown>): Promise<PyboxError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof PyboxError) return e;
    throw e;
  }
  throw new Error('expected a PyboxError');
}

async function refusedAt(body: Record<string, unknown>, path: string, message: RegExp | string, opts: Parameters<typeof setup>[0] = {}): Promise<void> {
  const s = setup(opts);
  const e = await refusal(s.service.execute(LOCAL_CALLER, request(body)));
  expect(e.code).toBe('invalid_request');
  expect(e.details).toEqual([{ path, message: expect.stringMatching(message) }]);
  expect(s.sandboxes.jobs).toHaveLength(0);
  expect(s.store.saved).toHaveLength(0);
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');

describe('execute with tests: what is refused', () => {
  it('stdin or args beside tests, naming the field', async () => {
    await refusedAt({ stdin: '1', tests: [{ stdin: '2' }] }, 'stdin', /must not be given with tests/);
    await refusedAt({ args: ['-v'], tests: [{}] }, 'args', /must not be given with tests/);
    // An empty stdin or argument list is still given.
    await refusedAt({ stdin: '', tests: [{}] }, 'stdin', /must not be given with tests/);
  });

  it("a case's files like a request's: base64, duplicates, file and directory", async () => {
    await refusedAt({ tests: [{}, { files: [{ path: 'f', content: 'abc', encoding: 'base64' }] }] }, 'tests[1].files[0].content', 'is not valid base64');
    await refusedAt({ tests: [{ files: [{ path: 'f', content: '1' }, { path: 'f', content: '2' }] }] }, 'tests[0].files[1].path', 'duplicate path f');
    await refusedAt({ tests: [{ files: [{ path: 'd', content: '1' }, { path: 'd/x', content: '2' }] }] }, 'tests[0].files', 'd is both a file and a directory');
  });

  it("a case's file that would be a directory of the request's file, or the reverse", async () => {
    await refusedAt({ files: [{ path: 'data', content: '1' }], tests: [{}, { files: [{ path: 'data/x', content: '2' }] }] }, 'tests[1].files', 'data is both a file and a directory');
    await refusedAt({ files: [{ path: 'data/x', content: '1' }], tests: [{ files: [{ path: 'data', content: '2' }] }] }, 'tests[0].files', 'data is both a file and a directory');
  });

  it("every input byte counts against inputFilesMaxBytes: the files, each case's files and stdin", async () => {
    const files = [{ path: 'a', content: 'x'.repeat(60) }];
    await refusedAt({ files, tests: [{ stdin: 'y'.repeat(20) }, { stdin: 'z'.repeat(21) }] }, 'tests[1].stdin', /^input files and the test cases' files and stdin exceed 100 bytes in total$/);
    await refusedAt({ files, tests: [{ files: [{ path: 'b', content: b64(Buffer.alloc(41)), encoding: 'base64' }] }] }, 'tests[0].files', /exceed 100 bytes/);
    // Over many cases, none large.
    await refusedAt({ tests: Array.from({ length: 11 }, () => ({ stdin: 'é'.repeat(5) })) }, 'tests[10].stdin', /exceed 100 bytes/);
  });

  it('accepts exactly inputFilesMaxBytes over the files and the cases', async () => {
    const s = setup();
    await s.service.execute(LOCAL_CALLER, request({ files: [{ path: 'a', content: 'x'.repeat(60) }], tests: [{ stdin: 'y'.repeat(20) }, { files: [{ path: 'b', content: b64(Buffer.alloc(20)), encoding: 'base64' }] }] }));
    expect(s.sandboxes.jobs).toHaveLength(1);
  });

  it('a regular expression that does not compile, at validation, naming the case', async () => {
    await refusedAt({ tests: [{ expectedStdout: '(', compare: 'tokens' }, { expectedStdout: '(a', compare: 'regex' }] }, 'tests[1].expectedStdout', /^is not a valid regular expression \(RE2 syntax\): missing closing \)/);
    await refusedAt({ tests: [{ expectedStdout: '(a)\\1', compare: 'regex' }] }, 'tests[0].expectedStdout', /invalid escape sequence/);
    await refusedAt({ tests: [{ expectedStdout: 'x(?=y)', compare: 'regex' }] }, 'tests[0].expectedStdout', /not a valid regular expression/);
  });

  it('regular expressions over their total length', async () => {
    const half = 'a'.repeat(MAX_REGEX_CHARS / 2);
    await refusedAt({ tests: [{ expectedStdout: half, compare: 'regex' }, { expectedStdout: `${half}b`, compare: 'regex' }] }, 'tests[1].expectedStdout', /regular expressions exceed 262144 characters in total/, {
      limits: { inputFilesMaxBytes: 10_000_000 },
    });
  });

  it("a case's time limit below the floor, from an in-process caller", async () => {
    const s = setup();
    const req = request({ tests: [{}] });
    req.tests = [{ timeoutMs: 10 }];
    const e = await refusal(s.service.execute(LOCAL_CALLER, req));
    expect(e.details).toEqual([{ path: 'tests[0].timeoutMs', message: 'must be at least 1000 (ms)' }]);
  });
});

describe('execute with tests: the job and the specs', () => {
  it('hands the sandbox each case as its input, with the run itself given no stdin or args', async () => {
    const s = setup();
    await s.service.execute(
      LOCAL_CALLER,
      request({
        files: [{ path: 'shared.txt', content: 's' }],
        timeoutMs: 4000,
        tests: [{ stdin: '1\n', args: ['-a'], files: [{ path: 'shared.txt', content: 'mine' }, { path: 'd/in.bin', content: b64('\x00\x01'), encoding: 'base64' }] }, { timeoutMs: 2000 }],
      }),
    );
    const job = s.sandboxes.jobs[0];
    expect(job?.stdin).toBe('');
    expect(job?.args).toEqual([]);
    expect(job?.files.map((f) => f.path)).toEqual(['shared.txt']);
    expect(job?.tests).toHaveLength(2);
    const [one, two] = job?.tests ?? [];
    expect(one).toMatchObject({ stdin: '1\n', args: ['-a'], timeoutMs: 4000 });
    expect(one?.files.map((f) => [f.path, f.data.toString('latin1')])).toEqual([
      ['shared.txt', 'mine'],
      ['d/in.bin', '\x00\x01'],
    ]);
    expect(two).toEqual({ stdin: '', args: [], files: [], timeoutMs: 2000 });
  });

  it("clamps each case's time limit to the caller's maximum, like the request's", async () => {
    const s = setup({ limits: { max: { ...defaultConfig().limits.max, timeoutMs: 60_000 } } });
    const tenant: Caller = { ...LOCAL_CALLER, limits: { ...LOCAL_CALLER.limits, maxTimeoutMs: 20_000 } };
    await s.service.execute(tenant, request({ tests: [{ timeoutMs: 86_400_000 }, { timeoutMs: 5000 }, {}] }));
    expect(s.sandboxes.jobs[0]?.tests?.map((c) => c.timeoutMs)).toEqual([20_000, 5000, 20_000]);
    expect(s.sandboxes.jobs[0]?.limits.timeoutMs).toBe(20_000);
  });

  it('names cases `case <n>` unless named, and compares trimmed unless told', async () => {
    const s = setup({ respond: () => ({ out: '3  \n\n' }) });
    const r = await s.service.execute(LOCAL_CALLER, request({ tests: [{ expectedStdout: '3' }, { name: 'exactly', expectedStdout: '3', compare: 'exact' }] }));
    expect(r.tests?.map((t) => [t.name, t.verdict])).toEqual([
      ['case 1', 'passed'],
      ['exactly', 'failed'],
    ]);
  });
});

describe('execute with tests: end to end through a fake sandbox', () => {
  it('every case judged: completed, the summary, recorded with the tests', async () => {
    const s = setup({
      respond: (c, i) => (i === 2 ? { exitCode: 1, error: { type: 'ValueError', message: 'boom', line: 1 } } : { out: c.stdin.trim() === '5' ? '25' : String(Number(c.stdin) * 2) }),
    });
    const r = await s.service.execute(
      LOCAL_CALLER,
      request({
        tests: [
          { name: 'two', stdin: '2', expectedStdout: '4' },
          { name: 'five', stdin: '5', expectedStdout: '10' },
          { name: 'bad', stdin: 'x', expectedStdout: '' },
          { name: 'regex', stdin: '21', expectedStdout: '\\d{2}', compare: 'regex' },
          { name: 'float', stdin: '0.1', expectedStdout: '0.2000000001', compare: 'float' },
        ],
      }),
    );
    expect(r.status).toBe('completed');
    expect(r.success).toBe(false);
    expect(r.tests?.map((t) => t.verdict)).toEqual(['passed', 'failed', 'error', 'passed', 'passed']);
    expect(r.summary).toMatchObject({ total: 5, passed: 3, failed: 1, error: 1 });
    expect(r.tests?.[1]?.mismatch).toMatchObject({ line: 1, expected: '10', actual: '25' });
    expect(r.feedback).toMatch(/^3 of 5 test cases passed; 1 failed, 1 ended with an error\./);
    expect(r.feedback).toContain('Its stdin:\n    5');
    expect(s.store.saved[0]?.tests).toEqual(r.tests);
  });

  it('all passed: success', async () => {
    const s = setup();
    const r = await s.service.execute(LOCAL_CALLER, request({ tests: [{ stdin: 'a', expectedStdout: 'a' }, { stdin: 'b\n', expectedStdout: 'b' }] }));
    expect(r).toMatchObject({ status: 'completed', success: true, stdout: '', exitCode: null });
  });

  it('a run without tests is as before: no tests, no summary, its stdin passed', async () => {
    const s = setup();
    const r = await s.service.execute(LOCAL_CALLER, request({ stdin: 'hi', args: ['x'] }));
    expect(s.sandboxes.jobs[0]?.tests).toBeUndefined();
    expect(s.sandboxes.jobs[0]?.stdin).toBe('hi');
    expect(r.tests).toBeUndefined();
    expect(r.summary).toBeUndefined();
  });
});
