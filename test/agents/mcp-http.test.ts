// /mcp in-process (app.request, a fake service, no Docker), with the SDK's own client: the tools
// call the service directly for the authenticated caller (one rate-limit charge, no internal
// address), results carry structuredContent valid against the listed outputSchema, arguments are
// checked as the schemas say, a deep context gets the depth error, and a cancellation reaches the
// execution's signal, in the same request or in a later one.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import { afterEach, describe, expect, it } from 'vitest';
import { NO_TENANT_LIMITS, type Caller, type TenantLimits } from '../../src/core/caller.ts';
import { PyboxError } from '../../src/core/errors.ts';
import type { ApiKeyLookup, StoredApiKey } from '../../src/core/ports.ts';
import { ExecutionResult, type ExecutionRequest } from '../../src/core/schemas.ts';
import { createApp } from '../../src/app.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { hashApiKey, newApiKey } from '../../src/tenancy/keys.ts';
import { FakeExecutionService, harness, NO_KEYS, recordingLogger, sampleResult } from '../http/fake-service.ts';
import { serveApp } from '../support/serve.ts';

class Keys implements ApiKeyLookup {
  readonly rows: StoredApiKey[] = [];
  add(tenant: string, limits: Partial<TenantLimits> = {}): string {
    const key = newApiKey();
    this.rows.push({ id: `key_${String(this.rows.length).padStart(12, '0')}`, tenant, admin: false, hash: hashApiKey(key), revokedAt: null, limits: { ...NO_TENANT_LIMITS, ...limits } });
    return key;
  }
  hasKeys = async () => this.rows.length > 0;
  findKeyByHash = async (hash: Buffer) => this.rows.find((r) => r.hash.equals(hash));
}

type App = ReturnType<typeof harness>['app'];

/** An app over `service` with a body limit large enough for deep bodies (the harness's is 4 KiB). */
function appOver<S extends FakeExecutionService>(service: S, keys: ApiKeyLookup = NO_KEYS) {
  const logger = recordingLogger();
  return { app: createApp({ service, logger, bodyLimitBytes: 1 << 20, auth: new Authenticator(keys) }), service, logger };
}
const clients: Client[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

async function connect(app: App, headers: Record<string, string> = {}): Promise<Client> {
  const client = new Client({ name: 'pybox-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL('http://localhost/mcp'), {
    fetch: async (url, init) => app.request(String(url), init),
    requestInit: { headers },
  });
  await client.connect(transport);
  clients.push(client);
  return client;
}

type ToolResult = { content: Array<{ type: string; text?: string }>; isError?: boolean; structuredContent?: Record<string, unknown>; _meta?: Record<string, unknown> };
const textOf = (r: unknown) =>
  (r as ToolResult).content
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('\n');

/**
 * A JSON-RPC tools/call posted to /mcp as a bare HTTP request, the answer read as JSON or SSE.
 * Arguments given as a string are sent as that JSON text (deeper than JSON.stringify can go).
 */
async function rawCall(app: App, args: unknown, headers: Record<string, string> = {}, id: number | string = 1): Promise<{ status: number; message: unknown }> {
  const argsJson = typeof args === 'string' ? args : JSON.stringify(args);
  const res = await app.request('/mcp', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"method":"tools/call","params":{"name":"execute_python_code","arguments":${argsJson}}}`,
  });
  const text = await res.text();
  const data = text.split('\n').find((l) => l.startsWith('data: '));
  return { status: res.status, message: data ? JSON.parse(data.slice(6)) : text ? JSON.parse(text) : null };
}

describe('/mcp in-process', () => {
  it('runs through the service for the authenticated caller, returning structuredContent valid against the outputSchema', async () => {
    const { app, service } = harness();
    const mcp = await connect(app);
    const { tools } = await mcp.listTools();
    const execute = tools.find((t) => t.name === 'execute_python_code')!;
    expect(execute.outputSchema).toMatchObject({ type: 'object', required: expect.arrayContaining(['id', 'status', 'feedback']) });
    expect(tools.find((t) => t.name === 'sandbox_info')!.outputSchema).toMatchObject({ type: 'object', properties: { python: expect.anything() } });

    const r = (await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(n)', context: { n: 1, café: 2, π: 3.14 }, timeout: 2 } })) as ToolResult;
    expect(r.isError).toBe(false);
    expect(textOf(r)).toBe(sampleResult().feedback);
    expect(r.structuredContent).toEqual(sampleResult());
    const validate = new AjvJsonSchemaValidator().getValidator(execute.outputSchema!);
    expect(validate(r.structuredContent)).toMatchObject({ valid: true });
    // The validator is not a rubber stamp.
    expect(validate({ ...sampleResult(), status: 'exploded' }).valid).toBe(false);

    expect(service.calls.execute).toHaveLength(1);
    const call = service.calls.execute[0]!;
    expect(call.request).toEqual({ code: 'print(n)', context: { n: 1, café: 2, π: 3.14 }, timeoutMs: 2000 } satisfies ExecutionRequest);
    expect(call.signal).toBeInstanceOf(AbortSignal);
    expect(service.calls.callers.map((c) => c.caller?.tenant)).toEqual(['local']);

    const info = (await mcp.callTool({ name: 'sandbox_info', arguments: {} })) as ToolResult;
    expect(info.isError).toBe(false);
    const infoSchema = tools.find((t) => t.name === 'sandbox_info')!.outputSchema!;
    expect(new AjvJsonSchemaValidator().getValidator(infoSchema)(info.structuredContent)).toMatchObject({ valid: true });
  });

  it('serves the same input schemas as GET /v1/tools: identifier pattern, no extra arguments, a numeric timeout', async () => {
    const { app } = harness();
    const mcp = await connect(app);
    const { tools } = await mcp.listTools();
    const listed = (await (await app.request('/v1/tools')).json()) as { anthropic: Array<{ name: string; input_schema: unknown }> };
    for (const tool of tools) {
      const served = listed.anthropic.find((t) => t.name === tool.name);
      expect(served?.input_schema, tool.name).toEqual(tool.inputSchema);
    }
    const schema = tools[0]!.inputSchema as unknown as { additionalProperties: unknown; properties: Record<string, Record<string, unknown>> };
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.timeout).toMatchObject({ type: 'number', minimum: 1, maximum: 300 });
    const names = schema.properties.context!.propertyNames as { pattern: string };
    expect(names).toMatchObject({ type: 'string', pattern: expect.stringContaining('\\p{XID_Start}') });
    const pattern = new RegExp(names.pattern, 'u');
    expect(['n', 'café', 'π', '_x'].every((k) => pattern.test(k))).toBe(true);
    expect(['1x', 'a b', 'class', '__x'].some((k) => pattern.test(k))).toBe(false);
    expect(String(schema.properties.context!.description)).toContain('builtin');
  });

  it('refuses unknown arguments, bad context names and a string timeout with readable tool errors, running nothing', async () => {
    const { app, service } = harness();
    const mcp = await connect(app);
    const extra = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', language: 'python', timeoutMs: 5 } });
    expect(extra.isError).toBe(true);
    expect(textOf(extra)).toBe(
      'Invalid arguments for execute_python_code: language: unknown argument (the arguments are code, timeout, context); ' +
        'timeoutMs: unknown argument (the arguments are code, timeout, context). Fix them and call the tool again.',
    );
    const builtin = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', context: { print: 1 } } });
    expect(builtin.isError).toBe(true);
    expect(textOf(builtin)).toContain('context.print: invalid name: is the name of the Python builtin print');
    const keyword = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', context: { class: 1, '2x': 2 } } });
    expect(textOf(keyword)).toContain('context.class: invalid name: is a Python keyword');
    expect(textOf(keyword)).toContain('context.2x: invalid name: must be a Python identifier, which cannot start with a digit');
    const timeout = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)', timeout: '5' } });
    expect(timeout.isError).toBe(true);
    expect(textOf(timeout)).toContain('timeout: Invalid input: expected number, received string');
    const info = await mcp.callTool({ name: 'sandbox_info', arguments: { verbose: true } });
    expect(textOf(info)).toContain('verbose: unknown argument (it takes no arguments)');
    expect(service.calls.execute).toEqual([]);
  });

  it('answers a deep context with the depth limit, counting the arguments, not the JSON-RPC envelope', async () => {
    const { app, service } = appOver(new FakeExecutionService());
    // The arguments object is level 1, context level 2: 64 levels in all are allowed, as in a POST body.
    const nest = (levels: number) => `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`;
    const args = (levels: number) => `{"code":"print(1)","context":{"deep":${nest(levels)}}}`;
    const ok = await rawCall(app, args(62));
    expect(ok.message).toMatchObject({ result: { isError: false } });
    expect(service.calls.execute).toHaveLength(1);
    // The same context is accepted by the HTTP API itself.
    expect((await app.request('/v1/executions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: args(62) })).status).toBe(200);

    for (const levels of [63, 20_000]) {
      const deep = await rawCall(app, args(levels));
      expect(deep.status).toBe(200);
      const result = (deep.message as { result: ToolResult }).result;
      expect(result.isError).toBe(true);
      expect(textOf(result)).toBe(
        'Invalid arguments for execute_python_code: the arguments nest deeper than 64 levels (the arguments object is level 1). Send flatter data and call the tool again.',
      );
      expect(textOf(result)).not.toMatch(/pybox\.internal|stack|connection/i);
    }
    // 63 levels is over for the HTTP API too: the two count alike.
    expect((await app.request('/v1/executions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: args(63) })).status).toBe(400);
    expect(service.calls.execute).toHaveLength(2);
  });

  it('charges the tenant one request of its rate for a /mcp tool call', async () => {
    const keys = new Keys();
    const key = keys.add('acme', { ratePerMinute: 1 });
    const { app, service } = harness({ keys });
    const auth = { authorization: `Bearer ${key}` };
    // With a rate of one request a minute, the call itself is the only request allowed: a second
    // charge inside it would have refused the run.
    const first = await rawCall(app, { code: 'print(1)' }, auth);
    expect(first.status).toBe(200);
    expect(first.message).toMatchObject({ result: { isError: false, structuredContent: { status: 'completed' } } });
    expect(service.calls.callers.map((c) => c.caller)).toEqual([expect.objectContaining({ tenant: 'acme', keyId: 'key_000000000000' })]);
    expect((await rawCall(app, { code: 'print(1)' }, auth)).status).toBe(429);
    // And without the key, nothing runs at all.
    expect((await rawCall(app, { code: 'print(1)' })).status).toBe(401);
    expect(service.calls.execute).toHaveLength(1);
  });

  it('answers faults of the service as tool errors without internal details', async () => {
    const { app, service, logger } = harness();
    const mcp = await connect(app);
    service.failWith.execute = new PyboxError('queue_full', 'every execution slot and the queue are full', { retryAfterS: 2 });
    const busy = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)' } });
    expect(busy).toMatchObject({ isError: true });
    expect(textOf(busy)).toBe('The sandbox service is busy and did not run the code: every execution slot and the queue are full. Retry in about 2 s.');
    service.failWith.execute = new TypeError('cannot read properties of undefined (reading /srv/pybox/secret)');
    const bug = await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'print(1)' } });
    expect(bug.isError).toBe(true);
    expect(textOf(bug)).toBe('The sandbox service could not run the call (internal): internal server error');
    expect(logger.entries.some((e) => e.level === 'error' && String(e.fields?.error).includes('/srv/pybox/secret'))).toBe(true);
    service.failWith.get = new PyboxError('not_found', 'no execution with that id');
  });
});

/** A service whose runs wait until their signal aborts, then end `cancelled`, as the core's does. */
class WaitingService extends FakeExecutionService {
  started: Array<{ caller: Caller; signal: AbortSignal | undefined }> = [];
  override async execute(caller: Caller, request: ExecutionRequest, opts?: { signal?: AbortSignal }): Promise<ExecutionResult> {
    await super.execute(caller, request, opts);
    this.started.push({ caller, signal: opts?.signal });
    const signal = opts?.signal;
    if (!signal) throw new Error('no signal');
    await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
    return sampleResult({ status: 'cancelled', success: false, exitCode: null, feedback: 'The run was cancelled.' });
  }
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!check()) throw new Error(`gave up waiting for ${what}`);
}

describe('/mcp cancellation in-process', () => {
  it('a client that cancels its call (notifications/cancelled in a later request) aborts the execution', async () => {
    const { app, service } = appOver(new WaitingService());
    const mcp = await connect(app);
    const controller = new AbortController();
    const call = mcp.callTool({ name: 'execute_python_code', arguments: { code: 'import time\ntime.sleep(60)' } }, undefined, { signal: controller.signal });
    await until(() => service.started.length === 1, 'the run to start');
    expect(service.started[0]!.signal?.aborted).toBe(false);
    controller.abort('the user stopped it');
    await expect(call).rejects.toThrow();
    await until(() => service.started[0]!.signal?.aborted === true, 'the execution signal to abort');
  });

  it('a client that hangs up aborts the execution', async () => {
    const { app, service } = appOver(new WaitingService());
    const controller = new AbortController();
    const res = app.request('/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'execute_python_code', arguments: { code: 'x' } } }),
      signal: controller.signal,
    });
    await until(() => service.started.length === 1, 'the run to start');
    controller.abort();
    await Promise.resolve(res).catch(() => undefined);
    await until(() => service.started[0]!.signal?.aborted === true, 'the execution signal to abort');
  });

  it('a client that hangs up on a real socket aborts the execution (the node server passes the close on)', async () => {
    const { app, service } = appOver(new WaitingService());
    const served = await serveApp(app);
    try {
      const controller = new AbortController();
      const answer = fetch(`${served.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'execute_python_code', arguments: { code: 'x' } } }),
        signal: controller.signal,
      }).then((res) => res.text());
      answer.catch(() => {});
      await until(() => service.started.length === 1, 'the run to start');
      expect(service.started[0]!.signal?.aborted).toBe(false);
      controller.abort();
      await until(() => service.started[0]!.signal?.aborted === true, 'the execution signal to abort');
    } finally {
      await served.close();
    }
  });

  it('tells two clients of one key apart by the session named at initialize, so a cancellation reaches only its own call', async () => {
    const { app, service } = appOver(new WaitingService());
    const init = await app.request('/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    });
    expect(init.headers.get('mcp-session-id')).toMatch(/^[0-9a-f-]{36}$/);
    await init.text();
    // Only initialize names one.
    const list = await app.request('/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(list.status).toBe(200);
    expect(list.headers.has('mcp-session-id')).toBe(false);
    await list.text();

    // Two local-mode clients: the same caller, and both number their first call 1.
    const [a, b] = [await connect(app), await connect(app)];
    const [stopA, stopB] = [new AbortController(), new AbortController()];
    const callA = a.callTool({ name: 'execute_python_code', arguments: { code: 'a' } }, undefined, { signal: stopA.signal });
    const callB = b.callTool({ name: 'execute_python_code', arguments: { code: 'b' } }, undefined, { signal: stopB.signal });
    callA.catch(() => {});
    callB.catch(() => {});
    await until(() => service.started.length === 2, 'both runs to start');
    const runOf = (code: string) => service.started[service.calls.execute.findIndex((e) => e.request.code === code)]!;
    stopA.abort('A stops');
    await until(() => runOf('a').signal?.aborted === true, "A's run to abort");
    await new Promise((r) => setTimeout(r, 50));
    expect(runOf('b').signal?.aborted).toBe(false);
    stopB.abort('B stops');
    await until(() => runOf('b').signal?.aborted === true, "B's run to abort");
  });

  it('a cancellation never reaches another API key\'s call with the same id', async () => {
    const keys = new Keys();
    const alice = keys.add('alice');
    const mallory = keys.add('mallory');
    const { app, service } = appOver(new WaitingService(), keys);
    const running = rawCall(app, { code: 'x' }, { authorization: `Bearer ${alice}` }, 42);
    await until(() => service.started.length === 1, 'the run to start');
    const cancel = (key: string) =>
      app.request('/mcp', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${key}` },
        body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 42, reason: 'mine now' } }),
      });
    expect((await cancel(mallory)).status).toBe(202);
    await new Promise((r) => setTimeout(r, 50));
    expect(service.started[0]!.signal?.aborted).toBe(false);
    expect((await cancel(alice)).status).toBe(202);
    await until(() => service.started[0]!.signal?.aborted === true, 'the execution signal to abort');
    expect((await running).message).toMatchObject({ id: 42, result: { structuredContent: { status: 'cancelled' } } });
  });
});
