"""What is inside an encrypted message: typed content, then padding.

    content = type u8 | sent_at varint (milliseconds since the Unix epoch) | body
    plaintext = pad(content)

The sender's clock goes inside the encryption so the server can neither read nor alter it.
A message is named by its sender and its sent_at (as in Signal), which is how receipts
refer to the messages they acknowledge. Bodies by type:

    TEXT (1)     the UTF-8 text itself, to the end (its length is known once the padding
                 is removed)
    RECEIPT (2)  kind u8 (1 delivered, 2 read) | count varint (1..MAX_RECEIPT_ITEMS) |
                 count × sent_at varint of the acknowledged messages

Receipts are end-to-end encrypted like any message: the server never learns that a
message was delivered or read. Later types (attachments, group control) add their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .encoding import Reader, Writer, encode_utf8
from .errors import ErrorCode, ProtocolError
from .limits import MAX_TEXT_BYTES
from .padding import pad, unpad

MAX_RECEIPT_ITEMS = 100


class ContentType(IntEnum):
    TEXT = 1
    RECEIPT = 2


class ReceiptKind(IntEnum):
    DELIVERED = 1
    READ = 2


@dataclass(frozen=True, slots=True)
class Text:
    body: str
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class Receipt:
    kind: ReceiptKind
    message_sent_at_ms: tuple[int, ...]  # the acknowledged messages' sent_at
    sent_at_ms: int


Content = Text | Receipt


def encode_content(content: Content, hide_length: bool = False) -> bytes:
    w = Writer()
    match content:
        case Text():
            body = encode_utf8(content.body)
            if len(body) > MAX_TEXT_BYTES:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"text of {len(body)} bytes is above {MAX_TEXT_BYTES}"
                )
            w.u8(ContentType.TEXT).varint(content.sent_at_ms).raw(body)
        case Receipt():
            items = content.message_sent_at_ms
            if not 1 <= len(items) <= MAX_RECEIPT_ITEMS:
                raise ProtocolError(
                    ErrorCode.INVALID_VALUE, f"a receipt names 1..{MAX_RECEIPT_ITEMS} messages"
                )
            w.u8(ContentType.RECEIPT).varint(content.sent_at_ms).u8(ReceiptKind(content.kind))
            w.varint(len(items))
            for sent_at in items:
                w.varint(sent_at)
    return pad(w.getvalue(), hide_length)


def decode_content(plaintext: bytes) -> Content:
    r = Reader(unpad(plaintext))
    kind = r.u8("content type")
    sent_at = r.varint("sent_at")
    match kind:
        case ContentType.TEXT:
            body = r.rest()
            if len(body) > MAX_TEXT_BYTES:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"text of {len(body)} bytes")
            try:
                return Text(body.decode("utf-8"), sent_at)
            except UnicodeDecodeError:
                raise ProtocolError(ErrorCode.INVALID_UTF8, "text is not valid UTF-8") from None
        case ContentType.RECEIPT:
            raw_kind = r.u8("receipt kind")
            try:
                receipt_kind = ReceiptKind(raw_kind)
            except ValueError:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_TYPE, f"unknown receipt kind {raw_kind}"
                ) from None
            count = r.varint("receipt count", maximum=MAX_RECEIPT_ITEMS)
            if count == 0:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "a receipt names no message")
            items = tuple(r.varint("receipt sent_at") for _ in range(count))
            r.end("receipt")
            return Receipt(receipt_kind, items, sent_at)
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown content type {kind}")
