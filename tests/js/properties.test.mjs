// Property-style tests of every wire encoding, with a seeded PRNG so that a failure can be
// replayed (tests/protocol/test_wire_properties.py and test_encoding.py are the Python
// counterparts, with Hypothesis):
//
// - decode(encode(x)) == x for well-formed values, and canonical formats re-encode a
//   decoded value to the very bytes it came from;
// - any decoder fed anything (random bytes, valid encodings of other types, valid
//   encodings with bits flipped and bytes cut, inserted or overwritten) returns a value or
//   throws ProtocolError with a format code, never anything else;
// - FrameStream gives the same frames for any split of its input, and fails for good.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  Ack,
  Deliver,
  DeviceCertificate,
  DeviceMessage,
  DeviceMismatch,
  ErrorCode,
  ErrorFrame,
  FrameStream,
  KemPreKey,
  MAX_VARINT,
  Notice,
  OneTimePreKey,
  PendingPreKey,
  Ping,
  Pong,
  PreKeyBundle,
  PreKeyMessage,
  ProtocolError,
  QueueEmpty,
  RatchetMessage,
  RatchetState,
  Reader,
  Send,
  SendOk,
  SessionRecord,
  SignedPreKey,
  Text,
  decodeContent,
  decodeFrame,
  encodeContent,
  encodeFrame,
  encodeVarint,
  normalizeUsername,
  checkUsername,
  pad,
  padmeLength,
  unpad,
} from '../../static/js/protocol/index.js';
import { TestParty, errorOf, hex, plaintext, seededRandom, throwsSlug, utf8 } from './helpers.mjs';

/** @typedef {ReturnType<typeof seededRandom>} Random */

const ITERATIONS = 2000;

// --- generators -------------------------------------------------------------------------

/** @param {Random} r */
function uint64(r) {
  switch (r.int(5)) {
    case 0:
      return r.int(128);
    case 1:
      return r.int(2 ** 32);
    case 2:
      return r.int(2 ** 21) * 2 ** 32 + r.int(2 ** 32); // up to 2**53 - 1
    case 3: {
      const high = BigInt(r.int(2 ** 31));
      const value = (high << 32n) | BigInt(r.int(2 ** 32));
      return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
    }
    default:
      return r.pick([0, 1, 127, 128, Number.MAX_SAFE_INTEGER, MAX_VARINT, 2n ** 53n]);
  }
}

/** @param {Random} r */
const positive = (r) => {
  const v = uint64(r);
  return v === 0 ? 1 : v;
};

/** @param {Random} r */
function username(r) {
  const first = 'abcdefghijklmnopqrstuvwxyz';
  const rest = `${first}0123456789_`;
  let out = first[r.int(26)];
  for (let i = 0, n = 2 + r.int(30); i < n; i++) out += rest[r.int(rest.length)];
  return out;
}

/** @param {Random} r */
function text(r) {
  const pieces = ['a', 'é', '世界', '👋', '\u0000', ' ', '\ufeff', 'Z', '\u00a0'];
  let out = '';
  for (let i = 0, n = r.int(40); i < n; i++) out += r.pick(pieces);
  return out;
}

/** @param {Random} r */
const deviceId = (r) => 1 + r.int(0xffff);
/** @param {Random} r */
const keyId = (r) => 1 + r.int(0xffffffff);
/** @param {Random} r */
const counter = (r) => (r.bool() ? r.int(200) : r.int(0x100000000));

/** @param {Random} r */
function frame(r) {
  switch (r.int(10)) {
    case 0:
      return new Send({
        requestId: positive(r),
        recipient: username(r),
        messages: Array.from({ length: 1 + r.int(4) }, () => new DeviceMessage(deviceId(r), keyId(r), r.bytes(1 + r.int(120)))),
        flags: r.int(2),
      });
    case 1:
      return new SendOk({ requestId: uint64(r), serverTimeMs: uint64(r) });
    case 2: {
      const ids = () => Array.from({ length: r.int(5) }, () => deviceId(r));
      return new DeviceMismatch({ requestId: uint64(r), missing: ids(), extra: ids(), stale: ids() });
    }
    case 3:
      return new Deliver({
        seq: uint64(r),
        sender: username(r),
        senderDevice: deviceId(r),
        serverTimeMs: uint64(r),
        payload: r.bytes(1 + r.int(120)),
        requestId: uint64(r),
      });
    case 4:
      return new Ack({ requestId: uint64(r), seqs: Array.from({ length: 1 + r.int(6) }, () => positive(r)) });
    case 5:
      return new QueueEmpty({ requestId: uint64(r) });
    case 6:
      return new ErrorFrame({ requestId: uint64(r), code: uint64(r), message: text(r) });
    case 7:
      return new Notice({ kind: uint64(r), value: uint64(r), requestId: uint64(r) });
    case 8:
      return new Ping({ requestId: positive(r) });
    default:
      return new Pong({ requestId: uint64(r) });
  }
}

/**
 * An X25519 public key as the wire carries it: the top bit of its last byte is clear.
 * @param {Random} r
 */
const x25519Key = (r) => {
  const key = r.bytes(32);
  key[31] &= 0x7f;
  return key;
};

/** @param {Random} r */
const certificate = (r) =>
  new DeviceCertificate({ deviceId: deviceId(r), registrationId: keyId(r), signingKey: r.bytes(32), identityKey: x25519Key(r), signature: r.bytes(64) });

/** @param {Random} r */
const ratchetMessage = (r) => new RatchetMessage(x25519Key(r), counter(r), counter(r), r.bytes(16 + r.int(100)));

/** @param {Random} r */
const prekeyMessage = (r) =>
  new PreKeyMessage({
    senderAccountKey: r.bytes(32),
    senderCertificate: certificate(r),
    baseKey: x25519Key(r),
    signedPrekeyId: keyId(r),
    oneTimePrekeyId: r.bool() ? null : keyId(r),
    kemPrekeyId: keyId(r),
    kemCiphertext: r.bytes(1088),
    message: ratchetMessage(r),
  });

/** @param {Random} r */
const bundle = (r) =>
  new PreKeyBundle({
    accountIdentityKey: r.bytes(32),
    certificate: certificate(r),
    signedPrekey: new SignedPreKey(keyId(r), x25519Key(r), r.bytes(64)),
    oneTimePrekey: r.bool() ? null : new OneTimePreKey(keyId(r), x25519Key(r)),
    kemPrekey: new KemPreKey(keyId(r), r.bool(), r.bytes(1184), r.bytes(64)),
  });

/** @param {Random} r */
function ratchetState(r) {
  const optional = () => (r.bool() ? null : r.bytes(32));
  const state = new RatchetState({
    associatedData: r.bytes(r.int(257)),
    baseKey: r.bytes(32),
    remoteIdentityKey: r.bytes(32),
    rootKey: r.bytes(32),
    sendingPrivate: r.bytes(32),
    sendingPublic: r.bytes(32),
    receivingKey: optional(),
    sendingChain: optional(),
    receivingChain: optional(),
    sendCounter: r.int(2 ** 32 + 1),
    receiveCounter: r.int(2 ** 32 + 1),
    previousSendingLength: r.int(2 ** 32 + 1),
    previousReceivingKeys: Array.from({ length: r.int(6) }, () => r.bytes(32)),
    pendingPrekey: r.bool()
      ? null
      : new PendingPreKey({
          senderAccountKey: r.bytes(32),
          senderCertificate: certificate(r),
          signedPrekeyId: keyId(r),
          oneTimePrekeyId: r.bool() ? null : keyId(r),
          kemPrekeyId: keyId(r),
          kemCiphertext: r.bytes(1088),
        }),
  });
  for (let i = 0, n = r.int(6); i < n; i++) {
    const ratchetKey = r.bytes(32);
    const c = counter(r);
    state.skipped.set(`${hex(ratchetKey)}:${c}`, { ratchetKey, counter: c, messageKey: r.bytes(32) });
  }
  for (let i = 0, n = r.int(7); i < n; i++) {
    const ratchetKey = r.bytes(32);
    /** @type {[number, number][]} */
    const ranges = [];
    for (let j = 0, at = r.int(1000), m = r.int(4); j < m; j++) {
      const end = at + r.int(50);
      ranges.push([at, end]);
      at = end + 2 + r.int(100);
    }
    state.discarded.set(hex(ratchetKey), { ratchetKey, ranges });
  }
  return state;
}

/** Records and states from an actual conversation: pending prekey state, skipped keys. */
const realEncodings = (() => {
  const alice = new TestParty('alice', { seed: 101 });
  const bob = new TestParty('bob', { seed: 102 });
  const aliceRecord = alice.initiate(bob.bundle());
  const bobRecord = new SessionRecord();
  const messages = [0, 1, 2, 3].map((i) => aliceRecord.encrypt(plaintext('alice', i)));
  bob.decrypt(bobRecord, messages[3]); // three skipped keys
  return [
    aliceRecord.encode(),
    bobRecord.encode(),
    ...[...aliceRecord.states, ...bobRecord.states].map((s) => s.encode()),
    ...messages,
    bobRecord.encrypt(utf8('reply')),
  ];
})();

/** @param {Random} r */
function validEncoding(r) {
  switch (r.int(8)) {
    case 0:
      return encodeFrame(frame(r));
    case 1:
      return ratchetMessage(r).encode();
    case 2:
      return prekeyMessage(r).encode();
    case 3:
      return bundle(r).encode();
    case 4:
      return certificate(r).encode();
    case 5:
      return encodeContent(new Text(text(r), uint64(r)), r.bool());
    case 6:
      return r.bool() ? ratchetState(r).encode() : new SessionRecord([ratchetState(r)]).encode();
    default:
      return r.pick(realEncodings);
  }
}

/**
 * @param {Random} r
 * @param {Uint8Array} base
 */
function mutated(r, base) {
  let data = [...base];
  for (let i = 0, n = 1 + r.int(3); i < n; i++) {
    let op = r.pick(['flip', 'truncate', 'insert', 'delete', 'set']);
    if (!data.length) op = 'insert';
    const at = r.int(data.length);
    if (op === 'flip') data[at] ^= 1 << r.int(8);
    else if (op === 'truncate') data = data.slice(0, at);
    else if (op === 'insert') data.splice(r.int(data.length + 1), 0, ...r.bytes(1 + r.int(9)));
    else if (op === 'delete') data.splice(at, 1 + r.int(9));
    else data[at] = r.int(256);
  }
  return Uint8Array.from(data);
}

// --- decoders ---------------------------------------------------------------------------

/** Decoders whose format has exactly one encoding per value: they re-encode to the input. */
const CANONICAL = {
  frame: (/** @type {Uint8Array} */ d) => encodeFrame(decodeFrame(d)),
  ratchet: (/** @type {Uint8Array} */ d) => RatchetMessage.decode(d).encode(),
  prekey: (/** @type {Uint8Array} */ d) => PreKeyMessage.decode(d).encode(),
  bundle: (/** @type {Uint8Array} */ d) => PreKeyBundle.decode(d).encode(),
  certificate: (/** @type {Uint8Array} */ d) => DeviceCertificate.decode(d).encode(),
};
/** Decoders promising only "a value or ProtocolError" (padding, the local store). */
const OTHER = {
  content: (/** @type {Uint8Array} */ d) => decodeContent(d),
  record: (/** @type {Uint8Array} */ d) => SessionRecord.decode(d),
  state: (/** @type {Uint8Array} */ d) => RatchetState.decode(d),
  varint: (/** @type {Uint8Array} */ d) => new Reader(d).varint64('v'),
};

/** Decoders of formats holding an X25519 public key (the local store too: a pending state's certificate). */
const X25519_KEY_DECODERS = ['ratchet', 'prekey', 'bundle', 'certificate', 'record', 'state'];

/**
 * @param {string} name
 * @param {Uint8Array} data
 */
function checkDecoder(name, data) {
  const error = errorOf(() => {
    if (name in CANONICAL) {
      const again = CANONICAL[/** @type {keyof typeof CANONICAL} */ (name)](data);
      assert.equal(hex(again), hex(data), `${name}: a decoded value re-encodes differently`);
    } else {
      OTHER[/** @type {keyof typeof OTHER} */ (name)](data);
    }
  });
  if (error !== null) {
    // Decoders report format errors (1xx); frames also check usernames and payload sizes,
    // and whatever holds an X25519 public key checks that its top bit is clear.
    const extra =
      name === 'frame'
        ? [ErrorCode.INVALID_USERNAME, ErrorCode.CIPHERTEXT_TOO_LARGE]
        : X25519_KEY_DECODERS.includes(name)
          ? [ErrorCode.BAD_KEY]
          : [];
    assert.ok(error.code < 200 || extra.includes(error.code), `${name}: unexpected ${error.message} for ${hex(data)}`);
  }
  return error;
}

const DECODERS = [...Object.keys(CANONICAL), ...Object.keys(OTHER)].sort();

describe('decoders: a value or a ProtocolError, never anything else', () => {
  for (const name of DECODERS) {
    test(`${name}: ${ITERATIONS} random inputs, ${ITERATIONS} mutated valid encodings, ${ITERATIONS} valid encodings of any type`, () => {
      const r = seededRandom(name.length * 7919 + name.charCodeAt(0));
      let accepted = 0;
      for (let i = 0; i < ITERATIONS; i++) {
        if (checkDecoder(name, r.bytes(r.int(400))) === null) accepted += 1;
        checkDecoder(name, mutated(r, validEncoding(r)));
        checkDecoder(name, validEncoding(r));
      }
      assert.ok(accepted >= 0);
    });
  }

  test('some known inputs', () => {
    checkDecoder('record', Uint8Array.of(1, 1, 0));
    checkDecoder('frame', utf8('\x01\x01\x00\x05alice\x00\x01\x01\x00\x00'));
    throwsSlug(() => SessionRecord.decode(Uint8Array.of(1, 12)), 'too_large');
    throwsSlug(() => decodeFrame(new Uint8Array(4 * 1024 * 1024 + 1)), 'too_large');
  });
});

// --- round trips ------------------------------------------------------------------------

describe('round trips', () => {
  test('frames', () => {
    const r = seededRandom(1);
    for (let i = 0; i < ITERATIONS; i++) {
      const f = frame(r);
      const encoded = encodeFrame(f);
      assert.deepEqual(decodeFrame(encoded), f);
      assert.equal(encoded[0], 1);
      assert.equal(encoded[1], f.type);
    }
  });

  test('messages, certificates, prekeys and bundles', () => {
    const r = seededRandom(2);
    for (let i = 0; i < 300; i++) {
      const m = ratchetMessage(r);
      assert.deepEqual(RatchetMessage.decode(m.encode()), m);
      assert.equal(m.encode()[0], 0x11);
      const pm = prekeyMessage(r);
      assert.deepEqual(PreKeyMessage.decode(pm.encode()), pm);
      assert.equal(pm.encode()[0], 0x12);
      const b = bundle(r);
      assert.deepEqual(PreKeyBundle.decode(b.encode()), b);
      const c = certificate(r);
      assert.deepEqual(DeviceCertificate.decode(c.encode()), c);
    }
  });

  test('ratchet states and session records', () => {
    const r = seededRandom(3);
    for (let i = 0; i < 300; i++) {
      const state = ratchetState(r);
      const encoded = state.encode();
      const decoded = RatchetState.decode(encoded);
      assert.deepEqual(decoded, state);
      assert.equal(hex(decoded.encode()), hex(encoded));
      const record = new SessionRecord(Array.from({ length: r.int(4) }, () => ratchetState(r)));
      assert.equal(hex(SessionRecord.decode(record.encode()).encode()), hex(record.encode()));
    }
  });

  test('TEXT content, padded and not', () => {
    const r = seededRandom(4);
    const cases = [new Text('', 0), new Text('ends with NULs\u0000\u0000', 1), new Text('\ufeffBOM kept', 2)];
    for (let i = 0; i < ITERATIONS; i++) cases.push(new Text(text(r), uint64(r)));
    for (const c of cases) {
      for (const hide of [false, true]) assert.deepEqual(decodeContent(encodeContent(c, hide)), c);
    }
    throwsSlug(() => encodeContent(new Text('lone \ud800 surrogate', 0)), 'invalid_utf8');
    throwsSlug(() => encodeContent(new Text('x'.repeat(64 * 1024 + 1), 0)), 'too_large');
    throwsSlug(() => decodeContent(Uint8Array.of(1, 0, 0xed, 0xa0, 0x80, 0x80)), 'invalid_utf8'); // encoded surrogate
    throwsSlug(() => decodeContent(Uint8Array.of(1, 0, 0xc0, 0xaf, 0x80)), 'invalid_utf8'); // overlong
    throwsSlug(() => decodeContent(Uint8Array.of(12, 0, 0x80)), 'unknown_type'); // 1-11 are taken
  });
});

// --- X25519 public keys on the wire ------------------------------------------------------

describe('X25519 public keys on the wire', () => {
  // As in tests/protocol/test_wire_properties.py: X25519 ignores the top bit of a public
  // key, so a key with it set is a second spelling of another key; every decoder refuses
  // one (bad_key, naming the field), and the other bits of the last byte are no concern.
  const alice = new TestParty('alice', { seed: 201 });
  const bob = new TestParty('bob', { seed: 202 });
  const b = bob.bundle();
  const setup = PreKeyMessage.decode(alice.initiate(b).encrypt(utf8('x')));
  const spk = b.signedPrekey;
  const opk = /** @type {OneTimePreKey} */ (b.oneTimePrekey);
  const readAll = (/** @type {(r: Reader) => unknown} */ read) => (/** @type {Uint8Array} */ d) => {
    const reader = new Reader(d);
    read(reader);
    reader.end('value');
  };
  const identity = /** @type {const} */ ([b.certificate.identityKey, 'identity_key']);
  const signed = /** @type {const} */ ([spk.publicKey, 'signed_prekey.public_key']);
  const oneTime = /** @type {const} */ ([opk.publicKey, 'one_time_prekey.public_key']);
  const ratchetKey = /** @type {const} */ ([setup.message.ratchetKey, 'ratchet_key']);
  /** @type {[string, (d: Uint8Array) => unknown, Uint8Array, Uint8Array, string][]} */
  const cases = [
    ['certificate', (d) => DeviceCertificate.decode(d), b.certificate.encode(), ...identity],
    ['signed prekey', readAll((r) => SignedPreKey.read(r)), spk.encode(), ...signed],
    ['one-time prekey', readAll((r) => OneTimePreKey.read(r)), opk.encode(), ...oneTime],
    ['bundle/certificate', (d) => PreKeyBundle.decode(d), b.encode(), ...identity],
    ['bundle/signed prekey', (d) => PreKeyBundle.decode(d), b.encode(), ...signed],
    ['bundle/one-time prekey', (d) => PreKeyBundle.decode(d), b.encode(), ...oneTime],
    ['ratchet message', (d) => RatchetMessage.decode(d), setup.message.encode(), ...ratchetKey],
    ['prekey message/base key', (d) => PreKeyMessage.decode(d), setup.encode(), setup.baseKey, 'base_key'],
    ['prekey message/certificate', (d) => PreKeyMessage.decode(d), setup.encode(), alice.device.identityKey, 'identity_key'],
    ['prekey message/ratchet key', (d) => PreKeyMessage.decode(d), setup.encode(), ...ratchetKey],
  ];
  for (const [name, decode, encoded, key, field] of cases) {
    test(`${name}: ${field} with its top bit set is bad_key`, () => {
      assert.equal(key[31] & 0x80, 0, 'key generation never sets the top bit');
      const last = Buffer.from(encoded).indexOf(Buffer.from(key)) + 31;
      assert.ok(last >= 31);
      decode(encoded);
      const flipped = (/** @type {number} */ mask) => {
        const out = encoded.slice();
        out[last] ^= mask;
        return out;
      };
      const error = throwsSlug(() => decode(flipped(0x80)), 'bad_key');
      assert.equal(error.detail, `${field} is not a canonical X25519 key`);
      decode(flipped(0x7f));
    });
  }
});

// --- varints and padding ----------------------------------------------------------------

describe('varints', () => {
  test('round trip, length and minimal form', () => {
    const r = seededRandom(5);
    for (let i = 0; i < ITERATIONS; i++) {
      const value = uint64(r);
      const encoded = encodeVarint(value);
      const reader = new Reader(encoded);
      assert.equal(reader.varint64('v'), value);
      reader.end('v');
      const bits = BigInt(value).toString(2).length;
      assert.equal(encoded.length, Math.max(1, Math.ceil(bits / 7)));
      assert.ok(encoded.length <= 9);
      assert.ok(encoded.subarray(0, -1).every((b) => b & 0x80));
      assert.ok(!(encoded[encoded.length - 1] & 0x80));
      assert.ok(encoded[encoded.length - 1] !== 0 || value === 0);
      // the same value with redundant continuation bytes is refused
      if (encoded.length < 9) {
        const padded = Uint8Array.of(...encoded.subarray(0, -1), encoded[encoded.length - 1] | 0x80, 0);
        throwsSlug(() => new Reader(padded).varint64('v'), 'non_minimal_varint');
      }
    }
  });

  test('out of range', () => {
    for (const bad of [-1, MAX_VARINT + 1n, 2n ** 64n, -1n]) throwsSlug(() => encodeVarint(bad), 'varint_overflow');
    throwsSlug(() => encodeVarint(1.5), 'invalid_value');
    throwsSlug(() => new Reader(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x1f)).varint('v', 0xffffffff), 'too_large');
    // the whole varint is read before the bound is checked
    throwsSlug(() => new Reader(Uint8Array.of(0xff, 0xff, 0xff)).varint('v', 10), 'truncated');
    assert.equal(new Reader(encodeVarint(2 ** 53)).varint64('v'), 2n ** 53n);
    assert.equal(new Reader(encodeVarint(2 ** 53 - 1)).varint64('v'), 2 ** 53 - 1);
  });
});

describe('padding', () => {
  test('Padmé bounds and unpad(pad(x)) == x', () => {
    const r = seededRandom(6);
    for (let length = 1; length < 5000; length++) {
      const padded = padmeLength(length);
      assert.ok(padded >= length);
      assert.ok(padded - length <= Math.max(1, length * 0.12), `padme(${length}) = ${padded}`);
    }
    for (let i = 0; i < 500; i++) {
      const data = r.bytes(r.int(300));
      for (const hide of [false, true]) assert.equal(hex(unpad(pad(data, hide))), hex(data));
    }
    for (const bad of [new Uint8Array(0), new Uint8Array(5), Uint8Array.of(1, 2, 0)]) throwsSlug(() => unpad(bad), 'invalid_padding');
  });
});

describe('usernames', () => {
  test('normalising user input and checking the wire form (docs/protocol.md, section 10)', () => {
    assert.equal(normalizeUsername(' Alice\t'), 'alice');
    assert.equal(normalizeUsername('\r\nBOB_42 '), 'bob_42');
    for (const bad of ['\u212Aelvin', '\u00a0bob', '\fbob', 'bob\u000b', '\ufeffbob', 'al', 'a'.repeat(33), '1abc', 'ab-c', 'ali ce', 'İnci']) {
      throwsSlug(() => normalizeUsername(bad), 'invalid_username');
    }
    assert.equal(checkUsername('alice'), 'alice');
    for (const bad of ['Alice', ' alice', 'alice\n', 'al']) throwsSlug(() => checkUsername(bad), 'invalid_username');
  });
});

// --- FrameStream ------------------------------------------------------------------------

describe('FrameStream', () => {
  test('any split of a stream gives the same frames', () => {
    const r = seededRandom(7);
    for (let i = 0; i < 300; i++) {
      const sequence = Array.from({ length: r.int(6) }, () => frame(r));
      const wire = Uint8Array.from(sequence.flatMap((f) => [...FrameStream.encode(f)]));
      assert.deepEqual(new FrameStream().feed(wire), sequence);
      const byteByByte = new FrameStream();
      const collected = [];
      for (let j = 0; j < wire.length; j++) collected.push(...byteByByte.feed(wire.subarray(j, j + 1)));
      assert.deepEqual(collected, sequence);
      const cuts = [...new Set(Array.from({ length: r.int(10) }, () => r.int(wire.length + 1)))].sort((a, b) => a - b);
      const pieces = new FrameStream();
      const out = [];
      let start = 0;
      for (const cut of [...cuts, wire.length]) {
        out.push(...pieces.feed(wire.subarray(start, cut)));
        start = cut;
      }
      assert.deepEqual(out, sequence);
    }
  });

  test('arbitrary bytes: what comes out is exactly what went in; errors are sticky', () => {
    const r = seededRandom(8);
    for (let i = 0; i < ITERATIONS; i++) {
      const data = r.bool()
        ? r.bytes(r.int(300))
        : mutated(r, Uint8Array.from(Array.from({ length: r.int(3) }, () => frame(r)).flatMap((f) => [...FrameStream.encode(f)])));
      const stream = new FrameStream();
      const out = [];
      let failed = false;
      for (let j = 0; j < data.length && !failed; j++) {
        try {
          out.push(...stream.feed(data.subarray(j, j + 1)));
        } catch (error) {
          if (!(error instanceof ProtocolError)) throw error;
          failed = true;
        }
      }
      const consumed = Uint8Array.from(out.flatMap((f) => [...FrameStream.encode(f)]));
      assert.equal(hex(data.subarray(0, consumed.length)), hex(consumed));
      if (failed) {
        throwsSlug(() => stream.feed(new Uint8Array(0)), 'malformed');
        throwsSlug(() => stream.feed(FrameStream.encode(new Ping({ requestId: 1 }))), 'malformed');
      }
    }
  });

  test('each framing error, then malformed', () => {
    for (const [bad, slug] of /** @type {[Uint8Array, string][]} */ ([
      [Uint8Array.of(0), 'truncated'],
      [Uint8Array.of(0x80, 0), 'non_minimal_varint'],
      [new Uint8Array(9).fill(0xff), 'varint_overflow'],
      [encodeVarint(4 * 1024 * 1024 + 1), 'too_large'],
      [Uint8Array.of(3, 1, 0x63, 0), 'unknown_type'],
    ])) {
      const stream = new FrameStream();
      throwsSlug(() => stream.feed(bad), slug);
      throwsSlug(() => stream.feed(new Uint8Array(0)), 'malformed');
    }
    const stream = new FrameStream();
    assert.deepEqual(stream.feed(new Uint8Array(0)), []);
    const ping = FrameStream.encode(new Ping({ requestId: 7 }));
    assert.deepEqual(stream.feed(ping.subarray(0, -1)), []);
    assert.deepEqual(stream.feed(ping.subarray(-1)), [new Ping({ requestId: 7 })]);
  });

  test('a bad frame fails the whole feed call: the good frames before it in that call are not returned', () => {
    const ping = FrameStream.encode(new Ping({ requestId: 7 }));
    const stream = new FrameStream();
    assert.deepEqual(stream.feed(ping), [new Ping({ requestId: 7 })]); // an earlier call keeps its frames
    throwsSlug(() => stream.feed(Uint8Array.from([...ping, ...ping, 3, 1, 0x63, 0])), 'unknown_type');
    throwsSlug(() => stream.feed(ping), 'malformed');
  });
});

describe('the encoder refuses what the decoder refuses', () => {
  test('frames', () => {
    const message = new DeviceMessage(1, 1, utf8('x'));
    throwsSlug(() => encodeFrame(new Send({ requestId: 0, recipient: 'alice', messages: [message] })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Ping({ requestId: 0n })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'Not A Name', messages: [message] })), 'invalid_username');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: [] })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: [new DeviceMessage(0, 1, utf8('x'))] })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: [new DeviceMessage(1, 0, utf8('x'))] })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: [new DeviceMessage(1, 1, new Uint8Array(0))] })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: [new DeviceMessage(1, 1, new Uint8Array(96 * 1024 + 1))] })), 'ciphertext_too_large');
    throwsSlug(() => encodeFrame(new Deliver({ seq: 1, sender: 'alice', senderDevice: 1, serverTimeMs: 1, payload: new Uint8Array(0) })), 'invalid_value');
    throwsSlug(() => encodeFrame(new DeviceMismatch({ requestId: 1, missing: [0], extra: [], stale: [] })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Ack({ requestId: 1, seqs: [] })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Ack({ requestId: 1, seqs: [1, 0n] })), 'invalid_value');
    throwsSlug(() => encodeFrame(new ErrorFrame({ requestId: 1, code: 1, message: 'lone \udc00' })), 'invalid_utf8');
    // every limit of the decoder, since encodeFrame checks its output with decodeFrame
    throwsSlug(() => encodeFrame(new ErrorFrame({ requestId: 1, code: 0, message: 'x'.repeat(4097) })), 'too_large');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: [message], flags: 2 })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: [new DeviceMessage(1, 2 ** 32, utf8('x'))] })), 'too_large');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: Array(1001).fill(message) })), 'too_large');
    throwsSlug(() => encodeFrame(new DeviceMismatch({ requestId: 1, missing: Array(1001).fill(1), extra: [], stale: [] })), 'too_large');
    throwsSlug(() => encodeFrame(new Ack({ requestId: 1, seqs: Array(10001).fill(1) })), 'too_large');
    const big = new DeviceMessage(1, 1, new Uint8Array(96 * 1024));
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'alice', messages: Array(43).fill(big) })), 'too_large');
  });
});
