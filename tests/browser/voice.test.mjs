// Voice messages: recorded in the browser with MediaRecorder (Chromium's fake microphone,
// a beep), sent with the VOICE flag and its duration, and saved by the Python reference
// client; one from the Python client plays in the browser through an <audio> element.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  CHROMIUM,
  PASSWORD,
  checkPrerequisites,
  cli,
  cliReceive,
  cspViolations,
  newPerson,
  openChat,
  screenshot,
  sendText,
  signUp,
  startServer,
  tempDir,
  uniqueName,
} from './helpers.mjs';

/** helpers.launchBrowser, plus a fake microphone that needs no permission prompt. */
function launchWithMicrophone() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

describe('voice messages', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {Awaited<ReturnType<typeof newPerson>>} */
  let web;
  const homes = tempDir('voice');
  const home = path.join(homes, 'py');
  const webName = uniqueName('web');
  const pyName = uniqueName('py');

  before(async () => {
    checkPrerequisites();
    server = await startServer();
    browser = await launchWithMicrophone();
    web = await newPerson(browser, server.url);
    await cli(home, server.url, 'register', pyName, '--password', PASSWORD);
    await signUp(web.page, webName);
    await openChat(web.page, pyName);
    await sendText(web.page, 'a voice message follows');
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    rmSync(homes, { recursive: true, force: true });
  });

  test('recorded in the browser, saved by the Python client with the VOICE flag', async () => {
    await web.page.click('#record');
    await web.page.waitForSelector('#recording:not([hidden])');
    await web.page.waitForFunction(() => document.getElementById('record-time')?.textContent === '0:02', null, { timeout: 10_000 });
    await screenshot(web.page, 'voice-recording');
    await web.page.click('#record-send');
    const mine = web.page.locator('#messages li.out[data-kind="attachment"]').last();
    await mine.locator('audio').waitFor({ timeout: 60_000 });
    await web.page.waitForFunction(
      () => ['sent', 'delivered', 'read'].includes([...document.querySelectorAll('#messages li.out[data-kind="attachment"]')].pop()?.getAttribute('data-status') ?? ''),
      null,
      { timeout: 60_000 },
    );
    // The page can play it: its duration is known once the metadata has loaded.
    await web.page.waitForFunction(() => {
      const audio = /** @type {HTMLAudioElement | null} */ (document.querySelector('#messages li.out[data-kind="attachment"] audio'));
      return audio && audio.readyState >= 1;
    });
    await screenshot(web.page, 'voice-sent');

    const events = await cliReceive(home, server.url, 3);
    const got = events.find((e) => e.type === 'attachment');
    assert.ok(got, JSON.stringify(events));
    assert.equal(got.from, webName);
    assert.equal(got.code, null);
    assert.equal(got.attachment.voice, true);
    assert.match(got.attachment.content_type, /^audio\/webm/);
    assert.match(got.attachment.file_name, /^voice-.*\.webm$/);
    assert.ok(got.attachment.path.startsWith(path.join(home, 'downloads')), got.attachment.path);
    const saved = readFileSync(got.attachment.path);
    assert.equal(saved.length, got.attachment.size);
    assert.ok(saved.length > 1000, `${saved.length} bytes`);
    assert.equal(saved.subarray(0, 4).toString('hex'), '1a45dfa3'); // an EBML (WebM) file
  });

  test('a voice message from the Python client plays in the browser', async () => {
    // Send back the recording the Python client just saved, as a voice message.
    const downloads = path.join(home, 'downloads');
    const file = path.join(downloads, readdirSync(downloads).find((name) => name.endsWith('.webm')) ?? '');
    await cli(home, server.url, 'send-file', webName, file, '--voice', '--content-type', 'audio/webm;codecs=opus');
    const theirs = web.page.locator('#messages li.in[data-kind="attachment"]').last();
    await theirs.locator('audio').waitFor({ timeout: 60_000 });
    assert.equal(await theirs.getAttribute('data-attachment'), 'ready');
    await web.page.waitForFunction(() => {
      const audio = /** @type {HTMLAudioElement | null} */ (document.querySelector('#messages li.in[data-kind="attachment"] audio'));
      return audio && audio.readyState >= 1;
    });
    assert.match((await web.page.locator('#conversations .preview').first().textContent()) ?? '', /Voice message/);
    assert.deepEqual(await cspViolations(web.page), []);
  });
});
