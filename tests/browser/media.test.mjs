// Photos and files in the web client: a photo goes browser to browser (its thumbnail shown
// at once, then the full image, decrypted in the page), an upload cut mid-way resumes, a
// file from the Python reference client arrives byte for byte and one from the browser
// reaches Python, a tampered blob shows as undecryptable and an expired one as expired,
// too big a file is refused before anything is uploaded, and an upload can be cancelled.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
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
  signUp,
  uniqueName,
  waitAttachmentSent,
  waitForIncoming,
} from './helpers.mjs';

const ATTACHMENTS = '**/api/v1/attachments**';

/** The newest attachment bubble of the open conversation, incoming or outgoing. */
function lastAttachment(page, direction) {
  return page.locator(`#messages li.${direction}[data-kind="attachment"]`).last();
}

describe('photos and files', () => {
  const live = liveSuite({ homes: 'media', py: 'py' });
  const { server, pyName, pyHome: home } = live;
  const alice = live.person();
  const bob = live.person();
  const aliceName = uniqueName('alice');
  const bobName = uniqueName('bob');

  before(async () => {
    await signUp(alice.page, aliceName);
    await signUp(bob.page, bobName);
    await openChat(alice.page, bobName);
    await sendText(alice.page, 'photos follow');
    await openChat(bob.page, aliceName);
    await waitForIncoming(bob.page, 'photos follow');
  });

  test('a photo: the thumbnail at once, then the full image; an upload cut mid-way resumes', async () => {
    // 1000 × 700 pixels of noise: a PNG of about 2.7 MB, three PATCHes of 1 MiB.
    const png = Buffer.from(
      await alice.page.evaluate(() => {
        const canvas = document.createElement('canvas');
        canvas.width = 1000;
        canvas.height = 700;
        const context = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d'));
        const image = context.createImageData(1000, 700);
        for (let i = 0; i < image.data.length; i++) image.data[i] = i % 4 === 3 ? 255 : (Math.random() * 256) | 0;
        context.putImageData(image, 0, 0);
        context.fillStyle = '#0b6e4f';
        context.fillRect(100, 100, 300, 200);
        return canvas.toDataURL('image/png').split(',')[1];
      }),
      'base64',
    );
    assert.ok(png.length > 2 * 1024 * 1024, `${png.length} bytes`);

    // The answer to the second chunk is lost (the server stored it): the page must ask
    // where the server is (HEAD) and go on from there, not start over.
    const seen = [];
    await alice.context.route(ATTACHMENTS, async (route) => {
      const method = route.request().method();
      seen.push(method);
      if (method === 'PATCH' && seen.filter((m) => m === 'PATCH').length === 2) {
        await route.fetch();
        await route.abort('connectionreset');
        return;
      }
      await route.continue();
    });
    // Bob's download waits until the thumbnail has been seen.
    let release = () => {};
    const released = new Promise((resolve) => {
      release = resolve;
    });
    await bob.context.route(ATTACHMENTS, async (route) => {
      if (route.request().method() === 'GET') await released;
      await route.continue();
    });

    await alice.page.setInputFiles('#file-input', { name: 'noise.png', mimeType: 'image/png', buffer: png });
    const mine = lastAttachment(alice.page, 'out');
    await mine.locator('img[data-source="full"]').waitFor({ timeout: 60_000 });
    await waitAttachmentSent(alice.page);
    assert.ok(seen.includes('HEAD'), `requests: ${seen.join(' ')}`);
    assert.equal(seen.filter((m) => m === 'PATCH').length, 3, `requests: ${seen.join(' ')}`); // none sent twice

    const theirs = lastAttachment(bob.page, 'in');
    const thumb = theirs.locator('img[data-source="thumbnail"]');
    await thumb.waitFor({ timeout: 60_000 });
    await bob.page.waitForFunction(
      () => {
        const img = /** @type {HTMLImageElement | null} */ (document.querySelector('#messages li.in[data-kind="attachment"] img'));
        return img && img.complete && img.naturalWidth > 0;
      },
      null,
      { timeout: 30_000 },
    );
    const thumbSize = await thumb.evaluate((img) => [/** @type {HTMLImageElement} */ (img).naturalWidth, /** @type {HTMLImageElement} */ (img).naturalHeight]);
    assert.ok(thumbSize[0] <= 320 && thumbSize[0] > 0, `thumbnail ${thumbSize}`);
    assert.equal(await theirs.getAttribute('data-attachment'), 'loading');
    await screenshot(bob.page, 'media-thumbnail');

    release();
    await theirs.locator('img[data-source="full"]').waitFor({ timeout: 60_000 });
    await bob.page.waitForFunction(
      () => {
        const img = /** @type {HTMLImageElement | null} */ (document.querySelector('#messages li.in[data-kind="attachment"] img[data-source="full"]'));
        return img && img.complete && img.naturalWidth === 1000 && img.naturalHeight === 700;
      },
      null,
      { timeout: 30_000 },
    );
    assert.equal(await theirs.getAttribute('data-attachment'), 'ready');
    // Shown in an open conversation: read, and the tick says so.
    await alice.page.waitForFunction(
      () => [...document.querySelectorAll('#messages li.out[data-kind="attachment"]')].pop()?.getAttribute('data-status') === 'read',
      null,
      { timeout: 60_000 },
    );
    await screenshot(bob.page, 'media-image');
    await screenshot(alice.page, 'media-image-sender');
    await alice.context.unroute(ATTACHMENTS);
    await bob.context.unroute(ATTACHMENTS);
    // The conversation list names it.
    assert.match(await bob.page.locator('#conversations .preview').first().textContent() ?? '', /Photo/);
  });

  test('a file from the Python client arrives byte for byte; one from the browser reaches Python', async () => {
    const bytes = randomBytes(300_000);
    const file = live.home('report.bin');
    writeFileSync(file, bytes);
    await cli(home, server.url, 'send', aliceName, 'a file follows');
    await openChat(alice.page, pyName);
    await waitForIncoming(alice.page, 'a file follows');
    await cli(home, server.url, 'send-file', aliceName, file);
    const item = lastAttachment(alice.page, 'in');
    await item.locator('.file .name').waitFor({ timeout: 60_000 });
    assert.equal(await item.locator('.file .name').textContent(), 'report.bin');
    const [download] = await Promise.all([alice.page.waitForEvent('download'), item.locator('button', { hasText: 'Download' }).click()]);
    assert.equal(download.suggestedFilename(), 'report.bin');
    assert.ok(readFileSync(/** @type {string} */ (await download.path())).equals(bytes), 'the downloaded bytes differ');
    assert.equal(await item.getAttribute('data-attachment'), 'ready');

    // And back: a file from the browser, saved by the Python client under downloads/.
    const back = randomBytes(150_000);
    await alice.page.setInputFiles('#file-input', { name: 'back.dat', mimeType: 'application/octet-stream', buffer: back });
    await waitAttachmentSent(alice.page);
    const events = await cliReceive(home, server.url, 3);
    const got = events.find((e) => e.type === 'attachment');
    assert.ok(got, JSON.stringify(events));
    assert.equal(got.from, aliceName);
    assert.equal(got.code, null);
    assert.equal(got.attachment.file_name, 'back.dat');
    assert.equal(got.attachment.voice, false);
    assert.ok(got.attachment.path.startsWith(path.join(home, 'downloads')), got.attachment.path);
    assert.ok(readFileSync(got.attachment.path).equals(back), 'Python saved other bytes');
  });

  test('a tampered blob is shown as undecryptable, an expired one as expired', async () => {
    await openChat(alice.page, bobName);
    await openChat(bob.page, aliceName);
    const before = await bob.page.locator('#messages li.in[data-kind="attachment"]').count();
    for (const name of ['tampered.txt', 'expired.txt']) {
      await alice.page.setInputFiles('#file-input', { name, mimeType: 'text/plain', buffer: Buffer.from(`${name}\n`.repeat(5000)) });
      await alice.page.locator(`#messages li.out[data-kind="attachment"] .file .name:text-is("${name}")`).waitFor({ timeout: 60_000 });
    }
    await bob.page.waitForFunction((count) => document.querySelectorAll('#messages li.in[data-kind="attachment"]').length === count + 2, before, {
      timeout: 60_000,
    });
    // On the server: flip a byte of the first blob; put the second past its expiry.
    const out = await djangoShell(
      server,
      `
from datetime import timedelta
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone
from attachments.models import Blob
blobs = list(Blob.objects.filter(completed_at__isnull=False).order_by('-created_at')[:2])
expired, tampered = blobs
part = tampered.parts.first()
storage = storages['attachments']
with storage.open(part.name) as f:
    data = bytearray(f.read())
data[100] ^= 1
storage.delete(part.name)
assert storage.save(part.name, ContentFile(bytes(data))) == part.name
Blob.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
print('done')
`,
    );
    assert.match(out, /done/);
    const items = bob.page.locator('#messages li.in[data-kind="attachment"]');
    const tampered = items.nth(before);
    const expired = items.nth(before + 1);
    await tampered.locator('button', { hasText: 'Download' }).click();
    await bob.page.waitForFunction((i) => document.querySelectorAll('#messages li.in[data-kind="attachment"]')[i]?.getAttribute('data-attachment') === 'undecryptable', before, {
      timeout: 30_000,
    });
    assert.match((await tampered.locator('.note').textContent()) ?? '', /could not be decrypted/);
    assert.equal(await tampered.locator('a[download]').count(), 0);
    await expired.locator('button', { hasText: 'Download' }).click();
    await bob.page.waitForFunction((i) => document.querySelectorAll('#messages li.in[data-kind="attachment"]')[i]?.getAttribute('data-attachment') === 'expired', before + 1, {
      timeout: 30_000,
    });
    assert.match((await expired.locator('.note').textContent()) ?? '', /expired/);
    await screenshot(bob.page, 'media-tampered-expired');
  });

  test('too big a file is refused before anything is uploaded', async () => {
    await openChat(alice.page, bobName);
    let announced = 0;
    await alice.context.route(ATTACHMENTS, async (route) => {
      if (route.request().method() === 'POST') announced += 1;
      await route.continue();
    });
    // 100 MiB + 1 byte, dropped on the conversation (never read: the size is checked first).
    await alice.page.evaluate(() => {
      const file = new File([new Uint8Array(104_857_601)], 'huge.bin', { type: 'application/octet-stream' });
      const data = new DataTransfer();
      data.items.add(file);
      document.getElementById('chat-pane')?.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
    });
    await alice.page.waitForFunction(() => /at most 100 MB/.test(document.getElementById('send-error')?.textContent ?? ''));
    assert.match((await alice.page.textContent('#send-error')) ?? '', /huge\.bin/);
    assert.equal(announced, 0);
    assert.equal(await alice.page.locator('#messages li.uploading').count(), 0);
    await alice.context.unroute(ATTACHMENTS);
  });

  test('an upload shows its progress and can be cancelled', async () => {
    await openChat(alice.page, bobName);
    const before = await bob.page.locator('#messages li.in').count();
    // Each chunk takes a while, so that there is time to watch and cancel.
    await alice.context.route(ATTACHMENTS, async (route) => {
      if (route.request().method() === 'PATCH') await new Promise((resolve) => setTimeout(resolve, 700));
      await route.continue().catch(() => {});
    });
    await alice.page.setInputFiles('#file-input', { name: 'big.bin', mimeType: 'application/octet-stream', buffer: randomBytes(6 * 1024 * 1024) });
    const upload = alice.page.locator('#messages li.uploading');
    await upload.waitFor();
    await alice.page.waitForFunction(() => Number(/** @type {HTMLProgressElement | null} */ (document.querySelector('#messages li.uploading progress'))?.value) > 0, null, {
      timeout: 30_000,
    });
    assert.match((await upload.locator('.percent').textContent()) ?? '', /^\d+%$/);
    await screenshot(alice.page, 'media-upload-progress');
    await upload.locator('button', { hasText: 'Cancel' }).click();
    await upload.waitFor({ state: 'detached' });
    assert.equal(await alice.page.textContent('#send-error'), '');
    await alice.context.unroute(ATTACHMENTS);
    // Nothing reached Bob.
    await sendText(alice.page, 'after the cancelled upload');
    await waitForIncoming(bob.page, 'after the cancelled upload');
    assert.equal(await bob.page.locator('#messages li.in').count(), before + 1);
  });

  test('no microphone permission: a clear message', async () => {
    await openChat(alice.page, bobName);
    await alice.page.click('#record');
    await alice.page.waitForFunction(() => /Microphone access was denied|No microphone/.test(document.getElementById('send-error')?.textContent ?? ''));
    assert.equal(await alice.page.isHidden('#recording'), true);
  });

  test('no CSP violation and no script error on any page', async () => {
    for (const person of [alice, bob]) {
      assert.deepEqual(await cspViolations(person.page), []);
      assert.deepEqual(
        person.problems.filter((text) => !/Failed to load resource/.test(text)),
        [],
      );
    }
  });
});
