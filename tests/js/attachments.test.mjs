// Attachment blobs (static/js/protocol/attachments.js, docs/protocol.md 17.5): the STREAM
// chunk encryption, streaming and one-shot, against protocol/vectors/attachments.json and
// the Python package; every tampered, truncated, reordered or extended blob is refused.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  AttachmentDecryptor,
  AttachmentEncryptor,
  CHUNK_BYTES,
  MAX_ATTACHMENT_BYTES,
  blobSize,
  chunkCount,
  chunkNonce,
  concatBytes,
  decryptAttachment,
  encryptAttachment,
  newAttachmentKey,
  primitives as p,
} from '../../static/js/protocol/index.js';
import { hex, loadVector, python, seededRandom, throwsSlug, unhex } from './helpers.mjs';

const TAG = 16;
const KEY = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
const SIZES = [0, 1, 15, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES + 5];

/** @param {number} size */
function fileOf(size) {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + (i >> 8)) & 0xff;
  return out;
}

/**
 * Feed `data` to `sink` in random pieces (some empty); return the concatenated output.
 * @param {(piece: Uint8Array) => Uint8Array} sink
 * @param {Uint8Array} data
 * @param {ReturnType<typeof seededRandom>} random
 */
function feedInPieces(sink, data, random) {
  const out = [];
  let offset = 0;
  while (offset < data.length) {
    const length = random.pick([0, 1, 7, 1000, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 17, 200_000]);
    out.push(sink(data.subarray(offset, offset + length)));
    offset += length;
  }
  return concatBytes(...out);
}

/**
 * The sealed chunks of a blob of a `size`-byte file.
 * @param {Uint8Array} blob
 * @param {number} size
 */
function chunksOf(blob, size) {
  const chunks = [];
  for (let i = 0, offset = 0; i < chunkCount(size); i++) {
    const length = i < chunkCount(size) - 1 ? CHUNK_BYTES + TAG : size - CHUNK_BYTES * i + TAG;
    chunks.push(blob.subarray(offset, offset + length));
    offset += length;
  }
  return chunks;
}

test('sizes, nonces and chunk counts are those of 17.5', () => {
  assert.deepEqual(SIZES.map(chunkCount), [1, 1, 1, 1, 1, 2, 2, 4]);
  for (const size of SIZES) assert.equal(blobSize(size), size + TAG * chunkCount(size));
  assert.equal(hex(chunkNonce(0, false)), '00'.repeat(24));
  assert.equal(hex(chunkNonce(1, true)), '00'.repeat(15) + '0000000000000001' + '01');
  assert.equal(hex(chunkNonce(0x0102030405, false)), '00'.repeat(15) + '0000000102030405' + '00');
  assert.equal(blobSize(MAX_ATTACHMENT_BYTES), MAX_ATTACHMENT_BYTES + TAG * 1600);
  throwsSlug(() => chunkCount(MAX_ATTACHMENT_BYTES + 1), 'too_large');
  throwsSlug(() => chunkCount(-1), 'invalid_value');
  throwsSlug(() => new AttachmentEncryptor(new Uint8Array(31)), 'bad_key');
  throwsSlug(() => new AttachmentDecryptor(KEY, 1, new Uint8Array(31)), 'invalid_value');
});

test('each chunk is XChaCha20-Poly1305 under its STREAM nonce, and the digest is SHA-256 of the blob', () => {
  const size = 2 * CHUNK_BYTES + 3;
  const data = fileOf(size);
  const [blob, key, digest] = encryptAttachment(data, KEY);
  assert.equal(hex(key), hex(KEY));
  const expected = [0, 1, 2].map((i) =>
    p.aeadEncrypt(KEY, chunkNonce(i, i === 2), data.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES), new Uint8Array(0)),
  );
  assert.equal(hex(blob), hex(concatBytes(...expected)));
  assert.equal(hex(digest), hex(p.sha256(blob)));
  // an empty file is one empty final chunk: its tag alone
  const [empty] = encryptAttachment(new Uint8Array(0), KEY);
  assert.equal(hex(empty), hex(p.aeadEncrypt(KEY, chunkNonce(0, true), new Uint8Array(0), new Uint8Array(0))));
});

test('streaming in any pieces gives the one-shot blob, and decrypts back in any pieces', () => {
  const random = seededRandom(5);
  for (const size of SIZES) {
    const data = fileOf(size);
    const [blob, , digest] = encryptAttachment(data, KEY);
    assert.equal(blob.length, blobSize(size));
    const encryptor = new AttachmentEncryptor(KEY);
    const streamed = concatBytes(feedInPieces((piece) => encryptor.update(piece), data, random), encryptor.finalize());
    assert.equal(hex(streamed), hex(blob), `size ${size}`);
    assert.equal(encryptor.size, size);
    assert.equal(hex(encryptor.digest), hex(digest));
    throwsSlug(() => encryptor.update(new Uint8Array(1)), 'invalid_value');

    assert.equal(hex(decryptAttachment(blob, KEY, size, digest)), hex(data));
    const decryptor = new AttachmentDecryptor(KEY, size, digest);
    const opened = feedInPieces((piece) => decryptor.update(piece), blob, random);
    decryptor.finalize();
    assert.equal(hex(opened), hex(data), `size ${size}`);
  }
  // a fresh key when none is given
  const [blob, key, digest] = encryptAttachment(fileOf(10));
  assert.equal(key.length, 32);
  assert.equal(hex(decryptAttachment(blob, key, 10, digest)), hex(fileOf(10)));
  assert.notEqual(hex(newAttachmentKey()), hex(newAttachmentKey()));
});

test('blobs match Python byte for byte, both ways', () => {
  const cases = SIZES.map((size, i) => ({ size, key: hex(p.sha256(Uint8Array.of(i))) }));
  const answers = python(
    `
import json, sys
from protocol.attachments import encrypt_attachment, decrypt_attachment
out = []
for c in json.load(sys.stdin):
    data = bytes((i * 31 + (i >> 8)) & 0xFF for i in range(c["size"]))
    blob, key, digest = encrypt_attachment(data, bytes.fromhex(c["key"]))
    assert decrypt_attachment(blob, key, c["size"], digest) == data
    out.append({"blob_sha256": __import__("hashlib").sha256(blob).hexdigest(), "digest": digest.hex(), "length": len(blob)})
print(json.dumps(out))
`,
    cases,
  );
  cases.forEach((c, i) => {
    const [blob, , digest] = encryptAttachment(fileOf(c.size), Uint8Array.from(Buffer.from(c.key, 'hex')));
    assert.deepEqual({ blob_sha256: hex(p.sha256(blob)), digest: hex(digest), length: blob.length }, answers[i]);
  });
});

test('a tampered, truncated, reordered or extended blob is refused, one-shot and streaming', () => {
  const size = 3 * CHUNK_BYTES + 100;
  const data = fileOf(size);
  const [blob, , digest] = encryptAttachment(data, KEY);
  const chunks = chunksOf(blob, size);

  /**
   * Refused by both decryptors even with the digest recomputed over the forged blob, so
   * that the STREAM layer itself is what refuses it.
   * @param {Uint8Array} forged
   * @param {number} claimedSize
   * @param {string} why
   */
  const refused = (forged, claimedSize, why) => {
    for (const named of [digest, p.sha256(forged)]) {
      throwsSlug(() => decryptAttachment(forged, KEY, claimedSize, named), 'decrypt_failed');
      const decryptor = new AttachmentDecryptor(KEY, claimedSize, named);
      throwsSlug(() => {
        decryptor.update(forged);
        decryptor.finalize();
      }, 'decrypt_failed');
      // a failed decryptor takes nothing more
      throwsSlug(() => decryptor.update(new Uint8Array(0)), 'decrypt_failed');
    }
    assert.ok(why);
  };

  // every bit of a few positions in each chunk, and the tag
  for (const position of [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES + 15, CHUNK_BYTES + 16, 2 * (CHUNK_BYTES + TAG) + 7, blob.length - 1]) {
    for (let bit = 0; bit < 8; bit++) {
      const forged = blob.slice();
      forged[position] ^= 1 << bit;
      refused(forged, size, `bit ${bit} of byte ${position}`);
    }
  }
  // the digest alone
  const wrongDigest = digest.slice();
  wrongDigest[31] ^= 1;
  throwsSlug(() => decryptAttachment(blob, KEY, size, wrongDigest), 'decrypt_failed');
  // truncated after a whole chunk: the new last chunk was not sealed as final
  refused(concatBytes(chunks[0], chunks[1]), 2 * CHUNK_BYTES, 'truncated to two chunks');
  refused(concatBytes(chunks[0]), CHUNK_BYTES, 'truncated to one chunk');
  // truncated inside a chunk, and a blob one byte short or long for its size
  refused(blob.subarray(0, blob.length - 1), size, 'one byte short');
  refused(concatBytes(blob, Uint8Array.of(0)), size, 'one byte long');
  refused(blob.subarray(0, blob.length - 50), size - 50, 'last chunk cut');
  // reordered chunks
  refused(concatBytes(chunks[1], chunks[0], chunks[2], chunks[3]), size, 'chunks 0 and 1 swapped');
  refused(concatBytes(chunks[0], chunks[2], chunks[1], chunks[3]), size, 'chunks 1 and 2 swapped');
  // spliced and extended: another file's chunk in last place, a final chunk followed by another
  const [other] = encryptAttachment(fileOf(CHUNK_BYTES), KEY);
  refused(concatBytes(chunks[0], chunks[1], chunks[2], other), 4 * CHUNK_BYTES, 'last chunk from another file');
  const [small] = encryptAttachment(fileOf(5), KEY);
  refused(concatBytes(small, small), 2 * 5 + TAG, 'a final chunk followed by another');
  // another key
  throwsSlug(() => decryptAttachment(blob, new Uint8Array(32), size, digest), 'decrypt_failed');

  // streaming: a short blob passes every update and fails at finalize; nothing more is taken
  const decryptor = new AttachmentDecryptor(KEY, size, digest);
  const partial = decryptor.update(blob.subarray(0, blob.length - 1));
  assert.equal(hex(partial), hex(data.subarray(0, 3 * CHUNK_BYTES)));
  throwsSlug(() => decryptor.finalize(), 'decrypt_failed');
  throwsSlug(() => decryptor.finalize(), 'decrypt_failed');
});

test('attachments.json: blobs, digests, nonces and refused blobs', () => {
  const doc = loadVector('attachments.json');
  assert.equal(doc.chunk_bytes, CHUNK_BYTES);
  const key = unhex(doc.key);
  const rule = (/** @type {number} */ size) => Uint8Array.from({ length: size }, (_, j) => j % 251);
  assert.equal(doc.rule, 'byte j of a file of n bytes is j mod 251');
  assert.ok(doc.files.length >= 6);
  for (const f of doc.files) {
    const data = rule(f.size);
    const [blob, , digest] = encryptAttachment(data, key);
    assert.deepEqual([chunkCount(f.size), blobSize(f.size), blob.length], [f.chunks, f.blob_size, f.blob_size]);
    assert.equal(hex(digest), f.digest, `size ${f.size}`);
    assert.equal(hex(blob.subarray(0, f.blob_head.length / 2)), f.blob_head);
    assert.equal(hex(blob.subarray(blob.length - f.blob_tail.length / 2)), f.blob_tail);
    if (f.blob !== undefined) assert.equal(hex(blob), f.blob);
    assert.equal(hex(decryptAttachment(blob, key, f.size, unhex(f.digest))), hex(data));
  }
  for (const n of doc.nonces) assert.equal(hex(chunkNonce(n.index, n.final)), n.nonce, `nonce ${n.index}`);
  assert.ok(doc.refused.length >= 5);
  for (const c of doc.refused) {
    throwsSlug(() => decryptAttachment(unhex(c.blob), key, c.size, unhex(c.digest)), c.error);
    const decryptor = new AttachmentDecryptor(key, c.size, unhex(c.digest));
    throwsSlug(() => {
      decryptor.update(unhex(c.blob));
      decryptor.finalize();
    }, c.error);
  }
});
