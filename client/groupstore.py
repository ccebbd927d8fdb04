"""The groups' part of the local store: the tables of ``_SCHEMA_V4`` in ``client.store``.

Same SQLite file, same connection and same transactions as ``Store`` (every write joins
the caller's ``with store.transaction():``), so that decrypting a group message, advancing
the sender's chain and storing the message commit together, before the ACK.

What lives here, and what each is for:

* ``chat_groups``: the groups this device knows of. Name and timer come only from
  GROUP_UPDATE contents (the server never learns them). ``members`` is a cache of who is
  in the group, for showing it offline. ``roster``/``roster_digest`` are the roster this
  device last reconciled its sender key with: the digest every GROUP_SEND carries. They
  change only when the sender key has reached every device of the new roster, never when
  we merely look the group up, or a send could carry a digest whose new devices lack our
  key.
* ``own_sender_keys``: this device's sending chain per group (with its signing seed), and
  ``sender_key_recipients``: the roster devices that hold that chain. A new chain (a
  device left the roster) starts with nobody.
* ``sender_keys``: everyone else's chains, one ``SenderKeyRecord`` per (group, sender,
  sender device).
* group messages are rows of ``messages`` with ``group_id`` set; ``group_events`` are the
  GROUP_UPDATEs shown in a group's conversation.

Secrets (chain keys, signing seeds) are stored as the records encode them, like sessions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass

from protocol.content import GroupAction
from protocol.errors import ErrorCode
from protocol.groups import RosterEntry
from protocol.senderkeys import SenderKeyRecord, SenderKeyState

from .store import (
    _MESSAGE_COLUMNS,
    STATUS_RECEIVED,
    Store,
    StoredMessage,
    _message,
    _rowid,
)


@dataclass(frozen=True, slots=True)
class Member:
    username: str
    admin: bool


@dataclass(frozen=True, slots=True)
class LocalGroup:
    """A group as this device knows it."""

    group_id: bytes
    name: str
    timer_seconds: int
    admin: bool  # whether this account is an admin (as last seen)
    member: bool  # False once this account left or was removed
    members: tuple[Member, ...]
    roster: tuple[RosterEntry, ...] | None  # what our sender key was reconciled with
    roster_digest: bytes | None
    needs_fetch: bool

    @property
    def id_hex(self) -> str:
        return self.group_id.hex()


@dataclass(frozen=True, slots=True)
class StoredGroupEvent:
    """A GROUP_UPDATE shown in the conversation: ``actor`` did ``action``."""

    id: int
    group_id: bytes
    actor: str
    action: GroupAction
    name: str
    timer_seconds: int
    targets: tuple[str, ...]
    sent_at_ms: int
    received_at_ms: int


_GROUP_COLUMNS = (
    "group_id, name, timer_seconds, admin, member, members, roster, roster_digest, needs_fetch"
)


class GroupStore:
    """The group tables of ``store``'s file. Methods are synchronous, like ``Store``'s."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # --- groups -------------------------------------------------------------------------

    def group(self, group_id: bytes) -> LocalGroup | None:
        row = self._store.db.execute(
            f"SELECT {_GROUP_COLUMNS} FROM chat_groups WHERE group_id = ?",  # noqa: S608
            (group_id,),
        ).fetchone()
        return None if row is None else _group(row)

    def groups(self) -> list[LocalGroup]:
        """Every group known here, oldest first."""
        rows = self._store.db.execute(
            f"SELECT {_GROUP_COLUMNS} FROM chat_groups ORDER BY created_at_ms, group_id"  # noqa: S608
        )
        return [_group(row) for row in rows]

    def ensure_group(self, group_id: bytes, now_ms: int, *, needs_fetch: bool) -> bool:
        """Make sure the group has a row; True if it is new (then, with ``needs_fetch``,
        it is to be looked up on the server)."""
        with self._store.transaction():
            cursor = self._store.db.execute(
                "INSERT OR IGNORE INTO chat_groups (group_id, needs_fetch, created_at_ms, "
                "updated_at_ms) VALUES (?, ?, ?, ?)",
                (group_id, int(needs_fetch), now_ms, now_ms),
            )
            return bool(cursor.rowcount)

    def save_members(
        self, group_id: bytes, members: Iterable[Member], admin: bool, now_ms: int
    ) -> None:
        """What the server showed: who is in the group (this account too, as ``admin``)."""
        listing = json.dumps([[m.username, int(m.admin)] for m in members])
        with self._store.transaction():
            self.ensure_group(group_id, now_ms, needs_fetch=False)
            self._store.db.execute(
                "UPDATE chat_groups SET members = ?, admin = ?, member = 1, needs_fetch = 0, "
                "updated_at_ms = ? WHERE group_id = ?",
                (listing, int(admin), now_ms, group_id),
            )

    def save_roster(
        self, group_id: bytes, roster: Iterable[RosterEntry], digest: bytes, now_ms: int
    ) -> None:
        """The roster our sender key now reaches, and its digest (for GROUP_SEND)."""
        listing = json.dumps([[e.username, e.device_id, e.registration_id] for e in roster])
        with self._store.transaction():
            self._store.db.execute(
                "UPDATE chat_groups SET roster = ?, roster_digest = ?, updated_at_ms = ? "
                "WHERE group_id = ?",
                (listing, digest, now_ms, group_id),
            )

    def set_name(self, group_id: bytes, name: str, timer_seconds: int | None, now_ms: int) -> None:
        with self._store.transaction():
            self._store.db.execute(
                "UPDATE chat_groups SET name = ?, timer_seconds = coalesce(?, timer_seconds), "
                "updated_at_ms = ? WHERE group_id = ?",
                (name, timer_seconds, now_ms, group_id),
            )

    def change_members(
        self, group_id: bytes, added: Iterable[str], removed: Iterable[str], now_ms: int
    ) -> None:
        """Update the members cache from a GROUP_UPDATE (the server stays the authority)."""
        group = self.group(group_id)
        if group is None:
            return
        members = {m.username: m for m in group.members}
        for username in added:
            members.setdefault(username, Member(username, False))
        for username in removed:
            members.pop(username, None)
        listing = json.dumps(
            [[m.username, int(m.admin)] for m in sorted(members.values(), key=_by_name)]
        )
        with self._store.transaction():
            self._store.db.execute(
                "UPDATE chat_groups SET members = ?, updated_at_ms = ? WHERE group_id = ?",
                (listing, now_ms, group_id),
            )

    def set_member(self, group_id: bytes, member: bool, now_ms: int) -> None:
        """Whether this account is in the group. Leaving also drops our sending chain: a
        later return starts a new one."""
        with self._store.transaction():
            self._store.db.execute(
                "UPDATE chat_groups SET member = ?, needs_fetch = 0, updated_at_ms = ? "
                "WHERE group_id = ?",
                (int(member), now_ms, group_id),
            )
            if not member:
                self._store.db.execute(
                    "UPDATE chat_groups SET roster = NULL, roster_digest = NULL WHERE group_id = ?",
                    (group_id,),
                )
                self._store.db.execute(
                    "DELETE FROM own_sender_keys WHERE group_id = ?", (group_id,)
                )

    def mark_fetch(self, group_id: bytes, now_ms: int) -> None:
        with self._store.transaction():
            self._store.db.execute(
                "UPDATE chat_groups SET needs_fetch = 1, updated_at_ms = ? WHERE group_id = ?",
                (now_ms, group_id),
            )

    def groups_to_fetch(self) -> list[bytes]:
        rows = self._store.db.execute(
            "SELECT group_id FROM chat_groups WHERE needs_fetch = 1 ORDER BY created_at_ms"
        )
        return [bytes(row[0]) for row in rows]

    # --- our sending chain --------------------------------------------------------------

    def own_sender_key(self, group_id: bytes) -> SenderKeyState | None:
        row = self._store.db.execute(
            "SELECT record FROM own_sender_keys WHERE group_id = ?", (group_id,)
        ).fetchone()
        if row is None:
            return None
        states = SenderKeyRecord.decode(bytes(row[0])).states
        return states[0] if states else None

    def save_own_sender_key(self, group_id: bytes, state: SenderKeyState, now_ms: int) -> None:
        """Store our chain as it stands (after each encryption). A new key_id replaces the
        old chain and starts with no recipients."""
        record = SenderKeyRecord([state]).encode()
        with self._store.transaction():
            old = self._store.db.execute(
                "SELECT key_id FROM own_sender_keys WHERE group_id = ?", (group_id,)
            ).fetchone()
            if old is not None and int(old[0]) != state.key_id:
                self._store.db.execute(
                    "DELETE FROM sender_key_recipients WHERE group_id = ?", (group_id,)
                )
            self._store.db.execute(
                "INSERT INTO own_sender_keys (group_id, key_id, record, created_at_ms) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET "
                "key_id = excluded.key_id, record = excluded.record",
                (group_id, state.key_id, record, now_ms),
            )

    def key_recipients(self, group_id: bytes, key_id: int) -> set[RosterEntry]:
        rows = self._store.db.execute(
            "SELECT username, device_id, registration_id FROM sender_key_recipients "
            "WHERE group_id = ? AND key_id = ?",
            (group_id, key_id),
        )
        return {RosterEntry(str(u), int(d), int(r)) for u, d, r in rows}

    def add_key_recipients(
        self, group_id: bytes, key_id: int, entries: Iterable[RosterEntry]
    ) -> None:
        with self._store.transaction():
            self._store.db.executemany(
                "INSERT OR REPLACE INTO sender_key_recipients (group_id, key_id, username, "
                "device_id, registration_id) VALUES (?, ?, ?, ?, ?)",
                [(group_id, key_id, e.username, e.device_id, e.registration_id) for e in entries],
            )

    # --- other devices' chains ----------------------------------------------------------

    def sender_key_record(self, group_id: bytes, sender: str, device_id: int) -> SenderKeyRecord:
        """The record for (group, sender, device); an empty one if we hold none."""
        row = self._store.db.execute(
            "SELECT record FROM sender_keys WHERE group_id = ? AND sender = ? AND device_id = ?",
            (group_id, sender, device_id),
        ).fetchone()
        return SenderKeyRecord() if row is None else SenderKeyRecord.decode(bytes(row[0]))

    def save_sender_key_record(
        self,
        group_id: bytes,
        sender: str,
        device_id: int,
        record: SenderKeyRecord,
        now_ms: int,
    ) -> None:
        with self._store.transaction():
            self._store.db.execute(
                "INSERT INTO sender_keys (group_id, sender, device_id, record, updated_at_ms) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id, sender, device_id) DO UPDATE "
                "SET record = excluded.record, updated_at_ms = excluded.updated_at_ms",
                (group_id, sender, device_id, record.encode(), now_ms),
            )

    # --- the conversation ---------------------------------------------------------------

    def add_group_text(
        self,
        group_id: bytes,
        *,
        outgoing: bool,
        sender: str,
        sender_device: int,
        text: str,
        sent_at_ms: int,
        status: str,
        server_time_ms: int | None = None,
        received_at_ms: int | None = None,
        seq: int | None = None,
    ) -> int:
        """A group text: ``peer`` is its sender (ourselves for an outgoing one)."""
        with self._store.transaction():
            cursor = self._store.db.execute(
                "INSERT INTO messages (kind, direction, peer, sender_device, body, sent_at_ms, "
                "server_time_ms, received_at_ms, status, seq, group_id) "
                "VALUES ('text', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ("out" if outgoing else "in", sender, sender_device, text, sent_at_ms,
                 server_time_ms, received_at_ms, status, seq, group_id),
            )  # fmt: skip
            return _rowid(cursor)

    def add_group_undecryptable(
        self,
        group_id: bytes,
        sender: str,
        sender_device: int,
        code: ErrorCode,
        server_time_ms: int,
        received_at_ms: int,
        seq: int,
    ) -> int | None:
        """A group message we could not read; None if this seq was recorded already."""
        with self._store.transaction():
            cursor = self._store.db.execute(
                "INSERT OR IGNORE INTO messages (kind, direction, peer, sender_device, "
                "error_code, server_time_ms, received_at_ms, status, seq, group_id) "
                "VALUES ('undecryptable', 'in', ?, ?, ?, ?, ?, ?, ?, ?)",
                (sender, sender_device, int(code), server_time_ms, received_at_ms,
                 STATUS_RECEIVED, seq, group_id),
            )  # fmt: skip
            return _rowid(cursor) if cursor.rowcount else None

    def set_message_group(self, message_id: int, group_id: bytes) -> None:
        """Make a message stored by the 1:1 code (an attachment) one of the group's."""
        with self._store.transaction():
            self._store.db.execute(
                "UPDATE messages SET group_id = ? WHERE id = ?", (group_id, message_id)
            )

    def message_group(self, message_id: int) -> bytes | None:
        """The group a message belongs to (None: a 1:1 message, or none such)."""
        row = self._store.db.execute(
            "SELECT group_id FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def group_messages(self, group_id: bytes, limit: int | None = None) -> list[StoredMessage]:
        """The group's messages, oldest first (the last ``limit`` if given)."""
        rows = self._store.db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE group_id = ? "  # noqa: S608
            "ORDER BY id DESC LIMIT ?",
            (group_id, limit or -1),
        ).fetchall()
        messages = [_message(row) for row in rows[::-1]]
        return [
            dataclasses.replace(m, attachment=self._store.attachment(m.id))
            if m.kind == "attachment"
            else m
            for m in messages
        ]

    def add_group_event(
        self,
        group_id: bytes,
        actor: str,
        action: GroupAction,
        name: str,
        timer_seconds: int,
        targets: Iterable[str],
        sent_at_ms: int,
        received_at_ms: int,
    ) -> int:
        with self._store.transaction():
            cursor = self._store.db.execute(
                "INSERT INTO group_events (group_id, actor, action, name, timer_seconds, "
                "targets, sent_at_ms, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (group_id, actor, int(action), name, timer_seconds, json.dumps(list(targets)),
                 sent_at_ms, received_at_ms),
            )  # fmt: skip
            return _rowid(cursor)

    def group_events(self, group_id: bytes) -> list[StoredGroupEvent]:
        rows = self._store.db.execute(
            "SELECT id, group_id, actor, action, name, timer_seconds, targets, sent_at_ms, "
            "received_at_ms FROM group_events WHERE group_id = ? ORDER BY id",
            (group_id,),
        )
        return [
            StoredGroupEvent(
                id=int(row[0]),
                group_id=bytes(row[1]),
                actor=str(row[2]),
                action=GroupAction(int(row[3])),
                name=str(row[4]),
                timer_seconds=int(row[5]),
                targets=tuple(str(t) for t in json.loads(row[6])),
                sent_at_ms=int(row[7]),
                received_at_ms=int(row[8]),
            )
            for row in rows
        ]


def _by_name(member: Member) -> bytes:
    return member.username.encode()


def _group(row: tuple[object, ...]) -> LocalGroup:
    members = tuple(Member(str(u), bool(a)) for u, a in json.loads(str(row[5])))
    roster = (
        None
        if row[6] is None
        else tuple(RosterEntry(str(u), int(d), int(r)) for u, d, r in json.loads(str(row[6])))
    )
    return LocalGroup(
        group_id=bytes(row[0]),  # type: ignore[call-overload]
        name=str(row[1]),
        timer_seconds=int(str(row[2])),
        admin=bool(row[3]),
        member=bool(row[4]),
        members=members,
        roster=roster,
        roster_digest=None if row[7] is None else bytes(row[7]),  # type: ignore[call-overload]
        needs_fetch=bool(row[8]),
    )
