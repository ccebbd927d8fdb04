// Two (and more) WebClients, each on its own fake IndexedDB, against a real server
// (harness/live_server.py: Daphne, migrations, SQLite) over real HTTP and WebSockets.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  DeviceCertificate,
  DeviceMessage,
  Send,
  decodeFrame,
} from '../../../static/js/protocol/index.js';
import { ClientError, WebClient, req } from '../../../static/js/app/index.js';
import { PASSWORD, factories, openClient, recorder, sleep, socketClass, startServer, until } from './live.mjs';

/** @param {string} code */
const hasCode = (code) => (/** @type {any} */ error) => {
  assert.ok(error instanceof ClientError, `not a ClientError: ${error}`);
  assert.equal(error.code, code, error.message);
  return true;
};

describe('WebClient against a live server', { timeout: 300_000 }, () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {WebClient} */
  let alice;
  /** @type {WebClient} */
  let bob;
  /** @type {Record<string, ReturnType<typeof recorder>>} */
  const a = {};
  /** @type {Record<string, ReturnType<typeof recorder>>} */
  const b = {};
  /** @type {WebClient[]} */
  const opened = [];

  /** @param {Record<string, any>} [options] */
  async function client(options) {
    const c = await openClient(server.url, options);
    opened.push(c);
    return c;
  }

  before(async () => {
    // One test drains Bob's one-time prekeys on purpose, all claimed by Alice: the abuse
    // limit per requester and device (tests/server/test_abuse_limits.py) would hand her
    // bundles without one and the stock would never run low.
    server = await startServer({ PREKEY_CLAIMS_PER_DEVICE_PAIR: '1000' });
  });

  after(async () => {
    for (const c of opened) c.close();
    await server?.stop();
  });

  test('register makes the keys (with progress), signs up and stores the device', async () => {
    alice = await client();
    bob = await client();
    for (const [c, r] of [
      [alice, a],
      [bob, b],
    ]) {
      for (const type of ['message', 'status', 'undecryptable', 'identity-changed', 'connection', 'progress', 'error']) {
        r[type] = recorder(/** @type {WebClient} */ (c), type);
      }
    }
    assert.equal(alice.registered, false);
    await assert.rejects(alice.connect(), hasCode('not_registered'));
    await alice.register('Alice', PASSWORD);
    await bob.register('bob', PASSWORD, { deviceName: 'Bob laptop' });
    assert.equal(alice.registered, true);
    assert.equal(alice.username, 'alice');
    assert.equal(alice.deviceId, 1);
    assert.equal(alice.receiptsEnabled, true);
    const progress = a.progress.seen;
    assert.ok(progress.length > 10);
    assert.deepEqual(progress.at(-1), { done: 202, total: 202 });
    assert.ok(progress.every((p, i) => i === 0 || p.done > progress[i - 1].done));
    await assert.rejects(alice.register('alice2', PASSWORD), hasCode('already_registered'));
    const other = await client();
    await assert.rejects(other.register('alice', PASSWORD), hasCode('username_taken'));
    await assert.rejects(other.register('9lives', PASSWORD), hasCode('invalid_username'));
    assert.equal(other.registered, false);
  });

  test('a text each way, with delivered and read receipts', async () => {
    await Promise.all([alice.connect(), bob.connect()]);
    assert.equal(alice.connectionState, 'online');
    assert.deepEqual(a.connection.seen.map((e) => e.state), ['connecting', 'online']);

    const sent = await alice.sendText('bob', 'hello bob');
    assert.equal(sent.direction, 'out');
    assert.equal(sent.peer, 'bob');
    assert.equal(sent.text, 'hello bob');
    assert.equal(typeof sent.id, 'string');
    assert.ok(['sent', 'delivered'].includes(sent.status), sent.status);
    const announced = await a.message.wait((d) => d.message.id === sent.id);
    assert.equal(announced.message.status, 'pending');

    const got = (await b.message.wait((d) => d.message.text === 'hello bob')).message;
    assert.deepEqual(
      { peer: got.peer, direction: got.direction, kind: got.kind, status: got.status, sentAt: got.sentAt },
      { peer: 'alice', direction: 'in', kind: 'text', status: 'received', sentAt: sent.sentAt },
    );
    await a.status.wait((d) => d.id === sent.id && d.status === 'delivered');

    const [conversation] = await bob.conversations();
    assert.equal(conversation.peer, 'alice');
    assert.equal(conversation.unread, 1);
    assert.equal(conversation.lastMessage.text, 'hello bob');

    assert.equal(await bob.markRead('alice'), 1);
    await b.status.wait((d) => d.id === got.id && d.status === 'read');
    await a.status.wait((d) => d.id === sent.id && d.status === 'read');
    assert.equal((await bob.conversations())[0].unread, 0);
    assert.equal(await bob.markRead('alice'), 0);

    const reply = await bob.sendText('alice', 'hi alice 👋');
    const back = (await a.message.wait((d) => d.message.id && d.message.text === 'hi alice 👋')).message;
    await b.status.wait((d) => d.id === reply.id && d.status === 'delivered');
    const history = await alice.messages('bob');
    assert.deepEqual(
      history.map((m) => [m.direction, m.text, m.status]),
      [
        ['out', 'hello bob', 'read'],
        ['in', 'hi alice 👋', 'received'],
      ],
    );
    assert.equal(history[1].id, back.id);
    // The status never goes backwards: a late 'delivered' after 'read' changes nothing.
    assert.equal(a.status.seen.filter((d) => d.id === sent.id).at(-1).status, 'read');
    assert.deepEqual(a.error.seen, []);
    assert.deepEqual(b.error.seen, []);
  });

  test('safety numbers match on both sides; identities are trusted on first use', async () => {
    const mine = await alice.safetyNumber('bob');
    const theirs = await bob.safetyNumber('Alice');
    assert.equal(mine.digits.length, 60);
    assert.equal(mine.digits, theirs.digits);
    assert.equal(mine.groups.length, 12);
    assert.equal(mine.groups.join(''), mine.digits);
    assert.deepEqual(mine.qrPayload, theirs.qrPayload);
    assert.equal(mine.qrPayload.length, 65);
    await assert.rejects(alice.safetyNumber('alice'), hasCode('invalid_value'));

    const identity = await alice.identity('bob');
    assert.match(identity.accountKeyHex, /^[0-9a-f]{64}$/);
    assert.deepEqual({ changed: identity.changed, verified: identity.verified }, { changed: false, verified: false });
    assert.equal(await alice.identity('nobody'), null);
    await alice.trust('bob', { verified: true });
    assert.equal((await alice.identity('bob')).verified, true);
    await alice.trust('bob'); // verified stays
    assert.equal((await alice.identity('bob')).verified, true);
    await assert.rejects(alice.trust('nobody'), hasCode('unknown_account'));
  });

  test('sent_at is unique and increasing per device, even with a clock that stands still', async () => {
    const carol = await client({ clock: () => 1_700_000_000_000 });
    const statuses = recorder(carol, 'status');
    await carol.register('carol', PASSWORD);
    const sent = [];
    for (const text of ['one', 'two', 'three']) sent.push(await carol.sendText('bob', text));
    assert.deepEqual(
      sent.map((m) => m.sentAt),
      [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002],
    );
    for (const m of sent) await b.message.wait((d) => d.message.peer === 'carol' && d.message.sentAt === m.sentAt);
    // Each receipt names its message by sent_at: all three become delivered, separately.
    for (const m of sent) await statuses.wait((d) => d.id === m.id && d.status === 'delivered');
    // A clock that goes back changes nothing either.
    carol._clock = () => 1_000;
    assert.equal((await carol.sendText('bob', 'four')).sentAt, 1_700_000_000_003);
    // Sends made at once go out, and arrive, in call order.
    const burst = ['five', 'six', 'seven', 'eight'];
    const results = await Promise.all(burst.map((text) => carol.sendText('bob', text)));
    assert.deepEqual(results.map((m) => m.sentAt), [4, 5, 6, 7].map((n) => 1_700_000_000_000 + n));
    await b.message.wait((d) => d.message.text === 'eight');
    const fromCarol = b.message.seen.filter((d) => d.message.peer === 'carol').map((d) => d.message.text);
    assert.deepEqual(fromCarol.slice(-4), burst);
  });

  test('with receipts off, none are sent; incoming ones still count', async () => {
    await bob.setReceipts(false);
    assert.equal(bob.receiptsEnabled, false);
    const sent = await alice.sendText('bob', 'no receipt for this');
    const got = (await b.message.wait((d) => d.message.text === 'no receipt for this')).message;
    await bob.markRead('alice');
    await sleep(500);
    assert.ok(!a.status.seen.some((d) => d.id === sent.id && d.status !== 'sent'), 'a receipt went out');
    assert.equal((await alice.messages('bob')).find((m) => m.id === sent.id).status, 'sent');
    // Bob still hears alice's receipts for his own messages.
    const mine = await bob.sendText('alice', 'but you may tell me');
    await b.status.wait((d) => d.id === mine.id && d.status === 'delivered');
    await bob.setReceipts(true);
    assert.equal(got.status, 'received');
  });

  test('a changed identity key blocks sending until trusted', async () => {
    // As if bob's account key had changed: alice's record holds another key.
    await alice._store.write(['identities'], async (t) => {
      const row = await req(t.objectStore('identities').get('bob'));
      await req(t.objectStore('identities').put({ ...row, accountKey: new Uint8Array(32).fill(7) }));
    });
    await assert.rejects(alice.sendText('bob', 'blocked'), hasCode('untrusted_identity'));
    await a['identity-changed'].wait((d) => d.username === 'bob');
    assert.deepEqual(
      { changed: (await alice.identity('bob')).changed, verified: (await alice.identity('bob')).verified },
      { changed: true, verified: false },
    );
    await assert.rejects(alice.sendText('bob', 'still blocked'), hasCode('untrusted_identity'));
    await alice.trust('bob');
    const sent = await alice.sendText('bob', 'trusted again');
    assert.ok(['sent', 'delivered'].includes(sent.status));
    await b.message.wait((d) => d.message.text === 'trusted again');
    assert.ok(!(await alice.messages('bob')).some((m) => m.text === 'blocked'), 'a refused send is not stored');
  });

  test('a SEND lost with its connection is resent byte for byte; the outbox survives a restart', async () => {
    const Socket = socketClass(server.url);
    const dave = await client({ WebSocket: Socket });
    const statuses = recorder(dave, 'status');
    await dave.register('dave', PASSWORD);
    await dave.connect();
    const sends = () => Socket.sent.filter((frame) => frame[1] === 1);

    Socket.dropSends = true; // the network swallows what dave sends
    const pending = dave.sendText('bob', 'through the outage');
    await until(() => sends().length === 1, 'the first SEND');
    Socket.dropSends = false;
    Socket.instances.at(-1).close(); // the connection dies; the relay reconnects
    const message = await pending;
    assert.equal(message.status === 'sent' || message.status === 'delivered', true);
    assert.equal(sends().length, 2);
    assert.deepEqual(sends()[1], sends()[0], 'resent byte for byte, request id included');
    await b.message.wait((d) => d.message.text === 'through the outage');
    await statuses.wait((d) => d.id === message.id && d.status === 'delivered');

    // A restart with a SEND unanswered: the outbox keeps its ciphertexts.
    Socket.dropSends = true;
    const lost = dave.sendText('bob', 'after the restart');
    await until(() => sends().length === 3, 'the SEND before the restart');
    dave.close();
    await assert.rejects(lost, hasCode('closed'));
    Socket.dropSends = false;
    const again = await client({ WebSocket: Socket, indexedDB: factories.get(dave) });
    assert.equal(again.registered, true);
    assert.equal(again.username, 'dave');
    await again.connect();
    await b.message.wait((d) => d.message.text === 'after the restart');
    const [before, resent] = [sends()[2], sends()[3]].map((frame) => decodeFrame(frame));
    assert.notEqual(resent.requestId, before.requestId);
    assert.deepEqual(resent.messages, before.messages, 'the same ciphertexts');
    const history = await again.messages('bob');
    assert.deepEqual(
      history.map((m) => m.text),
      ['through the outage', 'after the restart'],
    );
    await until(async () => (await again.messages('bob'))[1].status === 'delivered', 'delivered after restart');
    assert.equal(b.message.seen.filter((d) => d.message.text === 'after the restart').length, 1);
    // A duplicate of a delivered ciphertext is acknowledged and dropped by bob.
    const count = b.message.seen.length;
    const reply = await again._relay.request(new Send({ requestId: 0, recipient: 'bob', messages: before.messages }));
    assert.equal(reply.constructor.name, 'SendOk');
    await sleep(300);
    assert.equal(b.message.seen.length, count);
    assert.equal(b.undecryptable.seen.length, 0);
    again.close();
  });

  test('an envelope that cannot be decrypted is stored once and acknowledged', async () => {
    const keys = await alice._api.accountKeys('bob');
    const { registrationId } = keys.devices[0];
    const garbage = new DeviceMessage(1, registrationId, Uint8Array.of(0x12, 1, 2, 3));
    await alice._relay.request(new Send({ requestId: 0, recipient: 'bob', messages: [garbage] }));
    const { message } = await b.undecryptable.wait((d) => d.message.peer === 'alice');
    assert.equal(message.kind, 'undecryptable');
    assert.equal(message.text, null);
    assert.equal(message.code, 'truncated');
    assert.equal(message.status, 'received');
    const history = await bob.messages('alice');
    assert.equal(history.at(-1).id, message.id);
    assert.equal(history.at(-1).code, 'truncated');
    // Acknowledged: a new connection does not bring it back.
    bob.close();
    bob = await client({ indexedDB: factories.get(bob) });
    const undecryptable = recorder(bob, 'undecryptable');
    Object.assign(b, {
      message: recorder(bob, 'message'),
      status: recorder(bob, 'status'),
      undecryptable,
      error: recorder(bob, 'error'),
    });
    await bob.connect();
    await sleep(300);
    assert.equal(undecryptable.seen.length, 0);
  });

  test('a stale device is corrected (DEVICE_MISMATCH) and the receipt still arrives', async () => {
    // Alice's record of bob's device carries a wrong registration id: the relay says stale.
    await alice._store.write(['peerDevices'], async (t) => {
      const row = await req(t.objectStore('peerDevices').get(['bob', 1]));
      const certificate = DeviceCertificate.decode(row.certificate);
      const wrong = new DeviceCertificate({ ...certificate, registrationId: certificate.registrationId + 1 });
      await req(t.objectStore('peerDevices').put({ ...row, registrationId: wrong.registrationId, certificate: wrong.encode() }));
    });
    const mine = await bob.sendText('alice', 'tell me you got this');
    await b.status.wait((d) => d.id === mine.id && d.status === 'delivered');
    const row = await alice._store.get('peerDevices', ['bob', 1]);
    const keys = await alice._api.accountKeys('bob');
    assert.equal(row.registrationId, keys.devices[0].registrationId, 'corrected from the server');
    // The new session works both ways.
    await alice.sendText('bob', 'after the correction');
    await b.message.wait((d) => d.message.text === 'after the correction');
    await bob.sendText('alice', 'and back');
    await a.message.wait((d) => d.message.text === 'and back');
    assert.deepEqual(a.error.seen, []);
  });

  test('keepalive: PING every interval, and a connection without PONG is replaced', async () => {
    const Socket = socketClass(server.url);
    const erin = await client({ WebSocket: Socket, relay: { pingIntervalMs: 50, pongTimeoutMs: 150 } });
    const states = recorder(erin, 'connection');
    await erin.register('erin', PASSWORD);
    await erin.connect();
    await sleep(400);
    assert.ok(Socket.sent.filter((frame) => frame[1] === 9).length >= 4, 'PINGs sent');
    assert.equal(erin._relay.connections, 1, 'answered PINGs keep the connection');
    Socket.dropPongs = true;
    await until(() => erin._relay.connections >= 2, 'a new connection');
    Socket.dropPongs = false;
    await until(() => erin.connectionState === 'online', 'online again');
    assert.deepEqual(states.seen.map((e) => e.state).slice(0, 4), ['connecting', 'online', 'connecting', 'online']);
    await erin.sendText('bob', 'still here');
    await b.message.wait((d) => d.message.text === 'still here');
  });

  test('prekeys are topped up on PREKEYS_LOW and on connect', async () => {
    const counts = () => bob._api.prekeyCounts();
    const claim = async (n) => {
      for (let i = 0; i < n; i++) await alice._api.claimBundles('bob', [1]);
    };
    const start = await counts();
    assert.ok(start.oneTimePrekeys >= 90, JSON.stringify(start));
    await claim(start.oneTimePrekeys - start.lowWatermark + 1); // below the watermark
    await until(async () => (await counts()).oneTimePrekeys >= 100, 'the top-up after the notice');
    const after = await counts();
    assert.ok(after.kemPrekeys >= 100, JSON.stringify(after));
    // Used up while offline: connect() tops up.
    bob.close();
    await claim(after.oneTimePrekeys - after.lowWatermark + 1);
    assert.ok((await counts()).oneTimePrekeys < after.lowWatermark);
    bob = await client({ indexedDB: factories.get(bob) });
    b.message = recorder(bob, 'message');
    b.error = recorder(bob, 'error');
    await bob.connect();
    assert.ok((await counts()).oneTimePrekeys >= 100);
    // The claimed bundles' keys still work: a new session from one of them decrypts.
    const frank = await client();
    await frank.register('frank', PASSWORD);
    await frank.sendText('bob', 'from a fresh bundle');
    await b.message.wait((d) => d.message.text === 'from a fresh bundle');
    assert.deepEqual(b.error.seen, []);
  });

  test('logout and login', async () => {
    await alice.logout();
    assert.equal(alice.registered, false);
    assert.equal(alice.linked, true);
    assert.equal(alice.connectionState, 'offline');
    await assert.rejects(alice.connect(), hasCode('logged_out'));
    await assert.rejects(alice.login('bob', PASSWORD), hasCode('not_linked'));
    await assert.rejects(alice.login('alice', 'wrong password'), hasCode('unauthorized'));
    await alice.login('ALICE', PASSWORD);
    assert.equal(alice.registered, true);
    await alice.connect();
    await alice.sendText('bob', 'back again');
    await b.message.wait((d) => d.message.text === 'back again');
    const fresh = await client();
    await assert.rejects(fresh.login('alice', PASSWORD), hasCode('not_linked'));
  });

  test('a revoked device stops reconnecting and says why', async () => {
    const gina = await client();
    const errors = recorder(gina, 'error');
    await gina.register('gina', PASSWORD);
    await gina.connect();
    assert.equal(await gina.revokeDevice(1), true, 'its own device');
    const error = await errors.wait();
    assert.equal(error.code, 'unauthorized');
    await until(() => gina.connectionState === 'offline', 'offline');
    await assert.rejects(gina.connect(), hasCode('unauthorized'));
  });

  test('errors name their code', async () => {
    await assert.rejects(alice.sendText('nobody', 'hi'), hasCode('unknown_account'));
    await assert.rejects(alice.sendText('bob', ''), hasCode('invalid_value'));
    await assert.rejects(alice.sendText('bob', 'x'.repeat(64 * 1024 + 1)), hasCode('too_large'));
    await assert.rejects(alice.sendText('Not A Name!', 'hi'), hasCode('invalid_username'));
  });
});
