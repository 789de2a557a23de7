// `pybox keys create | list | revoke | bootstrap`, in-process against a temporary store (PYBOX_DB).
import { Command } from 'commander';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerKeys } from '../../src/cli/commands/keys.ts';
import { openDatabase } from '../../src/store/db.ts';
import { SqliteTenantStore } from '../../src/store/tenant-store.ts';
import { hashApiKey, KEY_FORMAT } from '../../src/tenancy/keys.ts';

let dir: string;
let db: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pybox-cli-keys-'));
  db = join(dir, 'pybox.db');
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function pybox(...args: string[]): Promise<{ out: string[]; err: string[]; failed: unknown }> {
  const out: string[] = [];
  const err: string[] = [];
  const program = new Command('pybox').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
  registerKeys(program, { env: { PYBOX_DB: db, PYBOX_CONFIG: 'config/default.yaml' }, out: (l) => out.push(l), err: (l) => err.push(l) });
  for (const c of program.commands) c.exitOverride();
  let failed: unknown;
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (e) {
    failed = e;
  }
  return { out, err, failed };
}

async function withStore<T>(fn: (s: SqliteTenantStore) => Promise<T>): Promise<T> {
  const handle = openDatabase(db);
  try {
    return await fn(new SqliteTenantStore(handle));
  } finally {
    handle.close();
  }
}

describe('pybox keys', () => {
  it('create prints the key once, as the last line, and stores only its hash', async () => {
    const { out, failed } = await pybox('keys', 'create', '--tenant', 'acme', '--max-concurrency', '3', '--rate-per-minute', '60', '--max-timeout-ms', '5000', '--max-memory-mb', '512', '--max-cpus', '0.5');
    expect(failed).toBeUndefined();
    const key = out.at(-1) as string;
    expect(key).toMatch(KEY_FORMAT);
    expect(out.slice(0, -1).join('\n')).not.toContain(key);
    expect(out[0]).toMatch(/^created key key_[0-9a-f]{12} for tenant acme$/);
    expect(out[1]).toBe('tenant acme: 3 at once, 60 requests/min, timeout <= 5000 ms, memory <= 512 MB, CPUs <= 0.5');
    const found = await withStore((s) => s.findKeyByHash(hashApiKey(key)));
    expect(found).toMatchObject({ tenant: 'acme', admin: false, revokedAt: null, limits: { maxConcurrency: 3, ratePerMinute: 60, maxTimeoutMs: 5000, maxMemoryMb: 512, maxCpus: 0.5 } });
    for (const f of readdirSync(dir)) expect(readFileSync(join(dir, f)).includes(Buffer.from(key.slice(4))), f).toBe(false);
  });

  it('create --admin makes an admin key; a second key of a tenant keeps the limits it does not name', async () => {
    await pybox('keys', 'create', '--tenant', 'acme', '--max-concurrency', '3', '--max-memory-mb', '512');
    const { out } = await pybox('keys', 'create', '--tenant', 'acme', '--admin', '--max-concurrency', '5');
    expect(out[0]).toContain('(admin: sees every tenant)');
    expect(out[1]).toBe("tenant acme: 5 at once, rate: server's, timeout: server's, memory <= 512 MB, CPUs: server's");
    expect(await withStore(async (s) => (await s.findKeyByHash(hashApiKey(out.at(-1) as string)))?.admin)).toBe(true);
  });

  it.each([
    [['--tenant', 'local'], /reserved/],
    [['--tenant', 'has space'], /tenant name/],
    [['--tenant', 'a', '--max-concurrency', '0'], /max concurrency must be a whole number of at least 1/],
    [['--tenant', 'a', '--max-memory-mb', '16'], /at least 32/],
    [['--tenant', 'a', '--max-cpus', 'lots'], /CPUs must be a number/],
    [['--max-concurrency', '2'], /required option '--tenant <name>'/],
  ])('create refuses %j', async (args, message) => {
    const { err, failed } = await pybox('keys', 'create', ...args);
    expect(failed).toBeDefined();
    expect(err.join('')).toMatch(message);
    expect(await withStore((s) => s.hasKeys())).toBe(false);
  });

  it('list shows ids, tenants, roles and limits, never a key', async () => {
    expect((await pybox('keys', 'list')).out).toEqual(['no keys: pybox runs in local mode (no authentication, loopback only)']);
    const a = (await pybox('keys', 'create', '--tenant', 'acme', '--rate-per-minute', '10')).out.at(-1) as string;
    const b = (await pybox('keys', 'create', '--tenant', 'ops', '--admin')).out.at(-1) as string;
    const { out } = await pybox('keys', 'list');
    const text = out.join('\n');
    expect(text).not.toContain(a.slice(4, 12));
    expect(text).not.toContain(b.slice(4, 12));
    expect(out[0]).toMatch(/^ID\s+TENANT\s+ADMIN\s+CREATED\s+REVOKED$/);
    expect(out[1]).toMatch(/^key_[0-9a-f]{12}\s+acme\s+no\s+\S+Z\s+-$/);
    expect(out[2]).toMatch(/^key_[0-9a-f]{12}\s+ops\s+yes\s+\S+Z\s+-$/);
    expect(text).toMatch(/acme\s+concurrency: server's, 10 requests\/min/);
    const json = JSON.parse((await pybox('keys', 'list', '--json')).out.join('\n')) as { keys: Array<{ tenant: string }>; tenants: unknown[] };
    expect(json.keys.map((k) => k.tenant)).toEqual(['acme', 'ops']);
    expect(JSON.stringify(json)).not.toContain(a.slice(4));
  });

  it('revoke takes a key id or the key itself, once, and refuses what it does not know without echoing it', async () => {
    const first = (await pybox('keys', 'create', '--tenant', 'acme')).out;
    const id = /key_[0-9a-f]{12}/.exec(first[0] as string)?.[0] as string;
    expect((await pybox('keys', 'revoke', id)).out).toEqual([`revoked key ${id} of tenant acme`]);
    expect((await pybox('keys', 'revoke', id)).out).toEqual([`key ${id} of tenant acme was already revoked`]);
    const key = (await pybox('keys', 'create', '--tenant', 'acme')).out.at(-1) as string;
    expect((await pybox('keys', 'revoke', key)).out[0]).toMatch(/^revoked key key_[0-9a-f]{12} of tenant acme$/);
    expect(await withStore(async (s) => (await s.findKeyByHash(hashApiKey(key)))?.revokedAt)).toEqual(expect.any(String));
    const unknown = 'pbx_' + 'Z'.repeat(43);
    const { failed } = await pybox('keys', 'revoke', unknown);
    expect(String(failed)).toContain('no such key');
    expect(String(failed)).not.toContain(unknown);
    expect((await pybox('keys', 'list')).out[2]).toMatch(/\d{4}-\d\d-\d\dT\S+Z$/); // the revoked one shows when
  });

  describe('bootstrap', () => {
    it('with no key yet, makes an admin key, writes it to a file of mode 600 and never to the output', async () => {
      const file = join(dir, 'admin.key');
      const { out, failed } = await pybox('keys', 'bootstrap', '--key-file', file, '--shown-as', 'deploy/secrets/admin.key');
      expect(failed).toBeUndefined();
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const key = readFileSync(file, 'utf8').trim();
      expect(key).toMatch(KEY_FORMAT);
      expect(out.join('\n')).not.toContain(key.slice(4, 12));
      expect(out[0]).toMatch(/^created admin key key_[0-9a-f]{12} for tenant admin: the key is in deploy\/secrets\/admin\.key /);
      expect(await withStore((s) => s.findKeyByHash(hashApiKey(key)))).toMatchObject({ tenant: 'admin', admin: true, revokedAt: null });
      expect(readdirSync(dir).sort()).toEqual(['admin.key', 'pybox.db']); // no temporary file left
    });

    it('does nothing once a key exists, even a revoked one: the file and the store stay as they were', async () => {
      const file = join(dir, 'admin.key');
      await pybox('keys', 'bootstrap', '--key-file', file);
      const first = readFileSync(file, 'utf8');
      const again = await pybox('keys', 'bootstrap', '--key-file', file);
      expect(again.failed).toBeUndefined();
      expect(again.out[0]).toMatch(/^API keys exist already: nothing to do/);
      expect(readFileSync(file, 'utf8')).toBe(first);
      await pybox('keys', 'revoke', first.trim());
      await pybox('keys', 'bootstrap', '--key-file', file);
      expect(await withStore(async (s) => (await s.keys()).length)).toBe(1);

      const other = join(dir, 'other.key');
      expect((await pybox('keys', 'bootstrap', '--key-file', other)).out[0]).toMatch(/nothing to do/);
      expect(existsSync(other)).toBe(false);
    });

    it('replaces a stale file (a key of a store that is gone) and a link planted at its name, without writing through the link', async () => {
      const file = join(dir, 'admin.key');
      writeFileSync(file, 'pbx_old\n');
      await pybox('keys', 'bootstrap', '--key-file', file);
      expect(readFileSync(file, 'utf8').trim()).toMatch(KEY_FORMAT);

      db = join(dir, 'another-store.db'); // the store is gone (docker-compose down -v)
      const target = join(dir, 'target');
      writeFileSync(target, 'untouched');
      rmSync(file);
      symlinkSync(target, file);
      const { failed } = await pybox('keys', 'bootstrap', '--key-file', file);
      expect(failed).toBeUndefined();
      expect(readFileSync(target, 'utf8')).toBe('untouched');
      expect(statSync(file).mode & 0o777).toBe(0o600); // a file of its own now, not the link
      expect(readFileSync(file, 'utf8').trim()).toMatch(KEY_FORMAT);
    });

    it('makes no key when the file cannot be written', async () => {
      const { failed } = await pybox('keys', 'bootstrap', '--key-file', join(dir, 'missing', 'admin.key'));
      expect(String(failed)).toMatch(/ENOENT/);
      expect(await withStore((s) => s.hasKeys())).toBe(false);
    });
  });
});
