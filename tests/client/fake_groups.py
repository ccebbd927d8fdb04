"""``GroupFakeServer``: the in-memory server of ``fakes.py`` with groups (docs/api.md,
"Groups"; docs/protocol.md §17.3, GROUP_SEND).

It keeps what the client can observe: members and admins per group, the roster (every
listed device of every member) and its digest, the REST answers and codes, and GROUP_SEND
answered with SEND_OK, ``stale_roster``, ``not_a_member`` or ``unknown_group``. An
accepted GROUP_SEND queues its payload for every roster device but the sending one.
``after_group_store`` runs after the envelopes are queued and before SEND_OK (drop the
connection there to lose the SEND_OK). Like ``fakes.py``, not a reference for the server.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import Error, GroupSend, SendOk, decode_frame
from protocol.groups import RosterEntry, roster_digest

from .fakes import FakeConnection, FakeServer, HttpError


@dataclass
class FakeGroup:
    group_id: bytes
    members: dict[str, bool] = field(default_factory=dict)  # username -> admin, join order
    roster_version: int = 1


class GroupFakeServer(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[bytes, FakeGroup] = {}
        self.group_sends: list[tuple[str, GroupSend]] = []
        self.after_group_store: Callable[[FakeConnection, GroupSend], None] | None = None

    # --- helpers for tests ----------------------------------------------------------------

    def roster(self, group: FakeGroup) -> list[RosterEntry]:
        entries = [
            RosterEntry(username, device.device_id, device.registration_id)
            for username in group.members
            if (account := self.accounts.get(username)) is not None
            for device in account.devices.values()
            if account.listed(device)
        ]
        return sorted(entries, key=lambda e: (e.username.encode(), e.device_id))

    def body(self, group: FakeGroup) -> dict[str, Any]:
        entries = self.roster(group)
        return {
            "id": group.group_id.hex(),
            "roster_version": group.roster_version,
            "members": [
                {"username": name, "admin": admin} for name, admin in sorted(group.members.items())
            ],
            "devices": [
                {
                    "username": e.username,
                    "device_id": e.device_id,
                    "registration_id": e.registration_id,
                }
                for e in entries
            ],
            "roster_digest": roster_digest(entries).hex(),
        }

    # --- the relay ------------------------------------------------------------------------

    def handle_frame(self, conn: FakeConnection, data: bytes) -> None:
        try:
            frame = decode_frame(data)
        except ProtocolError:
            super().handle_frame(conn, data)
            return
        if not isinstance(frame, GroupSend):
            super().handle_frame(conn, data)
            return
        conn.received.append(frame)
        self.group_sends.append((conn.account.username, frame))
        group = self.groups.get(frame.group_id)
        if group is None:
            conn.push(Error(frame.request_id, int(ErrorCode.UNKNOWN_GROUP), "no such group"))
            return
        if conn.account.username not in group.members:
            conn.push(Error(frame.request_id, int(ErrorCode.NOT_A_MEMBER), "not a member"))
            return
        entries = self.roster(group)
        if roster_digest(entries) != frame.roster_digest:
            conn.push(Error(frame.request_id, int(ErrorCode.STALE_ROSTER), "stale roster"))
            return
        for entry in entries:
            if (entry.username, entry.device_id) == (conn.account.username, conn.device.device_id):
                continue
            self.enqueue(
                entry.username,
                entry.device_id,
                conn.account.username,
                conn.device.device_id,
                frame.payload,
            )
        if self.after_group_store is not None:
            self.after_group_store(conn, frame)
        conn.push(SendOk(frame.request_id, self.time_ms))

    # --- REST -----------------------------------------------------------------------------

    def _route(self, request: httpx.Request, path: str) -> tuple[int, Any]:
        if not path.startswith("/api/v1/groups"):
            return super()._route(request, path)
        account, _ = self._authenticate(request)
        me = account.username
        method = request.method
        body = json.loads(request.content) if request.content else {}
        if path == "/api/v1/groups" and method == "POST":
            names = self._known([n.lower() for n in body["members"]])
            group = FakeGroup(secrets.token_bytes(16))
            group.members[me] = True
            for name in names:
                group.members.setdefault(name, False)
            self.groups[group.group_id] = group
            return 201, self.body(group)
        if path == "/api/v1/groups" and method == "GET":
            mine = [g for g in self.groups.values() if me in g.members]
            return 200, [
                {
                    "id": g.group_id.hex(),
                    "roster_version": g.roster_version,
                    "admin": g.members[me],
                    "member_count": len(g.members),
                }
                for g in mine
            ]
        match = re.fullmatch(r"/api/v1/groups/([^/]+)(?:/(members|admins)(?:/([^/]+))?)?", path)
        if match is None:
            raise HttpError(404, ErrorCode.NOT_FOUND, f"no route {method} {path}")
        group = self._group(match[1], me)
        part, name = match[2], match[3]
        if part is None and method == "GET":
            return 200, self.body(group)
        if part == "members" and name is None and method == "POST":
            self._admin(group, me)
            for added in self._known([n.lower() for n in body["add"]]):
                group.members.setdefault(added, False)
            group.roster_version += 1
            return 200, self.body(group)
        if part == "members" and name is not None and method == "DELETE":
            if name not in group.members:
                raise HttpError(404, ErrorCode.NOT_A_MEMBER, f"{name} is not a member")
            if name != me:
                self._admin(group, me)
            del group.members[name]
            group.roster_version += 1
            if not group.members:
                del self.groups[group.group_id]
                return 204, None
            if not any(group.members.values()):
                group.members[next(iter(group.members))] = True
            return (204, None) if name == me else (200, self.body(group))
        if part == "admins" and name is not None and method in ("PUT", "DELETE"):
            self._admin(group, me)
            if name not in group.members:
                raise HttpError(404, ErrorCode.NOT_A_MEMBER, f"{name} is not a member")
            group.members[name] = method == "PUT"
            group.roster_version += 1
            return 200, self.body(group)
        raise HttpError(405, ErrorCode.INVALID_REQUEST, "method not allowed")

    def _known(self, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in self.accounts]
        if unknown:
            raise HttpError(404, ErrorCode.UNKNOWN_ACCOUNT, f"no account {', '.join(unknown)}")
        return names

    def _group(self, text: str, me: str) -> FakeGroup:
        try:
            group = self.groups[bytes.fromhex(text)]
        except (ValueError, KeyError):
            raise HttpError(404, ErrorCode.UNKNOWN_GROUP, f"there is no group {text!r}") from None
        if me not in group.members:
            raise HttpError(403, ErrorCode.NOT_A_MEMBER, "you are not a member of this group")
        return group

    @staticmethod
    def _admin(group: FakeGroup, me: str) -> None:
        if not group.members.get(me):
            raise HttpError(403, ErrorCode.FORBIDDEN, "only admins may do that")
