// Honest outcomes: whatever the code does to itself or to its sandbox is reported as the code's own
// outcome, with the output it printed; `oom` only when the memory limit was really hit; a failure
// of ours (a kill from outside) as internal_error naming it. Under every runtime the engine offers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { docker, postJson, realPybox, runtimesUnderTest, type RealPybox } from '../support/real.ts';

const runtimes = await runtimesUnderTest();

const BEFORE = 'import os, signal, time\nprint("before", flush=True)\n';

describe.each(runtimes)('outcomes under %s', (runtime) => {
  let pybox: RealPybox;

  beforeAll(async () => {
    // No warm pool: each run's container is the only one of this instance, so a test can find it.
    pybox = await realPybox(runtime, { pool: { enabled: false }, concurrency: { maxConcurrent: 2 } });
  });
  afterAll(async () => {
    await pybox?.dispose();
  });

  const post = (body: Record<string, unknown>) => postJson(pybox.app, '/v1/executions', body);
  const run = async (body: Record<string, unknown>): Promise<ExecutionResult> => {
    const res = await post(body);
    expect(res.status, res.text).toBe(200);
    return ExecutionResult.parse(res.json);
  };

  it('the memory limit hit is oom, with the output printed before', async () => {
    const r = await run({ code: `${BEFORE}x = "x" * (400 << 20)\nprint("never")`, memoryMb: 128 });
    expect(r.status, JSON.stringify(r)).toBe('oom');
    expect(r.stdout).toBe('before\n');
  });

  it('a container killed from outside pybox is internal_error naming it', async () => {
    const pending = run({ code: `${BEFORE}time.sleep(30)` });
    let id: string | undefined;
    for (let i = 0; i < 100 && !id; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const list = await docker.listContainers({ filters: { label: [`pybox.instance=${pybox.config.engine.instance}`], status: ['running'] } });
      id = list[0]?.Id;
    }
    expect(id).toBeDefined();
    await new Promise((r) => setTimeout(r, 1500)); // let the code start (its sleep is 30 s)
    // Every running sandbox of this instance: the one running the code is among them, and a warm
    // one may have been taken down meanwhile (the pool replaces what it loses).
    const running = await docker.listContainers({ filters: { label: [`pybox.instance=${pybox.config.engine.instance}`], status: ['running'] } });
    await Promise.all(running.map((c) => docker.getContainer(c.Id).kill().catch(() => undefined)));
    const r = await pending;
    expect(r.status, JSON.stringify(r)).toBe('internal_error');
    expect(r.error?.message).toMatch(/killed from outside pybox/);
    expect(r.stdout).toBe('before\n');
  });

  it('code that SIGKILLs itself is an error with that signal, not oom', async () => {
    const r = await run({ code: `${BEFORE}os.kill(os.getpid(), signal.SIGKILL)` });
    expect(r).toMatchObject({ status: 'error', signal: 'SIGKILL', exitCode: 137, stdout: 'before\n' });
  });

  it('kill(-1, SIGKILL) ends only the code\'s other processes, never the runner', async () => {
    const r = await run({
      code: `${BEFORE}pid = os.fork()\nif pid == 0:\n    time.sleep(30)\n    os._exit(0)\nos.kill(-1, signal.SIGKILL)\n_, st = os.waitpid(pid, 0)\nprint("after", os.WTERMSIG(st))`,
    });
    expect(r).toMatchObject({ status: 'completed', stdout: 'before\nafter 9\n' });
  });

  it('killing its parent, stopping PID 1, SIGTERM/SIGINT to the parent: the code\'s own outcome, with its output', async () => {
    // Under runc the runner is PID 1 and the kernel drops these signals, so the code carries on.
    // Under gVisor (which delivers signals to init) the code runs in a PID namespace of its own: its
    // parent is pid 0 (its own process group) and PID 1 is itself, so it signals itself.
    const cases: Array<[string, { runc: [string, string | null]; runsc: [string, string | null] }]> = [
      ['os.kill(os.getppid(), signal.SIGKILL)', { runc: ['completed', null], runsc: ['error', 'SIGKILL'] }],
      ['os.kill(1, signal.SIGSTOP)', { runc: ['completed', null], runsc: ['timeout', 'SIGKILL'] }],
      ['os.kill(os.getppid(), signal.SIGTERM)', { runc: ['completed', null], runsc: ['error', 'SIGTERM'] }],
      ['os.kill(os.getppid(), signal.SIGINT)', { runc: ['completed', null], runsc: ['error', null] }],
      ['os.killpg(0, signal.SIGKILL)', { runc: ['error', 'SIGKILL'], runsc: ['error', 'SIGKILL'] }],
    ];
    for (const [attack, expected] of cases) {
      // Cold sandboxes (the pool is off here), and the time limit bounds their start too: room for a
      // slow gVisor start on a loaded machine, so that what is checked is what the code did.
      const r = await run({ code: `${BEFORE}${attack}\ntime.sleep(0.3)\nprint("after")`, timeoutMs: 6000 });
      const [status, signal] = expected[runtime];
      expect({ status: r.status, signal: r.signal }, `${attack}: ${JSON.stringify(r)}`).toEqual({ status, signal });
      expect(r.stdout, attack).toBe(status === 'completed' ? 'before\nafter\n' : 'before\n');
      if (attack.includes('SIGINT') && runtime === 'runsc') expect(r.error?.type).toBe('KeyboardInterrupt');
    }
  });

  it('a segfault is an error with SIGSEGV, an abort one with SIGABRT, os._exit(3) exit code 3', async () => {
    const segv = await run({ code: `${BEFORE}import ctypes\nctypes.string_at(0)` });
    expect(segv).toMatchObject({ status: 'error', signal: 'SIGSEGV', exitCode: 139, stdout: 'before\n' });
    const abort = await run({ code: `${BEFORE}os.abort()` });
    expect(abort).toMatchObject({ status: 'error', signal: 'SIGABRT', exitCode: 134, stdout: 'before\n' });
    const exit = await run({ code: `${BEFORE}os._exit(3)` });
    expect(exit).toMatchObject({ status: 'error', signal: null, exitCode: 3, stdout: 'before\n' });
  });

  it('closing every descriptor is the code\'s own outcome', async () => {
    const r = await run({ code: `${BEFORE}os.closerange(0, 1024)\nos._exit(4)` });
    expect(r).toMatchObject({ status: 'error', exitCode: 4, stdout: 'before\n' });
  });

  it('out/ exists before the code runs, owned by the code\'s user', async () => {
    const r = await run({ code: 'import os\nprint(os.path.isdir("out"), os.stat("out").st_uid == os.getuid())\nopen("out/r.txt", "w").write("hi")' });
    expect(r).toMatchObject({ status: 'completed', stdout: 'True True\n' });
    expect(r.files?.map((f) => f.path)).toEqual(['r.txt']);
  });

  it('an env value no process can hold is refused or a failure of ours with its reason, never the code\'s exit 70', async () => {
    const res = await post({ code: 'print(1)', env: { X: '\ud800' } });
    if (res.status === 200) {
      const r = ExecutionResult.parse(res.json);
      expect(r.status).toBe('internal_error');
      expect(r.error?.message).toMatch(/env value of 'X' cannot be passed/);
    } else {
      expect(res.status, res.text).toBe(400);
    }
  });
});
