import { release } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ConcurrencyGate } from '../../src/core/concurrency.ts';
import { Doctor, SANDBOX_ENV, type DoctorDeps } from '../../src/doctor/doctor.ts';
import { renderDoctor } from '../../src/doctor/render.ts';
import type { SandboxJob, SandboxOutcome } from '../../src/core/sandbox.ts';
import { runtimeSummary } from '../../src/engine/runtime.ts';
import { defaultConfig, ManualClock, outcome } from './fakes.ts';

const GOOD_FACTS = {
  uid: 10001,
  gid: 10001,
  caps: { CapInh: '0000000000000000', CapPrm: '0000000000000000', CapEff: '0000000000000000', CapBnd: '0000000000000000', CapAmb: '0000000000000000' },
  nnp: 1,
  seccompMode: '2',
  kernel: release(),
  env: SANDBOX_ENV,
  initEnv: ['HOME', 'HOSTNAME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE'],
  rootWrite: 'EROFS',
  rootMount: 'ro',
  imageWrite: 'EACCES',
  interfaces: ['lo'],
  tcp: 'ENETUNREACH',
  tcp6: 'ENETUNREACH',
  udp: 'ENETUNREACH',
  dns: 'fails',
  io_uring: 'EPERM',
  af_alg: 'EPERM',
  keyctl: 'EPERM',
  bpf: 'EPERM',
  ptrace: 'EPERM',
  unshare: 'EPERM',
  mount: 'EPERM',
  dockerSocket: [] as string[],
};

type Facts = Omit<typeof GOOD_FACTS, 'seccompMode'> & { seccompMode: string | null };

interface Script {
  facts?: Partial<Facts> | null;
  memory?: SandboxOutcome;
  bomb?: SandboxOutcome;
  after?: SandboxOutcome;
}

function doctor(script: Script = {}, deps: Partial<DoctorDeps> = {}) {
  const jobs: SandboxJob[] = [];
  const config = defaultConfig();
  const sandboxes = {
    async run(job: SandboxJob): Promise<SandboxOutcome> {
      jobs.push(job);
      if (job.code.includes('pybox-doctor.invalid')) {
        return script.facts === null ? outcome('failed', { failure: 'the sandbox stopped without a report' }) : outcome('finished', { stdout: JSON.stringify({ ...GOOD_FACTS, ...script.facts }) + '\n' });
      }
      if (job.code.includes('bytearray')) return script.memory ?? outcome('oom', { stdout: 'allocating\n' });
      if (job.code.includes('os.fork')) return script.bomb ?? outcome('finished', { stdout: 'forked 10\nstopped EAGAIN 125\n' });
      return script.after ?? outcome('finished', { stdout: 'fine\n' });
    },
  };
  const d = new Doctor({
    sandboxes,
    gate: new ConcurrencyGate(2, 10, 1),
    image: 'pybox-python:test',
    runtime: 'runc',
    runtimeChoice: 'runc',
    availableRuntimes: ['runc'],
    limits: config.limits,
    sandbox: config.sandbox,
    clock: new ManualClock(),
    newId: () => 'x',
    ...deps,
  });
  return { d, jobs };
}

const byName = (checks: Array<{ name: string; ok: boolean; detail: string }>) => Object.fromEntries(checks.map((c) => [c.name, c]));

describe('Doctor', () => {
  it('passes every check when the sandbox shows the hardened settings, through four real executions', async () => {
    const { d, jobs } = doctor();
    const r = await d.run();
    expect(r.ok).toBe(true);
    expect(r.checks.map((c) => c.name)).toEqual([
      'runtime', 'network', 'root read-only', 'user', 'capabilities', 'no-new-privileges', 'seccomp', 'environment', 'docker socket', 'memory limit', 'fork bomb',
    ]);
    expect(r.checks.every((c) => c.ok)).toBe(true);
    expect(jobs).toHaveLength(4);
    expect(jobs.every((j) => j.id.startsWith('doctor-') && j.runtime === 'runc' && j.image === 'pybox-python:test' && Object.keys(j.env).length === 0)).toBe(true);
    expect(jobs[1]?.limits.memoryMb).toBe(128);
  });

  it('fails the check that does not hold, and says what it saw', async () => {
    const cases: Array<[Script, string, RegExp]> = [
      [{ facts: { interfaces: ['eth0', 'lo'], tcp: 'ok' } }, 'network', /interfaces: eth0, lo; TCP ok/],
      [{ facts: { rootMount: 'rw', rootWrite: 'ok' } }, 'root read-only', /mounted rw/],
      [{ facts: { uid: 0 } }, 'user', /uid 0/],
      [{ facts: { caps: { ...GOOD_FACTS.caps, CapEff: '00000000a80425fb' } } }, 'capabilities', /CapEff=00000000a80425fb/],
      [{ facts: { nnp: 0 } }, 'no-new-privileges', /not set/],
      [{ facts: { seccompMode: '0' } }, 'seccomp', /no seccomp filter/],
      [{ facts: { io_uring: 'ok', af_alg: 'EAFNOSUPPORT' } }, 'seccomp', /not pybox's profile: io_uring_setup ok, socket\(AF_ALG\) EAFNOSUPPORT/],
      [{ facts: { env: [...SANDBOX_ENV, 'PYBOX_API_KEY'] } }, 'environment', /unexpected variables: PYBOX_API_KEY/],
      [{ facts: { initEnv: ['PATH', 'DATABASE_URL'] } }, 'environment', /init:DATABASE_URL/],
      [{ facts: { dockerSocket: ['/var/run/docker.sock'] } }, 'docker socket', /present/],
      [{ memory: outcome('finished', { stdout: 'allocating\n' }) }, 'memory limit', /ended with finished/],
      [{ bomb: outcome('timeout', { stdout: 'forked 10\n' }) }, 'fork bomb', /not contained/],
      [{ bomb: outcome('finished', { stdout: 'stopped never 5000\n' }) }, 'fork bomb', /not contained: stopped never/],
      [{ after: outcome('failed', { failure: 'x' }) }, 'fork bomb', /the next run failed/],
    ];
    for (const [script, name, detail] of cases) {
      const r = await doctor(script).d.run();
      const check = byName(r.checks)[name];
      expect(r.ok, name).toBe(false);
      expect(check?.ok, name).toBe(false);
      expect(check?.detail, name).toMatch(detail);
      expect(r.checks.filter((c) => !c.ok).map((c) => c.name), JSON.stringify(script)).toEqual([name]);
    }
  });

  it('counts an allocation refused at the limit (MemoryError, as gVisor may answer) as the memory limit holding, and a plain error as not', async () => {
    const run = (error: { type: string; message: string; line: null } | null, exitCode: number) =>
      outcome('finished', { stdout: 'allocating\n', report: { v: 1, phase: 'run', exitCode, signal: null, error, files: [], filesDropped: 0, flooded: false } });
    const refused = byName((await doctor({ memory: run({ type: 'MemoryError', message: '', line: null }, 1) }).d.run()).checks)['memory limit'];
    expect(refused).toMatchObject({ ok: true, detail: expect.stringMatching(/refused memory at 128 MB \(MemoryError\)/) });
    const other = byName((await doctor({ memory: run({ type: 'ValueError', message: 'x', line: null }, 1) }).d.run()).checks)['memory limit'];
    expect(other).toMatchObject({ ok: false, detail: expect.stringMatching(/ended with finished \(exit code 1, ValueError\)/) });
  });

  it('fails the runtime check when the sandbox does not run on the configured runtime, or auto passed over gVisor', async () => {
    const sharedKernel = await doctor({}, { runtime: 'runsc', runtimeChoice: 'runsc', availableRuntimes: ['runc', 'runsc'] }).d.run();
    expect(byName(sharedKernel.checks).runtime).toMatchObject({ ok: false, detail: expect.stringMatching(/configured runsc, but the sandbox sees kernel .*: the host kernel is shared/) });
    const gvisor = await doctor({ facts: { kernel: '4.4.0', seccompMode: null, af_alg: 'EAFNOSUPPORT', keyctl: 'EACCES' } }, { runtime: 'runsc', runtimeChoice: 'auto', availableRuntimes: ['runc', 'runsc'] }).d.run();
    expect(gvisor.ok).toBe(true);
    expect(byName(gvisor.checks).seccomp?.detail).toMatch(/^gVisor: system calls are served by its own kernel/);
    expect(byName(gvisor.checks).runtime?.detail).toContain('engine.runtime is auto and the engine offers gVisor');
  });

  it('reports a probe that could not run, instead of passing anything it could not see', async () => {
    const r = await doctor({ facts: null }).d.run();
    expect(r.ok).toBe(false);
    expect(r.checks[0]).toMatchObject({ name: 'probe', ok: false, detail: 'the probe program could not report: the sandbox stopped without a report' });
  });

  it('runs once for concurrent callers', async () => {
    const { d, jobs } = doctor();
    const [a, b] = await Promise.all([d.run(), d.run()]);
    expect(a).toBe(b);
    expect(jobs).toHaveLength(4);
    await d.run();
    expect(jobs).toHaveLength(8);
  });

  it('renders a table with pass or FAIL per check and a verdict', async () => {
    const ok = renderDoctor(await doctor().d.run());
    expect(ok[0]).toMatch(/^pybox doctor: runc, image pybox-python:test, host kernel .*; 11 checks in \d+\.\d s$/);
    expect(ok[2]).toMatch(/^ {2}CHECK +RESULT +DETAIL$/);
    expect(ok.filter((l) => / {2}pass {4}/.test(l))).toHaveLength(11);
    expect(ok.at(-1)).toBe('all 11 checks passed');
    const bad = renderDoctor(await doctor({ facts: { tcp: 'ok' } }).d.run());
    expect(bad.some((l) => /^ {2}network +FAIL {4}/.test(l))).toBe(true);
    expect(bad.at(-1)).toBe('1 of 11 checks FAILED: network');
  });
});

describe('runtimeSummary', () => {
  it('says which runtime and why', () => {
    expect(runtimeSummary('auto', 'runsc', ['runc', 'runsc'])).toBe('gVisor (runsc): engine.runtime is auto and the engine offers gVisor');
    expect(runtimeSummary('auto', 'runc', ['runc'])).toMatch(/^runc: engine\.runtime is auto and the engine has no gVisor \(runsc\), so sandboxes share the host's kernel/);
    expect(runtimeSummary('runc', 'runc', ['runc', 'runsc'])).toBe('runc: set by engine.runtime (the engine also offers runsc)');
  });
});
