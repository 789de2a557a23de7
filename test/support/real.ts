// Fixtures for tests against the real engine: a real pybox (engine, image, store, HTTP app) built
// by the same composition code main.ts uses, with a temporary store and a chosen runtime.
import Docker from 'dockerode';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { composePybox, sandboxSettings, type Pybox } from '../../src/compose.ts';
import { DockerEngine } from '../../src/engine/docker-engine.ts';
import { OnDemandSource, SandboxRunner } from '../../src/engine/run-sandbox.ts';
import { SandboxFactory } from '../../src/engine/sandbox.ts';
import { ConfigSchema, type Config } from '../../src/config/schema.ts';
import { silentLogger } from '../../src/core/logger.ts';
import type { RuntimeName } from '../../src/core/schemas.ts';

export const docker = new Docker();

/** The runtimes the engine offers. In CI both must be there: a missing gVisor is a failure, not a skip. */
export async function runtimesUnderTest(): Promise<RuntimeName[]> {
  const info = (await docker.info()) as { Runtimes?: Record<string, unknown> };
  const names = Object.keys(info.Runtimes ?? {});
  const list: RuntimeName[] = ['runc'];
  if (names.includes('runsc')) list.push('runsc');
  else if (process.env.CI) throw new Error('gVisor (runsc) is not registered with the engine; setup should have done it');
  return list;
}

export interface RealPybox extends Pybox {
  dir: string;
  config: Config;
  /** Closes pybox and removes its temporary store. */
  dispose(): Promise<void>;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export async function realPybox(runtime: RuntimeName, overrides: DeepPartial<Config> = {}, dir?: string): Promise<RealPybox> {
  const storeDir = dir ?? mkdtempSync(join(tmpdir(), 'pybox-test-'));
  const config = ConfigSchema.parse({
    ...overrides,
    // Test files run in parallel against one engine: each pybox is its own instance, so one
    // file's start-up reaper never removes another file's live sandboxes.
    engine: { instance: `test-${randomUUID().slice(0, 8)}`, ...overrides.engine, runtime },
    store: { ...overrides.store, path: join(storeDir, 'pybox.db') },
  });
  const pybox = await composePybox(config, { logger: silentLogger, imagesDir: join(import.meta.dirname, '../../images') });
  return {
    ...pybox,
    dir: storeDir,
    config,
    async dispose() {
      try {
        await pybox.close();
        const left = await labelledContainers(config.engine.instance);
        if (left.length > 0) throw new Error(`pybox instance ${config.engine.instance} left ${left.length} container(s) behind`);
      } finally {
        if (!dir) rmSync(storeDir, { recursive: true, force: true });
      }
    },
  };
}

/** Sandbox containers on the engine: of one pybox instance, or of every one. */
export async function labelledContainers(instance?: string): Promise<string[]> {
  const label = ['pybox.execution', ...(instance ? [`pybox.instance=${instance}`] : [])];
  const list = await docker.listContainers({ all: true, filters: { label } });
  return list.map((c) => c.Id);
}

export async function postJson(app: Pybox['app'], path: string, body: unknown): Promise<{ status: number; json: unknown; text: string }> {
  const res = await app.request(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: res.status, json, text };
}

/**
 * pybox's own sandbox code over the real engine with no pool and no service: each run gets a
 * sandbox started for it. `start()` in beforeAll, `stop()` in afterAll (it checks nothing is left).
 */
export function directRunner(config: Config): { readonly runner: SandboxRunner; start(): void; stop(): Promise<void> } {
  const instance = `test-${randomUUID().slice(0, 8)}`;
  let engine: DockerEngine | undefined;
  let runner: SandboxRunner | undefined;
  const clock = { now: () => Date.now() };
  return {
    get runner() {
      if (!runner) throw new Error('directRunner: start() it first');
      return runner;
    },
    start() {
      engine = new DockerEngine({ socketPath: config.engine.socketPath }, config.engine.apiTimeoutMs, { instance, logger: silentLogger });
      const factory = new SandboxFactory(engine, { ...sandboxSettings(config), instance }, silentLogger, clock);
      runner = new SandboxRunner(factory, new OnDemandSource(factory), clock);
    },
    async stop() {
      await runner?.drain();
      engine?.close();
      const left = await labelledContainers(instance);
      if (left.length > 0) throw new Error(`sandboxes of ${instance} left behind: ${left.length}`);
    },
  };
}
