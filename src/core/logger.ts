// pybox's logger: pino underneath, one JSON object per line on stderr, or pino-pretty's readable
// lines when a person watches a terminal. main.ts builds one and hands it down; nothing here is a
// logger of the module's own but silentLogger, which writes nothing.
//
// Whatever reaches a line passes through `clean` first: errors become their message, and strings
// lose what looks like a credential (a URL's password, an API key, a bearer token). That is the
// second line of defence; the first is that no caller logs code, output, input or keys at all.
import { hostname } from 'node:os';
import pino, { type DestinationStream, type Logger as PinoLogger } from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { Logger } from './ports.ts';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** json: one object per line; pretty: for people; auto: pretty on a terminal, else json. */
export const LOG_FORMATS = ['json', 'pretty', 'auto'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Where lines go: anything with write(string). `isTTY` true makes `auto` choose pretty. */
export type LogDestination = { write(line: string): unknown; isTTY?: boolean | undefined };

export interface LoggerOptions {
  /** auto when absent. */
  format?: LogFormat | undefined;
  /** stderr when absent (tests pass a stream and read its lines). */
  destination?: LogDestination | undefined;
  /** Fields on every line besides pid and hostname. */
  base?: Record<string, unknown> | undefined;
}

/** Fields that hold a secret wherever they appear, one object level deep. */
const REDACTED_PATHS = ['authorization', 'cookie', 'password', 'apiKey', 'headers.authorization', 'headers.cookie', 'headers["set-cookie"]', 'req.headers.authorization', 'req.headers.cookie', '*.authorization', '*.cookie', '*.password', '*.apiKey'];
export const REDACTED = '[redacted]';

/** Longest string a field keeps: a stack trace is long enough, a runaway message is cut. */
const MAX_FIELD_CHARS = 4000;
/** How deep nested fields are followed; deeper values become a placeholder. */
const MAX_FIELD_DEPTH = 4;

export function createLogger(level: LogLevel, opts: LoggerOptions = {}): Logger {
  const destination = opts.destination ?? process.stderr;
  const wantsPretty = opts.format === 'pretty' || ((opts.format ?? 'auto') === 'auto' && destination.isTTY === true);
  const common = {
    level,
    base: { pid: process.pid, hostname: hostname(), ...opts.base },
    redact: { paths: REDACTED_PATHS, censor: REDACTED },
  };
  const out = destination === process.stderr ? pino.destination({ dest: 2, sync: true }) : destination;
  let p: PinoLogger;
  if (wantsPretty) {
    // pino writes its JSON line, pino-pretty turns it into text in the same call: nothing is buffered
    // in a worker or a stream that process.exit could cut short.
    const prettify = prettyFactory({ colorize: destination.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
    p = pino(common, { write: (line: string) => out.write(prettify(line)) });
  } else {
    // Synchronous writes (sonic-boom on stderr): the last lines before process.exit are not lost.
    p = pino({ ...common, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } }, out as DestinationStream);
  }
  const emit = (lvl: Exclude<LogLevel, 'silent'>) => (msg: string, fields?: Record<string, unknown>) => {
    if (!p.isLevelEnabled(lvl)) return;
    if (fields === undefined) p[lvl](scrub(msg));
    else p[lvl](clean(fields, 0) as Record<string, unknown>, scrub(msg));
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

const noop = () => {};
/** Writes nothing: for tests and tools that want no log. */
export const silentLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

/**
 * A field's value as it may be written: an Error as its (scrubbed) message, strings scrubbed and
 * capped, objects and arrays followed a few levels, undefined left out, functions dropped.
 */
export function clean(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return scrub(value);
  if (value === null || typeof value === 'number' || typeof value === 'boolean') return value;
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return scrub(value.message);
  if (value instanceof Date) return value.toISOString();
  if (typeof value !== 'object') return undefined;
  if (depth >= MAX_FIELD_DEPTH) return '[nested]';
  if (Array.isArray(value)) return value.slice(0, 100).map((v) => clean(v, depth + 1));
  if (Buffer.isBuffer(value) || ArrayBuffer.isView(value)) return `[${value.byteLength} bytes]`;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const c = clean(v, depth + 1);
    if (c !== undefined) out[k] = c;
  }
  return out;
}

/**
 * Credentials a message may carry by accident: a connection URL's password (postgres://u:pw@h,
 * redis://:pw@h), a libpq `password=...`, a pybox API key, a bearer token.
 */
export function scrub(text: string): string {
  const capped = text.length > MAX_FIELD_CHARS ? `${text.slice(0, MAX_FIELD_CHARS)}…[${text.length - MAX_FIELD_CHARS} more chars]` : text;
  return capped
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#@:]*):[^\s/?#@]*@/gi, `$1$2:${REDACTED}@`)
    .replace(/\b(password|passwd|pwd)=("[^"]*"|'[^']*'|[^\s&;]+)/gi, `$1=${REDACTED}`)
    .replace(/\bpbx_[A-Za-z0-9_-]{8,}/g, `pbx_${REDACTED}`)
    .replace(/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi, `$1 ${REDACTED}`);
}
