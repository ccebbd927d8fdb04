// Every known-answer vector of protocol/vectors/*.json, replayed against the JavaScript
// protocol: the web client must produce and accept exactly the bytes the Python reference
// implementation does. The vectors come from scripts/make_vectors.py (deterministic; the
// Python suite checks the committed files equal a fresh run).

import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { describe, test } from 'node:test';

import {
  AccountIdentity,
  DeviceMessage,
  DeviceCertificate,
  DeviceKeys,
  ErrorCode,
  ErrorFrame,
  FrameStream,
  GroupSend,
  HistoryChunk,
  HistoryRecord,
  KemPreKey,
  LinkCode,
  MAX_TTL_SECONDS,
  OneTimePreKey,
  PreKeyBundle,
  PreKeyMessage,
  ProvisionMessage,
  RatchetMessage,
  Reader,
  Send,
  SendFlags,
  SentTranscript,
  SessionRecord,
  SignedDeviceList,
  SignedPreKey,
  Text,
  certificateDigest,
  checkDevices,
  concatBytes,
  decodeContent,
  decodeFrame,
  encodeContent,
  encodeFrame,
  encodeVarint,
  errorCodeFromSlug,
  errorSlug,
  frameTypeName,
  openSealed,
  pad,
  padmeLength,
  pqxdh,
  primitives as p,
  ratchet,
  safetyNumber,
  seal,
  splitHistory,
} from '../../static/js/protocol/index.js';
import {
  VECTORS,
  VectorParty,
  assertRejected,
  contentFromFields,
  deterministicEncapsulate,
  hex,
  loadVector,
  testStream,
  throwsSlug,
  unhex,
  utf8,
} from './helpers.mjs';

// groups.json and attachments.json are replayed in groups.test.mjs, senderkeys.test.mjs and
// attachments.test.mjs.
const KNOWN_FILES = [
  'attachments.json',
  'content.json',
  'devicelist.json',
  'encoding.json',
  'error_codes.json',
  'frames.json',
  'groups.json',
  'kdf.json',
  'keys.json',
  'provisioning.json',
  'safety_number.json',
  'session.json',
];

test('every vector file has a replay here', () => {
  const files = readdirSync(VECTORS).filter((name) => name.endsWith('.json')).sort();
  assert.deepEqual(files, KNOWN_FILES, 'a new vector file needs a JS replay here (or in its own test file)');
});

test('error_codes.json: the JS ErrorCode table equals the Python enum, in order', () => {
  const { codes } = loadVector('error_codes.json');
  const table = Object.entries(ErrorCode).map(([name, code]) => ({ code, slug: name.toLowerCase() }));
  assert.deepEqual(table, codes);
  assert.equal(new Set(codes.map((/** @type {{code: number}} */ c) => c.code)).size, codes.length);
  for (const { code, slug } of codes) {
    assert.equal(errorSlug(code), slug);
    assert.equal(errorCodeFromSlug(slug), code);
  }
  assert.equal(errorCodeFromSlug('bad_signature'), ErrorCode.BAD_SIGNATURE);
  assert.throws(() => errorCodeFromSlug('BAD_SIGNATURE'));
  assert.throws(() => errorCodeFromSlug('no_such_code'));
});

test('encoding.json: varints', () => {
  const doc = loadVector('encoding.json');
  assert.ok(doc.varints.length >= 10);
  for (const { value, encoded } of doc.varints) {
    assert.equal(hex(encodeVarint(value)), encoded, `encode ${value}`);
    const reader = new Reader(unhex(encoded));
    assert.equal(reader.varint64('v'), value, `decode ${encoded}`);
    reader.end('v');
  }
  for (const { encoded, error } of doc.invalid_varints) {
    throwsSlug(() => new Reader(unhex(encoded)).varint64('v'), error);
  }
});

test('kdf.json: ratchet and session-setup KDFs', () => {
  const doc = loadVector('kdf.json');
  const rk = doc.kdf_rk;
  const [newRoot, chain] = ratchet.kdfRk(unhex(rk.root_key), unhex(rk.dh_output));
  assert.deepEqual([hex(newRoot), hex(chain)], [rk.new_root_key, rk.chain_key]);
  const ck = doc.kdf_ck;
  const [messageKey, nextChain] = ratchet.kdfCk(unhex(ck.chain_key));
  assert.deepEqual([hex(messageKey), hex(nextChain)], [ck.message_key, ck.next_chain_key]);
  const mk = doc.message_keys;
  const [key, nonce] = ratchet.messageKeyMaterial(unhex(mk.message_key));
  assert.deepEqual([hex(key), hex(nonce)], [mk.aead_key, mk.nonce]);
  assert.equal(doc.pqxdh_root_key.length, 2);
  for (const c of doc.pqxdh_root_key) {
    const root = pqxdh.deriveRootKey(c.dh_outputs.map(unhex), unhex(c.kem_shared_secret));
    assert.equal(hex(root), c.root_key);
  }
});

describe('keys.json', () => {
  const parties = loadVector('keys.json').parties;

  test('decodes and verifies every recorded key, certificate and bundle', () => {
    assert.equal(parties.length, 2);
    for (const party of parties) {
      const accountKey = p.ed25519PublicKey(unhex(party.account_seed));
      assert.equal(hex(accountKey), party.account_public_key);
      const cert = DeviceCertificate.decode(unhex(party.device_certificate));
      cert.verify(accountKey);
      assert.equal(cert.deviceId, party.device_id);
      assert.equal(cert.registrationId, party.registration_id);
      assert.equal(hex(cert.signingKey), hex(p.ed25519PublicKey(unhex(party.device_signing_seed))));
      assert.equal(hex(cert.identityKey), hex(p.x25519PublicKey(unhex(party.device_identity_private))));
      assert.equal(hex(cert.encode()), party.device_certificate);

      const spk = SignedPreKey.read(new Reader(unhex(party.signed_prekey.encoded)));
      spk.verify(cert.signingKey);
      assert.equal(hex(spk.publicKey), hex(p.x25519PublicKey(unhex(party.signed_prekey.private))));
      assert.equal(hex(spk.encode()), party.signed_prekey.encoded);

      const opk = OneTimePreKey.read(new Reader(unhex(party.one_time_prekey.encoded)));
      assert.equal(hex(opk.publicKey), hex(p.x25519PublicKey(unhex(party.one_time_prekey.private))));
      assert.equal(hex(opk.encode()), party.one_time_prekey.encoded);

      for (const [field, lastResort] of [
        ['kem_prekey', false],
        ['last_resort_kem_prekey', true],
      ]) {
        const kem = KemPreKey.read(new Reader(unhex(party[field].encoded)));
        kem.verify(cert.signingKey);
        assert.equal(kem.lastResort, lastResort);
        assert.equal(hex(kem.publicKey), hex(p.mlkem768PublicKey(unhex(party[field].seed))));
        assert.equal(hex(kem.encode()), party[field].encoded);
      }
      for (const field of ['bundle', 'bundle_without_one_time_last_resort']) {
        const bundle = PreKeyBundle.decode(unhex(party[field]));
        bundle.verify();
        assert.equal(hex(bundle.encode()), party[field]);
      }
    }
  });

  test('regenerates every key from the recorded seeds, byte for byte', () => {
    for (const party of parties) {
      const made = new VectorParty(party.username, party.device_id, party.registration_id);
      const d = made.device;
      assert.deepEqual(
        {
          username: made.name,
          account_seed: hex(made.account.seed),
          account_public_key: hex(made.account.publicKey),
          device_id: d.deviceId,
          registration_id: d.certificate.registrationId,
          device_signing_seed: hex(d.signingSeed),
          device_identity_private: hex(d.identityPrivate),
          device_certificate: hex(d.certificate.encode()),
          signed_prekey: { private: hex(made.signed.privateKey), encoded: hex(made.signed.public.encode()) },
          one_time_prekey: {
            private: hex(made.oneTime.privateKey),
            encoded: hex(made.oneTime.public.encode()),
          },
          kem_prekey: { seed: hex(made.kem.seed), encoded: hex(made.kem.public.encode()) },
          last_resort_kem_prekey: {
            seed: hex(made.lastResort.seed),
            encoded: hex(made.lastResort.public.encode()),
          },
          bundle: hex(made.bundle().encode()),
          bundle_without_one_time_last_resort: hex(
            made.bundle({ withOneTime: false, lastResort: true }).encode(),
          ),
        },
        party,
      );
    }
  });
});

test('content.json: Padmé lengths, padding and TEXT content', () => {
  const doc = loadVector('content.json');
  for (const { length, padded } of doc.padme) assert.equal(padmeLength(length), padded, `padme ${length}`);
  for (const c of doc.pad) assert.equal(hex(pad(unhex(c.data), c.hide_length)), c.padded);
  assert.equal(doc.text.length, 8);
  for (const c of doc.text) {
    const decoded = decodeContent(unhex(c.encoded));
    assert.deepEqual([decoded.body, decoded.sentAtMs], [c.body, c.sent_at_ms]);
    assert.equal(hex(encodeContent(decoded, c.hide_length)), c.encoded);
    assert.equal(hex(encodeContent(new Text(c.body, c.sent_at_ms), c.hide_length)), c.encoded);
  }
});

describe('content.json: SENT, HISTORY and refused contents', () => {
  const doc = loadVector('content.json');

  test('SENT transcripts decode and re-encode byte for byte', () => {
    assert.equal(doc.sent.length, 6);
    for (const c of doc.sent) {
      const decoded = decodeContent(unhex(c.encoded));
      assert.ok(decoded instanceof SentTranscript);
      assert.deepEqual([decoded.destination, decoded.body, decoded.sentAtMs], [c.destination, c.body, c.sent_at_ms]);
      assert.equal(hex(encodeContent(new SentTranscript(c.destination, c.body, c.sent_at_ms), c.hide_length)), c.encoded);
    }
  });

  test('HISTORY: splitHistory cuts the records into the recorded chunks, each byte for byte', () => {
    const h = doc.history;
    const records = h.lengths.map(
      (/** @type {number} */ n, /** @type {number} */ i) =>
        new HistoryRecord(i % 2 === 0 ? 'bob' : 'carol', i % 3 === 0, 1_795_000_000_000 + 1000 * i, `#${i} ` + 'é'.repeat(n)),
    );
    const transferId = unhex(h.transfer_id);
    const chunks = splitHistory(records, transferId, h.sent_at_ms);
    assert.equal(chunks.length, h.chunks.length);
    assert.ok(chunks.length >= 3);
    let position = 0;
    chunks.forEach((chunk, i) => {
      const c = h.chunks[i];
      assert.deepEqual([chunk.index, chunk.total, chunk.records.length], [c.index, c.total, c.record_count]);
      assert.deepEqual(chunk.records, records.slice(position, position + chunk.records.length));
      position += chunk.records.length;
      const encoded = encodeContent(chunk, true);
      assert.equal(hex(p.sha256(encoded)), c.encoded_sha256, `chunk ${i}`);
      assert.equal(encoded.length, c.encoded_length);
      const decoded = decodeContent(encoded);
      assert.ok(decoded instanceof HistoryChunk);
      assert.deepEqual(decoded, chunk);
    });
    assert.equal(position, records.length);
    const small = new HistoryChunk(transferId, 1, 3, records.slice(0, 2), h.sent_at_ms);
    assert.equal(hex(encodeContent(small)), h.small.encoded);
    assert.deepEqual(decodeContent(unhex(h.small.encoded)), small);
    assert.equal(hex(encodeContent(new HistoryChunk(transferId, 0, 1, [], h.sent_at_ms))), h.empty.encoded);
  });

  test('content types 5-11: each is built from its fields, encodes byte for byte and decodes back', () => {
    /** @type {Map<string, number>} */
    const seen = new Map();
    for (const c of doc.contents) {
      const content = contentFromFields(c.type, c.fields);
      assert.equal(hex(encodeContent(content, c.hide_length)), c.encoded, c.type);
      assert.deepEqual(decodeContent(unhex(c.encoded)), content, c.type);
      seen.set(c.type, (seen.get(c.type) ?? 0) + 1);
    }
    assert.deepEqual(
      [...seen.keys()].sort(),
      ['Attachment', 'Expiring', 'GroupUpdate', 'SenderKeyDistribution', 'SentContent', 'TimerUpdate', 'Typing'],
    );
  });

  test('refused contents fail with the recorded error', () => {
    assert.ok(doc.invalid.length >= 40);
    for (const c of doc.invalid) {
      const error = throwsSlug(() => decodeContent(unhex(c.encoded)), c.error);
      assert.ok(error, c.description);
    }
  });
});

describe('devicelist.json', () => {
  const doc = loadVector('devicelist.json');
  /** @type {Record<string, AccountIdentity>} */
  const accounts = {};
  for (const [name, a] of Object.entries(doc.accounts)) {
    accounts[name] = AccountIdentity.fromSeed(unhex(/** @type {any} */ (a).seed));
  }
  /** @type {Record<string, DeviceCertificate>} */
  const certificates = {};
  for (const [name, d] of Object.entries(/** @type {Record<string, any>} */ (doc.devices))) {
    const keys = DeviceKeys.create(accounts[d.account], d.device_id, {
      rng: testStream(utf8(d.seed)),
      registrationId: d.registration_id,
    });
    certificates[name] = keys.certificate;
  }

  test('every device certificate and list is made byte for byte from the recorded seeds', () => {
    for (const [name, a] of Object.entries(/** @type {Record<string, any>} */ (doc.accounts))) {
      assert.equal(hex(accounts[name].publicKey), a.public_key);
    }
    for (const [name, d] of Object.entries(/** @type {Record<string, any>} */ (doc.devices))) {
      assert.equal(hex(certificates[name].encode()), d.certificate, name);
      assert.equal(hex(certificateDigest(certificates[name])), d.certificate_sha256, name);
    }
    for (const [name, c] of Object.entries(/** @type {Record<string, any>} */ (doc.lists))) {
      const signed = SignedDeviceList.sign(
        accounts[c.signed_by],
        c.username,
        c.version,
        c.issued_at_ms,
        c.devices.map((/** @type {string} */ n) => certificates[n]),
      );
      assert.equal(hex(signed.encode()), c.encoded, name);
      const decoded = SignedDeviceList.decode(unhex(c.encoded));
      assert.deepEqual(decoded, signed);
      assert.equal(hex(decoded.encode()), c.encoded);
    }
  });

  test('checkDevices accepts, refuses and reports exactly as recorded', () => {
    const alice = accounts.alice.publicKey;
    assert.equal(doc.checks.length, 10);
    for (const c of doc.checks) {
      const list = SignedDeviceList.decode(unhex(doc.lists[c.list].encoded));
      const served = c.served.map((/** @type {string} */ n) => certificates[n]);
      const run = () => checkDevices(alice, c.username, list, served, c.newest_seen_version);
      if (c.error) {
        throwsSlug(run, c.error);
        continue;
      }
      const result = run();
      assert.deepEqual(
        {
          accepted: result.accepted.map((cert) => cert.deviceId),
          refused: result.refused,
          unlisted_missing: result.unlistedMissing,
        },
        { accepted: c.accepted, refused: c.refused, unlisted_missing: c.unlisted_missing },
        JSON.stringify(c),
      );
    }
  });

  test('invalid encodings are refused with the recorded error', () => {
    assert.ok(doc.invalid.length >= 8);
    for (const c of doc.invalid) throwsSlug(() => SignedDeviceList.decode(unhex(c.encoded)), c.error);
  });
});

describe('provisioning.json', () => {
  const doc = loadVector('provisioning.json');
  const link = doc.link_code;
  const ephemeralPrivate = unhex(link.ephemeral_private);
  const code = new LinkCode(unhex(link.address), p.x25519PublicKey(ephemeralPrivate));

  test('the link code: bytes, text, address, and every accepted spelling', () => {
    assert.equal(hex(code.ephemeralPublic), link.ephemeral_public);
    assert.equal(hex(code.encode()), link.encoded);
    assert.equal(code.text(), link.text);
    assert.equal(code.addressText, link.address_text);
    assert.ok(doc.valid_texts.length >= 3);
    for (const text of doc.valid_texts) assert.deepEqual(LinkCode.parse(text), code, JSON.stringify(text));
    assert.deepEqual(LinkCode.decode(unhex(link.encoded)), code);
  });

  test('invalid link codes fail with the recorded error', () => {
    assert.ok(doc.invalid_texts.length >= 6);
    for (const c of doc.invalid_texts) throwsSlug(() => LinkCode.parse(c.text), c.error);
  });

  test('provision messages: encoded, sealed with the recorded randomness, opened', () => {
    assert.equal(doc.messages.length, 2);
    doc.messages.forEach((/** @type {any} */ c, /** @type {number} */ i) => {
      const message = new ProvisionMessage({
        username: c.username,
        accountSeed: unhex(c.account_seed),
        linkToken: c.link_token,
        sendHistory: c.send_history,
      });
      assert.equal(hex(message.encode()), c.encoded);
      assert.deepEqual(ProvisionMessage.decode(unhex(c.encoded)), message);
      const sealed = seal(code, message, { rng: testStream(utf8(`link/seal${i}`)) });
      assert.equal(hex(sealed), c.sealed);
      assert.deepEqual(openSealed(code, ephemeralPrivate, unhex(c.sealed)), message);
      assert.ok(!String(message).includes(c.link_token || 'never') && !String(message).includes(c.account_seed));
    });
  });

  test('invalid provision messages and sealed messages fail with the recorded error', () => {
    for (const c of doc.invalid_messages) throwsSlug(() => ProvisionMessage.decode(unhex(c.encoded)), c.error);
    /** @type {Record<string, [LinkCode, Uint8Array]>} */
    const codes = {
      link: [code, ephemeralPrivate],
      other: [LinkCode.parse(doc.other.text), unhex(doc.other.ephemeral_private)],
      moved: [LinkCode.parse(doc.moved.text), ephemeralPrivate],
    };
    assert.ok(doc.invalid_sealed.length >= 6);
    for (const c of doc.invalid_sealed) {
      const [which, key] = codes[c.code];
      throwsSlug(() => openSealed(which, key, unhex(c.sealed)), c.error);
    }
  });
});

describe('session.json', () => {
  const doc = loadVector('session.json');
  const keys = loadVector('keys.json');

  test('both sides replay the conversation: every message byte for byte, every plaintext and error, both final records', () => {
    const alice = new VectorParty('alice', 1, 1111);
    const bob = new VectorParty('bob', 1, 2222);
    const bobRecorded = keys.parties.find((/** @type {{username: string}} */ x) => x.username === 'bob');
    assert.equal(hex(bob.bundle().encode()), bobRecorded.bundle, "alice_bundle_used: bob's bundle");
    const streams = { alice: testStream(utf8('alice/session')), bob: testStream(utf8('bob/session')) };
    const records = {
      alice: SessionRecord.initiate(alice.device, bob.bundle(), {
        rng: streams.alice,
        encapsulate: deterministicEncapsulate(streams.alice),
      }),
      bob: new SessionRecord(),
    };
    const parties = { alice, bob };
    /** @type {Uint8Array[]} */
    const sent = [];
    let encrypts = 0;
    let decrypts = 0;
    for (const step of doc.steps) {
      /** @type {'alice' | 'bob'} */
      const who = step.by;
      if (step.op === 'encrypt') {
        assert.equal(step.index, sent.length);
        const message = records[who].encrypt(unhex(step.plaintext));
        assert.equal(hex(message), step.message, `message ${step.index} by ${who}`);
        sent.push(message);
        encrypts += 1;
      } else {
        const call = () =>
          records[who].decrypt(sent[step.index], parties[who].device, parties[who], { rng: streams[who] });
        if (step.error) {
          throwsSlug(call, step.error);
        } else {
          const result = call();
          assert.equal(hex(result.plaintext), step.plaintext, `${who} decrypts ${step.index}`);
          for (const used of [result.consumedOneTimePrekeyId, result.consumedKemPrekeyId]) {
            if (used !== null) parties[who].used.add(used);
          }
        }
        decrypts += 1;
      }
    }
    assert.equal(encrypts, 10);
    assert.equal(decrypts, 12);
    assert.equal(hex(records.alice.encode()), doc.final_records.alice);
    assert.equal(hex(records.bob.encode()), doc.final_records.bob);
    // the record encodings are canonical: decode and re-encode
    for (const who of /** @type {const} */ (['alice', 'bob'])) {
      assert.equal(hex(SessionRecord.decode(records[who].encode()).encode()), doc.final_records[who]);
    }
  });

  test("bob's side alone, from recorded messages and keys.json: same plaintexts, errors and final record", () => {
    const party = keys.parties.find((/** @type {{username: string}} */ x) => x.username === 'bob');
    const bob = new VectorParty('bob', 1, 2222); // private device keys from the recorded seeds
    assert.equal(hex(bob.device.certificate.encode()), party.device_certificate);
    const keyId = (/** @type {string} */ field) => new Reader(unhex(party[field].encoded)).varint('id', 0xffffffff);
    /** @type {Map<number, Uint8Array>} */
    const signed = new Map([[keyId('signed_prekey'), unhex(party.signed_prekey.private)]]);
    /** @type {Map<number, Uint8Array>} */
    const oneTime = new Map([[keyId('one_time_prekey'), unhex(party.one_time_prekey.private)]]);
    /** @type {Map<number, [Uint8Array, boolean]>} */
    const kem = new Map([
      [keyId('kem_prekey'), [unhex(party.kem_prekey.seed), false]],
      [keyId('last_resort_kem_prekey'), [unhex(party.last_resort_kem_prekey.seed), true]],
    ]);
    const store = {
      signedPrekey: (/** @type {number} */ id) => signed.get(id),
      oneTimePrekey: (/** @type {number} */ id) => oneTime.get(id),
      kemPrekey: (/** @type {number} */ id) => kem.get(id),
    };
    const record = new SessionRecord();
    const stream = testStream(utf8('bob/session'));
    /** @type {Map<number, Uint8Array>} */
    const messages = new Map(
      doc.steps
        .filter((/** @type {{op: string}} */ s) => s.op === 'encrypt')
        .map((/** @type {{index: number, message: string}} */ s) => [s.index, unhex(s.message)]),
    );
    let checked = 0;
    for (const step of doc.steps) {
      if (step.by !== 'bob') continue;
      if (step.op === 'encrypt') {
        assert.equal(hex(record.encrypt(unhex(step.plaintext))), step.message);
        continue;
      }
      const message = /** @type {Uint8Array} */ (messages.get(step.index));
      if (step.error) {
        const before = hex(record.encode());
        throwsSlug(() => record.decrypt(message, bob.device, store, { rng: stream }), step.error);
        assert.equal(hex(record.encode()), before, 'a failed decryption changed the record');
      } else {
        const result = record.decrypt(message, bob.device, store, { rng: stream });
        assert.equal(hex(result.plaintext), step.plaintext);
        if (result.consumedOneTimePrekeyId !== null) oneTime.delete(result.consumedOneTimePrekeyId);
      }
      checked += 1;
    }
    assert.ok(checked >= 5);
    assert.equal(hex(record.encode()), doc.final_records.bob);
  });

  test('every recorded plaintext is a TEXT content that decodes', () => {
    for (const step of doc.steps) {
      if (step.op !== 'encrypt') continue;
      const content = decodeContent(unhex(step.plaintext));
      assert.ok(content instanceof Text);
      assert.equal(typeof content.body, 'string');
    }
  });
});

describe('session.json: the second conversation (evicted keys, archived states, non-canonical keys)', () => {
  const doc = loadVector('session.json').eviction_and_archive;
  const keys = loadVector('keys.json');
  /** @type {Map<number, Uint8Array>} */
  const delivered = new Map(Object.entries(doc.messages).map(([index, m]) => [Number(index), unhex(/** @type {string} */ (m))]));
  const invalid = doc.invalid_messages.map((/** @type {{encoded: string}} */ c) => unhex(c.encoded));
  /**
   * @param {string} who
   * @param {number} index
   */
  const plaintextOf = (who, index) => encodeContent(new Text(`${who} ${index}`, doc.first_sent_at_ms + index), index % 2 === 1);
  /** @param {SessionRecord} record */
  const discardedOf = (record) =>
    [.../** @type {import('../../static/js/protocol/index.js').RatchetState} */ (record.current).discarded.values()].map(({ ratchetKey, ranges }) => ({
      chain: hex(ratchetKey),
      ranges: ranges.map((r) => [...r]),
    }));

  test('every invalid message is a delivered one with the top bit of an X25519 key set, and is bad_key', () => {
    assert.ok(doc.invalid_messages.length >= 2);
    const bob = new VectorParty('bob', 1, 2222);
    doc.invalid_messages.forEach((/** @type {any} */ c, /** @type {number} */ i) => {
      const data = invalid[i];
      const decode = c.kind === 'prekey' ? PreKeyMessage.decode : RatchetMessage.decode;
      const error = throwsSlug(() => decode(data), c.error);
      assert.equal(error.detail, c.message);
      const original = /** @type {Uint8Array} */ (delivered.get(c.of));
      const differences = [...data.keys()].filter((j) => data[j] !== original[j]);
      assert.equal(differences.length, 1);
      assert.equal(data[differences[0]] ^ original[differences[0]], 0x80);
      const record = new SessionRecord();
      throwsSlug(() => record.decrypt(data, bob.device, bob), c.error);
      assert.equal(record.states.length, 0);
    });
  });

  test('both sides replay it: every batch by SHA-256, every delivered message byte for byte, every plaintext and error, both final records', () => {
    const alice = new VectorParty('alice', 1, 1111);
    const bob = new VectorParty('bob', 1, 2222);
    const streams = { alice: testStream(utf8('alice/session2')), bob: testStream(utf8('bob/session2')) };
    const records = { alice: new SessionRecord(), bob: new SessionRecord() };
    const parties = { alice, bob };
    /** @type {Uint8Array[]} */
    const sent = [];
    /** @type {Set<string>} */
    const errors = new Set();
    for (const step of doc.steps) {
      /** @type {'alice' | 'bob'} */
      const who = step.by;
      if (step.op === 'initiate') {
        const bundle = step.bundle === 'bundle' ? bob.bundle() : bob.bundle({ withOneTime: false, lastResort: true });
        const recorded = keys.parties.find((/** @type {{username: string}} */ x) => x.username === 'bob');
        assert.equal(hex(bundle.encode()), recorded[step.bundle], `${step.bundle} of bob in keys.json`);
        records.alice = SessionRecord.initiate(alice.device, bundle, {
          existing: records.alice,
          rng: streams.alice,
          encapsulate: deterministicEncapsulate(streams.alice),
        });
      } else if (step.op === 'encrypt') {
        assert.equal(step.first_index, sent.length);
        const batch = [];
        for (let i = 0; i < step.count; i++) batch.push(records[who].encrypt(plaintextOf(who, step.first_index + i)));
        assert.equal(hex(p.sha256(concatBytes(...batch))), step.sha256, `batch from ${step.first_index}`);
        sent.push(...batch);
      } else {
        const data = 'invalid' in step ? invalid[step.invalid] : sent[step.index];
        if ('index' in step) assert.equal(hex(data), hex(/** @type {Uint8Array} */ (delivered.get(step.index))), `message ${step.index}`);
        const call = () => records[who].decrypt(data, parties[who].device, parties[who], { rng: streams[who] });
        if (step.error) {
          assertRejected(records[who], call, step.error);
          errors.add(step.error);
        } else {
          const result = call();
          assert.equal(hex(result.plaintext), step.plaintext, `${who} decrypts ${step.index}`);
          for (const used of [result.consumedOneTimePrekeyId, result.consumedKemPrekeyId]) {
            if (used !== null) parties[who].used.add(used);
          }
        }
      }
    }
    assert.deepEqual([...errors].sort(), ['bad_key', 'duplicate_message', 'too_many_skipped']);
    assert.ok(sent.length > doc.max_skipped_keys + 3);
    const final = doc.final;
    const bobRecord = records.bob.encode();
    assert.equal(hex(p.sha256(bobRecord)), final.bob_record_sha256);
    assert.equal(bobRecord.length, final.bob_record_length);
    assert.equal(hex(p.sha256(records.alice.encode())), final.alice_record_sha256);
    assert.equal(records.bob.states.length, final.bob_states);
    assert.equal(hex(/** @type {any} */ (records.bob.current).baseKey), final.bob_current_base_key);
    assert.deepEqual(discardedOf(records.bob), final.bob_current_discarded);
  });

  test("bob's side alone, from recorded messages: same plaintexts, errors, batches and final record", () => {
    const bob = new VectorParty('bob', 1, 2222);
    const record = new SessionRecord();
    const stream = testStream(utf8('bob/session2'));
    for (const step of doc.steps) {
      if (step.by !== 'bob') continue;
      if (step.op === 'encrypt') {
        const batch = [];
        for (let i = 0; i < step.count; i++) batch.push(record.encrypt(plaintextOf('bob', step.first_index + i)));
        assert.equal(hex(p.sha256(concatBytes(...batch))), step.sha256);
        batch.forEach((m, i) => {
          const recorded = delivered.get(step.first_index + i);
          if (recorded) assert.equal(hex(m), hex(recorded));
        });
        continue;
      }
      const data = 'invalid' in step ? invalid[step.invalid] : /** @type {Uint8Array} */ (delivered.get(step.index));
      const call = () => record.decrypt(data, bob.device, bob, { rng: stream });
      if (step.error) {
        assertRejected(record, call, step.error);
      } else {
        const result = call();
        assert.equal(hex(result.plaintext), step.plaintext);
        for (const used of [result.consumedOneTimePrekeyId, result.consumedKemPrekeyId]) {
          if (used !== null) bob.used.add(used);
        }
      }
    }
    const encoded = record.encode();
    assert.equal(hex(p.sha256(encoded)), doc.final.bob_record_sha256);
    assert.equal(hex(SessionRecord.decode(encoded).encode()), hex(encoded), 'the record encoding is canonical');
    assert.deepEqual(discardedOf(record), doc.final.bob_current_discarded);
  });
});

describe('frames.json', () => {
  const doc = loadVector('frames.json');
  const camel = (/** @type {string} */ name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

  /** @param {unknown} value */
  const plain = (value) =>
    value instanceof Uint8Array ? hex(value) : Array.isArray(value) ? [...value] : value;

  test('valid frames decode to the recorded fields and re-encode to the same bytes', () => {
    assert.equal(doc.valid.length, 14);
    for (const c of doc.valid) {
      const frame = decodeFrame(unhex(c.encoded));
      assert.equal(frameTypeName(frame.type), c.type);
      assert.equal(hex(encodeFrame(frame)), c.encoded);
      if ('ttlSeconds' in frame && !('ttl_seconds' in c.fields)) {
        // an absent ttl_seconds (no EXPIRES flag) is left out of the vector
        assert.equal(frame.ttlSeconds, null, `${c.type} without EXPIRES has no ttl`);
      }
      for (const [field, value] of Object.entries(c.fields)) {
        if (field === 'messages') {
          const messages = /** @type {import('../../static/js/protocol/index.js').Send} */ (frame).messages;
          assert.deepEqual(
            messages.map((m) => ({ device_id: m.deviceId, registration_id: m.registrationId, payload: hex(m.payload) })),
            value,
          );
          continue;
        }
        assert.ok(camel(field) in frame, `${c.type} has no field ${camel(field)}`);
        assert.deepEqual(plain(/** @type {Record<string, unknown>} */ (frame)[camel(field)]), value, `${c.type}.${field}`);
      }
    }
  });

  test('an ERROR frame keeps any code; errorCode is null for one this side does not know', () => {
    const c = doc.valid.find((/** @type {{type: string}} */ v) => v.type === 'ERROR');
    const frame = /** @type {import('../../static/js/protocol/index.js').ErrorFrame} */ (decodeFrame(unhex(c.encoded)));
    assert.equal(frame.errorCode, ErrorCode.CIPHERTEXT_TOO_LARGE);
    const unknown = decodeFrame(encodeFrame(new ErrorFrame({ requestId: 1, code: 4242, message: 'newer peer' })));
    assert.equal(/** @type {ErrorFrame} */ (unknown).code, 4242);
    assert.equal(/** @type {ErrorFrame} */ (unknown).errorCode, null);
  });

  test('EXPIRES and GROUP_SEND: the encoder refuses what the decoder would', () => {
    const message = new DeviceMessage(1, 2222, Uint8Array.of(0x11, 1));
    const group = new Uint8Array(16);
    const digest = new Uint8Array(16).fill(0xa0);
    const payload = Uint8Array.of(0x13, 1);
    for (const [flags, ttlSeconds] of [[SendFlags.EXPIRES, null], [SendFlags.NONE, 60], [SendFlags.EPHEMERAL, 60]]) {
      throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'bob', messages: [message], flags, ttlSeconds })), 'invalid_value');
      throwsSlug(() => encodeFrame(new GroupSend({ requestId: 1, groupId: group, rosterDigest: digest, payload, flags, ttlSeconds })), 'invalid_value');
    }
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'bob', messages: [message], flags: SendFlags.EXPIRES, ttlSeconds: 0 })), 'invalid_value');
    throwsSlug(() => encodeFrame(new Send({ requestId: 1, recipient: 'bob', messages: [message], flags: SendFlags.EXPIRES, ttlSeconds: MAX_TTL_SECONDS + 1 })), 'too_large');
    throwsSlug(() => encodeFrame(new GroupSend({ requestId: 0, groupId: group, rosterDigest: digest, payload })), 'invalid_value');
    throwsSlug(() => encodeFrame(new GroupSend({ requestId: 1, groupId: new Uint8Array(15), rosterDigest: digest, payload })), 'invalid_value');
    throwsSlug(() => encodeFrame(new GroupSend({ requestId: 1, groupId: group, rosterDigest: digest, payload: new Uint8Array(0) })), 'invalid_value');
    throwsSlug(() => encodeFrame(new GroupSend({ requestId: 1, groupId: group, rosterDigest: digest, payload: new Uint8Array(98_305) })), 'ciphertext_too_large');
    const longest = new GroupSend({ requestId: 1, groupId: group, rosterDigest: digest, payload, flags: SendFlags.EXPIRES, ttlSeconds: MAX_TTL_SECONDS });
    assert.deepEqual(decodeFrame(encodeFrame(longest)), longest);
  });

  test('invalid frames are rejected with the recorded error', () => {
    assert.ok(doc.invalid.length >= 10);
    for (const c of doc.invalid) throwsSlug(() => decodeFrame(unhex(c.encoded)), c.error);
  });

  test('the length-prefixed stream gives frames 0-2, whole and byte by byte', () => {
    const expected = doc.valid.slice(0, 3).map((/** @type {{encoded: string}} */ c) => decodeFrame(unhex(c.encoded)));
    const stream = unhex(doc.stream);
    assert.deepEqual(new FrameStream().feed(stream), expected);
    assert.equal(hex(expected.map((f) => FrameStream.encode(f)).reduce((a, b) => new Uint8Array([...a, ...b]))), doc.stream);
    const byteByByte = new FrameStream();
    const collected = [];
    for (let i = 0; i < stream.length; i++) collected.push(...byteByByte.feed(stream.subarray(i, i + 1)));
    assert.deepEqual(collected, expected);
  });
});

test('safety_number.json', () => {
  const { cases } = loadVector('safety_number.json');
  assert.equal(cases.length, 1);
  for (const c of cases) {
    const number = safetyNumber(c.own_username, unhex(c.own_account_key), c.their_username, unhex(c.their_account_key));
    assert.equal(number.digits, c.digits);
    assert.equal(hex(number.qrPayload), c.qr_payload);
    assert.ok(number.matchesScan(unhex(c.qr_payload)));
    assert.equal(number.groups().join(''), c.digits);
    assert.equal(number.groups().length, 12);
    // both people compute the same number
    const theirs = safetyNumber(c.their_username, unhex(c.their_account_key), c.own_username, unhex(c.own_account_key));
    assert.equal(theirs.digits, c.digits);
    assert.equal(hex(theirs.qrPayload), c.qr_payload);
  }
});
