// The HTTP server around the app, with the settings that keep slow or silent clients from holding
// it: main.ts serves with it, and the security battery tests the same server.
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
