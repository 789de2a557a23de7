// Attack class: between tenants and between runs. One run reading another's files, processes,
// environment or kernel limits while both run; one run starving another; guessing result ids; and,
// with API keys, one tenant reading or starving another's.
import { describe, expect } from 'vitest';
import { hashApiKey, newApiKey, newKeyId } from '../../src/tenancy/keys.ts';
import { battery, outOf, py, runtimesUnderTest, type Case } from './support.ts';

const runtimes = await runtimesUnderTest();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Creates an API key for a tenant in the case's store; returns its Authorization header. */
async function keyFor(c: Case, tenant: string, limits: { maxConcurrency?: number } = {}): Promise<string> {
  const key = newApiKey();
  await c.pybox.tenants.createKey({ id: newKeyId(), tenant, admin: false, hash: hashApiKey(key), limits });
  return `Bearer ${key}`;
}

describe.each(runtimes)('between runs and tenants under %s', (runtime) => {
  const sec = battery(runtime);

  sec('a run cannot see the files, processes, arguments or environment of a run beside it', async ({ run, marker }) => {
    const a = run({
      code: [
        'import os, time',
        `for d in ("/tmp", "/work", "/dev/shm"):`,
        `    open(os.path.join(d, "secret"), "w").write("${marker}-alpha")`,
        'time.sleep(5)',
        'print("a done")',
      ].join('\n'),
      args: [`${marker}-alpha`],
      env: { SECRET: `${marker}-alpha` },
      timeoutMs: 20_000,
    });
    await sleep(2000);
    const b = await run({
      code: py(`
needle = ("${marker}" + "-alp" + "ha").encode()  # spelled apart, so this program's own source does not match
hits = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for what in ("cmdline", "environ"):
            try:
                if needle in open("/proc/%s/%s" % (pid, what), "rb").read():
                    hits.append(pid + "/" + what)
            except OSError:
                pass
for root in ("/tmp", "/work", "/dev/shm"):
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            try:
                if needle in open(os.path.join(dirpath, f), "rb").read():
                    hits.append(os.path.join(dirpath, f))
            except OSError:
                pass
out["hits"] = hits
out["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
out["uid"] = os.getuid()`),
    });
    const ra = await a;
    expect(ra.status).toBe('completed');
    // runc: the runner (PID 1) and the code; gVisor: the code alone, in a /proc of its own PID namespace.
    expect(outOf(b)).toMatchObject({ hits: [], processes: runtime === 'runc' ? 2 : 1 });
  });

  sec('per-user kernel limits are not shared: a run exhausting inotify leaves the next one its own', async ({ run }) => {
    const a = run({
      code: py(`
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 1000:
    fd = libc.inotify_init1(0)
    if fd < 0:
        out["stopped"] = errno.errorcode[ctypes.get_errno()]
        break
    fds.append(fd)
out["count"] = len(fds)
out["max"] = int(open("/proc/sys/fs/inotify/max_user_instances").read()) if os.path.exists("/proc/sys/fs/inotify/max_user_instances") else None
out["uid"] = os.getuid()
print(json.dumps(out), flush=True)
time.sleep(5)
sys.exit(0)`),
      timeoutMs: 20_000,
    });
    await sleep(2000);
    const b = await run({
      code: py(`
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
out["inotify"] = "ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()]
out["uid"] = os.getuid()`),
    });
    const ra = await a;
    const first = JSON.parse(ra.stdout.split('\n')[0] ?? '{}') as { count: number; max: number | null; uid: number; stopped?: string };
    if (runtime === 'runc') {
      // The host's per-uid limit (fs.inotify.max_user_instances) is what A used up...
      expect(first.count).toBe(first.max);
      expect(first.stopped).toBe('EMFILE');
    }
    // ...and B, running as another uid, still has its own. (Before each live sandbox had a uid of its
    // own, B got EMFILE under runc: every sandbox of every run shared uid 10001.)
    expect(outOf(b).inotify).toBe('ok');
    expect(outOf(b).uid).not.toBe(first.uid);
  });

  sec('a run spinning every core it can does not stall a run beside it', async ({ run }) => {
    const hog = run({
      code: 'import threading, time\nt0 = time.time()\ndef spin():\n    while time.time() - t0 < 5:\n        pass\nfor _ in range(8):\n    threading.Thread(target=spin).start()\n',
      cpus: 1,
      timeoutMs: 20_000,
    });
    await sleep(1500);
    const quick = await run({ code: 'print(sum(range(200000)))', timeoutMs: 15_000 });
    expect(quick).toMatchObject({ status: 'completed', stdout: '19999900000\n' });
    expect((await hog).status).toBe('completed');
  });

  sec('result ids are random UUIDs; a guessed, altered or odd id finds nothing', async ({ run, request }) => {
    const results = await Promise.all([1, 2, 3].map((i) => run({ code: `print(${i})` })));
    for (const r of results) expect(r.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(results.map((r) => r.id)).size).toBe(3);
    const id = results[0]?.id ?? '';
    const altered = id.slice(0, -1) + (id.endsWith('0') ? '1' : '0');
    for (const probe of [altered, '00000000-0000-4000-8000-000000000000', '..%2F..%2Fetc%2Fpasswd', 'x'.repeat(5000), "1' OR '1'='1", '%00']) {
      const res = await request(`/v1/executions/${probe}`);
      expect(res.status, probe).toBe(404);
      expect((res.json as { error: { code: string } }).error.code).toBe('not_found');
    }
    expect((await request(`/v1/executions/${id}`)).status).toBe(200);
  });

  // Tenants, with API keys (src/tenancy): from the moment a key exists every request needs one.
  sec('another tenant\'s execution is a 404, exactly like an unknown id, and absent from its history', async (c) => {
    const alpha = await keyFor(c, 'alpha');
    const beta = await keyFor(c, 'beta');
    c.authorize(alpha);
    const mine = await c.run({ code: `print("alpha's secret")` });
    c.authorize(beta);
    const theirs = await c.request(`/v1/executions/${mine.id}`);
    const unknown = await c.request('/v1/executions/00000000-0000-4000-8000-000000000000');
    expect(theirs.status).toBe(404);
    expect(unknown.status).toBe(404);
    const scrub = (r: typeof theirs) => JSON.stringify(r.json).replaceAll(mine.id, 'ID').replaceAll('00000000-0000-4000-8000-000000000000', 'ID');
    expect(scrub(theirs)).toBe(scrub(unknown));
    expect(theirs.text).not.toContain("alpha's secret");
    const history = (await c.request('/v1/executions?limit=100')).json as { items: Array<{ id: string }> };
    expect(history.items.map((i) => i.id)).not.toContain(mine.id);
    const stats = (await c.request('/v1/stats')).json as { total: number };
    expect(stats.total).toBe(0);
    const legacy = (await c.request('/api/code-history?limit=100')).json as Array<{ execution_id: string }>;
    expect(legacy.map((i) => i.execution_id)).not.toContain(mine.id);
    c.authorize(alpha);
    expect((await c.request(`/v1/executions/${mine.id}`)).status).toBe(200);
  });

  sec('a missing, malformed, wrong or foreign-scheme key gets the same 401, on every route', async (c) => {
    const alpha = await keyFor(c, 'alpha');
    const answers = [];
    for (const header of [null, 'Bearer', 'Bearer pbx_short', `Bearer ${newApiKey()}`, `Basic ${Buffer.from('a:b').toString('base64')}`, alpha.toLowerCase()]) {
      c.authorize(header);
      for (const path of ['/v1/executions', '/v1/stats', '/v1/runtimes', '/api/code-history']) {
        const res = await c.request(path);
        answers.push({ status: res.status, body: res.text });
      }
      const post = await c.request('/v1/executions', { method: 'POST', body: { code: 'print(1)' } });
      answers.push({ status: post.status, body: post.text });
    }
    expect(new Set(answers.map((a) => a.status))).toEqual(new Set([401]));
    expect(new Set(answers.map((a) => a.body)).size).toBe(1);
    c.authorize(alpha);
  });

  sec('a tenant over its concurrency gets 429 while another tenant\'s run goes through', async (c) => {
    const greedy = await keyFor(c, 'greedy', { maxConcurrency: 1 });
    const other = await keyFor(c, 'other');
    const slow = { code: 'import time\ntime.sleep(3)', timeoutMs: 20_000 };
    const post = (auth: string, body: unknown) => c.request('/v1/executions', { method: 'POST', body, headers: { authorization: auth } });
    const flood = Promise.all([1, 2, 3, 4].map(() => post(greedy, slow)));
    await sleep(1000);
    const theirs = await post(other, { code: 'print("served")' });
    expect(theirs.status).toBe(200);
    expect((theirs.json as { stdout: string }).stdout).toBe('served\n');
    const statuses = (await flood).map((r) => r.status).sort();
    expect(statuses[0]).toBe(200);
    expect(statuses.filter((s) => s === 429).length + statuses.filter((s) => s === 200).length).toBe(4);
    expect(statuses).toContain(429);
    c.authorize(other);
  });
});
