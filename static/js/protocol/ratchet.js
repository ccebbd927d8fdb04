// @ts-check
/**
 * The Double Ratchet (protocol/ratchet.py; Signal specification, revision 4, 3.2–3.5).
 *
 * KDFs (docs/protocol.md, "Double Ratchet"):
 *
 *     KDF_RK(rk, dh_out) = HKDF-SHA256(ikm=dh_out, salt=rk, info="Sealpost v1 ratchet", 64)
 *                          -> new root key (first 32 bytes), chain key (last 32)
 *     KDF_CK(ck)         = message key HMAC-SHA256(ck, 0x01), next chain key HMAC-SHA256(ck, 0x02)
 *     message key mk     -> HKDF-SHA256(ikm=mk, salt=0x00*32, info="Sealpost v1 message", 56)
 *                          -> XChaCha20-Poly1305 key (32) and nonce (24)
 *
 * The AEAD's associated data is the session's AD (both sides' account and device identity
 * keys) followed by the message header. `decrypt` may leave the state half-advanced when it
 * throws: callers work on `clone()` and keep the clone only on success (see session.js).
 *
 * Bounds: at most MAX_SKIPPED_KEYS stored skipped keys (oldest evicted; a message that
 * arrives after its key was evicted is TOO_MANY_SKIPPED, never a duplicate), at most
 * MAX_JUMP keys derived for one message across every state a session record tries (one
 * shared SkipBudget), and the last PREVIOUS_CHAINS_KEPT receiving ratchet keys are kept so
 * a replay from an old chain is reported as a duplicate (docs/protocol.md, 6.5).
 *
 * Randomness: each DH ratchet step draws one new 32-byte ratchet key from `rng`, after the
 * receiving half of the step (exactly where Python draws it), so recorded streams replay.
 */

import * as p from './primitives.js';
import { Reader, Writer, bytesEqual, concatBytes, toHex, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { MAX_KEY_ID, DeviceCertificate } from './keys.js';
import { MAX_JUMP, MAX_SKIPPED_KEYS } from './limits.js';
import { MAX_COUNTER, RatchetMessage } from './messages.js';

/** @import { Rng } from './primitives.js' */

export const ROOT_INFO = utf8Encode('Sealpost v1 ratchet');
export const MESSAGE_INFO = utf8Encode('Sealpost v1 message');
export const ZERO_SALT = new Uint8Array(32);
export const PREVIOUS_CHAINS_KEPT = 5;
export const MAX_DISCARDED_RANGES = 256; // per chain
export const STATE_FORMAT = 1;

/** How many skipped message keys one decryption may still derive (MAX_JUMP in all). */
export class SkipBudget {
  /** @param {number} [remaining] */
  constructor(remaining = MAX_JUMP) {
    this.remaining = remaining;
  }

  /** @param {number} count */
  spend(count) {
    if (count > this.remaining) {
      throw new ProtocolError(
        ErrorCode.TOO_MANY_SKIPPED,
        `message would skip ${count} keys; the limit is ${MAX_JUMP} per message`,
      );
    }
    this.remaining -= count;
  }
}

/**
 * @param {Uint8Array} rootKey
 * @param {Uint8Array} dhOutput
 * @returns {[Uint8Array, Uint8Array]} [new root key, chain key]
 */
export function kdfRk(rootKey, dhOutput) {
  const out = p.hkdfSha256(dhOutput, rootKey, ROOT_INFO, 64);
  return [out.slice(0, 32), out.slice(32)];
}

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);

/**
 * @param {Uint8Array} chainKey
 * @returns {[Uint8Array, Uint8Array]} [message key, next chain key]
 */
export function kdfCk(chainKey) {
  return [p.hmacSha256(chainKey, ONE), p.hmacSha256(chainKey, TWO)];
}

/**
 * @param {Uint8Array} messageKey
 * @returns {[Uint8Array, Uint8Array]} [AEAD key, nonce]
 */
export function messageKeyMaterial(messageKey) {
  const out = p.hkdfSha256(messageKey, ZERO_SALT, MESSAGE_INFO, 56);
  return [out.slice(0, 32), out.slice(32)];
}

/**
 * Set on the initiator until the first reply: every message is sent as a PreKeyMessage.
 */
export class PendingPreKey {
  /**
   * @param {{senderAccountKey: Uint8Array, senderCertificate: DeviceCertificate,
   *          signedPrekeyId: number, oneTimePrekeyId: number | null, kemPrekeyId: number,
   *          kemCiphertext: Uint8Array}} fields
   */
  constructor({
    senderAccountKey,
    senderCertificate,
    signedPrekeyId,
    oneTimePrekeyId,
    kemPrekeyId,
    kemCiphertext,
  }) {
    /** @readonly */ this.senderAccountKey = senderAccountKey;
    /** @readonly */ this.senderCertificate = senderCertificate;
    /** @readonly */ this.signedPrekeyId = signedPrekeyId;
    /** @readonly */ this.oneTimePrekeyId = oneTimePrekeyId ?? null;
    /** @readonly */ this.kemPrekeyId = kemPrekeyId;
    /** @readonly */ this.kemCiphertext = kemCiphertext;
    Object.freeze(this);
  }
}

/**
 * A skipped message key, stored under `skippedSlot(ratchetKey, counter)`.
 * @typedef {{ratchetKey: Uint8Array, counter: number, messageKey: Uint8Array}} SkippedKey
 */

/**
 * The Map key of a skipped message key: Python's `(ratchet_key, counter)` tuple.
 * @param {Uint8Array} ratchetKey
 * @param {number} counter
 */
export function skippedSlot(ratchetKey, counter) {
  return `${toHex(ratchetKey)}:${counter}`;
}

/**
 * Per kept receiving chain (keyed by `toHex(ratchetKey)`), the counters whose skipped keys
 * were evicted, as sorted inclusive [start, end] ranges: such a late message is reported as
 * lost (TOO_MANY_SKIPPED), a real replay as DUPLICATE_MESSAGE.
 * @typedef {{ratchetKey: Uint8Array, ranges: [number, number][]}} DiscardedChain
 */

/**
 * @typedef {{
 *   associatedData: Uint8Array, baseKey: Uint8Array, remoteIdentityKey: Uint8Array,
 *   rootKey: Uint8Array, sendingPrivate: Uint8Array, sendingPublic: Uint8Array,
 *   receivingKey?: Uint8Array | null, sendingChain?: Uint8Array | null,
 *   receivingChain?: Uint8Array | null, sendCounter?: number, receiveCounter?: number,
 *   previousSendingLength?: number, skipped?: Map<string, SkippedKey>,
 *   previousReceivingKeys?: Uint8Array[], discarded?: Map<string, DiscardedChain>,
 *   pendingPrekey?: PendingPreKey | null
 * }} RatchetStateFields
 */

export class RatchetState {
  /** @param {RatchetStateFields} fields */
  constructor({
    associatedData,
    baseKey,
    remoteIdentityKey,
    rootKey,
    sendingPrivate,
    sendingPublic,
    receivingKey = null,
    sendingChain = null,
    receivingChain = null,
    sendCounter = 0,
    receiveCounter = 0,
    previousSendingLength = 0,
    skipped = new Map(),
    previousReceivingKeys = [],
    discarded = new Map(),
    pendingPrekey = null,
  }) {
    this.associatedData = associatedData;
    /** the initiator's ephemeral key: names the session on both sides */
    this.baseKey = baseKey;
    this.remoteIdentityKey = remoteIdentityKey;
    this.rootKey = rootKey;
    this.sendingPrivate = sendingPrivate;
    this.sendingPublic = sendingPublic;
    /** @type {Uint8Array | null} */
    this.receivingKey = receivingKey;
    /** @type {Uint8Array | null} */
    this.sendingChain = sendingChain;
    /** @type {Uint8Array | null} */
    this.receivingChain = receivingChain;
    this.sendCounter = sendCounter;
    this.receiveCounter = receiveCounter;
    this.previousSendingLength = previousSendingLength;
    /** oldest first, as Python's OrderedDict @type {Map<string, SkippedKey>} */
    this.skipped = skipped;
    /** @type {Uint8Array[]} */
    this.previousReceivingKeys = previousReceivingKeys;
    /** in order of first insertion, as Python's dict @type {Map<string, DiscardedChain>} */
    this.discarded = discarded;
    /** @type {PendingPreKey | null} */
    this.pendingPrekey = pendingPrekey;
  }

  // --- construction (Signal spec 3.3) -------------------------------------------------

  /**
   * @param {Uint8Array} rootKey
   * @param {Uint8Array} associatedData
   * @param {Uint8Array} baseKey
   * @param {Uint8Array} remoteIdentityKey
   * @param {Uint8Array} remoteRatchetKey
   * @param {PendingPreKey} pending
   * @param {{rng?: Rng}} [options]
   */
  static initiator(
    rootKey,
    associatedData,
    baseKey,
    remoteIdentityKey,
    remoteRatchetKey,
    pending,
    { rng = p.randomBytes } = {},
  ) {
    const sendingPrivate = rng(p.X25519_KEY_BYTES);
    const [newRoot, chain] = kdfRk(rootKey, p.x25519(sendingPrivate, remoteRatchetKey));
    return new RatchetState({
      associatedData,
      baseKey,
      remoteIdentityKey,
      rootKey: newRoot,
      sendingPrivate,
      sendingPublic: p.x25519PublicKey(sendingPrivate),
      receivingKey: remoteRatchetKey,
      sendingChain: chain,
      pendingPrekey: pending,
    });
  }

  /**
   * @param {Uint8Array} rootKey
   * @param {Uint8Array} associatedData
   * @param {Uint8Array} baseKey
   * @param {Uint8Array} remoteIdentityKey
   * @param {Uint8Array} signedPrekeyPrivate
   */
  static responder(rootKey, associatedData, baseKey, remoteIdentityKey, signedPrekeyPrivate) {
    return new RatchetState({
      associatedData,
      baseKey,
      remoteIdentityKey,
      rootKey,
      sendingPrivate: signedPrekeyPrivate,
      sendingPublic: p.x25519PublicKey(signedPrekeyPrivate),
    });
  }

  clone() {
    return new RatchetState({
      associatedData: this.associatedData,
      baseKey: this.baseKey,
      remoteIdentityKey: this.remoteIdentityKey,
      rootKey: this.rootKey,
      sendingPrivate: this.sendingPrivate,
      sendingPublic: this.sendingPublic,
      receivingKey: this.receivingKey,
      sendingChain: this.sendingChain,
      receivingChain: this.receivingChain,
      sendCounter: this.sendCounter,
      receiveCounter: this.receiveCounter,
      previousSendingLength: this.previousSendingLength,
      skipped: new Map(this.skipped),
      previousReceivingKeys: [...this.previousReceivingKeys],
      discarded: new Map(
        [...this.discarded].map(([id, { ratchetKey, ranges }]) => {
          const copied = ranges.map(([start, end]) => /** @type {[number, number]} */ ([start, end]));
          return [id, { ratchetKey, ranges: copied }];
        }),
      ),
      pendingPrekey: this.pendingPrekey,
    });
  }

  get canSend() {
    return this.sendingChain !== null;
  }

  // --- encrypt / decrypt --------------------------------------------------------------

  /** @param {Uint8Array} plaintext */
  encrypt(plaintext) {
    if (this.sendingChain === null) {
      throw new ProtocolError(ErrorCode.NO_SESSION, 'this session cannot send before it receives');
    }
    if (this.sendCounter > MAX_COUNTER) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, 'sending chain exhausted');
    }
    const [messageKey, nextChain] = kdfCk(this.sendingChain);
    this.sendingChain = nextChain;
    const headerOnly = new RatchetMessage(
      this.sendingPublic,
      this.previousSendingLength,
      this.sendCounter,
      new Uint8Array(0),
    );
    const [key, nonce] = messageKeyMaterial(messageKey);
    const ciphertext = p.aeadEncrypt(
      key,
      nonce,
      plaintext,
      concatBytes(this.associatedData, headerOnly.header()),
    );
    this.sendCounter += 1;
    return new RatchetMessage(
      headerOnly.ratchetKey,
      headerOnly.previousChainLength,
      headerOnly.counter,
      ciphertext,
    );
  }

  /**
   * Decrypt, advancing this state. On any error this state may be half-advanced: call it
   * on a clone and discard the clone on failure.
   *
   * `budget` bounds the message keys derived for skipped messages; a SessionRecord shares
   * one budget across all the states it tries, so one forged message costs at most
   * MAX_JUMP key derivations in all.
   * @param {RatchetMessage} message
   * @param {{rng?: Rng, budget?: SkipBudget | null}} [options]
   */
  decrypt(message, { rng = p.randomBytes, budget = null } = {}) {
    const spending = budget ?? new SkipBudget();
    const slot = skippedSlot(message.ratchetKey, message.counter);
    const stored = this.skipped.get(slot);
    if (stored !== undefined) {
      const plaintext = this._open(stored.messageKey, message);
      this.skipped.delete(slot);
      return plaintext;
    }
    const isCurrent =
      this.receivingKey !== null && bytesEqual(message.ratchetKey, this.receivingKey);
    const knownChain =
      this.previousReceivingKeys.some((key) => bytesEqual(key, message.ratchetKey)) ||
      (isCurrent && this.receivingChain !== null);
    if (knownChain && (!isCurrent || message.counter < this.receiveCounter)) {
      const ranges = this.discarded.get(toHex(message.ratchetKey))?.ranges ?? [];
      if (ranges.some(([start, end]) => start <= message.counter && message.counter <= end)) {
        throw new ProtocolError(
          ErrorCode.TOO_MANY_SKIPPED,
          `message ${message.counter} arrived after its key was discarded ` +
            `(more than ${MAX_SKIPPED_KEYS} messages were skipped)`,
        );
      }
      throw new ProtocolError(
        ErrorCode.DUPLICATE_MESSAGE,
        `message ${message.counter} was already received`,
      );
    }
    if (!knownChain) {
      this._skipUntil(message.previousChainLength, spending);
      this._dhRatchet(message.ratchetKey, rng);
    }
    this._skipUntil(message.counter, spending);
    if (this.receivingChain === null) {
      // unreachable: _dhRatchet always sets it
      throw new ProtocolError(ErrorCode.NO_SESSION, 'no receiving chain');
    }
    const [messageKey, nextChain] = kdfCk(this.receivingChain);
    this.receivingChain = nextChain;
    this.receiveCounter += 1;
    return this._open(messageKey, message);
  }

  /**
   * @param {Uint8Array} messageKey
   * @param {RatchetMessage} message
   */
  _open(messageKey, message) {
    const [key, nonce] = messageKeyMaterial(messageKey);
    const plaintext = p.aeadDecrypt(
      key,
      nonce,
      message.ciphertext,
      concatBytes(this.associatedData, message.header()),
    );
    // Any authenticated message proves the peer has this session: stop sending prekeys.
    this.pendingPrekey = null;
    return plaintext;
  }

  /**
   * @param {number} until
   * @param {SkipBudget} budget
   */
  _skipUntil(until, budget) {
    if (this.receivingChain === null || until <= this.receiveCounter) return;
    budget.spend(until - this.receiveCounter);
    const ratchetKey = this.receivingKey ?? new Uint8Array(0);
    let chain = this.receivingChain;
    while (this.receiveCounter < until) {
      const [messageKey, nextChain] = kdfCk(chain);
      chain = nextChain;
      this.receivingChain = chain;
      const counter = this.receiveCounter;
      this.skipped.set(skippedSlot(ratchetKey, counter), { ratchetKey, counter, messageKey });
      this.receiveCounter += 1;
      if (this.skipped.size > MAX_SKIPPED_KEYS) this._evictOldest();
    }
  }

  _evictOldest() {
    const oldest = this.skipped.entries().next();
    if (oldest.done) return;
    const [slot, { ratchetKey, counter }] = oldest.value;
    this.skipped.delete(slot);
    // Only chains we still recognise can be told apart from new ones; a message from an
    // older chain fails as a DH step anyway.
    const recognised =
      (this.receivingKey !== null && bytesEqual(ratchetKey, this.receivingKey)) ||
      this.previousReceivingKeys.some((key) => bytesEqual(key, ratchetKey));
    if (recognised) this._noteDiscarded(ratchetKey, counter);
  }

  /**
   * @param {Uint8Array} ratchetKey
   * @param {number} counter
   */
  _noteDiscarded(ratchetKey, counter) {
    const id = toHex(ratchetKey);
    let chain = this.discarded.get(id);
    if (chain === undefined) {
      chain = { ratchetKey, ranges: [] };
      this.discarded.set(id, chain); // a new chain goes at the end, as in a Python dict
    }
    const { ranges } = chain;
    // A chain's keys are evicted in counter order, so a range only ever grows at its end.
    if (ranges.length && ranges[ranges.length - 1][1] + 1 === counter) {
      ranges[ranges.length - 1][1] = counter;
    } else {
      ranges.push([counter, counter]);
      // Bounded: past the cap the oldest ranges are forgotten, and a replay from them is
      // reported as a duplicate again.
      ranges.splice(0, Math.max(0, ranges.length - MAX_DISCARDED_RANGES));
    }
  }

  /**
   * @param {Uint8Array} remoteRatchetKey
   * @param {Rng} rng
   */
  _dhRatchet(remoteRatchetKey, rng) {
    if (this.receivingKey !== null && this.receivingChain !== null) {
      this.previousReceivingKeys.push(this.receivingKey);
      this.previousReceivingKeys.splice(
        0,
        Math.max(0, this.previousReceivingKeys.length - PREVIOUS_CHAINS_KEPT),
      );
      const kept = new Set(this.previousReceivingKeys.map(toHex));
      this.discarded = new Map([...this.discarded].filter(([id]) => kept.has(id)));
    }
    this.previousSendingLength = this.sendCounter;
    this.sendCounter = 0;
    this.receiveCounter = 0;
    this.receivingKey = remoteRatchetKey;
    [this.rootKey, this.receivingChain] = kdfRk(
      this.rootKey,
      p.x25519(this.sendingPrivate, remoteRatchetKey),
    );
    this.sendingPrivate = rng(p.X25519_KEY_BYTES);
    this.sendingPublic = p.x25519PublicKey(this.sendingPrivate);
    [this.rootKey, this.sendingChain] = kdfRk(
      this.rootKey,
      p.x25519(this.sendingPrivate, remoteRatchetKey),
    );
  }

  // --- serialisation ------------------------------------------------------------------

  /** Versioned binary form for the client's local store (holds secrets: keep it local). */
  encode() {
    const w = new Writer().u8(STATE_FORMAT).bytes(this.associatedData);
    w.fixed(this.baseKey, 32).fixed(this.remoteIdentityKey, 32).fixed(this.rootKey, 32);
    w.fixed(this.sendingPrivate, 32).fixed(this.sendingPublic, 32);
    for (const optional of [this.receivingKey, this.sendingChain, this.receivingChain]) {
      if (optional === null) w.u8(0);
      else w.u8(1).fixed(optional, 32);
    }
    w.varint(this.sendCounter).varint(this.receiveCounter);
    w.varint(this.previousSendingLength);
    w.varint(this.previousReceivingKeys.length);
    for (const key of this.previousReceivingKeys) w.fixed(key, 32);
    w.varint(this.skipped.size);
    for (const { ratchetKey, counter, messageKey } of this.skipped.values()) {
      w.fixed(ratchetKey, 32).varint(counter).fixed(messageKey, 32);
    }
    w.varint(this.discarded.size);
    for (const { ratchetKey, ranges } of this.discarded.values()) {
      w.fixed(ratchetKey, 32).varint(ranges.length);
      for (const [start, end] of ranges) w.varint(start).varint(end - start);
    }
    const pending = this.pendingPrekey;
    if (pending === null) {
      w.u8(0);
    } else {
      w.u8(1).fixed(pending.senderAccountKey, 32).raw(pending.senderCertificate.encode());
      w.varint(pending.signedPrekeyId).varint(pending.oneTimePrekeyId || 0);
      w.varint(pending.kemPrekeyId).fixed(pending.kemCiphertext, p.MLKEM768_CIPHERTEXT_BYTES);
    }
    return w.getValue();
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    const fmt = r.u8('state format');
    if (fmt !== STATE_FORMAT) {
      throw new ProtocolError(ErrorCode.UNSUPPORTED_VERSION, `session state format ${fmt}`);
    }
    const associatedData = r.bytes('associated_data', 256);
    const state = new RatchetState({
      associatedData,
      baseKey: r.fixed(32, 'base_key'),
      remoteIdentityKey: r.fixed(32, 'remote_identity_key'),
      rootKey: r.fixed(32, 'root_key'),
      sendingPrivate: r.fixed(32, 'sending_private'),
      sendingPublic: r.fixed(32, 'sending_public'),
    });
    /** @type {(Uint8Array | null)[]} */
    const optional = [];
    for (const what of ['receiving_key', 'sending_chain', 'receiving_chain']) {
      const flag = r.u8(what);
      if (flag > 1) throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what} flag must be 0 or 1`);
      optional.push(flag ? r.fixed(32, what) : null);
    }
    [state.receivingKey, state.sendingChain, state.receivingChain] = optional;
    state.sendCounter = r.varint('send_counter', MAX_COUNTER + 1);
    state.receiveCounter = r.varint('receive_counter', MAX_COUNTER + 1);
    state.previousSendingLength = r.varint('previous_sending_length', MAX_COUNTER + 1);
    const previousCount = r.varint('previous keys', PREVIOUS_CHAINS_KEPT);
    for (let i = 0; i < previousCount; i++) {
      state.previousReceivingKeys.push(r.fixed(32, 'previous receiving key'));
    }
    const skippedCount = r.varint('skipped keys', MAX_SKIPPED_KEYS);
    for (let i = 0; i < skippedCount; i++) {
      const ratchetKey = r.fixed(32, 'skipped ratchet key');
      const counter = r.varint('skipped counter', MAX_COUNTER);
      const messageKey = r.fixed(32, 'skipped message key');
      const slot = skippedSlot(ratchetKey, counter);
      // A repeated slot keeps its first position and takes the last key, as an OrderedDict.
      state.skipped.set(slot, { ratchetKey, counter, messageKey });
    }
    const discardedCount = r.varint('discarded chains', PREVIOUS_CHAINS_KEPT + 1);
    for (let i = 0; i < discardedCount; i++) {
      const ratchetKey = r.fixed(32, 'discarded chain key');
      /** @type {[number, number][]} */
      const ranges = [];
      const rangeCount = r.varint('discarded ranges', MAX_DISCARDED_RANGES);
      for (let j = 0; j < rangeCount; j++) {
        const start = r.varint('discarded start', MAX_COUNTER);
        const end = start + r.varint('discarded length', MAX_COUNTER - start);
        ranges.push([start, end]);
      }
      // A repeated chain key keeps its first place and takes the last ranges (a Python dict).
      const id = toHex(ratchetKey);
      state.discarded.set(id, { ratchetKey: state.discarded.get(id)?.ratchetKey ?? ratchetKey, ranges });
    }
    const flag = r.u8('pending prekey');
    if (flag > 1) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'pending prekey flag must be 0 or 1');
    }
    if (flag) {
      const senderAccountKey = r.fixed(32, 'pending account key');
      const senderCertificate = DeviceCertificate.read(r);
      const signedPrekeyId = r.varint('pending signed prekey id', MAX_KEY_ID);
      const oneTimePrekeyId = r.varint('pending one-time prekey id', MAX_KEY_ID);
      const kemPrekeyId = r.varint('pending kem prekey id', MAX_KEY_ID);
      const kemCiphertext = r.fixed(p.MLKEM768_CIPHERTEXT_BYTES, 'pending kem ciphertext');
      state.pendingPrekey = new PendingPreKey({
        senderAccountKey,
        senderCertificate,
        signedPrekeyId,
        oneTimePrekeyId: oneTimePrekeyId || null,
        kemPrekeyId,
        kemCiphertext,
      });
    }
    r.end('session state');
    return state;
  }
}
