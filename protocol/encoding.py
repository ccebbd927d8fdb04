"""Primitive binary encodings shared by every message and frame.

* varint: unsigned LEB128, at most 9 bytes (values up to 2**63 - 1), minimal form only;
  a non-minimal varint is rejected so that every value has exactly one encoding.
* bytes: varint length, then the bytes.
* str: bytes holding UTF-8 (strict: no surrogates).
* fixed: raw bytes of a length known from the context (keys, tags).

``Reader`` raises only ``ProtocolError``; it never reads past its buffer.
"""

from __future__ import annotations

from .errors import ErrorCode, ProtocolError

MAX_VARINT: int = 2**63 - 1


def encode_varint(value: int) -> bytes:
    if value < 0 or value > MAX_VARINT:
        raise ProtocolError(ErrorCode.VARINT_OVERFLOW, f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_utf8(text: str) -> bytes:
    """Strict UTF-8: a lone surrogate is refused, not replaced, so every implementation
    produces the same bytes or the same error."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(ErrorCode.INVALID_UTF8, "text holds a lone surrogate") from None


class Writer:
    """Appends encoded fields to a buffer."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        if not 0 <= value <= 0xFF:
            raise ProtocolError(ErrorCode.INVALID_VALUE, f"u8 out of range: {value}")
        self._parts.append(bytes((value,)))
        return self

    def varint(self, value: int) -> Writer:
        self._parts.append(encode_varint(value))
        return self

    def fixed(self, data: bytes, length: int) -> Writer:
        if len(data) != length:
            raise ProtocolError(
                ErrorCode.INVALID_VALUE, f"expected {length} bytes, got {len(data)}"
            )
        self._parts.append(bytes(data))
        return self

    def raw(self, data: bytes) -> Writer:
        self._parts.append(bytes(data))
        return self

    def bytes_(self, data: bytes) -> Writer:
        self._parts.append(encode_varint(len(data)))
        self._parts.append(bytes(data))
        return self

    def str_(self, text: str) -> Writer:
        return self.bytes_(encode_utf8(text))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads encoded fields from a buffer; every method raises only ``ProtocolError``."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, length: int, what: str) -> bytes:
        if length > self.remaining:
            raise ProtocolError(
                ErrorCode.TRUNCATED,
                f"{what}: needs {length} bytes, {self.remaining} left",
            )
        start = self._pos
        self._pos += length
        return bytes(self._data[start : self._pos])

    def u8(self, what: str) -> int:
        return self._take(1, what)[0]

    def varint(self, what: str, maximum: int = MAX_VARINT) -> int:
        value = 0
        for index in range(9):
            byte = self._take(1, what)[0]
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                if byte == 0 and index > 0:
                    raise ProtocolError(ErrorCode.NON_MINIMAL_VARINT, f"{what}: non-minimal varint")
                if value > maximum:
                    raise ProtocolError(
                        ErrorCode.TOO_LARGE if maximum < MAX_VARINT else ErrorCode.VARINT_OVERFLOW,
                        f"{what}: {value} is above the limit {maximum}",
                    )
                return value
        raise ProtocolError(ErrorCode.VARINT_OVERFLOW, f"{what}: varint longer than 9 bytes")

    def fixed(self, length: int, what: str) -> bytes:
        return self._take(length, what)

    def bytes_(self, what: str, maximum: int) -> bytes:
        length = self.varint(what, maximum=maximum)
        return self._take(length, what)

    def str_(self, what: str, maximum: int) -> str:
        raw = self.bytes_(what, maximum)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.INVALID_UTF8, f"{what}: not valid UTF-8") from None

    def rest(self) -> bytes:
        return self._take(self.remaining, "rest")

    def end(self, what: str) -> None:
        if self.remaining:
            raise ProtocolError(
                ErrorCode.TRAILING_BYTES, f"{what}: {self.remaining} unexpected trailing bytes"
            )
