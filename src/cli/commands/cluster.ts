// `pybox cluster up`: a whole cluster on one machine, for trying it and testing against it. Two API
// nodes and two workers (on two Docker engines when the second one can run) as child processes of
// this command, on PostgreSQL and Redis started from the OS packages (scripts/ensure-*.sh) unless
// PYBOX_POSTGRES_URL / PYBOX_REDIS_URL name servers of one's own. On exit it stops the four nodes,
// and the servers it started itself; servers it found running (shared) keep running.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import pg from 'pg';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { CliContext } from '../context.ts';
import { redactUrl } from '../../core/redact.ts';

const ROOT = resolve(import.meta.dirname, '..', '..', '..');
const LISTENING = /pybox (?:api|worker|cluster) node listening on (http:\/\/[^\s"]+)/;
/** Used as an SQL identifier (it cannot be a bound parameter): a conservative shape only. */
const DATABASE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const PREFIX = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;

interface UpOptions {
  apiPorts: string;
  workerPorts: string;
  database: string;
  prefix: string;
  stateDir: string;
  startTimeout: string;
  killAfter: string;
}

interface NodeSpec {
  name: string;
  role: 'api' | 'worker';
  port: number;
  /** DOCKER_HOST for a worker; undefined: the default engine. */
  dockerHost: string | undefined;
}

interface RunningNode {
  spec: NodeSpec;
  child: ChildProcess;
  url: string | undefined;
  exited: Promise<void>;
  gone: boolean;
  log: WriteStream;
}

export function registerCluster(program: Command, ctx: CliContext): void {
  const cluster = program.command('cluster').description('a local cluster on this machine, for trying and testing');
  cluster
    .command('up')
    .description('start two API nodes and two workers on PostgreSQL and Redis; Ctrl-C stops the nodes')
    .option('--api-ports <a,b>', 'ports of api-1 and api-2 (0: any free port)', '8081,8082')
    .option('--worker-ports <a,b>', "ports of the workers' health probes (0: any free port)", '8091,8092')
    .option('--database <name>', 'database created on the ensured PostgreSQL (unused when PYBOX_POSTGRES_URL is set)', 'pybox_local')
    .option('--prefix <prefix>', "Redis key prefix and the sandboxes' engine.instance label", 'pybox-local')
    .option('--state-dir <dir>', "where the nodes' config and logs go", join(ROOT, 'data', 'local-cluster'))
    .option('--start-timeout <s>', 'seconds the nodes may take to listen, together', '180')
    .option('--kill-after <s>', 'seconds a stopping node gets before SIGKILL', '30')
    .action(async (opts: UpOptions) => {
      process.exitCode = await up(opts, ctx);
    });
}

function ports(raw: string, flag: string): [number, number] {
  const parts = raw.split(',').map((p) => p.trim());
  if (parts.length !== 2 || !parts.every((p) => /^\d{1,5}$/.test(p) && Number(p) <= 65_535)) {
    throw new Error(`${flag} takes two port numbers separated by a comma, not '${raw}'`);
  }
  const [a, b] = parts.map(Number) as [number, number];
  if (a !== 0 && a === b) throw new Error(`${flag}: the two ports must differ`);
  return [a, b];
}

function seconds(raw: string, flag: string): number {
  if (!/^\d{1,5}$/.test(raw) || Number(raw) < 1) throw new Error(`${flag} takes a whole number of seconds, not '${raw}'`);
  return Number(raw) * 1000;
}


/** How long a script's stdout may stay open after the script exited, before what was read is taken as all. */
const STDOUT_END_WAIT_MS = 5000;

/** Runs scripts/<script>; resolves with its stdout's last line (the URL), its messages go to stderr. */
function ensure(script: string, ctx: CliContext, env: NodeJS.ProcessEnv, args: string[] = []): Promise<string> {
  const stopping = args[0] === 'stop';
  return new Promise((resolvePromise, reject) => {
    const child = spawn('bash', [join(ROOT, 'scripts', script), ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      for (const line of d.toString().split('\n')) if (line) ctx.err(line);
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      const settle = () => {
        const url = out.trim().split('\n').at(-1) ?? '';
        if (code === 0 && (url || stopping)) resolvePromise(url);
        else reject(new Error(`scripts/${script} failed (exit ${code}): ${err.trim().split('\n').at(-1) ?? ''}`));
      };
      // At 'exit' the script's last output may still be unread (on a busy host it was: an exit 0
      // with no URL yet). Its stdout's end is awaited, not for ever: a server the script started
      // could hold the pipe open.
      if (child.stdout.readableEnded) return settle();
      const timer = setTimeout(settle, STDOUT_END_WAIT_MS);
      child.stdout.once('end', () => {
        clearTimeout(timer);
        settle();
      });
    });
  });
}

/** Creates `name` on the server of `adminUrl` when absent; resolves with the URL of that database. */
async function ensureDatabase(adminUrl: string, name: string): Promise<{ url: string; created: boolean }> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  let created = false;
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount === 0) {
      try {
        await client.query(`CREATE DATABASE ${name}`);
        created = true;
      } catch (e) {
        // Another `cluster up` made it between our look and our create.
        if ((e as { code?: string }).code !== '42P04') throw e;
      }
    }
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), created };
}

/** The nodes' config: the user's (PYBOX_CONFIG, else the default) with this cluster's prefix and instance. */
function writeConfig(env: NodeJS.ProcessEnv, stateDir: string, prefix: string): string {
  const base = env.PYBOX_CONFIG ? resolve(env.PYBOX_CONFIG) : join(ROOT, 'config', 'default.yaml');
  const doc: unknown = parseYaml(readFileSync(base, 'utf8')) ?? {};
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error(`${base} must be a mapping of settings`);
  const config = doc as Record<string, unknown>;
  const section = (k: string): Record<string, unknown> => {
    const v = config[k];
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  };
  config.cluster = { ...section('cluster'), prefix };
  config.engine = { ...section('engine'), instance: prefix };
  const path = join(stateDir, 'config.yaml');
  writeFileSync(path, `# Written by \`pybox cluster up\` from ${base}; rewritten on every start.\n${stringifyYaml(config)}`);
  return path;
}

async function up(opts: UpOptions, ctx: CliContext): Promise<number> {
  const [api1, api2] = ports(opts.apiPorts, '--api-ports');
  const [w1, w2] = ports(opts.workerPorts, '--worker-ports');
  if (!DATABASE_NAME.test(opts.database)) throw new Error(`--database must be lower-case letters, digits and _, not '${opts.database}'`);
  if (!PREFIX.test(opts.prefix)) throw new Error(`--prefix must be 1-32 letters, digits, _ . -, not '${opts.prefix}'`);
  const startTimeoutMs = seconds(opts.startTimeout, '--start-timeout');
  const killAfterMs = seconds(opts.killAfter, '--kill-after');
  const env: NodeJS.ProcessEnv = { ...ctx.env };
  const stateDir = resolve(opts.stateDir);
  mkdirSync(stateDir, { recursive: true });
  const started = Date.now();

  // The three servers are independent: started at once, a cold start costs the slowest of them.
  // The servers this command starts (not those it finds running) it stops again on its way out.
  const ledger = join(stateDir, 'started-servers');
  rmSync(ledger, { force: true });
  const ensureEnv: NodeJS.ProcessEnv = { ...env, PYBOX_STARTED_LEDGER: ledger };
  const givenPg = env.PYBOX_POSTGRES_URL || undefined;
  const givenRedis = env.PYBOX_REDIS_URL || undefined;
  const wantEngineB = env.PYBOX_SECOND_ENGINE !== '0';
  const [pgAdmin, redisUrl, engineB] = await Promise.all([
    givenPg ? Promise.resolve(undefined) : ensure('ensure-postgres.sh', ctx, ensureEnv),
    givenRedis ? Promise.resolve(givenRedis) : ensure('ensure-redis.sh', ctx, ensureEnv),
    wantEngineB
      ? ensure('ensure-engine-b.sh', ctx, ensureEnv).catch((e: unknown) => {
          ctx.err(`pybox cluster: no second engine (${e instanceof Error ? e.message : String(e)}); worker-2 runs on the default engine`);
          return undefined;
        })
      : Promise.resolve(undefined),
  ]);
  let postgresUrl: string;
  if (givenPg) postgresUrl = givenPg;
  else {
    const db = await ensureDatabase(pgAdmin as string, opts.database);
    postgresUrl = db.url;
    ctx.err(`pybox cluster: database ${opts.database} ${db.created ? 'created' : 'exists; its history and keys are kept'}`);
  }
  const configPath = writeConfig(env, stateDir, opts.prefix);

  // Port 0 means any free one: chosen here, so that every node can be asked whether it is up.
  const [p1, p2, p3, p4] = await Promise.all([api1, api2, w1, w2].map((p) => (p === 0 ? freePort() : Promise.resolve(p))));
  const specs: NodeSpec[] = [
    { name: 'api-1', role: 'api', port: p1 as number, dockerHost: undefined },
    { name: 'api-2', role: 'api', port: p2 as number, dockerHost: undefined },
    { name: 'worker-1', role: 'worker', port: p3 as number, dockerHost: env.DOCKER_HOST || undefined },
    { name: 'worker-2', role: 'worker', port: p4 as number, dockerHost: engineB ?? (env.DOCKER_HOST || undefined) },
  ];
  const nodes: RunningNode[] = [];
  let stopping = false;
  let failed = false;

  const startNode = (spec: NodeSpec): RunningNode => {
    const childEnv: NodeJS.ProcessEnv = {
      ...env,
      PYBOX_CONFIG: configPath,
      PYBOX_ROLE: spec.role,
      PYBOX_NODE_ID: spec.name,
      PYBOX_PORT: String(spec.port),
      PYBOX_POSTGRES_URL: postgresUrl,
      PYBOX_REDIS_URL: redisUrl,
    };
    if (spec.dockerHost) childEnv.DOCKER_HOST = spec.dockerHost;
    else delete childEnv.DOCKER_HOST;
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'main.ts')], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(join(stateDir, `${spec.name}.log`), { flags: 'a' });
    const node: RunningNode = { spec, child, url: undefined, gone: false, log, exited: Promise.resolve() };
    const tag = spec.name.padEnd(8);
    let partial = '';
    const forward = (d: Buffer) => {
      log.write(d);
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const m = node.url === undefined ? LISTENING.exec(line) : null;
        if (m) node.url = m[1];
        ctx.out(`${tag} | ${line}`);
      }
    };
    child.stdout?.on('data', forward);
    child.stderr?.on('data', forward);
    node.exited = new Promise((r) =>
      child.on('exit', (code, signal) => {
        node.gone = true;
        if (partial) ctx.out(`${tag} | ${partial}`);
        log.end();
        if (!stopping) {
          failed = true;
          ctx.err(`pybox cluster: ${spec.name} (pid ${child.pid}) exited unexpectedly (${signal ?? `code ${code}`}); see ${join(stateDir, `${spec.name}.log`)}`);
          if (nodes.every((n) => n.gone)) void stop('every node has exited');
        }
        r();
      }),
    );
    return node;
  };

  let done: (code: number) => void = () => {};
  const finished = new Promise<number>((r) => (done = r));
  let stopPromise: Promise<void> | undefined;
  const stop = (why: string): Promise<void> =>
    (stopPromise ??= (async () => {
      stopping = true;
      const live = nodes.filter((n) => !n.gone);
      if (live.length > 0) ctx.err(`pybox cluster: ${why}: stopping ${live.map((n) => `${n.spec.name} (pid ${n.child.pid})`).join(', ')}`);
      for (const n of live) n.child.kill('SIGTERM');
      const timer = setTimeout(() => {
        for (const n of nodes.filter((x) => !x.gone)) {
          ctx.err(`pybox cluster: ${n.spec.name} (pid ${n.child.pid}) still runs after ${killAfterMs / 1000} s: SIGKILL`);
          n.child.kill('SIGKILL');
        }
      }, killAfterMs);
      await Promise.all(nodes.map((n) => n.exited));
      clearTimeout(timer);
      const codes = nodes.map((n) => n.child.exitCode);
      if (codes.some((c) => c !== 0)) failed = true;
      const started = startedServers(ledger);
      ctx.err(`pybox cluster: the nodes have stopped${started.length > 0 ? `; stopping what this command started: ${started.join(', ')}` : '; PostgreSQL, Redis and the second engine were running before and keep running'}`);
      for (const name of started) {
        await ensure(`ensure-${name}.sh`, ctx, env, ['stop']).catch((e: unknown) => {
          failed = true;
          ctx.err(`pybox cluster: ${e instanceof Error ? e.message : String(e)}`);
        });
      }
      rmSync(ledger, { force: true });
      done(failed ? 1 : 0);
    })());

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    // A second Ctrl-C does not wait for the grace period.
    if (++signals > 1) {
      for (const n of nodes.filter((x) => !x.gone)) n.child.kill('SIGKILL');
      return;
    }
    void stop(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  for (const spec of specs) nodes.push(startNode(spec));
  const deadline = Date.now() + startTimeoutMs;
  while (!stopping && nodes.some((n) => n.url === undefined)) {
    const dead = nodes.find((n) => n.gone && n.url === undefined);
    if (dead) {
      void stop(`${dead.spec.name} exited before it listened`);
      break;
    }
    // A node is up once it says so, or once its probe answers (its log level may hide the line).
    const waiting = nodes.filter((n) => n.url === undefined && !n.gone);
    await Promise.all(
      waiting.map(async (n) => {
        if (await answers(n.spec.port)) n.url ??= `http://127.0.0.1:${n.spec.port}`;
      }),
    );
    if (Date.now() > deadline) {
      failed = true;
      void stop(`${nodes.filter((n) => n.url === undefined).map((n) => n.spec.name).join(', ')} did not listen within ${startTimeoutMs / 1000} s`);
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!stopping) printTable(ctx, nodes, { postgresUrl, redisUrl, prefix: opts.prefix, database: givenPg ? undefined : opts.database, stateDir, seconds: (Date.now() - started) / 1000 });
  const code = await finished;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}

function printTable(ctx: CliContext, nodes: RunningNode[], info: { postgresUrl: string; redisUrl: string; prefix: string; database: string | undefined; stateDir: string; seconds: number }): void {
  const rows = nodes.map((n) => [n.spec.name, n.spec.role, String(n.child.pid), n.url ?? '', n.spec.role === 'worker' ? (n.spec.dockerHost ?? 'default engine (/var/run/docker.sock)') : '-']);
  const head = ['NODE', 'ROLE', 'PID', 'URL', 'ENGINE'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) => '  ' + cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd();
  const api = nodes.find((n) => n.spec.role === 'api')?.url ?? '';
  const out = [
    '',
    `pybox local cluster is up (${info.seconds.toFixed(1)} s; command pid ${process.pid})`,
    line(head),
    ...rows.map(line),
    `  PostgreSQL ${redactUrl(info.postgresUrl)}${info.database ? ' (kept on exit)' : ''}`,
    `  Redis      ${redactUrl(info.redisUrl)} (keys ${info.prefix}:*, kept on exit)`,
    `  logs       ${info.stateDir}/<node>.log`,
    `Try: curl -s ${api}/v1/executions -H 'content-type: application/json' -d '{"code":"print(1)"}'`,
    'Ctrl-C stops the four nodes, and the servers this command started (those it found running keep running).',
    '',
  ];
  for (const l of out) ctx.out(l);
}

/** A TCP port free on loopback now. */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolvePort(address.port) : reject(new Error('no free port'))));
    });
  });
}

/** Whether a node's /healthz answers 200 on loopback. */
async function answers(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(500) });
    return res.status === 200;
  } catch {
    return false;
  }
}

/** The servers an ensure script started for this command, in the order to stop them. */
function startedServers(ledger: string): string[] {
  let text = '';
  try {
    text = readFileSync(ledger, 'utf8');
  } catch {
    return [];
  }
  const names = new Set(text.split('\n'));
  return ['engine-b', 'redis', 'postgres'].filter((n) => names.has(n));
}
