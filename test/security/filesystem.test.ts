// Attack class: the file system. Filling every writable place, inode floods, huge sparse files,
// writing to the image and to the files the engine provides, executing from the writable places.
import { describe, expect } from 'vitest';
import { battery, outOf, py, PY_ATTEMPT, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

const FILL = `
def fill(path, limit_mb=200):
    n = 0
    try:
        with open(path, "wb") as f:
            while n < limit_mb:
                f.write(b"x" * (1 << 20))
                f.flush()
                n += 1
        return [n, "never"]
    except OSError as e:
        return [n, errno.errorcode[e.errno]]
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
`;

describe.each(runtimes)('the file system under %s', (runtime) => {
  const sec = battery(runtime);
  // gVisor keeps tmpfs pages in its own memory, which counts against the limit with gVisor's kernel.
  const memoryMb = 256;

  sec('filling /tmp stops at its size (ENOSPC), and it is memory, never the host\'s disk', async ({ run, pybox, marker }) => {
    const r = await run({ code: py(`${FILL}\nout["tmp"] = fill("/tmp/${marker}")`), memoryMb, timeoutMs: 20_000 });
    expect(r.status, r.stderr).toBe('completed');
    expect(outOf(r)).toEqual({ tmp: [pybox.config.sandbox.tmpTmpfsMb - 1, 'ENOSPC'] });
  });

  sec('filling /work stops at its size (ENOSPC)', async ({ run, pybox, marker }) => {
    const r = await run({ code: py(`${FILL}\nout["work"] = fill("/work/${marker}")`), memoryMb, timeoutMs: 20_000 });
    expect(r.status, r.stderr).toBe('completed');
    expect(outOf(r)).toEqual({ work: [pybox.config.sandbox.workTmpfsMb - 1, 'ENOSPC'] });
  });

  sec('filling /dev/shm stops at its size (ENOSPC)', async ({ run, pybox, marker }) => {
    const r = await run({ code: py(`${FILL}\nout["shm"] = fill("/dev/shm/${marker}")`), memoryMb, timeoutMs: 20_000 });
    expect(r.status, r.stderr).toBe('completed');
    expect(outOf(r)).toEqual({ shm: [pybox.config.sandbox.shmMb, 'ENOSPC'] });
  });

  sec('an inode flood stops at the inode limit (runc) or at the sandbox\'s memory or time (gVisor)', async ({ run, pybox }) => {
    const r = await run({
      code: py(`
n = 0
os.mkdir("/tmp/flood")
try:
    while n < 30000:
        open("/tmp/flood/%d" % n, "w").close()
        n += 1
    out["stopped"] = "never"
except OSError as e:
    out["stopped"] = errno.errorcode[e.errno]
out["count"] = n`),
      // Under runc the flood ends at the inode limit, and a cold start under load must not eat its
      // time; under gVisor time is one of the limits that may end it.
      timeoutMs: runtime === 'runc' ? 15_000 : 4000,
    });
    if (runtime === 'runc') {
      expect(r.status).toBe('completed');
      const out = outOf(r);
      expect(out.stopped).toBe('ENOSPC');
      expect(out.count).toBeLessThanOrEqual(pybox.config.sandbox.tmpfsInodes);
      expect(out.count).toBeGreaterThan(pybox.config.sandbox.tmpfsInodes - 16);
    } else {
      // Known: gVisor's tmpfs ignores nr_inodes. Each inode is memory of gVisor's kernel, so the
      // flood is bounded by the memory and time limits instead.
      expect(['completed', 'timeout', 'oom']).toContain(r.status);
      if (r.status === 'completed') expect(outOf(r).count).toBeLessThanOrEqual(30000);
    }
  });

  sec('a huge sparse file is refused at the file size limit (EFBIG), never allocated', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
def sparse(path, offset):
    with open(path, "wb") as f:
        f.seek(offset)
        f.write(b"x")
out["10GiB"] = attempt(lambda: sparse("/tmp/sparse", 10 << 30))
out["63MiB"] = attempt(lambda: sparse("/work/sparse", 63 << 20))
out["truncate"] = attempt(lambda: os.truncate("/work/sparse", 1 << 40))`),
    });
    expect(r.status).toBe('completed');
    expect(outOf(r)).toEqual({ '10GiB': 'EFBIG', '63MiB': 'ok', truncate: 'EFBIG' });
  });

  sec('the image is read-only: no file in it can be written, created or removed', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
for path in ("/usr/evil", "/etc/passwd", "/opt/pybox/runner.py", "/bin/sh", "/evil", "/usr/lib/python3/dist-packages/evil.py"):
    out["write " + path] = attempt(lambda: open(path, "a").close())
out["remove runner"] = attempt(lambda: os.unlink("/opt/pybox/runner.py"))
out["rename"] = attempt(lambda: os.rename("/usr/bin/python3", "/usr/bin/py"))
out["mkdir"] = attempt(lambda: os.mkdir("/opt/x"))
out["chmod"] = attempt(lambda: os.chmod("/opt/pybox/runner.py", 0o777))`),
    });
    expect(r.status).toBe('completed');
    const out = outOf(r);
    for (const [what, got] of Object.entries(out)) {
      // Not the owner (EACCES / EPERM) or a read-only mount (EROFS): never written.
      expect(['EROFS', 'EACCES', 'EPERM'], what).toContain(got);
    }
  });

  sec('the files the engine provides (/etc/hosts, /etc/resolv.conf, /etc/hostname) cannot be written', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
for path in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
    out[path] = attempt(lambda: open(path, "a").write("x" * (64 << 20)))`),
    });
    expect(r.status).toBe('completed');
    expect(outOf(r)).toEqual({ '/etc/hosts': 'EACCES', '/etc/resolv.conf': 'EACCES', '/etc/hostname': 'EACCES' });
  });

  sec('the kernel\'s tunables and triggers cannot be written', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
out["/proc/sys/kernel/core_pattern"] = attempt(lambda: open("/proc/sys/kernel/core_pattern", "w").write("|/tmp/x"))
out["/proc/sysrq-trigger"] = attempt(lambda: open("/proc/sysrq-trigger", "w").write("b"))
out["/sys/kernel/uevent_helper"] = attempt(lambda: open("/sys/kernel/uevent_helper", "w").write("/tmp/x"))
out["/sys/fs/cgroup/release_agent"] = attempt(lambda: open("/sys/fs/cgroup/memory/release_agent", "w").write("/tmp/x"))`),
    });
    expect(r.status).toBe('completed');
    const out = outOf(r);
    for (const [what, got] of Object.entries(out)) expect(['EROFS', 'EACCES', 'ENOENT', 'EPERM'], what).toContain(got);
  });

  sec('nothing written to /tmp, /work or /dev/shm can be executed (noexec)', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
import shutil, subprocess, stat
for d in ("/tmp", "/work", "/dev/shm"):
    shutil.copy("/bin/true", d + "/t")
    os.chmod(d + "/t", 0o755)
    out[d] = attempt(lambda: subprocess.run([d + "/t"], check=True))
with open("/tmp/s.sh", "w") as f:
    f.write("#!/bin/sh\\necho ran\\n")
os.chmod("/tmp/s.sh", 0o755)
out["script"] = attempt(lambda: subprocess.run(["/tmp/s.sh"], check=True))`),
    });
    expect(r.status, r.stderr).toBe('completed');
    expect(outOf(r)).toEqual({ '/tmp': 'EACCES', '/work': 'EACCES', '/dev/shm': 'EACCES', script: 'EACCES' });
  });

  sec('a device node cannot be made (runc), or is useless on a nodev mount (gVisor)', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
out["mknod"] = attempt(lambda: os.mknod("/tmp/mem", 0o666 | 0o020000, os.makedev(1, 1)))
out["open"] = attempt(lambda: open("/tmp/mem", "rb").read(1)) if out["mknod"] == "ok" else None`),
    });
    expect(r.status).toBe('completed');
    if (runtime === 'runc') expect(outOf(r)).toEqual({ mknod: 'EPERM', open: null });
    else {
      // gVisor's own tmpfs lets the node be made; it names a device of gVisor's kernel, never the host's /dev/mem.
      const out = outOf(r);
      expect(['EPERM', 'ok']).toContain(out.mknod);
      if (out.mknod === 'ok') expect(['EACCES', 'EPERM', 'ENXIO', 'ENODEV']).toContain(out.open);
    }
  });
});
