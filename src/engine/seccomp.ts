// pybox's seccomp profile: stricter than the engine's default, sent with every container as the
// profile's content (HostConfig.SecurityOpt `seccomp=<json>`), so it does not depend on a file on
// the engine's host.
//
// What it changes, compared with Docker 20.10's default profile (measured under runc here):
//   - x86_64 only: 32-bit (int 0x80) and x32 system calls are refused. The default profile lets
//     both through, and their entry paths have had their own kernel bugs.
//   - io_uring_setup/enter/register refused: the default allows io_uring, a large and young attack
//     surface of the host kernel.
//   - socket() only for AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK; every other family (AF_ALG,
//     AF_PACKET, vsock, TIPC, RDS, CAN, XDP, ... each has had kernel bugs) is refused with EPERM.
//     Nothing in a network-less sandbox needs them.
//   - ptrace, process_vm_readv/writev, kcmp, pidfd_getfd refused: no process may inspect another,
//     not even its own child (the default allows ptrace on kernels >= 4.8).
//   - personality() only to query or to set PER_LINUX / PER_LINUX32 (no READ_IMPLIES_EXEC, no
//     ADDR_NO_RANDOMIZE).
//   - keyrings, bpf, perf_event_open, userfaultfd, mount and the new mount API, unshare, setns,
//     pivot_root, chroot, kexec, modules, swap, reboot, clock setting, quotas, modify_ldt,
//     fanotify, name_to_handle_at, memfd_secret: refused with EPERM (most of them need a
//     capability the container does not have anyway; the profile makes the refusal not depend on it).
//   - clone() without namespace flags; clone3 answers ENOSYS so the C library falls back to clone.
//   - Anything else is refused with EPERM, the default action. System calls newer than the
//     profile answer ENOSYS instead (runc adds that), so libraries fall back as on an older kernel.
//
// gVisor (runsc) does not apply an OCI seccomp profile by default: there the code's system calls
// are served by gVisor's own kernel, and gVisor itself runs under its own strict filter on the host.

const EPERM = 1;
const ENOSYS = 38;

/** Socket families a sandbox may create. */
export const ALLOWED_SOCKET_FAMILIES = { AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16 } as const;
/** Families refused explicitly (every family not allowed is refused with EPERM). */
export const DENIED_SOCKET_FAMILIES = { AF_PACKET: 17, AF_ALG: 38 } as const;
/** personality() values allowed: PER_LINUX, PER_LINUX32, and 0xffffffff (query only). */
const PERSONALITY_ALLOWED = [0x0, 0x8, 0xffffffff];
/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: none may be set. */
const CLONE_NAMESPACE_FLAGS = 0x7e020000;

/** System calls an ordinary Python program needs: the interpreter, numpy, pandas, threads, subprocesses. */
export const ALLOWED_SYSCALLS: readonly string[] = [
  // files and directories
  'access', 'chdir', 'chmod', 'chown', 'close', 'close_range', 'copy_file_range', 'creat', 'dup', 'dup2', 'dup3',
  'faccessat', 'faccessat2', 'fadvise64', 'fallocate', 'fchdir', 'fchmod', 'fchmodat', 'fchown', 'fchownat', 'fcntl',
  'fdatasync', 'fgetxattr', 'flistxattr', 'flock', 'fremovexattr', 'fsetxattr', 'fstat', 'fstatfs', 'fsync', 'ftruncate',
  'futimesat', 'getcwd', 'getdents', 'getdents64', 'getxattr', 'inotify_add_watch', 'inotify_init', 'inotify_init1',
  'inotify_rm_watch', 'ioctl', 'lchown', 'lgetxattr', 'link', 'linkat', 'listxattr', 'llistxattr', 'lremovexattr', 'lseek',
  'lsetxattr', 'lstat', 'mkdir', 'mkdirat', 'mknod', 'mknodat', 'newfstatat', 'open', 'openat', 'openat2', 'pread64',
  'preadv', 'preadv2', 'pwrite64', 'pwritev', 'pwritev2', 'read', 'readahead', 'readlink', 'readlinkat', 'readv',
  'removexattr', 'rename', 'renameat', 'renameat2', 'rmdir', 'sendfile', 'setxattr', 'splice', 'stat', 'statfs', 'statx',
  'symlink', 'symlinkat', 'sync', 'sync_file_range', 'syncfs', 'tee', 'truncate', 'umask', 'unlink', 'unlinkat', 'utime',
  'utimensat', 'utimes', 'vmsplice', 'write', 'writev',
  // asynchronous I/O (the old kernel AIO, not io_uring)
  'io_cancel', 'io_destroy', 'io_getevents', 'io_pgetevents', 'io_setup', 'io_submit',
  // polling and events
  'epoll_create', 'epoll_create1', 'epoll_ctl', 'epoll_ctl_old', 'epoll_pwait', 'epoll_pwait2', 'epoll_wait',
  'epoll_wait_old', 'eventfd', 'eventfd2', 'pause', 'pipe', 'pipe2', 'poll', 'ppoll', 'pselect6', 'select', 'signalfd', 'signalfd4',
  'timerfd_create', 'timerfd_gettime', 'timerfd_settime',
  // memory
  'brk', 'madvise', 'membarrier', 'memfd_create', 'mincore', 'mlock', 'mlock2', 'mlockall', 'mmap', 'mprotect', 'mremap',
  'msync', 'munlock', 'munlockall', 'munmap', 'pkey_alloc', 'pkey_free', 'pkey_mprotect',
  // processes, threads and signals
  'arch_prctl', 'capget', 'capset', 'execve', 'execveat', 'exit', 'exit_group', 'fork', 'futex', 'futex_waitv', 'getcpu',
  'getegid', 'geteuid', 'getgid', 'getgroups', 'getitimer', 'getpgid', 'getpgrp', 'getpid', 'getppid', 'getpriority',
  'getresgid', 'getresuid', 'getrlimit', 'getuid', 'get_robust_list', 'getrusage', 'getsid', 'get_thread_area', 'gettid',
  'ioprio_get', 'ioprio_set', 'kill', 'pidfd_open', 'pidfd_send_signal', 'prctl', 'prlimit64', 'restart_syscall', 'rseq',
  'rt_sigaction', 'rt_sigpending', 'rt_sigprocmask', 'rt_sigqueueinfo', 'rt_sigreturn', 'rt_sigsuspend',
  'rt_sigtimedwait', 'rt_tgsigqueueinfo', 'sched_getaffinity', 'sched_getattr', 'sched_getparam',
  'sched_get_priority_max', 'sched_get_priority_min', 'sched_getscheduler', 'sched_rr_get_interval',
  'sched_setaffinity', 'sched_setattr', 'sched_setparam', 'sched_setscheduler', 'sched_yield', 'seccomp', 'setfsgid',
  'setfsuid', 'setgid', 'setgroups', 'setitimer', 'setpgid', 'setpriority', 'setregid', 'setresgid', 'setresuid',
  'setreuid', 'setrlimit', 'set_robust_list', 'setsid', 'set_thread_area', 'set_tid_address', 'setuid', 'sigaltstack',
  'tgkill', 'tkill', 'vfork', 'wait4', 'waitid', 'landlock_add_rule', 'landlock_create_ruleset', 'landlock_restrict_self',
  // time
  'alarm', 'clock_getres', 'clock_gettime', 'clock_nanosleep', 'gettimeofday', 'nanosleep', 'time', 'timer_create',
  'timer_delete', 'timer_getoverrun', 'timer_gettime', 'timer_settime', 'times',
  // sockets (socket() itself is conditional, below); only loopback and unix sockets work without a network
  'accept', 'accept4', 'bind', 'connect', 'getpeername', 'getsockname', 'getsockopt', 'listen', 'recvfrom', 'recvmmsg',
  'recvmsg', 'sendmmsg', 'sendmsg', 'sendto', 'setsockopt', 'shutdown', 'socketpair',
  // System V IPC and POSIX message queues (private to the container's IPC namespace)
  'mq_getsetattr', 'mq_notify', 'mq_open', 'mq_timedreceive', 'mq_timedsend', 'mq_unlink', 'msgctl', 'msgget', 'msgrcv',
  'msgsnd', 'semctl', 'semget', 'semop', 'semtimedop', 'shmat', 'shmctl', 'shmdt', 'shmget',
  // system information
  'getrandom', 'sysinfo', 'uname',
];

/** Refused with EPERM whatever the capabilities: the attack surface the profile exists to close. */
export const DENIED_SYSCALLS: readonly string[] = [
  'io_uring_setup', 'io_uring_enter', 'io_uring_register',
  'ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd', 'process_madvise',
  'keyctl', 'add_key', 'request_key',
  'bpf', 'perf_event_open', 'userfaultfd', 'lookup_dcookie',
  'mount', 'umount2', 'mount_setattr', 'move_mount', 'open_tree', 'fsopen', 'fsconfig', 'fsmount', 'fspick',
  'unshare', 'setns', 'pivot_root', 'chroot',
  'kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module', 'reboot', 'swapon', 'swapoff', 'acct',
  'settimeofday', 'clock_settime', 'clock_adjtime', 'adjtimex',
  'quotactl', 'quotactl_fd', 'syslog', 'vhangup', 'iopl', 'ioperm', 'modify_ldt', 'uselib', 'sysfs', '_sysctl',
  'fanotify_init', 'fanotify_mark', 'name_to_handle_at', 'open_by_handle_at', 'memfd_secret',
  'sethostname', 'setdomainname', 'mbind', 'set_mempolicy', 'get_mempolicy', 'migrate_pages', 'move_pages',
  'remap_file_pages', 'process_mrelease',
];

interface SeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: 'SCMP_CMP_EQ' | 'SCMP_CMP_NE' | 'SCMP_CMP_MASKED_EQ';
}

interface SeccompRule {
  names: string[];
  action: 'SCMP_ACT_ALLOW' | 'SCMP_ACT_ERRNO';
  errnoRet?: number;
  args?: SeccompArg[];
  comment?: string;
}

export interface SeccompProfile {
  defaultAction: 'SCMP_ACT_ERRNO';
  defaultErrnoRet: number;
  architectures: string[];
  syscalls: SeccompRule[];
}

/**
 * The profile as Docker's JSON. runc ORs conditions on the same argument, so each allowed value is
 * a rule of its own (an allow-list), never "not this AND not that".
 */
export function seccompProfile(): SeccompProfile {
  const socketFamilies = Object.values(ALLOWED_SOCKET_FAMILIES);
  const deniedFamilies = Object.values(DENIED_SOCKET_FAMILIES);
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: EPERM,
    // No sub-architectures: 32-bit (int 0x80) and x32 calls do not match and are refused.
    architectures: ['SCMP_ARCH_X86_64'],
    syscalls: [
      { names: [...ALLOWED_SYSCALLS], action: 'SCMP_ACT_ALLOW' },
      { names: [...DENIED_SYSCALLS], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, comment: 'refused outright' },
      ...socketFamilies.map((family): SeccompRule => ({
        names: ['socket'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: family, op: 'SCMP_CMP_EQ' }],
      })),
      ...deniedFamilies.map((family): SeccompRule => ({
        names: ['socket'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: family, op: 'SCMP_CMP_EQ' }],
      })),
      ...PERSONALITY_ALLOWED.map((persona): SeccompRule => ({
        names: ['personality'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: persona, op: 'SCMP_CMP_EQ' }],
      })),
      {
        names: ['clone'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
        comment: 'threads and processes, never new namespaces',
      },
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS, comment: 'the C library falls back to clone' },
    ],
  };
}

let cached: string | undefined;

/** The profile as the one-line JSON sent in SecurityOpt. */
export function seccompProfileJson(): string {
  cached ??= JSON.stringify(seccompProfile());
  return cached;
}
