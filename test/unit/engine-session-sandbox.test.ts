// engine/session-sandbox.ts over a fake engine: what it sends the runner, how it reads what comes
// back, and how anything hostile or broken from inside the container ends the session.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import type { SessionSandbox } from '../../src/core/sessions.ts';
import { FRAME_CALL_END, FRAME_REPLY, FRAME_STDERR, FRAME_STDOUT, HOST_CALL, HOST_GET, HOST_INTERRUPT, HOST_PUT } from '../../src/engine/protocol.ts';
import { BACKSTOP_MARGIN_MS, EngineSessionSandboxes, SESSION_LABEL } from '../../src/engine/session-sandbox.ts';
import { FakeEngine, RecordingLogger, onStdout, readTar, runnerFrame, testSandboxSettings, type FakeContainerOptions } from './fakes.ts';

const GRACE = 1000;

function setup(opts: FakeContainerOptions = {}) {
  const engine = new FakeEngine(opts);
  const logger = new RecordingLogger();
  const sessions = new EngineSessionSandboxes({
    engine,
    settings: testSandboxSettings({ outputBytes: 10, floodBytes: 1000, outputsMax: 2, outputsMaxBytes: 1024 }),
    interruptGraceMs: GRACE,
    logger,
    clock: { now: () => Date.now() },
  });
  return { engine, logger, sessions };
}

/** The host frames written after the payload (the socket's first write). */
function hostFrames(writes: Buffer[]): Array<[number, Buffer]> {
  const buf = Buffer.concat(writes.slice(1));
  const out: Array<[number, Buffer]> = [];
  for (let i = 0; i + 5 <= buf.length; ) {
    const size = buf.readUInt32BE(i + 1);
    out.push([buf[i] ?? 0, buf.subarray(i + 5, i + 5 + size)]);
    i += 5 + size;
  }
  return out;
}

const tick = () => new Promise((r) => setImmediate(r));
const json = (kind: number, v: unknown) => onStdout(runnerFrame(kind, JSON.stringify(v)));
const end = (id: string, over: Record<string, unknown> = {}) =>
  json(FRAME_CALL_END, { v: 1, id, kind: 'finished', phase: 'run', exitCode: 0, signal: null, error: null, outputs: [], outputsDropped: 0, cpuMs: 1, wallMs: 2, stateLost: false, ...over });

/** Opens a session whose fake runner answers the payload (and the files' PUT). */
async function open(engine: FakeEngine, sessions: EngineSessionSandboxes, files: Array<{ path: string; data: Buffer }> = []): Promise<SessionSandbox> {
  const opening = sessions.open({ id: 's1', image: 'img', runtime: 'runc', limits: { memoryMb: 256, cpus: 1 }, env: { A: 'b' }, files });
  const c = await engine.created.promise;
  await c.socket.firstWrite;
  c.socket.send(json(FRAME_REPLY, { ok: true }));
  if (files.length > 0) {
    while (hostFrames(c.socket.writes).length === 0) await tick();
    c.socket.send(json(FRAME_REPLY, { ok: true }));
  }
  return opening;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('EngineSessionSandboxes.open', () => {
  it('starts a labelled container, sends a payload holding only the request, then the files as a PUT', async () => {
    const { engine, sessions } = setup();
    await open(engine, sessions, [{ path: 'in.txt', data: Buffer.from('x') }]);
    expect(engine.specs[0]?.Labels?.[SESSION_LABEL]).toBe('s1');
    expect(engine.specs[0]?.HostConfig?.NetworkMode).toBe('none');
    const c = engine.last;
    const payload = await readTar(c.socket.writes[0] as Buffer);
    expect(payload.map((e) => e.header.name)).toEqual(['.pybox/request.json']);
    expect(JSON.parse(payload[0]?.data.toString() ?? '')).toEqual({
      session: true,
      env: { A: 'b' },
      caps: { floodBytes: 1000, outputBytes: 10, maxOutputs: 2, maxOutputBytes: 1024, interruptGraceMs: GRACE },
    });
    const [[kind, tar]] = hostFrames(c.socket.writes) as [[number, Buffer]];
    expect(kind).toBe(HOST_PUT);
    expect((await readTar(tar)).map((e) => [e.header.name, e.data.toString()])).toEqual([['in.txt', 'x']]);
  });

  it('fails with the runner\'s reason when it refuses the payload, and removes the container', async () => {
    const { engine, sessions } = setup();
    const opening = sessions.open({ id: 's1', image: 'img', runtime: 'runc', limits: { memoryMb: 256, cpus: 1 }, env: {}, files: [] });
    const c = await engine.created.promise;
    await c.socket.firstWrite;
    c.socket.send(json(FRAME_REPLY, { ok: false, code: 'invalid', message: 'bad env' }));
    await expect(opening).rejects.toThrow(/bad env/);
    await sessions.drain();
    expect(c.calls).toContain('removed');
  });

  it('fails when the sandbox dies before it is ready', async () => {
    const { engine, sessions } = setup({ dieAtStart: true });
    await expect(sessions.open({ id: 's1', image: 'img', runtime: 'runc', limits: { memoryMb: 256, cpus: 1 }, env: {}, files: [] })).rejects.toBeInstanceOf(PyboxError);
    await sessions.drain();
    expect(engine.last.calls).toContain('removed');
  });
});

describe('a session call', () => {
  it('sends the call, relays output within the cap to onOutput, and maps the call end', async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    const c = engine.last;
    const seen: string[] = [];
    const calling = s.call({ id: 'k1', code: 'print(1)', stdin: 'in', files: [], timeoutMs: 5000, onOutput: (st, d) => seen.push(`${st}:${d.toString()}`) });
    await tick();
    const [[kind, body]] = hostFrames(c.socket.writes) as [[number, Buffer]];
    expect(kind).toBe(HOST_CALL);
    expect(JSON.parse(body.toString())).toEqual({ id: 'k1', code: 'print(1)', stdin: 'in', timeoutMs: 5000 });
    c.socket.send(onStdout(runnerFrame(FRAME_STDOUT, '12345678')), onStdout(runnerFrame(FRAME_STDOUT, 'abcdef')), onStdout(runnerFrame(FRAME_STDERR, 'e')));
    c.socket.send(end('k1', { exitCode: 1, error: { type: 'ValueError', message: 'm', line: 2, traceback: 't' }, outputs: [{ type: 'text/plain', data: '42', kind: 'result' }], outputsDropped: 1, kind: 'timeout', stateLost: true }));
    const o = await calling;
    expect(seen).toEqual(['stdout:12345678', 'stdout:ab', 'stderr:e']); // 10 bytes of each stream, no more
    expect(o.stdout.text()).toBe('12345678ab');
    expect(o.stdout.totalBytes).toBe(14);
    expect(o).toMatchObject({ kind: 'timeout', stateLost: true, sandboxLost: false });
    expect(o.report).toMatchObject({ phase: 'run', exitCode: 1, error: { type: 'ValueError' }, outputs: [{ type: 'text/plain', data: '42', kind: 'result' }], outputsDropped: 1, files: [] });
    expect(o.durationMs).toBeLessThanOrEqual(2);
  });

  it('maps a validation failure', async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    const calling = s.call({ id: 'k1', code: 'def (', stdin: '', files: [], timeoutMs: 5000 });
    await tick();
    engine.last.socket.send(end('k1', { phase: 'validation', exitCode: 1, error: { type: 'SyntaxError', message: 'invalid syntax', line: 1 } }));
    expect((await calling).report).toEqual({ v: 1, phase: 'validation', error: { type: 'SyntaxError', message: 'invalid syntax', line: 1 } });
  });

  it('refuses a second call, and a put, while one runs', async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    const calling = s.call({ id: 'k1', code: 'x', stdin: '', files: [], timeoutMs: 5000 });
    await expect(s.call({ id: 'k2', code: 'y', stdin: '', files: [], timeoutMs: 5000 })).rejects.toMatchObject({ code: 'session_busy' });
    await expect(s.putFiles([{ path: 'a', data: Buffer.from('') }])).rejects.toMatchObject({ code: 'session_busy' });
    await tick();
    engine.last.socket.send(end('k1'));
    expect((await calling).kind).toBe('finished');
  });

  it('sends INTERRUPT when the caller aborts', async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    const controller = new AbortController();
    const calling = s.call({ id: 'k1', code: 'x', stdin: '', files: [], timeoutMs: 5000, signal: controller.signal });
    await tick();
    controller.abort();
    controller.abort();
    expect(hostFrames(engine.last.socket.writes).map(([k]) => k)).toEqual([HOST_CALL, HOST_INTERRUPT]);
    engine.last.socket.send(end('k1', { kind: 'cancelled' }));
    expect((await calling).kind).toBe('cancelled');
  });

  it('kills the sandbox when a call outlives its limit, grace and margin (a broken runner)', async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    vi.useFakeTimers();
    const calling = s.call({ id: 'k1', code: 'x', stdin: '', files: [], timeoutMs: 1000 });
    await vi.advanceTimersByTimeAsync(1000 + GRACE + BACKSTOP_MARGIN_MS - 10);
    expect(engine.last.calls).not.toContain('remove');
    await vi.advanceTimersByTimeAsync(20);
    const o = await calling;
    expect(o).toMatchObject({ kind: 'timeout', sandboxLost: true, stateLost: true });
    expect(await s.ended).toMatch(/did not end within its time limit/);
    vi.useRealTimers();
    await sessions.drain();
    expect(engine.last.calls).toContain('removed');
    await expect(s.call({ id: 'k2', code: 'y', stdin: '', files: [], timeoutMs: 1000 })).rejects.toMatchObject({ code: 'session_ended' });
  });

  it('reports the memory limit when the container dies of it during a call', async () => {
    const { engine, sessions } = setup({ waitResult: 137, state: { oomKilled: true } });
    const s = await open(engine, sessions);
    const calling = s.call({ id: 'k1', code: 'x', stdin: '', files: [], timeoutMs: 5000 });
    await tick();
    engine.last.socket.finish();
    expect(await calling).toMatchObject({ kind: 'oom', sandboxLost: true, stateLost: true });
    expect(await s.ended).toMatch(/memory/);
  });
});

describe('hostile frames end the session', () => {
  const cases: Array<[string, (id: string) => Buffer]> = [
    ["a call end for another call", () => end('other')],
    ['a malformed call end', (id) => end(id, { extra: true })],
    ['a reply nobody asked for', () => json(FRAME_REPLY, { ok: true })],
    ['a report', () => json(3, { v: 1, phase: 'setup', message: 'gave up' })],
    ['a test case frame', () => json(5, {})],
    ['output past the flood limit', () => onStdout(runnerFrame(FRAME_STDOUT, 'x'.repeat(1000)), runnerFrame(FRAME_STDOUT, 'x'.repeat(300 * 1024)))],
    ['an unknown frame kind', () => onStdout(runnerFrame(9, ''))],
  ];
  for (const [what, frame] of cases) {
    it(`ends on ${what}`, async () => {
      const { engine, sessions } = setup();
      const s = await open(engine, sessions);
      const calling = s.call({ id: 'k1', code: 'x', stdin: '', files: [], timeoutMs: 5000 });
      await tick();
      engine.last.socket.send(frame('k1'));
      expect(await calling).toMatchObject({ kind: 'failed', sandboxLost: true });
      expect(typeof (await s.ended)).toBe('string');
      await sessions.drain();
      expect(engine.last.calls).toContain('removed');
    });
  }

  it('ends on output while no call runs', async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    engine.last.socket.send(onStdout(runnerFrame(FRAME_STDOUT, 'stray')));
    expect(await s.ended).toMatch(/output while no call runs/);
  });

  it("ends on a file's bytes that are more than asked for", async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    const getting = s.getFile('a.txt', 2);
    await tick();
    expect(hostFrames(engine.last.socket.writes).map(([k]) => k)).toEqual([HOST_GET]);
    engine.last.socket.send(json(FRAME_REPLY, { ok: true, data: Buffer.from('abc').toString('base64') }));
    await expect(getting).rejects.toMatchObject({ code: 'session_ended' });
    expect(await s.ended).toMatch(/not what was asked for/);
  });

  it('maps file errors to their codes', async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    for (const [code, expected] of [
      ['not_found', 'not_found'],
      ['too_large', 'payload_too_large'],
      ['invalid', 'invalid_request'],
    ] as const) {
      const getting = s.getFile('a.txt', 2);
      await tick();
      engine.last.socket.send(json(FRAME_REPLY, { ok: false, code, message: 'm' }));
      await expect(getting).rejects.toMatchObject({ code: expected });
    }
  });
});

describe('close', () => {
  it('removes the container once, ends a running call, and does not resolve ended', async () => {
    const { engine, sessions } = setup();
    const s = await open(engine, sessions);
    const calling = s.call({ id: 'k1', code: 'x', stdin: '', files: [], timeoutMs: 5000 });
    await tick();
    await Promise.all([s.close(), s.close()]);
    expect(await calling).toMatchObject({ kind: 'cancelled', sandboxLost: true });
    expect(engine.last.count('remove')).toBe(1);
    const ended = await Promise.race([s.ended, new Promise((r) => setTimeout(() => r('pending'), 20))]);
    expect(ended).toBe('pending');
  });
});
