// The web client and the Python reference client talk to each other both ways, through
// the same server: the two implementations of the protocol agree on the wire.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  assertTextOnly,
  cli,
  cliReceive,
  cspViolations,
  liveSuite,
  openChat,
  sendText,
  waitForIncoming,
} from './helpers.mjs';

describe('browser and Python client', () => {
  const live = liveSuite({ homes: 'homes', web: 'web', py: 'py' });
  const { server, web, webName, pyName, pyHome: home } = live;

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
