"""The retention purge, with the clock passed in: envelopes go when the region's maximum
ends, not a second before; ``manage.py purge_expired`` runs every kind and reports each."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command, get_commands

from compliance import services
from compliance.policy import DEFAULT_POLICY_DIR, load_policy, retention_settings
from messaging.models import Envelope
from tests.compliance.helpers import SHIPPED_REGIONS
from tests.server.relay_helpers import envelope_seqs, expire_all, make_device, queue_envelopes


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

    assert services.purge_expired(now=deadline - timedelta(seconds=1)) == {"envelopes": 0}
    assert envelope_seqs(bob) == [1]
    assert services.purge_expired(now=deadline + timedelta(milliseconds=1)) == {"envelopes": 1}
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

    assert services.purge_expired(now=moment, batch_size=2) == {"envelopes": 5}
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
