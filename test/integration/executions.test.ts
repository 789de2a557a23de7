// Real executions through the real service and the real engine, under every runtime it offers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { MIN_CPUS, MIN_MEMORY_MB, MIN_TIMEOUT_MS } from '../../src/core/limits.ts';
import { postJson, realPybox, runtimesUnderTest, type RealPybox } from '../support/real.ts';

const runtimes = await runtimesUnderTest();

describe.each(runtimes)('executions under %s', (runtime) => {
  let pybox: RealPybox;

  beforeAll(async () => {
    pybox = await realPybox(runtime, { concurrency: { maxConcurrent: 4 } });
  });
  afterAll(async () => {
    await pybox?.dispose(); // fails if this instance left any container behind
  });

  const run = async (body: Record<string, unknown>): Promise<ExecutionResult> => {
    const res = await postJson(pybox.app, '/v1/executions', body);
    expect(res.status, res.text).toBe(200);
    return ExecutionResult.parse(res.json);
  };

  it('runs print(1) at the smallest limits a request may ask for, and says they were applied', async () => {
    const small = await run({ code: 'print(1)', memoryMb: MIN_MEMORY_MB, cpus: MIN_CPUS, timeoutMs: 60_000 });
    expect(small).toMatchObject({ status: 'completed', stdout: '1\n', limits: { memoryMb: MIN_MEMORY_MB, cpus: MIN_CPUS, timeoutMs: 60_000 } });
    // The shortest time limit, on a sandbox of the default configuration the pool has ready.
    await pybox.pool.filled();
    const quick = await run({ code: 'print(1)', timeoutMs: MIN_TIMEOUT_MS });
    expect(quick).toMatchObject({ status: 'completed', stdout: '1\n', limits: { timeoutMs: MIN_TIMEOUT_MS } });
  });

  it('refuses limits below the floors with 400 invalid_request naming the floor', async () => {
    for (const [field, value, floor] of [
      ['memoryMb', 32, MIN_MEMORY_MB],
      ['cpus', 0.01, MIN_CPUS],
      ['timeoutMs', 1, MIN_TIMEOUT_MS],
    ] as const) {
      const res = await postJson(pybox.app, '/v1/executions', { code: 'print(1)', [field]: value });
      expect(res.status).toBe(400);
      expect(res.json).toMatchObject({ error: { code: 'invalid_request' } });
      expect(res.text).toContain(`${field}: must be at least ${floor}`);
    }
  });

  it('runs code and reports a completed result', async () => {
    const r = await run({ code: 'print("hello from pybox")' });
    expect(r).toMatchObject({ status: 'completed', success: true, exitCode: 0, signal: null, stdout: 'hello from pybox\n', stderr: '' });
    expect(r.truncated).toEqual({ stdout: false, stderr: false });
    expect(r.runtime).toBe(runtime);
    expect(r.durationMs).toBeGreaterThan(0);
    expect(r.cpuMs).toBeGreaterThanOrEqual(0);
    expect(r.feedback).toContain('ran successfully');
    expect(r.feedback).toContain('hello from pybox');
  });

  it('reports an uncaught exception with type, message, the user line and a clean traceback', async () => {
    const r = await run({ code: 'def f(x):\n    return 10 / x\n\nprint("start")\nf(0)\n' });
    expect(r.status).toBe('error');
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('start\n');
    expect(r.error).toMatchObject({ type: 'ZeroDivisionError', message: 'division by zero', line: 2 });
    expect(r.error?.traceback).toContain('File "main.py", line 5, in <module>');
    expect(r.error?.traceback).toContain('File "main.py", line 2, in f');
    expect(r.stderr).toContain('ZeroDivisionError: division by zero');
    for (const text of [r.stderr, r.error?.traceback ?? '']) {
      expect(text).not.toMatch(/runner\.py|\/opt\/pybox|\/tmp\//);
    }
    expect(r.feedback).toContain('ZeroDivisionError: division by zero');
    expect(r.feedback).toContain('line 2');
    expect(r.feedback).toContain('return 10 / x');
  });

  it('measures the CPU time the code used', async () => {
    const r = await run({ code: 'import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\ntime.sleep(0.3)' });
    expect(r.status).toBe('completed');
    expect(r.cpuMs).toBeGreaterThanOrEqual(250);
    expect(r.cpuMs).toBeLessThan(r.durationMs); // the sleep is wall time, not CPU time
  });

  it('gives sys.exit(n) exit code n', async () => {
    const r = await run({ code: 'import sys\nprint("bye")\nsys.exit(3)' });
    expect(r).toMatchObject({ status: 'error', exitCode: 3, stdout: 'bye\n', error: null });
    const ok = await run({ code: 'import sys; sys.exit(0)' });
    expect(ok).toMatchObject({ status: 'completed', exitCode: 0 });
  });

  it('stops a syntax error before running anything, with line, column and caret', async () => {
    const r = await run({ code: 'print("not run")\nx = (1 +\n' });
    expect(r.status).toBe('validation_failed');
    expect(r.stdout).toBe('');
    expect(r.error).toMatchObject({ type: 'SyntaxError', line: 2 });
    const r2 = await run({ code: 'x = 1\nif x == 1\n    print(x)\n' });
    expect(r2.error).toMatchObject({ type: 'SyntaxError', line: 2, column: 10, text: 'if x == 1', caret: '         ^' });
    expect(r2.feedback).toContain('if x == 1\n             ^');
  });

  it('shows a syntax error on a very long line as a window around the column', async () => {
    const line = 'x = ' + '1+'.repeat(300_000) + ')';
    const r = await run({ code: `${line}\n` });
    expect(r.status).toBe('validation_failed');
    expect(r.error?.line).toBe(1);
    expect(r.error?.text?.length).toBe(240);
    expect(r.error?.text?.endsWith(')')).toBe(true);
    expect(r.error?.caret?.trimStart()).toBe('^');
    expect(r.error?.text?.[(r.error?.caret?.length ?? 0) - 1]).toBe(')'); // the caret sits under the error
    expect(r.stderr.length).toBeLessThan(2000);
  });

  it('keeps the report small when the code raises a huge message', async () => {
    const r = await run({ code: 'raise ValueError("x" * 5_000_000)' });
    expect(r.status).toBe('error');
    expect(r.error?.type).toBe('ValueError');
    expect(r.error?.message.length).toBeLessThan(9000);
    expect(r.error?.message).toContain('characters cut');
  });

  it('kills a run at its timeout and keeps the output produced so far', async () => {
    // The time limit also bounds the wait for a sandbox: from a ready one, all of it is the code's.
    await pybox.pool.filled();
    const r = await run({ code: 'import time\nprint("working", flush=True)\nwhile True:\n    time.sleep(0.05)\n', timeoutMs: 1500 });
    expect(r.status).toBe('timeout');
    expect(r.stdout).toBe('working\n');
    expect(r.signal).toBe('SIGKILL');
    expect(r.durationMs).toBeGreaterThan(1400); // the limit counts from the request reaching the sandboxes; the code starts a few ms later
    expect(r.durationMs).toBeLessThan(10_000);
    expect(r.feedback).toContain('time limit of 1.50 s');
  });

  it('reports an out-of-memory kill as oom', async () => {
    const r = await run({ code: 'blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n', memoryMb: 96 });
    expect(r.status, JSON.stringify(r.error)).toBe('oom');
    expect(r.limits.memoryMb).toBe(96);
    expect(r.feedback).toContain('memory limit of 96 MB');
  });

  it('caps each stream while streaming and marks it truncated', async () => {
    const r = await run({ code: 'import sys\nsys.stdout.write("a" * 120000)\nsys.stderr.write("b" * 10)\n' });
    expect(r.status).toBe('completed');
    expect(r.stdout.length).toBe(50_000);
    expect(r.truncated).toEqual({ stdout: true, stderr: false });
    expect(r.stderr).toBe('bbbbbbbbbb');
  });

  it('ends a flood far past the cap with output_limit', async () => {
    const r = await run({ code: 'while True:\n    print("x" * 10000)\n', timeoutMs: 20_000 });
    expect(r.status).toBe('output_limit');
    expect(r.truncated.stdout).toBe(true);
    expect(r.stdout.length).toBe(50_000);
    expect(r.feedback).toContain('printed far too much output');
  });

  it('returns valid JSON for output that is not valid UTF-8', async () => {
    const res = await postJson(pybox.app, '/v1/executions', { code: 'import sys\nsys.stdout.buffer.write(b"ok \\xff\\xfe\\x80 end\\n")' });
    expect(res.status).toBe(200);
    const r = ExecutionResult.parse(res.json);
    expect(r.stdout).toBe('ok \ufffd\ufffd\ufffd end\n');
  });

  it('passes context, stdin, args and env, and nothing of the service environment', async () => {
    process.env.PYBOX_TEST_SECRET = 'must-not-leak';
    const r = await run({
      code: [
        'import os, sys, json',
        'print(json.dumps({"ctx": numbers, "cfg": cfg, "stdin": sys.stdin.read(), "argv": sys.argv,',
        '  "env": dict(os.environ), "cwd": os.getcwd(), "name": __name__}))',
      ].join('\n'),
      context: { numbers: [1, 2, 3], cfg: { nested: { ok: true } } },
      stdin: 'line one\nline two\n',
      args: ['--flag', 'value with spaces'],
      env: { MY_SETTING: '42' },
    });
    delete process.env.PYBOX_TEST_SECRET;
    expect(r.status, r.stderr).toBe('completed');
    const out = JSON.parse(r.stdout) as { ctx: unknown; cfg: unknown; stdin: string; argv: string[]; env: Record<string, string>; cwd: string; name: string };
    expect(out.ctx).toEqual([1, 2, 3]);
    expect(out.cfg).toEqual({ nested: { ok: true } });
    expect(out.stdin).toBe('line one\nline two\n');
    expect(out.argv).toEqual(['main.py', '--flag', 'value with spaces']);
    expect(out.cwd).toBe('/work');
    expect(out.name).toBe('__main__');
    expect(out.env.MY_SETTING).toBe('42');
    expect(Object.keys(out.env).sort()).toEqual(
      ['HOME', 'LANG', 'MPLBACKEND', 'MPLCONFIGDIR', 'MY_SETTING', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONUNBUFFERED', 'TMPDIR'].sort(),
    );
    expect(r.stdout).not.toContain('must-not-leak');
  });

  it('copies input files in and returns files written under out/, dropping links', async () => {
    const r = await run({
      code: [
        'import os',
        'print(open("data/in.txt").read().strip(), len(open("blob.bin", "rb").read()))',
        'os.makedirs("out/sub")',
        'open("out/result.txt", "w").write("result!")',
        'open("out/sub/raw.bin", "wb").write(bytes(range(256)))',
        'os.symlink("/etc/passwd", "out/link")',
      ].join('\n'),
      files: [
        { path: 'data/in.txt', content: 'input file\n', encoding: 'utf8' },
        { path: 'blob.bin', content: Buffer.alloc(1000, 7).toString('base64'), encoding: 'base64' },
      ],
    });
    expect(r.status, r.stderr).toBe('completed');
    expect(r.stdout).toBe('input file 1000\n');
    const files = Object.fromEntries((r.files ?? []).map((f) => [f.path, f]));
    expect(Object.keys(files).sort()).toEqual(['result.txt', 'sub/raw.bin']);
    expect(Buffer.from(files['result.txt']!.contentBase64, 'base64').toString()).toBe('result!');
    expect(Buffer.from(files['sub/raw.bin']!.contentBase64, 'base64')).toEqual(Buffer.from([...Array(256).keys()]));
    expect(r.filesDropped).toBe(1);
  });

  it('has numpy, pandas and matplotlib, and returns a plot', async () => {
    const r = await run({
      code: [
        'import numpy as np, pandas as pd, matplotlib.pyplot as plt',
        'df = pd.DataFrame({"x": np.arange(5), "y": np.arange(5) ** 2})',
        'print(int(df.y.sum()))',
        'df.plot(x="x", y="y")',
        'import os; os.makedirs("out", exist_ok=True); plt.savefig("out/plot.png")',
      ].join('\n'),
      timeoutMs: 60_000,
    });
    expect(r.status, r.stderr).toBe('completed');
    expect(r.stdout).toBe('30\n');
    expect(r.stderr).toBe('');
    const png = r.files?.find((f) => f.path === 'plot.png');
    expect(Buffer.from(png?.contentBase64 ?? '', 'base64').subarray(0, 4)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47]));
  });

  it('runs each execution in its own fresh container', async () => {
    const first = await run({ code: 'import socket\nopen("/tmp/left-behind", "w").write("x")\nprint(socket.gethostname())' });
    const second = await run({ code: 'import os, socket\nprint(socket.gethostname(), os.path.exists("/tmp/left-behind"))' });
    const [host2, exists] = second.stdout.trim().split(' ');
    expect(host2).not.toBe(first.stdout.trim());
    expect(exists).toBe('False');
  });

  it('applies the hardened settings', async () => {
    const r = await run({
      code: [
        'import os, socket, json',
        'import ctypes',
        'status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)',
        'PR_GET_NO_NEW_PRIVS = 39',
        'def attempt(f):',
        '    try:',
        '        f()',
        '        return "allowed"',
        '    except OSError as e:',
        '        return e.__class__.__name__ + ":" + str(e.errno)',
        'print(json.dumps({',
        '  "uid": os.getuid(), "gid": os.getgid(),',
        '  "capEff": status["CapEff"].strip(), "noNewPrivs": ctypes.CDLL(None).prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),',
        '  "rootWrite": attempt(lambda: open("/usr/evil", "w")),',
        '  "net": attempt(lambda: socket.create_connection(("1.1.1.1", 80), timeout=2)),',
        '  "ifaces": sorted(n for _, n in socket.if_nameindex()),',
        '}))',
      ].join('\n'),
    });
    expect(r.status, r.stderr).toBe('completed');
    const h = JSON.parse(r.stdout) as Record<string, unknown>;
    // Each live sandbox has a uid of its own from 10001 up (sandbox.uids), never root.
    expect(h.uid).toBeGreaterThanOrEqual(10001);
    expect(h.uid).toBeLessThan(10001 + 256);
    expect(h.gid).toBe(10001);
    expect(h.capEff).toBe('0000000000000000');
    expect(h.noNewPrivs).toBe(1);
    expect(h.rootWrite).toMatch(/^OSError:30$|^PermissionError:13$/); // EROFS (or EACCES before it)
    expect(h.net).toMatch(/^OSError:(101|113)$/); // ENETUNREACH (runc) or EHOSTUNREACH (gVisor): no route
    expect(h.ifaces).toEqual(['lo']);
  });

  it('clamps limits to the server maximum', async () => {
    const r = await run({ code: 'print(1)', timeoutMs: 9_000_000, memoryMb: 999_999, cpus: 64 });
    expect(r.limits).toEqual({ timeoutMs: 300_000, memoryMb: 2048, cpus: 2, outputBytes: 50_000 });
  });

  it('keeps history and stats, and serves a result by id', async () => {
    const r = await run({ code: 'print(2 + 2)' });
    const got = await pybox.app.request(`/v1/executions/${r.id}`);
    expect(got.status).toBe(200);
    expect(ExecutionResult.parse(await got.json())).toEqual({ ...r, code: 'print(2 + 2)' });
    const list = (await (await pybox.app.request('/v1/executions?limit=2')).json()) as { items: ExecutionResult[] };
    expect(list.items[0]?.id).toBe(r.id);
    const stats = (await (await pybox.app.request('/v1/stats')).json()) as { total: number; byStatus: Record<string, number> };
    expect(stats.total).toBeGreaterThan(5);
    expect(stats.byStatus.completed).toBeGreaterThan(0);
  });

  it('answers the reference design routes with its field names', async () => {
    const ok = await postJson(pybox.app, '/api/execute-code', { code: 'print(v * 2)', timeout: 10, context: { v: 21 } });
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ success: true, output: '42\n', error: null });
    const body = ok.json as { execution_time: number; execution_id: string };
    expect(body.execution_time).toBeGreaterThan(0);
    expect(body.execution_time).toBeLessThan(30); // seconds, not milliseconds
    const bad = await postJson(pybox.app, '/api/execute-code', { code: 'raise KeyError("k")' });
    expect(bad.json).toMatchObject({ success: false });
    expect((bad.json as { error: string }).error).toContain('KeyError');
    const hist = (await (await pybox.app.request('/api/code-history?limit=2')).json()) as Array<{ execution_id: string }>;
    expect(hist[1]?.execution_id).toBe(body.execution_id);
    const stats = (await (await pybox.app.request('/api/code-stats')).json()) as Record<string, number>;
    expect(stats.total_executions).toBeGreaterThanOrEqual(2);
    expect((stats.successful ?? 0) + (stats.failed ?? 0)).toBe(stats.total_executions);
  });

  it('reports the runtime, Python version and packages', async () => {
    const res = await pybox.app.request('/v1/runtimes');
    const body = (await res.json()) as { runtime: string; python: string; packages: Record<string, string> };
    expect(body.runtime).toBe(runtime);
    expect(body.python).toMatch(/^3\.\d+\.\d+$/);
    expect(Object.keys(body.packages).sort()).toEqual(['matplotlib', 'numpy', 'pandas']);
    const ready = await pybox.app.request('/readyz');
    expect(ready.status).toBe(200);
  });
});
