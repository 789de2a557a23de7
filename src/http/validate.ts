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

function validated<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  // An unknown field is reported at its own path, so a client sees which one to drop; a bad key
  // of a record (a context variable's name) with the reason the key was refused.
  const details: IssueDetail[] = parsed.error.issues.flatMap((i) => {
    if (i.code === 'unrecognized_keys') return i.keys.map((key) => ({ path: formatPath([...i.path, key]), message: 'unknown field' }));
    if (i.code === 'invalid_key') return [{ path: formatPath(i.path), message: `invalid name: ${i.issues.map((k) => k.message).join('; ')}` }];
    return [{ path: formatPath(i.path), message: i.message }];
  });
  const first = details[0];
  const summary = first ? `${first.path || what}: ${first.message}` : 'invalid';
  throw new PyboxError('invalid_request', `invalid ${what}: ${summary}`, { details });
}

function isJsonMediaType(header: string | undefined): boolean {
  const type = header?.split(';')[0]?.trim().toLowerCase();
  return type === 'application/json';
}

// Shared with the agent tools, which count a tool's arguments as this counts a body.
export { MAX_JSON_DEPTH, nestsDeeperThan } from '../core/json-depth.ts';

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
  return validated(schema, value, 'request body');
}

/** Checks the query string against `schema`; a repeated parameter keeps its first value. */
export function readQuery<S extends z.ZodType>(c: Context, schema: S): z.output<S> {
  return validated(schema, c.req.query(), 'query');
}
