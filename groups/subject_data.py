"""What export and erasure do with group memberships (compliance.subject_data).

Erasure makes the person leave each group through ``groups.services.remove_member``, as
if they had left themselves: the roster version is raised (so the other members rotate
their sender keys), an admin is promoted if the last one left, and a group left empty is
deleted.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from compliance.subject_data import Kept, Subject, register
from groups import services
from groups.models import Membership


def _memberships(subject: Subject) -> QuerySet[Membership]:
    if subject.account_id is None:
        return Membership.objects.none()
    return Membership.objects.filter(account_id=subject.account_id).select_related(
        "group", "account__user"
    )


def _leave_all(subject: Subject, now: datetime) -> Kept | None:
    for membership in _memberships(subject):
        services.remove_member(
            membership.account, bytes(membership.group.group_id), subject.username
        )
    return None


register(
    Membership,
    rows=_memberships,
    export=lambda m: {
        "group_id": m.group.hex_id,
        "is_admin": m.is_admin,
        "joined_at": m.joined_at,
    },
    erase=_leave_all,
)
