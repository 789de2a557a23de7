// Sessions through the HTTP API of a real node (composePybox: the engine's session sandboxes under
// SessionManager and SessionService), under every runtime the engine offers: state kept between
// calls, a call over its time limit interrupted with the session living on, files both ways, a
// streamed call, the per-tenant cap, idle expiry, and calls found as executions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecutionResult, SessionFileList, SessionInfo } from '../../src/core/schemas.ts';
import { postJson, realPybox, runtimesUnderTest, type RealPybox } from '../support/real.ts';

const runtimes = await runtimesUnderTest();

describe.each(runtimes)('sessions under %s', (runtime) => {
  let pybox: RealPybox;

  beforeAll(async () => {
    pybox = await realPybox(runtime, { sessions: { maxPerTenant: 3 } });
    // The node must serve sessions: without the engine's session sandboxes wired in, this fails here.
    expect(pybox.sessions).toBeDefined();
  });
  afterAll(async () => {
    await pybox?.dispose(); // fails if this instance left any container behind
  });

  const create = async (body: Record<string, unknown> = {}): Promise<SessionInfo> => {
    const res = await postJson(pybox.app, '/v1/sessions', body);
    expect(res.status, res.text).toBe(201);
    return SessionInfo.parse(res.json);
  };
  const call = async (id: string, body: Record<string, unknown>): Promise<ExecutionResult> => {
    const res = await postJson(pybox.app, `/v1/sessions/${id}/executions`, body);
    expect(res.status, res.text).toBe(200);
    return ExecutionResult.parse(res.json);
  };
  const remove = (id: string) => pybox.app.request(`/v1/sessions/${id}`, { method: 'DELETE' });

  it('keeps variables and imports between calls, interrupts a call past its limit and lives on', async () => {
    const session = await create({ timeoutMs: 20_000 });
    try {
      expect((await call(session.id, { code: 'import math\nr = 2' })).status).toBe('completed');
      const area = await call(session.id, { code: 'print(round(math.pi * r * r, 3))' });
      expect(area).toMatchObject({ status: 'completed', stdout: '12.566\n', session: { sessionId: session.id, call: 2, stateLost: false, ended: false } });

      const spin = await call(session.id, { code: 'while True:\n    pass', timeoutMs: 1000 });
      expect(spin.status).toBe('timeout');
      // Interrupted (KeyboardInterrupt), not restarted: the state is still there.
      expect(spin.session).toMatchObject({ call: 3, ended: false, stateLost: false });
      expect(spin.error?.type).toBe('KeyboardInterrupt');
      expect((await call(session.id, { code: 'print(r)' })).stdout).toBe('2\n');

      // Each call is an execution of its own, with its session.
      const stored = await pybox.app.request(`/v1/executions/${area.id}`);
      expect(ExecutionResult.parse(await stored.json())).toMatchObject({ id: area.id, stdout: '12.566\n', session: { call: 2 } });
    } finally {
      await remove(session.id);
    }
  });

  it('takes files in and gives files out', async () => {
    const session = await create({ files: [{ path: 'in/numbers.txt', content: '1\n2\n3\n' }] });
    try {
      const put = await pybox.app.request(`/v1/sessions/${session.id}/files`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ files: [{ path: 'more.txt', content: '4\n' }] }),
      });
      expect(put.status).toBe(200);
      expect(SessionFileList.parse(await put.json()).files.map((f) => f.path)).toEqual(expect.arrayContaining(['in/numbers.txt', 'more.txt']));
      const summed = await call(session.id, {
        code: [
          'import os',
          "total = sum(int(x) for f in ['in/numbers.txt', 'more.txt'] for x in open(f).read().split())",
          "os.makedirs('result', exist_ok=True)",
          "with open('result/total.txt', 'w') as out:",
          '    out.write(str(total))',
          'print(total)',
        ].join('\n'),
      });
      expect(summed).toMatchObject({ status: 'completed', stdout: '10\n' });
      const file = await pybox.app.request(`/v1/sessions/${session.id}/files/${encodeURIComponent('result/total.txt')}`);
      expect(file.status).toBe(200);
      expect(await file.text()).toBe('10');
      expect((await pybox.app.request(`/v1/sessions/${session.id}/files/missing.txt`)).status).toBe(404);
    } finally {
      await remove(session.id);
    }
  });

  it('streams a call as server-sent events, the result last', async () => {
    const session = await create();
    try {
      const res = await pybox.app.request(`/v1/sessions/${session.id}/executions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ code: 'import sys, time\nprint("first", flush=True)\ntime.sleep(0.3)\nprint("second")' }),
      });
      expect(res.status).toBe(200);
      const blocks = (await res.text()).split('\n\n').filter((b) => b.includes('data:'));
      const events = blocks.map((b) => ({ event: /event: (\w+)/.exec(b)?.[1], data: JSON.parse(b.split('\n').find((l) => l.startsWith('data:'))!.slice(5)) as unknown }));
      expect(events.at(-1)?.event).toBe('result');
      const printed = events.filter((e) => e.event === 'stdout').map((e) => (e.data as { text: string }).text).join('');
      expect(printed).toBe('first\nsecond\n');
      expect(ExecutionResult.parse(events.at(-1)!.data).stdout).toBe('first\nsecond\n');
    } finally {
      await remove(session.id);
    }
  });

  it('holds a tenant to its session cap, and ends a session left idle (410 idle)', async () => {
    const made = [await create(), await create(), await create()];
    try {
      const refused = await postJson(pybox.app, '/v1/sessions', {});
      expect(refused.status).toBe(429);
      expect(refused.json).toMatchObject({ error: { code: 'session_limit' } });
      expect((await remove(made.pop()!.id)).status).toBe(200);

      // Left idle, it ends: a call to it is then 410 with the reason, and it no longer counts.
      const idle = await create({ idleTimeoutMs: 1000 });
      await new Promise((r) => setTimeout(r, 2500));
      const late = await postJson(pybox.app, `/v1/sessions/${idle.id}/executions`, { code: 'print(1)' });
      expect(late.status).toBe(410);
      expect(late.json).toMatchObject({ error: { code: 'session_ended', details: { reason: 'idle' } } });
      made.push(await create());
    } finally {
      for (const s of made) await remove(s.id);
    }
  });
});
