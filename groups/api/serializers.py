"""Request and response shapes of the groups API (docs/api.md, "Groups").

Group ids and roster digests travel as lower-case hex (docs/protocol.md §17.1); usernames
are normalised and looked up by groups.services, which names every unknown one.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from groups.services import GroupInfo, GroupSummary
from protocol.groups import MAX_GROUP_MEMBERS
from protocol.limits import MAX_USERNAME_BYTES


class UsernameField(serializers.CharField):
    """A username as given: a JSON string (DRF's CharField would take 1 for "1")."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=MAX_USERNAME_BYTES, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class GroupCreateSerializer(serializers.Serializer):
    members = serializers.ListField(
        child=UsernameField(),
        max_length=MAX_GROUP_MEMBERS,
        allow_empty=True,
        help_text="usernames besides the caller's own (who becomes the group's admin)",
    )


class GroupAddSerializer(serializers.Serializer):
    add = serializers.ListField(
        child=UsernameField(),
        max_length=MAX_GROUP_MEMBERS,
        allow_empty=False,
        help_text="usernames to add; ones already in the group are ignored",
    )


class GroupMemberSerializer(serializers.Serializer):
    username = serializers.CharField()
    admin = serializers.BooleanField()


class GroupDeviceSerializer(serializers.Serializer):
    username = serializers.CharField()
    device_id = serializers.IntegerField()
    registration_id = serializers.IntegerField()


class GroupSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="the group id: 16 bytes as 32 lower-case hex digits")
    roster_version = serializers.IntegerField(
        help_text="raised by every membership or admin change"
    )
    members = GroupMemberSerializer(many=True)
    devices = GroupDeviceSerializer(
        many=True, help_text="the roster: every listed device of every member, sorted"
    )
    roster_digest = serializers.CharField(
        help_text="protocol.groups.roster_digest of `devices`: 16 bytes as 32 hex digits"
    )


class GroupSummarySerializer(serializers.Serializer):
    id = serializers.CharField()
    roster_version = serializers.IntegerField()
    admin = serializers.BooleanField(help_text="whether the caller is an admin")
    member_count = serializers.IntegerField()


def group_body(info: GroupInfo) -> dict[str, Any]:
    return GroupSerializer(
        {
            "id": info.group_id.hex(),
            "roster_version": info.roster_version,
            "members": [{"username": m.username, "admin": m.admin} for m in info.members],
            "devices": [
                {
                    "username": d.username,
                    "device_id": d.device_id,
                    "registration_id": d.registration_id,
                }
                for d in info.roster.devices
            ],
            "roster_digest": info.roster.digest.hex(),
        }
    ).data


def summary_body(summaries: list[GroupSummary]) -> Any:
    return GroupSummarySerializer(
        [
            {
                "id": s.group_id.hex(),
                "roster_version": s.roster_version,
                "admin": s.admin,
                "member_count": s.member_count,
            }
            for s in summaries
        ],
        many=True,
    ).data
