// Sessions: a live interpreter per session, kept between calls. Every route acts for the caller's
// tenant only: another tenant's session id is answered 404 exactly as an unknown one; a session
// that ended recently answers 410 session_ended with the reason.
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import type { Logger } from '../../core/ports.ts';
import { ExecutionResult, SessionCallRequest, SessionFileList, SessionFilesUpload, SessionInfo, SessionList, SessionRequest } from '../../core/schemas.ts';
import { isWorkPath, type SessionApi } from '../../core/session-service.ts';
import { callerOf } from '../auth.ts';
import { BODY_ERRORS, errorResponses, RUN_ERRORS } from '../openapi.ts';
import { requestIdOf } from '../request-log.ts';
import { routeGroup, serve } from '../route.ts';
import { RUN_EVENT_STREAM, streamRun, wantsEventStream } from '../sse.ts';

// Ids are UUIDs today; this only turns away values no host could ever hold (as a 404, not a 400).
const SessionId = z.object({ id: z.string().regex(/^[\x21-\x7e]{1,100}$/, 'no session with that id') });

/**
 * A file of the work directory, as one path segment (its slashes percent-encoded: dir%2Fa.txt).
 * Relative, without empty, . or .. segments; the sandbox checks it again.
 */
const SessionFilePath = z.object({
  id: SessionId.shape.id,
  path: z
    .string()
    .min(1)
    .max(255)
    .refine(isWorkPath, 'no such file')
    .describe('The file\'s path in the work directory, percent-encoded as one segment (dir%2Fa.txt)'),
});

const SESSION_ERRORS = ['not_found', 'session_ended'] as const;

const create = createRoute({
  method: 'post',
  path: '/sessions',
  operationId: 'createSession',
  summary: 'Start a session: a live Python interpreter in a sandbox of its own, kept between calls',
  description:
    'Variables, imports and files persist from one call to the next. The session ends when it is deleted, after idleTimeoutMs without a call, ' +
    "at expiresAt, or when the server stops. Limits are clamped to the caller's maxima as an execution's are.",
  request: { body: { required: true, content: { 'application/json': { schema: SessionRequest } } } },
  responses: {
    201: {
      description: 'The session, ready for calls',
      headers: { Location: { description: 'The session: /v1/sessions/{id}', schema: { type: 'string' } } },
      content: { 'application/json': { schema: SessionInfo } },
    },
    ...errorResponses(...BODY_ERRORS, 'not_found', 'session_limit', ...RUN_ERRORS),
  },
});

const list = createRoute({
  method: 'get',
  path: '/sessions',
  operationId: 'listSessions',
  summary: "The caller's live sessions, oldest first",
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: SessionList } } }, ...errorResponses('queue_unavailable', 'internal') },
});

const getOne = createRoute({
  method: 'get',
  path: '/sessions/{id}',
  operationId: 'getSession',
  summary: 'One session; a recently ended one with state `ended` and why',
  request: { params: SessionId },
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: SessionInfo } } }, ...errorResponses('not_found', 'queue_unavailable', 'internal') },
});

const remove = createRoute({
  method: 'delete',
  path: '/sessions/{id}',
  operationId: 'deleteSession',
  summary: 'End a session and remove its sandbox (again for an ended one: its final state)',
  request: { params: SessionId },
  responses: {
    200: { description: 'The session as it ended', content: { 'application/json': { schema: SessionInfo } } },
    ...errorResponses('not_found', 'queue_unavailable', 'internal'),
  },
});

const execute = createRoute({
  method: 'post',
  path: '/sessions/{id}/executions',
  operationId: 'sessionExecute',
  summary: "Run code in the session's live interpreter",
  description:
    'Answers as POST /v1/executions does, with `session` {sessionId, call, stateLost, ended}; the call is recorded as an execution. One call at a time per session (409 session_busy). ' +
    'A call past its time limit is interrupted and the session lives on; if it does not stop, the interpreter is restarted and `stateLost` is true. ' +
    'With `Accept: text/event-stream` the answer is server-sent events: `stdout` and `stderr` ({"text"}) as the code prints, then `result` (the ExecutionResult) or `error` (an ErrorBody).',
  request: { params: SessionId, body: { required: true, content: { 'application/json': { schema: SessionCallRequest } } } },
  responses: {
    200: {
      description: 'The call finished; `status` says how',
      content: { 'application/json': { schema: ExecutionResult }, ...RUN_EVENT_STREAM },
    },
    ...errorResponses(...BODY_ERRORS, ...SESSION_ERRORS, 'session_busy', ...RUN_ERRORS),
  },
});

const putFiles = createRoute({
  method: 'put',
  path: '/sessions/{id}/files',
  operationId: 'putSessionFiles',
  summary: "Write files into the session's work directory (replacing files of the same path)",
  request: { params: SessionId, body: { required: true, content: { 'application/json': { schema: SessionFilesUpload } } } },
  responses: {
    200: { description: 'The work directory after the upload', content: { 'application/json': { schema: SessionFileList } } },
    ...errorResponses(...BODY_ERRORS, ...SESSION_ERRORS, 'session_busy', 'internal'),
  },
});

const listFiles = createRoute({
  method: 'get',
  path: '/sessions/{id}/files',
  operationId: 'listSessionFiles',
  summary: "The regular files of the session's work directory",
  request: { params: SessionId },
  responses: {
    200: { description: 'OK', content: { 'application/json': { schema: SessionFileList } } },
    ...errorResponses(...SESSION_ERRORS, 'session_busy', 'internal'),
  },
});

const getFile = createRoute({
  method: 'get',
  path: '/sessions/{id}/files/{path}',
  operationId: 'getSessionFile',
  summary: "One file of the session's work directory, as raw bytes (at most sessions.maxDownloadBytes)",
  request: { params: SessionFilePath },
  responses: {
    200: { description: 'The file', content: { 'application/octet-stream': { schema: { type: 'string' as const, format: 'binary' } } } },
    ...errorResponses(...SESSION_ERRORS, 'session_busy', 'payload_too_large', 'internal'),
  },
});


export function sessionRoutes(sessions: SessionApi, logger: Logger): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, create, async (c) => {
    const info = await sessions.create(callerOf(c), c.req.valid('json'), { signal: c.req.raw.signal });
    return c.json(info, 201, { Location: `/v1/sessions/${encodeURIComponent(info.id)}` });
  });

  serve(routes, list, async (c) => c.json(await sessions.list(callerOf(c)), 200));

  serve(routes, getOne, async (c) => c.json(await sessions.get(callerOf(c), c.req.valid('param').id), 200));

  serve(routes, remove, async (c) => c.json(await sessions.delete(callerOf(c), c.req.valid('param').id), 200));

  serve(routes, execute, async (c) => {
    const caller = callerOf(c);
    const { id } = c.req.valid('param');
    const request = c.req.valid('json');
    const requestId = requestIdOf(c);
    if (wantsEventStream(c.req.header('accept'))) {
      return (await streamRun(c, (onOutput, signal) => sessions.call(caller, id, request, { signal, onOutput, requestId }), logger)) as never;
    }
    // A client that hangs up interrupts its call rather than holding the session.
    return c.json(await sessions.call(caller, id, request, { signal: c.req.raw.signal, requestId }), 200);
  });

  serve(routes, putFiles, async (c) => c.json(await sessions.putFiles(callerOf(c), c.req.valid('param').id, c.req.valid('json')), 200));

  serve(routes, listFiles, async (c) => c.json(await sessions.listFiles(callerOf(c), c.req.valid('param').id), 200));

  serve(routes, getFile, async (c) => {
    const { id, path } = c.req.valid('param');
    const data = await sessions.getFile(callerOf(c), id, path);
    const name = path.split('/').at(-1) ?? 'file';
    // Never rendered by a browser: bytes from inside a sandbox are hostile.
    return c.body(new Uint8Array(data), 200, {
      'Content-Type': 'application/octet-stream',
      'Content-Disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-store',
    }) as never;
  });

  return routes;
}
