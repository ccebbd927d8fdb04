"""Properties of the primitive encodings (protocol/encoding.py) and padding (padding.py)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from protocol.content import Text, encode_content
from protocol.encoding import MAX_VARINT, Reader, Writer, encode_varint
from protocol.errors import ErrorCode, ProtocolError
from protocol.padding import TERMINATOR, pad, padme_length, unpad

from .helpers import WIRE_SETTINGS, raises_code

varints = st.integers(min_value=0, max_value=MAX_VARINT)


def decode_varint(data: bytes) -> int:
    reader = Reader(data)
    value = reader.varint("v")
    reader.end("v")
    return value


# --- varint -----------------------------------------------------------------------------


@WIRE_SETTINGS
@given(varints)
@example(0)
@example(127)
@example(128)
@example(MAX_VARINT)
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded) == value
    assert len(encoded) == max(1, (value.bit_length() + 6) // 7)
    assert len(encoded) <= 9
    # Minimal form: the last byte is the only one without the continuation bit, and it is
    # not zero unless the value is zero.
    assert all(byte & 0x80 for byte in encoded[:-1])
    assert not encoded[-1] & 0x80
    assert encoded[-1] != 0 or value == 0


@pytest.mark.parametrize("value", [-1, MAX_VARINT + 1, 2**64])
def test_encode_varint_out_of_range(value: int) -> None:
    with raises_code(ErrorCode.VARINT_OVERFLOW):
        encode_varint(value)


@WIRE_SETTINGS
@given(varints, st.integers(min_value=1, max_value=8))
def test_non_minimal_varint_rejected(value: int, extra: int) -> None:
    """Any value padded with redundant 0x80 ... 0x00 continuation bytes is refused."""
    minimal = encode_varint(value)
    assume(len(minimal) + extra <= 9)
    padded = bytes(minimal[:-1]) + bytes((minimal[-1] | 0x80,)) + b"\x80" * (extra - 1) + b"\x00"
    with raises_code(ErrorCode.NON_MINIMAL_VARINT):
        decode_varint(padded)


@pytest.mark.parametrize("data", [b"\x80\x00", b"\xff\x00", b"\x80\x80\x80\x00"])
def test_non_minimal_varint_examples(data: bytes) -> None:
    with raises_code(ErrorCode.NON_MINIMAL_VARINT):
        decode_varint(data)


@WIRE_SETTINGS
@given(st.binary(min_size=9, max_size=12))
def test_varint_longer_than_nine_bytes_overflows(tail: bytes) -> None:
    data = bytes(byte | 0x80 for byte in tail[:9]) + tail[9:]
    with raises_code(ErrorCode.VARINT_OVERFLOW):
        Reader(data).varint("v")


def test_varint_nine_bytes_is_the_maximum() -> None:
    assert encode_varint(MAX_VARINT) == b"\xff" * 8 + b"\x7f"
    assert decode_varint(b"\xff" * 8 + b"\x7f") == MAX_VARINT
    with raises_code(ErrorCode.VARINT_OVERFLOW):
        decode_varint(b"\xff" * 9 + b"\x01")


@WIRE_SETTINGS
@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40))
def test_varint_maximum_gives_too_large(value: int, maximum: int) -> None:
    reader = Reader(encode_varint(value))
    if value > maximum:
        with raises_code(ErrorCode.TOO_LARGE):
            reader.varint("v", maximum=maximum)
    else:
        assert reader.varint("v", maximum=maximum) == value


@WIRE_SETTINGS
@given(st.binary(max_size=8).map(lambda b: bytes(x | 0x80 for x in b)))
def test_unterminated_varint_is_truncated(data: bytes) -> None:
    with raises_code(ErrorCode.TRUNCATED):
        Reader(data).varint("v")


# --- Reader on anything -------------------------------------------------------------------


@WIRE_SETTINGS
@given(
    st.binary(max_size=64),
    st.lists(
        st.sampled_from(["u8", "varint", "fixed", "bytes", "str", "end", "rest"]), max_size=12
    ),
    st.integers(min_value=0, max_value=40),
)
def test_reader_raises_only_protocol_error(data: bytes, ops: list[str], size: int) -> None:
    reader = Reader(data)
    consumed = 0
    for op in ops:
        before = reader.remaining
        try:
            match op:
                case "u8":
                    assert 0 <= reader.u8("x") <= 255
                case "varint":
                    assert 0 <= reader.varint("x", maximum=2**32) <= 2**32
                case "fixed":
                    assert len(reader.fixed(size, "x")) == size
                case "bytes":
                    assert len(reader.bytes_("x", maximum=size)) <= size
                case "str":
                    assert len(reader.str_("x", maximum=size).encode()) <= size
                case "end":
                    reader.end("x")
                    assert reader.remaining == 0
                case "rest":
                    assert reader.rest() == data[consumed:]
        except ProtocolError as exc:
            assert isinstance(exc.code, ErrorCode)
            assert exc.code in {
                ErrorCode.TRUNCATED,
                ErrorCode.TRAILING_BYTES,
                ErrorCode.NON_MINIMAL_VARINT,
                ErrorCode.VARINT_OVERFLOW,
                ErrorCode.TOO_LARGE,
                ErrorCode.INVALID_UTF8,
            }
        assert 0 <= reader.remaining <= before  # never reads past the buffer
        consumed = len(data) - reader.remaining


# --- bytes_ / str_ ------------------------------------------------------------------------


@WIRE_SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=100)), max_size=8))
def test_writer_reader_bytes_and_str_round_trip(fields: list[bytes | str]) -> None:
    writer = Writer()
    for item in fields:
        if isinstance(item, bytes):
            writer.bytes_(item)
        else:
            writer.str_(item)
    reader = Reader(writer.getvalue())
    for item in fields:
        if isinstance(item, bytes):
            assert reader.bytes_("b", maximum=300) == item
        else:
            assert reader.str_("s", maximum=400) == item
    reader.end("fields")


@WIRE_SETTINGS
@given(st.binary(min_size=1, max_size=50))
def test_bytes_field_above_maximum_is_too_large(data: bytes) -> None:
    with raises_code(ErrorCode.TOO_LARGE):
        Reader(Writer().bytes_(data).getvalue()).bytes_("b", maximum=len(data) - 1)


@pytest.mark.parametrize("raw", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
def test_invalid_utf8_rejected(raw: bytes) -> None:
    with raises_code(ErrorCode.INVALID_UTF8):
        Reader(Writer().bytes_(raw).getvalue()).str_("s", maximum=100)


def test_writer_str_rejects_lone_surrogate_with_protocol_error() -> None:
    """A Python str may hold a lone surrogate (JSON "\\ud800", surrogateescape); it has no
    UTF-8 form. ProtocolError is documented as the only exception the package raises on bad
    input, so the Writer must not leak UnicodeEncodeError."""
    with raises_code(ErrorCode.INVALID_UTF8):
        Writer().str_("a\ud800b")


def test_encode_content_rejects_lone_surrogate_with_protocol_error() -> None:
    """The same for message text: encode_content encodes the body itself."""
    with raises_code(ErrorCode.INVALID_UTF8):
        encode_content(Text("x\udc80", 0))


@pytest.mark.parametrize("value", [-1, 256])
def test_writer_u8_range(value: int) -> None:
    with raises_code(ErrorCode.INVALID_VALUE):
        Writer().u8(value)


def test_writer_fixed_length_checked() -> None:
    with raises_code(ErrorCode.INVALID_VALUE):
        Writer().fixed(b"abc", 4)


def test_reader_end_reports_trailing_bytes() -> None:
    reader = Reader(b"\x01\x02")
    reader.u8("x")
    with raises_code(ErrorCode.TRAILING_BYTES):
        reader.end("x")


# --- Padmé --------------------------------------------------------------------------------

lengths = st.integers(min_value=1, max_value=2**40)


def padme_low_bits(length: int) -> int:
    """E - S of the paper: how many low bits Padmé zeroes for this length."""
    exponent = length.bit_length() - 1
    return exponent - exponent.bit_length()


@WIRE_SETTINGS
@given(lengths)
@example(129)  # the worst case of the whole range, see below
def test_padme_properties(length: int) -> None:
    padded = padme_length(length)
    assert padded >= length
    assert padme_length(padded) == padded  # idempotent: a padded length is a bucket
    low_bits = padme_low_bits(length) if length >= 2 else 0
    assert padded % (1 << low_bits) == 0
    assert padded - length < (1 << low_bits)  # rounds up to the *next* bucket, no further
    # Overhead: (2**(E-S) - 1) / L < 2**-S <= 1/E, and never more than 12%.
    assert Fraction(padded - length, length) <= Fraction(15, 129)
    if length >= 2:
        exponent = length.bit_length() - 1
        assert Fraction(padded - length, length) < Fraction(1, exponent or 1)


def test_padme_worst_case_overhead_is_11_63_percent() -> None:
    """The PURBs paper describes Padmé's overhead as "at most about 12%" (the docstring of
    padding.py says the same). Exhaustively, the worst relative overhead of the algorithm
    as specified is 15/129 ≈ 11.63% at L = 129 (E = 7, S = 3, 4 low bits zeroed), which
    is within 12% but above the often-quoted 11.11% (1/9, at L = 9)."""
    worst = max((Fraction(padme_length(n) - n, n), n) for n in range(1, 1 << 17))
    assert worst == (Fraction(15, 129), 129)
    assert float(worst[0]) < 0.12
    assert Fraction(padme_length(9) - 9, 9) == Fraction(1, 9)
    assert max(Fraction(padme_length(n) - n, n) for n in range(16, 1 << 17)) < Fraction(12, 100)
    # Far fewer distinct sizes than lengths: the point of Padmé.
    assert len({padme_length(n) for n in range(1, 1 << 16)}) < 1500


@WIRE_SETTINGS
@given(lengths, lengths)
def test_padme_monotonic(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert padme_length(low) <= padme_length(high)


def test_padme_monotonic_exhaustive_small() -> None:
    sizes = [padme_length(n) for n in range(1, 1 << 14)]
    assert sizes == sorted(sizes)
    assert padme_length(1) == 1


@WIRE_SETTINGS
@given(st.binary(max_size=2000), st.booleans())
def test_pad_unpad_round_trip(data: bytes, hide_length: bool) -> None:
    padded = pad(data, hide_length)
    assert unpad(padded) == data
    assert padded[len(data)] == TERMINATOR
    assert set(padded[len(data) + 1 :]) <= {0}
    if hide_length:
        assert len(padded) == padme_length(len(data) + 1)
    else:
        assert len(padded) == len(data) + 1


@WIRE_SETTINGS
@given(st.binary(max_size=300))
def test_unpad_garbage_raises_only_invalid_padding(data: bytes) -> None:
    try:
        result = unpad(data)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.INVALID_PADDING
        stripped = data.rstrip(b"\x00")
        assert not stripped or stripped[-1] != TERMINATOR
    else:
        assert data.rstrip(b"\x00") == result + bytes((TERMINATOR,))


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00", b"abc", b"abc\x81\x00", b"\x7f"])
def test_unpad_without_terminator(data: bytes) -> None:
    with raises_code(ErrorCode.INVALID_PADDING):
        unpad(data)
