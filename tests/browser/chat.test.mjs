// Two people in two browsers (two contexts: separate IndexedDB, separate cookies) at phone
// size: they sign up, chat both ways with live delivery and status ticks, see unread
// counts, compare safety numbers, reload and carry on. Text that looks like HTML stays text.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  PASSWORD,
  assertFitsWidth,
  assertQrMatchesPython,
  assertTextOnly,
  cspViolations,
  liveSuite,
  openChat,
  readQr,
  screenshot,
  sendText,
  signUp,
  transcript,
  uniqueName,
  waitForIncoming,
  waitReady,
} from './helpers.mjs';

describe('two browsers chat', () => {
  const live = liveSuite();
  const alice = live.person();
  const bob = live.person();
  const aliceName = uniqueName('alice');
  const bobName = uniqueName('bob');

  test('both sign up: keys are made in the browser, the page lands on the chat list', async () => {
    await signUp(alice.page, aliceName, undefined, { watchProgress: true });
    await signUp(bob.page, bobName);
    assert.equal(await alice.page.textContent('#me'), aliceName);
    assert.equal(await bob.page.textContent('#me'), bobName);
    // The indicator is on screen and leads to the explanation.
    assert.ok(await alice.page.isVisible('#e2ee'));
    assert.equal(await alice.page.getAttribute('#e2ee', 'href'), '/security');
  });

  test('a message goes one way live, with an unread count and a delivered tick', async () => {
    await openChat(alice.page, bobName);
    const first = await sendText(alice.page, 'Hello Bob, this is Alice.');
    // Bob is on his conversation list: the conversation appears with one unread message.
    const badge = bob.page.locator(`#conversations li[data-peer="${aliceName}"] .badge`);
    await badge.waitFor({ state: 'visible', timeout: 60_000 });
    assert.equal(await badge.textContent(), '1');
    await bob.page.click(`#conversations li[data-peer="${aliceName}"] a`);
    await waitForIncoming(bob.page, 'Hello Bob, this is Alice.');
    // Opening the conversation read it: the badge is gone.
    await bob.page.click('#chat-back');
    await bob.page.waitForFunction(
      (peer) => document.querySelector(`#conversations li[data-peer="${peer}"] .badge`)?.hasAttribute('hidden'),
      aliceName,
    );
    // Alice's tick moves on from "sent" once Bob's device has it.
    await alice.page.waitForFunction(
      () => ['delivered', 'read'].includes(document.querySelector('#messages li.out')?.getAttribute('data-status') ?? ''),
      null,
      { timeout: 60_000 },
    );
    assert.match(await first.locator('.tick').getAttribute('aria-label'), /Delivered|Read/);
  });

  test('and the other way, live into the open conversation', async () => {
    await openChat(bob.page, aliceName);
    await sendText(bob.page, 'Hi Alice! Bob here.');
    await waitForIncoming(alice.page, 'Hi Alice! Bob here.');
  });

  test('a message that looks like HTML is shown as text and never runs', async () => {
    const hostile = '<img src=x onerror="window.__pwned=1"><b>bold</b><script>window.__pwned=2</script>';
    await sendText(alice.page, hostile);
    await waitForIncoming(bob.page, hostile);
    for (const page of [alice.page, bob.page]) {
      await assertTextOnly(page);
      assert.equal(await page.locator('#messages img, #messages b, #messages script').count(), 0);
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).__pwned), undefined);
    }
  });

  test('the safety number: the same 60 digits on both sides, and a QR code of it', async () => {
    await alice.page.click('#open-safety');
    await alice.page.waitForSelector('#safety .digits');
    await bob.page.click('#open-safety');
    await bob.page.waitForSelector('#safety .digits');
    const groups = await alice.page.$$eval('#safety .digits .group', (nodes) => nodes.map((n) => n.textContent));
    assert.equal(groups.length, 12);
    for (const group of groups) assert.match(group ?? '', /^\d{5}$/);
    assert.deepEqual(
      await bob.page.$$eval('#safety .digits .group', (nodes) => nodes.map((n) => n.textContent)),
      groups,
    );
    // Read the code off the canvas, module by module, and check it is the code the Python
    // client draws for the same payload.
    await alice.page.waitForSelector('#safety canvas.qr[data-modules]'); // drawn once the encoder has loaded
    const qr = await readQr(alice.page, '#safety canvas.qr');
    assert.match(qr.payload_hex ?? '', /^01[0-9a-f]{128}$/);
    await assertQrMatchesPython(qr);
    await screenshot(alice.page, 'safety-number');

    await alice.page.click('#mark-verified');
    await alice.page.waitForSelector('#safety-state[data-verified="true"]');
    await alice.page.click('#safety-back');
    await bob.page.click('#safety-back');
    await alice.page.waitForSelector('#main[data-view="chat"]');
  });

  test('reload: history and keys survive, and the chat carries on both ways', async () => {
    const aliceBefore = await transcript(alice.page);
    const bobBefore = await transcript(bob.page);
    await alice.page.reload();
    await bob.page.reload();
    await waitReady(alice.page);
    await waitReady(bob.page);
    // The fragment kept each on the open conversation.
    await alice.page.waitForFunction((n) => document.querySelectorAll('#messages li').length >= n, aliceBefore.length);
    await bob.page.waitForFunction((n) => document.querySelectorAll('#messages li').length >= n, bobBefore.length);
    assert.deepEqual(await transcript(alice.page), aliceBefore);
    assert.deepEqual(await transcript(bob.page), bobBefore);

    await sendText(alice.page, 'Still here after a reload.');
    await waitForIncoming(bob.page, 'Still here after a reload.');
    await sendText(bob.page, 'Me too. Ünïcödé ✓ and emoji 🔐 arrive intact.');
    await waitForIncoming(alice.page, 'Me too. Ünïcödé ✓ and emoji 🔐 arrive intact.');
    await screenshot(alice.page, 'chat');
    await screenshot(bob.page, 'chat-other-side');
  });

  test('a message sent while the other is away arrives when they come back', async () => {
    await bob.page.close();
    await sendText(alice.page, 'Sent while you were away.');
    bob.page = await bob.context.newPage();
    await bob.page.goto(`/chat#with=${encodeURIComponent(aliceName)}`);
    await waitReady(bob.page);
    await waitForIncoming(bob.page, 'Sent while you were away.');
  });

  test('the pages fit a 360 x 640 screen, and nothing broke the policy', async () => {
    await alice.page.click('#chat-back');
    await screenshot(alice.page, 'conversation-list');
    for (const person of [alice, bob]) {
      await assertFitsWidth(person.page);
      assert.deepEqual(await cspViolations(person.page), []);
      assert.deepEqual(
        person.problems.filter((text) => /Content Security Policy|uncaught/i.test(text)),
        [],
      );
    }
    // The other pages, in a browser with no account (so none redirects to the chat).
    const stranger = await live.newPerson();
    for (const path of ['/signup', '/login', '/security']) {
      await stranger.page.goto(path);
      await stranger.page.waitForLoadState('networkidle');
      await screenshot(stranger.page, path.slice(1));
      await assertFitsWidth(stranger.page);
      assert.deepEqual(await cspViolations(stranger.page), []);
    }
    await stranger.context.close();
  });

  test('log out and in again: the keys and the history stay in the browser', async () => {
    const page = alice.page;
    await page.evaluate(() => {
      location.hash = '';
    });
    await page.click('#logout');
    await page.waitForURL('**/login');
    // Logged out, the chat page sends the visitor to log in.
    await page.goto('/chat');
    await page.waitForURL('**/login');
    await page.waitForSelector('#app[data-ready="true"]');
    await page.fill('#username', aliceName);
    await page.fill('#password', 'not the password');
    await page.click('#login-submit');
    await page.waitForFunction(() => document.getElementById('form-error')?.textContent?.includes('(unauthorized)'));
    await page.fill('#password', PASSWORD);
    await page.click('#login-submit');
    await page.waitForURL('**/chat');
    await waitReady(page);
    await openChat(page, bobName);
    assert.ok((await transcript(page)).includes('out: Hello Bob, this is Alice.'));

    // Another browser holds no keys for the account: it is told so, in plain words.
    const stranger = await live.newPerson();
    await stranger.page.goto('/login');
    await stranger.page.waitForSelector('#app[data-ready="true"]');
    await stranger.page.fill('#username', aliceName);
    await stranger.page.fill('#password', PASSWORD);
    await stranger.page.click('#login-submit');
    await stranger.page.waitForFunction(() => document.getElementById('form-error')?.textContent?.includes('(not_linked)'));
    assert.match((await stranger.page.textContent('#form-error')) ?? '', /holds no keys for that account/);
    await stranger.context.close();
  });
});
