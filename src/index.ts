// pybox as a library: the typed client of the HTTP API, its errors, the result types, and the tool
// definitions every agent surface is built from. LangChain and MCP helpers are in pybox/langchain
// and pybox/mcp, so using the client does not load either framework.
export { PyboxClient, clientFromEnv, DEFAULT_PYBOX_URL, type PyboxClientOptions, type ExecuteRequest, type HistoryParams, type CallOptions, type FetchLike } from './client/client.ts';
export {
  PyboxClientError,
  InvalidRequestError,
  AuthError,
  NotFoundError,
  RateLimitError,
  ServiceUnavailableError,
  QueueFullError,
  ServerError,
  ConnectionError,
  TimeoutError,
  UnexpectedResponseError,
} from './client/errors.ts';
export type { ExecutionResult, ExecutionStatus, ExecutionError, HistoryPage, Stats, OutputFile, RuntimeInfo, ToolList } from './core/schemas.ts';
export {
  selectTools,
  callTool,
  functionSchemas,
  TOOL_NAMES,
  DEFAULT_TOOLS,
  EXECUTE_PYTHON_DESCRIPTION,
  ExecutePythonInput,
  type PyboxTool,
  type ToolName,
  type ToolOutcome,
  type ToolSelection,
  type ToolBackend,
  type ToolRequest,
  type ToolCallOptions,
} from './adapters/tools.ts';
export {
  verifyWebhook,
  signWebhook,
  WebhookVerificationError,
  WEBHOOK_ID_HEADER,
  WEBHOOK_TIMESTAMP_HEADER,
  WEBHOOK_SIGNATURE_HEADER,
  DEFAULT_WEBHOOK_TOLERANCE_S,
  type VerifyWebhookOptions,
  type WebhookHeaders,
} from './webhooks/signature.ts';
export type { WebhookEvent } from './core/schemas.ts';
