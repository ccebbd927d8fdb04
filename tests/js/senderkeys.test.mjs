// Sender keys (static/js/protocol/senderkeys.js, docs/protocol.md 17.2): the chain KDF, the
// SenderKeyMessage layout and its decoding order, the receiver's checks in their order, the
// all-or-nothing rule (every flipped bit refused, the record unchanged) and the stored form;
// against the sender-key part of protocol/vectors/groups.json and the Python package.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ContentType,
  LABEL_SENDER_KEY_MESSAGE,
  MAX_JUMP,
  MAX_SENDER_KEY_ID,
  MAX_SENDER_KEY_STATES,
  MAX_SKIPPED_KEYS,
  MessageKind,
  SENDER_KEY_INFO,
  SenderKeyDistribution,
  SenderKeyMessage,
  SenderKeyRecord,
  SenderKeyState,
  Text,
  concatBytes,
  decodeContent,
  encodeContent,
  encodeVarint,
  peekKind,
  primitives as p,
  ratchet,
  senderMessageKey,
  signedPayload,
  utf8Encode,
} from '../../static/js/protocol/index.js';
import { errorOf, hex, loadVector, python, seededRandom, testStream, throwsSlug, unhex, utf8 } from './helpers.mjs';

const { kdfCk } = ratchet;

const GROUP = unhex('000102030405060708090a0b0c0d0e0f');

/**
 * A sender's chain drawn from `label`, and a receiver's record holding it.
 * @param {string} [label]
 */
function pair(label = 'alice/sender-key') {
  const sender = SenderKeyState.generate({ rng: testStream(utf8(label)) });
  const receiver = new SenderKeyRecord();
  receiver.processDistribution(sender.distribution(GROUP, 1_795_000_000_000));
  return { sender, receiver };
}

/**
 * `call` must throw one of `slugs` and leave `record` byte for byte as it was.
 * @param {SenderKeyRecord} record
 * @param {() => unknown} call
 * @param {...string} slugs
 */
function rejected(record, call, ...slugs) {
  const before = hex(record.encode());
  const error = throwsSlug(call, ...slugs);
  assert.equal(hex(record.encode()), before, 'a failed decryption changed the record');
  return error;
}

describe('the chain and the message', () => {
  test('message seed, chain step, key and nonce are the KDFs of 17.2', () => {
    const ck = p.sha256(utf8('chain'));
    const seed = p.hmacSha256(ck, Uint8Array.of(1));
    const next = p.hmacSha256(ck, Uint8Array.of(2));
    const out = p.hkdfSha256(seed, new Uint8Array(32), utf8Encode('Sealpost v1 sender key'), 56);
    const [key, nonce] = senderMessageKey(seed);
    assert.deepEqual([hex(key), hex(nonce)], [hex(out.slice(0, 32)), hex(out.slice(32))]);
    assert.equal(hex(SENDER_KEY_INFO), hex(utf8('Sealpost v1 sender key')));
    assert.equal(hex(LABEL_SENDER_KEY_MESSAGE), hex(utf8('Sealpost v1 sender key message')));

    // the sender's first two messages use ck_0 and ck_1
    const state = new SenderKeyState({
      keyId: 7,
      iteration: 0,
      chainKey: ck,
      signingPublic: p.ed25519PublicKey(new Uint8Array(32).fill(9)),
      signingSeed: new Uint8Array(32).fill(9),
    });
    const plaintext = encodeContent(new Text('x', 1));
    const first = SenderKeyMessage.decode(state.encrypt(GROUP, plaintext));
    const header = concatBytes(Uint8Array.of(0x13), GROUP, encodeVarint(7), encodeVarint(0));
    assert.equal(hex(first.header()), hex(header));
    assert.equal(hex(first.ciphertext), hex(p.aeadEncrypt(key, nonce, plaintext, header)));
    p.ed25519Verify(state.signingPublic, signedPayload(LABEL_SENDER_KEY_MESSAGE, concatBytes(header, first.ciphertext)), first.signature);
    assert.equal(hex(first.encode()), hex(concatBytes(header, first.ciphertext, first.signature)));
    const second = SenderKeyMessage.decode(state.encrypt(GROUP, plaintext));
    assert.equal(second.iteration, 1);
    const [key1, nonce1] = senderMessageKey(p.hmacSha256(next, Uint8Array.of(1)));
    assert.equal(hex(second.ciphertext), hex(p.aeadEncrypt(key1, nonce1, plaintext, second.header())));
    assert.equal(state.iteration, 2);
    assert.equal(hex(state.chainKey), hex(p.hmacSha256(next, Uint8Array.of(2))));
    assert.equal(hex(first.signedBytes()), hex(concatBytes(utf8('Sealpost v1 sender key message'), Uint8Array.of(0), header, first.ciphertext)));
  });

  test('a SenderKeyMessage is kind 3 (0x13) and round-trips', () => {
    const { sender } = pair();
    const encoded = sender.encrypt(GROUP, utf8('hello group'));
    const message = SenderKeyMessage.decode(encoded);
    assert.equal(encoded[0], 0x13);
    assert.equal(peekKind(encoded), MessageKind.SENDER_KEY);
    assert.equal(hex(message.encode()), hex(encoded));
    assert.equal(encoded.length, 1 + 16 + encodeVarint(message.keyId).length + 1 + (11 + 16) + 64);
  });

  test('decoding checks the type, then each field, then the size of the rest', () => {
    const sig = '00'.repeat(64);
    const cases = [
      ['', 'truncated'],
      ['23', 'unsupported_version'],
      ['14', 'unknown_type'],
      ['11', 'unknown_type'],
      ['13' + '00'.repeat(15), 'truncated'],
      ['13' + '00'.repeat(16), 'truncated'], // no key_id
      ['13' + '00'.repeat(16) + '00' + '00' + '00'.repeat(16) + sig, 'invalid_value'], // key_id 0
      ['13' + '00'.repeat(16) + '8080808008' + '00' + '00'.repeat(16) + sig, 'too_large'], // key_id 2**31
      ['13' + '00'.repeat(16) + '8000' + '00' + '00'.repeat(16) + sig, 'non_minimal_varint'],
      ['13' + '00'.repeat(16) + '01' + '8080808010' + '00'.repeat(16) + sig, 'too_large'], // iteration 2**32
      ['13' + '00'.repeat(16) + '01' + '00' + '00'.repeat(79), 'truncated'], // 79 bytes after the header
    ];
    for (const [encoded, slug] of cases) throwsSlug(() => SenderKeyMessage.decode(unhex(encoded)), slug);
    const smallest = SenderKeyMessage.decode(unhex('13' + '00'.repeat(16) + 'ffffffff07' + 'ffffffff0f' + '00'.repeat(80)));
    assert.deepEqual([smallest.keyId, smallest.iteration, smallest.ciphertext.length], [MAX_SENDER_KEY_ID, 2 ** 32 - 1, 16]);
  });
});

describe('decrypting', () => {
  test('in order, out of order, and each skipped key once', () => {
    const { sender, receiver } = pair();
    const messages = Array.from({ length: 6 }, (_, i) => sender.encrypt(GROUP, utf8(`m${i}`)));
    for (const i of [0, 3, 1, 5, 2, 4]) assert.equal(hex(receiver.decrypt(messages[i])), hex(utf8(`m${i}`)));
    for (const i of [0, 1, 2, 3, 4, 5]) rejected(receiver, () => receiver.decrypt(messages[i]), 'duplicate_message');
    assert.equal(receiver.states[0].skipped.size, 0);
    assert.equal(receiver.states[0].iteration, 6);
  });

  test('the checks come in the order of 17.2, and none changes the record', () => {
    const { sender, receiver } = pair();
    const seed = /** @type {Uint8Array} */ (sender.signingSeed);
    const first = SenderKeyMessage.decode(sender.encrypt(GROUP, utf8('first')));
    receiver.decrypt(first);

    // a chain this record does not hold: no_session, before the signature
    const other = pair('bob/sender-key').sender;
    const stranger = other.encrypt(GROUP, utf8('x'));
    rejected(receiver, () => receiver.decrypt(stranger), 'no_session');
    rejected(new SenderKeyRecord(), () => new SenderKeyRecord().decrypt(first), 'no_session');

    /**
     * A message of this chain at `iteration` with `ciphertext`, signed by `signer`.
     * @param {number} iteration
     * @param {Uint8Array} ciphertext
     * @param {Uint8Array} signer
     */
    const forge = (iteration, ciphertext, signer = seed) => {
      const unsigned = new SenderKeyMessage(GROUP, first.keyId, iteration, ciphertext, new Uint8Array(64));
      const signature = p.ed25519Sign(signer, unsigned.signedBytes());
      return new SenderKeyMessage(GROUP, first.keyId, iteration, ciphertext, signature).encode();
    };
    // a bad signature comes before the iteration checks: a replay, a jump, both unsigned
    rejected(receiver, () => receiver.decrypt(forge(0, first.ciphertext, new Uint8Array(32))), 'bad_signature');
    rejected(receiver, () => receiver.decrypt(forge(MAX_JUMP + 5, new Uint8Array(16), new Uint8Array(32))), 'bad_signature');
    // signed: a used iteration, then a jump past MAX_JUMP
    rejected(receiver, () => receiver.decrypt(forge(0, first.ciphertext)), 'duplicate_message');
    rejected(receiver, () => receiver.decrypt(forge(1 + MAX_JUMP + 1, new Uint8Array(16))), 'too_many_skipped');
    // signed, in reach, but not sealed under the message key: decrypt_failed, nothing kept
    rejected(receiver, () => receiver.decrypt(forge(1 + MAX_JUMP, new Uint8Array(32))), 'decrypt_failed');
    rejected(receiver, () => receiver.decrypt(forge(3, new Uint8Array(40))), 'decrypt_failed');
    // MAX_JUMP skipped keys exactly is allowed (the sender's chain is wound on unsent)
    for (let i = 0; i < MAX_JUMP; i++) sender.chainKey = p.hmacSha256(sender.chainKey, Uint8Array.of(2));
    sender.iteration += MAX_JUMP;
    const far = sender.encrypt(GROUP, utf8('far'));
    assert.equal(hex(receiver.decrypt(far)), hex(utf8('far')));
    assert.equal(receiver.states[0].skipped.size, MAX_SKIPPED_KEYS);
  });

  test('every flipped bit of a message is refused, and the record stays as it was', () => {
    const { sender, receiver } = pair();
    receiver.decrypt(sender.encrypt(GROUP, utf8('warm up')));
    sender.encrypt(GROUP, utf8('lost')); // so the target skips one key
    const encoded = sender.encrypt(GROUP, utf8('the target'));
    const before = hex(receiver.encode());
    for (let byte = 0; byte < encoded.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const forged = encoded.slice();
        forged[byte] ^= 1 << bit;
        const error = errorOf(() => receiver.decrypt(forged));
        assert.ok(error, `bit ${bit} of byte ${byte} was accepted`);
      }
    }
    assert.equal(hex(receiver.encode()), before);
    // and the real one still decrypts
    assert.equal(hex(receiver.decrypt(encoded)), hex(utf8('the target')));
  });

  test('skipped keys are bounded; an evicted one reads as already used', () => {
    const { sender, receiver } = pair();
    const messages = [];
    for (let i = 0; i < MAX_SKIPPED_KEYS + 3; i++) messages.push(sender.encrypt(GROUP, utf8(`m${i}`)));
    receiver.decrypt(messages[messages.length - 1]);
    const state = receiver.states[0];
    assert.equal(state.skipped.size, MAX_SKIPPED_KEYS);
    assert.deepEqual([...state.skipped.keys()].slice(0, 2), [2, 3]);
    rejected(receiver, () => receiver.decrypt(messages[0]), 'duplicate_message');
    rejected(receiver, () => receiver.decrypt(messages[1]), 'duplicate_message');
    assert.equal(hex(receiver.decrypt(messages[2])), hex(utf8('m2')));
    // the stored form keeps them, in increasing iteration
    assert.equal(hex(SenderKeyRecord.decode(receiver.encode()).encode()), hex(receiver.encode()));
  });

  test('a group message carries the group: another group id fails the signature or the AEAD', () => {
    const { sender, receiver } = pair();
    const message = SenderKeyMessage.decode(sender.encrypt(GROUP, utf8('hi')));
    const moved = new SenderKeyMessage(new Uint8Array(16), message.keyId, message.iteration, message.ciphertext, message.signature);
    rejected(receiver, () => receiver.decrypt(moved.encode()), 'bad_signature');
  });
});

describe('distribution and rotation', () => {
  test('SENDER_KEY content carries the chain as it stands; the receiver reads only what follows', () => {
    const { sender } = pair();
    const early = sender.encrypt(GROUP, utf8('before'));
    const content = sender.distribution(GROUP, 1_795_000_000_000);
    assert.ok(content instanceof SenderKeyDistribution);
    assert.deepEqual(
      [content.keyId, content.iteration, hex(content.chainKey), hex(content.signingKey)],
      [sender.keyId, 1, hex(sender.chainKey), hex(sender.signingPublic)],
    );
    const encoded = encodeContent(content);
    assert.equal(encoded[0], ContentType.SENDER_KEY);
    const decoded = decodeContent(encoded);
    assert.deepEqual(decoded, content);
    const joined = new SenderKeyRecord();
    joined.processDistribution(/** @type {SenderKeyDistribution} */ (decoded));
    rejected(joined, () => joined.decrypt(early), 'duplicate_message');
    assert.equal(hex(joined.decrypt(sender.encrypt(GROUP, utf8('after')))), hex(utf8('after')));
  });

  test('a repeated distribution does not rewind a chain; another signing key replaces it', () => {
    const { sender, receiver } = pair();
    const d = sender.distribution(GROUP, 5);
    const m0 = sender.encrypt(GROUP, utf8('m0'));
    receiver.decrypt(m0);
    receiver.processDistribution(d); // the same chain again, at iteration 0
    rejected(receiver, () => receiver.decrypt(m0), 'duplicate_message');
    const otherKey = p.ed25519PublicKey(new Uint8Array(32).fill(1));
    receiver.processDistribution(new SenderKeyDistribution(d.groupId, d.keyId, 0, d.chainKey, otherKey, 6));
    assert.equal(receiver.states.length, 1);
    rejected(receiver, () => receiver.decrypt(sender.encrypt(GROUP, utf8('m1'))), 'bad_signature');
    // what a distribution must hold
    const bad = (/** @type {Partial<SenderKeyDistribution>} */ change) =>
      Object.assign(Object.create(SenderKeyDistribution.prototype), { ...d, ...change });
    throwsSlug(() => receiver.processDistribution(bad({ keyId: 0 })), 'invalid_value');
    throwsSlug(() => receiver.processDistribution(bad({ keyId: MAX_SENDER_KEY_ID + 1 })), 'too_large');
    throwsSlug(() => receiver.processDistribution(bad({ iteration: 2 ** 32 })), 'too_large');
    throwsSlug(() => receiver.processDistribution(bad({ chainKey: new Uint8Array(31) })), 'invalid_value');
    throwsSlug(() => receiver.processDistribution(bad({ signingKey: new Uint8Array(33) })), 'invalid_value');
  });

  test('rotation starts a new chain; five chains are kept, newest first', () => {
    const receiver = new SenderKeyRecord();
    const rng = testStream(utf8('carol/rotations'));
    const old = [];
    const keyIds = [];
    for (let i = 0; i < MAX_SENDER_KEY_STATES + 2; i++) {
      const sender = SenderKeyState.generate({ rng });
      keyIds.unshift(sender.keyId);
      receiver.processDistribution(sender.distribution(GROUP, i));
      old.push(sender.encrypt(GROUP, utf8(`chain ${i}`)));
      assert.ok(sender.keyId >= 1 && sender.keyId <= MAX_SENDER_KEY_ID);
    }
    assert.equal(receiver.states.length, MAX_SENDER_KEY_STATES);
    assert.deepEqual(receiver.states.map((s) => s.keyId), keyIds.slice(0, MAX_SENDER_KEY_STATES));
    // the two oldest chains are gone, the five newest still decrypt
    rejected(receiver, () => receiver.decrypt(old[0]), 'no_session');
    rejected(receiver, () => receiver.decrypt(old[1]), 'no_session');
    for (let i = 2; i < old.length; i++) assert.equal(hex(receiver.decrypt(old[i])), hex(utf8(`chain ${i}`)));
    // a received chain cannot send: it has no signing seed
    throwsSlug(() => receiver.states[0].encrypt(GROUP, utf8('x')), 'invalid_value');
  });

  test('a new chain draws 4 bytes of key id (top bit cleared, 0 becomes 1), the chain key, the seed', () => {
    const draws = [Uint8Array.of(0xff, 0xff, 0xff, 0xff), new Uint8Array(32).fill(3), new Uint8Array(32).fill(4)];
    const fixed = (/** @type {Uint8Array[]} */ list) => (/** @type {number} */ n) => {
      const next = /** @type {Uint8Array} */ (list.shift());
      assert.equal(next.length, n);
      return next;
    };
    const state = SenderKeyState.generate({ rng: fixed(draws) });
    assert.deepEqual([state.keyId, state.iteration, hex(state.chainKey)], [MAX_SENDER_KEY_ID, 0, '03'.repeat(32)]);
    assert.equal(hex(/** @type {Uint8Array} */ (state.signingSeed)), '04'.repeat(32));
    assert.equal(hex(state.signingPublic), hex(p.ed25519PublicKey(new Uint8Array(32).fill(4))));
    const zero = SenderKeyState.generate({ rng: fixed([Uint8Array.of(0x80, 0, 0, 0), new Uint8Array(32), new Uint8Array(32)]) });
    assert.equal(zero.keyId, 1);
  });

  test('an exhausted chain refuses to encrypt', () => {
    const { sender } = pair();
    sender.iteration = 2 ** 32 - 1;
    sender.encrypt(GROUP, utf8('last'));
    throwsSlug(() => sender.encrypt(GROUP, utf8('one too many')), 'too_large');
    throwsSlug(() => sender.distribution(GROUP, 1), 'too_large');
    // and the exhausted chain is stored as it is
    const stored = new SenderKeyRecord([sender]);
    assert.equal(SenderKeyRecord.decode(stored.encode()).states[0].iteration, 2 ** 32);
  });
});

describe('the stored form', () => {
  test('is the layout of 17.2 and round-trips, with and without seeds and skipped keys', () => {
    const { sender: state, receiver } = pair();
    const sender = new SenderKeyRecord([state]);
    const expected = concatBytes(
      Uint8Array.of(1, 1),
      encodeVarint(state.keyId),
      Uint8Array.of(0),
      state.chainKey,
      state.signingPublic,
      Uint8Array.of(1),
      /** @type {Uint8Array} */ (state.signingSeed),
      Uint8Array.of(0),
    );
    assert.equal(hex(sender.encode()), hex(expected));
    for (let i = 0; i < 4; i++) state.encrypt(GROUP, utf8(`m${i}`));
    receiver.decrypt(state.encrypt(GROUP, utf8('m4')));
    const stored = receiver.encode();
    const r = receiver.states[0];
    const skipped = [0, 1, 2, 3].map((i) => concatBytes(Uint8Array.of(i), /** @type {Uint8Array} */ (r.skipped.get(i))));
    assert.equal(
      hex(stored),
      hex(concatBytes(Uint8Array.of(1, 1), encodeVarint(r.keyId), Uint8Array.of(5), r.chainKey, r.signingPublic, Uint8Array.of(0), Uint8Array.of(4), ...skipped)),
    );
    for (const record of [sender, receiver, new SenderKeyRecord()]) {
      assert.equal(hex(SenderKeyRecord.decode(record.encode()).encode()), hex(record.encode()));
    }
  });

  test('bad stored forms are refused with a clear code', () => {
    const good = new SenderKeyRecord([pair().sender]).encode();
    const state = hex(good.subarray(2));
    const cases = [
      ['', 'truncated'],
      ['02' + '00', 'unsupported_version'],
      ['01' + '06', 'too_large'],
      ['01' + '01', 'truncated'],
      [hex(good) + '00', 'trailing_bytes'],
      ['0101' + '00' + state.slice(2), 'invalid_value'], // key_id 0
      ['0101' + state.slice(0, -68) + '02' + state.slice(-66), 'invalid_value'], // has_seed 2
      ['0102' + state + state, 'invalid_value'], // the same key_id twice
    ];
    // skipped iterations must increase and stay below the state's iteration
    const chain = '11'.repeat(32) + '22'.repeat(32) + '00';
    const seed = '33'.repeat(32);
    throwsSlug(() => SenderKeyRecord.decode(unhex('0101' + '07' + '05' + chain + '02' + '03' + seed + '03' + seed)), 'invalid_value');
    throwsSlug(() => SenderKeyRecord.decode(unhex('0101' + '07' + '05' + chain + '02' + '03' + seed + '02' + seed)), 'invalid_value');
    throwsSlug(() => SenderKeyRecord.decode(unhex('0101' + '07' + '05' + chain + '01' + '05' + seed)), 'invalid_value');
    throwsSlug(() => SenderKeyRecord.decode(unhex('0101' + '07' + '8180808010' + chain + '00')), 'too_large'); // iteration 2**32 + 1
    const okay = SenderKeyRecord.decode(unhex('0101' + '07' + '05' + chain + '02' + '01' + seed + '04' + seed));
    assert.deepEqual([...okay.states[0].skipped.keys()], [1, 4]);
    for (const [encoded, slug] of cases) throwsSlug(() => SenderKeyRecord.decode(unhex(encoded)), slug);
  });

  test('random operations: the stored form always round-trips', () => {
    const random = seededRandom(99);
    const rng = testStream(utf8('dave/random'));
    let sender = SenderKeyState.generate({ rng });
    const receiver = new SenderKeyRecord();
    receiver.processDistribution(sender.distribution(GROUP, 0));
    /** @type {Uint8Array[]} */
    const pending = [];
    for (let step = 0; step < 200; step++) {
      const action = random.int(10);
      if (action === 0) {
        sender = SenderKeyState.generate({ rng });
        receiver.processDistribution(sender.distribution(GROUP, step));
      } else if (action < 6) {
        pending.push(sender.encrypt(GROUP, random.bytes(random.int(40))));
      } else if (pending.length) {
        const [message] = pending.splice(random.int(pending.length), 1);
        const before = hex(receiver.encode());
        const error = errorOf(() => receiver.decrypt(message));
        if (error) assert.equal(hex(receiver.encode()), before);
      }
      assert.equal(hex(SenderKeyRecord.decode(receiver.encode()).encode()), hex(receiver.encode()));
      const own = new SenderKeyRecord([sender]);
      assert.equal(hex(SenderKeyRecord.decode(own.encode()).encode()), hex(own.encode()));
    }
  });
});

describe('against Python', () => {
  const SCRIPT = `
import json, sys
from protocol.content import decode_content, encode_content
from protocol.errors import ProtocolError
from protocol.senderkeys import SenderKeyRecord, SenderKeyState

c = json.load(sys.stdin)
stream = bytearray(bytes.fromhex(c["draws"]))
def rng(n):
    out = bytes(stream[:n]); del stream[:n]; return out
group = bytes.fromhex(c["group"])
sender = SenderKeyState.generate(rng)
distribution = encode_content(sender.distribution(group, c["sent_at"]))
messages = [sender.encrypt(group, bytes.fromhex(m)).hex() for m in c["plaintexts"]]
receiver = SenderKeyRecord()
receiver.process_distribution(decode_content(distribution))
steps = []
for i in c["order"]:
    try:
        plaintext = receiver.decrypt(bytes.fromhex(c["messages"][i] if c["messages"] else messages[i])).hex()
    except ProtocolError as exc:
        plaintext = {"error": exc.code.slug}
    steps.append({"plaintext": plaintext, "record": receiver.encode().hex()})
print(json.dumps({
    "distribution": distribution.hex(),
    "messages": messages,
    "sender": SenderKeyRecord([sender]).encode().hex(),
    "steps": steps,
}))
`;

  test('the same draws give the same chain, messages, distribution and records, byte for byte', () => {
    const random = seededRandom(2024);
    const plaintexts = Array.from({ length: 8 }, (_, i) => hex(encodeContent(new Text(`group message ${i}`, 1_795_000_000_000 + i), i % 2 === 0)));
    const order = [0, 2, 1, 2, 7, 3, 0, 6, 5, 4];
    const c = { draws: hex(random.bytes(68)), group: hex(random.bytes(16)), sent_at: 1_795_000_000_000, plaintexts, order, messages: [] };
    const expected = python(SCRIPT, c);
    const ours = run(c);
    assert.deepEqual(ours, expected);
    // and each side decrypts the other's messages (the JS ones, fed to Python)
    assert.deepEqual(python(SCRIPT, { ...c, messages: ours.messages }).steps, expected.steps);
  });

  /**
   * The run of SCRIPT, in JavaScript.
   * @param {{draws: string, group: string, sent_at: number, plaintexts: string[], order: number[], messages: string[]}} c
   */
  function run(c) {
    const draws = unhex(c.draws);
    let offset = 0;
    const rng = (/** @type {number} */ n) => draws.slice(offset, (offset += n));
    const group = unhex(c.group);
    const sender = SenderKeyState.generate({ rng });
    const distribution = encodeContent(sender.distribution(group, c.sent_at));
    const messages = c.plaintexts.map((m) => hex(sender.encrypt(group, unhex(m))));
    const receiver = new SenderKeyRecord();
    receiver.processDistribution(/** @type {SenderKeyDistribution} */ (decodeContent(distribution)));
    const steps = c.order.map((i) => {
      /** @type {string | {error: string}} */
      let plaintext = '';
      const error = errorOf(() => {
        plaintext = hex(receiver.decrypt(unhex(c.messages.length ? c.messages[i] : messages[i])));
      });
      if (error) plaintext = { error: error.slug };
      return { plaintext, record: hex(receiver.encode()) };
    });
    return { distribution: hex(distribution), messages, sender: hex(new SenderKeyRecord([sender]).encode()), steps };
  }
});

describe('groups.json', () => {
  const doc = loadVector('groups.json');

  test('the chain: chain keys, message seeds, keys and nonces', () => {
    let chainKey = unhex(doc.chain_key);
    assert.equal(doc.chain.length, 4);
    for (const c of doc.chain) {
      assert.equal(hex(chainKey), c.chain_key);
      const [seed, next] = kdfCk(chainKey);
      assert.equal(hex(seed), c.message_seed);
      const [key, nonce] = senderMessageKey(seed);
      assert.deepEqual([hex(key), hex(nonce)], [c.key, c.nonce]);
      chainKey = next;
    }
  });

  test('the sender: stored records, messages and distribution, byte for byte', () => {
    const s = doc.sender;
    const seed = unhex(s.signing_seed);
    assert.equal(hex(p.ed25519PublicKey(seed)), s.signing_public);
    const sender = new SenderKeyState({
      keyId: s.key_id,
      iteration: 0,
      chainKey: unhex(s.chain_key),
      signingPublic: unhex(s.signing_public),
      signingSeed: seed,
    });
    assert.equal(hex(new SenderKeyRecord([sender]).encode()), s.record_before);
    assert.equal(hex(SenderKeyRecord.decode(unhex(s.record_before)).encode()), s.record_before);
    const group = unhex(s.group_id);
    assert.equal(hex(encodeContent(sender.distribution(group, 1_795_000_000_000))), s.distribution);
    const messages = s.texts.map((/** @type {string} */ text, /** @type {number} */ i) =>
      hex(sender.encrypt(group, encodeContent(new Text(text, 1_795_000_000_001 + i)))),
    );
    assert.deepEqual(messages, s.messages);
    assert.equal(hex(new SenderKeyRecord([sender]).encode()), s.record_after);
  });

  test('the receiver: every step gives the recorded plaintext or error and record', () => {
    const receiver = new SenderKeyRecord();
    receiver.processDistribution(/** @type {SenderKeyDistribution} */ (decodeContent(unhex(doc.sender.distribution))));
    assert.equal(hex(receiver.encode()), doc.receiver.initial);
    const seen = new Set();
    for (const step of doc.receiver.steps) {
      const before = hex(receiver.encode());
      if (step.error) {
        throwsSlug(() => receiver.decrypt(unhex(step.message)), step.error);
        assert.equal(hex(receiver.encode()), before, step.description);
        seen.add(step.error);
      } else {
        assert.equal(hex(receiver.decrypt(unhex(step.message))), step.plaintext, step.description);
      }
      assert.equal(hex(receiver.encode()), step.record_after, step.description);
      // a receiver restored from its stored form answers the same
      assert.equal(hex(SenderKeyRecord.decode(receiver.encode()).encode()), step.record_after);
    }
    assert.deepEqual(
      [...seen].sort(),
      ['bad_signature', 'decrypt_failed', 'duplicate_message', 'no_session', 'too_many_skipped'],
    );
  });

  test('invalid messages and stored records fail with the recorded error', () => {
    assert.ok(doc.invalid_messages.length >= 8);
    for (const c of doc.invalid_messages) throwsSlug(() => SenderKeyMessage.decode(unhex(c.encoded)), c.error);
    assert.ok(doc.invalid_records.length >= 8);
    for (const c of doc.invalid_records) throwsSlug(() => SenderKeyRecord.decode(unhex(c.encoded)), c.error);
  });
});

test('any bytes decode to a message or record, or a ProtocolError, never anything else', () => {
  const r = seededRandom(1707);
  const doc = loadVector('groups.json');
  const messages = doc.sender.messages.map(unhex);
  const records = [doc.sender.record_before, doc.receiver.initial, ...doc.receiver.steps.map((/** @type {{record_after: string}} */ s) => s.record_after)].map(unhex);
  const { receiver } = pair();
  for (let i = 0; i < 2000; i++) {
    const data = r.pick(r.bool() ? messages : records).slice();
    for (let j = 0; j < 1 + r.int(3); j++) data[r.int(data.length)] ^= 1 << r.int(8);
    const cut = r.bool() ? data.subarray(0, r.int(data.length + 1)) : data;
    errorOf(() => SenderKeyMessage.decode(cut));
    errorOf(() => SenderKeyRecord.decode(cut));
    errorOf(() => receiver.decrypt(cut));
  }
});
