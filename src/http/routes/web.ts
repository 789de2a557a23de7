// The web pages pybox serves for people: the playground at / and the API reference at /docs, with
// their assets, from the directory scripts/build-web.ts builds (build/web). Nothing is loaded from
// elsewhere, and the pages' policy lets only their own files run: no inline script, no other origin,
// no framing. A directory without the build answers a page saying how to make it, not a crash.
import { randomBytes } from 'node:crypto';
import { lstat, readFile } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { z } from 'zod';
import { errorResponses } from '../openapi.ts';
import { escapeHtml } from './docs.ts';
import { routeGroup, serve } from '../route.ts';
import { PyboxError } from '../../core/errors.ts';

/** This package's build/web (src/http/routes → the package root). */
export const DEFAULT_WEB_DIR = join(import.meta.dirname, '..', '..', '..', 'build', 'web');

/**
 * script-src 'self' forbids inline scripts. Style elements need the page's nonce: the editor
 * (CodeMirror) adds its own at run time and is given the nonce (the page's `pybox-style-nonce` meta
 * element, written per answer). img-src data: is for figures (base64 PNG) and Swagger UI's icons;
 * HTML values of a run are shown in a sandboxed srcdoc frame, which inherits all this.
 */
export function pagePolicy(styleNonce?: string): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    `style-src 'self'${styleNonce ? ` 'nonce-${styleNonce}'` : ''}`,
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** Where a page's HTML has the nonce written (web/*.html). */
const NONCE_SLOT = /__PYBOX_STYLE_NONCE__/g;

const SECURITY_HEADERS = {
  'Content-Security-Policy': pagePolicy(),
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  // Revalidated on each load (ETag), so a rebuilt bundle is never mixed with an old page.
  'Cache-Control': 'no-cache',
};

const CONTENT_TYPES: Record<string, string> = {
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  map: 'application/json; charset=utf-8',
  svg: 'image/svg+xml',
  txt: 'text/plain; charset=utf-8',
};

// One path segment of a file the build writes; anything else (dots first, slashes, escapes) is no asset.
const AssetName = z.object({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'no such asset') });

const htmlPage = { 'text/html': { schema: { type: 'string' as const } } };
const notBuilt = { description: 'The pages have not been built (scripts/build-web.ts): a page saying so', content: htmlPage };
const notModified = { description: 'Unchanged since the ETag given in If-None-Match' };

const playground = createRoute({
  method: 'get',
  path: '/',
  operationId: 'playground',
  summary: 'The playground: a web page to run code, with sessions, streamed output and history',
  responses: { 200: { description: 'The page (its script and styles are under /assets)', content: htmlPage }, 503: notBuilt },
});

const reference = createRoute({
  method: 'get',
  path: '/docs',
  operationId: 'docs',
  summary: 'The API reference: this document rendered by Swagger UI',
  responses: { 200: { description: 'The page (it fetches /openapi.json)', content: htmlPage }, 503: notBuilt },
});

const asset = createRoute({
  method: 'get',
  path: '/assets/{name}',
  operationId: 'webAsset',
  summary: 'A script, stylesheet or image of the web pages',
  request: { params: AssetName },
  responses: {
    200: {
      description: 'The file',
      content: Object.fromEntries(Object.values(CONTENT_TYPES).map((t) => [t.split(';')[0] ?? t, { schema: { type: 'string' as const } }])),
    },
    304: notModified,
    ...errorResponses('not_found'),
  },
});

function notBuiltPage(dir: string): string {
  return (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pybox: web pages not built</title></head><body>' +
    '<h1>The web pages have not been built</h1>' +
    `<p>pybox serves the playground and the API reference from <code>${escapeHtml(dir)}</code>, which holds no build. ` +
    'Run <code>npm run setup</code> (or <code>node --import tsx scripts/build-web.ts</code>) in the pybox checkout, then reload.</p>' +
    '<p>The API itself works without them; its document is at <a href="openapi.json">/openapi.json</a>.</p></body></html>'
  );
}

interface Found {
  path: string;
  etag: string;
}

/** A regular file (never a link) inside `dir`, or undefined. Not read yet: a 304 needs only its ETag. */
async function findInside(dir: string, name: string): Promise<Found | undefined> {
  const base = resolve(dir);
  const path = resolve(base, name);
  if (!path.startsWith(base + sep)) return undefined;
  try {
    const st = await lstat(path);
    if (!st.isFile()) return undefined;
    return { path, etag: `W/"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"` };
  } catch {
    return undefined;
  }
}

/** The file's bytes, or undefined when it went away since it was found. */
const readFound = (found: Found): Promise<Buffer | undefined> => readFile(found.path).catch(() => undefined);

/** `dir`: what scripts/build-web.ts wrote (index.html, docs.html, assets/). */
export function webRoutes(dir: string): OpenAPIHono {
  const app = routeGroup();

  // A page is written afresh for each answer, with a nonce of its own: never cached, never a 304.
  const page = (file: string) => async (c: Context) => {
    const found = await findInside(dir, file);
    const bytes = found && (await readFound(found));
    const headers = { ...SECURITY_HEADERS, 'Cache-Control': 'no-store' };
    if (!bytes) return c.html(notBuiltPage(dir), 503, headers);
    const nonce = randomBytes(18).toString('base64');
    return c.html(bytes.toString('utf8').replace(NONCE_SLOT, nonce), 200, { ...headers, 'Content-Security-Policy': pagePolicy(nonce) });
  };

  serve(app, playground, page('index.html'));
  serve(app, reference, page('docs.html'));

  serve(app, asset, async (c) => {
    const { name } = c.req.valid('param');
    const type = CONTENT_TYPES[name.split('.').at(-1) ?? ''];
    const found = type ? await findInside(join(dir, 'assets'), name) : undefined;
    if (!type || !found) throw new PyboxError('not_found', `no asset ${name}`);
    const headers = { ...SECURITY_HEADERS, ETag: found.etag };
    if (c.req.header('if-none-match')?.split(',').some((t) => t.trim() === found.etag)) return c.body(null, 304, headers);
    const bytes = await readFound(found);
    if (!bytes) throw new PyboxError('not_found', `no asset ${name}`);
    return c.body(new Uint8Array(bytes), 200, { ...headers, 'Content-Type': type });
  });

  return app;
}
