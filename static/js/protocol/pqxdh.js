// @ts-check
/**
 * Hybrid session setup: X3DH plus an ML-KEM-768 encapsulation, in the manner of PQXDH
 * (protocol/pqxdh.py; Signal's PQXDH specification, revision 3, sections 2.2 and 3.3).
 *
 *     DH1 = X25519(IK_A, SPK_B)      DH2 = X25519(EK_A, IK_B)
 *     DH3 = X25519(EK_A, SPK_B)      DH4 = X25519(EK_A, OPK_B)   (only with a one-time prekey)
 *     (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
 *     SK = HKDF-SHA256(ikm = 0xFF * 32 || DH1 || DH2 || DH3 [|| DH4] || SS,
 *                      salt = 0x00 * 32, info = KDF_INFO, length = 32)
 *     AD = AK_A || IK_A || AK_B || IK_B
 *
 * where AK is each side's account identity key (Ed25519) and IK each device's X25519
 * identity key. The account keys are in AD so that a relay cannot re-sign a device
 * certificate under another account key and pass one person's session off as another's
 * (X3DH section 4.8, "identity binding"); docs/protocol.md, section 5.1.
 */

import * as p from './primitives.js';
import { concatBytes, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';

/** @import { Rng } from './primitives.js' */
/** @import { DeviceKeys, PreKeyBundle } from './keys.js' */
/** @import { PreKeyMessage } from './messages.js' */
/**
 * Encapsulation to a KEM public key: returns [ciphertext, sharedSecret].
 * @typedef {(publicKey: Uint8Array) => [Uint8Array, Uint8Array]} Encapsulate
 */

export const KDF_INFO = utf8Encode('Sealpost v1 PQXDH X25519 ML-KEM-768 SHA-256');
export const KDF_PREFIX = new Uint8Array(32).fill(0xff);
export const KDF_SALT = new Uint8Array(32);

/** @type {Encapsulate} */
const defaultEncapsulate = (publicKey) => p.mlkem768Encapsulate(publicKey);

/**
 * @param {Uint8Array[]} dhOutputs
 * @param {Uint8Array} kemSecret
 */
export function deriveRootKey(dhOutputs, kemSecret) {
  return p.hkdfSha256(concatBytes(KDF_PREFIX, ...dhOutputs, kemSecret), KDF_SALT, KDF_INFO, 32);
}

/**
 * @param {Uint8Array} initiatorAccountKey
 * @param {Uint8Array} initiatorIdentityKey
 * @param {Uint8Array} responderAccountKey
 * @param {Uint8Array} responderIdentityKey
 */
export function associatedData(
  initiatorAccountKey,
  initiatorIdentityKey,
  responderAccountKey,
  responderIdentityKey,
) {
  return concatBytes(
    initiatorAccountKey,
    initiatorIdentityKey,
    responderAccountKey,
    responderIdentityKey,
  );
}

/**
 * What the initiator keeps from the setup: secrets and the fields of its PreKeyMessage.
 * @typedef {{
 *   rootKey: Uint8Array, associatedData: Uint8Array, baseKey: Uint8Array,
 *   remoteSignedPrekey: Uint8Array, remoteIdentityKey: Uint8Array, signedPrekeyId: number,
 *   oneTimePrekeyId: number | null, kemPrekeyId: number, kemCiphertext: Uint8Array
 * }} InitiatedSession
 */

/**
 * Run the initiator's half against a bundle, after verifying its signatures. Draws the base
 * key from `rng`, then encapsulates (the default draws m from the platform CSPRNG).
 * @param {DeviceKeys} own
 * @param {PreKeyBundle} bundle
 * @param {{rng?: Rng, encapsulate?: Encapsulate}} [options]
 * @returns {InitiatedSession}
 */
export function initiate(own, bundle, { rng = p.randomBytes, encapsulate = defaultEncapsulate } = {}) {
  bundle.verify();
  const basePrivate = rng(p.X25519_KEY_BYTES);
  const spk = bundle.signedPrekey.publicKey;
  const dh = [
    p.x25519(own.identityPrivate, spk),
    p.x25519(basePrivate, bundle.certificate.identityKey),
    p.x25519(basePrivate, spk),
  ];
  if (bundle.oneTimePrekey !== null) dh.push(p.x25519(basePrivate, bundle.oneTimePrekey.publicKey));
  const [kemCiphertext, kemSecret] = encapsulate(bundle.kemPrekey.publicKey);
  return Object.freeze({
    rootKey: deriveRootKey(dh, kemSecret),
    associatedData: associatedData(
      own.accountKey,
      own.identityKey,
      bundle.accountIdentityKey,
      bundle.certificate.identityKey,
    ),
    baseKey: p.x25519PublicKey(basePrivate),
    remoteSignedPrekey: spk,
    remoteIdentityKey: bundle.certificate.identityKey,
    signedPrekeyId: bundle.signedPrekey.keyId,
    oneTimePrekeyId: bundle.oneTimePrekey !== null ? bundle.oneTimePrekey.keyId : null,
    kemPrekeyId: bundle.kemPrekey.keyId,
    kemCiphertext,
  });
}

/**
 * Run the responder's half; returns [rootKey, associatedData]. The sender's device
 * certificate must carry its account key's signature.
 * @param {DeviceKeys} own
 * @param {PreKeyMessage} message
 * @param {Uint8Array} signedPrekeyPrivate
 * @param {Uint8Array | null} oneTimePrekeyPrivate
 * @param {Uint8Array} kemPrekeySeed
 * @returns {[Uint8Array, Uint8Array]}
 */
export function respond(own, message, signedPrekeyPrivate, oneTimePrekeyPrivate, kemPrekeySeed) {
  try {
    message.senderCertificate.verify(message.senderAccountKey);
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    throw new ProtocolError(
      ErrorCode.BAD_SIGNATURE,
      'sender device certificate is not signed by its account key',
    );
  }
  if ((message.oneTimePrekeyId === null) !== (oneTimePrekeyPrivate === null)) {
    throw new ProtocolError(ErrorCode.PREKEY_NOT_FOUND, 'one-time prekey mismatch');
  }
  const senderIdentity = message.senderCertificate.identityKey;
  const dh = [
    p.x25519(signedPrekeyPrivate, senderIdentity),
    p.x25519(own.identityPrivate, message.baseKey),
    p.x25519(signedPrekeyPrivate, message.baseKey),
  ];
  if (oneTimePrekeyPrivate !== null) dh.push(p.x25519(oneTimePrekeyPrivate, message.baseKey));
  const kemSecret = p.mlkem768Decapsulate(kemPrekeySeed, message.kemCiphertext);
  return [
    deriveRootKey(dh, kemSecret),
    associatedData(message.senderAccountKey, senderIdentity, own.accountKey, own.identityKey),
  ];
}
