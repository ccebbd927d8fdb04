"""What export and erasure do with attachment blobs (compliance.subject_data).

Export: each blob the person uploaded, with its parts, and the ciphertext of each complete
one as ``files/attachments.blob/<id>.bin`` (the server cannot decrypt it; the key travels
inside the end-to-end encrypted message). Erasure: the person's blobs expire at once and
are deleted, with their stored objects, through the purge's own path, so no object is left
behind without its row.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from attachments import services
from attachments.models import Blob, BlobPart
from compliance.subject_data import Kept, Subject, register
from project.errors import ServiceError


def _blobs(subject: Subject) -> QuerySet[Blob]:
    if subject.account_id is None:
        return Blob.objects.none()
    return Blob.objects.filter(account_id=subject.account_id)


def _ciphertext(blob: Blob) -> Iterator[tuple[str, bytes]]:
    if not blob.is_complete:
        return
    try:
        stored = services.stored_blob(blob.id)
    except ServiceError:  # expired, or its objects already gone
        return
    yield f"{blob.id}.bin", b"".join(services.read_blob(stored, 0, stored.size))


def _erase_blobs(subject: Subject, now: datetime) -> Kept | None:
    _blobs(subject).update(expires_at=now)
    services.purge_expired_blobs(now, 1000)
    return None


register(
    BlobPart,
    rows=lambda s: BlobPart.objects.filter(blob__in=_blobs(s)),
    export=lambda p: {"blob_id": p.blob_id, "offset": p.offset, "size": p.size},
    # Deleted with their blob, below.
    erase="cascade",
)


def _blob_row(blob: Blob) -> dict[str, Any]:
    return {
        "size": blob.size,
        "uploaded_bytes": blob.offset,
        "device_id": blob.device.device_id if blob.device else None,
        "created_at": blob.created_at,
        "completed_at": blob.completed_at,
        "expires_at": blob.expires_at,
        "ttl_seconds": blob.ttl_seconds,
        "ciphertext_file": f"files/attachments.blob/{blob.id}.bin" if blob.is_complete else None,
    }


register(
    Blob,
    rows=lambda s: _blobs(s).select_related("device"),
    export=_blob_row,
    erase=_erase_blobs,
    files=_ciphertext,
)
