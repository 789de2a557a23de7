// The playground and the API reference in Chromium against a real pybox (the real engine, runc):
// the page loads under its policy with no complaint, runs code and shows its output, marks a
// syntax error at its line, shows a plot, keeps a session, reopens a past run from the history,
// works on a narrow screen, and refuses to run with a wrong key once keys exist. Screenshots of
// these states land in build/screenshots (browser.ts).
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashApiKey, newApiKey, newKeyId } from '../../src/tenancy/keys.ts';
import { realPybox, type RealPybox } from '../support/real.ts';
import { serveApp, type Served } from '../support/serve.ts';
import { buildPages, editorText, launch, openPage, runCode, screenshot, setCode, type WatchedPage } from './browser.ts';

async function ready(page: Page): Promise<void> {
  await page.locator('body[data-ready="true"]').waitFor();
  // The first GET /v1/runtimes asks the image for its packages: it can take seconds.
  await page.locator('body[data-limits="loaded"]').waitFor({ timeout: 60_000 });
}

/** A JSON answer of pybox's app, asked in-process. */
async function getJson<T>(pybox: RealPybox, path: string, key?: string): Promise<T> {
  const res = await pybox.app.request(path, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  return (await res.json()) as T;
}

async function closeAll(pages: WatchedPage[]): Promise<void> {
  for (const p of pages.splice(0)) await p.context.close();
}

describe('the playground against a real pybox', () => {
  let pybox: RealPybox;
  let served: Served;
  let browser: Browser;
  const pages: WatchedPage[] = [];
  const open = async (path = '/', viewport?: { width: number; height: number }) => {
    const w = await openPage(browser, `${served.url}${path}`, viewport ? { viewport } : {});
    pages.push(w);
    return w;
  };

  beforeAll(async () => {
    buildPages();
    pybox = await realPybox('runc');
    served = await serveApp(pybox.app);
    browser = await launch();
  });
  afterAll(async () => {
    await closeAll(pages);
    await browser?.close();
    await served?.close();
    await pybox?.dispose();
  });

  it('loads the page with its editor and the server\'s limits, under its policy, with no error', async () => {
    const { page, errors } = await open();
    await ready(page);
    expect(await page.title()).toBe('pybox playground');
    expect(await page.locator('.cm-editor .cm-lineNumbers').isVisible()).toBe(true);
    expect(await page.locator('.cm-content .tok-keyword, .cm-content span').count()).toBeGreaterThan(0);
    const max = pybox.config.limits.max;
    expect(await page.locator('#timeout').getAttribute('max')).toBe(String(Math.floor(max.timeoutMs / 1000)));
    expect(await page.locator('#memory').getAttribute('max')).toBe(String(max.memoryMb));
    // Every control has a label a screen reader reads.
    for (const id of ['api-key', 'stdin', 'files', 'timeout', 'memory', 'mode-run', 'mode-session']) {
      expect(await page.locator(`label[for="${id}"], label:has(#${id})`).count(), id).toBeGreaterThan(0);
    }
    expect(errors).toEqual([]);
    await closeAll(pages);
  });

  it('runs code with stdin and an input file, shows stdout and stderr apart, the status, the feedback and the files it wrote', async () => {
    const { page, errors } = await open();
    await ready(page);
    await setCode(
      page,
      'import sys\nname = input()\nprint(f"hello, {name}")\nfor i in range(3):\n    print(i, i * i)\nprint("careful", file=sys.stderr)\n' +
        'total = sum(int(x) for x in open("numbers.txt").read().split())\nopen("out/total.txt", "w").write(str(total))\nprint("total", total)\n',
    );
    await page.locator('#stdin').fill('Ada');
    await page.locator('#files').setInputFiles({ name: 'numbers.txt', mimeType: 'text/plain', buffer: Buffer.from('1 2 3 36\n') });
    expect(await page.locator('#file-list').innerText()).toContain('numbers.txt');
    await runCode(page);
    expect(await page.locator('#status').innerText()).toMatch(/^Completed · \d+(\.\d+)? (ms|s) · exit 0 · runc$/);
    expect(await page.locator('#status').getAttribute('data-tone')).toBe('ok');
    // Streamed, stdout may come in more than one piece around stderr's (two pipes: their order is the
    // order the chunks arrived in); each stream's text is whole and told apart.
    expect((await page.locator('.out-stdout').allInnerTexts()).join('')).toBe('hello, Ada\n0 0\n1 1\n2 4\ntotal 42\n');
    expect(await page.locator('.out-stderr').allInnerTexts()).toEqual(['careful\n']);
    const link = page.locator('#download-list a');
    expect(await link.innerText()).toBe('total.txt');
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    expect(download.suggestedFilename()).toBe('total.txt');
    await page.locator('#feedback-box summary').click();
    expect(await page.locator('#feedback').innerText()).not.toBe('');
    await screenshot(page, 'playground');
    expect(errors).toEqual([]);
    await closeAll(pages);
  });

  it('runs within the time limit chosen on the page, from the keyboard anywhere on it', async () => {
    const { page, errors } = await open();
    await ready(page);
    await setCode(page, 'while True:\n    pass\n');
    await page.locator('#timeout').fill('1');
    // Ctrl/Cmd+Enter from another field than the editor runs too.
    await page.locator('#stdin').focus();
    await page.keyboard.press('ControlOrMeta+Enter');
    await page.locator('#status:not([data-tone="busy"])').waitFor({ timeout: 60_000 });
    expect(await page.locator('#status').innerText()).toMatch(/^Timed out/);
    await page.locator('#timeout').fill('100000');
    await page.locator('#run').click();
    expect(await page.locator('#status').innerText()).toMatch(/^The time limit must be a whole number from 1 to \d+/);
    expect(errors).toEqual([]);
    await closeAll(pages);
  });

  it('marks a syntax error at its line in the editor', async () => {
    const { page, errors } = await open();
    await ready(page);
    await setCode(page, 'a = 1\nb = = 2\nc = 3\n');
    await runCode(page);
    expect(await page.locator('#status').getAttribute('data-tone')).toBe('bad');
    expect(await page.locator('.out-stderr').innerText()).toContain('SyntaxError');
    expect(await page.locator('.cm-line.cm-pybox-error-line').allInnerTexts()).toEqual(['b = = 2']);
    await screenshot(page, 'syntax-error');
    // A run-time error is marked at the line that raised, and the next run clears the mark.
    await setCode(page, 'x = 1\ny = 0\nprint(x / y)\n');
    await runCode(page);
    expect(await page.locator('.cm-line.cm-pybox-error-line').allInnerTexts()).toEqual(['print(x / y)']);
    await setCode(page, 'print("fine")\n');
    await runCode(page);
    expect(await page.locator('.cm-line.cm-pybox-error-line').count()).toBe(0);
    expect(errors).toEqual([]);
    await closeAll(pages);
  });

  it('reopens a past execution from the history in the editor with one click', async () => {
    const { page, errors } = await open();
    await ready(page);
    const first = 'print("from the past")\n';
    await setCode(page, first);
    await runCode(page);
    const id = (await getJson<{ items: Array<{ id: string }> }>(pybox, '/v1/executions?limit=1')).items[0]?.id ?? '';
    await setCode(page, 'print("something else")\n');
    await runCode(page);
    expect(await page.locator('#output').innerText()).toBe('something else\n');

    const item = page.locator(`#history-list button[data-id="${id}"]`);
    await item.waitFor();
    expect(await item.innerText()).toContain('print("from the past")');
    await item.click();
    await expect.poll(() => editorText(page)).toBe(first);
    expect(await page.locator('#output').innerText()).toBe('from the past\n');
    expect(await page.locator('#status').innerText()).toMatch(/^Completed/);
    await screenshot(page, 'history');

    // A run made elsewhere (through the API, not this page) reopens too: the server keeps its code.
    const elsewhere = 'print("made by another client")\n';
    const made = await pybox.app.request('/v1/executions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: elsewhere }) });
    const madeId = ((await made.json()) as { id: string }).id;
    await page.locator('#history-refresh').click();
    const other = page.locator(`#history-list button[data-id="${madeId}"]`);
    await other.waitFor();
    await other.click();
    await expect.poll(() => editorText(page)).toBe(elsewhere);
    expect(await page.locator('#output').innerText()).toBe('made by another client\n');
    expect(errors).toEqual([]);
    await closeAll(pages);
  });

  it('works on a narrow screen: one column, nothing wider than the screen', async () => {
    const { page, errors } = await open('/', { width: 390, height: 844 });
    await ready(page);
    const width = await page.evaluate('document.documentElement.scrollWidth');
    expect(width).toBeLessThanOrEqual(390);
    const editor = await page.locator('.cm-editor').boundingBox();
    const output = await page.locator('#output').boundingBox();
    expect(editor && output && output.y > editor.y + editor.height).toBe(true);
    await setCode(page, 'print("small")\n');
    await page.locator('#run').click();
    await page.locator('#status[data-tone="ok"]').waitFor({ timeout: 60_000 });
    await screenshot(page, 'narrow');
    expect(errors).toEqual([]);
    await closeAll(pages);
  });

  it('shows the API reference at /docs (Swagger UI from the package) with every operation', async () => {
    const { page, errors } = await open('/docs');
    await page.locator('.opblock').first().waitFor({ timeout: 30_000 });
    const doc = await getJson<{ paths: Record<string, Record<string, unknown>> }>(pybox, '/openapi.json');
    const operations = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
    expect(await page.locator('.opblock').count()).toBe(operations);
    await screenshot(page, 'api-reference');
    expect(errors).toEqual([]);
    await closeAll(pages);
  });

  // Needs issue 12's rich outputs (figures in result.outputs) on the server.
  it('shows a matplotlib figure as an image', async () => {
    const { page } = await open();
    await ready(page);
    await setCode(page, 'import matplotlib.pyplot as plt\nplt.plot([1, 3, 2, 4])\nplt.title("pybox")\nplt.show()\n');
    await runCode(page);
    expect(await page.locator('#status').getAttribute('data-tone'), await page.locator('#status').innerText()).toBe('ok');
    const img = page.locator('#results figure img');
    expect(await img.count(), 'no figure on the page: the server returned no image/png in result.outputs (issue 12, rich outputs, not on this server yet?)').toBe(1);
    await expect.poll(() => img.evaluate((el) => (el as unknown as { naturalWidth: number }).naturalWidth)).toBeGreaterThan(100);
    await screenshot(page, 'figure');
    await closeAll(pages);
  });

  // Needs issue 12's sessions (POST /v1/sessions) on the server.
  it('keeps variables in a session across two runs, and loses them on restart', async () => {
    const { page } = await open();
    await ready(page);
    await page.locator('#mode-session').check();
    await setCode(page, 'x = 41\n');
    await runCode(page);
    const status = await page.locator('#status').innerText();
    expect(status, `the first call in a session failed: "${status}" (issue 12, sessions, not on this server yet?)`).toMatch(/^Completed/);
    await setCode(page, 'print(x + 1)\n');
    await runCode(page);
    expect(await page.locator('#output').innerText()).toBe('42\n');
    expect(await page.locator('#session-info').innerText()).toContain('call 2');
    await screenshot(page, 'session');
    await page.locator('#restart').click();
    await page.locator('#session-info', { hasText: 'Restarted' }).waitFor();
    await setCode(page, 'print(x)\n');
    await runCode(page);
    expect(await page.locator('.out-stderr').innerText()).toContain('NameError');
    await page.locator('#mode-run').check();
    // Leaving session mode ends it: none is left open on the server.
    await expect.poll(async () => (await getJson<{ items: Array<{ state: string }> }>(pybox, '/v1/sessions')).items.filter((s) => s.state === 'active').length).toBe(0);
    await closeAll(pages);
  });
});

describe('the playground on a server with API keys', () => {
  let pybox: RealPybox;
  let served: Served;
  let browser: Browser;
  let key: string;
  const pages: WatchedPage[] = [];

  beforeAll(async () => {
    buildPages();
    pybox = await realPybox('runc');
    key = newApiKey();
    await pybox.tenants.createKey({ id: newKeyId(), tenant: 'browser', admin: false, hash: hashApiKey(key), limits: {} });
    served = await serveApp(pybox.app);
    browser = await launch();
  });
  afterAll(async () => {
    await closeAll(pages);
    await browser?.close();
    await served?.close();
    await pybox?.dispose();
  });

  const history = async () => (await getJson<{ items: unknown[] }>(pybox, '/v1/executions', key)).items;

  it('loads without a key, refuses to run with a wrong one, and runs with the right one, which stays in the tab only', async () => {
    const w = await openPage(browser, `${served.url}/`);
    pages.push(w);
    const { page } = w;
    await page.locator('body[data-ready="true"]').waitFor();
    await page.locator('#banner', { hasText: 'needs an API key' }).waitFor();

    await page.locator('#api-key').fill('pbx_wrong-key-of-the-right-length-000000000000');
    await page.locator('#api-key').press('Enter');
    await setCode(page, 'print("should not run")\n');
    await runCode(page);
    expect(await page.locator('#status').innerText()).toContain('The API key was not accepted');
    expect(await page.locator('#status').getAttribute('data-tone')).toBe('bad');
    expect(await page.locator('#output').innerText()).toBe('');
    expect(await history()).toEqual([]);
    await screenshot(page, 'wrong-key');

    await page.locator('#api-key').fill(key);
    await page.locator('#api-key').press('Enter');
    await page.locator('body[data-limits="loaded"]').waitFor({ timeout: 60_000 });
    await setCode(page, 'print("with a key")\n');
    await runCode(page);
    expect(await page.locator('#output').innerText()).toBe('with a key\n');
    expect(await history()).toHaveLength(1);
    // In sessionStorage, never in the URL or localStorage.
    expect(page.url()).not.toContain(key);
    expect(await page.evaluate('JSON.stringify(localStorage)')).not.toContain(key);
    expect(await page.evaluate("sessionStorage.getItem('pybox.apiKey')")).toBe(key);

    // The reference is shown to key holders: with the tab's key it renders.
    await page.goto(`${served.url}/docs`);
    await page.locator('.opblock').first().waitFor({ timeout: 30_000 });
  });

  it('the reference asks for a key in a tab without one', async () => {
    const w = await openPage(browser, `${served.url}/docs`);
    pages.push(w);
    await w.page.locator('#banner', { hasText: 'enter an API key' }).waitFor();
    expect(await w.page.locator('.opblock').count()).toBe(0);
  });
});
