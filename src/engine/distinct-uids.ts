// One uid per live sandbox. Every container runs as an unprivileged uid, but several per-user
// limits of the host kernel are counted by uid across every container that shares it, not per
// container: inotify instances (fs.inotify.max_user_instances, 128), pipe buffer pages
// (fs.pipe-user-pages-soft), pending signals (RLIMIT_SIGPENDING), POSIX message queue bytes. Under
// runc, one run that opens 128 inotify instances made inotify_init fail with EMFILE in every other
// run (measured; the security battery keeps the case). So each live container of this pybox gets a
// uid no other live container of it has, from the range [base uid, base uid + count); the group
// stays the configured one. Under gVisor those limits are per sandbox anyway; distinct uids cost
// nothing there.
//
// A wrapper around the engine, so the sandbox lifecycle does not change: create() takes the lowest
// free uid and puts it into the spec; the container's remove() gives it back.
import type Docker from 'dockerode';
import { withUser } from './container-spec.ts';
import type { ContainerEngine, ContainerState, SandboxContainer } from './docker-engine.ts';
import type { Duplex } from 'node:stream';
import { EngineWrapper } from './engine-wrapper.ts';

export class DistinctUids extends EngineWrapper {
  /** Containers alive per uid offset; normally 0 or 1, more only when the range is exhausted. */
  private readonly inUse: number[];

  constructor(
    inner: ContainerEngine,
    private readonly baseUid: number,
    private readonly gid: number,
    count: number,
  ) {
    super(inner);
    this.inUse = new Array<number>(Math.max(1, count)).fill(0);
  }

  /** uids taken right now (for tests). */
  get taken(): number {
    return this.inUse.filter((n) => n > 0).length;
  }

  async create(spec: Docker.ContainerCreateOptions): Promise<SandboxContainer> {
    const slot = this.acquire();
    try {
      const container = await this.inner.create(withUser(spec, this.baseUid + slot, this.gid));
      return new UidContainer(container, () => this.release(slot));
    } catch (e) {
      this.release(slot);
      throw e;
    }
  }

  /** The least used offset: a free one while there is one (the lowest, so uids stay compact). */
  private acquire(): number {
    let best = 0;
    for (let i = 0; i < this.inUse.length; i++) {
      if ((this.inUse[i] ?? 0) === 0) {
        best = i;
        break;
      }
      if ((this.inUse[i] ?? 0) < (this.inUse[best] ?? 0)) best = i;
    }
    this.inUse[best] = (this.inUse[best] ?? 0) + 1;
    return best;
  }

  private release(slot: number): void {
    this.inUse[slot] = Math.max(0, (this.inUse[slot] ?? 0) - 1);
  }
}

class UidContainer implements SandboxContainer {
  private released = false;

  constructor(
    private readonly inner: SandboxContainer,
    private readonly release: () => void,
  ) {}

  get id(): string {
    return this.inner.id;
  }

  attach(): Promise<Duplex> {
    return this.inner.attach();
  }

  start(): Promise<void> {
    return this.inner.start();
  }

  wait(timeoutMs: number): Promise<number | null> {
    return this.inner.wait(timeoutMs);
  }

  state(): Promise<ContainerState> {
    return this.inner.state();
  }

  async remove(): Promise<void> {
    try {
      await this.inner.remove();
    } finally {
      // Given back even when removal failed (the engine away): the reaper removes the
      // container soon, and a uid kept for ever would shrink the range for the process's life.
      if (!this.released) {
        this.released = true;
        this.release();
      }
    }
  }
}
