// The body limit holds whether or not the client announces the size, and nothing over it reaches
// the service.
import { describe, expect, it } from 'vitest';
import { harness, TEST_BODY_LIMIT, type ErrorJson } from './fake-service.ts';

/** A JSON request body of exactly `bytes` bytes. */
function bodyOfSize(bytes: number): string {
  const shell = JSON.stringify({ code: '' });
  return JSON.stringify({ code: 'x'.repeat(bytes - shell.length) });
}

function streamOf(text: string, chunkBytes = 512): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.subarray(offset, offset + chunkBytes));
      offset += chunkBytes;
    },
  });
}

const streamed = (body: ReadableStream<Uint8Array>): RequestInit & { duplex: 'half' } => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body,
  duplex: 'half',
});

describe('body limit', () => {
  it('accepts a body of exactly the limit', async () => {
    const { service, post } = harness();
    const text = bodyOfSize(TEST_BODY_LIMIT);
    expect(Buffer.byteLength(text)).toBe(TEST_BODY_LIMIT);
    const res = await post('/v1/executions', text, { 'content-type': 'application/json', 'content-length': String(TEST_BODY_LIMIT) });
    expect(res.status).toBe(200);
    expect(service.calls.execute).toHaveLength(1);
  });

  it('answers 413 from Content-Length without calling the service', async () => {
    const { service, post } = harness();
    const text = bodyOfSize(TEST_BODY_LIMIT + 1);
    const res = await post('/v1/executions', text, { 'content-type': 'application/json', 'content-length': String(TEST_BODY_LIMIT + 1) });
    expect(res.status).toBe(413);
    expect(((await res.json()) as ErrorJson).error.code).toBe('payload_too_large');
    expect(service.calls.execute).toHaveLength(0);
  });

  it('refuses a declared oversize before reading a byte of the body', async () => {
    const { service, post } = harness();
    // The body itself is small: only the header can have caused the 413.
    const res = await post('/v1/executions', { code: 'x' }, { 'content-type': 'application/json', 'content-length': String(TEST_BODY_LIMIT * 100) });
    expect(res.status).toBe(413);
    expect(service.calls.execute).toHaveLength(0);
  });

  it('answers 413 for a streamed body without Content-Length, counting the bytes', async () => {
    const { app, service } = harness();
    const request = new Request('http://localhost/v1/executions', streamed(streamOf(bodyOfSize(TEST_BODY_LIMIT * 3))));
    expect(request.headers.has('content-length')).toBe(false);
    const res = await app.request(request);
    expect(res.status).toBe(413);
    expect(((await res.json()) as ErrorJson).error.code).toBe('payload_too_large');
    expect(service.calls.execute).toHaveLength(0);
  });

  it('stops reading a long stream soon after the limit', async () => {
    const { app, service } = harness();
    // Long but finite, so that a missing limit fails this test instead of hanging it.
    const total = TEST_BODY_LIMIT * 64;
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= total) return controller.close();
        pulled += 1024;
        controller.enqueue(new Uint8Array(1024).fill(0x20));
      },
    });
    const res = await app.request(new Request('http://localhost/v1/executions', streamed(endless)));
    expect(res.status).toBe(413);
    expect(pulled).toBeLessThan(TEST_BODY_LIMIT * 4);
    expect(service.calls.execute).toHaveLength(0);
  });

  it('passes a streamed body under the limit through intact', async () => {
    const { app, service } = harness();
    const text = bodyOfSize(TEST_BODY_LIMIT - 10);
    const res = await app.request(new Request('http://localhost/v1/executions', streamed(streamOf(text, 100))));
    expect(res.status).toBe(200);
    expect(service.calls.execute[0]?.request).toEqual(JSON.parse(text));
  });

  it('applies to the reference-design route as well', async () => {
    const { app, service } = harness();
    const res = await app.request(new Request('http://localhost/api/execute-code', streamed(streamOf(bodyOfSize(TEST_BODY_LIMIT + 1)))));
    expect(res.status).toBe(413);
    expect(service.calls.execute).toHaveLength(0);
  });
});
