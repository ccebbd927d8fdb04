// @ts-check
/**
 * Long-term and medium-term keys: account identity, device certificates, prekeys, bundles
 * (protocol/keys.py; docs/protocol.md, "Keys").
 *
 *     account identity key (Ed25519, one per account, held by every device of it)
 *       └─ signs a DeviceCertificate per device:
 *            device id, registration id, device signing key (Ed25519),
 *            device identity key (X25519, used in the key agreement)
 *              └─ the device signing key signs the device's signed prekey (X25519)
 *                 and each ML-KEM-768 prekey (one-time and last-resort).
 *
 * One-time X25519 prekeys are unsigned, as in X3DH. Every signature covers a
 * domain-separation label, so a signature made for one purpose is never valid for another.
 *
 * Private keys are raw bytes. Randomness comes from an injectable `rng` drawn in exactly
 * the order Python draws it, so that keys made from recorded seeds match byte for byte.
 */

import * as p from './primitives.js';
import { Reader, Writer, concatBytes, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { MAX_DEVICE_ID } from './limits.js';

/** @import { Rng } from './primitives.js' */

export const MAX_KEY_ID = 0xffff_ffff;
export const MAX_REGISTRATION_ID = 0xffff_ffff;

export const LABEL_DEVICE_CERTIFICATE = utf8Encode('Sealpost v1 device certificate');
export const LABEL_SIGNED_PREKEY = utf8Encode('Sealpost v1 signed prekey');
export const LABEL_KEM_PREKEY = utf8Encode('Sealpost v1 kem prekey');

/**
 * What a signature covers: the purpose label, a zero byte, then the encoded body.
 * @param {Uint8Array} label
 * @param {Uint8Array} body
 */
export function signedPayload(label, body) {
  return concatBytes(label, Uint8Array.of(0), body);
}

/**
 * @param {number} keyId
 * @param {string} what
 */
function checkKeyId(keyId, what) {
  if (!Number.isInteger(keyId) || keyId < 1 || keyId > MAX_KEY_ID) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what} must be 1..${MAX_KEY_ID}`);
  }
}

/**
 * Read an X25519 public key from the wire: 32 bytes whose top bit (0x80 of byte 31) is
 * clear, else BAD_KEY (protocol/keys.py read_x25519_public_key).
 *
 * X25519 ignores that bit (RFC 7748, section 5), so two encodings that differ only there
 * give the same shared secrets. Where a key's bytes also name something (the base key that
 * identifies a session, the ratchet key that identifies a chain), the twin would pass as a
 * different key: a copy of a PreKeyMessage with its base key's top bit flipped was accepted
 * as a new session. Every X25519 public key this package produces has the bit clear (an
 * X25519 output is reduced modulo 2**255 - 19), so only a forged or corrupted key is refused.
 * Every X25519 public key that is decoded from the wire goes through here.
 * @param {Reader} reader
 * @param {string} what
 */
export function readX25519PublicKey(reader, what) {
  const key = reader.fixed(p.X25519_KEY_BYTES, what);
  if (key[31] & 0x80) {
    throw new ProtocolError(ErrorCode.BAD_KEY, `${what} is not a canonical X25519 key`);
  }
  return key;
}

/** @param {number} deviceId */
export function checkDeviceId(deviceId) {
  if (!Number.isInteger(deviceId) || deviceId < 1 || deviceId > MAX_DEVICE_ID) {
    throw new ProtocolError(
      ErrorCode.INVALID_VALUE,
      `device id ${deviceId} is outside 1..${MAX_DEVICE_ID}`,
    );
  }
}

/** @param {Uint8Array} data */
function shortHex(data) {
  return Array.from(data.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join('');
}

// --- account identity -----------------------------------------------------------------

/** The account's Ed25519 identity key pair. Safety numbers derive from its public key. */
export class AccountIdentity {
  /** @param {{seed: Uint8Array, publicKey: Uint8Array}} fields */
  constructor({ seed, publicKey }) {
    /** @readonly */ this.seed = seed;
    /** @readonly */ this.publicKey = publicKey;
    Object.freeze(this);
  }

  /** @param {Uint8Array} seed */
  static fromSeed(seed) {
    return new AccountIdentity({ seed: seed.slice(), publicKey: p.ed25519PublicKey(seed) });
  }

  /** @param {{rng?: Rng}} [options] */
  static generate({ rng = p.randomBytes } = {}) {
    return AccountIdentity.fromSeed(rng(p.ED25519_SEED_BYTES));
  }

  /** @param {Uint8Array} message */
  sign(message) {
    return p.ed25519Sign(this.seed, message);
  }

  toString() {
    return `AccountIdentity(publicKey=${shortHex(this.publicKey)}…)`; // never the seed
  }
}

// --- devices --------------------------------------------------------------------------

/**
 * A device's public keys, signed by its account identity key.
 *
 * Encoding: device_id varint | registration_id varint | signing_key[32] |
 * identity_key[32] | signature[64]. The signature covers
 * `signedPayload(LABEL_DEVICE_CERTIFICATE, <everything before the signature>)`.
 */
export class DeviceCertificate {
  /**
   * @param {{deviceId: number, registrationId: number, signingKey: Uint8Array,
   *          identityKey: Uint8Array, signature: Uint8Array}} fields
   */
  constructor({ deviceId, registrationId, signingKey, identityKey, signature }) {
    /** @readonly */ this.deviceId = deviceId;
    /** @readonly */ this.registrationId = registrationId;
    /** @readonly */ this.signingKey = signingKey;
    /** @readonly */ this.identityKey = identityKey;
    /** @readonly */ this.signature = signature;
    Object.freeze(this);
  }

  body() {
    return new Writer()
      .varint(this.deviceId)
      .varint(this.registrationId)
      .fixed(this.signingKey, p.ED25519_PUBLIC_BYTES)
      .fixed(this.identityKey, p.X25519_KEY_BYTES)
      .getValue();
  }

  encode() {
    return concatBytes(this.body(), this.signature);
  }

  /** @param {Reader} reader */
  static read(reader) {
    const deviceId = reader.varint('device_id', MAX_DEVICE_ID);
    checkDeviceId(deviceId);
    const registrationId = reader.varint('registration_id', MAX_REGISTRATION_ID);
    if (registrationId === 0) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'registration_id must not be 0');
    }
    return new DeviceCertificate({
      deviceId,
      registrationId,
      signingKey: reader.fixed(p.ED25519_PUBLIC_BYTES, 'signing_key'),
      identityKey: readX25519PublicKey(reader, 'identity_key'),
      signature: reader.fixed(p.ED25519_SIGNATURE_BYTES, 'certificate signature'),
    });
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const reader = new Reader(data);
    const cert = DeviceCertificate.read(reader);
    reader.end('device certificate');
    return cert;
  }

  /**
   * Throw BAD_SIGNATURE unless the account identity key signed this certificate.
   * @param {Uint8Array} accountPublicKey
   */
  verify(accountPublicKey) {
    p.ed25519Verify(
      accountPublicKey,
      signedPayload(LABEL_DEVICE_CERTIFICATE, this.body()),
      this.signature,
    );
  }
}

/**
 * The private half of a device: its signing seed, X25519 identity key and certificate, and
 * the public key of the account that certified it.
 */
export class DeviceKeys {
  /**
   * @param {Uint8Array} signingSeed
   * @param {Uint8Array} identityPrivate
   * @param {DeviceCertificate} certificate
   * @param {Uint8Array} accountKey
   */
  constructor(signingSeed, identityPrivate, certificate, accountKey) {
    /** @readonly */ this.signingSeed = signingSeed;
    /** @readonly */ this.identityPrivate = identityPrivate;
    /** @readonly */ this.certificate = certificate;
    /** @readonly */ this.accountKey = accountKey;
    Object.freeze(this);
  }

  get deviceId() {
    return this.certificate.deviceId;
  }

  get identityKey() {
    return this.certificate.identityKey;
  }

  /**
   * Make a device's keys and have the account identity key certify them. Draws, in order:
   * the signing seed, the identity private key, then (only without `registrationId`) four
   * bytes of registration id (big-endian; 0 becomes 1).
   * @param {AccountIdentity} account
   * @param {number} deviceId
   * @param {{rng?: Rng, registrationId?: number | null}} [options]
   */
  static create(account, deviceId, { rng = p.randomBytes, registrationId = null } = {}) {
    checkDeviceId(deviceId);
    const signingSeed = rng(p.ED25519_SEED_BYTES);
    const identityPrivate = rng(p.X25519_KEY_BYTES);
    if (registrationId === null || registrationId === undefined) {
      const raw = rng(4);
      registrationId = ((raw[0] << 24) | (raw[1] << 16) | (raw[2] << 8) | raw[3]) >>> 0 || 1;
    }
    const unsigned = new DeviceCertificate({
      deviceId,
      registrationId,
      signingKey: p.ed25519PublicKey(signingSeed),
      identityKey: p.x25519PublicKey(identityPrivate),
      signature: new Uint8Array(0),
    });
    const signature = account.sign(signedPayload(LABEL_DEVICE_CERTIFICATE, unsigned.body()));
    const certificate = new DeviceCertificate({ ...unsigned, signature });
    return new DeviceKeys(signingSeed, identityPrivate, certificate, account.publicKey);
  }

  /** @param {Uint8Array} message */
  sign(message) {
    return p.ed25519Sign(this.signingSeed, message);
  }

  toString() {
    return `DeviceKeys(deviceId=${this.deviceId})`;
  }
}

// --- prekeys (public halves travel to the server; private halves stay on the device) --

/** Medium-term X25519 prekey. Encoding: key_id varint | public_key[32] | signature[64]. */
export class SignedPreKey {
  /**
   * @param {number} keyId
   * @param {Uint8Array} publicKey
   * @param {Uint8Array} signature
   */
  constructor(keyId, publicKey, signature) {
    /** @readonly */ this.keyId = keyId;
    /** @readonly */ this.publicKey = publicKey;
    /** @readonly */ this.signature = signature;
    Object.freeze(this);
  }

  body() {
    return new Writer().varint(this.keyId).fixed(this.publicKey, p.X25519_KEY_BYTES).getValue();
  }

  encode() {
    return concatBytes(this.body(), this.signature);
  }

  /** @param {Reader} reader */
  static read(reader) {
    const keyId = reader.varint('signed_prekey.key_id', MAX_KEY_ID);
    checkKeyId(keyId, 'signed prekey id');
    return new SignedPreKey(
      keyId,
      readX25519PublicKey(reader, 'signed_prekey.public_key'),
      reader.fixed(p.ED25519_SIGNATURE_BYTES, 'signed_prekey.signature'),
    );
  }

  /** @param {Uint8Array} deviceSigningKey */
  verify(deviceSigningKey) {
    p.ed25519Verify(
      deviceSigningKey,
      signedPayload(LABEL_SIGNED_PREKEY, this.body()),
      this.signature,
    );
  }
}

/** Single-use X25519 prekey. Encoding: key_id varint | public_key[32]. */
export class OneTimePreKey {
  /**
   * @param {number} keyId
   * @param {Uint8Array} publicKey
   */
  constructor(keyId, publicKey) {
    /** @readonly */ this.keyId = keyId;
    /** @readonly */ this.publicKey = publicKey;
    Object.freeze(this);
  }

  encode() {
    return new Writer().varint(this.keyId).fixed(this.publicKey, p.X25519_KEY_BYTES).getValue();
  }

  /** @param {Reader} reader */
  static read(reader) {
    const keyId = reader.varint('one_time_prekey.key_id', MAX_KEY_ID);
    checkKeyId(keyId, 'one-time prekey id');
    return new OneTimePreKey(keyId, readX25519PublicKey(reader, 'one_time_prekey.public_key'));
  }
}

/**
 * ML-KEM-768 prekey, one-time or last-resort, signed by the device.
 *
 * Encoding: key_id varint | last_resort u8 (0/1) | public_key[1184] | signature[64].
 */
export class KemPreKey {
  /**
   * @param {number} keyId
   * @param {boolean} lastResort
   * @param {Uint8Array} publicKey
   * @param {Uint8Array} signature
   */
  constructor(keyId, lastResort, publicKey, signature) {
    /** @readonly */ this.keyId = keyId;
    /** @readonly */ this.lastResort = lastResort;
    /** @readonly */ this.publicKey = publicKey;
    /** @readonly */ this.signature = signature;
    Object.freeze(this);
  }

  body() {
    return new Writer()
      .varint(this.keyId)
      .u8(this.lastResort ? 1 : 0)
      .fixed(this.publicKey, p.MLKEM768_PUBLIC_BYTES)
      .getValue();
  }

  encode() {
    return concatBytes(this.body(), this.signature);
  }

  /** @param {Reader} reader */
  static read(reader) {
    const keyId = reader.varint('kem_prekey.key_id', MAX_KEY_ID);
    checkKeyId(keyId, 'KEM prekey id');
    const flag = reader.u8('kem_prekey.last_resort');
    if (flag > 1) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'kem_prekey.last_resort must be 0 or 1');
    }
    return new KemPreKey(
      keyId,
      flag === 1,
      reader.fixed(p.MLKEM768_PUBLIC_BYTES, 'kem_prekey.public_key'),
      reader.fixed(p.ED25519_SIGNATURE_BYTES, 'kem_prekey.signature'),
    );
  }

  /** @param {Uint8Array} deviceSigningKey */
  verify(deviceSigningKey) {
    p.ed25519Verify(deviceSigningKey, signedPayload(LABEL_KEM_PREKEY, this.body()), this.signature);
  }
}

export class SignedPreKeyPair {
  /**
   * @param {Uint8Array} privateKey
   * @param {SignedPreKey} publicPart
   */
  constructor(privateKey, publicPart) {
    /** @readonly */ this.privateKey = privateKey;
    /** @readonly */ this.public = publicPart;
    Object.freeze(this);
  }

  /**
   * @param {DeviceKeys} device
   * @param {number} keyId
   * @param {{rng?: Rng}} [options]
   */
  static generate(device, keyId, { rng = p.randomBytes } = {}) {
    checkKeyId(keyId, 'signed prekey id');
    const privateKey = rng(p.X25519_KEY_BYTES);
    const unsigned = new SignedPreKey(keyId, p.x25519PublicKey(privateKey), new Uint8Array(0));
    const signature = device.sign(signedPayload(LABEL_SIGNED_PREKEY, unsigned.body()));
    return new SignedPreKeyPair(privateKey, new SignedPreKey(keyId, unsigned.publicKey, signature));
  }
}

export class OneTimePreKeyPair {
  /**
   * @param {Uint8Array} privateKey
   * @param {OneTimePreKey} publicPart
   */
  constructor(privateKey, publicPart) {
    /** @readonly */ this.privateKey = privateKey;
    /** @readonly */ this.public = publicPart;
    Object.freeze(this);
  }

  /**
   * @param {number} keyId
   * @param {{rng?: Rng}} [options]
   */
  static generate(keyId, { rng = p.randomBytes } = {}) {
    checkKeyId(keyId, 'one-time prekey id');
    const privateKey = rng(p.X25519_KEY_BYTES);
    return new OneTimePreKeyPair(privateKey, new OneTimePreKey(keyId, p.x25519PublicKey(privateKey)));
  }
}

export class KemPreKeyPair {
  /**
   * @param {Uint8Array} seed
   * @param {KemPreKey} publicPart
   */
  constructor(seed, publicPart) {
    /** @readonly */ this.seed = seed;
    /** @readonly */ this.public = publicPart;
    Object.freeze(this);
  }

  /**
   * @param {DeviceKeys} device
   * @param {number} keyId
   * @param {boolean} lastResort
   * @param {{rng?: Rng}} [options]
   */
  static generate(device, keyId, lastResort, { rng = p.randomBytes } = {}) {
    checkKeyId(keyId, 'KEM prekey id');
    const seed = rng(p.MLKEM768_SEED_BYTES);
    const unsigned = new KemPreKey(keyId, lastResort, p.mlkem768PublicKey(seed), new Uint8Array(0));
    const signature = device.sign(signedPayload(LABEL_KEM_PREKEY, unsigned.body()));
    return new KemPreKeyPair(seed, new KemPreKey(keyId, lastResort, unsigned.publicKey, signature));
  }
}

// --- the bundle a sender claims from the server ---------------------------------------

/**
 * Everything needed to start a session with one device while it is offline.
 *
 * Encoding: account_identity_key[32] | certificate | signed_prekey |
 * has_one_time u8 (0/1) | [one_time_prekey] | kem_prekey.
 */
export class PreKeyBundle {
  /**
   * @param {{accountIdentityKey: Uint8Array, certificate: DeviceCertificate,
   *          signedPrekey: SignedPreKey, oneTimePrekey: OneTimePreKey | null,
   *          kemPrekey: KemPreKey}} fields
   */
  constructor({ accountIdentityKey, certificate, signedPrekey, oneTimePrekey, kemPrekey }) {
    /** @readonly */ this.accountIdentityKey = accountIdentityKey;
    /** @readonly */ this.certificate = certificate;
    /** @readonly */ this.signedPrekey = signedPrekey;
    /** @readonly */ this.oneTimePrekey = oneTimePrekey ?? null;
    /** @readonly */ this.kemPrekey = kemPrekey;
    Object.freeze(this);
  }

  encode() {
    const w = new Writer().fixed(this.accountIdentityKey, p.ED25519_PUBLIC_BYTES);
    w.raw(this.certificate.encode()).raw(this.signedPrekey.encode());
    if (this.oneTimePrekey === null) w.u8(0);
    else w.u8(1).raw(this.oneTimePrekey.encode());
    return w.raw(this.kemPrekey.encode()).getValue();
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    const accountIdentityKey = r.fixed(p.ED25519_PUBLIC_BYTES, 'account_identity_key');
    const certificate = DeviceCertificate.read(r);
    const signedPrekey = SignedPreKey.read(r);
    const flag = r.u8('has_one_time_prekey');
    if (flag > 1) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'has_one_time_prekey must be 0 or 1');
    }
    const oneTimePrekey = flag ? OneTimePreKey.read(r) : null;
    const kemPrekey = KemPreKey.read(r);
    r.end('prekey bundle');
    return new PreKeyBundle({
      accountIdentityKey,
      certificate,
      signedPrekey,
      oneTimePrekey,
      kemPrekey,
    });
  }

  /**
   * Check the whole chain: account → device certificate → signed and KEM prekeys.
   * Throws ProtocolError(INVALID_BUNDLE) naming the link that failed.
   */
  verify() {
    /** @type {[string, Uint8Array, Uint8Array, Uint8Array][]} */
    const checks = [
      [
        'device certificate',
        this.accountIdentityKey,
        signedPayload(LABEL_DEVICE_CERTIFICATE, this.certificate.body()),
        this.certificate.signature,
      ],
      [
        'signed prekey',
        this.certificate.signingKey,
        signedPayload(LABEL_SIGNED_PREKEY, this.signedPrekey.body()),
        this.signedPrekey.signature,
      ],
      [
        'KEM prekey',
        this.certificate.signingKey,
        signedPayload(LABEL_KEM_PREKEY, this.kemPrekey.body()),
        this.kemPrekey.signature,
      ],
    ];
    for (const [what, publicKey, message, signature] of checks) {
      try {
        p.ed25519Verify(publicKey, message, signature);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        throw new ProtocolError(
          ErrorCode.INVALID_BUNDLE,
          `${what} signature does not verify (${error.slug})`,
        );
      }
    }
  }
}
