// An MCP call cancelled by its client ends its execution, against the real service served on a
// loopback port: cancelled by `notifications/cancelled` (which the SDK's client sends in a new HTTP
// request when the caller aborts), or by the client hanging up on the answer stream. Either way the
// history says `cancelled` and the sandbox is gone. The pool is off, so every container of this
// instance is the cancelled run's.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PyboxClient } from '../../src/client/client.ts';
import type { ExecutionResult } from '../../src/core/schemas.ts';
import { labelledContainers, realPybox, type RealPybox } from '../support/real.ts';
import { serveApp, type Served } from '../support/serve.ts';

let pybox: RealPybox;
let served: Served;
let client: PyboxClient;

beforeAll(async () => {
  pybox = await realPybox('runc', { pool: { enabled: false } });
  served = await serveApp(pybox.app);
  client = new PyboxClient({ baseUrl: served.url, retries: 0 });
});
afterAll(async () => {
  await served?.close();
  await pybox?.dispose();
});

const SLEEPER = 'import time\nprint("started", flush=True)\ntime.sleep(40)\nprint("finished")';

async function poll<T>(what: string, probe: () => Promise<T | undefined>, tries = 450): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gave up waiting for ${what}`);
}

const sandboxes = () => labelledContainers(pybox.config.engine.instance);

/** Waits for a sandbox that was not there `before` (listed before the call) to exist. */
async function sandboxStarted(before: Set<string>): Promise<void> {
  await poll('a sandbox to start', async () => ((await sandboxes()).some((id) => !before.has(id)) ? true : undefined));
}

/** The cancelled execution, once the history has it, and once its sandbox is gone. */
async function cancelledAndRemoved(known: Set<string>): Promise<ExecutionResult> {
  const result = await poll('the history to show the run', async () => (await client.history({ limit: 20 })).items.find((r) => !known.has(r.id)));
  expect(result).toMatchObject({ status: 'cancelled', success: false });
  expect(result.stdout).not.toContain('finished');
  await poll('the sandbox to be removed', async () => ((await sandboxes()).length === 0 ? true : undefined));
  return result;
}

const knownIds = async () => new Set((await client.history({ limit: 100 })).items.map((r) => r.id));

describe('an MCP call cancelled by its client (real service)', () => {
  it('ends the execution as cancelled and removes its sandbox: notifications/cancelled', async () => {
    const known = await knownIds();
    const mcp = new Client({ name: 'pybox-test', version: '1.0.0' });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(`${served.url}/mcp`)));
    try {
      const controller = new AbortController();
      const before = new Set(await sandboxes()); // listed before the call, or its own sandbox could be in it
      const call = mcp.callTool({ name: 'execute_python_code', arguments: { code: SLEEPER, timeout: 60 } }, undefined, { signal: controller.signal });
      call.catch(() => {}); // rejected on abort; looked at below
      await sandboxStarted(before);
      controller.abort('the user pressed stop');
      await expect(call).rejects.toThrow();
      await cancelledAndRemoved(known);
    } finally {
      await mcp.close();
    }
  });

  it('ends the execution as cancelled and removes its sandbox: the client hangs up', async () => {
    const known = await knownIds();
    const controller = new AbortController();
    const before = new Set(await sandboxes());
    const answer = fetch(`${served.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'execute_python_code', arguments: { code: SLEEPER, timeout: 60 } } }),
      signal: controller.signal,
    }).then((res) => res.text());
    answer.catch(() => {});
    await sandboxStarted(before);
    controller.abort();
    await expect(answer).rejects.toThrow();
    await cancelledAndRemoved(known);
  });
});
