// The only file that speaks to Docker. A few verbs behind a small interface, so the sandbox logic
// can be tested with a fake engine and nothing else imports dockerode.
import Docker from 'dockerode';
import type { Duplex } from 'node:stream';
import { PyboxError } from '../core/errors.ts';
import { EXECUTION_LABEL, INSTANCE_LABEL } from './container-spec.ts';

export interface ContainerState {
  running: boolean;
  exitCode: number | null;
  oomKilled: boolean;
}

export interface SandboxContainer {
  readonly id: string;
  /** Attaches stdin, stdout and stderr as one raw (multiplexed) socket. Call before start(). */
  attach(): Promise<Duplex>;
  start(): Promise<void>;
  /** Waits for the container to stop; null when it has not stopped within timeoutMs. */
  wait(timeoutMs: number): Promise<number | null>;
  state(): Promise<ContainerState>;
  /** Kills (if running) and removes. Idempotent: a container already gone counts as removed. */
  remove(): Promise<void>;
}

export interface ContainerEngine {
  ping(): Promise<boolean>;
  /** Names of the OCI runtimes the engine offers (runc, runsc, ...). */
  runtimes(): Promise<string[]>;
  imageExists(image: string): Promise<boolean>;
  create(spec: Docker.ContainerCreateOptions): Promise<SandboxContainer>;
  /** Ids of every sandbox container of this instance, running or not. */
  listLabelled(instance: string): Promise<string[]>;
  removeById(id: string): Promise<void>;
}

export interface DockerConnection {
  socketPath?: string;
  host?: string;
  port?: number;
  protocol?: 'http' | 'https';
}

/** Reads DOCKER_HOST (unix:// or tcp://) as Docker's own CLI does, else the configured socket. */
export function dockerConnection(dockerHost: string | undefined, socketPath: string): DockerConnection {
  if (!dockerHost) return { socketPath };
  if (dockerHost.startsWith('unix://')) return { socketPath: dockerHost.slice('unix://'.length) };
  const url = new URL(dockerHost.replace(/^tcp:/, 'http:'));
  return { host: url.hostname, port: Number(url.port || 2375), protocol: 'http' };
}

interface DockerApiError {
  statusCode?: number;
  code?: string;
  message?: string;
}

const asApiError = (e: unknown): DockerApiError => (typeof e === 'object' && e !== null ? (e as DockerApiError) : {});

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'EACCES']);

/** Turns a failure to reach the engine into engine_unavailable; leaves others as they are. */
export function engineFault(e: unknown, what: string): unknown {
  const err = asApiError(e);
  if (err.code && CONNECTION_CODES.has(err.code)) {
    return new PyboxError('engine_unavailable', `the Docker engine does not answer (${what}: ${err.code})`, {
      retryAfterS: 5,
      cause: e,
    });
  }
  return e;
}

const isGone = (e: unknown) => {
  const s = asApiError(e).statusCode;
  return s === 404 || s === 409 || s === 304; // already gone, removal in progress, already stopped
};

export class DockerEngine implements ContainerEngine {
  private readonly docker: Docker;

  constructor(conn: DockerConnection, private readonly apiTimeoutMs: number) {
    this.docker = new Docker({ ...conn, timeout: apiTimeoutMs });
  }

  async ping(): Promise<boolean> {
    try {
      await this.docker.ping();
      return true;
    } catch {
      return false;
    }
  }

  async runtimes(): Promise<string[]> {
    try {
      const info = (await this.docker.info()) as { Runtimes?: Record<string, unknown> };
      return Object.keys(info.Runtimes ?? {});
    } catch (e) {
      throw engineFault(e, 'info');
    }
  }

  async imageExists(image: string): Promise<boolean> {
    try {
      await this.docker.getImage(image).inspect();
      return true;
    } catch (e) {
      if (asApiError(e).statusCode === 404) return false;
      throw engineFault(e, 'image inspect');
    }
  }

  async create(spec: Docker.ContainerCreateOptions): Promise<SandboxContainer> {
    try {
      const c = await this.docker.createContainer(spec);
      return new DockerSandboxContainer(c);
    } catch (e) {
      const err = asApiError(e);
      if (err.statusCode === 404 && /image/i.test(err.message ?? '')) {
        throw new PyboxError('image_missing', `the sandbox image ${spec.Image ?? ''} is missing: run \`npm run setup\``, {
          cause: e,
        });
      }
      throw engineFault(e, 'create');
    }
  }

  async listLabelled(instance: string): Promise<string[]> {
    try {
      const filters = { label: [EXECUTION_LABEL, `${INSTANCE_LABEL}=${instance}`] };
      const list = await this.docker.listContainers({ all: true, filters });
      return list.map((c) => c.Id);
    } catch (e) {
      throw engineFault(e, 'list');
    }
  }

  async removeById(id: string): Promise<void> {
    await removeContainer(this.docker.getContainer(id));
  }
}

async function removeContainer(c: Docker.Container): Promise<void> {
  try {
    await c.remove({ force: true, v: true });
  } catch (e) {
    if (!isGone(e)) throw engineFault(e, 'remove');
  }
}

class DockerSandboxContainer implements SandboxContainer {
  constructor(private readonly c: Docker.Container) {}

  get id(): string {
    return this.c.id;
  }

  async attach(): Promise<Duplex> {
    try {
      const stream = await this.c.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true });
      return stream as Duplex;
    } catch (e) {
      throw engineFault(e, 'attach');
    }
  }

  async start(): Promise<void> {
    try {
      await this.c.start();
    } catch (e) {
      throw engineFault(e, 'start');
    }
  }

  async wait(timeoutMs: number): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
    });
    try {
      const waited = this.c.wait({ condition: 'not-running' }).then((r: { StatusCode?: number }) => r.StatusCode ?? null);
      return await Promise.race([waited, timeout]);
    } catch (e) {
      if (isGone(e)) return null;
      throw engineFault(e, 'wait');
    } finally {
      clearTimeout(timer);
    }
  }

  async state(): Promise<ContainerState> {
    try {
      const info = await this.c.inspect();
      return { running: info.State.Running, exitCode: info.State.ExitCode ?? null, oomKilled: info.State.OOMKilled };
    } catch (e) {
      throw engineFault(e, 'inspect');
    }
  }

  remove(): Promise<void> {
    return removeContainer(this.c);
  }
}
