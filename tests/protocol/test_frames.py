"""The frames of section 17.3: SEND's EXPIRES flag and GROUP_SEND (protocol/frames.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ErrorCode
from protocol.frames import (
    DeviceMessage,
    FrameType,
    GroupSend,
    Send,
    SendFlags,
    decode_frame,
    encode_frame,
)
from protocol.limits import MAX_CIPHERTEXT_BYTES, MAX_TTL_SECONDS

from .helpers import WIRE_SETTINGS, raises_code

GROUP = bytes(range(16))
DIGEST = bytes(range(0xA0, 0xB0))
ONE = (DeviceMessage(1, 2222, b"\x11payload"),)


def test_group_send_example_of_the_spec() -> None:
    frame = GroupSend(9, GROUP, DIGEST, b"\x13" + b"g" * 20)
    encoded = encode_frame(frame)
    assert encoded.hex().startswith("010b09" + GROUP.hex() + "00" + DIGEST.hex() + "15" + "13")
    assert decode_frame(encoded) == frame
    assert frame.type is FrameType.GROUP_SEND


@pytest.mark.parametrize("ttl", [1, 127, 86_400, MAX_TTL_SECONDS])
def test_expires_round_trips_in_send_and_group_send(ttl: int) -> None:
    for frame in (
        Send(3, "bob", ONE, SendFlags.EXPIRES, ttl),
        Send(3, "bob", ONE, SendFlags.EXPIRES | SendFlags.EPHEMERAL, ttl),
        GroupSend(3, GROUP, DIGEST, b"\x13x", SendFlags.EXPIRES, ttl),
    ):
        assert decode_frame(encode_frame(frame)) == frame


def test_without_expires_nothing_changes() -> None:
    frame = Send(8, "bob", (DeviceMessage(1, 2222, b"typing"),), SendFlags.EPHEMERAL)
    assert encode_frame(frame).hex() == "01010803626f62010101ae1106747970696e67"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (Send(3, "bob", ONE, SendFlags.EXPIRES), ErrorCode.INVALID_VALUE),
        (Send(3, "bob", ONE, SendFlags.NONE, 60), ErrorCode.INVALID_VALUE),
        (Send(3, "bob", ONE, SendFlags.EXPIRES, 0), ErrorCode.INVALID_VALUE),
        (Send(3, "bob", ONE, SendFlags.EXPIRES, MAX_TTL_SECONDS + 1), ErrorCode.TOO_LARGE),
        (GroupSend(0, GROUP, DIGEST, b"\x13"), ErrorCode.INVALID_VALUE),
        (GroupSend(1, GROUP[:15], DIGEST, b"\x13"), ErrorCode.INVALID_VALUE),
        (GroupSend(1, GROUP, DIGEST + b"\x00", b"\x13"), ErrorCode.INVALID_VALUE),
        (GroupSend(1, GROUP, DIGEST, b""), ErrorCode.INVALID_VALUE),
        (
            GroupSend(1, GROUP, DIGEST, b"\x13" * (MAX_CIPHERTEXT_BYTES + 1)),
            ErrorCode.CIPHERTEXT_TOO_LARGE,
        ),
        (GroupSend(1, GROUP, DIGEST, b"\x13", SendFlags(4)), ErrorCode.INVALID_VALUE),
        (GroupSend(1, GROUP, DIGEST, b"\x13", SendFlags.EXPIRES), ErrorCode.INVALID_VALUE),
    ],
)
def test_the_encoder_refuses_what_the_decoder_refuses(
    frame: Send | GroupSend, code: ErrorCode
) -> None:
    with raises_code(code):
        encode_frame(frame)


@WIRE_SETTINGS
@given(
    request_id=st.integers(1, 2**63 - 1),
    group_id=st.binary(min_size=16, max_size=16),
    digest=st.binary(min_size=16, max_size=16),
    payload=st.binary(min_size=1, max_size=200),
    ephemeral=st.booleans(),
    ttl=st.none() | st.integers(1, MAX_TTL_SECONDS),
)
def test_group_send_round_trip(
    request_id: int,
    group_id: bytes,
    digest: bytes,
    payload: bytes,
    ephemeral: bool,
    ttl: int | None,
) -> None:
    flags = SendFlags.EPHEMERAL if ephemeral else SendFlags.NONE
    if ttl is not None:
        flags |= SendFlags.EXPIRES
    frame = GroupSend(request_id, group_id, digest, payload, flags, ttl)
    assert decode_frame(encode_frame(frame)) == frame
