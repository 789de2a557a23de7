// `npm run bench`: every scenario side by side in one run, on this machine, now. Prints a table of
// medians, p95, p99 and ratios to the unsandboxed baseline, writes bench/results/latest.json and
// draws bench/results/latest.svg. Figures on shared machines are noisy: compare within one run.
import { serve } from '@hono/node-server';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { composePybox, type Pybox } from '../src/compose.ts';
import { ConfigSchema, type Config } from '../src/config/schema.ts';
import { silentLogger } from '../src/core/logger.ts';
import type { RuntimeName } from '../src/core/schemas.ts';
import { imageTags } from '../src/engine/image.ts';
import { renderSvg } from './chart.ts';
import { summarize, type Row } from './stats.ts';

const root = join(import.meta.dirname, '..');
const image = imageTags(join(root, 'images')).sandbox;
const docker = new Docker();
const quick = process.argv.includes('--quick');
const N = quick ? 8 : 25;
const PRINT = 'print(1)';
const SCIENCE = 'import numpy as np, pandas as pd\nprint(int(np.arange(10).sum()), len(pd.DataFrame({"a": [1, 2]})))';
const rows: Row[] = [];
const log = (s: string) => process.stderr.write(s + '\n');

function run(cmd: string, args: string[], input?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'ignore'] });
    if (input !== undefined) child.stdin?.end(input);
    child.on('error', reject);
    child.on('exit', (code) => resolve(code ?? -1));
  });
}

async function timeIt(n: number, once: () => Promise<unknown>, between?: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    if (between) await between();
    const t = performance.now();
    await once();
    out.push(performance.now() - t);
  }
  return out;
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
    return await timeIt(n, async () => {
      const file = join(dir, `m${Math.random().toString(36).slice(2)}.py`);
      writeFileSync(file, code);
      const code_ = await run(python, [file]);
      if (code_ !== 0) throw new Error('baseline failed');
      rmSync(file);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function dockerRun(code: string, n: number, runtime: RuntimeName): Promise<number[]> {
  return timeIt(n, async () => {
    const status = await run('docker', ['run', '--rm', '-i', '--network', 'none', `--runtime=${runtime}`, '--entrypoint', 'python3', image, '-c', code]);
    if (status !== 0) throw new Error(`docker run failed (${status})`);
  });
}

interface Served {
  pybox: Pybox;
  url: string;
  close(): Promise<void>;
}

async function servePybox(runtime: RuntimeName, overrides: Record<string, unknown>, storeDir: string): Promise<Served> {
  const config: Config = ConfigSchema.parse({
    ...overrides,
    engine: { runtime, instance: `bench-${runtime}-${Date.now()}` },
    store: { path: join(storeDir, `${runtime}-${Date.now()}.db`) },
    log: { level: 'silent' },
  });
  const pybox = await composePybox(config, { logger: silentLogger, imagesDir: join(root, 'images') });
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: pybox.app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server)) as Server;
  });
  const { port } = server.address() as AddressInfo;
  return {
    pybox,
    url: `http://127.0.0.1:${port}`,
    async close() {
      await new Promise((r) => server.close(r));
      await pybox.close();
    },
  };
}

async function execute(url: string, code: string): Promise<{ status: number; body: { status?: string } }> {
  const res = await fetch(`${url}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
  return { status: res.status, body: (await res.json()) as { status?: string } };
}

async function executeOk(url: string, code: string): Promise<void> {
  const r = await execute(url, code);
  if (r.status !== 200 || r.body.status !== 'completed') throw new Error(`execution failed: ${JSON.stringify(r.body).slice(0, 300)}`);
}

async function pyboxLatency(s: Served, code: string, n: number, warm: boolean): Promise<number[]> {
  // Warm: a sandbox is waiting when the request arrives (the pool has refilled since the last
  // one). Cold: the pool is off, so every request creates and starts its container.
  // Between cold samples, a pause lets the previous container's removal finish first.
  const between = warm ? () => s.pybox.pool.filled() : () => new Promise<void>((r) => setTimeout(r, 150));
  await executeOk(s.url, code); // first use: the service's own warm-up (JIT, first connections)
  return timeIt(n, () => executeOk(s.url, code), between);
}

/** Runs `task` `total` times, `parallel` at a time; answers the rate per second and each latency. */
async function inParallel(total: number, parallel: number, task: () => Promise<void>): Promise<{ perSecond: number; latencies: number[] }> {
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < total) {
        next++;
        const t = performance.now();
        await task();
        latencies.push(performance.now() - t);
      }
    }),
  );
  return { perSecond: total / ((performance.now() - t0) / 1000), latencies };
}

/** Sustained throughput: `total` requests, `concurrency` at a time. */
const throughput = (url: string, code: string, concurrency: number, total: number) => inParallel(total, concurrency, () => executeOk(url, code));

/** The engine's own ceiling: full create → start → wait → remove lifecycles, `parallel` at a time. */
async function engineCeiling(total: number, parallel: number, runtime: RuntimeName): Promise<number> {
  const { perSecond } = await inParallel(total, parallel, async () => {
    const c = await docker.createContainer({
      Image: image,
      Entrypoint: ['python3', '-c', PRINT],
      HostConfig: { NetworkMode: 'none', Runtime: runtime, LogConfig: { Type: 'none', Config: {} } },
      Labels: { 'pybox.bench': '1' },
    });
    await c.start();
    await c.wait();
    await c.remove({ force: true });
  });
  return perSecond;
}

/** 500 requests at concurrency 64 against a service in its own process, whose memory we read. */
async function burst(storeDir: string): Promise<Record<string, number | string>> {
  const port = 18000 + Math.floor(Math.random() * 1000);
  const instance = `bench-burst-${Date.now()}`;
  const cfgPath = join(storeDir, 'burst.yaml');
  writeFileSync(cfgPath, `engine:\n  runtime: runc\n  instance: ${instance}\nlog:\n  level: warn\n`);
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { ...process.env, PYBOX_CONFIG: cfgPath, PYBOX_PORT: String(port), PYBOX_DB: join(storeDir, 'burst.db') },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const total = quick ? 100 : 500;
  const concurrency = 64;
  const latencies: number[] = [];
  let ok = 0;
  let refused = 0;
  let refusedWithoutRetryAfter = 0;
  let other = 0;
  let next = 0;
  let peakRssKb = 0;
  const sampler = setInterval(() => {
    try {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      peakRssKb = Math.max(peakRssKb, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0));
    } catch {
      /* gone */
    }
  }, 50);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next++;
        const t = performance.now();
        const res = await fetch(`${url}/v1/executions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: PRINT }) });
        await res.arrayBuffer();
        latencies.push(performance.now() - t);
        if (res.status === 200) ok++;
        else if (res.status === 503) {
          refused++;
          if (!res.headers.get('retry-after')) refusedWithoutRetryAfter++;
        } else other++;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  child.kill('SIGTERM');
  await new Promise((r) => child.on('exit', r));
  const left = await docker.listContainers({ all: true, filters: { label: [`pybox.instance=${instance}`] } });
  const s = summarize('burst', latencies);
  if (other > 0) log(stderr.slice(-2000));
  return {
    requests: total,
    concurrency,
    completed: ok,
    refused503: refused,
    refusedWithoutRetryAfter,
    otherStatus: other,
    p50Ms: s.p50,
    p99Ms: s.p99,
    seconds: Math.round(seconds * 10) / 10,
    containersLeft: left.length,
    servicePeakRssMb: Math.round(peakRssKb / 1024),
  };
}

async function main(): Promise<void> {
  const storeDir = mkdtempSync(join(tmpdir(), 'pybox-bench-store-'));
  const started = new Date();
  try {
    log(`pybox bench (${quick ? 'quick' : 'full'}): ${N} samples per latency scenario`);
    const engineRuntimes = Object.keys(((await docker.info()) as { Runtimes?: object }).Runtimes ?? {});
    const runtimes: RuntimeName[] = engineRuntimes.includes('runsc') ? ['runc', 'runsc'] : ['runc'];

    log('baseline: python3 subprocess on the host');
    rows.push(summarize('baseline: python3 subprocess (host, no sandbox)', await baseline(PRINT, N)));
    if ((await run(hostPython(), ['-c', 'import numpy, pandas'])) === 0) {
      rows.push(summarize('baseline: numpy+pandas, python3 subprocess', await baseline(SCIENCE, Math.ceil(N / 2))));
    } else {
      log('  (numpy+pandas baseline skipped: the host python3 has no numpy/pandas)');
    }

    for (const runtime of runtimes) {
      log(`docker run --rm (${runtime})`);
      rows.push(summarize(`docker run --rm (${runtime})`, await dockerRun(PRINT, Math.ceil(N / 2), runtime)));

      log(`pybox cold (${runtime})`);
      const cold = await servePybox(runtime, { pool: { enabled: false } }, storeDir);
      rows.push(summarize(`pybox cold, pool off (${runtime})`, await pyboxLatency(cold, PRINT, N, false)));
      await cold.close();

      log(`pybox warm (${runtime})`);
      const warm = await servePybox(runtime, {}, storeDir);
      rows.push(summarize(`pybox warm (${runtime})`, await pyboxLatency(warm, PRINT, N, true)));
      rows.push(summarize(`pybox warm, numpy+pandas (${runtime})`, await pyboxLatency(warm, SCIENCE, Math.ceil(N / 2), true)));
      await warm.close();
    }

    log('pybox warm (runc), numpy+pandas without preloading');
    const noPreload = await servePybox('runc', { pool: { preload: { runc: [], runsc: [] } } }, storeDir);
    rows.push(summarize('pybox warm, numpy+pandas, no preload (runc)', await pyboxLatency(noPreload, SCIENCE, Math.ceil(N / 2), true)));
    await noPreload.close();

    log('concurrency 1, 8, 32 (runc, pool on)');
    const throughputs: Record<string, number> = {};
    const conc = await servePybox('runc', { concurrency: { maxConcurrent: 8, maxQueue: 64 } }, storeDir);
    for (const c of [1, 8, 32]) {
      const t = await throughput(conc.url, PRINT, c, quick ? 16 : 48);
      throughputs[`c${c}`] = Math.round(t.perSecond * 10) / 10;
      rows.push({ ...summarize(`pybox throughput, concurrency ${c} (runc)`, t.latencies), perSecond: throughputs[`c${c}`] });
    }
    await conc.close();

    log('engine ceiling: create/start/wait/remove, 8 in parallel (runc)');
    const ceiling = await engineCeiling(quick ? 16 : 48, 8, 'runc');

    log('burst: 500 requests at concurrency 64');
    const burstResult = await burst(storeDir);

    const base = rows[0]!.p50;
    for (const r of rows) r.ratio = Math.round((r.p50 / base) * 10) / 10;
    const best = Math.max(...Object.values(throughputs));
    const result = {
      startedAt: started.toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
      samples: N,
      rows,
      throughput: { ...throughputs, engineCeilingPerSecond: Math.round(ceiling * 10) / 10, ratioToCeiling: Math.round((best / ceiling) * 100) / 100 },
      burst: burstResult,
    };

    const resultsDir = join(root, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    writeFileSync(join(resultsDir, 'latest.svg'), renderSvg(rows, result.machine));

    const pad = (s: string, n: number) => s.padEnd(n);
    const num = (v: number) => v.toFixed(1).padStart(8);
    console.log(`\n${pad('scenario', 48)}${'p50 ms'.padStart(8)}${'p95 ms'.padStart(8)}${'p99 ms'.padStart(8)}${'x base'.padStart(8)}`);
    for (const r of rows) console.log(`${pad(r.name, 48)}${num(r.p50)}${num(r.p95)}${num(r.p99)}${num(r.ratio ?? 0)}`);
    console.log(`\nthroughput (executions/s): ${JSON.stringify(result.throughput)}`);
    console.log(`burst: ${JSON.stringify(burstResult)}`);
    console.log(`\nwrote bench/results/latest.json and bench/results/latest.svg`);
  } finally {
    rmSync(storeDir, { recursive: true, force: true });
    const stray = await docker.listContainers({ all: true, filters: { label: ['pybox.bench'] } });
    await Promise.all(stray.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
