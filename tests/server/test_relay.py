"""The WebSocket relay (docs/api.md, "The relay"), driven through the real ASGI application
on the in-memory channel layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model

from keys.models import Device
from keys.services import device_group
from messaging.consumers import CLOSE_RATE_ABUSE, CLOSE_REVOKED, TokenBucket
from messaging.models import Envelope
from protocol.errors import ErrorCode
from protocol.frames import (
    Ack,
    Deliver,
    DeviceMessage,
    DeviceMismatch,
    Error,
    Frame,
    Notice,
    NoticeKind,
    Ping,
    Pong,
    QueueEmpty,
    SendOk,
    decode_frame,
    encode_frame,
)
from protocol.limits import MAX_CIPHERTEXT_BYTES
from tests.conftest import fresh_channel_layers
from tests.server.relay_helpers import (
    TIMEOUT,
    TestDevice,
    aenvelope_seqs,
    amake_device,
    aqueue_envelopes,
    communicator,
    connected,
    raw_send,
    send_frame,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_layer(settings: Any) -> None:
    # A fresh layer for every test (changing the setting drops the cached one): in memory,
    # or Redis in the scale-out run.
    settings.CHANNEL_LAYERS = fresh_channel_layers()


@pytest.fixture
def limits(settings: Any) -> Callable[..., None]:
    def set_limits(**values: float) -> None:
        settings.SEALPOST = {**settings.SEALPOST, **values}

    return set_limits


def _error_is(frame: Error, code: ErrorCode, request_id: int) -> None:
    assert frame.error_code is code, frame
    assert frame.request_id == request_id, frame


async def _pair() -> tuple[TestDevice, TestDevice]:
    return await amake_device("alice"), await amake_device("bob")


# --- handshake ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subprotocols",
    [
        [],
        ["sealpost.v1"],
        ["sealpost.v1", "sealpost.token."],
        ["sealpost.v1", "sealpost.token.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
    ],
    ids=["nothing", "no-token", "empty-token", "wrong-token"],
)
async def test_handshake_refused_without_a_valid_token(subprotocols: list[str]) -> None:
    await amake_device("alice")
    comm = communicator(subprotocols)

    accepted, _ = await comm.connect(timeout=TIMEOUT)

    assert not accepted


async def test_handshake_refused_without_the_protocol_subprotocol() -> None:
    alice = await amake_device("alice")
    comm = communicator([f"sealpost.token.{alice.token}"])

    accepted, _ = await comm.connect(timeout=TIMEOUT)

    assert not accepted


async def test_handshake_refused_for_an_inactive_account() -> None:
    alice = await amake_device("alice")
    await database_sync_to_async(
        lambda: get_user_model().objects.filter(username="alice").update(is_active=False)
    )()
    comm = communicator(["sealpost.v1", f"sealpost.token.{alice.token}"])

    accepted, _ = await comm.connect(timeout=TIMEOUT)

    assert not accepted


async def test_handshake_refused_from_a_foreign_origin() -> None:
    from channels.testing import WebsocketCommunicator

    from project.asgi import application

    alice = await amake_device("alice")
    comm = WebsocketCommunicator(
        application,
        "/ws/v1/",
        headers=[(b"origin", b"https://evil.example")],
        subprotocols=["sealpost.v1", f"sealpost.token.{alice.token}"],
    )

    accepted, _ = await comm.connect(timeout=TIMEOUT)

    assert not accepted


async def test_valid_token_is_accepted_with_the_protocol_subprotocol() -> None:
    alice = await amake_device("alice")

    async with connected(alice.token) as socket:  # asserts "sealpost.v1" was selected
        assert await socket.recv() == QueueEmpty()
        await socket.still_works()


# --- bad frames ---------------------------------------------------------------------------

_SEND = encode_frame(send_frame(7, "bob", DeviceMessage(1, 5, b"x" * 50)))


@pytest.mark.parametrize(
    ("data", "code", "request_id"),
    [
        (b"\x01", ErrorCode.TRUNCATED, 0),
        (b"\xff\xfe\xfd", ErrorCode.UNSUPPORTED_VERSION, 0),
        (bytes([1, 99, 5]), ErrorCode.UNKNOWN_TYPE, 5),
        (bytes([2, 9, 8]), ErrorCode.UNSUPPORTED_VERSION, 8),
        (_SEND[:-10], ErrorCode.TRUNCATED, 7),
        (bytes([1, 9, 5]) + b"junk", ErrorCode.TRAILING_BYTES, 5),
        (bytes([1, 5, 6, 0]), ErrorCode.INVALID_VALUE, 6),  # an ACK of no seqs
        (bytes([1, 9, 0x80, 0x00]), ErrorCode.NON_MINIMAL_VARINT, 0),
    ],
    ids=[
        "one-byte",
        "garbage",
        "unknown-type",
        "unsupported-version",
        "truncated-send",
        "trailing-bytes",
        "empty-ack",
        "unreadable-request-id",
    ],
)
async def test_undecodable_frame_gets_an_error_and_the_connection_stays_open(
    data: bytes, code: ErrorCode, request_id: int
) -> None:
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send_raw(data)

        error = await socket.error()

        _error_is(error, code, request_id)
        assert error.message
        await socket.still_works()


async def test_text_message_is_malformed_and_the_connection_stays_open() -> None:
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send_text('{"type": "send"}')

        error = await socket.error()

        _error_is(error, ErrorCode.MALFORMED, 0)
        assert "binary" in error.message
        await socket.still_works()


@pytest.mark.parametrize(
    "frame",
    [
        SendOk(3, 1),
        DeviceMismatch(3, (), (), ()),
        Deliver(1, "alice", 1, 1, b"x", request_id=3),
        QueueEmpty(3),
        Error(3, int(ErrorCode.INTERNAL), "no"),
        Notice(int(NoticeKind.PREKEYS_LOW), 1, request_id=3),
    ],
    ids=lambda frame: type(frame).__name__,
)
async def test_a_frame_only_the_server_sends_is_an_invalid_request(frame: Frame) -> None:
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send(frame)

        error = await socket.error()

        _error_is(error, ErrorCode.INVALID_REQUEST, 3)
        assert frame.type.name in error.message
        await socket.still_works()


async def test_a_pong_from_the_client_is_accepted_quietly() -> None:
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send(Pong(4))

        await socket.nothing()
        await socket.still_works()


# --- sending ------------------------------------------------------------------------------


async def test_ciphertext_above_96_kib_is_refused_and_nothing_stored() -> None:
    alice, bob = await _pair()
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send_raw(raw_send(11, "bob", bob.message(b"x" * (MAX_CIPHERTEXT_BYTES + 1))))

        error = await socket.error()

        _error_is(error, ErrorCode.CIPHERTEXT_TOO_LARGE, 11)
        assert str(MAX_CIPHERTEXT_BYTES) in error.message
        assert await aenvelope_seqs(bob) == []
        await socket.still_works()


async def test_ciphertext_of_exactly_96_kib_is_accepted() -> None:
    alice, bob = await _pair()
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send(send_frame(12, "bob", bob.message(b"x" * MAX_CIPHERTEXT_BYTES)))

        assert (await socket.expect(SendOk)).request_id == 12
        assert await aenvelope_seqs(bob) == [1]


async def test_send_to_an_unknown_account_is_refused() -> None:
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send(send_frame(5, "nobody", alice.message()))

        error = await socket.error()

        _error_is(error, ErrorCode.UNKNOWN_ACCOUNT, 5)
        assert "nobody" in error.message
        await socket.still_works()


async def test_device_mismatch_names_missing_extra_and_stale_devices_and_stores_nothing() -> None:
    alice = await amake_device("alice")
    bob1 = await amake_device("bob", 1)
    bob2 = await amake_device("bob", 2)
    bob3 = await amake_device("bob", 3)
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send(
            send_frame(
                8,
                "bob",
                bob1.message(),
                DeviceMessage(2, bob2.registration_id + 1, b"old session"),
                DeviceMessage(4, 77, b"no such device"),
            )
        )

        mismatch = await socket.expect(DeviceMismatch)

        assert mismatch == DeviceMismatch(8, missing=(3,), extra=(4,), stale=(2,))
        for device in (bob1, bob2, bob3):
            assert await aenvelope_seqs(device) == []


async def test_a_device_planted_in_the_database_is_never_expected_nor_sent_to() -> None:
    alice = await amake_device("alice")
    bob1 = await amake_device("bob", 1)
    planted = await amake_device("bob", 2, listed=False)  # a row the signed list lacks
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send(send_frame(1, "bob", bob1.message(b"hi")))
        assert (await socket.expect(SendOk)).request_id == 1

        await socket.send(send_frame(2, "bob", bob1.message(b"hi"), planted.message(b"hi")))
        mismatch = await socket.expect(DeviceMismatch)

    assert mismatch == DeviceMismatch(2, missing=(), extra=(2,), stale=())
    assert await aenvelope_seqs(bob1) == [1]
    assert await aenvelope_seqs(planted) == []


async def test_send_is_stored_before_send_ok_and_delivered_live_with_its_seq() -> None:
    alice, bob = await _pair()
    async with (
        connected(bob.token, backlog_empty=True) as bob_socket,
        connected(alice.token, backlog_empty=True) as alice_socket,
    ):
        await alice_socket.send(send_frame(21, "bob", bob.message(b"hello bob")))

        ok = await alice_socket.expect(SendOk)
        assert ok.request_id == 21
        assert await aenvelope_seqs(bob) == [1]  # stored by the time SEND_OK arrives

        delivered = await bob_socket.expect(Deliver)
        assert delivered == Deliver(1, "alice", alice.device_id, ok.server_time_ms, b"hello bob")

        await bob_socket.send(Ack(1, (1,)))
        await bob_socket.nothing()  # no error: the ack was accepted
        assert await aenvelope_seqs(bob) == []


async def test_a_send_to_ones_own_account_reaches_the_other_devices_only() -> None:
    alice1 = await amake_device("alice", 1)
    alice2 = await amake_device("alice", 2)
    alice3 = await amake_device("alice", 3)
    async with (
        connected(alice2.token, backlog_empty=True) as second,
        connected(alice1.token, backlog_empty=True) as first,
    ):
        await first.send(send_frame(1, "alice", alice1.message(), alice2.message()))
        mismatch = await first.expect(DeviceMismatch)
        assert mismatch == DeviceMismatch(1, missing=(3,), extra=(1,), stale=())

        await first.send(send_frame(2, "alice", alice2.message(b"to 2"), alice3.message(b"to 3")))

        assert (await first.expect(SendOk)).request_id == 2
        assert (await second.expect(Deliver)).payload == b"to 2"
        await first.nothing()
        assert await aenvelope_seqs(alice1) == []
        assert await aenvelope_seqs(alice3) == [1]


async def test_queue_full_refuses_the_whole_send_and_stores_nothing(
    limits: Callable[..., None],
) -> None:
    limits(MAX_QUEUE_PER_DEVICE=2)
    alice, bob1 = await _pair()
    await aqueue_envelopes(alice, bob1, [b"1", b"2"])
    bob2 = await amake_device("bob", 2)
    async with connected(alice.token, backlog_empty=True) as socket:
        await socket.send(send_frame(9, "bob", bob1.message(), bob2.message()))

        error = await socket.error()

        _error_is(error, ErrorCode.QUEUE_FULL, 9)
        assert "device 1" in error.message
        assert await aenvelope_seqs(bob1) == [1, 2]
        assert await aenvelope_seqs(bob2) == []
        next_seq = await database_sync_to_async(lambda: bob2.model().next_seq)()
        assert next_seq == 1  # the seq taken for bob2 was rolled back too


async def test_ephemeral_send_reaches_only_connected_devices_and_is_never_stored(
    limits: Callable[..., None],
) -> None:
    limits(MAX_QUEUE_PER_DEVICE=0)  # ephemeral sends are outside the queue limit
    alice = await amake_device("alice")
    bob1 = await amake_device("bob", 1)
    bob2 = await amake_device("bob", 2)
    async with (
        connected(bob1.token, backlog_empty=True) as online,
        connected(alice.token, backlog_empty=True) as socket,
    ):
        await socket.send(
            send_frame(3, "bob", bob1.message(b"typing"), bob2.message(b"typing"), ephemeral=True)
        )

        ok = await socket.expect(SendOk)
        delivered = await online.expect(Deliver)

        assert delivered == Deliver(0, "alice", 1, ok.server_time_ms, b"typing")
        assert await aenvelope_seqs(bob1) == []
        assert await aenvelope_seqs(bob2) == []
    async with connected(bob2.token) as offline:
        assert await offline.recv() == QueueEmpty()
        await offline.nothing()


# --- delivery and acknowledgement ---------------------------------------------------------


async def test_backlog_is_delivered_in_order_then_queue_empty_and_unacked_is_redelivered() -> None:
    alice, bob = await _pair()
    async with connected(alice.token, backlog_empty=True) as socket:
        for request_id, payload in enumerate([b"one", b"two", b"three"], start=1):
            await socket.send(send_frame(request_id, "bob", bob.message(payload)))
            await socket.expect(SendOk)

    async with connected(bob.token) as first:
        delivered = await first.deliveries(3)
        assert [(d.seq, d.payload) for d in delivered] == [
            (1, b"one"),
            (2, b"two"),
            (3, b"three"),
        ]
        assert all(d.sender == "alice" and d.sender_device == 1 for d in delivered)
        assert await first.recv() == QueueEmpty()
        await first.send(Ack(1, (1, 2)))
        await first.nothing()
        assert await aenvelope_seqs(bob) == [3]

    async with connected(bob.token) as second:
        assert (await second.expect(Deliver)).seq == 3
        assert await second.recv() == QueueEmpty()


async def test_acking_another_devices_envelope_is_unknown_and_leaves_it_alone() -> None:
    alice, bob = await _pair()
    carol = await amake_device("carol")
    await aqueue_envelopes(alice, carol, [b"c1", b"c2"])
    await aqueue_envelopes(alice, bob, [b"b1"])
    async with connected(bob.token) as socket:
        assert (await socket.expect(Deliver)).seq == 1
        await socket.expect(QueueEmpty)

        await socket.send(Ack(17, (1, 2)))

        error = await socket.error()
        _error_is(error, ErrorCode.UNKNOWN_ENVELOPE, 17)
        assert "2" in error.message
        assert await aenvelope_seqs(bob) == []  # its own seq 1 was acknowledged
        assert await aenvelope_seqs(carol) == [1, 2]
        await socket.still_works()


async def test_acking_twice_is_unknown_the_second_time() -> None:
    alice, bob = await _pair()
    await aqueue_envelopes(alice, bob, [b"b1"])
    async with connected(bob.token) as socket:
        await socket.expect(Deliver)
        await socket.expect(QueueEmpty)
        await socket.send(Ack(1, (1,)))
        await socket.send(Ack(2, (1,)))

        _error_is(await socket.error(), ErrorCode.UNKNOWN_ENVELOPE, 2)


async def test_unacked_window_pauses_delivery_until_acks_arrive(
    limits: Callable[..., None],
) -> None:
    limits(MAX_UNACKED=3, DELIVERY_PAGE=2)
    alice, bob = await _pair()
    await aqueue_envelopes(alice, bob, [b"%d" % n for n in range(1, 8)])
    async with (
        connected(bob.token) as socket,
        connected(alice.token, backlog_empty=True) as sender,
    ):
        assert [d.seq for d in await socket.deliveries(3)] == [1, 2, 3]
        await socket.nothing()  # the window is full

        # Live sends while the window is full wait their turn in the queue.
        for request_id in (1, 2):
            await sender.send(send_frame(request_id, "bob", bob.message(b"live")))
            await sender.expect(SendOk)
        await socket.nothing()

        await socket.send(Ack(1, (1,)))
        assert [d.seq for d in await socket.deliveries(1)] == [4]
        await socket.nothing()

        await socket.send(Ack(2, (2, 3, 4)))
        assert [d.seq for d in await socket.deliveries(3)] == [5, 6, 7]
        await socket.nothing()

        await socket.send(Ack(3, (5, 6, 7)))
        delivered = await socket.deliveries(2)
        assert [(d.seq, d.payload) for d in delivered] == [(8, b"live"), (9, b"live")]
        assert await socket.recv() == QueueEmpty()
        await socket.nothing()

        # Once drained, a new envelope comes straight from the channel event.
        await socket.send(Ack(4, (8, 9)))
        await sender.send(send_frame(3, "bob", bob.message(b"fresh")))
        await sender.expect(SendOk)
        assert (await socket.expect(Deliver)).seq == 10
        await socket.nothing()


async def test_a_lost_channel_event_is_made_up_for_by_the_next_one() -> None:
    alice, bob = await _pair()
    async with (
        connected(bob.token, backlog_empty=True) as socket,
        connected(alice.token, backlog_empty=True) as sender,
    ):
        await aqueue_envelopes(alice, bob, [b"silent"])  # stored, never announced
        await socket.nothing()

        await sender.send(send_frame(1, "bob", bob.message(b"announced")))
        await sender.expect(SendOk)

        delivered = await socket.deliveries(2)
        assert [(d.seq, d.payload) for d in delivered] == [(1, b"silent"), (2, b"announced")]
        await socket.nothing()


async def test_a_repeated_channel_event_is_not_delivered_twice() -> None:
    alice, bob = await _pair()
    async with connected(bob.token, backlog_empty=True) as socket:
        await aqueue_envelopes(alice, bob, [b"once"])
        event = {
            "type": "envelope.new",
            "seq": 1,
            "sender": "alice",
            "sender_device": 1,
            "server_time_ms": 1,
            "payload": b"once",
        }
        layer = get_channel_layer()
        await layer.group_send(device_group(bob.pk), event)
        assert (await socket.expect(Deliver)).seq == 1

        await layer.group_send(device_group(bob.pk), event)

        await socket.nothing()


# --- limits, notices, revocation ----------------------------------------------------------


async def test_frames_above_the_rate_limit_are_dropped_with_rate_limited(
    limits: Callable[..., None],
) -> None:
    # One frame per 100 s refills nothing within a test, however slow the machine.
    limits(WS_FRAMES_PER_SECOND=0.01, WS_FRAME_BURST=2)
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        for request_id in (1, 2, 3):
            await socket.send(Ping(request_id))

        assert await socket.recv() == Pong(1)
        assert await socket.recv() == Pong(2)
        error = await socket.error()
        _error_is(error, ErrorCode.RATE_LIMITED, 3)
        assert "dropped" in error.message


async def test_a_client_far_above_the_rate_limit_is_disconnected(
    limits: Callable[..., None],
) -> None:
    # Closed once it has gone 10 x past the burst: after 20 frames, 18 of them refused.
    limits(WS_FRAMES_PER_SECOND=0.01, WS_FRAME_BURST=2)
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        for request_id in range(1, 31):
            await socket.send(Ping(request_id))

        answers: list[Frame] = []
        while True:
            message = await socket.comm.receive_output(timeout=TIMEOUT)
            if message["type"] == "websocket.close":
                break
            answers.append(decode_frame(message["bytes"]))

        assert message.get("code") == CLOSE_RATE_ABUSE
        assert answers[:2] == [Pong(1), Pong(2)]
        assert [a.request_id for a in answers[2:]] == list(range(3, 21))
        assert all(
            isinstance(a, Error) and a.error_code is ErrorCode.RATE_LIMITED for a in answers[2:]
        )
        await socket.nothing()  # nothing is answered after the close


async def test_sends_above_the_device_budget_are_refused_across_its_connections(
    limits: Callable[..., None],
) -> None:
    # Two sends per device however many sockets it opens: the third, on a second socket,
    # is refused with rate_limited and nothing of it is stored.
    limits(SENDS_PER_DEVICE_PER_SECOND=0.01, SEND_BURST_PER_DEVICE=2)
    alice, bob = await _pair()
    async with (
        connected(alice.token, backlog_empty=True) as first,
        connected(alice.token, backlog_empty=True) as second,
    ):
        await first.send(send_frame(1, "bob", bob.message(b"one")))
        assert (await first.expect(SendOk)).request_id == 1
        await second.send(send_frame(2, "bob", bob.message(b"two")))
        assert (await second.expect(SendOk)).request_id == 2
        await second.send(send_frame(3, "bob", bob.message(b"three")))
        error = await second.error()
        _error_is(error, ErrorCode.RATE_LIMITED, 3)
        assert "sends a second" in error.message
        await first.send(Ping(4))  # other frames still pass
        assert await first.recv() == Pong(4)

    assert len(await aenvelope_seqs(bob)) == 2


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])

    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


async def test_low_prekeys_give_a_notice_on_connect() -> None:
    alice = await amake_device("alice", prekeys=3)

    async with connected(alice.token) as socket:
        assert await socket.recv() == Notice(int(NoticeKind.PREKEYS_LOW), 3)
        assert await socket.recv() == QueueEmpty()
        await socket.nothing()


async def test_prekeys_low_event_becomes_a_notice() -> None:
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        await get_channel_layer().group_send(
            device_group(alice.pk), {"type": "prekeys.low", "count": 4}
        )

        assert await socket.recv() == Notice(int(NoticeKind.PREKEYS_LOW), 4)


async def test_device_revoked_event_closes_with_4403() -> None:
    alice = await amake_device("alice")
    async with connected(alice.token, backlog_empty=True) as socket:
        await get_channel_layer().group_send(device_group(alice.pk), {"type": "device.revoked"})

        assert await socket.closed() == CLOSE_REVOKED


async def test_a_revoked_device_cannot_send_even_if_the_event_was_lost() -> None:
    alice, bob = await _pair()
    async with connected(alice.token, backlog_empty=True) as socket:
        await database_sync_to_async(lambda: Device.objects.filter(pk=alice.pk).delete())()

        await socket.send(send_frame(6, "bob", bob.message()))

        _error_is(await socket.error(), ErrorCode.UNAUTHORIZED, 6)
        assert await socket.closed() == CLOSE_REVOKED
        assert not await database_sync_to_async(Envelope.objects.exists)()
