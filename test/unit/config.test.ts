import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.ts';
import { ConfigSchema } from '../../src/config/schema.ts';
import { MIN_CPUS, MIN_MEMORY_MB, MIN_TIMEOUT_MS } from '../../src/core/limits.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pybox-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function file(yaml: string): string {
  const path = join(dir, 'config.yaml');
  writeFileSync(path, yaml);
  return path;
}

function loadError(path: string, env: Record<string, string | undefined> = {}): string {
  try {
    loadConfig({ path, env });
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  throw new Error('loadConfig accepted a bad configuration');
}

describe('loadConfig', () => {
  it('reads config/default.yaml to exactly the schema defaults', () => {
    expect(loadConfig({ path: 'config/default.yaml', env: {} })).toEqual(ConfigSchema.parse({}));
  });

  it('treats an empty file as all defaults and fills in settings a file leaves out', () => {
    expect(loadConfig({ path: file(''), env: {} })).toEqual(ConfigSchema.parse({}));
    const partial = loadConfig({ path: file('server:\n  port: 9000\n'), env: {} });
    expect(partial.server.port).toBe(9000);
    expect(partial.server.host).toBe('127.0.0.1');
    expect(partial.store).toEqual(ConfigSchema.parse({}).store);
  });

  it('lays every environment override over the file, converting integers', () => {
    const path = file('server:\n  host: 10.0.0.1\n  port: 9000\nlog:\n  level: warn\n');
    const config = loadConfig({
      path,
      env: {
        PYBOX_HOST: '0.0.0.0',
        PYBOX_PORT: '8181',
        PYBOX_DB: '/data/x.db',
        PYBOX_RUNTIME: 'runsc',
        PYBOX_IMAGE: 'python:3.12-slim',
        PYBOX_INSTANCE: 'pybox-worker-1',
        PYBOX_MAX_CONCURRENT: '16',
        PYBOX_LOG_LEVEL: 'debug',
      },
    });
    expect(config.server.host).toBe('0.0.0.0');
    expect(config.server.port).toBe(8181);
    expect(config.store.path).toBe('/data/x.db');
    expect(config.engine.runtime).toBe('runsc');
    expect(config.engine.image).toBe('python:3.12-slim');
    expect(config.engine.instance).toBe('pybox-worker-1');
    expect(config.concurrency.maxConcurrent).toBe(16);
    expect(config.log.level).toBe('debug');
  });

  it('ignores environment variables that are not overrides', () => {
    const config = loadConfig({ path: 'config/default.yaml', env: { PORT: '1', PYBOX_QUEUE: '7', PYBOX_CONFIG: 'elsewhere.yaml' } });
    expect(config).toEqual(ConfigSchema.parse({}));
  });

  it('names the environment variable when a numeric override is not an integer', () => {
    expect(loadError('config/default.yaml', { PYBOX_PORT: 'eighty' })).toMatch(/PYBOX_PORT must be an integer, got "eighty"/);
    expect(loadError('config/default.yaml', { PYBOX_MAX_CONCURRENT: '2.5' })).toMatch(/PYBOX_MAX_CONCURRENT must be an integer/);
    expect(loadError('config/default.yaml', { PYBOX_PORT: '' })).toMatch(/PYBOX_PORT must be an integer/);
  });

  it('names every bad setting by its dotted path', () => {
    const message = loadError(file('server:\n  port: -1\nlog:\n  level: loud\nlimits:\n  max:\n    timeoutMs: 1000\n    memoryMb: 64\n    cpus: 1\n'));
    expect(message).toMatch(/invalid setting server\.port: Too small/);
    expect(message).toMatch(/invalid setting log\.level: /);
    expect(message).toMatch(/invalid setting limits: limits\.defaults must not exceed limits\.max/);
  });

  it('says which environment variable set a value that is out of range', () => {
    expect(loadError('config/default.yaml', { PYBOX_PORT: '70000' })).toMatch(/invalid setting server\.port \(from PYBOX_PORT\): Too big/);
    expect(loadError('config/default.yaml', { PYBOX_RUNTIME: 'kata' })).toMatch(/invalid setting engine\.runtime \(from PYBOX_RUNTIME\)/);
  });

  it('stops start-up on a default or maximum below the floors a sandbox needs, naming the setting and the floor', () => {
    const message = loadError(
      file(`limits:\n  defaults:\n    timeoutMs: 50\n    memoryMb: 32\n    cpus: 0.05\n  max:\n    timeoutMs: 1000\n    memoryMb: ${MIN_MEMORY_MB - 1}\n    cpus: 0.09\n`),
    );
    expect(message).toContain(`invalid setting limits.defaults.timeoutMs: must be at least ${MIN_TIMEOUT_MS}`);
    expect(message).toContain(`invalid setting limits.defaults.memoryMb: must be at least ${MIN_MEMORY_MB}`);
    expect(message).toContain(`invalid setting limits.defaults.cpus: must be at least ${MIN_CPUS}`);
    expect(message).toContain(`invalid setting limits.max.memoryMb: must be at least ${MIN_MEMORY_MB}`);
    expect(message).toContain(`invalid setting limits.max.cpus: must be at least ${MIN_CPUS}`);
  });

  it('accepts limits exactly at the floors', () => {
    const floors = `    timeoutMs: ${MIN_TIMEOUT_MS}\n    memoryMb: ${MIN_MEMORY_MB}\n    cpus: ${MIN_CPUS}\n`;
    const config = loadConfig({ path: file(`limits:\n  defaults:\n${floors}  max:\n${floors}`), env: {} });
    expect(config.limits.max).toEqual({ timeoutMs: MIN_TIMEOUT_MS, memoryMb: MIN_MEMORY_MB, cpus: MIN_CPUS });
  });

  it('preloads numpy and pandas in warm sandboxes under both runtimes by default', () => {
    expect(ConfigSchema.parse({}).pool.preload).toEqual({ runc: ['numpy', 'pandas'], runsc: ['numpy', 'pandas'] });
  });

  it('rejects unknown keys, naming them', () => {
    const message = loadError(file('server:\n  prot: 8080\ncolour: blue\n'));
    expect(message).toMatch(/unknown setting server\.prot/);
    expect(message).toMatch(/unknown setting colour/);
  });

  it('names the path of a missing file', () => {
    const path = join(dir, 'nope.yaml');
    expect(loadError(path)).toBe(`config file not found: ${path} (resolved to ${path})`);
  });

  it('names the file when it is not YAML or not a mapping', () => {
    const broken = file('server: [unclosed\n');
    expect(loadError(broken)).toMatch(new RegExp(`^config file ${broken} is not valid YAML`));
    expect(loadError(file('- just\n- a list\n'))).toMatch(/must be a mapping of settings/);
  });
});
