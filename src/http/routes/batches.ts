// Batches: many executions submitted at once and run in the background, read back page by page or
// followed as a stream of server-sent events; and the tenant's webhook signing secret.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { streamSSE } from 'hono/streaming';
import { z } from 'zod';
import type { BatchService } from '../../core/batch-service.ts';
import { PyboxError } from '../../core/errors.ts';
import type { Logger, WebhookSecrets } from '../../core/ports.ts';
import { BatchInfo, BatchItemsQuery, BatchList, BatchListQuery, BatchPage, BatchRequest, WebhookSecret } from '../../core/schemas.ts';
import { callerOf } from '../auth.ts';
import { requestIdOf } from '../request-log.ts';
import { BODY_ERRORS, errorResponses } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';
import { encodeWebhookSecret } from '../../webhooks/signature.ts';

/** Only turns away values no store could hold (as a 404, like an unknown id). */
const BatchId = z.object({ id: z.string().regex(/^[\x21-\x7e]{1,100}$/, 'no batch with that id') });

/** An idle stream gets a comment this often, so proxies and clients see it is alive. */
export const HEARTBEAT_MS = 15_000;

const create = createRoute({
  method: 'post',
  path: '/batches',
  operationId: 'createBatch',
  summary: 'Submit many executions at once; they run in the background',
  description:
    'Every item is checked and clamped like a single execution before anything is kept: a bad item refuses the whole batch (400, naming `items[i].field`). ' +
    'At most the server\'s `jobs.maxBatchItems` items, within the request body limit. Follow it with GET /v1/batches/{id} or its event stream.',
  request: { body: { required: true, content: { 'application/json': { schema: BatchRequest } } } },
  responses: {
    202: {
      description: 'Accepted; every item is queued',
      headers: { Location: { description: 'The batch: /v1/batches/{id}', schema: { type: 'string' } } },
      content: { 'application/json': { schema: BatchInfo } },
    },
    ...errorResponses(...BODY_ERRORS, 'store_unavailable', 'internal'),
  },
});

const list = createRoute({
  method: 'get',
  path: '/batches',
  operationId: 'listBatches',
  summary: "The caller's batches, newest first (every tenant's for an admin key)",
  request: { query: BatchListQuery },
  responses: { 200: { description: 'OK', content: { 'application/json': { schema: BatchList } } }, ...errorResponses('invalid_request', 'store_unavailable', 'internal') },
});

const getOne = createRoute({
  method: 'get',
  path: '/batches/{id}',
  operationId: 'getBatch',
  summary: 'A batch, its counts and a page of its items in order (done ones with their result, without files)',
  request: { params: BatchId, query: BatchItemsQuery },
  responses: {
    200: { description: 'OK', content: { 'application/json': { schema: BatchPage } } },
    ...errorResponses('invalid_request', 'not_found', 'store_unavailable', 'internal'),
  },
});

const events = createRoute({
  method: 'get',
  path: '/batches/{id}/events',
  operationId: 'batchEvents',
  summary: "A batch's item completions as server-sent events",
  description:
    'Each completed item is an `item` event whose data is a BatchItemEvent and whose `id` is its seq; a `Last-Event-ID` header resumes after that seq. ' +
    'Once the batch is finished a `done` event carries the BatchInfo and the stream ends. Comment lines are sent every 15 s while nothing happens.',
  request: { params: BatchId },
  responses: {
    200: {
      description: 'The event stream',
      content: { 'text/event-stream': { schema: { type: 'string' as const, description: 'Server-sent events: `item` (data BatchItemEvent, id its seq), then `done` (data BatchInfo)' } } },
    },
    ...errorResponses('invalid_request', 'not_found', 'store_unavailable', 'internal'),
  },
});

const cancel = createRoute({
  method: 'delete',
  path: '/batches/{id}',
  operationId: 'cancelBatch',
  summary: "Cancel a batch's queued items (recorded as cancelled); items already running go on",
  request: { params: BatchId },
  responses: {
    200: { description: 'The batch after the cancellation', content: { 'application/json': { schema: BatchInfo } } },
    ...errorResponses('not_found', 'store_unavailable', 'internal'),
  },
});

/** The resume point of a stream: the seq of the last event the client has. */
function lastEventId(header: string | undefined): number {
  if (header === undefined || header.trim() === '') return 0;
  const value = header.trim();
  if (!/^\d{1,15}$/.test(value)) {
    throw new PyboxError('invalid_request', 'Last-Event-ID must be the id (a seq) of an event of this stream', { details: [{ path: 'Last-Event-ID', message: 'must be a non-negative integer' }] });
  }
  return Number(value);
}

export function batchRoutes(batches: BatchService, logger: Logger, heartbeatMs: number = HEARTBEAT_MS): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, create, async (c) => {
    const info = await batches.createBatch(callerOf(c), c.req.valid('json'), requestIdOf(c));
    return c.json(info, 202, { Location: `/v1/batches/${encodeURIComponent(info.id)}` });
  });

  serve(routes, list, async (c) => c.json(await batches.listBatches(callerOf(c), c.req.valid('query')), 200));

  serve(routes, getOne, async (c) => c.json(await batches.getBatch(callerOf(c), c.req.valid('param').id, c.req.valid('query')), 200));

  serve(routes, cancel, async (c) => c.json(await batches.cancelBatch(callerOf(c), c.req.valid('param').id), 200));

  serve(routes, events, async (c) => {
    const caller = callerOf(c);
    const { id } = c.req.valid('param');
    const after = lastEventId(c.req.header('last-event-id'));
    // Checked before the stream starts, so an unknown batch is a plain 404.
    await batches.assertVisible(caller, id);
    const requestId = requestIdOf(c);
    const response = streamSSE(c, async (stream) => {
      const stop = new AbortController();
      stream.onAbort(() => stop.abort());
      c.req.raw.signal.addEventListener('abort', () => stop.abort(), { once: true });
      const heartbeat = setInterval(() => void stream.write(': keep-alive\n\n'), heartbeatMs);
      try {
        for await (const e of batches.events(caller, id, after, stop.signal)) {
          if (e.type === 'item') await stream.writeSSE({ event: 'item', id: String(e.event.seq), data: JSON.stringify(e.event) });
          else await stream.writeSSE({ event: 'done', data: JSON.stringify(e.batch) });
        }
      } catch (err) {
        // The stream has begun: the client gets a generic error event and reconnects with Last-Event-ID.
        logger.error('batch event stream failed', { batchId: id, requestId, error: err });
        await stream.writeSSE({ event: 'error', data: JSON.stringify({ code: err instanceof PyboxError ? err.code : 'internal' }) });
      } finally {
        clearInterval(heartbeat);
      }
    });
    response.headers.set('Cache-Control', 'no-store');
    response.headers.set('X-Accel-Buffering', 'no');
    return response as never;
  });

  return routes;
}

const noStore = { 'Cache-Control': 'no-store' };

const secret = createRoute({
  method: 'get',
  path: '/webhooks/secret',
  operationId: 'webhookSecret',
  summary: "The key the caller's tenant's webhooks are signed with (made on first use)",
  description: 'Receivers check `Pybox-Webhook-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`; the key is the base64url text after `whsec_` in `secret`, decoded (verifyWebhook in the client package does all of it).',
  responses: {
    200: { description: 'The secret, `whsec_` and base64url; never cached', content: { 'application/json': { schema: WebhookSecret } } },
    ...errorResponses('store_unavailable', 'internal'),
  },
});

const rotate = createRoute({
  method: 'post',
  path: '/webhooks/secret/rotate',
  operationId: 'rotateWebhookSecret',
  summary: 'Replace the tenant\'s webhook secret at once (deliveries from now on are signed with the new one)',
  responses: {
    200: { description: 'The new secret, `whsec_` and base64url; never cached', content: { 'application/json': { schema: WebhookSecret } } },
    ...errorResponses('store_unavailable', 'internal'),
  },
});

export function webhookSecretRoutes(secrets: WebhookSecrets): OpenAPIHono {
  const routes = routeGroup();

  serve(routes, secret, async (c) => c.json({ secret: encodeWebhookSecret(await secrets.secret(callerOf(c).tenant)) }, 200, noStore));

  serve(routes, rotate, async (c) => c.json({ secret: encodeWebhookSecret(await secrets.rotate(callerOf(c).tenant)) }, 200, noStore));

  return routes;
}
