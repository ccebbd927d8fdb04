// Groups in the WebClient against a real server (docs/protocol.md §17.1–17.4, 17.6): a
// group of three created with GROUP_UPDATE "created" and sender keys pairwise, group
// messages both ways (one GROUP_SEND each), a removal that rotates the keys (the removed
// member gets nothing more and cannot decrypt what follows), stale_roster answered by the
// other sender, a group first heard of looked up, and a message with no key stored as
// undecryptable.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Deliver, FrameType, GroupSend, decodeFrame } from '../../../static/js/protocol/index.js';
import { WebClient } from '../../../static/js/app/index.js';
import { PASSWORD, openClient, recorder, sleep, startServer, until } from './live.mjs';

/** @param {WebClient} client */
const sentFrames = (client) => /** @type {any} */ (client)._WebSocket.sent;

describe('WebClient: groups', { timeout: 240_000 }, () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {WebClient} */
  let alice;
  /** @type {WebClient} */
  let bob;
  /** @type {WebClient} */
  let carol;
  /** @type {string} */
  let group;

  before(async () => {
    server = await startServer();
    alice = await openClient(server.url);
    bob = await openClient(server.url);
    carol = await openClient(server.url);
    await alice.register('alice', PASSWORD);
    await bob.register('bob', PASSWORD);
    await carol.register('carol', PASSWORD);
    await Promise.all([alice.connect(), bob.connect(), carol.connect()]);
  });
  after(async () => {
    for (const c of [alice, bob, carol]) c?.close();
    await server?.stop();
  });

  test('create: the members hear of the group, its name and the creator', async () => {
    const bobGroups = recorder(bob, 'group');
    const carolMessages = recorder(carol, 'message');
    group = await alice.groups.create('Climbing', ['bob', 'carol']);
    assert.match(group, /^[0-9a-f]{32}$/);
    const mine = await alice.groups.get(group);
    assert.equal(mine?.name, 'Climbing');
    assert.equal(mine?.admin, true);
    assert.deepEqual(mine?.members.map((m) => m.username), ['alice', 'bob', 'carol']);
    const notice = await carolMessages.wait((d) => d.message.kind === 'group');
    assert.equal(notice.message.peer, `group:${group}`);
    assert.equal(notice.message.sender, 'alice');
    assert.equal(notice.message.text, 'alice created the group “Climbing” with bob, carol');
    await bobGroups.wait((d) => d.id === group);
    // Looked up on the server after the push: members and admin come from there.
    const seen = await until(async () => {
      const g = await bob.groups.get(group);
      return g?.members.length === 3 ? g : null;
    }, 'bob to fetch the group');
    assert.equal(seen.name, 'Climbing');
    assert.equal(seen.admin, false);
    const conversations = await bob.conversations();
    const listed = conversations.find((c) => c.peer === `group:${group}`);
    assert.equal(listed?.group?.name, 'Climbing');
  });

  test('a group message: one GROUP_SEND, read by every member with its sender', async () => {
    const atBob = recorder(bob, 'message');
    const atCarol = recorder(carol, 'message');
    const before = sentFrames(alice).length;
    const sent = await alice.groups.sendText(group, 'hello group');
    assert.equal(sent.status, 'sent');
    assert.equal(sent.peer, `group:${group}`);
    const frames = sentFrames(alice).slice(before).map((/** @type {Uint8Array} */ f) => f[1]);
    assert.deepEqual(frames.filter((t) => t === FrameType.GROUP_SEND || t === FrameType.SEND), [FrameType.GROUP_SEND]);
    for (const got of [await atBob.wait((d) => d.message.text === 'hello group'), await atCarol.wait((d) => d.message.text === 'hello group')]) {
      assert.equal(got.message.sender, 'alice');
      assert.equal(got.message.peer, `group:${group}`);
      assert.equal(got.message.direction, 'in');
    }
    const atAlice = recorder(alice, 'message');
    await bob.groups.sendText(group, 'hi from bob');
    const reply = await atAlice.wait((d) => d.message.text === 'hi from bob');
    assert.equal(reply.message.sender, 'bob');
    await atCarol.wait((d) => d.message.text === 'hi from bob');
    const history = await carol.messages(`group:${group}`);
    assert.deepEqual(history.filter((m) => m.kind === 'text').map((m) => [m.sender, m.text]), [['alice', 'hello group'], ['bob', 'hi from bob']]);
  });

  test('remove: the keys rotate; the removed member gets nothing more and cannot decrypt it', async () => {
    const atCarol = recorder(carol, 'message');
    const atBob = recorder(bob, 'message');
    await alice.groups.remove(group, 'carol');
    const told = await atCarol.wait((d) => d.message.kind === 'group' && d.message.text === 'alice removed carol');
    assert.equal(told.message.sender, 'alice');
    await atBob.wait((d) => d.message.kind === 'group' && d.message.text === 'alice removed carol');
    assert.deepEqual((await alice.groups.get(group))?.members.map((m) => m.username), ['alice', 'bob']);
    await until(async () => (await carol.groups.get(group))?.member === false, 'carol to know she is out');

    const before = sentFrames(alice).length;
    await alice.groups.sendText(group, 'after carol');
    await atBob.wait((d) => d.message.text === 'after carol');
    // The relay does not deliver it to Carol; handed to her anyway, her keys do not open it.
    const groupSend = sentFrames(alice).slice(before).map((/** @type {Uint8Array} */ f) => decodeFrame(f)).find((f) => f instanceof GroupSend);
    assert.ok(groupSend instanceof GroupSend);
    const forged = new Deliver({ seq: 999_999, sender: 'alice', senderDevice: 1, serverTimeMs: Date.now(), payload: groupSend.payload });
    const carolGroups = await /** @type {any} */ (carol)._loadGroups();
    const events = await /** @type {any} */ (carol)._exclusive(() => carolGroups.receive(forged));
    assert.equal(events.length, 1);
    assert.equal(events[0][0], 'undecryptable');
    assert.equal(events[0][1].message.code, 'no_session');
    await sleep(300);
    assert.ok(!atCarol.seen.some((d) => d.message.text === 'after carol'));

    // Bob's chain was given to Carol: the relay refuses his old roster, he rotates and resends.
    const atAlice = recorder(alice, 'message');
    const bobBefore = sentFrames(bob).length;
    await bob.groups.sendText(group, 'bob after carol');
    await atAlice.wait((d) => d.message.text === 'bob after carol');
    const bobSends = sentFrames(bob).slice(bobBefore).filter((/** @type {Uint8Array} */ f) => f[1] === FrameType.GROUP_SEND);
    assert.equal(bobSends.length, 2, 'refused once (stale_roster), then sent under a new key');
    await sleep(300);
    assert.ok(!atCarol.seen.some((d) => d.message.text === 'bob after carol'));
  });

  test('add and rename: the new member gets a snapshot and the key, everyone sees the change', async () => {
    const atCarol = recorder(carol, 'message');
    const atBob = recorder(bob, 'message');
    assert.deepEqual(await alice.groups.add(group, ['carol']), ['carol']);
    await atCarol.wait((d) => d.message.kind === 'group' && d.message.text === 'alice added you to “Climbing”');
    await atBob.wait((d) => d.message.text === 'alice added carol');
    await alice.groups.rename(group, 'Bouldering');
    await until(async () => (await bob.groups.get(group))?.name === 'Bouldering', 'bob to see the new name');
    await until(async () => (await carol.groups.get(group))?.name === 'Bouldering', 'carol to see the new name');
    await alice.groups.sendText(group, 'welcome back');
    await atCarol.wait((d) => d.message.text === 'welcome back');
  });
});
