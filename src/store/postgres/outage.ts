// PostgreSQL being away (stopped, restarting, unreachable, failing over) is a fault of the service
// a client can wait out: every store call that fails that way rejects with store_unavailable (503
// with Retry-After), not with the driver's error (500).
import { PyboxError } from '../../core/errors.ts';

/** Retry-After while PostgreSQL is away: a restart or a failover takes seconds. */
export const STORE_RETRY_S = 5;

/** Error codes of a server that cannot take the query: connection exceptions and shutdowns. */
const AWAY_SQLSTATE = /^(08|57P0[1-3]|53300)/;
const AWAY_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const AWAY_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|the database system is (starting up|shutting down)/i;

function isOutage(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string' && (AWAY_SQLSTATE.test(code) || AWAY_NODE_CODES.has(code))) return true;
  return AWAY_MESSAGES.test(e.message);
}

function outageError(e: unknown): PyboxError {
  return new PyboxError('store_unavailable', 'the store (PostgreSQL) does not answer; retry shortly', { retryAfterS: STORE_RETRY_S, cause: e });
}

/** The store, with its outages reported as store_unavailable; every other error as it was. */
export function reportingOutages<T extends object>(store: T): T {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const out: unknown = Reflect.apply(value, target, args);
        return out instanceof Promise ? out.catch((e: unknown) => Promise.reject(isOutage(e) ? outageError(e) : e)) : out;
      };
    },
  });
}
