"""What is inside an encrypted message: typed content, then padding.

    content = type u8 | sent_at varint (milliseconds since the Unix epoch) | body
    plaintext = pad(content)

The sender's clock goes inside the encryption so the server can neither read nor alter it.
TEXT's body is the UTF-8 text itself, to the end (its length is known once the padding is
removed). Later content types (receipts, attachments, group control) add their own bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .encoding import Reader, Writer, encode_utf8
from .errors import ErrorCode, ProtocolError
from .limits import MAX_TEXT_BYTES
from .padding import pad, unpad


class ContentType(IntEnum):
    TEXT = 1


@dataclass(frozen=True, slots=True)
class Text:
    body: str
    sent_at_ms: int


Content = Text


def encode_content(content: Content, hide_length: bool = False) -> bytes:
    body = encode_utf8(content.body)
    if len(body) > MAX_TEXT_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"text of {len(body)} bytes is above {MAX_TEXT_BYTES}"
        )
    encoded = Writer().u8(ContentType.TEXT).varint(content.sent_at_ms).raw(body).getvalue()
    return pad(encoded, hide_length)


def decode_content(plaintext: bytes) -> Content:
    r = Reader(unpad(plaintext))
    kind = r.u8("content type")
    if kind != ContentType.TEXT:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown content type {kind}")
    sent_at = r.varint("sent_at")
    body = r.rest()
    if len(body) > MAX_TEXT_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"text of {len(body)} bytes")
    try:
        return Text(body.decode("utf-8"), sent_at)
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.INVALID_UTF8, "text is not valid UTF-8") from None
