// @ts-check
/**
 * The cryptographic primitives of Sealpost in the browser: thin wrappers and nothing more
 * (protocol/primitives.py, function for function).
 *
 * Why these libraries: the noble packages (@noble/curves, @noble/ciphers, @noble/hashes,
 * @noble/post-quantum) are audited, dependency-free, pure JavaScript and tree-shakeable, so
 * the page needs no WebAssembly and no server-side help. WebCrypto supplies only the
 * randomness (crypto.getRandomValues): its X25519/Ed25519 support is not universal, it has
 * no XChaCha20-Poly1305 or ML-KEM, and its asynchronous API would make the protocol async.
 * tests/js/wycheproof.test.mjs runs every Wycheproof vector for these algorithms against
 * the functions below, with the expectations of tests/protocol/test_wycheproof.py.
 *
 * This module is the only one in static/js/protocol/ that imports a noble package, but
 * for attachments.js, which feeds SHA-256 a blob in pieces (noble's incremental hasher).
 *
 * Conventions, as in Python: every value is a Uint8Array. An X25519 private key is its
 * 32-byte scalar, an Ed25519 private key its 32-byte seed, an ML-KEM-768 private key its
 * 64-byte seed d || z. Bad input or failed cryptography throws only `ProtocolError`
 * (BAD_KEY, BAD_SIGNATURE, DECRYPT_FAILED or INVALID_VALUE), with the same code as the
 * Python function for the same input; library errors are not chained.
 *
 * Where noble and libsodium (behind PyNaCl) differ, this module follows libsodium:
 *
 * - Ed25519 verification. noble's `ed25519.verify` defaults to ZIP-215 (permissive
 *   encodings). We pass `{ zip215: false }` (RFC 8032: canonical A and R, S < L, and noble
 *   also rejects a small-order A) and then add what libsodium checks beyond that: R must
 *   not be a small-order point, and the equation must hold without the cofactor, i.e.
 *   encode([S]B - [k]A) == R byte for byte. noble checks [8][S]B == [8]R + [8][k]A, which
 *   accepts R + T for a torsion point T; libsodium does not, so without the second check a
 *   signature could verify in the browser and fail in Python.
 * - X25519. libsodium refuses a low-order peer key (all-zero result); noble throws for
 *   the same five u-coordinates before the ladder. Both become BAD_KEY, and the all-zero
 *   check is repeated here as in Python.
 * - HKDF with an empty salt: noble treats an empty salt as a zero-length HMAC key, which
 *   HMAC pads to the same block as HashLen zero bytes, so the output equals pyca's.
 */

import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { ed25519, x25519 as nobleX25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 as nobleSha256, sha512 as nobleSha512 } from '@noble/hashes/sha2.js';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';

import { concatBytes } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';

export const X25519_KEY_BYTES = 32;
export const ED25519_SEED_BYTES = 32;
export const ED25519_PUBLIC_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;
export const AEAD_KEY_BYTES = 32;
export const AEAD_NONCE_BYTES = 24;
export const AEAD_TAG_BYTES = 16;
export const MLKEM768_SEED_BYTES = 64;
export const MLKEM768_PUBLIC_BYTES = 1184;
export const MLKEM768_CIPHERTEXT_BYTES = 1088;
export const MLKEM768_SHARED_BYTES = 32;
export const MLKEM768_MESSAGE_BYTES = 32; // the encapsulation randomness m (FIPS 203)

const HKDF_SHA256_MAX_BYTES = 255 * 32; // RFC 5869: L <= 255 * HashLen
const ED25519_ORDER = ed25519.Point.Fn.ORDER; // L

/** @typedef {(length: number) => Uint8Array} Rng */

/**
 * Throw `code` unless `value` is a Uint8Array of exactly `expected` bytes.
 * @param {Uint8Array} value
 * @param {number} expected
 * @param {string} what
 * @param {number} code
 */
function checkLength(value, expected, what, code) {
  if (!(value instanceof Uint8Array)) {
    throw new ProtocolError(code, `${what} must be ${expected} bytes, got ${typeof value}`);
  }
  if (value.length !== expected) {
    throw new ProtocolError(code, `${what} must be ${expected} bytes, got ${value.length}`);
  }
}

/**
 * @param {Uint8Array} value
 * @param {string} what
 */
function checkBytes(value, what) {
  if (!(value instanceof Uint8Array)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what} must be a Uint8Array`);
  }
}

/**
 * `length` bytes from the platform CSPRNG (crypto.getRandomValues).
 * @type {Rng}
 */
export function randomBytes(length) {
  if (!Number.isInteger(length) || length < 0) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `random length must be >= 0: ${length}`);
  }
  const out = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) {
    // getRandomValues fills at most 65536 bytes per call
    globalThis.crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + 65536)));
  }
  return out;
}

// --- X25519 ---------------------------------------------------------------------------

/**
 * The X25519 public key of a 32-byte private scalar.
 * @param {Uint8Array} privateKey
 */
export function x25519PublicKey(privateKey) {
  checkLength(privateKey, X25519_KEY_BYTES, 'x25519 private key', ErrorCode.BAD_KEY);
  try {
    return nobleX25519.getPublicKey(privateKey);
  } catch {
    throw new ProtocolError(ErrorCode.BAD_KEY, 'x25519 public key derivation failed');
  }
}

/**
 * The X25519 shared secret; BAD_KEY for a low-order peer key (all-zero result).
 * @param {Uint8Array} privateKey
 * @param {Uint8Array} publicKey
 */
export function x25519(privateKey, publicKey) {
  checkLength(privateKey, X25519_KEY_BYTES, 'x25519 private key', ErrorCode.BAD_KEY);
  checkLength(publicKey, X25519_KEY_BYTES, 'x25519 public key', ErrorCode.BAD_KEY);
  let shared;
  try {
    shared = nobleX25519.getSharedSecret(privateKey, publicKey);
  } catch {
    // noble throws for the low-order u-coordinates, where libsodium returns -1
    throw new ProtocolError(ErrorCode.BAD_KEY, 'x25519 public key has low order');
  }
  let any = 0;
  for (const byte of shared) any |= byte;
  if (any === 0) throw new ProtocolError(ErrorCode.BAD_KEY, 'x25519 public key has low order');
  return shared;
}

// --- Ed25519 --------------------------------------------------------------------------

/**
 * The Ed25519 public key of a 32-byte seed.
 * @param {Uint8Array} seed
 */
export function ed25519PublicKey(seed) {
  checkLength(seed, ED25519_SEED_BYTES, 'ed25519 seed', ErrorCode.BAD_KEY);
  return ed25519.getPublicKey(seed);
}

/**
 * The 64-byte detached Ed25519 signature (RFC 8032, deterministic) of `message`.
 * @param {Uint8Array} seed
 * @param {Uint8Array} message
 */
export function ed25519Sign(seed, message) {
  checkLength(seed, ED25519_SEED_BYTES, 'ed25519 seed', ErrorCode.BAD_KEY);
  checkBytes(message, 'ed25519 message');
  return ed25519.sign(message, seed);
}

/**
 * libsodium's checks beyond noble's strict verification (see the module comment): R is not
 * of small order, and [S]B - [k]A encodes to exactly R (the cofactorless equation).
 * Called only after `ed25519.verify(..., { zip215: false })` accepted, so A and R decode
 * canonically and S < L.
 * @param {Uint8Array} publicKey
 * @param {Uint8Array} message
 * @param {Uint8Array} signature
 */
function libsodiumChecks(publicKey, message, signature) {
  const { Point } = ed25519;
  const r = signature.subarray(0, 32);
  if (Point.fromBytes(r, false).isSmallOrder()) return false;
  const A = Point.fromBytes(publicKey, false);
  const s = bytesToNumberLE(signature.subarray(32, 64));
  const k = bytesToNumberLE(nobleSha512(concatBytes(r, publicKey, message))) % ED25519_ORDER;
  // Public values only (signature, key, message), so variable-time multiplication is fine.
  const expected = Point.BASE.multiplyUnsafe(s).subtract(A.multiplyUnsafe(k)).toBytes();
  let diff = 0;
  for (let i = 0; i < 32; i++) diff |= expected[i] ^ r[i];
  return diff === 0;
}

/** @param {Uint8Array} bytes */
function bytesToNumberLE(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

/**
 * Return if `signature` is valid for `message` under `publicKey`; throw BAD_SIGNATURE
 * otherwise (BAD_KEY for a public key of the wrong length). Accepts exactly what
 * libsodium's crypto_sign_verify_detached accepts.
 * @param {Uint8Array} publicKey
 * @param {Uint8Array} message
 * @param {Uint8Array} signature
 */
export function ed25519Verify(publicKey, message, signature) {
  checkLength(publicKey, ED25519_PUBLIC_BYTES, 'ed25519 public key', ErrorCode.BAD_KEY);
  checkLength(signature, ED25519_SIGNATURE_BYTES, 'ed25519 signature', ErrorCode.BAD_SIGNATURE);
  checkBytes(message, 'ed25519 message');
  let valid = false;
  try {
    valid =
      ed25519.verify(signature, message, publicKey, { zip215: false }) &&
      libsodiumChecks(publicKey, message, signature);
  } catch {
    valid = false;
  }
  if (!valid) throw new ProtocolError(ErrorCode.BAD_SIGNATURE, 'ed25519 signature is invalid');
}

// --- XChaCha20-Poly1305 ---------------------------------------------------------------

/**
 * Encrypt with XChaCha20-Poly1305 (IETF); return ciphertext || 16-byte tag.
 * @param {Uint8Array} key
 * @param {Uint8Array} nonce
 * @param {Uint8Array} plaintext
 * @param {Uint8Array} associatedData
 */
export function aeadEncrypt(key, nonce, plaintext, associatedData) {
  checkLength(key, AEAD_KEY_BYTES, 'aead key', ErrorCode.BAD_KEY);
  checkLength(nonce, AEAD_NONCE_BYTES, 'aead nonce', ErrorCode.BAD_KEY);
  checkBytes(plaintext, 'aead plaintext');
  checkBytes(associatedData, 'aead associated data');
  try {
    return xchacha20poly1305(key, nonce, associatedData).encrypt(plaintext);
  } catch {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, 'aead encryption failed');
  }
}

/**
 * Decrypt ciphertext || tag with XChaCha20-Poly1305 (IETF); DECRYPT_FAILED if forged.
 * @param {Uint8Array} key
 * @param {Uint8Array} nonce
 * @param {Uint8Array} ciphertext
 * @param {Uint8Array} associatedData
 */
export function aeadDecrypt(key, nonce, ciphertext, associatedData) {
  checkLength(key, AEAD_KEY_BYTES, 'aead key', ErrorCode.BAD_KEY);
  checkLength(nonce, AEAD_NONCE_BYTES, 'aead nonce', ErrorCode.BAD_KEY);
  checkBytes(ciphertext, 'aead ciphertext');
  checkBytes(associatedData, 'aead associated data');
  if (ciphertext.length < AEAD_TAG_BYTES) {
    throw new ProtocolError(
      ErrorCode.DECRYPT_FAILED,
      `aead ciphertext shorter than its ${AEAD_TAG_BYTES}-byte tag: ${ciphertext.length}`,
    );
  }
  try {
    return xchacha20poly1305(key, nonce, associatedData).decrypt(ciphertext);
  } catch {
    throw new ProtocolError(ErrorCode.DECRYPT_FAILED, 'aead authentication failed');
  }
}

// --- hashes, HMAC, HKDF ---------------------------------------------------------------

/**
 * `length` bytes of HKDF-SHA-256 (RFC 5869); an empty salt means HashLen zero bytes.
 * @param {Uint8Array} ikm
 * @param {Uint8Array} salt
 * @param {Uint8Array} info
 * @param {number} length 1 ..= 8160
 */
export function hkdfSha256(ikm, salt, info, length) {
  if (!Number.isInteger(length) || length < 1 || length > HKDF_SHA256_MAX_BYTES) {
    throw new ProtocolError(
      ErrorCode.INVALID_VALUE,
      `hkdf length must be 1..${HKDF_SHA256_MAX_BYTES}, got ${length}`,
    );
  }
  checkBytes(ikm, 'hkdf ikm');
  checkBytes(salt, 'hkdf salt');
  checkBytes(info, 'hkdf info');
  return hkdf(nobleSha256, ikm, salt.length ? salt : undefined, info, length);
}

/**
 * The 32-byte HMAC-SHA-256 of `data` under `key`.
 * @param {Uint8Array} key
 * @param {Uint8Array} data
 */
export function hmacSha256(key, data) {
  checkBytes(key, 'hmac key');
  checkBytes(data, 'hmac data');
  return hmac(nobleSha256, key, data);
}

/** @param {Uint8Array} data */
export function sha256(data) {
  checkBytes(data, 'sha256 input');
  return nobleSha256(data);
}

/** @param {Uint8Array} data */
export function sha512(data) {
  checkBytes(data, 'sha512 input');
  return nobleSha512(data);
}

// --- ML-KEM-768 (FIPS 203) ------------------------------------------------------------

/**
 * The expanded decapsulation key of a 64-byte seed d || z (ML-KEM.KeyGen_internal(d, z),
 * the convention of pyca/cryptography's from_seed_bytes).
 * @param {Uint8Array} seed
 */
function mlkem768Keys(seed) {
  checkLength(seed, MLKEM768_SEED_BYTES, 'ml-kem-768 seed', ErrorCode.BAD_KEY);
  try {
    return ml_kem768.keygen(seed);
  } catch {
    throw new ProtocolError(ErrorCode.BAD_KEY, 'ml-kem-768 seed rejected');
  }
}

/**
 * The 1184-byte ML-KEM-768 encapsulation key of a 64-byte seed d || z.
 * @param {Uint8Array} seed
 */
export function mlkem768PublicKey(seed) {
  return mlkem768Keys(seed).publicKey;
}

/**
 * Encapsulate to `publicKey`: returns [ciphertext, sharedSecret] (the order of the Python
 * tuple). BAD_KEY for a malformed encapsulation key (wrong length, or a coefficient not
 * below q: the FIPS 203 modulus check). `m`, the 32-byte encapsulation randomness, is drawn
 * fresh unless given; pass it only to reproduce known-answer vectors.
 * @param {Uint8Array} publicKey
 * @param {Uint8Array} [m]
 * @returns {[Uint8Array, Uint8Array]}
 */
export function mlkem768Encapsulate(publicKey, m) {
  checkLength(publicKey, MLKEM768_PUBLIC_BYTES, 'ml-kem-768 public key', ErrorCode.BAD_KEY);
  if (m !== undefined) {
    checkLength(m, MLKEM768_MESSAGE_BYTES, 'ml-kem-768 message', ErrorCode.INVALID_VALUE);
  }
  let result;
  try {
    result = ml_kem768.encapsulate(publicKey, m ?? randomBytes(MLKEM768_MESSAGE_BYTES));
  } catch {
    throw new ProtocolError(ErrorCode.BAD_KEY, 'ml-kem-768 public key is malformed');
  }
  return [result.cipherText.slice(), result.sharedSecret.slice()];
}

/**
 * The 32-byte shared secret; DECRYPT_FAILED for a ciphertext of the wrong length. A
 * tampered ciphertext of the right length is implicitly rejected: it yields an unrelated
 * secret, so the AEAD that follows fails with DECRYPT_FAILED.
 * @param {Uint8Array} seed
 * @param {Uint8Array} ciphertext
 */
export function mlkem768Decapsulate(seed, ciphertext) {
  checkLength(seed, MLKEM768_SEED_BYTES, 'ml-kem-768 seed', ErrorCode.BAD_KEY);
  checkLength(
    ciphertext,
    MLKEM768_CIPHERTEXT_BYTES,
    'ml-kem-768 ciphertext',
    ErrorCode.DECRYPT_FAILED,
  );
  const { secretKey } = mlkem768Keys(seed);
  try {
    return ml_kem768.decapsulate(ciphertext, secretKey);
  } catch {
    throw new ProtocolError(ErrorCode.DECRYPT_FAILED, 'ml-kem-768 ciphertext rejected');
  } finally {
    secretKey.fill(0);
  }
}

/**
 * Compare two byte strings in time independent of their contents (not their lengths).
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
export function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
