// The tools' backend inside the server: the execution service itself, for a caller the HTTP layer
// has already authenticated (and charged one request of its rate). No HTTP round trip, so nothing
// is charged twice, the abort signal reaches the service, and no internal address exists to leak.
import { StringDecoder } from 'node:string_decoder';
import type { z } from 'zod';
import type { Caller } from '../core/caller.ts';
import { isPyboxError, PyboxError } from '../core/errors.ts';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../core/json-depth.ts';
import type { ExecuteOptions, ExecutionService, Logger } from '../core/ports.ts';
import { ExecutionRequest, ExecutionResult, RuntimeInfo, SessionCallRequest, SessionInfo, SessionRequest } from '../core/schemas.ts';
import type { SessionApi } from '../core/session-service.ts';
import type { SessionToolBackend, ToolBackend, ToolCallOptions, ToolRequest } from './tools.ts';

export interface ServiceBackendOptions {
  service: ExecutionService;
  caller: Caller;
  logger: Logger;
  /** The HTTP request the calls came in, for the executions' log lines. */
  requestId?: string | undefined;
  /** Sessions, for the session tools; without them those tools say sessions are not available. */
  sessions?: SessionApi | undefined;
}

/** `path: message` for the first problems, as the HTTP API words its invalid_request. */
function describeIssues(error: { issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }> }): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.map(String).join('.') || '(request)'}: ${i.message}`)
    .join('; ');
}

/** A request checked as its HTTP body would be. */
function checked<S extends z.ZodType>(schema: S, request: unknown): z.output<S> {
  if (nestsDeeperThan(request, MAX_JSON_DEPTH)) throw new PyboxError('invalid_request', `the request nests deeper than ${MAX_JSON_DEPTH} levels`);
  const parsed = schema.safeParse(request);
  if (!parsed.success) throw new PyboxError('invalid_request', `invalid request: ${describeIssues(parsed.error)}`, { details: parsed.error.issues });
  return parsed.data;
}

export function serviceBackend(opts: ServiceBackendOptions): ToolBackend {
  const { service, caller, logger, requestId } = opts;

  /**
   * Faults of the service pass as they are; anything else is a bug whose message may expose
   * internals: logged here, and only "internal" goes to the model (as the HTTP layer does).
   */
  async function guarded<T>(what: string, run: () => T | Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      return await run();
    } catch (e) {
      // A cancelled call is the caller's own doing, not a fault to log.
      if (isPyboxError(e) || signal?.aborted) throw e;
      logger.error('tool call failed', { what, tenant: caller.tenant, requestId, error: e instanceof Error ? e.message : String(e), stack: e instanceof Error ? e.stack : undefined });
      throw new PyboxError('internal', 'internal server error');
    }
  }

  const { sessions } = opts;
  const sessionMethods: Partial<SessionToolBackend> = sessions
    ? {
        createSession(request, callOpts = {}) {
          return guarded('createSession', async () => SessionInfo.parse(await sessions.create(caller, checked(SessionRequest, request), { signal: callOpts.signal })), callOpts.signal);
        },
        sessionExecute(id, request, callOpts = {}) {
          return guarded(
            'sessionExecute',
            async () => ExecutionResult.parse(await sessions.call(caller, id, checked(SessionCallRequest, request), { signal: callOpts.signal, requestId })),
            callOpts.signal,
          );
        },
        deleteSession(id, callOpts = {}) {
          return guarded('deleteSession', async () => SessionInfo.parse(await sessions.delete(caller, id)), callOpts.signal);
        },
      }
    : {};

  return {
    ...sessionMethods,
    execute(request: ToolRequest, callOpts: ToolCallOptions = {}) {
      return guarded('execute', async () => {
        // The same checks a POST /v1/executions body gets: a direct caller of this backend may
        // not have come through a tool's own argument checks.
        const text = textListener(callOpts);
        const result = await service.execute(caller, checked(ExecutionRequest, request), { ...(callOpts.signal ? { signal: callOpts.signal } : {}), requestId, ...(text ? { onOutput: text.onOutput } : {}) });
        text?.end();
        // Exactly the documented shape, as the typed client would have parsed it from the wire.
        return ExecutionResult.parse(result);
      }, callOpts.signal);
    },
    get(id: string) {
      return guarded('get', async () => ExecutionResult.parse(await service.get(caller, id)));
    },
    runtimes() {
      return guarded('runtimes', async () => RuntimeInfo.parse(await service.runtimes(caller)));
    },
  };
}

/**
 * The service's output listener (bytes) for a caller that wants text: each stream decoded on its
 * own, so a character split between chunks arrives whole; `end` tells what a cut-off character
 * left (U+FFFD, as the result's text has it). Undefined when the caller wants no output.
 */
function textListener(opts: ToolCallOptions): { onOutput: NonNullable<ExecuteOptions['onOutput']>; end(): void } | undefined {
  const { onStdout, onStderr } = opts;
  if (onStdout === undefined && onStderr === undefined) return undefined;
  const streams = {
    stdout: { decoder: new StringDecoder('utf8'), tell: onStdout },
    stderr: { decoder: new StringDecoder('utf8'), tell: onStderr },
  };
  return {
    onOutput: (stream, data) => {
      const s = streams[stream];
      const text = s.decoder.write(data);
      if (text !== '') s.tell?.(text);
    },
    end: () => {
      for (const s of Object.values(streams)) {
        const rest = s.decoder.end();
        if (rest !== '') s.tell?.(rest);
      }
    },
  };
}
