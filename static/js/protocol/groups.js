// @ts-check
/**
 * Groups: their ids and the roster digest (protocol/groups.py; docs/protocol.md, 17.1).
 *
 * A group is named by 16 random bytes, written as 32 lower-case hex digits in the REST API
 * and the CLI. Its **roster** is every device of every member, as
 * (username, device_id, registration_id); sender and relay both compute
 *
 *     roster_digest = SHA-256("Sealpost v1 roster" | 0x00 | count varint |
 *                             count × (username str | device_id varint |
 *                                      registration_id varint))[0:16]
 *
 * with the entries sorted by (username as bytes, device_id). A GROUP_SEND carries the
 * digest of the roster the sender distributed its sender key to; the relay refuses it with
 * STALE_ROSTER when the group's devices have changed since, so a removed device can never
 * be skipped over by accident: the sender reconciles (a device left: a new sender key for
 * everyone left; a device joined: the current key for it) and sends again.
 */

import * as p from './primitives.js';
import { Writer, toHex, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { checkUsername } from './identifiers.js';
import { MAX_REGISTRATION_ID, checkDeviceId } from './keys.js';

/** @import { Rng } from './primitives.js' */

export const GROUP_ID_BYTES = 16;
export const ROSTER_DIGEST_BYTES = 16;
export const LABEL_ROSTER = utf8Encode('Sealpost v1 roster');
// Members (accounts) per group, enforced by the server (GROUP_TOO_LARGE); also the bound on
// a GROUP_UPDATE's target list.
export const MAX_GROUP_MEMBERS = 1_000;

/** One device of one member of a group. */
export class RosterEntry {
  /**
   * @param {string} username
   * @param {number} deviceId
   * @param {number} registrationId
   */
  constructor(username, deviceId, registrationId) {
    /** @readonly */ this.username = username;
    /** @readonly */ this.deviceId = deviceId;
    /** @readonly */ this.registrationId = registrationId;
    Object.freeze(this);
  }
}

/**
 * Order of the roster: by username (compared as bytes; a checked username is ASCII, so
 * code units compare the same), then by device id.
 * @param {RosterEntry} a
 * @param {RosterEntry} b
 */
function compareEntries(a, b) {
  if (a.username !== b.username) return a.username < b.username ? -1 : 1;
  return a.deviceId - b.deviceId;
}

/**
 * The 16-byte digest of a roster, in any order (it is sorted here). Each entry is checked:
 * a username that is not normalised is INVALID_USERNAME, a device id outside 1..65535 or a
 * registration id outside 1..2**32 - 1 is INVALID_VALUE, and so is a device listed twice.
 * @param {Iterable<RosterEntry>} entries
 */
export function rosterDigest(entries) {
  const sorted = [...entries].sort(compareEntries);
  const w = new Writer().raw(LABEL_ROSTER).u8(0).varint(sorted.length);
  sorted.forEach((entry, index) => {
    checkUsername(entry.username);
    checkDeviceId(entry.deviceId);
    const { registrationId } = entry;
    if (!Number.isInteger(registrationId) || registrationId < 1 || registrationId > MAX_REGISTRATION_ID) {
      throw new ProtocolError(
        ErrorCode.INVALID_VALUE,
        `registration id ${registrationId} of ${entry.username} device ${entry.deviceId} is outside 1..${MAX_REGISTRATION_ID}`,
      );
    }
    if (index > 0 && compareEntries(sorted[index - 1], entry) === 0) {
      throw new ProtocolError(
        ErrorCode.INVALID_VALUE,
        `${entry.username} device ${entry.deviceId} is in the roster twice`,
      );
    }
    w.str(entry.username).varint(entry.deviceId).varint(registrationId);
  });
  return p.sha256(w.getValue()).slice(0, ROSTER_DIGEST_BYTES);
}

/**
 * A fresh random group id.
 * @param {{rng?: Rng}} [options]
 */
export function newGroupId({ rng = p.randomBytes } = {}) {
  return rng(GROUP_ID_BYTES);
}

const GROUP_ID_PATTERN = /^[0-9a-f]{32}$/;

/**
 * The inverse of `groupIdHex`: upper case, another length or a non-hex character is
 * INVALID_VALUE, so every group id has one spelling.
 * @param {string} text
 */
export function parseGroupId(text) {
  if (typeof text !== 'string' || !GROUP_ID_PATTERN.test(text)) {
    const shown = JSON.stringify(String(text).slice(0, 40));
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `group id ${shown} is not 32 lower-case hex digits`);
  }
  const out = new Uint8Array(GROUP_ID_BYTES);
  for (let i = 0; i < GROUP_ID_BYTES; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * The group id as the REST API and the CLI write it: 32 lower-case hex digits.
 * @param {Uint8Array} groupId 16 bytes, else INVALID_VALUE
 */
export function groupIdHex(groupId) {
  checkGroupId(groupId);
  return toHex(groupId);
}

/**
 * INVALID_VALUE unless `groupId` is 16 bytes.
 * @param {Uint8Array} groupId
 */
export function checkGroupId(groupId) {
  if (!(groupId instanceof Uint8Array) || groupId.length !== GROUP_ID_BYTES) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `group_id must be ${GROUP_ID_BYTES} bytes`);
  }
  return groupId;
}
