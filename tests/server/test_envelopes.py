"""The envelope queue's services, its purge command and its admin page."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client
from django.utils import timezone

from keys.models import Account, Device
from messaging import services
from messaging.models import Envelope
from messaging.services import SendAccepted, SendMismatch
from project.errors import ServiceError
from protocol.errors import ErrorCode
from protocol.frames import DeviceMessage
from tests.server.relay_helpers import envelope_seqs, expire_all, make_device, queue_envelopes


def _send(sender: Any, recipient: str, *messages: DeviceMessage, **kwargs: Any) -> Any:
    return services.enqueue_send(sender.model(), recipient, tuple(messages), False, **kwargs)


@pytest.mark.django_db
def test_each_device_gets_its_own_consecutive_seqs() -> None:
    alice, bob1 = make_device("alice"), make_device("bob", 1)
    queue_envelopes(alice, bob1, [b"a", b"b"])
    bob2 = make_device("bob", 2)

    result = _send(alice, "bob", bob1.message(b"c"), bob2.message(b"d"))

    assert isinstance(result, SendAccepted)
    assert result.sender == "alice"
    assert result.sender_device == 1
    assert {(d.device_pk, d.seq, d.payload) for d in result.deliveries} == {
        (bob1.pk, 3, b"c"),
        (bob2.pk, 1, b"d"),
    }
    assert envelope_seqs(bob1) == [1, 2, 3]
    stored = Envelope.objects.get(device_id=bob2.pk)
    assert stored.sender.username == "alice"
    assert stored.sender_device_id == 1
    assert stored.server_time_ms == result.server_time_ms
    assert bytes(stored.payload) == b"d"
    ttl = timedelta(seconds=30 * 24 * 3600)
    assert abs(stored.expires_at - (timezone.now() + ttl)) < timedelta(minutes=1)


@pytest.mark.django_db
def test_a_mismatch_stores_nothing_and_takes_no_seq() -> None:
    alice = make_device("alice")
    bob1, bob2 = make_device("bob", 1), make_device("bob", 2)

    result = _send(alice, "bob", DeviceMessage(1, bob1.registration_id + 1, b"x"))

    assert result == SendMismatch(missing=(2,), extra=(), stale=(1,))
    assert not Envelope.objects.exists()
    assert list(
        Device.objects.filter(account__user__username="bob").values_list("next_seq", flat=True)
    ) == [1, 1]
    assert bob2.model().next_seq == 1


@pytest.mark.django_db
def test_a_device_the_signed_list_does_not_name_is_never_expected() -> None:
    """A row inserted straight into the database (not in the account's signed list) is not
    expected: a send that leaves it out is accepted, one that addresses it gets extra."""
    alice = make_device("alice")
    bob1 = make_device("bob", 1)
    planted = make_device("bob", 2, listed=False)

    accepted = _send(alice, "bob", bob1.message(b"to 1"))
    refused = _send(alice, "bob", bob1.message(b"to 1"), planted.message(b"to the plant"))

    assert isinstance(accepted, SendAccepted)
    assert [d.device_pk for d in accepted.deliveries] == [bob1.pk]
    assert refused == SendMismatch(missing=(), extra=(2,), stale=())
    assert envelope_seqs(bob1) == [1]
    assert envelope_seqs(planted) == []


@pytest.mark.django_db
def test_a_listed_device_id_with_another_certificate_is_not_expected() -> None:
    """The list names devices by certificate digest: a row that reuses a listed device id
    and registration id with another certificate is not the listed device."""
    alice = make_device("alice")
    bob1 = make_device("bob", 1)
    bob2 = make_device("bob", 2)
    Device.objects.filter(pk=bob2.pk).delete()
    swapped = make_device("bob", 2, registration_id=bob2.registration_id, listed=False)

    result = _send(alice, "bob", bob1.message(), swapped.message())

    assert result == SendMismatch(missing=(), extra=(2,), stale=())
    assert isinstance(_send(alice, "bob", bob1.message()), SendAccepted)


@pytest.mark.django_db
def test_an_account_without_a_signed_list_has_no_expected_device() -> None:
    """As an account made before device lists existed: its rows stay, but none is listed."""
    alice = make_device("alice")
    bob = make_device("bob")
    Account.objects.filter(user__username="bob").update(device_list=b"", device_list_version=0)

    assert _send(alice, "bob", bob.message()) == SendMismatch(missing=(), extra=(1,), stale=())


@pytest.mark.django_db
def test_a_device_addressed_twice_is_an_invalid_request() -> None:
    alice, bob = make_device("alice"), make_device("bob")

    with pytest.raises(ServiceError) as raised:
        _send(alice, "bob", bob.message(b"1"), bob.message(b"2"))

    assert raised.value.code is ErrorCode.INVALID_REQUEST
    assert not Envelope.objects.exists()


@pytest.mark.django_db
def test_unknown_recipient_is_unknown_account() -> None:
    alice = make_device("alice")

    with pytest.raises(ServiceError) as raised:
        _send(alice, "nobody", DeviceMessage(1, 1, b"x"))

    assert raised.value.code is ErrorCode.UNKNOWN_ACCOUNT


@pytest.mark.django_db
def test_queue_full_stores_nothing(settings: Any) -> None:
    settings.SEALPOST = {**settings.SEALPOST, "MAX_QUEUE_PER_DEVICE": 1}
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(alice, bob, [b"first"])

    with pytest.raises(ServiceError) as raised:
        _send(alice, "bob", bob.message(b"second"))

    assert raised.value.code is ErrorCode.QUEUE_FULL
    assert envelope_seqs(bob) == [1]
    assert bob.model().next_seq == 2


@pytest.mark.django_db
def test_ephemeral_send_stores_nothing_and_has_seq_zero(settings: Any) -> None:
    settings.SEALPOST = {**settings.SEALPOST, "MAX_QUEUE_PER_DEVICE": 0}
    alice, bob = make_device("alice"), make_device("bob")

    result = services.enqueue_send(alice.model(), "bob", (bob.message(b"typing"),), True)

    assert isinstance(result, SendAccepted)
    assert [(d.device_pk, d.seq) for d in result.deliveries] == [(bob.pk, 0)]
    assert not Envelope.objects.exists()
    assert bob.model().next_seq == 1


@pytest.mark.django_db(transaction=True)
def test_fan_out_is_handed_over_only_after_commit() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    committed: list[SendAccepted] = []

    with transaction.atomic():
        result = _send(alice, "bob", bob.message(), on_commit=committed.append)
        assert committed == []  # not yet committed: nobody may hear of it
    assert committed == [result]

    with pytest.raises(RuntimeError), transaction.atomic():
        _send(alice, "bob", bob.message(), on_commit=committed.append)
        raise RuntimeError("roll back")
    assert committed == [result]  # the rolled-back send was never announced
    assert envelope_seqs(bob) == [1]


@pytest.mark.django_db
def test_pending_envelopes_are_unexpired_in_order_after_the_cursor() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(alice, bob, [b"1", b"2", b"3", b"4"])
    Envelope.objects.filter(device_id=bob.pk, seq=2).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    device = bob.model()

    assert [e.seq for e in services.pending_envelopes(device, 0, 10)] == [1, 3, 4]
    assert [e.seq for e in services.pending_envelopes(device, 1, 1)] == [3]
    first = services.pending_envelopes(device, 0, 1)[0]
    assert (first.sender, first.sender_device, first.payload) == ("alice", 1, b"1")


@pytest.mark.django_db
def test_acknowledge_deletes_only_this_devices_rows() -> None:
    alice, bob, carol = make_device("alice"), make_device("bob"), make_device("carol")
    queue_envelopes(alice, bob, [b"b1"])
    queue_envelopes(alice, carol, [b"c1", b"c2"])

    deleted, unknown = services.acknowledge(bob.model(), [1, 2, 2])

    assert (deleted, unknown) == (1, [2])
    assert envelope_seqs(bob) == []
    assert envelope_seqs(carol) == [1, 2]


@pytest.mark.django_db
def test_prekeys_low_reports_the_lower_count_below_the_watermark() -> None:
    plenty = make_device("alice", prekeys=10)
    few = make_device("bob", prekeys=2)

    assert services.prekeys_low(plenty.model()) is None
    assert services.prekeys_low(few.model()) == 2


@pytest.mark.django_db
def test_purge_expired_deletes_only_expired_envelopes_in_batches() -> None:
    alice, bob, carol = make_device("alice"), make_device("bob"), make_device("carol")
    queue_envelopes(alice, bob, [b"%d" % n for n in range(5)])
    expire_all(bob)
    queue_envelopes(alice, carol, [b"kept", b"kept too"])

    assert services.purge_expired(batch=2) == 5

    assert envelope_seqs(bob) == []
    assert envelope_seqs(carol) == [1, 2]
    assert services.purge_expired() == 0


@pytest.mark.django_db
def test_purge_expired_takes_the_time_to_compare_with() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(alice, bob, [b"x"])
    expires_at = Envelope.objects.get().expires_at

    assert services.purge_expired(now=expires_at - timedelta(seconds=1)) == 0
    assert services.purge_expired(now=expires_at) == 1


@pytest.mark.django_db
def test_purge_expired_command_prints_how_many_it_deleted() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(alice, bob, [b"1", b"2", b"3"])
    expire_all(bob)
    queue_envelopes(alice, bob, [b"fresh"])
    out = io.StringIO()

    call_command("purge_expired", "--batch", "2", stdout=out)

    assert out.getvalue().splitlines()[0] == "Deleted 3 expired envelopes."
    assert envelope_seqs(bob) == [4]


@pytest.mark.django_db
def test_purge_expired_command_refuses_a_zero_batch() -> None:
    with pytest.raises(CommandError):
        call_command("purge_expired", "--batch", "0")


@pytest.mark.django_db
def test_admin_shows_envelope_metadata_but_never_the_payload(client: Client) -> None:
    alice, bob = make_device("alice"), make_device("bob")
    secret = b"CIPHERTEXT-MARKER-" * 10
    queue_envelopes(alice, bob, [secret])
    envelope = Envelope.objects.get()
    admin = get_user_model().objects.create_superuser("operator", password="a long passphrase")
    client.force_login(admin)

    listing = client.get("/admin/messaging/envelope/")
    detail = client.get(f"/admin/messaging/envelope/{envelope.pk}/change/")

    assert listing.status_code == 200
    assert detail.status_code == 200
    for page in (listing, detail):
        html = page.content.decode()
        assert "CIPHERTEXT-MARKER" not in html
        assert "payload" not in html.lower()
        assert str(len(secret)) in html  # the size, in bytes
    assert client.get("/admin/messaging/envelope/add/").status_code == 403
    assert client.post(f"/admin/messaging/envelope/{envelope.pk}/delete/").status_code == 403
    assert Envelope.objects.exists()
