// The HTTP server around the app, with the settings that keep slow or silent clients from holding
// it: main.ts serves with it, and the security battery tests the same server.
//
// A client that disconnects aborts its request's signal (`c.req.raw.signal`): @hono/node-server
// aborts it when the response closes before it was finished, a half-closed request included. The
// routes pass it to the service, which cancels the execution (test/integration/lifecycle.test.ts).
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.ts';

export type ServerSettings = Pick<Config['server'], 'headersTimeoutMs' | 'requestTimeoutMs'>;

/**
 * Node checks its header and request timeouts only every `connectionsCheckingInterval` (30 s by
 * default), so a client sending its headers byte by byte was cut after up to 40 s, not 10 s. The
 * check runs at a fraction of the shorter timeout instead (at most every second).
 */
export function checkingIntervalMs(s: ServerSettings): number {
  return Math.max(100, Math.min(1000, Math.floor(Math.min(s.headersTimeoutMs, s.requestTimeoutMs) / 4)));
}

/** Serves the app; resolves once it listens, with the port it got. */
export function listen(app: Hono, host: string, port: number, settings: ServerSettings): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = serve({
      fetch: app.fetch,
      hostname: host,
      port,
      serverOptions: {
        // How long a client may take to send its headers, and its whole request (not the run: the
        // timer stops once the request is in, so a 300 s execution is not cut).
        headersTimeout: settings.headersTimeoutMs,
        requestTimeout: settings.requestTimeoutMs,
        connectionsCheckingInterval: checkingIntervalMs(settings),
      },
    }) as Server;
    server.once('error', reject);
    server.once('listening', () => {
      server.off('error', reject);
      resolve({ server, port: (server.address() as AddressInfo).port });
    });
  });
}

/**
 * Stops listening and ends the server's connections: idle keep-alive ones at once (a client that
 * holds one open would otherwise keep close() waiting for as long as it likes), busy ones once their
 * response is out, and whatever is still open after `lingerMs`. Resolves when all are closed.
 */
export function closeServer(server: Server, lingerMs = 1000): Promise<void> {
  return new Promise((resolve) => {
    let idle: NodeJS.Timeout | undefined;
    let cut: NodeJS.Timeout | undefined;
    const done = () => {
      clearInterval(idle);
      clearTimeout(cut);
      resolve();
    };
    // Called back once every connection has closed (with an error if it was not listening: same end).
    server.close(() => done());
    server.closeIdleConnections();
    // A connection becomes idle when its last response is written; close() does not watch for that.
    idle = setInterval(() => server.closeIdleConnections(), 50);
    idle.unref();
    cut = setTimeout(() => server.closeAllConnections(), lingerMs);
    cut.unref();
  });
}
