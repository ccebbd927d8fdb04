// Sessions end to end in JavaScript: conversations, tampering, replays, identities,
// prekeys, the skip bounds, simultaneous initiation, storage. The same behaviours as
// tests/protocol/test_session.py (where Python's rules are the spec), so that the web
// client gives the same result and the same error for the same message.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  DeviceCertificate,
  LABEL_DEVICE_CERTIFICATE,
  MAX_ARCHIVED_STATES,
  MAX_JUMP,
  MAX_SKIPPED_KEYS,
  PreKeyMessage,
  RatchetMessage,
  SessionRecord,
  encodeVarint,
  ratchet,
  signedPayload,
} from '../../static/js/protocol/index.js';
import {
  TestParty,
  assertRejected,
  copyRecord,
  hex,
  plaintext,
  startConversation,
  testStream,
  throwsSlug,
  utf8,
} from './helpers.mjs';

/** @param {Uint8Array} a @param {Uint8Array} b */
const same = (a, b) => assert.equal(hex(a), hex(b));

/**
 * Move a record's current sending chain `steps` messages ahead without sending them.
 * @param {SessionRecord} record
 * @param {number} steps
 */
function advanceSendingChain(record, steps) {
  const state = /** @type {import('../../static/js/protocol/index.js').RatchetState} */ (record.current);
  let chain = /** @type {Uint8Array} */ (state.sendingChain);
  for (let i = 0; i < steps; i++) chain = ratchet.kdfCk(chain)[1];
  state.sendingChain = chain;
  state.sendCounter += steps;
}

describe('conversations', () => {
  for (const [oneTime, kemOneTime] of [
    [true, true],
    [false, true],
    [true, false],
    [false, false],
  ]) {
    test(`basic conversation (one-time prekey: ${oneTime}, one-time KEM prekey: ${kemOneTime})`, () => {
      const alice = new TestParty('alice');
      const bob = new TestParty('bob');
      const bundle = bob.bundle({ oneTime, kemOneTime });
      const aliceRecord = alice.initiate(bundle);
      const bobRecord = new SessionRecord();
      const first = aliceRecord.encrypt(utf8('hi'));
      assert.equal(first[0], 0x12, 'a PreKeyMessage until the first reply');
      const result = bobRecord.decrypt(first, bob.device, bob.store);
      same(result.plaintext, utf8('hi'));
      same(/** @type {Uint8Array} */ (result.senderAccountKey), alice.accountKey);
      same(/** @type {import('../../static/js/protocol/index.js').DeviceCertificate} */ (result.senderCertificate).encode(), alice.device.certificate.encode());
      assert.equal(result.consumedOneTimePrekeyId, oneTime ? 1 : null);
      assert.equal(result.consumedKemPrekeyId, kemOneTime ? 2 : null, 'a last-resort KEM prekey is never consumed');
      bob.store.apply(result);
      const reply = bobRecord.encrypt(utf8('hello'));
      assert.equal(reply[0], 0x11);
      same(alice.decrypt(aliceRecord, reply).plaintext, utf8('hello'));
      const next = aliceRecord.encrypt(utf8('now plain'));
      assert.equal(next[0], 0x11, 'a reply clears the pending prekey');
      same(bob.decrypt(bobRecord, next).plaintext, utf8('now plain'));
      for (let turn = 0; turn < 3; turn++) {
        same(bob.decrypt(bobRecord, aliceRecord.encrypt(plaintext('a', turn))).plaintext, plaintext('a', turn));
        same(alice.decrypt(aliceRecord, bobRecord.encrypt(plaintext('b', turn))).plaintext, plaintext('b', turn));
      }
    });
  }

  test('the session binds both account keys into AD (128 bytes)', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const [aliceRecord, bobRecord] = startConversation(alice, bob);
    const expected = hex(new Uint8Array([...alice.accountKey, ...alice.device.identityKey, ...bob.accountKey, ...bob.device.identityKey]));
    assert.equal(hex(/** @type {any} */ (aliceRecord.current).associatedData), expected);
    assert.equal(hex(/** @type {any} */ (bobRecord.current).associatedData), expected);
  });

  test('an empty record can neither send nor receive', () => {
    const bob = new TestParty('bob');
    const record = new SessionRecord();
    throwsSlug(() => record.encrypt(utf8('x')), 'no_session');
    const alice = new TestParty('alice');
    const [aliceRecord] = startConversation(alice, new TestParty('carol'));
    throwsSlug(() => record.decrypt(aliceRecord.encrypt(utf8('x')), bob.device, bob.store), 'no_session');
  });

  test('out of order in both directions, records restored from storage at every step', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    let [aliceRecord, bobRecord] = startConversation(alice, bob);
    const batch = [0, 1, 2, 3, 4].map((i) => aliceRecord.encrypt(plaintext('a', i)));
    for (const i of [3, 0, 4, 2, 1]) {
      bobRecord = copyRecord(bobRecord);
      same(bob.decrypt(bobRecord, batch[i]).plaintext, plaintext('a', i));
    }
    const back = [0, 1, 2].map((i) => bobRecord.encrypt(plaintext('b', i)));
    for (const i of [2, 0, 1]) {
      aliceRecord = copyRecord(aliceRecord);
      same(alice.decrypt(aliceRecord, back[i]).plaintext, plaintext('b', i));
    }
  });
});

describe('tampering', () => {
  // Bob's record and the messages to tamper with, made once.
  const alice = new TestParty('alice', { seed: 11 });
  const bob = new TestParty('bob', { seed: 12 });
  const [aliceRecord, bobRecord] = startConversation(alice, bob);
  const chain = [0, 1, 2, 3, 4, 5].map((i) => aliceRecord.encrypt(plaintext('chain', i)));
  bob.decrypt(bobRecord, chain[0]);
  bob.decrypt(bobRecord, chain[4]); // skipped keys for 1, 2, 3
  alice.decrypt(aliceRecord, bobRecord.encrypt(utf8('new chain please')));
  const newChain = aliceRecord.encrypt(utf8('first of a new chain'));
  const saved = bobRecord.encode();
  const targets = [
    ['a skipped key', chain[2], plaintext('chain', 2)],
    ['the current chain', chain[5], plaintext('chain', 5)],
    ['a new chain', newChain, utf8('first of a new chain')],
  ];

  for (const [name, data, expected] of /** @type {[string, Uint8Array, Uint8Array][]} */ (targets)) {
    test(`every flipped bit of a ratchet message on ${name} is rejected; the record is unchanged and the genuine message still decrypts`, () => {
      const record = SessionRecord.decode(saved);
      const store = bob.store.copy();
      for (let bit = 0; bit < data.length * 8; bit++) {
        const tampered = data.slice();
        tampered[bit >> 3] ^= 1 << (bit & 7);
        if (bit === (1 + 31) * 8 + 7) {
          // the top bit of the ratchet key: refused by the decoder
          assertRejected(record, () => record.decrypt(tampered, bob.device, store, { rng: bob.rng }), 'bad_key');
          continue;
        }
        assertRejected(
          record,
          () => record.decrypt(tampered, bob.device, store, { rng: bob.rng }),
          'decrypt_failed',
          'unsupported_version',
          'unknown_type',
          'duplicate_message',
          'too_many_skipped',
          'too_large',
          'non_minimal_varint',
          'varint_overflow', // a flipped continuation bit can run the counter into the ciphertext
          'truncated',
          'bad_key',
        );
      }
      for (let length = 0; length < data.length; length++) {
        assertRejected(record, () => record.decrypt(data.subarray(0, length), bob.device, store), 'truncated', 'decrypt_failed');
      }
      assertRejected(record, () => record.decrypt(new Uint8Array([...data, 0]), bob.device, store), 'decrypt_failed');
      same(record.decrypt(data, bob.device, store, { rng: bob.rng }).plaintext, expected);
    });
  }

  test('a flipped bit in every byte of a new PreKeyMessage (every 8th of the KEM ciphertext) is rejected with the code of its field', () => {
    const carol = new TestParty('carol', { seed: 13 });
    const dave = new TestParty('dave', { seed: 14 });
    const setup = carol.initiate(dave.bundle()).encrypt(utf8('setup'));
    const message = PreKeyMessage.decode(setup);
    const cert = message.senderCertificate;
    const certIds = encodeVarint(cert.deviceId).length + encodeVarint(cert.registrationId).length;
    const anyError = ['decrypt_failed', 'bad_signature', 'prekey_not_found', 'invalid_value', 'too_large', 'non_minimal_varint', 'varint_overflow', 'truncated', 'bad_key', 'duplicate_message', 'too_many_skipped', 'unsupported_version', 'unknown_type'];
    /** @type {[string, number, string[]][]} */
    const fields = [
      ['message type', 1, ['unsupported_version', 'unknown_type']],
      ['sender account key', 32, ['untrusted_identity']],
      ['certificate ids', certIds, anyError],
      ['certificate signing key', 32, ['bad_signature']],
      ['certificate identity key', 32, ['bad_signature']],
      ['certificate signature', 64, ['bad_signature']],
      ['base key', 32, ['decrypt_failed']],
      ['signed prekey id', encodeVarint(message.signedPrekeyId).length, anyError],
      ['one-time prekey id', encodeVarint(message.oneTimePrekeyId ?? 0).length, anyError],
      ['kem prekey id', encodeVarint(message.kemPrekeyId).length, anyError],
      ['kem ciphertext', 1088, ['decrypt_failed']],
      ['ratchet message type', 1, ['unsupported_version', 'unknown_type']],
      ['ratchet key', 32, ['decrypt_failed']],
      ['counters', 2, anyError],
      ['ciphertext and tag', setup.length, ['decrypt_failed']],
    ];
    /** @type {[string, number, number, string[]][]} */
    const regions = [];
    let at = 0;
    for (const [name, size, codes] of fields) {
      regions.push([name, at, Math.min(at + size, setup.length), codes]);
      at += size;
    }
    const record = new SessionRecord();
    // The top bit of an X25519 key is refused by the decoder (bad_key), whatever else.
    const x25519Keys = ['certificate identity key', 'base key', 'ratchet key'];
    const topBits = new Set(regions.filter(([name]) => x25519Keys.includes(name)).map(([, start]) => (start + 31) * 8 + 7));
    const [, kemStart, kemEnd] = /** @type {[string, number, number, string[]]} */ (regions.find(([name]) => name === 'kem ciphertext'));
    const bits = [...topBits];
    for (let index = 0; index < setup.length; index++) {
      // every 8th byte of the KEM ciphertext (each costs a decapsulation), every other byte
      if (index >= kemStart && index < kemEnd && (index - kemStart) % 8) continue;
      bits.push(index * 8 + ((index * 3) % 8)); // one bit per byte, every position in turn
    }
    for (const bit of bits) {
      const index = bit >> 3;
      const tampered = setup.slice();
      tampered[index] ^= 1 << (bit & 7);
      const region = /** @type {[string, number, number, string[]]} */ (regions.find(([, start, end]) => start <= index && index < end));
      const error = assertRejected(
        record,
        () => record.decrypt(tampered, dave.device, dave.store, { trustedAccountKey: carol.accountKey }),
        ...(topBits.has(bit) ? ['bad_key'] : region[3]),
      );
      assert.ok(error, region[0]);
    }
    same(dave.decrypt(record, setup, carol.accountKey).plaintext, utf8('setup'));
  });

  for (const replied of [false, true]) {
    test(`a copy of a PreKeyMessage with the base key's top bit flipped is bad_key, not a new session (${replied ? 'after' : 'before'} the reply)`, () => {
      // X25519 ignores the top bit of a u-coordinate, and the base key enters the session
      // only through DH outputs, so a base key with its top bit flipped gives the same keys
      // but is another "base key" for the repeat check (docs/protocol.md 5.3). Without a
      // one-time X25519 or KEM prekey nothing is consumed, so such a copy used to be accepted
      // again as a new session (a replay). Decoders now refuse the non-canonical key, as in
      // tests/protocol/test_session.py.
      const alice = new TestParty('alice', { seed: 31 });
      const bob = new TestParty('bob', { seed: 32 });
      const aliceRecord = alice.initiate(bob.bundle({ oneTime: false, kemOneTime: false }));
      const data = aliceRecord.encrypt(utf8('pay 100'));
      const record = new SessionRecord();
      same(bob.decrypt(record, data).plaintext, utf8('pay 100'));
      if (replied) alice.decrypt(aliceRecord, record.encrypt(utf8('ok')));
      const message = PreKeyMessage.decode(data);
      const baseKey = message.baseKey.slice();
      baseKey[31] ^= 0x80;
      const flipped = new PreKeyMessage({ ...message, baseKey }).encode();
      const error = assertRejected(record, () => bob.decrypt(record, flipped), 'bad_key');
      assert.equal(/** @type {any} */ (error).detail, 'base_key is not a canonical X25519 key');
      // also on an empty record (Bob lost his session) and with a trusted sender
      const empty = new SessionRecord();
      assertRejected(empty, () => bob.decrypt(empty, flipped, alice.accountKey), 'bad_key');
      assert.equal(record.states.length, 1);
      assertRejected(record, () => bob.decrypt(record, data), 'duplicate_message');
    });
  }

  test('a ratchet message whose ratchet key has its top bit flipped is bad_key', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const [aliceRecord, bobRecord] = startConversation(alice, bob);
    const data = aliceRecord.encrypt(utf8('once'));
    same(bob.decrypt(bobRecord, data).plaintext, utf8('once'));
    const message = RatchetMessage.decode(data);
    const ratchetKey = message.ratchetKey.slice();
    ratchetKey[31] ^= 0x80;
    const twin = new RatchetMessage(ratchetKey, message.previousChainLength, message.counter, message.ciphertext);
    const error = assertRejected(bobRecord, () => bob.decrypt(bobRecord, twin.encode()), 'bad_key');
    assert.equal(/** @type {any} */ (error).detail, 'ratchet_key is not a canonical X25519 key');
  });

  test('a tampered repeat of an accepted PreKeyMessage gives at most the genuine plaintext and nothing else', () => {
    // As in Python: a repeat is recognised by its base key alone; its other setup fields
    // are not compared with the session (docs/protocol.md 5.3 step 3).
    const erin = new TestParty('erin', { seed: 15 });
    const frank = new TestParty('frank', { seed: 16 });
    const record = erin.initiate(frank.bundle());
    const setup = [0, 1].map((i) => record.encrypt(plaintext('setup', i)));
    const frankRecord = new SessionRecord();
    frank.decrypt(frankRecord, setup[0]);
    const message = PreKeyMessage.decode(setup[1]);
    const mallory = new TestParty('mallory', { seed: 99 });
    const forged = new PreKeyMessage({
      ...message,
      senderAccountKey: mallory.accountKey,
      senderCertificate: mallory.device.certificate,
      signedPrekeyId: 77,
      oneTimePrekeyId: null,
    }).encode();
    const result = frank.decrypt(copyRecord(frankRecord), forged);
    same(result.plaintext, plaintext('setup', 1));
    assert.equal(result.senderAccountKey, null);
    assert.equal(result.consumedOneTimePrekeyId, null);
    assert.equal(result.consumedKemPrekeyId, null);
    // with the caller's trusted key, the changed account key is refused
    assertRejected(frankRecord, () => frank.decrypt(frankRecord, forged, erin.accountKey), 'untrusted_identity');
  });
});

describe('replays', () => {
  test('a replayed message is a duplicate, also one decrypted with a skipped key', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const [aliceRecord, bobRecord] = startConversation(alice, bob);
    const data = aliceRecord.encrypt(utf8('once'));
    const later = aliceRecord.encrypt(utf8('twice'));
    same(bob.decrypt(bobRecord, data).plaintext, utf8('once'));
    assertRejected(bobRecord, () => bob.decrypt(bobRecord, data), 'duplicate_message');
    same(bob.decrypt(bobRecord, later).plaintext, utf8('twice'));
    const skipped = [0, 1, 2].map((i) => aliceRecord.encrypt(plaintext('s', i)));
    bob.decrypt(bobRecord, skipped[2]);
    bob.decrypt(bobRecord, skipped[0]);
    for (const replay of [skipped[0], skipped[2]]) {
      assertRejected(bobRecord, () => bob.decrypt(bobRecord, replay), 'duplicate_message');
    }
  });

  test('a replay from an earlier chain is a duplicate', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const [aliceRecord, bobRecord] = startConversation(alice, bob);
    const old = aliceRecord.encrypt(utf8('old chain'));
    bob.decrypt(bobRecord, old);
    for (let turn = 0; turn < 3; turn++) {
      alice.decrypt(aliceRecord, bobRecord.encrypt(plaintext('b', turn)));
      bob.decrypt(bobRecord, aliceRecord.encrypt(plaintext('a', turn)));
    }
    assertRejected(bobRecord, () => bob.decrypt(bobRecord, old), 'duplicate_message');
  });

  test('a replayed PreKeyMessage after the reply is a duplicate, not a new session', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const aliceRecord = alice.initiate(bob.bundle());
    const bobRecord = new SessionRecord();
    const first = aliceRecord.encrypt(utf8('first'));
    bob.decrypt(bobRecord, first);
    alice.decrypt(aliceRecord, bobRecord.encrypt(utf8('reply')));
    assertRejected(bobRecord, () => bob.decrypt(bobRecord, first), 'duplicate_message');
    assert.equal(bobRecord.states.length, 1);
  });
});

describe('identities and prekeys', () => {
  test('untrusted identity: a PreKeyMessage from another account key than the trusted one', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const data = alice.initiate(bob.bundle()).encrypt(utf8('x'));
    const record = new SessionRecord();
    assertRejected(record, () => bob.decrypt(record, data, new TestParty('mallory').accountKey), 'untrusted_identity');
    same(bob.decrypt(record, data, alice.accountKey).plaintext, utf8('x'));
  });

  test('a sender certificate not signed by the sender account is bad_signature', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const message = PreKeyMessage.decode(alice.initiate(bob.bundle()).encrypt(utf8('x')));
    const forged = new PreKeyMessage({ ...message, senderAccountKey: new TestParty('mallory').accountKey }).encode();
    const record = new SessionRecord();
    assertRejected(record, () => bob.decrypt(record, forged), 'bad_signature');
  });

  test("a session cannot be passed off under another account (the account keys are in AD)", () => {
    // Mallory re-signs Alice's device certificate under her own account key.
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const mallory = new TestParty('mallory');
    const message = PreKeyMessage.decode(alice.initiate(bob.bundle()).encrypt(utf8('x')));
    const cert = message.senderCertificate;
    const resigned = new DeviceCertificate({ ...cert, signature: mallory.account.sign(signedPayload(LABEL_DEVICE_CERTIFICATE, cert.body())) });
    const forged = new PreKeyMessage({ ...message, senderAccountKey: mallory.accountKey, senderCertificate: resigned }).encode();
    const record = new SessionRecord();
    assertRejected(record, () => bob.decrypt(record, forged), 'decrypt_failed');
  });

  test('a used one-time prekey, or an unknown prekey id, is prekey_not_found', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const bundle = bob.bundle();
    const first = alice.initiate(bundle).encrypt(utf8('first'));
    bob.decrypt(new SessionRecord(), first);
    const again = new TestParty('alice2').initiate(bundle).encrypt(utf8('same bundle'));
    const record = new SessionRecord();
    assertRejected(record, () => bob.decrypt(record, again), 'prekey_not_found');
    const message = PreKeyMessage.decode(new TestParty('alice3').initiate(bob.bundle()).encrypt(utf8('x')));
    for (const change of [{ signedPrekeyId: 9 }, { kemPrekeyId: 99 }, { oneTimePrekeyId: 42 }]) {
      const forged = new PreKeyMessage({ ...message, ...change }).encode();
      assertRejected(record, () => bob.decrypt(record, forged), 'prekey_not_found');
    }
  });
});

describe('skip bounds', () => {
  test('a jump of exactly MAX_JUMP is accepted; one more is too_many_skipped', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const [aliceRecord, bobRecord] = startConversation(alice, bob);
    const ahead = copyRecord(aliceRecord);
    advanceSendingChain(ahead, MAX_JUMP + 1);
    assertRejected(bobRecord, () => bob.decrypt(bobRecord, ahead.encrypt(utf8('too far'))), 'too_many_skipped');
    advanceSendingChain(aliceRecord, MAX_JUMP);
    const data = aliceRecord.encrypt(utf8('far ahead'));
    assert.equal(RatchetMessage.decode(data).counter, MAX_JUMP);
    same(bob.decrypt(bobRecord, data).plaintext, utf8('far ahead'));
    assert.equal(/** @type {any} */ (bobRecord.current).skipped.size, MAX_SKIPPED_KEYS);
  });

  test('the jump forced by previous_chain_length counts against the same budget', () => {
    for (const [extra, accepted] of [
      [0, true],
      [1, false],
    ]) {
      const alice = new TestParty('alice');
      const bob = new TestParty('bob');
      const aliceRecord = alice.initiate(bob.bundle());
      const bobRecord = new SessionRecord();
      bob.decrypt(bobRecord, aliceRecord.encrypt(utf8('first')));
      advanceSendingChain(aliceRecord, MAX_JUMP + /** @type {number} */ (extra));
      alice.decrypt(aliceRecord, bobRecord.encrypt(utf8('reply')));
      const data = aliceRecord.encrypt(utf8('new chain'));
      if (accepted) same(bob.decrypt(bobRecord, data).plaintext, utf8('new chain'));
      else assertRejected(bobRecord, () => bob.decrypt(bobRecord, data), 'too_many_skipped');
    }
  });

  test('the skipped-key store evicts the oldest; a message whose key was evicted is too_many_skipped, not a duplicate', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const [aliceRecord, bobRecord] = startConversation(alice, bob);
    const total = MAX_SKIPPED_KEYS + 500;
    const sent = Array.from({ length: total }, (_, i) => aliceRecord.encrypt(plaintext('m', i)));
    same(bob.decrypt(bobRecord, sent[total - 1]).plaintext, plaintext('m', total - 1));
    assert.equal(/** @type {any} */ (bobRecord.current).skipped.size, MAX_SKIPPED_KEYS);
    const evicted = total - 1 - MAX_SKIPPED_KEYS;
    for (const index of [0, 1, evicted >> 1, evicted - 1]) {
      assertRejected(bobRecord, () => bob.decrypt(bobRecord, sent[index]), 'too_many_skipped');
    }
    for (const index of [evicted, evicted + 1, total >> 1, total - 3, total - 2]) {
      same(bob.decrypt(bobRecord, sent[index]).plaintext, plaintext('m', index));
    }
    assertRejected(bobRecord, () => bob.decrypt(bobRecord, sent[evicted]), 'duplicate_message');
    assert.equal(/** @type {any} */ (bobRecord.current).skipped.size, MAX_SKIPPED_KEYS - 5);
    assert.equal(/** @type {any} */ (bobRecord.current).discarded.size, 1);
    assert.equal(hex(copyRecord(bobRecord).encode()), hex(bobRecord.encode()));
  });
});

describe('records', () => {
  test('simultaneous initiation converges and loses no message', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    const aliceRecord = alice.initiate(bob.bundle());
    const bobRecord = bob.initiate(alice.bundle());
    const fromAlice = aliceRecord.encrypt(utf8('from alice'));
    const fromBob = bobRecord.encrypt(utf8('from bob'));
    same(bob.decrypt(bobRecord, fromAlice).plaintext, utf8('from alice'));
    same(alice.decrypt(aliceRecord, fromBob).plaintext, utf8('from bob'));
    assert.equal(aliceRecord.states.length, 2);
    for (let turn = 0; turn < 3; turn++) {
      same(bob.decrypt(bobRecord, aliceRecord.encrypt(plaintext('a', turn))).plaintext, plaintext('a', turn));
      same(alice.decrypt(aliceRecord, bobRecord.encrypt(plaintext('b', turn))).plaintext, plaintext('b', turn));
    }
    same(/** @type {any} */ (aliceRecord.current).baseKey, /** @type {any} */ (bobRecord.current).baseKey);
  });

  test('the archive is bounded to MAX_ARCHIVED_STATES earlier states', () => {
    const alice = new TestParty('alice');
    const bob = new TestParty('bob');
    let record = null;
    for (let i = 0; i < MAX_ARCHIVED_STATES + 3; i++) record = alice.initiate(bob.bundle(), record);
    assert.equal(/** @type {SessionRecord} */ (record).states.length, 1 + MAX_ARCHIVED_STATES);
    assert.equal(hex(copyRecord(/** @type {SessionRecord} */ (record)).encode()), hex(/** @type {SessionRecord} */ (record).encode()));
  });

  test('restored records continue identically (same rng, same bytes)', () => {
    const alice = new TestParty('alice', { seed: 21 });
    const bob = new TestParty('bob', { seed: 22 });
    const originals = startConversation(alice, bob);
    const restored = [copyRecord(originals[0]), copyRecord(originals[1])];
    // The same randomness for an original and its copy (a DH step draws a ratchet key).
    const streams = [0, 1].map(() => [testStream(utf8('a')), testStream(utf8('b'))]);
    const stores = [bob.store.copy(), bob.store.copy()];
    for (let turn = 0; turn < 4; turn++) {
      const sides = /** @type {const} */ ([
        [0, 1, alice, bob],
        [1, 0, bob, alice],
      ]);
      for (const [from, to, , receiver] of sides) {
        const [x, y] = [originals, restored].map((records) => records[from].encrypt(plaintext(`t${from}`, turn)));
        same(x, y);
        for (const [copy, records] of /** @type {const} */ ([[0, originals], [1, restored]])) {
          const result = records[to].decrypt(x, receiver.device, stores[copy], { rng: streams[copy][to] });
          same(result.plaintext, plaintext(`t${from}`, turn));
        }
      }
    }
    same(originals[0].encode(), restored[0].encode());
    same(originals[1].encode(), restored[1].encode());
  });
});
