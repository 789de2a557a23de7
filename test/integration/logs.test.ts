// The JSON logs of a real pybox: first in-process on the real engine (composePybox, a capturing
// pino logger), then the real server process (`npm start`'s src/main.ts), whose every line must
// parse as JSON. In both, a run whose code, input, environment, context, files and output hold a
// marker leaves the marker in no line, while the request's id follows it from the access line to
// the execution line.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { composePybox } from '../../src/compose.ts';
import { ConfigSchema } from '../../src/config/schema.ts';
import { createLogger } from '../../src/core/logger.ts';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { freePort, startService } from '../support/serve.ts';
import { labelledContainers } from '../support/real.ts';

const root = join(import.meta.dirname, '../..');
const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pybox-logs-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const MARKER = `MaRkEr-${randomUUID().slice(0, 8)}-sEcReT`;

/** Every way a request's content could reach a log line: each carries the marker. */
const markedRequest = {
  code: [
    'import os, sys, json',
    `secret = "${MARKER}"`,
    'print("stdout", secret, sys.stdin.read(), sys.argv[1], os.environ["TOKEN"], token)',
    'print("stderr", secret, file=sys.stderr)',
    'open("out/leak.txt", "w").write(secret + open("data/in.txt").read())',
    'raise RuntimeError(secret)',
  ].join('\n'),
  stdin: MARKER,
  args: [MARKER],
  env: { TOKEN: MARKER },
  context: { token: MARKER },
  files: [{ path: 'data/in.txt', content: MARKER }],
};

type Line = Record<string, unknown>;
const parseLines = (text: string): Line[] =>
  text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Line;
      } catch {
        throw new Error(`a log line is not JSON: ${l.slice(0, 300)}`);
      }
    });

/** The marker did reach the run and come back: otherwise its absence from the log proves nothing. */
function expectMarkerRanAndReturned(result: ExecutionResult): void {
  expect(result.status).toBe('error');
  expect(result.stdout).toContain(`stdout ${MARKER} ${MARKER} ${MARKER} ${MARKER} ${MARKER}`);
  expect(result.stderr).toContain(`stderr ${MARKER}`);
  expect(result.error?.message).toBe(MARKER);
  expect(Buffer.from(result.files?.[0]?.contentBase64 ?? '', 'base64').toString()).toBe(MARKER + MARKER);
}

describe('logs of a real pybox', () => {
  it('in-process on the real engine: request id from access line to execution line, no marker anywhere', async () => {
    const dir = tempDir();
    const config = ConfigSchema.parse({ engine: { instance: `test-logs-${randomUUID().slice(0, 8)}`, runtime: 'runc' }, store: { path: join(dir, 'pybox.db') } });
    const written: string[] = [];
    const logger = createLogger('debug', { format: 'json', destination: { write: (s: string) => void written.push(s) } });
    const pybox = await composePybox(config, { logger, imagesDir: join(root, 'images') });
    try {
      const res = await pybox.app.request('/v1/executions', { method: 'POST', headers: { 'content-type': 'application/json', 'X-Request-Id': 'it-req-1' }, body: JSON.stringify(markedRequest) });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-request-id')).toBe('it-req-1');
      const result = ExecutionResult.parse(await res.json());
      expectMarkerRanAndReturned(result);

      const unknown = await pybox.app.request(`/v1/executions/${randomUUID()}`, { headers: { 'X-Request-Id': 'bad id!' } });
      expect(unknown.status).toBe(404);
      expect(unknown.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

      const lines = parseLines(written.join(''));
      const execution = lines.filter((l) => l.msg === 'execution');
      expect(execution).toHaveLength(1);
      expect(execution[0]).toMatchObject({ level: 'info', executionId: result.id, requestId: 'it-req-1', tenant: 'local', status: 'error', runtime: 'runc', durationMs: result.durationMs, exitCode: 1 });
      expect(execution[0]?.queueWaitMs).toEqual(expect.any(Number));
      const access = lines.filter((l) => l.msg === 'request');
      expect(access.map((l) => [l.requestId, l.method, l.route, l.status, l.tenant])).toEqual([
        ['it-req-1', 'POST', '/v1/executions', 200, 'local'],
        [unknown.headers.get('x-request-id'), 'GET', '/v1/executions/:id', 404, 'local'],
      ]);
      expect(written.join('')).not.toContain(MARKER);
      expect(written.join('')).not.toContain('bad id!');
    } finally {
      await pybox.close();
    }
    expect(await labelledContainers(config.engine.instance)).toEqual([]);
  });

  it('the server process writes nothing but JSON lines: listening, access, execution and shutdown, and no marker', async () => {
    const dir = tempDir();
    const instance = `test-logs-${randomUUID().slice(0, 8)}`;
    const configPath = join(dir, 'pybox.yaml');
    writeFileSync(configPath, `engine:\n  instance: ${instance}\n  runtime: runc\n`);
    const port = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, PYBOX_CONFIG: configPath, PYBOX_HOST: '127.0.0.1', PYBOX_PORT: String(port), PYBOX_DB: join(dir, 'db.sqlite'), PYBOX_LOG_LEVEL: 'info' };
    delete env.PYBOX_LOG_FORMAT; // auto: not a terminal here, so JSON
    const service = startService(root, env);
    let result: ExecutionResult | undefined;
    try {
      await service.listening(300);
      expect(service.log).toContain(`pybox listening on http://127.0.0.1:${port}`);
      const res = await fetch(`http://127.0.0.1:${port}/v1/executions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'X-Request-Id': 'proc-req-1', authorization: `Bearer pbx_${MARKER}` },
        body: JSON.stringify(markedRequest),
      });
      expect(res.headers.get('x-request-id')).toBe('proc-req-1');
      result = ExecutionResult.parse(await res.json());
      expectMarkerRanAndReturned(result);
    } finally {
      service.child.kill('SIGTERM');
    }
    expect(await service.exited).toBe(0);

    const lines = parseLines(service.log);
    for (const l of lines) {
      expect(['debug', 'info', 'warn', 'error']).toContain(l.level);
      expect(typeof l.msg).toBe('string');
      expect(new Date(String(l.time)).toISOString()).toBe(l.time);
      expect(l.pid).toBe(service.child.pid);
    }
    const msgs = lines.map((l) => l.msg);
    expect(msgs).toContain(`pybox listening on http://127.0.0.1:${port}`);
    expect(lines.find((l) => l.msg === `pybox listening on http://127.0.0.1:${port}`)).toMatchObject({ runtime: 'runc' });
    expect(lines.filter((l) => l.msg === 'execution')).toEqual([expect.objectContaining({ requestId: 'proc-req-1', executionId: result?.id, tenant: 'local', status: 'error', exitCode: 1 })]);
    expect(lines.filter((l) => l.msg === 'request' && l.requestId === 'proc-req-1')).toEqual([expect.objectContaining({ method: 'POST', route: '/v1/executions', status: 200 })]);
    expect(msgs.at(-1)).toBe('shut down');
    expect(service.log).not.toContain(MARKER);
    expect(await labelledContainers(instance)).toEqual([]);
  });
});
