// RECEIPT content (protocol/content.py) against the Python encoder and decoder, byte for
// byte: the Python side is asked directly (.venv/bin/python), and the last test replays the
// "receipts" list of protocol/vectors/content.json.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  MAX_RECEIPT_ITEMS,
  Receipt,
  ReceiptKind,
  Text,
  decodeContent,
  encodeContent,
} from '../../static/js/protocol/index.js';
import { ROOT, hex, loadVector, parseJson, throwsSlug, unhex } from './helpers.mjs';

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

const ENCODE = `
import json, sys
from protocol.content import Receipt, ReceiptKind, Text, encode_content
out = []
for c in json.load(sys.stdin):
    items = tuple(int(x) for x in c["items"])
    content = Receipt(ReceiptKind(c["kind"]), items, int(c["sent_at"]))
    out.append(encode_content(content, c["hide"]).hex())
print(json.dumps(out))
`;

const DECODE = `
import json, sys
from protocol.content import Receipt, decode_content
from protocol.errors import ProtocolError
out = []
for h in json.load(sys.stdin):
    try:
        c = decode_content(bytes.fromhex(h))
    except ProtocolError as exc:
        out.append({"error": exc.code.slug})
        continue
    if isinstance(c, Receipt):
        out.append({"kind": int(c.kind), "items": list(c.message_sent_at_ms), "sent_at": c.sent_at_ms})
    else:
        out.append({"text": c.body, "sent_at": c.sent_at_ms})
print(json.dumps(out))
`;

/** Cases across the varint widths, both kinds, 1 and 100 items, padded and not. */
function cases() {
  const big = 2n ** 63n - 1n;
  const out = [];
  const seeds = [0, 1, 127, 128, 16383, 16384, 1_700_000_000_123, Number.MAX_SAFE_INTEGER, big];
  for (const [i, sentAt] of seeds.entries()) {
    for (const kind of [ReceiptKind.DELIVERED, ReceiptKind.READ]) {
      const count = [1, 2, 7, MAX_RECEIPT_ITEMS][(i + kind) % 4];
      const items = Array.from({ length: count }, (_, j) =>
        typeof sentAt === 'bigint' ? sentAt - BigInt(j) : sentAt + j,
      );
      out.push({ kind, items, sent_at: sentAt, hide: (i + kind) % 2 === 0 });
    }
  }
  return out;
}

test('RECEIPT encodings match Python byte for byte, and decode back', () => {
  const all = cases();
  const expected = python(ENCODE, all);
  for (const [i, c] of all.entries()) {
    const receipt = new Receipt(c.kind, c.items.map(norm), norm(c.sent_at));
    const encoded = encodeContent(receipt, c.hide);
    assert.equal(hex(encoded), expected[i], `case ${i}`);
    assert.deepEqual(decodeContent(encoded), receipt);
  }
});

test('Python decodes what JS encodes, and both refuse the same malformed receipts', () => {
  const byHand = [
    ['02000100' + '80', 'invalid_value'], // count 0
    ['0200030101' + '80', 'unknown_type'], // unknown receipt kind 3
    ['02000165' + '00'.repeat(101) + '80', 'too_large'], // 101 items: above the limit
    ['02000101' + 'ff' + '80', 'truncated'], // 0xff starts a varint that never ends
    ['020001010100' + '80', 'trailing_bytes'], // a byte after the last item
    ['02000102' + '01' + '80', 'truncated'], // count 2, one item
    ['0c00' + '80', 'unknown_type'], // unknown content type 12 (1-11 are taken)
    ['02' + '80', 'truncated'], // no sent_at (it is read before the type is looked at)
    ['0200' + '80', 'truncated'], // no receipt kind
    ['0200018200' + '0101' + '80', 'non_minimal_varint'], // count 2 spelt in two bytes
  ];
  const fromJs = [
    encodeContent(new Receipt(ReceiptKind.READ, [5, 6, 7], 1_700_000_000_000)),
    encodeContent(new Text('not a receipt', 9), true),
  ].map(hex);
  const answers = python(DECODE, [...byHand.map(([h]) => h), ...fromJs]);
  for (const [i, [h, slug]] of byHand.entries()) {
    assert.deepEqual(answers[i], { error: slug }, `Python on ${h}`);
    throwsSlug(() => decodeContent(unhex(h)), slug);
  }
  assert.deepEqual(answers[byHand.length], { kind: 2, items: [5, 6, 7], sent_at: 1_700_000_000_000 });
  assert.deepEqual(answers[byHand.length + 1], { text: 'not a receipt', sent_at: 9 });
});

test('the encoder refuses what the decoder refuses', () => {
  throwsSlug(() => encodeContent(new Receipt(ReceiptKind.READ, [], 1)), 'invalid_value');
  const tooMany = Array.from({ length: MAX_RECEIPT_ITEMS + 1 }, (_, i) => i);
  throwsSlug(() => encodeContent(new Receipt(ReceiptKind.READ, tooMany, 1)), 'invalid_value');
  throwsSlug(() => encodeContent(new Receipt(3, [1], 1)), 'invalid_value');
});

test('content.json receipt vectors', () => {
  const { receipts } = loadVector('content.json');
  assert.ok(Array.isArray(receipts) && receipts.length >= 3, 'content.json must carry a "receipts" list');
  for (const v of receipts) {
    const decoded = decodeContent(unhex(v.encoded));
    assert.ok(decoded instanceof Receipt);
    assert.deepEqual([decoded.kind, decoded.messageSentAtMs, decoded.sentAtMs], [v.kind, v.items, v.sent_at_ms]);
    assert.equal(hex(encodeContent(decoded, v.hide_length)), v.encoded);
    assert.equal(hex(encodeContent(new Receipt(v.kind, v.items, v.sent_at_ms), v.hide_length)), v.encoded);
  }
});

/** @param {number | bigint | string} value */
function norm(value) {
  const big = BigInt(value);
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}
