import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { containerSpec } from '../../src/engine/container-spec.ts';
import { ALLOWED_SYSCALLS, DENIED_SYSCALLS, seccompProfile, seccompProfileJson } from '../../src/engine/seccomp.ts';
import { defaultConfig } from './fakes.ts';

/** x86_64 system call names, from the kernel headers when present. */
function x86_64Syscalls(): Set<string> | null {
  try {
    const text = readFileSync('/usr/include/x86_64-linux-gnu/asm/unistd_64.h', 'utf8');
    return new Set([...text.matchAll(/#define __NR_(\w+) \d+/g)].map((m) => m[1] ?? ''));
  } catch {
    return null;
  }
}

const rulesFor = (name: string) => seccompProfile().syscalls.filter((r) => r.names.includes(name));

describe('seccomp profile', () => {
  it('refuses by default with EPERM and knows only x86_64, so 32-bit and x32 calls are refused', () => {
    const p = seccompProfile();
    expect(p.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(p.defaultErrnoRet).toBe(1);
    expect(p.architectures).toEqual(['SCMP_ARCH_X86_64']);
  });

  it('denies the attack surface explicitly with EPERM, and never also allows it', () => {
    for (const name of ['io_uring_setup', 'io_uring_enter', 'io_uring_register', 'ptrace', 'keyctl', 'add_key', 'request_key', 'bpf',
      'perf_event_open', 'userfaultfd', 'mount', 'umount2', 'unshare', 'setns', 'pivot_root', 'kexec_load', 'kexec_file_load',
      'init_module', 'finit_module', 'delete_module', 'process_vm_readv', 'process_vm_writev', 'modify_ldt', 'chroot']) {
      const rules = rulesFor(name);
      expect(rules, name).toHaveLength(1);
      expect(rules[0]).toMatchObject({ action: 'SCMP_ACT_ERRNO', errnoRet: 1 });
    }
    expect(ALLOWED_SYSCALLS.filter((n) => DENIED_SYSCALLS.includes(n))).toEqual([]);
    expect(new Set(ALLOWED_SYSCALLS).size).toBe(ALLOWED_SYSCALLS.length);
  });

  it('allows socket() only for unix, inet, inet6 and netlink, each as a rule of its own', () => {
    const allowed = rulesFor('socket').filter((r) => r.action === 'SCMP_ACT_ALLOW');
    // runc ORs several conditions on one argument: each rule must carry exactly one.
    expect(allowed.every((r) => r.args?.length === 1 && r.args[0]?.op === 'SCMP_CMP_EQ' && r.args[0].index === 0)).toBe(true);
    expect(allowed.map((r) => r.args?.[0]?.value).sort((a, b) => (a ?? 0) - (b ?? 0))).toEqual([1, 2, 10, 16]);
    const denied = rulesFor('socket').filter((r) => r.action === 'SCMP_ACT_ERRNO');
    expect(denied.map((r) => r.args?.[0]?.value).sort()).toEqual([17, 38]); // AF_PACKET, AF_ALG
    expect(rulesFor('socket').every((r) => (r.args?.length ?? 0) === 1)).toBe(true); // no unconditional rule
  });

  it('allows personality() only to query or set PER_LINUX/PER_LINUX32, clone without namespaces, and clone3 falls back', () => {
    expect(rulesFor('personality').map((r) => r.args?.[0]?.value)).toEqual([0, 8, 0xffffffff]);
    const [clone] = rulesFor('clone');
    expect(clone?.args).toEqual([{ index: 0, value: 0x7e020000, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }]);
    expect(rulesFor('clone3')).toEqual([expect.objectContaining({ action: 'SCMP_ACT_ERRNO', errnoRet: 38 })]);
  });

  it('names only real x86_64 system calls', () => {
    const known = x86_64Syscalls();
    if (!known) return; // no kernel headers on this machine
    const names = seccompProfile().syscalls.flatMap((r) => r.names);
    expect(names.filter((n) => !known.has(n))).toEqual([]);
    // What Python, numpy, threads and subprocesses need is there.
    for (const n of ['pipe2', 'getuid', 'clone', 'execve', 'wait4', 'futex', 'mmap', 'openat', 'epoll_wait', 'socketpair', 'rseq', 'getrandom']) {
      expect(names, n).toContain(n);
    }
  });

  it('is sent with every container as its content', () => {
    const spec = containerSpec({
      id: 'x',
      instance: 'i',
      image: 'img',
      runtime: 'runc',
      limits: { memoryMb: 128, cpus: 1 },
      sandbox: defaultConfig().sandbox,
    });
    const opts: string[] = spec.HostConfig?.SecurityOpt ?? [];
    expect(opts).toContain('no-new-privileges:true');
    const seccomp = opts.find((o) => o.startsWith('seccomp='));
    expect(seccomp).toBe(`seccomp=${seccompProfileJson()}`);
    expect(JSON.parse(seccomp?.slice('seccomp='.length) ?? '')).toEqual(seccompProfile());
  });
});
