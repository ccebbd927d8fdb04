// @ts-check
/**
 * The signed device list: which devices an account has, in the account's own words
 * (protocol/devicelist.py).
 *
 * Each device certificate is signed by the account identity key, so the server cannot
 * invent a device. A certificate stays valid after its device is revoked, though, so a
 * server could keep serving (or re-insert) a revoked device. The device list closes that
 * gap: the account identity key signs the complete set of devices with a version that only
 * ever increases, and a client accepts a device only if the newest list it has seen names
 * it, with the certificate it is being shown.
 *
 *     DeviceList = username str | version varint | issued_at_ms varint |
 *                  count varint | count × (device_id varint | registration_id varint |
 *                                          certificate_sha256[32])
 *     SignedDeviceList = DeviceList | signature[64]
 *     signature = Ed25519(account key, "Sealpost v1 device list" | 0x00 | DeviceList)
 *
 * Entries are sorted by device id, each id at most once. Any device holding the account
 * identity key (every linked device does) signs a new list when it links or revokes one.
 */

import * as p from './primitives.js';
import { Reader, Writer, concatBytes, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { checkUsername } from './identifiers.js';
import { MAX_REGISTRATION_ID, checkDeviceId, signedPayload } from './keys.js';
import { MAX_DEVICE_ID, MAX_USERNAME_BYTES } from './limits.js';

/** @import { AccountIdentity, DeviceCertificate } from './keys.js' */
/** @import { Uint64 } from './encoding.js' */

export const LABEL_DEVICE_LIST = utf8Encode('Sealpost v1 device list');
export const MAX_LISTED_DEVICES = 64;

/**
 * SHA-256 of a certificate's encoding: how a device list names a certificate.
 * @param {DeviceCertificate} certificate
 */
export function certificateDigest(certificate) {
  return p.sha256(certificate.encode());
}

export class ListedDevice {
  /**
   * @param {number} deviceId
   * @param {number} registrationId
   * @param {Uint8Array} certificateSha256
   */
  constructor(deviceId, registrationId, certificateSha256) {
    /** @readonly */ this.deviceId = deviceId;
    /** @readonly */ this.registrationId = registrationId;
    /** @readonly */ this.certificateSha256 = certificateSha256;
    Object.freeze(this);
  }
}

export class SignedDeviceList {
  /**
   * @param {{username: string, version: Uint64, issuedAtMs: Uint64,
   *          devices: readonly ListedDevice[], signature: Uint8Array}} fields
   */
  constructor({ username, version, issuedAtMs, devices, signature }) {
    /** @readonly */ this.username = username;
    /** @readonly */ this.version = version;
    /** @readonly */ this.issuedAtMs = issuedAtMs;
    /** @readonly */ this.devices = Object.freeze([...devices]);
    /** @readonly */ this.signature = signature;
    Object.freeze(this);
  }

  /** The signed part: everything but the signature. */
  body() {
    const ids = this.devices.map((d) => d.deviceId);
    const sorted = [...new Set(ids)].sort((a, b) => a - b);
    if (ids.length !== sorted.length || ids.some((id, i) => id !== sorted[i])) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'device list must be sorted, no repeats');
    }
    if (ids.length > MAX_LISTED_DEVICES) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, `more than ${MAX_LISTED_DEVICES} devices`);
    }
    const w = new Writer().str(checkUsername(this.username)).varint(this.version);
    w.varint(this.issuedAtMs).varint(this.devices.length);
    for (const device of this.devices) {
      checkDeviceId(device.deviceId);
      w.varint(device.deviceId).varint(device.registrationId);
      w.fixed(device.certificateSha256, 32);
    }
    return w.getValue();
  }

  encode() {
    return concatBytes(this.body(), this.signature);
  }

  /** @param {Uint8Array} data */
  static decode(data) {
    const r = new Reader(data);
    const username = checkUsername(r.str('username', MAX_USERNAME_BYTES));
    const version = r.varint64('version');
    const issuedAtMs = r.varint64('issued_at_ms');
    const count = r.varint('device count', MAX_LISTED_DEVICES);
    const devices = [];
    for (let i = 0; i < count; i++) {
      const deviceId = r.varint('device_id', MAX_DEVICE_ID);
      checkDeviceId(deviceId);
      const registrationId = r.varint('registration_id', MAX_REGISTRATION_ID);
      devices.push(new ListedDevice(deviceId, registrationId, r.fixed(32, 'certificate')));
    }
    const signature = r.fixed(p.ED25519_SIGNATURE_BYTES, 'device list signature');
    r.end('device list');
    const signed = new SignedDeviceList({ username, version, issuedAtMs, devices, signature });
    signed.body(); // checks the ordering rule
    return signed;
  }

  /**
   * Sign the list of `certificates` (in any order) with the account key.
   * @param {AccountIdentity} account
   * @param {string} username
   * @param {Uint64} version
   * @param {Uint64} issuedAtMs
   * @param {readonly DeviceCertificate[]} certificates
   */
  static sign(account, username, version, issuedAtMs, certificates) {
    const devices = [...certificates]
      .sort((a, b) => a.deviceId - b.deviceId)
      .map((c) => new ListedDevice(c.deviceId, c.registrationId, certificateDigest(c)));
    const unsigned = new SignedDeviceList({ username, version, issuedAtMs, devices, signature: new Uint8Array(0) });
    const signature = account.sign(signedPayload(LABEL_DEVICE_LIST, unsigned.body()));
    return new SignedDeviceList({ username, version, issuedAtMs, devices, signature });
  }

  /**
   * Throw BAD_SIGNATURE unless this account key signed this list for `username`.
   * @param {Uint8Array} accountPublicKey
   * @param {string} username
   */
  verify(accountPublicKey, username) {
    if (this.username !== username) {
      throw new ProtocolError(
        ErrorCode.BAD_SIGNATURE,
        `device list is for ${JSON.stringify(this.username)}, not ${JSON.stringify(username)}`,
      );
    }
    p.ed25519Verify(accountPublicKey, signedPayload(LABEL_DEVICE_LIST, this.body()), this.signature);
  }

  /**
   * Whether this list names exactly this certificate.
   * @param {DeviceCertificate} certificate
   */
  admits(certificate) {
    const digest = certificateDigest(certificate);
    return this.devices.some(
      (d) =>
        d.deviceId === certificate.deviceId &&
        d.registrationId === certificate.registrationId &&
        p.constantTimeEqual(d.certificateSha256, digest),
    );
  }
}

/**
 * The outcome of checking what a server says an account's devices are.
 * @typedef {{deviceList: SignedDeviceList,
 *   accepted: DeviceCertificate[],
 *   refused: number[],
 *   unlistedMissing: number[]}} CheckedDevices
 * `accepted`: certified and listed, encrypt to these; `refused`: device ids served without
 * a valid certificate or listing; `unlistedMissing`: listed, but the server did not serve
 * them.
 */

/**
 * Verify a served device set against the account's signed list.
 *
 * Throws BAD_SIGNATURE for a list not signed by the account key and INVALID_VALUE for a
 * list older than one already seen (a server replaying a list from before a revocation).
 * Devices whose certificate does not verify or that the list does not name are returned
 * in `refused`: the caller must not encrypt to them and should warn the user.
 * @param {Uint8Array} accountPublicKey
 * @param {string} username
 * @param {SignedDeviceList} deviceList
 * @param {readonly DeviceCertificate[]} certificates
 * @param {Uint64} [newestSeenVersion]
 * @returns {CheckedDevices}
 */
export function checkDevices(accountPublicKey, username, deviceList, certificates, newestSeenVersion = 0) {
  deviceList.verify(accountPublicKey, username);
  if (deviceList.version < newestSeenVersion) {
    throw new ProtocolError(
      ErrorCode.INVALID_VALUE,
      `device list version ${deviceList.version} is older than version ` +
        `${newestSeenVersion} already seen for ${username}`,
    );
  }
  /** @type {DeviceCertificate[]} */
  const accepted = [];
  /** @type {number[]} */
  const refused = [];
  for (const certificate of certificates) {
    try {
      certificate.verify(accountPublicKey);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      refused.push(certificate.deviceId);
      continue;
    }
    if (deviceList.admits(certificate)) accepted.push(certificate);
    else refused.push(certificate.deviceId);
  }
  const served = new Set(certificates.map((c) => c.deviceId));
  const unlistedMissing = deviceList.devices.map((d) => d.deviceId).filter((id) => !served.has(id));
  return { deviceList, accepted, refused: refused.sort((a, b) => a - b), unlistedMissing };
}
