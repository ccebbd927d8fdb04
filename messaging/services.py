"""The envelope queue's verbs: the only code that writes Envelope rows.

Design. An envelope is written, in the same transaction as the per-device sequence number
it takes, before the sender hears SEND_OK and before anything is fanned out; a send is
all or nothing. Fan-out (the channel-layer events the relay consumer sends) is handed to
the caller through ``transaction.on_commit``, so no device hears of an envelope that a
rollback took back. Channel-layer delivery is at most once; the rows are the truth, and a
reconnect redelivers every unacknowledged one.

What this module deletes, and what it never deletes:

* ``acknowledge`` deletes only rows of the acknowledging device, and only the seqs named.
* ``purge_expired`` deletes only rows whose ``expires_at`` has passed, in bounded batches,
  each its own transaction, so a large purge never holds the write lock for long.
* Nothing here deletes an unexpired, unacknowledged envelope, a device or an account:
  an accepted message is kept until its device acknowledges it or its retention ends.

The server never reads the payloads: they are ciphertext, passed through as bytes, and
never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from keys.devicelists import listed_device_ids
from keys.models import Account, Device
from keys.services import prekey_counts
from messaging.models import Envelope
from project.errors import ServiceError
from protocol.errors import ErrorCode
from protocol.frames import DeviceMessage

# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One envelope to fan out: ``seq`` is 0 for an ephemeral (unstored) one."""

    device_pk: int
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SendAccepted:
    server_time_ms: int
    sender: str  # the sender's username
    sender_device: int  # the sending device's device_id (the client's number, not its pk)
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class SendMismatch:
    """The send did not address exactly the recipient's devices; nothing was stored."""

    missing: tuple[int, ...]
    extra: tuple[int, ...]
    stale: tuple[int, ...]


SendResult = SendAccepted | SendMismatch


@dataclass(frozen=True, slots=True)
class QueuedEnvelope:
    seq: int
    sender: str
    sender_device: int
    server_time_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    device_pk: int
    device_id: int
    payload: bytes


def _limit(name: str) -> int:
    return int(settings.SEALPOST[name])


# --- sending ------------------------------------------------------------------------------


def enqueue_send(
    sender_device: Device,
    recipient_username: str,
    messages: tuple[DeviceMessage, ...],
    ephemeral: bool,
    *,
    on_commit: Callable[[SendAccepted], object] | None = None,
) -> SendResult:
    """Queue one ciphertext per recipient device, all or nothing.

    A send to one's own account addresses its devices other than ``sender_device``. The
    addressed devices must be exactly the recipient's devices that its stored signed
    device list names (else ``SendMismatch``, nothing stored). ``ephemeral``
    sends store nothing and skip the queue limit; their deliveries carry seq 0.

    ``on_commit`` receives the accepted result once it is committed (at once for an
    ephemeral send): the caller fans out from there, never before.

    Raises ServiceError: UNAUTHORIZED (the sending device was revoked), UNKNOWN_ACCOUNT,
    INVALID_REQUEST (a device addressed twice), QUEUE_FULL.
    """
    _check_distinct(messages)
    if ephemeral:
        # Nothing is written, so no transaction (on SQLite it would take the write lock).
        result = _resolve(sender_device, recipient_username, messages)
        if isinstance(result, SendMismatch):
            return result
        accepted = _accepted(sender_device, timezone.now(), ((t, 0) for t in result))
        if on_commit is not None:
            transaction.on_commit(partial(on_commit, accepted))
        return accepted

    with transaction.atomic():
        result = _resolve(sender_device, recipient_username, messages)
        if isinstance(result, SendMismatch):
            return result
        seqs = _allocate_seqs(result)
        if isinstance(seqs, SendMismatch):
            transaction.set_rollback(True)
            return seqs
        _check_queue_space(recipient_username, result)
        now = timezone.now()
        accepted = _accepted(sender_device, now, ((t, seqs[t.device_pk]) for t in result))
        expires_at = now + timedelta(seconds=_limit("ENVELOPE_TTL_SECONDS"))
        Envelope.objects.bulk_create(
            [
                Envelope(
                    device_id=delivery.device_pk,
                    seq=delivery.seq,
                    sender_id=sender_device.account_id,
                    sender_device_id=sender_device.device_id,
                    server_time_ms=accepted.server_time_ms,
                    payload=delivery.payload,
                    expires_at=expires_at,
                )
                for delivery in accepted.deliveries
            ]
        )
        if on_commit is not None:
            transaction.on_commit(partial(on_commit, accepted))
    return accepted


def _check_distinct(messages: tuple[DeviceMessage, ...]) -> None:
    seen: set[int] = set()
    for message in messages:
        if message.device_id in seen:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"device {message.device_id} is addressed more than once in one send",
            )
        seen.add(message.device_id)


def _resolve(
    sender_device: Device, recipient_username: str, messages: tuple[DeviceMessage, ...]
) -> list[_Target] | SendMismatch:
    """Check the addressed devices against the recipient's; the targets, or the mismatch."""
    # A revoked device's connection may outlive the (at-most-once) revocation event: every
    # send re-checks that the device and its token still exist.
    if not Device.objects.filter(
        pk=sender_device.pk,
        token_hash=sender_device.token_hash,
        account__user__is_active=True,
    ).exists():
        raise ServiceError(ErrorCode.UNAUTHORIZED, "this device has been revoked")
    account = (
        Account.objects.filter(user__username=recipient_username).only("pk", "device_list").first()
    )
    if account is None:
        raise ServiceError(ErrorCode.UNKNOWN_ACCOUNT, f"no account named {recipient_username!r}")
    devices = Device.objects.filter(account=account)
    if account.pk == sender_device.account_id:
        devices = devices.exclude(pk=sender_device.pk)
    rows = list(devices.values_list("pk", "device_id", "registration_id", "certificate"))
    # Only devices the account's signed list names (id, registration id and certificate
    # digest) are expected: a row the account key never listed is neither missing when
    # left out nor sent to when addressed (it is then "extra"). Both the decoded list and
    # the certificate digests are cached by their bytes (keys.devicelists).
    listed = listed_device_ids(
        bytes(account.device_list),
        (
            (device_id, registration_id, bytes(certificate))
            for _, device_id, registration_id, certificate in rows
        ),
    )
    expected = {
        device_id: (pk, registration_id)
        for pk, device_id, registration_id, _ in rows
        if device_id in listed
    }
    given = {message.device_id: message for message in messages}
    missing = tuple(sorted(expected.keys() - given.keys()))
    extra = tuple(sorted(given.keys() - expected.keys()))
    stale = tuple(
        sorted(
            device_id
            for device_id, message in given.items()
            if device_id in expected and expected[device_id][1] != message.registration_id
        )
    )
    if missing or extra or stale:
        return SendMismatch(missing, extra, stale)
    return [
        _Target(expected[message.device_id][0], message.device_id, message.payload)
        for message in messages
    ]


def _allocate_seqs(targets: list[_Target]) -> dict[int, int] | SendMismatch:
    """Take the next seq of every target device, {device_pk: seq}.

    Each UPDATE locks its device row until the transaction ends (on PostgreSQL; SQLite's
    IMMEDIATE transactions hold the whole write lock), so concurrent sends to one device
    get distinct seqs, commit in seq order, and the value read back is our own. Rows are
    locked in primary-key order so two sends to overlapping devices cannot deadlock.
    """
    for target in sorted(targets, key=lambda t: t.device_pk):
        if not Device.objects.filter(pk=target.device_pk).update(next_seq=F("next_seq") + 1):
            # Revoked between the device-list check and the lock.
            return SendMismatch(missing=(), extra=(target.device_id,), stale=())
    next_seqs = Device.objects.filter(pk__in=[t.device_pk for t in targets]).values_list(
        "pk", "next_seq"
    )
    return {pk: next_seq - 1 for pk, next_seq in next_seqs}


def _check_queue_space(recipient_username: str, targets: list[_Target]) -> None:
    # Counted after the device rows are locked, so a concurrent send to the same device
    # has either committed (and is counted) or waits for us.
    limit = _limit("MAX_QUEUE_PER_DEVICE")
    counts = dict(
        Envelope.objects.filter(device_id__in=[t.device_pk for t in targets])
        .values("device_id")
        .annotate(n=Count("pk"))
        .values_list("device_id", "n")
    )
    for target in targets:
        queued = counts.get(target.device_pk, 0)
        if queued >= limit:
            raise ServiceError(
                ErrorCode.QUEUE_FULL,
                f"device {target.device_id} of {recipient_username!r} already holds "
                f"{queued} undelivered envelopes (the limit is {limit}); nothing was stored",
            )


def _accepted(
    sender_device: Device, now: datetime, targets: Iterable[tuple[_Target, int]]
) -> SendAccepted:
    return SendAccepted(
        server_time_ms=int(now.timestamp() * 1000),
        sender=sender_device.account.username,
        sender_device=sender_device.device_id,
        deliveries=tuple(Delivery(t.device_pk, seq, t.payload) for t, seq in targets),
    )


# --- delivering ---------------------------------------------------------------------------


def pending_envelopes(device: Device, after_seq: int, limit: int) -> list[QueuedEnvelope]:
    """The device's unexpired envelopes with seq > ``after_seq``, in seq order."""
    rows = (
        Envelope.objects.filter(device=device, seq__gt=after_seq, expires_at__gt=timezone.now())
        .order_by("seq")
        .values_list(
            "seq", "sender__user__username", "sender_device_id", "server_time_ms", "payload"
        )[:limit]
    )
    return [
        QueuedEnvelope(seq, sender, sender_device, server_time_ms, bytes(payload))
        for seq, sender, sender_device, server_time_ms, payload in rows
    ]


def acknowledge(device: Device, seqs: Iterable[int]) -> tuple[int, list[int]]:
    """Delete the device's envelopes with these seqs: (deleted, unknown seqs).

    A seq the device does not hold (acknowledged already, purged, or another device's) is
    unknown; other devices' rows are never touched.
    """
    wanted = set(seqs)
    with transaction.atomic():
        # The row locks (PostgreSQL) make two connections acking the same seq agree on
        # which of them deleted it.
        held = set(
            Envelope.objects.select_for_update()
            .filter(device=device, seq__in=wanted)
            .values_list("seq", flat=True)
        )
        deleted = 0
        if held:
            deleted, _ = Envelope.objects.filter(device=device, seq__in=held).delete()
    return deleted, sorted(wanted - held)


def prekeys_low(device: Device) -> int | None:
    """The lower of the device's two one-time prekey counts if it is below the low
    watermark (the device should upload more), else None. The keys app sends the same
    figure in its ``prekeys.low`` event after a claim."""
    counts = prekey_counts(device)
    fewest = min(counts.one_time_prekeys, counts.kem_prekeys)
    return fewest if fewest < _limit("PREKEY_LOW_WATERMARK") else None


# --- retention ----------------------------------------------------------------------------


def purge_expired(now: datetime | None = None, batch: int = 1000) -> int:
    """Delete envelopes whose ``expires_at`` is at or before ``now``; the number deleted.

    Works in batches of at most ``batch`` rows, each its own transaction.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    cutoff = now or timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                Envelope.objects.filter(expires_at__lte=cutoff)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                return total
            deleted, _ = Envelope.objects.filter(pk__in=ids, expires_at__lte=cutoff).delete()
        total += deleted
