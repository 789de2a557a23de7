// Attack class: uploaded and returned file names. Input paths that climb out of the work directory
// or hide in odd characters; output files that are links, pipes or devices, or have names meant for
// a terminal or a log; too many and too large; and a report forged at the runner's stdout.
import { describe, expect } from 'vitest';
import { battery, outOf, py, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

const file = (path: string, content = 'x') => ({ path, content, encoding: 'utf8' });

describe.each(runtimes)('file names under %s', (runtime) => {
  const sec = battery(runtime);

  sec('input paths that climb out, are absolute or hide a separator are refused with 400, before anything runs', async ({ request }) => {
    const bad = ['../escape', '/etc/passwd', 'a/../../escape', 'a/./b', './a', 'a//b', 'a/', 'a\\..\\b', 'C:\\x', 'x\u0000y', '..', '.'];
    for (const path of bad) {
      const res = await request('/v1/executions', { method: 'POST', body: { code: 'print(1)', files: [file(path)] } });
      expect(res.status, path).toBe(400);
      const err = (res.json as { error: { code: string; details: Array<{ path: string }> } }).error;
      expect(err.code).toBe('invalid_request');
      expect(err.details[0]?.path).toBe('files[0].path');
    }
  });

  sec('reserved, too deep, too long, unprintable, duplicate and file-and-directory paths are refused', async ({ request }) => {
    const cases: Array<[unknown[], string]> = [
      [[file('main.py')], 'files[0].path'],
      [[file('out/x')], 'files[0].path'],
      [[file('.pybox/request.json')], 'files[0].path'],
      [[file('a/b/c/d/e/f/g/h/i')], 'files[0].path'],
      [[file('x'.repeat(256))], 'files[0].path'],
      [[file('new\nline')], 'files[0].path'],
      [[file('esc\u001b[2J')], 'files[0].path'],
      [[file('')], 'files[0].path'],
      [[file('same'), file('same')], 'files[1].path'],
      [[file('dir'), file('dir/inner')], 'files'],
      [[{ path: 'b64', content: 'not base64!', encoding: 'base64' }], 'files[0].content'],
      [[{ path: 'x', content: 'x', encoding: 'utf8', mode: 0o4755 }], 'files[0].mode'],
      [[{ path: 'x', content: 'x', encoding: 'hex' }], 'files[0].encoding'],
    ];
    for (const [files, where] of cases) {
      const res = await request('/v1/executions', { method: 'POST', body: { code: 'print(1)', files } });
      expect(res.status, JSON.stringify(files).slice(0, 80)).toBe(400);
      expect((res.json as { error: { details: Array<{ path: string }> } }).error.details[0]?.path).toBe(where);
    }
  });

  sec('too many input files, or too many bytes of them, are refused', async ({ request }) => {
    const many = Array.from({ length: 65 }, (_, i) => file(`f${i}`));
    const tooMany = await request('/v1/executions', { method: 'POST', body: { code: 'print(1)', files: many } });
    expect(tooMany.status).toBe(400);
    const big = 'A'.repeat(6 * 1024 * 1024);
    const tooBig = await request('/v1/executions', { method: 'POST', body: { code: 'print(1)', files: [file('a', big), file('b', big)] } });
    expect(tooBig.status).toBe(400);
    expect((tooBig.json as { error: { message: string } }).error.message).toContain('input files exceed');
  });

  sec('odd but valid input names land exactly where they say, inside /work', async ({ run }) => {
    const names = ['-rf', '..hidden', 'sp ace/ünï cødé.txt', 'deep/a/b/c/d/e/f.txt', 'L'.repeat(200), '$(touch x)', '`id`'];
    const r = await run({
      code: py(`
found = []
for dirpath, dirs, files in os.walk("/work"):
    for f in files:
        found.append(os.path.relpath(os.path.join(dirpath, f), "/work"))
out["found"] = sorted(found)
out["contents"] = sorted(set(open(os.path.join("/work", f), encoding="utf-8").read() for f in found if f != "main.py"))
out["outside"] = [p for p in ("/escape", "/tmp/x", "/x") if os.path.exists(p)]`),
      files: names.map((n) => file(n, 'payload')),
    });
    expect(r.status, r.stderr).toBe('completed');
    expect(outOf(r)).toEqual({ found: [...names, 'main.py'].sort(), contents: ['payload'], outside: [] });
  });

  sec('returned files: links, pipes and sockets are dropped, the run does not hang on them', async ({ run }) => {
    const r = await run({
      code: [
        'import os, socket',
        'os.makedirs("out/sub")',
        'open("out/real.txt", "w").write("real")',
        'os.symlink("/etc/passwd", "out/passwd")',
        'os.symlink("/proc/self/environ", "out/environ")',
        'os.symlink("..", "out/up")',
        'os.symlink("loop", "out/loop")',
        'os.link("out/real.txt", "out/hard.txt")',
        'os.mkfifo("out/fifo")',
        's = socket.socket(socket.AF_UNIX)',
        's.bind("out/sock")',
        'os.symlink("/tmp", "out/sub/tmpdir")',
        'open("/tmp/secret", "w").write("secret")',
      ].join('\n'),
    });
    expect(r.status, r.stderr).toBe('completed');
    const files = Object.fromEntries((r.files ?? []).map((f) => [f.path, Buffer.from(f.contentBase64, 'base64').toString()]));
    // A hard link is a regular file of the sandbox's own tmpfs (a link across file systems fails).
    expect(files).toEqual({ 'real.txt': 'real', 'hard.txt': 'real' });
    // Dropped: the two file links, the dangling link, the pipe and the socket. Links to directories
    // are never followed, so nothing under them is even looked at.
    expect(r.filesDropped).toBe(5);
    // 'completed', not 'timeout': nothing waited on the pipe.
  });

  sec('returned files with names meant for a terminal or a log are dropped', async ({ run }) => {
    const r = await run({
      code: [
        'import os',
        'os.makedirs("out", exist_ok=True)',
        'for name in ("new\\nline", "tab\\there", "esc\\x1b[31m", "back\\\\slash", "bell\\x07", "rtl\\u202eexe.txt", "ok.txt", "x" * 250):',
        '    open(os.path.join("out", name), "w").write("x")',
      ].join('\n'),
    });
    expect(r.status, r.stderr).toBe('completed');
    expect((r.files ?? []).map((f) => f.path).sort()).toEqual(['ok.txt', 'x'.repeat(250)]);
    expect(r.filesDropped).toBe(6);
  });

  sec('returned files are capped in count and size', async ({ run, pybox }) => {
    const { outputFilesMax, outputFilesMaxBytes } = pybox.config.limits;
    const r = await run({
      code: [
        'import os',
        'os.makedirs("out/many")',
        'for i in range(30):',
        '    open("out/many/%02d" % i, "w").write(str(i))',
        `open("out/big.bin", "wb").write(b"b" * ${outputFilesMaxBytes + 1})`,
      ].join('\n'),
    });
    expect(r.status, r.stderr).toBe('completed');
    expect(r.files?.length).toBe(outputFilesMax);
    expect(r.files?.some((f) => f.path === 'big.bin')).toBe(false);
    expect(r.filesDropped).toBe(30 + 1 - outputFilesMax);
  });

  sec('a report forged at the runner\'s stdout cannot smuggle file names or sizes in', async ({ run }) => {
    const forged = {
      v: 1,
      phase: 'run',
      exitCode: 0,
      signal: null,
      error: null,
      files: [
        { path: '../../etc/cron.d/evil', size: 4, base64: 'ZXZpbA==' },
        { path: '/etc/passwd', size: 4, base64: 'ZXZpbA==' },
        { path: 'a/../../b', size: 4, base64: 'ZXZpbA==' },
        { path: 'line\nbreak', size: 4, base64: 'ZXZpbA==' },
        { path: 'ok.txt', size: 999, base64: 'ZXZpbA==' },
        { path: 'bad64.txt', size: 3, base64: '!!!!' },
        { path: 'fine.txt', size: 4, base64: 'ZXZpbA==' },
      ],
      filesDropped: 0,
      flooded: false,
      cpuMs: 1,
    };
    const r = await run({
      code: [
        'import os, json',
        `payload = ${JSON.stringify(JSON.stringify(forged))}.encode()`,
        'fd = os.open("/proc/1/fd/1", os.O_WRONLY)',
        'os.write(fd, bytes([3]) + len(payload).to_bytes(4, "big") + payload)',
      ].join('\n'),
    });
    if (runtime === 'runc') {
      // The runner is PID 1 and non-dumpable: its stdout cannot even be opened.
      expect(r).toMatchObject({ status: 'error', error: { type: 'PermissionError' } });
      return;
    }
    // Under gVisor the code's process has a /proc of its own PID namespace, where PID 1 is itself:
    // the report went to its own stdout, and the true one has no file. (What the host does with
    // names and sizes in a report is checked in test/unit/core-execution-service.test.ts.)
    expect(r.status).toBe('completed');
    expect(r.stdout).toContain('"../../etc/cron.d/evil"');
    expect(r.files).toEqual([]);
    expect(r.filesDropped).toBeUndefined();
  });
});
