"""Groups and their members. Nothing here is secret: a group is an id and a member list.

A group's public name is ``group_id``, 16 random bytes (docs/protocol.md §17.1), shown as
32 hex digits at the edge. The integer primary key is internal only: it keeps the foreign
keys and their indexes small and gives the admin a URL-safe key; no API takes or shows it.
"""

from __future__ import annotations

from django.db import models

from keys.models import Account


class Group(models.Model):
    group_id = models.BinaryField(max_length=16, unique=True, help_text="16 random bytes")
    created_at = models.DateTimeField(auto_now_add=True)
    # Raised by one with every membership or admin change, under the group row's lock
    # (groups.services). Device changes of members change the roster digest, not this.
    roster_version = models.PositiveBigIntegerField(default=1)

    def __str__(self) -> str:
        return f"group {bytes(self.group_id).hex()}"

    @property
    def hex_id(self) -> str:
        return bytes(self.group_id).hex()


class Membership(models.Model):
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    is_admin = models.BooleanField(default=False)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "account"], name="unique_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.account} in {self.group}"
