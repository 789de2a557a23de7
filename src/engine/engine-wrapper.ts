// A ContainerEngine that wraps another and changes only how containers are created: every other
// verb goes to the inner engine as it is. DistinctUids (a uid per sandbox) and the bench's timed
// engine are such wrappers.
import type Docker from 'dockerode';
import type { ContainerEngine, SandboxContainer } from './docker-engine.ts';
import type { LabelledContainer } from './reaper.ts';

export abstract class EngineWrapper implements ContainerEngine {
  constructor(protected readonly inner: ContainerEngine) {}

  ping(): Promise<boolean> {
    return this.inner.ping();
  }

  runtimes(): Promise<string[]> {
    return this.inner.runtimes();
  }

  imageExists(image: string): Promise<boolean> {
    return this.inner.imageExists(image);
  }

  listLabelled(instance: string): Promise<LabelledContainer[]> {
    return this.inner.listLabelled(instance);
  }

  removeById(id: string): Promise<void> {
    return this.inner.removeById(id);
  }

  abstract create(spec: Docker.ContainerCreateOptions): Promise<SandboxContainer>;
}
