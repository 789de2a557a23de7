// Stats, runtimes and the health probes.
import { describe, expect, it } from 'vitest';
import { PyboxError } from '../../src/core/errors.ts';
import { harness, sampleRuntimes, sampleStats } from './fake-service.ts';

describe('GET /v1/stats and /v1/runtimes', () => {
  it('passes the stats through', async () => {
    const { app } = harness();
    const res = await app.request('/v1/stats');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(sampleStats);
  });

  it('passes the runtime information through', async () => {
    const { app } = harness();
    const res = await app.request('/v1/runtimes');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(sampleRuntimes);
  });
});

describe('health probes', () => {
  it('answers /healthz with ok even when nothing else works', async () => {
    const { app, service } = harness();
    service.failWith.readiness = new PyboxError('engine_unavailable', 'down');
    service.failWith.stats = new Error('store gone');
    const res = await app.request('/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('answers /readyz with 200 and the readiness when ready', async () => {
    const { app, service } = harness();
    const res = await app.request('/readyz');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(service.readinessValue);
  });

  it('answers /readyz with 503 and the readiness when not ready', async () => {
    const { app, service } = harness();
    service.readinessValue = {
      ready: false,
      checks: { engine: true, image: false, store: true },
      runtime: 'runc',
      image: 'pybox-python:0123456789ab',
      message: 'the sandbox image is missing',
    };
    const res = await app.request('/readyz');
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual(service.readinessValue);
  });
});
