// The typed client's session methods and Session object against the in-process app (its fetch is
// app.request), over the real SessionService with fake session sandboxes.
import { describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { PyboxClient } from '../../src/client/client.ts';
import { NotFoundError, SessionBusyError, SessionEndedError, SessionLimitError } from '../../src/client/errors.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { RateLimiter } from '../../src/tenancy/rate-limiter.ts';
import { settle, sessionStack } from '../support/fake-sessions.ts';
import { FakeExecutionService, FakeKeys, recordingLogger } from './fake-service.ts';

function clients(sessions: Parameters<typeof sessionStack>[0] = {}) {
  const stack = sessionStack(sessions);
  const keys = new FakeKeys();
  const app = createApp({
    service: new FakeExecutionService(),
    logger: recordingLogger(),
    bodyLimitBytes: 1024 * 1024,
    auth: new Authenticator(keys),
    rateLimiter: new RateLimiter({ now: () => Date.now() }),
    sessions: stack.service,
  });
  const client = (tenant: string) => new PyboxClient({ baseUrl: 'http://pybox.test', apiKey: keys.add(tenant), retries: 0, fetch: (url, init) => Promise.resolve(app.request(url, init)) });
  return { stack, alice: client('alice'), bob: client('bob') };
}

describe('the client with sessions', () => {
  it('creates, runs, lists, uploads, downloads and deletes', async () => {
    const { alice } = clients();
    const info = await alice.createSession({ memoryMb: 256 });
    expect(info.state).toBe('active');
    await alice.sessionExecute(info.id, { code: 'x = 2' });
    const result = await alice.sessionExecute(info.id, { code: 'y = x + 3\nprint(y)' });
    expect(result).toMatchObject({ stdout: '5\n', session: { sessionId: info.id, call: 2 } });
    expect((await alice.listSessions()).items.map((s) => s.id)).toEqual([info.id]);
    expect((await alice.getSession(info.id)).calls).toBe(2);

    const bytes = new Uint8Array([0, 1, 2, 255]);
    const listed = await alice.putSessionFiles(info.id, [
      { path: 'dir/bin.dat', content: bytes },
      { path: 'note.txt', content: 'héllo' },
    ]);
    expect(listed.files).toEqual([
      { path: 'dir/bin.dat', size: 4 },
      { path: 'note.txt', size: 6 },
    ]);
    expect(await alice.listSessionFiles(info.id)).toEqual(listed);
    expect([...(await alice.getSessionFile(info.id, 'dir/bin.dat'))]).toEqual([0, 1, 2, 255]);
    expect(Buffer.from(await alice.getSessionFile(info.id, 'note.txt')).toString()).toBe('héllo');
    await expect(alice.getSessionFile(info.id, 'missing')).rejects.toBeInstanceOf(NotFoundError);

    expect(await alice.deleteSession(info.id)).toMatchObject({ state: 'ended', endedReason: 'deleted' });
    const ended = await alice.sessionExecute(info.id, { code: 'print(y)' }).catch((e: unknown) => e);
    expect(ended).toBeInstanceOf(SessionEndedError);
    expect(ended).toMatchObject({ status: 410, code: 'session_ended', details: { reason: 'deleted' } });
  });

  it("maps busy, limit and another tenant's session to their errors", async () => {
    const { alice, bob } = clients({ sessions: { maxPerTenant: 1 } });
    const info = await alice.createSession();
    await expect(alice.createSession()).rejects.toBeInstanceOf(SessionLimitError);
    await expect(bob.getSession(info.id)).rejects.toBeInstanceOf(NotFoundError);
    const controller = new AbortController();
    const running = alice.sessionExecute(info.id, { code: 'sleep' }, { signal: controller.signal }).catch((e: unknown) => e);
    await settle();
    await expect(alice.sessionExecute(info.id, { code: 'x = 1' })).rejects.toBeInstanceOf(SessionBusyError);
    // In-process the abort reaches the request's own signal: the call is interrupted and recorded cancelled.
    controller.abort(new Error('enough'));
    expect(await running).toMatchObject({ status: 'cancelled', session: { call: 1 } });
  });

  it('offers a Session object: run keeps state, close ends it once', async () => {
    const { alice, stack } = clients();
    const session = await alice.session({ timeoutMs: 5000 });
    await session.run('a = 40');
    expect((await session.run('b = a + 2\nprint(b)')).stdout).toBe('42\n');
    await session.upload([{ path: 'in.txt', content: 'data' }]);
    expect(Buffer.from(await session.download('in.txt')).toString()).toBe('data');
    expect((await session.files()).files.map((f) => f.path)).toEqual(['in.txt']);
    const [first, second] = await Promise.all([session.close(), session.close()]);
    expect(first).toEqual(second);
    expect(first.state).toBe('ended');
    expect(stack.sandboxes.open_).toEqual([]);
    expect((await alice.attachSession(session.id).info()).endedReason).toBe('deleted');
  });
});
