// Streaming against the real service (engine, image, store) on a loopback port: POST
// /v1/executions read by a real SSE client (the `eventsource` package, POSTing through its custom
// fetch) and by the typed client; the output cap holding in the stream; and MCP output as progress
// notifications to the SDK's own client.
//
// That output arrives while the code still runs is shown without timing: the client hangs up as
// soon as it has the first chunk of a program that then sleeps for a minute, and the run ends
// cancelled, without its second line. Had the output come only with the result, the client would
// have had nothing to react to before the run's end.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { EventSource } from 'eventsource';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PyboxClient, type RunStreamEvent } from '../../src/client/client.ts';
import { ExecutionResult, OutputChunk } from '../../src/core/schemas.ts';
import { realPybox, type RealPybox } from '../support/real.ts';
import { serveApp, type Served } from '../support/serve.ts';

const OUTPUT_BYTES = 4096;

let pybox: RealPybox;
let served: Served;
let client: PyboxClient;

beforeAll(async () => {
  pybox = await realPybox('runc', { limits: { outputBytes: OUTPUT_BYTES } });
  served = await serveApp(pybox.app);
  client = new PyboxClient({ baseUrl: served.url, retries: 0 });
});
afterAll(async () => {
  await served?.close();
  await pybox?.dispose();
});

type Seen = { type: string; text?: string; result?: ExecutionResult; at: number };

/**
 * POST /v1/executions read by the `eventsource` package: its fetch is ours, to POST the body. The
 * source is closed at the result (or by `onEvent` returning true), so it never reconnects (which
 * would run the code again).
 */
function streamWithEventSource(body: unknown, onEvent: (e: Seen, seen: Seen[]) => boolean = () => false): Promise<Seen[]> {
  return new Promise((resolve, reject) => {
    const seen: Seen[] = [];
    const source = new EventSource(`${served.url}/v1/executions`, {
      fetch: (url, init) => fetch(url, { ...init, method: 'POST', headers: { ...init.headers, 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    const done = () => {
      source.close();
      resolve(seen);
    };
    for (const type of ['stdout', 'stderr'] as const) {
      source.addEventListener(type, (e) => {
        const s = { type, text: OutputChunk.parse(JSON.parse(e.data)).text, at: performance.now() };
        seen.push(s);
        if (onEvent(s, seen)) done();
      });
    }
    source.addEventListener('result', (e) => {
      seen.push({ type: 'result', result: ExecutionResult.parse(JSON.parse(e.data)), at: performance.now() });
      done();
    });
    source.addEventListener('error', (e) => {
      source.close();
      reject(new Error(`the event stream failed: ${'data' in e && typeof e.data === 'string' ? e.data : (e.message ?? 'connection error')}`));
    });
  });
}

async function poll<T>(what: string, probe: () => Promise<T | undefined>, tries = 300): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gave up waiting for ${what}`);
}

describe('POST /v1/executions as server-sent events (real service)', () => {
  it('a real SSE client gets the output as stdout and stderr events, then the result last', async () => {
    const seen = await streamWithEventSource({ code: 'import sys, time\nprint("first", flush=True)\nprint("oops", file=sys.stderr, flush=True)\ntime.sleep(0.5)\nprint("second")', timeoutMs: 20_000 });
    // A chunk is whatever one read of the pipe got ("first" and its newline may be two), and stdout
    // and stderr are two pipes: so the events are compared by what they add up to, and by order.
    expect(seen.at(-1)?.type).toBe('result');
    expect(seen.filter((s) => s.type === 'result')).toHaveLength(1);
    const joined = (type: string) => seen.filter((s) => s.type === type).map((s) => s.text).join('');
    expect(joined('stdout')).toBe('first\nsecond\n');
    expect(joined('stderr')).toBe('oops\n');
    // That they came while the code ran is the next test's (without timing); how long before the
    // result the first came is printed here for the report, not asserted (a shared, noisy machine).
    const result = seen.at(-1)?.result;
    expect(result).toMatchObject({ status: 'completed', stdout: 'first\nsecond\n', stderr: 'oops\n' });
    console.log(`first chunk ${Math.round((seen.at(-1)?.at ?? 0) - (seen[0]?.at ?? 0))} ms before the result (the code sleeps 500 ms between its lines)`);
  });

  it('output arrives while the code runs: a client that hangs up at the first chunk cancels the rest of the run', async () => {
    const known = new Set((await client.history({ limit: 100 })).items.map((r) => r.id));
    const seen = await streamWithEventSource({ code: 'import time\nprint("first", flush=True)\ntime.sleep(60)\nprint("second")', timeoutMs: 120_000 }, (e) => e.type === 'stdout');
    // The client left at the first chunk ("first" and its newline may come as two: print writes
    // them one by one, unbuffered); no result came before it left.
    expect(seen[0]).toMatchObject({ type: 'stdout', text: expect.stringMatching(/^first/) });
    expect(seen.filter((s) => s.type === 'result')).toEqual([]);
    const result = await poll('the cancelled run in the history', async () => (await client.history({ limit: 20 })).items.find((r) => !known.has(r.id)));
    expect(result).toMatchObject({ status: 'cancelled', stdout: 'first\n' });
  });

  it('streams at most outputBytes of each stream, and the result says it was truncated', async () => {
    const code = 'import sys\nfor i in range(200):\n    print("x" * 99)\nsys.stderr.write("é" * 5000)\n';
    const events: RunStreamEvent[] = [];
    for await (const e of client.executeStream({ code, timeoutMs: 20_000 })) events.push(e);
    const text = (type: 'stdout' | 'stderr') => events.flatMap((e) => (e.type === type ? [e.text] : [])).join('');
    const last = events.at(-1);
    expect(last?.type).toBe('result');
    const result = (last as Extract<RunStreamEvent, { type: 'result' }>).result;
    expect(Buffer.byteLength(text('stdout'))).toBe(OUTPUT_BYTES);
    expect(text('stdout')).toBe(result.stdout);
    // 4096 bytes of two-byte characters: the streamed text is whole characters, as the result's is.
    expect(Buffer.byteLength(text('stderr'))).toBe(OUTPUT_BYTES);
    expect(text('stderr')).toBe(result.stderr);
    expect(result.truncated).toEqual({ stdout: true, stderr: true });
    expect(events.filter((e) => e.type !== 'result').length).toBeGreaterThan(1);
  });

  it('the typed client\'s execute hands the output to its callbacks and returns the result', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const result = await client.execute({ code: 'import sys\nprint("to out")\nprint("to err", file=sys.stderr)' }, { onStdout: (t) => out.push(t), onStderr: (t) => err.push(t) });
    expect(result.status).toBe('completed');
    expect(out.join('')).toBe('to out\n');
    expect(err.join('')).toBe('to err\n');
  });
});

describe('MCP output as progress notifications (real service, the SDK\'s client)', () => {
  const root = join(import.meta.dirname, '../..');
  // /mcp runs the tools in-process; `pybox mcp` (stdio) runs them through the typed client, whose
  // execute streams the run when given callbacks.
  const transports: Record<string, () => Transport> = {
    'Streamable HTTP (/mcp)': () => new StreamableHTTPClientTransport(new URL(`${served.url}/mcp`)),
    'stdio (`pybox mcp`)': () =>
      new StdioClientTransport({
        command: process.execPath,
        args: [join(root, 'bin/pybox.mjs'), 'mcp'],
        cwd: root,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', PYBOX_URL: served.url },
        stderr: 'pipe',
      }),
  };

  it.each(Object.keys(transports))('over %s: the code\'s output comes as notifications/progress messages, all of it before the result', async (name) => {
    const mcp = new Client({ name: 'pybox-test', version: '1.0.0' });
    const transport = transports[name]!();
    await mcp.connect(transport);
    // What the server sent, in the order it came, as the transport hands it to the client. The
    // SDK's client (1.32) runs a progress handler a microtask after it reads the notification but
    // settles the call at once on reading its result, so over stdio, where both may come in one
    // read, its onprogress can miss the last notification; the server's order is checked here.
    const received: JSONRPCMessage[] = [];
    const deliver = transport.onmessage;
    transport.onmessage = (message, extra) => {
      received.push(message);
      deliver?.(message, extra);
    };
    try {
      const heard: Array<{ progress: number; message: string | undefined }> = [];
      const r = await mcp.callTool(
        { name: 'execute_python_code', arguments: { code: 'import time\nprint("alpha", flush=True)\ntime.sleep(0.5)\nprint("beta")', timeout: 20 } },
        undefined,
        { onprogress: (p) => heard.push({ progress: p.progress, message: p.message }) },
      );
      expect(r.isError).toBe(false);
      const progressOf = (m: JSONRPCMessage) => ('method' in m && m.method === 'notifications/progress' ? (m.params as { progress: number; message?: string }) : undefined);
      // The call's answer (initialize's came before it, with no content).
      const answer = received.findIndex((m) => 'result' in m && 'content' in m.result);
      expect(answer).toBeGreaterThan(0);
      const sent = received.slice(0, answer).flatMap((m) => {
        const p = progressOf(m);
        return p ? [p] : [];
      });
      expect(received.slice(answer).some((m) => progressOf(m) !== undefined)).toBe(false);
      const output = (ps: Array<{ message?: string | undefined }>) => ps.flatMap((p) => (p.message !== undefined && !p.message.startsWith('running for') ? [p.message] : [])).join('');
      expect(output(sent)).toBe('alpha\nbeta\n');
      const values = sent.map((p) => p.progress);
      for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThan(values[i - 1]!);
      // What onprogress heard is the server's, in order (all of it over HTTP; see above for stdio).
      expect('alpha\nbeta\n'.startsWith(output(heard))).toBe(true);
      if (name.startsWith('Streamable')) expect(output(heard)).toBe('alpha\nbeta\n');
    } finally {
      await mcp.close();
    }
  });

  it.each(Object.keys(transports))('over %s: the output comes while the code runs (a call cancelled at its first output ends cancelled, without the rest)', async (name) => {
    const known = new Set((await client.history({ limit: 100 })).items.map((r) => r.id));
    const mcp = new Client({ name: 'pybox-test', version: '1.0.0' });
    await mcp.connect(transports[name]!());
    try {
      const controller = new AbortController();
      const call = mcp.callTool(
        { name: 'execute_python_code', arguments: { code: 'import time\nprint("alpha", flush=True)\ntime.sleep(60)\nprint("beta")', timeout: 120 } },
        undefined,
        { signal: controller.signal, onprogress: (p) => (p.message?.startsWith('alpha') ? controller.abort('seen enough') : undefined) },
      );
      await expect(call).rejects.toThrow();
      const result = await poll('the cancelled run in the history', async () => (await client.history({ limit: 20 })).items.find((r) => !known.has(r.id) && r.status !== 'completed'));
      expect(result).toMatchObject({ status: 'cancelled', stdout: 'alpha\n' });
    } finally {
      await mcp.close();
    }
  });
});
