"""Fuzzing the relay consumer (messaging/consumers.py) through the real ASGI application.

Hypothesis drives one connection of Alice's device per example with a short script of
frames: well-formed frames of every type (the server-only ones included), the same
frames mutated (bits flipped, bytes cut, inserted or dropped), random bytes and text
messages. After every frame a PING with a marker request id is sent, and everything up
to its PONG is the server's answer to that frame (a consumer handles one message at a
time). For every frame:

- the connection is never closed and never answers with anything but a decodable frame;
- an ERROR carries a protocol ``ErrorCode`` (never ``internal``: that would be a crash
  caught by the consumer's last-resort handler), echoing the request id of a decodable
  frame, and undecodable bytes get exactly the code the decoder gives;
- nothing is half-written: Bob's queue grows by exactly one envelope when a stored SEND
  to him is answered SEND_OK and is otherwise untouched (Alice cannot ack his envelopes
  away), and Alice's queue never grows.

Budget: ``FUZZ_EXAMPLES`` scripts of at most ``MAX_SCRIPT`` frames, with no deadline per
example (CI machines vary); about 10 s here. Failing examples are kept in Hypothesis's
example database (.hypothesis/) and replayed first on the next run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from messaging.models import Envelope
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Ack,
    Deliver,
    DeviceMessage,
    DeviceMismatch,
    Error,
    Frame,
    GroupSend,
    Notice,
    Ping,
    Pong,
    QueueEmpty,
    Send,
    SendFlags,
    SendOk,
    decode_frame,
    encode_frame,
)
from tests.conftest import fresh_channel_layers
from tests.server.relay_helpers import (
    TIMEOUT,
    TestDevice,
    communicator,
    make_device,
    queue_envelopes,
)

pytestmark = pytest.mark.django_db(transaction=True)

FUZZ_EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "300"))
MAX_SCRIPT = 6
# Request ids of the barrier PINGs: far from what the strategies below draw.
MARKER = 987_654_321_000
# Answers read for one frame before the test gives up (an ACK may release a page).
MAX_ANSWERS = 600
ANSWER_TYPES = (Error, SendOk, DeviceMismatch, Pong, Deliver, QueueEmpty, Notice)


# --- strategies ---------------------------------------------------------------------------


def _encoded(frame: Frame) -> bytes | None:
    try:
        return encode_frame(frame)
    except ProtocolError:
        return None


def _frames(bob: TestDevice, seqs: list[int]) -> st.SearchStrategy[bytes]:
    request_ids = st.integers(1, 2**20) | st.just(0)
    names = st.sampled_from(["bob", "alice", "nobody", "Bob"]) | st.text(max_size=70)
    flags = st.sampled_from([SendFlags.NONE, SendFlags.EPHEMERAL])
    messages = st.builds(
        DeviceMessage,
        device_id=st.sampled_from([1, 2, bob.device_id]) | st.integers(0, 70_000),
        registration_id=st.just(bob.registration_id) | st.integers(0, 2**32),
        payload=st.binary(min_size=1, max_size=48),
    )
    sends = st.builds(
        Send,
        request_id=request_ids,
        recipient=names,
        messages=st.lists(messages, min_size=1, max_size=3).map(tuple),
        flags=flags,
    )
    expiring = st.builds(
        Send,
        request_id=request_ids,
        recipient=st.just("bob"),
        messages=st.lists(messages, min_size=1, max_size=2).map(tuple),
        flags=st.just(SendFlags.EXPIRES),
        ttl_seconds=st.integers(1, 31_536_000),
    )
    group_sends = st.builds(
        GroupSend,
        request_id=request_ids,
        group_id=st.binary(min_size=16, max_size=16),
        roster_digest=st.binary(min_size=16, max_size=16),
        payload=st.binary(min_size=1, max_size=48),
        flags=flags,
    )
    acks = st.builds(
        Ack,
        request_id=request_ids,
        seqs=st.lists(st.sampled_from(seqs) | st.integers(1, 10_000), min_size=1, max_size=5).map(
            lambda values: tuple(dict.fromkeys(values))
        ),
    )
    server_only = st.one_of(
        st.builds(SendOk, request_id=request_ids, server_time_ms=st.integers(0, 2**40)),
        st.builds(
            DeviceMismatch,
            request_id=request_ids,
            missing=st.just((1,)),
            extra=st.just(()),
            stale=st.just(()),
        ),
        st.builds(
            Deliver,
            seq=st.integers(1, 100),
            sender=st.just("bob"),
            sender_device=st.just(1),
            server_time_ms=st.integers(0, 2**40),
            payload=st.binary(min_size=1, max_size=16),
        ),
        st.builds(QueueEmpty),
        st.builds(Error, request_id=request_ids, code=st.integers(0, 999), message=st.text()),
        st.builds(Notice, kind=st.integers(0, 5), value=st.integers(0, 100)),
    )
    pings = st.builds(Ping, request_id=st.integers(1, 2**20)) | st.builds(
        Pong, request_id=request_ids
    )
    frames: st.SearchStrategy[Any] = st.one_of(
        sends, expiring, group_sends, acks, pings, server_only
    )
    valid = frames.map(_encoded).filter(lambda data: data is not None)
    return st.one_of(valid, _mutated(valid), st.binary(max_size=64))


def _mutated(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "cut", "insert", "drop"]))
            position = draw(st.integers(0, max(0, len(data) - 1)))
            if kind == "flip" and data:
                data[position] ^= 1 << draw(st.integers(0, 7))
            elif kind == "cut":
                del data[position:]
            elif kind == "insert":
                data.insert(position, draw(st.integers(0, 255)))
            elif kind == "drop" and data:
                del data[position]
        return bytes(data)

    return mutate()


Step = tuple[str, bytes | str]  # ("bytes", data) or ("text", text): an ASGI message key


def _scripts(bob: TestDevice, seqs: list[int]) -> st.SearchStrategy[list[Step]]:
    step = st.one_of(
        _frames(bob, seqs).map(lambda data: ("bytes", data)),
        st.text(max_size=32).map(lambda text: ("text", text)),
    )
    return st.lists(step, min_size=1, max_size=MAX_SCRIPT)


# --- the invariants -------------------------------------------------------------------------


def _queue_sizes(alice: TestDevice, bob: TestDevice) -> tuple[int, int]:
    return (
        Envelope.objects.filter(device_id=alice.pk).count(),
        Envelope.objects.filter(device_id=bob.pk).count(),
    )


async def _answers(comm: Any, marker: int) -> list[Frame]:
    """Everything the server sends up to the PONG of ``marker`` (which is left out)."""
    answers: list[Frame] = []
    for _ in range(MAX_ANSWERS):
        output = await comm.receive_output(timeout=TIMEOUT)
        assert output["type"] == "websocket.send", f"the server closed the socket: {output}"
        data = output.get("bytes")
        assert isinstance(data, bytes), f"a text answer: {output!r}"
        frame = decode_frame(data)  # anything undecodable fails the test here
        assert isinstance(frame, ANSWER_TYPES), frame
        if frame == Pong(marker):
            return answers
        answers.append(frame)
    raise AssertionError(f"no PONG {marker} after {MAX_ANSWERS} frames")


def _check_errors(step: Step, answers: list[Frame]) -> Frame | None:
    """Check every ERROR against the step; the step's decoded frame, if it decodes."""
    kind, data = step
    errors = [a for a in answers if isinstance(a, Error)]
    for error in errors:
        code = ErrorCode(error.code)  # a known protocol code, or ValueError
        assert code is not ErrorCode.INTERNAL, f"the consumer crashed on {step!r}: {error}"
        assert error.message
    if kind == "text":
        assert [e.code for e in errors] == [ErrorCode.MALFORMED]
        return None
    assert isinstance(data, bytes)
    try:
        frame = decode_frame(data)
    except ProtocolError as exc:
        assert [e.code for e in errors] == [exc.code], (step, errors)
        return None
    for error in errors:
        assert error.request_id == frame.request_id, (frame, error)
    return frame


async def _run_script(alice: TestDevice, bob: TestDevice, script: list[Step]) -> None:
    sizes = database_sync_to_async(_queue_sizes)
    comm = communicator(["sealpost.v1", f"sealpost.token.{alice.token}"])
    accepted, _ = await comm.connect(timeout=TIMEOUT)
    assert accepted
    try:
        await comm.send_to(bytes_data=encode_frame(Ping(MARKER)))
        await _answers(comm, MARKER)  # the backlog and QUEUE_EMPTY
        for index, step in enumerate(script, start=1):
            before = await sizes(alice, bob)
            kind, data = step
            # send_input, not send_to: an empty message is a message too.
            await comm.send_input({"type": "websocket.receive", kind: data})
            await comm.send_to(bytes_data=encode_frame(Ping(MARKER + index)))
            answers = await _answers(comm, MARKER + index)
            frame = _check_errors(step, answers)
            after = await sizes(alice, bob)

            stored_to_bob = (
                isinstance(frame, Send)
                and frame.recipient == "bob"
                and not frame.flags & SendFlags.EPHEMERAL
                and any(isinstance(a, SendOk) and a.request_id == frame.request_id for a in answers)
            )
            assert after[1] - before[1] == (1 if stored_to_bob else 0), (step, answers)
            assert after[0] <= before[0], (step, answers)  # only Alice's acks touch hers
    finally:
        await comm.disconnect(timeout=TIMEOUT)


def test_random_and_mutated_frames_never_break_the_relay(settings: Any) -> None:
    # Frame-rate limits off: the script's PINGs double the frame count, and the limits
    # have tests of their own (test_relay.py).
    settings.SEALPOST = {
        **settings.SEALPOST,
        "WS_FRAMES_PER_SECOND": 1_000_000,
        "WS_FRAME_BURST": 1_000_000,
    }
    alice = make_device("alice")
    bob = make_device("bob")
    # Envelopes in both queues, so ACKs name real seqs of both devices.
    seqs = queue_envelopes(bob, alice, [b"to alice"] * 3)
    seqs += queue_envelopes(alice, bob, [b"to bob"] * 3)

    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=True,
    )
    @given(script=_scripts(bob, seqs))
    def fuzz(script: list[Step]) -> None:
        with override_settings(CHANNEL_LAYERS=fresh_channel_layers()):
            async_to_sync(_run_script)(alice, bob, script)

    fuzz()
