// @ts-check
/**
 * Encrypted message encodings: what the relay carries as an opaque payload
 * (protocol/messages.py; docs/protocol.md, "Messages").
 *
 * Every encrypted message starts with one byte `version << 4 | kind`, so that a receiver
 * can tell, before any crypto, whether it speaks this version.
 *
 *     RatchetMessage (kind 1)
 *         0x11 | ratchet_key[32] | previous_chain_length varint | counter varint |
 *         ciphertext (the rest: XChaCha20-Poly1305 output, tag included)
 *
 *     PreKeyMessage (kind 2): a RatchetMessage plus what the recipient needs to derive the
 *     session, sent until the sender has received a reply.
 *         0x12 | sender_account_key[32] | sender device certificate |
 *         base_key[32] | signed_prekey_id varint | one_time_prekey_id varint (0 = none) |
 *         kem_prekey_id varint | kem_ciphertext[1088] | RatchetMessage (the rest)
 *
 *     SenderKeyMessage (kind 3, 0x13): a group message, in senderkeys.js.
 *
 * The header of a RatchetMessage (everything before the ciphertext) is bound into the AEAD
 * as associated data, so a header cannot be changed without the message being rejected.
 * ratchet_key and base_key, like every X25519 public key read from the wire, must have the
 * top bit of their last byte clear (`readX25519PublicKey` in keys.js), else BAD_KEY.
 */

import * as p from './primitives.js';
import { Reader, Writer, concatBytes } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { MAX_KEY_ID, DeviceCertificate, readX25519PublicKey } from './keys.js';
import { PROTOCOL_VERSION } from './limits.js';

export const MAX_COUNTER = 0xffff_ffff;

// SENDER_KEY (0x13) is a group message: senderkeys.js (docs/protocol.md, 17.2).
export const MessageKind = Object.freeze({ RATCHET: 1, PREKEY: 2, SENDER_KEY: 3 });

/** @param {number} kind */
export function messageTypeByte(kind) {
  return (PROTOCOL_VERSION << 4) | kind;
}

/** @param {number} version */
function unsupported(version) {
  return new ProtocolError(
    ErrorCode.UNSUPPORTED_VERSION,
    `message version ${version}; this client speaks ${PROTOCOL_VERSION}`,
  );
}

/**
 * @param {Reader} reader
 * @param {number} expected a MessageKind
 */
export function readTypeByte(reader, expected) {
  const byte = reader.u8('message type');
  const version = byte >> 4;
  const kind = byte & 0x0f;
  if (version !== PROTOCOL_VERSION) throw unsupported(version);
  if (kind !== expected) {
    throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `message kind ${kind}, expected ${expected}`);
  }
}

/**
 * The kind of an encrypted message (a MessageKind value), after checking its version.
 * @param {Uint8Array} data
 * @returns {number}
 */
export function peekKind(data) {
  if (!data.length) throw new ProtocolError(ErrorCode.TRUNCATED, 'empty message');
  const version = data[0] >> 4;
  const kind = data[0] & 0x0f;
  if (version !== PROTOCOL_VERSION) throw unsupported(version);
  if (kind !== MessageKind.RATCHET && kind !== MessageKind.PREKEY && kind !== MessageKind.SENDER_KEY) {
    throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown message kind ${kind}`);
  }
  return kind;
}

export class RatchetMessage {
  /**
   * @param {Uint8Array} ratchetKey
   * @param {number} previousChainLength
   * @param {number} counter
   * @param {Uint8Array} ciphertext
   */
  constructor(ratchetKey, previousChainLength, counter, ciphertext) {
    /** @readonly */ this.ratchetKey = ratchetKey;
    /** @readonly */ this.previousChainLength = previousChainLength;
    /** @readonly */ this.counter = counter;
    /** @readonly */ this.ciphertext = ciphertext;
    Object.freeze(this);
  }

  header() {
    return new Writer()
      .u8(messageTypeByte(MessageKind.RATCHET))
      .fixed(this.ratchetKey, p.X25519_KEY_BYTES)
      .varint(this.previousChainLength)
      .varint(this.counter)
      .getValue();
  }

  encode() {
    return concatBytes(this.header(), this.ciphertext);
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    readTypeByte(r, MessageKind.RATCHET);
    const ratchetKey = readX25519PublicKey(r, 'ratchet_key');
    const previous = r.varint('previous_chain_length', MAX_COUNTER);
    const counter = r.varint('counter', MAX_COUNTER);
    const ciphertext = r.rest();
    if (ciphertext.length < p.AEAD_TAG_BYTES) {
      throw new ProtocolError(
        ErrorCode.TRUNCATED,
        `ciphertext of ${ciphertext.length} bytes is shorter than its tag`,
      );
    }
    return new RatchetMessage(ratchetKey, previous, counter, ciphertext);
  }
}

export class PreKeyMessage {
  /**
   * @param {{senderAccountKey: Uint8Array, senderCertificate: DeviceCertificate,
   *          baseKey: Uint8Array, signedPrekeyId: number, oneTimePrekeyId: number | null,
   *          kemPrekeyId: number, kemCiphertext: Uint8Array, message: RatchetMessage}} fields
   */
  constructor({
    senderAccountKey,
    senderCertificate,
    baseKey,
    signedPrekeyId,
    oneTimePrekeyId,
    kemPrekeyId,
    kemCiphertext,
    message,
  }) {
    /** @readonly */ this.senderAccountKey = senderAccountKey;
    /** @readonly */ this.senderCertificate = senderCertificate;
    /** @readonly */ this.baseKey = baseKey;
    /** @readonly */ this.signedPrekeyId = signedPrekeyId;
    /** @readonly */ this.oneTimePrekeyId = oneTimePrekeyId ?? null;
    /** @readonly */ this.kemPrekeyId = kemPrekeyId;
    /** @readonly */ this.kemCiphertext = kemCiphertext;
    /** @readonly */ this.message = message;
    Object.freeze(this);
  }

  encode() {
    return new Writer()
      .u8(messageTypeByte(MessageKind.PREKEY))
      .fixed(this.senderAccountKey, p.ED25519_PUBLIC_BYTES)
      .raw(this.senderCertificate.encode())
      .fixed(this.baseKey, p.X25519_KEY_BYTES)
      .varint(this.signedPrekeyId)
      .varint(this.oneTimePrekeyId || 0)
      .varint(this.kemPrekeyId)
      .fixed(this.kemCiphertext, p.MLKEM768_CIPHERTEXT_BYTES)
      .raw(this.message.encode())
      .getValue();
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    readTypeByte(r, MessageKind.PREKEY);
    const senderAccountKey = r.fixed(p.ED25519_PUBLIC_BYTES, 'sender_account_key');
    const senderCertificate = DeviceCertificate.read(r);
    const baseKey = readX25519PublicKey(r, 'base_key');
    const signedPrekeyId = r.varint('signed_prekey_id', MAX_KEY_ID);
    const oneTimePrekeyId = r.varint('one_time_prekey_id', MAX_KEY_ID);
    const kemPrekeyId = r.varint('kem_prekey_id', MAX_KEY_ID);
    if (signedPrekeyId === 0 || kemPrekeyId === 0) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'prekey ids must not be 0');
    }
    const kemCiphertext = r.fixed(p.MLKEM768_CIPHERTEXT_BYTES, 'kem_ciphertext');
    const message = RatchetMessage.decode(r.rest());
    return new PreKeyMessage({
      senderAccountKey,
      senderCertificate,
      baseKey,
      signedPrekeyId,
      oneTimePrekeyId: oneTimePrekeyId || null,
      kemPrekeyId,
      kemCiphertext,
      message,
    });
  }
}
