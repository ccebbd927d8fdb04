// Several devices per account, end to end: two WebClients of one account linked through a
// real server (provisioning relay, link token, signed device lists), SENT transcripts both
// ways, history for the new device, a third party's messages reaching both, revocation, and
// the device-list checks against a server that lies (a forged device, a replayed list, a
// relay that insists on an unlisted device).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  AccountIdentity,
  DeviceKeys,
  DeviceMismatch,
  SignedDeviceList,
} from '../../../static/js/protocol/index.js';
import { ClientError, toBase64 } from '../../../static/js/app/index.js';
import { PASSWORD, openClient, recorder, sleep, startServer, until } from './live.mjs';

/** @param {string} code */
const hasCode = (code) => (/** @type {any} */ error) => {
  assert.ok(error instanceof ClientError, `not a ClientError: ${error}`);
  assert.equal(error.code, code, error.message);
  return true;
};

const EVENTS = ['message', 'status', 'undecryptable', 'error', 'device-refused', 'history-imported', 'history-progress', 'connection'];

/**
 * A fetch that can rewrite the answers to GET .../accounts/{name}/keys: `rewrite(name, data)`
 * returns the JSON to hand the client instead.
 */
function rewritingFetch() {
  const state = {
    /** @type {((name: string, data: any) => any) | null} */
    rewrite: null,
  };
  /** @type {typeof fetch} */
  const wrapped = async (input, init) => {
    const response = await fetch(input, init);
    const match = /\/api\/v1\/accounts\/([^/]+)\/keys$/.exec(String(input));
    if (!match || !state.rewrite || !response.ok) return response;
    const data = state.rewrite(decodeURIComponent(match[1]), await response.json());
    return new Response(JSON.stringify(data), { status: 200, headers: { 'Content-Type': 'application/json' } });
  };
  return Object.assign(state, { fetch: wrapped });
}

describe('several devices of one account, against a live server', { timeout: 600_000 }, () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('../../../static/js/app/index.js').WebClient[]} */
  const opened = [];
  /** @type {any} */ let laptop;
  /** @type {any} */ let phone;
  /** @type {any} */ let bob;
  /** @type {Record<string, Record<string, ReturnType<typeof recorder>>>} */
  const ev = {};
  const bobFetch = rewritingFetch();

  /**
   * @param {string} name
   * @param {Record<string, any>} [options]
   */
  async function client(name, options) {
    const c = await openClient(server.url, options);
    opened.push(c);
    ev[name] = Object.fromEntries(EVENTS.map((type) => [type, recorder(c, type)]));
    return c;
  }

  before(async () => {
    server = await startServer();
    laptop = await client('laptop');
    bob = await client('bob', { fetch: bobFetch.fetch });
    await laptop.register('alice', PASSWORD, { deviceName: 'Laptop' });
    await bob.register('bob', PASSWORD);
    await Promise.all([laptop.connect(), bob.connect()]);
  });

  after(async () => {
    for (const c of opened) c.close();
    await server?.stop();
  });

  test('history before linking: a conversation on the first device', async () => {
    await laptop.sendText('bob', 'before the phone 1');
    await ev.bob.message.wait((d) => d.message.text === 'before the phone 1');
    await bob.sendText('alice', 'reply from bob ✓');
    await ev.laptop.message.wait((d) => d.message.text === 'reply from bob ✓');
    await laptop.sendText('bob', 'before the phone 2');
    await laptop.sendText('alice', 'a note to myself');
    assert.equal((await laptop.messages('alice')).at(-1).status, 'sent', 'no other device: sent at once');
  });

  test('a new browser links through the provisioning relay and gets the history', async () => {
    phone = await client('phone');
    assert.equal(phone.linked, false);
    const offer = await phone.beginLink();
    assert.match(offer.text, /^sealpost-link:[A-Za-z0-9_-]{66}$/);
    assert.match(offer.fingerprint, /^[0-9a-f]{4}( [0-9a-f]{4}){3}$/);
    assert.ok(offer.expiresAt > Date.now() + 9 * 60_000);
    const waits = [];
    const linking = phone.completeLink({ deviceName: 'Phone', onWait: (/** @type {number} */ left) => waits.push(left) });
    // What the approving device shows the user before anything is sealed.
    const preview = laptop.previewLink(`  ${offer.text}\n`);
    assert.deepEqual(preview, { fingerprint: offer.fingerprint, username: 'alice', address: offer.address });
    assert.throws(() => laptop.previewLink('sealpost-link:n!pe'), hasCode('malformed'));
    assert.throws(() => laptop.previewLink('sealpost-link:nope'), hasCode('unsupported_version'));
    const stages = [];
    const approved = await laptop.approveLink(offer.text, { historyBytes: 100_000, onStage: (/** @type {string} */ s) => stages.push(s) });
    const linked = await linking;
    assert.deepEqual(linked, { username: 'alice', deviceId: 2, historyFollows: true });
    assert.deepEqual(approved, { deviceIds: [2], historyMessages: 4, historyChunks: 1 });
    assert.deepEqual(stages, ['sealed', 'joined', 'history']);
    assert.ok(waits.length >= 1);
    assert.equal(phone.registered, true);
    assert.equal(phone.username, 'alice');
    assert.equal(phone.deviceId, 2);

    await phone.connect();
    const { count } = await ev.phone['history-imported'].wait();
    assert.equal(count, 4);
    assert.deepEqual(ev.phone['history-progress'].seen.at(-1), { received: 1, total: 1 });
    const history = await phone.messages('bob');
    assert.deepEqual(
      history.map((/** @type {any} */ m) => [m.direction, m.text, m.status]),
      [
        ['out', 'before the phone 1', 'sent'],
        ['in', 'reply from bob ✓', 'read'],
        ['out', 'before the phone 2', 'sent'],
      ],
    );
    assert.deepEqual((await phone.messages('alice')).map((/** @type {any} */ m) => m.text), ['a note to myself']);
    const [first] = await laptop.messages('bob');
    assert.equal(history[0].sentAt, first.sentAt, 'the sender clock travels with the history');
    const devices = await laptop.devices();
    assert.deepEqual(
      devices.map((/** @type {any} */ d) => [d.deviceId, d.name, d.current, d.listed]),
      [
        [1, 'Laptop', true, true],
        [2, 'Phone', false, true],
      ],
    );
    assert.deepEqual(ev.phone.error.seen, []);
    assert.deepEqual(ev.laptop.error.seen, []);
  });

  test('a text from one device reaches the other as sent by me; bob gets it once', async () => {
    const sent = await laptop.sendText('bob', 'from the laptop');
    const copy = (await ev.phone.message.wait((d) => d.message.text === 'from the laptop')).message;
    assert.deepEqual(
      { peer: copy.peer, direction: copy.direction, status: copy.status, sentAt: copy.sentAt, senderDevice: copy.senderDevice },
      { peer: 'bob', direction: 'out', status: 'sent', sentAt: sent.sentAt, senderDevice: 1 },
    );
    await ev.bob.message.wait((d) => d.message.text === 'from the laptop');
    // Bob's receipt reaches both devices of alice: the copy moves on too.
    await ev.phone.status.wait((d) => d.id === copy.id && d.status === 'delivered');

    const fromPhone = await phone.sendText('bob', 'from the phone');
    const back = (await ev.laptop.message.wait((d) => d.message.text === 'from the phone')).message;
    assert.deepEqual([back.direction, back.peer, back.senderDevice, back.sentAt], ['out', 'bob', 2, fromPhone.sentAt]);
    const got = (await ev.bob.message.wait((d) => d.message.text === 'from the phone')).message;
    assert.equal(got.senderDevice, 2);
    await sleep(300);
    assert.equal(ev.bob.message.seen.filter((d) => d.message.text === 'from the phone').length, 1);

    // A note to self goes to the other device as a transcript too.
    await phone.sendText('alice', 'remember the milk');
    const note = (await ev.laptop.message.wait((d) => d.message.text === 'remember the milk')).message;
    assert.deepEqual([note.peer, note.direction], ['alice', 'out']);
  });

  test("bob's messages reach both of alice's devices", async () => {
    await bob.sendText('alice', 'to every device of alice');
    const [a, b] = await Promise.all([
      ev.laptop.message.wait((d) => d.message.text === 'to every device of alice'),
      ev.phone.message.wait((d) => d.message.text === 'to every device of alice'),
    ]);
    assert.equal(a.message.direction, 'in');
    assert.equal(b.message.direction, 'in');
    assert.deepEqual(ev.bob['device-refused'].seen, []);
  });

  test('a device the signed list does not name is refused, reported, and never encrypted to', async () => {
    // The server (here: bob's fetch) shows alice with a third device certified by another
    // account key, and then one certified by alice's key but absent from her list.
    const stranger = DeviceKeys.create(AccountIdentity.generate(), 7);
    bobFetch.rewrite = (name, data) => {
      if (name !== 'alice') return data;
      const certificate = stranger.certificate;
      return {
        ...data,
        devices: [...data.devices, { device_id: 7, registration_id: certificate.registrationId, certificate_b64: toBase64(certificate.encode()) }],
      };
    };
    const sent = await bob.sendText('alice', 'past the forged device');
    assert.ok(['sent', 'delivered'].includes(sent.status));
    const refused = await ev.bob['device-refused'].wait((d) => d.deviceId === 7);
    assert.deepEqual(refused, { username: 'alice', deviceId: 7, reason: "not certified by alice's account key" });
    assert.deepEqual(await bob.refusedDevices('alice'), [{ deviceId: 7, reason: "not certified by alice's account key" }]);
    await ev.phone.message.wait((d) => d.message.text === 'past the forged device');

    // The relay insists on the unlisted device: the send fails, nothing goes to it.
    const relay = bob._relay;
    const original = relay.request.bind(relay);
    relay.request = async (/** @type {any} */ frame) => {
      relay.request = original;
      return new DeviceMismatch({ requestId: frame.requestId, missing: [7], extra: [], stale: [] });
    };
    await assert.rejects(bob.sendText('alice', 'not to the forged device'), hasCode('unsigned_device'));
    const failed = (await bob.messages('alice')).at(-1);
    assert.deepEqual([failed.text, failed.status], ['not to the forged device', 'failed']);
    bobFetch.rewrite = null;
  });

  test('an older device list than one already seen is refused (a replay)', async () => {
    // Alice's account key signed version 1 (the laptop alone); bob has seen version 2.
    const accountSeed = await laptop._store.unseal((await laptop._store.get('keys', 'own')).accountSeed, 'own:accountSeed');
    const account = AccountIdentity.fromSeed(accountSeed);
    const keys = await laptop._api.accountKeys('alice');
    assert.equal(SignedDeviceList.decode(/** @type {Uint8Array} */ (keys.deviceList)).version, 2);
    const oldList = toBase64(SignedDeviceList.sign(account, 'alice', 1, 0, [laptop._device.certificate]).encode());
    bobFetch.rewrite = (name, data) => (name === 'alice' ? { ...data, device_list_b64: oldList } : data);
    await assert.rejects(bob.sendText('alice', 'to an old list'), hasCode('invalid_value'));
    // A server that sends no list at all is refused as well.
    bobFetch.rewrite = (name, data) => (name === 'alice' ? { ...data, device_list_b64: '' } : data);
    await assert.rejects(bob.sendText('alice', 'to no list'), hasCode('bad_response'));
    bobFetch.rewrite = null;
    await bob.sendText('alice', 'to the current list');
    await ev.laptop.message.wait((d) => d.message.text === 'to the current list');
  });

  test('rename, then revoke the phone: it gets nothing more, and the list moves on', async () => {
    const renamed = await laptop.renameDevice(2, 'Old phone');
    assert.equal(renamed.name, 'Old phone');
    await assert.rejects(laptop.renameDevice(2, '  '), hasCode('invalid_value'));
    await assert.rejects(laptop.revokeDevice(9), hasCode('unknown_device'));
    assert.equal(await laptop.revokeDevice(2), false);
    const error = await ev.phone.error.wait((d) => d.code === 'unauthorized');
    assert.equal(error.code, 'unauthorized');
    await until(() => phone.connectionState === 'offline', 'the phone offline');
    const keys = await laptop._api.accountKeys('alice');
    assert.equal(SignedDeviceList.decode(/** @type {Uint8Array} */ (keys.deviceList)).version, 3);
    assert.deepEqual(keys.devices.map((/** @type {any} */ d) => d.deviceId), [1]);
    assert.deepEqual((await laptop.devices()).map((/** @type {any} */ d) => d.deviceId), [1]);

    const before = ev.phone.message.seen.length;
    await bob.sendText('alice', 'after the revocation');
    await ev.laptop.message.wait((d) => d.message.text === 'after the revocation');
    await laptop.sendText('bob', 'laptop only now');
    await ev.bob.message.wait((d) => d.message.text === 'laptop only now');
    await sleep(500);
    assert.equal(ev.phone.message.seen.length, before, 'the revoked phone got something');
    await assert.rejects(phone.connect(), hasCode('unauthorized'));
  });

  test('linking: an expired or cancelled wait, and a code approved twice', async () => {
    const spare = await client('spare', { clock: () => Date.now() });
    const offer = await spare.beginLink();
    spare._clock = () => offer.expiresAt + 1;
    await assert.rejects(spare.completeLink(), hasCode('link_expired'));
    spare._clock = Date.now;
    await spare.beginLink();
    const controller = new AbortController();
    const waiting = spare.completeLink({ signal: controller.signal });
    await sleep(200);
    controller.abort();
    await assert.rejects(waiting, hasCode('closed'));
    spare.cancelLink();
    await assert.rejects(spare.completeLink(), hasCode('not_registered'));
    assert.equal(spare.linked, false);
  });
});
