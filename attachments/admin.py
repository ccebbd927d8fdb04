"""Admin page of the attachments app: blobs, read-only, as ids, sizes and dates.

There is nothing readable to show (a blob is ciphertext, and its name, type and key never
reach the server), so there is nothing more here. Blobs are made by the API and deleted by
the retention purge, which deletes their stored objects with the rows; the admin can
neither add, change nor delete one (a deleted row would leave its objects behind).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Blob


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ("id", "size", "offset", "created_at", "completed_at", "expires_at")
    fields = list_display
    readonly_fields = fields
    ordering = ("-created_at",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
