// Voice messages: recorded in the browser with MediaRecorder (Chromium's fake microphone,
// a beep), sent with the VOICE flag and its duration, and saved by the Python reference
// client; one from the Python client plays in the browser through an <audio> element.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import {
  cli,
  cliReceive,
  cspViolations,
  launchBrowser,
  liveSuite,
  openChat,
  screenshot,
  sendText,
  waitAttachmentSent,
} from './helpers.mjs';

/** launchBrowser, plus a fake microphone that needs no permission prompt. */
function launchWithMicrophone() {
  return launchBrowser([
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ]);
}

describe('voice messages', () => {
  const live = liveSuite({ homes: 'voice', launch: launchWithMicrophone, web: 'web', py: 'py' });
  const { server, web, webName, pyName, pyHome: home } = live;

  before(async () => {
    await openChat(web.page, pyName);
    await sendText(web.page, 'a voice message follows');
  });

  test('recorded in the browser, saved by the Python client with the VOICE flag', async () => {
    await web.page.click('#record');
    await web.page.waitForSelector('#recording:not([hidden])');
    await web.page.waitForFunction(() => document.getElementById('record-time')?.textContent === '0:02', null, { timeout: 10_000 });
    await screenshot(web.page, 'voice-recording');
    await web.page.click('#record-send');
    const mine = web.page.locator('#messages li.out[data-kind="attachment"]').last();
    await mine.locator('audio').waitFor({ timeout: 60_000 });
    await waitAttachmentSent(web.page);
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
