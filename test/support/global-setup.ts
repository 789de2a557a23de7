// Runs once around the whole suite. After every test file has finished, nothing this run started
// may be left: no container labelled pybox.execution on either engine (the default one and the
// second one the cluster tests use), no pybox server process of this checkout, no private Redis or
// PostgreSQL of a fault test, no Prometheus of the metrics test, no browser of the browser tests,
// and no gVisor process. What was
// there before the run (another run on the same machine, the shared servers set-up started) is not
// this run's to judge. Last, the servers set-up started for the run are stopped again.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import { SECOND_ENGINE_HOST, STARTED_LEDGER } from './servers.ts';

const ROOT = join(import.meta.dirname, '..', '..');

async function containersOn(docker: Docker): Promise<Map<string, string>> {
  try {
    const list = await docker.listContainers({ all: true, filters: { label: ['pybox.execution'] } });
    return new Map(list.map((c) => [c.Id, `${c.Id.slice(0, 12)} ${c.State} ${c.Labels['pybox.instance'] ?? ''} ${c.Labels['pybox.execution'] ?? ''}`]));
  } catch {
    return new Map(); // no engine: the tests that need it will have failed on their own
  }
}

async function containers(): Promise<Map<string, string>> {
  const second = new Docker({ socketPath: SECOND_ENGINE_HOST.replace(/^unix:\/\//, '') });
  return new Map([...(await containersOn(new Docker())), ...(await containersOn(second))]);
}

/** Processes a test may start and must stop: this checkout's servers, private servers, gVisor. */
function processes(): Map<number, string> {
  const found = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      const cwd = (() => {
        try {
          return readlinkSync(`/proc/${pid}/cwd`);
        } catch {
          return '';
        }
      })();
      const ours =
        (cwd === ROOT && (cmd.includes('src/main.ts') || cmd.includes('bin/pybox.mjs') || /[\s/]test\/\S+\.ts\b/.test(cmd))) ||
        // The browser tests' Chromium (started from this checkout, so with its working directory).
        (cwd === ROOT && /^\S*\/chrom(e|ium)\b/.test(cmd)) ||
        // Redis rewrites its title to "redis-server host:port"; the shared one was there before setup.
        /^redis-server\b/.test(cmd) ||
        (/postgres/.test(cmd) && cmd.includes('pybox-pg-')) ||
        /^\S*\bprometheus\s/.test(cmd) ||
        /^runsc(-sandbox|-gofer)?\b|\/runsc\b/.test(cmd);
      if (ours) found.set(pid, `${pid} ${cmd.slice(0, 160)}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

let containersBefore = new Set<string>();
let processesBefore = new Set<number>();

export async function setup(): Promise<void> {
  containersBefore = new Set((await containers()).keys());
  processesBefore = new Set(processes().keys());
}

/**
 * Stops, by their own scripts (each by its pid), the servers set-up started for this run: the
 * second engine, Redis and PostgreSQL. Servers that were already running are not in the ledger.
 */
function stopStartedServers(): string[] {
  if (!existsSync(STARTED_LEDGER)) return [];
  const started = new Set(readFileSync(STARTED_LEDGER, 'utf8').split('\n').filter((n) => /^(engine-b|redis|postgres)$/.test(n)));
  rmSync(STARTED_LEDGER, { force: true });
  const failures: string[] = [];
  for (const name of ['engine-b', 'redis', 'postgres'].filter((n) => started.has(n))) {
    const r = spawnSync('bash', [join(ROOT, 'scripts', `ensure-${name}.sh`), 'stop'], { encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) failures.push(`could not stop ${name}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`);
  }
  return failures;
}

export async function teardown(): Promise<void> {
  try {
    await checkNothingLeft();
  } finally {
    const failures = stopStartedServers();
    if (failures.length > 0) throw new Error(failures.join('\n'));
  }
}

async function checkNothingLeft(): Promise<void> {
  const leftContainers = async () => [...(await containers()).entries()].filter(([id]) => !containersBefore.has(id)).map(([, d]) => d);
  const leftProcesses = () => [...processes().entries()].filter(([pid]) => !processesBefore.has(pid)).map(([, d]) => d);
  // Removal after a result is returned happens in the background; give it a moment to finish.
  for (let i = 0; i < 50; i++) {
    if ((await leftContainers()).length === 0 && leftProcesses().length === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const c = await leftContainers();
  const p = leftProcesses();
  const lines = [
    ...(c.length ? [`the test run left ${c.length} container(s) labelled pybox.execution:`, ...c] : []),
    ...(p.length ? [`the test run left ${p.length} process(es) running:`, ...p] : []),
  ];
  throw new Error(lines.join('\n'));
}
