"""The operator's view of queued envelopes: metadata only.

The payload is ciphertext no operator can read, and it is not shown, offered for
download or editable here: the admin lists which device holds what size of envelope from
whom, and until when. Envelopes are written only by ``messaging.services``, so the admin
adds, changes and deletes nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models.functions import Coalesce, Length
from django.http import HttpRequest

from messaging.models import Envelope


@admin.register(Envelope)
class EnvelopeAdmin(admin.ModelAdmin):
    list_display = ("device", "seq", "sender", "sender_device_id", "size_bytes", "expires_at")
    list_select_related = ("device__account__user", "sender__user")
    ordering = ("device", "seq")
    date_hierarchy = "expires_at"
    # An explicit field list: the payload must never reach a form or a page.
    fields = ("device", "seq", "sender", "sender_device_id", "size_bytes", "expires_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> Any:
        # A group envelope's ciphertext is the one shared copy (messaging.models).
        return (
            super()
            .get_queryset(request)
            .defer("payload")
            .annotate(size=Coalesce(Length("payload"), Length("shared__payload")))
        )

    @admin.display(description="size (bytes)", ordering="size")
    def size_bytes(self, envelope: Envelope) -> int:
        return int(envelope.size)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Envelope | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Envelope | None = None) -> bool:
        return False
