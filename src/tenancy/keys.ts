// API keys: how they are made, recognised and hashed. The plaintext exists only in the output of
// `pybox keys create` and in the requests that carry it; the store keeps the hash.
import { createHash, randomBytes } from 'node:crypto';

export const KEY_PREFIX = 'pbx_';
/** `pbx_` and 32 random bytes in base64url (43 characters, no padding). */
export const KEY_FORMAT = /^pbx_[A-Za-z0-9_-]{43}$/;

export function newApiKey(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

/** The public name of a key, safe to show and log: `key_` and 12 hex digits. */
export function newKeyId(): string {
  return 'key_' + randomBytes(6).toString('hex');
}

export const KEY_ID_FORMAT = /^key_[0-9a-f]{12}$/;

/**
 * SHA-256 of the key. A fast hash is the right one here, unlike for passwords: a key is 256 random
 * bits, so a leaked hash cannot be reversed by guessing (no dictionary, no feasible brute force),
 * and a slow hash would only make every request slower (and a cheap way to load the server).
 */
export function hashApiKey(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}
