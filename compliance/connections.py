"""Connection logs: which device connected to the relay from which address, and when.

Kept exactly as the region's ``retention.connection_logs`` says: written when a relay
connection is accepted, deleted by the purge once older than the maximum, never before
the minimum (a legal floor in Brazil and India; minimum <= maximum is checked when the
policy loads). A region whose maximum is 0 stores nothing at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from compliance.durations import Duration
from compliance.models import ConnectionLog
from keys.models import Device


def client_ip(scope: Mapping[str, Any]) -> str | None:
    """The peer address of an ASGI connection (Daphne's, after --proxy-headers)."""
    client = scope.get("client")
    if not client:
        return None
    host = str(client[0])
    return host if host and host != "unknown" else None


def record_connection(device: Device, ip: str | None, *, now: datetime | None = None) -> None:
    """Log one accepted relay connection, if the region keeps connection logs."""
    if settings.POLICY.retention.connection_logs.maximum.is_zero:
        return
    ConnectionLog.objects.create(
        account_id=device.account_id,
        device_id=device.device_id,
        ip=ip,
        connected_at=now or timezone.now(),
    )


def log_connection(device: Device, scope: Mapping[str, Any]) -> None:
    """``record_connection`` for the relay consumer: the address from the ASGI scope."""
    record_connection(device, client_ip(scope))


def expired_ids(
    queryset: QuerySet[Any], field: str, keep: Duration, now: datetime, limit: int
) -> list[int]:
    """Up to ``limit`` primary keys of rows whose ``field`` plus ``keep`` is before ``now``.

    ``keep.before(now)`` alone is not enough for calendar months: a row of 31 August kept
    six months expires on 28 February, yet six months before 1 March is 1 September. So
    rows of the few days after that cut-off are checked one by one with ``keep.after``.
    """
    cutoff = keep.before(now)
    ids = list(
        queryset.filter(**{f"{field}__lt": cutoff})
        .order_by(field, "pk")
        .values_list("pk", flat=True)[:limit]
    )
    if len(ids) < limit and keep.months:
        edge = queryset.filter(
            **{f"{field}__gte": cutoff, f"{field}__lt": cutoff + timedelta(days=4)}
        ).order_by(field, "pk")
        ids += [pk for pk, moment in edge.values_list("pk", field) if keep.after(moment) < now][
            : limit - len(ids)
        ]
    return ids


def purge_connection_logs(now: datetime, batch_size: int) -> int:
    """Delete connection logs older than the region's maximum, in batches."""
    keep = settings.POLICY.retention.connection_logs.maximum
    deleted = 0
    while True:
        with transaction.atomic():
            ids = expired_ids(ConnectionLog.objects.all(), "connected_at", keep, now, batch_size)
            if not ids:
                return deleted
            deleted += ConnectionLog.objects.filter(pk__in=ids).delete()[0]
