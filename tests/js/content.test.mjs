// Content types 5-11 (static/js/protocol/content.js, docs/protocol.md 17.4) against the
// Python encoder and decoder: random contents encode to the same bytes on both sides, and
// both encoders refuse the same invalid contents with the same code. content.json's
// 'contents' and 'invalid' are replayed in vectors.test.mjs.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  Attachment,
  AttachmentFlags,
  Expiring,
  GroupAction,
  GroupUpdate,
  MAX_TTL_SECONDS,
  SenderKeyDistribution,
  SentContent,
  Text,
  TimerUpdate,
  Typing,
  decodeContent,
  encodeContent,
} from '../../static/js/protocol/index.js';
import { contentFromFields, errorOf, hex, loadVector, python, seededRandom, unhex } from './helpers.mjs';

// Builds Python contents from {type, fields} (bytes as hex, inner contents nested), the
// shape of content.json's 'contents'; encodes each, or gives the error.
const ENCODE = `
import json, sys
from protocol import content as c
from protocol.errors import ProtocolError
BYTES = {"group_id", "chain_key", "signing_key", "blob_id", "key", "digest", "thumbnail"}
def build(spec):
    fields = {}
    for name, value in spec["fields"].items():
        if name == "inner":
            value = build(value)
        elif name in BYTES:
            value = bytes.fromhex(value)
        elif name == "targets":
            value = tuple(value)
        fields[name] = value
    return getattr(c, spec["type"])(**fields)
out = []
for case in json.load(sys.stdin):
    try:
        out.append(c.encode_content(build(case["content"]), case["hide"]).hex())
    except ProtocolError as exc:
        out.append({"error": exc.code.slug})
print(json.dumps(out))
`;

/** @param {ReturnType<typeof seededRandom>} r */
function randomSpecs(r) {
  const bytes = (/** @type {number} */ n) => hex(r.bytes(n));
  const text = () => r.pick(['', 'a', 'héllo', '世界 👋', 'x'.repeat(300)]);
  const sentAt = () => r.pick([0, 1, 127, 128, 1_795_000_000_000 + r.int(1000)]);
  const attachment = (/** @type {number} */ at) => ({
    type: 'Attachment',
    fields: {
      blob_id: bytes(16),
      key: bytes(32),
      size: r.pick([0, 1, 65_536, 104_857_600]),
      digest: bytes(32),
      flags: r.int(2),
      content_type: r.pick(['image/jpeg', 'audio/ogg', '', 'x'.repeat(128)]),
      file_name: r.pick(['', 'photo.jpg', 'é'.repeat(127)]),
      duration_ms: r.pick([0, 1, 90_000, 2 ** 40]),
      width: r.int(5000),
      height: r.int(5000),
      thumbnail: bytes(r.pick([0, 1, 300])),
      caption: text(),
      sent_at_ms: at,
    },
  });
  const timer = (/** @type {number} */ at) => ({ type: 'TimerUpdate', fields: { timer_seconds: r.pick([0, 1, MAX_TTL_SECONDS]), sent_at_ms: at } });
  const expiring = (/** @type {number} */ at) => ({
    type: 'Expiring',
    fields: {
      timer_seconds: r.pick([1, 3600, MAX_TTL_SECONDS]),
      inner: r.bool() ? { type: 'Text', fields: { body: text(), sent_at_ms: at } } : attachment(at),
      sent_at_ms: at,
    },
  });
  const makers = [
    (/** @type {number} */ at) => ({ type: 'Typing', fields: { action: r.int(2), sent_at_ms: at } }),
    (/** @type {number} */ at) => ({
      type: 'SenderKeyDistribution',
      fields: { group_id: bytes(16), key_id: 1 + r.int(2 ** 31 - 1), iteration: r.pick([0, 5, 2 ** 32 - 1]), chain_key: bytes(32), signing_key: bytes(32), sent_at_ms: at },
    }),
    attachment,
    (/** @type {number} */ at) => ({
      type: 'GroupUpdate',
      fields: {
        group_id: bytes(16),
        action: 1 + r.int(7),
        name: r.pick(['', 'Climbing 🧗', 'n'.repeat(256)]),
        timer_seconds: r.pick([0, 60, MAX_TTL_SECONDS]),
        targets: r.pick([[], ['bob'], ['bob', 'carol', 'dave_2']]),
        sent_at_ms: at,
      },
    }),
    timer,
    expiring,
    (/** @type {number} */ at) => ({
      type: 'SentContent',
      fields: { destination: r.pick(['bob', 'carol']), inner: r.pick([attachment, expiring, timer])(at), sent_at_ms: at },
    }),
  ];
  return Array.from({ length: 60 }, (_, i) => ({ content: makers[i % makers.length](sentAt()), hide: r.bool() }));
}

test('random contents of types 5-11 encode to the same bytes as Python, and decode back', () => {
  const specs = randomSpecs(seededRandom(1705));
  const expected = python(ENCODE, specs);
  specs.forEach((spec, i) => {
    const content = contentFromFields(spec.content.type, spec.content.fields);
    const encoded = encodeContent(content, spec.hide);
    assert.equal(hex(encoded), expected[i], `${spec.content.type} ${i}`);
    assert.deepEqual(decodeContent(encoded), content);
  });
});

test('both encoders refuse the same invalid contents with the same code', () => {
  const group = '00'.repeat(16);
  const at = 1_795_000_000_000;
  const attachment = {
    blob_id: '01'.repeat(16),
    key: '02'.repeat(32),
    size: 10,
    digest: '03'.repeat(32),
    flags: AttachmentFlags.NONE,
    content_type: 'image/png',
    file_name: '',
    duration_ms: 0,
    width: 0,
    height: 0,
    thumbnail: '',
    caption: '',
    sent_at_ms: at,
  };
  const sk = { group_id: group, key_id: 1, iteration: 0, chain_key: '00'.repeat(32), signing_key: '00'.repeat(32), sent_at_ms: at };
  const update = { group_id: group, action: GroupAction.CREATED, name: 'n', timer_seconds: 0, targets: [], sent_at_ms: at };
  /** @type {[string, Record<string, any>, string][]} */
  const cases = [
    ['Typing', { action: 2, sent_at_ms: at }, 'invalid_value'],
    ['SenderKeyDistribution', { ...sk, key_id: 0 }, 'invalid_value'],
    ['SenderKeyDistribution', { ...sk, key_id: 2 ** 31 }, 'too_large'],
    ['SenderKeyDistribution', { ...sk, iteration: 2 ** 32 }, 'too_large'],
    ['SenderKeyDistribution', { ...sk, chain_key: '00'.repeat(31) }, 'invalid_value'],
    ['SenderKeyDistribution', { ...sk, group_id: '00'.repeat(17) }, 'invalid_value'],
    ['Attachment', { ...attachment, size: 104_857_601 }, 'too_large'],
    ['Attachment', { ...attachment, flags: 2 }, 'invalid_value'],
    ['Attachment', { ...attachment, blob_id: '00' }, 'invalid_value'],
    ['Attachment', { ...attachment, content_type: 'x'.repeat(129) }, 'too_large'],
    ['Attachment', { ...attachment, file_name: 'é'.repeat(128) }, 'too_large'],
    ['Attachment', { ...attachment, thumbnail: '00'.repeat(65_537) }, 'too_large'],
    ['Attachment', { ...attachment, caption: 'c'.repeat(4097) }, 'too_large'],
    ['GroupUpdate', { ...update, action: 0 }, 'invalid_value'],
    ['GroupUpdate', { ...update, action: 8 }, 'invalid_value'],
    ['GroupUpdate', { ...update, name: 'n'.repeat(257) }, 'too_large'],
    ['GroupUpdate', { ...update, timer_seconds: MAX_TTL_SECONDS + 1 }, 'too_large'],
    ['GroupUpdate', { ...update, targets: Array.from({ length: 1001 }, () => 'bob') }, 'too_large'],
    ['GroupUpdate', { ...update, targets: ['Bob'] }, 'invalid_username'],
    ['TimerUpdate', { timer_seconds: MAX_TTL_SECONDS + 1, sent_at_ms: at }, 'too_large'],
    ['Expiring', { timer_seconds: 0, inner: { type: 'Text', fields: { body: 'x', sent_at_ms: at } }, sent_at_ms: at }, 'invalid_value'],
    ['Expiring', { timer_seconds: MAX_TTL_SECONDS + 1, inner: { type: 'Text', fields: { body: 'x', sent_at_ms: at } }, sent_at_ms: at }, 'too_large'],
    ['Expiring', { timer_seconds: 5, inner: { type: 'TimerUpdate', fields: { timer_seconds: 5, sent_at_ms: at } }, sent_at_ms: at }, 'invalid_value'],
    ['Expiring', { timer_seconds: 5, inner: { type: 'Text', fields: { body: 'x', sent_at_ms: at + 1 } }, sent_at_ms: at }, 'invalid_value'],
    ['Expiring', { timer_seconds: 5, inner: { type: 'Text', fields: { body: 'x'.repeat(65_537), sent_at_ms: at } }, sent_at_ms: at }, 'too_large'],
    ['SentContent', { destination: 'bob', inner: { type: 'Text', fields: { body: 'x', sent_at_ms: at } }, sent_at_ms: at }, 'invalid_value'],
    ['SentContent', { destination: 'bob', inner: { type: 'Typing', fields: { action: 1, sent_at_ms: at } }, sent_at_ms: at }, 'invalid_value'],
    ['SentContent', { destination: 'Bob', inner: { type: 'TimerUpdate', fields: { timer_seconds: 5, sent_at_ms: at } }, sent_at_ms: at }, 'invalid_username'],
    ['SentContent', { destination: 'bob', inner: { type: 'TimerUpdate', fields: { timer_seconds: 5, sent_at_ms: at - 1 } }, sent_at_ms: at }, 'invalid_value'],
  ];
  const answers = python(
    ENCODE,
    cases.map(([type, fields]) => ({ content: { type, fields }, hide: false })),
  );
  cases.forEach(([type, fields, slug], i) => {
    assert.deepEqual(answers[i], { error: slug }, `Python: ${type} ${JSON.stringify(fields).slice(0, 80)}`);
    const error = errorOf(() => encodeContent(contentFromFields(type, fields)));
    assert.equal(error?.slug, slug, `JS: ${type} ${JSON.stringify(fields).slice(0, 80)}: ${error?.message}`);
  });
});

test('any bytes decode to a content or a ProtocolError, never anything else', () => {
  const r = seededRandom(1706);
  const seeds = loadVector('content.json').contents.map((/** @type {{encoded: string}} */ c) => unhex(c.encoded));
  for (let i = 0; i < 3000; i++) {
    const data = r.pick(seeds).slice();
    const flips = 1 + r.int(3);
    for (let j = 0; j < flips; j++) data[r.int(data.length)] ^= 1 << r.int(8);
    const cut = r.bool() ? data.subarray(0, r.int(data.length + 1)) : data;
    errorOf(() => decodeContent(cut)); // throws if the error is not a ProtocolError
  }
  for (let i = 0; i < 2000; i++) {
    const data = r.bytes(r.int(60));
    if (data.length) data[0] = 5 + r.int(7); // types 5-11
    errorOf(() => decodeContent(data));
  }
});
