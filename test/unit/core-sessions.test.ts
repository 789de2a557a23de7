// SessionManager and SessionService over fake session sandboxes, with time moved by hand: caps,
// idle expiry and lifetime, one operation at a time, ended sessions (410), tenants kept apart, a
// sandbox that dies, and calls recorded as executions.
import { describe, expect, it } from 'vitest';
import { NO_TENANT_LIMITS, type Caller } from '../../src/core/caller.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { ExecutionResult, SessionInfo } from '../../src/core/schemas.ts';
import type { SessionManager } from '../../src/core/session-manager.ts';
import type { SessionHosts } from '../../src/core/sessions.ts';
import { settle, sessionStack } from '../support/fake-sessions.ts';

const caller = (tenant: string, limits: Partial<Caller['limits']> = {}): Caller => ({ tenant, keyId: `key-${tenant}`, admin: false, limits: { ...NO_TENANT_LIMITS, ...limits } });
const alice = caller('alice');
const bob = caller('bob');

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof PyboxError) return e.code;
    throw e;
  }
  return 'resolved';
}

describe('SessionService over SessionManager', () => {
  it('keeps state between calls and records each call as an execution of the tenant', async () => {
    const { service, store, sandboxes } = sessionStack();
    const info = await service.create(alice, { memoryMb: 512, env: { A: '1' }, files: [{ path: 'data.txt', content: 'hi', encoding: 'utf8' }] });
    expect(SessionInfo.parse(info)).toEqual(info);
    expect(info).toMatchObject({ state: 'active', runtime: 'runc', calls: 0, endedReason: null, idleTimeoutMs: 600_000 });
    expect(info.limits).toMatchObject({ memoryMb: 512, timeoutMs: 30_000 });
    const sandbox = sandboxes.byId(info.id);
    expect(sandbox.spec).toMatchObject({ image: 'pybox-python:test', runtime: 'runc', limits: { memoryMb: 512, cpus: 1 }, env: { A: '1' } });
    expect(sandbox.files.get('data.txt')?.toString()).toBe('hi');

    const first = await service.call(alice, info.id, { code: 'x = 41' });
    const second = await service.call(alice, info.id, { code: 'y = x + 1\nprint(y)' });
    expect(ExecutionResult.parse(second)).toEqual(second);
    expect(first.session).toEqual({ sessionId: info.id, call: 1, stateLost: false, ended: false });
    expect(second).toMatchObject({ status: 'completed', stdout: '42\n', session: { call: 2 } });
    expect(store.saved.map((r) => r.id)).toEqual([first.id, second.id]);
    expect((store as unknown as { meters: Map<string, { tenant: string; outputBytes: number }> }).meters.get(second.id)).toEqual({ tenant: 'alice', outputBytes: 3 });
    expect((await service.get(alice, info.id)).calls).toBe(2);
  });

  it('clamps limits to the tenant, the call timeout to its maximum and the idle timeout to the server', async () => {
    const { service, sandboxes } = sessionStack({ sessions: { idleTimeoutMs: 60_000 } });
    const limited = caller('small', { maxMemoryMb: 128, maxTimeoutMs: 5000 });
    const info = await service.create(limited, { memoryMb: 1024, timeoutMs: 20_000, idleTimeoutMs: 3_600_000 });
    expect(info.limits).toMatchObject({ memoryMb: 128, timeoutMs: 5000 });
    expect(info.idleTimeoutMs).toBe(60_000);
    await service.call(limited, info.id, { code: 'x = 1', timeoutMs: 100_000 });
    expect(sandboxes.byId(info.id).calls[0]!.timeoutMs).toBe(5000);
    const short = await service.create(limited, { idleTimeoutMs: 2000 });
    expect(short.idleTimeoutMs).toBe(2000);
    await expect(service.create(limited, { timeoutMs: 10 })).rejects.toMatchObject({ code: 'invalid_request' });
    await expect(service.create(limited, { files: [{ path: 'a', content: '%%%', encoding: 'base64' }] })).rejects.toMatchObject({ code: 'invalid_request' });
  });

  it('refuses sessions past the per-tenant cap (429 session_limit), counting those being created', async () => {
    const { service, sandboxes } = sessionStack({ sessions: { maxPerTenant: 2 } });
    let release!: () => void;
    sandboxes.gate = new Promise<void>((r) => (release = r));
    const a = service.create(alice, {});
    const b = service.create(alice, {});
    await settle();
    expect(await codeOf(service.create(alice, {}))).toBe('session_limit');
    release();
    sandboxes.gate = undefined;
    await Promise.all([a, b]);
    expect(await codeOf(service.create(alice, {}))).toBe('session_limit');
    // Another tenant has its own count.
    await service.create(bob, {});
    // Ending one makes room.
    await service.delete(alice, (await a).id);
    await service.create(alice, {});
  });

  it('takes a place from hosts several nodes share before opening, and gives it back when the open fails', async () => {
    // The places as the cluster's Redis keeps them: another node's open in progress holds one.
    const places = new Map<string, Set<string>>([['alice', new Set(['opening-elsewhere'])]]);
    const given: string[] = [];
    const shared = (manager: SessionManager): SessionHosts => ({
      open: (r, signal) => manager.open(r, signal),
      get: (id) => manager.get(id),
      // Never asked: shared hosts count in their places, not in this node's listing.
      list: () => Promise.reject(new Error('a shared host\'s sessions are not counted by listing them')),
      call: (id, job) => manager.call(id, job),
      putFiles: (id, files) => manager.putFiles(id, files),
      getFile: (id, path, max) => manager.getFile(id, path, max),
      listFiles: (id, max) => manager.listFiles(id, max),
      close: (id, reason) => manager.close(id, reason),
      reserve: async (tenant, id, max) => {
        const held = places.get(tenant) ?? new Set<string>();
        places.set(tenant, held);
        if (held.size >= max) return false;
        held.add(id);
        return true;
      },
      unreserve: async (tenant, id) => {
        given.push(id);
        places.get(tenant)?.delete(id);
      },
    });
    const { service, sandboxes } = sessionStack({ sessions: { maxPerTenant: 2 }, hosts: shared });
    const first = await service.create(alice, {});
    expect([...(places.get('alice') ?? [])]).toEqual(['opening-elsewhere', first.id]);
    // This node holds one session, but the tenant's two places are taken.
    expect(await codeOf(service.create(alice, {}))).toBe('session_limit');
    expect(given).toEqual([]);
    // An open that fails gives its place back.
    places.get('alice')?.delete('opening-elsewhere');
    sandboxes.failWith = new PyboxError('engine_unavailable', 'no engine');
    expect(await codeOf(service.create(alice, {}))).toBe('engine_unavailable');
    expect(given).toHaveLength(1);
    expect([...(places.get('alice') ?? [])]).toEqual([first.id]);
    sandboxes.failWith = undefined;
    expect((await service.create(alice, {})).state).toBe('active');
    expect(places.get('alice')?.size).toBe(2);
  });

  it('refuses sessions past the per-host cap (session_limit), whatever the tenant', async () => {
    const { service } = sessionStack({ sessions: { maxPerHost: 2 } });
    await service.create(alice, {});
    await service.create(bob, {});
    const refused = await service.create(caller('carol'), {}).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'session_limit', details: { limit: 'sessions_per_host', max: 2 } });
  });

  it('ends a session left idle (idle timeout from the last use), then answers 410 with the reason', async () => {
    const { service, time, sandboxes } = sessionStack();
    const info = await service.create(alice, { idleTimeoutMs: 10_000 });
    await time.advance(8000);
    await service.call(alice, info.id, { code: 'x = 1' }); // use resets the idle clock
    await time.advance(8000);
    expect((await service.get(alice, info.id)).state).toBe('active');
    await service.listFiles(alice, info.id); // file operations are use too
    await time.advance(9999);
    expect((await service.get(alice, info.id)).state).toBe('active');
    await time.advance(1);
    expect(sandboxes.byId(info.id).closed).toBe(true);
    const ended = await service.call(alice, info.id, { code: 'print(x)' }).catch((e: unknown) => e);
    expect(ended).toMatchObject({ code: 'session_ended', details: { reason: 'idle' } });
    expect(await service.get(alice, info.id)).toMatchObject({ state: 'ended', endedReason: 'idle' });
    expect((await service.list(alice)).items).toEqual([]);
  });

  it('does not end a session idle while a call runs; the idle clock starts when it is over', async () => {
    const { service, time } = sessionStack();
    const info = await service.create(alice, { idleTimeoutMs: 5000 });
    const controller = new AbortController();
    const running = service.call(alice, info.id, { code: 'sleep' }, { signal: controller.signal });
    await settle();
    await time.advance(20_000);
    expect((await service.get(alice, info.id)).state).toBe('active');
    controller.abort();
    await running;
    await time.advance(4999);
    expect((await service.get(alice, info.id)).state).toBe('active');
    await time.advance(1);
    expect((await service.get(alice, info.id)).state).toBe('ended');
  });

  it('ends a session at its maximum lifetime however busy it is', async () => {
    const { service, time, sandboxes } = sessionStack({ sessions: { maxLifetimeMs: 30_000, idleTimeoutMs: 20_000 } });
    const info = await service.create(alice, {});
    expect(Date.parse(info.expiresAt) - Date.parse(info.createdAt)).toBe(30_000);
    for (let i = 0; i < 5; i++) {
      await time.advance(5000);
      await service.call(alice, info.id, { code: 'x = 1' });
    }
    await time.advance(5000);
    expect(sandboxes.byId(info.id).closed).toBe(true);
    expect(await service.call(alice, info.id, { code: 'x = 1' }).catch((e: unknown) => e)).toMatchObject({ code: 'session_ended', details: { reason: 'lifetime' } });
  });

  it('refuses a second operation while a call runs (session_busy), and the abort signal interrupts the call', async () => {
    const { service, store } = sessionStack();
    const info = await service.create(alice, {});
    const controller = new AbortController();
    const running = service.call(alice, info.id, { code: 'sleep' }, { signal: controller.signal });
    await settle();
    expect(await codeOf(service.call(alice, info.id, { code: 'x = 1' }))).toBe('session_busy');
    expect(await codeOf(service.putFiles(alice, info.id, { files: [{ path: 'a.txt', content: 'a', encoding: 'utf8' }] }))).toBe('session_busy');
    expect(await codeOf(service.getFile(alice, info.id, 'a.txt'))).toBe('session_busy');
    controller.abort();
    const result = await running;
    expect(result.status).toBe('cancelled');
    expect(store.saved.map((r) => r.status)).toEqual(['cancelled']);
    // Free again.
    expect((await service.call(alice, info.id, { code: 'x = 1' })).status).toBe('completed');
  });

  it("answers another tenant's session exactly as an unknown one (404), ended ones included", async () => {
    const { service } = sessionStack();
    const info = await service.create(alice, {});
    const unknown = await service.get(bob, 'no-such-id').catch((e: unknown) => e);
    const foreign = await service.get(bob, info.id).catch((e: unknown) => e);
    expect(foreign).toBeInstanceOf(PyboxError);
    expect((foreign as PyboxError).code).toBe('not_found');
    expect((foreign as PyboxError).message).toBe((unknown as PyboxError).message.replace('no-such-id', info.id));
    for (const op of [
      () => service.call(bob, info.id, { code: 'x = 1' }),
      () => service.delete(bob, info.id),
      () => service.listFiles(bob, info.id),
      () => service.getFile(bob, info.id, 'a'),
      () => service.putFiles(bob, info.id, { files: [{ path: 'a', content: '', encoding: 'utf8' }] }),
    ]) {
      expect(await codeOf(op())).toBe('not_found');
    }
    expect((await service.list(bob)).items).toEqual([]);
    await service.delete(alice, info.id);
    expect(await codeOf(service.call(bob, info.id, { code: 'x = 1' }))).toBe('not_found');
    expect(await codeOf(service.call(alice, info.id, { code: 'x = 1' }))).toBe('session_ended');
  });

  it('deletes a session (its sandbox removed); deleting again answers its final state', async () => {
    const { service, sandboxes } = sessionStack();
    const info = await service.create(alice, {});
    const deleted = await service.delete(alice, info.id);
    expect(deleted).toMatchObject({ id: info.id, state: 'ended', endedReason: 'deleted' });
    expect(sandboxes.byId(info.id).closed).toBe(true);
    expect(await service.delete(alice, info.id)).toEqual(deleted);
    expect(await codeOf(service.listFiles(alice, info.id))).toBe('session_ended');
  });

  it('ends the session when its sandbox dies on its own, and when a call loses it', async () => {
    const { service, sandboxes, manager } = sessionStack();
    const a = await service.create(alice, {});
    sandboxes.byId(a.id).die();
    await settle();
    expect(await manager.list()).toHaveLength(0);
    expect(await service.call(alice, a.id, { code: 'x = 1' }).catch((e: unknown) => e)).toMatchObject({ code: 'session_ended', details: { reason: 'failed' } });

    const b = await service.create(alice, {});
    const lost = await service.call(alice, b.id, { code: 'die' });
    expect(lost.status).toBe('oom');
    expect(lost.session).toMatchObject({ ended: true, call: 1 });
    expect(lost.feedback).toContain('The session has ended');
    expect(await codeOf(service.call(alice, b.id, { code: 'x = 1' }))).toBe('session_ended');
  });

  it('says when the state was lost', async () => {
    const { service } = sessionStack();
    const info = await service.create(alice, {});
    await service.call(alice, info.id, { code: 'x = 1' });
    const lost = await service.call(alice, info.id, { code: 'restart' });
    expect(lost.status).toBe('timeout');
    expect(lost.session).toMatchObject({ stateLost: true, ended: false });
    expect(lost.feedback).toContain('variables and imports from earlier calls are gone');
    const after = await service.call(alice, info.id, { code: 'print(x)' });
    expect(after.error).toMatchObject({ type: 'NameError' });
  });

  it('uploads, lists and downloads files, within the download cap', async () => {
    const { service, sandboxes } = sessionStack({ sessions: { maxDownloadBytes: 1024 } });
    const info = await service.create(alice, {});
    const list = await service.putFiles(alice, info.id, {
      files: [
        { path: 'dir/a.txt', content: 'hello', encoding: 'utf8' },
        { path: 'big.bin', content: Buffer.alloc(2000).toString('base64'), encoding: 'base64' },
      ],
    });
    expect(list).toEqual({ files: [{ path: 'big.bin', size: 2000 }, { path: 'dir/a.txt', size: 5 }], truncated: false });
    expect((await service.getFile(alice, info.id, 'dir/a.txt')).toString()).toBe('hello');
    expect(await codeOf(service.getFile(alice, info.id, 'big.bin'))).toBe('payload_too_large');
    expect(await codeOf(service.getFile(alice, info.id, 'nope'))).toBe('not_found');
    // A path that could leave the work directory never reaches the sandbox, even if it "has" it.
    sandboxes.byId(info.id).files.set('../secret', Buffer.from('x'));
    sandboxes.byId(info.id).files.set('/etc/passwd', Buffer.from('x'));
    expect(await codeOf(service.getFile(alice, info.id, '../secret'))).toBe('not_found');
    expect(await codeOf(service.getFile(alice, info.id, '/etc/passwd'))).toBe('not_found');
    expect(await codeOf(service.putFiles(alice, info.id, { files: [{ path: 'x', content: '!!', encoding: 'base64' }] }))).toBe('invalid_request');
  });

  it('is off with sessions.enabled false', async () => {
    const { service } = sessionStack({ sessions: { enabled: false } });
    expect(await codeOf(service.create(alice, {}))).toBe('not_found');
  });

  it('closes every session on shutdown and opens no more', async () => {
    const { service, manager, sandboxes } = sessionStack();
    const a = await service.create(alice, {});
    const b = await service.create(bob, {});
    await manager.closeAll('shutdown');
    expect(sandboxes.open_).toEqual([]);
    expect(await codeOf(service.create(alice, {}))).toBe('shutting_down');
    expect(await service.call(alice, a.id, { code: 'x' }).catch((e: unknown) => e)).toMatchObject({ code: 'session_ended', details: { reason: 'shutdown' } });
    expect((await service.get(bob, b.id)).endedReason).toBe('shutdown');
  });

  it('takes no new sessions or calls once the service stops accepting', async () => {
    const { service, executions } = sessionStack();
    const info = await service.create(alice, {});
    executions.stopAccepting();
    expect(await codeOf(service.create(alice, {}))).toBe('shutting_down');
    expect(await codeOf(service.call(alice, info.id, { code: 'x = 1' }))).toBe('shutting_down');
    expect((await service.delete(alice, info.id)).state).toBe('ended');
  });

  it('closes a session opened after shutdown began', async () => {
    const { service, manager, sandboxes } = sessionStack();
    let release!: () => void;
    sandboxes.gate = new Promise<void>((r) => (release = r));
    const opening = service.create(alice, {});
    await settle();
    const closing = manager.closeAll('shutdown');
    release();
    await closing;
    expect(await codeOf(opening)).not.toBe('resolved');
    expect(sandboxes.open_).toEqual([]);
  });

  it('closes idempotently: two closes at once both wait for the sandbox, an unknown id is not_found', async () => {
    const { manager, service } = sessionStack();
    const info = await service.create(alice, {});
    await Promise.all([manager.close(info.id, 'deleted'), manager.close(info.id, 'deleted')]);
    expect(await codeOf(manager.close(info.id, 'deleted'))).toBe('not_found');
  });

  it('forgets ended sessions past its memory bound (then 404)', async () => {
    const { service } = sessionStack({ endedMemory: 1 });
    const a = await service.create(alice, {});
    const b = await service.create(alice, {});
    await service.delete(alice, a.id);
    await service.delete(alice, b.id);
    expect(await codeOf(service.call(alice, a.id, { code: 'x = 1' }))).toBe('not_found');
    expect(await codeOf(service.call(alice, b.id, { code: 'x = 1' }))).toBe('session_ended');
  });
});
