"""The one error-code enum of Sealpost, and the one exception the protocol raises.

Every failure a client or the server can report has a stable code here. The number is
what travels in binary frames (an ERROR frame carries it as a varint); the lower-case
name (``ErrorCode.BAD_SIGNATURE.slug == "bad_signature"``) is what the REST API puts in
``{"code": ..., "message": ...}``. Codes are never renumbered or reused: add new ones at
the end of their block. The JavaScript client's copy is checked against
``protocol/vectors/error_codes.json``, which ``scripts/make_vectors.py`` writes from this
enum.

Blocks: 1xx wire format, 2xx crypto and sessions, 3xx accounts/devices/keys,
4xx relay and queues, 5xx attachments and groups, 6xx compliance, 9xx generic.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class ErrorCode(IntEnum):
    # 1xx: the bytes themselves are wrong.
    MALFORMED = 100  # structurally invalid input that no more specific code describes
    TRUNCATED = 101  # input ended before a field was complete
    TRAILING_BYTES = 102  # bytes left over after a complete value
    NON_MINIMAL_VARINT = 103  # a varint with redundant continuation bytes
    VARINT_OVERFLOW = 104  # a varint above 2**63 - 1
    INVALID_UTF8 = 105
    UNSUPPORTED_VERSION = 106  # a version this implementation does not speak
    UNKNOWN_TYPE = 107  # an unknown frame, message or content type
    TOO_LARGE = 108  # a frame, field or list above its limit
    INVALID_PADDING = 109
    INVALID_VALUE = 110  # a field out of its allowed range (zero id, bad flag)

    # 2xx: cryptography and session state.
    BAD_KEY = 200  # a key of the wrong length or a low-order / invalid point
    BAD_SIGNATURE = 201
    DECRYPT_FAILED = 202  # AEAD authentication failed: tampered, truncated or misrouted
    DUPLICATE_MESSAGE = 203  # this message was already decrypted (a replay)
    TOO_MANY_SKIPPED = 204  # skips more keys than MAX_JUMP, or its skipped key was evicted
    NO_SESSION = 205  # a ratchet message for a session we do not have
    UNTRUSTED_IDENTITY = 206  # the peer's account identity key changed
    PREKEY_NOT_FOUND = 207  # a prekey message names a prekey we no longer have
    INVALID_BUNDLE = 208  # a prekey bundle that fails verification
    UNSIGNED_DEVICE = 209  # a device its account's signed device list does not name

    # 3xx: accounts, devices and keys (REST API).
    UNAUTHORIZED = 300  # missing, wrong or revoked credentials
    FORBIDDEN = 301  # authenticated, but not allowed to touch this resource
    INVALID_USERNAME = 302
    USERNAME_TAKEN = 303
    WEAK_PASSWORD = 304
    UNKNOWN_ACCOUNT = 305
    UNKNOWN_DEVICE = 306
    DEVICE_ID_TAKEN = 307
    DEVICE_LIMIT_REACHED = 308
    PREKEY_BATCH_TOO_LARGE = 309
    PREKEY_STORE_FULL = 310
    DUPLICATE_PREKEY_ID = 311
    NO_PREKEYS = 312  # the device has neither a one-time nor a last-resort KEM prekey
    LINK_EXPIRED = 313
    LINK_NOT_FOUND = 314

    # 4xx: the relay.
    DEVICE_MISMATCH = 400  # the send did not address exactly the recipient's devices
    CIPHERTEXT_TOO_LARGE = 401
    QUEUE_FULL = 402
    RATE_LIMITED = 403
    UNKNOWN_ENVELOPE = 404  # an ack for an envelope this device does not hold
    BAD_ORIGIN = 405
    SERVER_BUSY = 406

    # 5xx: attachments and groups.
    ATTACHMENT_TOO_LARGE = 500
    UNKNOWN_ATTACHMENT = 501
    ATTACHMENT_EXPIRED = 502
    UPLOAD_OFFSET_MISMATCH = 503
    UNKNOWN_GROUP = 504
    NOT_A_MEMBER = 505
    GROUP_TOO_LARGE = 506
    STALE_ROSTER = 507  # a group send's roster digest is not the group's devices now
    UPLOAD_INCOMPLETE = 508  # a blob downloaded before its upload finished

    # 6xx: compliance.
    CONSENT_REQUIRED = 600
    UNDER_AGE = 601
    INVALID_POLICY = 602
    LEGAL_HOLD = 603
    E2EE_NOT_ALLOWED = 604

    # 9xx: generic.
    INVALID_REQUEST = 900  # a request whose fields fail validation
    NOT_FOUND = 901
    INTERNAL = 999

    @property
    def slug(self) -> str:
        """The name used by the REST API: ``bad_signature``."""
        return self.name.lower()

    @classmethod
    def from_slug(cls, slug: str) -> ErrorCode:
        return cls[slug.upper()]


class ProtocolError(Exception):
    """The only exception the protocol package raises on bad input or failed crypto.

    ``message`` names the offending field or value (never a key, plaintext or ciphertext).
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.slug}: {message}")
        self.code = code
        self.message = message
