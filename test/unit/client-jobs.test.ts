// The typed client's calls for async executions and batches, against a scripted fetch: 202 handling,
// polling, paging, the batch's event stream (parsing, resuming with Last-Event-ID, giving up) and
// cancellation. The server side is tested in test/http; the CLI's use of these in test/unit/cli-*.
import { describe, expect, it } from 'vitest';
import { PyboxClient, type FetchLike } from '../../src/client/client.ts';
import { ConnectionError, NotFoundError, UnexpectedResponseError } from '../../src/client/errors.ts';
import { BatchInfo, EXECUTION_STATUSES, PendingExecution, type BatchItem } from '../../src/core/schemas.ts';
import { sampleResult } from '../http/fake-service.ts';

const RESULT = sampleResult();
const BY_STATUS = Object.fromEntries(EXECUTION_STATUSES.map((s) => [s, 0]));
const PENDING = PendingExecution.parse({ id: 'exec-1', state: 'queued', batchId: null, createdAt: '2026-01-01T00:00:00.000Z' });
const INFO = BatchInfo.parse({
  id: 'b1',
  state: 'running',
  label: null,
  total: 3,
  done: 0,
  byStatus: BY_STATUS,
  createdAt: '2026-01-01T00:00:00.000Z',
  finishedAt: null,
  webhook: null,
});
const DONE_INFO = { ...INFO, state: 'completed', done: 3, byStatus: { ...BY_STATUS, completed: 3 }, finishedAt: '2026-01-01T00:00:01.000Z' };
const item = (index: number): BatchItem => ({ index, executionId: `e${index}`, state: 'done', result: { ...RESULT, id: `e${index}` } });

type Sent = { url: string; init: RequestInit };
const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

function scripted(...answers: Array<Response | (() => Response | Promise<Response>)>): FetchLike & { sent: Sent[] } {
  const sent: Sent[] = [];
  const fn = (async (url: string, init: RequestInit) => {
    sent.push({ url, init });
    const next = answers.shift();
    if (!next) throw new Error('no more scripted answers');
    return typeof next === 'function' ? next() : next;
  }) as FetchLike & { sent: Sent[] };
  fn.sent = sent;
  return fn;
}

/** An event stream answer whose body is these chunks, then its end. */
function stream(...chunks: string[]): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream; charset=utf-8' } });
}
const itemEvent = (seq: number, index = seq - 1) => `id: ${seq}\nevent: item\ndata: ${JSON.stringify({ batchId: 'b1', seq, item: item(index) })}\n\n`;
const doneEvent = () => `event: done\ndata: ${JSON.stringify(DONE_INFO)}\n\n`;

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('async executions', () => {
  it('submit posts to ?async=true with the webhook in the body and parses the 202', async () => {
    const fetch = scripted(json(202, PENDING, { location: '/v1/executions/exec-1' }));
    const pending = await new PyboxClient({ fetch }).submit({ code: 'print(1)' }, { webhook: { url: 'https://ci.example/hook' } });
    expect(pending).toEqual(PENDING);
    expect(fetch.sent[0]!.url).toBe('http://127.0.0.1:8080/v1/executions?async=true');
    expect(JSON.parse(String(fetch.sent[0]!.init.body))).toEqual({ code: 'print(1)', webhook: { url: 'https://ci.example/hook' } });
  });

  it('getExecution tells a 202 (pending) from a 200 (result)', async () => {
    const client = new PyboxClient({ fetch: scripted(json(202, { ...PENDING, state: 'running' }, { 'retry-after': '1' }), json(200, RESULT)) });
    expect(await client.getExecution('exec-1')).toEqual({ done: false, pending: { ...PENDING, state: 'running' } });
    expect(await client.getExecution('exec-1')).toEqual({ done: true, result: RESULT });
  });

  it('getExecution refuses a 202 that is not a PendingExecution', async () => {
    const client = new PyboxClient({ fetch: scripted(json(202, { id: 'x' })) });
    await expect(client.getExecution('x')).rejects.toBeInstanceOf(UnexpectedResponseError);
  });

  it('waitFor polls until the result is there', async () => {
    const fetch = scripted(json(202, PENDING), json(202, { ...PENDING, state: 'running' }), json(200, RESULT));
    expect(await new PyboxClient({ fetch }).waitFor('exec-1', { intervalMs: 1 })).toEqual(RESULT);
    expect(fetch.sent).toHaveLength(3);
  });

  it('waitFor stops when its signal aborts', async () => {
    const controller = new AbortController();
    const fetch: FetchLike = async () => json(202, PENDING);
    const waiting = new PyboxClient({ fetch }).waitFor('exec-1', { intervalMs: 10_000, signal: controller.signal }).catch((e: unknown) => e);
    setTimeout(() => controller.abort(new Error('enough')), 20);
    expect(await waiting).toEqual(new Error('enough'));
  });

  it('an unknown id is a NotFoundError', async () => {
    const client = new PyboxClient({ fetch: scripted(json(404, { error: { code: 'not_found', message: 'no such execution' } })) });
    await expect(client.getExecution('nope')).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('batches', () => {
  it('createBatch posts the items and parses the BatchInfo', async () => {
    const fetch = scripted(json(202, INFO));
    expect(await new PyboxClient({ fetch }).createBatch({ items: [{ code: 'print(1)' }], label: 'ci' })).toEqual(INFO);
    expect(fetch.sent[0]!.url).toBe('http://127.0.0.1:8080/v1/batches');
    expect(fetch.sent[0]!.init.method).toBe('POST');
    expect(JSON.parse(String(fetch.sent[0]!.init.body))).toEqual({ items: [{ code: 'print(1)' }], label: 'ci' });
  });

  it('batchItems follows nextCursor over every page', async () => {
    const fetch = scripted(json(200, { ...INFO, items: [item(0), item(1)], nextCursor: 'c2' }), json(200, { ...INFO, items: [item(2)], nextCursor: null }));
    const items = await collect(new PyboxClient({ fetch }).batchItems('b1', { pageSize: 2 }));
    expect(items.map((i) => i.index)).toEqual([0, 1, 2]);
    expect(fetch.sent.map((s) => s.url)).toEqual(['http://127.0.0.1:8080/v1/batches/b1?limit=2', 'http://127.0.0.1:8080/v1/batches/b1?limit=2&cursor=c2']);
  });

  it('cancelBatch sends DELETE and parses the batch; with 204 it asks for the batch', async () => {
    const cancelled = { ...INFO, state: 'cancelled' };
    const fetch = scripted(json(200, cancelled), new Response(null, { status: 204 }), json(200, { ...cancelled, items: [], nextCursor: null }));
    const client = new PyboxClient({ fetch });
    expect(await client.cancelBatch('b1')).toEqual(cancelled);
    expect(await client.cancelBatch('b1')).toMatchObject({ state: 'cancelled' });
    expect(fetch.sent.map((s) => s.init.method)).toEqual(['DELETE', 'DELETE', 'GET']);
  });
});

describe('batchEvents', () => {
  it('yields item events, then done, and ends', async () => {
    const fetch = scripted(stream(': hello\n\n', itemEvent(1), itemEvent(2).slice(0, 20), itemEvent(2).slice(20), 'event: future\ndata: {}\n\n', doneEvent()));
    const events = await collect(new PyboxClient({ fetch, apiKey: 'k' }).batchEvents('b1'));
    expect(events.map((e) => e.type)).toEqual(['item', 'item', 'done']);
    expect(events[1]).toMatchObject({ type: 'item', data: { seq: 2, item: { index: 1 } } });
    expect(events[2]).toEqual({ type: 'done', data: DONE_INFO });
    expect(fetch.sent[0]!.url).toBe('http://127.0.0.1:8080/v1/batches/b1/events');
    expect(fetch.sent[0]!.init.headers).toMatchObject({ accept: 'text/event-stream', authorization: 'Bearer k' });
    expect(fetch.sent[0]!.init.headers).not.toHaveProperty('last-event-id');
  });

  it('reconnects after a dropped connection with Last-Event-ID, losing and repeating nothing', async () => {
    const fetch = scripted(stream(itemEvent(1), itemEvent(2)), () => Promise.reject(new TypeError('fetch failed')), stream(itemEvent(3), doneEvent()));
    const events = await collect(new PyboxClient({ fetch }).batchEvents('b1', { reconnectDelayMs: 1 }));
    expect(events.filter((e) => e.type === 'item').map((e) => (e.type === 'item' ? e.data.seq : 0))).toEqual([1, 2, 3]);
    expect(fetch.sent.map((s) => (s.init.headers as Record<string, string>)['last-event-id'])).toEqual([undefined, '2', '2']);
  });

  it('starts from the given lastEventId', async () => {
    const fetch = scripted(stream(itemEvent(5), doneEvent()));
    await collect(new PyboxClient({ fetch }).batchEvents('b1', { lastEventId: '4' }));
    expect(fetch.sent[0]!.init.headers).toMatchObject({ 'last-event-id': '4' });
  });

  it('gives up after `reconnects` failures in a row', async () => {
    const fetch: FetchLike = async () => stream(': nothing\n\n');
    const e = await collect(new PyboxClient({ fetch }).batchEvents('b1', { reconnects: 2, reconnectDelayMs: 1 })).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ConnectionError);
    expect((e as Error).message).toContain('3 times in a row');
  });

  it('does not retry an unknown batch, and refuses an event that does not match the API', async () => {
    const missing = scripted(json(404, { error: { code: 'not_found', message: 'no such batch' } }));
    await expect(collect(new PyboxClient({ fetch: missing }).batchEvents('zz'))).rejects.toBeInstanceOf(NotFoundError);
    expect(missing.sent).toHaveLength(1);
    const bad = scripted(stream('event: item\ndata: {"batchId":"b1"}\n\n'));
    await expect(collect(new PyboxClient({ fetch: bad }).batchEvents('b1'))).rejects.toBeInstanceOf(UnexpectedResponseError);
    const notSse = scripted(json(200, INFO));
    await expect(collect(new PyboxClient({ fetch: notSse }).batchEvents('b1'))).rejects.toThrow(/not an event stream/);
  });

  it('closes the connection when the caller stops early', async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(itemEvent(1)));
      },
      cancel() {
        cancelled = true;
      },
    });
    const fetch = scripted(new Response(body, { headers: { 'content-type': 'text/event-stream' } }));
    for await (const event of new PyboxClient({ fetch }).batchEvents('b1')) {
      expect(event.type).toBe('item');
      break;
    }
    await new Promise((r) => setTimeout(r, 20)); // the cancel travels through the decoder's pipe
    expect(cancelled).toBe(true);
  });
});
