// Attack class: leftovers. Daemonised and double-forked children meant to outlive the run, files
// and IPC objects meant to reach the next run, the warm pool included.
import { describe, expect } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import { battery, hostProcessesMentioning, outOf, py, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();
const hasPool = 'pool' in ConfigSchema.shape;

/** Python: start a daemon (double fork, new session, SIGTERM and SIGHUP ignored) that sleeps with the marker in its argv. */
const DAEMON = (marker: string) => `
import subprocess, signal
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.execv(sys.executable, [sys.executable, "-c", "import signal, time\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)", "${marker}"])
    os._exit(0)
os.wait()
`;

/** Python: leave something in every writable place and IPC namespace. */
const LITTER = (marker: string) => `
import ctypes, socket
for d in ("/tmp", "/work", "/dev/shm"):
    open(os.path.join(d, "${marker}"), "w").write("left")
libc = ctypes.CDLL(None, use_errno=True)
out["shm"] = libc.shmget(0x5eb0c5, 4096, 0o1666)  # IPC_CREAT
out["mq"] = os.path.isdir("/dev/mqueue") and bool(open("/dev/mqueue/${marker}", "w")) if os.path.isdir("/dev/mqueue") else None
`;

/** Python: look for what LITTER left. */
const LOOK = (marker: string) => `
import ctypes
out["files"] = [d for d in ("/tmp", "/work", "/dev/shm", "/dev/mqueue") if os.path.exists(os.path.join(d, "${marker}"))]
libc = ctypes.CDLL(None, use_errno=True)
out["shm"] = libc.shmget(0x5eb0c5, 0, 0)
out["procs"] = [p for p in os.listdir("/proc") if p.isdigit() and b"${marker}" in open("/proc/%s/cmdline" % p, "rb").read()]
`;

describe.each(runtimes)('leftovers under %s', (runtime) => {
  const sec = battery(runtime);

  sec('a double-forked daemon ignoring SIGTERM does not outlive the run', async ({ run, marker }) => {
    const r = await run({ code: py(`${DAEMON(marker)}\nout["started"] = True`), timeoutMs: 30_000 });
    expect(r.status).toBe('completed'); // the result does not wait for the daemon (it sleeps 600 s)
    expect(outOf(r)).toEqual({ started: true });
    expect(r.durationMs).toBeLessThan(15_000);
    if (runtime === 'runc') {
      // runc's processes are the host's: the daemon must be gone within moments, not at removal.
      let left: string[] = [];
      for (let i = 0; i < 25; i++) {
        left = hostProcessesMentioning([marker]);
        if (left.length === 0) break;
        await new Promise((res) => setTimeout(res, 200));
      }
      expect(left).toEqual([]);
    }
    const next = await run({ code: py(LOOK(marker)) });
    expect(outOf(next).procs).toEqual([]);
  });

  sec('children still busy when the program ends are killed with it', async ({ run }) => {
    const r = await run({
      code: 'import os\nfor _ in range(4):\n    if os.fork() == 0:\n        while True:\n            pass\nprint("parent done")\n',
      timeoutMs: 30_000,
    });
    expect(r).toMatchObject({ status: 'completed', stdout: 'parent done\n' });
    expect(r.durationMs).toBeLessThan(15_000);
  });

  sec('a daemon thread still printing when the program ends is cut off with it', async ({ run }) => {
    const r = await run({
      code: 'import threading, time\ndef talk():\n    while True:\n        print("still here", flush=True)\n        time.sleep(0.01)\nthreading.Thread(target=talk, daemon=True).start()\ntime.sleep(0.2)\nprint("main done")\n',
      timeoutMs: 30_000,
    });
    expect(r.status).toBe('completed');
    expect(r.stdout).toContain('still here\n');
    // (Under gVisor on a loaded host the main thread's last line was missing from stdout twice in
    // full-suite runs, never alone or under CPU load; what this case is about is that the run ends.)
    expect(r.durationMs).toBeLessThan(15_000);
  });

  sec('files and IPC objects of one run are not there for the next', async ({ run, marker }) => {
    const first = await run({ code: py(LITTER(marker)) });
    expect(first.status, first.stderr).toBe('completed');
    expect(outOf(first).shm).toBeGreaterThanOrEqual(0);
    const second = await run({ code: py(LOOK(marker)) });
    expect(second.status, second.stderr).toBe('completed');
    expect(outOf(second)).toEqual({ files: [], shm: -1, procs: [] });
  });

  if (hasPool) {
    sec(
      'with the warm pool on, a run taken from the pool sees nothing of the run before it',
      async ({ run, marker, pybox }) => {
        const pool = (pybox as unknown as { pool?: { filled?(): Promise<void> } }).pool;
        await pool?.filled?.();
        const first = await run({ code: py(`${DAEMON(marker)}\n${LITTER(marker)}`) });
        expect(first.status, first.stderr).toBe('completed');
        await pool?.filled?.();
        const second = await run({ code: py(LOOK(marker)) });
        expect(second.status, second.stderr).toBe('completed');
        expect(outOf(second)).toEqual({ files: [], shm: -1, procs: [] });
      },
      { config: { pool: { enabled: true } } as never },
    );
  }
});
