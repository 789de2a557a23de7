// The example agent loop end to end: a scripted OpenAI-compatible model (a small HTTP server made
// here) first writes broken code, then fixes it using only what pybox's feedback says, against the
// real service. Another script never fixes its code: the loop stops at max_iterations.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgentLoop, SYSTEM_PROMPT } from '../../examples/agent-loop.ts';
import { PyboxClient } from '../../src/client/client.ts';
import { realPybox, type RealPybox } from '../support/real.ts';
import { serveApp, type Served } from '../support/serve.ts';

type ChatMessage = { role: string; content: string | null; tool_call_id?: string; tool_calls?: unknown[] };
type ChatRequest = { model: string; messages: ChatMessage[]; tools: Array<{ type: string; function: { name: string; parameters: unknown } }> };
type Script = (req: ChatRequest) => { content?: string; code?: string };

const BROKEN = ['def mean(xs):', '    return sum(xs) / len(x)', '', 'print(mean([3, 1, 4, 1, 5]))'].join('\n');

/** A "model" that reads pybox's feedback: it fixes the undefined name on the line the feedback names. */
const fixer: Script = (req) => {
  const lastTool = [...req.messages].reverse().find((m) => m.role === 'tool');
  if (!lastTool) return { code: BROKEN };
  const feedback = lastTool.content ?? '';
  if (feedback.startsWith('The code ran successfully')) return { content: `The mean is ${/stdout:\n(.+)/.exec(feedback)?.[1]}.` };
  const name = /NameError: name '(\w+)' is not defined/.exec(feedback)?.[1];
  const line = Number(/points at line (\d+) of the code/.exec(feedback)?.[1]);
  const lastCode = lastToolCallCode(req);
  if (!name || !line || !lastCode) return { content: 'I cannot tell what went wrong.' };
  const lines = lastCode.split('\n');
  lines[line - 1] = lines[line - 1]!.replace(new RegExp(`\\b${name}\\b`), 'xs');
  return { code: lines.join('\n') };
};

/** The code of the model's last tool call in the conversation. */
function lastToolCallCode(req: ChatRequest): string | undefined {
  const call = [...req.messages].reverse().find((m) => m.role === 'assistant' && m.tool_calls)?.tool_calls?.[0] as
    | { function: { arguments: string } }
    | undefined;
  return call ? (JSON.parse(call.function.arguments) as { code: string }).code : undefined;
}

/** A "model" that never learns. */
const stubborn: Script = () => ({ code: 'print(undefined_name)' });

async function readBody(req: IncomingMessage): Promise<string> {
  let body = '';
  for await (const chunk of req) body += chunk;
  return body;
}

/** An OpenAI-compatible /v1/chat/completions answering from a script, keeping every request. */
async function scriptedModel(script: Script): Promise<{ baseUrl: string; requests: ChatRequest[]; close(): Promise<void> }> {
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
    const message = step.code
      ? {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: `call_${++calls}`, type: 'function', function: { name: 'execute_python_code', arguments: JSON.stringify({ code: step.code, timeout: 10 }) } }],
        }
      : { role: 'assistant', content: step.content ?? '' };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ id: `chatcmpl-${calls}`, object: 'chat.completion', model: body.model, choices: [{ index: 0, message, finish_reason: step.code ? 'tool_calls' : 'stop' }] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

let pybox: RealPybox;
let served: Served;
let client: PyboxClient;

beforeAll(async () => {
  pybox = await realPybox('runc');
  served = await serveApp(pybox.app);
  client = new PyboxClient({ baseUrl: served.url, retries: 0 });
});
afterAll(async () => {
  await served?.close();
  await pybox?.dispose();
});

describe('the example agent loop', () => {
  it('converges: broken code, pybox feedback, fixed code, answer', async () => {
    const model = await scriptedModel(fixer);
    try {
      const result = await runAgentLoop({ task: 'Print the mean of 3, 1, 4, 1, 5.', chat: { baseUrl: model.baseUrl, model: 'scripted' }, pybox: client, maxIterations: 3 });
      expect(result.converged).toBe(true);
      expect(result.answer).toBe('The mean is 2.8.');
      expect(result.attempts.map((a) => a.ok)).toEqual([false, true]);
      expect(result.attempts[0]!.feedback).toContain("The code failed with NameError: name 'x' is not defined");
      expect(result.attempts[0]!.feedback).toContain('The error points at line 2 of the code:\n    return sum(xs) / len(x)');
      expect(result.attempts[1]!.code).toBe(BROKEN.replace('len(x)', 'len(xs)'));

      // What the model was sent: the system prompt, pybox's tool schemas, and the feedback verbatim.
      expect(model.requests).toHaveLength(3);
      const first = model.requests[0]!;
      expect(first.messages[0]).toEqual({ role: 'system', content: SYSTEM_PROMPT });
      expect(first.tools.map((t) => t.function.name)).toEqual(['execute_python_code', 'sandbox_info', 'python_session_run', 'python_session_close']);
      expect(first.tools[0]!.function.parameters).toMatchObject({ required: ['code'] });
      const toolMessage = model.requests[1]!.messages.at(-1)!;
      expect(toolMessage).toMatchObject({ role: 'tool', tool_call_id: 'call_1', content: result.attempts[0]!.feedback });
    } finally {
      await model.close();
    }
  });

  it('stops after max_iterations runs when the model never fixes its code', async () => {
    const model = await scriptedModel(stubborn);
    try {
      const result = await runAgentLoop({ task: 'Anything.', chat: { baseUrl: model.baseUrl, model: 'scripted' }, pybox: client, maxIterations: 2 });
      expect(result.converged).toBe(false);
      expect(result.answer).toBeNull();
      expect(result.attempts).toHaveLength(2);
      expect(result.attempts.every((a) => !a.ok && a.feedback.includes("NameError: name 'undefined_name' is not defined"))).toBe(true);
    } finally {
      await model.close();
    }
  });
});
