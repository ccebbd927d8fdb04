// Several devices per account in the browser. A browser links as a second device of an
// account the Python CLI created (the CLI approves the link code the page shows), gets the
// history, sees Bob's messages and its other device's sends; a revoked device gets nothing
// more. Then one browser links another through the Devices pane (paste the code, confirm,
// pick the history size), and removes it again from there.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
  PASSWORD,
  assertFitsWidth,
  assertQrMatchesPython,
  assertTextOnly,
  cli,
  cliReceive,
  cspViolations,
  djangoShell,
  liveSuite,
  openChat,
  readQr,
  screenshot,
  sendText,
  signUp,
  transcript,
  uniqueName,
  waitForIncoming,
  waitForOutgoing,
  waitReady,
} from './helpers.mjs';

/**
 * Show a link code on the log-in page; resolves to its text and fingerprint.
 * @param {import('playwright-core').Page} page
 * @param {string} deviceName
 */
async function showLinkCode(page, deviceName) {
  await page.goto('/login');
  await page.waitForSelector('#app[data-ready="true"]');
  await page.fill('#link-device-name', deviceName);
  await page.click('#link-start');
  await page.waitForFunction(() => /** @type {HTMLInputElement} */ (document.getElementById('link-code')).value.startsWith('sealpost-link:'));
  await page.waitForSelector('#link-qr[data-modules]');
  const code = await page.inputValue('#link-code');
  const fingerprint = (await page.textContent('#link-fingerprint')) ?? '';
  return { code, fingerprint };
}

/**
 * A newly linked browser lands on the chat page, says it imported the 2 earlier messages,
 * and opens the conversation with `peer`.
 * @param {import('playwright-core').Page} page
 * @param {string} peer
 */
async function landLinked(page, peer) {
  await page.waitForURL('**/chat', { timeout: 120_000 });
  await waitReady(page);
  await page.waitForFunction(() => /Imported 2 earlier messages/.test(document.getElementById('app-notice')?.textContent ?? ''), null, {
    timeout: 60_000,
  });
  await openChat(page, peer);
}

/**
 * Read the QR code off the link code's canvas, module by module, and check (with segno,
 * the Python client's QR library) that it is the code of `text`.
 * @param {import('playwright-core').Page} page
 * @param {string} text
 */
async function assertQrOf(page, text) {
  const qr = await readQr(page, '#link-qr');
  assert.equal(qr.payload_hex, Buffer.from(text).toString('hex'), 'the QR code holds the link code');
  await assertQrMatchesPython(qr);
}

describe('several devices of one account', () => {
  const live = liveSuite({ homes: 'devices' });
  const { server } = live;
  const aliceHome = live.home('alice');
  const bobHome = live.home('bob');
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');

  before(async () => {
    await cli(aliceHome, server.url, 'register', alice, '--password', PASSWORD);
    await cli(bobHome, server.url, 'register', bob, '--password', PASSWORD);
    // Some history on the CLI device before the browser joins.
    await cli(aliceHome, server.url, 'send', bob, 'history: from alice’s CLI');
    await cliReceive(bobHome, server.url, 2);
    await cli(bobHome, server.url, 'send', alice, 'history: bob answers <b>bold?</b>');
    await cliReceive(aliceHome, server.url, 2);
  });

  test('a browser links as a second device of a CLI account and gets the history', async () => {
    const phone = await live.newPerson();
    const { code, fingerprint } = await showLinkCode(phone.page, 'Browser phone');
    assert.match(fingerprint, /^[0-9a-f]{4}( [0-9a-f]{4}){3}$/);
    await assertQrOf(phone.page, code);
    await phone.page.waitForFunction(() => /left$/.test(document.getElementById('link-status')?.textContent ?? ''));
    await assertFitsWidth(phone.page);
    await screenshot(phone.page, 'linking-qr');

    const approved = await cli(aliceHome, server.url, 'approve-link', code, '--yes', '--history-bytes', '100000');
    assert.ok(approved.includes(`fingerprint: ${fingerprint}`), approved);
    assert.match(approved, /linked device 2/);
    assert.match(approved, /sent 2 messages of history/);

    await landLinked(phone.page, bob);
    assert.deepEqual(await transcript(phone.page), ['out: history: from alice’s CLI', 'in: history: bob answers <b>bold?</b>']);
    await assertTextOnly(phone.page);

    // Bob's message reaches both of alice's devices.
    await cli(bobHome, server.url, 'send', alice, 'to both of your devices');
    await waitForIncoming(phone.page, 'to both of your devices');
    let events = await cliReceive(aliceHome, server.url, 3);
    assert.ok(events.some((e) => e.type === 'message' && e.text === 'to both of your devices'), JSON.stringify(events));

    // What the browser sends shows up on the CLI device as sent by alice (a SENT transcript).
    await sendText(phone.page, 'sent from the browser');
    events = await cliReceive(aliceHome, server.url, 3);
    const sent = events.find((e) => e.type === 'sent');
    assert.deepEqual([sent?.to, sent?.text, sent?.device], [bob, 'sent from the browser', 2], JSON.stringify(events));
    const atBob = await cliReceive(bobHome, server.url, 3);
    assert.ok(atBob.some((e) => e.type === 'message' && e.text === 'sent from the browser' && e.device === 2), JSON.stringify(atBob));

    // ... and what the CLI sends shows up in the browser as sent by alice.
    await cli(aliceHome, server.url, 'send', bob, 'sent from the CLI');
    await waitForOutgoing(phone.page, 'sent from the CLI');

    // The Devices pane lists both, this browser marked.
    await phone.page.click('#chat-back');
    await phone.page.click('#open-devices');
    await phone.page.waitForSelector('#devices li[data-device-id="2"][data-current]');
    const names = await phone.page.$$eval('#devices .device-name', (nodes) => nodes.map((n) => n.textContent));
    assert.deepEqual(names, ['Python client', 'Browser phone']);
    await assertFitsWidth(phone.page);
    await screenshot(phone.page, 'devices-panel');

    // Revoked from the CLI device: the browser is cut off and gets nothing more.
    await cli(aliceHome, server.url, 'revoke', '2', '--yes');
    await phone.page.waitForSelector('#conn[data-state="offline"]', { timeout: 60_000 });
    const before = await phone.page.locator('#messages li').count();
    await cli(bobHome, server.url, 'send', alice, 'after the revocation');
    events = await cliReceive(aliceHome, server.url, 3);
    assert.ok(events.some((e) => e.type === 'message' && e.text === 'after the revocation'), JSON.stringify(events));
    await phone.page.waitForTimeout(2000);
    await openChat(phone.page, bob);
    assert.ok(!(await transcript(phone.page)).includes('in: after the revocation'));
    assert.ok((await phone.page.locator('#messages li').count()) >= before);
    assert.deepEqual(await cspViolations(phone.page), []);
    await phone.context.close();
  });

  test('one browser links another from the Devices pane, then removes it', async () => {
    const laptop = await live.newPerson();
    const tablet = await live.newPerson();
    const carol = uniqueName('carol');
    await signUp(laptop.page, carol);
    await openChat(laptop.page, bob);
    await sendText(laptop.page, 'carol’s first message');
    await cliReceive(bobHome, server.url, 2);
    await cli(bobHome, server.url, 'send', carol, 'bob replies to carol');
    await waitForIncoming(laptop.page, 'bob replies to carol');

    const { code, fingerprint } = await showLinkCode(tablet.page, 'Tablet');
    await laptop.page.evaluate(() => {
      location.hash = 'devices';
    });
    await laptop.page.waitForSelector('#main[data-view="devices"]');
    await laptop.page.waitForSelector('#devices li[data-device-id="1"][data-current]');

    // A code that does not read is refused with a plain explanation.
    await laptop.page.fill('#link-new-code', 'sealpost-link:garbage!');
    await laptop.page.click('#link-new-submit');
    await laptop.page.waitForFunction(() => /does not read as a Sealpost link code/.test(document.getElementById('link-new-error')?.textContent ?? ''));

    await laptop.page.fill('#link-new-code', code);
    await laptop.page.check('input[name="history"][value="1000000"]');
    await laptop.page.click('#link-new-submit');
    await laptop.page.waitForSelector('#confirm-modal:not([hidden])');
    assert.equal(await laptop.page.textContent('#confirm-fingerprint'), fingerprint, 'both devices show the same fingerprint');
    assert.match((await laptop.page.textContent('#confirm-body')) ?? '', /up to 1 MB of your recent messages/);
    await screenshot(laptop.page, 'link-confirm');
    await laptop.page.click('#confirm-yes');
    await laptop.page.waitForFunction(
      () => /^Linked device 2 and sent it 2 recent messages\.$/.test(document.getElementById('link-new-status')?.textContent ?? ''),
      null,
      { timeout: 120_000 },
    );
    await laptop.page.waitForSelector('#devices li[data-device-id="2"]');

    await landLinked(tablet.page, bob);
    assert.deepEqual(await transcript(tablet.page), ['out: carol’s first message', 'in: bob replies to carol']);

    // Both browsers get bob's message; what one sends shows on the other.
    await cli(bobHome, server.url, 'send', carol, 'to the laptop and the tablet');
    await waitForIncoming(tablet.page, 'to the laptop and the tablet');
    await openChat(laptop.page, bob);
    await waitForIncoming(laptop.page, 'to the laptop and the tablet');
    await sendText(tablet.page, 'typed on the tablet');
    await waitForOutgoing(laptop.page, 'typed on the tablet');

    // Removed from the laptop's Devices pane: the tablet gets nothing more.
    await laptop.page.evaluate(() => {
      location.hash = 'devices';
    });
    await laptop.page.click('#devices li[data-device-id="2"] button[data-action="revoke"]');
    await laptop.page.waitForSelector('#confirm-modal:not([hidden])');
    await laptop.page.click('#confirm-yes');
    await laptop.page.waitForFunction(() => !document.querySelector('#devices li[data-device-id="2"]'));
    await tablet.page.waitForSelector('#conn[data-state="offline"]', { timeout: 60_000 });
    await cli(bobHome, server.url, 'send', carol, 'only the laptop now');
    await openChat(laptop.page, bob);
    await waitForIncoming(laptop.page, 'only the laptop now');
    await tablet.page.waitForTimeout(1500);
    assert.ok(!(await transcript(tablet.page)).includes('in: only the laptop now'));
    assert.deepEqual(await cspViolations(laptop.page), []);
    assert.deepEqual(await cspViolations(tablet.page), []);
  });

  test('a device inserted straight into the database is refused, and the conversation warns', async () => {
    const dora = await live.newPerson();
    await signUp(dora.page, uniqueName('dora'));
    await openChat(dora.page, bob);
    await sendText(dora.page, 'before the inserted device');
    assert.equal(await dora.page.isHidden('#device-warning'), true);
    // What a server (or whoever holds its database) could do: a device of bob's account
    // that bob's account key never certified nor listed.
    await djangoShell(
      server,
      [
        'from keys.models import Device',
        'from protocol.keys import AccountIdentity, DeviceKeys',
        `d = Device.objects.get(account__user__username=${JSON.stringify(bob)}, device_id=1)`,
        'k = DeviceKeys.create(AccountIdentity.generate(), 9)',
        'Device.objects.create(account=d.account, device_id=9, registration_id=k.certificate.registration_id, ' +
          'certificate=k.certificate.encode(), identity_key=k.certificate.identity_key, name="inserted", ' +
          'token_hash="0" * 64, signed_prekey=d.signed_prekey, last_resort_kem_prekey=d.last_resort_kem_prekey)',
      ].join('; '),
    );
    await sendText(dora.page, 'past the inserted device');
    await dora.page.waitForSelector('#device-warning:not([hidden])');
    assert.equal(await dora.page.getAttribute('#device-warning', 'data-devices'), '9');
    assert.match((await dora.page.textContent('#device-warning')) ?? '', /not certified by .*account key/);
    await screenshot(dora.page, 'unknown-device-warning');
    const events = await cliReceive(bobHome, server.url, 3);
    assert.ok(events.some((e) => e.type === 'message' && e.text === 'past the inserted device'), JSON.stringify(events));
    // The warning is still there after a reload (the refusal is stored with the list).
    await dora.page.reload();
    await waitReady(dora.page);
    await dora.page.waitForSelector('#device-warning:not([hidden])');
    assert.deepEqual(await cspViolations(dora.page), []);
  });
});
