// Attack class: one test case against the next. Cases of one execution share a sandbox, so a case
// tries everything to reach the case after it: a process left behind that writes into the work
// directory later, stopped or signal-proof processes, a tree deeper than the runner's descriptors,
// signals to every process it can see, and reading other processes' memory, environment and open
// files through /proc (under gVisor the process for the next case already waits while a case runs).
// Whatever a case does, the next one starts clean and every case is reported.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import type { RuntimeName } from '../../src/core/schemas.ts';
import type { SandboxCase, SandboxOutcome } from '../../src/core/sandbox.ts';
import { imageTags } from '../../src/engine/image.ts';
import { directRunner, runtimesUnderTest } from '../support/real.ts';

const image = imageTags(join(import.meta.dirname, '../../images')).sandbox;
const runtimes = await runtimesUnderTest();

/** Every case first reports what it finds of earlier cases, then (by its stdin) attacks the next. */
const PROGRAM = `
import ctypes, os, re, signal, sys, time
mode = sys.stdin.readline().strip()
secret = sys.stdin.readline().strip()
found = []
for root in ("/work", "/tmp", "/dev/shm"):
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            if "pybox-left" in name:
                found.append(os.path.join(dirpath, name))
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        if "pybox-left" in open("/proc/%s/comm" % pid).read():
            found.append("process " + pid)
    except OSError:
        pass
print("found", sorted(found), flush=True)

def daemon(then):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, b"pybox-left", 0, 0, 0)
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(s, signal.SIG_IGN)
            then()
        os._exit(0)
    os.wait()

if mode == "late-writer":
    def later():
        time.sleep(0.3)
        for d in ("/work", "/tmp", "/dev/shm"):
            try:
                open(os.path.join(d, "pybox-left-late"), "w").write("x")
            except OSError:
                pass
        time.sleep(30)
    daemon(later)
elif mode == "stopped":
    daemon(lambda: os.kill(os.getpid(), signal.SIGSTOP))
    time.sleep(0.1)
elif mode == "deep":
    d = "/tmp/pybox-left"
    os.makedirs(d + "/n" * 600)
    os.chmod(d, 0)
elif mode == "signals":
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            for s in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    os.kill(int(pid), s)
                except OSError:
                    pass
    try:
        os.kill(-1, signal.SIGSTOP)
    except OSError:
        pass
elif mode == "snoop":
    got = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        for what in ("mem", "environ", "cmdline", "fd"):
            path = "/proc/%s/%s" % (pid, what)
            try:
                if what == "fd":
                    for fd in os.listdir(path):
                        data = open(os.path.join(path, fd), "rb").read(1 << 20)
                        if b"SECRET-" in data:
                            got.append(path)
                elif what == "mem":
                    with open(path, "rb") as f:
                        for line in open("/proc/%s/maps" % pid):
                            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                            try:
                                f.seek(lo)
                                if b"SECRET-" in f.read(min(hi - lo, 1 << 22)):
                                    got.append(path)
                                    break
                            except OSError:
                                pass
                elif b"SECRET-" in open(path, "rb").read():
                    got.append(path)
            except OSError:
                pass
    print("snooped", sorted(set(got)))
elif mode == "self-snoop":
    # Its own memory: the process is forked from the runner, so whatever the runner held is here.
    got = set()
    with open("/proc/self/mem", "rb") as f:
        for line in open("/proc/self/maps"):
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5].startswith("[v")):
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            try:
                f.seek(lo)
                data = f.read(hi - lo)
            except (OSError, OverflowError, ValueError):
                continue
            got.update(re.findall(rb"SECRET-([0-9]+)-[0-9a-f]{8}-", data))
    mine = secret.split("-")[1].encode()
    print("snooped", sorted(int(g) for g in got if g != mine))
print("done")
`;

describe.each(runtimes)('test cases cannot reach each other under %s', (runtime: RuntimeName) => {
  const config = ConfigSchema.parse({});
  const direct = directRunner(config);
  beforeAll(() => direct.start());
  afterAll(() => direct.stop());

  const run = (modes: string[]): Promise<SandboxOutcome> =>
    direct.runner.run({
      id: `isolation-${randomUUID()}`,
      image,
      runtime,
      code: PROGRAM,
      stdin: '',
      args: [],
      env: {},
      context: {},
      files: [],
      limits: { timeoutMs: 10_000, memoryMb: 256, cpus: 1 },
      tests: modes.map((m, i): SandboxCase => ({ stdin: `${m}\nSECRET-${i}-${randomUUID()}\n`, args: [], files: [], timeoutMs: 10_000 })),
    });

  const lines = (o: SandboxOutcome) => o.cases?.map((c) => [c.kind, c.stdout.text().split('\n')[0]]);

  it('processes left behind (late writers, stopped, signal-proof) and deep trees are gone for the next case', async () => {
    const o = await run(['late-writer', 'stopped', 'deep', 'none']);
    expect(o.kind, o.failure).toBe('finished');
    expect(lines(o)).toEqual([
      ['finished', 'found []'],
      ['finished', 'found []'],
      ['finished', 'found []'],
      ['finished', 'found []'],
    ]);
  });

  it('signals to every process a case can see stop neither the runner nor the next case', async () => {
    const o = await run(['signals', 'none', 'signals', 'none']);
    expect(o.kind, o.failure).toBe('finished');
    expect(o.cases?.map((c) => c.kind)).toEqual(['finished', 'finished', 'finished', 'finished']);
    expect(o.cases?.[1]?.stdout.text()).toBe('found []\ndone\n');
    expect(o.cases?.[3]?.stdout.text()).toBe('found []\ndone\n');
  });

  it('no case finds another case\'s input in its own memory, inherited from the runner', async () => {
    const o = await run(['self-snoop', 'self-snoop', 'self-snoop']);
    expect(o.kind, o.failure).toBe('finished');
    for (const c of o.cases ?? []) {
      expect(c.kind, c.stderr.text()).toBe('finished');
      expect(c.stdout.text()).toBe('found []\nsnooped []\ndone\n');
    }
  });

  it('no case reads another case\'s input through /proc (memory, environment, open files)', async () => {
    const o = await run(['snoop', 'snoop', 'snoop']);
    expect(o.kind, o.failure).toBe('finished');
    for (const c of o.cases ?? []) {
      expect(c.kind).toBe('finished');
      expect(c.stdout.text()).toMatch(/^found \[\]\nsnooped \[\]\ndone\n$/);
    }
  });
});
