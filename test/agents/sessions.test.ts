// Sessions on the agent surfaces. A LangChain.js agent loop, driven by a scripted OpenAI-compatible
// model server, keeps one session for its conversation (state carried from call to call) and closes
// it at the end; /mcp's python_session_run and python_session_close with the SDK's own client.
// The pybox here runs on fake session sandboxes; with PYBOX_TEST_SESSIONS=runc (or runsc) the same
// tests run against a real node (composePybox, the engine's session sandboxes): every check goes
// through the HTTP API, and the fake's own look behind it is skipped.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ToolMessage } from '@langchain/core/messages';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import { afterEach, describe, expect, it } from 'vitest';
import { createPythonSessionTool } from '../../src/adapters/langchain.ts';
import { createApp } from '../../src/app.ts';
import { PyboxClient } from '../../src/client/client.ts';
import { ExecutionResult, RuntimeName } from '../../src/core/schemas.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { NO_KEYS, recordingLogger } from '../http/fake-service.ts';
import { sessionStack, type SessionStack } from '../support/fake-sessions.ts';
import { realPybox } from '../support/real.ts';
import { serveApp } from '../support/serve.ts';

const SESSION_TOOLS = { execute_python_code: true, sandbox_info: true, python_session_run: true, python_session_close: true };

const REAL = process.env.PYBOX_TEST_SESSIONS === undefined ? undefined : RuntimeName.parse(process.env.PYBOX_TEST_SESSIONS);

/** A pybox serving sessions over HTTP; `stack` (the fakes, to look behind the API) when not real. */
async function startPybox(withSessions = true): Promise<{ url: string; client: PyboxClient; stack: SessionStack | undefined; maxPerTenant: number }> {
  let app;
  let stack: SessionStack | undefined;
  if (REAL && withSessions) {
    const pybox = await realPybox(REAL, { tools: { enabled: SESSION_TOOLS } });
    cleanups.push(() => pybox.dispose());
    app = pybox.app;
  } else {
    stack = sessionStack();
    app = createApp({
      service: stack.executions,
      logger: recordingLogger(),
      bodyLimitBytes: 1 << 20,
      auth: new Authenticator(NO_KEYS),
      tools: SESSION_TOOLS,
      ...(withSessions ? { sessions: stack.service } : {}),
    });
  }
  const served = await serveApp(app);
  cleanups.push(() => served.close());
  return { url: served.url, client: new PyboxClient({ baseUrl: served.url, retries: 0 }), stack, maxPerTenant: stack?.config.sessions.maxPerTenant ?? 8 };
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// ---- a scripted OpenAI-compatible model --------------------------------------------------------

type ChatMessage = { role: string; content: string | null; tool_call_id?: string; tool_calls?: Array<{ id: string; type: 'function'; function: { name: string; arguments: string } }> };
type ChatRequest = { model: string; messages: ChatMessage[]; tools?: unknown[] };
type Step = { content: string } | { call: { name: string; args: Record<string, unknown> } };
type Script = (req: ChatRequest) => Step;

async function readBody(req: IncomingMessage): Promise<string> {
  let body = '';
  for await (const chunk of req) body += chunk;
  return body;
}

async function scriptedModel(script: Script): Promise<{ baseUrl: string; requests: ChatRequest[] }> {
  const requests: ChatRequest[] = [];
  let calls = 0;
  const server: Server = createServer(async (req, res) => {
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      res.writeHead(404).end();
      return;
    }
    const body = JSON.parse(await readBody(req)) as ChatRequest;
    requests.push(body);
    const step = script(body);
    const message: ChatMessage =
      'call' in step
        ? { role: 'assistant', content: null, tool_calls: [{ id: `call_${++calls}`, type: 'function', function: { name: step.call.name, arguments: JSON.stringify(step.call.args) } }] }
        : { role: 'assistant', content: step.content };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ id: `chatcmpl-${calls}`, object: 'chat.completion', model: body.model, choices: [{ index: 0, message, finish_reason: 'call' in step ? 'tool_calls' : 'stop' }] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, requests };
}

/**
 * The agent loop as LangChain runs tools: the model's tool calls go to the LangChain tool as
 * ToolCalls, its ToolMessages go back to the model, until the model answers in words.
 */
async function runAgent(opts: { modelUrl: string; tool: ReturnType<typeof createPythonSessionTool>['tool']; task: string; maxTurns: number }): Promise<{ answer: string | null; toolMessages: ToolMessage[] }> {
  const messages: ChatMessage[] = [{ role: 'user', content: opts.task }];
  const toolMessages: ToolMessage[] = [];
  const tools = [{ type: 'function', function: { name: opts.tool.name, description: opts.tool.description, parameters: { type: 'object' } } }];
  for (let turn = 0; turn < opts.maxTurns; turn++) {
    const res = await fetch(`${opts.modelUrl}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'scripted', messages, tools }) });
    const reply = ((await res.json()) as { choices: Array<{ message: ChatMessage }> }).choices[0]!.message;
    messages.push(reply);
    if (!reply.tool_calls) return { answer: reply.content, toolMessages };
    for (const call of reply.tool_calls) {
      const message = (await opts.tool.invoke({ type: 'tool_call', id: call.id, name: call.function.name, args: JSON.parse(call.function.arguments) as Record<string, unknown> })) as ToolMessage;
      toolMessages.push(message);
      messages.push({ role: 'tool', tool_call_id: call.id, content: String(message.content) });
    }
  }
  return { answer: null, toolMessages };
}

const toolReplies = (req: ChatRequest) => req.messages.filter((m) => m.role === 'tool').map((m) => m.content ?? '');

/** Builds on its own earlier call: the second call uses a variable only the first defined. */
const buildsOnState: Script = (req) => {
  const replies = toolReplies(req);
  if (replies.length === 0) return { call: { name: 'python_session', args: { code: 'x = 40' } } };
  if (replies.length === 1) return { call: { name: 'python_session', args: { code: 'y = x + 2\nprint(y)' } } };
  const printed = /stdout:\n(.+)/.exec(replies[1]!)?.[1];
  return { content: printed ? `The answer is ${printed}.` : `I could not tell: ${replies[1]}` };
};

describe('the LangChain session tool in an agent loop', () => {
  it('keeps one session across the conversation and closes it with the conversation', async () => {
    const pybox = await startPybox();
    const model = await scriptedModel(buildsOnState);
    const session = createPythonSessionTool({ client: pybox.client, artifact: true });
    let closed = false;
    try {
      const { answer, toolMessages } = await runAgent({ modelUrl: model.baseUrl, tool: session.tool, task: 'Add 2 to 40 in two steps.', maxTurns: 4 });
      expect(answer).toBe('The answer is 42.');
      expect(toolMessages.map((m) => m.status)).toEqual(['success', 'success']);
      const results = toolMessages.map((m) => ExecutionResult.parse(m.artifact));
      expect(results.map((r) => r.session?.call)).toEqual([1, 2]);
      expect(new Set(results.map((r) => r.session?.sessionId)).size).toBe(1);
      expect(session.sessionId).toBe(results[0]!.session?.sessionId);
      expect((await pybox.client.listSessions()).items.map((s) => s.id)).toEqual([session.sessionId]);
      // Both calls were recorded as executions.
      for (const r of results) expect(await pybox.client.get(r.id)).toMatchObject({ id: r.id, session: r.session });

      await session.close();
      closed = true;
      expect(session.sessionId).toBeUndefined();
      expect((await pybox.client.listSessions()).items).toEqual([]);
      if (pybox.stack) expect(pybox.stack.sandboxes.open_).toEqual([]);
    } finally {
      if (!closed) await session.close();
    }
  });

  it('starts a new session when the old one has ended, and tells the model its state is gone', async () => {
    const pybox = await startPybox();
    const session = createPythonSessionTool({ client: pybox.client });
    try {
      const call = (id: string, code: string) => session.tool.invoke({ type: 'tool_call', id, name: 'python_session', args: { code } }) as Promise<ToolMessage>;
      expect((await call('c1', 'x = 1')).status).toBe('success');
      const first = session.sessionId!;
      await pybox.client.deleteSession(first); // ended behind the conversation's back (as idle expiry would)
      const second = await call('c2', 'print(x)');
      expect(String(second.content)).toContain('The earlier session had ended, so this ran in a new one');
      expect(String(second.content)).toContain("NameError: name 'x' is not defined");
      expect(second.status).toBe('error');
      expect(session.sessionId).not.toBe(first);
      expect(session.sessionId).toBeDefined();
    } finally {
      await session.close();
    }
    expect((await pybox.client.listSessions()).items).toEqual([]);
  });

  it('runs the calls of one conversation one at a time (no session_busy for parallel tool calls)', async () => {
    const pybox = await startPybox();
    const session = createPythonSessionTool({ client: pybox.client, artifact: true });
    try {
      const outs = await Promise.all(['a = 1', 'b = 2', 'c = a + 1\nprint(c)'].map((code, i) => session.tool.invoke({ type: 'tool_call', id: `p${i}`, name: 'python_session', args: { code } }) as Promise<ToolMessage>));
      expect(outs.map((m) => m.status)).toEqual(['success', 'success', 'success']);
      expect(String(outs[2]!.content)).toContain('2');
      const calls = outs.map((m) => ExecutionResult.parse(m.artifact).session);
      expect(calls.map((c) => c?.call)).toEqual([1, 2, 3]);
      expect(new Set(calls.map((c) => c?.sessionId)).size).toBe(1);
    } finally {
      await session.close();
    }
  });
});

// ---- MCP ---------------------------------------------------------------------------------------

type ToolResult = { content: Array<{ type: string; text?: string }>; isError?: boolean; structuredContent?: Record<string, unknown> };
const textOf = (r: unknown) =>
  (r as ToolResult).content
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('\n');

async function mcpClient(url: string): Promise<Client> {
  const client = new Client({ name: 'pybox-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
  cleanups.push(() => client.close());
  return client;
}

describe('session tools over /mcp', () => {
  it('creates a session on a call without session_id, continues it with the id named, and closes it', async () => {
    const pybox = await startPybox();
    const mcp = await mcpClient(pybox.url);
    const { tools } = await mcp.listTools();
    expect(tools.map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info', 'python_session_run', 'python_session_close']);
    const run = tools.find((t) => t.name === 'python_session_run')!;
    expect(run.inputSchema).toMatchObject({ properties: { code: { type: 'string' }, session_id: { type: 'string' }, timeout: { type: 'number' } }, required: ['code'] });

    const first = (await mcp.callTool({ name: 'python_session_run', arguments: { code: 'x = 7' } })) as ToolResult;
    expect(first.isError).toBe(false);
    const id = /Session id: (\S+) \(pass session_id "\1" to continue/.exec(textOf(first))?.[1];
    expect(id).toBeDefined();
    expect(textOf(first)).toContain('Started a new session.');
    expect(new AjvJsonSchemaValidator().getValidator(run.outputSchema!)(first.structuredContent)).toMatchObject({ valid: true });

    const second = (await mcp.callTool({ name: 'python_session_run', arguments: { code: 'y = x + 1\nprint(y)', session_id: id } })) as ToolResult;
    expect(second.isError).toBe(false);
    expect(textOf(second)).toContain('8');
    expect(second.structuredContent).toMatchObject({ session: { sessionId: id, call: 2 } });

    const closed = (await mcp.callTool({ name: 'python_session_close', arguments: { session_id: id } })) as ToolResult;
    expect(closed.isError).toBe(false);
    expect(textOf(closed)).toBe(`Session ${id} is closed (2 calls).`);
    expect((await pybox.client.listSessions()).items).toEqual([]);

    const after = (await mcp.callTool({ name: 'python_session_run', arguments: { code: 'print(y)', session_id: id } })) as ToolResult;
    expect(after.isError).toBe(true);
    expect(textOf(after)).toBe(`The session ${id} has ended (deleted): its variables are gone. Run the code again without session_id to start a new session, redoing what it needs.`);

    const unknown = (await mcp.callTool({ name: 'python_session_run', arguments: { code: 'x = 1', session_id: 'nope' } })) as ToolResult;
    expect(unknown.isError).toBe(true);
    expect(textOf(unknown)).toContain('The session nope does not exist');
  });

  it('does not offer the session tools where sessions are not served, even when enabled', async () => {
    const pybox = await startPybox(false);
    const mcp = await mcpClient(pybox.url);
    expect((await mcp.listTools()).tools.map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info']);
    expect((await pybox.client.tools()).anthropic.map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info']);
  });

  it('answers bad arguments and a full session quota in words', async () => {
    const pybox = await startPybox();
    const mcp = await mcpClient(pybox.url);
    const bad = (await mcp.callTool({ name: 'python_session_close', arguments: {} })) as ToolResult;
    expect(bad.isError).toBe(true);
    expect(textOf(bad)).toContain('Invalid arguments for python_session_close: session_id');
    const made = [];
    for (let i = 0; i < pybox.maxPerTenant; i++) made.push(await pybox.client.createSession());
    const full = (await mcp.callTool({ name: 'python_session_run', arguments: { code: 'x = 1' } })) as ToolResult;
    expect(full.isError).toBe(true);
    expect(textOf(full)).toContain('No new session can be started');
    for (const m of made) await pybox.client.deleteSession(m.id);
  });
});
