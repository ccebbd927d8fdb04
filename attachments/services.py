"""Attachment blobs: the only code that writes Blob and BlobPart rows or attachment files.

docs/protocol.md §17.5: the client encrypts a file into a blob of ``size + 16 n`` bytes; the
server stores that blob under a random 128-bit id and never learns the file's name, type
or key. Uploads are resumable (docs/api.md, "Attachments"): the blob is announced with its
size, then appended chunk by chunk at the offset the server has reached, so a client that
lost its connection asks for the offset and continues from there.

Storage. Bytes go through Django's storage API only (``STORAGES["attachments"]``), so a
directory or an S3-compatible bucket is configuration. The storage API has no append, so
each accepted chunk is its own object, ``blobs/<id>/<offset:012d>-<random>``, named by a
BlobPart row, and a download streams the parts in order (a Range seeks into the first
one). Composing one object on completion was the alternative; it would read and write
every blob a second time (on S3, a second upload of up to 100 MiB) and a crash midway
would leave a half-composed object to clean up, while parts cost one row per chunk. The
random suffix is there because two PATCHes may race for one offset: each writes its own
object (S3 would silently overwrite a shared name), and the loser deletes only its own.

Each chunk is all or nothing. The view reads the whole body before calling here; the
object is written first, then, under the blob's row lock, the offset is checked again and
the part row and the new offset are committed together. A chunk refused at that point
(another PATCH got there first, the blob expired) has its object deleted at once. A crash
between the write and the commit leaves an object that no row names: it is never served,
and the purge of its blob deletes it (the purge deletes everything under ``blobs/<id>/``).

What this module deletes, and what it never deletes:

* ``append_chunk`` deletes only the object it wrote itself, when its chunk is refused.
* ``purge_expired_blobs`` deletes blobs whose ``expires_at`` has passed: the rows in
  bounded batches, each batch one transaction, and the batch's objects once it has
  committed (a storage delete cannot be rolled back, so it never runs before the rows are
  gone). A crash between the commit and the deletes leaves objects that no row names.
* Nothing here deletes an unexpired blob, or anything of an account or device.

The server never reads the bytes, and never logs them.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from keys.models import Account, Device
from project.errors import ServiceError
from protocol.errors import ErrorCode
from protocol.limits import MAX_TTL_SECONDS

from .models import Blob, BlobPart

ID_BYTES: Final = 16  # a blob id is 16 random bytes, written as 32 lower-case hex digits
STORAGE_ALIAS: Final = "attachments"
PARTS_DIR: Final = "blobs"
# The chunk size a client is told to use, and the largest PATCH body taken.
SUGGESTED_CHUNK_BYTES: Final = 1024 * 1024
MAX_CHUNK_BYTES: Final = 4 * 1024 * 1024
# An upload not finished within this expires, and the purge deletes what it stored.
INCOMPLETE_TTL: Final = timedelta(hours=24)
# The daily upload quota counts the bytes of the blobs an account created in this window.
QUOTA_WINDOW: Final = timedelta(hours=24)
# Downloads are read from the storage in pieces of this size.
READ_BYTES: Final = 64 * 1024


def _limit(name: str) -> int:
    return int(settings.SEALPOST[name])


def storage() -> Storage:
    """The attachments storage (looked up on every call: tests swap it per test)."""
    return storages[STORAGE_ALIAS]


def _refusal(code: ErrorCode, message: str, **details: Any) -> ServiceError:
    return ServiceError(code, message, details=details or None)


def _field_refusal(code: ErrorCode, field: str, message: str) -> ServiceError:
    return ServiceError(
        code, f"{field}: {message}", fields={field: [{"code": code.slug, "message": message}]}
    )


def _part_name(blob_id: str, offset: int) -> str:
    return f"{PARTS_DIR}/{blob_id}/{offset:012d}-{secrets.token_hex(4)}"


# --- creating a blob ----------------------------------------------------------------------


def create_blob(device: Device, size: int, ttl_seconds: int | None = None) -> Blob:
    """Announce a blob of ``size`` encrypted bytes, uploaded by ``device``.

    ``ttl_seconds`` (1 .. MAX_TTL_SECONDS; a disappearing message's timer) shortens the
    blob's life once complete to ``completed_at + ttl_seconds`` (never past the usual
    ``created_at`` + retention): the message's SEND, made after the upload with EXPIRES
    and the same ttl, keeps its envelopes at least that long, so the blob never outlives
    the message. The upload itself still has its 24 hours.

    Raises ServiceError: INVALID_REQUEST (``ttl_seconds`` out of range),
    ATTACHMENT_TOO_LARGE (above ``MAX_ATTACHMENT_BLOB_BYTES``, or above the daily quota
    itself), RATE_LIMITED (the account's uploads of the last 24 hours
    plus this one would exceed ``ATTACHMENT_BYTES_PER_DAY``; ``retry_after`` says when
    enough of them leave the window).
    """
    if size < 1:
        raise _field_refusal(ErrorCode.INVALID_REQUEST, "size", f"{size} is not at least 1")
    if ttl_seconds is not None and not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise _field_refusal(
            ErrorCode.INVALID_REQUEST,
            "ttl_seconds",
            f"{ttl_seconds} is not between 1 and {MAX_TTL_SECONDS}",
        )
    limit = _limit("MAX_ATTACHMENT_BLOB_BYTES")
    if size > limit:
        raise _field_refusal(
            ErrorCode.ATTACHMENT_TOO_LARGE,
            "size",
            f"{size} bytes is above the limit of {limit} bytes per attachment blob",
        )
    quota = _limit("ATTACHMENT_BYTES_PER_DAY")
    if size > quota:
        raise _field_refusal(
            ErrorCode.ATTACHMENT_TOO_LARGE,
            "size",
            f"{size} bytes is above this server's upload quota of {quota} bytes a day",
        )
    with transaction.atomic():
        # Serialises the account's creations, so two cannot both fit the last of the quota.
        Account.objects.select_for_update().filter(pk=device.account_id).first()
        now = timezone.now()
        _check_quota(device.account_id, size, quota, now)
        ttl = timedelta(seconds=_limit("ATTACHMENT_TTL_SECONDS"))
        return Blob.objects.create(
            id=secrets.token_bytes(ID_BYTES).hex(),
            account_id=device.account_id,
            device=device,
            size=size,
            created_at=now,
            expires_at=now + min(INCOMPLETE_TTL, ttl),
            ttl_seconds=ttl_seconds,
        )


def _check_quota(account_pk: int, size: int, quota: int, now: datetime) -> None:
    """A rolling 24-hour window: the sizes of the blobs the account created in it count,
    finished or not (a size is a reservation). ``size <= quota`` is checked already."""
    recent = list(
        Blob.objects.filter(account_id=account_pk, created_at__gt=now - QUOTA_WINDOW)
        .order_by("created_at")
        .values_list("created_at", "size")
    )
    used = sum(blob_size for _, blob_size in recent)
    excess = used + size - quota
    if excess <= 0:
        return
    # The oldest blobs leave the window first; wait until enough of them have.
    freed = 0
    wait = QUOTA_WINDOW
    for created_at, blob_size in recent:
        freed += blob_size
        if freed >= excess:
            wait = created_at + QUOTA_WINDOW - now
            break
    retry_after = max(1, math.ceil(wait.total_seconds()))
    raise ServiceError(
        ErrorCode.RATE_LIMITED,
        f"this account created {used} bytes of attachments in the last 24 hours; "
        f"{size} more would exceed its quota of {quota} bytes a day; retry in {retry_after} s",
        retry_after=retry_after,
    )


# --- uploading ----------------------------------------------------------------------------


def _live_blob(blob_id: str, queryset: QuerySet[Blob] | None = None) -> Blob:
    blob = (queryset if queryset is not None else Blob.objects).filter(pk=blob_id).first()
    if blob is None:
        raise _refusal(ErrorCode.UNKNOWN_ATTACHMENT, f"no attachment {blob_id}")
    if blob.expires_at <= timezone.now():
        raise _refusal(ErrorCode.ATTACHMENT_EXPIRED, f"attachment {blob_id} has expired")
    return blob


def upload_state(blob_id: str) -> Blob:
    """The blob, for its resume point (``offset``) and ``size``. Raises ServiceError:
    UNKNOWN_ATTACHMENT, ATTACHMENT_EXPIRED."""
    return _live_blob(blob_id)


def _check_append(blob: Blob, device: Device, offset: int, length: int) -> None:
    if blob.device_id != device.pk:
        raise _refusal(
            ErrorCode.FORBIDDEN, f"only the device that created attachment {blob.id} uploads it"
        )
    if blob.is_complete:
        raise _refusal(
            ErrorCode.UPLOAD_OFFSET_MISMATCH,
            f"attachment {blob.id} is complete: all {blob.size} bytes are stored",
            offset=blob.offset,
        )
    if offset != blob.offset:
        raise _refusal(
            ErrorCode.UPLOAD_OFFSET_MISMATCH,
            f"Upload-Offset {offset} is not the stored offset {blob.offset}; "
            f"continue from {blob.offset}",
            offset=blob.offset,
        )
    if offset + length > blob.size:
        raise _refusal(
            ErrorCode.INVALID_REQUEST,
            f"{length} bytes at offset {offset} run past the blob's size of {blob.size} bytes",
        )


def append_chunk(device: Device, blob_id: str, offset: int, data: bytes) -> Blob:
    """Store ``data`` at ``offset``, which must be the blob's current offset; returns the
    blob with its new offset (complete, and given its retention, when that is its size).

    Raises ServiceError: UNKNOWN_ATTACHMENT, ATTACHMENT_EXPIRED, FORBIDDEN (not the
    uploading device), UPLOAD_OFFSET_MISMATCH (``details["offset"]`` is the stored offset;
    also once the upload is complete), INVALID_REQUEST (past the blob's size).
    """
    _check_append(_live_blob(blob_id), device, offset, len(data))
    files = storage()
    name = files.save(_part_name(blob_id, offset), ContentFile(data))
    try:
        with transaction.atomic():
            blob = _live_blob(blob_id, Blob.objects.select_for_update())
            _check_append(blob, device, offset, len(data))
            BlobPart.objects.create(blob=blob, offset=offset, size=len(data), name=name)
            blob.offset = offset + len(data)
            changed = ["offset"]
            if blob.offset == blob.size:
                blob.completed_at = timezone.now()
                blob.expires_at = completed_expiry(blob)
                changed += ["completed_at", "expires_at"]
            blob.save(update_fields=changed)
    except BaseException:
        files.delete(name)
        raise
    return blob


def completed_expiry(blob: Blob) -> datetime:
    """When a complete blob expires: its creation plus the region's retention, or its
    completion plus its ``ttl_seconds`` if that is sooner."""
    expires = blob.created_at + timedelta(seconds=_limit("ATTACHMENT_TTL_SECONDS"))
    if blob.ttl_seconds is not None and blob.completed_at is not None:
        expires = min(expires, blob.completed_at + timedelta(seconds=blob.ttl_seconds))
    return expires


# --- downloading --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredPart:
    name: str
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A complete blob as a download reads it: its parts, in order."""

    id: str
    size: int
    parts: tuple[StoredPart, ...]


def stored_blob(blob_id: str) -> StoredBlob:
    """The complete blob ``blob_id``. Raises ServiceError: UNKNOWN_ATTACHMENT,
    ATTACHMENT_EXPIRED (also when its objects are gone from the storage),
    UPLOAD_INCOMPLETE (``details["offset"]`` is how far the upload got)."""
    blob = _live_blob(blob_id)
    if not blob.is_complete:
        raise _refusal(
            ErrorCode.UPLOAD_INCOMPLETE,
            f"attachment {blob_id} is still being uploaded ({blob.offset} of {blob.size} bytes)",
            offset=blob.offset,
        )
    parts = tuple(
        StoredPart(name, offset, size)
        for name, offset, size in blob.parts.order_by("offset").values_list(
            "name", "offset", "size"
        )
    )
    if not parts or not storage().exists(parts[0].name):
        raise _refusal(ErrorCode.ATTACHMENT_EXPIRED, f"attachment {blob_id} is no longer stored")
    return StoredBlob(blob.id, blob.size, parts)


def read_blob(blob: StoredBlob, start: int, end: int) -> Generator[bytes]:
    """Bytes ``start`` up to (not including) ``end`` of the blob, in pieces of at most
    READ_BYTES, one part open at a time."""
    files = storage()
    for part in blob.parts:
        part_end = part.offset + part.size
        if part_end <= start or part.offset >= end:
            continue
        position = max(start, part.offset) - part.offset
        remaining = min(end, part_end) - part.offset - position
        with files.open(part.name, "rb") as handle:
            if position:
                handle.seek(position)
            while remaining > 0:
                piece = handle.read(min(READ_BYTES, remaining))
                if not piece:
                    raise OSError(f"part {part.offset} of attachment {blob.id} is cut short")
                remaining -= len(piece)
                yield piece


async def aread_blob(blob: StoredBlob, start: int, end: int) -> AsyncIterator[bytes]:
    """``read_blob`` for an ASGI response: each piece is read in a worker thread, so a
    download holds no thread between pieces and never sits in memory whole (Django would
    load a synchronous iterator into a list before sending it over ASGI)."""
    pieces = read_blob(blob, start, end)
    step = sync_to_async(partial(next, pieces, None), thread_sensitive=False)
    try:
        while (piece := await step()) is not None:
            yield piece
    finally:
        try:
            pieces.close()
        except ValueError:
            pass  # a cancelled read still runs in its thread; the file closes with the generator


# --- retention ----------------------------------------------------------------------------


def purge_expired_blobs(now: datetime, batch: int) -> int:
    """Delete blobs whose ``expires_at`` is at or before ``now``, with their parts and
    objects; the number of blobs deleted. ``batch`` blobs per transaction; each batch's
    objects are deleted once it has committed."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                Blob.objects.filter(expires_at__lte=now)
                .select_for_update()
                .order_by("pk")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                return total
            names = list(BlobPart.objects.filter(blob_id__in=ids).values_list("name", flat=True))
            _, per_model = Blob.objects.filter(pk__in=ids).delete()
            # robust: a storage that fails to delete is logged (by Django) and does not stop
            # the purge of the next batch or kind (its objects are then left without rows).
            transaction.on_commit(partial(_delete_objects, ids, names), robust=True)
        total += per_model.get(Blob._meta.label, 0)


def _delete_objects(blob_ids: list[str], names: list[str]) -> None:
    """Delete the parts' objects, then anything else under each blob's prefix (an object a
    crash left without a row), then, on a filesystem, the emptied directories."""
    files = storage()
    for name in names:
        files.delete(name)
    for blob_id in blob_ids:
        prefix = f"{PARTS_DIR}/{blob_id}"
        try:
            _, leftovers = files.listdir(prefix)
        except FileNotFoundError:
            continue
        for leftover in leftovers:
            files.delete(f"{prefix}/{leftover}")
        _remove_empty_directory(files, prefix)


def _remove_empty_directory(files: Storage, name: str) -> None:
    """Object stores have no directories; a filesystem keeps an empty one per blob."""
    try:
        path = files.path(name)
    except NotImplementedError:
        return
    try:
        os.rmdir(path)
    except OSError:
        pass  # not empty (an upload raced the purge) or already gone
