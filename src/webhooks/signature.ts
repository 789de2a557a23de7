// How a webhook proves it comes from pybox: an HMAC-SHA256 with the tenant's secret over
// "<unix seconds>.<body>", sent as `Pybox-Webhook-Signature: v1=<hex>`. The timestamp is inside
// what is signed, so a receiver that refuses old timestamps refuses replays too. This module is
// part of the client package (receivers import verifyWebhook), so it needs nothing but node:crypto.
import { createHmac, timingSafeEqual } from 'node:crypto';

export const WEBHOOK_ID_HEADER = 'Pybox-Webhook-Id';
export const WEBHOOK_TIMESTAMP_HEADER = 'Pybox-Webhook-Timestamp';
export const WEBHOOK_SIGNATURE_HEADER = 'Pybox-Webhook-Signature';
/** How far a timestamp may be from the receiver's clock, either way, by default (seconds). */
export const DEFAULT_WEBHOOK_TOLERANCE_S = 300;

const SECRET_PREFIX = 'whsec_';
const SIGNATURE_VERSION = 'v1';

/** The secret as a tenant is shown it (GET /v1/webhooks/secret): "whsec_" and the key in base64url. */
export function encodeWebhookSecret(key: Uint8Array): string {
  return SECRET_PREFIX + Buffer.from(key).toString('base64url');
}

/** The HMAC key of a secret in its shown form. Throws for a string that is not one. */
export function decodeWebhookSecret(secret: string): Buffer {
  const encoded = secret.trim();
  if (!encoded.startsWith(SECRET_PREFIX) || !/^[A-Za-z0-9_-]+$/.test(encoded.slice(SECRET_PREFIX.length))) {
    throw new TypeError('not a pybox webhook secret (expected "whsec_" followed by base64url)');
  }
  const key = Buffer.from(encoded.slice(SECRET_PREFIX.length), 'base64url');
  if (key.length < 16) throw new TypeError('not a pybox webhook secret (too short)');
  return key;
}

function keyOf(secret: string | Uint8Array): Buffer {
  return typeof secret === 'string' ? decodeWebhookSecret(secret) : Buffer.from(secret);
}

function mac(key: Buffer, timestampS: number, body: string | Uint8Array): Buffer {
  return createHmac('sha256', key).update(`${timestampS}.`).update(body).digest();
}

/** The Pybox-Webhook-Signature value for this body at this time: "v1=<hex HMAC-SHA256(key, "<timestamp>.<body>")>". */
export function signWebhook(secret: string | Uint8Array, timestampS: number, body: string | Uint8Array): string {
  if (!Number.isSafeInteger(timestampS) || timestampS < 0) throw new RangeError('timestamp must be whole seconds since the epoch');
  return `${SIGNATURE_VERSION}=${mac(keyOf(secret), timestampS, body).toString('hex')}`;
}

/** The headers pybox sends with a webhook body. */
export function webhookHeaders(opts: { id: string; secret: string | Uint8Array; timestampS: number; body: string }): Record<string, string> {
  return {
    'Content-Type': 'application/json',
    [WEBHOOK_ID_HEADER]: opts.id,
    [WEBHOOK_TIMESTAMP_HEADER]: String(opts.timestampS),
    [WEBHOOK_SIGNATURE_HEADER]: signWebhook(opts.secret, opts.timestampS, opts.body),
  };
}

/** A webhook that did not verify; `reason` says which check failed (safe to log). */
export class WebhookVerificationError extends Error {
  constructor(readonly reason: string) {
    super(`webhook not verified: ${reason}`);
    this.name = 'WebhookVerificationError';
  }
}

/** Request headers as a fetch `Headers`, or as node's `req.headers`. */
export type WebhookHeaders = { get(name: string): string | null } | Record<string, string | string[] | undefined>;

export interface VerifyWebhookOptions {
  /** The tenant's secret as shown by GET /v1/webhooks/secret ("whsec_..."), or its raw key bytes. */
  secret: string | Uint8Array;
  headers: WebhookHeaders;
  /** The body exactly as received: parsing and serialising it again changes the bytes signed. */
  body: string | Uint8Array;
  /** Largest difference between the timestamp and now, in seconds, either way (default 300). */
  toleranceS?: number;
  /** Now, in unix seconds (default the system clock). */
  nowS?: number;
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof headers.get === 'function') return (headers as { get(name: string): string | null }).get(name) ?? undefined;
  const record = headers as Record<string, string | string[] | undefined>;
  const lower = name.toLowerCase();
  const key = Object.keys(record).find((k) => k.toLowerCase() === lower);
  const value = key === undefined ? undefined : record[key];
  return Array.isArray(value) ? value.join(',') : value;
}

/**
 * Checks a webhook's signature and timestamp. Returns its delivery id (the same on every retry of
 * one delivery: use it to drop duplicates) and timestamp; throws WebhookVerificationError otherwise.
 */
export function verifyWebhook(opts: VerifyWebhookOptions): { id: string; timestampS: number } {
  const key = keyOf(opts.secret);
  const tolerance = opts.toleranceS ?? DEFAULT_WEBHOOK_TOLERANCE_S;
  const now = opts.nowS ?? Math.floor(Date.now() / 1000);
  const id = header(opts.headers, WEBHOOK_ID_HEADER);
  const stamp = header(opts.headers, WEBHOOK_TIMESTAMP_HEADER);
  const signature = header(opts.headers, WEBHOOK_SIGNATURE_HEADER);
  if (!id) throw new WebhookVerificationError(`no ${WEBHOOK_ID_HEADER} header`);
  if (!stamp) throw new WebhookVerificationError(`no ${WEBHOOK_TIMESTAMP_HEADER} header`);
  if (!signature) throw new WebhookVerificationError(`no ${WEBHOOK_SIGNATURE_HEADER} header`);
  if (!/^\d{1,12}$/.test(stamp.trim())) throw new WebhookVerificationError('the timestamp is not unix seconds');
  const timestampS = Number(stamp.trim());
  if (Math.abs(now - timestampS) > tolerance) throw new WebhookVerificationError(`the timestamp is more than ${tolerance} s from now`);
  const expected = mac(key, timestampS, opts.body);
  // Several signatures may be listed (space or comma separated); one good v1 is enough.
  const candidates = signature
    .split(/[\s,]+/)
    .filter((s) => s.startsWith(`${SIGNATURE_VERSION}=`))
    .map((s) => s.slice(SIGNATURE_VERSION.length + 1))
    .filter((hex) => /^[0-9a-fA-F]{64}$/.test(hex))
    .map((hex) => Buffer.from(hex, 'hex'));
  if (candidates.length === 0) throw new WebhookVerificationError('no v1 signature in the header');
  let good = false;
  for (const c of candidates) good = timingSafeEqual(c, expected) || good;
  if (!good) throw new WebhookVerificationError('the signature does not match');
  return { id, timestampS };
}
