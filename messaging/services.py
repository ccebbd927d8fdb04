"""The envelope queue's verbs: the only code that writes Envelope rows.

Design. An envelope is written, in the same transaction as the per-device sequence number
it takes, before the sender hears SEND_OK and before anything is fanned out; a send is
all or nothing. Fan-out (the channel-layer events the relay consumer sends) is handed to
the caller through ``transaction.on_commit``, so no device hears of an envelope that a
rollback took back. Channel-layer delivery is at most once; the rows are the truth, and a
reconnect redelivers every unacknowledged one.

Group sends (GROUP_SEND, ``enqueue_group_send``) store their one payload once, as a
SharedPayload, and one envelope per roster device pointing at it, all in one transaction
whose cost does not grow in queries with the roster: one UPDATE ... RETURNING takes every
device's seq and one INSERT writes every envelope. Delivery reads the payload through.

Disappearing messages (EXPIRES): an envelope's ``expires_at`` is the acceptance time plus
``ttl_seconds``, never later than the retention maximum; nothing past ``expires_at`` is
delivered (from the queue or live), and the purge deletes it within one interval.

What this module deletes, and what it never deletes:

* ``acknowledge`` deletes only rows of the acknowledging device, and only the seqs named.
* ``purge_expired`` deletes only rows whose ``expires_at`` has passed, in bounded batches,
  each its own transaction, so a large purge never holds the write lock for long.
* A SharedPayload is deleted only when no envelope points at it any more: by the
  acknowledgement or purge batch that deleted its last envelope, or, for the ones whose
  envelopes went with their device (revoked, idle) or a concurrent acknowledgement, by
  the purge's sweep. The database's foreign key refuses any other delete.
* Nothing here deletes an unexpired, unacknowledged envelope, a device or an account:
  an accepted message is kept until its device acknowledges it or its retention ends.

The server never reads the payloads: they are ciphertext, passed through as bytes, and
never logged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef
from django.utils import timezone

from groups import services as groups_services
from keys.devicelists import listed_device_ids
from keys.models import Account, Device
from keys.services import prekey_counts
from messaging.models import Envelope, SharedPayload
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
    # When a disappearing (EXPIRES) send stops being deliverable; None for others. Live
    # delivery checks it as the queue read checks ``expires_at``.
    expires_at_ms: int | None = None


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
    username: str  # the device's account's, for error messages


def _limit(name: str) -> int:
    return int(settings.SEALPOST[name])


def _expiry(now: datetime, ttl_seconds: int | None) -> datetime:
    """The retention maximum, or ``ttl_seconds`` after ``now`` if that is sooner."""
    retention = _limit("ENVELOPE_TTL_SECONDS")
    seconds = retention if ttl_seconds is None else min(ttl_seconds, retention)
    return now + timedelta(seconds=seconds)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- sending ------------------------------------------------------------------------------


def enqueue_send(
    sender_device: Device,
    recipient_username: str,
    messages: tuple[DeviceMessage, ...],
    ephemeral: bool,
    *,
    ttl_seconds: int | None = None,
    on_commit: Callable[[SendAccepted], object] | None = None,
) -> SendResult:
    """Queue one ciphertext per recipient device, all or nothing.

    A send to one's own account addresses its devices other than ``sender_device``. The
    addressed devices must be exactly the recipient's devices that its stored signed
    device list names (else ``SendMismatch``, nothing stored). ``ephemeral``
    sends store nothing and skip the queue limit; their deliveries carry seq 0.
    ``ttl_seconds`` (EXPIRES) bounds how long the envelopes are kept and delivered.

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
        seqs = _allocate_seqs([t.device_pk for t in result])
        gone = tuple(sorted(t.device_id for t in result if t.device_pk not in seqs))
        if gone:
            # Revoked between the device-list check and the lock.
            transaction.set_rollback(True)
            return SendMismatch(missing=(), extra=gone, stale=())
        _check_queue_space(result)
        now = timezone.now()
        expires_at = _expiry(now, ttl_seconds)
        accepted = _accepted(
            sender_device,
            now,
            ((t, seqs[t.device_pk]) for t in result),
            _ms(expires_at) if ttl_seconds is not None else None,
        )
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


def _check_sender(sender_device: Device) -> None:
    # A revoked device's connection may outlive the (at-most-once) revocation event: every
    # send re-checks that the device and its token still exist.
    if not Device.objects.filter(
        pk=sender_device.pk,
        token_hash=sender_device.token_hash,
        account__user__is_active=True,
    ).exists():
        raise ServiceError(ErrorCode.UNAUTHORIZED, "this device has been revoked")


@dataclass(frozen=True, slots=True)
class _Recipient:
    """What a send to one account is checked against: its signed device list and its
    device rows (pk, device_id, registration_id, certificate)."""

    account_pk: int
    device_list: bytes
    devices: tuple[tuple[int, int, int, bytes], ...]


def _resolve(
    sender_device: Device, recipient_username: str, messages: tuple[DeviceMessage, ...]
) -> list[_Target] | SendMismatch:
    """Check the addressed devices against the recipient's; the targets, or the mismatch."""
    _check_sender(sender_device)
    recipient = _recipients([recipient_username]).get(recipient_username)
    if recipient is None:
        raise ServiceError(ErrorCode.UNKNOWN_ACCOUNT, f"no account named {recipient_username!r}")
    return _match(sender_device, recipient_username, recipient, messages)


def _recipients(usernames: Iterable[str]) -> dict[str, _Recipient]:
    """The accounts with these usernames and their devices, by username: one query
    however many names (an account without devices has an empty tuple)."""
    names = sorted(set(usernames))
    if not names:
        return {}
    accounts: dict[str, tuple[int, bytes]] = {}
    devices: dict[str, list[tuple[int, int, int, bytes]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_sql().recipients(len(names)), names)
        for account_pk, username, device_list, pk, device_id, registration_id, cert in cursor:
            if username not in accounts:
                accounts[username] = (int(account_pk), bytes(device_list))
                devices[username] = []
            if pk is not None:
                devices[username].append(
                    (int(pk), int(device_id), int(registration_id), bytes(cert))
                )
    return {
        username: _Recipient(account_pk, device_list, tuple(devices[username]))
        for username, (account_pk, device_list) in accounts.items()
    }


def _match(
    sender_device: Device,
    recipient_username: str,
    recipient: _Recipient,
    messages: tuple[DeviceMessage, ...],
) -> list[_Target] | SendMismatch:
    """The targets of a send to ``recipient``, or the mismatch: no query."""
    rows = recipient.devices
    if recipient.account_pk == sender_device.account_id:
        rows = tuple(row for row in rows if row[0] != sender_device.pk)
    # Only devices the account's signed list names (id, registration id and certificate
    # digest) are expected: a row the account key never listed is neither missing when
    # left out nor sent to when addressed (it is then "extra"). Both the decoded list and
    # the certificate digests are cached by their bytes (keys.devicelists).
    listed = listed_device_ids(
        recipient.device_list,
        (
            (device_id, registration_id, certificate)
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
        _Target(
            expected[message.device_id][0], message.device_id, message.payload, recipient_username
        )
        for message in messages
    ]


def _allocate_seqs(device_pks: Sequence[int]) -> dict[int, int]:
    """Take the next seq of every device, {device_pk: seq}, in one UPDATE; a device that
    no longer exists (revoked since it was looked up) is missing from the result, and the
    caller must then roll back.

    The UPDATE locks the device rows until the transaction ends (SQLite's IMMEDIATE
    transactions hold the whole write lock), so concurrent sends to one device get
    distinct seqs, commit in seq order, and the value read back is our own. On PostgreSQL
    the rows are first locked in primary-key order (SELECT ... ORDER BY pk FOR UPDATE
    locks rows as the sorted scan returns them), so two sends to overlapping devices
    cannot deadlock, whatever order the UPDATE's scan visits them in.
    """
    pks = sorted(set(device_pks))
    if not pks:
        return {}
    if connection.features.has_select_for_update and len(pks) > 1:
        list(
            Device.objects.select_for_update()
            .filter(pk__in=pks)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    if connection.features.can_return_rows_from_update:
        # PostgreSQL and SQLite >= 3.35: the new values come back from the UPDATE itself.
        quote = connection.ops.quote_name
        table = quote(Device._meta.db_table)
        pk_column = quote(Device._meta.pk.column)
        seq_column = quote(Device._meta.get_field("next_seq").column)
        placeholders = ", ".join(["%s"] * len(pks))
        # Only quoted identifiers and placeholders are formatted in; the values are bound.
        sql = (
            f"UPDATE {table} SET {seq_column} = {seq_column} + 1 "  # noqa: S608
            f"WHERE {pk_column} IN ({placeholders}) RETURNING {pk_column}, {seq_column}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, pks)
            rows = cursor.fetchall()
    else:
        Device.objects.filter(pk__in=pks).update(next_seq=F("next_seq") + 1)
        rows = list(Device.objects.filter(pk__in=pks).values_list("pk", "next_seq"))
    return {int(pk): int(next_seq) - 1 for pk, next_seq in rows}


def _check_queue_space(targets: Sequence[_Target]) -> None:
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
            raise _queue_full(target, queued, limit)


def _queue_full(target: _Target, queued: int, limit: int) -> ServiceError:
    return ServiceError(
        ErrorCode.QUEUE_FULL,
        f"device {target.device_id} of {target.username!r} already holds "
        f"{queued} undelivered envelopes (the limit is {limit}); nothing was stored",
    )


def _accepted(
    sender_device: Device,
    now: datetime,
    targets: Iterable[tuple[_Target, int]],
    expires_at_ms: int | None = None,
) -> SendAccepted:
    return SendAccepted(
        server_time_ms=_ms(now),
        sender=sender_device.account.username,
        sender_device=sender_device.device_id,
        deliveries=tuple(Delivery(t.device_pk, seq, t.payload) for t, seq in targets),
        expires_at_ms=expires_at_ms,
    )


# --- group sending ------------------------------------------------------------------------


def _group_targets(
    sender_device: Device, group_pk: int, digest: bytes, payload: bytes
) -> list[_Target]:
    """The roster's devices but the sending one, if ``digest`` is the roster's digest now
    (it covers every device, the sender's own included: docs/protocol.md §17.1)."""
    roster = groups_services.roster(group_pk)
    if roster.digest != digest:
        raise ServiceError(
            ErrorCode.STALE_ROSTER,
            f"roster digest {digest.hex()} is not the group's ({roster.digest.hex()}): fetch "
            "the roster, reconcile sender keys and send again; nothing was stored",
        )
    return [
        _Target(d.device_pk, d.device_id, payload, d.username)
        for d in roster.devices
        if d.device_pk != sender_device.pk
    ]


def enqueue_group_send(
    sender_device: Device,
    group_id: bytes,
    roster_digest: bytes,
    payload: bytes,
    ephemeral: bool,
    *,
    ttl_seconds: int | None = None,
    on_commit: Callable[[SendAccepted], object] | None = None,
) -> SendAccepted:
    """Queue one group message for every roster device but the sending one, all or
    nothing, storing ``payload`` once (docs/protocol.md §17.3, GROUP_SEND).

    The group row is locked first, as membership changes lock it (groups.services), so
    the roster checked against ``roster_digest`` is the one the envelopes go to. An
    ``ephemeral`` send stores nothing (its deliveries carry seq 0); ``ttl_seconds`` as
    for ``enqueue_send``; ``on_commit`` as there.

    Raises ServiceError: UNAUTHORIZED (the sending device was revoked), UNKNOWN_GROUP,
    NOT_A_MEMBER, STALE_ROSTER (also when a roster device is revoked while the send is
    being stored), QUEUE_FULL.
    """
    account_pk = sender_device.account_id
    if ephemeral:
        _check_sender(sender_device)
        group_pk = groups_services.sender_group(account_pk, group_id, lock=False)
        targets = _group_targets(sender_device, group_pk, roster_digest, payload)
        accepted = _accepted(sender_device, timezone.now(), ((t, 0) for t in targets))
        if on_commit is not None:
            transaction.on_commit(partial(on_commit, accepted))
        return accepted

    with transaction.atomic():
        _check_sender(sender_device)
        group_pk = groups_services.sender_group(account_pk, group_id, lock=True)
        targets = _group_targets(sender_device, group_pk, roster_digest, payload)
        seqs = _allocate_seqs([t.device_pk for t in targets])
        if len(seqs) != len(targets):
            raise ServiceError(
                ErrorCode.STALE_ROSTER,
                "a device of the roster was revoked while the send was stored; fetch the "
                "roster and send again; nothing was stored",
            )
        if targets:
            _check_queue_space(targets)
        now = timezone.now()
        expires_at = _expiry(now, ttl_seconds)
        accepted = _accepted(
            sender_device,
            now,
            ((t, seqs[t.device_pk]) for t in targets),
            _ms(expires_at) if ttl_seconds is not None else None,
        )
        if targets:
            shared = SharedPayload.objects.create(payload=payload)
            Envelope.objects.bulk_create(
                [
                    Envelope(
                        device_id=delivery.device_pk,
                        seq=delivery.seq,
                        sender_id=account_pk,
                        sender_device_id=sender_device.device_id,
                        server_time_ms=accepted.server_time_ms,
                        shared=shared,
                        expires_at=expires_at,
                    )
                    for delivery in accepted.deliveries
                ]
            )
        if on_commit is not None:
            transaction.on_commit(partial(on_commit, accepted))
    return accepted


# --- batches: the relay's writer (messaging.writer) ---------------------------------------
#
# The relay stores the SENDs and ACKs of all connections of a process that arrive while
# the previous batch is being committed in one transaction: one commit (one fsync on
# SQLite), one thread hop and a handful of statements per batch instead of per frame.
# Each SEND is still all or nothing and is checked exactly as ``enqueue_send`` checks it;
# a refused send takes no seq and stores nothing, whatever the others in its batch do. The
# caller answers SEND_OK only after ``enqueue_sends`` has returned, i.e. after the commit.


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One SEND frame, for ``enqueue_sends``."""

    sender_device: Device
    recipient: str
    messages: tuple[DeviceMessage, ...]
    ephemeral: bool = False
    ttl_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class AckResult:
    deleted: int
    unknown: tuple[int, ...]  # named seqs the device does not hold, ascending


def enqueue_sends(requests: Sequence[SendRequest]) -> list[SendResult | ServiceError]:
    """Store several SENDs in one transaction; one outcome per request, in order: the
    ``SendAccepted`` or ``SendMismatch`` that ``enqueue_send`` would return, or the
    ``ServiceError`` it would raise.

    Requests are taken in order: two sends to one device get consecutive seqs in request
    order, and the queue limit counts the envelopes of the earlier ones. Whatever the
    number of requests, the statements are: the senders' revocation check, the
    recipients' accounts and devices, the device rows locked (their ``next_seq``), the
    queue counts, one UPDATE per device whose seq moved, and one multi-row INSERT.

    Raises only on a database failure, after which nothing of the batch is stored (the
    writer then stores the requests one by one with ``enqueue_send``).
    """
    outcomes: list[SendResult | ServiceError | None] = [None] * len(requests)
    # No savepoint: inside the writer's transaction a failure must fail the whole batch.
    with transaction.atomic(savepoint=False):
        live = _live_senders({r.sender_device.pk for r in requests})
        recipients = _recipients({r.recipient for r in requests})
        planned: list[tuple[int, SendRequest, list[_Target]]] = []
        for index, request in enumerate(requests):
            sender = request.sender_device
            try:
                _check_distinct(request.messages)
                if live.get(sender.pk) != sender.token_hash:
                    raise ServiceError(ErrorCode.UNAUTHORIZED, "this device has been revoked")
                recipient = recipients.get(request.recipient)
                if recipient is None:
                    raise ServiceError(
                        ErrorCode.UNKNOWN_ACCOUNT, f"no account named {request.recipient!r}"
                    )
            except ServiceError as exc:
                outcomes[index] = exc
                continue
            result = _match(sender, request.recipient, recipient, request.messages)
            if isinstance(result, SendMismatch):
                outcomes[index] = result
            else:
                planned.append((index, request, result))

        stored = sorted(
            {t.device_pk for _, r, targets in planned if not r.ephemeral for t in targets}
        )
        next_seqs = _lock_devices(stored)
        first_seqs = dict(next_seqs)
        queued = _queued_counts(stored)
        limit = _limit("MAX_QUEUE_PER_DEVICE")
        now = timezone.now()
        rows: list[tuple[Any, ...]] = []
        for index, request, targets in planned:
            sender = request.sender_device
            if request.ephemeral:
                outcomes[index] = _accepted(sender, now, ((t, 0) for t in targets))
                continue
            gone = tuple(sorted(t.device_id for t in targets if t.device_pk not in next_seqs))
            if gone:
                # Revoked between the device-list read and the lock.
                outcomes[index] = SendMismatch(missing=(), extra=gone, stale=())
                continue
            full = next((t for t in targets if queued.get(t.device_pk, 0) >= limit), None)
            if full is not None:
                outcomes[index] = _queue_full(full, queued.get(full.device_pk, 0), limit)
                continue
            expires_at = _expiry(now, request.ttl_seconds)
            seqs = {}
            for target in targets:
                seqs[target.device_pk] = next_seqs[target.device_pk]
                next_seqs[target.device_pk] += 1
                queued[target.device_pk] = queued.get(target.device_pk, 0) + 1
            accepted = _accepted(
                sender,
                now,
                ((t, seqs[t.device_pk]) for t in targets),
                _ms(expires_at) if request.ttl_seconds is not None else None,
            )
            outcomes[index] = accepted
            stored_expiry = connection.ops.adapt_datetimefield_value(expires_at)
            rows.extend(
                (
                    delivery.device_pk,
                    delivery.seq,
                    sender.account_id,
                    sender.device_id,
                    accepted.server_time_ms,
                    delivery.payload,
                    stored_expiry,
                )
                for delivery in accepted.deliveries
            )
        if rows:
            moved = [(seq, pk) for pk, seq in next_seqs.items() if seq != first_seqs[pk]]
            _store_next_seqs(moved)
            _insert_envelopes(rows)
    return [outcome for outcome in outcomes if outcome is not None]


def acknowledge_many(requests: Sequence[tuple[int, Sequence[int]]]) -> list[AckResult]:
    """``acknowledge`` for several (device pk, seqs) in one transaction, one result per
    request in order. A seq named twice (in one request or two) is deleted once and
    unknown the second time. Raises only on a database failure (nothing deleted then).
    """
    results = []
    shared: set[int] = set()
    with transaction.atomic(savepoint=False):
        for device_pk, seqs in requests:
            wanted = set(seqs)
            held = _delete_envelopes(device_pk, sorted(wanted))
            shared.update(pk for pk in held.values() if pk is not None)
            results.append(AckResult(len(held), tuple(sorted(wanted - held.keys()))))
        _delete_unreferenced(shared)
    return results


def _live_senders(device_pks: set[int]) -> dict[int, str]:
    """{pk: token_hash} of those devices that exist and whose account is active."""
    pks = sorted(device_pks)
    with connection.cursor() as cursor:
        cursor.execute(_sql().live_senders(len(pks)), [*pks, True])
        return {int(pk): str(token_hash) for pk, token_hash in cursor}


def _lock_devices(device_pks: Sequence[int]) -> dict[int, int]:
    """{pk: next_seq} of these devices, locked until the transaction ends; a device that
    no longer exists is missing. SQLite's IMMEDIATE transaction holds the whole write
    lock already; on PostgreSQL the rows are locked in pk order (as ``_allocate_seqs``
    does), so two batches, or a batch and a group send, cannot deadlock on them."""
    if not device_pks:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_sql().lock_devices(len(device_pks)), list(device_pks))
        return {int(pk): int(seq) for pk, seq in cursor}


def _queued_counts(device_pks: Sequence[int]) -> dict[int, int]:
    if not device_pks:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_sql().queued_counts(len(device_pks)), list(device_pks))
        return {int(pk): int(count) for pk, count in cursor}


class _Sql:
    """The batch's statements, built once per process from the models' table and column
    names. Only quoted identifiers and placeholders are formatted in; values are bound."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model

        q = connection.ops.quote_name
        user = get_user_model()

        def col(model: Any, field: str) -> str:
            return q(model._meta.get_field(field).column)

        self.device = q(Device._meta.db_table)
        self.account = q(Account._meta.db_table)
        self.user = q(user._meta.db_table)
        self.envelope = q(Envelope._meta.db_table)
        self.d_pk, self.a_pk, self.u_pk = col(Device, "id"), col(Account, "id"), col(user, "id")
        self.d_account = col(Device, "account")
        self.d_token = col(Device, "token_hash")
        self.d_device_id = col(Device, "device_id")
        self.d_registration = col(Device, "registration_id")
        self.d_certificate = col(Device, "certificate")
        self.d_next_seq = col(Device, "next_seq")
        self.a_user = col(Account, "user")
        self.a_device_list = col(Account, "device_list")
        self.u_username = col(user, user.USERNAME_FIELD)
        self.u_active = col(user, "is_active")
        self.e_device = col(Envelope, "device")
        self.for_update = " FOR UPDATE" if connection.features.has_select_for_update else ""

    @staticmethod
    def _marks(count: int) -> str:
        return ", ".join(["%s"] * count)

    def live_senders(self, count: int) -> str:
        return (
            f"SELECT d.{self.d_pk}, d.{self.d_token} FROM {self.device} d "  # noqa: S608
            f"JOIN {self.account} a ON a.{self.a_pk} = d.{self.d_account} "
            f"JOIN {self.user} u ON u.{self.u_pk} = a.{self.a_user} "
            f"WHERE d.{self.d_pk} IN ({self._marks(count)}) AND u.{self.u_active} = %s"
        )

    def recipients(self, count: int) -> str:
        return (
            f"SELECT a.{self.a_pk}, u.{self.u_username}, a.{self.a_device_list}, "  # noqa: S608
            f"d.{self.d_pk}, d.{self.d_device_id}, d.{self.d_registration}, "
            f"d.{self.d_certificate} FROM {self.account} a "
            f"JOIN {self.user} u ON u.{self.u_pk} = a.{self.a_user} "
            f"LEFT JOIN {self.device} d ON d.{self.d_account} = a.{self.a_pk} "
            f"WHERE u.{self.u_username} IN ({self._marks(count)})"
        )

    def lock_devices(self, count: int) -> str:
        return (
            f"SELECT {self.d_pk}, {self.d_next_seq} FROM {self.device} "  # noqa: S608
            f"WHERE {self.d_pk} IN ({self._marks(count)}) ORDER BY {self.d_pk}{self.for_update}"
        )

    def queued_counts(self, count: int) -> str:
        return (
            f"SELECT {self.e_device}, COUNT(*) FROM {self.envelope} "  # noqa: S608
            f"WHERE {self.e_device} IN ({self._marks(count)}) GROUP BY {self.e_device}"
        )


@functools.cache
def _sql() -> _Sql:
    return _Sql()


def _store_next_seqs(moved: Sequence[tuple[int, int]]) -> None:
    """(next_seq, pk) pairs, written under the locks ``_lock_devices`` took."""
    if not moved:
        return
    quote = connection.ops.quote_name
    table = quote(Device._meta.db_table)
    pk_column = quote(Device._meta.pk.column)
    seq_column = quote(Device._meta.get_field("next_seq").column)
    sql = f"UPDATE {table} SET {seq_column} = %s WHERE {pk_column} = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.executemany(sql, moved)


_ENVELOPE_COLUMNS = (
    "device",
    "seq",
    "sender",
    "sender_device_id",
    "server_time_ms",
    "payload",
    "expires_at",
)


def _insert_envelopes(rows: Sequence[tuple[Any, ...]]) -> None:
    """1:1 envelopes (own payload, no shared one), as tuples in ``_ENVELOPE_COLUMNS``
    order, in multi-row INSERTs: the ORM's per-object work is most of a SEND's cost."""
    quote = connection.ops.quote_name
    table = quote(Envelope._meta.db_table)
    columns = ", ".join(quote(Envelope._meta.get_field(name).column) for name in _ENVELOPE_COLUMNS)
    row_sql = "(" + ", ".join(["%s"] * len(_ENVELOPE_COLUMNS)) + ")"
    # At most 100 rows (700 parameters) a statement: within every SQLite build's limit.
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 100):
            chunk = rows[start : start + 100]
            values = ", ".join([row_sql] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {values}",  # noqa: S608
                [value for row in chunk for value in row],
            )


def _delete_envelopes(device_pk: int, seqs: Sequence[int]) -> dict[int, int | None]:
    """Delete the device's envelopes with these seqs: {seq: shared_id} of those deleted.
    One DELETE ... RETURNING where the database has it; its row locks (PostgreSQL) make
    two connections acknowledging one seq agree on which of them deleted it."""
    if not seqs:
        return {}
    held: dict[int, int | None]
    if not connection.features.can_return_rows_from_update:
        held = dict(
            Envelope.objects.select_for_update()
            .filter(device_id=device_pk, seq__in=seqs)
            .values_list("seq", "shared_id")
        )
        if held:
            Envelope.objects.filter(device_id=device_pk, seq__in=held).delete()
        return held
    quote = connection.ops.quote_name
    table = quote(Envelope._meta.db_table)
    device_column = quote(Envelope._meta.get_field("device").column)
    seq_column = quote(Envelope._meta.get_field("seq").column)
    shared_column = quote(Envelope._meta.get_field("shared").column)
    held = {}
    with connection.cursor() as cursor:
        # At most 1,000 seqs a statement (an ACK may name 10,000).
        for start in range(0, len(seqs), 1000):
            chunk = seqs[start : start + 1000]
            placeholders = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                f"DELETE FROM {table} WHERE {device_column} = %s "  # noqa: S608
                f"AND {seq_column} IN ({placeholders}) RETURNING {seq_column}, {shared_column}",
                [device_pk, *chunk],
            )
            held.update((int(seq), shared) for seq, shared in cursor.fetchall())
    return held


# --- delivering ---------------------------------------------------------------------------


def pending_envelopes(device: Device, after_seq: int, limit: int) -> list[QueuedEnvelope]:
    """The device's unexpired envelopes with seq > ``after_seq``, in seq order."""
    rows = (
        Envelope.objects.filter(device=device, seq__gt=after_seq, expires_at__gt=timezone.now())
        .order_by("seq")
        .values_list(
            "seq",
            "sender__user__username",
            "sender_device_id",
            "server_time_ms",
            "payload",
            "shared__payload",  # a LEFT JOIN: group envelopes read the one stored copy
        )[:limit]
    )
    return [
        QueuedEnvelope(
            seq, sender, sender_device, server_time_ms, bytes(own if own is not None else shared)
        )
        for seq, sender, sender_device, server_time_ms, own, shared in rows
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
        held = dict(
            Envelope.objects.select_for_update()
            .filter(device=device, seq__in=wanted)
            .values_list("seq", "shared_id")
        )
        deleted = 0
        if held:
            deleted, _ = Envelope.objects.filter(device=device, seq__in=held).delete()
            _delete_unreferenced({pk for pk in held.values() if pk is not None})
    return deleted, sorted(wanted - held.keys())


def _delete_unreferenced(shared_pks: set[int]) -> None:
    """Delete those of these shared payloads that no envelope points at any more: one
    statement. (Two devices acknowledging the last two envelopes of one payload at once
    on PostgreSQL may each still see the other's row; the purge's sweep then deletes it.)"""
    if shared_pks:
        SharedPayload.objects.filter(pk__in=shared_pks).exclude(
            Exists(Envelope.objects.filter(shared_id=OuterRef("pk")))
        ).delete()


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

    Works in batches of at most ``batch`` rows, each its own transaction; each batch also
    deletes the shared payloads whose last envelope it deleted. Then sweeps the shared
    payloads no envelope points at (their envelopes went with their device), also in
    batches; those are not counted.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    cutoff = now or timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            rows = list(
                Envelope.objects.filter(expires_at__lte=cutoff)
                .order_by("pk")
                .values_list("pk", "shared_id")[:batch]
            )
            if not rows:
                break
            deleted, _ = Envelope.objects.filter(
                pk__in=[pk for pk, _ in rows], expires_at__lte=cutoff
            ).delete()
            _delete_unreferenced({shared for _, shared in rows if shared is not None})
        total += deleted
    _sweep_shared_payloads(batch)
    return total


def _sweep_shared_payloads(batch: int) -> int:
    """Delete shared payloads that no envelope points at; the number deleted."""
    swept = 0
    while True:
        with transaction.atomic():
            pks = list(
                SharedPayload.objects.exclude(
                    Exists(Envelope.objects.filter(shared_id=OuterRef("pk")))
                )
                .order_by("pk")
                .values_list("pk", flat=True)[:batch]
            )
            if not pks:
                return swept
            swept += (
                SharedPayload.objects.filter(pk__in=pks)
                .exclude(Exists(Envelope.objects.filter(shared_id=OuterRef("pk"))))
                .delete()[0]
            )
