// The tools pybox offers to agents, defined once: name, description, input schema and what a call
// does through the typed client. The LangChain tool, the MCP servers (stdio and /mcp) and
// GET /v1/tools are all derived from these definitions, so every surface says the same thing.
//
// A call never throws: a failed run, bad arguments or an unreachable service all come back as a
// text the model can read, with `isError` set.
import { z } from 'zod';
import type { PyboxClient } from '../client/client.ts';
import { InvalidRequestError, PyboxClientError, QueueFullError, RateLimitError, ServiceUnavailableError } from '../client/errors.ts';
import type { ExecutionRequest, ExecutionResult, ToolList } from '../core/schemas.ts';

export const TOOL_NAMES = ['execute_python_code', 'sandbox_info', 'get_execution'] as const;
export type ToolName = (typeof TOOL_NAMES)[number];

/** What a tool call gives back: the text for the model, whether it failed, and the raw result. */
export interface ToolOutcome {
  text: string;
  isError: boolean;
  /** The execution result, for tools that run or fetch one. */
  result?: ExecutionResult;
}

export interface PyboxTool {
  name: ToolName;
  title: string;
  description: string;
  /** Validates the model's arguments; its JSON Schema is what the model sees. */
  input: z.ZodObject;
  /** Read-only and idempotent hints for MCP hosts. */
  annotations: { readOnlyHint: boolean; idempotentHint: boolean; openWorldHint: boolean };
  /** Runs the tool. `args` is validated here, so every surface gets the same checks. */
  call(client: PyboxClient, args: unknown, opts?: { signal?: AbortSignal | undefined }): Promise<ToolOutcome>;
}

export type ToolSelection = Partial<Record<ToolName, boolean>>;

/** The reference design's inputs: code, timeout in seconds (1..300), an optional context. */
export const ExecutePythonInput = z.object({
  code: z.string().min(1).max(1_000_000).describe('Python 3 source code, run as a script (main.py). Print what you want to see.'),
  timeout: z
    .number()
    .min(1)
    .max(300)
    .optional()
    .describe("Seconds the code may run, 1 to 300. Omit for the server's default (usually 30)."),
  context: z
    .looseObject({})
    .optional()
    .describe('Variables for the code: each key becomes a global variable of the program holding its JSON value.'),
});
export type ExecutePythonInput = z.infer<typeof ExecutePythonInput>;

export const EXECUTE_PYTHON_DESCRIPTION =
  'Execute Python 3 code in a secure, isolated sandbox and get back what happened: the printed output, ' +
  'the error type and message with the line of the code that caused it, or why the run was stopped ' +
  '(time, memory or output limit). Each call starts from scratch: nothing is kept between calls, and ' +
  'there is no network access. numpy, pandas and matplotlib are installed. Print the results you need; ' +
  'files the code writes under out/ are returned. Use it for calculations, data analysis and for ' +
  'checking code by running it; when a run fails, read the feedback, fix the code and run it again.';

const SandboxInfoInput = z.object({});
const GetExecutionInput = z.object({
  id: z.string().min(1).max(100).describe('The execution id an earlier execute_python_code result named.'),
});

/** Turns bad arguments into a message the model can act on. */
function argumentError(tool: string, error: z.ZodError): ToolOutcome {
  const issues = error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(arguments)'}: ${i.message}`);
  return { text: `Invalid arguments for ${tool}: ${issues.join('; ')}. Fix them and call the tool again.`, isError: true };
}

/** Turns a fault of the service (not of the code) into a message the model can act on. */
function serviceFailure(e: unknown): ToolOutcome {
  if (!(e instanceof PyboxClientError)) throw e; // a bug of ours: let it surface
  const retry = e.retryAfterS === undefined ? '' : ` Retry in about ${e.retryAfterS} s.`;
  if (e instanceof QueueFullError || e instanceof RateLimitError) {
    return { text: `The sandbox service is busy and did not run the code: ${e.message}.${retry}`, isError: true };
  }
  if (e instanceof ServiceUnavailableError) {
    return { text: `The sandbox service is unavailable and did not run the code: ${e.message}.${retry}`, isError: true };
  }
  if (e instanceof InvalidRequestError) {
    return { text: `The sandbox service refused the arguments: ${e.message}. Fix them and call the tool again.`, isError: true };
  }
  return { text: `The sandbox service could not run the call (${e.code}): ${e.message}`, isError: true };
}

/** The tool result's text for an execution: its feedback, plus its id when it can be fetched later. */
function executionText(result: ExecutionResult, withId: boolean): string {
  return withId ? `${result.feedback}\n\nExecution id: ${result.id}` : result.feedback;
}

function executePython(withIds: boolean): PyboxTool {
  return {
    name: 'execute_python_code',
    title: 'Execute Python code',
    description: EXECUTE_PYTHON_DESCRIPTION,
    input: ExecutePythonInput,
    annotations: { readOnlyHint: false, idempotentHint: false, openWorldHint: false },
    async call(client, args, opts = {}) {
      const parsed = ExecutePythonInput.safeParse(args);
      if (!parsed.success) return argumentError('execute_python_code', parsed.error);
      const { code, timeout, context } = parsed.data;
      const request: z.input<typeof ExecutionRequest> = { code };
      if (timeout !== undefined) request.timeoutMs = Math.round(timeout * 1000);
      if (context !== undefined) request.context = context as NonNullable<typeof request.context>;
      try {
        const result = await client.execute(request, { signal: opts.signal });
        return { text: executionText(result, withIds), isError: !result.success, result };
      } catch (e) {
        return serviceFailure(e);
      }
    },
  };
}

const sandboxInfo: PyboxTool = {
  name: 'sandbox_info',
  title: 'Describe the Python sandbox',
  description:
    'Describe the Python sandbox that execute_python_code uses: the Python version, the installed packages, ' +
    'and the default and maximum time and memory limits. Call it before writing code that depends on them.',
  input: SandboxInfoInput,
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async call(client, args) {
    const parsed = SandboxInfoInput.safeParse(args ?? {});
    if (!parsed.success) return argumentError('sandbox_info', parsed.error);
    try {
      const info = await client.runtimes();
      const packages = Object.entries(info.packages).map(([name, version]) => `${name} ${version}`);
      const { defaults, max } = info.limits;
      const text = [
        `Python ${info.python ?? '(version unknown)'}, isolated under ${info.runtime === 'runsc' ? 'gVisor' : 'runc'}, with no network access.`,
        `Installed packages: ${packages.length > 0 ? packages.join(', ') : 'the standard library only'}.`,
        `Time limit: ${defaults.timeoutMs / 1000} s by default, ${max.timeoutMs / 1000} s at most (the timeout argument, in seconds).`,
        `Memory limit: ${defaults.memoryMb} MB. CPUs: ${defaults.cpus}.`,
        `Output: the first ${info.limits.outputBytes.toLocaleString('en-US')} bytes of stdout and of stderr are kept.`,
        'Files the code writes under out/ are returned with the result. Nothing persists between runs.',
      ].join('\n');
      return { text, isError: false };
    } catch (e) {
      return serviceFailure(e);
    }
  },
};

const getExecution: PyboxTool = {
  name: 'get_execution',
  title: 'Fetch an earlier execution',
  description: 'Fetch the result of an earlier execute_python_code run by its execution id: its feedback text and status.',
  input: GetExecutionInput,
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async call(client, args) {
    const parsed = GetExecutionInput.safeParse(args);
    if (!parsed.success) return argumentError('get_execution', parsed.error);
    try {
      const result = await client.get(parsed.data.id);
      return { text: `Status: ${result.status}\n\n${result.feedback}`, isError: false, result };
    } catch (e) {
      return serviceFailure(e);
    }
  },
};

/** The default selection, as config/default.yaml has it. */
export const DEFAULT_TOOLS: Record<ToolName, boolean> = { execute_python_code: true, sandbox_info: true, get_execution: false };

/** The enabled tools, in a fixed order. */
export function selectTools(selection: ToolSelection = DEFAULT_TOOLS): PyboxTool[] {
  const on = (name: ToolName) => selection[name] ?? false;
  const tools: PyboxTool[] = [];
  if (on('execute_python_code')) tools.push(executePython(on('get_execution')));
  if (on('sandbox_info')) tools.push(sandboxInfo);
  if (on('get_execution')) tools.push(getExecution);
  return tools;
}

/** Runs a named tool with arguments as a model sent them (an object, or a JSON string as OpenAI sends). */
export async function callTool(
  tools: readonly PyboxTool[],
  client: PyboxClient,
  name: string,
  args: unknown,
  opts: { signal?: AbortSignal | undefined } = {},
): Promise<ToolOutcome> {
  const tool = tools.find((t) => t.name === name);
  if (!tool) return { text: `There is no tool named ${name}. Available tools: ${tools.map((t) => t.name).join(', ')}.`, isError: true };
  let value = args;
  if (typeof args === 'string') {
    try {
      value = args.trim() === '' ? {} : JSON.parse(args);
    } catch {
      return { text: `The arguments for ${name} are not valid JSON. Send a JSON object.`, isError: true };
    }
  }
  return tool.call(client, value, opts);
}

// --- Function-calling schemas (GET /v1/tools) ---------------------------------------------------

type JsonSchema = Record<string, unknown>;


/** A tool's input as plain JSON Schema (no $schema key), which both vendors accept. */
function inputJsonSchema(tool: PyboxTool): JsonSchema {
  const { $schema: _dialect, ...schema } = z.toJSONSchema(tool.input, { io: 'input' }) as JsonSchema;
  return schema;
}

/** The tools as OpenAI and Anthropic function-calling definitions. */
export function functionSchemas(tools: readonly PyboxTool[]): ToolList {
  const described = tools.map((t) => ({ name: t.name, description: t.description, schema: inputJsonSchema(t) }));
  return {
    openai: described.map(({ name, description, schema }) => ({ type: 'function' as const, function: { name, description, parameters: schema } })),
    anthropic: described.map(({ name, description, schema }) => ({ name, description, input_schema: schema })),
  };
}
