// The tools pybox offers to agents, defined once: name, description, input and output schemas and
// what a call does against a ToolBackend. The LangChain tool, the MCP servers (stdio and /mcp) and
// GET /v1/tools are all derived from these definitions, so every surface says the same thing.
//
// A call never throws for a failure a model should read: a failed run, bad arguments or a service
// that is busy, away or refusing come back as a text the model can read, with `isError` set.
import { z } from 'zod';
import { InvalidRequestError, PyboxClientError, QueueFullError, RateLimitError, ServiceUnavailableError } from '../client/errors.ts';
import { isPyboxError, type ErrorCode } from '../core/errors.ts';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../core/json-depth.ts';
import { CONTEXT_NAME_RULE, ContextName } from '../core/python-names.ts';
import { ExecutionResult, RuntimeInfo, SessionInfo, type ExecutionRequest, type SessionCallRequest, type SessionRequest, type ToolList } from '../core/schemas.ts';

export const TOOL_NAMES = ['execute_python_code', 'sandbox_info', 'get_execution', 'python_session_run', 'python_session_close'] as const;
/** The tools that need sessions on the server: offered only where sessions are served. */
export const SESSION_TOOL_NAMES: readonly ToolName[] = ['python_session_run', 'python_session_close'];
export type ToolName = (typeof TOOL_NAMES)[number];

/** What a tool asks the backend to run: the HTTP API's request, before defaults are applied. */
export type ToolRequest = z.input<typeof ExecutionRequest>;

export interface ToolCallOptions {
  /** Aborts the call; for `execute`, cancels the execution (it ends `cancelled`). */
  signal?: AbortSignal | undefined;
  /**
   * For `execute`: told of the code's output as it is written (the run is streamed), each stream's
   * text in order, all of it before the result. The typed client's `execute` takes the same two.
   */
  onStdout?: ((text: string) => void) | undefined;
  onStderr?: ((text: string) => void) | undefined;
}

/**
 * Where the tools run: the typed client over HTTP (stdio MCP, LangChain, callTool), or the
 * execution service in-process with an already authenticated caller (the server's own /mcp). A
 * fault of the service is thrown (a PyboxClientError, or a core PyboxError in-process); what the
 * user's code did is the result's status.
 */
export interface ToolBackend extends Partial<SessionToolBackend> {
  execute(request: ToolRequest, opts?: ToolCallOptions): Promise<ExecutionResult>;
  get(id: string, opts?: ToolCallOptions): Promise<ExecutionResult>;
  runtimes(opts?: ToolCallOptions): Promise<RuntimeInfo>;
}

/** What the session tools need of a backend (the typed client has these methods). */
export interface SessionToolBackend {
  createSession(request: z.input<typeof SessionRequest>, opts?: ToolCallOptions): Promise<SessionInfo>;
  sessionExecute(id: string, request: z.input<typeof SessionCallRequest>, opts?: ToolCallOptions): Promise<ExecutionResult>;
  deleteSession(id: string, opts?: ToolCallOptions): Promise<SessionInfo>;
}

/** What a tool call gives back: the text for the model, whether it failed, and the typed result. */
export interface ToolOutcome {
  text: string;
  isError: boolean;
  /** The execution result, for tools that run or fetch one. */
  result?: ExecutionResult;
  /** The value matching the tool's `output` schema (MCP's structuredContent), when there is one. */
  structured?: ExecutionResult | RuntimeInfo | SessionInfo;
}

export interface PyboxTool {
  name: ToolName;
  title: string;
  description: string;
  /** Validates the model's arguments; its JSON Schema is what the model sees. Unknown arguments are refused. */
  input: z.ZodObject;
  /** The shape of `structured` in a successful outcome (MCP's outputSchema). */
  output: z.ZodObject;
  /** Read-only and idempotent hints for MCP hosts. */
  annotations: { readOnlyHint: boolean; idempotentHint: boolean; openWorldHint: boolean };
  /** Runs the tool. `args` is validated here, so every surface gets the same checks. */
  call(backend: ToolBackend, args: unknown, opts?: ToolCallOptions): Promise<ToolOutcome>;
}

export type ToolSelection = Partial<Record<ToolName, boolean>>;

/** The reference design's inputs: code, timeout in seconds (1..300), an optional context. */
export const ExecutePythonInput = z.strictObject({
  code: z.string().min(1).max(1_000_000).describe('Python 3 source code, run as a script (main.py). Print what you want to see.'),
  timeout: z
    .number()
    .min(1)
    .max(300)
    .optional()
    .describe("Seconds the code may run, a number from 1 to 300. Omit for the server's default (usually 30)."),
  // Values are checked as JSON by the service; here only the names, so that no recursive check
  // runs before the depth limit has been applied to the arguments.
  context: z
    .record(ContextName, z.unknown())
    .optional()
    .describe(
      'Variables for the code: each key becomes a global variable of the program holding its JSON value. ' +
        `Each key must be ${CONTEXT_NAME_RULE}. Values may nest at most ${MAX_JSON_DEPTH - 2} levels deep.`,
    ),
});
export type ExecutePythonInput = z.infer<typeof ExecutePythonInput>;

export const EXECUTE_PYTHON_DESCRIPTION =
  'Execute Python 3 code in a secure, isolated sandbox and get back what happened: the printed output, ' +
  'the error type and message with the line of the code that caused it, or why the run was stopped ' +
  '(time, memory or output limit). Each call starts from scratch: nothing is kept between calls, and ' +
  'there is no network access. numpy, pandas and matplotlib are installed. Print the results you need; ' +
  'files the code writes under out/ are returned, and matplotlib figures (plt.show(), or left open) come back ' +
  'as PNG images. Use it for calculations, data analysis and for ' +
  'checking code by running it; when a run fails, read the feedback, fix the code and run it again.';

/** A name the model sent, shown back to it: quoted when odd, and never at any length. */
function shownName(name: string): string {
  const clipped = name.length > 64 ? `${name.slice(0, 64)}…` : name;
  return /^[\p{L}\p{N}_ ]+$/u.test(clipped) ? clipped : JSON.stringify(clipped);
}

function issuePath(path: ReadonlyArray<PropertyKey>): string {
  return path.length > 0 ? path.map((k) => (typeof k === 'number' ? String(k) : shownName(String(k)))).join('.') : '(arguments)';
}

/** Turns bad arguments into a message the model can act on: each problem at its argument, unknown ones by name. */
function argumentError(tool: PyboxTool['name'], input: z.ZodObject, error: z.ZodError): ToolOutcome {
  const known = Object.keys(input.shape);
  const issues = error.issues.flatMap((i) => {
    if (i.code === 'unrecognized_keys') {
      const allowed = known.length > 0 ? `the arguments are ${known.join(', ')}` : 'it takes no arguments';
      return i.keys.map((key) => `${issuePath([...i.path, key])}: unknown argument (${allowed})`);
    }
    if (i.code === 'invalid_key') return [`${issuePath(i.path)}: invalid name: ${i.issues.map((k) => k.message).join('; ')}`];
    return [`${issuePath(i.path)}: ${i.message}`];
  });
  return { text: `Invalid arguments for ${tool}: ${issues.join('; ')}. Fix them and call the tool again.`, isError: true };
}

/**
 * Checks a model's arguments against a tool's input: the depth first, without recursing, so a
 * deeply nested value never reaches a check (or a serialiser) that recurses.
 */
function parseArguments<S extends z.ZodObject>(tool: PyboxTool['name'], input: S, args: unknown): { ok: true; data: z.output<S> } | { ok: false; outcome: ToolOutcome } {
  if (nestsDeeperThan(args, MAX_JSON_DEPTH)) {
    return {
      ok: false,
      outcome: {
        text: `Invalid arguments for ${tool}: the arguments nest deeper than ${MAX_JSON_DEPTH} levels (the arguments object is level 1). Send flatter data and call the tool again.`,
        isError: true,
      },
    };
  }
  const parsed = input.safeParse(args);
  return parsed.success ? { ok: true, data: parsed.data } : { ok: false, outcome: argumentError(tool, input, parsed.error) };
}

type FaultKind = 'busy' | 'unavailable' | 'refused' | 'other';

const KIND_BY_CODE: Partial<Record<ErrorCode, FaultKind>> = {
  queue_full: 'busy',
  rate_limited: 'busy',
  engine_unavailable: 'unavailable',
  image_missing: 'unavailable',
  store_unavailable: 'unavailable',
  shutting_down: 'unavailable',
  invalid_request: 'refused',
  payload_too_large: 'refused',
  unsupported_media_type: 'refused',
};

/** A fault of the service, from either backend, as what the tools need of it. */
function faultOf(e: unknown): { kind: FaultKind; code: string; message: string; retryAfterS: number | undefined } | null {
  if (e instanceof PyboxClientError) {
    const kind: FaultKind =
      e instanceof QueueFullError || e instanceof RateLimitError
        ? 'busy'
        : e instanceof ServiceUnavailableError
          ? 'unavailable'
          : e instanceof InvalidRequestError
            ? 'refused'
            : 'other';
    return { kind, code: e.code, message: e.message, retryAfterS: e.retryAfterS };
  }
  if (isPyboxError(e)) return { kind: KIND_BY_CODE[e.code] ?? 'other', code: e.code, message: e.message, retryAfterS: e.retryAfterS };
  return null;
}

/** Turns a fault of the service (not of the code) into a message the model can act on. */
function serviceFailure(e: unknown): ToolOutcome {
  const fault = faultOf(e);
  if (!fault) throw e; // a bug of ours (or the caller's own abort): let it surface
  const retry = fault.retryAfterS === undefined ? '' : ` Retry in about ${fault.retryAfterS} s.`;
  switch (fault.kind) {
    case 'busy':
      return { text: `The sandbox service is busy and did not run the code: ${fault.message}.${retry}`, isError: true };
    case 'unavailable':
      return { text: `The sandbox service is unavailable and did not run the code: ${fault.message}.${retry}`, isError: true };
    case 'refused':
      return { text: `The sandbox service refused the arguments: ${fault.message}. Fix them and call the tool again.`, isError: true };
    default:
      return { text: `The sandbox service could not run the call (${fault.code}): ${fault.message}`, isError: true };
  }
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
    output: ExecutionResult,
    annotations: { readOnlyHint: false, idempotentHint: false, openWorldHint: false },
    async call(backend, args, opts = {}) {
      const parsed = parseArguments('execute_python_code', ExecutePythonInput, args);
      if (!parsed.ok) return parsed.outcome;
      const { code, timeout, context } = parsed.data;
      const request: ToolRequest = { code };
      if (timeout !== undefined) request.timeoutMs = Math.round(timeout * 1000);
      if (context !== undefined) request.context = context as NonNullable<ToolRequest['context']>;
      try {
        const result = await backend.execute(request, { signal: opts.signal, onStdout: opts.onStdout, onStderr: opts.onStderr });
        return { text: executionText(result, withIds), isError: !result.success, result, structured: result };
      } catch (e) {
        return serviceFailure(e);
      }
    },
  };
}

const SandboxInfoInput = z.strictObject({});
const GetExecutionInput = z.strictObject({
  id: z.string().min(1).max(100).describe('The execution id an earlier execute_python_code result named.'),
});

const sandboxInfo: PyboxTool = {
  name: 'sandbox_info',
  title: 'Describe the Python sandbox',
  description:
    'Describe the Python sandbox that execute_python_code uses: the Python version, the installed packages, ' +
    'and the default and maximum time and memory limits. Call it before writing code that depends on them.',
  input: SandboxInfoInput,
  output: RuntimeInfo,
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async call(backend, args, opts = {}) {
    const parsed = parseArguments('sandbox_info', SandboxInfoInput, args ?? {});
    if (!parsed.ok) return parsed.outcome;
    try {
      const info = await backend.runtimes({ signal: opts.signal });
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
      return { text, isError: false, structured: info };
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
  output: ExecutionResult,
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async call(backend, args, opts = {}) {
    const parsed = parseArguments('get_execution', GetExecutionInput, args);
    if (!parsed.ok) return parsed.outcome;
    try {
      const result = await backend.get(parsed.data.id, { signal: opts.signal });
      return { text: `Status: ${result.status}\n\n${result.feedback}`, isError: false, result, structured: result };
    } catch (e) {
      return serviceFailure(e);
    }
  },
};

// --- sessions ------------------------------------------------------------------------------------

export const PYTHON_SESSION_DESCRIPTION =
  'Run Python 3 code in a persistent session, like a notebook: variables, imports, functions and files are kept ' +
  'from one call to the next, so build on earlier results instead of repeating them. The value of the last ' +
  'expression is shown; print anything else you need. There is no network access; numpy, pandas and matplotlib ' +
  'are installed. When a call fails, read the feedback, fix the code and run it again in the same session.';

export const PYTHON_SESSION_RUN_DESCRIPTION =
  `${PYTHON_SESSION_DESCRIPTION} Omit session_id on your first call: a new session is created and the answer names its id. ` +
  'Pass that session_id in every later call to continue in the same session. A session ends after a while without calls; ' +
  'call python_session_close when you are done with it.';

const Timeout = ExecutePythonInput.shape.timeout;
const SessionIdArg = z.string().min(1).max(100);

export const PythonSessionInput = z.strictObject({
  code: ExecutePythonInput.shape.code.describe('Python 3 source code, run in the session\'s live interpreter.'),
  timeout: Timeout,
});
export type PythonSessionInput = z.infer<typeof PythonSessionInput>;

const PythonSessionRunInput = PythonSessionInput.extend({
  session_id: SessionIdArg.optional().describe('The session to run in, as an earlier python_session_run answer named it. Omit to start a new session.'),
});
const PythonSessionCloseInput = z.strictObject({
  session_id: SessionIdArg.describe('The session to end, as python_session_run named it.'),
});

const NO_SESSIONS: ToolOutcome = { text: 'Sessions are not available on this sandbox service: use execute_python_code, which starts from scratch on every call.', isError: true };

/** A session id as the model sent it: plain when it looks like an id, else quoted (and clipped). */
const shownId = (id: string) => (/^[\w.-]{1,100}$/.test(id) ? id : shownName(id));

/** A session's fault in words a model can act on, or null for any other fault. */
function sessionFault(e: unknown, id: string | undefined): ToolOutcome | null {
  const code = e instanceof PyboxClientError || isPyboxError(e) ? e.code : undefined;
  const details = e instanceof PyboxClientError || isPyboxError(e) ? e.details : undefined;
  const named = id === undefined ? 'The session' : `The session ${shownId(id)}`;
  switch (code) {
    case 'session_ended': {
      const reason = typeof details === 'object' && details !== null ? (details as { reason?: unknown }).reason : undefined;
      const why = typeof reason === 'string' && /^[a-z_]{1,20}$/.test(reason) ? ` (${reason})` : '';
      return { text: `${named} has ended${why}: its variables are gone. Run the code again without session_id to start a new session, redoing what it needs.`, isError: true };
    }
    case 'not_found':
      return id === undefined ? null : { text: `${named} does not exist (or has ended). Run the code without session_id to start a new session.`, isError: true };
    case 'session_busy':
      return { text: `${named} is still running another call. Wait for its answer, then call again.`, isError: true };
    case 'session_limit':
      return { text: `No new session can be started: ${e instanceof Error ? e.message : 'the limit is reached'}. Close a session you no longer need (python_session_close) or reuse one.`, isError: true };
    default:
      return null;
  }
}

/** A call's text: its feedback, with the session to pass next (or that the session has ended). */
function sessionCallText(result: ExecutionResult, id: string, created: boolean): string {
  const lines = [result.feedback, ''];
  if (result.session?.ended) lines.push(`Session ${id} has ended. Start a new one by calling without session_id.`);
  else lines.push(`${created ? 'Started a new session. ' : ''}Session id: ${id} (pass session_id "${id}" to continue in this session).`);
  return lines.join('\n');
}

/** Runs code in a session of `backend`, creating one when `id` is undefined. */
async function runInSession(
  backend: ToolBackend,
  id: string | undefined,
  code: string,
  timeout: number | undefined,
  opts: ToolCallOptions,
): Promise<ToolOutcome & { sessionId?: string; gone?: boolean }> {
  const { createSession, sessionExecute } = backend;
  if (!createSession || !sessionExecute) return NO_SESSIONS;
  const request: z.input<typeof SessionCallRequest> = { code };
  if (timeout !== undefined) request.timeoutMs = Math.round(timeout * 1000);
  let sessionId = id;
  try {
    if (sessionId === undefined) sessionId = (await createSession.call(backend, {}, { signal: opts.signal })).id;
    const result = await sessionExecute.call(backend, sessionId, request, { signal: opts.signal });
    return { text: sessionCallText(result, sessionId, id === undefined), isError: !result.success, result, structured: result, sessionId };
  } catch (e) {
    const fault = sessionFault(e, sessionId);
    if (!fault) return serviceFailure(e);
    const code = e instanceof PyboxClientError || isPyboxError(e) ? e.code : undefined;
    return { ...fault, gone: sessionId !== undefined && (code === 'session_ended' || code === 'not_found') };
  }
}

const pythonSessionRun: PyboxTool = {
  name: 'python_session_run',
  title: 'Run Python code in a session',
  description: PYTHON_SESSION_RUN_DESCRIPTION,
  input: PythonSessionRunInput,
  output: ExecutionResult,
  annotations: { readOnlyHint: false, idempotentHint: false, openWorldHint: false },
  async call(backend, args, opts = {}) {
    const parsed = parseArguments('python_session_run', PythonSessionRunInput, args);
    if (!parsed.ok) return parsed.outcome;
    const { code, timeout, session_id } = parsed.data;
    const { sessionId: _id, gone: _gone, ...outcome } = await runInSession(backend, session_id, code, timeout, opts);
    return outcome;
  },
};

const pythonSessionClose: PyboxTool = {
  name: 'python_session_close',
  title: 'Close a Python session',
  description: 'End a session python_session_run started, when you no longer need its variables: its sandbox is removed.',
  input: PythonSessionCloseInput,
  output: SessionInfo,
  annotations: { readOnlyHint: false, idempotentHint: true, openWorldHint: false },
  async call(backend, args, opts = {}) {
    const parsed = parseArguments('python_session_close', PythonSessionCloseInput, args);
    if (!parsed.ok) return parsed.outcome;
    if (!backend.deleteSession) return NO_SESSIONS;
    const id = parsed.data.session_id;
    try {
      const info = await backend.deleteSession(id, { signal: opts.signal });
      return { text: `Session ${id} is closed (${info.calls} call${info.calls === 1 ? '' : 's'}).`, isError: false, structured: info };
    } catch (e) {
      return sessionFault(e, id) ?? serviceFailure(e);
    }
  },
};

/**
 * One session kept for a conversation (the LangChain stateful tool): created on the first run,
 * reused by the next ones, and created again (the model is told its state is gone) when it has
 * ended. close() ends it; a run after close() starts a new one.
 */
export class ConversationSession {
  private id: string | undefined;
  private pending: Promise<unknown> = Promise.resolve();

  constructor(private readonly backend: ToolBackend) {}

  /** The current session's id, once one was created. */
  get sessionId(): string | undefined {
    return this.id;
  }

  /** Runs the model's arguments ({code, timeout}) in the conversation's session; never throws for a fault of the service. */
  run(args: unknown, opts: ToolCallOptions = {}): Promise<ToolOutcome> {
    // One call at a time: a model that sends two tool calls at once gets them in order, not session_busy.
    const next = this.pending.then(() => this.runNow(args, opts));
    this.pending = next.catch(() => {});
    return next;
  }

  private async runNow(args: unknown, opts: ToolCallOptions): Promise<ToolOutcome> {
    const parsed = parseArguments('python_session_run', PythonSessionInput, args);
    if (!parsed.ok) return parsed.outcome;
    const { code, timeout } = parsed.data;
    let outcome = await runInSession(this.backend, this.id, code, timeout, opts);
    if (outcome.gone) {
      // The session is gone (idle, lifetime, lost): a new one, and the model hears its state is gone.
      this.id = undefined;
      outcome = await runInSession(this.backend, undefined, code, timeout, opts);
      if (outcome.sessionId !== undefined) outcome = { ...outcome, text: `The earlier session had ended, so this ran in a new one: variables from earlier calls are gone.\n\n${outcome.text}` };
    }
    if (outcome.sessionId !== undefined) this.id = outcome.result?.session?.ended ? undefined : outcome.sessionId;
    const { sessionId: _id, gone: _gone, ...rest } = outcome;
    return rest;
  }

  /** Ends the session, if there is one; faults are swallowed (it ends on its own when idle). */
  async close(opts: ToolCallOptions = {}): Promise<void> {
    await this.pending;
    const id = this.id;
    this.id = undefined;
    if (id === undefined || !this.backend.deleteSession) return;
    await this.backend.deleteSession(id, opts).catch(() => {});
  }
}

/** The default selection, as config/default.yaml has it. */
export const DEFAULT_TOOLS: Record<ToolName, boolean> = {
  execute_python_code: true,
  sandbox_info: true,
  get_execution: false,
  python_session_run: true,
  python_session_close: true,
};

/** The enabled tools, in a fixed order. */
export function selectTools(selection: ToolSelection = DEFAULT_TOOLS): PyboxTool[] {
  const on = (name: ToolName) => selection[name] ?? false;
  const tools: PyboxTool[] = [];
  if (on('execute_python_code')) tools.push(executePython(on('get_execution')));
  if (on('sandbox_info')) tools.push(sandboxInfo);
  if (on('get_execution')) tools.push(getExecution);
  if (on('python_session_run')) tools.push(pythonSessionRun);
  if (on('python_session_close')) tools.push(pythonSessionClose);
  return tools;
}

/** Runs a named tool with arguments as a model sent them (an object, or a JSON string as OpenAI sends). */
export async function callTool(
  tools: readonly PyboxTool[],
  backend: ToolBackend,
  name: string,
  args: unknown,
  opts: ToolCallOptions = {},
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
  return tool.call(backend, value, opts);
}

// --- JSON Schemas (GET /v1/tools, MCP tools/list) --------------------------------------------------

export type JsonSchema = Record<string, unknown>;

/**
 * A zod schema as plain JSON Schema draft 7 without a $schema key: what both function-calling
 * vendors take, and what MCP hosts validate with (the SDK's client uses a draft-7 validator).
 */
function jsonSchemaOf(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, target: 'draft-7' }) as JsonSchema;
  return rest;
}

/** A tool's arguments as JSON Schema: what /v1/tools and MCP's tools/list both show. */
export function inputJsonSchema(tool: PyboxTool): JsonSchema {
  return jsonSchemaOf(tool.input, 'input');
}

/** The JSON Schema of a tool's structured result (MCP's outputSchema). */
export function outputJsonSchema(tool: PyboxTool): JsonSchema {
  return jsonSchemaOf(tool.output, 'output');
}

/** The tools as OpenAI and Anthropic function-calling definitions. */
export function functionSchemas(tools: readonly PyboxTool[]): ToolList {
  const described = tools.map((t) => ({ name: t.name, description: t.description, schema: inputJsonSchema(t) }));
  return {
    openai: described.map(({ name, description, schema }) => ({ type: 'function' as const, function: { name, description, parameters: schema } })),
    anthropic: described.map(({ name, description, schema }) => ({ name, description, input_schema: schema })),
  };
}
