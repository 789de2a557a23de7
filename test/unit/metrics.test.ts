// The metric plumbing with fakes: what each part reports through the Observer port, and what the
// registry exposes for it.
import { afterEach, describe, expect, it } from 'vitest';
import { NO_OBSERVER, type Observer } from '../../src/core/ports.ts';
import type { SandboxConfig } from '../../src/core/sandbox.ts';
import { DockerEngine } from '../../src/engine/docker-engine.ts';
import { SandboxFactory } from '../../src/engine/sandbox.ts';
import { MeteredRequestLimiter } from '../../src/metrics/metered.ts';
import { OTHER_TENANT, PrometheusMetrics } from '../../src/metrics/prometheus.ts';
import { WarmPool, type PoolSettings } from '../../src/pool/warm-pool.ts';
import { parseExposition, valueOf } from '../support/exposition.ts';
import { FakeEngine, ManualClock, RecordingLogger, testSandboxSettings } from './fakes.ts';

type Call = [keyof Observer, ...unknown[]];

/** An Observer that records every call. */
function recorder(): Observer & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    executionFinished: (e) => calls.push(['executionFinished', e]),
    poolTake: (runtime, hit) => calls.push(['poolTake', runtime, hit]),
    sandboxStart: (runtime, ok) => calls.push(['sandboxStart', runtime, ok]),
    engineError: (operation, unavailable) => calls.push(['engineError', operation, unavailable]),
    httpRequest: (r) => calls.push(['httpRequest', r]),
    rateLimited: (tenant) => calls.push(['rateLimited', tenant]),
  };
}

const config: SandboxConfig = { image: 'img', runtime: 'runc', memoryMb: 256, cpus: 1, preload: [] };
const poolSettings = (over: Partial<PoolSettings> = {}): PoolSettings => ({
  enabled: true,
  size: { runc: 1, runsc: 1 },
  pressedSize: { runc: 1, runsc: 1 },
  idleMs: 60_000,
  maxConfigs: 4,
  preload: { runc: [], runsc: [] },
  preloadMinMemoryMb: 192,
  ...over,
});

const pools: WarmPool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.drain();
});

function pool(engine: FakeEngine, observer: Observer, over: Partial<PoolSettings> = {}) {
  const clock = new ManualClock();
  const logger = new RecordingLogger();
  const factory = new SandboxFactory(engine, testSandboxSettings({ instance: 'metrics-test', startTimeoutMs: 1000 }), logger, clock, observer);
  const p = new WarmPool(factory, poolSettings(over), logger, clock, observer);
  pools.push(p);
  return { pool: p, factory };
}

const settle = () => new Promise((r) => setTimeout(r, 10));

describe('what the parts report', () => {
  it('the pool: a take that finds a ready sandbox is a hit, one that finds none a miss', async () => {
    const obs = recorder();
    const { pool: p } = pool(new FakeEngine(), obs);
    p.warm(config);
    await p.filled(5, 5000);
    const warm = p.acquire(config, 'a');
    const cold = p.acquire({ ...config, memoryMb: 512 }, 'b');
    expect(obs.calls.filter((c) => c[0] === 'poolTake')).toEqual([
      ['poolTake', 'runc', true],
      ['poolTake', 'runc', false],
    ]);
    void warm.remove();
    void cold.remove();
  });

  it('a disabled pool misses every time', () => {
    const obs = recorder();
    const { pool: p } = pool(new FakeEngine(), obs, { enabled: false });
    void p.acquire(config, 'a').remove();
    expect(obs.calls).toEqual([['poolTake', 'runc', false]]);
  });

  it('the sandbox factory: a start that succeeds and one that fails', async () => {
    const obs = recorder();
    const engine = new FakeEngine();
    const { factory } = pool(engine, obs, { enabled: false });
    const ok = factory.prepare(config, 'ok');
    await ok.started;
    engine.nextOptions = { startError: new Error('no') };
    const bad = factory.prepare(config, 'bad');
    expect(await bad.started).not.toBeNull();
    await settle();
    expect(obs.calls).toEqual([
      ['sandboxStart', 'runc', true],
      ['sandboxStart', 'runc', false],
    ]);
    await Promise.all([factory.remove(ok), factory.remove(bad)]);
  });

  it('the engine: a call that fails because nothing answers is an "unavailable" error of its operation', async () => {
    const obs = recorder();
    const engine = new DockerEngine({ socketPath: '/nonexistent/pybox-metrics-test.sock' }, 1000, { instance: 'metrics-test', logger: new RecordingLogger(), observer: obs });
    await expect(engine.runtimes()).rejects.toThrow();
    engine.close();
    expect(obs.calls).toEqual([['engineError', 'info', true]]);
  });

  it('the metered request limiter reports refusals only, by tenant', async () => {
    const obs = recorder();
    let allowed = true;
    const limiter = new MeteredRequestLimiter({ take: async () => ({ allowed, retryAfterS: 1, state: { policy: 'requests', quota: 1, remaining: 0, resetS: 1, windowS: 60 } }) }, obs);
    await limiter.take('team-a', 1);
    allowed = false;
    await limiter.take('team-b', 1);
    expect(obs.calls).toEqual([['rateLimited', 'team-b']]);
  });

  it('the no-op observer takes every report', () => {
    expect(() => {
      NO_OBSERVER.executionFinished({ status: 'completed', runtime: 'runc', durationMs: 1, queueWaitMs: 0 });
      NO_OBSERVER.poolTake('runc', true);
      NO_OBSERVER.sandboxStart('runc', false);
      NO_OBSERVER.engineError('create', false);
      NO_OBSERVER.httpRequest({ route: '/', method: 'GET', status: 200, durationMs: 1 });
      NO_OBSERVER.rateLimited('x');
    }).not.toThrow();
  });
});

describe('PrometheusMetrics', () => {
  it('exposes each report under its name and labels', async () => {
    const m = new PrometheusMetrics({ tenantLabels: ['team-a'], processMetrics: false });
    m.poolTake('runsc', true);
    m.poolTake('runsc', true);
    m.poolTake('runsc', false);
    m.sandboxStart('runsc', true);
    m.sandboxStart('runsc', false);
    m.engineError('create', false);
    m.engineError('create', true);
    m.engineError('create', true);
    m.rateLimited('team-a');
    m.rateLimited('someone-else');
    const s = parseExposition(await m.render());
    expect(valueOf(s, 'pybox_pool_takes_total', { runtime: 'runsc', result: 'hit' })).toBe(2);
    expect(valueOf(s, 'pybox_pool_takes_total', { runtime: 'runsc', result: 'miss' })).toBe(1);
    expect(valueOf(s, 'pybox_container_starts_total', { runtime: 'runsc' })).toBe(1);
    expect(valueOf(s, 'pybox_container_start_failures_total', { runtime: 'runsc' })).toBe(1);
    expect(valueOf(s, 'pybox_engine_errors_total', { operation: 'create', kind: 'failed' })).toBe(1);
    expect(valueOf(s, 'pybox_engine_errors_total', { operation: 'create', kind: 'unavailable' })).toBe(2);
    expect(valueOf(s, 'pybox_rate_limited_total', { tenant: 'team-a' })).toBe(1);
    expect(valueOf(s, 'pybox_rate_limited_total', { tenant: OTHER_TENANT })).toBe(1);
    expect(s.some((x) => x.name.startsWith('process_'))).toBe(false);
  });

  it('reads gauges at scrape time: warm sandboxes by configuration, the engine, the cluster queue', async () => {
    const m = new PrometheusMetrics({ tenantLabels: [], processMetrics: false });
    let groups = [
      { config: { runtime: 'runsc' as const, memoryMb: 256, cpus: 1 }, ready: 2 },
      { config: { runtime: 'runsc' as const, memoryMb: 512, cpus: 0.5 }, ready: 1 },
    ];
    let up = true;
    let depth: () => Promise<number> = async () => 7;
    m.watchPool(() => groups);
    m.watchEngine(async () => up);
    m.watchClusterQueue(() => depth());
    let s = parseExposition(await m.render());
    expect(valueOf(s, 'pybox_pool_warm_sandboxes', { runtime: 'runsc', memory_mb: '256', cpus: '1' })).toBe(2);
    expect(valueOf(s, 'pybox_pool_warm_sandboxes', { runtime: 'runsc', memory_mb: '512', cpus: '0.5' })).toBe(1);
    expect(valueOf(s, 'pybox_engine_up')).toBe(1);
    expect(valueOf(s, 'pybox_cluster_queue_depth')).toBe(7);
    // A configuration no longer warmed disappears; an engine that does not answer is 0; a queue
    // that cannot be read is NaN rather than shown as empty.
    groups = [groups[0] as (typeof groups)[number]];
    up = false;
    depth = async () => {
      throw new Error('redis away');
    };
    s = parseExposition(await m.render());
    expect(valueOf(s, 'pybox_pool_warm_sandboxes', { memory_mb: '512' })).toBeUndefined();
    expect(valueOf(s, 'pybox_engine_up')).toBe(0);
    expect(valueOf(s, 'pybox_cluster_queue_depth')).toBeNaN();
  });

  it('keeps nodes apart: each has a registry of its own', async () => {
    const a = new PrometheusMetrics({ tenantLabels: [] });
    const b = new PrometheusMetrics({ tenantLabels: [] });
    a.executionFinished({ status: 'completed', runtime: 'runc', durationMs: 100, queueWaitMs: 0 });
    expect(valueOf(parseExposition(await a.render()), 'pybox_executions_total', { status: 'completed' })).toBe(1);
    expect(valueOf(parseExposition(await b.render()), 'pybox_executions_total', { status: 'completed' })).toBeUndefined();
  });
});
