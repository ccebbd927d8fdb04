// A contact's identity key changes (their account is deleted at the server and the name
// registered again with new keys): the browser stops and shows a blocking warning, and
// sending waits until the person has looked at the new safety number and confirmed.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  PASSWORD,
  cli,
  cliReceive,
  cspViolations,
  djangoShell,
  liveSuite,
  openChat,
  screenshot,
  sendText,
  signUp,
  uniqueName,
  waitForIncoming,
} from './helpers.mjs';

describe('identity change', () => {
  const live = liveSuite({ homes: 'homes' });
  const { server } = live;
  const web = live.person();
  const webName = uniqueName('frank');
  const pyName = uniqueName('gina');

  test('the warning appears, blocks sending, and lifts once the new number is accepted', async () => {
    const first = live.home('first');
    const second = live.home('second');
    await signUp(web.page, webName);
    await cli(first, server.url, 'register', pyName, '--password', PASSWORD);
    await cli(first, server.url, 'send', webName, 'hello from the original key');
    await openChat(web.page, pyName);
    await waitForIncoming(web.page, 'hello from the original key');
    await web.page.click('#open-safety');
    await web.page.waitForSelector('#safety .digits');
    const oldDigits = await web.page.$eval('#safety', (node) => node.dataset.digits ?? '');
    assert.match(oldDigits, /^\d{60}$/);
    await web.page.click('#safety-back');

    // The account goes, and the same name comes back with a fresh home: new keys.
    await djangoShell(
      server,
      `from django.contrib.auth.models import User; User.objects.filter(username=${JSON.stringify(pyName)}).delete()`,
    );
    await cli(second, server.url, 'register', pyName, '--password', PASSWORD);
    await cli(second, server.url, 'send', webName, 'hello from the new key');

    const modal = web.page.locator('#identity-modal');
    await modal.waitFor({ state: 'visible', timeout: 60_000 });
    assert.equal(await web.page.textContent('#identity-modal .identity-peer'), pyName);
    // Blocking: the page behind it takes no input.
    assert.equal(await web.page.$eval('#main', (node) => node.inert), true);
    await assert.rejects(web.page.fill('#text', 'sneaking past', { timeout: 1_000 }));
    await screenshot(web.page, 'identity-warning');

    // Sending is refused by the client too, with the reason shown, until accepted.
    await web.page.click('#identity-view');
    await web.page.waitForSelector('#identity-safety .digits');
    const newDigits = await web.page.$eval('#identity-safety', (node) => node.dataset.digits ?? '');
    assert.match(newDigits, /^\d{60}$/);
    assert.notEqual(newDigits, oldDigits);
    await screenshot(web.page, 'identity-warning-number');
    await web.page.click('#identity-accept');
    await modal.waitFor({ state: 'hidden' });
    assert.equal(await web.page.$eval('#main', (node) => node.inert), false);

    // The message from the new key is shown (as text) once accepted or right away,
    // depending on the client; either way the conversation continues.
    await waitForIncoming(web.page, 'hello from the new key');
    await sendText(web.page, 'Welcome back: I checked the new number.');
    const events = await cliReceive(second, server.url, 3);
    assert.ok(
      events.some((e) => e.type === 'message' && e.text === 'Welcome back: I checked the new number.'),
      JSON.stringify(events),
    );
    assert.deepEqual(await cspViolations(web.page), []);
  });

  test('a send to a changed contact is refused with the reason, never sent silently', async () => {
    const third = live.home('third');
    await djangoShell(
      server,
      `from django.contrib.auth.models import User; User.objects.filter(username=${JSON.stringify(pyName)}).delete()`,
    );
    await cli(third, server.url, 'register', pyName, '--password', PASSWORD);
    // This time the browser is the one to send first: its client notices the new key when
    // it fetches the contact's devices.
    await web.page.fill('#text', 'Are you still you?');
    await web.page.click('#send');
    await web.page.locator('#identity-modal').waitFor({ state: 'visible', timeout: 60_000 });
    // What was typed is kept, and nothing reached the new key.
    const events = await cliReceive(third, server.url, 2);
    assert.deepEqual(
      events.filter((e) => e.type === 'message'),
      [],
    );
    await web.page.click('#identity-view');
    await web.page.click('#identity-verify');
    await web.page.locator('#identity-modal').waitFor({ state: 'hidden' });
    assert.match(await web.page.inputValue('#text'), /Are you still you\?|^$/);
  });
});
