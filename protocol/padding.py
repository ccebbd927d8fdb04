"""Length hiding: Padmé padding (Nikitin et al., "Reducing Metadata Leakage from Encrypted
Files and Communication with PURBs", PETS 2019, section 4).

Every plaintext ends with a 0x80 terminator followed by zero bytes (ISO/IEC 7816-4), so
unpadding needs no length field. With padding on, the total is rounded up to the Padmé
length: at most about 12% larger, and a length of L reveals only O(log log L) bits.
With padding off the cost is the single terminator byte.
"""

from __future__ import annotations

from .errors import ErrorCode, ProtocolError

TERMINATOR = 0x80


def padme_length(length: int) -> int:
    """The Padmé-rounded size for a plaintext of ``length`` bytes (length >= 1)."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1  # floor(log2 L)
    significant = exponent.bit_length()  # floor(log2 E) + 1
    low_bits = exponent - significant
    mask = (1 << low_bits) - 1
    return (length + mask) & ~mask


def pad(data: bytes, hide_length: bool) -> bytes:
    unpadded = len(data) + 1
    total = padme_length(unpadded) if hide_length else unpadded
    return data + b"\x80" + b"\x00" * (total - unpadded)


def unpad(data: bytes) -> bytes:
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != TERMINATOR:
        raise ProtocolError(ErrorCode.INVALID_PADDING, "plaintext has no padding terminator")
    return data[: end - 1]
