// @ts-check
/**
 * Sender keys: how one group message reaches every device of a group
 * (protocol/senderkeys.py; docs/protocol.md, 17.2).
 *
 * Each member device has, per group, a sending chain: `key_id` (random, 1 .. 2**31 - 1),
 * `iteration` (the index of the next message key), `chain_key` and an Ed25519 signing key
 * pair whose seed never leaves the device. With ck_i the chain key at iteration i:
 *
 *     message_seed_i = HMAC-SHA256(ck_i, 0x01)        ck_{i+1} = HMAC-SHA256(ck_i, 0x02)
 *     key_i | nonce_i = HKDF-SHA256(ikm = message_seed_i, salt = 32 × 0x00,
 *                                   info = "Sealpost v1 sender key", L = 56)
 *
 * SenderKeyMessage (the payload of a GROUP_SEND; kind 3 of section 7, byte 0x13):
 *
 *     0x13 | group_id[16] | key_id varint | iteration varint |      (the header: AEAD AD)
 *     ciphertext (XChaCha20-Poly1305(key_i, nonce_i, padded content), ≥ 16) |
 *     signature[64] (Ed25519 over "Sealpost v1 sender key message" | 0x00 | all before it)
 *
 * The sender hands its chain (key_id, iteration, chain key as they stand, public signing
 * key) to each device of the roster in a SENDER_KEY content (`SenderKeyDistribution`,
 * content.js) over the pairwise sessions; a receiver stores it in the SenderKeyRecord it
 * keeps for (group, sender, sender device), which holds the MAX_SENDER_KEY_STATES most
 * recent chains of that device, newest first. The sender keeps its own chain (a
 * SenderKeyState with its signing seed) in one too, and sends with `SenderKeyState.encrypt`.
 *
 * The chain gives forward secrecy (a key, once used, is deleted) but no post-compromise
 * security, hence a new sender key whenever a device leaves the roster (17.1). The
 * signature, not the AEAD, proves which member sent a message: every member holds the
 * chain key and could forge a message under it.
 *
 * Decrypting checks, in order: the message's fields, the chain named by key_id
 * (NO_SESSION: ask the sender for its key), the signature (BAD_SIGNATURE), the message key
 * (an iteration already used: DUPLICATE_MESSAGE; more than MAX_JUMP ahead:
 * TOO_MANY_SKIPPED), then the AEAD (DECRYPT_FAILED). The record changes only when all of
 * them pass. Skipped message seeds are kept, at most MAX_SKIPPED_KEYS per chain (the oldest
 * dropped first); the stored form does not record evicted ones, so a message whose skipped
 * key was evicted is reported like a replay, DUPLICATE_MESSAGE.
 *
 * Stored form (`SenderKeyRecord.encode`, the same bytes as Python's):
 *
 *     0x01 | count varint (≤ 5) | count × state, newest first
 *     state = key_id varint | iteration varint | chain_key[32] | signing_public[32] |
 *             has_seed u8 | seed[32] if has_seed |
 *             skipped count varint | skipped × (iteration varint | message_seed[32])
 *             (skipped in increasing iteration)
 *
 * The decoder also refuses (INVALID_VALUE) a key_id stored twice, and skipped iterations
 * that do not increase or are not below their state's iteration (at most 2**32: exhausted).
 * It holds secrets (chain keys, message seeds, signing seeds): keep it on the device.
 */

import * as p from './primitives.js';
import { Reader, Writer, concatBytes, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import {
  CHAIN_KEY_BYTES,
  MAX_SENDER_KEY_ID,
  MAX_SENDER_KEY_ITERATION,
  SenderKeyDistribution,
} from './content.js';
import { GROUP_ID_BYTES } from './groups.js';
import { signedPayload } from './keys.js';
import { MAX_SKIPPED_KEYS } from './limits.js';
import { MessageKind, messageTypeByte, readTypeByte } from './messages.js';
import { SkipBudget, ZERO_SALT, kdfCk } from './ratchet.js';

/** @import { Uint64 } from './encoding.js' */
/** @import { Rng } from './primitives.js' */

export const SENDER_KEY_INFO = utf8Encode('Sealpost v1 sender key');
export const LABEL_SENDER_KEY_MESSAGE = utf8Encode('Sealpost v1 sender key message');
export const MAX_SENDER_KEY_STATES = 5;
// Python's senderkeys.RECORD_FORMAT (session.js already exports a RECORD_FORMAT).
export const SENDER_KEY_RECORD_FORMAT = 1;
// A state's iteration after the last key of the chain (iteration 2**32 - 1) was used.
const EXHAUSTED = MAX_SENDER_KEY_ITERATION + 1;

/**
 * The AEAD key (32 bytes) and nonce (24 bytes) of one message seed.
 * @param {Uint8Array} messageSeed
 * @returns {[Uint8Array, Uint8Array]} [key, nonce]
 */
export function senderMessageKey(messageSeed) {
  const out = p.hkdfSha256(messageSeed, ZERO_SALT, SENDER_KEY_INFO, 56);
  return [out.slice(0, 32), out.slice(32)];
}

/** @param {number} keyId */
function checkKeyId(keyId) {
  if (keyId === 0) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'key_id must not be 0');
  if (!Number.isInteger(keyId) || !(keyId > 0 && keyId <= MAX_SENDER_KEY_ID)) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `key_id ${keyId} is above ${MAX_SENDER_KEY_ID}`);
  }
}

export class SenderKeyMessage {
  /**
   * @param {Uint8Array} groupId
   * @param {number} keyId
   * @param {number} iteration
   * @param {Uint8Array} ciphertext AEAD output, tag included
   * @param {Uint8Array} signature
   */
  constructor(groupId, keyId, iteration, ciphertext, signature) {
    /** @readonly */ this.groupId = groupId;
    /** @readonly */ this.keyId = keyId;
    /** @readonly */ this.iteration = iteration;
    /** @readonly */ this.ciphertext = ciphertext;
    /** @readonly */ this.signature = signature;
    Object.freeze(this);
  }

  /** The AEAD's associated data: every byte before the ciphertext. */
  header() {
    checkKeyId(this.keyId);
    return new Writer()
      .u8(messageTypeByte(MessageKind.SENDER_KEY))
      .fixed(this.groupId, GROUP_ID_BYTES)
      .varint(this.keyId)
      .varint(this.iteration)
      .getValue();
  }

  /** What the signature covers, label included. */
  signedBytes() {
    return signedPayload(LABEL_SENDER_KEY_MESSAGE, concatBytes(this.header(), this.ciphertext));
  }

  encode() {
    return new Writer()
      .raw(this.header())
      .raw(this.ciphertext)
      .fixed(this.signature, p.ED25519_SIGNATURE_BYTES)
      .getValue();
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    readTypeByte(r, MessageKind.SENDER_KEY);
    const groupId = r.fixed(GROUP_ID_BYTES, 'group_id');
    const keyId = r.varint('key_id', MAX_SENDER_KEY_ID);
    if (keyId === 0) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'key_id must not be 0');
    const iteration = r.varint('iteration', MAX_SENDER_KEY_ITERATION);
    const rest = r.rest();
    if (rest.length < p.AEAD_TAG_BYTES + p.ED25519_SIGNATURE_BYTES) {
      throw new ProtocolError(
        ErrorCode.TRUNCATED,
        `${rest.length} bytes after the header; a tag and a signature need ` +
          `${p.AEAD_TAG_BYTES + p.ED25519_SIGNATURE_BYTES}`,
      );
    }
    const split = rest.length - p.ED25519_SIGNATURE_BYTES;
    return new SenderKeyMessage(groupId, keyId, iteration, rest.slice(0, split), rest.slice(split));
  }
}

/**
 * @typedef {{keyId: number, iteration: number, chainKey: Uint8Array,
 *            signingPublic: Uint8Array, signingSeed?: Uint8Array | null,
 *            skipped?: Map<number, Uint8Array>}} SenderKeyStateFields
 */

/**
 * One sending chain of one device: the sender's own (with `signingSeed`) or a copy received
 * in a SenderKeyDistribution (without). `skipped` maps the iterations of skipped messages to
 * their message seeds, in increasing iteration (oldest first).
 */
export class SenderKeyState {
  /** @param {SenderKeyStateFields} fields */
  constructor({ keyId, iteration, chainKey, signingPublic, signingSeed = null, skipped = new Map() }) {
    this.keyId = keyId;
    /** the index of the next message key of chainKey */
    this.iteration = iteration;
    this.chainKey = chainKey;
    this.signingPublic = signingPublic;
    /** @type {Uint8Array | null} */
    this.signingSeed = signingSeed;
    /** @type {Map<number, Uint8Array>} */
    this.skipped = skipped;
  }

  /**
   * A new sending chain. Draws, in order: 4 bytes of key id (big-endian, top bit cleared,
   * 0 replaced by 1), the chain key, the signing seed.
   * @param {{rng?: Rng}} [options]
   */
  static generate({ rng = p.randomBytes } = {}) {
    const raw = rng(4);
    const keyId = (((raw[0] << 24) | (raw[1] << 16) | (raw[2] << 8) | raw[3]) & MAX_SENDER_KEY_ID) || 1;
    const chainKey = rng(CHAIN_KEY_BYTES);
    const signingSeed = rng(p.ED25519_SEED_BYTES);
    return new SenderKeyState({
      keyId,
      iteration: 0,
      chainKey,
      signingPublic: p.ed25519PublicKey(signingSeed),
      signingSeed,
    });
  }

  /** @param {SenderKeyDistribution} distribution */
  static fromDistribution(distribution) {
    const { keyId, iteration, chainKey, signingKey } = distribution;
    checkKeyId(keyId);
    if (!Number.isInteger(iteration) || !(iteration >= 0 && iteration <= MAX_SENDER_KEY_ITERATION)) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, 'iteration above 2**32 - 1');
    }
    if (!(chainKey instanceof Uint8Array) || chainKey.length !== CHAIN_KEY_BYTES) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `chain_key must be ${CHAIN_KEY_BYTES} bytes`);
    }
    if (!(signingKey instanceof Uint8Array) || signingKey.length !== p.ED25519_PUBLIC_BYTES) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `signing_key must be ${p.ED25519_PUBLIC_BYTES} bytes`);
    }
    return new SenderKeyState({ keyId, iteration, chainKey, signingPublic: signingKey });
  }

  clone() {
    return new SenderKeyState({
      keyId: this.keyId,
      iteration: this.iteration,
      chainKey: this.chainKey,
      signingPublic: this.signingPublic,
      signingSeed: this.signingSeed,
      skipped: new Map(this.skipped),
    });
  }

  // --- sending ------------------------------------------------------------------------

  /**
   * This chain as it stands, for a SENDER_KEY content: the receiver can read what is sent
   * from now on, nothing earlier.
   * @param {Uint8Array} groupId
   * @param {Uint64} sentAtMs
   */
  distribution(groupId, sentAtMs) {
    if (this.iteration > MAX_SENDER_KEY_ITERATION) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, 'sender key chain exhausted');
    }
    return new SenderKeyDistribution(groupId, this.keyId, this.iteration, this.chainKey, this.signingPublic, sentAtMs);
  }

  /**
   * Encrypt padded content for the group; returns the encoded SenderKeyMessage. The state
   * advances and must be stored before the message leaves the device (a rolled-back chain
   * would reuse a key and nonce).
   * @param {Uint8Array} groupId
   * @param {Uint8Array} plaintext
   */
  encrypt(groupId, plaintext) {
    if (this.signingSeed === null) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'a received sender key cannot send');
    }
    if (this.iteration > MAX_SENDER_KEY_ITERATION) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, 'sender key chain exhausted');
    }
    const [messageSeed, nextChainKey] = kdfCk(this.chainKey);
    const [key, nonce] = senderMessageKey(messageSeed);
    const empty = new Uint8Array(0);
    const header = new SenderKeyMessage(groupId, this.keyId, this.iteration, empty, empty).header();
    const ciphertext = p.aeadEncrypt(key, nonce, plaintext, header);
    const unsigned = new SenderKeyMessage(groupId, this.keyId, this.iteration, ciphertext, empty);
    const signature = p.ed25519Sign(this.signingSeed, unsigned.signedBytes());
    const encoded = new SenderKeyMessage(groupId, this.keyId, this.iteration, ciphertext, signature).encode();
    this.chainKey = nextChainKey;
    this.iteration += 1;
    return encoded;
  }

  // --- receiving ----------------------------------------------------------------------

  /**
   * The seed of `iteration`, advancing this state past it (skipped seeds are kept, at most
   * MAX_SKIPPED_KEYS; at most MAX_JUMP derived). Call it on a clone: it changes the state
   * even if the message then fails to decrypt.
   * @param {number} iteration
   */
  takeMessageSeed(iteration) {
    if (iteration < this.iteration) {
      const seed = this.skipped.get(iteration);
      if (seed === undefined) {
        // The stored form does not record evicted keys, so a message whose skipped key was
        // evicted is reported the same way as a replay.
        throw new ProtocolError(
          ErrorCode.DUPLICATE_MESSAGE,
          `iteration ${iteration} was already received (or its key was evicted)`,
        );
      }
      this.skipped.delete(iteration);
      return seed;
    }
    new SkipBudget().spend(iteration - this.iteration);
    while (this.iteration < iteration) {
      const [seed, nextChainKey] = kdfCk(this.chainKey);
      this.chainKey = nextChainKey;
      this.skipped.set(this.iteration, seed);
      this.iteration += 1;
      if (this.skipped.size > MAX_SKIPPED_KEYS) {
        const oldest = this.skipped.keys().next();
        if (!oldest.done) this.skipped.delete(oldest.value);
      }
    }
    const [seed, nextChainKey] = kdfCk(this.chainKey);
    this.chainKey = nextChainKey;
    this.iteration += 1;
    return seed;
  }
}

/**
 * The sender keys of one device in one group, newest first (at most MAX_SENDER_KEY_STATES).
 * A receiver keeps one per (group_id, sender, sender_device); the sender keeps its own chain
 * in one too (a single state with its signing seed).
 */
export class SenderKeyRecord {
  /** @param {SenderKeyState[] | null} [states] newest first */
  constructor(states = null) {
    /** @type {SenderKeyState[]} */
    this.states = states ?? [];
  }

  /**
   * The state of `keyId`, or null.
   * @param {number} keyId
   */
  stateFor(keyId) {
    return this.states.find((state) => state.keyId === keyId) ?? null;
  }

  /**
   * Keep a key received over a pairwise session from the device this record is for.
   *
   * The same key again (same key_id and signing key) changes nothing, even if it names
   * another iteration: the chain we hold may already have moved past it, and going back
   * would let a replayed distribution make old messages decryptable twice. It only becomes
   * the newest again. A key_id we hold under another signing key is replaced. A new key_id
   * is added as the newest; the oldest beyond MAX_SENDER_KEY_STATES is dropped.
   * @param {SenderKeyDistribution} distribution
   */
  processDistribution(distribution) {
    let incoming = SenderKeyState.fromDistribution(distribution);
    const existing = this.stateFor(incoming.keyId);
    if (existing !== null) {
      this.states.splice(this.states.indexOf(existing), 1);
      if (p.constantTimeEqual(existing.signingPublic, incoming.signingPublic)) incoming = existing;
    }
    this.states.unshift(incoming);
    this.states.splice(MAX_SENDER_KEY_STATES);
  }

  /**
   * The padded plaintext of a group message; the record is unchanged on any error.
   *
   * The caller looks the record up by the message's group_id and the sender and device
   * named by the relay's DELIVER.
   * @param {SenderKeyMessage | Uint8Array} message
   */
  decrypt(message) {
    const decoded = message instanceof SenderKeyMessage ? message : SenderKeyMessage.decode(message);
    const index = this.states.findIndex((state) => state.keyId === decoded.keyId);
    if (index < 0) {
      throw new ProtocolError(
        ErrorCode.NO_SESSION,
        `no sender key ${decoded.keyId} for this device: ask the sender for its key`,
      );
    }
    const state = this.states[index];
    p.ed25519Verify(state.signingPublic, decoded.signedBytes(), decoded.signature);
    const candidate = state.clone();
    const [key, nonce] = senderMessageKey(candidate.takeMessageSeed(decoded.iteration));
    const plaintext = p.aeadDecrypt(key, nonce, decoded.ciphertext, decoded.header());
    this.states[index] = candidate;
    return plaintext;
  }

  // --- stored form --------------------------------------------------------------------

  /** `0x01 | count varint | count × state` (docs/protocol.md 17.2). Holds secrets. */
  encode() {
    const w = new Writer().u8(SENDER_KEY_RECORD_FORMAT).varint(this.states.length);
    for (const state of this.states) {
      w.varint(state.keyId).varint(state.iteration);
      w.fixed(state.chainKey, CHAIN_KEY_BYTES);
      w.fixed(state.signingPublic, p.ED25519_PUBLIC_BYTES);
      if (state.signingSeed === null) w.u8(0);
      else w.u8(1).fixed(state.signingSeed, p.ED25519_SEED_BYTES);
      w.varint(state.skipped.size);
      for (const [iteration, seed] of state.skipped) w.varint(iteration).fixed(seed, 32);
    }
    return w.getValue();
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    const format = r.u8('record format');
    if (format !== SENDER_KEY_RECORD_FORMAT) {
      throw new ProtocolError(ErrorCode.UNSUPPORTED_VERSION, `sender key record format ${format}`);
    }
    /** @type {SenderKeyState[]} */
    const states = [];
    const count = r.varint('state count', MAX_SENDER_KEY_STATES);
    for (let i = 0; i < count; i++) {
      const keyId = r.varint('key_id', MAX_SENDER_KEY_ID);
      if (keyId === 0) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'key_id must not be 0');
      if (states.some((state) => state.keyId === keyId)) {
        throw new ProtocolError(ErrorCode.INVALID_VALUE, `key_id ${keyId} is stored twice`);
      }
      const iteration = r.varint('iteration', EXHAUSTED);
      const state = new SenderKeyState({
        keyId,
        iteration,
        chainKey: r.fixed(CHAIN_KEY_BYTES, 'chain_key'),
        signingPublic: r.fixed(p.ED25519_PUBLIC_BYTES, 'signing_public'),
      });
      const hasSeed = r.u8('has_seed');
      if (hasSeed > 1) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'has_seed must be 0 or 1');
      if (hasSeed) state.signingSeed = r.fixed(p.ED25519_SEED_BYTES, 'signing seed');
      let previous = -1;
      const skippedCount = r.varint('skipped count', MAX_SKIPPED_KEYS);
      for (let j = 0; j < skippedCount; j++) {
        const skippedIteration = r.varint('skipped iteration', MAX_SENDER_KEY_ITERATION);
        if (!(previous < skippedIteration && skippedIteration < iteration)) {
          throw new ProtocolError(
            ErrorCode.INVALID_VALUE,
            "skipped iterations must increase and stay below the state's iteration",
          );
        }
        state.skipped.set(skippedIteration, r.fixed(32, 'skipped message seed'));
        previous = skippedIteration;
      }
      states.push(state);
    }
    r.end('sender key record');
    return new SenderKeyRecord(states);
  }
}
