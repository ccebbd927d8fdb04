"""Connection logs: written when a relay connection is accepted, kept exactly as the
region's policy says (purged at the maximum, not a second before), and not stored at all
where the maximum is 0."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from compliance import connections, services
from compliance.durations import Duration
from compliance.models import ConnectionLog
from keys.models import Device
from tests.compliance.helpers import SHIPPED_REGIONS
from tests.server.relay_helpers import connected, make_device

T0 = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_logs_are_purged_at_the_maximum_and_not_before(use_region: Any, region: str) -> None:
    rule = use_region(region).retention.connection_logs
    device = Device.objects.get(pk=make_device("alice").pk)
    connections.record_connection(device, "203.0.113.7", now=T0)
    deadline = rule.maximum.after(T0)
    # The legal floor (Brazil 6 months, India 180 days) always comes first.
    assert rule.minimum.after(T0) <= deadline

    assert services.purge_expired(now=deadline)["connection_logs"] == 0
    assert ConnectionLog.objects.count() == 1
    assert services.purge_expired(now=deadline + timedelta(seconds=1))["connection_logs"] == 1
    assert ConnectionLog.objects.count() == 0


@pytest.mark.django_db
def test_brazil_keeps_six_calendar_months(use_region: Any) -> None:
    use_region("br")
    device = Device.objects.get(pk=make_device("alice").pk)
    connections.record_connection(device, "198.51.100.1", now=T0)  # 31 August

    # Six months after 31 August is 28 February (181 days), not 180 days.
    services.purge_expired(now=T0 + timedelta(days=180, hours=23))
    assert ConnectionLog.objects.count() == 1
    services.purge_expired(now=T0 + timedelta(days=181, seconds=1))
    assert ConnectionLog.objects.count() == 0


@pytest.mark.django_db
def test_the_purge_deletes_in_batches(use_region: Any) -> None:
    use_region("eu")
    device = Device.objects.get(pk=make_device("alice").pk)
    for minutes in range(5):
        connections.record_connection(device, None, now=T0 + timedelta(minutes=minutes))
    connections.record_connection(device, None, now=T0 + timedelta(days=30))

    assert connections.purge_connection_logs(T0 + timedelta(days=8), 2) == 5
    assert ConnectionLog.objects.count() == 1


@pytest.mark.django_db
def test_a_maximum_of_zero_stores_nothing(settings: Any) -> None:
    policy = settings.POLICY
    zero = Duration.parse("0d")
    rule = dataclasses.replace(policy.retention.connection_logs, minimum=zero, maximum=zero)
    settings.POLICY = dataclasses.replace(
        policy, retention=dataclasses.replace(policy.retention, connection_logs=rule)
    )
    device = Device.objects.get(pk=make_device("alice").pk)

    connections.record_connection(device, "203.0.113.7")

    assert ConnectionLog.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_relay_connection_is_logged(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    alice = make_device("alice")

    async def connect() -> None:
        async with connected(alice.token, backlog_empty=True):
            pass

    async_to_sync(connect)()

    log = ConnectionLog.objects.get()
    assert log.account is not None and log.account.username == "alice"
    assert log.device_id == alice.device_id
    assert log.ip is None  # the test communicator has no peer address (Daphne sets one)
    assert abs(log.connected_at - datetime.now(tz=UTC)) < timedelta(minutes=1)


def test_the_client_address_comes_from_the_scope() -> None:
    assert connections.client_ip({"client": ("192.0.2.1", 5000)}) == "192.0.2.1"
    assert connections.client_ip({"client": None}) is None
    assert connections.client_ip({}) is None
