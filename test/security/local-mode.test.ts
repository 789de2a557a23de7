// Attack class: a web page against the local server. In local mode (no API keys) pybox trusts
// whoever reaches its loopback socket, and a page the operator visits can reach it: by DNS
// rebinding (the page's own name re-resolved to 127.0.0.1, so the browser sends the page's name as
// Host and treats pybox as the page's origin) or by a cross-origin request (a foreign Origin). Both
// are refused over real HTTP before anything runs; a loopback client, and a page of pybox's own
// origin, still work.
import { request as httpRequest } from 'node:http';
import { describe, expect } from 'vitest';
import { battery, runtimesUnderTest, type Case } from './support.ts';

const runtimes = await runtimesUnderTest();

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: { error?: { code: string; message: string } } & Record<string, unknown>;
}

/** One request with exactly these headers (fetch would not send a Host of our choosing). */
function send(url: string, path: string, method: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: Number(port), path, method, headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let json: Answer['json'] = {};
        try {
          json = JSON.parse(text) as Answer['json'];
        } catch {
          // an empty or non-JSON body
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Code that would leave a trace if it ran: a line on stdout with the case's marker, kept in the history. */
const trace = (marker: string) => JSON.stringify({ code: `print(${JSON.stringify(marker)})` });

async function expectNothingRan(c: Case): Promise<void> {
  expect(c.containers(), 'sandboxes started').toEqual([]);
  const history = await c.request('/v1/executions?limit=50');
  expect(history.status).toBe(200);
  expect(JSON.stringify(history.json)).not.toContain(c.marker);
}

describe.each(runtimes)('local mode against web pages under %s', (runtime) => {
  const sec = battery(runtime);

  sec('a DNS-rebinding Host is refused on every route but /healthz, and runs nothing', async (c) => {
    const { port } = new URL(c.url);
    for (const host of ['attacker.example', `attacker.example:${port}`, `127.0.0.1.attacker.example:${port}`]) {
      const run = await send(c.url, '/v1/executions', 'POST', { host }, trace(c.marker));
      expect(run.status, host).toBe(403);
      expect(run.json.error?.code).toBe('host_not_allowed');
      expect(run.json.error?.message).toContain('server.allowedHosts');
      const legacy = await send(c.url, '/api/execute-code', 'POST', { host }, trace(c.marker));
      expect(legacy.status).toBe(403);
      const mcp = await send(c.url, '/mcp', 'POST', { host, accept: 'application/json, text/event-stream' }, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'execute_python_code', arguments: { code: `print(${JSON.stringify(c.marker)})` } } }));
      expect(mcp.status).toBe(403);
      // Nor can the page read what ran before.
      for (const path of ['/v1/executions', '/api/code-history', '/v1/stats', '/v1/usage', '/readyz']) expect((await send(c.url, path, 'GET', { host })).status, path).toBe(403);
    }
    expect((await send(c.url, '/healthz', 'GET', { host: 'attacker.example' })).status).toBe(200);
    await expectNothingRan(c);
  });

  sec('a foreign Origin is refused, its preflight too, and runs nothing', async (c) => {
    const { port } = new URL(c.url);
    const host = `127.0.0.1:${port}`;
    for (const origin of ['https://attacker.example', `http://localhost:${Number(port) + 1}`, 'null']) {
      const run = await send(c.url, '/v1/executions', 'POST', { host, origin }, trace(c.marker));
      expect(run.status, origin).toBe(403);
      expect(run.json.error?.code).toBe('origin_not_allowed');
      expect(run.json.error?.message).toContain('server.allowedOrigins');
      expect(run.headers['access-control-allow-origin']).toBeUndefined();
      const preflight = await send(c.url, '/v1/executions', 'OPTIONS', { host, origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' });
      expect(preflight.status).toBe(403);
      expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    }
    await expectNothingRan(c);
  });

  sec('a loopback client, and a page of pybox\'s own origin, still run code', async (c) => {
    const { port } = new URL(c.url);
    const clients: Array<Record<string, string>> = [{ host: `localhost:${port}` }, { host: `127.0.0.1:${port}` }, { host: `localhost:${port}`, origin: `http://localhost:${port}` }];
    for (const headers of clients) {
      const res = await send(c.url, '/v1/executions', 'POST', headers, JSON.stringify({ code: 'print(6 * 7)' }));
      expect(res.status, JSON.stringify(headers)).toBe(200);
      expect(res.json).toMatchObject({ status: 'completed', stdout: '42\n' });
    }
  });

  sec('a name in server.allowedHosts and an origin in server.allowedOrigins are answered', async (c) => {
    const { port } = new URL(c.url);
    const res = await send(c.url, '/v1/executions', 'POST', { host: `pybox.lan:${port}`, origin: 'https://notebook.example' }, JSON.stringify({ code: 'print(1)' }));
    expect(res.status).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe('https://notebook.example');
    expect(res.json).toMatchObject({ status: 'completed', stdout: '1\n' });
  }, { config: { server: { allowedHosts: ['pybox.lan'], allowedOrigins: ['https://notebook.example'] } } });
});
