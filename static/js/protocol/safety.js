// @ts-check
/**
 * Safety numbers: what two people compare to know no one sits between them
 * (protocol/safety.py; Signal's NumericFingerprintGenerator, version 0 layout).
 *
 *     h_0     = 0x0000 | account_public_key[32] | username (UTF-8)
 *     h_(i+1) = SHA-512(h_i | account_public_key)          for i in 0 .. 5199
 *     digits  = for each of the first 6 five-byte chunks c of h_5200:
 *               int(c, big-endian) mod 100000, as 5 digits  -> 30 digits per person
 *     number  = the two 30-digit strings, smaller first     -> 60 digits
 *
 * QR payload: version u8 (1) | the smaller fingerprint[32] | the larger fingerprint[32],
 * where each fingerprint is the first 32 bytes of h_5200.
 */

import * as p from './primitives.js';
import { concatBytes, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';

export const ITERATIONS = 5200;
export const FINGERPRINT_VERSION = Uint8Array.of(0, 0);
export const QR_VERSION = 1;

/**
 * @param {Uint8Array} accountPublicKey
 * @param {string} username
 */
function digest(accountPublicKey, username) {
  if (!(accountPublicKey instanceof Uint8Array) || accountPublicKey.length !== p.ED25519_PUBLIC_BYTES) {
    throw new ProtocolError(ErrorCode.BAD_KEY, 'account identity key must be 32 bytes');
  }
  let state = concatBytes(FINGERPRINT_VERSION, accountPublicKey, utf8Encode(username, 'username'));
  // h_i is always 64 bytes after the first round: reuse one buffer for h_i | key.
  const buffer = new Uint8Array(64 + accountPublicKey.length);
  buffer.set(accountPublicKey, 64);
  state = p.sha512(concatBytes(state, accountPublicKey));
  for (let i = 1; i < ITERATIONS; i++) {
    buffer.set(state, 0);
    state = p.sha512(buffer);
  }
  return state;
}

/** @param {Uint8Array} hash */
function digits(hash) {
  let out = '';
  for (let i = 0; i < 30; i += 5) {
    let value = 0;
    for (let j = i; j < i + 5; j++) value = value * 256 + hash[j]; // < 2**40: exact
    out += String(value % 100000).padStart(5, '0');
  }
  return out;
}

/**
 * Python's tuple ordering of (digits, fingerprint): by digits, then by bytes.
 * @param {[string, Uint8Array]} a
 * @param {[string, Uint8Array]} b
 */
function compare(a, b) {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  for (let i = 0; i < Math.min(a[1].length, b[1].length); i++) {
    if (a[1][i] !== b[1][i]) return a[1][i] - b[1][i];
  }
  return a[1].length - b[1].length;
}

export class SafetyNumber {
  /**
   * @param {string} digits 60 digits
   * @param {Uint8Array} qrPayload 65 bytes
   */
  constructor(digits, qrPayload) {
    /** @readonly */ this.digits = digits;
    /** @readonly */ this.qrPayload = qrPayload;
    Object.freeze(this);
  }

  /** Twelve groups of five digits, as shown to people. */
  groups() {
    const out = [];
    for (let i = 0; i < 60; i += 5) out.push(this.digits.slice(i, i + 5));
    return out;
  }

  /** @param {Uint8Array} scanned */
  matchesScan(scanned) {
    return p.constantTimeEqual(this.qrPayload, scanned);
  }
}

/**
 * @param {string} ownUsername
 * @param {Uint8Array} ownAccountKey
 * @param {string} theirUsername
 * @param {Uint8Array} theirAccountKey
 */
export function safetyNumber(ownUsername, ownAccountKey, theirUsername, theirAccountKey) {
  const mine = digest(ownAccountKey, ownUsername);
  const theirs = digest(theirAccountKey, theirUsername);
  /** @type {[string, Uint8Array][]} */
  const pair = [
    [digits(mine), mine.slice(0, 32)],
    [digits(theirs), theirs.slice(0, 32)],
  ];
  const [first, second] = pair.sort(compare);
  return new SafetyNumber(
    first[0] + second[0],
    concatBytes(Uint8Array.of(QR_VERSION), first[1], second[1]),
  );
}
