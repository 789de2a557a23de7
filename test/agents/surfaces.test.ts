// Every agent surface against the real service: the typed client, GET /v1/tools, MCP over
// Streamable HTTP (/mcp) and over stdio (`pybox mcp`), both with the SDK's own client, and the
// LangChain tool. The service runs for real (engine, image, store) on a loopback port.
import { ToolMessage } from '@langchain/core/messages';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExecutePythonTool, createPyboxTools } from '../../src/adapters/langchain.ts';
import { EXECUTE_PYTHON_DESCRIPTION } from '../../src/adapters/tools.ts';
import { PyboxClient } from '../../src/client/client.ts';
import { ConnectionError, InvalidRequestError, NotFoundError } from '../../src/client/errors.ts';
import { PYTHON_BUILTINS, PYTHON_KEYWORDS } from '../../src/core/python-names.ts';
import { labelledContainers, realPybox, type RealPybox } from '../support/real.ts';
import { serveApp, type Served } from '../support/serve.ts';

const root = join(import.meta.dirname, '../..');
let pybox: RealPybox;
let served: Served;
let client: PyboxClient;

beforeAll(async () => {
  // get_execution is off by default; on here, so the test sees the config switch every surface.
  pybox = await realPybox('runc', { tools: { enabled: { get_execution: true } } });
  served = await serveApp(pybox.app);
  client = new PyboxClient({ baseUrl: served.url, retries: 0 });
});
afterAll(async () => {
  await served?.close();
  await pybox?.dispose();
});

type ToolResult = { content: Array<{ type: string; text?: string }>; isError?: boolean; structuredContent?: Record<string, unknown>; _meta?: Record<string, unknown> };
const textOf = (r: unknown) =>
  (r as ToolResult).content
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('\n');

describe('the typed client', () => {
  it('runs code and reads it back through get, history and stats', async () => {
    const r = await client.execute({ code: 'print(sum(range(10)))' });
    expect(r).toMatchObject({ status: 'completed', success: true, stdout: '45\n' });
    expect(r.feedback).toContain('45');
    expect(await client.get(r.id)).toEqual({ ...r, code: 'print(sum(range(10)))' });
    const page = await client.history({ limit: 50 });
    expect(page.items.map((i) => i.id)).toContain(r.id);
    const stats = await client.stats();
    expect(stats.total).toBeGreaterThanOrEqual(1);
    expect(stats.byStatus.completed).toBeGreaterThanOrEqual(1);
  });

  it('returns a failing program as a result, not an error', async () => {
    const r = await client.execute({ code: 'x = 1\nprint(x / 0)\n', timeoutMs: 10_000 });
    expect(r.status).toBe('error');
    expect(r.error).toMatchObject({ type: 'ZeroDivisionError', line: 2 });
    expect((await client.history({ status: 'error', limit: 5 })).items[0]?.id).toBe(r.id);
  });

  it("names the sandbox Python's keywords and builtins as core/python-names.ts lists them", async () => {
    const r = await client.execute({
      code: 'import builtins, json, keyword\nprint(json.dumps([keyword.kwlist, sorted(n for n in dir(builtins) if not n.startswith("__"))]))',
    });
    expect(r.status).toBe('completed');
    const [keywords, builtins] = JSON.parse(r.stdout) as [string[], string[]];
    expect(new Set(keywords)).toEqual(PYTHON_KEYWORDS);
    expect(new Set(builtins)).toEqual(PYTHON_BUILTINS);
  });

  it('gives non-ASCII context names to the code as Python reads them', async () => {
    const r = await client.execute({ code: 'print(café + π)', context: { café: 1, π: 2 } });
    expect(r).toMatchObject({ status: 'completed', stdout: '3\n' });
  });

  it('describes the runtime', async () => {
    const info = await client.runtimes();
    expect(info.runtime).toBe('runc');
    expect(info.python).toMatch(/^3\.\d+/);
    expect(info.limits.max.timeoutMs).toBe(300_000);
  });

  it('throws typed errors for what the service refuses', async () => {
    const missing = await client.get('no-such-execution').catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing).toMatchObject({ status: 404, code: 'not_found' });
    const invalid = await client.execute({ code: '' }).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(InvalidRequestError);
    expect(invalid).toMatchObject({ status: 400, code: 'invalid_request' });
    expect((invalid as InvalidRequestError).details).toEqual([expect.objectContaining({ path: 'code' })]);
  });

  it('throws ConnectionError when nothing answers', async () => {
    const closed = await serveApp(pybox.app);
    await closed.close();
    const e = await new PyboxClient({ baseUrl: closed.url, retries: 0 }).stats().catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ConnectionError);
    expect((e as Error).message).toContain(`cannot reach pybox at ${closed.url}`);
  });
});

describe('GET /v1/tools', () => {
  it('lists the enabled tools as OpenAI and Anthropic function-calling schemas', async () => {
    const list = await client.tools();
    expect(list.openai.map((t) => t.function.name)).toEqual(['execute_python_code', 'sandbox_info', 'get_execution', 'python_session_run', 'python_session_close']);
    expect(list.anthropic.map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info', 'get_execution', 'python_session_run', 'python_session_close']);
    const openai = list.openai[0]!;
    expect(openai.type).toBe('function');
    expect(openai.function.description).toBe(EXECUTE_PYTHON_DESCRIPTION);
    expect(openai.function.parameters).toMatchObject({
      type: 'object',
      required: ['code'],
      properties: { code: { type: 'string' }, timeout: { type: 'number', minimum: 1, maximum: 300 }, context: { type: 'object' } },
    });
    expect(openai.function.parameters).not.toHaveProperty('$schema');
    expect(list.anthropic[0]!.input_schema).toEqual(openai.function.parameters);
  });
});

describe('MCP over Streamable HTTP at /mcp', () => {
  let mcp: Client;
  beforeAll(async () => {
    mcp = new Client({ name: 'pybox-test', version: '1.0.0' });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(`${served.url}/mcp`)));
  });
  afterAll(async () => {
    await mcp?.close();
  });

  it('lists the tools the config enables, with their input schemas', async () => {
    const { tools } = await mcp.listTools();
    expect(tools.map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info', 'get_execution', 'python_session_run', 'python_session_close']);
    const execute = tools[0]!;
    expect(execute.description).toBe(EXECUTE_PYTHON_DESCRIPTION);
    expect(execute.inputSchema).toMatchObject({ type: 'object', required: ['code'] });
    expect(Object.keys(execute.inputSchema.properties ?? {})).toEqual(['code', 'timeout', 'context']);
    expect(execute.inputSchema).toMatchObject({ additionalProperties: false, properties: { timeout: { type: 'number' }, context: { propertyNames: { pattern: expect.stringContaining('XID_Start') } } } });
    expect(tools.map((t) => t.outputSchema?.type)).toEqual(['object', 'object', 'object', 'object', 'object']);
    expect(mcp.getInstructions()).toContain('execute_python_code');
  });

  it('returns structuredContent valid against the outputSchema, for a run that worked and one that failed', async () => {
    const { tools } = await mcp.listTools();
    const validate = new AjvJsonSchemaValidator().getValidator(tools[0]!.outputSchema!);
    for (const code of ['print(6 * 7)', 'raise ValueError("no")']) {
      const r = (await mcp.callTool({ name: 'execute_python_code', arguments: { code } })) as ToolResult;
      expect(r.structuredContent, code).toMatchObject({ status: code.startsWith('print') ? 'completed' : 'error' });
      expect(validate(r.structuredContent), code).toMatchObject({ valid: true });
      expect(textOf(r)).toContain(String(r.structuredContent!.feedback));
    }
    const info = (await mcp.callTool({ name: 'sandbox_info', arguments: {} })) as ToolResult;
    expect(new AjvJsonSchemaValidator().getValidator(tools[1]!.outputSchema!)(info.structuredContent)).toMatchObject({ valid: true });
    expect(info.structuredContent).toMatchObject({ runtime: 'runc', python: expect.stringMatching(/^3\./) });
  });

  it('refuses unknown arguments, bad context names and a deep context with readable errors, never an internal address', async () => {
    const extra = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', language: 'python' } });
    expect(extra.isError).toBe(true);
    expect(textOf(extra)).toContain('language: unknown argument (the arguments are code, timeout, context)');
    const builtin = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', context: { print: 1 } } });
    expect(textOf(builtin)).toContain('context.print: invalid name: is the name of the Python builtin print');
    let deep: unknown = 1;
    for (let i = 0; i < 1000; i++) deep = { a: deep };
    const tooDeep = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', context: { deep } } });
    expect(tooDeep.isError).toBe(true);
    expect(textOf(tooDeep)).toContain('the arguments nest deeper than 64 levels');
    for (const r of [extra, builtin, tooDeep]) expect(textOf(r)).not.toMatch(/pybox\.internal|call stack|connection_failed/);
  });

  it('runs code and returns the feedback text', async () => {
    const r = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(n * 2)', context: { n: 21 } } });
    expect(r.isError).toBe(false);
    expect(textOf(r)).toContain('The code ran successfully');
    expect(textOf(r)).toContain('42');
    const meta = (r as ToolResult)._meta?.['pybox/execution'] as { id: string; status: string };
    expect(meta.status).toBe('completed');
    // get_execution is enabled, so the text names the id, and the id can be fetched.
    expect(textOf(r)).toContain(`Execution id: ${meta.id}`);
    const again = await mcp.callTool({ name: 'get_execution', arguments: { id: meta.id } });
    expect(again.isError).toBe(false);
    expect(textOf(again)).toContain('Status: completed');
  });

  it('returns a failed run as a tool result with isError, naming the error and the line', async () => {
    const r = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'items = [1, 2]\nprint(items[5])\n' } });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toContain('IndexError: list index out of range');
    expect(textOf(r)).toContain('line 2 of the code:\n    print(items[5])');
  });

  it('says why a run was stopped and at which limit (timeout in seconds)', async () => {
    const r = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'while True:\n    pass\n', timeout: 1 } });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toContain('time limit of 1.00 s');
  });

  it('keeps a long call alive with progress notifications, past the host\'s own timeout', async () => {
    const progress: number[] = [];
    const r = await mcp.callTool(
      { name: 'execute_python_code', arguments: { code: 'import time\ntime.sleep(4.5)\nprint("done")', timeout: 30 } },
      undefined,
      // Without a notification every 3 s, this 3.5 s timeout would end the 4.5 s call.
      { timeout: 3500, resetTimeoutOnProgress: true, onprogress: (p) => progress.push(p.progress) },
    );
    expect(r.isError).toBe(false);
    expect(textOf(r)).toContain('done');
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress[0]).toBeGreaterThanOrEqual(2);
  });

  it('answers bad arguments and unknown tools with a readable tool error, not a protocol error', async () => {
    const tooLong = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', timeout: 900 } });
    expect(tooLong.isError).toBe(true);
    expect(textOf(tooLong)).toMatch(/timeout/);
    const noCode = await mcp.callTool({ name: 'execute_python_code', arguments: {} });
    expect(noCode.isError).toBe(true);
    expect(textOf(noCode)).toMatch(/code/);
    const badContext = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', context: { 'not an identifier': 1 } } });
    expect(badContext.isError).toBe(true);
    expect(textOf(badContext)).toContain('context.not an identifier');
    const unknown = await mcp.callTool({ name: 'rm_rf', arguments: {} });
    expect(unknown.isError).toBe(true);
  });

  it('describes the sandbox', async () => {
    const r = await mcp.callTool({ name: 'sandbox_info', arguments: {} });
    expect(r.isError).toBe(false);
    expect(textOf(r)).toMatch(/^Python 3\.\d+/);
    expect(textOf(r)).toContain('Time limit: 30 s by default, 300 s at most');
  });

  it('is stateless: GET and DELETE are refused with 405', async () => {
    for (const method of ['GET', 'DELETE']) {
      const res = await fetch(`${served.url}/mcp`, { method, headers: { accept: 'text/event-stream' } });
      expect(res.status).toBe(405);
      expect(res.headers.get('allow')).toBe('POST');
    }
  });
});

describe('MCP over stdio (`pybox mcp`)', () => {
  const connect = async (env: Record<string, string>, args: string[] = []) => {
    const mcp = new Client({ name: 'pybox-test', version: '1.0.0' });
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [join(root, 'bin/pybox.mjs'), 'mcp', ...args],
      cwd: root,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
      stderr: 'pipe',
    });
    await mcp.connect(transport);
    return mcp;
  };

  it('offers the tools the server enables and runs code through PYBOX_URL', async () => {
    const mcp = await connect({ PYBOX_URL: served.url });
    try {
      const { tools } = await mcp.listTools();
      expect(tools.map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info', 'get_execution', 'python_session_run', 'python_session_close']);
      const ok = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'import math\nprint(math.factorial(5))' } });
      expect(ok.isError).toBe(false);
      expect(textOf(ok)).toContain('120');
      const failed = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'def f(:\n  pass' } });
      expect(failed.isError).toBe(true);
      expect(textOf(failed)).toContain('The code was not run: it has a SyntaxError at line 1');
    } finally {
      await mcp.close();
    }
  });

  it('takes --tools, and reports an unreachable server as a tool error', async () => {
    const closed = await serveApp(pybox.app);
    await closed.close();
    const mcp = await connect({ PYBOX_URL: closed.url }, ['--tools', 'execute_python_code']);
    try {
      const { tools } = await mcp.listTools();
      expect(tools.map((t) => t.name)).toEqual(['execute_python_code']);
      const r = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)' } });
      expect(r.isError).toBe(true);
      expect(textOf(r)).toContain(`cannot reach pybox at ${closed.url}`);
    } finally {
      await mcp.close();
    }
  });
});

describe('the LangChain tool', () => {
  it('is execute_python_code with the reference inputs, and returns the feedback text', async () => {
    const tool = createExecutePythonTool({ env: { PYBOX_URL: served.url } });
    expect(tool.name).toBe('execute_python_code');
    expect(tool.description).toBe(EXECUTE_PYTHON_DESCRIPTION);
    const out = await tool.invoke({ code: 'print(sum(values))', context: { values: [1, 2, 3] }, timeout: 20 });
    expect(typeof out).toBe('string');
    expect(out).toContain('The code ran successfully');
    expect(out).toContain('\n6');
  });

  it('answers a model tool call with a ToolMessage whose status says the run failed, the result as its artifact', async () => {
    const tool = createExecutePythonTool({ client, artifact: true });
    const call = { type: 'tool_call' as const, id: 'call_1', name: 'execute_python_code', args: { code: 'import json\njson.loads("{oops")' } };
    const message = (await tool.invoke(call)) as ToolMessage;
    expect(message).toBeInstanceOf(ToolMessage);
    expect(message.tool_call_id).toBe('call_1');
    expect(message.status).toBe('error');
    expect(message.content).toContain('JSONDecodeError');
    expect(message.artifact).toMatchObject({ status: 'error', error: { type: 'json.decoder.JSONDecodeError', line: 2 } });
    const plain = (await tool.invoke({ code: 'print("hi")' })) as unknown as [string, { status: string }];
    expect(plain[0]).toContain('hi');
    expect(plain[1].status).toBe('completed');
  });

  it('gives every enabled tool, each taking tool calls', async () => {
    const tools = createPyboxTools({ client, tools: { execute_python_code: true, sandbox_info: true } });
    expect(tools.map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info']);
    // As a chat model's AIMessage.tool_calls carries it.
    const info = (await tools[1]!.invoke({ type: 'tool_call', id: 'c2', name: 'sandbox_info', args: {} })) as ToolMessage;
    expect(info.status).toBe('success');
    expect(String(info.content)).toContain('Installed packages');
  });
});
