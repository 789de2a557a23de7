// pybox as LangChain.js tools. The tool named `execute_python_code` takes the reference design's
// inputs (code, timeout in seconds, context) and returns the feedback text. Called for a model's
// tool call it answers a ToolMessage with status 'error' when the run failed, and with
// `artifact: true` the ExecutionResult rides along as its artifact. Calls go through a ToolBackend,
// the typed client by default.
import { ToolMessage } from '@langchain/core/messages';
import { DynamicStructuredTool, type ToolRunnableConfig } from '@langchain/core/tools';
import { clientFromEnv } from '../client/client.ts';
import { ConversationSession, PYTHON_SESSION_DESCRIPTION, PythonSessionInput, selectTools, type PyboxTool, type ToolBackend, type ToolOutcome, type ToolSelection } from './tools.ts';

export interface LangChainToolOptions {
  /** Where the tools run: a PyboxClient (by default one for PYBOX_URL and PYBOX_API_KEY of `env`) or any ToolBackend. */
  client?: ToolBackend;
  /** Where PYBOX_URL and PYBOX_API_KEY are read when no client is given; process.env by default. */
  env?: Record<string, string | undefined>;
  /**
   * Also return the raw ExecutionResult: as the ToolMessage's artifact for a tool call, and as
   * `[text, result]` for a plain `invoke(args)`.
   */
  artifact?: boolean;
}

type Callable = Pick<PyboxTool, 'description' | 'input'> & { name: string; run(args: unknown, signal: AbortSignal | undefined): Promise<ToolOutcome> };

function toLangChain(tool: PyboxTool, client: ToolBackend, artifact: boolean): DynamicStructuredTool {
  return asLangChain({ ...tool, run: (args, signal) => tool.call(client, args, { signal }) }, artifact);
}

function asLangChain(tool: Callable, artifact: boolean): DynamicStructuredTool {
  return new DynamicStructuredTool({
    name: tool.name,
    description: tool.description,
    schema: tool.input,
    func: async (args: unknown, _runManager, config) => {
      const outcome = await tool.run(args, config?.signal);
      const toolCallId = (config as ToolRunnableConfig | undefined)?.toolCall?.id;
      if (toolCallId) {
        // Called for a model's tool call: a ToolMessage whose status says whether the run failed.
        return new ToolMessage({
          content: outcome.text,
          tool_call_id: toolCallId,
          name: tool.name,
          status: outcome.isError ? 'error' : 'success',
          ...(artifact ? { artifact: outcome.result ?? null } : {}),
        });
      }
      return artifact ? [outcome.text, outcome.result ?? null] : outcome.text;
    },
  });
}

/** The `execute_python_code` tool. A failed run is returned as its feedback text, never thrown. */
export function createExecutePythonTool(opts: LangChainToolOptions = {}): DynamicStructuredTool {
  const [tool] = selectTools({ execute_python_code: true });
  return toLangChain(tool!, opts.client ?? clientFromEnv(opts.env ?? process.env), opts.artifact ?? false);
}

/** Every tool of `tools` (the default selection when absent) as LangChain tools. */
export function createPyboxTools(opts: LangChainToolOptions & { tools?: ToolSelection } = {}): DynamicStructuredTool[] {
  const client = opts.client ?? clientFromEnv(opts.env ?? process.env);
  return selectTools(opts.tools).map((t) => toLangChain(t, client, opts.artifact ?? false));
}

/** A stateful LangChain tool and the session it keeps for one conversation. */
export interface PythonSessionTool {
  /** The tool to hand to the model (`python_session`: code, timeout in seconds). */
  tool: DynamicStructuredTool;
  /** The session the conversation uses, once the first call created it. */
  readonly sessionId: string | undefined;
  /** Ends the conversation's session; call it when the conversation is over. A later call starts a new one. */
  close(): Promise<void>;
}

/**
 * A tool whose code runs in one live session for the whole conversation: created on its first
 * call, kept (variables, imports, files) across the following ones, and ended by close(). If the
 * session ends on its own (idle, lifetime), the next call starts a new one and says its state is gone.
 */
export function createPythonSessionTool(opts: LangChainToolOptions & { name?: string } = {}): PythonSessionTool {
  const session = new ConversationSession(opts.client ?? clientFromEnv(opts.env ?? process.env));
  const tool = asLangChain(
    { name: opts.name ?? 'python_session', description: PYTHON_SESSION_DESCRIPTION, input: PythonSessionInput, run: (args, signal) => session.run(args, { signal }) },
    opts.artifact ?? false,
  );
  return {
    tool,
    get sessionId() {
      return session.sessionId;
    },
    close: () => session.close(),
  };
}
