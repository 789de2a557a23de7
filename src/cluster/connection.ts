// How the cluster's parts reach Redis. BullMQ takes ioredis options (not a URL) and opens its own
// connections from them; the API side wants commands to fail fast when Redis is away (a request
// answered 503 at once, not left hanging), while blocking readers (workers, event streams) must
// wait and reconnect for as long as it takes.
import type { RedisOptions } from 'ioredis';

/** A redis:// or rediss:// URL, or ioredis options. */
export type RedisEndpoint = string | RedisOptions;

/** ioredis options for a redis:// or rediss:// URL ([user[:password]@]host[:port][/db]). */
export function redisOptionsOf(connection: RedisEndpoint): RedisOptions {
  if (typeof connection !== 'string') return { ...connection };
  const url = new URL(connection);
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new Error('a Redis URL must start with redis:// or rediss://');
  const opts: RedisOptions = { host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', port: url.port ? Number(url.port) : 6379 };
  if (url.username) opts.username = decodeURIComponent(url.username);
  if (url.password) opts.password = decodeURIComponent(url.password);
  const db = url.pathname.replace(/^\//, '');
  if (db) {
    if (!/^\d{1,2}$/.test(db)) throw new Error('a Redis URL path must be a database number');
    opts.db = Number(db);
  }
  if (url.protocol === 'rediss:') opts.tls = {};
  return opts;
}

/** For commands on a request's path: no queueing while disconnected, one retry, a short connect. */
export function fastFailOptions(connection: RedisEndpoint, connectTimeoutMs = 2000): RedisOptions {
  return { ...redisOptionsOf(connection), maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: connectTimeoutMs };
}

/** For blocking readers and background loops: commands wait for a reconnect rather than fail. */
export function patientOptions(connection: RedisEndpoint): RedisOptions {
  return { ...redisOptionsOf(connection), maxRetriesPerRequest: null };
}

/** Rejects with `what timed out` when the promise has not settled within ms. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
