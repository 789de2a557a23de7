// Test cases against the real engine, under each runtime: one sandbox runs the program once per
// case, each a fresh process in a fresh work directory with its own stdin, args, files and time
// limit; nothing of one case (files in /work, /tmp or /dev/shm, processes) is there for the next.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import type { RuntimeName } from '../../src/core/schemas.ts';
import type { SandboxCase, SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { imageTags } from '../../src/engine/image.ts';
import { directRunner, runtimesUnderTest } from '../support/real.ts';

const image = imageTags(join(import.meta.dirname, '../../images')).sandbox;
const runtimes = await runtimesUnderTest();

const kase = (fields: Partial<SandboxCase> = {}): SandboxCase => ({ stdin: '', args: [], files: [], timeoutMs: 5000, ...fields });

describe.each(runtimes)('test cases under %s', (runtime: RuntimeName) => {
  const config = ConfigSchema.parse({ limits: { outputBytes: 4096, floodBytes: 100_000 } });
  const direct = directRunner(config);
  beforeAll(() => direct.start());
  afterAll(() => direct.stop());

  const run = (code: string, tests: SandboxCase[], extra: Partial<SandboxJob> = {}): Promise<SandboxOutcome> =>
    direct.runner.run({
      id: `cases-${randomUUID()}`,
      image,
      runtime,
      code,
      stdin: '',
      args: [],
      env: {},
      context: {},
      files: [],
      limits: { timeoutMs: 5000, memoryMb: 256, cpus: 1 },
      tests,
      ...extra,
    });

  const summary = (o: SandboxOutcome) => JSON.stringify({ kind: o.kind, failure: o.failure, report: o.report, cases: o.cases?.map((c) => [c.kind, c.exitCode, c.signal, c.stdout.text(), c.stderr.text().slice(-300)]) });

  it('runs each case with its own stdin and args, and reports its output, in order', async () => {
    const o = await run('import sys\nprint(sum(map(int, input().split())), *sys.argv[1:])', [
      kase({ stdin: '1 2\n', args: ['a'] }),
      kase({ stdin: '10 20 30\n', args: ['b', 'c'] }),
      kase({ stdin: '-5 5\n' }),
    ]);
    expect(o.kind, summary(o)).toBe('finished');
    expect(o.report?.phase).toBe('run');
    expect(o.cases?.map((c) => [c.kind, c.exitCode, c.stdout.text()])).toEqual([
      ['finished', 0, '3 a\n'],
      ['finished', 0, '60 b c\n'],
      ['finished', 0, '0\n'],
    ]);
    for (const c of o.cases ?? []) {
      expect(c.durationMs).toBeGreaterThanOrEqual(0);
      expect(c.stdout.truncated).toBe(false);
    }
  });

  it('gives every case the execution\'s files, with its own laid over them', async () => {
    const code = 'import os\nprint(open("shared.txt").read(), open("data/x.txt").read(), sorted(os.listdir(".")))';
    const o = await run(code, [kase(), kase({ files: [{ path: 'data/x.txt', data: Buffer.from('mine') }, { path: 'extra', data: Buffer.from('e') }] })], {
      files: [
        { path: 'shared.txt', data: Buffer.from('shared') },
        { path: 'data/x.txt', data: Buffer.from('theirs') },
      ],
    });
    expect(o.cases?.map((c) => c.stdout.text()), summary(o)).toEqual([
      "shared theirs ['data', 'main.py', 'out', 'shared.txt']\n",
      "shared mine ['data', 'extra', 'main.py', 'out', 'shared.txt']\n",
    ]);
  });

  it('a case sees nothing a previous case left in /work, /tmp or /dev/shm, whatever it did to them', async () => {
    const code = [
      'import os, stat',
      'seen = [p for p in ("/work/left.txt", "/work/out/o.txt", "/tmp/left.txt", "/dev/shm/left", "/tmp/deep", "/work/locked", "/tmp/fifo") if os.path.lexists(p)]',
      'print("seen", seen)',
      'open("/work/left.txt", "w").write("x")',
      'open("/work/out/o.txt", "w").write("x")',
      'open("/tmp/left.txt", "w").write("x")',
      'open("/dev/shm/left", "w").write("x")',
      'd = "/tmp/deep"',
      'os.makedirs(d + "/a" * 40)',
      'os.mkdir("/work/locked"); open("/work/locked/f", "w").write("x"); os.chmod("/work/locked", 0)',
      'os.mkfifo("/tmp/fifo")',
      'os.symlink("/etc/passwd", "/tmp/link")',
      'os.chmod("/work", 0o500)',
    ].join('\n');
    const o = await run(code, [kase(), kase(), kase()]);
    expect(o.cases?.map((c) => [c.kind, c.stdout.text()]), summary(o)).toEqual([
      ['finished', 'seen []\n'],
      ['finished', 'seen []\n'],
      ['finished', 'seen []\n'],
    ]);
  });

  it('no process of a case outlives it: a daemonised grandchild is gone when the next case starts', async () => {
    const code = [
      'import ctypes, os, time',
      'def names():',
      '    out = []',
      '    for p in os.listdir("/proc"):',
      '        try:',
      '            out.append(open("/proc/%s/comm" % p).read().strip())',
      '        except OSError:',
      '            pass',
      '    return out',
      'print("leftovers", names().count("pybox-leftover"), flush=True)',
      'if os.fork() == 0:',
      '    os.setsid()',
      '    if os.fork() == 0:',
      '        ctypes.CDLL(None).prctl(15, b"pybox-leftover", 0, 0, 0)',
      '        time.sleep(60)',
      '    os._exit(0)',
      // Until the grandchild has named itself (a fork under gVisor on a loaded host is slow).
      'for _ in range(200):',
      '    if names().count("pybox-leftover"):',
      '        break',
      '    time.sleep(0.05)',
      'print("now", names().count("pybox-leftover"))',
    ].join('\n');
    const o = await run(code, [kase(), kase(), kase()]);
    expect(o.cases?.map((c) => [c.kind, c.stdout.text()]), summary(o)).toEqual([
      ['finished', 'leftovers 0\nnow 1\n'],
      ['finished', 'leftovers 0\nnow 1\n'],
      ['finished', 'leftovers 0\nnow 1\n'],
    ]);
  });

  it('a case past its own time limit is a timeout, and the cases after it still run', async () => {
    const code = 'import time\nn = int(input())\nprint("start", n, flush=True)\ntime.sleep(n)\nprint("done", n)';
    const started = Date.now();
    const o = await run(code, [kase({ stdin: '0\n' }), kase({ stdin: '30\n', timeoutMs: 1000 }), kase({ stdin: '0\n' })]);
    expect(Date.now() - started).toBeLessThan(20_000); // not the 30 s of the sleep
    expect(o.kind, summary(o)).toBe('finished');
    const [a, b, c] = o.cases ?? [];
    expect([a?.kind, a?.stdout.text()]).toEqual(['finished', 'start 0\ndone 0\n']);
    expect([b?.kind, b?.exitCode, b?.stdout.text()]).toEqual(['timeout', null, 'start 30\n']);
    expect(b?.durationMs).toBeGreaterThanOrEqual(1000);
    expect([c?.kind, c?.stdout.text()]).toEqual(['finished', 'start 0\ndone 0\n']);
  });

  it('a case that floods is output_limit, its output kept up to the cap, and the next case runs', async () => {
    const code = 'import sys\nif input() == "flood":\n    while True:\n        sys.stdout.write("y" * 1000)\nprint("calm")';
    const o = await run(code, [kase({ stdin: 'flood\n' }), kase({ stdin: 'calm\n' })]);
    const [a, b] = o.cases ?? [];
    expect(a?.kind, summary(o)).toBe('output_limit');
    expect(a?.stdout.text()).toBe('y'.repeat(4096));
    expect(a?.stdout.truncated).toBe(true);
    expect(a?.stdout.totalBytes).toBeGreaterThan(100_000);
    expect([b?.kind, b?.stdout.text()]).toEqual(['finished', 'calm\n']);
  });

  it('a case that SIGKILLs itself ends with signal 9, not oom; an exception is the case\'s error', async () => {
    const code = 'import os\nmode = input()\nprint("before", flush=True)\nif mode == "kill":\n    os.kill(os.getpid(), 9)\nif mode == "raise":\n    raise ValueError("bad")\nprint("after")';
    const o = await run(code, [kase({ stdin: 'kill\n' }), kase({ stdin: 'raise\n' }), kase({ stdin: 'fine\n' })]);
    const [a, b, c] = o.cases ?? [];
    expect([a?.kind, a?.exitCode, a?.signal, a?.stdout.text()], summary(o)).toEqual(['finished', 137, 9, 'before\n']);
    expect([b?.kind, b?.exitCode, b?.error?.type, b?.error?.message]).toEqual(['finished', 1, 'ValueError', 'bad']);
    expect(b?.stderr.text()).toMatch(/ValueError: bad/);
    expect([c?.kind, c?.exitCode, c?.stdout.text()]).toEqual(['finished', 0, 'before\nafter\n']);
  });

  it('a case over the memory limit is oom (under gVisor the sandbox goes with it, and the rest are not_run)', async () => {
    const code = 'mode = input()\nprint("before", flush=True)\nif mode == "big":\n    x = bytearray(600 << 20)\n    print(len(x))\nprint("small")';
    const o = await run(code, [kase({ stdin: 'small\n' }), kase({ stdin: 'big\n' }), kase({ stdin: 'small\n' })], {
      limits: { timeoutMs: 5000, memoryMb: 128, cpus: 1 },
    });
    const [a, b, c] = o.cases ?? [];
    expect([a?.kind, a?.stdout.text()], summary(o)).toEqual(['finished', 'before\nsmall\n']);
    expect(b?.kind, summary(o)).toBe('oom');
    if (o.kind === 'oom') {
      // The whole sandbox was killed for it: what the case printed died with the runner.
      expect(c?.kind).toBe('not_run');
    } else {
      expect(o.kind).toBe('finished');
      expect(b?.stdout.text()).toBe('before\n');
      expect([c?.kind, c?.stdout.text()]).toEqual(['finished', 'before\nsmall\n']);
    }
  });

  it('a syntax error is a validation failure before any case runs', async () => {
    const o = await run('print(1\n', [kase(), kase()]);
    expect(o.kind, summary(o)).toBe('finished');
    expect(o.report?.phase).toBe('validation');
    expect(o.cases?.map((c) => c.kind)).toEqual(['not_run', 'not_run']);
    expect(o.stderr.text()).toMatch(/SyntaxError/);
  });

  it('System V shared memory of a case is gone for the next', async () => {
    const code = [
      'import ctypes',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'KEY, IPC_CREAT, IPC_EXCL = 0x5eed, 0o1000, 0o2000',
      'found = libc.shmget(KEY, 4096, 0o600)',
      'made = libc.shmget(KEY, 4096, IPC_CREAT | IPC_EXCL | 0o600)',
      'print("found" if found >= 0 else "none", "made" if made >= 0 else "failed")',
    ].join('\n');
    const o = await run(code, [kase(), kase()]);
    expect(o.cases?.map((c) => c.stdout.text()), summary(o)).toEqual(['none made\n', 'none made\n']);
  });

  it('the whole run is cancelled with the cases seen so far and the rest not_run', async () => {
    const ac = new AbortController();
    const code = 'import time\nn = int(input())\nprint(n, flush=True)\ntime.sleep(n)';
    const pending = run(code, [kase({ stdin: '0\n' }), kase({ stdin: '30\n', timeoutMs: 60_000 }), kase({ stdin: '0\n' })], { signal: ac.signal });
    setTimeout(() => ac.abort(), 4000);
    const o = await pending;
    expect(o.kind, summary(o)).toBe('cancelled');
    expect(o.cases?.map((c) => c.kind)).toEqual(['finished', 'not_run', 'not_run']);
  }, 60_000);
});
