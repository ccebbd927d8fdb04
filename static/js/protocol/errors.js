// @ts-check
/**
 * The one error-code table of Sealpost, and the one exception the protocol raises.
 *
 * A copy of protocol/errors.py: the numbers travel in binary frames (an ERROR frame carries
 * one as a varint), the lower-case slugs ("bad_signature") in the REST API's
 * `{code, message}`. tests/js/vectors.test.mjs checks this table against
 * protocol/vectors/error_codes.json (written from the Python enum), entry for entry and in
 * order, so the two can never drift apart. Codes are never renumbered or reused.
 *
 * Blocks: 1xx wire format, 2xx crypto and sessions, 3xx accounts/devices/keys,
 * 4xx relay and queues, 5xx attachments and groups, 6xx compliance, 9xx generic.
 */

/** Name → number, in the order of the Python enum. */
export const ErrorCode = Object.freeze({
  // 1xx: the bytes themselves are wrong.
  MALFORMED: 100, // structurally invalid input that no more specific code describes
  TRUNCATED: 101, // input ended before a field was complete
  TRAILING_BYTES: 102, // bytes left over after a complete value
  NON_MINIMAL_VARINT: 103, // a varint with redundant continuation bytes
  VARINT_OVERFLOW: 104, // a varint above 2**63 - 1
  INVALID_UTF8: 105,
  UNSUPPORTED_VERSION: 106, // a version this implementation does not speak
  UNKNOWN_TYPE: 107, // an unknown frame, message or content type
  TOO_LARGE: 108, // a frame, field or list above its limit
  INVALID_PADDING: 109,
  INVALID_VALUE: 110, // a field out of its allowed range (zero id, bad flag)

  // 2xx: cryptography and session state.
  BAD_KEY: 200, // a key of the wrong length or a low-order / invalid point
  BAD_SIGNATURE: 201,
  DECRYPT_FAILED: 202, // AEAD authentication failed: tampered, truncated or misrouted
  DUPLICATE_MESSAGE: 203, // this message was already decrypted (a replay)
  TOO_MANY_SKIPPED: 204, // the counter jumped further than the skipped-key limit
  NO_SESSION: 205, // a ratchet message for a session we do not have
  UNTRUSTED_IDENTITY: 206, // the peer's account identity key changed
  PREKEY_NOT_FOUND: 207, // a prekey message names a prekey we no longer have
  INVALID_BUNDLE: 208, // a prekey bundle that fails verification
  UNSIGNED_DEVICE: 209, // a device its account's signed device list does not name

  // 3xx: accounts, devices and keys (REST API).
  UNAUTHORIZED: 300, // missing, wrong or revoked credentials
  FORBIDDEN: 301, // authenticated, but not allowed to touch this resource
  INVALID_USERNAME: 302,
  USERNAME_TAKEN: 303,
  WEAK_PASSWORD: 304,
  UNKNOWN_ACCOUNT: 305,
  UNKNOWN_DEVICE: 306,
  DEVICE_ID_TAKEN: 307,
  DEVICE_LIMIT_REACHED: 308,
  PREKEY_BATCH_TOO_LARGE: 309,
  PREKEY_STORE_FULL: 310,
  DUPLICATE_PREKEY_ID: 311,
  NO_PREKEYS: 312, // the device has neither a one-time nor a last-resort KEM prekey
  LINK_EXPIRED: 313,
  LINK_NOT_FOUND: 314,

  // 4xx: the relay.
  DEVICE_MISMATCH: 400, // the send did not address exactly the recipient's devices
  CIPHERTEXT_TOO_LARGE: 401,
  QUEUE_FULL: 402,
  RATE_LIMITED: 403,
  UNKNOWN_ENVELOPE: 404, // an ack for an envelope this device does not hold
  BAD_ORIGIN: 405,
  SERVER_BUSY: 406,

  // 5xx: attachments and groups.
  ATTACHMENT_TOO_LARGE: 500,
  UNKNOWN_ATTACHMENT: 501,
  ATTACHMENT_EXPIRED: 502,
  UPLOAD_OFFSET_MISMATCH: 503,
  UNKNOWN_GROUP: 504,
  NOT_A_MEMBER: 505,
  GROUP_TOO_LARGE: 506,
  STALE_ROSTER: 507,
  UPLOAD_INCOMPLETE: 508,

  // 6xx: compliance.
  CONSENT_REQUIRED: 600,
  UNDER_AGE: 601,
  INVALID_POLICY: 602,
  LEGAL_HOLD: 603,
  E2EE_NOT_ALLOWED: 604,

  // 9xx: generic.
  INVALID_REQUEST: 900, // a request whose fields fail validation
  NOT_FOUND: 901,
  INTERNAL: 999,});

/** @type {ReadonlyMap<number, string>} number → slug */
const SLUGS = new Map(Object.entries(ErrorCode).map(([name, code]) => [code, name.toLowerCase()]));

/**
 * The slug of a code (`errorSlug(201) === "bad_signature"`), or undefined for a number that
 * is not in the table (a newer peer's code).
 * @param {number} code
 * @returns {string | undefined}
 */
export function errorSlug(code) {
  return SLUGS.get(code);
}

/**
 * The code of a slug; throws a plain Error for an unknown slug (a programming error).
 * @param {string} slug
 * @returns {number}
 */
export function errorCodeFromSlug(slug) {
  const name = slug.toUpperCase();
  if (!Object.hasOwn(ErrorCode, name) || name.toLowerCase() !== slug) {
    throw new Error(`unknown error slug: ${slug}`);
  }
  return ErrorCode[/** @type {keyof typeof ErrorCode} */ (name)];
}

/**
 * The only exception the protocol modules throw on bad input or failed crypto.
 *
 * `code` is an ErrorCode number, `slug` its name, `detail` names the offending field or
 * value (never a key, plaintext or ciphertext); `message` is "slug: detail", as Python's
 * `str(ProtocolError)`.
 */
export class ProtocolError extends Error {
  /**
   * @param {number} code an ErrorCode value
   * @param {string} detail
   */
  constructor(code, detail) {
    const slug = SLUGS.get(code) ?? String(code);
    super(`${slug}: ${detail}`);
    this.name = 'ProtocolError';
    /** @type {number} */
    this.code = code;
    /** @type {string} */
    this.slug = slug;
    /** @type {string} */
    this.detail = detail;
  }
}
