// Disappearing messages between the web client and the Python reference client: either
// side sets the conversation's timer (shown as a notice, and in the header), messages then
// go as EXPIRING with SEND EXPIRES, show their time left, and vanish from the page and
// from IndexedDB when it is up (the sender's clock from sending, the receiver's from
// showing).

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
  cli,
  cliReceive,
  cspViolations,
  djangoShell,
  liveSuite,
  openChat,
  screenshot,
  sendText,
  waitForIncoming,
} from './helpers.mjs';

/** The rows of the page's IndexedDB `messages` store with a disappearing timer. */
function storedDisappearing(page) {
  return page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const opening = indexedDB.open('sealpost');
        opening.onerror = () => reject(opening.error);
        opening.onsuccess = () => {
          const db = opening.result;
          const all = db.transaction(['messages']).objectStore('messages').getAll();
          all.onsuccess = () => {
            db.close();
            resolve(all.result.filter((row) => row.timerSeconds && row.kind !== 'timer').map((row) => ({ id: row.id, direction: row.direction })));
          };
          all.onerror = () => reject(all.error);
        };
      }),
  );
}

describe('disappearing messages, browser and Python client', () => {
  const live = liveSuite({ homes: 'disappearing', web: 'web', py: 'py' });
  const { server, web, webName, pyName, pyHome: home } = live;

  before(async () => {
    await openChat(web.page, pyName);
    await sendText(web.page, 'hello before the timer');
    await cliReceive(home, server.url, 2);
  });

  test('the peer sets the timer: shown in the conversation and the header', async () => {
    await cli(home, server.url, 'timer', webName, '5m');
    await web.page.waitForFunction(
      (name) => [...document.querySelectorAll('#messages li.notice-line')].some((n) => n.textContent === `${name} set disappearing messages to 5 minutes`),
      pyName,
      { timeout: 30_000 },
    );
    assert.equal(await web.page.inputValue('#timer-select'), '300');
    // A text from Python under it: it shows its time left, counting from now (shown).
    await cli(home, server.url, 'send', webName, 'this one disappears in 5 minutes');
    await waitForIncoming(web.page, 'this one disappears in 5 minutes');
    const item = web.page.locator('#messages li.in', { hasText: 'this one disappears in 5 minutes' });
    await item.locator('.expiry[data-expires]').waitFor({ timeout: 30_000 });
    assert.match((await item.locator('.expiry').textContent()) ?? '', /^◷ [45]:\d\d$/);
  });

  test('a message sent under a 30 s timer vanishes from the page and from IndexedDB', async () => {
    await web.page.selectOption('#timer-select', '30');
    await web.page.waitForFunction(
      () => [...document.querySelectorAll('#messages li.notice-line')].some((n) => n.textContent === 'You set disappearing messages to 30 seconds'),
    );
    const sent = await sendText(web.page, 'gone in 30 seconds');
    const sentAt = Date.now();
    assert.match((await sent.locator('.expiry').textContent()) ?? '', /^◷ 0:[23]\d$/);
    // The relay got it with EXPIRES: its copy, waiting for the Python client, is kept at
    // most 30 s (the TIMER and receipts before it, the retention maximum).
    const queued = await djangoShell(
      server,
      `from django.utils import timezone; from messaging.models import Envelope
for e in Envelope.objects.filter(device__account__user__username='${pyName}').order_by('seq'): print('TTL', round((e.expires_at - timezone.now()).total_seconds()))`,
    );
    const ttls = [...queued.matchAll(/TTL (-?\d+)/g)].map((match) => Number(match[1]));
    assert.equal(ttls.filter((ttl) => ttl > 0 && ttl <= 30).length, 1, queued);
    const events = await cliReceive(home, server.url, 2);
    assert.deepEqual(
      events.filter((e) => e.type === 'timer').map((e) => [e.from, e.timer_seconds]),
      [[webName, 30]],
    );
    const message = events.find((e) => e.type === 'message' && e.text === 'gone in 30 seconds');
    assert.ok(message?.expires_at, JSON.stringify(events));

    // Python answers under the same timer; shown at once here, so its clock starts now.
    await cli(home, server.url, 'send', webName, 'and my answer too');
    await waitForIncoming(web.page, 'and my answer too');
    await screenshot(web.page, 'disappearing-timer');
    assert.equal((await storedDisappearing(web.page)).length >= 2, true);

    await web.page.waitForFunction(
      () => ![...document.querySelectorAll('#messages li .text')].some((n) => n.textContent === 'gone in 30 seconds'),
      null,
      { timeout: 45_000, polling: 250 },
    );
    const vanishedAfter = Date.now() - sentAt;
    assert.ok(vanishedAfter >= 28_000 && vanishedAfter <= 40_000, `vanished after ${vanishedAfter} ms`);
    await web.page.waitForFunction(
      () => ![...document.querySelectorAll('#messages li .text')].some((n) => n.textContent === 'and my answer too'),
      null,
      { timeout: 45_000, polling: 250 },
    );
    // Gone from the store too; the earlier message (5 minutes) is still there.
    const stored = await storedDisappearing(web.page);
    assert.deepEqual(stored.map((row) => row.direction), ['in']);
    await screenshot(web.page, 'disappearing-gone');
    assert.match(
      (await web.page.textContent('#messages')) ?? '',
      /hello before the timer/,
    );

    await web.page.selectOption('#timer-select', '0');
    await web.page.waitForFunction(() =>
      [...document.querySelectorAll('#messages li.notice-line')].some((n) => n.textContent === 'You turned off disappearing messages'),
    );
    assert.deepEqual(await cspViolations(web.page), []);
  });
});
