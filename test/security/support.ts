// The security battery's harness. Every case gets a pybox of its own (its own engine instance,
// store and HTTP server on loopback, built by the same code main.ts uses) so that what the case
// leaves behind can be judged exactly, even while other cases and other test files run at once.
//
// After every case, whatever it did:
//   - the service still answers: /healthz 200, /readyz 200 and ready;
//   - the next normal execution succeeds;
//   - once pybox is closed: no container of the case's instance exists, no host process mentions
//     one of its containers or the case's marker (runc's and gVisor's processes included: runsc
//     names its sandbox and gofer after the container), no cgroup of its containers is left;
//   - nothing new is on the host's disk: no file whose path carries the case's marker, and no file
//     over 8 MiB written since the case began, in /tmp, /var/tmp, /dev/shm or the engine's
//     container directory.
import { existsSync, readdirSync, readFileSync, lstatSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ConfigSchema, type Config } from '../../src/config/schema.ts';
import { ExecutionResult, type RuntimeName } from '../../src/core/schemas.ts';
import { listen } from '../../src/server.ts';
import { docker, labelledContainers, realPybox, type RealPybox } from '../support/real.ts';

export { runtimesUnderTest } from '../support/real.ts';

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };
export type ConfigOverrides = DeepPartial<Config>;

/** Small limits keep the battery fast; each case may override them. */
export function batteryConfig(overrides: ConfigOverrides = {}): ConfigOverrides {
  const base: Record<string, unknown> = {
    limits: {
      // The time limit bounds a cold start too, and the battery's cases start sandboxes side by side
      // (fork bombs among them): room for a slow gVisor start, so a check sees what the code did.
      defaults: { timeoutMs: 20_000, memoryMb: 128, cpus: 1 },
      max: { timeoutMs: 30_000, memoryMb: 512, cpus: 2 },
    },
    concurrency: { maxConcurrent: 4, maxQueue: 16, retryAfterS: 2 },
  };
  // No warm sandboxes unless a case asks: what a case leaves is then exactly its own runs'.
  if ('pool' in ConfigSchema.shape) base.pool = { enabled: false };
  return merge(base, overrides as Record<string, unknown>) as ConfigOverrides;
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev)
        ? merge(prev as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

export interface Case {
  runtime: RuntimeName;
  pybox: RealPybox;
  /** http://127.0.0.1:<port> of this case's server. */
  url: string;
  /** A string unique to this case: hostile programs put it in names and contents, the host is searched for it. */
  marker: string;
  /** POSTs an execution over HTTP and expects 200 and a valid result. */
  run(body: Record<string, unknown>): Promise<ExecutionResult>;
  /** Any request over HTTP. A body that is not a string is sent as JSON. */
  request(path: string, init?: { method?: string; body?: unknown; headers?: Record<string, string> }): Promise<Reply>;
  /** Ids of every container this case's pybox created so far. */
  containers(): string[];
  /** Sends this Authorization header with every request from now on (the after-checks too). */
  authorize(header: string | null): void;
}

export interface CaseOptions {
  config?: ConfigOverrides;
  timeoutMs?: number;
  /** false: the case runs alone, not beside the file's other cases. */
  concurrent?: boolean;
  /**
   * A warm sandbox of the default configuration is ready before the case starts. The time limit is
   * the caller's whole budget, a cold start included: a case that checks what the code did up to
   * its limit wants all of the limit to be the code's.
   */
  warm?: boolean;
}

/** Registers a case for one runtime: `sec(name, body)` inside a describe. Cases run concurrently. */
export function battery(runtime: RuntimeName) {
  return (name: string, body: (c: Case) => Promise<void>, opts: CaseOptions = {}) => {
    (opts.concurrent === false ? it : it.concurrent)(name, () => runCase(runtime, body, opts), opts.timeoutMs ?? 90_000);
  };
}

export async function runCase(runtime: RuntimeName, body: (c: Case) => Promise<void>, opts: CaseOptions = {}): Promise<void> {
  const marker = `pyboxsec${randomUUID().replace(/-/g, '').slice(0, 16)}`;
  const instance = `sec-${marker.slice(8, 20)}`;
  const startedAt = Date.now();
  const created = await watchCreates(instance);
  let pybox: RealPybox | undefined;
  let served: { server: Server; port: number } | undefined;
  try {
    const warm = opts.warm ? { pool: { enabled: true, size: { runc: 1, runsc: 1 }, preload: { runc: [], runsc: [] } } } : {};
    pybox = await realPybox(runtime, merge(merge(batteryConfig(opts.config), warm), { engine: { instance } }) as ConfigOverrides);
    if (opts.warm) await pybox.pool.filled();
    served = await listen(pybox.app, '127.0.0.1', 0, pybox.config.server);
    const url = `http://127.0.0.1:${served.port}`;
    let authorization: string | null = null;
    const request = (path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
      httpRequest(url, path, authorization === null ? init : { ...init, headers: { authorization, ...init.headers } });
    const c: Case = {
      runtime,
      pybox,
      url,
      marker,
      request,
      containers: () => [...created.ids],
      authorize: (header) => {
        authorization = header;
      },
      async run(b) {
        const res = await request('/v1/executions', { method: 'POST', body: b });
        expect(res.status, res.text.slice(0, 2000)).toBe(200);
        return ExecutionResult.parse(res.json);
      },
    };
    await body(c);

    // The service still answers, and the next normal execution succeeds.
    expect((await request('/healthz')).status).toBe(200);
    const ready = await request('/readyz');
    expect(ready.status, ready.text).toBe(200);
    expect(ready.json).toMatchObject({ ready: true });
    const next = await c.run({ code: 'print("still fine")' });
    expect(next.status, next.stderr + JSON.stringify(next.error)).toBe('completed');
    expect(next.stdout).toBe('still fine\n');
  } finally {
    if (served) await closeServer(served.server);
    if (pybox) await pybox.dispose(); // waits for runs and removals; fails if a container is left
    created.stop();
  }
  await expectHostClean(instance, marker, [...created.ids], startedAt);
}

export async function httpRequest(url: string, path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...init.headers };
  let body: string | undefined;
  if (init.body !== undefined) {
    body = typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await fetch(url + path, { method: init.method ?? (body === undefined ? 'GET' : 'POST'), headers, body });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: res.status, headers: res.headers, text, json };
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

/** Collects the ids of containers created with this instance's label, from the engine's events. */
async function watchCreates(instance: string): Promise<{ ids: Set<string>; stop(): void }> {
  const ids = new Set<string>();
  const stream = (await docker.getEvents({
    filters: { type: ['container'], event: ['create'], label: [`pybox.instance=${instance}`] },
  })) as NodeJS.ReadableStream & { destroy?: () => void };
  let pending = '';
  stream.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const e = JSON.parse(line) as { id?: string; Actor?: { ID?: string } };
        const id = e.Actor?.ID ?? e.id;
        if (id) ids.add(id);
      } catch {
        // not an event
      }
    }
  });
  stream.on('error', () => {});
  return { ids, stop: () => stream.destroy?.() };
}

/** Host processes whose command line contains one of the needles. */
export function hostProcessesMentioning(needles: string[]): string[] {
  if (needles.length === 0) return [];
  const found: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (needles.some((n) => cmd.includes(n))) found.push(`${pid}: ${cmd.slice(0, 200)}`);
  }
  return found;
}

const SCANNED = ['/tmp', '/var/tmp', '/dev/shm', '/var/lib/docker/containers'];
const BIG_FILE = 8 * 1024 * 1024;

/** Files under the scanned places whose path has the marker, or that are big and new. */
export function hostFilesLeft(marker: string, sinceMs: number): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (name === 'node_modules' || name === '.git') continue;
      const full = join(dir, name);
      let st;
      try {
        st = lstatSync(full);
      } catch {
        continue;
      }
      if (full.includes(marker)) found.push(full);
      else if (st.isFile() && st.size > BIG_FILE && st.mtimeMs >= sinceMs && !/\.db(-wal|-shm)?$/.test(name)) found.push(`${full} (${st.size} bytes, new)`);
      if (st.isDirectory() && depth < 6) walk(full, depth + 1);
    }
  };
  for (const root of SCANNED) walk(root, 0);
  return found;
}

async function expectHostClean(instance: string, marker: string, ids: string[], sinceMs: number): Promise<void> {
  expect(await labelledContainers(instance), 'containers of the case left on the engine').toEqual([]);
  // gVisor's sandbox and gofer exit a moment after their container is removed.
  let procs: string[] = [];
  let cgroups: string[] = [];
  for (let i = 0; i < 50; i++) {
    procs = hostProcessesMentioning([marker, ...ids]);
    cgroups = ids.filter((id) => existsSync(`/sys/fs/cgroup/pids/docker/${id}`) || existsSync(`/sys/fs/cgroup/memory/docker/${id}`));
    if (procs.length === 0 && cgroups.length === 0) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  expect(procs, 'host processes of the case left').toEqual([]);
  expect(cgroups, 'cgroups of the case left').toEqual([]);
  expect(hostFilesLeft(marker, sinceMs), 'files of the case on the host').toEqual([]);
}

/** Python source that prints one JSON object: `out` is filled by the body. */
export function py(body: string): string {
  return `import json, os, sys, errno\nout = {}\n${body}\nprint(json.dumps(out))\n`;
}

/** The errno name of an OSError raised by fn, 'ok' if none, 'exc:<type>' for anything else (Python helper source). */
export const PY_ATTEMPT = `
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    except BaseException as e:
        return "exc:" + type(e).__name__
`;

/** Parses the JSON line a py() program printed last. */
export function outOf(r: ExecutionResult): Record<string, unknown> {
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`no JSON in stdout (status ${r.status}): ${r.stdout.slice(0, 500)} | ${r.stderr.slice(0, 1500)}`);
  }
}
