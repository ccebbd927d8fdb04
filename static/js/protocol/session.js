// @ts-check
/**
 * A session with one remote device: the ratchet states and the rules around them
 * (protocol/session.py).
 *
 * A `SessionRecord` holds the current ratchet state and up to MAX_ARCHIVED_STATES earlier
 * ones. Two devices that start sessions with each other at the same moment end up with two
 * states each; decryption tries every state, and the one that works becomes current.
 *
 * Until the initiator receives a reply it sends every message as a PreKeyMessage carrying
 * the same setup fields; the responder recognises repeats by the base key, which needs the
 * base key to have one spelling, so decoders refuse one with its top bit set
 * (`readX25519PublicKey` in keys.js).
 *
 * Failure never changes the record: decryption runs on a clone of a state and the clone is
 * kept only if the AEAD accepts the message. What the caller must do after a successful
 * decryption (delete a consumed one-time prekey, warn about a new identity) comes back in
 * `Decrypted`: this module performs no I/O and nothing here is asynchronous.
 */

import * as p from './primitives.js';
import { Reader, Writer } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { MAX_ARCHIVED_STATES } from './limits.js';
import { MessageKind, PreKeyMessage, RatchetMessage, peekKind } from './messages.js';
import { initiate as pqxdhInitiate, respond } from './pqxdh.js';
import { PendingPreKey, RatchetState, SkipBudget } from './ratchet.js';

/** @import { Rng } from './primitives.js' */
/** @import { Encapsulate } from './pqxdh.js' */
/** @import { DeviceKeys, DeviceCertificate, PreKeyBundle } from './keys.js' */

export const RECORD_FORMAT = 1;

/**
 * The responder's private prekeys, looked up by id (implemented by the client's store).
 * Each method returns null (or undefined) for an id it does not hold; `kemPrekey` returns
 * [seed, isLastResort].
 * @typedef {{
 *   signedPrekey(keyId: number): Uint8Array | null | undefined,
 *   oneTimePrekey(keyId: number): Uint8Array | null | undefined,
 *   kemPrekey(keyId: number): [Uint8Array, boolean] | null | undefined,
 * }} PreKeyStore
 */

/**
 * The result of a successful decryption.
 * @typedef {{
 *   plaintext: Uint8Array,
 *   senderAccountKey: Uint8Array | null,
 *   senderCertificate: DeviceCertificate | null,
 *   consumedOneTimePrekeyId: number | null,
 *   consumedKemPrekeyId: number | null,
 * }} Decrypted
 * The sender fields are set when this message set up a new session from a PreKeyMessage;
 * the consumed ids name one-time prekeys the caller must now delete (never used twice).
 */

/**
 * @param {Uint8Array} plaintext
 * @param {Partial<Decrypted>} [extra]
 * @returns {Decrypted}
 */
function decrypted(plaintext, extra = {}) {
  return Object.freeze({
    plaintext,
    senderAccountKey: extra.senderAccountKey ?? null,
    senderCertificate: extra.senderCertificate ?? null,
    consumedOneTimePrekeyId: extra.consumedOneTimePrekeyId ?? null,
    consumedKemPrekeyId: extra.consumedKemPrekeyId ?? null,
  });
}

export class SessionRecord {
  /** @param {RatchetState[]} [states] */
  constructor(states = []) {
    /** current first @type {RatchetState[]} */
    this.states = states;
  }

  /** @returns {RatchetState | null} */
  get current() {
    return this.states.length ? this.states[0] : null;
  }

  /**
   * @param {number} index
   * @param {RatchetState} state
   */
  _promote(index, state) {
    this.states.splice(index, 1);
    this.states.unshift(state);
    this.states.splice(1 + MAX_ARCHIVED_STATES);
  }

  /** @param {RatchetState} state */
  _add(state) {
    this.states.unshift(state);
    this.states.splice(1 + MAX_ARCHIVED_STATES);
  }

  // --- starting -----------------------------------------------------------------------

  /**
   * Start a new session from a (verified here) bundle; earlier states are archived.
   * Draws from `rng`: the base key, then (through `encapsulate`, if it uses the same
   * stream) the ML-KEM message, then the first sending ratchet key.
   * @param {DeviceKeys} ownDevice
   * @param {PreKeyBundle} bundle
   * @param {{existing?: SessionRecord | null, rng?: Rng, encapsulate?: Encapsulate}} [options]
   */
  static initiate(ownDevice, bundle, { existing = null, rng = p.randomBytes, encapsulate } = {}) {
    const setup = pqxdhInitiate(ownDevice, bundle, encapsulate ? { rng, encapsulate } : { rng });
    const pending = new PendingPreKey({
      senderAccountKey: ownDevice.accountKey,
      senderCertificate: ownDevice.certificate,
      signedPrekeyId: setup.signedPrekeyId,
      oneTimePrekeyId: setup.oneTimePrekeyId,
      kemPrekeyId: setup.kemPrekeyId,
      kemCiphertext: setup.kemCiphertext,
    });
    const state = RatchetState.initiator(
      setup.rootKey,
      setup.associatedData,
      setup.baseKey,
      setup.remoteIdentityKey,
      setup.remoteSignedPrekey,
      pending,
      { rng },
    );
    const record = new SessionRecord(existing ? [...existing.states] : []);
    record._add(state);
    return record;
  }

  // --- sending ------------------------------------------------------------------------

  /** @param {Uint8Array} plaintext */
  encrypt(plaintext) {
    const state = this.current;
    if (state === null) throw new ProtocolError(ErrorCode.NO_SESSION, 'no session with this device');
    const message = state.encrypt(plaintext);
    const pending = state.pendingPrekey;
    if (pending === null) return message.encode();
    return new PreKeyMessage({
      senderAccountKey: pending.senderAccountKey,
      senderCertificate: pending.senderCertificate,
      baseKey: state.baseKey,
      signedPrekeyId: pending.signedPrekeyId,
      oneTimePrekeyId: pending.oneTimePrekeyId,
      kemPrekeyId: pending.kemPrekeyId,
      kemCiphertext: pending.kemCiphertext,
      message,
    }).encode();
  }

  // --- receiving ----------------------------------------------------------------------

  /**
   * Decrypt one message from the remote device; the record changes only on success.
   *
   * `trustedAccountKey` is the sender's account key the caller already trusts (null on
   * first contact); a PreKeyMessage signed by another key throws UNTRUSTED_IDENTITY.
   * @param {Uint8Array} data
   * @param {DeviceKeys} ownDevice
   * @param {PreKeyStore} prekeys
   * @param {{trustedAccountKey?: Uint8Array | null, rng?: Rng}} [options]
   * @returns {Decrypted}
   */
  decrypt(data, ownDevice, prekeys, { trustedAccountKey = null, rng = p.randomBytes } = {}) {
    const kind = peekKind(data);
    if (kind === MessageKind.RATCHET) {
      return decrypted(this._decryptWithStates(RatchetMessage.decode(data), rng));
    }
    const prekeyMessage = PreKeyMessage.decode(data);
    if (
      trustedAccountKey !== null &&
      !p.constantTimeEqual(trustedAccountKey, prekeyMessage.senderAccountKey)
    ) {
      throw new ProtocolError(
        ErrorCode.UNTRUSTED_IDENTITY,
        "the sender's account identity key has changed",
      );
    }
    for (const state of this.states) {
      if (p.constantTimeEqual(state.baseKey, prekeyMessage.baseKey)) {
        // A repeat of a setup we already accepted: plain ratchet decryption.
        return decrypted(this._decryptWithStates(prekeyMessage.message, rng));
      }
    }
    return this._acceptNewSession(prekeyMessage, ownDevice, prekeys, rng);
  }

  /**
   * @param {RatchetMessage} message
   * @param {Rng} rng
   */
  _decryptWithStates(message, rng) {
    if (!this.states.length) throw new ProtocolError(ErrorCode.NO_SESSION, 'no session with this device');
    /** @type {ProtocolError | null} */
    let firstError = null;
    const budget = new SkipBudget(); // shared: one message costs at most MAX_JUMP derivations
    for (let index = 0; index < this.states.length; index++) {
      const candidate = this.states[index].clone();
      let plaintext;
      try {
        plaintext = candidate.decrypt(message, { rng, budget });
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        // Some state already received it: that is the answer, whatever the states before
        // it said (libsignal does the same).
        if (error.code === ErrorCode.DUPLICATE_MESSAGE) throw error;
        firstError = firstError ?? error;
        continue;
      }
      if (index === 0) this.states[0] = candidate;
      else this._promote(index, candidate);
      return plaintext;
    }
    throw firstError ?? new ProtocolError(ErrorCode.NO_SESSION, 'no session');
  }

  /**
   * @param {PreKeyMessage} message
   * @param {DeviceKeys} ownDevice
   * @param {PreKeyStore} prekeys
   * @param {Rng} rng
   * @returns {Decrypted}
   */
  _acceptNewSession(message, ownDevice, prekeys, rng) {
    const signed = prekeys.signedPrekey(message.signedPrekeyId) ?? null;
    if (signed === null) {
      throw new ProtocolError(
        ErrorCode.PREKEY_NOT_FOUND,
        `signed prekey ${message.signedPrekeyId} is unknown`,
      );
    }
    let oneTime = null;
    if (message.oneTimePrekeyId !== null) {
      oneTime = prekeys.oneTimePrekey(message.oneTimePrekeyId) ?? null;
      if (oneTime === null) {
        throw new ProtocolError(
          ErrorCode.PREKEY_NOT_FOUND,
          `one-time prekey ${message.oneTimePrekeyId} is unknown or already used`,
        );
      }
    }
    const kem = prekeys.kemPrekey(message.kemPrekeyId) ?? null;
    if (kem === null) {
      throw new ProtocolError(
        ErrorCode.PREKEY_NOT_FOUND,
        `KEM prekey ${message.kemPrekeyId} is unknown or already used`,
      );
    }
    const [kemSeed, lastResort] = kem;
    const [rootKey, associatedData] = respond(ownDevice, message, signed, oneTime, kemSeed);
    const state = RatchetState.responder(
      rootKey,
      associatedData,
      message.baseKey,
      message.senderCertificate.identityKey,
      signed,
    );
    const plaintext = state.decrypt(message.message, { rng }); // throws before anything is kept
    this._add(state);
    return decrypted(plaintext, {
      senderAccountKey: message.senderAccountKey,
      senderCertificate: message.senderCertificate,
      consumedOneTimePrekeyId: message.oneTimePrekeyId,
      consumedKemPrekeyId: lastResort ? null : message.kemPrekeyId,
    });
  }

  // --- serialisation ------------------------------------------------------------------

  encode() {
    const w = new Writer().u8(RECORD_FORMAT).varint(this.states.length);
    for (const state of this.states) w.bytes(state.encode());
    return w.getValue();
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    const fmt = r.u8('record format');
    if (fmt !== RECORD_FORMAT) {
      throw new ProtocolError(ErrorCode.UNSUPPORTED_VERSION, `session record format ${fmt}`);
    }
    const count = r.varint('state count', 1 + MAX_ARCHIVED_STATES);
    const states = [];
    for (let i = 0; i < count; i++) states.push(RatchetState.decode(r.bytes('state', 1 << 20)));
    r.end('session record');
    return new SessionRecord(states);
  }
}
