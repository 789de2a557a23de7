// `pybox doctor`: proves the isolation on this host, now, and prints a table of checks (exit code 1
// if any fails). By default it builds a pybox in-process from the same configuration the server
// uses (PYBOX_CONFIG, PYBOX_* and DOCKER_HOST) and runs the probes on the engine directly: it works
// on a freshly set-up machine with no server running, and tests exactly what a server started with
// that configuration would get. With --url (or PYBOX_URL) it asks a running server instead
// (GET /v1/doctor, with an admin key when keys exist): that server's own engine, image and settings.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Command } from 'commander';
import { composePybox } from '../../compose.ts';
import { loadConfig } from '../../config/load.ts';
import type { Config } from '../../config/schema.ts';
import { createLogger } from '../../core/logger.ts';
import type { DoctorReport } from '../../doctor/doctor.ts';
import { renderDoctor } from '../../doctor/render.ts';
import type { CliContext } from '../context.ts';

interface DoctorOptions {
  url?: string;
  key?: string;
  json?: boolean;
}

/** Runs the doctor in-process on a pybox of its own: its own instance name, no store, no warm pool. */
export async function localDoctor(env: Record<string, string | undefined>, imagesDir?: string): Promise<DoctorReport> {
  const loaded = loadConfig({ path: env.PYBOX_CONFIG ?? 'config/default.yaml', env });
  const config = structuredClone(loaded) as Config & { pool?: { enabled: boolean } };
  // Never the server's instance name: pybox's start-up reaper removes its instance's containers.
  config.engine.instance = `${loaded.engine.instance.slice(0, 40)}-doctor-${randomUUID().slice(0, 8)}`;
  config.store.path = ':memory:';
  if (config.pool) config.pool.enabled = false;
  const logger = createLogger(loaded.log.level === 'info' || loaded.log.level === 'debug' ? 'warn' : loaded.log.level, { format: loaded.log.format });
  const pybox = await composePybox(config, { dockerHost: env.DOCKER_HOST, logger, ...(imagesDir ? { imagesDir } : { imagesDir: join(process.cwd(), 'images') }) });
  try {
    return await pybox.doctor.run();
  } finally {
    await pybox.close();
  }
}

/** Asks a running server. */
export async function remoteDoctor(url: string, key: string | undefined): Promise<DoctorReport> {
  const res = await fetch(new URL('/v1/doctor', url), { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const body = (await res.json().catch(() => null)) as (DoctorReport & { error?: { code: string; message: string } }) | null;
  if (res.status === 401) throw new Error(`${url} wants an API key: pass --key or set PYBOX_API_KEY (an admin key)`);
  if (res.status === 404) throw new Error(`${url} has no /v1/doctor for this key: it needs an admin key`);
  if (!body || !Array.isArray(body.checks)) throw new Error(`${url}/v1/doctor answered ${res.status}${body?.error ? `: ${body.error.message}` : ''}`);
  return body;
}

export function registerDoctor(program: Command, ctx: CliContext): void {
  program
    .command('doctor')
    .description('prove the isolation on this host now: run probe sandboxes, print a table of checks, exit 1 if any fails')
    .option('--url <url>', 'check a running server instead (or PYBOX_URL): its own engine, image and settings')
    .option('--key <key>', 'API key for --url (or PYBOX_API_KEY); an admin key once keys exist')
    .option('--json', 'print the report as JSON')
    .action(async (opts: DoctorOptions) => {
      const url = opts.url ?? ctx.env.PYBOX_URL;
      const report = url ? await remoteDoctor(url, opts.key ?? ctx.env.PYBOX_API_KEY) : await localDoctor(ctx.env);
      if (opts.json) ctx.out(JSON.stringify(report, null, 2));
      else for (const line of renderDoctor(report)) ctx.out(line);
      process.exitCode = report.ok ? 0 : 1;
    });
}
