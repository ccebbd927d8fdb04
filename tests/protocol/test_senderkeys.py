"""Sender keys (protocol/senderkeys.py, docs/protocol.md 17.2): the groups.json vectors,
the receiver's check order and error codes, all-or-nothing decryption, bounds, rotation,
the stored record, and decoders that raise nothing but ProtocolError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import primitives as p
from protocol.content import SenderKeyDistribution, Text, decode_content, encode_content
from protocol.errors import ErrorCode, ProtocolError
from protocol.limits import MAX_JUMP, MAX_SKIPPED_KEYS
from protocol.messages import MessageKind, peek_kind
from protocol.ratchet import kdf_ck
from protocol.senderkeys import (
    MAX_SENDER_KEY_STATES,
    SenderKeyMessage,
    SenderKeyRecord,
    SenderKeyState,
    sender_message_key,
)

from .helpers import WIRE_SETTINGS, raises_code, seeded_rng

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
GROUP = bytes(range(16))


def load() -> dict[str, Any]:
    return json.loads((VECTORS / "groups.json").read_text(encoding="utf-8"))


def text(body: str, at: int = 1_795_000_000_000) -> bytes:
    return encode_content(Text(body, at))


def pair(seed: str = "pair") -> tuple[SenderKeyState, SenderKeyRecord]:
    sender = SenderKeyState.generate(seeded_rng(seed))
    receiver = SenderKeyRecord()
    receiver.process_distribution(sender.distribution(GROUP, 1))
    return sender, receiver


def resign(sender: SenderKeyState, message: SenderKeyMessage) -> bytes:
    """A message altered after encryption but validly signed, as a member could make."""
    assert sender.signing_seed is not None
    unsigned = SenderKeyMessage(
        message.group_id, message.key_id, message.iteration, message.ciphertext, b""
    )
    signature = p.ed25519_sign(sender.signing_seed, unsigned.signed_bytes())
    return SenderKeyMessage(
        message.group_id, message.key_id, message.iteration, message.ciphertext, signature
    ).encode()


# --- vectors ------------------------------------------------------------------------------


def test_chain_vectors() -> None:
    doc = load()
    chain_key = bytes.fromhex(doc["chain_key"])
    for case in doc["chain"]:
        assert chain_key.hex() == case["chain_key"]
        message_seed, chain_key = kdf_ck(chain_key)
        key, nonce = sender_message_key(message_seed)
        assert (message_seed.hex(), key.hex(), nonce.hex()) == (
            case["message_seed"],
            case["key"],
            case["nonce"],
        )


def test_sender_vectors() -> None:
    sender = load()["sender"]
    seed = bytes.fromhex(sender["signing_seed"])
    state = SenderKeyState(
        sender["key_id"], 0, bytes.fromhex(sender["chain_key"]), p.ed25519_public_key(seed), seed
    )
    assert state.signing_public.hex() == sender["signing_public"]
    record = SenderKeyRecord([state])
    assert record.encode().hex() == sender["record_before"]
    assert SenderKeyRecord.decode(record.encode()).encode() == record.encode()
    group_id = bytes.fromhex(sender["group_id"])
    distribution = state.distribution(group_id, 1_795_000_000_000)
    assert encode_content(distribution).hex() == sender["distribution"]
    assert decode_content(bytes.fromhex(sender["distribution"])) == distribution
    for i, (body, expected) in enumerate(zip(sender["texts"], sender["messages"], strict=True)):
        assert state.encrypt(group_id, text(body, 1_795_000_000_001 + i)).hex() == expected
    assert record.encode().hex() == sender["record_after"]


def test_receiver_vectors() -> None:
    doc = load()["receiver"]
    record = SenderKeyRecord.decode(bytes.fromhex(doc["initial"]))
    assert len(doc["steps"]) >= 10
    for step in doc["steps"]:
        message = bytes.fromhex(step["message"])
        if "error" in step:
            with pytest.raises(ProtocolError) as info:
                record.decrypt(message)
            assert info.value.code.slug == step["error"], step["description"]
        else:
            assert record.decrypt(message).hex() == step["plaintext"], step["description"]
        assert record.encode().hex() == step["record_after"], step["description"]


def test_invalid_vectors() -> None:
    doc = load()
    for case in doc["invalid_messages"]:
        with pytest.raises(ProtocolError) as info:
            SenderKeyMessage.decode(bytes.fromhex(case["encoded"]))
        assert info.value.code.slug == case["error"], case
    for case in doc["invalid_records"]:
        with pytest.raises(ProtocolError) as info:
            SenderKeyRecord.decode(bytes.fromhex(case["encoded"]))
        assert info.value.code.slug == case["error"], case


# --- behaviour ------------------------------------------------------------------------------


def test_in_order_out_of_order_and_duplicates() -> None:
    sender, receiver = pair()
    messages = [sender.encrypt(GROUP, text(f"m{i}", i)) for i in range(6)]
    assert peek_kind(messages[0]) is MessageKind.SENDER_KEY
    order = [0, 1, 4, 2, 5, 3]
    for i in order:
        assert decode_content(receiver.decrypt(messages[i])) == Text(f"m{i}", i)
    for i in range(6):
        with raises_code(ErrorCode.DUPLICATE_MESSAGE):
            receiver.decrypt(messages[i])
    assert receiver.states[0].skipped == {}


def test_too_far_ahead_is_refused_and_the_limit_itself_is_not() -> None:
    sender, receiver = pair()
    # Advance the sender without delivering: MAX_JUMP skipped keys is allowed, one more not.
    for _ in range(MAX_JUMP + 1):
        sender.chain_key = kdf_ck(sender.chain_key)[1]
        sender.iteration += 1
    far = sender.encrypt(GROUP, text("far"))
    before = receiver.encode()
    with raises_code(ErrorCode.TOO_MANY_SKIPPED):
        receiver.decrypt(far)
    assert receiver.encode() == before
    sender2, receiver2 = pair("limit")
    for _ in range(MAX_JUMP):
        sender2.chain_key = kdf_ck(sender2.chain_key)[1]
        sender2.iteration += 1
    assert decode_content(receiver2.decrypt(sender2.encrypt(GROUP, text("ok")))).body == "ok"  # type: ignore[union-attr]
    # Only the newest MAX_SKIPPED_KEYS skipped seeds are kept: the oldest ones are gone.
    skipped = receiver2.states[0].skipped
    assert len(skipped) == MAX_SKIPPED_KEYS
    assert next(iter(skipped)) == MAX_JUMP - MAX_SKIPPED_KEYS


def test_wrong_signature_and_unknown_key_id() -> None:
    sender, receiver = pair()
    message = SenderKeyMessage.decode(sender.encrypt(GROUP, text("hi")))
    other = SenderKeyState.generate(seeded_rng("other"))
    other.key_id = sender.key_id
    before = receiver.encode()
    with raises_code(ErrorCode.BAD_SIGNATURE):
        receiver.decrypt(resign(other, message))
    unknown = SenderKeyMessage(
        GROUP, sender.key_id % 1000 + 1, 0, message.ciphertext, message.signature
    )
    with raises_code(ErrorCode.NO_SESSION):
        receiver.decrypt(unknown)
    assert receiver.encode() == before


def test_a_member_forging_a_ciphertext_fails_the_aead() -> None:
    sender, receiver = pair()
    message = SenderKeyMessage.decode(sender.encrypt(GROUP, text("hi")))
    forged = SenderKeyMessage(message.group_id, message.key_id, message.iteration, bytes(20), b"")
    before = receiver.encode()
    with raises_code(ErrorCode.DECRYPT_FAILED):
        receiver.decrypt(resign(sender, forged))
    assert receiver.encode() == before
    assert receiver.decrypt(message)


def test_every_bit_flip_is_rejected_and_changes_nothing() -> None:
    sender, receiver = pair()
    receiver.decrypt(sender.encrypt(GROUP, text("first")))
    message = sender.encrypt(GROUP, text("a group message"))
    before = receiver.encode()
    for bit in range(len(message) * 8):
        flipped = bytearray(message)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProtocolError):
            receiver.decrypt(bytes(flipped))
        assert receiver.encode() == before, bit
    assert decode_content(receiver.decrypt(message)).body == "a group message"  # type: ignore[union-attr]


def test_rotation_old_state_cannot_read_the_new_key() -> None:
    sender, receiver = pair()
    receiver.decrypt(sender.encrypt(GROUP, text("before")))
    rotated = SenderKeyState.generate(seeded_rng("rotated"))
    rotated_distribution = rotated.distribution(GROUP, 2)
    after = rotated.encrypt(GROUP, text("after"))
    with raises_code(ErrorCode.NO_SESSION):
        receiver.decrypt(after)
    # A receiver given the new key reads it; messages under the old key still decrypt.
    late = sender.encrypt(GROUP, text("late"))
    receiver.process_distribution(rotated_distribution)
    assert decode_content(receiver.decrypt(after)).body == "after"  # type: ignore[union-attr]
    assert decode_content(receiver.decrypt(late)).body == "late"  # type: ignore[union-attr]


def test_a_distribution_starts_at_its_iteration() -> None:
    sender = SenderKeyState.generate(seeded_rng("join"))
    early = sender.encrypt(GROUP, text("before the join"))
    receiver = SenderKeyRecord()
    receiver.process_distribution(sender.distribution(GROUP, 1))
    with raises_code(ErrorCode.DUPLICATE_MESSAGE):
        receiver.decrypt(early)
    assert receiver.decrypt(sender.encrypt(GROUP, text("after")))


def test_the_same_key_again_does_not_roll_the_chain_back() -> None:
    sender, receiver = pair()
    old_distribution = sender.distribution(GROUP, 1)
    message = sender.encrypt(GROUP, text("once"))
    receiver.decrypt(message)
    receiver.process_distribution(old_distribution)
    with raises_code(ErrorCode.DUPLICATE_MESSAGE):
        receiver.decrypt(message)
    # A later distribution of the same key does not move it either (and loses no skipped keys).
    skipped_message = sender.encrypt(GROUP, text("skipped"))
    receiver.decrypt(sender.encrypt(GROUP, text("third")))
    receiver.process_distribution(sender.distribution(GROUP, 2))
    assert receiver.decrypt(skipped_message)


def test_the_record_keeps_the_five_newest_keys() -> None:
    receiver = SenderKeyRecord()
    senders = [
        SenderKeyState.generate(seeded_rng(f"k{i}")) for i in range(MAX_SENDER_KEY_STATES + 1)
    ]
    for sender in senders:
        receiver.process_distribution(sender.distribution(GROUP, 1))
    assert [s.key_id for s in receiver.states] == [s.key_id for s in reversed(senders[1:])]
    with raises_code(ErrorCode.NO_SESSION):
        receiver.decrypt(senders[0].encrypt(GROUP, text("dropped")))
    # Re-sending a kept key makes it the newest, without changing it.
    receiver.process_distribution(senders[1].distribution(GROUP, 1))
    assert receiver.states[0].key_id == senders[1].key_id
    assert len(receiver.states) == MAX_SENDER_KEY_STATES


def test_a_received_key_cannot_send() -> None:
    _, receiver = pair()
    with raises_code(ErrorCode.INVALID_VALUE):
        receiver.states[0].encrypt(GROUP, text("no"))


def test_generate_draws_key_id_chain_and_seed_in_order() -> None:
    draws = iter([b"\x80\x00\x00\x00", b"c" * 32, b"s" * 32])
    state = SenderKeyState.generate(lambda n: next(draws))
    assert (state.key_id, state.chain_key, state.signing_seed) == (1, b"c" * 32, b"s" * 32)


def test_record_round_trip_with_skipped_keys_and_a_seed() -> None:
    sender, receiver = pair()
    messages = [sender.encrypt(GROUP, text(str(i))) for i in range(5)]
    receiver.decrypt(messages[4])
    receiver.decrypt(messages[1])
    receiver.process_distribution(SenderKeyState.generate(seeded_rng("new")).distribution(GROUP, 1))
    copy = SenderKeyRecord.decode(receiver.encode())
    assert copy.encode() == receiver.encode()
    assert list(copy.states[1].skipped) == [0, 2, 3]
    own = SenderKeyRecord([sender])
    assert SenderKeyRecord.decode(own.encode()).states[0].signing_seed == sender.signing_seed
    assert decode_content(copy.decrypt(messages[3])).body == "3"  # type: ignore[union-attr]


def test_distribution_content_limits() -> None:
    for key_id, code in [(0, ErrorCode.INVALID_VALUE), (2**31, ErrorCode.TOO_LARGE)]:
        bad = SenderKeyDistribution(GROUP, key_id, 0, bytes(32), bytes(32), 1)
        with raises_code(code):
            encode_content(bad)
        with raises_code(code):
            SenderKeyRecord().process_distribution(bad)


# --- decoders never raise anything but ProtocolError --------------------------------------


@WIRE_SETTINGS
@given(st.binary(max_size=300))
def test_message_decoder_gives_a_message_or_a_protocol_error(data: bytes) -> None:
    try:
        message = SenderKeyMessage.decode(data)
    except ProtocolError:
        return
    assert message.encode() == data


@WIRE_SETTINGS
@given(st.binary(max_size=300))
def test_record_decoder_gives_a_record_or_a_protocol_error(data: bytes) -> None:
    try:
        record = SenderKeyRecord.decode(data)
    except ProtocolError:
        return
    assert record.encode() == data


@WIRE_SETTINGS
@given(st.binary(max_size=200))
def test_decrypt_of_arbitrary_bytes_is_a_protocol_error(data: bytes) -> None:
    _, receiver = pair()
    before = receiver.encode()
    with pytest.raises(ProtocolError):
        receiver.decrypt(b"\x13" + data)
    assert receiver.encode() == before
