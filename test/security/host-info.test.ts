// Attack class: host information and secrets. The service's environment, the host's processes,
// paths and files, the Docker socket, the kernel's masked files, the runner's own descriptors.
import { release } from 'node:os';
import { describe, expect } from 'vitest';
import { battery, outOf, py, PY_ATTEMPT, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

describe.each(runtimes)('host information and secrets under %s', (runtime) => {
  const sec = battery(runtime);

  sec('the service\'s environment reaches no process of the sandbox', async ({ run, marker }) => {
    const name = `PYBOX_SECRET_${marker}`;
    process.env[name] = `${marker}-value`; // as an API key or a database password would be
    try {
      const r = await run({
        code: py(`
found = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    for what in ("environ", "cmdline"):
        try:
            data = open("/proc/%s/%s" % (pid, what), "rb").read()
        except OSError:
            continue
        if b"${marker}" in data:
            found.append(pid + "/" + what)
out["found"] = found
out["env"] = sorted(os.environ)
try:
    out["init"] = sorted(v.split("=", 1)[0] for v in open("/proc/1/environ").read().split("\\0") if v)
except OSError as e:
    out["init"] = errno.errorcode[e.errno]`),
        env: { GIVEN: 'by the request' },
      });
      expect(outOf(r)).toEqual({
        found: [],
        env: ['GIVEN', 'HOME', 'LANG', 'MPLBACKEND', 'MPLCONFIGDIR', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONUNBUFFERED', 'TMPDIR'],
        // Under runc PID 1 is the runner, non-dumpable (closed to the code). Under gVisor the code
        // has a /proc of its own PID namespace, where PID 1 is its own process, forked from the
        // runner: the environment the runner started with, the image's ENV and the hostname.
        init: runtime === 'runc' ? 'EACCES' : ['HOME', 'HOSTNAME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE'],
      });
    } finally {
      delete process.env[name];
    }
  });

  sec('only the sandbox\'s own processes are visible', async ({ run }) => {
    const r = await run({
      code: py(`
procs = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            procs[int(pid)] = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\\0")[0].decode()
        except OSError:
            pass
out["commands"] = sorted(set(procs.values()))
out["count"] = len(procs)`),
    });
    // runc: the runner (PID 1) and the code; gVisor: the code alone, in a /proc of its own PID namespace.
    expect(outOf(r)).toEqual({ commands: ['python3'], count: runtime === 'runc' ? 2 : 1 });
  });

  sec('there is no Docker socket, nor any other socket of the host', async ({ run }) => {
    const r = await run({
      code: py(`
import stat
socks = []
for root in ("/", "/run", "/var/run", "/tmp", "/var", "/srv", "/mnt", "/home", "/root"):
    for dirpath, dirs, files in os.walk(root):
        if dirpath.startswith(("/proc", "/sys", "/dev")):
            dirs[:] = []
            continue
        for f in files:
            try:
                if stat.S_ISSOCK(os.lstat(os.path.join(dirpath, f)).st_mode):
                    socks.append(os.path.join(dirpath, f))
            except OSError:
                pass
out["sockets"] = sorted(set(socks))
out["docker.sock"] = [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock") if os.path.exists(p)]`),
      timeoutMs: 20_000,
    });
    expect(outOf(r)).toEqual({ sockets: [], 'docker.sock': [] });
  });

  sec('the kernel\'s sensitive files are masked or absent', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
def read(path):
    with open(path, "rb") as f:
        data = f.read(4096)
    if data:
        raise RuntimeError("readable")
for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/kallsyms", "/dev/mem", "/dev/kmsg", "/proc/1/mem"):
    out[path] = attempt(lambda: read(path))
out["/sys/firmware"] = os.listdir("/sys/firmware") if os.path.isdir("/sys/firmware") else []`),
    });
    const out = outOf(r);
    for (const [path, got] of Object.entries(out)) {
      if (path === '/sys/firmware') expect(got).toEqual([]);
      else if (path === '/proc/kallsyms') expect(['ok', 'exc:RuntimeError', 'ENOENT', 'EACCES']).toContain(got); // addresses zeroed for non-root, checked below
      else expect(['ok', 'ENOENT', 'EACCES', 'EPERM', 'EIO'], path).toContain(got); // 'ok' means empty
    }
    if (out['/proc/kallsyms'] === 'exc:RuntimeError') {
      const k = await run({ code: 'print(all(l.startswith("0000000000000000") for l in open("/proc/kallsyms").read().splitlines()))' });
      expect(k.stdout).toBe('True\n'); // kernel addresses are hidden from an unprivileged user
    }
  });

  sec('the runner\'s descriptors and environment are closed to the code (runc)', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
runner = os.getppid()
out["fds"] = attempt(lambda: os.listdir("/proc/%d/fd" % runner))
out["environ"] = attempt(lambda: open("/proc/%d/environ" % runner).read())
out["mem"] = attempt(lambda: open("/proc/%d/mem" % runner, "rb"))`),
    });
    if (runtime === 'runc') {
      // The runner is non-dumpable: /proc of it belongs to root.
      expect(outOf(r)).toEqual({ fds: 'EACCES', environ: 'EACCES', mem: 'EACCES' });
    } else {
      // The code runs in a PID namespace of its own, with a /proc of that namespace: its parent is
      // pid 0 there, with no /proc entry, and the runner is in it under no number.
      expect(outOf(r)).toEqual({ fds: 'ENOENT', environ: 'ENOENT', mem: 'ENOENT' });
    }
  });

  sec('the code cannot uncover the runner\'s /proc from a namespace of its own', async ({ run }) => {
    const r = await run({
      code: py(`
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def call(ok):
    return "ok" if ok == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
r, w = os.pipe()
if os.fork() == 0:  # a process of one thread: a preloaded library's threads would bar unshare
    res = {"unshare": call(libc.unshare(0x10000000 | 0x00020000))}  # user and mount
    res["umount"] = call(libc.umount2(b"/proc", 2))  # MNT_DETACH
    res["others"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid()))
    try:
        res["pid 1 stdout is mine"] = os.stat("/proc/1/fd/1").st_ino == os.fstat(1).st_ino
    except OSError as e:
        res["pid 1 stdout is mine"] = errno.errorcode[e.errno]
    os.write(w, json.dumps(res).encode())
    os._exit(0)
os.close(w)
os.wait()
out.update(json.loads(os.read(r, 65536)))`),
    });
    const out = outOf(r);
    if (runtime === 'runc') {
      // pybox's seccomp profile refuses the namespaces; the runner at PID 1 is non-dumpable.
      expect(out).toMatchObject({ unshare: 'EPERM', umount: 'EPERM', 'pid 1 stdout is mine': 'EACCES' });
    } else {
      // gVisor's kernel lets the code have a user and mount namespace of its own, but the /proc it
      // inherits stays mounted (locked, as Linux locks mounts that came from a more privileged
      // namespace): only the code's own PID namespace is in it, and PID 1 is the code itself.
      expect(out).toEqual({ unshare: 'ok', umount: 'EINVAL', others: [], 'pid 1 stdout is mine': true });
    }
  });

  sec('no path of the host is reachable, and none of pybox\'s files is in the image', async ({ run }) => {
    const r = await run({
      code: py(`
found = []
for root in ("/", ):
    for dirpath, dirs, files in os.walk(root):
        if dirpath.startswith(("/proc", "/sys", "/dev", "/usr/share", "/usr/lib")):
            dirs[:] = []
            continue
        for f in files:
            if f in ("pybox.db", "default.yaml", "package.json", "compose.ts") or f.endswith((".db-wal", ".sqlite")):
                found.append(os.path.join(dirpath, f))
out["found"] = found
out["host dirs"] = [p for p in ("/var/lib/docker", "/etc/docker", "/root/.docker", "/work/main", "/home") if os.path.exists(p) and os.listdir(p)]
out["opt"] = sorted(os.listdir("/opt/pybox"))`),
      timeoutMs: 20_000,
    });
    const out = outOf(r);
    expect(out.found).toEqual([]);
    expect(out['host dirs']).toEqual([]);
    expect((out.opt as string[]).filter((f) => f !== '__pycache__' && f !== 'mpl-cache')).toEqual(['pybox_runner', 'runner.py']);
  });

  sec('the host\'s name is not visible, and the kernel is the host\'s only under runc', async ({ run }) => {
    const r = await run({ code: py('import socket\nout["hostname"] = socket.gethostname()\nout["release"] = os.uname().release\nout["mountinfo"] = "/var/lib/docker" in open("/proc/self/mountinfo").read()') });
    const out = outOf(r);
    expect(out.hostname).toMatch(/^[0-9a-f]{12}$/); // the container's id, not the host's name
    if (runtime === 'runc') {
      // Known, not protected: runc shares the host's kernel, and the image layers' host paths show in mountinfo.
      expect(out.release).toBe(release());
      expect(out.mountinfo).toBe(true);
    } else {
      expect(out.release).not.toBe(release());
      expect(out.mountinfo).toBe(false);
    }
  });
});
