// Cancellation and the caller's deadline against the real engine, under each runtime: a running
// job whose signal aborts is stopped and its container removed; a start that cannot finish within
// the caller's timeoutMs does not keep the caller waiting past it.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import { silentLogger } from '../../src/core/logger.ts';
import type { RuntimeName } from '../../src/core/schemas.ts';
import { codeJob, type SandboxConfig, type SandboxJob } from '../../src/core/sandbox.ts';
import { sandboxSettings } from '../../src/compose.ts';
import { DockerEngine } from '../../src/engine/docker-engine.ts';
import { imageTags } from '../../src/engine/image.ts';
import { OnDemandSource, SandboxRunner, type SandboxSource } from '../../src/engine/run-sandbox.ts';
import { SandboxFactory, type Sandbox } from '../../src/engine/sandbox.ts';
import { labelledContainers, runtimesUnderTest } from '../support/real.ts';

const image = imageTags(join(import.meta.dirname, '../../images')).sandbox;
const runtimes = await runtimesUnderTest();

/** The on-demand source, keeping the last sandbox it handed out so the test can see its state. */
class Watched implements SandboxSource {
  last: Sandbox | undefined;
  constructor(private readonly inner: SandboxSource) {}
  acquire(config: SandboxConfig, jobId: string): Sandbox {
    this.last = this.inner.acquire(config, jobId);
    return this.last;
  }
  giveBack(sandbox: Sandbox): void {
    this.inner.giveBack(sandbox);
  }
  done(config: SandboxConfig): void {
    this.inner.done(config);
  }
}

describe.each(runtimes)('cancellation and deadlines under %s', (runtime: RuntimeName) => {
  const config = ConfigSchema.parse({});
  const instance = `test-${randomUUID().slice(0, 8)}`;
  let engine: DockerEngine;
  let factory: SandboxFactory;
  let source: Watched;
  let runner: SandboxRunner;

  beforeAll(() => {
    engine = new DockerEngine({ socketPath: config.engine.socketPath }, config.engine.apiTimeoutMs, { instance, logger: silentLogger });
    factory = new SandboxFactory(engine, { ...sandboxSettings(config), instance }, silentLogger, { now: () => Date.now() });
    source = new Watched(new OnDemandSource(factory));
    runner = new SandboxRunner(factory, source, { now: () => Date.now() });
  });

  afterAll(async () => {
    await runner?.drain();
    engine?.close();
    expect(await labelledContainers(instance)).toEqual([]);
  });

  const job = (code: string, limits: SandboxJob['limits'], signal?: AbortSignal): SandboxJob =>
    codeJob({ id: `cancel-${randomUUID()}`, image, runtime, code, limits, signal });

  it('a running time.sleep(30) whose signal aborts ends cancelled at once, with its output, and its container is gone', async () => {
    const ac = new AbortController();
    const pending = runner.run(job('print("before the sleep", flush=True)\nimport time\ntime.sleep(30)', { timeoutMs: 60_000, memoryMb: 256, cpus: 1 }, ac.signal));
    // Wait until the code runs, and a little for its first line to come out.
    for (let i = 0; i < 300 && source.last?.state !== 'running'; i++) await new Promise((r) => setTimeout(r, 50));
    expect(source.last?.state).toBe('running');
    await new Promise((r) => setTimeout(r, 500));
    const abortedAt = Date.now();
    ac.abort();
    const o = await pending;
    const took = Date.now() - abortedAt;
    expect(o.kind).toBe('cancelled');
    expect(o.stdout.text()).toBe('before the sleep\n');
    expect(took).toBeLessThan(3000); // not the 30 s of the sleep (about 1 s is the aim; the machine is shared)
    await runner.drain();
    expect(await labelledContainers(instance)).toEqual([]);
  }, 60_000);

  it('timeoutMs 3000 with almost no CPU ends as a timeout within about 4 s, sandbox start included', async () => {
    const started = Date.now();
    const o = await runner.run(job('print(1)', { timeoutMs: 3000, memoryMb: 256, cpus: 0.01 }));
    const took = Date.now() - started;
    expect(o.kind).toBe('timeout');
    expect(took).toBeLessThan(4500);
    if (o.durationMs === 0) expect(o.failure).toMatch(/still starting; the code did not run/);
    await runner.drain();
    expect(await labelledContainers(instance)).toEqual([]);
  }, 30_000);
});
