// @ts-check
/**
 * Linking a new device: the link code it shows, and the sealed provisioning message
 * (protocol/provisioning.py).
 *
 * 1. The new device asks the server for a provisioning address (random, expires in 10
 *    minutes), makes an ephemeral X25519 key pair and shows the link code as a QR code and
 *    as text:
 *
 *        LinkCode = version u8 (1) | address[16] | ephemeral_public[32]
 *        text     = "sealpost-link:" + base64url(LinkCode), no padding
 *
 * 2. An existing device of the account reads the code, asks its user to confirm, and seals
 *    a ProvisionMessage to the ephemeral key (ECIES with our primitives):
 *
 *        ProvisionMessage = username str | account_seed[32] | link_token str | flags u8
 *                           (flags bit 0: the existing device will send history)
 *        Sealed = version u8 (1) | sender_ephemeral_public[32] | ciphertext
 *        key, nonce = HKDF-SHA256(ikm = X25519(sender_ephemeral, ephemeral_public),
 *                                 salt = 0x00 * 32, info = "Sealpost v1 provisioning", 56)
 *        ciphertext = XChaCha20-Poly1305(key, nonce, ProvisionMessage,
 *                                        ad = 0x01 | address | ephemeral_public |
 *                                             sender_ephemeral_public)
 *
 *    The server relays the sealed message to the address; it cannot read it (it never has
 *    the ephemeral private key) and cannot move it to another address (the address is in
 *    the associated data).
 *
 * 3. The new device opens it, learns the account identity key and a one-time link token
 *    with which the server lets it register one device of that account, certifies its own
 *    device keys with the account key and signs the new device list (devicelist.js).
 *
 * Whoever can see the QR code can link a device, exactly as with Signal: the existing
 * device shows the user what is being linked and asks before it seals anything.
 */

import * as p from './primitives.js';
import { Reader, Writer, concatBytes, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { checkUsername } from './identifiers.js';
import { readX25519PublicKey } from './keys.js';
import { MAX_USERNAME_BYTES } from './limits.js';

/** @import { Rng } from './primitives.js' */

export const LINK_CODE_VERSION = 1;
export const LINK_CODE_PREFIX = 'sealpost-link:';
export const ADDRESS_BYTES = 16;
export const SEALED_VERSION = 1;
export const PROVISIONING_INFO = utf8Encode('Sealpost v1 provisioning');
export const MAX_LINK_TOKEN_BYTES = 128;
export const FLAG_HISTORY = 0x01;

// What Python's str.strip() removes (str.isspace), so that a pasted code is read alike.
const PY_WHITESPACE = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const STRIP = new RegExp(`^[${PY_WHITESPACE}]+|[${PY_WHITESPACE}]+$`, 'g');

/**
 * base64url without padding (the link code text, the provisioning address in URLs).
 * @param {Uint8Array} data
 */
export function base64UrlEncode(data) {
  let binary = '';
  for (const byte of data) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * Decode as Python's `base64.b64decode(text + padding, altchars=b"-_", validate=True)`:
 * MALFORMED for anything else.
 * @param {string} text
 */
export function base64UrlDecode(text) {
  const standard = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  if (standard.length % 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(standard)) {
    throw new ProtocolError(ErrorCode.MALFORMED, 'the link code is not base64url');
  }
  let binary;
  try {
    binary = atob(standard);
  } catch {
    throw new ProtocolError(ErrorCode.MALFORMED, 'the link code is not base64url');
  }
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export class LinkCode {
  /**
   * @param {Uint8Array} address
   * @param {Uint8Array} ephemeralPublic
   */
  constructor(address, ephemeralPublic) {
    /** @readonly */ this.address = address;
    /** @readonly */ this.ephemeralPublic = ephemeralPublic;
    Object.freeze(this);
  }

  encode() {
    return new Writer()
      .u8(LINK_CODE_VERSION)
      .fixed(this.address, ADDRESS_BYTES)
      .fixed(this.ephemeralPublic, p.X25519_KEY_BYTES)
      .getValue();
  }

  text() {
    return LINK_CODE_PREFIX + base64UrlEncode(this.encode());
  }

  /** The address as the REST API names it (base64url, no padding). */
  get addressText() {
    return base64UrlEncode(this.address);
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    const version = r.u8('link code version');
    if (version !== LINK_CODE_VERSION) {
      throw new ProtocolError(ErrorCode.UNSUPPORTED_VERSION, `link code version ${version}`);
    }
    const address = r.fixed(ADDRESS_BYTES, 'address');
    const ephemeralPublic = readX25519PublicKey(r, 'ephemeral_public');
    r.end('link code');
    return new LinkCode(address, ephemeralPublic);
  }

  /**
   * Read a link code as typed or pasted (surrounding white space is ignored).
   * @param {string} text
   */
  static parse(text) {
    if (typeof text !== 'string') throw new ProtocolError(ErrorCode.MALFORMED, 'a link code is text');
    text = text.replace(STRIP, '');
    if (!text.startsWith(LINK_CODE_PREFIX)) {
      throw new ProtocolError(ErrorCode.MALFORMED, `a link code starts with '${LINK_CODE_PREFIX}'`);
    }
    return LinkCode.decode(base64UrlDecode(text.slice(LINK_CODE_PREFIX.length)));
  }
}

export class ProvisionMessage {
  /**
   * @param {{username: string, accountSeed: Uint8Array, linkToken: string, sendHistory: boolean}} fields
   */
  constructor({ username, accountSeed, linkToken, sendHistory }) {
    /** @readonly */ this.username = username;
    /** @readonly */ this.accountSeed = accountSeed;
    /** @readonly */ this.linkToken = linkToken;
    /** @readonly */ this.sendHistory = Boolean(sendHistory);
    Object.freeze(this);
  }

  encode() {
    return new Writer()
      .str(checkUsername(this.username))
      .fixed(this.accountSeed, p.ED25519_SEED_BYTES)
      .str(this.linkToken)
      .u8(this.sendHistory ? FLAG_HISTORY : 0)
      .getValue();
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    const username = checkUsername(r.str('username', MAX_USERNAME_BYTES));
    const accountSeed = r.fixed(p.ED25519_SEED_BYTES, 'account_seed');
    const linkToken = r.str('link_token', MAX_LINK_TOKEN_BYTES);
    const flags = r.u8('flags');
    if (flags & ~FLAG_HISTORY) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown provisioning flags 0x${flags.toString(16)}`);
    }
    r.end('provision message');
    return new ProvisionMessage({ username, accountSeed, linkToken, sendHistory: Boolean(flags & FLAG_HISTORY) });
  }

  toString() {
    // never the seed or the token
    return `ProvisionMessage(username=${this.username}, sendHistory=${this.sendHistory})`;
  }
}

/**
 * @param {LinkCode} code
 * @param {Uint8Array} senderPublic
 */
function associatedData(code, senderPublic) {
  return concatBytes(Uint8Array.of(SEALED_VERSION), code.address, code.ephemeralPublic, senderPublic);
}

/** @param {Uint8Array} shared */
function keys(shared) {
  const out = p.hkdfSha256(shared, new Uint8Array(32), PROVISIONING_INFO, 56);
  return [out.slice(0, 32), out.slice(32)];
}

/**
 * Encrypt a provisioning message to the device that showed `code`. Draws 32 bytes (the
 * sender's ephemeral private key) from `rng`.
 * @param {LinkCode} code
 * @param {ProvisionMessage} message
 * @param {{rng?: Rng}} [options]
 */
export function seal(code, message, { rng = p.randomBytes } = {}) {
  const senderPrivate = rng(p.X25519_KEY_BYTES);
  const senderPublic = p.x25519PublicKey(senderPrivate);
  const [key, nonce] = keys(p.x25519(senderPrivate, code.ephemeralPublic));
  const ciphertext = p.aeadEncrypt(key, nonce, message.encode(), associatedData(code, senderPublic));
  return concatBytes(Uint8Array.of(SEALED_VERSION), senderPublic, ciphertext);
}

/**
 * Decrypt on the new device; DECRYPT_FAILED if it was not sealed to this code.
 * @param {LinkCode} code
 * @param {Uint8Array} ephemeralPrivate
 * @param {Uint8Array} sealed
 */
export function openSealed(code, ephemeralPrivate, sealed) {
  const r = new Reader(sealed);
  const version = r.u8('sealed version');
  if (version !== SEALED_VERSION) {
    throw new ProtocolError(ErrorCode.UNSUPPORTED_VERSION, `sealed provisioning ${version}`);
  }
  const senderPublic = readX25519PublicKey(r, 'sender_ephemeral_public');
  const ciphertext = r.rest();
  const [key, nonce] = keys(p.x25519(ephemeralPrivate, senderPublic));
  const plaintext = p.aeadDecrypt(key, nonce, ciphertext, associatedData(code, senderPublic));
  return ProvisionMessage.decode(plaintext);
}
