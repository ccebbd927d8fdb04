// @ts-check
/**
 * Attachment blobs: a file encrypted under its own key, chunk by chunk
 * (protocol/attachments.py; docs/protocol.md, 17.5).
 *
 * The plaintext is cut into chunks of CHUNK_BYTES (the last one 0 .. CHUNK_BYTES bytes; an
 * empty file is one empty chunk, so n = max(1, ceil(size / CHUNK_BYTES))), each sealed as
 *
 *     nonce_i = 15 × 0x00 | i as u64 big-endian | final u8 (1 for the last chunk, else 0)
 *     chunk_i = XChaCha20-Poly1305(key, nonce_i, plaintext chunk i, AD = empty)
 *     blob    = chunk_0 | … | chunk_{n-1}                    (|blob| = size + 16 n)
 *
 * This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
 * Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance"): a chunk moved to another
 * place, a blob cut short after a chunk or extended past its final one, all fail
 * authentication. The nonce prefix can be zero because a key encrypts one file only. The
 * ATTACHMENT content (content.js) carries the key, the plaintext size and the SHA-256 of the
 * whole blob, which the receiver compares in constant time before trusting the blob.
 *
 * The browser reads files in slices, so both directions stream: `AttachmentEncryptor` and
 * `AttachmentDecryptor` take Uint8Array pieces of any size and return the whole chunks they
 * complete. Every failure to decrypt, whatever its cause (digest, length, tag), is
 * DECRYPT_FAILED. `encryptAttachment` and `decryptAttachment` do a whole file at once.
 *
 * Unlike every other module but primitives.js, this one imports @noble/hashes itself: it
 * needs SHA-256 incrementally (a blob is up to 100 MiB and arrives in pieces), which
 * primitives.js offers only in one shot.
 */

import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';

import * as p from './primitives.js';
import { concatBytes } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';

/** @import { Rng } from './primitives.js' */

export const CHUNK_BYTES = 65_536;
export const MAX_ATTACHMENT_BYTES = 104_857_600; // 100 MiB of plaintext
export const ATTACHMENT_KEY_BYTES = 32;
export const ATTACHMENT_DIGEST_BYTES = 32;
export const BLOB_ID_BYTES = 16; // the server's id of an uploaded blob

const ENCRYPTED_CHUNK_BYTES = CHUNK_BYTES + p.AEAD_TAG_BYTES;
const EMPTY = new Uint8Array(0);

/**
 * The number of chunks of a file of `size` bytes: max(1, ceil(size / CHUNK_BYTES)).
 * @param {number} size
 */
export function chunkCount(size) {
  checkSize(size);
  return Math.max(1, Math.ceil(size / CHUNK_BYTES));
}

/**
 * The length of the blob of a file of `size` bytes: size + 16 n.
 * @param {number} size
 */
export function blobSize(size) {
  return size + p.AEAD_TAG_BYTES * chunkCount(size);
}

/**
 * nonce_i = 15 zero bytes | index as u64 big-endian | final (1 for the last chunk, else 0).
 * @param {number | bigint} index 0 .. 2**64 - 1
 * @param {boolean} final
 */
export function chunkNonce(index, final) {
  const valid =
    typeof index === 'bigint'
      ? index >= 0n && index <= 0xffff_ffff_ffff_ffffn
      : Number.isSafeInteger(index) && index >= 0;
  if (!valid) throw new ProtocolError(ErrorCode.INVALID_VALUE, `chunk index ${index} is not a u64`);
  const nonce = new Uint8Array(p.AEAD_NONCE_BYTES);
  new DataView(nonce.buffer).setBigUint64(15, BigInt(index));
  nonce[23] = final ? 1 : 0;
  return nonce;
}

/**
 * A fresh file key; never use one for two files (the nonces would repeat).
 * @param {{rng?: Rng}} [options]
 */
export function newAttachmentKey({ rng = p.randomBytes } = {}) {
  return rng(ATTACHMENT_KEY_BYTES);
}

/** @param {number} size */
function checkSize(size) {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `attachment size ${size} is not a byte count`);
  }
  if (size > MAX_ATTACHMENT_BYTES) {
    throw new ProtocolError(
      ErrorCode.TOO_LARGE,
      `attachment of ${size} bytes is above ${MAX_ATTACHMENT_BYTES}`,
    );
  }
}

/** @param {Uint8Array} key */
function checkKey(key) {
  if (!(key instanceof Uint8Array) || key.length !== ATTACHMENT_KEY_BYTES) {
    throw new ProtocolError(ErrorCode.BAD_KEY, `attachment key must be ${ATTACHMENT_KEY_BYTES} bytes`);
  }
}

/** @param {Uint8Array} data */
function checkData(data) {
  if (!(data instanceof Uint8Array)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, 'attachment data must be a Uint8Array');
  }
}

/**
 * Encrypts a file fed in pieces of any size. `update` returns the blob bytes of the chunks
 * it completed (it always holds back the last chunk, which is sealed as final only when
 * `finalize` is called); `finalize` returns the rest. Afterwards `size` is the plaintext length
 * and `digest` the SHA-256 of the whole blob, the two values an ATTACHMENT content needs.
 */
export class AttachmentEncryptor {
  /** @param {Uint8Array} key 32 bytes, used for this one file only */
  constructor(key) {
    checkKey(key);
    this._key = key.slice();
    this._hash = nobleSha256.create();
    /** @type {Uint8Array[]} */
    this._pending = [];
    this._pendingBytes = 0;
    this._index = 0;
    this._size = 0;
    /** @type {Uint8Array | null} */
    this._digest = null;
  }

  /** Plaintext bytes taken so far. */
  get size() {
    return this._size;
  }

  /** SHA-256 of the blob; known once `finalize` has returned. */
  get digest() {
    if (this._digest === null) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'the blob digest is known after finalize');
    }
    return this._digest.slice();
  }

  /**
   * @param {Uint8Array} data the next piece of the file
   * @returns {Uint8Array} blob bytes completed by it (possibly none)
   */
  update(data) {
    checkData(data);
    if (this._digest !== null) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'encryptor already finished');
    checkSize(this._size + data.length);
    this._size += data.length;
    this._pending.push(data.slice());
    this._pendingBytes += data.length;
    /** @type {Uint8Array[]} */
    const out = [];
    // Strictly more than one chunk held: the first one is then known not to be the last.
    if (this._pendingBytes > CHUNK_BYTES) {
      let buffered = concatBytes(...this._pending);
      let offset = 0;
      while (buffered.length - offset > CHUNK_BYTES) {
        out.push(this._seal(buffered.subarray(offset, offset + CHUNK_BYTES), false));
        offset += CHUNK_BYTES;
      }
      buffered = buffered.slice(offset);
      this._pending = [buffered];
      this._pendingBytes = buffered.length;
    }
    return concatBytes(...out);
  }

  /** @returns {Uint8Array} the last chunk (0 .. CHUNK_BYTES bytes of plaintext, sealed) */
  finalize() {
    if (this._digest !== null) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'encryptor already finished');
    const last = this._seal(concatBytes(...this._pending), true);
    this._pending = [];
    this._pendingBytes = 0;
    this._digest = this._hash.digest();
    this._key.fill(0);
    return last;
  }

  /**
   * @param {Uint8Array} chunk
   * @param {boolean} final
   */
  _seal(chunk, final) {
    const sealed = p.aeadEncrypt(this._key, chunkNonce(this._index, final), chunk, EMPTY);
    this._index += 1;
    this._hash.update(sealed);
    return sealed;
  }
}

/**
 * Decrypts a blob fed in pieces of any size, for the `size` and `digest` of its ATTACHMENT
 * content. `update` returns the plaintext of every chunk it completed; `finalize` checks that
 * the blob was exactly size + 16 n bytes and that its SHA-256 equals `digest` (constant
 * time). Every failure, at any step, is DECRYPT_FAILED, and afterwards the decryptor refuses
 * more input. Plaintext returned before `finalize` is authenticated chunk by chunk but the file
 * is complete and the one the sender named only once `finalize` has returned: keep it apart
 * (not shown, not saved as the file) until then.
 */
export class AttachmentDecryptor {
  /**
   * @param {Uint8Array} key
   * @param {number} size plaintext bytes, from the ATTACHMENT content
   * @param {Uint8Array} digest SHA-256 of the blob, from the ATTACHMENT content
   */
  constructor(key, size, digest) {
    checkKey(key);
    checkSize(size);
    if (!(digest instanceof Uint8Array) || digest.length !== ATTACHMENT_DIGEST_BYTES) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `digest must be ${ATTACHMENT_DIGEST_BYTES} bytes`);
    }
    this._key = key.slice();
    this._digest = digest.slice();
    this._size = size;
    this._count = chunkCount(size);
    this._expected = blobSize(size);
    this._hash = nobleSha256.create();
    /** @type {Uint8Array[]} */
    this._pending = [];
    this._pendingBytes = 0;
    this._received = 0;
    this._index = 0;
    this._done = false;
  }

  /**
   * @param {Uint8Array} data the next piece of the blob
   * @returns {Uint8Array} plaintext of the chunks completed by it (possibly none)
   */
  update(data) {
    checkData(data);
    this._checkOpen();
    if (this._received + data.length > this._expected) {
      this._fail(`blob is longer than the ${this._expected} bytes of a ${this._size}-byte file`);
    }
    this._received += data.length;
    this._hash.update(data);
    this._pending.push(data.slice());
    this._pendingBytes += data.length;
    /** @type {Uint8Array[]} */
    const out = [];
    let buffered = concatBytes(...this._pending);
    let offset = 0;
    for (;;) {
      const length = this._chunkLength(this._index);
      if (length === null || buffered.length - offset < length) break;
      out.push(this._open(buffered.subarray(offset, offset + length)));
      offset += length;
    }
    buffered = buffered.slice(offset);
    this._pending = buffered.length ? [buffered] : [];
    this._pendingBytes = buffered.length;
    return concatBytes(...out);
  }

  /** Check that the blob was complete and is the one the digest names. */
  finalize() {
    this._checkOpen();
    if (this._received !== this._expected || this._index !== this._count) {
      this._fail(`blob of ${this._received} bytes; a ${this._size}-byte file gives ${this._expected}`);
    }
    if (!p.constantTimeEqual(this._hash.digest(), this._digest)) {
      this._fail('blob does not match its digest');
    }
    this._done = true;
    this._key.fill(0);
  }

  /**
   * The sealed length of chunk `index`, or null past the last one.
   * @param {number} index
   */
  _chunkLength(index) {
    if (index >= this._count) return null;
    if (index < this._count - 1) return ENCRYPTED_CHUNK_BYTES;
    return this._size - CHUNK_BYTES * (this._count - 1) + p.AEAD_TAG_BYTES;
  }

  /** @param {Uint8Array} sealed */
  _open(sealed) {
    const final = this._index === this._count - 1;
    let plaintext;
    try {
      plaintext = p.aeadDecrypt(this._key, chunkNonce(this._index, final), sealed, EMPTY);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this._fail(`chunk ${this._index} does not authenticate`);
    }
    this._index += 1;
    return plaintext;
  }

  _checkOpen() {
    if (this._done) throw new ProtocolError(ErrorCode.DECRYPT_FAILED, 'decryptor already finished or failed');
  }

  /**
   * @param {string} detail
   * @returns {never}
   */
  _fail(detail) {
    this._done = true;
    this._pending = [];
    this._key.fill(0);
    throw new ProtocolError(ErrorCode.DECRYPT_FAILED, detail);
  }
}

/**
 * Encrypt a whole file under `key` (a fresh one if null): [blob, key, digest], the digest
 * being the SHA-256 of the blob (the ATTACHMENT content's `digest`).
 * @param {Uint8Array} data
 * @param {Uint8Array | null} [key]
 * @returns {[Uint8Array, Uint8Array, Uint8Array]} [blob, key, digest]
 */
export function encryptAttachment(data, key = null) {
  checkData(data);
  const fileKey = key ?? newAttachmentKey();
  const encryptor = new AttachmentEncryptor(fileKey);
  const blob = concatBytes(encryptor.update(data), encryptor.finalize());
  return [blob, fileKey, encryptor.digest];
}

/**
 * Decrypt a whole blob, in the order of 17.5: its SHA-256 against `digest` (constant
 * time), its length against size + 16 n, then chunk by chunk. Every failure is
 * DECRYPT_FAILED.
 * @param {Uint8Array} blob
 * @param {Uint8Array} key
 * @param {number} size
 * @param {Uint8Array} digest
 */
export function decryptAttachment(blob, key, size, digest) {
  checkData(blob);
  const decryptor = new AttachmentDecryptor(key, size, digest); // checks the arguments
  if (!p.constantTimeEqual(p.sha256(blob), digest)) {
    throw new ProtocolError(ErrorCode.DECRYPT_FAILED, 'blob does not match its digest');
  }
  const expected = blobSize(size);
  if (blob.length !== expected) {
    throw new ProtocolError(
      ErrorCode.DECRYPT_FAILED,
      `blob of ${blob.length} bytes; a ${size}-byte file gives ${expected}`,
    );
  }
  const plaintext = decryptor.update(blob);
  decryptor.finalize();
  return plaintext;
}
