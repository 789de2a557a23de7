// Figures through MCP, read with the SDK's own client over /mcp in-process (a fake service, no
// Docker): a run's PNG figures come back as image content after the feedback text, so a model can
// look at its plots; the structured result keeps its text outputs but not the images' base64, and
// still validates against the listed outputSchema. The LangChain tool answers with the text, which
// says that figures were produced.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import { afterEach, describe, expect, it } from 'vitest';
import { createExecutePythonTool } from '../../src/adapters/langchain.ts';
import type { ToolBackend } from '../../src/adapters/tools.ts';
import { createApp } from '../../src/app.ts';
import { ExecutionResult, type ResultOutput } from '../../src/core/schemas.ts';
import { Authenticator } from '../../src/tenancy/authenticator.ts';
import { FakeExecutionService, NO_KEYS, recordingLogger, sampleResult } from '../http/fake-service.ts';

/** A 1×1 PNG. */
const PIXEL = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';
const figure = (data = PIXEL): ResultOutput => ({ type: 'image/png', data, kind: 'figure' });
const value: ResultOutput = { type: 'text/plain', data: '42', kind: 'result' };

const clients: Client[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

async function connect(result: ExecutionResult): Promise<Client> {
  const service = new FakeExecutionService();
  service.result = result;
  const app = createApp({ service, logger: recordingLogger(), bodyLimitBytes: 1 << 20, auth: new Authenticator(NO_KEYS), tools: { execute_python_code: true, get_execution: true } });
  const client = new Client({ name: 'pybox-figures-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL('http://localhost/mcp'), { fetch: async (url, init) => app.request(String(url), init) }));
  clients.push(client);
  return client;
}

type Content = { type: string; text?: string; data?: string; mimeType?: string };
type ToolResult = { content: Content[]; isError?: boolean; structuredContent?: Record<string, unknown> };

describe('figures over MCP', () => {
  const withFigures = sampleResult({
    outputs: [figure(), value, figure(PIXEL.replace('AAAAAEAAAAB', 'AAAAAEAAAAC'))],
    outputsDropped: 1,
    feedback: 'The code ran successfully in 0.50 s (exit code 0).\n\n2 figures were produced (PNG images, in outputs).',
  });

  it('returns each PNG figure as image content after the text', async () => {
    const mcp = await connect(withFigures);
    const r = (await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'import matplotlib.pyplot as plt; plt.plot([1, 2]); plt.show()' } })) as ToolResult;
    expect(r.isError).toBe(false);
    expect(r.content.map((c) => c.type)).toEqual(['text', 'image', 'image']);
    expect(r.content[0]!.text).toContain('2 figures were produced');
    expect(r.content.slice(1)).toEqual([
      { type: 'image', data: PIXEL, mimeType: 'image/png' },
      { type: 'image', data: withFigures.outputs![2]!.data, mimeType: 'image/png' },
    ]);
    for (const c of r.content.slice(1)) expect(Buffer.from(c.data!, 'base64').subarray(1, 4).toString()).toBe('PNG');
  });

  it('keeps text outputs in structuredContent but not the images, valid against the outputSchema', async () => {
    const mcp = await connect(withFigures);
    const { tools } = await mcp.listTools();
    const schema = tools.find((t) => t.name === 'execute_python_code')!.outputSchema!;
    const r = (await mcp.callTool({ name: 'execute_python_code', arguments: { code: 'x' } })) as ToolResult;
    const { outputs: _outputs, ...rest } = withFigures;
    expect(r.structuredContent).toEqual({ ...rest, outputs: [value] });
    expect(JSON.stringify(r.structuredContent)).not.toContain(PIXEL.slice(0, 40));
    expect(new AjvJsonSchemaValidator().getValidator(schema)(r.structuredContent)).toMatchObject({ valid: true });
  });

  it('a result with only figures has no outputs key in structuredContent; one without any is unchanged', async () => {
    const only = sampleResult({ outputs: [figure()] });
    const r = (await (await connect(only)).callTool({ name: 'execute_python_code', arguments: { code: 'x' } })) as ToolResult;
    expect(r.structuredContent).not.toHaveProperty('outputs');
    expect(r.content.map((c) => c.type)).toEqual(['text', 'image']);
    const plain = (await (await connect(sampleResult())).callTool({ name: 'execute_python_code', arguments: { code: 'x' } })) as ToolResult;
    expect(plain.content.map((c) => c.type)).toEqual(['text']);
    expect(plain.structuredContent).toEqual(sampleResult());
  });

  it('get_execution returns the figures of an earlier run too', async () => {
    const mcp = await connect(withFigures);
    const r = (await mcp.callTool({ name: 'get_execution', arguments: { id: withFigures.id } })) as ToolResult;
    expect(r.content.filter((c) => c.type === 'image')).toHaveLength(2);
  });
});

describe('figures through the LangChain tool', () => {
  it('answers with the text, which says that figures were produced', async () => {
    const result = sampleResult({ outputs: [figure()], feedback: '1 figure was produced (a PNG image, in outputs).' });
    const backend: ToolBackend = { execute: async () => result, get: async () => result, runtimes: async () => Promise.reject(new Error('unused')) };
    const text = await createExecutePythonTool({ client: backend }).invoke({ code: 'x' });
    expect(text).toBe('1 figure was produced (a PNG image, in outputs).');
  });
});
