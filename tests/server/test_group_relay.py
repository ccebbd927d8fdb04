"""GROUP_SEND and disappearing messages on the relay (docs/protocol.md §17.3, §9.10), driven
through the real ASGI application on the in-memory channel layer."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from groups import services as groups_services
from groups.models import Group
from keys.models import Account, Device
from keys.services import device_group
from messaging import services
from messaging.models import Envelope, SharedPayload
from protocol.errors import ErrorCode
from protocol.frames import (
    Ack,
    Deliver,
    Error,
    GroupSend,
    QueueEmpty,
    Send,
    SendFlags,
    SendOk,
)
from tests.server.relay_helpers import (
    TestDevice,
    amake_device,
    connected,
    make_device,
    resign_device_list,
)

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = b"\x13sender key message"


@pytest.fixture(autouse=True)
def _in_memory_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


# --- helpers ---------------------------------------------------------------------------------


def _account(username: str) -> Account:
    return Account.objects.select_related("user").get(user__username=username)


def make_group(creator: str, *others: str) -> bytes:
    return groups_services.create_group(_account(creator), list(others)).group_id


def digest_of(group_id: bytes) -> bytes:
    return groups_services.roster(Group.objects.get(group_id=group_id).pk).digest


def remove_member(actor: str, group_id: bytes, username: str) -> None:
    groups_services.remove_member(_account(actor), group_id, username)


def envelope_count(device: TestDevice | None = None) -> int:
    envelopes = Envelope.objects.all()
    if device is not None:
        envelopes = envelopes.filter(device_id=device.pk)
    return envelopes.count()


def shared_count() -> int:
    return SharedPayload.objects.count()


amake_group = database_sync_to_async(make_group)
adigest_of = database_sync_to_async(digest_of)
aremove_member = database_sync_to_async(remove_member)
aenvelope_count = database_sync_to_async(envelope_count)
ashared_count = database_sync_to_async(shared_count)


def group_send(
    request_id: int,
    group_id: bytes,
    digest: bytes,
    payload: bytes = PAYLOAD,
    *,
    ephemeral: bool = False,
    ttl_seconds: int | None = None,
) -> GroupSend:
    flags = SendFlags.NONE
    if ephemeral:
        flags |= SendFlags.EPHEMERAL
    if ttl_seconds is not None:
        flags |= SendFlags.EXPIRES
    return GroupSend(request_id, group_id, digest, payload, flags, ttl_seconds)


def _error_is(frame: Error, code: ErrorCode, request_id: int) -> None:
    assert frame.error_code is code, frame
    assert frame.request_id == request_id, frame


async def _family() -> dict[str, TestDevice]:
    """alice (devices 1, 2), bob (1), carol (1, 2)."""
    return {
        "alice1": await amake_device("alice"),
        "alice2": await amake_device("alice", 2),
        "bob1": await amake_device("bob"),
        "carol1": await amake_device("carol"),
        "carol2": await amake_device("carol", 2),
    }


# --- fan-out ---------------------------------------------------------------------------------


async def test_group_send_reaches_every_other_roster_device_once_stored() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob", "carol")
    digest = await adigest_of(group_id)

    async with (
        connected(d["alice1"].token, backlog_empty=True) as sender,
        connected(d["alice2"].token, backlog_empty=True) as own_other,
        connected(d["bob1"].token, backlog_empty=True) as bob,
        connected(d["carol1"].token, backlog_empty=True) as carol,
    ):
        await sender.send(group_send(4, group_id, digest))
        ok = await sender.expect(SendOk)
        assert ok.request_id == 4
        for socket in (own_other, bob, carol):
            delivered = await socket.expect(Deliver)
            assert (delivered.seq, delivered.sender, delivered.sender_device) == (1, "alice", 1)
            assert delivered.payload == PAYLOAD
            assert delivered.server_time_ms == ok.server_time_ms
        await sender.nothing()  # never to the sending device

    # One stored copy for four envelopes (alice 2, bob 1, carol 1, carol 2).
    assert await aenvelope_count() == 4
    assert await ashared_count() == 1
    assert await aenvelope_count(d["alice1"]) == 0
    # The device that was offline gets it from the queue.
    async with connected(d["carol2"].token) as carol2:
        delivered = await carol2.expect(Deliver)
        assert (delivered.seq, delivered.payload) == (1, PAYLOAD)
        await carol2.expect(QueueEmpty)


async def test_group_envelopes_share_the_per_device_seq_with_one_to_one_ones() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob")
    digest = await adigest_of(group_id)

    async with connected(d["alice1"].token, backlog_empty=True) as sender:
        await sender.send(Send(1, "bob", (d["bob1"].message(b"pairwise"),)))
        await sender.expect(SendOk)
        await sender.send(group_send(2, group_id, digest))
        await sender.expect(SendOk)

    async with connected(d["bob1"].token) as bob:
        first, second = await bob.deliveries(2)
        assert (first.seq, first.payload) == (1, b"pairwise")
        assert (second.seq, second.payload) == (2, PAYLOAD)
        await bob.expect(QueueEmpty)


async def test_acks_delete_the_shared_payload_with_its_last_envelope() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob")
    digest = await adigest_of(group_id)
    async with connected(d["alice1"].token, backlog_empty=True) as sender:
        await sender.send(group_send(1, group_id, digest))
        await sender.expect(SendOk)
    assert await aenvelope_count() == 2  # alice 2 and bob 1

    async with connected(d["bob1"].token) as bob:
        delivered = await bob.expect(Deliver)
        await bob.expect(QueueEmpty)
        await bob.send(Ack(0, (delivered.seq,)))
        await bob.nothing()
    assert await ashared_count() == 1  # alice 2 still holds it

    async with connected(d["alice2"].token) as own_other:
        delivered = await own_other.expect(Deliver)
        await own_other.expect(QueueEmpty)
        await own_other.send(Ack(0, (delivered.seq,)))
        await own_other.nothing()
    assert await aenvelope_count() == 0
    assert await ashared_count() == 0


# --- refusals --------------------------------------------------------------------------------


async def test_a_stale_digest_is_refused_and_nothing_is_stored() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob")
    old = await adigest_of(group_id)
    await amake_device("bob", 2)  # bob links a device: the roster changed

    async with (
        connected(d["alice1"].token, backlog_empty=True) as sender,
        connected(d["bob1"].token, backlog_empty=True) as bob,
    ):
        await sender.send(group_send(7, group_id, old))
        _error_is(await sender.error(), ErrorCode.STALE_ROSTER, 7)
        await bob.nothing()
        assert await aenvelope_count() == 0
        assert await ashared_count() == 0

        await sender.send(group_send(8, group_id, await adigest_of(group_id)))
        assert (await sender.expect(SendOk)).request_id == 8
        assert (await bob.expect(Deliver)).payload == PAYLOAD


async def test_a_non_member_and_an_unknown_group_are_refused() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob")
    digest = await adigest_of(group_id)

    async with connected(d["carol1"].token, backlog_empty=True) as outsider:
        await outsider.send(group_send(3, group_id, digest))
        _error_is(await outsider.error(), ErrorCode.NOT_A_MEMBER, 3)
        await outsider.send(group_send(4, bytes(16), digest))
        _error_is(await outsider.error(), ErrorCode.UNKNOWN_GROUP, 4)
        await outsider.send(group_send(5, group_id, digest, ephemeral=True))
        _error_is(await outsider.error(), ErrorCode.NOT_A_MEMBER, 5)
        await outsider.still_works()
    assert await aenvelope_count() == 0


async def test_a_removed_member_gets_nothing_after_removal() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob", "carol")
    before = await adigest_of(group_id)
    await aremove_member("alice", group_id, "bob")

    async with (
        connected(d["alice1"].token, backlog_empty=True) as sender,
        connected(d["bob1"].token, backlog_empty=True) as bob,
        connected(d["carol1"].token, backlog_empty=True) as carol,
    ):
        # The old digest still names bob's device: refused, so the sender must rotate.
        await sender.send(group_send(1, group_id, before))
        _error_is(await sender.error(), ErrorCode.STALE_ROSTER, 1)
        await sender.send(group_send(2, group_id, await adigest_of(group_id)))
        await sender.expect(SendOk)
        assert (await carol.expect(Deliver)).payload == PAYLOAD
        await bob.nothing()
        # And bob may no longer send to the group.
        await bob.send(group_send(3, group_id, await adigest_of(group_id)))
        _error_is(await bob.error(), ErrorCode.NOT_A_MEMBER, 3)
    assert await aenvelope_count(d["bob1"]) == 0


async def test_a_group_send_respects_the_queue_limit(settings: Any) -> None:
    d = await _family()
    settings.SEALPOST = {**settings.SEALPOST, "MAX_QUEUE_PER_DEVICE": 1}
    group_id = await amake_group("alice", "bob")
    digest = await adigest_of(group_id)

    async with connected(d["alice1"].token, backlog_empty=True) as sender:
        await sender.send(group_send(1, group_id, digest))
        await sender.expect(SendOk)
        await sender.send(group_send(2, group_id, digest))
        error = await sender.error()
        _error_is(error, ErrorCode.QUEUE_FULL, 2)
    assert await aenvelope_count() == 2  # the first send's only
    assert await ashared_count() == 1


async def test_a_revoked_sender_is_refused_and_closed() -> None:
    from messaging.consumers import CLOSE_REVOKED

    d = await _family()
    group_id = await amake_group("alice", "bob")
    digest = await adigest_of(group_id)

    async with connected(d["alice2"].token, backlog_empty=True) as sender:
        # Deleted straight in the database: no device.revoked event reaches the socket.
        await database_sync_to_async(Device.objects.filter(pk=d["alice2"].pk).delete)()
        await sender.send(group_send(1, group_id, digest))
        _error_is(await sender.error(), ErrorCode.UNAUTHORIZED, 1)
        assert await sender.closed() == CLOSE_REVOKED
    assert await aenvelope_count() == 0


# --- ephemeral -------------------------------------------------------------------------------


async def test_an_ephemeral_group_send_reaches_only_connected_devices_and_stores_nothing() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob", "carol")
    digest = await adigest_of(group_id)

    async with (
        connected(d["alice1"].token, backlog_empty=True) as sender,
        connected(d["bob1"].token, backlog_empty=True) as bob,
    ):
        await sender.send(group_send(1, group_id, digest, b"typing", ephemeral=True))
        await sender.expect(SendOk)
        delivered = await bob.expect(Deliver)
        assert (delivered.seq, delivered.payload) == (0, b"typing")
        await sender.nothing()
        # A stale digest is refused for ephemeral sends too.
        await sender.send(group_send(2, group_id, bytes(16), b"typing", ephemeral=True))
        _error_is(await sender.error(), ErrorCode.STALE_ROSTER, 2)
    assert await aenvelope_count() == 0
    assert await ashared_count() == 0
    async with connected(d["carol1"].token) as carol:
        await carol.expect(QueueEmpty)


# --- disappearing messages -------------------------------------------------------------------


def _expiries() -> list[Any]:
    return list(Envelope.objects.values_list("expires_at", flat=True))


async def test_expires_sets_the_envelope_expiry_from_ttl_seconds() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob")
    digest = await adigest_of(group_id)

    async with connected(d["alice1"].token, backlog_empty=True) as sender:
        await sender.send(group_send(1, group_id, digest, ttl_seconds=60))
        ok = await sender.expect(SendOk)

    expiries = await database_sync_to_async(_expiries)()
    assert len(expiries) == 2
    for expires_at in expiries:
        assert int(expires_at.timestamp() * 1000) == ok.server_time_ms + 60_000


async def test_expires_never_outlasts_the_retention_maximum(settings: Any) -> None:
    d = await _family()
    settings.SEALPOST = {**settings.SEALPOST, "ENVELOPE_TTL_SECONDS": 3600}

    async with connected(d["alice1"].token, backlog_empty=True) as sender:
        await sender.send(
            Send(1, "bob", (d["bob1"].message(),), SendFlags.EXPIRES, ttl_seconds=86_400)
        )
        ok = await sender.expect(SendOk)

    (expires_at,) = await database_sync_to_async(_expiries)()
    assert int(expires_at.timestamp() * 1000) == ok.server_time_ms + 3_600_000


async def test_an_expired_group_envelope_is_not_delivered_on_reconnect_and_is_purged() -> None:
    d = await _family()
    group_id = await amake_group("alice", "bob")
    digest = await adigest_of(group_id)

    async with connected(d["alice1"].token, backlog_empty=True) as sender:
        await sender.send(group_send(1, group_id, digest, ttl_seconds=1))
        await sender.expect(SendOk)
        await sender.send(group_send(2, group_id, digest, b"kept"))
        await sender.expect(SendOk)
    await asyncio.sleep(1.1)

    async with connected(d["bob1"].token) as bob:
        delivered = await bob.expect(Deliver)
        assert (delivered.seq, delivered.payload) == (2, b"kept")
        await bob.expect(QueueEmpty)

    assert await database_sync_to_async(services.purge_expired)() == 2  # bob 1, alice 2
    assert await aenvelope_count() == 2  # the second send's
    assert await ashared_count() == 1


async def test_a_one_to_one_send_with_expires_disappears() -> None:
    d = await _family()

    async with connected(d["alice1"].token, backlog_empty=True) as sender:
        await sender.send(
            Send(1, "bob", (d["bob1"].message(b"secret"),), SendFlags.EXPIRES, ttl_seconds=1)
        )
        ok = await sender.expect(SendOk)
    (expires_at,) = await database_sync_to_async(_expiries)()
    assert int(expires_at.timestamp() * 1000) == ok.server_time_ms + 1000
    await asyncio.sleep(1.1)

    async with connected(d["bob1"].token) as bob:
        await bob.expect(QueueEmpty)
    assert await database_sync_to_async(services.purge_expired)() == 1
    assert await aenvelope_count() == 0


async def test_a_one_to_one_send_with_expires_is_delivered_live_in_time() -> None:
    d = await _family()

    async with (
        connected(d["alice1"].token, backlog_empty=True) as sender,
        connected(d["bob1"].token, backlog_empty=True) as bob,
    ):
        await sender.send(
            Send(1, "bob", (d["bob1"].message(b"secret"),), SendFlags.EXPIRES, ttl_seconds=60)
        )
        await sender.expect(SendOk)
        assert (await bob.expect(Deliver)).payload == b"secret"


async def test_a_live_event_that_arrives_after_its_expiry_is_not_delivered() -> None:
    d = await _family()

    async with connected(d["bob1"].token, backlog_empty=True) as bob:
        # As if the event had waited in the channel layer past the envelope's expiry (the
        # purge has deleted the row meanwhile).
        await get_channel_layer().group_send(
            device_group(d["bob1"].pk),
            {
                "type": "envelope.new",
                "seq": 1,
                "sender": "alice",
                "sender_device": 1,
                "server_time_ms": int(time.time() * 1000) - 2000,
                "expires_at_ms": int(time.time() * 1000) - 1000,
                "payload": b"late",
            },
        )
        await bob.nothing()
        await bob.still_works()


# --- the purge sweeps shared payloads whose envelopes went with their device -----------------


def test_the_purge_sweeps_shared_payloads_left_by_revoked_devices() -> None:
    alice = make_device("alice")
    bob = make_device("bob")
    group_id = make_group("alice", "bob")
    result = services.enqueue_group_send(
        alice.model(), group_id, digest_of(group_id), PAYLOAD, False
    )
    assert [d.device_pk for d in result.deliveries] == [bob.pk]
    Device.objects.filter(pk=bob.pk).delete()  # the envelope goes with the device
    resign_device_list(_account("bob"))
    assert SharedPayload.objects.count() == 1

    assert services.purge_expired() == 0

    assert SharedPayload.objects.count() == 0


def test_a_group_of_one_device_stores_nothing_and_is_accepted() -> None:
    alice = make_device("alice")
    group_id = make_group("alice")

    result = services.enqueue_group_send(
        alice.model(), group_id, digest_of(group_id), PAYLOAD, False
    )

    assert result.deliveries == ()
    assert not SharedPayload.objects.exists()


# --- cost ------------------------------------------------------------------------------------


def _group_of(devices: int, prefix: str = "member") -> tuple[TestDevice, bytes]:
    """A sender and members with one device each: ``devices`` devices in all."""
    sender = make_device(f"{prefix}_sender")
    names = [f"{prefix}{i}" for i in range(devices - 1)]
    for name in names:
        make_device(name)
    return sender, make_group(sender.username, *names)


def _queries_for_one_send(devices: int, prefix: str) -> int:
    alice, group_id = _group_of(devices, prefix)
    digest = digest_of(group_id)
    sender = alice.model()
    with CaptureQueriesContext(connection) as queries:
        result = services.enqueue_group_send(sender, group_id, digest, PAYLOAD, False)
    assert len(result.deliveries) == devices - 1
    assert Envelope.objects.filter(shared__isnull=False).count() == devices - 1
    return len(queries.captured_queries)


def test_a_group_send_costs_the_same_queries_for_5_and_50_devices() -> None:
    small = _queries_for_one_send(5, "small")
    Envelope.objects.all().delete()
    SharedPayload.objects.all().delete()

    large = _queries_for_one_send(50, "large")

    assert small == large
    # sender check, group + membership, members, devices, seqs (UPDATE ... RETURNING; plus
    # the ordered row lock on PostgreSQL), queue counts, shared payload, envelopes; and the
    # transaction's own statements where the backend logs them.
    assert large <= 12, large


def test_seqs_of_a_vanished_device_are_left_out() -> None:
    alice = make_device("alice")
    bob = make_device("bob")
    Device.objects.filter(pk=bob.pk).delete()

    with transaction.atomic():  # as its callers call it
        seqs = services._allocate_seqs([alice.pk, bob.pk])

    assert seqs == {alice.pk: 1}


def test_expired_envelopes_are_purged_by_the_deadline() -> None:
    alice = make_device("alice")
    make_device("bob")
    group_id = make_group("alice", "bob")
    services.enqueue_group_send(
        alice.model(), group_id, digest_of(group_id), PAYLOAD, False, ttl_seconds=30
    )
    now = timezone.now()

    assert services.purge_expired(now=now + timedelta(seconds=29)) == 0
    assert services.purge_expired(now=now + timedelta(seconds=31)) == 1
    assert not SharedPayload.objects.exists()


# --- admin -----------------------------------------------------------------------------------


def _operator_client() -> Any:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(
        get_user_model().objects.create_superuser("operator", password="a long passphrase")
    )
    return client


def test_admin_shows_groups_with_their_members_and_changes_nothing() -> None:
    make_device("alice")
    make_device("bob")
    group_id = make_group("alice", "bob")
    group = Group.objects.get(group_id=group_id)
    client = _operator_client()

    listing = client.get("/admin/groups/group/")
    detail = client.get(f"/admin/groups/group/{group.pk}/change/")

    assert listing.status_code == 200
    assert group_id.hex() in listing.content.decode()
    assert detail.status_code == 200
    assert "alice" in detail.content.decode() and "bob" in detail.content.decode()
    assert client.get("/admin/groups/group/add/").status_code == 403
    assert client.post(f"/admin/groups/group/{group.pk}/delete/").status_code == 403
    assert Group.objects.filter(pk=group.pk).exists()


def test_admin_shows_a_group_envelope_size_but_never_its_payload() -> None:
    alice = make_device("alice")
    make_device("bob")
    group_id = make_group("alice", "bob")
    secret = b"CIPHERTEXT-MARKER-" * 10
    services.enqueue_group_send(alice.model(), group_id, digest_of(group_id), secret, False)
    envelope = Envelope.objects.get()
    client = _operator_client()

    for url in ("/admin/messaging/envelope/", f"/admin/messaging/envelope/{envelope.pk}/change/"):
        page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert "CIPHERTEXT-MARKER" not in html
        assert str(len(secret)) in html
