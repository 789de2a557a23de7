import { describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/schema.ts';
import { LOCAL_CALLER } from '../../src/core/caller.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import type { DefaultExecutionService } from '../../src/core/execution-service.ts';
import { PyboxError } from '../../src/core/errors.ts';
import type { EngineProbe, Sandboxes } from '../../src/core/ports.ts';
import { ExecutionRequest, ExecutionResult } from '../../src/core/schemas.ts';
import { MIN_CPUS, MIN_MEMORY_MB, MIN_TIMEOUT_MS } from '../../src/core/limits.ts';
import type { RunnerReport } from '../../src/engine/protocol.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { defaultConfig, deferred, localService, ManualClock, MemoryStore, outcome, RecordingLogger, runReport, type RunReport } from './fakes.ts';

const IMAGE = 'pybox-python:test';

class FakeSandboxes implements Sandboxes {
  readonly jobs: SandboxJob[] = [];
  constructor(public next: (job: SandboxJob) => SandboxOutcome | Promise<SandboxOutcome>) {}
  async run(job: SandboxJob): Promise<SandboxOutcome> {
    this.jobs.push(job);
    return this.next(job);
  }
}

class FakeProbe implements EngineProbe {
  pingResult = true;
  image: boolean | Error = true;
  readonly asked: string[] = [];
  async ping(): Promise<boolean> {
    return this.pingResult;
  }
  async imageExists(image: string): Promise<boolean> {
    this.asked.push(image);
    if (this.image instanceof Error) throw this.image;
    return this.image;
  }
}

const limits = (overrides: Partial<Config['limits']> = {}): Config['limits'] => ({
  ...defaultConfig().limits,
  inputFilesMaxBytes: 100,
  outputFilesMax: 3,
  outputFilesMaxBytes: 50,
  ...overrides,
});

interface Setup {
  service: DefaultExecutionService;
  sandboxes: FakeSandboxes;
  probe: FakeProbe;
  store: MemoryStore;
  clock: ManualClock;
  logger: RecordingLogger;
  gate: ConcurrencyGate;
}

function setup(result: SandboxOutcome | ((job: SandboxJob) => SandboxOutcome | Promise<SandboxOutcome>) = outcome('finished', { report: runReport() }), opts: { limits?: Partial<Config['limits']>; gate?: ConcurrencyGate } = {}): Setup {
  const sandboxes = new FakeSandboxes(typeof result === 'function' ? result : () => result);
  const probe = new FakeProbe();
  const store = new MemoryStore();
  const clock = new ManualClock(Date.UTC(2025, 0, 2, 3, 4, 5));
  const logger = new RecordingLogger();
  const gate = opts.gate ?? new ConcurrencyGate(2, 10, 3);
  let n = 0;
  const service = localService({
    sandboxes,
    engine: probe,
    store,
    gate,
    limits: limits(opts.limits),
    image: IMAGE,
    runtime: 'runc',
    availableRuntimes: ['runc'],
    clock,
    logger,
    newId: () => `id-${++n}`,
  });
  return { service, sandboxes, probe, store, clock, logger, gate };
}

/** A request as the HTTP edge hands it over: parsed by the schema, defaults applied. */
const request = (body: Record<string, unknown> = {}): ExecutionRequest => ExecutionRequest.parse({ code: 'print(1)\n', ...body });

async function rejection(p: Promise<unknown>): Promise<PyboxError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof PyboxError) return e;
    throw e;
  }
  throw new Error('expected a PyboxError');
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');

describe('clampLimits', () => {
  const { service } = setup();

  it('applies the defaults', () => {
    expect(service.clampLimits({})).toEqual({ timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 });
  });

  it('keeps values within the maxima', () => {
    expect(service.clampLimits({ timeoutMs: 5000, memoryMb: 512, cpus: 1.5 })).toEqual({ timeoutMs: 5000, memoryMb: 512, cpus: 1.5, outputBytes: 50_000 });
  });

  it('clamps each limit to its maximum', () => {
    expect(service.clampLimits({ timeoutMs: 86_400_000, memoryMb: 1_048_576, cpus: 1024 })).toEqual({
      timeoutMs: 300_000,
      memoryMb: 2048,
      cpus: 2,
      outputBytes: 50_000,
    });
    expect(service.clampLimits({ timeoutMs: 300_001 }).timeoutMs).toBe(300_000);
    expect(service.clampLimits({ memoryMb: 2049 }).memoryMb).toBe(2048);
    expect(service.clampLimits({ cpus: 2.01 }).cpus).toBe(2);
  });

  it('applies the smallest values a request may ask for as they are, never raised', () => {
    expect(service.clampLimits({ timeoutMs: MIN_TIMEOUT_MS, memoryMb: MIN_MEMORY_MB, cpus: MIN_CPUS })).toEqual({
      timeoutMs: MIN_TIMEOUT_MS,
      memoryMb: MIN_MEMORY_MB,
      cpus: MIN_CPUS,
      outputBytes: 50_000,
    });
  });

  it('keeps a tenant ceiling below a floor from lowering a run under the floor', () => {
    const tenant = { maxConcurrency: null, ratePerMinute: null, maxTimeoutMs: 10, maxMemoryMb: 16, maxCpus: 0.01 };
    expect(service.clampLimits({}, tenant)).toEqual({ timeoutMs: MIN_TIMEOUT_MS, memoryMb: MIN_MEMORY_MB, cpus: MIN_CPUS, outputBytes: 50_000 });
    expect(service.effectiveLimits(tenant).max).toEqual({ timeoutMs: MIN_TIMEOUT_MS, memoryMb: MIN_MEMORY_MB, cpus: MIN_CPUS });
  });
});

describe('execute: limits below the floors from an in-process caller', () => {
  it('refuses them with invalid_request naming the floor, and runs nothing', async () => {
    for (const [field, value, floor] of [
      ['timeoutMs', 1, MIN_TIMEOUT_MS],
      ['memoryMb', 32, MIN_MEMORY_MB],
      ['cpus', 0.01, MIN_CPUS],
    ] as const) {
      const s = setup();
      // Built past the schema, as an adapter converting its own units might.
      const e = await rejection(s.service.execute(LOCAL_CALLER, { code: 'print(1)', [field]: value }));
      expect(e.code).toBe('invalid_request');
      expect(e.message).toBe(`${field} must be at least ${floor} (${field === 'timeoutMs' ? 'ms' : field === 'memoryMb' ? 'MB' : 'CPUs'})`);
      expect(s.sandboxes.jobs).toHaveLength(0);
      expect(s.store.saved).toHaveLength(0);
    }
  });
});

describe('request schema: limits at their floors', () => {
  const issue = (body: Record<string, unknown>) => {
    const r = ExecutionRequest.safeParse({ code: 'print(1)', ...body });
    return r.success ? null : (r.error.issues[0]?.message ?? '');
  };

  it('refuses a value below each floor with a message naming the floor', () => {
    expect(issue({ memoryMb: MIN_MEMORY_MB - 1 })).toContain(`at least ${MIN_MEMORY_MB}`);
    expect(issue({ memoryMb: 1 })).toContain(`at least ${MIN_MEMORY_MB}`);
    expect(issue({ cpus: 0.01 })).toContain(`at least ${MIN_CPUS}`);
    expect(issue({ cpus: MIN_CPUS - 0.001 })).toContain(`at least ${MIN_CPUS}`);
    expect(issue({ timeoutMs: 1 })).toContain(`at least ${MIN_TIMEOUT_MS}`);
  });

  it('accepts each floor itself', () => {
    expect(issue({ memoryMb: MIN_MEMORY_MB, cpus: MIN_CPUS, timeoutMs: MIN_TIMEOUT_MS })).toBeNull();
  });
});

describe('execute: input files', () => {
  it('rejects a duplicate path with invalid_request and runs nothing', async () => {
    const s = setup();
    const e = await rejection(s.service.execute(LOCAL_CALLER, request({ files: [{ path: 'a.txt', content: 'x' }, { path: 'b', content: 'y' }, { path: 'a.txt', content: 'z' }] })));
    expect(e.code).toBe('invalid_request');
    expect(e.message).toBe('files[2].path duplicate path a.txt');
    expect(e.details).toEqual([{ path: 'files[2].path', message: 'duplicate path a.txt' }]);
    expect(s.sandboxes.jobs).toHaveLength(0);
    expect(s.store.saved).toHaveLength(0);
  });

  it.each(['abc', 'ab$=', 'A===', '====', 'YW Jj', 'YWJj\n', 'Y=Jj'])('rejects invalid base64 %j', async (content) => {
    const s = setup();
    const e = await rejection(s.service.execute(LOCAL_CALLER, request({ files: [{ path: 'f.bin', content, encoding: 'base64' }] })));
    expect(e.code).toBe('invalid_request');
    expect(e.message).toBe('files[0].content is not valid base64');
    expect(s.sandboxes.jobs).toHaveLength(0);
  });

  it('does not check utf8 content as base64', async () => {
    const s = setup();
    await s.service.execute(LOCAL_CALLER, request({ files: [{ path: 'f.txt', content: 'abc' }] }));
    expect(s.sandboxes.jobs[0]?.files[0]?.data.toString()).toBe('abc');
  });

  it('rejects input files over inputFilesMaxBytes in total (decoded bytes)', async () => {
    const s = setup();
    const e = await rejection(
      s.service.execute(LOCAL_CALLER, request({ files: [{ path: 'a', content: 'x'.repeat(60) }, { path: 'b', content: b64(Buffer.alloc(41)), encoding: 'base64' }] })),
    );
    expect(e.code).toBe('invalid_request');
    expect(e.message).toBe('files input files exceed 100 bytes in total');
    expect(s.sandboxes.jobs).toHaveLength(0);
  });

  it('accepts exactly inputFilesMaxBytes, counting base64 by its decoded size', async () => {
    const s = setup();
    // 40 decoded bytes are 56 base64 characters: 60 + 56 > 100, but 60 + 40 = 100.
    await s.service.execute(LOCAL_CALLER, request({ files: [{ path: 'a', content: 'x'.repeat(60) }, { path: 'b', content: b64(Buffer.alloc(40)), encoding: 'base64' }] }));
    expect(s.sandboxes.jobs).toHaveLength(1);
  });

  it('counts utf8 content by its bytes, not characters', async () => {
    const s = setup();
    const e = await rejection(s.service.execute(LOCAL_CALLER, request({ files: [{ path: 'a', content: 'é'.repeat(51) }] }))); // 102 bytes
    expect(e.code).toBe('invalid_request');
  });

  it.each([
    [['a', 'a/b']],
    [['a/b', 'a']],
    [['x/y/z', 'x/y']],
    [['x/y/z', 'x']],
  ])('rejects a path that is both a file and a directory: %j', async (paths) => {
    const s = setup();
    const e = await rejection(s.service.execute(LOCAL_CALLER, request({ files: paths.map((path) => ({ path, content: '1' })) })));
    expect(e.code).toBe('invalid_request');
    expect(e.message).toMatch(/ is both a file and a directory$/);
    expect(s.sandboxes.jobs).toHaveLength(0);
  });

  it('accepts siblings and prefix-alike names (ab and a/b, a/b and a/c)', async () => {
    const s = setup();
    await s.service.execute(LOCAL_CALLER, request({ files: ['ab', 'a/b', 'a/c', 'a.b'].map((path) => ({ path, content: path })) }));
    expect(s.sandboxes.jobs[0]?.files.map((f) => f.path)).toEqual(['ab', 'a/b', 'a/c', 'a.b']);
  });

  it('hands the sandbox decoded Buffers and the rest of the job', async () => {
    const s = setup();
    const binary = Buffer.from([0, 1, 2, 254, 255, 128]);
    await s.service.execute(LOCAL_CALLER, 
      request({
        code: 'import sys\n',
        stdin: 'in',
        args: ['--x'],
        env: { A: 'b' },
        context: { k: [1, 2] },
        memoryMb: 4096,
        files: [
          { path: 'bin.dat', content: b64(binary), encoding: 'base64' },
          { path: 'txt/é.txt', content: 'héllo' },
        ],
      }),
    );
    const job = s.sandboxes.jobs[0];
    expect(job?.files).toHaveLength(2);
    expect(Buffer.isBuffer(job?.files[0]?.data)).toBe(true);
    expect(job?.files[0]?.data.equals(binary)).toBe(true);
    expect(job?.files[1]?.data.equals(Buffer.from('héllo', 'utf8'))).toBe(true);
    expect({ ...job, files: undefined }).toEqual({
      id: 'id-1',
      image: IMAGE,
      runtime: 'runc',
      code: 'import sys\n',
      stdin: 'in',
      args: ['--x'],
      env: { A: 'b' },
      context: { k: [1, 2] },
      files: undefined,
      limits: { timeoutMs: 30_000, memoryMb: 2048, cpus: 1, outputBytes: 50_000 },
      signal: expect.any(AbortSignal),
      recorded: expect.any(Promise),
    });
    expect(job?.signal?.aborted).toBe(false);
  });

  it('fills empty defaults for a bare request', async () => {
    const s = setup();
    await s.service.execute(LOCAL_CALLER, request());
    const job = s.sandboxes.jobs[0];
    expect([job?.stdin, job?.args, job?.env, job?.context, job?.files]).toEqual(['', [], {}, {}, []]);
  });
});

describe('execute: from outcome to result', () => {
  const killedBy = (signal: number) => runReport({ exitCode: 128 + signal, signal });
  const zeroDiv = { type: 'ZeroDivisionError', message: 'division by zero', line: 1, traceback: 'Traceback...\nZeroDivisionError: division by zero\n' };

  async function resultOf(o: SandboxOutcome, req = request()): Promise<ExecutionResult> {
    return setup(o).service.execute(LOCAL_CALLER, req);
  }

  it('finished with exit 0 is completed, with every field filled', async () => {
    const s = setup((job) => {
      s.clock.advance(2000);
      expect(job.id).toBe('id-1');
      return outcome('finished', { report: runReport(), stdout: 'hi\n', stderr: 'warn\n', durationMs: 12.34 });
    });
    const r = await s.service.execute(LOCAL_CALLER, request());
    expect(ExecutionResult.parse(r)).toEqual(r);
    expect({ ...r, feedback: undefined }).toEqual({
      id: 'id-1',
      status: 'completed',
      success: true,
      exitCode: 0,
      signal: null,
      error: null,
      stdout: 'hi\n',
      stderr: 'warn\n',
      truncated: { stdout: false, stderr: false },
      durationMs: 12.3,
      cpuMs: null,
      runtime: 'runc',
      limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 },
      files: [],
      feedback: undefined,
      createdAt: '2025-01-02T03:04:05.000Z',
      finishedAt: '2025-01-02T03:04:07.000Z',
    });
    expect(r.feedback.startsWith('The code ran successfully in 0.01 s (exit code 0).')).toBe(true);
  });

  it('passes the truncation flags of the captures on', async () => {
    const o = outcome('finished', { report: runReport(), stdout: 'x'.repeat(20), capBytes: 10 });
    const r = await resultOf(o);
    expect(r.stdout).toBe('x'.repeat(10));
    expect(r.truncated).toEqual({ stdout: true, stderr: false });
  });

  it('finished with exit 2 is error, with the report\'s error', async () => {
    const r = await resultOf(outcome('finished', { report: runReport({ exitCode: 2, error: zeroDiv }) }));
    expect([r.status, r.success, r.exitCode, r.signal]).toEqual(['error', false, 2, null]);
    expect(r.error).toEqual(zeroDiv);
    expect(r.feedback).toContain('ZeroDivisionError: division by zero');
  });

  it('finished with signal 11 is error with SIGSEGV', async () => {
    const r = await resultOf(outcome('finished', { report: killedBy(11) }));
    expect([r.status, r.success, r.exitCode, r.signal]).toEqual(['error', false, 139, 'SIGSEGV']);
  });

  it('finished with signal 9 (not OOM) is error with SIGKILL', async () => {
    const r = await resultOf(outcome('finished', { report: killedBy(9) }));
    expect([r.status, r.exitCode, r.signal]).toEqual(['error', 137, 'SIGKILL']);
  });

  it('names a signal without a Node name SIG<n>', async () => {
    const r = await resultOf(outcome('finished', { report: killedBy(40) }));
    expect(r.signal).toBe('SIG40');
  });

  // Regression test: SIGNAL_NAMES (src/core/execution-service.ts:38) is built from os.constants.signals, where
  // SIGIOT follows SIGABRT with the same number 6, so the later alias wins: abort() is reported as
  // 'SIGIOT' (and 29 as 'SIGPOLL'), where Python, kill -l and Docker all say SIGABRT (SIGIO).
  it('names signal 6 SIGABRT, as Python does (not its alias SIGIOT)', async () => {
    const r = await resultOf(outcome('finished', { report: killedBy(6) }));
    expect(r.signal).toBe('SIGABRT');
  });

  it('validation is validation_failed with the report\'s error', async () => {
    const error = { type: 'SyntaxError', message: 'invalid syntax', line: 1, column: 5, text: 'x = = 1', caret: '    ^' };
    const validation: RunnerReport = { v: 1, phase: 'validation', error };
    const r = await resultOf(outcome('finished', { report: validation, stderr: 'SyntaxError: invalid syntax\n' }));
    expect([r.status, r.success, r.exitCode, r.signal]).toEqual(['validation_failed', false, null, null]);
    expect(r.error).toEqual(error);
    expect(r.files).toBeUndefined();
    expect(r.feedback).toContain('x = = 1\n        ^');
  });

  it('setup is internal_error with the runner\'s message', async () => {
    const s = setup(outcome('finished', { report: { v: 1, phase: 'setup', message: 'bad payload: no request' } }));
    const r = await s.service.execute(LOCAL_CALLER, request());
    expect([r.status, r.success, r.exitCode]).toEqual(['internal_error', false, null]);
    expect(r.error).toEqual({ type: 'InternalError', message: 'bad payload: no request', line: null });
    expect(s.logger.at('error').map((e) => e.msg)).toEqual(['execution failed on our side']);
  });

  it('failed is internal_error with the failure message', async () => {
    const s = setup(outcome('failed', { failure: 'sandbox protocol violation: unknown frame kind 7' }));
    const r = await s.service.execute(LOCAL_CALLER, request());
    expect([r.status, r.success, r.exitCode, r.signal]).toEqual(['internal_error', false, null, null]);
    expect(r.error).toEqual({ type: 'InternalError', message: 'sandbox protocol violation: unknown frame kind 7', line: null });
    expect(r.feedback).toContain('(sandbox protocol violation: unknown frame kind 7)');
    expect(s.logger.at('error')[0]?.fields).toEqual({ id: 'id-1', tenant: 'local', why: 'sandbox protocol violation: unknown frame kind 7' });
  });

  it('failed without a message still says the sandbox failed', async () => {
    const r = await resultOf(outcome('failed'));
    expect(r.error?.message).toBe('the sandbox failed');
  });

  it('timeout: status timeout, SIGKILL, no exit code, output kept', async () => {
    const r = await resultOf(outcome('timeout', { stdout: 'partial' }), request({ timeoutMs: 2000 }));
    expect([r.status, r.success, r.exitCode, r.signal]).toEqual(['timeout', false, null, 'SIGKILL']);
    expect(r.stdout).toBe('partial');
    expect(r.feedback).toContain('time limit of 2.00 s');
  });

  it('oom without a report: exit code 137 and SIGKILL', async () => {
    const r = await resultOf(outcome('oom'), request({ memoryMb: 64 }));
    expect([r.status, r.success, r.exitCode, r.signal]).toEqual(['oom', false, 137, 'SIGKILL']);
    expect(r.feedback).toContain('memory limit of 64 MB');
  });

  it('oom with the runner\'s signal-9 report: same status, files kept', async () => {
    const r = await resultOf(outcome('oom', { report: runReport({ exitCode: 137, signal: 9, files: [{ path: 'a', size: 1, base64: 'eA==' }] }) }));
    expect([r.status, r.exitCode, r.signal]).toEqual(['oom', 137, 'SIGKILL']);
    expect(r.files).toEqual([{ path: 'a', size: 1, contentBase64: 'eA==' }]);
  });

  it('oom that the code outlived (gVisor can fail an allocation instead of killing): the exit the runner saw', async () => {
    const r = await resultOf(outcome('oom', { report: runReport({ exitCode: 1, signal: null }) }));
    expect([r.status, r.exitCode, r.signal]).toEqual(['oom', 1, null]);
  });

  it('output_limit on the host side: SIGKILL, no exit code', async () => {
    const r = await resultOf(outcome('output_limit', { stdout: 'y'.repeat(30), capBytes: 10 }));
    expect([r.status, r.success, r.exitCode, r.signal]).toEqual(['output_limit', false, null, 'SIGKILL']);
    expect(r.truncated.stdout).toBe(true);
  });

  it('output_limit from the runner\'s flooded report keeps its exit code', async () => {
    const r = await resultOf(outcome('output_limit', { report: runReport({ exitCode: 137, signal: 9, flooded: true }) }));
    expect([r.status, r.exitCode, r.signal]).toEqual(['output_limit', 137, 'SIGKILL']);
  });
});

describe('execute: returned files are checked again', () => {
  const file = (path: string, content: string) => ({ path, size: Buffer.byteLength(content), base64: b64(content) });

  async function returned(files: RunReport['files'], filesDropped = 0): Promise<ExecutionResult> {
    return setup(outcome('finished', { report: runReport({ files, filesDropped }) })).service.execute(LOCAL_CALLER, request());
  }

  it('keeps good files as they are', async () => {
    const r = await returned([file('plot.png', 'abc'), file('dir/sub/x.csv', '1,2'), file('empty', '')]);
    expect(r.files).toEqual([
      { path: 'plot.png', size: 3, contentBase64: 'YWJj' },
      { path: 'dir/sub/x.csv', size: 3, contentBase64: 'MSwy' },
      { path: 'empty', size: 0, contentBase64: '' },
    ]);
    expect(r.filesDropped).toBeUndefined();
  });

  it.each(['../escape', 'a/../../b', '/etc/passwd', 'a//b', './a', 'a/.', 'a\\b', 'a\u0000b', 'trailing/'])('drops the path %j', async (path) => {
    const r = await returned([file(path, 'x'), file('ok', 'y')], 2);
    expect(r.files?.map((f) => f.path)).toEqual(['ok']);
    expect(r.filesDropped).toBe(3);
  });

  it('drops a file whose size does not match its content', async () => {
    const r = await returned([{ path: 'liar', size: 1, base64: b64('much longer') }, { path: 'liar2', size: 100, base64: b64('x') }]);
    expect(r.files).toEqual([]);
    expect(r.filesDropped).toBe(2);
  });

  it.each(['not base64!', 'YWJ', 'YW=j', 'Y WJ', '=YWJ'])('drops base64 garbage %j', async (base64) => {
    const r = await returned([{ path: 'g', size: Buffer.byteLength(base64, 'base64'), base64 }]);
    expect(r.files).toEqual([]);
    expect(r.filesDropped).toBe(1);
  });

  it('drops files over the count cap (outputFilesMax 3)', async () => {
    const r = await returned(['a', 'b', 'c', 'd', 'e'].map((p) => file(p, p)));
    expect(r.files?.map((f) => f.path)).toEqual(['a', 'b', 'c']);
    expect(r.filesDropped).toBe(2);
  });

  it('drops files over the size cap (outputFilesMaxBytes 50) but keeps later ones that fit', async () => {
    const r = await returned([file('a', 'x'.repeat(30)), file('b', 'y'.repeat(30)), file('c', 'z'.repeat(20))]);
    expect(r.files?.map((f) => [f.path, f.size])).toEqual([
      ['a', 30],
      ['c', 20],
    ]);
    expect(r.filesDropped).toBe(1);
  });

  it('adds its own drops to the runner\'s count', async () => {
    const r = await returned([file('../x', 'x')], 4);
    expect(r.filesDropped).toBe(5);
  });
});

describe('execute: the store', () => {
  it('saves the result it returns, with the code that ran (which the answer leaves out)', async () => {
    const s = setup();
    const r = await s.service.execute(LOCAL_CALLER, request());
    expect(r.code).toBeUndefined();
    expect(s.store.saved).toEqual([{ ...r, code: request().code }]);
    expect(await s.service.get(LOCAL_CALLER, 'id-1')).toEqual({ ...r, code: request().code });
  });

  it('still returns the result when save() throws, and logs it', async () => {
    const s = setup();
    s.store.saveError = new Error('disk full');
    const r = await s.service.execute(LOCAL_CALLER, request());
    expect(r.status).toBe('completed');
    const logged = s.logger.at('error');
    expect(logged.map((e) => e.msg)).toEqual(['could not record an execution in the store']);
    expect(logged[0]?.fields?.['id']).toBe('id-1');
  });

  it('get() of an unknown id throws not_found', async () => {
    const s = setup();
    let err: unknown;
    try {
      await s.service.get(LOCAL_CALLER, 'nope');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PyboxError);
    expect((err as PyboxError).code).toBe('not_found');
    expect((err as PyboxError).message).toBe('no execution with id nope');
  });

  it('history() and stats() come from the store', async () => {
    const s = setup();
    await s.service.execute(LOCAL_CALLER, request());
    await s.service.execute(LOCAL_CALLER, request());
    expect((await s.service.history(LOCAL_CALLER, { limit: 1 })).items.map((r) => r.id)).toEqual(['id-2']);
    expect((await s.service.stats(LOCAL_CALLER)).total).toBe(2);
  });
});

describe('execute: concurrency', () => {
  it('runs through the gate: a full queue refuses with queue_full and records nothing', async () => {
    const hold = deferred<SandboxOutcome>();
    const s = setup(() => hold.promise, { gate: new ConcurrencyGate(1, 0, 9) });
    const first = s.service.execute(LOCAL_CALLER, request());
    await new Promise((r) => setTimeout(r, 0));
    const e = await rejection(s.service.execute(LOCAL_CALLER, request()));
    expect(e.code).toBe('queue_full');
    expect(e.retryAfterS).toBe(9);
    hold.resolve(outcome('finished', { report: runReport() }));
    expect((await first).status).toBe('completed');
    expect(s.store.saved.map((r) => r.id)).toEqual(['id-1']);
  });

  it('a sandbox that throws rejects execute and frees the slot', async () => {
    const boom = new PyboxError('engine_unavailable', 'down', { retryAfterS: 5 });
    let calls = 0;
    const s = setup(() => {
      calls++;
      if (calls === 1) throw boom;
      return outcome('finished', { report: runReport() });
    }, { gate: new ConcurrencyGate(1, 0, 1) });
    await expect(s.service.execute(LOCAL_CALLER, request())).rejects.toBe(boom);
    expect(s.store.saved).toHaveLength(0);
    expect((await s.service.execute(LOCAL_CALLER, request())).status).toBe('completed');
    expect(s.gate.stats).toEqual({ running: 0, queued: 0 });
  });
});

describe('readiness', () => {
  it('is ready when engine, image and store are fine', async () => {
    const s = setup();
    expect(await s.service.readiness()).toEqual({ ready: true, checks: { engine: true, image: true, store: true }, runtime: 'runc', image: IMAGE });
    expect(s.probe.asked).toEqual([IMAGE]);
  });

  it('is not ready when the engine does not answer, and does not ask for the image', async () => {
    const s = setup();
    s.probe.pingResult = false;
    expect(await s.service.readiness()).toEqual({
      ready: false,
      checks: { engine: false, image: false, store: true },
      runtime: 'runc',
      image: IMAGE,
      message: 'the Docker engine does not answer',
    });
    expect(s.probe.asked).toEqual([]);
  });

  it('is not ready when the image is missing, and says how to build it', async () => {
    const s = setup();
    s.probe.image = false;
    const r = await s.service.readiness();
    expect(r.ready).toBe(false);
    expect(r.checks).toEqual({ engine: true, image: false, store: true });
    expect(r.message).toBe(`the sandbox image ${IMAGE} is missing: run \`npm run setup\``);
  });

  it('treats an image check that throws as missing', async () => {
    const s = setup();
    s.probe.image = new Error('boom');
    const r = await s.service.readiness();
    expect(r.ready).toBe(false);
    expect(r.checks.image).toBe(false);
  });

  it('is not ready when the store is unhealthy', async () => {
    const s = setup();
    s.store.isHealthy = false;
    const r = await s.service.readiness();
    expect(r.ready).toBe(false);
    expect(r.checks).toEqual({ engine: true, image: true, store: false });
    expect(r.message).toBe('the history store cannot be written');
  });
});

describe('runtimes', () => {
  const probeOut = JSON.stringify({ python: '3.12.7', packages: { numpy: '2.1.0', pandas: 2, matplotlib: '3.9.2' } });

  it('probes the image once and reports python, packages and limits', async () => {
    const s = setup(outcome('finished', { report: runReport(), stdout: probeOut + '\n' }));
    const info = await s.service.runtimes();
    const again = await s.service.runtimes();
    expect(info).toEqual({
      runtime: 'runc',
      availableRuntimes: ['runc'],
      image: IMAGE,
      python: '3.12.7',
      packages: { numpy: '2.1.0', matplotlib: '3.9.2' },
      limits: {
        defaults: { timeoutMs: 30_000, memoryMb: 256, cpus: 1 },
        max: { timeoutMs: 300_000, memoryMb: 2048, cpus: 2 },
        outputBytes: 50_000,
        floodBytes: 1_000_000,
      },
    });
    expect(again).toEqual(info);
    expect(s.sandboxes.jobs).toHaveLength(1);
    expect(s.sandboxes.jobs[0]?.id).toBe('probe-id-1');
    expect(s.store.saved).toHaveLength(0);
  });

  it('reports python null when the probe fails, and probes again next time', async () => {
    let calls = 0;
    const s = setup(() => (++calls === 1 ? outcome('failed', { stdout: 'not json' }) : outcome('finished', { report: runReport(), stdout: probeOut })));
    expect((await s.service.runtimes()).python).toBeNull();
    expect(s.logger.at('warn').map((e) => e.msg)).toEqual(['could not probe the sandbox image']);
    expect((await s.service.runtimes()).python).toBe('3.12.7');
    expect(calls).toBe(2);
  });
});

describe('execute: cancellation', () => {
  const tick = () => new Promise<void>((r) => setTimeout(r, 0));

  it('a request still waiting for a slot when its caller goes away is cancelled, recorded and metered, and never runs', async () => {
    const hold = deferred<SandboxOutcome>();
    const s = setup(() => hold.promise, { gate: new ConcurrencyGate(1, 4, 1) });
    const first = s.service.execute(LOCAL_CALLER, request());
    const client = new AbortController();
    const waiting = s.service.execute(LOCAL_CALLER, request({ code: 'print(2)' }), { signal: client.signal });
    await tick();
    expect(s.gate.stats).toEqual({ running: 1, queued: 1 });
    client.abort('Client connection prematurely closed.');
    const r = ExecutionResult.parse(await waiting);
    expect(r).toMatchObject({ id: 'id-2', status: 'cancelled', success: false, exitCode: null, signal: null, stdout: '', stderr: '', durationMs: 0 });
    expect(r.feedback).toContain('the caller went away');
    expect(r.feedback).toContain('had not started');
    expect(s.gate.stats).toEqual({ running: 1, queued: 0 });
    expect(s.sandboxes.jobs).toHaveLength(1); // only the first ever reached the sandbox side
    expect(s.store.saved.map((x) => [x.id, x.status])).toEqual([['id-2', 'cancelled']]);
    expect((await s.store.usage({ tenant: 'local' }))[0]?.byStatus.cancelled).toBe(1);
    expect((await s.service.stats(LOCAL_CALLER)).byStatus.cancelled).toBe(1);
    hold.resolve(outcome('finished', { report: runReport() }));
    expect((await first).status).toBe('completed');
  });

  it('a caller signal already aborted is recorded as cancelled without running', async () => {
    const s = setup();
    const r = await s.service.execute(LOCAL_CALLER, request(), { signal: AbortSignal.abort() });
    expect(r.status).toBe('cancelled');
    expect(s.sandboxes.jobs).toHaveLength(0);
    expect(s.store.saved).toHaveLength(1);
  });

  it('a running execution gets the abort through its job signal, and a cancelled outcome keeps its output', async () => {
    const started = deferred<SandboxJob>();
    const s = setup(
      (job) =>
        new Promise<SandboxOutcome>((resolve) => {
          started.resolve(job);
          // As the sandbox side does: stop on abort, report what was printed until then.
          job.signal?.addEventListener('abort', () => resolve(outcome('cancelled', { stdout: 'step 1\n', durationMs: 1500 })));
        }),
    );
    const client = new AbortController();
    const running = s.service.execute(LOCAL_CALLER, request(), { signal: client.signal });
    const job = await started.promise;
    expect(job.signal?.aborted).toBe(false);
    client.abort();
    expect(job.signal?.aborted).toBe(true);
    const r = await running;
    expect(r).toMatchObject({ status: 'cancelled', stdout: 'step 1\n', durationMs: 1500, limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 } });
    expect(r.feedback).toContain('the caller went away');
    expect(r.feedback).toContain('had been running for 1.50 s');
    expect(r.feedback).toContain('step 1');
    expect(s.store.saved.map((x) => x.status)).toEqual(['cancelled']);
    expect(s.gate.stats).toEqual({ running: 0, queued: 0 });
  });

  it('a run that finishes although its caller went away is recorded as what it was', async () => {
    const client = new AbortController();
    const s = setup(() => {
      client.abort();
      return outcome('finished', { report: runReport() });
    });
    expect((await s.service.execute(LOCAL_CALLER, request(), { signal: client.signal })).status).toBe('completed');
  });

  it('unhooks itself from the caller signal once recorded', async () => {
    const s = setup();
    const client = new AbortController();
    let listeners = 0;
    const signal = client.signal;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener = ((...a: Parameters<typeof add>) => {
      listeners++;
      add(...a);
    }) as typeof add;
    signal.removeEventListener = ((...a: Parameters<typeof remove>) => {
      listeners--;
      remove(...a);
    }) as typeof remove;
    await s.service.execute(LOCAL_CALLER, request(), { signal });
    expect(listeners).toBe(0);
  });
});

describe('shutdown', () => {
  const tick = () => new Promise<void>((r) => setTimeout(r, 0));

  it('refuses new executions with shutting_down and a Retry-After once it stops accepting, recording nothing', async () => {
    const s = setup();
    expect(s.service.accepting).toBe(true);
    s.service.stopAccepting();
    expect(s.service.accepting).toBe(false);
    const e = await rejection(s.service.execute(LOCAL_CALLER, request()));
    expect(e.code).toBe('shutting_down');
    expect(e.retryAfterS).toBeGreaterThan(0);
    expect(s.sandboxes.jobs).toHaveLength(0);
    expect(s.store.saved).toHaveLength(0);
  });

  it('says it is not ready while shutting down, without probing the engine', async () => {
    const s = setup();
    s.service.stopAccepting();
    const r = await s.service.readiness();
    expect(r.ready).toBe(false);
    expect(r.message).toContain('shutting down');
    expect(s.probe.asked).toEqual([]);
  });

  it('cancels waiting executions at once and lets running ones go on until cancelRunning()', async () => {
    const jobs: SandboxJob[] = [];
    const s = setup(
      (job) =>
        new Promise<SandboxOutcome>((resolve) => {
          jobs.push(job);
          job.signal?.addEventListener('abort', () => resolve(outcome('cancelled', { durationMs: 700 })));
        }),
      { gate: new ConcurrencyGate(1, 4, 1) },
    );
    const running = s.service.execute(LOCAL_CALLER, request());
    const waiting = s.service.execute(LOCAL_CALLER, request());
    await tick();
    expect(s.service.pending).toBe(2);
    s.service.stopAccepting();
    const w = await waiting;
    expect(w).toMatchObject({ status: 'cancelled', durationMs: 0 });
    expect(w.feedback).toContain('shutting down');
    expect(w.feedback).toContain('had not started');
    expect(jobs[0]?.signal?.aborted).toBe(false);
    expect(s.service.pending).toBe(1);
    let settled = false;
    const done = s.service.settled().then(() => (settled = true));
    await tick();
    expect(settled).toBe(false);
    s.service.cancelRunning();
    const r = await running;
    expect(r.status).toBe('cancelled');
    expect(r.feedback).toContain('shutting down');
    expect(r.feedback).toContain('had been running');
    await done;
    expect(s.service.pending).toBe(0);
    expect(s.store.saved.map((x) => x.status)).toEqual(['cancelled', 'cancelled']);
  });

  it('settled() resolves at once when nothing is in flight', async () => {
    await setup().service.settled();
  });

  it('cancels the image probe too', async () => {
    const s = setup((job) => new Promise<SandboxOutcome>((resolve) => job.signal?.addEventListener('abort', () => resolve(outcome('cancelled')))));
    const info = s.service.runtimes();
    await tick();
    s.service.cancelRunning();
    expect((await info).python).toBeNull();
  });
});
