"""The retention purge, with the clock passed in: envelopes and idle devices go when the
region's maximum ends, not a second before, as do expired link tokens and provisioning
slots; ``manage.py purge_expired`` runs every kind and reports each."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command, get_commands

from compliance import services
from compliance.policy import DEFAULT_POLICY_DIR, load_policy, retention_settings
from keys import services as keys_services
from keys.models import Account, Device, KemPreKey, LinkToken, OneTimePreKey, ProvisioningSlot
from keys.services import device_group
from keys.tokens import device_for_token
from messaging.models import Envelope
from tests.compliance.helpers import SHIPPED_REGIONS
from tests.server.relay_helpers import (
    TestDevice,
    envelope_seqs,
    expire_all,
    make_device,
    queue_envelopes,
)


def _use_region(settings: Any, region: str) -> None:
    policy = load_policy(region, DEFAULT_POLICY_DIR)
    settings.POLICY = policy
    ttl = retention_settings(policy, {}).envelope_ttl_seconds
    settings.SEALPOST = {**settings.SEALPOST, "ENVELOPE_TTL_SECONDS": ttl}


@pytest.mark.django_db
@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_envelopes_are_purged_on_time_and_not_before(settings: Any, region: str) -> None:
    _use_region(settings, region)
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(alice, bob, [b"undelivered"])
    envelope = Envelope.objects.get()
    sent = datetime.fromtimestamp(envelope.server_time_ms / 1000, tz=UTC)
    deadline = settings.POLICY.retention.undelivered_envelopes.maximum.after(sent)
    assert abs(envelope.expires_at - deadline) < timedelta(milliseconds=1)

    assert services.purge_expired(now=deadline - timedelta(seconds=1))["envelopes"] == 0
    assert envelope_seqs(bob) == [1]
    assert services.purge_expired(now=deadline + timedelta(milliseconds=1))["envelopes"] == 1
    assert envelope_seqs(bob) == []


@pytest.mark.django_db
def test_the_purge_reuses_the_envelope_purger_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob, carol = make_device("alice"), make_device("bob"), make_device("carol")
    queue_envelopes(alice, bob, [b"%d" % n for n in range(5)])
    expire_all(bob)
    queue_envelopes(alice, carol, [b"kept"])
    calls: list[tuple[datetime | None, int]] = []
    real = services.messaging_services.purge_expired

    def spy(now: datetime | None = None, batch: int = 1000) -> int:
        calls.append((now, batch))
        return real(now=now, batch=batch)

    monkeypatch.setattr(services.messaging_services, "purge_expired", spy)
    moment = datetime.now(tz=UTC)

    assert services.purge_expired(now=moment, batch_size=2) == {
        "envelopes": 5,
        "idle_devices": 0,
        "link_tokens": 0,
        "provisioning_slots": 0,
        "attachments": 0,
        "connection_logs": 0,
        "audit_records": 0,
        "export_archives": 0,
    }
    assert calls == [(moment, 2)]
    assert envelope_seqs(bob) == [] and envelope_seqs(carol) == [1]


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        services.purge_expired(batch_size=0)


def test_there_is_one_purge_command_and_it_is_the_compliance_one() -> None:
    assert get_commands()["purge_expired"] == "compliance"


@pytest.mark.django_db
def test_the_command_prints_a_count_per_kind() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(alice, bob, [b"1"])
    expire_all(bob)
    out = io.StringIO()

    call_command("purge_expired", "--batch-size", "10", stdout=out)

    assert out.getvalue().splitlines() == [
        f"Deleted {purger.describe(1 if purger.kind == 'envelopes' else 0)}."
        for purger in services.PURGERS
    ]
    assert out.getvalue().splitlines()[0] == "Deleted 1 expired envelope."


# --- idle devices, link tokens and provisioning slots ------------------------------------------


def _seen(device: TestDevice, *, last_seen: datetime | None, created: datetime) -> None:
    Device.objects.filter(pk=device.pk).update(last_seen_at=last_seen, created_at=created)


@pytest.fixture
def in_memory_layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return get_channel_layer()


async def _receive_within(layer: Any, channel: str, seconds: float) -> dict[str, Any] | None:
    try:
        message: dict[str, Any] = await asyncio.wait_for(layer.receive(channel), seconds)
    except TimeoutError:
        return None
    return message


@pytest.mark.django_db
def test_idle_devices_go_on_time_with_their_prekeys_and_queue_and_are_told(
    settings: Any, in_memory_layer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    expiry = timedelta(seconds=settings.SEALPOST["IDLE_DEVICE_EXPIRY_SECONDS"])
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    alice, idle = make_device("alice"), make_device("bob", 1)
    queue_envelopes(alice, idle, [b"undelivered"])
    never_seen, busy = make_device("bob", 2), make_device("bob", 3)
    _seen(idle, last_seen=long_ago + timedelta(days=1), created=long_ago)
    _seen(never_seen, last_seen=None, created=long_ago + timedelta(days=1))
    _seen(busy, last_seen=long_ago + timedelta(days=2), created=long_ago)  # seen later
    _seen(alice, last_seen=long_ago + timedelta(days=3), created=long_ago)
    channel = async_to_sync(in_memory_layer.new_channel)()
    async_to_sync(in_memory_layer.group_add)(device_group(idle.pk), channel)
    deadline = long_ago + timedelta(days=1) + expiry

    early = services.purge_expired(now=deadline - timedelta(seconds=1))
    assert early["idle_devices"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        counts = services.purge_expired(now=deadline)

    assert counts["idle_devices"] == 2
    left = set(Device.objects.values_list("device_id", "account__user__username"))
    assert left == {(1, "alice"), (3, "bob")}
    for gone in (idle, never_seen):
        assert not OneTimePreKey.objects.filter(device_id=gone.pk).exists()
        assert not KemPreKey.objects.filter(device_id=gone.pk).exists()
        assert not Envelope.objects.filter(device_id=gone.pk).exists()
        assert device_for_token(gone.token) is None
    message = async_to_sync(_receive_within)(in_memory_layer, channel, 2)
    assert message == {"type": "device.revoked"}


@pytest.mark.django_db
def test_idle_devices_are_purged_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    devices = [make_device("bob", device_id) for device_id in (1, 2, 3)]
    for device in devices:
        _seen(device, last_seen=long_ago, created=long_ago)
    batches: list[int] = []
    real_delete = keys_services._delete_in_batches

    def spy(select: Any, batch: int, after: Any = None) -> int:
        def counted(pks: list[int]) -> None:
            batches.append(len(pks))
            if after is not None:
                after(pks)

        return real_delete(select, batch, counted)

    monkeypatch.setattr(keys_services, "_delete_in_batches", spy)

    counts = services.purge_expired(now=datetime.now(tz=UTC), batch_size=2)

    assert counts["idle_devices"] == 3
    assert batches == [2, 1]
    assert not Device.objects.exists()


@pytest.mark.django_db
def test_expired_link_tokens_and_provisioning_slots_are_purged() -> None:
    make_device("alice")
    account = Account.objects.get()
    now = datetime.now(tz=UTC)
    for minutes, name in ((-1, "expired"), (5, "live")):
        LinkToken.objects.create(
            account=account, token_hash=name * 8, expires_at=now + timedelta(minutes=minutes)
        )
        ProvisioningSlot.objects.create(address=name, expires_at=now + timedelta(minutes=minutes))

    counts = services.purge_expired(now=now)

    assert counts["link_tokens"] == 1
    assert counts["provisioning_slots"] == 1
    assert list(LinkToken.objects.values_list("token_hash", flat=True)) == ["live" * 8]
    assert list(ProvisioningSlot.objects.values_list("address", flat=True)) == ["live"]


def test_the_purge_runs_every_kind_in_order() -> None:
    assert [purger.kind for purger in services.PURGERS] == [
        "envelopes",
        "idle_devices",
        "link_tokens",
        "provisioning_slots",
        "attachments",
        "connection_logs",
        "audit_records",
        "export_archives",
    ]
