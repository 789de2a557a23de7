import { describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/schema.ts';
import { containerSpec, EXECUTION_LABEL, INSTANCE_LABEL, type SpecInput } from '../../src/engine/container-spec.ts';
import { defaultConfig } from './fakes.ts';

const MiB = 1024 * 1024;

const sandbox = (overrides: Partial<Config['sandbox']> = {}): Config['sandbox'] => ({ ...defaultConfig().sandbox, ...overrides });

function spec(overrides: Partial<SpecInput> = {}) {
  return containerSpec({
    id: 'exec-123',
    instance: 'pybox-blue',
    image: 'pybox-python:abc123',
    runtime: 'runc',
    limits: { memoryMb: 256, cpus: 1.5 },
    sandbox: sandbox({ user: '10001:10002', pidsLimit: 100, pidsLimitRunsc: 300, tmpfsInodes: 5000, workTmpfsMb: 70, tmpTmpfsMb: 80, shmMb: 16, nofile: 256, fsizeMb: 64 }),
    ...overrides,
  });
}

function host(s = spec()) {
  const h = s.HostConfig;
  if (!h) throw new Error('no HostConfig');
  return h;
}

/** A tmpfs option string as a map (bare flags map to true). */
function tmpfsOptions(opts: string | undefined): Map<string, string | true> {
  const m = new Map<string, string | true>();
  for (const part of (opts ?? '').split(',')) {
    const [k, v] = part.split('=');
    if (k) m.set(k, v ?? true);
  }
  return m;
}

describe('containerSpec', () => {
  it('names and labels the container after the execution', () => {
    const s = spec();
    expect(s.name).toBe('pybox-exec-123');
    expect(s.Image).toBe('pybox-python:abc123');
    expect(s.Labels?.[EXECUTION_LABEL]).toBe('exec-123');
    expect(EXECUTION_LABEL).toBe('pybox.execution');
    expect(s.Labels?.['pybox.runtime']).toBe('runc');
  });

  it('labels the container with its deployment\'s instance name', () => {
    expect(INSTANCE_LABEL).toBe('pybox.instance');
    expect(spec().Labels?.[INSTANCE_LABEL]).toBe('pybox-blue');
    expect(Object.keys(spec().Labels ?? {}).sort()).toEqual(['pybox.execution', 'pybox.instance', 'pybox.runtime']);
  });

  it('runs as the configured non-root user in /work', () => {
    expect(spec().User).toBe('10001:10002');
    expect(spec().WorkingDir).toBe('/work');
  });

  it('passes no environment at all', () => {
    expect(spec().Env).toEqual([]);
  });

  it('attaches stdin/stdout/stderr without a TTY (so output is multiplexed)', () => {
    const s = spec();
    expect(s.Tty).toBe(false);
    expect(s.OpenStdin).toBe(true);
    expect(s.StdinOnce).toBe(true);
    expect(s.AttachStdin).toBe(true);
    expect(s.AttachStdout).toBe(true);
    expect(s.AttachStderr).toBe(true);
  });

  it('has no network', () => {
    expect(spec().NetworkDisabled).toBe(true);
    expect(host().NetworkMode).toBe('none');
  });

  it('drops every capability, is unprivileged and sets no-new-privileges', () => {
    const h = host();
    expect(h.CapDrop).toEqual(['ALL']);
    expect(h.CapAdd ?? []).toEqual([]);
    expect(h.Privileged).toBe(false);
    expect(h.SecurityOpt).toContain('no-new-privileges:true');
    expect((h.SecurityOpt as string[]).some((o) => /unconfined/.test(o))).toBe(false);
  });

  it('has a read-only root filesystem', () => {
    expect(host().ReadonlyRootfs).toBe(true);
  });

  it('sets Memory equal to MemorySwap, in bytes', () => {
    const h = host();
    expect(h.Memory).toBe(268_435_456);
    expect(h.MemorySwap).toBe(268_435_456);
  });

  it.each([
    [32, 33_554_432],
    [256, 268_435_456],
    [2048, 2_147_483_648],
  ])('converts memoryMb %i to %i bytes', (memoryMb, bytes) => {
    const h = host(spec({ limits: { memoryMb, cpus: 1 } }));
    expect(h.Memory).toBe(bytes);
    expect(h.MemorySwap).toBe(bytes);
  });

  it.each([
    [1.5, 1_500_000_000],
    [1, 1_000_000_000],
    [0.05, 50_000_000],
    [0.1, 100_000_000],
    [2, 2_000_000_000],
  ])('converts cpus %d to NanoCpus %i', (cpus, nano) => {
    const n = host(spec({ limits: { memoryMb: 256, cpus } })).NanoCpus;
    expect(n).toBe(nano);
    expect(Number.isInteger(n)).toBe(true);
  });

  it('uses pidsLimit under runc and pidsLimitRunsc under runsc', () => {
    expect(host(spec({ runtime: 'runc' })).PidsLimit).toBe(100);
    expect(host(spec({ runtime: 'runc' })).Runtime).toBe('runc');
    const runsc = spec({ runtime: 'runsc' });
    expect(host(runsc).PidsLimit).toBe(300);
    expect(host(runsc).Runtime).toBe('runsc');
    expect(runsc.Labels?.['pybox.runtime']).toBe('runsc');
  });

  it('sets nofile, fsize (bytes) and core=0 ulimits', () => {
    expect(host().Ulimits).toEqual([
      { Name: 'nofile', Soft: 256, Hard: 256 },
      { Name: 'fsize', Soft: 64 * MiB, Hard: 64 * MiB },
      { Name: 'core', Soft: 0, Hard: 0 },
    ]);
  });

  it('runs no init of the engine\'s (the runner is PID 1), logs nothing, keeps IPC private with a small /dev/shm', () => {
    const h = host();
    expect(h.Init).toBe(false);
    expect(h.LogConfig).toEqual({ Type: 'none', Config: {} });
    expect(h.IpcMode).toBe('private');
    expect(h.ShmSize).toBe(16 * MiB);
  });

  it('mounts nothing of the host', () => {
    const h = host();
    expect(h.Binds ?? []).toEqual([]);
    expect(h.Devices ?? []).toEqual([]);
    expect(h.Mounts ?? []).toEqual([]);
    expect(h.VolumesFrom ?? []).toEqual([]);
    expect(spec().Volumes ?? {}).toEqual({});
    expect(h.PidMode ?? '').toBe('');
    expect(h.UsernsMode ?? '').toBe('');
  });

  it('keeps the container for us to remove (no AutoRemove)', () => {
    expect(host().AutoRemove).toBe(false);
  });

  it('mounts size- and inode-limited noexec tmpfs on exactly /tmp and /work', () => {
    const tmpfs = host().Tmpfs ?? {};
    expect(Object.keys(tmpfs).sort()).toEqual(['/tmp', '/work']);
    const tmp = tmpfsOptions(tmpfs['/tmp']);
    const work = tmpfsOptions(tmpfs['/work']);
    for (const [name, opts, size] of [
      ['/tmp', tmp, '80m'],
      ['/work', work, '70m'],
    ] as const) {
      expect(opts.get('size'), name).toBe(size);
      expect(opts.get('nr_inodes'), name).toBe('5000');
      expect(opts.get('noexec'), name).toBe(true);
      expect(opts.get('nosuid'), name).toBe(true);
      expect(opts.get('nodev'), name).toBe(true);
      expect(opts.has('exec'), name).toBe(false);
    }
    expect(tmp.get('mode')).toBe('1777');
  });

  it('makes /work owned by the configured uid:gid, private to it', () => {
    const work = tmpfsOptions(host().Tmpfs?.['/work']);
    expect(work.get('uid')).toBe('10001');
    expect(work.get('gid')).toBe('10002');
    expect(work.get('mode')).toBe('0700');
  });

  it('follows the default sandbox settings of the config', () => {
    const s = containerSpec({ id: 'd', instance: 'pybox', image: 'img', runtime: 'runc', limits: { memoryMb: 256, cpus: 1 }, sandbox: defaultConfig().sandbox });
    const h = host(s);
    expect(s.User).toBe('10001:10001');
    expect(h.PidsLimit).toBe(128);
    expect(h.ShmSize).toBe(16 * MiB);
    expect(tmpfsOptions(h.Tmpfs?.['/work']).get('size')).toBe('64m');
    expect(tmpfsOptions(h.Tmpfs?.['/work']).get('nr_inodes')).toBe('4096');
  });
});
