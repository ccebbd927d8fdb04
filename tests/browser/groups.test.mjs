// A group of a browser and the Python reference client (docs/protocol.md §17.6): the
// sender keys go pairwise both ways, each reads the other's group message, and a group
// made in the browser's "New group" dialog reaches the Python client with its name.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  assertTextOnly,
  cli,
  cliReceive,
  cspViolations,
  liveSuite,
  sendText,
  waitForIncoming,
} from './helpers.mjs';

/**
 * Open a group's conversation and wait for its name in the head.
 * @param {import('playwright-core').Page} page
 * @param {string} id
 * @param {string} name
 */
async function openGroup(page, id, name) {
  await page.evaluate((peer) => {
    location.hash = `with=${encodeURIComponent(peer)}`;
  }, `group:${id}`);
  await page.waitForSelector('#main[data-view="chat"]');
  await page.waitForFunction((wanted) => document.getElementById('peer-name')?.textContent === wanted, name, { timeout: 60_000 });
}

describe('a group of a browser and the Python client', () => {
  const live = liveSuite({ homes: 'homes', web: 'web', py: 'py' });
  const { server, web, webName, pyName, pyHome: home } = live;
  /** @type {string} */
  let group;

  test('Python creates the group; the browser lists it and reads its message', async () => {
    const out = await cli(home, server.url, 'group', 'create', 'Mixed company', webName);
    group = out.trim().split('\n').at(-1) ?? '';
    assert.match(group, /^[0-9a-f]{32}$/);
    await web.page.waitForFunction(
      () => [...document.querySelectorAll('#conversations .peer')].some((n) => n.textContent === 'Mixed company'),
      null,
      { timeout: 60_000 },
    );
    await cli(home, server.url, 'group', 'send', group, 'Hello from Python');
    await openGroup(web.page, group, 'Mixed company');
    await waitForIncoming(web.page, 'Hello from Python');
    const sender = await web.page.$$eval('#messages li.in', (items) => items.map((i) => i.querySelector('.sender')?.textContent));
    assert.ok(sender.includes(pyName), JSON.stringify(sender));
    assert.ok(
      await web.page.locator('#messages li.notice-line', { hasText: `${pyName} created the group “Mixed company”` }).count(),
    );
    await assertTextOnly(web.page);
  });

  test('the browser answers in the group; Python reads it', async () => {
    await sendText(web.page, 'Hello from the browser');
    const events = await cliReceive(home, server.url, 3);
    const got = events.filter((e) => e.type === 'message' && e.group === group).map((e) => [e.from, e.text]);
    assert.deepEqual(got, [[webName, 'Hello from the browser']], JSON.stringify(events));
  });

  test("a group made in the browser's dialog reaches Python with its name", async () => {
    await web.page.click('#chat-back');
    await web.page.click('#new-group');
    await web.page.fill('#group-name', 'Browser made');
    await web.page.fill('#group-members', pyName);
    await web.page.click('#group-create');
    await web.page.waitForFunction(() => document.getElementById('peer-name')?.textContent === 'Browser made', null, { timeout: 60_000 });
    await sendText(web.page, 'first words');
    const events = await cliReceive(home, server.url, 3);
    const update = events.find((e) => e.type === 'group_update' && e.action === 'created');
    assert.ok(update, JSON.stringify(events));
    assert.equal(update.name, 'Browser made');
    assert.ok(events.some((e) => e.type === 'message' && e.group === update.group && e.text === 'first words'), JSON.stringify(events));
    assert.deepEqual(await cspViolations(web.page), []);
  });
});
