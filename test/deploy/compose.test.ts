// The compose deployment end to end, on this machine's engine: the images built offline
// (deploy/build-images.sh, skipped when present), deploy/docker-compose.yml under a project name of
// its own, brought up with no key made by hand (first-key writes one to the secrets directory),
// /readyz and print(1) through both published ports, both workers in GET /v1/cluster; then `down`
// and `up` again keep the history and the key; then `down -v` leaves nothing of the project on the
// engine (and the same is checked and cleaned after a failure).
//
// About a minute once the images exist, two when the service image is rebuilt after a change to
// the code, a few more on a fresh machine (every image is built then). It needs docker-compose
// (set-up installs it) and the engine; PYBOX_DEPLOY_TEST=0 leaves it out of a local run. It never skips a step: whatever is missing fails it loudly.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');
const composeFile = join(root, 'deploy/docker-compose.yml');
const enabled = process.env.PYBOX_DEPLOY_TEST !== '0';

// docker-compose lets the shell's variables win over the env file: none of ours may leak in.
const composeEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PYBOX_') && !k.startsWith('COMPOSE_')));

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (or its timeout) and reports how it ended; never throws. */
function run(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd: root, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, env: composeEnv, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function ok(r: Ran, what: string): string {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.stderr.slice(-4000)}\n${r.stdout.slice(-2000)}`);
  return r.stdout;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const lines = (s: string) => s.split('\n').map((l) => l.trim()).filter((l) => l !== '');

describe.runIf(enabled)('deploy/docker-compose.yml', () => {
  const project = `pybox-deploy-test-${randomBytes(4).toString('hex')}`;
  let dir = '';
  let envFile = '';
  let secretsDir = '';
  const ports = { api1: 0, api2: 0 };
  let adminKey = '';
  /** The executions run before `down`, by id, as first answered. */
  const ran = new Map<string, { status?: string; stdout?: string }>();

  const compose = (args: string[], timeoutMs = 180_000) => run('docker-compose', ['-p', project, '--env-file', envFile, '-f', composeFile, ...args], { timeoutMs });

  /** Container ids of this project, running or not, straight from the engine. */
  const projectContainers = async () => lines(ok(await run('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${project}`]), 'docker ps'));
  /** Sandboxes the project's workers started (labelled <PYBOX_DEPLOYMENT>.<node id>). */
  const projectSandboxes = async () => {
    const all = lines(ok(await run('docker', ['ps', '-a', '--filter', 'label=pybox.execution', '--format', '{{.ID}} {{.Label "pybox.instance"}}']), 'docker ps'));
    return all.filter((l) => l.split(' ')[1]?.startsWith(`${project}.`));
  };

  async function health(service: string): Promise<string> {
    const id = lines(ok(await compose(['ps', '-q', service]), `docker-compose ps ${service}`))[0];
    if (id === undefined) return 'absent';
    const r = await run('docker', ['inspect', '--format', '{{.RestartCount}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}', id]);
    if (r.code !== 0) return 'absent';
    const [restarts, ...state] = r.stdout.trim().split(' ');
    // A node that keeps exiting will not get healthy by waiting longer.
    return Number(restarts) >= 3 ? `crash-looping (${restarts} restarts)` : state.join(' ');
  }

  async function untilHealthy(services: string[], withinMs: number): Promise<void> {
    const deadline = Date.now() + withinMs;
    let states: string[] = [];
    while (Date.now() < deadline) {
      states = await Promise.all(services.map(health));
      if (states.every((s) => s === 'running healthy')) return;
      if (states.some((s) => s.startsWith('crash-looping'))) break;
      await sleep(2000);
    }
    const logs = await compose(['logs', '--no-color', '--tail', '20', ...services]);
    throw new Error(`not healthy (waited at most ${withinMs} ms): ${services.map((s, i) => `${s}=${states[i]}`).join(', ')}\n${logs.stdout.slice(-6000)}`);
  }

  beforeAll(async () => {
    ok(await run('docker-compose', ['version']), 'docker-compose version');
    dir = mkdtempSync(join(tmpdir(), 'pybox-deploy-test-'));
    envFile = join(dir, '.env');
    secretsDir = join(dir, 'secrets');
    ports.api1 = await freePort();
    ports.api2 = await freePort();
    // Tags, the socket's group, fresh passwords and the secrets directory go to this run's own env
    // file and directory, never deploy/.env and deploy/secrets (the script keeps the line given).
    writeFileSync(envFile, `PYBOX_SECRETS_DIR=${secretsDir}\n`, { mode: 0o600 });
    ok(await run('bash', ['deploy/build-images.sh', '--env-file', envFile], { timeoutMs: 590_000 }), 'deploy/build-images.sh');
    appendFileSync(
      envFile,
      [`PYBOX_DEPLOYMENT=${project}`, `PYBOX_API1_PORT=${ports.api1}`, `PYBOX_API2_PORT=${ports.api2}`, 'PYBOX_WORKER_SLOTS=2', ''].join('\n'),
    );
  }, 600_000);

  /** `down -v` and what is left of the project on the engine (its containers, sandboxes, volumes, networks). */
  async function downAndLeft(): Promise<{ down: Ran | undefined; left: Record<string, string[]> }> {
    const byLabel = async (kind: 'volume' | 'network') =>
      lines(ok(await run('docker', [kind, 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`]), `docker ${kind} ls`));
    // Without the env file nothing was brought up (the build failed): there is nothing to take down.
    const down = envFile !== '' && existsSync(envFile) ? await compose(['down', '-v', '--remove-orphans', '-t', '30'], 300_000) : undefined;
    return { down, left: { containers: await projectContainers(), sandboxes: await projectSandboxes(), volumes: await byLabel('volume'), networks: await byLabel('network') } };
  }

  afterAll(async () => {
    let left: Record<string, string[]> = {};
    let down: Ran | undefined;
    try {
      // After the last test this finds nothing; after a failure it is the check that counts.
      ({ down, left } = await downAndLeft());
    } finally {
      // Whatever `down` missed is a failure below, and is removed all the same.
      const ids = (list: string[] | undefined) => (list ?? []).map((l) => l.split(' ')[0] ?? l);
      const containers = [...ids(left.containers), ...ids(left.sandboxes)];
      if (containers.length > 0) await run('docker', ['rm', '-f', '-v', ...containers]);
      if ((left.networks ?? []).length > 0) await run('docker', ['network', 'rm', ...(left.networks ?? [])]);
      if ((left.volumes ?? []).length > 0) await run('docker', ['volume', 'rm', '-f', ...(left.volumes ?? [])]);
      if (dir !== '') rmSync(dir, { recursive: true, force: true });
    }
    if (down !== undefined) expect(down.code, down.stderr).toBe(0);
    expect(left).toEqual({ containers: [], sandboxes: [], volumes: [], networks: [] });
  }, 360_000);

  it('builds the service, PostgreSQL and Redis images and records their tags', async () => {
    const env = readFileSync(envFile, 'utf8');
    for (const [key, repository] of [
      ['PYBOX_SERVICE_IMAGE', 'pybox-service'],
      ['PYBOX_POSTGRES_IMAGE', 'pybox-postgres'],
      ['PYBOX_REDIS_IMAGE', 'pybox-redis'],
    ] as const) {
      const tag = new RegExp(`^${key}=(${repository}:[0-9a-f]{12})$`, 'm').exec(env)?.[1];
      expect(tag, key).toBeDefined();
      ok(await run('docker', ['image', 'inspect', tag ?? '']), `docker image inspect ${tag}`);
    }
    expect(env).toMatch(/^PYBOX_PG_PASSWORD=[0-9a-f]{48}$/m);
    expect(env).toMatch(/^PYBOX_REDIS_PASSWORD=[0-9a-f]{48}$/m);
    expect(env).toMatch(/^PYBOX_DOCKER_GID=\d+$/m);
    // The secrets directory it was given, made private, and its owner for first-key to run as.
    expect(env).toContain(`PYBOX_SECRETS_DIR=${secretsDir}\n`);
    const st = statSync(secretsDir);
    expect(st.mode & 0o777).toBe(0o700);
    expect(env).toMatch(new RegExp(`^PYBOX_SECRETS_OWNER=${st.uid}:${st.gid}$`, 'm'));
  });

  it('passes docker-compose config, and without the env file names what is missing', async () => {
    const r = await compose(['config', '-q']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    writeFileSync(join(dir, 'empty.env'), '');
    const bare = await run('docker-compose', ['-p', project, '--env-file', join(dir, 'empty.env'), '-f', composeFile, 'config', '-q']);
    expect(bare.code).not.toBe(0);
    expect(bare.stderr).toMatch(/run deploy\/build-images\.sh first/);
  });

  it('brings PostgreSQL and Redis up healthy, with their settings', async () => {
    ok(await compose(['up', '-d', 'postgres', 'redis']), 'docker-compose up postgres redis');
    await untilHealthy(['postgres', 'redis'], 120_000);
    const redis = ok(
      await compose(['exec', '-T', 'redis', 'sh', '-c', 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli config get appendonly maxmemory-policy']),
      'redis-cli config get',
    );
    expect(lines(redis)).toEqual(expect.arrayContaining(['appendonly', 'yes', 'maxmemory-policy', 'noeviction']));
    // Redis refuses a client without the password.
    const anonymous = await compose(['exec', '-T', 'redis', 'redis-cli', 'ping']);
    expect(anonymous.stdout + anonymous.stderr).toMatch(/NOAUTH/);
    // The application role owns its database and is no superuser.
    const pg = ok(
      await compose(['exec', '-T', 'postgres', 'psql', '-U', 'postgres', '-Atc', "select rolsuper from pg_roles where rolname = 'pybox'"]),
      'psql',
    );
    expect(pg.trim()).toBe('f');
  }, 180_000);

  it('brings both API nodes and both workers up healthy, with no key made by hand', async () => {
    ok(await compose(['up', '-d']), 'docker-compose up');
    await untilHealthy(['api-1', 'api-2', 'worker-1', 'worker-2'], 240_000);
  }, 300_000);

  it('first-key wrote an admin key to the secrets directory, readable by its owner only, and never printed it', async () => {
    const file = join(secretsDir, 'admin.key');
    const st = statSync(file);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(statSync(secretsDir).uid);
    adminKey = readFileSync(file, 'utf8').trim();
    expect(adminKey).toMatch(/^pbx_[A-Za-z0-9_-]{43}$/);
    const logs = ok(await compose(['logs', '--no-color', 'first-key']), 'docker-compose logs first-key');
    expect(logs).toContain(`created admin key key_`);
    expect(logs).toContain(`the key is in ${file} `);
    expect(logs).not.toContain(adminKey.slice(4, 16));
  }, 30_000);

  it('answers /readyz through both published ports, and refuses a request without a key (no local mode)', async () => {
    for (const port of [ports.api1, ports.api2]) {
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(20_000) });
      expect(ready.status, await ready.clone().text()).toBe(200);
      const anonymous = await fetch(`http://127.0.0.1:${port}/v1/executions`, { signal: AbortSignal.timeout(20_000) });
      expect(anonymous.status).toBe(401);
    }
  }, 60_000);

  it('runs print(1) through each API node', async () => {
    for (const port of [ports.api1, ports.api2]) {
      const res = await fetch(`http://127.0.0.1:${port}/v1/executions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ code: 'print(1)' }),
        signal: AbortSignal.timeout(60_000),
      });
      const body = (await res.json()) as { id?: string; status?: string; stdout?: string };
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(body.status).toBe('completed');
      expect(body.stdout).toBe('1\n');
      ran.set(body.id ?? '', body);
    }
  }, 120_000);

  it('lists both workers and both API nodes in GET /v1/cluster', async () => {
    const res = await fetch(`http://127.0.0.1:${ports.api1}/v1/cluster`, {
      headers: { authorization: `Bearer ${adminKey}` },
      signal: AbortSignal.timeout(20_000),
    });
    expect(res.status).toBe(200);
    const info = (await res.json()) as { mode: string; nodes: Array<{ nodeId: string; role: string; healthy: boolean | null }> };
    expect(info.mode).toBe('cluster');
    const workers = info.nodes.filter((n) => n.role === 'worker');
    expect(workers.map((n) => n.nodeId).sort()).toEqual(['worker-1', 'worker-2']);
    expect(workers.every((n) => n.healthy === true)).toBe(true);
    expect(info.nodes.filter((n) => n.role === 'api').map((n) => n.nodeId).sort()).toEqual(['api-1', 'api-2']);
  }, 30_000);

  it('keeps the history and the key across `down` and `up`', async () => {
    const keyFile = join(secretsDir, 'admin.key');
    const before = readFileSync(keyFile, 'utf8');
    ok(await compose(['down', '-t', '30'], 300_000), 'docker-compose down');
    expect(await projectContainers()).toEqual([]);
    ok(await compose(['up', '-d']), 'docker-compose up (again)');
    await untilHealthy(['api-1', 'api-2', 'worker-1', 'worker-2'], 240_000);
    // first-key ran again, found the key and left the file alone.
    expect(ok(await compose(['logs', '--no-color', 'first-key']), 'docker-compose logs first-key')).toMatch(/API keys exist already: nothing to do/);
    expect(readFileSync(keyFile, 'utf8')).toBe(before);
    expect(ran.size).toBe(2);
    for (const [id, first] of ran) {
      const res = await fetch(`http://127.0.0.1:${ports.api2}/v1/executions/${encodeURIComponent(id)}`, {
        headers: { authorization: `Bearer ${adminKey}` },
        signal: AbortSignal.timeout(20_000),
      });
      const body = (await res.json()) as { id?: string; status?: string; stdout?: string };
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(body).toMatchObject({ id, status: first.status, stdout: first.stdout });
    }
    // And the key still runs code: the queue and the workers came back too.
    const res = await fetch(`http://127.0.0.1:${ports.api1}/v1/executions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ code: 'print(2)' }),
      signal: AbortSignal.timeout(60_000),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { stdout?: string }).stdout).toBe('2\n');
  }, 420_000);

  it('leaves nothing of the project after `down -v`: containers, sandboxes, volumes, networks', async () => {
    const { down, left } = await downAndLeft();
    expect(down?.code, down?.stderr).toBe(0);
    expect(left).toEqual({ containers: [], sandboxes: [], volumes: [], networks: [] });
  }, 360_000);
});
