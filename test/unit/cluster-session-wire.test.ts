// What the cluster's session jobs carry through Redis: job data and replies are parsed on receipt
// as strictly as a request (anyone who can write Redis can write them), errors keep their codes,
// and a call's outcome survives the trip with its output bounded.
import { describe, expect, it } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import type { SessionCallOutcome } from '../../src/core/sessions.ts';
import { OutputProgress, errorReply, outcomeFromWire, outcomeToWire, parseJobData, parseReply, sessionQueueName, toWireFiles } from '../../src/cluster/session-wire.ts';

const captured = (text: string, truncated = false) => ({ totalBytes: Buffer.byteLength(text), truncated, text: () => text });

const call = (over: Record<string, unknown> = {}) => ({
  v: 1,
  op: 'call',
  tenant: 'acme',
  session: 'sess-1',
  call: { id: 'exec-1', code: 'print(1)', stdin: '', files: toWireFiles([{ path: 'a.txt', data: Buffer.from('hi') }]), timeoutMs: 5000 },
  ...over,
});

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe('session job data', () => {
  it('reads a well-formed job of its own name', () => {
    const data = parseJobData('call', call());
    expect(data).toMatchObject({ op: 'call', tenant: 'acme', session: 'sess-1', call: { id: 'exec-1', files: [{ path: 'a.txt', base64: 'aGk=' }] } });
  });

  it('refuses data whose operation is not the job name, unknown keys, and hostile values', () => {
    expect(parseJobData('close', call())).toBeInstanceOf(Error);
    expect(parseJobData('call', { ...call(), extra: 1 })).toBeInstanceOf(Error);
    expect(parseJobData('call', call({ tenant: '../other' }))).toBeInstanceOf(Error);
    expect(parseJobData('call', call({ session: '12345' }))).toBeInstanceOf(Error);
    expect(parseJobData('call', call({ session: 'a:b' }))).toBeInstanceOf(Error);
    expect(parseJobData('call', call({ v: 2 }))).toBeInstanceOf(Error);
    const badFile = call();
    badFile.call.files = [{ path: '../etc/passwd', base64: 'aGk=' }];
    expect(parseJobData('call', badFile)).toBeInstanceOf(Error);
    const notBase64 = call();
    notBase64.call.files = [{ path: 'a', base64: 'not base64!' }];
    expect(parseJobData('call', notBase64)).toBeInstanceOf(Error);
    expect(parseJobData('get', { v: 1, op: 'get', tenant: 'acme', session: 's', path: 'x', maxBytes: 0 })).toBeInstanceOf(Error);
    expect(parseJobData('interrupt', { v: 1, op: 'interrupt', tenant: 'acme', session: 's', target: 'anything' })).toBeInstanceOf(Error);
    expect(parseJobData('interrupt', { v: 1, op: 'interrupt', tenant: 'acme', session: 's', target: 'call-0b0c1a2e-3d4f-4a5b-8c6d-7e8f9a0b1c2d' })).not.toBeInstanceOf(Error);
    expect(parseJobData('call', null)).toBeInstanceOf(Error);
  });
});

describe('session replies', () => {
  it('turns an error reply back into the PyboxError it was, with its code and Retry-After', () => {
    const reply = errorReply(new PyboxError('session_busy', 'busy\u0000 with\u202e another call', { retryAfterS: 3 }));
    expect(reply).toEqual({ ok: false, code: 'session_busy', message: 'busy  with  another call', retryAfterS: 3 });
    const e = thrown(() => parseReply('call', reply));
    expect(e).toBeInstanceOf(PyboxError);
    expect(e).toMatchObject({ code: 'session_busy', retryAfterS: 3 });
  });

  it('says nothing of an error that is not ours', () => {
    expect(errorReply(new Error('secret path /var/lib/x'))).toEqual({ ok: false, code: 'internal', message: 'the worker holding the session failed this operation' });
  });

  it('refuses a malformed reply as internal, an unknown error code included', () => {
    expect(thrown(() => parseReply('put', { ok: false, code: 'pwned', message: 'x' }))).toMatchObject({ code: 'internal' });
    expect(thrown(() => parseReply('get', { ok: true, size: -1 }))).toMatchObject({ code: 'internal' });
    expect(thrown(() => parseReply('get', { ok: true, size: 1, base64: 'aGk=' }))).toMatchObject({ code: 'internal' });
    expect(thrown(() => parseReply('list', { ok: true, list: { files: [{ path: '', size: 1 }], truncated: false } }))).toMatchObject({ code: 'internal' });
    expect(parseReply('list', { ok: true, list: { files: [{ path: 'a', size: 1 }], truncated: false } })).toEqual({ ok: true, list: { files: [{ path: 'a', size: 1 }], truncated: false } });
  });

  it('reads a session record without the keys it does not know, and refuses one out of bounds', () => {
    const session = { id: 's-1', tenant: 'acme', runtime: 'runc', limits: { timeoutMs: 1000, memoryMb: 256, cpus: 1, outputBytes: 1000 }, idleTimeoutMs: 1000, createdAtMs: 1, lastUsedAtMs: 2, expiresAtMs: 3, calls: 0, node: 'w1' };
    expect(parseReply('open', { ok: true, session: { ...session, later: 'field' } }).session).toEqual(session);
    expect(thrown(() => parseReply('open', { ok: true, session: { ...session, node: 'a b' } }))).toMatchObject({ code: 'internal' });
    expect(thrown(() => parseReply('open', { ok: true, session: { ...session, calls: -1 } }))).toMatchObject({ code: 'internal' });
  });
});

describe("a call's outcome on the wire", () => {
  const outcome: SessionCallOutcome = {
    kind: 'finished',
    report: { v: 1, phase: 'run', exitCode: 0, signal: null, error: null, files: [], filesDropped: 0, flooded: false, cpuMs: 5, outputs: [{ type: 'image/png', data: 'iVBO', kind: 'figure' }], outputsDropped: 1 },
    stdout: captured('héllo\n'),
    stderr: captured('', false),
    durationMs: 12,
    failure: 'why\u0007',
    stateLost: true,
    sandboxLost: false,
  };

  it('comes back as it went, as plain JSON', () => {
    const wire = JSON.parse(JSON.stringify(outcomeToWire(outcome))) as unknown;
    const back = parseReply('call', { ok: true, outcome: wire, session: { id: 's-1', tenant: 'acme', runtime: 'runsc', limits: { timeoutMs: 1000, memoryMb: 256, cpus: 1, outputBytes: 1000 }, idleTimeoutMs: 1000, createdAtMs: 1, lastUsedAtMs: 2, expiresAtMs: 3, calls: 1, node: 'w1' }, runtime: 'runsc' });
    const o = outcomeFromWire(back.outcome, 1000);
    expect(o.stdout.text()).toBe('héllo\n');
    expect(o.stdout.totalBytes).toBe(7);
    expect(o).toMatchObject({ kind: 'finished', report: outcome.report, durationMs: 12, stateLost: true, sandboxLost: false, failure: 'why' });
  });

  it("drops keys of the engine's report core does not read", () => {
    const wire = outcomeToWire({ ...outcome, report: { ...outcome.report, memory: { oomKills: 0 } } as unknown as SessionCallOutcome['report'] });
    const back = parseReply('call', { ok: true, outcome: wire, session: { id: 's-1', tenant: 'acme', runtime: 'runsc', limits: { timeoutMs: 1000, memoryMb: 256, cpus: 1, outputBytes: 1000 }, idleTimeoutMs: 1000, createdAtMs: 1, lastUsedAtMs: 2, expiresAtMs: 3, calls: 1, node: 'w1' }, runtime: 'runsc' });
    expect(back.outcome.report).not.toHaveProperty('memory');
  });

  it("cuts each stream's text at the session's outputBytes and says it was truncated", () => {
    const o = outcomeFromWire(outcomeToWire({ ...outcome, stdout: captured('x'.repeat(50)) }), 10);
    expect(o.stdout.text()).toBe('x'.repeat(10));
    expect(o.stdout.truncated).toBe(true);
    expect(o.stdout.totalBytes).toBe(50);
  });
});

describe('output progress and queue names', () => {
  it('bounds a progress message', () => {
    expect(OutputProgress.safeParse({ seq: 1, chunks: [{ s: 'stdout', b: 'aGk=' }] }).success).toBe(true);
    expect(OutputProgress.safeParse({ seq: 1, chunks: [{ s: 'stdin', b: 'aGk=' }] }).success).toBe(false);
    expect(OutputProgress.safeParse({ seq: 0, chunks: [{ s: 'stdout', b: 'aGk=' }] }).success).toBe(false);
    expect(OutputProgress.safeParse({ seq: 1, chunks: [{ s: 'stdout', b: 'A'.repeat(2 * 1024 * 1024) }] }).success).toBe(false);
  });

  it("names a worker's queue without ':', distinctly for every node id", () => {
    expect(sessionQueueName('w1')).toBe('sessions.w1');
    expect(sessionQueueName('host:8080')).not.toContain(':');
    expect(sessionQueueName('host:8080')).not.toBe(sessionQueueName('host_8080'));
  });
});
