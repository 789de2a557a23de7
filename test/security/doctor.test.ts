// The live self-test: `pybox doctor` (in-process, or against a running server with --url) and
// GET /v1/doctor prove the isolation on this host and print a table of checks.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../src/doctor/doctor.ts';
import { hashApiKey, newApiKey, newKeyId } from '../../src/tenancy/keys.ts';
import { docker } from '../support/real.ts';
import { battery, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();
const root = join(import.meta.dirname, '../..');
const CHECKS = ['runtime', 'network', 'root read-only', 'user', 'capabilities', 'no-new-privileges', 'seccomp', 'environment', 'docker socket', 'memory limit', 'fork bomb'];

function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const childEnv: Record<string, string | undefined> = { ...process.env, ...env };
    for (const k of Object.keys(childEnv)) if (childEnv[k] === undefined) delete childEnv[k];
    const child = spawn(process.execPath, [join(root, 'bin/pybox.mjs'), ...args], { cwd: root, env: childEnv as NodeJS.ProcessEnv });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The table's rows: check name -> result. */
function rows(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^ {2}(.+?) {2,}(pass|FAIL) {2,}/.exec(line);
    if (m?.[1] && m[2]) out[m[1].trim()] = m[2];
  }
  return out;
}

const doctorContainers = async () =>
  (await docker.listContainers({ all: true, filters: { label: ['pybox.execution'] } })).filter((c) => /-doctor-[0-9a-f]{8}$/.test(c.Labels['pybox.instance'] ?? ''));

describe('pybox doctor (the command, in-process)', () => {
  for (const runtime of runtimes) {
    it(`prints an all-pass table and exits 0 under ${runtime}, leaving nothing behind`, async () => {
      const before = new Set((await doctorContainers()).map((c) => c.Id));
      const r = await cli(['doctor'], { PYBOX_RUNTIME: runtime, PYBOX_URL: undefined });
      expect(r.stderr).toBe('');
      expect(r.code, r.stdout).toBe(0);
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(new RegExp(`^pybox doctor: ${runtime === 'runsc' ? 'gVisor \\(runsc\\)' : 'runc'}, image pybox-python:[0-9a-f]{12}, host kernel \\S+; 11 checks in [\\d.]+ s$`));
      expect(rows(r.stdout)).toEqual(Object.fromEntries(CHECKS.map((c) => [c, 'pass'])));
      expect(lines.at(-1)).toBe('all 11 checks passed');
      expect((await doctorContainers()).filter((c) => !before.has(c.Id))).toEqual([]);
    }, 120_000);
  }

  it('defaults to gVisor when the engine has it (runtime: auto)', async () => {
    if (!runtimes.includes('runsc')) return;
    const r = await cli(['doctor', '--json'], { PYBOX_RUNTIME: undefined, PYBOX_URL: undefined });
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as DoctorReport;
    expect(report.runtime).toBe('runsc');
    expect(report.checks.find((c) => c.name === 'runtime')?.detail).toMatch(/^gVisor \(runsc\): engine\.runtime is auto and the engine offers gVisor/);
  }, 120_000);

  it('exits 1 and marks the failing check when the isolation does not hold (a server reporting a failure)', async () => {
    const failing: DoctorReport = {
      ok: false,
      runtime: 'runc',
      image: 'pybox-python:000000000000',
      hostKernel: '6.1.0',
      startedAt: new Date().toISOString(),
      durationMs: 1200,
      checks: [
        { name: 'runtime', ok: true, detail: 'runc' },
        { name: 'network', ok: false, detail: 'interfaces: eth0, lo; TCP ok' },
      ],
    };
    const server = createServer((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify(failing));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const r = await cli(['doctor', '--url', `http://127.0.0.1:${(server.address() as AddressInfo).port}`]);
      expect(r.code).toBe(1);
      expect(rows(r.stdout)).toEqual({ runtime: 'pass', network: 'FAIL' });
      expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('1 of 2 checks FAILED: network');
    } finally {
      server.close();
    }
  });
});

describe.each(runtimes)('GET /v1/doctor under %s', (runtime) => {
  const sec = battery(runtime);

  sec('proves the isolation through the real execution path; concurrent calls share one run', async ({ request, containers }) => {
    const [a, b] = await Promise.all([request('/v1/doctor'), request('/v1/doctor')]);
    expect(a.status, a.text).toBe(200);
    const report = a.json as DoctorReport;
    expect(b.json).toEqual(report);
    expect(report).toMatchObject({ ok: true, runtime });
    expect(report.checks.map((c) => [c.name, c.ok])).toEqual(CHECKS.map((c) => [c, true]));
    expect(containers().length).toBe(4); // probe, memory, fork bomb, and the run after it: once
  }, { timeoutMs: 120_000 });

  sec('is for an operator: with keys, an admin key gets it, a tenant\'s key is told there is no such route', async (c) => {
    const admin = newApiKey();
    const tenant = newApiKey();
    await c.pybox.tenants.createKey({ id: newKeyId(), tenant: 'ops', admin: true, hash: hashApiKey(admin), limits: {} });
    await c.pybox.tenants.createKey({ id: newKeyId(), tenant: 'alpha', admin: false, hash: hashApiKey(tenant), limits: {} });
    expect((await c.request('/v1/doctor')).status).toBe(401);
    c.authorize(`Bearer ${tenant}`);
    const hidden = await c.request('/v1/doctor');
    expect(hidden.status).toBe(404);
    expect((hidden.json as { error: { code: string } }).error.code).toBe('not_found');
    c.authorize(`Bearer ${admin}`);
    // The command against this running server, with the admin key.
    const r = await cli(['doctor', '--url', c.url, '--key', admin]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(rows(r.stdout)).toEqual(Object.fromEntries(CHECKS.map((k) => [k, 'pass'])));
  }, { timeoutMs: 120_000 });
});
