// The web pages (routes/web.ts): served from the build directory with their content types and a
// policy that forbids inline scripts and framing, nothing outside that directory (no traversal, no
// links followed), open without a key while the API behind them is not, still behind the Host
// check in local mode, and a clear page when nothing was built.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeKeys, harness, type ErrorJson } from './fake-service.ts';

let dir: string;
let outside: string;

beforeAll(() => {
  const root = mkdtempSync(join(tmpdir(), 'pybox-web-'));
  dir = join(root, 'web');
  outside = join(root, 'secret.js');
  mkdirSync(join(dir, 'assets'), { recursive: true });
  writeFileSync(join(dir, 'index.html'), '<!doctype html><meta name="pybox-style-nonce" content="__PYBOX_STYLE_NONCE__"><title>playground</title>');
  writeFileSync(join(dir, 'docs.html'), '<!doctype html><title>reference</title>');
  writeFileSync(join(dir, 'assets', 'playground.js'), 'console.log(1)');
  writeFileSync(join(dir, 'assets', 'playground.css'), 'body{}');
  writeFileSync(join(dir, 'assets', 'favicon.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
  writeFileSync(join(dir, 'assets', 'notes.exe'), 'MZ');
  writeFileSync(join(dir, '.source'), '{}');
  writeFileSync(outside, 'secret()');
  symlinkSync(outside, join(dir, 'assets', 'link.js'));
});
afterAll(() => rmSync(join(dir, '..'), { recursive: true, force: true }));

const CSP_PARTS = ["script-src 'self'", "frame-ancestors 'none'", "default-src 'none'"];

describe('the pages', () => {
  it.each([
    ['/', 'playground'],
    ['/docs', 'reference'],
  ])('serves %s as HTML with a policy that forbids inline scripts and framing', async (path, title) => {
    const h = harness({ webDir: dir });
    const res = await h.app.request(path, { headers: { host: 'localhost:8080' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')?.toLowerCase()).toBe('text/html; charset=utf-8');
    const csp = res.headers.get('content-security-policy') ?? '';
    for (const part of CSP_PARTS) expect(csp).toContain(part);
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await res.text()).toContain(`<title>${title}</title>`);
  });

  it('writes a fresh style nonce into each answer, the same in the page and its policy, and lets nothing cache it', async () => {
    const h = harness({ webDir: dir });
    const nonces: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await h.app.request('/');
      const nonce = /'nonce-([A-Za-z0-9+/=]+)'/.exec(res.headers.get('content-security-policy') ?? '')?.[1] ?? '';
      expect(nonce.length).toBeGreaterThanOrEqual(24);
      expect(await res.text()).toContain(`<meta name="pybox-style-nonce" content="${nonce}">`);
      expect(res.headers.get('cache-control')).toBe('no-store');
      nonces.push(nonce);
    }
    expect(nonces[0]).not.toBe(nonces[1]);
  });

  it('answers an asset 304 to a matching If-None-Match', async () => {
    const h = harness({ webDir: dir });
    const first = await h.app.request('/assets/playground.js');
    const etag = first.headers.get('etag') ?? '';
    expect(etag).toMatch(/^W\/"/);
    expect((await h.app.request('/assets/playground.js', { headers: { 'if-none-match': etag } })).status).toBe(304);
    expect((await h.app.request('/assets/playground.js', { headers: { 'if-none-match': 'W/"other"' } })).status).toBe(200);
  });

  it('answers a page saying how to build them when the directory holds no build, and the API still works', async () => {
    const h = harness({ webDir: join(dir, 'nowhere') });
    for (const path of ['/', '/docs']) {
      const res = await h.app.request(path);
      expect(res.status).toBe(503);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(await res.text()).toContain('scripts/build-web.ts');
    }
    expect((await h.app.request('/assets/playground.js')).status).toBe(404);
    expect((await h.app.request('/v1/stats')).status).toBe(200);
  });
});

describe('the assets', () => {
  it.each([
    ['playground.js', 'text/javascript; charset=utf-8', 'console.log(1)'],
    ['playground.css', 'text/css; charset=utf-8', 'body{}'],
    ['favicon.svg', 'image/svg+xml', '<svg'],
  ])('serves %s as %s', async (name, type, body) => {
    const h = harness({ webDir: dir });
    const res = await h.app.request(`/assets/${name}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(type);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await res.text()).toContain(body);
  });

  it.each([
    '/assets/..%2findex.html',
    '/assets/%2e%2e%2f%2e%2e%2fsecret.js',
    '/assets/..%5csecret.js',
    '/assets/../index.html',
    '/assets/.source',
    '/assets/...',
    '/assets/link.js',
    '/assets/notes.exe',
    '/assets/missing.js',
    '/assets/a/b.js',
    '/assets/%00.js',
    '/index.html',
    '/docs.html',
    '/.source',
  ])('serves nothing for %s', async (path) => {
    const h = harness({ webDir: dir });
    const res = await h.app.request(`http://localhost${path}`);
    const text = await res.text();
    // '/assets/../index.html' is normalised by the URL parser to '/index.html', which is no route either.
    expect(res.status, text).toBe(404);
    expect(text).not.toContain('secret()');
    expect(text).not.toContain('<title>');
    expect((JSON.parse(text) as ErrorJson).error.code).toBe('not_found');
  });
});

describe('keys and browsers', () => {
  it('serves the pages and assets without a key once keys exist, and nothing else', async () => {
    const keys = new FakeKeys();
    const key = keys.add('acme');
    const h = harness({ webDir: dir, keys });
    for (const path of ['/', '/docs', '/assets/playground.js']) expect((await h.app.request(path)).status, path).toBe(200);
    for (const path of ['/openapi.json', '/docs/plain', '/v1/executions', '/v1/runtimes', '/assets']) expect((await h.app.request(path)).status, path).toBe(401);
    // Only reading them is open: another method on a page's path is the API's business.
    expect((await h.app.request('/', { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(401);
    expect((await h.app.request('/openapi.json', { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
  });

  it('keeps the Host check on the pages in local mode (DNS rebinding reaches no page either)', async () => {
    const h = harness({ webDir: dir });
    for (const path of ['/', '/docs', '/assets/playground.js']) {
      const res = await h.app.request(path, { headers: { host: 'attacker.example:8080' } });
      expect(res.status, path).toBe(403);
      expect(((await res.json()) as ErrorJson).error.code).toBe('host_not_allowed');
    }
    expect((await h.app.request('/', { headers: { host: '127.0.0.1:8080' } })).status).toBe(200);
  });

  it('refuses a foreign origin loading the assets cross-origin', async () => {
    const h = harness({ webDir: dir });
    const res = await h.app.request('/assets/playground.js', { headers: { host: 'localhost:8080', origin: 'http://attacker.example' } });
    expect(res.status).toBe(403);
  });
});

describe('the page sources (web/)', () => {
  it.each(['index.html', 'docs.html'])('%s has no inline script, style or handler and loads nothing from elsewhere', (file) => {
    const html = readFileSync(join(import.meta.dirname, '..', '..', 'web', file), 'utf8');
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attrs, body] of scripts) {
      expect(attrs).toMatch(/\ssrc="assets\/[\w.-]+\.js"/);
      expect(body?.trim()).toBe('');
    }
    expect(html).not.toMatch(/<style\b/i);
    expect(html).not.toMatch(/\sstyle=/i);
    expect(html).not.toMatch(/\son[a-z]+=/i);
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//i);
  });
});
