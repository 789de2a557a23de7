// `pybox doctor`: a live self-test of the isolation on the running host, now. It runs probe programs
// as executions through the real path (the concurrency gate, the sandbox runner, the container spec,
// the runner in the image) and checks what they saw: the runtime in use, no network, the memory
// limit, a fork bomb contained, a read-only root, no capabilities, no-new-privileges, the seccomp
// profile (or gVisor's own kernel), a clean environment, a non-root user, no Docker socket.
// Nothing here is taken from the configuration on trust: every verdict comes from inside a sandbox.
import { release } from 'node:os';
import type { Config } from '../config/schema.ts';
import type { ConcurrencyGate } from '../core/concurrency.ts';
import type { Clock } from '../core/ports.ts';
import type { RuntimeName } from '../core/schemas.ts';
import { codeJob, type SandboxJob, type SandboxOutcome } from '../core/sandbox.ts';
import { runtimeSummary, type RuntimeChoice } from '../engine/runtime.ts';

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DoctorReport {
  ok: boolean;
  runtime: RuntimeName;
  image: string;
  /** The kernel release of the host (of the service), to compare with the sandbox's. */
  hostKernel: string;
  checks: DoctorCheck[];
  startedAt: string;
  durationMs: number;
}

export interface DoctorDeps {
  sandboxes: { run(job: SandboxJob): Promise<SandboxOutcome> };
  gate: ConcurrencyGate;
  image: string;
  runtime: RuntimeName;
  runtimeChoice: RuntimeChoice;
  availableRuntimes: RuntimeName[];
  limits: Config['limits'];
  sandbox: Config['sandbox'];
  clock: Clock;
  newId: () => string;
}

/** The environment the runner gives the code (images/python/pybox_runner/child.py, BASE_ENV). */
export const SANDBOX_ENV = ['HOME', 'LANG', 'MPLBACKEND', 'MPLCONFIGDIR', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONUNBUFFERED', 'TMPDIR'];
/** What the runner (PID 1) may hold: the image's ENV, the hostname, and the warm pool's preload list. */
const INIT_ENV = new Set(['HOME', 'HOSTNAME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYBOX_PRELOAD']);
const UNREACHABLE = new Set(['ENETUNREACH', 'EHOSTUNREACH']);
const MEMORY_PROBE_MB = 128;

/** Everything the checks need to know from inside one sandbox, as JSON on the last line of stdout. */
const PROBE = String.raw`
import ctypes, errno, json, os, socket
out = {}
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    except Exception as e:
        return "exc:" + type(e).__name__
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def in_child(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            res = fn()
        except Exception as e:
            res = "exc:" + type(e).__name__
        os.write(w, str(res).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    return os.read(r, 1000).decode() or "killed"
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
out["uid"] = os.getuid()
out["gid"] = os.getgid()
out["caps"] = {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb") if k in status}
out["nnp"] = libc.prctl(39, 0, 0, 0, 0)
out["seccompMode"] = status.get("Seccomp", "").strip() or None
out["kernel"] = os.uname().release
out["env"] = sorted(os.environ)
try:
    out["initEnv"] = sorted(v.split("=", 1)[0] for v in open("/proc/1/environ").read().split("\0") if v)
except OSError as e:
    out["initEnv"] = []
out["rootWrite"] = attempt(lambda: open("/usr/pybox-doctor", "w").close())
out["rootMount"] = next((l.split()[3].split(",")[0] for l in open("/proc/self/mounts") if l.split()[1] == "/"), None)
out["imageWrite"] = attempt(lambda: open("/opt/pybox/runner.py", "a").close())
def tcp(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
    finally:
        s.close()
def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"pybox doctor", (host, port))
    finally:
        s.close()
out["interfaces"] = sorted(n for _, n in socket.if_nameindex())
out["tcp"] = attempt(lambda: tcp("192.0.2.1", 80))
out["tcp6"] = attempt(lambda: tcp("2001:db8::1", 80, socket.AF_INET6))
out["udp"] = attempt(lambda: udp("198.51.100.1", 53))
try:
    socket.getaddrinfo("pybox-doctor.invalid", 80)
    out["dns"] = "resolved"
except socket.gaierror:
    out["dns"] = "fails"
params = ctypes.create_string_buffer(120)
out["io_uring"] = sc(425, 4, ctypes.addressof(params))
out["af_alg"] = attempt(lambda: socket.socket(38, socket.SOCK_SEQPACKET).close())
out["keyctl"] = sc(250, 0, -3, 0)
out["bpf"] = sc(321, 0, 0, 0)
out["ptrace"] = in_child(lambda: sc(101, 0, 0, 0, 0))
out["unshare"] = in_child(lambda: sc(272, 0x10000000))
out["mount"] = in_child(lambda: "ok" if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 else errno.errorcode[ctypes.get_errno()])
out["dockerSocket"] = [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(p)]
print(json.dumps(out))
`;

const MEMORY = 'print("allocating", flush=True)\nblocks = []\nwhile True:\n    blocks.append(bytearray(8 << 20))\n';

const FORK_BOMB = String.raw`
import errno, os, time
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
    print("stopped never", len(kids), flush=True)
except OSError as e:
    print("stopped", errno.errorcode.get(e.errno), len(kids), flush=True)
`;

export class Doctor {
  private inFlight: Promise<DoctorReport> | null = null;

  constructor(private readonly deps: DoctorDeps) {}

  /** Runs every check. Concurrent callers share one run: it starts real sandboxes. */
  run(): Promise<DoctorReport> {
    this.inFlight ??= this.examine().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private async examine(): Promise<DoctorReport> {
    const { clock, runtime, image } = this.deps;
    const started = clock.now();
    const hostKernel = release();
    const checks: DoctorCheck[] = [];

    const probe = await this.execute(PROBE, { timeoutMs: 30_000 });
    const facts = parseFacts(probe);
    const memory = await this.execute(MEMORY, { timeoutMs: 30_000, memoryMb: MEMORY_PROBE_MB });
    const bomb = await this.execute(FORK_BOMB, { timeoutMs: 30_000, memoryMb: 512 });
    const after = await this.execute('print("fine")', { timeoutMs: 30_000 });

    if (!facts) {
      const why = probe.kind === 'failed' ? (probe.failure ?? 'the sandbox failed') : `the probe ended with ${probe.kind}: ${probe.stderr.text().slice(-300)}`;
      checks.push({ name: 'probe', ok: false, detail: `the probe program could not report: ${why}` });
    } else {
      checks.push(this.runtimeCheck(facts, hostKernel));
      checks.push(networkCheck(facts));
      checks.push(rootCheck(facts));
      checks.push(userCheck(facts));
      checks.push(capabilityCheck(facts));
      checks.push(nnpCheck(facts));
      checks.push(this.seccompCheck(facts, hostKernel));
      checks.push(environmentCheck(facts));
      checks.push(dockerSocketCheck(facts));
    }
    checks.push(memoryCheck(memory));
    checks.push(this.forkBombCheck(bomb, after));

    return {
      ok: checks.every((c) => c.ok),
      runtime,
      image,
      hostKernel,
      checks,
      startedAt: new Date(started).toISOString(),
      durationMs: Math.round(clock.now() - started),
    };
  }

  private execute(code: string, limits: { timeoutMs: number; memoryMb?: number }): Promise<SandboxOutcome> {
    const { defaults } = this.deps.limits;
    const job = codeJob({
      id: `doctor-${this.deps.newId()}`,
      image: this.deps.image,
      runtime: this.deps.runtime,
      code,
      limits: { timeoutMs: limits.timeoutMs, memoryMb: limits.memoryMb ?? defaults.memoryMb, cpus: defaults.cpus },
    });
    return this.deps.gate.run(() => this.deps.sandboxes.run(job), { tenant: 'pybox-doctor' });
  }

  private runtimeCheck(f: Facts, hostKernel: string): DoctorCheck {
    const { runtime, runtimeChoice, availableRuntimes } = this.deps;
    const seen: RuntimeName = f.kernel === hostKernel ? 'runc' : 'runsc';
    const summary = runtimeSummary(runtimeChoice, runtime, availableRuntimes);
    const kernels = `the sandbox sees kernel ${f.kernel}, the host runs ${hostKernel}`;
    if (seen !== runtime) return { name: 'runtime', ok: false, detail: `configured ${runtime}, but ${kernels}: ${seen === 'runc' ? 'the host kernel is shared' : 'not the host kernel'}` };
    const preferred = runtimeChoice === 'auto' && availableRuntimes.includes('runsc') && runtime !== 'runsc';
    return { name: 'runtime', ok: !preferred, detail: `${summary}; ${kernels}` };
  }

  private seccompCheck(f: Facts, hostKernel: string): DoctorCheck {
    const refused = (v: string) => v !== 'ok';
    if (f.kernel !== hostKernel) {
      // gVisor: an OCI seccomp profile is not applied inside; the code's system calls never reach
      // the host kernel, they are served by gVisor's, which runs under its own filter on the host.
      // Keyrings are gVisor's own since its 2024 releases (a keyring of its kernel, nothing of the
      // host's): refused or served there, either is fine. AF_ALG, bpf and mount must stay refused.
      const ok = refused(f.af_alg) && refused(f.bpf) && refused(f.mount);
      return {
        name: 'seccomp',
        ok,
        detail: `gVisor: system calls are served by its own kernel, never the host's (pybox's profile is not applied inside gVisor); AF_ALG ${f.af_alg}, keyctl ${f.keyctl}, bpf ${f.bpf}, mount ${f.mount}`,
      };
    }
    const probes = { io_uring_setup: f.io_uring, 'socket(AF_ALG)': f.af_alg, keyctl: f.keyctl, bpf: f.bpf, ptrace: f.ptrace, unshare: f.unshare, mount: f.mount };
    const allowed = Object.entries(probes).filter(([, v]) => v !== 'EPERM');
    const filtered = f.seccompMode === '2';
    return {
      name: 'seccomp',
      ok: filtered && allowed.length === 0,
      detail: filtered
        ? allowed.length === 0
          ? `filter on (pybox's profile): ${Object.keys(probes).join(', ')} refused with EPERM`
          : `filter on, but not pybox's profile: ${allowed.map(([k, v]) => `${k} ${v}`).join(', ')}`
        : `no seccomp filter (mode ${f.seccompMode ?? 'unknown'})`,
    };
  }

  private forkBombCheck(bomb: SandboxOutcome, after: SandboxOutcome): DoctorCheck {
    const out = bomb.stdout.text();
    const stopped = /stopped (\S+) (\d+)/.exec(out);
    const recovered = after.kind === 'finished' && after.stdout.text() === 'fine\n';
    const next = recovered ? 'the next run was fine' : `the next run failed (${after.kind})`;
    const limit = this.deps.runtime === 'runsc' ? this.deps.sandbox.pidsLimitRunsc : this.deps.sandbox.pidsLimit;
    if (stopped && stopped[1] === 'EAGAIN') {
      const count = Number(stopped[2]);
      return { name: 'fork bomb', ok: count < limit && recovered, detail: `fork refused (EAGAIN) after ${count} processes (limit ${limit}); ${next}` };
    }
    if (this.deps.runtime === 'runsc' && !stopped && (bomb.kind === 'oom' || (bomb.kind === 'failed' && /^gVisor stopped the sandbox/.test(bomb.failure ?? '')))) {
      const last = /forked (\d+)\n$/.exec(out)?.[1] ?? '0';
      const how = bomb.kind === 'oom' ? 'the memory limit' : `the process limit (${limit} host processes)`;
      return { name: 'fork bomb', ok: recovered, detail: `gVisor stopped the sandbox at ${how} after ${last}+ processes; ${next}` };
    }
    return { name: 'fork bomb', ok: false, detail: `not contained: ${stopped ? `stopped ${stopped[1]} after ${stopped[2]}` : `ended with ${bomb.kind}${bomb.failure ? `: ${bomb.failure}` : ''}`}` };
  }
}

interface Facts {
  uid: number;
  gid: number;
  caps: Record<string, string>;
  nnp: number;
  seccompMode: string | null;
  kernel: string;
  env: string[];
  initEnv: string[];
  rootWrite: string;
  rootMount: string | null;
  imageWrite: string;
  interfaces: string[];
  tcp: string;
  tcp6: string;
  udp: string;
  dns: string;
  io_uring: string;
  af_alg: string;
  keyctl: string;
  bpf: string;
  ptrace: string;
  unshare: string;
  mount: string;
  dockerSocket: string[];
}

function parseFacts(o: SandboxOutcome): Facts | null {
  if (o.kind !== 'finished') return null;
  const line = o.stdout.text().trim().split('\n').at(-1) ?? '';
  try {
    const f = JSON.parse(line) as Facts;
    return typeof f === 'object' && f !== null && typeof f.kernel === 'string' ? f : null;
  } catch {
    return null;
  }
}

function networkCheck(f: Facts): DoctorCheck {
  const ok = f.interfaces.join(',') === 'lo' && UNREACHABLE.has(f.tcp) && UNREACHABLE.has(f.tcp6) && UNREACHABLE.has(f.udp) && f.dns === 'fails';
  return {
    name: 'network',
    ok,
    detail: `interfaces: ${f.interfaces.join(', ')}; TCP ${f.tcp}, IPv6 ${f.tcp6}, UDP ${f.udp} (to documentation addresses); DNS ${f.dns}`,
  };
}

function rootCheck(f: Facts): DoctorCheck {
  const refused = new Set(['EROFS', 'EACCES', 'EPERM']);
  return {
    name: 'root read-only',
    ok: f.rootMount === 'ro' && refused.has(f.rootWrite) && refused.has(f.imageWrite),
    detail: `/ mounted ${f.rootMount ?? 'unknown'}; writing to /usr: ${f.rootWrite}, to the runner: ${f.imageWrite}`,
  };
}

function userCheck(f: Facts): DoctorCheck {
  return { name: 'user', ok: f.uid !== 0 && f.gid !== 0, detail: `uid ${f.uid}, gid ${f.gid}` };
}

function capabilityCheck(f: Facts): DoctorCheck {
  const set = Object.entries(f.caps).filter(([, v]) => !/^0+$/.test(v));
  const names = Object.keys(f.caps);
  return {
    name: 'capabilities',
    ok: names.includes('CapEff') && set.length === 0,
    detail: set.length === 0 ? `none (${names.join(', ')} all 0)` : `held: ${set.map(([k, v]) => `${k}=${v}`).join(', ')}`,
  };
}

function nnpCheck(f: Facts): DoctorCheck {
  return { name: 'no-new-privileges', ok: f.nnp === 1, detail: f.nnp === 1 ? 'set: setuid binaries grant nothing' : `not set (prctl says ${f.nnp})` };
}

function environmentCheck(f: Facts): DoctorCheck {
  const extra = f.env.filter((k) => !SANDBOX_ENV.includes(k));
  const initExtra = f.initEnv.filter((k) => !INIT_ENV.has(k));
  const ok = extra.length === 0 && initExtra.length === 0;
  return {
    name: 'environment',
    ok,
    detail: ok ? `only the runner's allow-list (${f.env.join(', ')}); nothing of the service's` : `unexpected variables: ${[...extra, ...initExtra.map((k) => `init:${k}`)].join(', ')}`,
  };
}

function dockerSocketCheck(f: Facts): DoctorCheck {
  return { name: 'docker socket', ok: f.dockerSocket.length === 0, detail: f.dockerSocket.length === 0 ? 'not reachable' : `present: ${f.dockerSocket.join(', ')}` };
}

function memoryCheck(o: SandboxOutcome): DoctorCheck {
  if (o.kind === 'oom') return { name: 'memory limit', ok: true, detail: `a run allocating without end was killed at ${MEMORY_PROBE_MB} MB (oom)` };
  // Under gVisor an allocation near the limit may be refused instead (its kernel answers ENOMEM):
  // the limit held just the same, and the code saw a MemoryError.
  const r = o.report;
  if (o.kind === 'finished' && r?.phase === 'run' && r.error?.type === 'MemoryError') {
    return { name: 'memory limit', ok: true, detail: `a run allocating without end was refused memory at ${MEMORY_PROBE_MB} MB (MemoryError)` };
  }
  const how = r?.phase === 'run' ? ` (exit code ${r.exitCode}${r.signal ? `, signal ${r.signal}` : ''}${r.error ? `, ${r.error.type}` : ''})` : '';
  return { name: 'memory limit', ok: false, detail: `a run allocating without end ended with ${o.kind}${how}${o.failure ? `: ${o.failure}` : ''}` };
}
