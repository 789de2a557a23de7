// What the commands that talk to a pybox server share: the client from --url/--key or the
// environment, the exit code of a service error, and local files turned into input files.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { clientFromEnv, type PyboxClient } from '../client/client.ts';
import { PyboxClientError } from '../client/errors.ts';
import { FilePath, type InputFile } from '../core/schemas.ts';
import type { CliContext } from './context.ts';

/** Exit code of every command here when pybox itself could not be used (unreachable, refused, its fault). */
export const EXIT_SERVICE = 2;

export interface RemoteOptions {
  url?: string;
  key?: string;
}

export function clientFor(ctx: CliContext, opts: RemoteOptions, extra: { retries?: number; timeoutMs?: number } = {}): PyboxClient {
  // --url and --key win over the environment; empty means unset, as in clientFromEnv.
  return clientFromEnv({ PYBOX_URL: opts.url || ctx.env.PYBOX_URL, PYBOX_API_KEY: opts.key || ctx.env.PYBOX_API_KEY }, extra);
}

/** Text from a server, safe for a terminal: one line, no control characters (escape sequences). */
export function printable(text: string, max = 500): string {
  // eslint-disable-next-line no-control-regex
  const line = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');
  return line.length <= max ? line : `${line.slice(0, max - 1)}…`;
}

/** One line that says what went wrong with the service, with the first detail of a refused request. */
export function describeError(e: unknown): string {
  return printable(describeErrorText(e));
}

function describeErrorText(e: unknown): string {
  if (e instanceof PyboxClientError) {
    const details = Array.isArray(e.details) ? (e.details as Array<{ path?: unknown; message?: unknown }>) : [];
    const first = details[0];
    const detail = first && typeof first.message === 'string' ? ` (${typeof first.path === 'string' && first.path ? `${first.path}: ` : ''}${first.message}${details.length > 1 ? `; ${details.length - 1} more` : ''})` : '';
    return `${e.message}${detail}${e.status ? ` [${e.status} ${e.code}]` : ''}`;
  }
  return e instanceof Error ? e.message : String(e);
}

export function parseWholeNumber(what: string, min: number) {
  return (raw: string): number => {
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(Number(raw)) || Number(raw) < min) throw new InvalidArgumentError(`${what} must be a whole number of at least ${min}`);
    return Number(raw);
  };
}

export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** A local file as an input file: UTF-8 text as it is, anything else in base64. */
export function inputFileFrom(localPath: string, name: string): InputFile {
  const bytes = readFileSync(localPath);
  try {
    return { path: name, content: new TextDecoder('utf-8', { fatal: true }).decode(bytes), encoding: 'utf8' };
  } catch {
    return { path: name, content: bytes.toString('base64'), encoding: 'base64' };
  }
}

/** `PATH[=NAME]`: the local file and the name it gets in the sandbox (its base name by default). */
export function parseFileSpec(spec: string): { local: string; name: string } {
  const eq = spec.lastIndexOf('=');
  const local = eq > 0 ? spec.slice(0, eq) : spec;
  const name = eq > 0 ? spec.slice(eq + 1) : basename(spec);
  const checked = FilePath.safeParse(name);
  if (!checked.success) throw new InvalidArgumentError(`--file ${spec}: the name "${name}" ${checked.error.issues[0]?.message ?? 'is not allowed'}`);
  return { local, name };
}
