// The tool definitions every agent surface derives from: selection by config, the function-calling
// and output schemas, argument handling, and that no call ever throws for a failure a model should
// read, whichever backend (the typed client, or the service in-process) the tools run against.
import { describe, expect, it } from 'vitest';
import { serviceBackend } from '../../src/adapters/service-backend.ts';
import { callTool, functionSchemas, outputJsonSchema, selectTools, EXECUTE_PYTHON_DESCRIPTION, type PyboxTool, type ToolBackend } from '../../src/adapters/tools.ts';
import type { ExecuteRequest, PyboxClient } from '../../src/client/client.ts';
import { ConnectionError, InvalidRequestError, QueueFullError } from '../../src/client/errors.ts';
import { LOCAL_CALLER } from '../../src/core/caller.ts';
import { PyboxError } from '../../src/core/errors.ts';
import { CONTEXT_NAME_PATTERN } from '../../src/core/python-names.ts';
import type { ExecutionResult } from '../../src/core/schemas.ts';
import { FakeExecutionService, recordingLogger, sampleResult, sampleRuntimes } from '../http/fake-service.ts';

class FakeClient implements ToolBackend {
  executed: Array<{ request: ExecuteRequest; signal: AbortSignal | undefined }> = [];
  next: ExecutionResult | Error = sampleResult();

  async execute(request: ExecuteRequest, opts: { signal?: AbortSignal | undefined } = {}) {
    this.executed.push({ request, signal: opts.signal });
    if (this.next instanceof Error) throw this.next;
    return this.next;
  }
  async get(id: string) {
    return sampleResult({ id, status: 'error', success: false, feedback: 'It failed.' });
  }
  async runtimes() {
    return sampleRuntimes;
  }
}

const setup = (selection?: Parameters<typeof selectTools>[0]) => {
  const fake = new FakeClient();
  return { fake, client: fake as unknown as PyboxClient, tools: selectTools(selection) };
};
const byName = (tools: PyboxTool[], name: string) => tools.find((t) => t.name === name)!;

describe('selectTools', () => {
  it('offers execute_python_code, sandbox_info and the session tools by default, in a fixed order', () => {
    expect(selectTools().map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info', 'python_session_run', 'python_session_close']);
    expect(selectTools({ get_execution: true, execute_python_code: true }).map((t) => t.name)).toEqual(['execute_python_code', 'get_execution']);
    expect(selectTools({})).toEqual([]);
  });
});

describe('functionSchemas', () => {
  it('gives OpenAI and Anthropic definitions with the same JSON Schema: strict, typed, context names by pattern', () => {
    const { openai, anthropic } = functionSchemas(selectTools());
    expect(openai[0]).toEqual({
      type: 'function',
      function: {
        name: 'execute_python_code',
        description: EXECUTE_PYTHON_DESCRIPTION,
        parameters: {
          type: 'object',
          properties: {
            code: { type: 'string', minLength: 1, maxLength: 1_000_000, description: expect.stringContaining('Python 3 source code') },
            timeout: { type: 'number', minimum: 1, maximum: 300, description: expect.stringContaining('Seconds the code may run') },
            context: {
              type: 'object',
              propertyNames: { type: 'string', pattern: CONTEXT_NAME_PATTERN.source, maxLength: 128 },
              additionalProperties: {},
              description: expect.stringMatching(/global variable.*not a keyword, not the name of a Python builtin \(print, len/),
            },
          },
          required: ['code'],
          additionalProperties: false,
        },
      },
    });
    expect(anthropic.map((t) => t.name)).toEqual(['execute_python_code', 'sandbox_info', 'python_session_run', 'python_session_close']);
    expect(anthropic[0]!.input_schema).toEqual(openai[0]!.function.parameters);
    expect(anthropic[1]!.input_schema).toEqual({ type: 'object', properties: {}, additionalProperties: false });
    expect(JSON.stringify(openai)).not.toContain('$schema');
  });

  it('derives the output schemas from the result types', () => {
    const [execute, info] = selectTools();
    expect(outputJsonSchema(execute!)).toMatchObject({
      type: 'object',
      properties: { status: { type: 'string', enum: expect.arrayContaining(['completed', 'cancelled']) }, feedback: { type: 'string' } },
      required: expect.arrayContaining(['id', 'status', 'success', 'feedback']),
    });
    expect(outputJsonSchema(info!)).toMatchObject({ type: 'object', properties: { runtime: { enum: ['runc', 'runsc'] } } });
  });
});

describe('execute_python_code', () => {
  it('turns seconds into timeoutMs, passes context and the signal, and returns the feedback', async () => {
    const { fake, client, tools } = setup();
    const signal = new AbortController().signal;
    const out = await byName(tools, 'execute_python_code').call(client, { code: 'print(x)', timeout: 2.5, context: { x: [1] } }, { signal });
    expect(fake.executed).toEqual([{ request: { code: 'print(x)', timeoutMs: 2500, context: { x: [1] } }, signal }]);
    expect(out).toEqual({ text: sampleResult().feedback, isError: false, result: sampleResult(), structured: sampleResult() });
  });

  it('marks a failed run isError and names the execution id only when get_execution is on', async () => {
    const failed = sampleResult({ status: 'timeout', success: false, feedback: 'Stopped at 1 s.' });
    const off = setup();
    off.fake.next = failed;
    expect(await byName(off.tools, 'execute_python_code').call(off.client, { code: 'x' })).toMatchObject({ text: 'Stopped at 1 s.', isError: true });
    const on = setup({ execute_python_code: true, get_execution: true });
    on.fake.next = failed;
    expect((await byName(on.tools, 'execute_python_code').call(on.client, { code: 'x' })).text).toBe('Stopped at 1 s.\n\nExecution id: exec-1');
    expect(await byName(on.tools, 'get_execution').call(on.client, { id: 'e9' })).toMatchObject({ text: 'Status: error\n\nIt failed.', isError: false });
  });

  it('answers bad arguments with a readable error and runs nothing', async () => {
    const { fake, client, tools } = setup();
    const tool = byName(tools, 'execute_python_code');
    const bad = [
      { code: 'x', timeout: 0 },
      { code: 'x', timeout: 301 },
      { code: 'x', timeout: '5' },
      {},
      { code: 42 },
      null,
      { code: 'x', extra: 1 },
      { code: 'x', context: { print: 1 } },
      { code: 'x', context: { 'a-b': 1 } },
      { code: 'x', context: [1] },
    ];
    for (const args of bad) {
      const out = await tool.call(client, args);
      expect(out.isError, JSON.stringify(args)).toBe(true);
      expect(out.text).toMatch(/^Invalid arguments for execute_python_code: .+\. Fix them and call the tool again\.$/s);
    }
    expect((await tool.call(client, { code: 'x', timeout: 301 })).text).toContain('timeout: Too big');
    expect((await tool.call(client, { code: 'x', timeout: '5' })).text).toContain('timeout: Invalid input: expected number, received string');
    expect((await tool.call(client, { code: 'x', extra: 1 })).text).toContain('extra: unknown argument (the arguments are code, timeout, context)');
    expect((await tool.call(client, { code: 'x', context: { 'a-b': 1 } })).text).toContain('context."a-b": invalid name: must be a Python identifier');
    // A name of any length is shown clipped.
    const long = (await tool.call(client, { code: 'x', context: { ['é'.repeat(500)]: 1 } })).text;
    expect(long).toContain(`context."${'é'.repeat(64)}…": invalid name: must be at most 128 characters long`);
    expect(fake.executed).toEqual([]);
  });

  it('refuses arguments nested deeper than the HTTP API allows a body, before any other check', async () => {
    const { fake, client, tools } = setup();
    const tool = byName(tools, 'execute_python_code');
    const nest = (levels: number) => {
      let v: unknown = 0;
      for (let i = 0; i < levels; i++) v = [v];
      return v;
    };
    // The arguments are level 1 and context level 2, so a value may hold 62 levels.
    expect((await tool.call(client, { code: 'x', context: { v: nest(62) } })).isError).toBe(false);
    for (const levels of [63, 100_000]) {
      const out = await tool.call(client, { code: 'x', context: { v: nest(levels), 'not a name': 1 } });
      expect(out).toEqual({
        text: 'Invalid arguments for execute_python_code: the arguments nest deeper than 64 levels (the arguments object is level 1). Send flatter data and call the tool again.',
        isError: true,
      });
    }
    expect(fake.executed).toHaveLength(1);
  });

  it('turns faults of the service into texts a model can act on', async () => {
    const { fake, client, tools } = setup();
    const tool = byName(tools, 'execute_python_code');
    fake.next = new QueueFullError('every execution slot and the queue are full', { code: 'queue_full', status: 503, retryAfterS: 2 });
    expect(await tool.call(client, { code: 'x' })).toEqual({
      text: 'The sandbox service is busy and did not run the code: every execution slot and the queue are full. Retry in about 2 s.',
      isError: true,
    });
    fake.next = new InvalidRequestError('invalid request body: context.1x: Invalid key in record', { code: 'invalid_request', status: 400 });
    expect((await tool.call(client, { code: 'x' })).text).toBe(
      'The sandbox service refused the arguments: invalid request body: context.1x: Invalid key in record. Fix them and call the tool again.',
    );
    fake.next = new ConnectionError('cannot reach pybox at http://127.0.0.1:1: refused', { code: 'connection_failed' });
    expect((await tool.call(client, { code: 'x' })).text).toBe('The sandbox service could not run the call (connection_failed): cannot reach pybox at http://127.0.0.1:1: refused');
    fake.next = new TypeError('a bug');
    await expect(tool.call(client, { code: 'x' })).rejects.toThrow('a bug');
  });
});

describe('the in-process backend (the service, for an authenticated caller)', () => {
  const inProcess = () => {
    const service = new FakeExecutionService();
    const logger = recordingLogger();
    return { service, logger, backend: serviceBackend({ service, caller: LOCAL_CALLER, logger }) };
  };

  it('runs through the service with the caller and the signal, and returns the documented shape only', async () => {
    const { service, backend } = inProcess();
    service.result = { ...sampleResult(), internalNote: 'not for callers' } as ExecutionResult;
    const signal = new AbortController().signal;
    const [tool] = selectTools();
    const out = await tool!.call(backend, { code: 'print(x)', context: { x: 1 }, timeout: 1 }, { signal });
    expect(out.structured).toEqual(sampleResult());
    expect(service.calls.execute).toEqual([{ request: { code: 'print(x)', context: { x: 1 }, timeoutMs: 1000 }, signal }]);
    expect(service.calls.callers[0]!.caller).toBe(LOCAL_CALLER);
  });

  it('checks a request as the HTTP API does, for callers that did not come through a tool', async () => {
    const { service, backend } = inProcess();
    await expect(backend.execute({ code: 'x', context: { print: 1 } })).rejects.toMatchObject({ code: 'invalid_request', message: expect.stringContaining('context.print') });
    await expect(backend.execute({ code: 'x', memoryMb: 0.5 })).rejects.toMatchObject({ code: 'invalid_request' });
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = { a: deep };
    await expect(backend.execute({ code: 'x', context: { deep: deep as number } })).rejects.toMatchObject({ code: 'invalid_request', message: 'the request nests deeper than 64 levels' });
    expect(service.calls.execute).toEqual([]);
  });

  it("words the service's faults as the client's, and hides a bug's message from the model (logging it)", async () => {
    const { service, logger, backend } = inProcess();
    const [tool] = selectTools();
    service.failWith.execute = new PyboxError('rate_limited', 'this tenant may run 2 executions at once', { retryAfterS: 1 });
    expect((await tool!.call(backend, { code: 'x' })).text).toBe('The sandbox service is busy and did not run the code: this tenant may run 2 executions at once. Retry in about 1 s.');
    service.failWith.execute = new PyboxError('shutting_down', 'the service is shutting down');
    expect((await tool!.call(backend, { code: 'x' })).text).toBe('The sandbox service is unavailable and did not run the code: the service is shutting down.');
    service.failWith.execute = new Error('ENOENT /var/lib/pybox/secret');
    expect(await tool!.call(backend, { code: 'x' })).toEqual({ text: 'The sandbox service could not run the call (internal): internal server error', isError: true });
    expect(logger.entries).toEqual([expect.objectContaining({ level: 'error', fields: expect.objectContaining({ error: 'ENOENT /var/lib/pybox/secret' }) })]);
    service.failWith.get = new PyboxError('not_found', 'no execution with that id');
    const [, , get] = selectTools({ execute_python_code: true, sandbox_info: true, get_execution: true });
    expect((await get!.call(backend, { id: 'nope' })).text).toBe('The sandbox service could not run the call (not_found): no execution with that id');
  });
});

describe('sandbox_info', () => {
  it('summarises the runtime for a model', async () => {
    const { client, tools } = setup();
    const out = await byName(tools, 'sandbox_info').call(client, {});
    expect(out.isError).toBe(false);
    expect(out.text).toBe(
      [
        'Python 3.12.4, isolated under gVisor, with no network access.',
        'Installed packages: numpy 2.0.0.',
        'Time limit: 30 s by default, 300 s at most (the timeout argument, in seconds).',
        'Memory limit: 256 MB. CPUs: 1.',
        'Output: the first 50,000 bytes of stdout and of stderr are kept.',
        'Files the code writes under out/ are returned with the result. Nothing persists between runs.',
      ].join('\n'),
    );
  });
});

describe('callTool', () => {
  it('takes arguments as an object or as the JSON string OpenAI sends', async () => {
    const { fake, client, tools } = setup();
    await callTool(tools, client, 'execute_python_code', '{"code": "print(1)", "timeout": 3}');
    await callTool(tools, client, 'execute_python_code', { code: 'print(2)' });
    expect(fake.executed.map((e) => e.request)).toEqual([{ code: 'print(1)', timeoutMs: 3000 }, { code: 'print(2)' }]);
    expect((await callTool(tools, client, 'sandbox_info', '')).isError).toBe(false);
  });

  it('answers broken JSON and unknown tools with a tool error', async () => {
    const { client, tools } = setup();
    expect(await callTool(tools, client, 'execute_python_code', '{"code": ')).toEqual({
      text: 'The arguments for execute_python_code are not valid JSON. Send a JSON object.',
      isError: true,
    });
    expect(await callTool(tools, client, 'get_execution', { id: 'x' })).toEqual({
      text: 'There is no tool named get_execution. Available tools: execute_python_code, sandbox_info, python_session_run, python_session_close.',
      isError: true,
    });
  });
});
