import { describe, expect, it } from 'vitest';
import { containerSpec, withUser } from '../../src/engine/container-spec.ts';
import { DistinctUids } from '../../src/engine/distinct-uids.ts';
import { defaultConfig, FakeEngine } from './fakes.ts';

const spec = () =>
  containerSpec({ id: 'x', instance: 'i', image: 'img', runtime: 'runc', limits: { memoryMb: 128, cpus: 1 }, sandbox: defaultConfig().sandbox });

describe('withUser', () => {
  it('changes the process user and the owner of /work, and nothing else', () => {
    const before = spec();
    const after = withUser(before, 10007, 10001);
    expect(after.User).toBe('10007:10001');
    expect(after.HostConfig?.Tmpfs?.['/work']).toContain(',uid=10007,gid=10001,');
    expect(after.HostConfig?.Tmpfs?.['/tmp']).toBe(before.HostConfig?.Tmpfs?.['/tmp']);
    expect({ ...after, User: before.User, HostConfig: { ...after.HostConfig, Tmpfs: before.HostConfig?.Tmpfs } }).toEqual(before);
    expect(before.User).toBe('10001:10001'); // the input is not changed
  });
});

describe('DistinctUids', () => {
  it('gives every live container a uid no other live one has, and reuses a uid once its container is removed', async () => {
    const inner = new FakeEngine();
    const engine = new DistinctUids(inner, 10001, 10001, 3);
    const a = await engine.create(spec());
    const b = await engine.create(spec());
    expect(inner.specs.map((s) => s.User)).toEqual(['10001:10001', '10002:10001']);
    await a.remove();
    const c = await engine.create(spec());
    expect(inner.specs[2]?.User).toBe('10001:10001');
    const d = await engine.create(spec());
    expect(inner.specs[3]?.User).toBe('10003:10001');
    expect(engine.taken).toBe(3);
    // The range is exhausted: the least used uid is shared rather than refusing to run.
    await engine.create(spec());
    expect(['10001:10001', '10002:10001', '10003:10001']).toContain(inner.specs[4]?.User);
    for (const x of [b, c, d]) await x.remove();
  });

  it('gives the uid back when creation fails or removal fails, and only once per container', async () => {
    const inner = new FakeEngine({ removeError: new Error('engine away') });
    const engine = new DistinctUids(inner, 20000, 20000, 2);
    inner.createError = new Error('no engine');
    await expect(engine.create(spec())).rejects.toThrow('no engine');
    expect(engine.taken).toBe(0);
    inner.createError = undefined;
    const a = await engine.create(spec());
    expect(inner.specs.at(-1)?.User).toBe('20000:20000');
    await expect(a.remove()).rejects.toThrow('engine away');
    await expect(a.remove()).rejects.toThrow('engine away');
    expect(engine.taken).toBe(0);
  });
});
