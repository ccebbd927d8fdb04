"""The relay's group commit: ``services.enqueue_sends`` and ``acknowledge_many`` (several
frames, one transaction) and ``messaging.writer`` (order, fallback, answers), plus the
bounded in-memory channel layer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from django.db import transaction

from keys.models import Device
from messaging import services, writer
from messaging.layers import InMemoryChannelLayer
from messaging.models import Envelope
from messaging.services import AckResult, SendAccepted, SendMismatch, SendRequest
from project.errors import ServiceError
from protocol.errors import ErrorCode
from protocol.frames import Ack, Deliver, DeviceMessage, SendOk
from tests.server.relay_helpers import (
    aenvelope_seqs,
    amake_device,
    connected,
    envelope_seqs,
    make_device,
    queue_envelopes,
    send_frame,
)


def _request(sender: Any, recipient: str, *messages: DeviceMessage, **kwargs: Any) -> SendRequest:
    return SendRequest(sender.model(), recipient, tuple(messages), **kwargs)


# --- enqueue_sends ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_batch_gives_each_send_its_own_outcome_and_stores_only_the_accepted(
    settings: Any,
) -> None:
    settings.SEALPOST = {**settings.SEALPOST, "MAX_QUEUE_PER_DEVICE": 3}
    alice, bob, carol = make_device("alice"), make_device("bob"), make_device("carol")
    queue_envelopes(alice, carol, [b"1", b"2"])

    outcomes = services.enqueue_sends(
        [
            _request(alice, "bob", bob.message(b"b1")),
            _request(alice, "nobody", bob.message(b"lost")),
            _request(alice, "bob", DeviceMessage(1, bob.registration_id + 1, b"stale")),
            _request(alice, "carol", carol.message(b"c3")),
            _request(alice, "carol", carol.message(b"c4")),  # the queue is full by now
            _request(alice, "bob", bob.message(b"b2"), ttl_seconds=60),
            _request(alice, "bob", bob.message(b"x"), bob.message(b"y")),  # twice
            _request(alice, "bob", bob.message(b"typing"), ephemeral=True),
        ]
    )

    assert [type(o).__name__ for o in outcomes] == [
        "SendAccepted",
        "ServiceError",
        "SendMismatch",
        "SendAccepted",
        "ServiceError",
        "SendAccepted",
        "ServiceError",
        "SendAccepted",
    ]
    first, unknown, stale, c3, full, b2, twice, typing = outcomes
    assert isinstance(first, SendAccepted) and first.deliveries[0].seq == 1
    assert isinstance(unknown, ServiceError) and unknown.code is ErrorCode.UNKNOWN_ACCOUNT
    assert stale == SendMismatch(missing=(), extra=(), stale=(1,))
    assert isinstance(c3, SendAccepted) and c3.deliveries[0].seq == 3
    assert isinstance(full, ServiceError) and full.code is ErrorCode.QUEUE_FULL
    assert "3 undelivered" in full.message
    assert isinstance(b2, SendAccepted) and b2.deliveries[0].seq == 2
    assert b2.expires_at_ms is not None and first.expires_at_ms is None
    assert isinstance(twice, ServiceError) and twice.code is ErrorCode.INVALID_REQUEST
    assert isinstance(typing, SendAccepted) and typing.deliveries[0].seq == 0
    assert envelope_seqs(bob) == [1, 2]
    assert envelope_seqs(carol) == [1, 2, 3]
    assert bob.model().next_seq == 3
    assert carol.model().next_seq == 4
    stored = Envelope.objects.get(device_id=bob.pk, seq=2)
    assert bytes(stored.payload) == b"b2"
    assert stored.sender.username == "alice"
    assert stored.server_time_ms == b2.server_time_ms
    assert abs(stored.expires_at.timestamp() * 1000 - b2.expires_at_ms) < 1


@pytest.mark.django_db
def test_a_revoked_sender_in_a_batch_is_refused_alone() -> None:
    alice, mallory, bob = make_device("alice"), make_device("mallory"), make_device("bob")
    revoked = mallory.model()
    Device.objects.filter(pk=mallory.pk).delete()

    outcomes = services.enqueue_sends(
        [
            SendRequest(revoked, "bob", (bob.message(b"from a ghost"),)),
            _request(alice, "bob", bob.message(b"hi")),
        ]
    )

    assert isinstance(outcomes[0], ServiceError)
    assert outcomes[0].code is ErrorCode.UNAUTHORIZED
    assert isinstance(outcomes[1], SendAccepted)
    assert envelope_seqs(bob) == [1]


@pytest.mark.django_db
def test_sends_to_ones_own_account_in_a_batch_skip_the_sending_device() -> None:
    alice1, alice2 = make_device("alice", 1), make_device("alice", 2)

    outcomes = services.enqueue_sends(
        [
            _request(alice1, "alice", alice2.message(b"sync")),
            _request(alice1, "alice", alice1.message(b"self"), alice2.message(b"sync")),
        ]
    )

    assert isinstance(outcomes[0], SendAccepted)
    assert outcomes[1] == SendMismatch(missing=(), extra=(1,), stale=())
    assert envelope_seqs(alice2) == [1]


@pytest.mark.django_db
def test_acknowledge_many_deletes_once_and_names_the_rest_unknown() -> None:
    alice, bob, carol = make_device("alice"), make_device("bob"), make_device("carol")
    queue_envelopes(alice, bob, [b"1", b"2", b"3"])
    queue_envelopes(alice, carol, [b"1"])

    results = services.acknowledge_many([(bob.pk, (1, 2)), (bob.pk, (2, 3, 9)), (carol.pk, (1,))])

    assert results == [AckResult(2, ()), AckResult(1, (2, 9)), AckResult(1, ())]
    assert envelope_seqs(bob) == []
    assert envelope_seqs(carol) == []


@pytest.mark.django_db
def test_a_failing_batch_stores_nothing() -> None:
    alice, bob = make_device("alice"), make_device("bob")

    with pytest.raises(RuntimeError), transaction.atomic():
        services.enqueue_sends([_request(alice, "bob", bob.message(b"1"))])
        raise RuntimeError("the commit failed")

    assert envelope_seqs(bob) == []
    assert bob.model().next_seq == 1


# --- the writer -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_writer_runs_operations_in_order_and_an_ack_before_a_later_read() -> None:
    alice, bob = await amake_device("alice"), await amake_device("bob")
    sender = await database_sync_to_async(alice.model)()
    relay = writer.relay_writer()

    first = await relay.send(SendRequest(sender, "bob", (bob.message(b"first"),)))
    sends = [relay.send(SendRequest(sender, "bob", (bob.message(b"%d" % n),))) for n in range(2, 7)]
    ack = relay.acknowledge(bob.pk, (1,))
    read = relay.call(lambda: services.pending_envelopes(sender_model(bob), 0, 10))
    results = await asyncio.gather(*sends)

    assert isinstance(first, SendAccepted) and first.deliveries[0].seq == 1
    seqs = [r.deliveries[0].seq for r in results if isinstance(r, SendAccepted)]
    assert seqs == [2, 3, 4, 5, 6]
    assert await ack == AckResult(1, ())
    assert [e.seq for e in await read] == [2, 3, 4, 5, 6]
    assert relay.batches < relay.operations  # the sends shared a batch


def sender_model(device: Any) -> Device:
    return Device.objects.get(pk=device.pk)


@pytest.mark.django_db(transaction=True)
async def test_when_a_batch_fails_each_operation_is_stored_alone(monkeypatch: Any) -> None:
    alice, bob = await amake_device("alice"), await amake_device("bob")
    sender = await database_sync_to_async(alice.model)()

    def broken(requests: Any) -> Any:
        raise RuntimeError("a database failure")

    monkeypatch.setattr(services, "enqueue_sends", broken)
    relay = writer.relay_writer()
    outcomes = await asyncio.gather(
        relay.send(SendRequest(sender, "bob", (bob.message(b"1"),))),
        relay.send(SendRequest(sender, "nobody", (bob.message(b"2"),))),
        return_exceptions=True,
    )

    assert isinstance(outcomes[0], SendAccepted)
    assert isinstance(outcomes[1], ServiceError)
    assert outcomes[1].code is ErrorCode.UNKNOWN_ACCOUNT
    assert await aenvelope_seqs(bob) == [1]


@pytest.mark.django_db(transaction=True)
async def test_pipelined_sends_are_answered_in_frame_order_and_delivered_in_seq_order() -> None:
    alice, bob = await amake_device("alice"), await amake_device("bob")
    async with (
        connected(bob.token, backlog_empty=True) as receiver,
        connected(alice.token, backlog_empty=True) as sender,
    ):
        for request_id in range(1, 21):
            await sender.send(send_frame(request_id, "bob", bob.message(b"%d" % request_id)))
        await sender.send(Ack(99, (7,)))  # unknown: answered in its place, after SEND 20

        answers = [await sender.recv() for _ in range(21)]
        delivered = await receiver.deliveries(20)

        assert [a.request_id for a in answers] == [*range(1, 21), 99]
        assert all(isinstance(a, SendOk) for a in answers[:20])
        assert [(d.seq, d.payload) for d in delivered] == [(n, b"%d" % n) for n in range(1, 21)]
        assert all(isinstance(d, Deliver) for d in delivered)


@pytest.mark.django_db(transaction=True)
async def test_sends_of_a_sender_that_disconnects_at_once_are_still_fanned_out() -> None:
    alice, bob = await amake_device("alice"), await amake_device("bob")
    async with connected(bob.token, backlog_empty=True) as receiver:
        async with connected(alice.token, backlog_empty=True) as sender:
            await sender.send(send_frame(1, "bob", bob.message(b"typing"), ephemeral=True))
            await sender.send(send_frame(2, "bob", bob.message(b"stored")))
        # Gone before any answer: the writer still stores, and the fan-out still happens.

        delivered = await receiver.deliveries(2)

        assert [(d.seq, d.payload) for d in delivered] == [(0, b"typing"), (1, b"stored")]


# --- the in-memory layer ----------------------------------------------------------------------


async def test_the_layer_sends_to_every_member_and_sweeps_at_most_once_a_second(
    monkeypatch: Any,
) -> None:
    layer = InMemoryChannelLayer(expiry=60)
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("device.1", first)
    await layer.group_add("device.1", second)
    sweeps: list[int] = []
    parent = ChannelsInMemoryChannelLayer._clean_expired

    def counted(self: Any) -> None:
        sweeps.append(1)
        parent(self)

    monkeypatch.setattr(ChannelsInMemoryChannelLayer, "_clean_expired", counted)

    for n in range(50):
        await layer.group_send("device.1", {"type": "envelope.new", "seq": n})

    assert len(sweeps) <= 1
    assert [(await layer.receive(first))["seq"] for _ in range(50)] == list(range(50))
    assert (await layer.receive(second))["seq"] == 0
