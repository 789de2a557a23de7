// Session sandboxes over the real engine, under every runtime it offers: one container per session
// whose runner keeps a live interpreter between calls (engine/session-sandbox.ts, pybox_runner/session.py).
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sandboxSettings } from '../../src/compose.ts';
import { ConfigSchema } from '../../src/config/schema.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { silentLogger } from '../../src/core/logger.ts';
import type { SessionCallJob, SessionCallOutcome, SessionSandbox } from '../../src/core/sessions.ts';
import { DistinctUids } from '../../src/engine/distinct-uids.ts';
import { DockerEngine } from '../../src/engine/docker-engine.ts';
import { imageTags } from '../../src/engine/image.ts';
import { EngineSessionSandboxes } from '../../src/engine/session-sandbox.ts';
import { labelledContainers, runtimesUnderTest } from '../support/real.ts';

const runtimes = await runtimesUnderTest();
const image = imageTags(join(import.meta.dirname, '../../images')).sandbox;

describe.each(runtimes)('session sandboxes under %s', (runtime) => {
  const instance = `test-${randomUUID().slice(0, 8)}`;
  const config = ConfigSchema.parse({ engine: { instance } });
  const [baseUid, gid] = config.sandbox.user.split(':').map(Number) as [number, number];
  let engine: DockerEngine;
  let sessions: EngineSessionSandboxes;
  let session: SessionSandbox;
  let n = 0;

  beforeAll(async () => {
    engine = new DockerEngine({ socketPath: config.engine.socketPath }, config.engine.apiTimeoutMs, { instance, logger: silentLogger });
    sessions = new EngineSessionSandboxes({
      engine: new DistinctUids(engine, baseUid, gid, config.sandbox.uids),
      settings: { ...sandboxSettings(config), instance },
      interruptGraceMs: 1000,
      logger: silentLogger,
      clock: { now: () => Date.now() },
    });
    session = await sessions.open({
      id: randomUUID(),
      image,
      runtime,
      limits: { memoryMb: 256, cpus: 1 },
      env: { GREETING: 'hello' },
      files: [{ path: 'data/in.txt', data: Buffer.from('from the start') }],
    });
  });

  afterAll(async () => {
    await session?.close();
    await sessions?.drain();
    engine?.close();
    expect(await labelledContainers(instance)).toEqual([]);
  });

  const call = (code: string, over: Partial<SessionCallJob> = {}): Promise<SessionCallOutcome> =>
    session.call({ id: `call-${++n}`, code, stdin: '', files: [], timeoutMs: 10_000, ...over });

  const runOf = (o: SessionCallOutcome) => {
    if (o.report?.phase !== 'run') throw new Error(`not a run report: ${JSON.stringify(o.report)}`);
    return o.report;
  };

  it('keeps variables and imports from one call to the next, with the session env and files', async () => {
    const first = await call('import math\nx = 41');
    expect(first).toMatchObject({ kind: 'finished', stateLost: false, sandboxLost: false });
    expect(runOf(first)).toMatchObject({ exitCode: 0, error: null });
    const second = await call('import os\nprint(x + 1, math.floor(math.pi), os.environ["GREETING"], open("data/in.txt").read())', { stdin: 'unused' });
    expect(second.stdout.text()).toBe('42 3 hello from the start\n');
    const third = await call('print(input())', { stdin: 'typed in\n' });
    expect(third.stdout.text()).toBe('typed in\n');
  });

  it('keeps files a call wrote for the next call, and puts, gets and lists files', async () => {
    await call('with open("made.txt", "w") as f:\n    f.write("by a call")');
    expect((await call('print(open("made.txt").read())')).stdout.text()).toBe('by a call\n');
    await session.putFiles([{ path: 'up/one.txt', data: Buffer.from('uploaded') }]);
    expect((await call('print(open("up/one.txt").read())')).stdout.text()).toBe('uploaded\n');
    const withFiles = await call('print(open("given.txt").read())', { files: [{ path: 'given.txt', data: Buffer.from('with the call') }] });
    expect(withFiles.stdout.text()).toBe('with the call\n');
    expect((await session.getFile('made.txt', 100)).toString()).toBe('by a call');
    await expect(session.getFile('made.txt', 3)).rejects.toMatchObject({ code: 'payload_too_large' });
    await expect(session.getFile('absent.txt', 100)).rejects.toMatchObject({ code: 'not_found' });
    const list = await session.listFiles(100);
    expect(list.truncated).toBe(false);
    expect(list.files).toEqual(expect.arrayContaining([{ path: 'made.txt', size: 9 }, { path: 'up/one.txt', size: 8 }, { path: 'data/in.txt', size: 14 }]));
    expect((await session.listFiles(1)).truncated).toBe(true);
  });

  it('never follows a link the code made, in a get, a put or a list', async () => {
    await call('import os\nos.symlink("/etc", "etc")\nos.symlink("/etc/passwd", "passwd")');
    await expect(session.getFile('passwd', 1 << 20)).rejects.toMatchObject({ code: 'not_found' });
    await expect(session.getFile('etc/passwd', 1 << 20)).rejects.toMatchObject({ code: 'not_found' });
    expect((await session.listFiles(1000)).files.map((f) => f.path)).not.toContain('etc/passwd');
    // A put through the link replaces the link with a directory of the session's own.
    await session.putFiles([{ path: 'etc/hosts', data: Buffer.from('mine') }]);
    const after = await call('import os\nprint(os.path.islink("etc"), open("etc/hosts").read())');
    expect(after.stdout.text()).toBe('False mine\n');
  });

  it('streams output through onOutput as the call runs', async () => {
    const chunks: string[] = [];
    let ended = false;
    let beforeEnd = false;
    const o = await call('import time\nprint("first", flush=True)\ntime.sleep(0.5)\nprint("second")', {
      onOutput: (stream, data) => {
        if (stream === 'stdout') chunks.push(data.toString());
        if (!ended) beforeEnd = true;
      },
    });
    ended = true;
    expect(beforeEnd).toBe(true);
    expect(chunks.join('')).toBe('first\nsecond\n');
    expect(o.stdout.text()).toBe('first\nsecond\n');
  });

  it('reports a syntax error as a validation failure and keeps the session', async () => {
    await call('kept = "still here"');
    const bad = await call('def (');
    expect(bad.kind).toBe('finished');
    expect(bad.report).toMatchObject({ phase: 'validation', error: { type: 'SyntaxError', line: 1 } });
    expect(bad.stderr.text()).toContain('SyntaxError');
    expect((await call('print(kept)')).stdout.text()).toBe('still here\n');
  });

  it('interrupts a call past its time limit with KeyboardInterrupt and keeps the state', async () => {
    const o = await call('import time\nsurvivor = 7\ntime.sleep(60)', { timeoutMs: 1000 });
    expect(o).toMatchObject({ kind: 'timeout', stateLost: false, sandboxLost: false });
    expect(runOf(o).error).toMatchObject({ type: 'KeyboardInterrupt', line: 3 });
    expect(o.stderr.text()).not.toContain('pybox_runner');
    expect((await call('print(survivor)')).stdout.text()).toBe('7\n');
  });

  it('cancels a running call when its signal aborts, and keeps the state', async () => {
    const controller = new AbortController();
    const running = call('import time\ncancelled_var = 1\ntime.sleep(60)', { signal: controller.signal, timeoutMs: 60_000 });
    setTimeout(() => controller.abort(), 500);
    const o = await running;
    expect(o).toMatchObject({ kind: 'cancelled', stateLost: false, sandboxLost: false });
    expect((await call('print(cancelled_var)')).stdout.text()).toBe('1\n');
  });

  it('refuses a second call while one runs', async () => {
    const running = call('import time\ntime.sleep(1)');
    await expect(call('print(1)')).rejects.toSatisfy((e: unknown) => e instanceof PyboxError && e.code === 'session_busy');
    await expect(session.putFiles([{ path: 'x.txt', data: Buffer.from('x') }])).rejects.toMatchObject({ code: 'session_busy' });
    expect((await running).kind).toBe('finished');
  });

  it('restarts an interpreter that ignores the interrupt, and the session takes the next call', async () => {
    await call('before_restart = 1');
    const o = await call('import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass', { timeoutMs: 1000 });
    expect(o).toMatchObject({ kind: 'timeout', stateLost: true, sandboxLost: false });
    expect(runOf(o)).toMatchObject({ signal: 9, exitCode: 137 });
    const next = await call('print("before_restart" in globals(), open("made.txt").read())');
    expect(next).toMatchObject({ kind: 'finished', stateLost: false });
    expect(next.stdout.text()).toBe('False by a call\n'); // variables are gone, files stay
  });

  it('reports an interpreter that kills itself as the call\'s own end, and lives on', async () => {
    const killed = await call('import os\nprint("going", flush=True)\nos.kill(os.getpid(), 9)');
    expect(killed).toMatchObject({ kind: 'finished', stateLost: true, sandboxLost: false });
    expect(runOf(killed)).toMatchObject({ signal: 9, exitCode: 137 });
    expect(killed.stdout.text()).toBe('going\n');
    const exited = await call('import os\nos._exit(3)');
    expect(exited).toMatchObject({ kind: 'finished', stateLost: true, sandboxLost: false });
    expect(runOf(exited)).toMatchObject({ signal: null, exitCode: 3 });
    expect((await call('print("again")')).stdout.text()).toBe('again\n');
  });

  it('survives the code signalling every process it can', async () => {
    const o = await call('import os, subprocess\nchild = subprocess.Popen(["sleep", "60"])\nkept = 5\ntry:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass\nprint(child.wait())');
    expect(o).toMatchObject({ kind: 'finished', sandboxLost: false });
    expect(o.stdout.text()).toBe('-9\n');
    const after = await call('print(kept)');
    expect(after.stdout.text()).toBe('5\n');
  });

  it("cannot reach the runner's own descriptors to forge a call's end", async () => {
    const forged = 'b"\\x06\\x00\\x00\\x00\\x02{}"';
    const o = await call(
      `import os\nfor fd in (0, 1):\n    try:\n        f = os.open("/proc/1/fd/%d" % fd, os.O_WRONLY)\n        os.write(f, ${forged})\n        print("wrote", fd)\n    except OSError as e:\n        print("refused", fd)`,
    );
    // runc: the runner (PID 1) is not dumpable; gVisor: PID 1 of the code's own /proc is the interpreter itself.
    expect(o).toMatchObject({ kind: 'finished', sandboxLost: false });
    expect(o.stdout.text()).toMatch(/(refused|wrote) 1\n$/);
    expect((await call('print("still")')).stdout.text()).toBe('still\n');
  });

  it('restarts an interpreter that dies between calls, and the next call says its state was lost', async () => {
    await call('import threading, os, time\nthreading.Thread(target=lambda: (time.sleep(0.3), os._exit(0)), daemon=True).start()');
    await new Promise((r) => setTimeout(r, 1500));
    const o = await call('print("fresh")');
    expect(o).toMatchObject({ kind: 'finished', stateLost: true });
    expect(o.stdout.text()).toBe('fresh\n');
  });

  it('interrupts a call that floods its output, relays no more than the flood limit, and keeps the state', async () => {
    await call('flood_survivor = 3');
    let relayed = 0;
    const o = await call('import sys\nwhile True:\n    sys.stdout.write("x" * 65536)', { onOutput: (s, d) => (relayed += s === 'stdout' ? d.length : 0) });
    expect(o).toMatchObject({ kind: 'output_limit', stateLost: false, sandboxLost: false });
    expect(o.stdout.totalBytes).toBeLessThanOrEqual(config.limits.floodBytes);
    expect(o.stdout.text().length).toBe(config.limits.outputBytes);
    expect(relayed).toBe(config.limits.outputBytes);
    expect((await call('print(flood_survivor)')).stdout.text()).toBe('3\n');
  });

  it('tells the memory limit: the interpreter restarts (runc) or the sandbox goes (gVisor kills it whole)', async () => {
    const small = await sessions.open({ id: randomUUID(), image, runtime, limits: { memoryMb: 160, cpus: 1 }, env: {}, files: [] });
    try {
      await small.call({ id: 'm1', code: 'kept = 1', stdin: '', files: [], timeoutMs: 5000 });
      const o = await small.call({ id: 'm2', code: 'b = b"x" * (400 << 20)', stdin: '', files: [], timeoutMs: 30_000 });
      expect(o).toMatchObject({ kind: 'oom', stateLost: true });
      if (runtime === 'runc') expect(o.sandboxLost).toBe(false);
      if (!o.sandboxLost) {
        const after = await small.call({ id: 'm3', code: 'print("kept" in globals())', stdin: '', files: [], timeoutMs: 5000 });
        expect(after.stdout.text()).toBe('False\n');
      } else {
        expect(await small.ended).toMatch(/memory/);
      }
    } finally {
      await small.close();
    }
  });

  it('removes the container on close, and a closed session refuses calls', async () => {
    const other = await sessions.open({ id: randomUUID(), image, runtime, limits: { memoryMb: 256, cpus: 1 }, env: {}, files: [] });
    expect((await other.call({ id: 'only', code: 'print(2)', stdin: '', files: [], timeoutMs: 5000 })).stdout.text()).toBe('2\n');
    const before = (await labelledContainers(instance)).length;
    await other.close();
    expect((await labelledContainers(instance)).length).toBe(before - 1);
    await expect(other.call({ id: 'late', code: 'print(3)', stdin: '', files: [], timeoutMs: 5000 })).rejects.toMatchObject({ code: 'session_ended' });
  });
});
