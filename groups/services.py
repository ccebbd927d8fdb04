"""The groups app's verbs: the only code that writes Group and Membership rows.

Design. Every change to a group's members or admins runs in one transaction that first
locks the group row and ends by raising ``roster_version``; the relay's GROUP_SEND
(messaging.services.enqueue_group_send) takes the same lock before it reads the roster,
so a send and a membership change are ordered: a member removed before a send never gets
it, and a send accepted before the removal was addressed to the roster as it then was.

The roster (docs/protocol.md §17.1) is every device of every member that the member
account's stored signed device list names (exactly as the relay's SEND check expects,
keys.devicelists): a revoked device has no row any more, and a row the account key never
listed is neither in the roster nor sent to. Its digest is ``protocol.groups.roster_digest``.

What this module deletes: a membership when its member is removed or leaves, and the
group itself when its last member leaves. Never an account, a device or an envelope.

Nothing is pushed to connected clients when a roster changes: a NOTICE carries one number
and cannot name the group. Senders learn of it from ``stale_roster`` on their next
GROUP_SEND, members from the GROUP_UPDATE content the acting client sends end to end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef

from groups.models import Group, Membership
from keys.devicelists import listed_device_ids
from keys.models import Account, Device
from project.errors import ServiceError
from protocol.errors import ErrorCode, ProtocolError
from protocol.groups import MAX_GROUP_MEMBERS, RosterEntry, new_group_id, roster_digest
from protocol.identifiers import normalize_username

# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberInfo:
    username: str
    admin: bool


@dataclass(frozen=True, slots=True)
class RosterDevice:
    device_pk: int  # internal: where the relay queues the envelope
    username: str
    device_id: int
    registration_id: int


@dataclass(frozen=True, slots=True)
class Roster:
    """The group's devices, sorted by (username as bytes, device_id), and their digest."""

    devices: tuple[RosterDevice, ...]
    digest: bytes


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group_id: bytes
    roster_version: int
    members: tuple[MemberInfo, ...]  # by username
    roster: Roster


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group_id: bytes
    roster_version: int
    admin: bool  # whether the caller is an admin
    member_count: int


class NotAMemberTarget(ServiceError):
    """The account a request names is not in the group: a missing resource (404), unlike
    a caller who is not a member (403, ``not_a_member`` too)."""

    @property
    def http_status(self) -> int:
        return 404


def max_members() -> int:
    """The deployment's member limit, never above the protocol's."""
    configured = int(settings.SEALPOST.get("MAX_GROUP_MEMBERS", MAX_GROUP_MEMBERS))
    return min(configured, MAX_GROUP_MEMBERS)


def _unknown_group(group_id: bytes) -> ServiceError:
    return ServiceError(ErrorCode.UNKNOWN_GROUP, f"there is no group {group_id.hex()}")


def _not_a_member(group_id: bytes) -> ServiceError:
    return ServiceError(
        ErrorCode.NOT_A_MEMBER, f"this account is not a member of group {group_id.hex()}"
    )


def _forbidden(what: str) -> ServiceError:
    return ServiceError(ErrorCode.FORBIDDEN, f"only a group admin may {what}")


# --- reading ------------------------------------------------------------------------------


def roster(group_pk: int) -> Roster:
    """The group's roster now: two queries (members with their device lists, then their
    devices), whatever the group's size; the list checks are cached by their bytes."""
    members = list(
        Membership.objects.filter(group_id=group_pk).values_list(
            "account_id", "account__user__username", "account__device_list"
        )
    )
    rows_by_account: dict[int, list[tuple[int, int, int, bytes]]] = defaultdict(list)
    for pk, account_pk, device_id, registration_id, certificate in Device.objects.filter(
        account__memberships__group_id=group_pk
    ).values_list("pk", "account_id", "device_id", "registration_id", "certificate"):
        rows_by_account[account_pk].append((pk, device_id, registration_id, bytes(certificate)))
    devices: list[RosterDevice] = []
    for account_pk, username, device_list in members:
        rows = rows_by_account.get(account_pk, [])
        listed = listed_device_ids(
            bytes(device_list), ((device_id, reg, cert) for _, device_id, reg, cert in rows)
        )
        devices.extend(
            RosterDevice(pk, username, device_id, reg)
            for pk, device_id, reg, _ in rows
            if device_id in listed
        )
    devices.sort(key=lambda d: (d.username.encode(), d.device_id))
    digest = roster_digest(
        [RosterEntry(d.username, d.device_id, d.registration_id) for d in devices]
    )
    return Roster(tuple(devices), digest)


def _members(group_pk: int) -> tuple[MemberInfo, ...]:
    rows = (
        Membership.objects.filter(group_id=group_pk)
        .order_by("account__user__username")
        .values_list("account__user__username", "is_admin")
    )
    return tuple(MemberInfo(username, admin) for username, admin in rows)


def _info(group: Group) -> GroupInfo:
    return GroupInfo(
        bytes(group.group_id), group.roster_version, _members(group.pk), roster(group.pk)
    )


def group_info(account: Account, group_id: bytes) -> GroupInfo:
    """A group as its members see it. Raises UNKNOWN_GROUP, NOT_A_MEMBER."""
    group = Group.objects.filter(group_id=group_id).first()
    if group is None:
        raise _unknown_group(group_id)
    if not Membership.objects.filter(group=group, account=account).exists():
        raise _not_a_member(group_id)
    return _info(group)


def my_groups(account: Account) -> list[GroupSummary]:
    """The groups the account is in, oldest membership first."""
    rows = (
        Membership.objects.filter(account=account)
        .order_by("joined_at", "pk")
        .annotate(member_count=Count("group__memberships"))
        .values_list("group__group_id", "group__roster_version", "is_admin", "member_count")
    )
    return [
        GroupSummary(bytes(group_id), version, admin, count)
        for group_id, version, admin, count in rows
    ]


def sender_group(account_pk: int, group_id: bytes, *, lock: bool) -> int:
    """The pk of the group a GROUP_SEND names, checked for its sender in one query. With
    ``lock`` the group row is locked (inside the caller's transaction), as membership
    changes lock it. Raises UNKNOWN_GROUP, NOT_A_MEMBER."""
    groups = Group.objects.filter(group_id=group_id)
    if lock:
        groups = groups.select_for_update()
    # EXISTS rather than a join and GROUP BY: PostgreSQL refuses FOR UPDATE with GROUP BY.
    row = (
        groups.annotate(
            member=Exists(Membership.objects.filter(group_id=OuterRef("pk"), account_id=account_pk))
        )
        .values_list("pk", "member")
        .first()
    )
    if row is None:
        raise _unknown_group(group_id)
    if not row[1]:
        raise _not_a_member(group_id)
    return int(row[0])


# --- changing -----------------------------------------------------------------------------


def _accounts_named(usernames: Iterable[str], field: str) -> dict[str, int]:
    """{normalised username: account pk} of live accounts; UNKNOWN_ACCOUNT naming every
    name that is not one (in request order)."""
    wanted: dict[str, str] = {}  # normalised -> as given
    unknown: list[str] = []
    for given in usernames:
        try:
            wanted.setdefault(normalize_username(given), given)
        except ProtocolError:
            unknown.append(given)
    found = dict(
        Account.objects.filter(user__username__in=list(wanted), user__is_active=True).values_list(
            "user__username", "pk"
        )
    )
    unknown += [given for name, given in wanted.items() if name not in found]
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:20])
        if len(unknown) > 20:
            names += f" and {len(unknown) - 20} more"
        message = f"there is no account {names}"
        raise ServiceError(
            ErrorCode.UNKNOWN_ACCOUNT,
            f"{field}: {message}",
            fields={field: [{"code": ErrorCode.UNKNOWN_ACCOUNT.slug, "message": message}]},
        )
    return found


def _too_large(count: int, limit: int) -> ServiceError:
    return ServiceError(
        ErrorCode.GROUP_TOO_LARGE,
        f"the group would have {count} members; at most {limit} are allowed",
    )


def create_group(creator: Account, usernames: Sequence[str]) -> GroupInfo:
    """A new group of the creator (its admin) and the named accounts.

    The creator's own name in ``usernames`` and repeated names are ignored. Raises
    UNKNOWN_ACCOUNT (naming every unknown name), GROUP_TOO_LARGE.
    """
    accounts = _accounts_named(usernames, "members")
    others = {pk for pk in accounts.values() if pk != creator.pk}
    limit = max_members()
    if 1 + len(others) > limit:
        raise _too_large(1 + len(others), limit)
    with transaction.atomic():
        group = Group.objects.create(group_id=new_group_id())
        Membership.objects.bulk_create(
            [Membership(group=group, account=creator, is_admin=True)]
            + [Membership(group=group, account_id=pk) for pk in sorted(others)]
        )
        return _info(group)


def _lock(group_id: bytes, actor: Account) -> tuple[Group, Membership]:
    """The group row, locked, and the actor's membership. Raises UNKNOWN_GROUP,
    NOT_A_MEMBER."""
    group = Group.objects.select_for_update().filter(group_id=group_id).first()
    if group is None:
        raise _unknown_group(group_id)
    membership = Membership.objects.filter(group=group, account=actor).first()
    if membership is None:
        raise _not_a_member(group_id)
    return group, membership


def _bump(group: Group) -> None:
    Group.objects.filter(pk=group.pk).update(roster_version=F("roster_version") + 1)
    group.refresh_from_db(fields=["roster_version"])


def _target(group: Group, username: str) -> Membership:
    try:
        name = normalize_username(username)
    except ProtocolError:
        name = None
    membership = (
        Membership.objects.select_related("account__user")
        .filter(group=group, account__user__username=name)
        .first()
        if name
        else None
    )
    if membership is None:
        message = f"{username[:40]!r} is not a member of group {bytes(group.group_id).hex()}"
        raise NotAMemberTarget(ErrorCode.NOT_A_MEMBER, message)
    return membership


def add_members(actor: Account, group_id: bytes, usernames: Sequence[str]) -> GroupInfo:
    """Add the named accounts (admins only); names already in the group are ignored.

    Raises UNKNOWN_GROUP, NOT_A_MEMBER, FORBIDDEN, UNKNOWN_ACCOUNT, GROUP_TOO_LARGE.
    """
    with transaction.atomic():
        group, membership = _lock(group_id, actor)
        if not membership.is_admin:
            raise _forbidden("add members")
        accounts = _accounts_named(usernames, "add")
        present = set(Membership.objects.filter(group=group).values_list("account_id", flat=True))
        new = sorted(set(accounts.values()) - present)
        limit = max_members()
        if len(present) + len(new) > limit:
            raise _too_large(len(present) + len(new), limit)
        if new:
            Membership.objects.bulk_create([Membership(group=group, account_id=pk) for pk in new])
            _bump(group)
        return _info(group)


def remove_member(actor: Account, group_id: bytes, username: str) -> GroupInfo | None:
    """Remove a member (admins only), or leave (anyone, naming oneself).

    When the last admin goes, the longest-standing remaining member becomes admin; when
    the last member goes, the group is deleted (None is returned). Raises UNKNOWN_GROUP,
    NOT_A_MEMBER, FORBIDDEN.
    """
    with transaction.atomic():
        group, membership = _lock(group_id, actor)
        target = _target(group, username)
        if target.pk != membership.pk and not membership.is_admin:
            raise _forbidden("remove other members")
        target.delete()
        remaining = Membership.objects.filter(group=group)
        if not remaining.exists():
            group.delete()
            return None
        if target.is_admin and not remaining.filter(is_admin=True).exists():
            oldest = remaining.order_by("joined_at", "pk").values_list("pk", flat=True)[:1]
            Membership.objects.filter(pk__in=list(oldest)).update(is_admin=True)
        _bump(group)
        return _info(group)


def set_admin(actor: Account, group_id: bytes, username: str, admin: bool) -> GroupInfo:
    """Make a member an admin, or no longer one (admins only). The last admin cannot step
    down (``invalid_request``): make another member admin first, or leave. Raises
    UNKNOWN_GROUP, NOT_A_MEMBER, FORBIDDEN, INVALID_REQUEST."""
    with transaction.atomic():
        group, membership = _lock(group_id, actor)
        if not membership.is_admin:
            raise _forbidden("change admins")
        target = _target(group, username)
        if target.is_admin == admin:
            return _info(group)
        if (
            not admin
            and not Membership.objects.filter(group=group, is_admin=True)
            .exclude(pk=target.pk)
            .exists()
        ):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"{target.account.username!r} is the group's only admin: make another "
                "member admin first, or leave the group",
            )
        Membership.objects.filter(pk=target.pk).update(is_admin=admin)
        _bump(group)
        return _info(group)
