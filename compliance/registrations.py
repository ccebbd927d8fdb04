"""What export and erasure do with the login, the keys and messaging apps' models, Django's
own (admin log, sessions) and the compliance app's: the entries of
``compliance.subject_data``'s registry for the apps that were here before it. A newer
app registers its models in its own ``<app>/subject_data.py``.

Exports carry public keys (base64) and metadata only: never a message payload, a token
hash or a password hash.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.db.models import Max, Q, QuerySet
from django.db.models.functions import Coalesce, Length

from compliance.models import (
    AdminAuditLog,
    AgeCheck,
    ConnectionLog,
    ConsentRecord,
    DataSubjectRequest,
)
from compliance.subject_data import Kept, Subject, register
from keys.models import Account, Device, KemPreKey, LinkToken, OneTimePreKey
from messaging.models import Envelope

User = get_user_model()

AUDIT_REASON = (
    "kept for the audit-record retention to show the request was handled in time "
    "(accountability, e.g. GDPR art. 5(2)); the username replaced by a pseudonym"
)


def _b64(data: bytes | memoryview | None) -> str:
    return base64.b64encode(bytes(data or b"")).decode("ascii")


def _none[T](model: type[T]) -> QuerySet[Any]:
    return model.objects.none()  # type: ignore[attr-defined]


def _of_account(model: Any, subject: Subject, path: str = "account_id") -> QuerySet[Any]:
    if subject.account_id is None:
        return _none(model)
    return model.objects.filter(**{path: subject.account_id})


# --- the login and the keys app -----------------------------------------------------------------

register(
    User,
    rows=lambda s: User.objects.filter(pk=s.user_id),
    export=lambda u: {
        "username": u.get_username(),
        "email": getattr(u, "email", ""),
        "date_joined": getattr(u, "date_joined", None),
        "last_login": u.last_login,
        "is_active": u.is_active,
        "is_staff": getattr(u, "is_staff", False),
    },
)

register(
    Account,
    rows=lambda s: Account.objects.filter(user_id=s.user_id),
    export=lambda a: {
        "username": a.username,
        "identity_key_b64": _b64(a.identity_key),
        "device_list_b64": _b64(a.device_list),
        "device_list_version": a.device_list_version,
        "created_at": a.created_at,
    },
)

register(
    Device,
    rows=lambda s: _of_account(Device, s),
    export=lambda d: {
        "device_id": d.device_id,
        "name": d.name,
        "registration_id": d.registration_id,
        "identity_key_b64": _b64(d.identity_key),
        "certificate_b64": _b64(d.certificate),
        "signed_prekey_b64": _b64(d.signed_prekey),
        "last_resort_kem_prekey_b64": _b64(d.last_resort_kem_prekey),
        "created_at": d.created_at,
        "last_seen_at": d.last_seen_at,
    },
)


def _prekey(prekey: Any) -> dict[str, Any]:
    return {
        "device_id": prekey.device.device_id,
        "key_id": prekey.key_id,
        "encoded_b64": _b64(prekey.encoded),
    }


register(
    OneTimePreKey,
    rows=lambda s: _of_account(OneTimePreKey, s, "device__account_id").select_related("device"),
    export=_prekey,
)
register(
    KemPreKey,
    rows=lambda s: _of_account(KemPreKey, s, "device__account_id").select_related("device"),
    export=_prekey,
)
register(
    LinkToken,
    rows=lambda s: _of_account(LinkToken, s),
    export=lambda t: {"created_at": t.created_at, "expires_at": t.expires_at, "used_at": t.used_at},
)

# --- messaging: queued envelopes, metadata only -------------------------------------------


def _envelopes(subject: Subject) -> QuerySet[Any]:
    if subject.account_id is None:
        return _none(Envelope)
    mine = Q(device__account_id=subject.account_id) | Q(sender_id=subject.account_id)
    return (
        Envelope.objects.filter(mine)
        .defer("payload")
        # A group send's ciphertext is stored once, shared by its envelopes.
        .annotate(size=Coalesce(Length("payload"), Length("shared__payload")))
        .select_related("device__account__user", "sender__user")
    )


register(
    Envelope,
    rows=_envelopes,
    export=lambda e: {
        "recipient": e.device.account.username,
        "recipient_device_id": e.device.device_id,
        "seq": e.seq,
        "sender": e.sender.username,
        "sender_device_id": e.sender_device_id,
        "server_time_ms": e.server_time_ms,
        "expires_at": e.expires_at,
        "size_bytes": e.size,
    },
)

# --- Django's own: the admin's log and sessions -----------------------------------------------


def _log_entries(subject: Subject) -> QuerySet[Any]:
    """Entries by the person (as an operator) and about their login, account or devices."""
    about = Q(content_type=ContentType.objects.get_for_model(User), object_id=str(subject.user_id))
    if subject.account_id is not None:
        device_ids = [str(pk) for pk in _of_account(Device, subject).values_list("pk", flat=True)]
        about |= Q(
            content_type=ContentType.objects.get_for_model(Account),
            object_id=str(subject.account_id),
        ) | Q(content_type=ContentType.objects.get_for_model(Device), object_id__in=device_ids)
    return LogEntry.objects.filter(Q(user_id=subject.user_id) | about)


register(
    LogEntry,
    rows=_log_entries,
    export=lambda e: {
        "action_time": e.action_time,
        "action": e.get_action_flag_display(),
        "object": e.object_repr,
        "change": e.get_change_message(),
    },
    # The compliance app's AdminAuditLog keeps a pseudonymised copy of each.
    erase="delete",
)


def _sessions(subject: Subject) -> QuerySet[Any]:
    # Sessions store the user id inside their encoded data: the only way to find a
    # person's is to decode each (an erasure is rare enough for that).
    keys = [
        session.session_key
        for session in Session.objects.all().iterator()
        if str(session.get_decoded().get("_auth_user_id")) == str(subject.user_id)
    ]
    return Session.objects.filter(session_key__in=keys)


register(Session, rows=_sessions, export=lambda s: {"expires": s.expire_date}, erase="delete")

# --- the compliance app's own records ------------------------------------------------------------

register(
    ConsentRecord,
    rows=lambda s: _of_account(ConsentRecord, s),
    export=lambda c: {
        "purpose": c.purpose,
        "granted": c.granted,
        "policy_version": c.policy_version,
        "recorded_at": c.recorded_at,
        "method": c.method,
    },
)
register(
    AgeCheck,
    rows=lambda s: _of_account(AgeCheck, s),
    export=lambda a: {
        "method": a.method,
        "self_consent_from": a.self_consent_from,
        "policy_version": a.policy_version,
        "checked_at": a.checked_at,
    },
)


def _erase_connection_logs(subject: Subject, now: datetime) -> Kept | None:
    rule = settings.POLICY.retention.connection_logs
    rows = _of_account(ConnectionLog, subject)
    if rule.minimum.is_zero:
        rows.delete()
        return None
    floor = rule.minimum.before(now)
    rows.filter(connected_at__lt=floor).delete()
    kept = _of_account(ConnectionLog, subject)
    newest = kept.aggregate(newest=Max("connected_at"))["newest"]
    count = kept.update(account=None, subject=subject.pseudonym)
    if not count:
        return None
    law = rule.legal_floor.law if rule.legal_floor else f"the region's minimum of {rule.minimum}"
    return Kept(count, f"legal minimum retention: {law}", rule.maximum.after(newest))


register(
    ConnectionLog,
    rows=lambda s: _of_account(ConnectionLog, s),
    export=lambda c: {"device_id": c.device_id, "ip": c.ip, "connected_at": c.connected_at},
    erase=_erase_connection_logs,
    keep_reason="rows younger than the region's legal minimum (Marco Civil art. 15 in Brazil, "
    "CERT-In in India) stay, pseudonymised, until the purge deletes them at the maximum",
)


def _audit_until(latest: datetime | None) -> datetime | None:
    return settings.POLICY.retention.audit_records.maximum.after(latest) if latest else None


def _erase_requests(subject: Subject, now: datetime) -> Kept | None:
    rows = _of_account(DataSubjectRequest, subject)
    latest = rows.aggregate(latest=Max("received_at"))["latest"]
    count = rows.update(account=None, username=subject.pseudonym, archive=None)
    return Kept(count, AUDIT_REASON, _audit_until(latest)) if count else None


register(
    DataSubjectRequest,
    rows=lambda s: _of_account(DataSubjectRequest, s),
    export=lambda r: {
        "kind": r.kind,
        "status": r.status,
        "channel": r.channel,
        "received_at": r.received_at,
        "deadline": r.deadline,
        "completed_at": r.completed_at,
    },
    erase=_erase_requests,
    keep_reason=AUDIT_REASON,
)


def _audit_rows(subject: Subject) -> QuerySet[Any]:
    about = Q(subject_id=subject.account_id) if subject.account_id is not None else Q(pk__in=[])
    return AdminAuditLog.objects.filter(Q(actor_id=subject.user_id) | about)


def _erase_audit(subject: Subject, now: datetime) -> Kept | None:
    rows = list(_audit_rows(subject))
    for row in rows:
        if row.actor_id == subject.user_id:
            row.actor = None
            row.actor_name = subject.pseudonym
        row.subject = None
        row.object_repr = row.object_repr.replace(subject.username, subject.pseudonym)
        row.detail = row.detail.replace(subject.username, subject.pseudonym)
        row.save(update_fields=["actor", "actor_name", "subject", "object_repr", "detail"])
    latest = max((row.at for row in rows), default=None)
    return Kept(len(rows), AUDIT_REASON, _audit_until(latest)) if rows else None


register(
    AdminAuditLog,
    rows=_audit_rows,
    export=lambda a: {
        "at": a.at,
        "actor": a.actor_name,
        "action": a.action,
        "object": a.object_repr,
        "detail": a.detail,
    },
    erase=_erase_audit,
    keep_reason=AUDIT_REASON,
)
