"""Groups: their ids and the roster digest (docs/protocol.md, section 17.1).

A group is named by 16 random bytes, written as 32 lower-case hex digits in the REST API
and the CLI. Its roster is every device of every member, as (username, device_id,
registration_id); the sender and the relay both compute

    roster_digest = SHA-256("Sealpost v1 roster" | 0x00 | count varint |
                            count × (username str | device_id varint |
                                     registration_id varint))[0:16]

with the entries sorted by (username as bytes, device_id). A GROUP_SEND carries the digest
of the roster the sender distributed its sender key to, and the relay refuses the send
with STALE_ROSTER when the group's devices have changed since: a removed device can never
be skipped over by accident, because the sender must reconcile (a device left: a new
sender key for everyone left; a device joined: the current key for it) and send again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from . import primitives as p
from .encoding import Writer
from .errors import ErrorCode, ProtocolError
from .identifiers import check_username
from .keys import MAX_REGISTRATION_ID, check_device_id

GROUP_ID_BYTES: Final = 16
ROSTER_DIGEST_BYTES: Final = 16
LABEL_ROSTER: Final = b"Sealpost v1 roster"
# Members (accounts) per group, enforced by the server (GROUP_TOO_LARGE); also the bound on
# a GROUP_UPDATE's target list.
MAX_GROUP_MEMBERS: Final = 1_000

_GROUP_ID_HEX = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One device of one member of a group."""

    username: str
    device_id: int
    registration_id: int


def _order(entry: RosterEntry) -> tuple[bytes, int]:
    # Usernames compare as bytes; surrogatepass so that a bad name sorts instead of
    # crashing, and is then refused by check_username.
    return entry.username.encode("utf-8", "surrogatepass"), entry.device_id


def roster_digest(entries: Iterable[RosterEntry]) -> bytes:
    """The 16-byte digest of a roster given in any order (it is sorted here).

    Each entry is checked in sorted order: a username that is not normalised is
    INVALID_USERNAME; a device id outside 1..65535, a registration id outside
    1..2**32 - 1 or a (username, device_id) listed twice is INVALID_VALUE.
    """
    ordered = sorted(entries, key=_order)
    w = Writer().raw(LABEL_ROSTER).u8(0).varint(len(ordered))
    for index, entry in enumerate(ordered):
        check_username(entry.username)
        check_device_id(entry.device_id)
        if not 1 <= entry.registration_id <= MAX_REGISTRATION_ID:
            raise ProtocolError(
                ErrorCode.INVALID_VALUE,
                f"registration id {entry.registration_id} of {entry.username} device "
                f"{entry.device_id} is outside 1..{MAX_REGISTRATION_ID}",
            )
        if index and _order(ordered[index - 1]) == _order(entry):
            raise ProtocolError(
                ErrorCode.INVALID_VALUE,
                f"{entry.username} device {entry.device_id} is in the roster twice",
            )
        w.str_(entry.username).varint(entry.device_id).varint(entry.registration_id)
    return p.sha256(w.getvalue())[:ROSTER_DIGEST_BYTES]


def new_group_id() -> bytes:
    return p.random_bytes(GROUP_ID_BYTES)


def check_group_id(group_id: bytes) -> bytes:
    """INVALID_VALUE unless ``group_id`` is 16 bytes."""
    if len(group_id) != GROUP_ID_BYTES:
        raise ProtocolError(
            ErrorCode.INVALID_VALUE,
            f"group_id must be {GROUP_ID_BYTES} bytes, got {len(group_id)}",
        )
    return group_id


def group_id_hex(group_id: bytes) -> str:
    """The group id as the REST API and the CLI write it: 32 lower-case hex digits."""
    return check_group_id(group_id).hex()


def parse_group_id(text: str) -> bytes:
    """The inverse of ``group_id_hex``; upper case, another length or a non-hex character
    is INVALID_VALUE, so every group id has one spelling."""
    if not _GROUP_ID_HEX.fullmatch(text):
        raise ProtocolError(
            ErrorCode.INVALID_VALUE, f"group id {text[:40]!r} is not 32 lower-case hex digits"
        )
    return bytes.fromhex(text)
