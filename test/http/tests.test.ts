// POST /v1/executions with test cases, in-process through the real service over a fake sandbox
// that runs each case as an echo: what the schema and the service refuse (400 naming the field), and
// the verdicts that come back and are kept.
import { describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import type { Sandboxes } from '../../src/core/ports.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { ExecutionResult, MAX_TESTS } from '../../src/core/schemas.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { capture, defaultConfig, localService, ManualClock, MemoryStore, outcome, RecordingLogger, runReport } from '../unit/fakes.ts';
import { FakeKeys, type ErrorJson } from './fake-service.ts';

/** Each case prints its stdin back, upper-cased when its first argument is --up. */
class EchoCases implements Sandboxes {
  readonly jobs: SandboxJob[] = [];
  async run(job: SandboxJob): Promise<SandboxOutcome> {
    this.jobs.push(job);
    const o = outcome('finished', { report: runReport(), durationMs: 25 });
    o.cases = (job.tests ?? []).map((c) => ({
      kind: 'finished' as const,
      exitCode: 0,
      signal: null,
      error: null,
      durationMs: 2,
      cpuMs: null,
      stdout: capture(c.args[0] === '--up' ? c.stdin.toUpperCase() : c.stdin),
      stderr: capture(''),
    }));
    return o;
  }
}

function server() {
  const sandboxes = new EchoCases();
  const logger = new RecordingLogger();
  let n = 0;
  const service = localService({
    sandboxes,
    engine: { ping: async () => true, imageExists: async () => true },
    store: new MemoryStore(),
    gate: new ConcurrencyGate(2, 10, 3),
    limits: defaultConfig().limits,
    image: 'pybox-python:test',
    runtime: 'runc',
    availableRuntimes: ['runc'],
    clock: new ManualClock(),
    logger,
    newId: () => `exec-${++n}`,
  });
  const app = createApp({ service, logger, bodyLimitBytes: 16 << 20, auth: new Authenticator(new FakeKeys()) });
  const post = (body: unknown) => app.request('/v1/executions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { app, post, sandboxes };
}

async function refused(body: Record<string, unknown>): Promise<{ paths: string[]; body: ErrorJson; ran: number }> {
  const { post, sandboxes } = server();
  const res = await post({ code: 'print(input())', ...body });
  expect(res.status).toBe(400);
  const json = (await res.json()) as ErrorJson;
  expect(json.error.code).toBe('invalid_request');
  return { paths: (json.error.details ?? []).map((d) => d.path), body: json, ran: sandboxes.jobs.length };
}

describe('POST /v1/executions with tests: the schema', () => {
  it.each([
    ['no cases', { tests: [] }, 'tests'],
    ['too many cases', { tests: Array.from({ length: MAX_TESTS + 1 }, () => ({})) }, 'tests'],
    ['an unknown compare mode', { tests: [{ compare: 'fuzzy' }] }, 'tests[0].compare'],
    ['an unknown field in a case', { tests: [{}, { expected: 'x' }] }, 'tests[1].expected'],
    ['an exit code out of range', { tests: [{ expectedExitCode: 256 }] }, 'tests[0].expectedExitCode'],
    ['a relative tolerance over 1', { tests: [{ compare: 'float', tolerance: { relative: 2 } }] }, 'tests[0].tolerance.relative'],
    ['a case time limit below the floor', { tests: [{ timeoutMs: 10 }] }, 'tests[0].timeoutMs'],
    ['a case file escaping the work directory', { tests: [{ files: [{ path: '../x', content: '' }] }] }, 'tests[0].files[0].path'],
    ['a control character in a name', { tests: [{ name: 'a\nb' }] }, 'tests[0].name'],
  ])('refuses %s, naming the field', async (_what, body, path) => {
    const r = await refused(body);
    expect(r.paths).toContain(path);
    expect(r.ran).toBe(0);
  });
});

describe('POST /v1/executions with tests: the service', () => {
  it.each([
    ['stdin beside tests', { stdin: 'x', tests: [{}] }, 'stdin', /must not be given with tests/],
    ['args beside tests', { args: [], tests: [{}] }, 'args', /must not be given with tests/],
    ['a regular expression that does not compile', { tests: [{ expectedStdout: 'a)', compare: 'regex' }] }, 'tests[0].expectedStdout', /not a valid regular expression/],
    ['a case file that is not base64', { tests: [{ files: [{ path: 'f', content: '@@@@', encoding: 'base64' }] }] }, 'tests[0].files[0].content', /not valid base64/],
    ['a duplicate case file', { tests: [{ files: [{ path: 'f', content: '' }, { path: 'f', content: '' }] }] }, 'tests[0].files[1].path', /duplicate path/],
  ])('refuses %s with 400 naming the field', async (_what, body, path, message) => {
    const r = await refused(body);
    expect(r.body.error.details).toEqual([{ path, message: expect.stringMatching(message) }]);
    expect(r.body.error.message).toMatch(new RegExp(`^${path.replace(/[[\].]/g, '\\$&')} `));
    expect(r.ran).toBe(0);
  });

  it('refuses input over inputFilesMaxBytes counted over every case', async () => {
    // 10 MiB by default: 11 cases of 1 MB stdin each (the schema allows 1 MB per stdin).
    const mb = 'x'.repeat(1_000_000);
    const r = await refused({ tests: Array.from({ length: 11 }, () => ({ stdin: mb })) });
    expect(r.paths).toEqual(['tests[10].stdin']);
  });
});

describe('POST /v1/executions with tests: the result', () => {
  it('judges each case and keeps the result for GET', async () => {
    const { app, post, sandboxes } = server();
    const res = await post({
      code: 'import sys; s = sys.stdin.read(); print(s.upper() if sys.argv[1:] == ["--up"] else s, end="")',
      tests: [
        { name: 'plain', stdin: 'hello\n', expectedStdout: 'hello' },
        { name: 'upper', stdin: 'abc', args: ['--up'], expectedStdout: 'ABC', compare: 'exact' },
        { name: 'wrong', stdin: '1 2 3', expectedStdout: '1 2 4', compare: 'tokens' },
        { name: 'pattern', stdin: 'id=42\n', expectedStdout: 'id=\\d+', compare: 'regex' },
        { stdin: '3.14159', expectedStdout: '3.1416', compare: 'float', tolerance: { absolute: 1e-4 } },
        { stdin: 'no expectation' },
      ],
    });
    expect(res.status).toBe(200);
    const result = ExecutionResult.parse(await res.json());
    expect(result.status).toBe('completed');
    expect(result.success).toBe(false);
    expect(result.tests?.map((t) => [t.name, t.verdict])).toEqual([
      ['plain', 'passed'],
      ['upper', 'passed'],
      ['wrong', 'failed'],
      ['pattern', 'passed'],
      ['case 5', 'passed'],
      ['case 6', 'passed'],
    ]);
    expect(result.tests?.[2]?.mismatch).toEqual({ line: 1, expected: '4', actual: '3', message: 'token 3 (line 1) differs: expected "4", got "3"' });
    expect(result.summary).toEqual({ total: 6, passed: 5, failed: 1, error: 0, timeout: 0, oom: 0, output_limit: 0, not_run: 0 });
    expect(result).toMatchObject({ stdout: '', stderr: '', exitCode: null });
    expect(result.feedback).toMatch(/^5 of 6 test cases passed; 1 failed\.\n\nTest case 3 "wrong" failed: token 3/);
    expect(sandboxes.jobs[0]?.tests?.map((c) => c.stdin)).toEqual(['hello\n', 'abc', '1 2 3', 'id=42\n', '3.14159', 'no expectation']);

    const got = await app.request(`/v1/executions/${result.id}`);
    expect(got.status).toBe(200);
    expect(ExecutionResult.parse(await got.json()).tests).toEqual(result.tests);
  });
});
