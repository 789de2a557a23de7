// Serves a pybox app on a free loopback port, for tests that need a real URL (client, MCP, agents).
import { spawn, type ChildProcess } from 'node:child_process';
import { serve } from '@hono/node-server';
import { createServer, type AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Hono } from 'hono';

export interface Served {
  url: string;
  close(): Promise<void>;
}

export async function serveApp(app: Hono): Promise<Served> {
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server)) as Server;
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}

/** A TCP port free on loopback right now (for a server started in a child process). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** pybox's own server (`src/main.ts`) in a child process, as `npm start` runs it. */
export interface ServiceProcess {
  child: ChildProcess;
  /** Everything it has printed so far, stdout and stderr. */
  readonly log: string;
  exited: Promise<number | null>;
  /** Waits until it says where it listens, checking every 100 ms at most `tries` times. */
  listening(tries?: number): Promise<void>;
}

export function startService(root: string, env: NodeJS.ProcessEnv): ServiceProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    exited,
    get log() {
      return log;
    },
    async listening(tries = 150) {
      for (let i = 0; i < tries && !log.includes('pybox listening'); i++) await new Promise((r) => setTimeout(r, 100));
    },
  };
}
