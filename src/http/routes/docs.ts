// The OpenAPI document, built once per app from the routes its registry holds (every route served
// through route.ts's `serve`, and the agent tools' description from agent-tools-doc.ts), and the
// same document as a plain page at /docs/plain: static HTML, no script, nothing fetched elsewhere (the
// interactive reference at /docs, Swagger UI, is one of the web pages: routes/web.ts).
import { createRoute, OpenAPIHono, type RouteConfig } from '@hono/zod-openapi';
import { buildOpenApi, OpenApiDocument, type OpenApiDoc } from '../openapi.ts';
import { routeGroup, serve } from '../route.ts';

const openapi = createRoute({
  method: 'get',
  path: '/openapi.json',
  operationId: 'openapi',
  summary: 'This document',
  responses: { 200: { description: 'The OpenAPI 3.1 document of this server', content: { 'application/json': { schema: OpenApiDocument } } } },
});

const page = createRoute({
  method: 'get',
  path: '/docs/plain',
  operationId: 'docsPlain',
  summary: 'This document as a plain web page (no script)',
  responses: { 200: { description: 'Every operation with its parameters, body and answers', content: { 'text/html': { schema: { type: 'string' as const } } } } },
});

export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

interface PageOperation {
  summary?: string;
  description?: string;
  parameters?: Array<{ name: string; in: string; required?: boolean }>;
  requestBody?: { content?: Record<string, { schema?: { $ref?: string } }> };
  responses?: Record<string, { description?: string; content?: Record<string, { schema?: { $ref?: string } }> }>;
  security?: unknown;
}

function schemaNames(content: Record<string, { schema?: { $ref?: string } }> | undefined): string {
  return Object.entries(content ?? {})
    .map(([media, m]) => `${media}${m.schema?.$ref ? ` ${m.schema.$ref.split('/').at(-1) ?? ''}` : ''}`)
    .join(', ');
}

function renderPage(doc: OpenApiDoc): string {
  const sections: string[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, raw] of Object.entries(item)) {
      const op = raw as PageOperation;
      const rows: string[] = [];
      if (op.summary) rows.push(`<p>${escapeHtml(op.summary)}</p>`);
      if (op.description) rows.push(`<p>${escapeHtml(op.description)}</p>`);
      if (op.security) rows.push('<p><em>Needs an API key once any exists.</em></p>');
      for (const p of op.parameters ?? []) rows.push(`<p>${escapeHtml(p.in)} parameter <code>${escapeHtml(p.name)}</code>${p.required ? ' (required)' : ''}</p>`);
      if (op.requestBody) rows.push(`<p>Body: <code>${escapeHtml(schemaNames(op.requestBody.content))}</code></p>`);
      const answers = Object.entries(op.responses ?? {}).map(
        ([status, r]) => `<li><code>${escapeHtml(status)}</code> ${escapeHtml(r.description ?? '')}${r.content ? ` <code>${escapeHtml(schemaNames(r.content))}</code>` : ''}</li>`,
      );
      sections.push(`<section><h2><code>${escapeHtml(method.toUpperCase())} ${escapeHtml(path)}</code></h2>${rows.join('')}<ul>${answers.join('')}</ul></section>`);
    }
  }
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pybox ${escapeHtml(doc.info.version)} API</title>` +
    '<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}section{border-top:1px solid #ccc}code{background:#f4f4f4}</style></head>' +
    `<body><h1>pybox ${escapeHtml(doc.info.version)} API</h1><p>${escapeHtml(doc.info.description)} The schemas are in <a href="../openapi.json">openapi.json</a>.</p>` +
    `${sections.join('')}</body></html>`
  );
}

/** `routes` is read on the first request, once every route group is mounted. */
export function docsRoutes(version: string, routes: () => readonly RouteConfig[]): OpenAPIHono {
  const app = routeGroup();
  let document: OpenApiDoc | undefined;
  let html: string | undefined;
  const built = () => (document ??= buildOpenApi(routes(), version));

  serve(app, openapi, (c) => c.json(built(), 200));

  serve(app, page, (c) => {
    html ??= renderPage(built());
    // Nothing on the page runs or loads anything; the policy keeps it so.
    return c.html(html, 200, { 'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'", 'X-Content-Type-Options': 'nosniff' });
  });

  return app;
}
