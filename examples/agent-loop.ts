// A coding agent in one file: write → run → read → fix, at most `maxIterations` runs, against any
// OpenAI-compatible chat-completions endpoint. The model gets pybox's tools as function-calling
// schemas (GET /v1/tools), every tool call goes through the typed client, and what the model reads
// back is pybox's feedback text: the error, the line, why a run was stopped.
//
//   OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_MODEL=qwen2.5-coder \
//   PYBOX_URL=http://127.0.0.1:8080 node --import tsx examples/agent-loop.ts "the 20th prime number"
//
// OPENAI_API_KEY is sent when set; MAX_ITERATIONS (default 5) bounds the runs.
import { pathToFileURL } from 'node:url';
import { callTool, clientFromEnv, selectTools, type PyboxClient, type ToolName } from '../src/index.ts';

export interface ChatEndpoint {
  /** Base URL of an OpenAI-compatible API, e.g. http://localhost:11434/v1. */
  baseUrl: string;
  model: string;
  apiKey?: string | undefined;
}

type ToolCall = { id: string; type: 'function'; function: { name: string; arguments: string } };
type Message =
  | { role: 'system' | 'user'; content: string }
  | { role: 'assistant'; content: string | null; tool_calls?: ToolCall[] }
  | { role: 'tool'; tool_call_id: string; content: string };

export interface Attempt {
  code: string;
  ok: boolean;
  feedback: string;
}

export interface LoopResult {
  /** The model gave a final answer after a successful run. */
  converged: boolean;
  /** The model's final text, when it gave one. */
  answer: string | null;
  attempts: Attempt[];
  messages: Message[];
}

export const SYSTEM_PROMPT =
  'You solve tasks by writing Python and running it with the execute_python_code tool. Write a complete ' +
  'script that prints its result. Read the feedback of every run: when it failed, fix the code and run it ' +
  'again. When a run printed the right result, answer with it in one short sentence and call no tool.';

async function complete(endpoint: ChatEndpoint, messages: Message[], tools: unknown[], fetchImpl: typeof fetch): Promise<Extract<Message, { role: 'assistant' }>> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (endpoint.apiKey) headers.authorization = `Bearer ${endpoint.apiKey}`;
  const res = await fetchImpl(`${endpoint.baseUrl.replace(/\/+$/, '')}/chat/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ model: endpoint.model, messages, tools, tool_choice: 'auto', temperature: 0 }),
  });
  if (!res.ok) throw new Error(`the chat endpoint answered ${res.status}: ${(await res.text()).slice(0, 500)}`);
  const body = (await res.json()) as { choices?: Array<{ message?: Extract<Message, { role: 'assistant' }> }> };
  const message = body.choices?.[0]?.message;
  if (!message) throw new Error('the chat endpoint answered without a message');
  return { role: 'assistant', content: message.content ?? null, ...(message.tool_calls?.length ? { tool_calls: message.tool_calls } : {}) };
}

export async function runAgentLoop(opts: {
  task: string;
  chat: ChatEndpoint;
  pybox: PyboxClient;
  maxIterations?: number;
  fetch?: typeof fetch;
  log?: (line: string) => void;
}): Promise<LoopResult> {
  const maxIterations = opts.maxIterations ?? 5;
  const log = opts.log ?? (() => {});
  // The tools this pybox enables, as the model sees them and as the client runs them.
  const { openai } = await opts.pybox.tools();
  const tools = selectTools(Object.fromEntries(openai.map((t) => [t.function.name as ToolName, true])));
  const messages: Message[] = [
    { role: 'system', content: SYSTEM_PROMPT },
    { role: 'user', content: opts.task },
  ];
  const attempts: Attempt[] = [];

  // One model turn per pass; the loop ends when the model answers without a tool call, or when
  // the runs are used up. A model that never calls a tool still ends: every turn counts.
  for (let turn = 0; turn < maxIterations * 2 + 2; turn++) {
    const reply = await complete(opts.chat, messages, openai, opts.fetch ?? fetch);
    messages.push(reply);
    if (!reply.tool_calls) {
      const converged = attempts.at(-1)?.ok ?? false;
      log(`model: ${reply.content ?? ''}`);
      return { converged, answer: reply.content, attempts, messages };
    }
    for (const call of reply.tool_calls) {
      const running = call.function.name === 'execute_python_code';
      if (running && attempts.length >= maxIterations) {
        messages.push({ role: 'tool', tool_call_id: call.id, content: `Not run: the limit of ${maxIterations} runs is reached.` });
        continue;
      }
      const outcome = await callTool(tools, opts.pybox, call.function.name, call.function.arguments);
      messages.push({ role: 'tool', tool_call_id: call.id, content: outcome.text });
      if (running) {
        const code = String((JSON.parse(call.function.arguments || '{}') as { code?: unknown }).code ?? '');
        attempts.push({ code, ok: !outcome.isError, feedback: outcome.text });
        log(`run ${attempts.length}/${maxIterations}: ${outcome.isError ? 'failed' : 'ok'}\n${outcome.text}`);
      }
    }
    if (attempts.length >= maxIterations && attempts.at(-1)?.ok !== true) break;
  }
  return { converged: false, answer: null, attempts, messages };
}

async function main(): Promise<void> {
  const env = process.env;
  const task = process.argv.slice(2).join(' ') || 'Compute the 20th prime number.';
  if (!env.OPENAI_BASE_URL || !env.OPENAI_MODEL) {
    throw new Error('set OPENAI_BASE_URL (an OpenAI-compatible API, e.g. http://localhost:11434/v1) and OPENAI_MODEL');
  }
  const result = await runAgentLoop({
    task,
    chat: { baseUrl: env.OPENAI_BASE_URL, model: env.OPENAI_MODEL, apiKey: env.OPENAI_API_KEY },
    pybox: clientFromEnv(env),
    maxIterations: Number(env.MAX_ITERATIONS ?? 5),
    log: (line) => process.stderr.write(`${line}\n\n`),
  });
  process.stdout.write(`${result.converged ? 'converged' : 'did not converge'} after ${result.attempts.length} run(s)${result.answer ? `: ${result.answer}` : ''}\n`);
  process.exitCode = result.converged ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    process.stderr.write(`agent-loop: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
