// Attack class: privilege. The user and its capabilities, setuid binaries, chown, mknod, ptrace,
// namespaces, mounts, keyrings, the kernel interfaces pybox's seccomp profile closes (io_uring,
// bpf, 32-bit system calls, personality), /dev, and the runner itself.
import { describe, expect } from 'vitest';
import { battery, outOf, py, PY_ATTEMPT, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

const SYSCALL = `
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
`;

describe.each(runtimes)('privilege under %s', (runtime) => {
  const sec = battery(runtime);
  const runc = runtime === 'runc';

  sec('the code runs as an unprivileged uid of its own, with no capability at all', async ({ run, pybox }) => {
    const r = await run({
      code: py(`
st = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
out["uid"] = [int(x) for x in st["Uid"].split()]
out["gid"] = [int(x) for x in st["Gid"].split()]
out["groups"] = os.getgroups()
out["caps"] = {k: st[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb") if k in st}
out["nnp"] = st.get("NoNewPrivs", "").strip()`),
    });
    const out = outOf(r) as { uid: number[]; gid: number[]; groups: number[]; caps: Record<string, string>; nnp: string };
    const [base, gid] = pybox.config.sandbox.user.split(':').map(Number) as [number, number];
    expect(new Set(out.uid).size).toBe(1);
    expect(out.uid[0]).toBeGreaterThanOrEqual(base);
    expect(out.uid[0]).toBeLessThan(base + pybox.config.sandbox.uids);
    expect(out.gid).toEqual([gid, gid, gid, gid]);
    expect(out.groups).toEqual([gid]);
    for (const [k, v] of Object.entries(out.caps)) expect(v, k).toBe('0000000000000000');
    if (runc) expect(out.nnp).toBe('1'); // gVisor's status file has no NoNewPrivs line
  });

  sec('a setuid-root binary gains nothing (no-new-privileges)', async ({ run }) => {
    const r = await run({
      code: py(`
import subprocess, time
p = subprocess.Popen(["/usr/bin/passwd"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
time.sleep(0.5)
st = open("/proc/%d/status" % p.pid).read()
out["passwd uid"] = [int(x) for x in [l for l in st.splitlines() if l.startswith("Uid:")][0].split()[1:]]
out["me"] = os.getuid()
p.kill()
p.wait()
out["setuid bit"] = bool(os.stat("/usr/bin/passwd").st_mode & 0o4000)`),
    });
    const out = outOf(r) as { 'passwd uid': number[]; me: number; 'setuid bit': boolean };
    expect(out['setuid bit']).toBe(true);
    expect(out['passwd uid']).toEqual([out.me, out.me, out.me, out.me]); // real, effective, saved, fs: never 0
  });

  sec('becoming root, chown to root and mknod are refused', async ({ run }) => {
    const r = await run({
      code: py(`${PY_ATTEMPT}
open("/tmp/f", "w").close()
out["setuid"] = attempt(lambda: os.setuid(0))
out["setgid"] = attempt(lambda: os.setgid(0))
out["setgroups"] = attempt(lambda: os.setgroups([0]))
out["seteuid"] = attempt(lambda: os.seteuid(0))
out["chown"] = attempt(lambda: os.chown("/tmp/f", 0, 0))
out["chmod setuid"] = attempt(lambda: os.chmod("/usr/bin/python3", 0o4755))`),
    });
    const out = outOf(r);
    // Under gVisor the code runs in a user namespace of its own where uid 0 has no mapping: EINVAL.
    const refused = runtime === 'runsc' ? ['EPERM', 'EINVAL'] : ['EPERM'];
    for (const k of ['setuid', 'setgid', 'setgroups', 'seteuid', 'chown']) expect(refused, k).toContain(out[k]);
    expect(['EPERM', 'EROFS', 'EACCES']).toContain(out['chmod setuid']);
  });

  sec('ptrace is refused (runc: seccomp), and a traced runner is never left stuck (gVisor)', async ({ run }) => {
    const r = await run({
      code: py(`${SYSCALL}
import signal, time
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
out["attach child"] = sc(101, 16, pid, 0, 0)
os.kill(pid, 9)
os.waitpid(pid, 0)
out["attach init"] = sc(101, 16, 1, 0, 0)
out["process_vm_readv"] = sc(310, 1, 0, 0, 0, 0, 0)
# Make the runner our tracer, then take a signal: the runner must not stop or crash on it.
out["traceme"] = sc(101, 0, 0, 0, 0)
signal.signal(signal.SIGUSR1, lambda *a: None)
os.kill(os.getpid(), signal.SIGUSR1)
time.sleep(0.2)
out["after"] = "alive"`),
    });
    expect(r.status, r.error?.message).toBe('completed');
    if (runc) {
      expect(outOf(r)).toEqual({ 'attach child': 'EPERM', 'attach init': 'EPERM', process_vm_readv: 'EPERM', traceme: 'EPERM', after: 'alive' });
    } else {
      // gVisor's own kernel serves ptrace between the sandbox's processes; the runner detaches itself.
      expect(outOf(r)).toMatchObject({ 'attach child': 'ok', traceme: 'ok', after: 'alive' });
    }
  });

  sec('namespaces, mounts and chroot are refused (runc), or stay inside gVisor\'s kernel', async ({ run }) => {
    const r = await run({
      code: py(`${SYSCALL}${PY_ATTEMPT}
r, w = os.pipe()
if os.fork() == 0:
    res = {"unshare user": sc(272, 0x10000000), "unshare mount": sc(272, 0x00020000), "unshare net": sc(272, 0x40000000)}
    res["mount tmpfs"] = "ok" if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 else errno.errorcode[ctypes.get_errno()]
    res["mount proc"] = "ok" if libc.mount(b"proc", b"/work", b"proc", 0, None) == 0 else errno.errorcode[ctypes.get_errno()]
    res["setns"] = sc(308, os.open("/proc/1/ns/mnt", os.O_RDONLY), 0) if os.path.exists("/proc/1/ns/mnt") else "ENOENT"
    res["pivot_root"] = sc(155, 0, 0)
    res["chroot"] = attempt(lambda: os.chroot("/tmp"))
    os.write(w, json.dumps(res).encode())
    os._exit(0)
os.close(w)
os.wait()
out.update(json.loads(os.read(r, 65536)))`),
    });
    const out = outOf(r);
    if (runc) {
      // setns: /proc/1 is the non-dumpable runner, so its namespace cannot even be opened.
      for (const [k, v] of Object.entries(out)) expect(k === 'setns' ? ['EPERM', 'ENOENT'] : ['EPERM'], k).toContain(v);
    } else {
      // A user namespace of gVisor's kernel: "root" in it reaches nothing of the host. Older gVisor
      // refuses to mount even there; since 2024 a mount inside it is a mount of gVisor's kernel (the
      // battery's host checks after the case prove nothing of the host changed).
      expect(['EPERM', 'ok']).toContain(out['mount tmpfs']);
      expect(['EPERM', 'ok']).toContain(out['mount proc']);
      expect(['ENOENT', 'EPERM']).toContain(out.setns);
      expect(['EPERM', 'EINVAL', 'ENOSYS', 'EFAULT']).toContain(out.pivot_root); // EFAULT: the null paths, checked before any privilege
    }
  });

  sec('keyrings, bpf, perf events and userfaultfd are refused', async ({ run }) => {
    const r = await run({
      code: py(`${SYSCALL}
out["keyctl"] = sc(250, 0, -3, 0)
out["add_key"] = sc(248, 0, 0, 0, 0, -3)
out["request_key"] = sc(249, 0, 0, 0, 0)
out["bpf"] = sc(321, 0, 0, 0)
out["perf_event_open"] = sc(298, 0, 0, -1, -1, 0)
out["userfaultfd"] = sc(323, 0)
out["kexec_load"] = sc(246, 0, 0, 0, 0)
out["init_module"] = sc(175, 0, 0, 0)`),
    });
    const out = outOf(r);
    if (runc) for (const [k, v] of Object.entries(out)) expect(v, k).toBe('EPERM');
    else {
      // gVisor implements none of them for the sandbox, but keyrings: since 2024 its kernel keeps
      // session keyrings of its own (never the host's), so keyctl may succeed there.
      const keyrings = new Set(['keyctl', 'add_key', 'request_key']);
      for (const [k, v] of Object.entries(out)) {
        expect(['EPERM', 'EACCES', 'ENOSYS', 'ENODEV', 'EFAULT', 'EINVAL', ...(keyrings.has(k) ? ['ok', 'ENOKEY'] : [])], k).toContain(v);
      }
    }
  });

  sec('io_uring is refused under runc; under gVisor it is gVisor\'s own, never the host\'s', async ({ run }) => {
    const r = await run({
      code: py(`${SYSCALL}
params = ctypes.create_string_buffer(120)
out["io_uring_setup"] = sc(425, 4, ctypes.addressof(params))
out["io_uring_enter"] = sc(426, 0, 0, 0, 0, 0, 0)
out["io_uring_register"] = sc(427, 0, 0, 0, 0)`),
    });
    if (runc) expect(outOf(r)).toEqual({ io_uring_setup: 'EPERM', io_uring_enter: 'EPERM', io_uring_register: 'EPERM' });
    // gVisor's own io_uring (older releases), or none at all (newer ones turn it off by default).
    else expect(['ok', 'ENOSYS']).toContain(outOf(r).io_uring_setup);
  });

  sec('32-bit and x32 system calls are refused: the process is killed (runc) or they fail (gVisor)', async ({ run }) => {
    const r = await run({
      code: py(`
import subprocess
int80 = "import ctypes, mmap\\nm = mmap.mmap(-1, 4096, prot=7)\\nm.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))\\nf = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))\\nprint(f())"
x32 = "import ctypes\\nl = ctypes.CDLL(None, use_errno=True)\\nl.syscall.restype = ctypes.c_long\\nprint(l.syscall(ctypes.c_long(0x40000000 | 39)), ctypes.get_errno())"
for name, code in (("int 0x80", int80), ("x32", x32)):
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    out[name] = [p.returncode, p.stdout.strip()]`),
    });
    if (runc) expect(outOf(r)).toEqual({ 'int 0x80': [-31, ''], x32: [-31, ''] }); // SIGSYS
    else {
      // Both fail inside gVisor: int 0x80 with EBADF (older releases) or ENOSYS, x32 with ENOSYS.
      const out = outOf(r) as { 'int 0x80': [number, string]; x32: [number, string] };
      expect(out.x32).toEqual([0, '-1 38']);
      expect([[0, '-9'], [0, '-38']]).toContainEqual(out['int 0x80']);
    }
  });

  sec('personality() cannot turn off address randomisation or make data executable', async ({ run }) => {
    const r = await run({
      code: py(`${SYSCALL}
out["query"] = sc(135, 0xffffffff)
out["READ_IMPLIES_EXEC"] = sc(135, 0x0400000)
out["ADDR_NO_RANDOMIZE"] = sc(135, 0x0040000)`),
    });
    if (runc) expect(outOf(r)).toEqual({ query: 'ok', READ_IMPLIES_EXEC: 'EPERM', ADDR_NO_RANDOMIZE: 'EPERM' });
    else expect(outOf(r)).toMatchObject({ READ_IMPLIES_EXEC: 'EINVAL', ADDR_NO_RANDOMIZE: 'EINVAL' });
  });

  sec('/dev holds only the harmless devices', async ({ run }) => {
    const r = await run({ code: py('out["dev"] = sorted(os.listdir("/dev"))') });
    const dev = outOf(r).dev as string[];
    const allowed = new Set(['fd', 'full', 'mqueue', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero', 'fuse', 'net', 'console']);
    expect(dev.filter((d) => !allowed.has(d))).toEqual([]);
    for (const d of ['mem', 'kmem', 'port', 'kmsg', 'sda', 'vda', 'nvme0', 'loop0']) expect(dev).not.toContain(d);
  });

  sec('the code cannot kill the runner: killing its parent is the code\'s own outcome, with its output', async ({ run }) => {
    const r = await run({ code: 'import os, signal, time\nprint("bye", flush=True)\ntime.sleep(0.2)\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(0.2)\nprint("still here")' });
    if (runc) {
      // The runner is PID 1: the kernel drops the signal, and the code carries on.
      expect(r).toMatchObject({ status: 'completed', stdout: 'bye\nstill here\n' });
    } else {
      // gVisor delivers signals to init, so the code runs in a PID namespace of its own: its parent
      // is pid 0 there, and kill(0) signals its own process group.
      expect(r).toMatchObject({ status: 'error', signal: 'SIGKILL', stdout: 'bye\n' });
    }
    expect(r.durationMs).toBeLessThan(10_000);
  });
});
