"""Data-subject requests: export everything the server holds about a person, or erase it.
(Part of the compliance service layer: the API, the web page, the admin and the
management commands all go through these verbs.)

A request is recorded when it arrives (``open_request``), with its deadline under the
region's law (``data_subject_requests.access`` for an export, ``.erasure`` for an erasure,
counted from receipt), and completed by ``run_request``. The server answers both at once;
the deadline is tracked all the same, for a request an operator runs later from the admin.

An export is a zip (``compliance.subject_data.export_archive``) kept on the request row
for ``ARCHIVE_DAYS`` for download, then dropped by the purge. An erasure deletes every
registered row of the person except what a law keeps, and stores its report on the
request row, which itself stays (pseudonymised) as proof that the request was answered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from compliance.connections import expired_ids
from compliance.models import AdminAuditLog, ConsentRecord, DataSubjectRequest
from compliance.subject_data import ErasureReport, Subject, erase, export_archive
from keys.models import Account
from project.errors import ServiceError
from protocol.errors import ErrorCode

Kind = Literal["export", "erasure"]
Channel = Literal["web", "api", "admin", "command"]
ARCHIVE_DAYS: Final = 7
Progress = Callable[[str], None]


def deadline_for(kind: Kind, received_at: datetime) -> datetime:
    requests = settings.POLICY.data_subject_requests
    rule = requests.access if kind == "export" else requests.erasure
    return rule.deadline.after(received_at)


def open_request(
    account: Account, kind: Kind, channel: Channel, *, now: datetime | None = None
) -> DataSubjectRequest:
    """Record a request as received, with its deadline."""
    if kind not in ("export", "erasure"):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"kind: {kind!r} is not export or erasure",
            fields={"kind": [{"code": "invalid_request", "message": "export or erasure"}]},
        )
    moment = now or timezone.now()
    policy = settings.POLICY
    return DataSubjectRequest.objects.create(
        account=account,
        username=account.username,
        kind=kind,
        channel=channel,
        region=policy.region.id,
        policy_version=policy.version,
        received_at=moment,
        deadline=deadline_for(kind, moment),
    )


def run_request(
    request: DataSubjectRequest,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> DataSubjectRequest:
    """Answer a received request: build the export, or erase the account."""
    if request.status == "completed":
        return request
    if request.account_id is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"request {request.pk}: its account is gone")
    if request.kind == "export":
        return _run_export(request, now=now, progress=progress)
    _run_erasure(request, now=now, progress=progress)
    request.refresh_from_db()
    return request


def _subject(request: DataSubjectRequest) -> Subject:
    if request.account is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"request {request.pk}: its account is gone")
    return Subject.of(request.account)


def _run_export(
    request: DataSubjectRequest, *, now: datetime | None, progress: Progress | None
) -> DataSubjectRequest:
    archive = export_archive(_subject(request), now=now, progress=progress)
    moment = now or timezone.now()
    request.archive = archive
    request.archive_expires_at = moment + timedelta(days=ARCHIVE_DAYS)
    request.status = "completed"
    request.completed_at = moment
    request.report = json.dumps({"archive_bytes": len(archive)})
    request.save(
        update_fields=["archive", "archive_expires_at", "status", "completed_at", "report"]
    )
    return request


def _run_erasure(
    request: DataSubjectRequest, *, now: datetime | None, progress: Progress | None
) -> ErasureReport:
    moment = now or timezone.now()
    with transaction.atomic():
        subject = _subject(request)
        report = erase(subject, now=moment, progress=progress)
        # The request row itself was pseudonymised by the erasure (it is kept as proof).
        DataSubjectRequest.objects.filter(pk=request.pk).update(
            status="completed", completed_at=moment, report=json.dumps(report.as_json())
        )
    return report


def export_user(account: Account, *, channel: Channel = "command") -> bytes:
    """Export everything about ``account`` as a zip, recorded as a completed request."""
    request = run_request(open_request(account, "export", channel))
    return bytes(request.archive or b"")


def erase_user(
    account: Account, *, channel: Channel = "command", progress: Progress | None = None
) -> ErasureReport:
    """Erase ``account`` and everything about it but what a law keeps; the report says
    what was kept, why and until when."""
    request = open_request(account, "erasure", channel)
    return _run_erasure(request, now=None, progress=progress)


def archive_of(account: Account, request_id: int, *, now: datetime | None = None) -> bytes:
    """The export archive of one of ``account``'s requests, while it may be downloaded."""
    request = DataSubjectRequest.objects.filter(pk=request_id, account=account).first()
    if request is None or request.kind != "export":
        raise ServiceError(ErrorCode.NOT_FOUND, f"no export request {request_id} of yours")
    if request.status != "completed":
        raise ServiceError(ErrorCode.NOT_FOUND, f"export request {request_id} is not done yet")
    if request.archive is None or (
        request.archive_expires_at is not None
        and request.archive_expires_at <= (now or timezone.now())
    ):
        raise ServiceError(
            ErrorCode.NOT_FOUND,
            f"the archive of request {request_id} was deleted after {ARCHIVE_DAYS} days: "
            "ask for a new export",
        )
    return bytes(request.archive)


# --- retention of the records themselves -------------------------------------------------


def purge_export_archives(now: datetime, batch_size: int) -> int:
    """Drop export archives past their download window (the request rows stay)."""
    cleared = 0
    while True:
        with transaction.atomic():
            ids = list(
                DataSubjectRequest.objects.filter(
                    archive__isnull=False, archive_expires_at__lte=now
                ).values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return cleared
            cleared += DataSubjectRequest.objects.filter(pk__in=ids).update(archive=None)


def purge_audit_records(now: datetime, batch_size: int) -> int:
    """Delete audit records older than the region's ``retention.audit_records`` maximum:
    admin audit entries, answered data-subject requests, and consent records that a newer
    answer for the same purpose has replaced (the answer in force is never purged)."""
    keep = settings.POLICY.retention.audit_records.maximum
    deleted = 0
    for queryset, field in (
        (AdminAuditLog.objects.all(), "at"),
        (DataSubjectRequest.objects.filter(status="completed"), "completed_at"),
    ):
        while True:
            with transaction.atomic():
                ids = expired_ids(queryset, field, keep, now, batch_size)
                if not ids:
                    break
                deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]
    done: set[int] = set()
    while True:
        with transaction.atomic():
            old = ConsentRecord.objects.exclude(pk__in=done)
            chunk = expired_ids(old, "recorded_at", keep, now, batch_size)
            if not chunk:
                return deleted
            done.update(chunk)
            superseded = [
                record.pk
                for record in ConsentRecord.objects.filter(pk__in=chunk)
                if ConsentRecord.objects.filter(
                    Q(recorded_at__gt=record.recorded_at)
                    | Q(recorded_at=record.recorded_at, pk__gt=record.pk),
                    account_id=record.account_id,
                    purpose=record.purpose,
                ).exists()
            ]
            if superseded:
                deleted += ConsentRecord.objects.filter(pk__in=superseded).remove()
