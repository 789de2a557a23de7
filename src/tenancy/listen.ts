// Local mode: with no API key in the store pybox authenticates nobody, so it may only listen where
// nobody else can reach it.
import { isIP } from 'node:net';

/** 127.0.0.0/8, ::1 (also as an IPv4-mapped address) and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) {
    // The URL parser writes an IPv6 address in its one canonical, compressed form.
    const canonical = new URL(`http://[${h}]/`).hostname.slice(1, -1);
    return canonical === '::1' || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(canonical);
  }
  return false;
}

export const LOCAL_MODE_MESSAGE = 'local mode: no API keys, loopback only';

/** Throws when pybox would serve everyone, unauthenticated, beyond this machine. */
export function checkListenAddress(host: string, keysExist: boolean): 'local' | 'keys' {
  if (keysExist) return 'keys';
  if (isLoopbackHost(host)) return 'local';
  throw new Error(
    `refusing to listen on ${host}: no API key exists, so pybox runs in local mode (no authentication), which listens on loopback only. ` +
      'Create a key first (`npx pybox keys create --tenant NAME`), or listen on 127.0.0.1 (PYBOX_HOST).',
  );
}
