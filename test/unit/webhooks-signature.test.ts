// The webhook signature: computed independently here with node:crypto, verified by the receiver's
// verifyWebhook, refused when the body, the timestamp or the secret differ, or the time is too far off.
import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import * as pkg from '../../src/index.ts';
import {
  decodeWebhookSecret,
  encodeWebhookSecret,
  signWebhook,
  verifyWebhook,
  WebhookVerificationError,
  webhookHeaders,
} from '../../src/webhooks/signature.ts';

const key = Buffer.from('8f1c2a7d3e9b4f60a1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728', 'hex');
const secret = encodeWebhookSecret(key);
const body = JSON.stringify({ type: 'execution.finished', id: 'ex_1', createdAt: '2026-11-26T18:00:00.000Z', execution: { status: 'completed' } });
const ts = 1_764_180_000;

function expected(k: Buffer, t: number, b: string): string {
  return `v1=${createHmac('sha256', k).update(`${t}.${b}`, 'utf8').digest('hex')}`;
}

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof WebhookVerificationError) return e.reason;
    throw e;
  }
  throw new Error('verified, but should not have');
}

describe('signWebhook', () => {
  it('is HMAC-SHA256 of "<timestamp>.<body>" in hex, with either form of the secret', () => {
    expect(signWebhook(key, ts, body)).toBe(expected(key, ts, body));
    expect(signWebhook(secret, ts, body)).toBe(expected(key, ts, body));
    expect(signWebhook(key, ts, Buffer.from(body))).toBe(expected(key, ts, body));
    expect(signWebhook(key, ts, 'ünïcode ✓')).toBe(expected(key, ts, 'ünïcode ✓'));
  });

  it('the headers sent carry the id, the timestamp and the signature', () => {
    expect(webhookHeaders({ id: 'wh_1', secret: key, timestampS: ts, body })).toEqual({
      'Content-Type': 'application/json',
      'Pybox-Webhook-Id': 'wh_1',
      'Pybox-Webhook-Timestamp': String(ts),
      'Pybox-Webhook-Signature': expected(key, ts, body),
    });
  });

  it('the shown secret decodes to the key, and anything else is refused', () => {
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]+$/);
    expect(decodeWebhookSecret(secret).equals(key)).toBe(true);
    expect(() => decodeWebhookSecret(key.toString('hex'))).toThrow(/not a pybox webhook secret/);
    expect(() => decodeWebhookSecret('whsec_abc')).toThrow(/too short/);
    expect(() => decodeWebhookSecret('whsec_a+b/')).toThrow(/not a pybox webhook secret/);
  });
});

describe('verifyWebhook', () => {
  const nodeHeaders = (over: Record<string, string> = {}): Record<string, string> => ({
    'pybox-webhook-id': 'wh_1',
    'pybox-webhook-timestamp': String(ts),
    'pybox-webhook-signature': expected(key, ts, body),
    ...over,
  });

  it('accepts a genuine webhook: node headers or fetch Headers, string or bytes body, shown or raw secret', () => {
    expect(verifyWebhook({ secret, headers: nodeHeaders(), body, nowS: ts + 10 })).toEqual({ id: 'wh_1', timestampS: ts });
    expect(verifyWebhook({ secret: key, headers: new Headers(nodeHeaders()), body: new TextEncoder().encode(body), nowS: ts - 10 })).toEqual({ id: 'wh_1', timestampS: ts });
  });

  it('accepts the system clock by default', () => {
    const now = Math.floor(Date.now() / 1000);
    const headers = webhookHeaders({ id: 'wh_2', secret, timestampS: now, body });
    expect(verifyWebhook({ secret, headers, body }).id).toBe('wh_2');
  });

  it('refuses a tampered body', () => {
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders(), body: body.replace('completed', 'failed'), nowS: ts }))).toBe('the signature does not match');
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders(), body: `${body} `, nowS: ts }))).toBe('the signature does not match');
  });

  it('refuses a timestamp changed after signing, and another secret', () => {
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders({ 'pybox-webhook-timestamp': String(ts + 1) }), body, nowS: ts }))).toBe('the signature does not match');
    expect(reasonOf(() => verifyWebhook({ secret: randomBytes(32), headers: nodeHeaders(), body, nowS: ts }))).toBe('the signature does not match');
  });

  it('refuses timestamps more than the tolerance away, either way', () => {
    expect(verifyWebhook({ secret, headers: nodeHeaders(), body, nowS: ts + 300 }).id).toBe('wh_1');
    expect(verifyWebhook({ secret, headers: nodeHeaders(), body, nowS: ts - 300 }).id).toBe('wh_1');
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders(), body, nowS: ts + 301 }))).toMatch(/more than 300 s from now/);
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders(), body, nowS: ts - 301 }))).toMatch(/more than 300 s/);
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders(), body, nowS: ts + 61, toleranceS: 60 }))).toMatch(/more than 60 s/);
  });

  it('refuses missing or malformed headers', () => {
    const without = (name: string): Record<string, string> => Object.fromEntries(Object.entries(nodeHeaders()).filter(([k]) => k !== name));
    expect(reasonOf(() => verifyWebhook({ secret, headers: without('pybox-webhook-id'), body, nowS: ts }))).toMatch(/no Pybox-Webhook-Id/);
    expect(reasonOf(() => verifyWebhook({ secret, headers: without('pybox-webhook-timestamp'), body, nowS: ts }))).toMatch(/no Pybox-Webhook-Timestamp/);
    expect(reasonOf(() => verifyWebhook({ secret, headers: without('pybox-webhook-signature'), body, nowS: ts }))).toMatch(/no Pybox-Webhook-Signature/);
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders({ 'pybox-webhook-timestamp': '1e9' }), body, nowS: ts }))).toMatch(/not unix seconds/);
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders({ 'pybox-webhook-signature': 'v0=abc' }), body, nowS: ts }))).toMatch(/no v1 signature/);
    const short = expected(key, ts, body).slice(0, 40);
    expect(reasonOf(() => verifyWebhook({ secret, headers: nodeHeaders({ 'pybox-webhook-signature': short }), body, nowS: ts }))).toMatch(/no v1 signature/);
  });

  it('accepts a list of signatures when one matches (a receiver between two secrets)', () => {
    const other = signWebhook(randomBytes(32), ts, body);
    const headers = nodeHeaders({ 'pybox-webhook-signature': `${other} ${expected(key, ts, body)}` });
    expect(verifyWebhook({ secret, headers, body, nowS: ts }).id).toBe('wh_1');
  });

  it('a secret string that is not a pybox secret is a usage error, not a failed verification', () => {
    expect(() => verifyWebhook({ secret: 'hunter2', headers: nodeHeaders(), body, nowS: ts })).toThrow(TypeError);
  });

  it('is exported by the package entry', () => {
    expect(pkg.verifyWebhook).toBe(verifyWebhook);
    expect(pkg.WebhookVerificationError).toBe(WebhookVerificationError);
  });
});
