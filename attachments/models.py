"""Attachment blobs and the stored parts they are made of. Nothing here is readable: the
bytes are ciphertext (docs/protocol.md §17.5), and they live in the attachments storage,
not in the database; a row only says how much of which blob has arrived, and where.
"""

from __future__ import annotations

from django.db import models

from keys.models import Account, Device


class Blob(models.Model):
    """One encrypted attachment, uploaded in chunks at increasing offsets.

    ``id`` is 16 random bytes as 32 lower-case hex digits: it is the blob's only name and,
    since downloading needs nothing else, a capability (it travels inside the end-to-end
    encrypted ATTACHMENT pointer). The uploader is kept for the upload itself (only its
    device may append) and for the account's daily quota; a deleted device or account
    leaves the blob to its expiry, because the recipients it was sent to may still need
    it, and because only the purge deletes a blob's files with its row (a cascade would
    leave the files behind).
    """

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.SET_NULL, related_name="blobs"
    )
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="blobs"
    )
    size = models.PositiveBigIntegerField(help_text="the encrypted blob's length in bytes")
    offset = models.PositiveBigIntegerField(default=0, help_text="bytes received so far")
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    # Created + 24 hours while the upload is incomplete; created + the region policy's
    # retention.attachments.maximum once it is complete (attachments.services), or sooner,
    # completion + ttl_seconds, for a disappearing message's file.
    expires_at = models.DateTimeField(db_index=True)
    ttl_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="a disappearing message's timer: kept at most this long after completion",
    )

    class Meta:
        indexes = [
            # The daily upload quota sums an account's blobs of the last 24 hours.
            models.Index(fields=["account", "created_at"], name="blob_account_created"),
        ]

    def __str__(self) -> str:
        return f"blob {self.id[:8]}…"

    @property
    def is_complete(self) -> bool:
        return self.completed_at is not None


class BlobPart(models.Model):
    """One accepted chunk: ``size`` bytes of the blob from ``offset``, stored as its own
    object ``name`` in the attachments storage (attachments.services says why)."""

    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="parts")
    offset = models.PositiveBigIntegerField()
    size = models.PositiveIntegerField()
    name = models.CharField(max_length=255, help_text="the object's name in the storage")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blob", "offset"], name="unique_blob_part_offset"),
        ]
        ordering = ["offset"]

    def __str__(self) -> str:
        return f"{self.blob} @ {self.offset}"
