// Attack class: resource exhaustion. Fork and thread bombs, memory bombs, CPU spin, sleeping forever,
// ignoring SIGTERM, stopping itself, descriptor exhaustion, raising one's own limits.
import { readFileSync } from 'node:fs';
import { describe, expect } from 'vitest';
import { battery, outOf, py, PY_ATTEMPT, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

describe.each(runtimes)('resource exhaustion under %s', (runtime) => {
  const sec = battery(runtime);

  sec('a fork bomb whose children stay alive is stopped by the process limit', async ({ run, pybox }) => {
    const r = await run({
      code: py(`
import time
kids = []
try:
    while len(kids) < 5000:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        kids.append(pid)
        if len(kids) % 10 == 0:
            print("forked", len(kids), flush=True)
    out["stopped"] = "never"
except OSError as e:
    out["stopped"] = errno.errorcode[e.errno]
out["count"] = len(kids)`),
      timeoutMs: 15_000,
      memoryMb: 512, // so that under gVisor the process limit, not memory, is what stops it
    });
    if (runtime === 'runc') {
      // pids cgroup: 128 tasks, of which the runner (PID 1) and the program itself are two.
      expect(r.status).toBe('completed');
      expect(outOf(r)).toEqual({ stopped: 'EAGAIN', count: pybox.config.sandbox.pidsLimit - 2 });
    } else {
      // Each process of the code costs gVisor host processes and memory: whichever limit comes first
      // stops the whole sandbox, its process limit (gVisor's kernel exits with code 2, and pybox says
      // so) or its memory (the engine records an OOM kill).
      expect(['internal_error', 'oom']).toContain(r.status);
      if (r.status === 'internal_error') expect(r.error?.message).toMatch(/^gVisor stopped the sandbox \(its kernel exited with code 2\).*process limit/);
      expect(r.stdout).toMatch(/^forked 10\n/);
    }
  });

  sec('an exponential fork bomb (every process forks for ever) ends at the time limit or earlier', async ({ run }) => {
    const r = await run({
      code: 'import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n',
      timeoutMs: 3000,
    });
    if (runtime === 'runc') {
      // 128 processes each holding a Python heap can fill 256 MB before the time is up: then the
      // kernel's own count of OOM kills says so. Either way the host is untouched (the after-checks).
      expect(['timeout', 'oom']).toContain(r.status);
      if (r.status === 'timeout') {
        expect(r.durationMs).toBeGreaterThan(3000 - 100); // the limit counts from the request reaching the sandboxes, a few ms before the code starts
        expect(r.signal).toBe('SIGKILL');
      }
    } else {
      // Whichever limit gVisor meets first: its memory (oom), its host processes (exit 2), or time.
      expect(['timeout', 'oom', 'internal_error']).toContain(r.status);
      if (r.status === 'internal_error') expect(r.error?.message).toMatch(/^gVisor stopped the sandbox/);
    }
  }, { warm: true });

  sec('a thread bomb is stopped by the process limit (runc) or costs gVisor no host threads', async ({ run, pybox }) => {
    const r = await run({
      code: py(`
import threading
ev = threading.Event()
threads = []
try:
    while len(threads) < 1000:
        t = threading.Thread(target=ev.wait)
        t.start()
        threads.append(t)
    out["stopped"] = "never"
except RuntimeError as e:
    out["stopped"] = str(e)
out["count"] = len(threads)
ev.set()`),
      memoryMb: 256,
      timeoutMs: 20_000,
    });
    if (runtime === 'runc') {
      expect(r.status, r.stderr).toBe('completed');
      expect(outOf(r)).toEqual({ stopped: "can't start new thread", count: pybox.config.sandbox.pidsLimit - 2 });
    } else if (r.status === 'completed') {
      // Guest threads are goroutines of gVisor's kernel: a thousand of them fit in the sandbox...
      expect(outOf(r)).toEqual({ stopped: 'never', count: 1000 });
    } else {
      // ...unless the host processes or memory gVisor needs meanwhile reach their limit: then it stops.
      expect(['internal_error', 'oom']).toContain(r.status);
      if (r.status === 'internal_error') expect(r.error?.message).toMatch(/^gVisor stopped the sandbox/);
    }
  });

  sec('a memory bomb is killed at the memory limit and reported as oom', async ({ run }) => {
    const r = await run({
      code: 'print("allocating", flush=True)\nblocks = []\nwhile True:\n    blocks.append(bytearray(8 * 1024 * 1024))\n',
      memoryMb: 128,
      timeoutMs: 20_000,
    });
    expect(r.status).toBe('oom');
    if (runtime === 'runc') expect([r.exitCode, r.signal]).toEqual([137, 'SIGKILL']);
    // gVisor's sandbox is either killed whole by the host (137) or outlives the code, whose
    // allocation failed (exit 1, no traceback): the engine records the OOM either way.
    else expect([[137, 'SIGKILL'], [1, null]]).toContainEqual([r.exitCode, r.signal]);
    expect(r.limits.memoryMb).toBe(128);
    expect(r.stdout).toBe('allocating\n');
    expect(r.feedback).toContain('memory limit of 128 MB');
  });

  sec('a child process over the memory limit is killed; under runc the program goes on', async ({ run }) => {
    const r = await run({
      code: py(`
import subprocess
p = subprocess.run([sys.executable, "-c", "b = []\\nwhile True: b.append(bytearray(8 << 20))"])
out["child"] = p.returncode`),
      memoryMb: 128,
      timeoutMs: 20_000,
    });
    if (runtime === 'runc') {
      // The runner marks the code's processes as the OOM killer's first choice: the child dies, not pybox.
      expect(r.status).toBe('completed');
      expect(outOf(r)).toEqual({ child: -9 });
    } else {
      // gVisor's memory is the sandbox's as a whole: the host's OOM killer may take all of it (oom,
      // as the engine recorded), or gVisor refuses the child's allocation and the program goes on.
      expect(['oom', 'completed'], JSON.stringify(r)).toContain(r.status);
      if (r.status === 'completed') expect(outOf(r).child).not.toBe(0);
    }
  });

  sec('CPU is capped by the kernel: four spinning threads get the CPUs asked for, not the host', async ({ run, containers }) => {
    const spin = run({
      code: 'import threading, time\nt0 = time.time()\ndef spin():\n    while time.time() - t0 < 5:\n        pass\nts = [threading.Thread(target=spin) for _ in range(4)]\n[t.start() for t in ts]\n[t.join() for t in ts]\nprint("done")',
      cpus: 0.5,
      timeoutMs: 20_000,
    });
    // Read the container's CPU controller on the host while it spins.
    let quota: { quota: number; period: number } | null = null;
    let usage: Array<{ t: number; ns: number }> = [];
    for (let i = 0; i < 100 && usage.length < 8; i++) {
      await new Promise((r) => setTimeout(r, 200));
      for (const id of containers()) {
        const cpu = `/sys/fs/cgroup/cpu/docker/${id}`;
        try {
          quota = { quota: Number(readFileSync(`${cpu}/cpu.cfs_quota_us`, 'utf8')), period: Number(readFileSync(`${cpu}/cpu.cfs_period_us`, 'utf8')) };
          usage.push({ t: performance.now(), ns: Number(readFileSync(`/sys/fs/cgroup/cpuacct/docker/${id}/cpuacct.usage`, 'utf8')) });
        } catch {
          // not started yet, or already gone
        }
      }
    }
    const r = await spin;
    expect(r.status).toBe('completed');
    expect(r.limits.cpus).toBe(0.5);
    expect(quota).not.toBeNull();
    expect((quota?.quota ?? 0) / (quota?.period ?? 1)).toBeCloseTo(0.5, 5);
    usage = usage.slice(1); // the first sample may include the start
    // On a loaded host the samples come late and few: what counts is a window of several CFS
    // periods (100 ms each) between two of them, over which the quota holds whatever the bursts.
    const first = usage[0];
    const last = usage.at(-1);
    expect(first && last ? last.t - first.t : 0, `samples: ${JSON.stringify(usage)}`).toBeGreaterThanOrEqual(600);
    if (first && last) {
      const cpus = (last.ns - first.ns) / 1e6 / (last.t - first.t);
      expect(cpus).toBeLessThan(0.5 * 1.3); // CFS lets a period's quota through in bursts
    }
  });

  sec('sleeping for ever ends at the time limit, with the output printed before it', async ({ run }) => {
    const r = await run({ code: 'import time\nprint("going to sleep", flush=True)\ntime.sleep(10**6)', timeoutMs: 2000 });
    expect(r).toMatchObject({ status: 'timeout', signal: 'SIGKILL', stdout: 'going to sleep\n', success: false });
    expect(r.durationMs).toBeGreaterThan(2000 - 100); // the limit counts from the request reaching the sandboxes, a few ms before the code starts
    expect(r.durationMs).toBeLessThan(2000 + 5000);
    expect(r.feedback).toContain('time limit of 2.00 s');
  }, { warm: true });

  sec('ignoring SIGTERM, SIGINT and SIGHUP does not outlive the time limit', async ({ run }) => {
    const r = await run({
      code: 'import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)\n',
      timeoutMs: 2000,
    });
    expect(r.status).toBe('timeout');
    expect(r.signal).toBe('SIGKILL');
    expect(r.durationMs).toBeLessThan(2000 + 5000);
  }, { warm: true });

  sec('a program that stops itself (SIGSTOP) ends at the time limit', async ({ run }) => {
    const r = await run({ code: 'import os, signal\nprint("stopping", flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)\nprint("never")', timeoutMs: 2000 });
    expect(r).toMatchObject({ status: 'timeout', stdout: 'stopping\n' });
    expect(r.durationMs).toBeLessThan(2000 + 5000);
  }, { warm: true });

  sec('a program that stops the runner (its parent) ends at the time limit', async ({ run }) => {
    const r = await run({ code: 'import os, signal, time\nos.kill(os.getppid(), signal.SIGSTOP)\ntime.sleep(60)', timeoutMs: 2000 });
    expect(r.status).toBe('timeout');
    expect(r.durationMs).toBeLessThan(2000 + 5000);
  }, { warm: true });

  sec('descriptors run out at the nofile limit (EMFILE)', async ({ run, pybox }) => {
    const r = await run({
      code: py(`
fds = []
try:
    while len(fds) < 100000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    out["stopped"] = errno.errorcode[e.errno]
out["count"] = len(fds)`),
    });
    expect(r.status).toBe('completed');
    // stdin, stdout, stderr and the runner's pipe for the error report are open already.
    expect(outOf(r)).toEqual({ stopped: 'EMFILE', count: pybox.config.sandbox.nofile - 4 });
  });

  sec('its own hard limits cannot be raised', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
import resource
for name in ("RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE"):
    soft, hard = resource.getrlimit(getattr(resource, name))
    out[name] = [soft, hard, attempt(lambda: resource.setrlimit(getattr(resource, name), (hard * 2 + 1, hard * 2 + 1)))]`),
    });
    expect(r.status).toBe('completed');
    expect(outOf(r)).toEqual({
      RLIMIT_NOFILE: [256, 256, 'exc:ValueError'],
      RLIMIT_FSIZE: [64 * 1024 * 1024, 64 * 1024 * 1024, 'exc:ValueError'],
      RLIMIT_CORE: [0, 0, 'exc:ValueError'],
    });
  });

  sec('a flood of zombies (children never waited for) is held by the process limit', async ({ run, pybox }) => {
    const r = await run({
      code: py(`
n = 0
try:
    while n < 1000:
        if os.fork() == 0:
            os._exit(0)
        n += 1
    out["stopped"] = "never"
except OSError as e:
    out["stopped"] = errno.errorcode[e.errno]
out["count"] = n`),
      timeoutMs: 15_000,
    });
    if (runtime === 'runc') {
      expect(r.status).toBe('completed');
      expect(outOf(r)).toEqual({ stopped: 'EAGAIN', count: pybox.config.sandbox.pidsLimit - 2 });
    } else {
      // gVisor reaps a zombie's host resources: the flood runs until whichever limit gVisor meets
      // first, its memory (oom), its host processes (exit 2) or time, if it does not simply finish.
      expect(['completed', 'timeout', 'oom', 'internal_error']).toContain(r.status);
      if (r.status === 'completed') expect(outOf(r)).toEqual({ stopped: 'never', count: 1000 });
      if (r.status === 'internal_error') expect(r.error?.message).toMatch(/^gVisor stopped the sandbox/);
    }
  });
});
