// What the browser tests share: Chromium from the OS packages (scripts/ensure-chromium.sh) driven
// headless by playwright-core, the web pages built (scripts/build-web.ts, a no-op when current),
// the page's console watched for errors (a policy violation is one), and screenshots.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

const ROOT = join(import.meta.dirname, '..', '..');

/** Screenshots of the main states; a CI job keeps them as artifacts (PYBOX_SCREENSHOTS_DIR moves them). */
export const SCREENSHOTS = process.env.PYBOX_SCREENSHOTS_DIR ?? join(ROOT, 'build', 'screenshots');

export const CHROMIUM = process.env.PYBOX_CHROMIUM ?? '/usr/bin/chromium';

/** Builds the pages when their sources changed, as setup does. */
export function buildPages(): void {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/build-web.ts'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`scripts/build-web.ts failed: ${r.stderr}`);
}

export async function launch(): Promise<Browser> {
  // Chromium refuses to run as root with its sandbox on; that is the one flag added.
  const args = process.getuid?.() === 0 ? ['--no-sandbox'] : [];
  try {
    return await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
  } catch (e) {
    throw new Error(`Chromium (${CHROMIUM}) did not start; scripts/ensure-chromium.sh installs it: ${String(e)}`);
  }
}

export interface WatchedPage {
  page: Page;
  context: BrowserContext;
  /** Console errors and uncaught exceptions so far (CSP violations are console errors). */
  errors: string[];
}

export async function openPage(browser: Browser, url: string, opts: { viewport?: { width: number; height: number } } = {}): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport: opts.viewport ?? { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  await page.goto(url);
  return { page, context, errors };
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Replaces the editor's code as a person pasting it would: select all, then a paste event carrying
 * the text (typing it would meet auto-indent and bracket closing; inserted text would turn runs of
 * spaces into no-break spaces, as contenteditable does).
 */
export async function setCode(page: Page, code: string): Promise<void> {
  await page.locator('.cm-content').click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.press('Delete');
  // A string, not a function: this file is type-checked without the DOM's types.
  await page.evaluate(
    `(() => { const data = new DataTransfer(); data.setData('text/plain', ${JSON.stringify(code)});
      document.querySelector('.cm-content').dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true })); })()`,
  );
}

/** The editor's text, line by line as CodeMirror renders it. */
export async function editorText(page: Page): Promise<string> {
  // An empty line renders as a <br>, which innerText reads as a newline of its own.
  return (await page.locator('.cm-content .cm-line').allInnerTexts()).map((l) => l.replace(/\n$/, '')).join('\n');
}

/** Runs the editor's code with the keyboard and waits until the status is no longer busy. */
export async function runCode(page: Page): Promise<void> {
  await page.locator('.cm-content').click();
  await page.keyboard.press('ControlOrMeta+Enter');
  await page.locator('#status:not([data-tone="busy"])').waitFor({ timeout: 60_000 });
  await page.locator('body[data-running="false"]').waitFor({ timeout: 60_000 });
}
