// Files, typing indicators and disappearing messages in the WebClient, against a real
// server: an attachment round trip (streamed encryption, chunked upload that resumes after
// a lost answer, download checked against its pointer), a tampered blob refused, TIMER and
// EXPIRING with their expiry on both clocks, and EPHEMERAL typing with its setting.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { ClientError, WebClient } from '../../../static/js/app/index.js';
import { PASSWORD, openClient, recorder, until } from './live.mjs';
import { startServer } from './live.mjs';

/** @param {string} code */
const hasCode = (code) => (/** @type {any} */ error) => {
  assert.ok(error instanceof ClientError, `not a ClientError: ${error}`);
  assert.equal(error.code, code, error.message);
  return true;
};

/** A fetch that records each attachment request's method, and can spoil some. */
function watchedFetch() {
  const seen = [];
  const state = { seen, loseAnswerOfPatch: 0, tamperDownloads: false };
  /** @type {typeof fetch} */
  const wrapped = async (url, init) => {
    const method = init?.method ?? 'GET';
    const blob = String(url).includes('/api/v1/attachments');
    if (blob) seen.push(method);
    const response = await fetch(url, init);
    if (blob && method === 'PATCH' && seen.filter((m) => m === 'PATCH').length === state.loseAnswerOfPatch) {
      throw new TypeError('fetch failed: the connection dropped'); // stored, answer lost
    }
    if (blob && method === 'GET' && state.tamperDownloads && response.ok) {
      const body = new Uint8Array(await response.arrayBuffer());
      body[body.length >> 1] ^= 0x01;
      return new Response(body, { status: response.status, headers: response.headers });
    }
    return response;
  };
  return { fetch: wrapped, state };
}

describe('WebClient: files, typing, disappearing messages', { timeout: 240_000 }, () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {WebClient} */
  let alice;
  /** @type {WebClient} */
  let bob;
  let offset = 0; // Bob's clock runs ahead by this much
  const aliceNet = watchedFetch();
  const bobNet = watchedFetch();
  /** @type {WebClient[]} */
  const opened = [];

  before(async () => {
    server = await startServer();
    alice = await openClient(server.url, { fetch: aliceNet.fetch });
    bob = await openClient(server.url, { fetch: bobNet.fetch, clock: () => Date.now() + offset });
    opened.push(alice, bob);
    await alice.register('alice', PASSWORD);
    await bob.register('bob', PASSWORD);
    await alice.connect();
    await bob.connect();
    const arrived = recorder(bob, 'message');
    await alice.sendText('bob', 'hello');
    await arrived.wait((d) => d.message.text === 'hello');
    await bob.sendText('alice', 'hi'); // sessions both ways
  });
  after(async () => {
    for (const c of opened) c.close();
    await server?.stop();
  });

  test('a file: encrypted in slices, uploaded in chunks (resuming after a lost answer), downloaded and checked', async () => {
    const bytes = randomBytes(2_500_000); // three PATCHes of about 1 MiB
    const arrived = recorder(bob, 'message');
    const statuses = recorder(alice, 'status');
    aliceNet.state.loseAnswerOfPatch = 2;
    const progress = [];
    const message = await alice.sendFile('bob', new Blob([bytes], { type: 'application/x-test' }), {
      fileName: 'data.bin',
      onProgress: (done, total) => progress.push([done, total]),
    });
    aliceNet.state.loseAnswerOfPatch = 0;
    assert.equal(message.kind, 'attachment');
    assert.equal(message.attachment?.fileName, 'data.bin');
    assert.equal(message.attachment?.size, bytes.length);
    const methods = aliceNet.state.seen.join(' ');
    assert.equal(methods, 'POST PATCH PATCH HEAD PATCH', 'the chunk whose answer was lost is not sent again');
    const total = progress.at(-1)?.[1];
    assert.deepEqual(progress.at(-1), [total, total]);
    assert.ok(progress.every(([done], i) => i === 0 || done >= progress[i - 1][0]));

    const { message: theirs } = await arrived.wait((d) => d.message.kind === 'attachment');
    assert.equal(theirs.direction, 'in');
    assert.equal(theirs.attachment.contentType, 'application/x-test');
    assert.equal(theirs.attachment.voice, false);
    assert.equal('key' in theirs.attachment, false); // the key never leaves the client
    const file = await bob.download(theirs.id);
    assert.ok(Buffer.from(await file.arrayBuffer()).equals(bytes));
    assert.equal(file.type, 'application/x-test');
    // The sender's own copy comes from memory, not the server.
    const before = aliceNet.state.seen.length;
    assert.ok(Buffer.from(await (await alice.download(message.id)).arrayBuffer()).equals(bytes));
    assert.equal(aliceNet.state.seen.length, before);
    // Received: a delivery receipt, as for a text.
    await statuses.wait((d) => d.id === message.id && d.status === 'delivered');
    // Reloaded from the store, it is the same attachment.
    const listed = (await bob.messages('alice')).find((m) => m.id === theirs.id);
    assert.deepEqual(listed?.attachment, theirs.attachment);
  });

  test('a tampered blob is decrypt_failed; too large a file is refused before upload', async () => {
    const arrived = recorder(bob, 'message');
    await alice.sendFile('bob', new Blob([randomBytes(70_000)]), { fileName: 'x' });
    const { message } = await arrived.wait((d) => d.message.kind === 'attachment');
    bobNet.state.tamperDownloads = true;
    try {
      await assert.rejects(bob.download(message.id), hasCode('decrypt_failed'));
    } finally {
      bobNet.state.tamperDownloads = false;
    }
    const huge = { size: 104_857_601, type: '', slice: () => { throw new Error('read'); } };
    const posts = aliceNet.state.seen.filter((m) => m === 'POST').length;
    await assert.rejects(alice.sendFile('bob', /** @type {any} */ (huge)), hasCode('attachment_too_large'));
    assert.equal(aliceNet.state.seen.filter((m) => m === 'POST').length, posts);
  });

  test('disappearing messages: TIMER, EXPIRING with SEND EXPIRES, expiry from sending and from showing', async () => {
    const bobTimer = recorder(bob, 'timer');
    const arrived = recorder(bob, 'message');
    const notice = await alice.setTimer('bob', 60);
    assert.equal(notice.kind, 'timer');
    assert.equal(notice.timerSeconds, 60);
    assert.equal(await alice.timer('bob'), 60);
    await bobTimer.wait((d) => d.peer === 'alice' && d.timerSeconds === 60);
    assert.equal(await bob.timer('alice'), 60);
    await arrived.wait((d) => d.message.kind === 'timer' && d.message.direction === 'in');

    const sent = await alice.sendText('bob', 'this goes in a minute');
    assert.equal(sent.timerSeconds, 60);
    assert.ok(sent.expiresAt && Math.abs(sent.expiresAt - (sent.sentAt + 60_000)) < 5);
    const { message } = await arrived.wait((d) => d.message.text === 'this goes in a minute');
    assert.equal(message.timerSeconds, 60);
    assert.equal(message.expiresAt, undefined); // not shown yet
    // Shown (read): Bob's clock starts.
    const statuses = recorder(bob, 'status');
    await bob.markRead('alice');
    const update = await statuses.wait((d) => d.id === message.id && d.expiresAt);
    assert.ok(update.expiresAt > Date.now() + 50_000);

    // A minute later on Bob's clock: gone from the store, and the page is told.
    const expired = recorder(bob, 'expired');
    offset = 61_000;
    assert.equal(await bob.purgeExpired(), 1);
    assert.deepEqual((await expired.wait(() => true)).ids, [message.id]);
    assert.equal((await bob.messages('alice')).some((m) => m.id === message.id), false);
    offset = 0;

    await alice.setTimer('bob', 0);
    await bobTimer.wait((d) => d.timerSeconds === 0);
    const plain = await alice.sendText('bob', 'this one stays');
    assert.equal(plain.timerSeconds, undefined);
  });

  test('typing: an EPHEMERAL send, shown only while the setting is on', async () => {
    const typing = recorder(alice, 'typing');
    assert.equal(await bob.sendTyping('alice', true), true);
    assert.deepEqual(await typing.wait(() => true), { peer: 'bob', device: 1, started: true });
    assert.equal(await bob.sendTyping('alice', false), true);
    await typing.wait((d) => d.started === false);
    // Alice turns them off: Bob's still go, but she is not told.
    await alice.setTyping(false);
    const count = typing.seen.length;
    assert.equal(await bob.sendTyping('alice', true), true);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(typing.seen.length, count);
    await alice.setTyping(true);
    // Off on Bob's side: nothing is sent.
    await bob.setTyping(false);
    assert.equal(bob.typingEnabled, false);
    assert.equal(await bob.sendTyping('alice', true), false);
    await bob.setTyping(true);
    // Nothing of it was stored as a message.
    await until(async () => (await alice.messages('bob')).every((m) => m.kind !== 'undecryptable'), 'no undecryptable rows');
  });
});
