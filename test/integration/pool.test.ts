// The warm pool against the real engine: runs are served by sandboxes started ahead of time, each
// used once, with nothing passed from one run to the next, and nothing left when pybox stops.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { postJson, realPybox, type RealPybox } from '../support/real.ts';

async function run(pybox: RealPybox, code: string): Promise<ExecutionResult> {
  const res = await postJson(pybox.app, '/v1/executions', { code });
  expect(res.status, res.text).toBe(200);
  return ExecutionResult.parse(res.json);
}

// A program that shows whether it ran in a warm sandbox (runc preloads pandas there), and
// whether anything of an earlier run is visible.
const PROBE = [
  'import os, sys, socket',
  'seen = os.path.exists("/tmp/marker")',
  'open("/tmp/marker", "w").write("x")',
  'print(socket.gethostname(), "pandas" in sys.modules, seen)',
].join('\n');

describe('warm pool under runc', () => {
  let pybox: RealPybox;
  beforeAll(async () => {
    pybox = await realPybox('runc', { pool: { size: { runc: 2, runsc: 1 } } });
  });
  afterAll(async () => {
    await pybox?.dispose(); // fails if a warm sandbox was left behind
  });

  it('serves runs from warm sandboxes, each used once, with no state passed on', async () => {
    const hosts = new Set<string>();
    for (let i = 0; i < 4; i++) {
      await pybox.pool.filled();
      const r = await run(pybox, PROBE);
      expect(r.status, r.stderr).toBe('completed');
      const [host, preloaded, seen] = r.stdout.trim().split(' ');
      expect(preloaded).toBe('True'); // it came from the pool, where pandas waits preloaded
      expect(seen).toBe('False'); // no earlier run's file
      hosts.add(host ?? '');
    }
    expect(hosts.size).toBe(4);
  });

  it('refills to its size after runs', async () => {
    await run(pybox, 'print(1)');
    await pybox.pool.filled();
    const status = pybox.pool.status();
    expect(status.find((s) => s.key.startsWith('runc|'))?.ready).toBe(2);
  });

  it('runs a configuration not yet warm on a sandbox prepared on the spot', async () => {
    const res = await postJson(pybox.app, '/v1/executions', { code: PROBE, memoryMb: 200 });
    const r = ExecutionResult.parse(res.json);
    expect(r.status).toBe('completed');
    expect(r.stdout.trim().split(' ')[1]).toBe('False'); // prepared now, without preloading
  });
});

describe('with the pool disabled', () => {
  it('still runs every execution in a fresh container', async () => {
    const pybox = await realPybox('runc', { pool: { enabled: false } });
    try {
      const r = await run(pybox, PROBE);
      expect(r.status).toBe('completed');
      expect(r.stdout.trim().split(' ').slice(1)).toEqual(['False', 'False']);
      expect(pybox.pool.status()).toEqual([]);
    } finally {
      await pybox.dispose();
    }
  });
});
