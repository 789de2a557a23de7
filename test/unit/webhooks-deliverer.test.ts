// The webhook deliverer against real HTTP(S) receivers on loopback addresses and an in-memory
// outbox: signed calls, retries with backoff (time moved by a manual clock), no redirects, timeouts,
// refused addresses never connected to, DNS answers pinned (rebinding), capped answers, stop.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WebhookDelivery, WebhookSecrets } from '../../src/core/ports.ts';
import { AddressPolicy, type ResolvedAddress, type Resolver } from '../../src/webhooks/address-policy.ts';
import { retryDelayMs, WebhookDeliverer, type SettledState, type WebhookDelivererDeps } from '../../src/webhooks/deliverer.ts';
import { encodeWebhookSecret, verifyWebhook } from '../../src/webhooks/signature.ts';
import { httpTransport, type WebhookTransport } from '../../src/webhooks/transport.ts';
import { MemoryOutbox } from '../support/memory-outbox.ts';
import { ManualClock, RecordingLogger } from './fakes.ts';

// ---- receivers ---------------------------------------------------------------------------------

interface Received {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  servername: string | null;
}

type Handler = (req: Received, res: ServerResponse, index: number) => void;

class Receiver {
  readonly requests: Received[] = [];
  connections = 0;
  open = 0;
  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
    readonly scheme: 'http' | 'https',
  ) {}

  static async start(host: string, handler: Handler, opts: { port?: number; tls?: { key: Buffer; cert: Buffer } } = {}): Promise<Receiver> {
    const server: Server = opts.tls ? createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }) : createHttpServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, host, () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    const receiver = new Receiver(server, host, address.port, opts.tls ? 'https' : 'http');
    server.on(opts.tls ? 'secureConnection' : 'connection', (socket) => {
      receiver.connections++;
      receiver.open++;
      socket.on('close', () => receiver.open--);
    });
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const servername = (req.socket as Partial<TLSSocket>).servername;
        const received: Received = {
          method: req.method ?? '',
          path: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
          servername: typeof servername === 'string' ? servername : null,
        };
        receiver.requests.push(received);
        handler(received, res, receiver.requests.length - 1);
      });
    });
    receivers.push(receiver);
    return receiver;
  }

  url(path = '/hook', host = this.host): string {
    return `${this.scheme}://${host.includes(':') ? `[${host}]` : host}:${this.port}${path}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const answer =
  (status: number, headers: Record<string, string> = {}): Handler =>
  (_req, res) => {
    res.writeHead(status, headers);
    res.end('ok');
  };

// ---- the deliverer under test ------------------------------------------------------------------

const receivers: Receiver[] = [];
const deliverers: WebhookDeliverer[] = [];

afterEach(async () => {
  await Promise.all(deliverers.splice(0).map((d) => d.stop({ graceMs: 100 })));
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});

class FixedSecrets implements WebhookSecrets {
  readonly keys = new Map<string, Buffer>();
  async secret(tenant: string): Promise<Buffer> {
    let key = this.keys.get(tenant);
    if (!key) {
      key = randomBytes(32);
      this.keys.set(tenant, key);
    }
    return key;
  }
  async rotate(tenant: string): Promise<Buffer> {
    this.keys.delete(tenant);
    return this.secret(tenant);
  }
}

const noDns: Resolver = async (host) => {
  throw new Error(`no lookup expected, got ${host}`);
};

interface SetupOptions {
  allow?: string[];
  allowPublic?: boolean;
  resolver?: Resolver;
  timeoutMs?: number;
  maxAttempts?: number;
  transport?: WebhookTransport;
  random?: () => number;
  concurrency?: number;
  onSettled?: WebhookDelivererDeps['onSettled'];
}

function setup(opts: SetupOptions = {}) {
  const clock = new ManualClock();
  const outbox = new MemoryOutbox();
  const logger = new RecordingLogger();
  const secrets = new FixedSecrets();
  const settled: Array<{ id: string; state: SettledState }> = [];
  const policy = new AddressPolicy({ allow: opts.allow ?? ['127.0.0.1'], allowPublic: opts.allowPublic ?? true }, opts.resolver ?? noDns);
  const deliverer = new WebhookDeliverer({
    outbox,
    secrets,
    policy,
    config: { timeoutMs: opts.timeoutMs ?? 3000, maxAttempts: opts.maxAttempts ?? 5 },
    clock,
    logger,
    owner: 'node-a',
    pollMs: 20,
    random: opts.random ?? (() => 0.5),
    concurrency: opts.concurrency ?? 4,
    ...(opts.transport ? { transport: opts.transport } : {}),
    onSettled:
      opts.onSettled ??
      ((d: WebhookDelivery, state: SettledState) => {
        settled.push({ id: d.id, state });
      }),
  });
  deliverers.push(deliverer);
  deliverer.start();
  const enqueue = async (url: string, id = 'wh_1', body = JSON.stringify({ type: 'batch.finished', id: 'b_1', marker: 'BODY-MARKER-42' })) => {
    await outbox.enqueue({ id, tenant: 'tenant-a', url, batchId: 'b_1', body }, clock.now());
    deliverer.wake();
    return body;
  };
  return { clock, outbox, logger, secrets, settled, deliverer, enqueue };
}

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A second receiver on the same port at another loopback address (a free port on both is searched). */
async function pairOnOnePort(hostA: string, handlerA: Handler, hostB: string, handlerB: Handler, tls?: { key: Buffer; cert: Buffer }): Promise<[Receiver, Receiver]> {
  for (let i = 0; i < 20; i++) {
    const a = await Receiver.start(hostA, handlerA, tls ? { tls } : {});
    try {
      const b = await Receiver.start(hostB, handlerB, { port: a.port, ...(tls ? { tls } : {}) });
      return [a, b];
    } catch {
      receivers.splice(receivers.indexOf(a), 1);
      await a.close();
    }
  }
  throw new Error('no port free on both addresses');
}

// ---- tests -------------------------------------------------------------------------------------

describe('retryDelayMs', () => {
  it('doubles from 1 s, within ±20%, up to an hour', () => {
    expect(retryDelayMs(1, () => 0.5)).toBe(1000);
    expect(retryDelayMs(2, () => 0.5)).toBe(2000);
    expect(retryDelayMs(5, () => 0.5)).toBe(16_000);
    expect(retryDelayMs(1, () => 0)).toBe(800);
    expect(retryDelayMs(1, () => 0.999999)).toBe(1200);
    expect(retryDelayMs(13, () => 0.5)).toBe(3_600_000);
    expect(retryDelayMs(30, () => 0.5)).toBe(3_600_000);
    expect(retryDelayMs(30, () => 0.999999)).toBeGreaterThan(4_319_000);
    expect(retryDelayMs(30, () => 0.999999)).toBeLessThanOrEqual(4_320_000);
    for (let i = 0; i < 200; i++) {
      const d = retryDelayMs(3);
      expect(d).toBeGreaterThanOrEqual(3200);
      expect(d).toBeLessThanOrEqual(4800);
    }
  });
});

describe('WebhookDeliverer', () => {
  it('POSTs the body signed with the tenant secret, to the path and query given, and records it delivered', async () => {
    const receiver = await Receiver.start('127.0.0.1', answer(204));
    const t = setup();
    const body = await t.enqueue(receiver.url('/hooks/pybox?token=s3cr3t-token'));
    await until(() => t.settled.length === 1, 'the delivery to settle');

    expect(receiver.requests).toHaveLength(1);
    const got = receiver.requests[0]!;
    expect(got.method).toBe('POST');
    expect(got.path).toBe('/hooks/pybox?token=s3cr3t-token');
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['host']).toBe(`127.0.0.1:${receiver.port}`);
    expect(got.body).toBe(body);
    const key = await t.secrets.secret('tenant-a');
    const nowS = Math.floor(t.clock.now() / 1000);
    expect(got.headers['pybox-webhook-timestamp']).toBe(String(nowS));
    expect(verifyWebhook({ secret: encodeWebhookSecret(key), headers: got.headers, body: got.body, nowS })).toEqual({ id: 'wh_1', timestampS: nowS });
    expect(() => verifyWebhook({ secret: randomBytes(32), headers: got.headers, body: got.body, nowS })).toThrow(/does not match/);

    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'delivered', attempts: 1, lastStatus: 204 });
    expect(t.settled).toEqual([{ id: 'wh_1', state: 'delivered' }]);
    expect(t.outbox.calls.find((c) => c.op === 'claimDue' && c.ids.length > 0)).toMatchObject({ owner: 'node-a', leaseMs: 6000 });

    // The logs name the delivery and the host, never the body, the secret or the URL's query.
    const logs = JSON.stringify(t.logger.entries);
    expect(logs).toContain('wh_1');
    expect(logs).not.toContain('BODY-MARKER-42');
    expect(logs).not.toContain('s3cr3t-token');
    expect(logs).not.toContain(key.toString('hex'));
    expect(logs).not.toContain(key.toString('base64url'));
  });

  it('finds due deliveries by polling when nobody wakes it', async () => {
    const receiver = await Receiver.start('127.0.0.1', answer(200));
    const t = setup();
    await t.outbox.enqueue({ id: 'wh_poll', tenant: 'tenant-a', url: receiver.url(), batchId: null, body: '{}' }, t.clock.now());
    await until(() => t.settled.length === 1, 'the polled delivery');
    expect(receiver.requests).toHaveLength(1);
  });

  it('a 500 then a 200: two tries, the second only once the backoff has passed, same id, fresh timestamp', async () => {
    const receiver = await Receiver.start('127.0.0.1', (req, res, i) => answer(i === 0 ? 500 : 200)(req, res, i));
    const t = setup();
    const start = t.clock.now();
    await t.enqueue(receiver.url());
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the first try');
    expect(t.outbox.outcomes('wh_1')[0]).toEqual({ op: 'failed', id: 'wh_1', nowMs: start, nextAtMs: start + 1000, error: 'answered 500', httpStatus: 500 });
    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'pending', attempts: 1, lastStatus: 500, lastError: 'answered 500' });

    // Not due yet: woken and polled, the deliverer does not call again.
    t.clock.advance(999);
    t.deliverer.wake();
    await sleep(150);
    expect(receiver.requests).toHaveLength(1);

    t.clock.advance(1);
    t.deliverer.wake();
    await until(() => t.settled.length === 1, 'the second try');
    expect(receiver.requests).toHaveLength(2);
    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'delivered', attempts: 2, lastStatus: 200 });
    const [first, second] = receiver.requests;
    expect(second!.headers['pybox-webhook-id']).toBe(first!.headers['pybox-webhook-id']);
    expect(Number(second!.headers['pybox-webhook-timestamp'])).toBe(Number(first!.headers['pybox-webhook-timestamp']) + 1);
    const secret = await t.secrets.secret('tenant-a');
    for (const r of receiver.requests) verifyWebhook({ secret, headers: r.headers, body: r.body, nowS: Math.floor(t.clock.now() / 1000) });
    expect(t.settled).toEqual([{ id: 'wh_1', state: 'delivered' }]);
  });

  it('gives up after maxAttempts, the waits doubling, and reports the failure once', async () => {
    const receiver = await Receiver.start('127.0.0.1', answer(503));
    const t = setup({ maxAttempts: 3 });
    await t.enqueue(receiver.url());
    const waits: Array<number | null> = [];
    for (let n = 1; n <= 3; n++) {
      await until(() => t.outbox.outcomes('wh_1').length === n, `try ${n}`);
      const last = t.outbox.outcomes('wh_1')[n - 1]!;
      if (last.op !== 'failed') throw new Error('expected a failure');
      waits.push(last.nextAtMs === null ? null : last.nextAtMs - last.nowMs);
      if (last.nextAtMs !== null) {
        t.clock.t = last.nextAtMs;
        t.deliverer.wake();
      }
    }
    expect(waits).toEqual([1000, 2000, null]);
    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'failed', attempts: 3, lastStatus: 503 });
    await until(() => t.settled.length === 1, 'the settled report');
    expect(t.settled).toEqual([{ id: 'wh_1', state: 'failed' }]);
    await sleep(100);
    expect(receiver.requests).toHaveLength(3);
  });

  it('jitters the wait within ±20% with the default randomness', async () => {
    const receiver = await Receiver.start('127.0.0.1', answer(500));
    const t = setup({ random: Math.random });
    await t.enqueue(receiver.url());
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the first try');
    const failed = t.outbox.outcomes('wh_1')[0]!;
    if (failed.op !== 'failed' || failed.nextAtMs === null) throw new Error('expected a retry');
    expect(failed.nextAtMs - failed.nowMs).toBeGreaterThanOrEqual(800);
    expect(failed.nextAtMs - failed.nowMs).toBeLessThanOrEqual(1200);
  });

  it('does not follow a redirect: the 302 is a failure and its target gets nothing', async () => {
    const target = await Receiver.start('127.0.0.1', answer(200));
    const redirecting = await Receiver.start('127.0.0.1', answer(302, { Location: target.url('/elsewhere') }));
    const t = setup();
    await t.enqueue(redirecting.url());
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the try');
    expect(t.outbox.outcomes('wh_1')[0]).toMatchObject({ op: 'failed', httpStatus: 302, error: 'answered 302; redirects are not followed' });
    expect(redirecting.requests).toHaveLength(1);
    await sleep(100);
    expect(target.connections).toBe(0);
    expect(target.requests).toHaveLength(0);
  });

  it('a receiver that never answers is a failed try after timeoutMs, retried later', async () => {
    const receiver = await Receiver.start('127.0.0.1', () => {
      /* holds the request open */
    });
    const t = setup({ timeoutMs: 300 });
    await t.enqueue(receiver.url());
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the timed-out try');
    expect(t.outbox.outcomes('wh_1')[0]).toMatchObject({ op: 'failed', httpStatus: null, error: 'no answer within 300 ms', nextAtMs: t.clock.now() + 1000 });
    expect(receiver.requests).toHaveLength(1);
    await until(() => receiver.open === 0, 'the connection to be closed');
  });

  it('a receiver that sends headers and then stalls the body still counts by its status', async () => {
    const receiver = await Receiver.start('127.0.0.1', (_req, res) => {
      res.writeHead(200, { 'Content-Length': '100000' });
      res.write('partial');
    });
    const t = setup({ timeoutMs: 300 });
    await t.enqueue(receiver.url());
    await until(() => t.settled.length === 1, 'the delivery');
    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'delivered', lastStatus: 200 });
    await until(() => receiver.open === 0, 'the connection to be closed');
  });

  it('reads at most a small part of a huge answer', async () => {
    const total = 64 * 1024 * 1024;
    let written = 0;
    let finished = false;
    const receiver = await Receiver.start('127.0.0.1', (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const pump = (): void => {
        while (written < total && !res.destroyed) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        if (written >= total) res.end();
      };
      res.on('close', () => (finished = true));
      pump();
    });
    const t = setup();
    await t.enqueue(receiver.url());
    await until(() => t.settled.length === 1, 'the delivery');
    await until(() => finished, 'the answer to be cut');
    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'delivered', lastStatus: 200 });
    expect(written).toBeLessThan(total);
  });

  it('refuses 127.0.0.1 without an allow entry: failed for good at once, no connection made', async () => {
    const receiver = await Receiver.start('127.0.0.1', answer(200));
    const t = setup({ allow: [] });
    await t.enqueue(receiver.url());
    await until(() => t.settled.length === 1, 'the refusal');
    expect(t.outbox.outcomes('wh_1')).toEqual([
      { op: 'failed', id: 'wh_1', nowMs: t.clock.now(), nextAtMs: null, httpStatus: null, error: 'refused: 127.0.0.1 is loopback (not in webhooks.allow)' },
    ]);
    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'failed', attempts: 1 });
    expect(t.settled).toEqual([{ id: 'wh_1', state: 'failed' }]);
    await sleep(100);
    expect(receiver.connections).toBe(0);
    expect(receiver.requests).toHaveLength(0);
  });

  it('refuses a name when one of its addresses is not allowed, connecting to none of them', async () => {
    const [allowed, loopback] = await pairOnOnePort('127.0.0.2', answer(200), '127.0.0.1', answer(200));
    const resolver: Resolver = async () => [
      { address: '127.0.0.2', family: 4 },
      { address: '127.0.0.1', family: 4 },
    ];
    const t = setup({ allow: ['127.0.0.2'], resolver });
    await t.enqueue(`http://hooks.test:${allowed.port}/hook`);
    await until(() => t.settled.length === 1, 'the refusal');
    expect(t.outbox.outcomes('wh_1')[0]).toMatchObject({ op: 'failed', nextAtMs: null, error: 'refused: hooks.test resolves to 127.0.0.1: 127.0.0.1 is loopback (not in webhooks.allow)' });
    await sleep(100);
    expect(allowed.connections + loopback.connections).toBe(0);
  });

  it('pins the checked address: a resolver that answers differently the second time is never asked again', async () => {
    // 127.0.0.2 plays the public address the name first resolves to; 127.0.0.1 the private one a
    // rebinding DNS server answers next. Both listen on the same port, as they would in an attack.
    const [checked, rebound] = await pairOnOnePort('127.0.0.2', answer(200), '127.0.0.1', answer(200));
    const calls: string[] = [];
    const resolver: Resolver = async (host) => {
      calls.push(host);
      const address = calls.length === 1 ? '127.0.0.2' : '127.0.0.1';
      return [{ address, family: 4 } satisfies ResolvedAddress];
    };
    // .test names never resolve through the system: a connection that looked the name up again
    // itself would fail instead of reaching the checked receiver.
    const t = setup({ allow: ['127.0.0.2'], resolver });
    await t.enqueue(`http://rebind.test:${checked.port}/hook`);
    await until(() => t.settled.length === 1, 'the delivery');
    expect(t.settled).toEqual([{ id: 'wh_1', state: 'delivered' }]);
    expect(checked.requests).toHaveLength(1);
    expect(checked.requests[0]!.headers['host']).toBe(`rebind.test:${checked.port}`);
    expect(rebound.connections).toBe(0);
    expect(calls).toEqual(['rebind.test']);
  });

  it('tries the next judged address when the first refuses the connection', async () => {
    const receiver = await Receiver.start('127.0.0.2', answer(200));
    const resolver: Resolver = async () => [
      { address: '127.0.0.3', family: 4 },
      { address: '127.0.0.2', family: 4 },
    ];
    const t = setup({ allow: ['127.0.0.2', '127.0.0.3'], resolver });
    await t.enqueue(`http://two.test:${receiver.port}/hook`);
    await until(() => t.settled.length === 1, 'the delivery');
    expect(t.settled).toEqual([{ id: 'wh_1', state: 'delivered' }]);
  });

  it('calls an IPv6 literal, with the bracketed Host header', async () => {
    const receiver = await Receiver.start('::1', answer(200));
    const t = setup({ allow: ['::1'] });
    await t.enqueue(receiver.url());
    await until(() => t.settled.length === 1, 'the delivery');
    expect(t.settled).toEqual([{ id: 'wh_1', state: 'delivered' }]);
    expect(receiver.requests[0]!.headers['host']).toBe(`[::1]:${receiver.port}`);
  });

  it('a lookup failure is retried later, not given up', async () => {
    const t = setup({ resolver: async () => Promise.reject(Object.assign(new Error('getaddrinfo EAI_AGAIN'), { code: 'EAI_AGAIN' })) });
    await t.enqueue('http://flaky.test/hook');
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the try');
    expect(t.outbox.outcomes('wh_1')[0]).toMatchObject({ op: 'failed', error: 'refused: cannot resolve flaky.test (EAI_AGAIN)', nextAtMs: t.clock.now() + 1000 });
    expect(t.settled).toEqual([]);
  });

  it('a lookup that hangs ends the try at timeoutMs', async () => {
    const t = setup({ timeoutMs: 200, resolver: () => new Promise<ResolvedAddress[]>(() => undefined) });
    await t.enqueue('http://slow-dns.test/hook');
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the try');
    expect(t.outbox.outcomes('wh_1')[0]).toMatchObject({ op: 'failed', error: "the host's addresses were not found within 200 ms", nextAtMs: t.clock.now() + 1000 });
  });

  it('a refused connection is a failed try', async () => {
    const receiver = await Receiver.start('127.0.0.1', answer(200));
    const url = receiver.url();
    receivers.splice(receivers.indexOf(receiver), 1);
    await receiver.close();
    const t = setup();
    await t.enqueue(url);
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the try');
    expect(t.outbox.outcomes('wh_1')[0]).toMatchObject({ op: 'failed', httpStatus: null, error: expect.stringMatching(/ECONNREFUSED/), nextAtMs: t.clock.now() + 1000 });
  });

  it('keeps at most `concurrency` calls in flight', async () => {
    const held: ServerResponse[] = [];
    let release = false;
    const receiver = await Receiver.start('127.0.0.1', (_req, res) => {
      if (release) return void res.end();
      held.push(res);
    });
    const t = setup({ concurrency: 2 });
    for (let i = 0; i < 5; i++) await t.enqueue(receiver.url(), `wh_${i}`);
    await until(() => held.length === 2, 'two calls');
    await sleep(150);
    expect(receiver.requests).toHaveLength(2);
    release = true;
    for (const res of held) res.end();
    await until(() => t.settled.length === 5, 'all five');
    expect(receiver.requests).toHaveLength(5);
    expect(new Set(receiver.requests.map((r) => r.headers['pybox-webhook-id'])).size).toBe(5);
  });

  it('a failing onSettled callback is logged and changes nothing recorded', async () => {
    const receiver = await Receiver.start('127.0.0.1', answer(200));
    const t = setup({
      onSettled: () => {
        throw new Error('job store down');
      },
    });
    await t.enqueue(receiver.url());
    await until(() => t.logger.at('error').length === 1, 'the error log');
    expect(t.logger.at('error')[0]).toMatchObject({ msg: 'webhook settled callback failed', fields: { deliveryId: 'wh_1', state: 'delivered', error: 'job store down' } });
    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'delivered' });
  });

  it('stop waits for a call that ends within the grace period', async () => {
    const receiver = await Receiver.start('127.0.0.1', (req, res, i) => setTimeout(() => answer(200)(req, res, i), 200));
    const t = setup();
    await t.enqueue(receiver.url());
    await until(() => receiver.requests.length === 1, 'the call');
    await t.deliverer.stop({ graceMs: 5000 });
    expect(await t.outbox.get('wh_1')).toMatchObject({ state: 'delivered' });
  });

  it('stop abandons a call that outlasts the grace period, unrecorded and still leased', async () => {
    const receiver = await Receiver.start('127.0.0.1', () => {
      /* holds the request open */
    });
    const t = setup({ timeoutMs: 10_000 });
    await t.enqueue(receiver.url());
    await until(() => receiver.requests.length === 1, 'the call');
    await t.deliverer.stop({ graceMs: 100 });
    expect(t.outbox.outcomes('wh_1')).toEqual([]);
    expect(t.outbox.rows.get('wh_1')).toMatchObject({ state: 'pending', attempts: 0, leaseOwner: 'node-a' });
    expect(t.logger.at('warn').map((e) => e.msg)).toContain('webhook calls abandoned at stop');
    await until(() => receiver.open === 0, 'the connection to be closed');
    // Stopped means stopped: a new due delivery is not claimed.
    await t.outbox.enqueue({ id: 'wh_after', tenant: 'tenant-a', url: receiver.url(), batchId: null, body: '{}' }, t.clock.now());
    t.deliverer.wake();
    await sleep(100);
    expect(receiver.requests).toHaveLength(1);
  });

  it('a failing outbox is logged and the loop goes on', async () => {
    const receiver = await Receiver.start('127.0.0.1', answer(200));
    const t = setup();
    const claimDue = t.outbox.claimDue.bind(t.outbox);
    let failures = 2;
    t.outbox.claimDue = async (...args) => {
      if (failures-- > 0) throw new Error('database is locked');
      return claimDue(...args);
    };
    await t.enqueue(receiver.url());
    await until(() => t.settled.length === 1, 'the delivery');
    expect(t.logger.at('error').filter((e) => e.msg === 'webhook outbox claim failed').length).toBeGreaterThanOrEqual(1);
  });
});

// ---- https -------------------------------------------------------------------------------------

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!hasOpenssl)('WebhookDeliverer over https', () => {
  let dir = '';
  const certFor = (name: string): { key: Buffer; cert: Buffer } => {
    const key = join(dir, `${name}.key`);
    const cert = join(dir, `${name}.crt`);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`], { stdio: 'ignore' });
    return { key: readFileSync(key), cert: readFileSync(cert) };
  };
  let good: { key: Buffer; cert: Buffer };
  let wrong: { key: Buffer; cert: Buffer };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'pybox-webhook-tls-'));
    good = certFor('hooks.test');
    wrong = certFor('other.test');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const resolver: Resolver = async () => [{ address: '127.0.0.2', family: 4 }];

  it('connects to the pinned address with the name in SNI, and checks the certificate against the name', async () => {
    const receiver = await Receiver.start('127.0.0.2', answer(200), { tls: good });
    const t = setup({ allow: ['127.0.0.2'], resolver, transport: httpTransport({ ca: good.cert }) });
    await t.enqueue(`https://hooks.test:${receiver.port}/hook`);
    await until(() => t.settled.length === 1, 'the delivery');
    expect(t.settled).toEqual([{ id: 'wh_1', state: 'delivered' }]);
    expect(receiver.requests[0]).toMatchObject({ servername: 'hooks.test', headers: { host: `hooks.test:${receiver.port}` } });
  });

  it('a certificate for another name is a failed try', async () => {
    const receiver = await Receiver.start('127.0.0.2', answer(200), { tls: wrong });
    const t = setup({ allow: ['127.0.0.2'], resolver, transport: httpTransport({ ca: wrong.cert }) });
    await t.enqueue(`https://hooks.test:${receiver.port}/hook`);
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the try');
    expect(t.outbox.outcomes('wh_1')[0]).toMatchObject({ op: 'failed', error: expect.stringMatching(/hooks\.test/), httpStatus: null });
    expect(receiver.requests).toHaveLength(0);
  });

  it('a certificate nobody vouches for is a failed try', async () => {
    const receiver = await Receiver.start('127.0.0.2', answer(200), { tls: good });
    const t = setup({ allow: ['127.0.0.2'], resolver });
    await t.enqueue(`https://hooks.test:${receiver.port}/hook`);
    await until(() => t.outbox.outcomes('wh_1').length === 1, 'the try');
    expect(t.outbox.outcomes('wh_1')[0]).toMatchObject({ op: 'failed', error: expect.stringMatching(/certificate/), httpStatus: null });
    expect(receiver.requests).toHaveLength(0);
  });
});
