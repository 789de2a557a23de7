// The initializer of Swagger UI at /docs (its bundle is loaded by the page as a file; nothing runs
// inline). The document is fetched here with the tab's API key, since a server with keys serves it
// to key holders only, and "Try it out" requests get the same header.
import { forgetKey, readKey, saveKey } from './storage.ts';

interface SwaggerRequest {
  headers: Record<string, string>;
}
type SwaggerUIBundleFn = (options: {
  spec: unknown;
  domNode: HTMLElement;
  deepLinking: boolean;
  tryItOutEnabled: boolean;
  requestInterceptor: (request: SwaggerRequest) => SwaggerRequest;
}) => unknown;

declare global {
  interface Window {
    SwaggerUIBundle?: SwaggerUIBundleFn;
  }
}

function byId<T extends HTMLElement>(id: string, type: new () => T): T {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`the page has no #${id}`);
  return node;
}

const keyInput = byId('api-key', HTMLInputElement);
const keyForm = byId('key-form', HTMLFormElement);
const banner = byId('banner', HTMLParagraphElement);
const target = byId('swagger', HTMLElement);

function say(text: string | null): void {
  banner.hidden = text === null;
  banner.textContent = text ?? '';
}

async function load(): Promise<void> {
  const key = readKey();
  const res = await fetch(new URL('openapi.json', location.href), { headers: { Accept: 'application/json', ...(key ? { Authorization: `Bearer ${key}` } : {}) } });
  if (res.status === 401) {
    target.replaceChildren();
    say(key ? 'The API key was not accepted.' : 'This server shows its API reference to key holders: enter an API key above.');
    keyInput.focus();
    return;
  }
  if (!res.ok) {
    say(`The OpenAPI document could not be read (${res.status}).`);
    return;
  }
  const spec: unknown = await res.json();
  const ui = window.SwaggerUIBundle;
  if (!ui) {
    say('Swagger UI did not load (assets/swagger-ui-bundle.js).');
    return;
  }
  say(null);
  ui({
    spec,
    domNode: target,
    deepLinking: true,
    tryItOutEnabled: false,
    requestInterceptor(request) {
      const current = readKey();
      if (current && !Object.keys(request.headers).some((h) => h.toLowerCase() === 'authorization')) request.headers.Authorization = `Bearer ${current}`;
      return request;
    },
  });
}

keyInput.value = readKey() ?? '';
const changed = () => {
  const value = keyInput.value.trim();
  if (value) saveKey(value);
  else forgetKey();
  void load().catch((e: unknown) => say(`The reference could not be shown: ${String(e)}`));
};
keyInput.addEventListener('change', changed);
keyForm.addEventListener('submit', (e) => {
  e.preventDefault();
  changed();
});

// The bundle is a deferred classic script: it has run by the time module scripts run (both wait for parsing, in order).
void load()
  .then(() => (document.body.dataset.ready = 'true'))
  .catch((e: unknown) => say(`The reference could not be shown: ${String(e)}`));
