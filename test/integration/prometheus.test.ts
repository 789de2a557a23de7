// A real Prometheus (the OS package, scripts/ensure-prometheus.sh) scrapes a real pybox with the
// project's scrape config and alert rules (deploy/prometheus), every second, with an admin key; the
// figures of known runs are read back through its query API and the rules through its rules API.
// It runs as a process of this test, on a free port, with its configuration and data in a directory
// of its own under /var/lib/pybox/test (not /tmp, which the security battery watches), and is
// stopped by its pid.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { hashApiKey, newApiKey, newKeyId } from '../../src/tenancy/keys.ts';
import { realPybox, type RealPybox } from '../support/real.ts';
import { freePort, serveApp, type Served } from '../support/serve.ts';

const DEPLOY = join(import.meta.dirname, '../../deploy/prometheus');
const STATE = '/var/lib/pybox/test';

interface ScrapeJob {
  job_name: string;
  authorization?: { type?: string; credentials_file?: string };
  static_configs: Array<{ targets: string[] }>;
  [k: string]: unknown;
}

let dir: string;
let pybox: RealPybox;
let served: Served;
let prometheus: ChildProcess | undefined;
let promUrl: string;
let adminKey: string;

function promtool(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}` };
}

/** The project's scrape config, pointed at this test's pybox and run every second. */
function testConfig(target: string, keyFile: string): string {
  const config = parse(readFileSync(join(DEPLOY, 'prometheus.yml'), 'utf8')) as { global: Record<string, string>; rule_files: string[]; scrape_configs: ScrapeJob[] };
  config.global.scrape_interval = '1s';
  config.global.evaluation_interval = '1s';
  const job = config.scrape_configs.find((j) => j.job_name === 'pybox');
  if (!job?.authorization) throw new Error('deploy/prometheus/prometheus.yml has no pybox job with an authorization');
  job.authorization.credentials_file = keyFile;
  job.static_configs = [{ targets: [target] }];
  // The same target without a key: Prometheus must be refused.
  const { authorization: _, ...rest } = job;
  config.scrape_configs.push({ ...rest, job_name: 'pybox-without-key' });
  return stringify(config);
}

async function getJson<T>(path: string): Promise<T> {
  const res = await fetch(`${promUrl}${path}`);
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** A query's single value (undefined while it has none). */
async function query(q: string): Promise<number | undefined> {
  const body = await getJson<{ data: { result: Array<{ value: [number, string] }> } }>(`/api/v1/query?query=${encodeURIComponent(q)}`);
  if (body.data.result.length > 1) throw new Error(`${q} has ${body.data.result.length} series`);
  const v = body.data.result[0]?.value[1];
  return v === undefined ? undefined : Number(v);
}

async function eventually<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: T | undefined;
  let error: unknown;
  while (Date.now() < deadline) {
    try {
      last = await read();
      if (ok(last)) return last;
    } catch (e) {
      error = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what}: still ${JSON.stringify(last)} after ${ms} ms${error ? ` (${String(error)})` : ''}`);
}

beforeAll(async () => {
  mkdirSync(STATE, { recursive: true, mode: 0o755 });
  dir = mkdtempSync(join(STATE, 'prometheus-'));
  pybox = await realPybox('runc', {}, dir);
  adminKey = newApiKey();
  await pybox.tenants.createKey({ id: newKeyId(), tenant: 'ops', admin: true, hash: hashApiKey(adminKey), limits: {} });
  served = await serveApp(pybox.app);
  const keyFile = join(dir, 'pybox-admin-key');
  writeFileSync(keyFile, adminKey, { mode: 0o600 });
  const configFile = join(dir, 'prometheus.yml');
  copyFileSync(join(DEPLOY, 'alerts.yml'), join(dir, 'alerts.yml'));
  writeFileSync(configFile, testConfig(new URL(served.url).host, keyFile));
  chmodSync(configFile, 0o600);
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  const data = join(dir, 'data');
  mkdirSync(data);
  const log = join(dir, 'prometheus.log');
  writeFileSync(log, '');
  prometheus = spawn(
    'prometheus',
    [`--config.file=${configFile}`, `--storage.tsdb.path=${data}`, `--web.listen-address=127.0.0.1:${port}`, '--storage.tsdb.retention.time=1h', '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  prometheus.stderr?.on('data', (b: Buffer) => writeFileSync(log, b, { flag: 'a' }));
  await eventually('Prometheus ready', () => fetch(`${promUrl}/-/ready`).then((r) => r.status), (s) => s === 200).catch((e: unknown) => {
    throw new Error(`${String(e)}\n${readFileSync(log, 'utf8').slice(-2000)}`);
  });
}, 180_000);

afterAll(async () => {
  const p = prometheus;
  if (p?.pid !== undefined && p.exitCode === null) {
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    process.kill(p.pid, 'SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (p.exitCode === null && p.signalCode === null) process.kill(p.pid, 'SIGKILL');
  }
  await served?.close();
  await pybox?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

const withKey = () => ({ 'content-type': 'application/json', authorization: `Bearer ${adminKey}` });

describe('a real Prometheus scraping pybox', () => {
  it('promtool accepts the alert rules, their unit tests and the scrape config', () => {
    const rules = promtool('check', 'rules', join(DEPLOY, 'alerts.yml'));
    expect(rules.status, rules.out).toBe(0);
    const tests = promtool('test', 'rules', join(DEPLOY, 'alerts.test.yml'));
    expect(tests.status, tests.out).toBe(0);
    const config = promtool('check', 'config', join(dir, 'prometheus.yml'));
    expect(config.status, config.out).toBe(0);
  });

  it('reads the figures of known runs back through its query API', async () => {
    for (const [code, status] of [
      ['print(1)', 'completed'],
      ['print(2)', 'completed'],
      ['1/0', 'error'],
    ] as const) {
      const res = await pybox.app.request('/v1/executions', { method: 'POST', headers: withKey(), body: JSON.stringify({ code }) });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { status: string }).status).toBe(status);
    }
    // The app.request() calls above are in process; Prometheus reaches the same app over HTTP.
    expect(await eventually('completed', () => query('pybox_executions_total{job="pybox",status="completed",runtime="runc"}'), (v) => v === 2)).toBe(2);
    expect(await query('pybox_executions_total{job="pybox",status="error",runtime="runc"}')).toBe(1);
    expect(await query('pybox_execution_duration_seconds_count{job="pybox",runtime="runc"}')).toBe(3);
    expect(await query('pybox_execution_queue_wait_seconds_count{job="pybox",runtime="runc"}')).toBe(3);
    expect(await query('pybox_engine_up{job="pybox"}')).toBe(1);
    expect(await query('up{job="pybox"}')).toBe(1);
    expect(await query('sum(pybox_pool_takes_total{job="pybox"})')).toBe(3);
    // Prometheus's own scrapes are HTTP requests of /metrics, counted by route.
    expect(await eventually('scrapes', () => query('pybox_http_requests_total{job="pybox",route="/metrics",method="GET",status="200"}'), (v) => (v ?? 0) >= 2)).toBeGreaterThanOrEqual(2);
  }, 90_000);

  it('is refused without the admin key', async () => {
    const targets = await eventually(
      'the keyless target scraped',
      () => getJson<{ data: { activeTargets: Array<{ scrapePool: string; health: string; lastError: string }> } }>('/api/v1/targets'),
      (t) => t.data.activeTargets.some((x) => x.scrapePool === 'pybox-without-key' && x.health !== 'unknown'),
    );
    const keyless = targets.data.activeTargets.find((x) => x.scrapePool === 'pybox-without-key');
    expect(keyless?.health).toBe('down');
    expect(keyless?.lastError).toContain('401');
    expect(targets.data.activeTargets.find((x) => x.scrapePool === 'pybox')?.health).toBe('up');
    expect(await query('up{job="pybox-without-key"}')).toBe(0);
  }, 60_000);

  it('loads and evaluates the alert rules: none fires on a healthy node', async () => {
    const expected = (parse(readFileSync(join(DEPLOY, 'alerts.yml'), 'utf8')) as { groups: Array<{ rules: Array<{ alert: string }> }> }).groups.flatMap((g) => g.rules.map((r) => r.alert));
    expect(expected).toEqual(expect.arrayContaining(['PyboxEngineAway', 'PyboxPoolEmptyUnderLoad', 'PyboxInternalErrorRate']));
    type Rule = { name: string; health: string; state: string; lastEvaluation: string; lastError?: string };
    const rules = await eventually(
      'rules evaluated',
      async () => (await getJson<{ data: { groups: Array<{ name: string; rules: Rule[] }> } }>('/api/v1/rules')).data.groups.flatMap((g) => g.rules),
      (rs) => rs.length === expected.length && rs.every((r) => !r.lastEvaluation.startsWith('0001-')),
    );
    expect(rules.map((r) => r.name).sort()).toEqual([...expected].sort());
    for (const r of rules) {
      expect(r.health, `${r.name}: ${r.lastError ?? ''}`).toBe('ok');
      expect(r.state, r.name).toBe('inactive');
    }
  }, 60_000);
});

