// The web client and the Python reference client talk to each other both ways, through
// the same server: the two implementations of the protocol agree on the wire.

import assert from 'node:assert/strict';
import path from 'node:path';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  PASSWORD,
  assertTextOnly,
  checkPrerequisites,
  cli,
  cliReceive,
  cspViolations,
  launchBrowser,
  newPerson,
  openChat,
  sendText,
  signUp,
  startServer,
  tempDir,
  uniqueName,
  waitForIncoming,
} from './helpers.mjs';

describe('browser and Python client', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {Awaited<ReturnType<typeof newPerson>>} */
  let web;
  const homes = tempDir('homes');
  const home = path.join(homes, 'py');
  const webName = uniqueName('web');
  const pyName = uniqueName('py');

  before(async () => {
    checkPrerequisites();
    server = await startServer();
    browser = await launchBrowser();
    web = await newPerson(browser, server.url);
    await cli(home, server.url, 'register', pyName, '--password', PASSWORD);
    await signUp(web.page, webName);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    rmSync(homes, { recursive: true, force: true });
  });

  test('browser to Python', async () => {
    await openChat(web.page, pyName);
    await sendText(web.page, 'From the browser to Python ✓');
    await sendText(web.page, 'A second one, in order.');
    const events = await cliReceive(home, server.url, 3);
    const texts = events.filter((e) => e.type === 'message').map((e) => [e.from, e.text]);
    assert.deepEqual(texts, [
      [webName, 'From the browser to Python ✓'],
      [webName, 'A second one, in order.'],
    ]);
    // The Python client's delivery receipt moves the browser's tick on.
    await web.page.waitForFunction(
      () =>
        [...document.querySelectorAll('#messages li.out')].every((node) =>
          ['delivered', 'read'].includes(node.getAttribute('data-status') ?? ''),
        ),
      null,
      { timeout: 60_000 },
    );
  });

  test('Python to browser, live', async () => {
    await cli(home, server.url, 'send', webName, 'From Python to the browser: <i>not italic</i>');
    await waitForIncoming(web.page, 'From Python to the browser: <i>not italic</i>');
    await cli(home, server.url, 'send', webName, 'and one more');
    await waitForIncoming(web.page, 'and one more');
    await assertTextOnly(web.page);
    assert.equal(await web.page.locator('#messages i').count(), 0);
  });

  test('and back again after the exchange', async () => {
    await sendText(web.page, 'Reply from the browser');
    const events = await cliReceive(home, server.url, 3);
    assert.ok(
      events.some((e) => e.type === 'message' && e.text === 'Reply from the browser'),
      JSON.stringify(events),
    );
    assert.deepEqual(await cspViolations(web.page), []);
  });
});
