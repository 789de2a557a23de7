// Serves a pybox app on a free loopback port, for tests that need a real URL (client, MCP, agents).
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
