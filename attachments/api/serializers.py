"""Request and response shapes of the attachments API (docs/api.md, "Attachments").

Only the blob's announcement and description are JSON; the chunks themselves are raw
bytes (``application/offset+octet-stream``) and the download is ``application/octet-stream``.
"""

from __future__ import annotations

from rest_framework import serializers

from attachments.services import SUGGESTED_CHUNK_BYTES
from protocol.limits import MAX_TTL_SECONDS


class CreateBlobSerializer(serializers.Serializer):
    size = serializers.IntegerField(
        min_value=1,
        help_text="the encrypted blob's length in bytes: the file's size + 16 per 64 KiB chunk",
    )
    ttl_seconds = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_TTL_SECONDS,
        help_text="a disappearing message's timer: once complete, the blob is kept at most "
        "this many seconds (never longer than the region's attachment retention)",
    )


class BlobSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="16 random bytes as 32 lower-case hex digits")
    size = serializers.IntegerField()
    offset = serializers.IntegerField(help_text="bytes received so far")
    chunk_bytes = serializers.IntegerField(
        help_text=f"a suggested PATCH body size ({SUGGESTED_CHUNK_BYTES} bytes)"
    )
    expires_at = serializers.DateTimeField(
        help_text="the upload must be complete by then; once complete, the blob is kept "
        "until its creation plus the region's attachment retention, or until its completion "
        "plus ttl_seconds if that is sooner"
    )
