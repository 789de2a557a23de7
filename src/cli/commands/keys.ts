// `pybox keys create | list | revoke | bootstrap`: API keys and the tenants they belong to, in the same store
// as the history (PYBOX_DB, else store.path of PYBOX_CONFIG or config/default.yaml). A running
// server sees a change on its next request. The plaintext of a key is printed once, as the last
// line of `keys create`, and kept nowhere: the store has its SHA-256 only. `keys bootstrap` is the
// one exception, for deployments started unattended: it writes the first key to a file of the
// operator's (mode 600) instead of printing it, and only while the store holds no key at all.
import { InvalidArgumentError, type Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { LOCAL_TENANT, TENANT_NAME, type TenantLimits } from '../../core/caller.ts';
import { loadConfig } from '../../config/load.ts';
import type { TenantRecord, TenantStore } from '../../core/ports.ts';
import { openTenantStore } from '../../store/open.ts';
import { hashApiKey, KEY_FORMAT, newApiKey, newKeyId } from '../../tenancy/keys.ts';
import type { CliContext } from '../context.ts';

function integer(min: number, what: string) {
  return (raw: string): number => {
    if (!/^\d+$/.test(raw.trim()) || Number(raw) < min || !Number.isSafeInteger(Number(raw))) {
      throw new InvalidArgumentError(`${what} must be a whole number of at least ${min}`);
    }
    return Number(raw);
  };
}

function cpus(raw: string): number {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0.05 || n > 64) throw new InvalidArgumentError('CPUs must be a number from 0.05 to 64');
  return n;
}

function tenantName(raw: string): string {
  if (!TENANT_NAME.test(raw)) throw new InvalidArgumentError('a tenant name is 1-64 letters, digits, _ . - (starting with a letter or digit)');
  if (raw === LOCAL_TENANT) throw new InvalidArgumentError(`"${LOCAL_TENANT}" is reserved for executions run without keys (local mode)`);
  return raw;
}

/** The store the server uses: SQLite at store.path, or the cluster's PostgreSQL when one is configured. */
async function withStore<T>(ctx: CliContext, fn: (store: TenantStore) => Promise<T>): Promise<T> {
  const store = await openTenantStore(loadConfig({ path: ctx.env.PYBOX_CONFIG ?? 'config/default.yaml', env: ctx.env }));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export function describeLimits(l: TenantLimits): string {
  const part = (v: number | null, text: (v: number) => string, what: string) => (v === null ? `${what}: server's` : text(v));
  return [
    part(l.maxConcurrency, (v) => `${v} at once`, 'concurrency'),
    part(l.ratePerMinute, (v) => `${v} requests/min`, 'rate'),
    part(l.maxTimeoutMs, (v) => `timeout <= ${v} ms`, 'timeout'),
    part(l.maxMemoryMb, (v) => `memory <= ${v} MB`, 'memory'),
    part(l.maxCpus, (v) => `CPUs <= ${v}`, 'CPUs'),
  ].join(', ');
}

interface CreateOptions {
  tenant: string;
  admin?: boolean;
  maxConcurrency?: number;
  ratePerMinute?: number;
  maxTimeoutMs?: number;
  maxMemoryMb?: number;
  maxCpus?: number;
}

/**
 * Puts `key` in a new file at `path`, readable by its owner only, replacing whatever was there
 * (a key of a store that is gone). The file is made new (O_EXCL, never through a link planted at
 * that name) and renamed into place, so a reader sees the whole key or no file.
 */
function writeKeyFile(path: string, key: string): void {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temp, 'wx', 0o600);
  try {
    writeSync(fd, key + '\n');
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(temp, path);
  } catch (e) {
    rmSync(temp, { force: true });
    throw e;
  }
}

function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
}

export function registerKeys(program: Command, ctx: CliContext): void {
  const keys = program.command('keys').description('API keys and tenants (stored hashed next to the history, PYBOX_DB)');

  keys
    .command('create')
    .description('create a key for a tenant (created if new) and print it once, as the last line')
    .requiredOption('--tenant <name>', 'the tenant the key belongs to', tenantName)
    .option('--admin', "the key also sees every tenant's executions, stats and usage")
    .option('--max-concurrency <n>', "the tenant's executions running or waiting at once", integer(1, 'max concurrency'))
    .option('--rate-per-minute <n>', "the tenant's requests per minute", integer(1, 'rate per minute'))
    .option('--max-timeout-ms <ms>', "the tenant's largest timeout (within the server's)", integer(100, 'max timeout'))
    .option('--max-memory-mb <mb>', "the tenant's largest memory limit (within the server's)", integer(32, 'max memory'))
    .option('--max-cpus <n>', "the tenant's largest CPU share (within the server's)", cpus)
    .addHelpText('after', "\nLimits given replace the tenant's current ones; limits left out are kept (none for a new tenant).")
    .action(async (opts: CreateOptions) => {
      const key = newApiKey();
      const { key: info, tenant } = await withStore(ctx, (store) =>
        store.createKey({
          id: newKeyId(),
          tenant: opts.tenant,
          admin: opts.admin === true,
          hash: hashApiKey(key),
          limits: {
            maxConcurrency: opts.maxConcurrency,
            ratePerMinute: opts.ratePerMinute,
            maxTimeoutMs: opts.maxTimeoutMs,
            maxMemoryMb: opts.maxMemoryMb,
            maxCpus: opts.maxCpus,
          },
        }),
      );
      ctx.out(`created key ${info.id} for tenant ${tenant.name}${info.admin ? ' (admin: sees every tenant)' : ''}`);
      ctx.out(`tenant ${tenant.name}: ${describeLimits(tenant.limits)}`);
      ctx.out('the key is shown only this once (pybox keeps its hash); send it as "Authorization: Bearer <key>":');
      ctx.out(key);
    });

  keys
    .command('bootstrap')
    .description('when the store holds no key yet, create an admin key and write it to a file (mode 600), never to the output; otherwise do nothing')
    .requiredOption('--key-file <path>', 'the file to write the key to (replaced if it exists)')
    .option('--tenant <name>', 'the tenant the admin key belongs to', tenantName, 'admin')
    .option('--shown-as <path>', 'how the operator reaches the key file (outside a container), for the messages')
    .action(async (opts: { keyFile: string; tenant: string; shownAs?: string }) => {
      const shown = opts.shownAs ?? opts.keyFile;
      const made = await withStore(ctx, async (store) => {
        if (await store.hasKeys()) return undefined;
        const key = newApiKey();
        // The file first, then the key: a crash between the two leaves a file whose key the store
        // does not know, and the next bootstrap (which still finds no key) replaces it. The other
        // order could leave an admin key that nobody holds, and no bootstrap would run again.
        // Two bootstraps at once may both make a key; the file holds one and the other is held by
        // nobody.
        writeKeyFile(opts.keyFile, key);
        try {
          return await store.createKey({ id: newKeyId(), tenant: opts.tenant, admin: true, hash: hashApiKey(key), limits: {} });
        } catch (e) {
          rmSync(opts.keyFile, { force: true });
          throw e;
        }
      });
      if (made === undefined) {
        ctx.out(`API keys exist already: nothing to do (\`pybox keys list\` shows them; \`pybox keys create\` makes more)`);
        return;
      }
      ctx.out(`created admin key ${made.key.id} for tenant ${made.tenant.name}: the key is in ${shown} (readable by its owner only)`);
      ctx.out('send it as "Authorization: Bearer <key>"; local mode is over: every request needs a key from now on');
    });

  keys
    .command('list')
    .description('list keys (never their secrets) and the limits of their tenants')
    .option('--json', 'one JSON document instead of tables')
    .action(async (opts: { json?: boolean }) => {
      const { list, tenants } = await withStore(ctx, async (store) => ({ list: await store.keys(), tenants: await store.tenants() }));
      if (opts.json) {
        ctx.out(JSON.stringify({ keys: list, tenants }, null, 2));
        return;
      }
      if (list.length === 0) {
        ctx.out('no keys: pybox runs in local mode (no authentication, loopback only)');
        return;
      }
      const rows = [['ID', 'TENANT', 'ADMIN', 'CREATED', 'REVOKED'], ...list.map((k) => [k.id, k.tenant, k.admin ? 'yes' : 'no', k.createdAt, k.revokedAt ?? '-'])];
      for (const line of table(rows)) ctx.out(line);
      ctx.out('');
      for (const line of table([['TENANT', 'LIMITS'], ...tenants.map((t: TenantRecord) => [t.name, describeLimits(t.limits)])])) ctx.out(line);
    });

  keys
    .command('revoke')
    .description('revoke a key, by its id (key_...) or the key itself; a running server refuses it from its next request')
    .argument('<key-or-id>', 'the key id shown by `keys list`, or the key')
    .action(async (keyOrId: string) => {
      const outcome = await withStore(ctx, async (store) => {
        const id = await store.resolveKeyId(KEY_FORMAT.test(keyOrId) ? { hash: hashApiKey(keyOrId) } : { id: keyOrId });
        if (id === undefined) return undefined;
        const revoked = await store.revokeKey(id);
        return { id, revoked, tenant: (await store.key(id))?.tenant ?? '?' };
      });
      // Never echo what was given: it may be a key.
      if (!outcome) throw new Error('no such key (give a key id from `pybox keys list`, or the key itself)');
      ctx.out(outcome.revoked ? `revoked key ${outcome.id} of tenant ${outcome.tenant}` : `key ${outcome.id} of tenant ${outcome.tenant} was already revoked`);
    });
}
