// One webhook POST over node:http(s), connecting only to addresses the policy judged. The host
// name stays in the Host header and in TLS (SNI and the certificate check), but the socket's
// lookup answers from the judged list: a DNS answer that changes between the check and the
// connection (rebinding) is never asked for. Redirects are not followed (node:http never does);
// the answer's body is read up to a cap and thrown away.
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { hostOf, type ResolvedAddress } from './address-policy.ts';

export interface WebhookCall {
  url: URL;
  /** The only addresses the connection may go to (judged by the policy). */
  addresses: readonly ResolvedAddress[];
  headers: Record<string, string>;
  body: string;
  /** For the whole call: connection, request, answer. */
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/** The answer's status; a failure to get one (refused, reset, timed out, TLS) rejects. */
export type WebhookTransport = (call: WebhookCall) => Promise<{ status: number }>;

/** Most answer bytes read before the connection is dropped. */
const DEFAULT_MAX_ANSWER_BYTES = 64 * 1024;

/** A socket lookup that only ever answers from `addresses` (optionally only one family). */
function pinnedLookup(addresses: readonly ResolvedAddress[]): LookupFunction {
  return (_hostname, options, callback) => {
    const family = options.family === 4 || options.family === 'IPv4' ? 4 : options.family === 6 || options.family === 'IPv6' ? 6 : 0;
    const list = addresses.filter((a) => family === 0 || a.family === family);
    process.nextTick(() => {
      const first = list[0];
      if (!first) {
        callback(Object.assign(new Error('no judged address of the family asked for'), { code: 'ENOTFOUND' }), '', undefined);
      } else if (options.all) {
        callback(null, list.map((a) => ({ address: a.address, family: a.family })));
      } else {
        callback(null, first.address, first.family);
      }
    });
  };
}

export class WebhookTimeoutError extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = 'WebhookTimeoutError';
  }
}

/**
 * The transport the deliverer uses unless a test hands in another. `ca` replaces the system's
 * certificate authorities for https (a private CA; the tests' own).
 */
export function httpTransport(opts: { maxAnswerBytes?: number; ca?: string | Buffer } = {}): WebhookTransport {
  const cap = opts.maxAnswerBytes ?? DEFAULT_MAX_ANSWER_BYTES;
  return (call) =>
    new Promise((resolve, reject) => {
      const tls = call.url.protocol === 'https:';
      const host = hostOf(call.url);
      let status: number | null = null;
      let settled = false;
      let req: ClientRequest | null = null;
      const settle = (error: Error | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        call.signal?.removeEventListener('abort', onAbort);
        req?.destroy();
        if (error === null && status !== null) resolve({ status });
        else reject(error ?? new Error('the connection closed without an answer'));
      };
      // Once the status is in, the call's outcome is known: a slow or broken body does not change it.
      const timer = setTimeout(() => settle(status === null ? new WebhookTimeoutError(call.timeoutMs) : null), call.timeoutMs);
      const onAbort = (): void => settle(new Error('aborted'));
      if (call.signal?.aborted) return settle(new Error('aborted'));
      call.signal?.addEventListener('abort', onAbort, { once: true });

      req = (tls ? httpsRequest : httpRequest)({
        host,
        port: call.url.port === '' ? (tls ? 443 : 80) : Number(call.url.port),
        path: `${call.url.pathname}${call.url.search}`,
        method: 'POST',
        headers: {
          ...call.headers,
          Host: call.url.host,
          'Content-Length': String(Buffer.byteLength(call.body)),
          Connection: 'close',
        },
        // A fresh connection per call: a pooled one could outlive the judgement it was made under.
        agent: false,
        lookup: pinnedLookup(call.addresses),
        ...(tls && isIP(host) === 0 ? { servername: host } : {}),
        ...(tls && opts.ca !== undefined ? { ca: opts.ca } : {}),
        maxHeaderSize: 16 * 1024,
      });
      req.on('response', (res: IncomingMessage) => {
        status = res.statusCode ?? 0;
        let seen = 0;
        res.on('data', (chunk: Buffer) => {
          seen += chunk.length;
          if (seen > cap) settle(null);
        });
        res.on('end', () => settle(null));
        res.on('close', () => settle(null));
        res.on('error', () => settle(null));
      });
      req.on('error', (e) => settle(e));
      req.end(call.body);
    });
}
