// The pino-backed logger: one JSON object per line with a level name and an ISO time, levels that
// filter, credentials taken out of fields and messages, and readable lines on a terminal.
import { describe, expect, it } from 'vitest';
import { clean, createLogger, REDACTED, scrub, type LoggerOptions } from '../../src/core/logger.ts';

/** A destination that keeps what was written; `isTTY` says whether it poses as a terminal. */
function sink(isTTY = false) {
  const writes: string[] = [];
  return {
    writes,
    stream: { write: (s: string) => void writes.push(s), isTTY },
    /** Every line parsed as JSON: throws if one is not. */
    json: () => writes.join('').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

function logger(level: Parameters<typeof createLogger>[0] = 'debug', opts: Omit<LoggerOptions, 'destination'> = {}, isTTY = false) {
  const s = sink(isTTY);
  return { ...s, log: createLogger(level, { ...opts, destination: s.stream }) };
}

// A key shaped as `pybox keys create` prints one (pbx_ and 43 characters).
const KEY = `pbx_${'AbC9_-xY'.repeat(5)}zZ0`;

describe('createLogger (json)', () => {
  it('writes one JSON object per call, with the level by name, an ISO time, pid, host, the fields and msg', () => {
    const { log, writes, json } = logger('info');
    log.info('pybox listening on http://127.0.0.1:8080', { runtime: 'runc', image: 'pybox-python:0123456789ab' });
    expect(writes).toHaveLength(1);
    expect(writes[0]?.endsWith('\n')).toBe(true);
    const [line] = json();
    expect(line).toMatchObject({ level: 'info', pid: process.pid, runtime: 'runc', image: 'pybox-python:0123456789ab', msg: 'pybox listening on http://127.0.0.1:8080' });
    expect(typeof line?.hostname).toBe('string');
    expect(new Date(String(line?.time)).toISOString()).toBe(line?.time);
    // What the tests of a real process look for stays findable in the raw line.
    expect(writes[0]).toMatch(/pybox listening on http:\/\/127\.0\.0\.1:8080"/);
  });

  it('filters by level: below the configured one nothing is written; silent writes nothing at all', () => {
    const warn = logger('warn');
    warn.log.debug('d');
    warn.log.info('i');
    warn.log.warn('w');
    warn.log.error('e');
    expect(warn.json().map((l) => [l.level, l.msg])).toEqual([
      ['warn', 'w'],
      ['error', 'e'],
    ]);
    const debug = logger('debug');
    debug.log.debug('d');
    expect(debug.json().map((l) => l.level)).toEqual(['debug']);
    const silent = logger('silent');
    for (const m of ['debug', 'info', 'warn', 'error'] as const) silent.log[m]('x', { a: 1 });
    expect(silent.writes).toEqual([]);
  });

  it('adds base fields to every line', () => {
    const { log, json } = logger('info', { base: { role: 'worker', nodeId: 'w1' } });
    log.info('a');
    log.warn('b', { n: 1 });
    expect(json().map((l) => [l.role, l.nodeId])).toEqual([
      ['worker', 'w1'],
      ['worker', 'w1'],
    ]);
  });

  it('writes an Error as its message, drops undefined and functions, keeps numbers, booleans and null', () => {
    const { log, json } = logger('info');
    log.error('failed', { error: new TypeError('boom'), gone: undefined, fn: () => 1, n: 3, ok: false, none: null, nested: { e: new Error('inner') } });
    const [line] = json();
    expect(line).toMatchObject({ error: 'boom', n: 3, ok: false, none: null, nested: { e: 'inner' } });
    expect(line).not.toHaveProperty('gone');
    expect(line).not.toHaveProperty('fn');
  });

  it('redacts authorization and cookie fields, at the top and one level down', () => {
    const { log, writes, json } = logger('info');
    log.info('headers', { authorization: `Bearer ${KEY}`, headers: { authorization: `Bearer ${KEY}`, cookie: 'session=s3cr3t', accept: 'application/json' }, password: 'hunter2' });
    const [line] = json();
    expect(line).toMatchObject({ authorization: REDACTED, headers: { authorization: REDACTED, cookie: REDACTED, accept: 'application/json' }, password: REDACTED });
    const raw = writes.join('');
    for (const secret of [KEY.slice(4), 's3cr3t', 'hunter2']) expect(raw).not.toContain(secret);
  });

  it('takes credentials out of messages and string fields: URL passwords, libpq passwords, API keys, bearer tokens', () => {
    const { log, writes, json } = logger('info');
    const pgError = new Error('cannot open the store at postgres://pybox:Pg-Pa55word@db.internal:5432/pybox: connection refused');
    log.warn(`could not reach redis://:R3dis-Pa55@cache:6379/0`, {
      error: pgError,
      dsn: 'host=db user=pybox password=Pq-Pa55 dbname=pybox',
      said: `Authorization: Bearer ${KEY}`,
      key: `the key ${KEY} was revoked`,
      stack: `Error: x\n    at connect (postgres://u:Stack-Pa55@h/db)`,
    });
    const raw = writes.join('');
    for (const secret of ['Pg-Pa55word', 'R3dis-Pa55', 'Pq-Pa55', KEY.slice(4), 'Stack-Pa55']) expect(raw).not.toContain(secret);
    const [line] = json();
    expect(line?.msg).toBe(`could not reach redis://:${REDACTED}@cache:6379/0`);
    expect(line?.error).toBe(`cannot open the store at postgres://pybox:${REDACTED}@db.internal:5432/pybox: connection refused`);
    expect(line?.dsn).toBe(`host=db user=pybox password=${REDACTED} dbname=pybox`);
  });

  it('builds independent loggers: two destinations, two levels, nothing shared', () => {
    const a = logger('info');
    const b = logger('error');
    a.log.info('to a');
    b.log.info('not to b');
    b.log.error('to b');
    expect(a.json().map((l) => l.msg)).toEqual(['to a']);
    expect(b.json().map((l) => l.msg)).toEqual(['to b']);
  });
});

describe('createLogger (pretty)', () => {
  it('auto: pretty, coloured lines on a terminal; the message text is there as it is', () => {
    const { log, writes } = logger('info', {}, true);
    log.info('pybox listening on http://127.0.0.1:8080', { runtime: 'runc' });
    const text = writes.join('');
    expect(() => JSON.parse(text)).toThrow();
    expect(text).toContain('pybox listening on http://127.0.0.1:8080');
    expect(text).toContain('INFO');
    expect(text).toContain('runtime');
    expect(text).toContain('\u001b['); // coloured
    expect(text).not.toContain(String(process.pid)); // pid and host are left out for people
  });

  it('auto: JSON when the destination is not a terminal; json forces JSON on a terminal', () => {
    const piped = logger('info', { format: 'auto' }, false);
    piped.log.info('a');
    expect(piped.json()).toHaveLength(1);
    const forced = logger('info', { format: 'json' }, true);
    forced.log.info('b');
    expect(forced.json().map((l) => l.msg)).toEqual(['b']);
  });

  it('pretty on a pipe when asked: readable but without colour codes, and still scrubbed', () => {
    const { log, writes } = logger('info', { format: 'pretty' }, false);
    log.warn('connecting', { url: 'postgres://u:Pretty-Pa55@h/db', authorization: 'Bearer abc' });
    const text = writes.join('');
    expect(text).toContain('WARN');
    expect(text).toContain('connecting');
    expect(text).not.toContain('\u001b[');
    expect(text).not.toContain('Pretty-Pa55');
    expect(text).not.toContain('Bearer abc');
  });
});

describe('scrub and clean', () => {
  it('caps a long string and says how much was cut', () => {
    const s = scrub('x'.repeat(10_000));
    expect(s.length).toBeLessThan(4100);
    expect(s).toMatch(/…\[6000 more chars\]$/);
  });

  it('leaves ordinary text alone', () => {
    for (const t of ['pybox listening on http://127.0.0.1:8080', 'https://host/path?x=1', 'a:b@c', 'no password here', 'sandboxes run under runc']) expect(scrub(t)).toBe(t);
  });

  it('stops at a depth and never follows a buffer', () => {
    expect(clean({ a: { b: { c: { d: { e: 1 } } } } }, 0)).toEqual({ a: { b: { c: { d: '[nested]' } } } });
    expect(clean({ data: Buffer.from('secret bytes') }, 0)).toEqual({ data: '[12 bytes]' });
  });
});
