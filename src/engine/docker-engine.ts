// The only file that speaks to Docker. A few verbs behind a small interface, so the sandbox logic
// can be tested with a fake engine and nothing else imports dockerode.
//
// It also survives the engine going away: a call that cannot reach the engine fails with
// engine_unavailable (503), and from then on the engine is pinged until it answers again. Once it
// does, the reaper (reaper.ts, the same one that runs at start-up) removes every container of this
// instance that pybox no longer holds (its removal failed while the engine was away, or a create's
// answer was lost), without a restart.
import Docker from 'dockerode';
import type { Duplex } from 'node:stream';
import { PyboxError } from '../core/errors.ts';
import type { Logger, Observer } from '../core/ports.ts';
import { EXECUTION_LABEL, INSTANCE_LABEL } from './container-spec.ts';
import { Reaper, type LabelledContainer } from './reaper.ts';

export interface ContainerState {
  running: boolean;
  exitCode: number | null;
  oomKilled: boolean;
  /** Someone killed it through the engine (`docker kill`, `docker stop`): not pybox, not the kernel. */
  killedFromOutside?: boolean;
  /** It no longer exists: removed by someone else while it ran. */
  gone?: boolean;
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
  /** Every sandbox container of this instance, running or not. */
  listLabelled(instance: string): Promise<LabelledContainer[]>;
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

const isUnavailable = (e: unknown) => e instanceof PyboxError && e.code === 'engine_unavailable';

export interface RecoveryOptions {
  /** This deployment's instance label: the reaper removes only its own containers. */
  instance: string;
  logger: Logger;
  /** How often an engine that went away is pinged. */
  intervalMs?: number;
  /** Told of every failed engine call (metrics). */
  observer?: Pick<Observer, 'engineError'>;
}

export class DockerEngine implements ContainerEngine {
  private readonly docker: Docker;
  /** Names of the containers pybox holds: being created, or created and not yet removed. */
  private readonly held = new Set<string>();
  private recovering: NodeJS.Timeout | null = null;
  private closed = false;
  /** Recovery starts only for an engine that answered once (not when pybox starts without one). */
  private answered = false;
  private readonly reaper: Reaper | null;

  constructor(
    conn: DockerConnection,
    private readonly apiTimeoutMs: number,
    private readonly recovery?: RecoveryOptions,
  ) {
    this.docker = new Docker({ ...conn, timeout: apiTimeoutMs });
    this.reaper = recovery ? new Reaper(this, recovery.instance, recovery.logger, (name) => this.held.has(name)) : null;
  }

  /**
   * Removes every container of this instance that this process does not hold: at start-up, the
   * leftovers of an earlier process; after the engine came back, what was left meanwhile.
   */
  reapLeftovers(occasion: 'start-up' | 'engine back' = 'start-up'): Promise<number> {
    return this.reaper ? this.reaper.reap(occasion) : Promise.resolve(0);
  }

  async ping(): Promise<boolean> {
    try {
      await this.docker.ping();
      this.answered = true;
      return true;
    } catch {
      this.lost();
      return false;
    }
  }

  async runtimes(): Promise<string[]> {
    try {
      const info = (await this.docker.info()) as { Runtimes?: Record<string, unknown> };
      return Object.keys(info.Runtimes ?? {});
    } catch (e) {
      throw this.fault(e, 'info');
    }
  }

  async imageExists(image: string): Promise<boolean> {
    try {
      await this.docker.getImage(image).inspect();
      return true;
    } catch (e) {
      if (asApiError(e).statusCode === 404) return false;
      throw this.fault(e, 'image inspect');
    }
  }

  async create(spec: Docker.ContainerCreateOptions): Promise<SandboxContainer> {
    const name = spec.name ?? '';
    this.held.add(name);
    try {
      const c = await this.docker.createContainer(spec);
      return new DockerSandboxContainer(c, this, name);
    } catch (e) {
      // Not held any more: if the engine made it after all (an answer lost on the way), recovery removes it.
      this.held.delete(name);
      const err = asApiError(e);
      if (err.statusCode === 404 && /image/i.test(err.message ?? '')) {
        throw new PyboxError('image_missing', `the sandbox image ${spec.Image ?? ''} is missing: run \`npm run setup\``, {
          cause: e,
        });
      }
      throw this.fault(e, 'create');
    }
  }

  async listLabelled(instance: string): Promise<LabelledContainer[]> {
    try {
      const filters = { label: [EXECUTION_LABEL, `${INSTANCE_LABEL}=${instance}`] };
      const list = await this.docker.listContainers({ all: true, filters });
      return list.map((c) => ({ id: c.Id, name: (c.Names[0] ?? '').replace(/^\//, '') }));
    } catch (e) {
      throw this.fault(e, 'list');
    }
  }

  async removeById(id: string): Promise<void> {
    await this.removeContainer(this.docker.getContainer(id));
  }

  /** Stops the recovery pings (shutdown). */
  close(): void {
    this.closed = true;
    if (this.recovering) clearTimeout(this.recovering);
    this.recovering = null;
  }

  /** @internal Turns a failure into engine_unavailable when the engine cannot be reached, and notes it. */
  fault(e: unknown, what: string): unknown {
    const err = engineFault(e, what);
    this.recovery?.observer?.engineError(what, isUnavailable(err));
    if (isUnavailable(err)) this.lost();
    return err;
  }

  /** @internal */
  async removeContainer(c: Docker.Container, name?: string): Promise<void> {
    if (name !== undefined) this.held.delete(name); // from now on, recovery may remove it if this fails
    try {
      await c.remove({ force: true, v: true });
    } catch (e) {
      if (!isGone(e)) throw this.fault(e, 'remove');
    }
  }

  /** The engine did not answer: ping it until it does, then reap what it still holds of ours. */
  private lost(): void {
    if (!this.recovery || this.recovering || this.closed || !this.answered) return;
    const { logger, intervalMs = 1000 } = this.recovery;
    logger.warn('the Docker engine does not answer; waiting for it to come back');
    const attempt = () => {
      this.recovering = setTimeout(() => {
        void this.docker
          .ping()
          .then(async () => {
            this.recovering = null;
            logger.info('the Docker engine answers again');
            await this.reapLeftovers('engine back').catch((e: unknown) => {
              logger.warn('could not remove the sandboxes left while the engine was away', { error: e });
              this.lost(); // gone again, or failing: keep trying
            });
          })
          .catch(() => {
            if (!this.closed) attempt();
          });
      }, intervalMs);
      this.recovering.unref();
    };
    attempt();
  }

  /** @internal Killed or OOM, as the engine recorded it between `since` and now. */
  async exitEvents(id: string, sinceS: number): Promise<{ kill: boolean; oom: boolean }> {
    const stream = (await this.docker.getEvents({
      since: sinceS,
      until: Math.ceil(Date.now() / 1000) + 1,
      filters: { type: ['container'], container: [id], event: ['kill', 'oom'] },
    })) as NodeJS.ReadableStream;
    let text = '';
    for await (const chunk of stream) {
      text += chunk.toString();
      if (text.length > 1 << 20) break;
    }
    const actions = text
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        try {
          return (JSON.parse(l) as { Action?: string }).Action ?? '';
        } catch {
          return '';
        }
      });
    return { kill: actions.includes('kill'), oom: actions.includes('oom') };
  }
}

class DockerSandboxContainer implements SandboxContainer {
  constructor(
    private readonly c: Docker.Container,
    private readonly engine: DockerEngine,
    private readonly name: string,
  ) {}

  get id(): string {
    return this.c.id;
  }

  async attach(): Promise<Duplex> {
    try {
      const stream = await this.c.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true });
      return stream as Duplex;
    } catch (e) {
      throw this.engine.fault(e, 'attach');
    }
  }

  async start(): Promise<void> {
    try {
      await this.c.start();
    } catch (e) {
      throw this.engine.fault(e, 'start');
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
      throw this.engine.fault(e, 'wait');
    } finally {
      clearTimeout(timer);
    }
  }

  async state(): Promise<ContainerState> {
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.c.inspect();
    } catch (e) {
      if (asApiError(e).statusCode === 404) return { running: false, exitCode: null, oomKilled: false, gone: true };
      throw this.engine.fault(e, 'inspect');
    }
    const state: ContainerState = { running: info.State.Running, exitCode: info.State.ExitCode ?? null, oomKilled: info.State.OOMKilled };
    // A SIGKILL with no OOM flag: the engine's events tell an outside `docker kill` from the kernel.
    if (!state.running && state.exitCode === 137) {
      const startedS = Math.floor(Date.parse(info.State.StartedAt || info.Created) / 1000) || Math.floor(Date.now() / 1000) - 3600;
      const events = await this.engine.exitEvents(this.c.id, startedS).catch(() => ({ kill: false, oom: false }));
      state.oomKilled ||= events.oom;
      state.killedFromOutside = events.kill && !state.oomKilled;
    }
    return state;
  }

  remove(): Promise<void> {
    return this.engine.removeContainer(this.c, this.name);
  }
}
