"""Encrypted message encodings: what the relay carries as an opaque payload.

Every encrypted message starts with one byte ``version << 4 | kind`` so that a receiver can
tell, before any crypto, whether it speaks this version (docs/protocol.md, "Messages").

    RatchetMessage (kind 1)
        0x11 | ratchet_key[32] | previous_chain_length varint | counter varint |
        ciphertext (the rest: XChaCha20-Poly1305 output, tag included)

    PreKeyMessage (kind 2): a RatchetMessage plus what the recipient needs to derive the
    session, sent until the sender has received a reply.
        0x12 | sender_account_key[32] | sender device certificate |
        base_key[32] | signed_prekey_id varint | one_time_prekey_id varint (0 = none) |
        kem_prekey_id varint | kem_ciphertext[1088] | RatchetMessage (the rest)

    SenderKeyMessage (kind 3): a group message, in senderkeys.py.

The header of a RatchetMessage (everything before the ciphertext) is bound into the AEAD
as associated data, so a header cannot be changed without the message being rejected.
ratchet_key and base_key, like every X25519 public key read from the wire, must have the
top bit of their last byte clear (``keys.read_x25519_public_key``), else BAD_KEY.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from . import primitives as p
from .encoding import Reader, Writer
from .errors import ErrorCode, ProtocolError
from .keys import MAX_KEY_ID, DeviceCertificate, read_x25519_public_key
from .limits import PROTOCOL_VERSION

MAX_COUNTER = 0xFFFF_FFFF


class MessageKind(IntEnum):
    RATCHET = 1
    PREKEY = 2
    SENDER_KEY = 3  # a group message (senderkeys.py, docs/protocol.md 17.2)


def message_type_byte(kind: MessageKind) -> int:
    return (PROTOCOL_VERSION << 4) | kind


def read_type_byte(reader: Reader, expected: MessageKind) -> None:
    byte = reader.u8("message type")
    version, kind = byte >> 4, byte & 0x0F
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"message version {version}; this client speaks {PROTOCOL_VERSION}",
        )
    if kind != expected:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"message kind {kind}, expected {expected}")


def peek_kind(data: bytes) -> MessageKind:
    """The kind of an encrypted message, after checking its version."""
    if not data:
        raise ProtocolError(ErrorCode.TRUNCATED, "empty message")
    version, kind = data[0] >> 4, data[0] & 0x0F
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"message version {version}; this client speaks {PROTOCOL_VERSION}",
        )
    try:
        return MessageKind(kind)
    except ValueError:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message kind {kind}") from None


@dataclass(frozen=True, slots=True)
class RatchetMessage:
    ratchet_key: bytes
    previous_chain_length: int
    counter: int
    ciphertext: bytes

    def header(self) -> bytes:
        return (
            Writer()
            .u8(message_type_byte(MessageKind.RATCHET))
            .fixed(self.ratchet_key, p.X25519_KEY_BYTES)
            .varint(self.previous_chain_length)
            .varint(self.counter)
            .getvalue()
        )

    def encode(self) -> bytes:
        return self.header() + self.ciphertext

    @classmethod
    def decode(cls, data: bytes) -> RatchetMessage:
        r = Reader(data)
        read_type_byte(r, MessageKind.RATCHET)
        ratchet_key = read_x25519_public_key(r, "ratchet_key")
        previous = r.varint("previous_chain_length", maximum=MAX_COUNTER)
        counter = r.varint("counter", maximum=MAX_COUNTER)
        ciphertext = r.rest()
        if len(ciphertext) < p.AEAD_TAG_BYTES:
            raise ProtocolError(
                ErrorCode.TRUNCATED,
                f"ciphertext of {len(ciphertext)} bytes is shorter than its tag",
            )
        return cls(ratchet_key, previous, counter, ciphertext)


@dataclass(frozen=True, slots=True)
class PreKeyMessage:
    sender_account_key: bytes
    sender_certificate: DeviceCertificate
    base_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int
    kem_ciphertext: bytes
    message: RatchetMessage

    def encode(self) -> bytes:
        return (
            Writer()
            .u8(message_type_byte(MessageKind.PREKEY))
            .fixed(self.sender_account_key, p.ED25519_PUBLIC_BYTES)
            .raw(self.sender_certificate.encode())
            .fixed(self.base_key, p.X25519_KEY_BYTES)
            .varint(self.signed_prekey_id)
            .varint(self.one_time_prekey_id or 0)
            .varint(self.kem_prekey_id)
            .fixed(self.kem_ciphertext, p.MLKEM768_CIPHERTEXT_BYTES)
            .raw(self.message.encode())
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> PreKeyMessage:
        r = Reader(data)
        read_type_byte(r, MessageKind.PREKEY)
        account_key = r.fixed(p.ED25519_PUBLIC_BYTES, "sender_account_key")
        certificate = DeviceCertificate.read(r)
        base_key = read_x25519_public_key(r, "base_key")
        signed_prekey_id = r.varint("signed_prekey_id", maximum=MAX_KEY_ID)
        one_time_prekey_id = r.varint("one_time_prekey_id", maximum=MAX_KEY_ID)
        kem_prekey_id = r.varint("kem_prekey_id", maximum=MAX_KEY_ID)
        if signed_prekey_id == 0 or kem_prekey_id == 0:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "prekey ids must not be 0")
        kem_ciphertext = r.fixed(p.MLKEM768_CIPHERTEXT_BYTES, "kem_ciphertext")
        message = RatchetMessage.decode(r.rest())
        return cls(
            account_key,
            certificate,
            base_key,
            signed_prekey_id,
            one_time_prekey_id or None,
            kem_prekey_id,
            kem_ciphertext,
            message,
        )
