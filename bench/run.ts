// `npm run bench`: every scenario side by side in one run, on this machine, now, under each
// runtime the engine offers. Prints a table (medians, p95, p99, ratios to the baselines measured in
// the same run) and a breakdown of where a run's time goes, writes bench/results/latest.json and
// draws bench/results/latest.svg. `--help` lists the flags (scenarios, runtimes, counts).
// Figures on shared machines are noisy: compare within one run, and read the warning line.
import { serve } from '@hono/node-server';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { Redis } from 'ioredis';
import pg from 'pg';
import { composeClusterNode, type ClusterNode } from '../src/compose-cluster.ts';
import { composePybox, sandboxSettings, systemClock, type Pybox } from '../src/compose.ts';
import { ConfigSchema, type Config } from '../src/config/schema.ts';
import { silentLogger } from '../src/core/logger.ts';
import type { RuntimeName } from '../src/core/schemas.ts';
import { DistinctUids } from '../src/engine/distinct-uids.ts';
import { DockerEngine, dockerConnection } from '../src/engine/docker-engine.ts';
import { imageTags } from '../src/engine/image.ts';
import { OnDemandSource, SandboxRunner } from '../src/engine/run-sandbox.ts';
import { SandboxFactory } from '../src/engine/sandbox.ts';
import { codeJob, type SandboxJob } from '../src/core/sandbox.ts';
import { WarmPool } from '../src/pool/warm-pool.ts';
import { ArgsError, parseArgs, USAGE, type BenchOptions, type Scenario } from './args.ts';
import { PHASE_MEANING, summarizePhases, TimedEngine, type PhaseSummary } from './breakdown.ts';
import { renderSvg } from './chart.ts';
import { clients, forDuration, paced, pacedPairs, sequential, type Task } from './measure.ts';
import { busyMs, busyShare, parseProcStat, quietnessWarning, round1, round2, summarize, versusCell, versusLatency, versusRate, type CpuTicks, type Row } from './stats.ts';
import { createTestDatabase, flushPrefix, postgresUrl, redisUrl, secondEngineHost } from '../test/support/servers.ts';

/** Runs at the science scenario's pace before it is measured, not counted. */
const WARMUP_RUNS = 5;
const root = join(import.meta.dirname, '..');
const image = imageTags(join(root, 'images')).sandbox;
const docker = new Docker();

/** MemAvailable of /proc/meminfo, in MiB. */
function memAvailableMiB(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}
const PRINT = 'print(1)';
/** A small DataFrame job, as a model writes them: build, group, summarise. */
const SCIENCE = [
  'import numpy as np, pandas as pd',
  'df = pd.DataFrame({"g": np.arange(200) % 4, "x": np.arange(200, dtype=float)})',
  'print(df.groupby("g")["x"].mean().round(1).to_dict())',
].join('\n');
const BENCH_LABEL = 'pybox.bench';
/** The test-case scenario's program: a line of numbers in, their sum out. */
const CASES_PROGRAM = 'print(sum(map(int, input().split())))';
const log = (s: string) => process.stderr.write(s + '\n');
const cpuNow = (): CpuTicks => parseProcStat(readFileSync('/proc/stat', 'utf8'));

function run(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'ignore'] });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code ?? -1));
  });
}

/** Runs `f` and answers the machine's busy CPU milliseconds it took, with its result. */
async function withCpu<T>(f: () => Promise<T>): Promise<{ value: T; cpuMs: number }> {
  const before = cpuNow();
  const value = await f();
  return { value, cpuMs: busyMs(before, cpuNow()) };
}

/**
 * The host's python3 for the baseline: the OS interpreter where there is one (the same Debian
 * build the sandbox image uses), else whatever python3 resolves to, past any version manager's
 * shell shim (which alone costs tens of milliseconds a start).
 */
function hostPython(): string {
  if (existsSync('/usr/bin/python3')) return '/usr/bin/python3';
  const r = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' });
  return r.stdout.trim() || 'python3';
}

/** The unsandboxed baseline: a temp file and a python3 subprocess on the host. */
async function baseline(code: string, n: number): Promise<number[]> {
  const python = hostPython();
  const dir = mkdtempSync(join(tmpdir(), 'pybox-bench-'));
  try {
    return await sequential(n, async () => {
      const file = join(dir, `m${Math.random().toString(36).slice(2)}.py`);
      writeFileSync(file, code);
      const status = await run(python, [file]);
      if (status !== 0) throw new Error('baseline failed');
      rmSync(file);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function dockerRun(code: string, n: number, runtime: RuntimeName): Promise<number[]> {
  return sequential(n, async () => {
    const args = ['run', '--rm', '--label', `${BENCH_LABEL}=1`, '--network', 'none', `--runtime=${runtime}`, '--entrypoint', 'python3', image, '-c', code];
    const status = await run('docker', args);
    if (status !== 0) throw new Error(`docker run failed (${status})`);
  });
}

/** The engine's own ceiling: full create → start → wait → remove lifecycles, `parallel` at a time. */
function engineLifecycle(runtime: RuntimeName): Task {
  return async () => {
    const c = await docker.createContainer({
      Image: image,
      Entrypoint: ['python3', '-c', PRINT],
      HostConfig: { NetworkMode: 'none', Runtime: runtime, LogConfig: { Type: 'none', Config: {} } },
      Labels: { [BENCH_LABEL]: '1' },
    });
    await c.start();
    await c.wait();
    await c.remove({ force: true });
  };
}

interface Served {
  pybox: Pybox;
  config: Config;
  url: string;
  close(): Promise<void>;
}

class Bench {
  readonly rows: Row[] = [];
  readonly breakdowns: Record<string, unknown> = {};
  /** pybox instances this run started: whatever they leave is removed at the end. */
  readonly instances: string[] = [];
  /** What an idle session holds, by runtime (the sessions scenario). */
  readonly sessionMemory: Record<string, { sessions: number; hostMiBPerSession: number; cgroupMiBPerSession: number | null; perGiB: number | null }> = {};
  readonly storeDir = mkdtempSync(join(tmpdir(), 'pybox-bench-store-'));
  burst: Record<string, number | string> | null = null;
  cluster: Record<string, unknown> | null = null;

  constructor(readonly opts: BenchOptions) {}

  get counts() {
    return this.opts.counts;
  }

  has(s: Scenario): boolean {
    return this.opts.scenarios.includes(s);
  }

  row(name: string, scenario: Scenario, runtime: RuntimeName | undefined, samples: number[], extra: Partial<Row> = {}): Row {
    const r: Row = { ...summarize(name, samples), scenario, ...(runtime ? { runtime } : {}), ...extra };
    this.rows.push(r);
    return r;
  }

  find(scenario: Scenario, runtime: RuntimeName): Row | undefined {
    return this.rows.find((r) => r.scenario === scenario && r.runtime === runtime);
  }

  config(runtime: RuntimeName, overrides: Record<string, unknown>): Config {
    const instance = `bench-${runtime}-${Date.now()}-${this.instances.length}`;
    this.instances.push(instance);
    const size = this.opts.poolSize;
    return ConfigSchema.parse({
      ...(size === null ? {} : { pool: { size: { runc: size, runsc: size } } }),
      ...overrides,
      engine: { runtime, instance },
      store: { path: join(this.storeDir, `${instance}.db`) },
      log: { level: 'silent' },
    });
  }

  async serve(runtime: RuntimeName, overrides: Record<string, unknown>): Promise<Served> {
    const config = this.config(runtime, overrides);
    const pybox = await composePybox(config, { logger: silentLogger, imagesDir: join(root, 'images') });
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: pybox.app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server)) as Server;
    });
    const { port } = server.address() as AddressInfo;
    return {
      pybox,
      config,
      url: `http://127.0.0.1:${port}`,
      async close() {
        await new Promise((r) => server.close(r));
        await pybox.close();
      },
    };
  }

  async runtimeScenarios(runtime: RuntimeName): Promise<void> {
    const c = this.counts;
    // back-to-back is read against docker run, sustained against the engine ceiling: measured here too.
    if (this.has('docker-run') || this.has('back-to-back')) {
      log(`docker run --rm (${runtime})`);
      this.row(`docker run --rm, print(1) (${runtime})`, 'docker-run', runtime, await dockerRun(PRINT, c.dockerRun, runtime));
      if (this.has('docker-run') && this.has('science') && !this.opts.quick) {
        this.row(`docker run --rm, numpy+pandas (${runtime})`, 'docker-run', runtime, await dockerRun(SCIENCE, Math.max(2, Math.ceil(c.dockerRun / 2)), runtime));
      }
    }
    if (this.has('ceiling') || this.has('sustained')) {
      log(`engine ceiling: ${c.ceilingTotal} create/start/wait/remove lifecycles, ${c.ceilingParallel} at a time (${runtime})`);
      const { value, cpuMs } = await withCpu(() => clients(c.ceilingTotal, c.ceilingParallel, engineLifecycle(runtime)));
      this.row(`engine ceiling, ${c.ceilingParallel} parallel lifecycles (${runtime})`, 'ceiling', runtime, value.latencies, {
        perSecond: round1(value.perSecond),
        cpuMsPerRun: Math.round(cpuMs / c.ceilingTotal),
      });
    }
    if (this.has('cold')) {
      log(`pybox cold, pool off (${runtime})`);
      const s = await this.serve(runtime, { pool: { enabled: false } });
      try {
        await this.execute(s.url, PRINT); // the service's own warm-up (JIT, first connections)
        // A pause between samples lets the previous container's removal finish first.
        const samples = await sequential(c.samples, () => this.execute(s.url, PRINT), () => new Promise((r) => setTimeout(r, 200)));
        this.row(`pybox cold, pool off, print(1) (${runtime})`, 'cold', runtime, samples);
      } finally {
        await s.close();
      }
    }
    if (this.has('paced') || this.has('science') || this.has('back-to-back') || this.has('sustained')) {
      const s = await this.serve(runtime, {});
      try {
        await this.served(s, runtime);
      } finally {
        await s.close();
      }
    }
    if (this.has('breakdown')) await this.breakdown(runtime);
    if (this.has('cases')) await this.cases(runtime);
    if (this.has('sessions')) await this.sessions(runtime);
  }

  /**
   * A live session: print(1) calls at the paced scenario's pace and back-to-back (read against the
   * subprocess baseline), then how much memory an idle session holds: by its container's cgroup,
   * and by what the host has available before and after opening `sessions` of them.
   */
  async sessions(runtime: RuntimeName): Promise<void> {
    const c = this.counts;
    const s = await this.serve(runtime, { sessions: { maxPerTenant: c.sessions + 1, maxPerHost: c.sessions + 1 } });
    try {
      const open = async (): Promise<string> => {
        const res = await fetch(`${s.url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
        const body = (await res.json()) as { id?: string };
        if (res.status !== 201 || !body.id) throw new Error(`session not created (${res.status}): ${JSON.stringify(body).slice(0, 300)}`);
        return body.id;
      };
      const call = async (id: string, code: string): Promise<void> => {
        const res = await fetch(`${s.url}/v1/sessions/${id}/executions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
        const body = (await res.json()) as { status?: string };
        if (res.status !== 200 || body.status !== 'completed') throw new Error(`session call failed (${res.status}): ${JSON.stringify(body).slice(0, 300)}`);
      };
      const close = (id: string) => fetch(`${s.url}/v1/sessions/${id}`, { method: 'DELETE' }).then((r) => r.body?.cancel());
      log(`sessions: print(1) in a live session, every ${this.opts.pacedIntervalMs} ms and back-to-back (${runtime})`);
      const id = await open();
      await sequential(3, () => call(id, PRINT)); // the session's first calls (imports, caches) are not its steady state
      this.row(`pybox session, print(1) every ${this.opts.pacedIntervalMs} ms (${runtime})`, 'sessions', runtime, await paced(c.paced, this.opts.pacedIntervalMs, () => call(id, PRINT)));
      this.row(`pybox session, print(1) back-to-back (${runtime})`, 'sessions', runtime, await sequential(c.samples, () => call(id, PRINT)));
      await close(id);

      log(`sessions: memory of ${c.sessions} idle sessions (${runtime})`);
      await new Promise((r) => setTimeout(r, 2000)); // the closed session's removal
      const before = memAvailableMiB();
      const ids: string[] = [];
      for (let i = 0; i < c.sessions; i++) ids.push(await open());
      for (const one of ids) await call(one, 'x = 1');
      await new Promise((r) => setTimeout(r, 2000)); // settled: nothing of the starts is still allocating
      const after = memAvailableMiB();
      const cgroup: number[] = [];
      for (const one of ids) {
        const found = await docker.listContainers({ filters: { label: [`pybox.session=${one}`] } });
        const info = found[0];
        if (!info) continue;
        const stats = (await docker.getContainer(info.Id).stats({ stream: false })) as { memory_stats?: { usage?: number; stats?: Record<string, number> } };
        const m = stats.memory_stats;
        if (m?.usage !== undefined) cgroup.push((m.usage - (m.stats?.total_inactive_file ?? m.stats?.inactive_file ?? 0)) / 2 ** 20);
      }
      for (const one of ids) await close(one);
      const hostPer = (before - after) / c.sessions;
      const cgroupPer = cgroup.length ? [...cgroup].sort((a, b) => a - b)[Math.floor(cgroup.length / 2)]! : null;
      this.sessionMemory[runtime] = {
        sessions: c.sessions,
        hostMiBPerSession: round1(hostPer),
        cgroupMiBPerSession: cgroupPer === null ? null : round1(cgroupPer),
        perGiB: hostPer > 0 ? Math.floor(1024 / hostPer) : null,
      };
      log(`  ${JSON.stringify(this.sessionMemory[runtime])}`);
    } finally {
      await s.close();
    }
  }

  /**
   * Test cases and batches, as a CI harness sends them, through the service with its default
   * settings (pool on): N cases of a small program in one execution; the same N inputs as a batch of
   * N executions (POST /v1/batches, followed until it is completed); and, for reference, N separate
   * executions back-to-back. Rows are in ms per N; perSecond is programs or cases per second.
   */
  async cases(runtime: RuntimeName): Promise<void> {
    const c = this.counts;
    const inputs = Array.from({ length: c.cases }, (_, i) => `${i} ${i * 7} ${i * 13}\n`);
    const s = await this.serve(runtime, {});
    try {
      const post = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
        const res = await fetch(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        const json = (await res.json()) as Record<string, unknown>;
        if (res.status !== 200 && res.status !== 202) throw new Error(`POST ${path} answered ${res.status}: ${JSON.stringify(json).slice(0, 300)}`);
        return json;
      };
      const tests = inputs.map((stdin, i) => ({ stdin, expectedStdout: `${i * 21}` }));
      const once = async (): Promise<void> => {
        const r = (await post('/v1/executions', { code: CASES_PROGRAM, tests })) as { status?: string; summary?: { passed?: number } };
        if (r.status !== 'completed' || r.summary?.passed !== c.cases) throw new Error(`the test-case run failed: ${JSON.stringify(r).slice(0, 300)}`);
      };
      const batch = async (): Promise<void> => {
        const { id } = (await post('/v1/batches', { items: inputs.map((stdin) => ({ code: CASES_PROGRAM, stdin })) })) as { id: string };
        for (;;) {
          const page = (await (await fetch(`${s.url}/v1/batches/${id}?limit=1`)).json()) as { state?: string; byStatus?: Record<string, number> };
          if (page.state === 'completed') {
            if (page.byStatus?.completed !== c.cases) throw new Error(`the batch failed: ${JSON.stringify(page).slice(0, 300)}`);
            return;
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      log(`cases: ${c.cases} test cases in one execution, ${c.casesRepeats} times (${runtime})`);
      await once(); // not counted: the first start of this configuration, the JIT
      const one = await sequential(c.casesRepeats, once);
      const r = this.row(`pybox ${c.cases} test cases in one execution (${runtime})`, 'cases', runtime, one);
      r.perSecond = round1(c.cases / (r.p50 / 1000));
      const repeats = Math.max(1, c.casesRepeats - 1);
      log(`cases: a batch of ${c.cases} executions, ${repeats} times (${runtime})`);
      await s.pybox.pool.filled();
      const batches = await sequential(repeats, batch);
      const b = this.row(`pybox a batch of ${c.cases} executions (${runtime}, jobs.concurrency ${s.config.jobs.concurrency})`, 'cases', runtime, batches);
      b.perSecond = round1(c.cases / (b.p50 / 1000));
      log(`cases: ${c.cases} separate executions back-to-back, ${repeats} times (${runtime})`);
      await s.pybox.pool.filled();
      const separate = await sequential(repeats, async () => {
        for (const stdin of inputs) await this.execute(s.url, CASES_PROGRAM, stdin);
      });
      const ref = this.row(`pybox ${c.cases} separate executions back-to-back (${runtime})`, 'cases', runtime, separate);
      ref.perSecond = round1(c.cases / (ref.p50 / 1000));
      r.versus = versusLatency(r, ref);
      b.versus = versusLatency(b, ref);
    } finally {
      await s.close();
    }
  }

  /** The scenarios that share one service with its default settings (pool on, default preloads). */
  async served(s: Served, runtime: RuntimeName): Promise<void> {
    const c = this.counts;
    const pool = s.pybox.pool;
    await this.execute(s.url, PRINT);
    if (this.has('paced')) {
      log(`paced: print(1) every ${this.opts.pacedIntervalMs} ms, warm (${runtime})`);
      await pool.filled();
      this.row(`pybox paced, print(1) every ${this.opts.pacedIntervalMs} ms (${runtime})`, 'paced', runtime, await paced(c.paced, this.opts.pacedIntervalMs, () => this.execute(s.url, PRINT)));
    }
    if (this.has('science')) {
      log(`numpy+pandas every ${this.opts.scienceIntervalMs} ms, warm (${runtime})`);
      // Steady state at this pace: the runs of the scenario before may have left the pool pressed,
      // its sandboxes lean; a few runs at the pace, not counted, let preloaded ones take over.
      await pool.filled();
      await paced(WARMUP_RUNS, this.opts.scienceIntervalMs, () => this.execute(s.url, SCIENCE));
      await pool.filled();
      this.row(
        `pybox paced, numpy+pandas every ${this.opts.scienceIntervalMs} ms (${runtime})`,
        'science',
        runtime,
        await paced(c.science, this.opts.scienceIntervalMs, () => this.execute(s.url, SCIENCE)),
      );
    }
    if (this.has('back-to-back')) {
      // The first runs are served from the pool's stock; the steady state is what such a client
      // sees, so the stock (and one more) is used up before the timed runs.
      const stock = s.config.pool.enabled ? s.config.pool.size[runtime] + 1 : 0;
      log(`back-to-back: print(1), the next as soon as one returns; ${stock} untimed first (${runtime})`);
      await pool.filled();
      await sequential(stock, () => this.execute(s.url, PRINT));
      const { value, cpuMs } = await withCpu(() => sequential(c.samples, () => this.execute(s.url, PRINT)));
      const ref = this.find('docker-run', runtime);
      const r = this.row(`pybox back-to-back, print(1) (${runtime})`, 'back-to-back', runtime, value, { cpuMsPerRun: Math.round(cpuMs / c.samples) });
      if (ref) r.versus = versusLatency(r, ref);
    }
    if (this.has('sustained')) {
      log(`sustained: ${c.clients} clients without pause, ${c.sustainedTotal} print(1) (${runtime})`);
      await pool.filled();
      const { value, cpuMs } = await withCpu(() => clients(c.sustainedTotal, c.clients, () => this.execute(s.url, PRINT)));
      const ref = this.find('ceiling', runtime);
      const r = this.row(`pybox sustained, ${c.clients} clients, print(1) (${runtime})`, 'sustained', runtime, value.latencies, {
        perSecond: round1(value.perSecond),
        cpuMsPerRun: Math.round(cpuMs / c.sustainedTotal),
      });
      if (ref) r.versus = versusRate(r, ref);
    }
  }

  async execute(url: string, code: string, stdin?: string): Promise<void> {
    const res = await fetch(`${url}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code, ...(stdin === undefined ? {} : { stdin }) }) });
    const body = (await res.json()) as { status?: string };
    if (res.status !== 200 || body.status !== 'completed') throw new Error(`execution failed (${res.status}): ${JSON.stringify(body).slice(0, 300)}`);
  }

  /**
   * pybox's own sandbox code (SandboxRunner, and WarmPool for the loaded case) over an engine that
   * timestamps each call: cold runs one at a time, then runs `maxConcurrent` at a time with the
   * pool on, as the service runs them under sustained load (its gate admits that many).
   */
  async breakdown(runtime: RuntimeName): Promise<void> {
    const c = this.counts;
    const config = this.config(runtime, {});
    const docker = new DockerEngine(dockerConnection(undefined, config.engine.socketPath), config.engine.apiTimeoutMs);
    const job = (code: string): SandboxJob =>
      codeJob({ id: `bench-${Math.random().toString(36).slice(2)}`, image, runtime, code, limits: { ...config.limits.defaults } });
    const factoryOver = (timed: TimedEngine) => {
      const [uid, gid] = config.sandbox.user.split(':').map(Number) as [number, number];
      return new SandboxFactory(new DistinctUids(timed, uid, gid, config.sandbox.uids), sandboxSettings(config), silentLogger, systemClock);
    };
    try {
      log(`breakdown: ${c.breakdown} cold runs one at a time (${runtime})`);
      const coldEngine = new TimedEngine(docker);
      const coldFactory = factoryOver(coldEngine);
      const cold = new SandboxRunner(coldFactory, new OnDemandSource(coldFactory), systemClock);
      const totals: number[] = [];
      const answers: number[] = [];
      await cold.run(job(PRINT)); // warm-up, not counted
      await cold.drain();
      coldEngine.timelines.length = 0;
      for (let i = 0; i < c.breakdown; i++) {
        const t0 = performance.now();
        const outcome = await cold.run(job(PRINT));
        const t1 = performance.now();
        if (outcome.kind !== 'finished') throw new Error(`breakdown run ended ${outcome.kind}: ${outcome.failure ?? ''}`);
        totals.push(t1 - t0);
        const t = coldEngine.timelines.at(-1);
        if (t?.report !== undefined) answers.push(t1 - t.report);
        await cold.drain(); // removal measured alone, off the next run
      }
      const coldSummary = summarizePhases(coldEngine.timelines);
      const tail = summarize('answer', answers);
      const total = summarize('total', totals);

      const loadedRuns = Math.max(8, Math.ceil(c.sustainedTotal / 2));
      const parallel = config.concurrency.maxConcurrent;
      log(`breakdown: ${loadedRuns} runs, ${parallel} at a time, pool on (${runtime})`);
      const loadedEngine = new TimedEngine(docker);
      const loadedFactory = factoryOver(loadedEngine);
      const pool = new WarmPool(loadedFactory, config.pool, silentLogger, systemClock);
      const loaded = new SandboxRunner(loadedFactory, pool, systemClock);
      const sandboxConfig = { image, runtime, memoryMb: config.limits.defaults.memoryMb, cpus: config.limits.defaults.cpus, preload: [] };
      pool.warm(sandboxConfig);
      let loadedResult: { perSecond: number; latencies: number[] };
      let loadedCpuMs: number;
      try {
        await pool.filled();
        loadedEngine.timelines.length = 0;
        const measured = await withCpu(() => clients(loadedRuns, parallel, () => loaded.run(job(PRINT))));
        loadedResult = measured.value;
        loadedCpuMs = measured.cpuMs;
      } finally {
        await pool.drain();
        await loaded.drain();
      }
      // Only the containers that served a run (the pool's last ones were discarded unused).
      const served = loadedEngine.timelines.filter((t) => t.payloadSent !== undefined);
      const waited = served.filter((t) => t.ready !== undefined && t.payloadSent! - t.ready < 2).length;
      this.breakdowns[runtime] = {
        cold: {
          runs: c.breakdown,
          totalP50Ms: total.p50,
          totalP95Ms: total.p95,
          reportToResultP50Ms: tail.p50,
          phases: coldSummary,
        },
        loaded: {
          runs: loadedRuns,
          parallel,
          perSecond: round1(loadedResult.perSecond),
          cpuMsPerRun: Math.round(loadedCpuMs / loadedRuns),
          latencyP50Ms: summarize('l', loadedResult.latencies).p50,
          latencyP95Ms: summarize('l', loadedResult.latencies).p95,
          runsThatWaitedForABoot: waited,
          phases: summarizePhases(served),
        },
      };
    } finally {
      docker.close();
    }
  }

  /**
   * One API node and one worker, then a second worker, composed in this process on a database and
   * a Redis prefix of their own: the paced row as the all-in-one one (same count and pace), then
   * throughput for a fixed time. In this process, as the all-in-one rows are: the client, the
   * nodes and their event loop are laid out alike on both sides, so the difference is what the
   * cluster adds (the hop through Redis, PostgreSQL writes), not a process boundary only one side has.
   */
  async runCluster(runtime: RuntimeName): Promise<void> {
    const c = this.counts;
    const redis = redisUrl();
    const away = await serversAway(postgresUrl(), redis);
    if (away) {
      log(`cluster: SKIPPED, ${away}: \`bash scripts/setup.sh test\` starts PostgreSQL and Redis (or set PYBOX_TEST_POSTGRES_URL / PYBOX_TEST_REDIS_URL)`);
      this.cluster = { skipped: away };
      return;
    }
    const db = await createTestDatabase();
    const prefix = `pbxbench${randomBytes(4).toString('hex')}`;
    const engineB = secondEngineHost();
    const base = this.config(runtime, { cluster: { postgresUrl: db.url, redisUrl: redis, prefix, heartbeatMs: 500 } });
    const nodeConfig = (role: 'api' | 'worker', nodeId: string): Config => ({ ...base, cluster: { ...base.cluster, role, nodeId } });
    const nodes: ClusterNode[] = [];
    const hosts = new Set<string | undefined>();
    const startNode = async (role: 'api' | 'worker', nodeId: string, dockerHost?: string) => {
      if (role === 'worker') hosts.add(dockerHost);
      const node = await composeClusterNode(nodeConfig(role, nodeId), { dockerHost, logger: silentLogger, imagesDir: join(root, 'images') });
      nodes.push(node);
      return node;
    };
    const workers: ClusterNode[] = [];
    let server: Server | undefined;
    const info: Record<string, unknown> = { database: db.name, prefix, secondEngine: engineB !== undefined };
    try {
      log(`cluster: 1 API node + 1 worker in this process (database ${db.name}, prefix ${prefix}, ${runtime})`);
      workers.push(await startNode('worker', 'bench-w1'));
      const api = await startNode('api', 'bench-api');
      const listening = await new Promise<Server>((resolve) => {
        const s = serve({ fetch: api.app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server)) as Server;
      });
      server = listening;
      const url = `http://127.0.0.1:${(listening.address() as AddressInfo).port}`;
      const ran = workers[0]!.engineSide?.runtime;
      if (ran !== runtime) throw new Error(`the worker runs ${ran ?? 'nothing'}, not ${runtime}`);
      await this.firstExecution(url);
      const filled = () => Promise.all(workers.map((w) => w.engineSide!.pool.filled()));

      // The all-in-one node beside it, measured in the same minutes: the two take turns, so a
      // drift of the machine's speed between two rows measured apart does not enter the difference.
      const interval = this.opts.pacedIntervalMs;
      log(`cluster paced: print(1) every ${2 * interval} ms, taking turns with an all-in-one node every ${interval} ms, warm (${runtime})`);
      const beside = await this.serve(runtime, {});
      try {
        await this.execute(beside.url, PRINT);
        await Promise.all([filled(), beside.pybox.pool.filled()]);
        const turns = await pacedPairs(c.paced, interval, () => this.execute(beside.url, PRINT), () => this.execute(url, PRINT));
        const aio = this.row(`pybox paced beside the cluster, print(1) every ${2 * interval} ms (${runtime})`, 'cluster', runtime, turns.first);
        const pacedRow = this.row(`cluster paced, 1 worker, print(1) every ${2 * interval} ms (${runtime})`, 'cluster', runtime, turns.second);
        pacedRow.versus = versusLatency(pacedRow, aio, true);
        info.pacedOverheadMs = pacedRow.versus.deltaMs ?? null;
        // The same from each turn's pair: the cluster's run minus the all-in-one run just before it.
        info.pacedOverheadPairedMs = summarize('paired differences', turns.second.map((v, i) => v - (turns.first[i] ?? v))).p50;
      } finally {
        await beside.close();
      }

      const sustained = async (label: string) => {
        log(`cluster sustained, ${label}: ${c.clients} clients without pause for ${c.clusterSeconds} s (${runtime})`);
        await filled();
        const busy = workers.map(() => 0);
        let ticks = 0;
        const sampler = setInterval(() => {
          ticks++;
          workers.forEach((w, i) => (busy[i]! += w.engineSide!.gate.stats.running));
        }, 100);
        let measured: { value: Awaited<ReturnType<typeof forDuration>>; cpuMs: number };
        try {
          measured = await withCpu(() => forDuration(c.clusterSeconds * 1000, c.clients, () => this.execute(url, PRINT)));
        } finally {
          clearInterval(sampler);
        }
        const { value, cpuMs } = measured;
        const r = this.row(`cluster sustained, ${label}, ${c.clients} clients (${runtime})`, 'cluster', runtime, value.latencies, {
          perSecond: round1(value.perSecond),
          cpuMsPerRun: Math.round(cpuMs / Math.max(1, value.latencies.length)),
        });
        const ref = this.find('sustained', runtime);
        if (ref) r.versus = versusRate(r, ref);
        // Mean slots busy per worker over the window: both must have taken work for the row to mean two.
        return { row: r, busySlots: busy.map((b) => round1(b / Math.max(1, ticks))) };
      };
      const one = await sustained('1 worker');
      info.oneWorker = { perSecond: one.row.perSecond, busySlots: one.busySlots };
      if (!this.find('sustained', runtime)) log('  (no all-in-one sustained row in this run to read it against: add `sustained` to --only)');

      log(`cluster: a second worker (${engineB ? `on the second engine, ${engineB}` : 'no second engine answers: on the same engine, node id bench-w2'})`);
      workers.push(await startNode('worker', 'bench-w2', engineB));
      const two = await sustained(`2 workers (${engineB ? 'engines a + b' : 'one engine'})`);
      info.twoWorkers = { perSecond: two.row.perSecond, busySlots: two.busySlots, engine: engineB ?? 'the default engine' };
      if (one.row.perSecond && two.row.perSecond) info.twoOverOne = round2(two.row.perSecond / one.row.perSecond);
    } finally {
      if (server) {
        const s = server;
        await new Promise((r) => s.close(r));
      }
      // The API node first (it stops sending work), then the workers (they drain their sandboxes).
      for (const node of [...nodes].reverse()) await node.close().catch((e: unknown) => log(`cluster: closing ${node.nodeId} failed: ${String(e)}`));
      let left = 0;
      for (const host of hosts) left += await removeInstance(host, base.engine.instance);
      info.containersLeft = left;
      await db.drop().then(
        () => (info.databaseDropped = true),
        (e: unknown) => log(`cluster: dropping ${db.name} failed: ${String(e)}`),
      );
      info.redisKeysFlushed = await flushPrefix(redis, `${prefix}:`).catch((e: unknown) => {
        log(`cluster: flushing ${prefix}: failed: ${String(e)}`);
        return null;
      });
      this.cluster = info;
    }
  }

  /** The first execution through a fresh cluster: the API node may not have seen the worker's first beat yet. */
  async firstExecution(url: string): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        return await this.execute(url, PRINT);
      } catch (e) {
        if (i >= 50) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** `total` requests at concurrency 64 against a service in its own process, whose memory we read. */
  async runBurst(runtime: RuntimeName): Promise<void> {
    const port = 18000 + Math.floor(Math.random() * 1000);
    const instance = `bench-burst-${Date.now()}`;
    this.instances.push(instance);
    const cfgPath = join(this.storeDir, 'burst.yaml');
    writeFileSync(cfgPath, `engine:\n  runtime: ${runtime}\n  instance: ${instance}\nlog:\n  level: warn\n`);
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: root,
      env: { ...process.env, PYBOX_CONFIG: cfgPath, PYBOX_PORT: String(port), PYBOX_DB: join(this.storeDir, 'burst.db') },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const url = `http://127.0.0.1:${port}`;
    try {
      for (let i = 0; i < 200; i++) {
        try {
          if ((await fetch(`${url}/readyz`)).ok) break;
        } catch {
          /* not up yet */
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      const total = this.counts.burstTotal;
      const concurrency = 64;
      let ok = 0;
      let refused = 0;
      let refusedWithoutRetryAfter = 0;
      let other = 0;
      let peakRssKb = 0;
      const sampler = setInterval(() => {
        try {
          const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
          peakRssKb = Math.max(peakRssKb, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0));
        } catch {
          /* gone */
        }
      }, 50);
      const result = await clients(total, concurrency, async () => {
        const res = await fetch(`${url}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: PRINT }) });
        await res.arrayBuffer();
        if (res.status === 200) ok++;
        else if (res.status === 503) {
          refused++;
          if (!res.headers.get('retry-after')) refusedWithoutRetryAfter++;
        } else other++;
      });
      clearInterval(sampler);
      if (other > 0) log(stderr.slice(-2000));
      const s = summarize('burst', result.latencies);
      this.burst = {
        runtime,
        requests: total,
        concurrency,
        completed: ok,
        refused503: refused,
        refusedWithoutRetryAfter,
        otherStatus: other,
        p50Ms: s.p50,
        p99Ms: s.p99,
        seconds: round1(result.seconds),
        servicePeakRssMb: Math.round(peakRssKb / 1024),
      };
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null) await new Promise((r) => child.on('exit', r));
      const left = await docker.listContainers({ all: true, filters: { label: [`pybox.instance=${instance}`] } });
      if (this.burst) this.burst.containersLeft = left.length;
    }
  }

  /** Removes whatever this run's containers left (there should be none) and the temp store. */
  async cleanUp(): Promise<number> {
    rmSync(this.storeDir, { recursive: true, force: true });
    const labels = [[`${BENCH_LABEL}`], ...this.instances.map((i) => [`pybox.instance=${i}`])];
    let removed = 0;
    for (const label of labels) {
      const stray = await docker.listContainers({ all: true, filters: { label } });
      await Promise.all(stray.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).then(() => removed++, () => {})));
    }
    return removed;
  }
}

/** Why PostgreSQL or Redis cannot be used (each tried once, briefly), or null when both answer. */
async function serversAway(postgres: string, redis: string): Promise<string | null> {
  const reasons: string[] = [];
  const client = new pg.Client({ connectionString: postgres, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (e) {
    reasons.push(`PostgreSQL at ${new URL(postgres).host} does not answer (${e instanceof Error ? e.message : String(e)})`);
  } finally {
    await client.end().catch(() => undefined);
  }
  const r = new Redis(redis, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  // The connection's own error (ECONNREFUSED, auth) says more than the rejected connect's.
  let first = '';
  r.on('error', (e: Error) => (first ||= e.message));
  try {
    await r.connect();
    await r.ping();
  } catch (e) {
    reasons.push(`Redis at ${new URL(redis).host} does not answer (${first || (e instanceof Error ? e.message : String(e))})`);
  } finally {
    r.disconnect();
  }
  return reasons.length > 0 ? reasons.join('; ') : null;
}

/** Removes the containers on the engine at `host` whose instance label starts with `instance` (workers add their node id). */
async function removeInstance(host: string | undefined, instance: string): Promise<number> {
  const engine = host ? new Docker({ socketPath: host.replace(/^unix:\/\//, '') }) : docker;
  const list = await engine.listContainers({ all: true, filters: { label: ['pybox.instance'] } });
  const ours = list.filter((c) => (c.Labels['pybox.instance'] ?? '').startsWith(instance));
  await Promise.all(ours.map((c) => engine.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)));
  return ours.length;
}

/** Load average and how busy the CPU is over a short idle window, before anything starts. */
async function quietness(): Promise<{ load1: number; load5: number; busyShareIdle: number; warning: string | null }> {
  const before = cpuNow();
  await new Promise((r) => setTimeout(r, 2000));
  const share = busyShare(before, cpuNow());
  const [load1 = 0, load5 = 0] = loadavg();
  return { load1: round2(load1), load5: round2(load5), busyShareIdle: round2(share), warning: quietnessWarning(load1, cpus().length, share) };
}

function printTable(rows: Row[]): void {
  const cols: Array<[string, number, (r: Row) => string]> = [
    ['scenario', 64, (r) => r.name],
    ['n', 5, (r) => String(r.samples)],
    ['p50 ms', 9, (r) => r.p50.toFixed(1)],
    ['p95 ms', 9, (r) => r.p95.toFixed(1)],
    ['p99 ms', 9, (r) => r.p99.toFixed(1)],
    ['mean ms', 9, (r) => r.mean.toFixed(1)],
    ['x base', 8, (r) => (r.ratio === undefined ? '' : r.ratio.toFixed(1))],
    ['runs/s', 8, (r) => (r.perSecond === undefined ? '' : r.perSecond.toFixed(1))],
    ['CPU ms/run', 11, (r) => (r.cpuMsPerRun === undefined ? '' : String(r.cpuMsPerRun))],
    ['vs (p50, or runs/s)', 40, (r) => versusCell(r.versus)],
  ];
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(cols[i]![1]) : c.padStart(cols[i]![1]))).join(' ').trimEnd();
  console.log('\n' + line(cols.map((c) => c[0])));
  for (const r of rows) console.log(line(cols.map((c) => c[2](r))));
}

function printBreakdown(runtime: string, b: { cold: { phases: PhaseSummary[] } & Record<string, unknown>; loaded: { phases: PhaseSummary[] } & Record<string, unknown> }): void {
  for (const [what, part] of [['cold, one at a time', b.cold], ['under load, pool on', b.loaded]] as const) {
    const { phases, ...rest } = part;
    console.log(`\nwhere the time goes (${runtime}, ${what}): ${JSON.stringify(rest)}`);
    for (const p of phases) {
      console.log(`  ${p.phase.padEnd(8)} p50 ${p.p50.toFixed(1).padStart(7)}  p95 ${p.p95.toFixed(1).padStart(7)}  mean ${p.mean.toFixed(1).padStart(7)} ms  (${PHASE_MEANING[p.phase]})`);
    }
  }
}

async function main(): Promise<void> {
  let opts: BenchOptions;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (e instanceof ArgsError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  if (opts.help) {
    console.log(USAGE);
    return;
  }
  const bench = new Bench(opts);
  const started = new Date();
  const t0 = performance.now();
  try {
    const quiet = await quietness();
    log(`pybox bench (${opts.quick ? 'quick' : 'full'}): ${opts.scenarios.join(', ')}`);
    log(`load average ${quiet.load1} / ${quiet.load5}, ${Math.round(quiet.busyShareIdle * 100)} % CPU busy before start`);
    if (quiet.warning) log(quiet.warning);
    const offered = Object.keys(((await docker.info()) as { Runtimes?: object }).Runtimes ?? {});
    const wanted = opts.runtimes ?? (['runc', 'runsc'] as RuntimeName[]);
    const runtimes = wanted.filter((r) => offered.includes(r));
    for (const r of wanted) if (!runtimes.includes(r)) log(`(runtime ${r} skipped: the engine does not offer it)`);

    if (opts.scenarios.includes('baseline')) {
      log('baseline: python3 subprocess on the host');
      bench.row('baseline: python3 subprocess, print(1) (host, no sandbox)', 'baseline', undefined, await baseline(PRINT, opts.counts.samples));
      if ((await run(hostPython(), ['-c', 'import numpy, pandas'])) === 0) {
        bench.row('baseline: python3 subprocess, numpy+pandas (host)', 'baseline', undefined, await baseline(SCIENCE, opts.counts.science));
      } else {
        log('  (numpy+pandas baseline skipped: the host python3 has no numpy/pandas)');
      }
    }
    for (const runtime of runtimes) await bench.runtimeScenarios(runtime);
    if (opts.scenarios.includes('cluster')) {
      // gVisor where the engine offers it (engine.runtime auto), unless --runtime leaves it out.
      const runtime = runtimes.includes('runsc') ? 'runsc' : runtimes[0];
      if (!runtime) log('cluster: SKIPPED, no runtime to run it under');
      else {
        // A long run's other rows are kept when the cluster part fails; the failure is reported and fails the exit code.
        await bench.runCluster(runtime).catch((e: unknown) => {
          const message = e instanceof Error ? e.message : String(e);
          log(`cluster: FAILED: ${message}`);
          bench.cluster = { ...bench.cluster, failed: message };
          process.exitCode = 1;
        });
      }
    }
    if (opts.scenarios.includes('burst')) {
      const runtime = runtimes[0] ?? 'runc';
      log(`burst: ${opts.counts.burstTotal} requests at concurrency 64 (${runtime}, service in its own process)`);
      await bench.runBurst(runtime);
    }

    const base = bench.rows.find((r) => r.scenario === 'baseline');
    if (base) for (const r of bench.rows) r.ratio = round1(r.p50 / base.p50);
    const after = loadavg();
    const result = {
      startedAt: started.toISOString(),
      seconds: Math.round((performance.now() - t0) / 1000),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
      runsc: spawnSync('runsc', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] ?? null,
      quietness: { ...quiet, load1AtEnd: round2(after[0] ?? 0) },
      options: { quick: opts.quick, scenarios: opts.scenarios, runtimes, counts: opts.counts, pacedIntervalMs: opts.pacedIntervalMs, scienceIntervalMs: opts.scienceIntervalMs, poolSize: opts.poolSize },
      rows: bench.rows,
      breakdown: bench.breakdowns,
      burst: bench.burst,
      cluster: bench.cluster,
      sessionMemory: bench.sessionMemory,
    };
    const resultsDir = join(root, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    writeFileSync(join(resultsDir, 'latest.svg'), renderSvg(bench.rows, result.machine));

    if (quiet.warning) console.log(quiet.warning);
    console.log(`load average at start ${quiet.load1}, at end ${round2(after[0] ?? 0)}; ${result.runsc ?? 'no runsc'}; ${result.seconds} s`);
    printTable(bench.rows);
    for (const [runtime, b] of Object.entries(bench.breakdowns)) printBreakdown(runtime, b as Parameters<typeof printBreakdown>[1]);
    if (bench.burst) console.log(`\nburst: ${JSON.stringify(bench.burst)}`);
    if (bench.cluster) console.log(`\ncluster: ${JSON.stringify(bench.cluster)}`);
    for (const [runtime, m] of Object.entries(bench.sessionMemory)) {
      console.log(`\nidle sessions (${runtime}): ${m.hostMiBPerSession} MiB each by the host's available memory, ${m.cgroupMiBPerSession ?? '?'} MiB by the container's cgroup; about ${m.perGiB ?? '?'} per GiB`);
    }
    console.log(`\nwrote bench/results/latest.json and bench/results/latest.svg`);
  } finally {
    const removed = await bench.cleanUp();
    if (removed > 0) log(`removed ${removed} containers left by this run`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});

