// Reads the YAML config, lays the environment overrides over it and validates the result, so a
// bad setting stops start-up with a message that names it instead of surfacing later at runtime.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigSchema, type Config } from './schema.ts';

type Override = { env: string; section: string; key: string; integer: boolean };

/** The only settings the environment may override (README documents the same table). */
const ENV_OVERRIDES: readonly Override[] = [
  { env: 'PYBOX_HOST', section: 'server', key: 'host', integer: false },
  { env: 'PYBOX_PORT', section: 'server', key: 'port', integer: true },
  { env: 'PYBOX_DB', section: 'store', key: 'path', integer: false },
  { env: 'PYBOX_RUNTIME', section: 'engine', key: 'runtime', integer: false },
  { env: 'PYBOX_IMAGE', section: 'engine', key: 'image', integer: false },
  // Deployments sharing one engine need different names, or one's start-up reaper removes the other's sandboxes.
  { env: 'PYBOX_INSTANCE', section: 'engine', key: 'instance', integer: false },
  { env: 'PYBOX_MAX_CONCURRENT', section: 'concurrency', key: 'maxConcurrent', integer: true },
  { env: 'PYBOX_LOG_LEVEL', section: 'log', key: 'level', integer: false },
  { env: 'PYBOX_LOG_FORMAT', section: 'log', key: 'format', integer: false },
  { env: 'PYBOX_ROLE', section: 'cluster', key: 'role', integer: false },
  { env: 'PYBOX_POSTGRES_URL', section: 'cluster', key: 'postgresUrl', integer: false },
  { env: 'PYBOX_REDIS_URL', section: 'cluster', key: 'redisUrl', integer: false },
  { env: 'PYBOX_NODE_ID', section: 'cluster', key: 'nodeId', integer: false },
  { env: 'PYBOX_WORKER_SLOTS', section: 'cluster', key: 'workerSlots', integer: true },
];

export function loadConfig(opts: { path: string; env: Record<string, string | undefined> }): Config {
  const fromFile = readConfigFile(opts.path);
  const applied = new Map<string, string>(); // dotted setting -> env var that set it
  const merged = applyEnv(fromFile, opts.env, applied);
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) throw new Error(configErrorMessage(parsed.error, opts.path, applied));
  return parsed.data;
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`config file not found: ${path} (resolved to ${resolve(path)})`);
    throw new Error(`cannot read config file ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new Error(`config file ${path} is not valid YAML: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (doc === null || doc === undefined) return {}; // an empty file means "all defaults"
  if (!isPlainObject(doc)) throw new Error(`config file ${path} must be a mapping of settings`);
  return doc;
}

function applyEnv(config: Record<string, unknown>, env: Record<string, string | undefined>, applied: Map<string, string>) {
  const out: Record<string, unknown> = { ...config };
  for (const o of ENV_OVERRIDES) {
    const raw = env[o.env];
    if (raw === undefined) continue;
    let value: string | number = raw;
    if (o.integer) {
      if (!/^[+-]?\d+$/.test(raw.trim())) throw new Error(`environment variable ${o.env} must be an integer, got ${JSON.stringify(raw)}`);
      value = Number(raw.trim());
    }
    const section = out[o.section];
    // A section that is present but not a mapping is left alone: the schema reports it by name.
    if (section !== undefined && !isPlainObject(section)) continue;
    out[o.section] = { ...section, [o.key]: value };
    applied.set(`${o.section}.${o.key}`, o.env);
  }
  return out;
}

/** One line per bad setting, each naming it by its dotted path (and the env var, if one set it). */
export function configErrorMessage(error: z.ZodError, path: string, applied: ReadonlyMap<string, string> = new Map()): string {
  const lines = error.issues.flatMap((issue) => {
    const at = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => `unknown setting ${at === '' ? k : `${at}.${k}`}`);
    }
    const source = applied.get(at);
    return [`invalid setting ${at === '' ? '(root)' : at}${source ? ` (from ${source})` : ''}: ${issue.message}`];
  });
  return `invalid configuration (${path}):\n  ${lines.join('\n  ')}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
