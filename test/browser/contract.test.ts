// The playground against a stand-in API that speaks issue 12's contract (stub-api.ts): output shown
// as it streams, before the result; the result's figure as an image, its HTML value in a frame that
// runs nothing, its files to download; a session across two runs, restarted with its control.
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveApp, type Served } from '../support/serve.ts';
import { buildPages, launch, openPage, runCode, screenshot, setCode } from './browser.ts';
import { stubApi, type StubApi } from './stub-api.ts';

describe('the playground with a streaming, session-keeping API (stand-in)', () => {
  let stub: StubApi;
  let served: Served;
  let browser: Browser;

  beforeAll(async () => {
    buildPages();
    stub = stubApi();
    served = await serveApp(stub.app);
    browser = await launch();
  });
  afterAll(async () => {
    await browser?.close();
    await served?.close();
  });

  it('shows output as it streams, then the figure, the value in a frame that runs nothing, and the files', async () => {
    const { page, context, errors } = await openPage(browser, `${served.url}/`);
    try {
      await page.locator('body[data-limits="loaded"]').waitFor();
      expect(await page.locator('#timeout').getAttribute('max')).toBe('60');
      expect(await page.locator('#memory').getAttribute('max')).toBe('1024');
      await setCode(page, 'print("step 1")\n');
      await page.locator('#run').click();
      // The first chunk is on the page while the run still runs (the stand-in holds the rest).
      await page.locator('.out-stdout', { hasText: 'step 1' }).waitFor();
      expect(await page.locator('#status').getAttribute('data-tone')).toBe('busy');
      expect(await page.locator('#stop').isVisible()).toBe(true);
      stub.release();
      await page.locator('#status[data-tone="ok"]').waitFor();
      expect(await page.locator('#output').innerText()).toBe('step 1\na warning\nstep 2\n');
      expect(await page.locator('.out-stderr').innerText()).toBe('a warning\n');

      const img = page.locator('#results figure img');
      await img.waitFor();
      await expect.poll(() => img.evaluate((el) => (el as unknown as { naturalWidth: number }).naturalWidth)).toBe(320);
      const frame = page.locator('#results iframe');
      expect(await frame.getAttribute('sandbox')).toBe('');
      expect(await page.frameLocator('#results iframe').locator('td').innerText()).toBe('cell-1');
      expect(await page.title()).toBe('pybox playground');

      const link = page.locator('#download-list a');
      expect(await link.innerText()).toBe('out/report.txt');
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      expect(download.suggestedFilename()).toBe('report.txt');
      expect(await page.locator('#feedback').textContent()).toContain('It produced 1 figure.');
      await screenshot(page, 'contract-streamed-result');
      // The one complaint is the browser refusing the value's own script: nothing else was refused.
      expect(errors).toEqual([expect.stringMatching(/^Blocked script execution in 'about:srcdoc' because the document's frame is sandboxed/)]);
    } finally {
      await context.close();
    }
  });

  it('keeps a session across two runs, and Restart ends it so the next run gets a new one', async () => {
    const { page, context, errors } = await openPage(browser, `${served.url}/`);
    try {
      await page.locator('body[data-ready="true"]').waitFor();
      await page.locator('#mode-session').check();
      expect(await page.locator('#restart').isVisible()).toBe(true);
      expect(await page.locator('#restart').isDisabled()).toBe(true);
      await setCode(page, 'x = 41\n');
      await runCode(page);
      const first = stub.opened.at(-1) ?? '';
      expect(await page.locator('#output').innerText()).toBe(`call 1 of ${first}\n`);
      await setCode(page, 'print(x + 1)\n');
      await runCode(page);
      expect(await page.locator('#output').innerText()).toBe(`call 2 of ${first}\n`);
      expect(await page.locator('#session-info').innerText()).toContain('call 2');
      expect(await page.locator('#results .value-text').innerText()).toBe('13 characters');
      await screenshot(page, 'contract-session');

      await page.locator('#restart').click();
      await page.locator('#session-info', { hasText: 'Restarted' }).waitFor();
      expect(stub.deleted).toEqual([first]);
      await runCode(page);
      const second = stub.opened.at(-1) ?? '';
      expect(second).not.toBe(first);
      expect(await page.locator('#output').innerText()).toBe(`call 1 of ${second}\n`);

      // Leaving session mode ends the session too.
      await page.locator('#mode-run').check();
      await expect.poll(() => stub.deleted).toEqual([first, second]);
      expect(errors).toEqual([]);
    } finally {
      await context.close();
    }
  });
});
