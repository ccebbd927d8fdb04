"""The operator's view of groups: ids, sizes and memberships.

There is nothing else to show: a group's name, timer and messages never reach the server
(docs/protocol.md §17.1). Memberships are written only by groups.services (which keeps
``roster_version`` and the group row lock right), so the admin changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count
from django.http import HttpRequest

from groups.models import Group, Membership


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ("account", "is_admin", "joined_at")
    readonly_fields = fields
    ordering = ("joined_at", "pk")
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("account__user")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ("hex_id", "member_count", "roster_version", "created_at")
    ordering = ("-created_at",)
    fields = ("hex_id", "roster_version", "created_at")
    readonly_fields = fields
    inlines = (MembershipInline,)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).annotate(members=Count("memberships"))

    @admin.display(description="group id")
    def hex_id(self, group: Group) -> str:
        return group.hex_id

    @admin.display(description="members", ordering="members")
    def member_count(self, group: Group) -> int:
        return int(group.members)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Group | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Group | None = None) -> bool:
        return False
