// Several devices per account, in the JavaScript protocol: device lists, link codes, sealed
// provisioning messages, SENT transcripts and HISTORY chunks. Fresh random values are
// cross-checked against the Python reference (.venv/bin/python), both ways: what JS makes,
// Python reads; what Python makes, JS reads. The fixed known answers are in vectors.test.mjs.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import {
  AccountIdentity,
  DeviceKeys,
  HistoryChunk,
  HistoryRecord,
  LinkCode,
  MAX_HISTORY_CHUNK_BYTES,
  MAX_LISTED_DEVICES,
  MAX_TEXT_BYTES,
  ProvisionMessage,
  SentTranscript,
  SignedDeviceList,
  Text,
  checkDevices,
  decodeContent,
  encodeContent,
  encodeHistoryRecords,
  openSealed,
  primitives as p,
  seal,
  splitHistory,
} from '../../static/js/protocol/index.js';
import { ROOT, hex, parseJson, throwsSlug, unhex } from './helpers.mjs';

const PYTHON = join(ROOT, '.venv', 'bin', 'python');

/**
 * Run a Python snippet in the repository with `input` as JSON on stdin; its stdout is JSON.
 * @param {string} code
 * @param {unknown} input
 */
function python(code, input) {
  const run = spawnSync(PYTHON, ['-c', code], {
    cwd: ROOT,
    input: JSON.stringify(input, (_k, v) => (typeof v === 'bigint' ? `${v}` : v)),
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
  return parseJson(run.stdout);
}

function newCode() {
  const privateKey = p.randomBytes(32);
  return { code: new LinkCode(p.randomBytes(16), p.x25519PublicKey(privateKey)), privateKey };
}

describe('sealed provisioning messages against Python', () => {
  test('sealed in JS, opened by Python; sealed by Python, opened in JS', () => {
    const cases = [];
    for (let i = 0; i < 8; i++) {
      const { code, privateKey } = newCode();
      const message = new ProvisionMessage({
        username: `user_${i}x`,
        accountSeed: p.randomBytes(32),
        linkToken: i % 2 ? '' : hex(p.randomBytes(1 + i * 8)),
        sendHistory: i % 3 === 0,
      });
      cases.push({ code, privateKey, message, sealed: seal(code, message) });
    }
    const answers = python(
      `
import json, sys
from protocol import primitives as p
from protocol.provisioning import LinkCode, ProvisionMessage, open_sealed, seal
out = []
for c in json.load(sys.stdin):
    code = LinkCode.parse(c["text"])
    private = bytes.fromhex(c["private"])
    m = open_sealed(code, private, bytes.fromhex(c["sealed"]))
    mine = seal(code, ProvisionMessage(m.username, m.account_seed, m.link_token + "!", not m.send_history))
    out.append({"username": m.username, "seed": m.account_seed.hex(), "token": m.link_token,
                "history": m.send_history, "encoded": m.encode().hex(), "python_sealed": mine.hex(),
                "address": code.address_text})
print(json.dumps(out))
`,
      cases.map((c) => ({ text: c.code.text(), private: hex(c.privateKey), sealed: hex(c.sealed) })),
    );
    cases.forEach((c, i) => {
      const got = answers[i];
      assert.deepEqual(
        { username: got.username, seed: got.seed, token: got.token, history: got.history, encoded: got.encoded },
        {
          username: c.message.username,
          seed: hex(c.message.accountSeed),
          token: c.message.linkToken,
          history: c.message.sendHistory,
          encoded: hex(c.message.encode()),
        },
      );
      assert.equal(got.address, c.code.addressText);
      const opened = openSealed(c.code, c.privateKey, unhex(got.python_sealed));
      assert.equal(opened.linkToken, `${c.message.linkToken}!`);
      assert.equal(opened.sendHistory, !c.message.sendHistory);
      assert.equal(hex(opened.accountSeed), hex(c.message.accountSeed));
    });
  });

  test('any changed byte, another code, or another address: nothing opens', () => {
    const { code, privateKey } = newCode();
    const message = new ProvisionMessage({ username: 'alice', accountSeed: p.randomBytes(32), linkToken: 'tok', sendHistory: true });
    const sealed = seal(code, message);
    assert.ok(!hex(sealed).includes(hex(message.accountSeed)));
    for (let i = 0; i < sealed.length; i++) {
      const tampered = sealed.slice();
      tampered[i] ^= 0x01;
      throwsSlug(() => openSealed(code, privateKey, tampered), 'decrypt_failed', 'unsupported_version', 'bad_key');
    }
    const other = newCode();
    throwsSlug(() => openSealed(other.code, other.privateKey, sealed), 'decrypt_failed');
    const moved = new LinkCode(p.randomBytes(16), code.ephemeralPublic);
    throwsSlug(() => openSealed(moved, privateKey, sealed), 'decrypt_failed');
    assert.ok(!String(message).includes('tok'));
  });

  test('link code text: no padding, round trip, and the encoder refuses what the decoder would', () => {
    for (let i = 0; i < 20; i++) {
      const { code } = newCode();
      const text = code.text();
      assert.match(text, /^sealpost-link:[A-Za-z0-9_-]{66}$/);
      assert.deepEqual(LinkCode.parse(`\n ${text} \t`), code);
    }
    throwsSlug(() => new LinkCode(p.randomBytes(15), p.randomBytes(32)).encode(), 'invalid_value');
    throwsSlug(() => new ProvisionMessage({ username: 'Alice', accountSeed: p.randomBytes(32), linkToken: '', sendHistory: false }).encode(), 'invalid_username');
  });
});

describe('signed device lists against Python', () => {
  test('lists signed in JS pass Python\'s check_devices; lists signed by Python pass checkDevices', () => {
    const account = AccountIdentity.generate();
    const devices = [1, 2, 5].map((id) => DeviceKeys.create(account, id));
    const list = SignedDeviceList.sign(account, 'alice', 7, Date.now(), [devices[2], devices[0], devices[1]].map((d) => d.certificate));
    assert.deepEqual(list.devices.map((d) => d.deviceId), [1, 2, 5]);
    const answer = python(
      `
import json, sys
from protocol.devicelist import SignedDeviceList, check_devices
from protocol.keys import AccountIdentity, DeviceCertificate, DeviceKeys
c = json.load(sys.stdin)
account = AccountIdentity.from_seed(bytes.fromhex(c["seed"]))
certs = [DeviceCertificate.decode(bytes.fromhex(x)) for x in c["certificates"]]
signed = SignedDeviceList.decode(bytes.fromhex(c["list"]))
checked = check_devices(account.public_key, "alice", signed, certs, 6)
new = DeviceKeys.create(account, 3)
mine = SignedDeviceList.sign(account, "alice", 8, 1, [*certs, new.certificate])
print(json.dumps({"accepted": [x.device_id for x in checked.accepted], "encoded": signed.encode().hex(),
                  "version": signed.version, "python_list": mine.encode().hex(),
                  "new_certificate": new.certificate.encode().hex()}))
`,
      { seed: hex(account.seed), certificates: devices.map((d) => hex(d.certificate.encode())), list: hex(list.encode()) },
    );
    assert.deepEqual(answer.accepted, [1, 2, 5]);
    assert.equal(answer.encoded, hex(list.encode()));
    const pythonList = SignedDeviceList.decode(unhex(answer.python_list));
    const served = [...devices.map((d) => d.certificate), DeviceKeys.create(account, 9).certificate];
    const checked = checkDevices(account.publicKey, 'alice', pythonList, served, 8);
    assert.deepEqual(checked.accepted.map((c) => c.deviceId), [1, 2, 5]);
    assert.deepEqual(checked.refused, [9]); // certified by the account, but not listed
    assert.deepEqual(checked.unlistedMissing, [3]); // listed, not served
    throwsSlug(() => checkDevices(account.publicKey, 'alice', pythonList, served, 9), 'invalid_value');
    throwsSlug(() => checkDevices(AccountIdentity.generate().publicKey, 'alice', pythonList, served), 'bad_signature');
  });

  test('the encoder refuses an unsorted, repeated or oversized list', () => {
    const account = AccountIdentity.generate();
    const one = DeviceKeys.create(account, 1).certificate;
    const signed = SignedDeviceList.sign(account, 'alice', 1, 0, [one]);
    throwsSlug(() => new SignedDeviceList({ ...signed, devices: [signed.devices[0], signed.devices[0]] }).encode(), 'invalid_value');
    const many = Array.from({ length: MAX_LISTED_DEVICES + 1 }, (_, i) => ({ ...signed.devices[0], deviceId: i + 1 }));
    throwsSlug(() => new SignedDeviceList({ ...signed, devices: /** @type {any} */ (many) }).encode(), 'too_large');
    throwsSlug(() => SignedDeviceList.sign(account, 'Alice', 1, 0, [one]), 'invalid_username');
    // A changed signature or body byte: bad_signature (or a decode error), never accepted.
    const encoded = signed.encode();
    for (let i = 0; i < encoded.length; i++) {
      const tampered = encoded.slice();
      tampered[i] ^= 0x01;
      let list;
      try {
        list = SignedDeviceList.decode(tampered);
      } catch {
        continue;
      }
      throwsSlug(() => list.verify(account.publicKey, 'alice'), 'bad_signature');
    }
  });
});

describe('SENT and HISTORY content against Python', () => {
  test('random transcripts and chunks: Python decodes what JS encodes, and encodes the same bytes', () => {
    /** @type {(SentTranscript | HistoryChunk)[]} */
    const contents = [];
    const word = () => hex(p.randomBytes(1 + (p.randomBytes(1)[0] % 40)));
    for (let i = 0; i < 10; i++) {
      contents.push(new SentTranscript(`peer${i}`, i % 4 ? `${word()} ✓ ${'ü'.repeat(i * 30)}` : '', 1_795_000_000_000 + i));
      const records = Array.from({ length: i }, (_, j) => new HistoryRecord(j % 2 ? 'bob' : 'carol', j % 3 === 0, 1_700_000_000_000 + j, word()));
      contents.push(new HistoryChunk(p.randomBytes(16), i, i + 1 + (i % 3), records, 2 ** 40 + i));
    }
    const encoded = contents.map((c, i) => hex(encodeContent(c, i % 2 === 0)));
    const answers = python(
      `
import json, sys
from protocol.content import HistoryChunk, SentTranscript, decode_content, encode_content
out = []
for i, h in enumerate(json.load(sys.stdin)):
    c = decode_content(bytes.fromhex(h))
    again = encode_content(c, i % 2 == 0).hex()
    if isinstance(c, SentTranscript):
        out.append({"type": "sent", "destination": c.destination, "body": c.body, "again": again})
    else:
        out.append({"type": "history", "index": c.index, "total": c.total, "records": [
            [r.peer, r.outgoing, r.sent_at_ms, r.text] for r in c.records], "again": again})
print(json.dumps(out))
`,
      encoded,
    );
    contents.forEach((content, i) => {
      const got = answers[i];
      if (content instanceof SentTranscript) {
        assert.deepEqual([got.type, got.destination, got.body], ['sent', content.destination, content.body]);
      } else {
        assert.equal(got.type, 'history');
        assert.deepEqual([got.index, got.total], [content.index, content.total]);
        assert.deepEqual(got.records, content.records.map((r) => [r.peer, r.outgoing, r.sentAtMs, r.text]));
      }
      // Padding is random (Padmé with hide_length), so compare what it pads.
      assert.deepEqual(decodeContent(unhex(got.again)), decodeContent(unhex(encoded[i])));
    });
  });

  test('splitHistory keeps every chunk under the limit, in order, and gives an oversized record its own', () => {
    const big = 'x'.repeat(MAX_TEXT_BYTES);
    const records = [
      ...Array.from({ length: 50 }, (_, i) => new HistoryRecord('bob', i % 2 === 0, i, 'y'.repeat(3000))),
      new HistoryRecord('carol', true, 99, big),
      new HistoryRecord('carol', false, 100, 'after'),
    ];
    const chunks = splitHistory(records, p.randomBytes(16), 1);
    assert.deepEqual(chunks.flatMap((c) => c.records), records);
    for (const chunk of chunks) {
      assert.equal(chunk.total, chunks.length);
      const size = encodeHistoryRecords(chunk.records).length;
      if (chunk.records.some((r) => r.text === big)) assert.equal(chunk.records.length, 1);
      else assert.ok(size <= MAX_HISTORY_CHUNK_BYTES + 10, `chunk ${chunk.index}: ${size}`);
      // each chunk fits one envelope (96 KiB) once padded
      assert.ok(encodeContent(chunk, true).length < 96 * 1024);
    }
    assert.deepEqual(splitHistory([], p.randomBytes(16), 1).map((c) => [c.index, c.total, c.records.length]), [[0, 1, 0]]);
  });

  test('the encoder refuses what the decoder refuses', () => {
    const id = p.randomBytes(16);
    throwsSlug(() => encodeContent(new SentTranscript('Bob', 'x', 1)), 'invalid_username');
    throwsSlug(() => encodeContent(new SentTranscript('bob', 'x'.repeat(MAX_TEXT_BYTES + 1), 1)), 'too_large');
    throwsSlug(() => encodeContent(new HistoryChunk(id.slice(1), 0, 1, [], 1)), 'invalid_value');
    throwsSlug(() => encodeContent(new HistoryChunk(id, 1, 1, [], 1)), 'invalid_value');
    throwsSlug(() => encodeContent(new HistoryChunk(id, 0, 10_001, [], 1)), 'invalid_value');
    throwsSlug(() => encodeContent(new HistoryChunk(id, 0, 1, [new HistoryRecord('no', true, 1, 'x')], 1)), 'invalid_username');
    assert.ok(decodeContent(encodeContent(new Text('still text', 5))) instanceof Text);
  });
});
