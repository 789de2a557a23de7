// Attack class: long-lived state. A session keeps a live interpreter and a work directory between
// calls, so it is where one caller's state could reach another's or outlive its end: a session
// reaching another session (files, processes, environment), another tenant's calls, reads, uploads
// and deletes, state surviving a session's end, a session outliving its idle timeout or lifetime,
// code that kills every process it can see or floods its output, and links planted in the work
// directory for the file routes to follow. Under runc and gVisor.
import { describe, expect } from 'vitest';
import { ExecutionResult, SessionFileList, SessionInfo } from '../../src/core/schemas.ts';
import { hashApiKey, newApiKey, newKeyId } from '../../src/tenancy/keys.ts';
import { battery, outOf, runtimesUnderTest, type Case } from './support.ts';

const runtimes = await runtimesUnderTest();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function keyFor(c: Case, tenant: string): Promise<string> {
  const key = newApiKey();
  await c.pybox.tenants.createKey({ id: newKeyId(), tenant, admin: false, hash: hashApiKey(key), limits: {} });
  return `Bearer ${key}`;
}

async function openSession(c: Case, body: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<SessionInfo> {
  const res = await c.request('/v1/sessions', { method: 'POST', body, headers });
  expect(res.status, res.text.slice(0, 1000)).toBe(201);
  return SessionInfo.parse(res.json);
}

async function call(c: Case, id: string, code: string, headers: Record<string, string> = {}): Promise<ExecutionResult> {
  const res = await c.request(`/v1/sessions/${id}/executions`, { method: 'POST', body: { code }, headers });
  expect(res.status, res.text.slice(0, 1000)).toBe(200);
  return ExecutionResult.parse(res.json);
}

describe.each(runtimes)('sessions under %s', (runtime) => {
  const sec = battery(runtime);

  sec('a session cannot see the files, processes or environment of another session', async (c) => {
    const a = await openSession(c, { env: { SECRET: `${c.marker}-alpha` } });
    const b = await openSession(c);
    const wrote = await call(
      c,
      a.id,
      [
        'import os',
        `secret = "${c.marker}" + "-alpha"`,
        'for d in ("/tmp", "/work", "/dev/shm"):',
        '    open(os.path.join(d, "secret-" + secret), "w").write(secret)',
        'print("written")',
      ].join('\n'),
    );
    expect(wrote.stdout).toBe('written\n');
    const looked = await call(
      c,
      b.id,
      [
        'import json, os',
        `needle = ("${c.marker}" + "-alp" + "ha").encode()`,
        'hits = []',
        'for d in ("/tmp", "/work", "/dev/shm"):',
        '    for root, dirs, files in os.walk(d):',
        '        for name in files:',
        '            if needle.decode() in name:',
        '                hits.append(os.path.join(root, name))',
        'for pid in os.listdir("/proc"):',
        '    if pid.isdigit():',
        '        for what in ("environ", "cmdline"):',
        '            try:',
        '                if needle in open("/proc/%s/%s" % (pid, what), "rb").read():',
        '                    hits.append(pid + " " + what)',
        '            except OSError:',
        '                pass',
        'print(json.dumps({"hits": hits}))',
      ].join('\n'),
    );
    expect(outOf(looked)).toEqual({ hits: [] });
    // Its own environment does have it: the variable reached the session it was given to.
    const own = await call(c, a.id, 'import os\nprint(os.environ["SECRET"].endswith("-alpha"))');
    expect(own.stdout).toBe('True\n');
    for (const s of [a, b]) expect((await c.request(`/v1/sessions/${s.id}`, { method: 'DELETE' })).status).toBe(200);
  });

  sec('nothing of a session survives its end into a new one', async (c) => {
    const first = await openSession(c);
    await call(c, first.id, `open("/work/left-${c.marker}", "w").write("x")\nopen("/tmp/left-${c.marker}", "w").write("x")\nkept = 42`);
    expect((await c.request(`/v1/sessions/${first.id}`, { method: 'DELETE' })).status).toBe(200);
    // An ended session answers 410 with its reason; its container is gone.
    const after = await c.request(`/v1/sessions/${first.id}/executions`, { method: 'POST', body: { code: 'print(kept)' } });
    expect(after.status).toBe(410);
    expect(after.json).toMatchObject({ error: { code: 'session_ended' } });
    const second = await openSession(c);
    const r = await call(c, second.id, `import os\nprint(os.path.exists("/work/left-${c.marker}"), os.path.exists("/tmp/left-${c.marker}"), "kept" in globals())`);
    expect(r.stdout).toBe('False False False\n');
    expect((await c.request(`/v1/sessions/${second.id}`, { method: 'DELETE' })).status).toBe(200);
  });

  sec('another tenant cannot call, read, write, list or end a session', async (c) => {
    const alice = await keyFor(c, 'alice');
    const mallory = await keyFor(c, 'mallory');
    c.authorize(alice);
    const s = await openSession(c);
    await call(c, s.id, 'secret = "alice-only"\nopen("note.txt", "w").write("alice")');
    const as = { authorization: mallory };
    const unknown = '00000000-0000-4000-8000-000000000000';
    for (const [method, path, body] of [
      ['POST', `/v1/sessions/${s.id}/executions`, { code: 'print(secret)' }],
      ['GET', `/v1/sessions/${s.id}`, undefined],
      ['GET', `/v1/sessions/${s.id}/files`, undefined],
      ['GET', `/v1/sessions/${s.id}/files/note.txt`, undefined],
      ['PUT', `/v1/sessions/${s.id}/files`, { files: [{ path: 'note.txt', content: 'mallory' }] }],
      ['DELETE', `/v1/sessions/${s.id}`, undefined],
    ] as const) {
      const theirs = await c.request(path, { method, body, headers: as });
      const none = await c.request(path.replace(s.id, unknown), { method, body, headers: as });
      expect(theirs.status, `${method} ${path}`).toBe(404);
      expect(none.status).toBe(404);
      const codeOf = (r: { json: unknown }) => (r.json as { error?: { code?: string } }).error?.code;
      expect(codeOf(theirs)).toBe('not_found');
      expect(codeOf(theirs)).toBe(codeOf(none));
    }
    const listed = await c.request('/v1/sessions', { headers: as });
    expect(listed.status).toBe(200);
    expect(JSON.stringify(listed.json)).not.toContain(s.id);
    // Alice's session is untouched.
    const still = await call(c, s.id, 'print(secret, open("note.txt").read())');
    expect(still.stdout).toBe('alice-only alice\n');
    expect((await c.request(`/v1/sessions/${s.id}`, { method: 'DELETE' })).status).toBe(200);
  });

  sec(
    'a session does not outlive its idle timeout or its lifetime, and the tenant cap holds',
    async (c) => {
      const idle = await openSession(c, { idleTimeoutMs: 1000 });
      await sleep(3000);
      const late = await c.request(`/v1/sessions/${idle.id}/executions`, { method: 'POST', body: { code: 'print(1)' } });
      expect(late.status, late.text).toBe(410);
      expect(late.json).toMatchObject({ error: { code: 'session_ended' } });
      // Busy or not, the lifetime ends it.
      const busy = await openSession(c);
      const deadline = Date.now() + 8000;
      let ended: { status: number; json: unknown } | null = null;
      while (Date.now() < deadline) {
        const r = await c.request(`/v1/sessions/${busy.id}/executions`, { method: 'POST', body: { code: 'x = 1' } });
        if (r.status !== 200) {
          ended = r;
          break;
        }
        await sleep(300);
      }
      expect(ended?.status).toBe(410);
      // Two live sessions is this tenant's cap: a third is refused, and allowed once one ends.
      const one = await openSession(c);
      const two = await openSession(c);
      const third = await c.request('/v1/sessions', { method: 'POST', body: {} });
      expect(third.status).toBe(429);
      expect(third.json).toMatchObject({ error: { code: 'session_limit' } });
      expect((await c.request(`/v1/sessions/${one.id}`, { method: 'DELETE' })).status).toBe(200);
      const fourth = await openSession(c);
      // (Either may have reached its 4 s lifetime meanwhile: then it has already ended.)
      for (const s of [two, fourth]) expect([200, 410]).toContain((await c.request(`/v1/sessions/${s.id}`, { method: 'DELETE' })).status);
    },
    { config: { sessions: { maxLifetimeMs: 4000, maxPerTenant: 2 } }, concurrent: false },
  );

  sec('code that kills every process it can see, or floods, does not end the session', async (c) => {
    const s = await openSession(c);
    await call(c, s.id, 'kept = "still here"\nopen("f.txt", "w").write("file")');
    const killed = await call(c, s.id, 'import os, signal\nprint("before", flush=True)\nos.kill(-1, signal.SIGKILL)\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nprint("after")');
    expect(killed.status).toBe('error');
    expect(killed.stdout).toContain('before');
    expect(killed.session?.ended).toBe(false);
    const flood = await call(c, s.id, 'while True:\n    print("x" * 10000)');
    expect(flood.status).toBe('output_limit');
    expect(flood.session?.ended).toBe(false);
    // The session still answers; files are kept even where the interpreter had to be restarted.
    const next = await call(c, s.id, 'print(open("f.txt").read())');
    expect(next.status).toBe('completed');
    expect(next.stdout).toBe('file\n');
    expect((await c.request(`/v1/sessions/${s.id}`, { method: 'DELETE' })).status).toBe(200);
  });

  sec('the file routes follow no link the code planted and refuse paths out of the work directory', async (c) => {
    const s = await openSession(c);
    await call(c, s.id, 'import os\nos.symlink("/etc/passwd", "passwd")\nos.symlink("/proc/1/environ", "environ")\nos.symlink("/", "root")\nopen("plain.txt", "w").write("ok")');
    for (const path of ['passwd', 'environ', 'root/etc/passwd']) {
      const got = await c.request(`/v1/sessions/${s.id}/files/${path}`);
      expect(got.status, `${path}: ${got.text.slice(0, 200)}`).toBe(404);
    }
    const plain = await c.request(`/v1/sessions/${s.id}/files/plain.txt`);
    expect(plain.status).toBe(200);
    expect(plain.text).toBe('ok');
    const listed = SessionFileList.parse((await c.request(`/v1/sessions/${s.id}/files`)).json);
    expect(listed.files.map((f) => f.path)).toEqual(['plain.txt']);
    for (const path of ['../etc/passwd', '/etc/passwd', 'a/../../x']) {
      const up = await c.request(`/v1/sessions/${s.id}/files`, { method: 'PUT', body: { files: [{ path, content: 'x' }] } });
      expect(up.status, path).toBe(400);
    }
    // An upload over a planted link replaces the link, never writes through it.
    const over = await c.request(`/v1/sessions/${s.id}/files`, { method: 'PUT', body: { files: [{ path: 'passwd', content: 'mine' }] } });
    expect(over.status, over.text).toBe(200);
    const r = await call(c, s.id, 'import os\nprint(os.path.islink("passwd"), open("passwd").read(), open("/etc/passwd").read().startswith("root:"))');
    expect(r.stdout).toBe('False mine True\n');
    expect((await c.request(`/v1/sessions/${s.id}`, { method: 'DELETE' })).status).toBe(200);
  });

  sec('a session left open is ended and removed when the service shuts down', async (c) => {
    const s = await openSession(c);
    await call(c, s.id, 'x = 1');
    expect(c.containers().length).toBeGreaterThan(0);
    // Not deleted: the case's dispose() fails if the session's container outlives the service.
  });
});
