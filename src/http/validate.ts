// Request parsing: media type, JSON syntax and schema, each failing with its own error code, so
// handlers only ever see a value that passed its zod schema. The size limit is middleware.ts's.
import type { Context } from 'hono';
import type { z } from 'zod';
import { PyboxError } from '../core/errors.ts';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../core/json-depth.ts';

export interface IssueDetail {
  path: string;
  message: string;
}

/** `files[0].path`, the same notation the service uses in its own invalid_request details. */
function formatPath(path: ReadonlyArray<PropertyKey>): string {
  return path.reduce<string>((acc, key) => {
    if (typeof key === 'number') return `${acc}[${key}]`;
    const name = String(key);
    return acc === '' ? name : `${acc}.${name}`;
  }, '');
}

/** The invalid_request error for a failed zod parse of `what` ('request body', 'query'). */
export function invalidRequest(error: z.ZodError, what: string): PyboxError {
  // An unknown field is reported at its own path, so a client sees which one to drop; a bad key
  // of a record (a context variable's name) with the reason the key was refused.
  const details: IssueDetail[] = error.issues.flatMap((i) => {
    if (i.code === 'unrecognized_keys') return i.keys.map((key) => ({ path: formatPath([...i.path, key]), message: 'unknown field' }));
    if (i.code === 'invalid_key') return [{ path: formatPath(i.path), message: `invalid name: ${i.issues.map((k) => k.message).join('; ')}` }];
    return [{ path: formatPath(i.path), message: i.message }];
  });
  const first = details[0];
  const summary = first ? `${first.path || what}: ${first.message}` : 'invalid';
  return new PyboxError('invalid_request', `invalid ${what}: ${summary}`, { details });
}

function validated<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw invalidRequest(parsed.error, what);
}

function isJsonMediaType(header: string | undefined): boolean {
  const type = header?.split(';')[0]?.trim().toLowerCase();
  return type === 'application/json';
}

// Shared with the agent tools, which count a tool's arguments as this counts a body.
export { MAX_JSON_DEPTH, nestsDeeperThan } from '../core/json-depth.ts';

/**
 * A lone surrogate: with the `u` flag a well-formed pair is one code point, so only an unpaired
 * half (from a `\ud800` escape in the JSON; Node decodes raw bytes with replacement characters) is
 * in the surrogate category. The same test as String.prototype.isWellFormed, which ES2023's
 * typings lack.
 */
const LONE_SURROGATE = /\p{Surrogate}/u;

interface Visit {
  value: unknown;
  key: string | number | undefined;
  parent: Visit | undefined;
}

function pathOf(v: Visit): string {
  const keys: Array<string | number> = [];
  for (let at: Visit | undefined = v; at?.key !== undefined; at = at.parent) keys.unshift(at.key);
  return formatPath(keys);
}

/**
 * The path of a string (value or key, anywhere) that is not well-formed UTF-16, or
 * undefined. Such a string cannot be encoded as UTF-8 for the sandbox: it reached the runner as a
 * fault reported as the code's own (exit code 70), so it is refused at the edge. Iterative, like
 * nestsDeeperThan; run that first, so the depth is bounded.
 */
export function illFormedStringAt(value: unknown): string | undefined {
  const stack: Visit[] = [{ value, key: undefined, parent: undefined }];
  while (stack.length > 0) {
    const v = stack.pop() as Visit;
    if (typeof v.value === 'string') {
      if (LONE_SURROGATE.test(v.value)) return pathOf(v);
      continue;
    }
    if (v.value === null || typeof v.value !== 'object') continue;
    if (Array.isArray(v.value)) {
      v.value.forEach((child, i) => stack.push({ value: child, key: i, parent: v }));
      continue;
    }
    for (const [key, child] of Object.entries(v.value)) {
      if (LONE_SURROGATE.test(key)) return pathOf({ value: child, key, parent: v });
      stack.push({ value: child, key, parent: v });
    }
  }
  return undefined;
}

/** Reads the body as JSON and checks it against `schema`. The size limit runs earlier, as middleware. */
export async function readJson<S extends z.ZodType>(c: Context, schema: S): Promise<z.output<S>> {
  if (!isJsonMediaType(c.req.header('content-type'))) {
    throw new PyboxError('unsupported_media_type', 'the request body must be application/json');
  }
  const text = await c.req.text();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new PyboxError('invalid_request', `the request body is not valid JSON: ${e instanceof Error ? e.message : 'parse error'}`);
  }
  if (nestsDeeperThan(value, MAX_JSON_DEPTH)) {
    throw new PyboxError('invalid_request', `the request body nests deeper than ${MAX_JSON_DEPTH} levels`);
  }
  const illFormed = illFormedStringAt(value);
  if (illFormed !== undefined) {
    const message = 'must be well-formed Unicode: it holds a lone surrogate (an unpaired \\ud800-\\udfff escape)';
    const where = illFormed === '' ? 'request body' : illFormed;
    throw new PyboxError('invalid_request', `invalid request body: ${where}: ${message}`, { details: [{ path: illFormed, message }] });
  }
  return validated(schema, value, 'request body');
}

/** Checks the query string against `schema`; a repeated parameter keeps its first value. */
export function readQuery<S extends z.ZodType>(c: Context, schema: S): z.output<S> {
  return validated(schema, c.req.query(), 'query');
}
