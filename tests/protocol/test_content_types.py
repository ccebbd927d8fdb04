"""Content types 5-11 (protocol/content.py, docs/protocol.md 17.4) and the receipt vectors
of content.json: round trips, the encoder refusing what the decoder refuses, and decoders
that raise nothing but ProtocolError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.content import (
    Attachment,
    AttachmentFlags,
    Content,
    Expiring,
    GroupAction,
    GroupUpdate,
    Receipt,
    SenderKeyDistribution,
    SentContent,
    Text,
    TimerUpdate,
    Typing,
    TypingAction,
    decode_content,
    encode_content,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.limits import MAX_TTL_SECONDS

from .helpers import WIRE_SETTINGS, raises_code

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
T = 1_795_000_000_000


def load() -> dict[str, Any]:
    return json.loads((VECTORS / "content.json").read_text(encoding="utf-8"))


def pointer(**changes: Any) -> Attachment:
    fields: dict[str, Any] = {
        "blob_id": bytes(16),
        "key": bytes(32),
        "size": 10,
        "digest": bytes(32),
        "content_type": "image/png",
        "sent_at_ms": T,
    }
    fields.update(changes)
    return Attachment(**fields)


def test_content_vectors_round_trip() -> None:
    cases = load()["contents"]
    assert {c["type"] for c in cases} == {
        "Typing",
        "SenderKeyDistribution",
        "Attachment",
        "GroupUpdate",
        "TimerUpdate",
        "Expiring",
        "SentContent",
    }
    for case in cases:
        decoded = decode_content(bytes.fromhex(case["encoded"]))
        assert type(decoded).__name__ == case["type"]
        assert encode_content(decoded, case["hide_length"]).hex() == case["encoded"]
        assert decoded.sent_at_ms == case["fields"]["sent_at_ms"]


def test_receipt_vectors() -> None:
    cases = load()["receipts"]
    assert len(cases) >= 3
    for case in cases:
        decoded = decode_content(bytes.fromhex(case["encoded"]))
        assert isinstance(decoded, Receipt)
        assert (int(decoded.kind), list(decoded.message_sent_at_ms), decoded.sent_at_ms) == (
            case["kind"],
            case["items"],
            case["sent_at_ms"],
        )
        assert encode_content(decoded, case["hide_length"]).hex() == case["encoded"]


def test_known_bytes() -> None:
    assert (
        encode_content(Typing(TypingAction.STARTED, T)).hex() == "05" + "80bcd9f29e34" + "01" + "80"
    )
    assert encode_content(TimerUpdate(3600, T)).hex() == "09" + "80bcd9f29e34" + "901c" + "80"
    expiring = Expiring(60, Text("boo", T), T)
    assert encode_content(expiring).hex() == "0a" + "80bcd9f29e34" + "3c" + "01" + "626f6f" + "80"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (Typing(2, T), ErrorCode.INVALID_VALUE),  # type: ignore[arg-type]
        (SenderKeyDistribution(bytes(16), 0, 0, bytes(32), bytes(32), T), ErrorCode.INVALID_VALUE),
        (SenderKeyDistribution(bytes(15), 1, 0, bytes(32), bytes(32), T), ErrorCode.INVALID_VALUE),
        (SenderKeyDistribution(bytes(16), 1, 2**32, bytes(32), bytes(32), T), ErrorCode.TOO_LARGE),
        (pointer(size=104_857_601), ErrorCode.TOO_LARGE),
        (pointer(flags=AttachmentFlags(2)), ErrorCode.INVALID_VALUE),
        (pointer(content_type="a" * 129), ErrorCode.TOO_LARGE),
        (pointer(file_name="é" * 128), ErrorCode.TOO_LARGE),  # 256 bytes
        (pointer(thumbnail=bytes(65_537)), ErrorCode.TOO_LARGE),
        (pointer(caption="c" * 4097), ErrorCode.TOO_LARGE),
        (pointer(caption="\ud800"), ErrorCode.INVALID_UTF8),
        (pointer(key=bytes(31)), ErrorCode.INVALID_VALUE),
        (GroupUpdate(bytes(16), 8, "", 0, (), T), ErrorCode.INVALID_VALUE),  # type: ignore[arg-type]
        (GroupUpdate(bytes(16), GroupAction.RENAMED, "n" * 257, 0, (), T), ErrorCode.TOO_LARGE),
        (
            GroupUpdate(bytes(16), GroupAction.CREATED, "", MAX_TTL_SECONDS + 1, (), T),
            ErrorCode.TOO_LARGE,
        ),
        (
            GroupUpdate(bytes(16), GroupAction.MEMBERS_ADDED, "", 0, ("bob",) * 1001, T),
            ErrorCode.TOO_LARGE,
        ),
        (
            GroupUpdate(bytes(16), GroupAction.MEMBERS_ADDED, "", 0, ("Bob",), T),
            ErrorCode.INVALID_USERNAME,
        ),
        (TimerUpdate(MAX_TTL_SECONDS + 1, T), ErrorCode.TOO_LARGE),
        (Expiring(0, Text("x", T), T), ErrorCode.INVALID_VALUE),
        (Expiring(MAX_TTL_SECONDS + 1, Text("x", T), T), ErrorCode.TOO_LARGE),
        (Expiring(60, Text("x", T + 1), T), ErrorCode.INVALID_VALUE),  # its own sent_at
        (Expiring(60, TimerUpdate(5, T), T), ErrorCode.INVALID_VALUE),  # type: ignore[arg-type]
        (Expiring(60, Text("x" * 65_537, T), T), ErrorCode.TOO_LARGE),
        (SentContent("bob", Text("x", T), T), ErrorCode.INVALID_VALUE),  # type: ignore[arg-type]
        (SentContent("Bob", TimerUpdate(0, T), T), ErrorCode.INVALID_USERNAME),
        (SentContent("bob", Expiring(0, Text("x", T), T), T), ErrorCode.INVALID_VALUE),
        (SentContent("bob", TimerUpdate(0, T + 1), T), ErrorCode.INVALID_VALUE),
    ],
)
def test_the_encoder_refuses_what_the_decoder_refuses(content: Content, code: ErrorCode) -> None:
    with raises_code(code):
        encode_content(content)


def test_the_limits_themselves_are_accepted() -> None:
    for content in [
        pointer(
            size=104_857_600,
            content_type="a" * 128,
            file_name="f" * 255,
            thumbnail=bytes(65_536),
            caption="c" * 4096,
            flags=AttachmentFlags.VOICE,
            duration_ms=2**63 - 1,
        ),
        GroupUpdate(
            bytes(16), GroupAction.MEMBERS_ADDED, "n" * 256, MAX_TTL_SECONDS, ("bob",) * 1000, T
        ),
        SenderKeyDistribution(bytes(16), 2**31 - 1, 2**32 - 1, bytes(32), bytes(32), T),
        Expiring(MAX_TTL_SECONDS, pointer(), T),
        SentContent("bob", Expiring(1, pointer(), T), T),
    ]:
        assert decode_content(encode_content(content, True)) == content


usernames = st.from_regex(r"[a-z][a-z0-9_]{2,31}", fullmatch=True)
sent_at = st.integers(0, 2**63 - 1)


@st.composite
def contents(draw: st.DrawFn) -> Content:
    at = draw(sent_at)
    attachment = Attachment(
        blob_id=draw(st.binary(min_size=16, max_size=16)),
        key=draw(st.binary(min_size=32, max_size=32)),
        size=draw(st.integers(0, 104_857_600)),
        digest=draw(st.binary(min_size=32, max_size=32)),
        content_type=draw(st.text(max_size=20)),
        sent_at_ms=at,
        flags=draw(st.sampled_from(AttachmentFlags)),
        file_name=draw(st.text(max_size=20)),
        duration_ms=draw(st.integers(0, 2**40)),
        width=draw(st.integers(0, 10_000)),
        height=draw(st.integers(0, 10_000)),
        thumbnail=draw(st.binary(max_size=50)),
        caption=draw(st.text(max_size=50)),
    )
    timer = TimerUpdate(draw(st.integers(0, MAX_TTL_SECONDS)), at)
    expiring = Expiring(
        draw(st.integers(1, MAX_TTL_SECONDS)),
        draw(st.sampled_from([attachment, Text(draw(st.text(max_size=50)), at)])),
        at,
    )
    return draw(
        st.sampled_from(
            [
                Typing(draw(st.sampled_from(TypingAction)), at),
                SenderKeyDistribution(
                    draw(st.binary(min_size=16, max_size=16)),
                    draw(st.integers(1, 2**31 - 1)),
                    draw(st.integers(0, 2**32 - 1)),
                    draw(st.binary(min_size=32, max_size=32)),
                    draw(st.binary(min_size=32, max_size=32)),
                    at,
                ),
                attachment,
                GroupUpdate(
                    draw(st.binary(min_size=16, max_size=16)),
                    draw(st.sampled_from(GroupAction)),
                    draw(st.text(max_size=30)),
                    draw(st.integers(0, MAX_TTL_SECONDS)),
                    tuple(draw(st.lists(usernames, max_size=4))),
                    at,
                ),
                timer,
                expiring,
                SentContent(
                    draw(usernames), draw(st.sampled_from([attachment, timer, expiring])), at
                ),
            ]
        )
    )


def _well_formed(content: Content) -> bool:
    try:
        encode_content(content)
    except ProtocolError as exc:  # text with a lone surrogate: refused, as documented
        return exc.code is ErrorCode.INVALID_UTF8
    return True


@WIRE_SETTINGS
@given(contents(), st.booleans())
def test_round_trip(content: Content, hide_length: bool) -> None:
    if not _well_formed(content):
        return
    assert decode_content(encode_content(content, hide_length)) == content


@WIRE_SETTINGS
@given(st.integers(5, 11), st.binary(max_size=120))
def test_arbitrary_bodies_give_content_or_a_protocol_error(kind: int, body: bytes) -> None:
    try:
        content = decode_content(bytes([kind, 0]) + body + b"\x80")
    except ProtocolError:
        return
    assert encode_content(content) == bytes([kind, 0]) + body + b"\x80"
