// Multi-tenancy against the real service, the real engine and the real store: local mode, keys made
// by the CLI, one 401 for every bad key, two tenants interleaved and kept apart, limits clamped and
// enforced (429), fair slots under a flood, usage metered per tenant, and the local-mode listen check.
import { freePort, startService } from '../support/serve.ts';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerKeys } from '../../src/cli/commands/keys.ts';
import { ExecutionResult, HistoryPage, Stats, UsageReport } from '../../src/core/schemas.ts';
import { KEY_FORMAT } from '../../src/tenancy/keys.ts';
import { realPybox, type RealPybox } from '../support/real.ts';

const root = join(import.meta.dirname, '../..');

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

describe('tenancy, against the real service', () => {
  let pybox: RealPybox;
  /** Keys by name, created through the CLI's own code against the running pybox's store. */
  const key: Record<string, string> = {};

  async function cli(...args: string[]): Promise<string[]> {
    const out: string[] = [];
    const program = new Command('pybox').exitOverride();
    registerKeys(program, { env: { PYBOX_DB: pybox.config.store.path }, out: (l) => out.push(l), err: (l) => out.push(l) });
    await program.parseAsync(args, { from: 'user' });
    return out;
  }

  async function call(path: string, opts: { key?: string | undefined; body?: unknown; headers?: Record<string, string> } = {}): Promise<Reply> {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.key !== undefined) headers.authorization = `Bearer ${opts.key}`;
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const res = await pybox.app.request(path, { method: opts.body === undefined ? 'GET' : 'POST', headers, body: opts.body === undefined ? null : JSON.stringify(opts.body) });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: res.status, headers: res.headers, text, json };
  }

  async function run(as: string | undefined, body: Record<string, unknown>): Promise<ExecutionResult> {
    const r = await call('/v1/executions', { key: as, body });
    expect(r.status, r.text).toBe(200);
    return ExecutionResult.parse(r.json);
  }

  let localRun: ExecutionResult;

  beforeAll(async () => {
    pybox = await realPybox('runc', { concurrency: { maxConcurrent: 2, maxQueue: 64, retryAfterS: 3 } });
  });
  afterAll(async () => {
    await pybox?.dispose();
  });

  it('runs in local mode while no key exists: no credentials, the local tenant, the operator sees all', async () => {
    localRun = await run(undefined, { code: 'print("local")' });
    expect(localRun.stdout).toBe('local\n');
    const usage = UsageReport.parse((await call('/v1/usage')).json);
    expect(usage.tenants).toMatchObject([{ tenant: 'local', executions: 1 }]);
  });

  it('creates keys with `keys create`, printing each key once as the last line', async () => {
    const made: Array<[string, string[]]> = [
      ['a', ['--tenant', 'team-a']],
      ['b', ['--tenant', 'team-b']],
      ['admin', ['--tenant', 'ops', '--admin']],
      ['small', ['--tenant', 'small', '--max-timeout-ms', '2000', '--max-memory-mb', '128', '--max-cpus', '0.5']],
      ['huge', ['--tenant', 'huge', '--max-timeout-ms', '3600000', '--max-memory-mb', '65536', '--max-cpus', '64']],
      ['rated', ['--tenant', 'rated', '--rate-per-minute', '3']],
      ['single', ['--tenant', 'single', '--max-concurrency', '1']],
      ['revoked', ['--tenant', 'team-a']],
    ];
    for (const [name, args] of made) {
      const out = await cli('keys', 'create', ...args);
      key[name] = out.at(-1) as string;
      expect(key[name]).toMatch(KEY_FORMAT);
    }
    const id = /key_[0-9a-f]{12}/.exec((await cli('keys', 'list')).find((l) => l.includes('team-a') && !l.startsWith('TENANT')) ?? '')?.[0];
    expect(id).toBeDefined();
    // The second team-a key is the one to revoke: revoke it by the key itself.
    expect((await cli('keys', 'revoke', key.revoked as string))[0]).toMatch(/^revoked key key_[0-9a-f]{12} of tenant team-a$/);
    // The store holds no key in plaintext, in the database or its WAL.
    for (const f of readdirSync(pybox.dir)) {
      const bytes = readFileSync(join(pybox.dir, f));
      for (const k of Object.values(key)) expect(bytes.includes(Buffer.from(k.slice(4))), f).toBe(false);
    }
  });

  it('now answers a missing, malformed, unknown or revoked key with the same 401 on every route but the probes', async () => {
    const bad: Array<string | undefined> = [undefined, 'pbx_short', 'not-even-close', 'pbx_' + 'Q'.repeat(43), key.revoked];
    const paths = ['/v1/executions', `/v1/executions/${localRun.id}`, '/v1/stats', '/v1/usage', '/v1/runtimes', '/openapi.json', '/api/code-history', '/api/code-stats', '/nope'];
    const seen = new Set<string>();
    for (const path of paths) {
      for (const k of bad) {
        const r = await call(path, { key: k });
        expect(r.status, `${path} ${k}`).toBe(401);
        seen.add(r.text);
      }
    }
    const post = await call('/api/execute-code', { body: { code: 'print(1)' } });
    expect(post.status).toBe(401);
    seen.add(post.text);
    expect(seen.size).toBe(1);
    expect(JSON.parse([...seen][0] as string)).toEqual({ error: { code: 'unauthorized', message: 'a valid API key is required: send it as Authorization: Bearer <key>' } });
    expect((await call('/healthz')).status).toBe(200);
    expect((await call('/readyz')).status).toBe(200);
    expect((await call('/v1/stats', { key: key.a })).status).toBe(200);
  });

  it('keeps two interleaved tenants apart: history, results, stats and the reference routes', async () => {
    const sends: Array<Promise<ExecutionResult>> = [];
    for (let i = 0; i < 3; i++) {
      sends.push(run(key.a, { code: `print("a${i}")` }));
      sends.push(run(key.b, { code: `print("b${i}")`, timeoutMs: 5000 }));
    }
    const legacyA = call('/api/execute-code', { key: key.a, body: { code: 'print("legacy-a")' } });
    const results = await Promise.all(sends);
    expect((await legacyA).status).toBe(200);
    const mineA = results.filter((r) => r.stdout.startsWith('a'));
    const mineB = results.filter((r) => r.stdout.startsWith('b'));

    const historyA = HistoryPage.parse((await call('/v1/executions?limit=100', { key: key.a })).json);
    const historyB = HistoryPage.parse((await call('/v1/executions?limit=100', { key: key.b })).json);
    expect(historyA.items.map((r) => r.stdout).sort()).toEqual(['a0\n', 'a1\n', 'a2\n', 'legacy-a\n']);
    expect(historyB.items.map((r) => r.stdout).sort()).toEqual(['b0\n', 'b1\n', 'b2\n']);
    expect(Stats.parse((await call('/v1/stats', { key: key.a })).json).total).toBe(4);
    expect(Stats.parse((await call('/v1/stats', { key: key.b })).json).total).toBe(3);
    const legacyHistoryB = (await call('/api/code-history?limit=100', { key: key.b })).json as Array<{ output: string }>;
    expect(legacyHistoryB.map((r) => r.output).sort()).toEqual(['b0\n', 'b1\n', 'b2\n']);
    expect(((await call('/api/code-stats', { key: key.b })).json as { total_executions: number }).total_executions).toBe(3);

    // Another tenant's id answers exactly as an id that does not exist.
    for (const theirs of [...mineA, localRun]) {
      const cross = await call(`/v1/executions/${theirs.id}`, { key: key.b });
      const unknownId = theirs.id.replace(/^.{8}/, '00000000');
      const unknown = await call(`/v1/executions/${unknownId}`, { key: key.b });
      expect(cross.status).toBe(404);
      expect(unknown.status).toBe(404);
      expect(cross.text.replace(theirs.id, 'ID')).toBe(unknown.text.replace(unknownId, 'ID'));
    }
    for (const own of mineB) {
      const code = `print("${own.stdout.trim()}")`;
      expect(ExecutionResult.parse((await call(`/v1/executions/${own.id}`, { key: key.b })).json)).toEqual({ ...own, code });
    }

    // The admin key sees every tenant, the local mode run included.
    const all = HistoryPage.parse((await call('/v1/executions?limit=100', { key: key.admin })).json);
    expect(all.items.map((r) => r.id)).toEqual(expect.arrayContaining([...results.map((r) => r.id), localRun.id]));
    expect(ExecutionResult.parse((await call(`/v1/executions/${mineA[0]?.id}`, { key: key.admin })).json).stdout).toBe(mineA[0]?.stdout);
    expect(Stats.parse((await call('/v1/stats', { key: key.admin })).json).total).toBeGreaterThanOrEqual(8);
  });

  it("clamps limits to the tenant's maxima, themselves within the server's", async () => {
    const small = await run(key.small, { code: 'print(1)', timeoutMs: 60_000, memoryMb: 1024, cpus: 2 });
    expect(small.limits).toMatchObject({ timeoutMs: 2000, memoryMb: 128, cpus: 0.5 });
    const defaulted = await run(key.small, { code: 'print(1)' });
    expect(defaulted.limits).toMatchObject({ timeoutMs: 2000, memoryMb: 128, cpus: 0.5 });
    const slow = await run(key.small, { code: 'import time\nwhile True:\n    time.sleep(0.1)' });
    expect(slow.status).toBe('timeout');
    expect(slow.limits.timeoutMs).toBe(2000);
    const huge = await run(key.huge, { code: 'print(1)', timeoutMs: 3_600_000, memoryMb: 65_536, cpus: 64 });
    expect(huge.limits).toMatchObject({ timeoutMs: 300_000, memoryMb: 2048, cpus: 2 });
    const info = (await call('/v1/runtimes', { key: key.small })).json as { limits: { max: { timeoutMs: number; memoryMb: number; cpus: number } } };
    expect(info.limits.max).toEqual({ timeoutMs: 2000, memoryMb: 128, cpus: 0.5 });
  });

  it('answers a tenant over its request rate with 429, Retry-After and the RateLimit fields; others go on', async () => {
    const replies: Reply[] = [];
    for (let i = 0; i < 4; i++) replies.push(await call('/v1/stats', { key: key.rated }));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 429]);
    expect(replies.map((r) => r.headers.get('ratelimit-remaining'))).toEqual(['2', '1', '0', '0']);
    expect(replies[0]?.headers.get('ratelimit-policy')).toBe('"requests";q=3;w=60');
    const refused = replies[3] as Reply;
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(19);
    expect(refused.headers.get('ratelimit')).toMatch(/^"requests";r=0;t=\d+$/);
    expect((refused.json as { error: { code: string } }).error.code).toBe('rate_limited');
    expect((await call('/v1/stats', { key: key.b })).status).toBe(200);
  });

  it('answers a tenant over its concurrency with 429 while its run goes on, and lets other tenants run', async () => {
    const slow = call('/v1/executions', { key: key.single, body: { code: 'import time\ntime.sleep(1.5)\nprint("done")' } });
    for (let i = 0; i < 100 && pybox.gate.statsOf('single').running === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const over = await call('/v1/executions', { key: key.single, body: { code: 'print("second")' } });
    expect(over.status).toBe(429);
    expect(over.headers.get('retry-after')).toBe('3');
    expect(over.headers.get('ratelimit-policy')).toBe('"concurrency";q=1');
    expect(over.json).toMatchObject({ error: { code: 'rate_limited', details: { limit: 'concurrency', maxConcurrency: 1 } } });
    expect((await run(key.b, { code: 'print("meanwhile")' })).stdout).toBe('meanwhile\n');
    const first = await slow;
    expect(first.status).toBe(200);
    expect((await run(key.single, { code: 'print("after")' })).stdout).toBe('after\n');
  });

  it("serves a second tenant's runs fairly while one tenant floods the host", async () => {
    // Two slots: team-a sends 12 one-second runs at once; team-b sends two quick ones once team-a's
    // are all running or queued. First come, first served would finish team-b's last.
    const finished: string[] = [];
    const track = (name: string, p: Promise<Reply>) =>
      p.then((r) => {
        expect(r.status, r.text).toBe(200);
        finished.push(name);
      });
    const flood = Array.from({ length: 12 }, (_, i) => track(`a${i}`, call('/v1/executions', { key: key.a, body: { code: 'import time\ntime.sleep(1)' } })));
    for (let i = 0; i < 500; i++) {
      const s = pybox.gate.statsOf('team-a');
      if (s.running + s.queued === 12 && s.running === 2) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(pybox.gate.statsOf('team-a')).toEqual({ running: 2, queued: 10 });
    const quick = [0, 1].map((i) => track(`b${i}`, call('/v1/executions', { key: key.b, body: { code: `print("quick ${i}")` } })));
    await Promise.all([...flood, ...quick]);
    const fifthOfA = finished.filter((n) => n.startsWith('a'))[4] as string;
    expect(finished.indexOf('b0'), finished.join(' ')).toBeLessThan(finished.indexOf(fifthOfA));
    expect(finished.indexOf('b1'), finished.join(' ')).toBeLessThan(finished.indexOf(fifthOfA));
  });

  it('meters usage per tenant: executions by status, wall and CPU time, output bytes; all tenants for an admin', async () => {
    const before = UsageReport.parse((await call('/v1/usage', { key: key.b })).json).tenants[0];
    await run(key.b, { code: 'import sys\nsys.stdout.write("x" * 70000)\nsys.stderr.write("e" * 30)' }); // beyond the 50,000 kept
    await run(key.b, { code: 'raise ValueError("no")' });
    await run(key.b, { code: 'x = (' });
    const after = UsageReport.parse((await call('/v1/usage', { key: key.b })).json);
    expect(after.tenants.map((t) => t.tenant)).toEqual(['team-b']);
    const b = after.tenants[0];
    if (!before || !b) throw new Error('no usage for team-b');
    expect(b.executions - before.executions).toBe(3);
    expect(b.byStatus.completed - before.byStatus.completed).toBe(1);
    expect(b.byStatus.error - before.byStatus.error).toBe(1);
    expect(b.byStatus.validation_failed - before.byStatus.validation_failed).toBe(1);
    expect(b.outputBytes - before.outputBytes).toBeGreaterThanOrEqual(70_030);
    expect(b.wallMs).toBeGreaterThan(before.wallMs);
    expect(b.cpuMs).toBeGreaterThan(0);

    const day = new Date().toISOString().slice(0, 10);
    expect(UsageReport.parse((await call(`/v1/usage?from=${day}&to=${day}`, { key: key.b })).json).tenants[0]?.executions).toBe(b.executions);
    expect(UsageReport.parse((await call('/v1/usage?from=2000-01-01&to=2000-01-02', { key: key.b })).json).tenants[0]?.executions).toBe(0);
    // Not another tenant's, whether it exists or not; the admin key sees everyone, or anyone.
    const cross = await call('/v1/usage?tenant=team-a', { key: key.b });
    const nobody = await call('/v1/usage?tenant=nobody', { key: key.b });
    expect([cross.status, nobody.status]).toEqual([404, 404]);
    expect(cross.text.replace('team-a', 'T')).toBe(nobody.text.replace('nobody', 'T'));
    const all = UsageReport.parse((await call('/v1/usage', { key: key.admin })).json);
    expect(all.tenants.map((t) => t.tenant)).toEqual(expect.arrayContaining(['local', 'team-a', 'team-b', 'small', 'huge', 'single']));
    const a = all.tenants.find((t) => t.tenant === 'team-a');
    expect(a?.executions).toBe(16); // 3 + the reference route's + 12 in the flood
    expect(a?.wallMs).toBeGreaterThan(12_000);
    expect(UsageReport.parse((await call('/v1/usage?tenant=team-a', { key: key.admin })).json).tenants).toEqual([a]);
    expect((await call('/v1/usage?from=2025-13-01', { key: key.b })).status).toBe(400);
  });
});

describe('local mode and the listen address, with the real process', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const tempDb = () => {
    const d = mkdtempSync(join(tmpdir(), 'pybox-listen-'));
    dirs.push(d);
    return join(d, 'pybox.db');
  };

  it('refuses to listen beyond loopback while no key exists, and says why', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: root,
      env: { ...process.env, PYBOX_HOST: '0.0.0.0', PYBOX_PORT: '0', PYBOX_DB: tempDb() },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('refusing to listen on 0.0.0.0: no API key exists');
    expect(r.stderr).toContain('local mode');
    expect(r.stderr).toContain('pybox keys create');
  });

  it('`npx pybox keys create` makes a key from the repo root; then pybox listens beyond loopback and wants it', async () => {
    const db = tempDb();
    const created = spawnSync('npx', ['pybox', 'keys', 'create', '--tenant', 'cli-made'], { cwd: root, env: { ...process.env, PYBOX_DB: db }, encoding: 'utf8', timeout: 60_000 });
    expect(created.status, created.stderr).toBe(0);
    const lines = created.stdout.trimEnd().split('\n');
    const key = lines.at(-1) as string;
    expect(key).toMatch(KEY_FORMAT);

    const port = await freePort();
    const service = startService(root, { ...process.env, PYBOX_HOST: '0.0.0.0', PYBOX_PORT: String(port), PYBOX_DB: db, PYBOX_RUNTIME: 'runc' });
    const { child, exited } = service;
    try {
      await service.listening(300);
      expect(service.log).toContain(`pybox listening on http://0.0.0.0:${port}`);
      expect(service.log).toContain('API keys required');
      expect(service.log).not.toContain('local mode');
      const base = `http://127.0.0.1:${port}`;
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect((await fetch(`${base}/v1/stats`)).status).toBe(401);
      expect((await fetch(`${base}/v1/stats`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
      expect(service.log).not.toContain(key.slice(4));
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('says it runs in local mode when it starts on loopback without keys', async () => {
    const port = await freePort();
    const service = startService(root, { ...process.env, PYBOX_HOST: '127.0.0.1', PYBOX_PORT: String(port), PYBOX_DB: tempDb(), PYBOX_RUNTIME: 'runc' });
    const { child, exited } = service;
    try {
      await service.listening(300);
      expect(service.log).toContain('local mode: no API keys, loopback only');
      expect((await fetch(`http://127.0.0.1:${port}/v1/stats`)).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });
});
