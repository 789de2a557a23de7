// A real cluster for tests: API nodes and workers as separate `src/main.ts` processes, on a
// database and a Redis key prefix of their own, and, for the fault tests, a PostgreSQL and a Redis
// of their own that a test may stop and start. Everything it starts it stops, by pid; close()
// also removes what killed workers left on the engines and drops the database.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { freePort } from './serve.ts';

const run = promisify(execFile);
export const ROOT = join(import.meta.dirname, '..', '..');
/**
 * Where test servers keep their data: not under /tmp, /var/tmp or /dev/shm, which the security
 * battery watches for files a sandbox might have written to the host.
 */
const STATE = '/var/lib/pybox/test';

function stateDir(prefix: string): string {
  mkdirSync(STATE, { recursive: true });
  return mkdtempSync(join(STATE, prefix));
}

export interface NodeProcess {
  name: string;
  role: 'api' | 'worker' | 'all';
  url: string;
  child: ChildProcess;
  readonly log: string;
  exited: Promise<number | null>;
}

export interface NodeOptions {
  /** A Docker engine other than the default one (DOCKER_HOST), for a worker. */
  dockerHost?: string | undefined;
  env?: Record<string, string>;
}

export interface ClusterOptions {
  postgresUrl: string;
  redisUrl: string;
  /** Settings laid over the defaults, as YAML sections (cluster.prefix and engine.instance are set here). */
  config?: Record<string, unknown>;
}

const LISTENING = /pybox (?:api|worker|cluster) node listening on (http:\/\/[^\s"]+)/;

export class Cluster {
  readonly prefix = `pbxc${randomBytes(4).toString('hex')}`;
  /** The engine.instance of every node: workers label their sandboxes with it and their node id. */
  readonly instance = `test-cluster-${randomBytes(4).toString('hex')}`;
  readonly nodes = new Map<string, NodeProcess>();
  private readonly dir = stateDir('pybox-cluster-');
  private readonly configPath = join(this.dir, 'config.yaml');
  private readonly hosts = new Set<string | undefined>();

  constructor(private readonly opts: ClusterOptions) {
    const config = {
      ...opts.config,
      cluster: { prefix: this.prefix, heartbeatMs: 500, lockMs: 3000, ...(opts.config?.cluster as object | undefined) },
      engine: { instance: this.instance, ...(opts.config?.engine as object | undefined) },
      log: { level: 'info' },
    };
    writeFileSync(this.configPath, JSON.stringify(config));
  }

  /** The settings every node gets: for the CLI (`pybox keys`) against the same store. */
  get env(): Record<string, string> {
    return { PYBOX_CONFIG: this.configPath, PYBOX_POSTGRES_URL: this.opts.postgresUrl, PYBOX_REDIS_URL: this.opts.redisUrl };
  }

  /** Starts a node and waits until it listens (it is ready to serve; a worker has joined the queue). */
  async start(name: string, role: NodeProcess['role'], opts: NodeOptions = {}): Promise<NodeProcess> {
    const port = await freePort();
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...this.env,
      PYBOX_ROLE: role,
      PYBOX_NODE_ID: name,
      PYBOX_HOST: '127.0.0.1',
      PYBOX_PORT: String(port),
      PYBOX_DB: join(this.dir, `${name}.db`),
      ...opts.env,
    };
    if (opts.dockerHost) env.DOCKER_HOST = opts.dockerHost;
    else delete env.DOCKER_HOST;
    if (role !== 'api') this.hosts.add(opts.dockerHost);
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const node: NodeProcess = {
      name,
      role,
      url: `http://127.0.0.1:${port}`,
      child,
      exited,
      get log() {
        return log;
      },
    };
    this.nodes.set(name, node);
    let gone = false;
    void exited.then(() => (gone = true));
    for (let i = 0; i < 600 && !LISTENING.test(log); i++) {
      if (gone) throw new Error(`node ${name} exited before it listened:\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!LISTENING.test(log)) throw new Error(`node ${name} did not listen within 60 s:\n${log}`);
    return node;
  }

  /** SIGKILL: the node gets no chance to clean up (a crash, a host gone). */
  async kill(name: string): Promise<void> {
    const node = this.nodes.get(name);
    if (!node || node.child.exitCode !== null || node.child.signalCode !== null) return;
    node.child.kill('SIGKILL');
    await node.exited;
  }

  /** SIGTERM, then waits for it to exit (SIGKILL after `ms`). Resolves with its exit code. */
  async stop(name: string, ms = 30_000): Promise<number | null> {
    const node = this.nodes.get(name);
    if (!node) return null;
    if (node.child.exitCode !== null || node.child.signalCode !== null) return node.child.exitCode;
    node.child.kill('SIGTERM');
    const timer = setTimeout(() => node.child.kill('SIGKILL'), ms);
    try {
      return await node.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops every node, removes what killed workers left behind (by this cluster's label), drops nothing else. */
  async close(): Promise<void> {
    await Promise.all([...this.nodes.keys()].map((n) => this.stop(n, 20_000)));
    for (const host of this.hosts) await removeLabelled(host, this.instance);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Removes the containers whose instance label starts with `instance` on the engine at `host`. */
export async function removeLabelled(host: string | undefined, instance: string): Promise<number> {
  const docker = host ? new Docker({ socketPath: host.replace(/^unix:\/\//, '') }) : new Docker();
  const list = await docker.listContainers({ all: true, filters: { label: ['pybox.instance'] } });
  const ours = list.filter((c) => (c.Labels['pybox.instance'] ?? '').startsWith(instance));
  await Promise.all(ours.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined)));
  return ours.length;
}

/** Containers of this cluster on the engine at `host` (a test's view of what workers hold). */
export async function labelled(host: string | undefined, instance: string): Promise<string[]> {
  const docker = host ? new Docker({ socketPath: host.replace(/^unix:\/\//, '') }) : new Docker();
  const list = await docker.listContainers({ all: true, filters: { label: ['pybox.instance'] } });
  return list.filter((c) => (c.Labels['pybox.instance'] ?? '').startsWith(instance)).map((c) => c.Id);
}

/** A Redis of a test's own (a fault test stops and restarts it), on a free port, data in a temp dir. */
export class PrivateRedis {
  readonly port: number;
  private child: ChildProcess | undefined;
  private readonly dir = stateDir('pybox-redis-');

  private constructor(port: number) {
    this.port = port;
  }

  static async start(): Promise<PrivateRedis> {
    const r = new PrivateRedis(await freePort());
    await r.up();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts it (again), with the same data: append-only, so what was acknowledged survives. */
  async up(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--appendonly', 'yes', '--appendfsync', 'always', '--maxmemory-policy', 'noeviction', '--save', ''];
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    this.child = child;
    for (let i = 0; i < 100; i++) {
      try {
        await run('redis-cli', ['-p', String(this.port), 'ping']);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error('the private Redis did not start');
  }

  /** Stops it by its pid (SIGKILL with kill: a crash; else a clean shutdown). */
  async down(kill = false): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(kill ? 'SIGKILL' : 'SIGTERM');
    await exited;
  }

  async close(): Promise<void> {
    await this.down(true);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A PostgreSQL of a test's own (a fault test stops and restarts it), run as the postgres OS user. */
export class PrivatePostgres {
  private constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly bin: string,
  ) {}

  static async start(): Promise<PrivatePostgres> {
    const { stdout } = await run('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1']);
    const bin = stdout.trim();
    if (!bin) throw new Error('PostgreSQL is not installed: run `bash scripts/setup.sh test`');
    const dir = stateDir('pybox-pg-');
    const { stdout: ids } = await run('id', ['-u', 'postgres']);
    const uid = Number(ids.trim());
    const { stdout: gids } = await run('id', ['-g', 'postgres']);
    chownSync(dir, uid, Number(gids.trim()));
    const pgp = new PrivatePostgres(await freePort(), dir, bin);
    await run('runuser', ['-u', 'postgres', '--', `${bin}/initdb`, '-D', join(dir, 'data'), '-U', 'pybox', '--auth=trust', '-E', 'UTF8'], { timeout: 60_000 });
    await pgp.up();
    return pgp;
  }

  get url(): string {
    return `postgres://pybox@127.0.0.1:${this.port}/postgres`;
  }

  async up(): Promise<void> {
    const opts = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=on`;
    await run('runuser', ['-u', 'postgres', '--', `${this.bin}/pg_ctl`, '-D', join(this.dir, 'data'), '-o', opts, '-l', join(this.dir, 'log'), '-w', 'start'], { timeout: 60_000 });
  }

  /** Stops it (pg_ctl signals the postmaster by the pid in its own pid file). */
  async down(): Promise<void> {
    await run('runuser', ['-u', 'postgres', '--', `${this.bin}/pg_ctl`, '-D', join(this.dir, 'data'), '-m', 'fast', '-w', 'stop'], { timeout: 60_000 }).catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.down();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** POST /v1/executions on a node; resolves with status and body, never throws for an HTTP error. */
export async function execute(url: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const send = () => fetch(`${url}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  let res: Response;
  try {
    res = await send();
  } catch (e) {
    // A kept-alive connection the node closed as idle just as the request went out on it (a test
    // that paused a few seconds, as long as the node keeps idle connections): it never reached the
    // node, so it is sent once more on a new connection. A node that is gone refuses that one too.
    if (!resetBeforeAnswer(e)) throw e;
    res = await send();
  }
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Whether fetch failed because the connection was reset or closed by the other side before any answer. */
function resetBeforeAnswer(e: unknown): boolean {
  const cause = e instanceof Error ? (e.cause as { code?: string } | undefined) : undefined;
  return cause?.code === 'ECONNRESET' || cause?.code === 'UND_ERR_SOCKET';
}
