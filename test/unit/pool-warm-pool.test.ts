// The warm pool over a real SandboxRunner and a fake engine: single use, refill, idle shrink,
// backoff on failures, a configuration that cannot start, preloading, drain, and no container left behind.
import { afterEach, describe, expect, it } from 'vitest';
import type { SandboxConfig, SandboxJob } from '../../src/core/sandbox.ts';
import { SandboxRunner } from '../../src/engine/run-sandbox.ts';
import { SandboxFactory } from '../../src/engine/sandbox.ts';
import { FAILURES_BEFORE_PAUSE, PAUSE_MS, PRESSED_HOLD_MS, WarmPool, type PoolSettings } from '../../src/pool/warm-pool.ts';
import { testSandboxSettings, FakeEngine, ManualClock, RecordingLogger, reportFrame, runReport, type FakeContainerOptions } from './fakes.ts';

const config: SandboxConfig = { image: 'img', runtime: 'runc', memoryMb: 256, cpus: 1, preload: [] };
const settings = (over: Partial<PoolSettings> = {}): PoolSettings => ({
  enabled: true,
  size: { runc: 2, runsc: 1 },
  pressedSize: { runc: 2, runsc: 1 },
  idleMs: 60_000,
  maxConfigs: 2,
  preload: { runc: ['numpy'], runsc: [] },
  preloadMinMemoryMb: 192,
  ...over,
});

const pools: WarmPool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.drain();
});

function setup(over: Partial<PoolSettings> = {}, containers: FakeContainerOptions = {}) {
  const engine = new FakeEngine(containers);
  const clock = new ManualClock();
  const logger = new RecordingLogger();
  const factory = new SandboxFactory(
    engine,
    testSandboxSettings({ instance: 'pool-test', outputFilesMax: 1, outputFilesMaxBytes: 100, startTimeoutMs: 1000 }),
    logger,
    clock,
  );
  const pool = new WarmPool(factory, settings(over), logger, clock);
  pools.push(pool);
  const runner = new SandboxRunner(factory, pool, clock);
  return { engine, clock, logger, runner, pool, factory };
}

const job = (over: Partial<SandboxJob> = {}): SandboxJob => ({
  id: 'job',
  image: 'img',
  runtime: 'runc',
  code: 'print(1)',
  stdin: '',
  args: [],
  env: {},
  context: {},
  files: [],
  limits: { timeoutMs: 1000, memoryMb: 256, cpus: 1 },
  ...over,
});

const settle = () => new Promise((r) => setTimeout(r, 5));

/** Runs a job, answering as the runner would once the payload arrives. */
const answered = new WeakSet<object>();

async function runOnce(h: ReturnType<typeof setup>, over: Partial<SandboxJob> = {}) {
  const before = new Set(h.engine.containers);
  const pending = h.runner.run(job(over));
  for (let i = 0; i < 100; i++) {
    const used = h.engine.containers.find((c) => c.socket.writes.length > 0 && !answered.has(c));
    if (used) {
      answered.add(used);
      used.socket.send(reportFrame(runReport()));
      const outcome = await pending;
      return { outcome, container: used, wasWarm: before.has(used) };
    }
    await settle();
  }
  throw new Error('no sandbox received the payload');
}

describe('WarmPool', () => {
  it('fills a configuration to its size with ready sandboxes that preload the configured modules', async () => {
    const h = setup();
    h.pool.warm(config);
    await h.pool.filled(1, 2000);
    expect(h.engine.containers).toHaveLength(2);
    expect(h.pool.status()).toEqual([{ key: 'runc|img|256|1', ready: 2, preparing: 0, paused: false }]);
    expect(h.engine.specs[0]?.Env).toEqual(['PYBOX_PRELOAD=numpy']);
  });

  it('gives each sandbox to one run only, and refills after the run', async () => {
    const h = setup();
    h.pool.warm(config);
    await h.pool.filled(1, 2000);
    const first = await runOnce(h, { id: 'a' });
    const second = await runOnce(h, { id: 'b' });
    expect(first.outcome.kind).toBe('finished');
    expect(first.wasWarm).toBe(true);
    expect(second.wasWarm).toBe(true);
    expect(second.container).not.toBe(first.container);
    await h.runner.drain();
    expect(first.container.calls).toContain('removed');
    expect(second.container.calls).toContain('removed');
    // Each container got exactly one payload.
    for (const c of h.engine.containers) expect(c.socket.writes.length).toBeLessThanOrEqual(1);
    await h.pool.filled(1, 2000);
    expect(h.pool.status()[0]?.ready).toBe(2);
  });

  it('does not start the replacement while the run is going on', async () => {
    const h = setup({ size: { runc: 1, runsc: 1 } });
    h.pool.warm(config);
    await h.pool.filled(1, 2000);
    const pending = h.runner.run(job());
    await settle();
    expect(h.engine.containers).toHaveLength(1); // no refill yet: the run has the CPU
    h.engine.containers[0]!.socket.send(reportFrame(runReport()));
    await pending;
    await settle();
    expect(h.engine.containers).toHaveLength(2);
  });

  it('prepares a sandbox on the spot when none is warm, for a configuration not seen before', async () => {
    const h = setup();
    const r = await runOnce(h, { limits: { timeoutMs: 1000, memoryMb: 512, cpus: 1 } });
    expect(r.wasWarm).toBe(false);
    expect(r.outcome.kind).toBe('finished');
    await h.pool.filled(1, 2000); // the configuration is now in use and kept warm
    expect(h.pool.status().map((s) => s.key)).toEqual(['runc|img|512|1']);
  });

  it('discards a sandbox that dies while waiting, and backs off before retrying', async () => {
    const h = setup({ size: { runc: 1, runsc: 1 } });
    h.pool.warm(config);
    await h.pool.filled(1, 2000);
    h.engine.containers[0]!.socket.finish(); // the runner died while waiting
    await settle();
    await h.runner.drain();
    expect(h.engine.containers[0]!.calls).toContain('removed');
    expect(h.logger.entries.some((l) => l.msg.includes('could not be prepared'))).toBe(true);
    expect(h.pool.status()[0]?.ready ?? 0).toBe(0); // not yet: it waits for the backoff
  });

  it('backs off when the engine cannot create containers, instead of retrying in a loop', async () => {
    const h = setup();
    h.engine.createError = new Error('engine away');
    h.pool.warm(config);
    await new Promise((r) => setTimeout(r, 100));
    expect(h.engine.specs.length).toBe(2); // one attempt per slot, then the backoff holds
    expect(h.pool.status()).toEqual([{ key: 'runc|img|256|1', ready: 0, preparing: 0, paused: false }]);
  });

  it('empties a configuration that has been idle for idleMs', async () => {
    const h = setup();
    h.pool.warm(config);
    await h.pool.filled(1, 2000);
    h.clock.advance(59_000);
    h.pool.sweep();
    expect(h.pool.status()).toHaveLength(1);
    h.clock.advance(2_000);
    h.pool.sweep();
    expect(h.pool.status()).toHaveLength(0);
    await settle();
    await h.runner.drain();
    expect(h.engine.containers.every((c) => c.calls.includes('removed'))).toBe(true);
  });

  it('keeps at most maxConfigs configurations warm, dropping the least recently used', async () => {
    const h = setup({ maxConfigs: 2 });
    h.pool.warm({ ...config, memoryMb: 128 });
    h.clock.advance(1);
    h.pool.warm({ ...config, memoryMb: 256 });
    h.clock.advance(1);
    h.pool.warm({ ...config, memoryMb: 512 });
    expect(h.pool.status().map((s) => s.key).sort()).toEqual(['runc|img|256|1', 'runc|img|512|1']);
  });

  it('removes every warm sandbox when drained, and hands out none after', async () => {
    const h = setup();
    h.pool.warm(config);
    h.pool.warm({ ...config, runtime: 'runsc' });
    await h.pool.filled(1, 2000);
    await h.pool.drain();
    await h.runner.drain();
    expect(h.engine.containers).toHaveLength(3);
    expect(h.engine.containers.every((c) => c.calls.includes('removed'))).toBe(true);
    h.pool.warm(config); // nothing is started once drained
    h.pool.done(config);
    expect(h.engine.containers).toHaveLength(3);
  });

  it('is bypassed entirely when disabled', async () => {
    const h = setup({ enabled: false });
    h.pool.warm(config);
    expect(h.engine.containers).toHaveLength(0);
    const r = await runOnce(h);
    expect(r.wasWarm).toBe(false);
    await h.runner.drain();
    expect(h.engine.containers).toHaveLength(1);
  });
});

describe('WarmPool under sustained demand', () => {
  it('starts replacements without preloading while demand outruns it, and preloads again once full', async () => {
    const h = setup({ size: { runc: 1, runsc: 1 }, pressedSize: { runc: 1, runsc: 1 } });
    h.pool.warm(config);
    await h.pool.filled(1, 2000);
    expect(h.engine.specs[0]?.Env).toEqual(['PYBOX_PRELOAD=numpy']);
    // Two runs back to back: the second finds nothing ready.
    const first = h.runner.run(job({ id: 'a' }));
    const second = h.runner.run(job({ id: 'b' }));
    for (let i = 0; i < 200 && h.engine.containers.filter((c) => c.socket.writes.length > 0).length < 2; i++) await settle();
    for (const c of h.engine.containers.filter((c) => c.socket.writes.length > 0)) c.socket.send(reportFrame(runReport()));
    await Promise.all([first, second]);
    await h.pool.filled(1, 2000);
    const leanSpecs = h.engine.specs.slice(1).filter((s) => (s.Env ?? []).length === 0);
    expect(leanSpecs.length).toBeGreaterThan(0); // prepared lean while pressed
    // Full again: the next replacement preloads.
    await runOnce(h, { id: 'c' });
    await h.pool.filled(1, 2000);
    expect(h.engine.specs.at(-1)?.Env).toEqual(['PYBOX_PRELOAD=numpy']);
  });
});

describe('WarmPool after a burst', () => {
  it('starts lean after a take found it empty, and preloads again once none has for a while', async () => {
    const h = setup({ size: { runc: 1, runsc: 1 }, pressedSize: { runc: 1, runsc: 1 } });
    // The first take finds nothing: pressed, so its replacement starts lean.
    const first = h.runner.run(job({ id: 'a' }));
    for (let i = 0; i < 200 && !h.engine.containers.some((c) => c.socket.writes.length > 0); i++) await settle();
    h.engine.containers.find((c) => c.socket.writes.length > 0)?.socket.send(reportFrame(runReport()));
    await first;
    await h.pool.filled(1, 2000);
    expect(h.engine.specs.at(-1)?.Env).toEqual([]);
    // No take found it empty for PRESSED_HOLD_MS: replacements preload again.
    h.clock.advance(PRESSED_HOLD_MS);
    await runOnce(h, { id: 'c' });
    await h.pool.filled(1, 2000);
    expect(h.engine.specs.at(-1)?.Env).toEqual(['PYBOX_PRELOAD=numpy']);
  });
});

describe('WarmPool and a configuration that cannot start', () => {
  it(`stops warming after ${FAILURES_BEFORE_PAUSE} failed preparations, logs it once, and serves runs cold with the real error`, async () => {
    const h = setup({ size: { runc: FAILURES_BEFORE_PAUSE, runsc: 1 } });
    h.engine.createError = new Error('engine away');
    h.pool.warm(config);
    await settle();
    expect(h.engine.specs).toHaveLength(FAILURES_BEFORE_PAUSE);
    expect(h.pool.status()[0]?.paused).toBe(true);
    const pausedLogs = () => h.logger.at('warn').filter((l) => l.msg.startsWith('warm pool: stopped warming'));
    expect(pausedLogs()).toHaveLength(1);
    // No more background attempts: not after the backoff, not after a run, not when warmed again.
    h.clock.advance(60_000);
    await new Promise((r) => setTimeout(r, 600));
    h.pool.warm(config);
    h.pool.done(config);
    expect(h.engine.specs).toHaveLength(FAILURES_BEFORE_PAUSE);
    // A run still gets a sandbox of its own, and fails with what really went wrong.
    await expect(h.runner.run(job())).rejects.toThrow('engine away');
    expect(h.engine.specs).toHaveLength(FAILURES_BEFORE_PAUSE + 1);
    expect(pausedLogs()).toHaveLength(1);
  });

  it('counts sandboxes that die before they are ready, and warms again once a run of it starts', async () => {
    const containers: FakeContainerOptions = { dieAtStart: true, waitResult: 1 };
    const h = setup({ size: { runc: FAILURES_BEFORE_PAUSE, runsc: 1 } }, containers);
    h.pool.warm(config);
    await settle();
    await h.runner.drain();
    expect(h.pool.status()[0]?.paused).toBe(true);
    expect(h.engine.containers.every((c) => c.calls.includes('removed'))).toBe(true);
    // The cause goes away (say, a limit raised by the operator): a cold run succeeds, warming resumes.
    containers.dieAtStart = false;
    const pending = h.runner.run(job());
    const container = await (async () => {
      for (let i = 0; i < 100; i++) {
        const c = h.engine.containers.find((x) => x.socket.writes.length > 0);
        if (c) return c;
        await settle();
      }
      throw new Error('no payload sent');
    })();
    container.socket.send(reportFrame(runReport()));
    expect((await pending).kind).toBe('finished');
    expect(h.pool.status()[0]?.paused).toBe(false);
    expect(h.logger.at('info').map((l) => l.msg)).toContain('warm pool: a configuration starts again; warming it');
    await h.pool.filled(1, 2000); // warmed again, without a restart
    expect(h.pool.status()[0]?.ready).toBe(FAILURES_BEFORE_PAUSE);
  });

  it('tries again after the quiet period, and pauses at the next failure', async () => {
    const h = setup({ size: { runc: FAILURES_BEFORE_PAUSE, runsc: 1 } });
    h.engine.createError = new Error('engine away');
    h.pool.warm(config);
    await settle();
    expect(h.pool.status()[0]?.paused).toBe(true);
    h.clock.advance(PAUSE_MS + 1);
    h.pool.warm(config);
    await settle();
    expect(h.engine.specs).toHaveLength(2 * FAILURES_BEFORE_PAUSE);
    expect(h.pool.status()[0]?.paused).toBe(true);
  });
});

describe('WarmPool: preloading and pressure', () => {
  it(`preloads only in configurations with at least preloadMinMemoryMb`, async () => {
    const h = setup({ size: { runc: 1, runsc: 1 }, preloadMinMemoryMb: 192 });
    h.pool.warm({ ...config, memoryMb: 128 });
    h.pool.warm({ ...config, memoryMb: 192 });
    await h.pool.filled(1, 2000);
    const envOf = (mem: number) => h.engine.specs.find((s) => s.HostConfig?.Memory === mem * 1024 * 1024)?.Env;
    expect(envOf(128)).toEqual([]);
    expect(envOf(192)).toEqual(['PYBOX_PRELOAD=numpy']);
  });

  it('when a take finds nothing ready, starts several at once (up to pressedSize), lean', async () => {
    const h = setup({ size: { runc: 1, runsc: 1 }, pressedSize: { runc: 3, runsc: 1 } });
    const pending = h.runner.run(job()); // nothing warm yet: a cold start, and the group is pressed
    await settle();
    // The job's own sandbox, and the group's replacements started at the take, not after the run.
    expect(h.engine.specs).toHaveLength(4);
    expect(h.engine.specs.every((s) => (s.Env ?? []).length === 0)).toBe(true);
    const c = h.engine.containers.find((x) => x.socket.writes.length > 0);
    c?.socket.send(reportFrame(runReport()));
    expect((await pending).kind).toBe('finished');
  });

  it('a job cancelled while it waits for a pooled sandbox gives it back to the pool', async () => {
    const h = setup({ size: { runc: 1, runsc: 1 }, pressedSize: { runc: 1, runsc: 1 } }, { neverReady: true });
    h.pool.warm(config);
    await settle();
    expect(h.engine.specs).toHaveLength(1);
    const ac = new AbortController();
    h.clock.advance(100);
    const pending = h.runner.run(job({ signal: ac.signal })); // takes the one still preparing
    await settle();
    expect(h.engine.specs).toHaveLength(2); // pressed: its replacement starts at the take
    ac.abort();
    expect((await pending).kind).toBe('cancelled');
    await settle();
    // The older one, nearer to ready, is kept; the younger replacement goes.
    expect(h.pool.status()[0]).toMatchObject({ ready: 0, preparing: 1 });
    expect(h.engine.containers[0]?.calls).not.toContain('remove');
    expect(h.engine.containers[1]?.calls).toContain('remove');
  });
});
