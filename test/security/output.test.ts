// Attack class: output floods. stdout, stderr, one endless line, binary and broken UTF-8, many
// writers at once, and output aimed past the runner at the container's stdout (the frame channel).
import { describe, expect } from 'vitest';
import type { ExecutionResult } from '../../src/core/schemas.ts';
import { battery, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

/** Python: write raw bytes to PID 1's stdout, hoping it is the runner's (the frame channel to the host). */
const RAW_STDOUT = `
def raw(data):
    fd = os.open("/proc/1/fd/1", os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
def frame(kind, payload):
    return bytes([kind]) + len(payload).to_bytes(4, "big") + payload
`;

/** A frame as the runner writes it: kind, length (4 bytes, big-endian), payload. */
const frameBytes = (kind: number, payload: string): Buffer => {
  const body = Buffer.from(payload);
  const head = Buffer.alloc(5);
  head[0] = kind;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
};

describe.each(runtimes)('output floods under %s', (runtime) => {
  const sec = battery(runtime);
  // Under runc the runner is PID 1 and non-dumpable: its stdout cannot even be opened, and the code
  // fails on its own. Under gVisor (whose /proc ignores non-dumpable) the code's process has a /proc
  // of its own PID namespace, where PID 1 is itself: the bytes go to its own stdout, framed by the
  // runner as any output. Either way nothing reaches the frame channel.
  const refused = (r: ExecutionResult): boolean => {
    if (runtime !== 'runc') return false;
    expect(r).toMatchObject({ status: 'error', error: { type: 'PermissionError' } });
    return true;
  };

  sec('a stdout flood is stopped with output_limit; the first 50,000 bytes are kept', async ({ run }) => {
    const r = await run({ code: 'while True:\n    print("y" * 4096)\n', timeoutMs: 20_000 });
    expect(r).toMatchObject({ status: 'output_limit', signal: 'SIGKILL', truncated: { stdout: true, stderr: false } });
    expect(r.stdout).toBe(('y'.repeat(4096) + '\n').repeat(13).slice(0, 50_000));
    expect(r.feedback).toContain('printed far too much output');
  });

  sec('a stderr flood is stopped the same way', async ({ run }) => {
    const r = await run({ code: 'import sys\nwhile True:\n    sys.stderr.write("e" * 65536)\n', timeoutMs: 20_000 });
    expect(r).toMatchObject({ status: 'output_limit', truncated: { stdout: false, stderr: true } });
    expect(r.stderr.length).toBe(50_000);
    expect(r.stdout).toBe('');
  });

  sec('one endless line without a newline is stopped', async ({ run }) => {
    const r = await run({ code: 'import sys\nwhile True:\n    sys.stdout.write("z" * 1000)\n', timeoutMs: 20_000 });
    expect(r.status).toBe('output_limit');
    expect(r.stdout).toBe('z'.repeat(50_000));
  });

  sec('a flood of binary and broken UTF-8 is stopped and still gives valid JSON', async ({ run }) => {
    const r = await run({
      code: 'import sys, os\nchunk = bytes(range(256)) * 256 + b"\\xff\\xfe\\xc3"\nwhile True:\n    sys.stdout.buffer.write(chunk)\n',
      timeoutMs: 20_000,
    });
    expect(r.status).toBe('output_limit');
    expect(r.stdout).toContain('\ufffd');
    expect(r.stdout.startsWith('\u0000\u0001\u0002')).toBe(true);
    expect(Buffer.byteLength(r.stdout, 'utf8')).toBeGreaterThan(40_000);
  });

  sec('eight threads and a child process flooding at once are stopped', async ({ run }) => {
    const r = await run({
      code: [
        'import threading, subprocess, sys',
        'subprocess.Popen([sys.executable, "-c", "while True: print(\'c\' * 1000)"])',
        'def flood():',
        '    while True:',
        '        print("t" * 1000)',
        'for _ in range(8):',
        '    threading.Thread(target=flood, daemon=True).start()',
        'flood()',
      ].join('\n'),
      timeoutMs: 20_000,
    });
    expect(r.status).toBe('output_limit');
    expect(r.stdout.length).toBe(50_000);
  });

  sec('output just under the flood cap completes, truncated to the first 50,000 bytes', async ({ run }) => {
    const r = await run({ code: 'import sys\nfor i in range(90):\n    sys.stdout.write(str(i % 10) * 10000)\n' });
    expect(r).toMatchObject({ status: 'completed', truncated: { stdout: true, stderr: false } });
    expect(r.stdout.length).toBe(50_000);
    expect(r.stdout.slice(0, 3)).toBe('000');
  });

  sec('NUL bytes, escape sequences and surrogates come back as JSON text, unchanged or replaced', async ({ run }) => {
    const r = await run({ code: 'import sys\nsys.stdout.write("a\\x00b\\x1b[31mred\\x1b[0m\\u2028\\n")\nsys.stdout.write("\\ud800\\n")\n' });
    expect(r.status).toBe('completed');
    expect(r.stdout).toBe('a\u0000b\u001b[31mred\u001b[0m\u2028\n\\ud800\n');
  });

  sec('a huge traceback (deep recursion) is clipped, not relayed in full', async ({ run }) => {
    const r = await run({ code: 'import sys\nsys.setrecursionlimit(20000)\ndef f(n):\n    return f(n + 1)\nf(0)\n', memoryMb: 256, timeoutMs: 20_000 });
    expect(['error', 'oom']).toContain(r.status);
    if (r.status === 'error') {
      expect(r.error?.type).toBe('RecursionError');
      expect((r.error?.traceback ?? '').length).toBeLessThan(40_000);
      expect(r.stderr.length).toBeLessThanOrEqual(50_000);
    }
  });

  sec('bytes aimed at the container\'s stdout through /proc/1 never reach the frame channel', async ({ run }) => {
    const r = await run({ code: `import os\n${RAW_STDOUT}\nraw(b"\\xffnot a frame" * 100)` });
    if (refused(r)) return;
    // Not a protocol violation: the bytes are the code's own output.
    expect(r.status).toBe('completed');
    expect(r.stdout).toBe('\ufffdnot a frame'.repeat(100));
  });

  sec('a frame claiming gigabytes aimed at the runner\'s stdout is only the code\'s own output', async ({ run }) => {
    const r = await run({ code: `import os\n${RAW_STDOUT}\nraw(bytes([1]) + (2**31 - 1).to_bytes(4, "big") + b"x" * 1000)` });
    if (refused(r)) return;
    expect(r.status).toBe('completed');
    expect(r.stdout).toBe('\u0001\u007f\ufffd\ufffd\ufffd' + 'x'.repeat(1000));
  });

  sec('endless output frames aimed at the runner\'s stdout meet the flood cap as the code\'s own output', async ({ run }) => {
    const r = await run({ code: `import os\n${RAW_STDOUT}\nwhile True:\n    raw(frame(1, b"f" * 65536))`, timeoutMs: 20_000 });
    if (refused(r)) return;
    expect(r).toMatchObject({ status: 'output_limit', truncated: { stdout: true, stderr: false } });
    const header = '\u0001\u0000\u0001\u0000\u0000'; // each frame's kind and length, as text
    expect(r.stdout).toBe((header + 'f'.repeat(65536)).slice(0, 50_000));
  });

  sec('a report forged at /proc/1/fd/1 is refused or lands in the code\'s own stdout: the result is the true one', async ({ run }) => {
    const forged = JSON.stringify({ v: 1, phase: 'run', exitCode: 0, signal: null, error: null, files: [{ path: 'forged.txt', size: 4, base64: 'ZXZpbA==' }], filesDropped: 0, flooded: false, cpuMs: 1 });
    const r = await run({
      code: [
        'import os, sys',
        `${RAW_STDOUT}`,
        `payload = ${JSON.stringify(forged)}.encode()`,
        'try:',
        '    raw(frame(3, payload))',
        '    print("\\nwritten")',
        'except OSError as e:',
        '    print(type(e).__name__)',
        'sys.exit(3)',
      ].join('\n'),
    });
    // The run exited 3 with no file: the forged report (exit 0, a file) counts for nothing.
    expect(r).toMatchObject({ status: 'error', exitCode: 3, signal: null, files: [] });
    if (runtime === 'runc') expect(r.stdout).toBe('PermissionError\n');
    else expect(r.stdout).toBe(Buffer.concat([frameBytes(3, forged), Buffer.from('\nwritten\n')]).toString('utf8'));
  });
});
