// From clamped limits and the sandbox settings to Docker's container-create body. Units are
// converted here, once, at the Docker edge. ../shared/docs/security.md gives the reason for each.
import type Docker from 'dockerode';
import type { Config } from '../config/schema.ts';
import type { RuntimeName } from '../core/schemas.ts';
import { seccompProfileJson } from './seccomp.ts';

export const EXECUTION_LABEL = 'pybox.execution';
export const INSTANCE_LABEL = 'pybox.instance';
const MiB = 1024 * 1024;

export interface SpecInput {
  id: string;
  instance: string;
  image: string;
  runtime: RuntimeName;
  limits: { memoryMb: number; cpus: number };
  sandbox: Config['sandbox'];
  /** Modules the runner imports while it waits; only set for warm sandboxes. */
  preload?: string[];
}

/** The same spec for another uid:gid: the process's user and the owner of its work directory. */
export function withUser(spec: Docker.ContainerCreateOptions, uid: number, gid: number): Docker.ContainerCreateOptions {
  const tmpfs = { ...spec.HostConfig?.Tmpfs };
  const work = tmpfs['/work'];
  if (work !== undefined) tmpfs['/work'] = work.replace(/(^|,)uid=\d+/, `$1uid=${uid}`).replace(/(^|,)gid=\d+/, `$1gid=${gid}`);
  return { ...spec, User: `${uid}:${gid}`, HostConfig: { ...spec.HostConfig, Tmpfs: tmpfs } };
}

export function containerSpec(input: SpecInput): Docker.ContainerCreateOptions {
  const { sandbox: s, limits } = input;
  const [uid, gid] = s.user.split(':');
  const tmpfs = (sizeMb: number, extra: string) =>
    `rw,noexec,nosuid,nodev,size=${sizeMb}m,nr_inodes=${s.tmpfsInodes},${extra}`;
  const memoryBytes = Math.floor(limits.memoryMb * MiB);
  return {
    name: `pybox-${input.id}`,
    Image: input.image,
    Labels: { [EXECUTION_LABEL]: input.id, [INSTANCE_LABEL]: input.instance, 'pybox.runtime': input.runtime },
    User: s.user,
    WorkingDir: '/work',
    // The runner's own environment comes from the image; the user's program gets one built by the
    // runner from an allow-list. Nothing of the service's environment is passed.
    Env: input.preload && input.preload.length > 0 ? [`PYBOX_PRELOAD=${input.preload.join(',')}`] : [],
    Tty: false,
    OpenStdin: true,
    StdinOnce: true,
    AttachStdin: true,
    AttachStdout: true,
    AttachStderr: true,
    NetworkDisabled: true,
    HostConfig: {
      Runtime: input.runtime,
      NetworkMode: 'none',
      Privileged: false,
      CapDrop: ['ALL'],
      // pybox's own profile, stricter than the engine's default (seccomp.ts). gVisor ignores OCI
      // seccomp: there the system calls are served by its own kernel.
      SecurityOpt: ['no-new-privileges:true', `seccomp=${seccompProfileJson()}`],
      ReadonlyRootfs: true,
      Tmpfs: {
        '/tmp': tmpfs(s.tmpTmpfsMb, 'mode=1777'),
        '/work': tmpfs(s.workTmpfsMb, `uid=${uid},gid=${gid},mode=0700`),
      },
      Memory: memoryBytes,
      MemorySwap: memoryBytes,
      MemorySwappiness: 0,
      NanoCpus: Math.round(limits.cpus * 1e9),
      PidsLimit: input.runtime === 'runsc' ? s.pidsLimitRunsc : s.pidsLimit,
      Ulimits: [
        { Name: 'nofile', Soft: s.nofile, Hard: s.nofile },
        { Name: 'fsize', Soft: s.fsizeMb * MiB, Hard: s.fsizeMb * MiB },
        { Name: 'core', Soft: 0, Hard: 0 },
      ],
      // No init of the engine's: the runner is PID 1, so the code cannot signal it (pybox_runner/relay.py).
      Init: false,
      LogConfig: { Type: 'none', Config: {} },
      IpcMode: 'private',
      ShmSize: s.shmMb * MiB,
      AutoRemove: false,
      Binds: [],
      Devices: [],
    },
  };
}
