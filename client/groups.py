"""Groups in the reference client: membership through the REST API, messages through
sender keys (docs/protocol.md §17; docs/api.md, "Groups"). ``Client.groups`` is a
``Groups`` bound to its client.

Design, and the rules this module keeps:

* One encryption per group message. Each device has its own sending chain per group
  (``protocol.senderkeys``), gives it to every other device of the roster in a SENDER_KEY
  content over the pairwise sessions (the 1:1 machinery: signed device lists, sessions,
  device-mismatch correction, the outbox), then encrypts each group message once and
  uploads it in one GROUP_SEND; the relay fans it out.
* The roster digest in a GROUP_SEND is that of the roster our chain was reconciled with
  (``GroupStore.save_roster``), never merely the newest one seen: the relay answers
  ``stale_roster`` when the group's devices changed since, and the sender reconciles
  before it sends again. A device that left the roster (removed, left, revoked,
  re-registered) makes us draw a **new** chain and give it to every remaining device, so
  a removed member holds only keys that nothing after its removal is encrypted with; a
  device that joined gets the chain as it stands. After reconciling, the pending message
  is encrypted again under the current chain (the first ciphertext was never stored by
  the relay, and a joined device could not read an iteration from before its key).
* A group send goes through the outbox like a 1:1 send (one entry holding the GROUP_SEND),
  so a reconnection or a restart resends the same ciphertext; the SENDER_KEY sends it
  depends on are earlier entries and go out first.
* Receiving is synchronous and runs in the envelope's transaction (``Client`` commits
  before it acknowledges): the record for (group, sender, sender device) is loaded,
  decrypted, and saved with the message. A message whose key we lack is stored as
  undecryptable (NO_SESSION) and acknowledged. A group heard of for the first time (a
  key, an update or a message) is created locally and looked up on the server after the
  push (``fetch_pending``), outside the transaction.
* Membership comes from the server; the name and the timer only from GROUP_UPDATE
  contents, which also become the events shown in the conversation ("alice added
  carol"). The acting client sends them: pairwise where the receiver cannot have our key
  yet (a new group, a new member, the member just removed), else as a group message.

All sending runs under the client's send lock, so group sends, their key distribution and
1:1 sends keep one order.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

from protocol.content import (
    MAX_GROUP_NAME_BYTES,
    Attachment,
    Content,
    GroupAction,
    GroupUpdate,
    SenderKeyDistribution,
    Text,
    Typing,
    decode_content,
    encode_content,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import Deliver, DeviceMismatch, Error, GroupSend, Send, SendOk
from protocol.groups import (
    GROUP_ID_BYTES,
    MAX_GROUP_MEMBERS,
    ROSTER_DIGEST_BYTES,
    RosterEntry,
    parse_group_id,
    roster_digest,
)
from protocol.limits import MAX_TEXT_BYTES
from protocol.messages import MessageKind, message_type_byte
from protocol.senderkeys import SenderKeyMessage, SenderKeyState

from . import attachments as files
from . import disappearing as disappearing_
from .api import _bool, _int, _list_of_objects, _object, _path, _str
from .core import (
    Event,
    GroupUpdated,
    MessageReceived,
    UndecryptableMessage,
    _file_to_send,
    _normalize,
    _Target,
)
from .errors import LocalErrorCode, SealpostError
from .groupstore import GroupStore, LocalGroup, Member, StoredGroupEvent
from .store import STATUS_FAILED, STATUS_PENDING, STATUS_RECEIVED, STATUS_SENT, OutboxEntry

if TYPE_CHECKING:
    from .core import Client
    from .store import StoredMessage

log = logging.getLogger(__name__)

_SENDER_KEY_TYPE = bytes([message_type_byte(MessageKind.SENDER_KEY)])
MAX_ROSTER_ROUNDS = 3  # GROUP_SENDs of one message before giving up on a changing roster

ACTION_SLUGS = {
    GroupAction.CREATED: "created",
    GroupAction.MEMBERS_ADDED: "added",
    GroupAction.MEMBERS_REMOVED: "removed",
    GroupAction.LEFT: "left",
    GroupAction.RENAMED: "renamed",
    GroupAction.ADMINS_CHANGED: "admins_changed",
    GroupAction.SNAPSHOT: "snapshot",
}


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group as the server shows it (``GET /api/v1/groups/{id}``)."""

    group_id: bytes
    roster_version: int
    members: tuple[Member, ...]
    devices: tuple[RosterEntry, ...]  # the roster
    roster_digest: bytes

    @property
    def id_hex(self) -> str:
        return self.group_id.hex()

    @property
    def usernames(self) -> tuple[str, ...]:
        return tuple(member.username for member in self.members)

    @property
    def admins(self) -> tuple[str, ...]:
        return tuple(member.username for member in self.members if member.admin)


def describe_update(actor: str, action: GroupAction, name: str, targets: Sequence[str]) -> str:
    """What a GROUP_UPDATE looks like in the conversation: "alice added carol"."""
    who = ", ".join(targets)
    match action:
        case GroupAction.CREATED:
            return f"{actor} created the group “{name}”" + (f" with {who}" if who else "")
        case GroupAction.MEMBERS_ADDED:
            return f"{actor} added {who}"
        case GroupAction.MEMBERS_REMOVED:
            return f"{actor} removed {who}"
        case GroupAction.LEFT:
            return f"{actor} left"
        case GroupAction.RENAMED:
            return f"{actor} renamed the group to “{name}”"
        case GroupAction.ADMINS_CHANGED:
            return f"{actor} changed the admins: {who}"
        case GroupAction.SNAPSHOT:
            return f"{actor} added you to “{name}”"


class Groups:
    """The groups of one ``Client`` (``client.groups``)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.store = GroupStore(client.store)
        self._fetch_due = True  # look for groups left to fetch by an earlier run

    # --- what we know ---------------------------------------------------------------------

    def local_groups(self) -> list[LocalGroup]:
        """Every group this device knows of, oldest first (left ones included)."""
        return self.store.groups()

    def local(self, group: str | bytes) -> LocalGroup:
        """The group named by its id (32 hex digits or 16 bytes). UNKNOWN_GROUP if this
        device has not heard of it."""
        group_id = _group_id(group)
        found = self.store.group(group_id)
        if found is None:
            raise SealpostError(
                ErrorCode.UNKNOWN_GROUP,
                f"this device knows no group {group_id.hex()}; 'sealpost group list' shows "
                "yours (a group you were added to appears once a message of it arrives)",
            )
        return found

    def messages(self, group: str | bytes, limit: int | None = None) -> list[StoredMessage]:
        """The group's texts (and undecryptable envelopes), oldest first."""
        return self.store.group_messages(self.local(group).group_id, limit)

    def events(self, group: str | bytes) -> list[StoredGroupEvent]:
        """The group's membership and name changes, oldest first."""
        return self.store.group_events(self.local(group).group_id)

    async def fetch(self, group: str | bytes) -> GroupInfo:
        """The group as the server shows it now (members, admins, roster); also refreshes
        the local member list. NOT_A_MEMBER / UNKNOWN_GROUP if we are not in it."""
        group_id = _group_id(group)
        info = await self._get(group_id)
        self._save_members(info)
        return info

    # --- management -----------------------------------------------------------------------

    async def create(self, name: str, members: Iterable[str]) -> str:
        """Create a group of this account (its admin) and ``members``; return its id (hex).

        Every member (and our other devices) gets a GROUP_UPDATE "created" with the name
        pairwise, together with our sender key.
        """
        name = _check_name(name)
        client = self._client
        usernames = [u for u in _usernames(members) if u != client.username]
        await client.connect()
        async with client._send_lock:
            info = _group_info(
                await self._request("POST", "/api/v1/groups", {"members": usernames}),
                "POST /api/v1/groups",
            )
            group_id = info.group_id
            now = client._now_ms()
            with client.store.transaction():
                self.store.ensure_group(group_id, now, needs_fetch=False)
                self.store.set_name(group_id, name, 0, now)
                self._save_members(info)
            update = self._own_update(group_id, GroupAction.CREATED, name, usernames)
            created = _encode(update)
            await self._reconcile(group_id, info, {m.username: [created] for m in info.members})
        return group_id.hex()

    async def add(self, group: str | bytes, usernames: Iterable[str]) -> list[str]:
        """Add members (admins only); return those that were not in the group already.

        New members get a GROUP_UPDATE snapshot (name, timer) and our sender key pairwise;
        then everyone gets "added" as a group message.
        """
        local = self._member_group(group)
        names = _usernames(usernames)
        if not names:
            raise SealpostError(ErrorCode.INVALID_VALUE, "name at least one account to add")
        client = self._client
        await client.connect()
        async with client._send_lock:
            before = {m.username for m in local.members}
            info = _group_info(
                await self._request(
                    "POST", f"/api/v1/groups/{local.id_hex}/members", {"add": names}, local
                ),
                "POST members",
            )
            self._save_members(info)
            added = [u for u in names if u in info.usernames and u not in before]
            if not added:
                return []
            snapshot = _encode(
                GroupUpdate(
                    local.group_id,
                    GroupAction.SNAPSHOT,
                    local.name,
                    local.timer_seconds,
                    info.usernames,
                    client.store.next_sent_at(client._now_ms()),
                )
            )
            await self._reconcile(local.group_id, info, {u: [snapshot] for u in added})
            update = self._own_update(local.group_id, GroupAction.MEMBERS_ADDED, "", added)
            await self._group_send(local.group_id, _encode(update), None)
        return added

    async def remove(self, group: str | bytes, username: str) -> None:
        """Remove a member (admins only). Our sender key is replaced before anything else
        is sent: "removed" goes to the remaining members under the new key, and to the
        removed member pairwise."""
        client = self._client
        username = _normalize(username)
        if username == client.username:
            await self.leave(group)
            return
        local = self._member_group(group)
        await client.connect()
        async with client._send_lock:
            info = _group_info(
                await self._request(
                    "DELETE",
                    f"/api/v1/groups/{local.id_hex}/members/{_path(username)}",
                    None,
                    local,
                    target=username,
                ),
                "DELETE member",
            )
            self._save_members(info)
            update = self._own_update(local.group_id, GroupAction.MEMBERS_REMOVED, "", [username])
            content = _encode(update)
            await self._reconcile(local.group_id, info, {username: [content]})
            await self._group_send(local.group_id, content, None)

    async def leave(self, group: str | bytes) -> None:
        """Leave the group: tell the members ("left", a group message), then leave on the
        server. Our sending chain is dropped."""
        local = self._member_group(group)
        client = self._client
        await client.connect()
        async with client._send_lock:
            update = self._own_update(local.group_id, GroupAction.LEFT, "", [])
            try:
                await self._group_send(local.group_id, _encode(update), None)
            except SealpostError as exc:  # leaving must not depend on telling them
                log.warning("could not tell group %s that we leave: %s", local.id_hex, exc)
            await self._request(
                "DELETE",
                f"/api/v1/groups/{local.id_hex}/members/{_path(client.username)}",
                None,
                local,
            )
            self.store.set_member(local.group_id, False, client._now_ms())

    async def rename(self, group: str | bytes, name: str) -> None:
        """Give the group a new name (any member may; the server never learns it)."""
        name = _check_name(name)
        local = self._member_group(group)
        client = self._client
        await client.connect()
        async with client._send_lock:
            update = self._own_update(local.group_id, GroupAction.RENAMED, name, [])
            await self._group_send(local.group_id, _encode(update), None)
            self.store.set_name(local.group_id, name, None, client._now_ms())

    async def set_admin(self, group: str | bytes, username: str, admin: bool) -> None:
        """Make a member an admin, or an admin an ordinary member (admins only)."""
        local = self._member_group(group)
        username = _normalize(username)
        client = self._client
        await client.connect()
        async with client._send_lock:
            info = _group_info(
                await self._request(
                    "PUT" if admin else "DELETE",
                    f"/api/v1/groups/{local.id_hex}/admins/{_path(username)}",
                    None,
                    local,
                    target=username,
                ),
                "admins",
            )
            self._save_members(info)
            update = self._own_update(local.group_id, GroupAction.ADMINS_CHANGED, "", [username])
            await self._group_send(local.group_id, _encode(update), None)

    # --- sending --------------------------------------------------------------------------

    async def send_text(self, group: str | bytes, text: str) -> int:
        """Send ``text`` to the group (one GROUP_SEND); return the local message id once the
        relay has accepted it."""
        if not text:
            raise SealpostError(ErrorCode.INVALID_VALUE, "the message text is empty")
        size = len(text.encode("utf-8"))
        if size > MAX_TEXT_BYTES:
            raise SealpostError(
                ErrorCode.TOO_LARGE, f"the message is {size} bytes; the limit is {MAX_TEXT_BYTES}"
            )
        local = self._member_group(group)
        client = self._client

        def record(sent_at_ms: int) -> int:
            return self.store.add_group_text(
                local.group_id,
                outgoing=True,
                sender=client.username,
                sender_device=client.device_id,
                text=text,
                sent_at_ms=sent_at_ms,
                status=STATUS_PENDING,
            )

        return await self._send_message(local, lambda sent_at_ms: Text(text, sent_at_ms), record)

    async def send_file(
        self,
        group: str | bytes,
        path: str | PathLike[str],
        *,
        content_type: str | None = None,
        voice: bool = False,
        caption: str = "",
        progress: files.Progress | None = None,
    ) -> int:
        """Upload the file at ``path`` encrypted under a fresh key (as ``Client.send_file``:
        resumable, at most 100 MiB), then send its pointer to the group in one GROUP_SEND.
        Returns the local message id (kind "attachment") once the relay accepted it.

        While the group has a disappearing timer, the pointer goes as EXPIRING and the
        blob is announced with the timer as its ``ttl_seconds``."""
        local = self._member_group(group)
        client = self._client
        source = _file_to_send(path)
        pointer = await client._upload_file(
            source,
            content_type=content_type,
            voice=voice,
            caption=caption,
            progress=progress,
            ttl_seconds=local.timer_seconds or None,
        )
        where = str(source.resolve())

        def record(sent_at_ms: int) -> int:
            message_id = client.store.add_attachment_message(
                client.username,
                "out",
                client.device_id,
                dataclasses.replace(pointer, sent_at_ms=sent_at_ms),
                state="sent",
                status=STATUS_PENDING,
                path=where,
            )
            self.store.set_message_group(message_id, local.group_id)
            return message_id

        return await self._send_message(
            local, lambda sent_at_ms: dataclasses.replace(pointer, sent_at_ms=sent_at_ms), record
        )

    async def _send_message(
        self,
        local: LocalGroup,
        build: Callable[[int], Text | Attachment],
        record: Callable[[int], int],
    ) -> int:
        """Send what ``build(sent_at_ms)`` makes to the group, stored by ``record`` (which
        returns the message id) in the transaction that queues it. While the group has a
        timer it goes as EXPIRING in an EXPIRES send, and our copy expires with it."""
        client = self._client
        await client.connect()
        async with client._send_lock:
            group = self.store.group(local.group_id)
            timer = group.timer_seconds if group is not None else 0
            sent_at_ms = client.store.next_sent_at(client._now_ms())
            content = _encode(disappearing_.wrap(build(sent_at_ms), timer))
            with client.store.transaction():
                message_id = record(sent_at_ms)
                if timer:
                    expires = disappearing_.expires_at(sent_at_ms, timer)
                    client.store.set_message_expiry(message_id, expires, timer)
            await self._group_send(local.group_id, content, message_id, timer)
        return message_id

    async def _group_send(
        self, group_id: bytes, content: bytes, message_id: int | None, timer: int = 0
    ) -> None:
        """Encrypt ``content`` once for the group, queue the GROUP_SEND (with EXPIRES and
        ``timer`` as its ttl when set) and send it. Runs under the send lock. Reconciles
        first when our key has not reached the roster we know (a first send, or a member
        we could not reach last time)."""
        group = self.store.group(group_id)
        state = self.store.own_sender_key(group_id)
        if (
            group is None
            or group.roster_digest is None
            or state is None
            or (self._unreached(group, state))
        ):
            await self._reconcile(group_id)
        entry_id = self._queue(group_id, content, message_id, None, timer)
        entry = self._client.store.outbox_entry(entry_id)
        if entry is not None:
            await self.dispatch(entry)

    def _unreached(self, group: LocalGroup, state: SenderKeyState) -> bool:
        others = self._others(group.roster or ())
        return bool(others - self.store.key_recipients(group.group_id, state.key_id))

    def _others(self, roster: Iterable[RosterEntry]) -> set[RosterEntry]:
        client = self._client
        me = (client.username, client.device_id)
        return {entry for entry in roster if (entry.username, entry.device_id) != me}

    def _queue(
        self,
        group_id: bytes,
        content: bytes,
        message_id: int | None,
        entry_id: int | None,
        timer: int = 0,
    ) -> int:
        """Encrypt under our current chain and write the GROUP_SEND to the outbox (a new
        entry, or replacing ``entry_id``'s frame), with the advanced chain, in one
        transaction. ``timer``: a disappearing message, sent with EXPIRES."""
        client = self._client
        now = client._now_ms()
        with client.store.transaction():
            group = self.store.group(group_id)
            state = self.store.own_sender_key(group_id)
            if group is None or group.roster_digest is None or state is None:
                raise SealpostError(
                    ErrorCode.STALE_ROSTER, f"group {group_id.hex()} has no reconciled roster"
                )
            try:
                payload = state.encrypt(group_id, content)
            except ProtocolError as exc:
                raise SealpostError.from_protocol(exc, f"group {group_id.hex()}") from None
            self.store.save_own_sender_key(group_id, state, now)
            flags, ttl_seconds = disappearing_.send_flags(timer)
            frame = GroupSend(0, group_id, group.roster_digest, payload, flags, ttl_seconds)
            if entry_id is None:
                return client.store.add_outbox(message_id, group_id.hex(), content, frame, now)
            client.store.replace_outbox_frame(entry_id, frame)
            return entry_id

    async def dispatch(self, entry: OutboxEntry) -> None:
        """Send one outbox GROUP_SEND until the relay accepts it; on ``stale_roster``
        reconcile and encrypt again (at most MAX_ROSTER_ROUNDS sends). ``Client`` calls it
        for GROUP_SEND entries, under the send lock."""
        client = self._client
        frame = entry.frame
        if not isinstance(frame, GroupSend):  # pragma: no cover - Client routes only these
            raise TypeError("not a GROUP_SEND entry")
        group_id = frame.group_id
        for attempt in range(1, MAX_ROSTER_ROUNDS + 1):
            reply = await client._relay().request(frame)
            match reply:
                case SendOk():
                    with client.store.transaction():
                        client.store.delete_outbox(entry.id)
                        if entry.message_id is not None:
                            client.store.set_message_status(
                                entry.message_id, STATUS_SENT, reply.server_time_ms
                            )
                    return
                case Error() if reply.error_code is ErrorCode.STALE_ROSTER:
                    log.info("group %s: stale roster (attempt %d)", group_id.hex(), attempt)
                    if attempt == MAX_ROSTER_ROUNDS:
                        break
                    try:
                        await self._reconcile(group_id)
                        timer = frame.ttl_seconds or 0  # EXPIRES stays as it was
                        self._queue(group_id, entry.content, entry.message_id, entry.id, timer)
                    except SealpostError:
                        self._give_up(entry)
                        raise
                    fresh = client.store.outbox_entry(entry.id)
                    if fresh is None:  # pragma: no cover - only this task deletes it
                        return
                    frame = fresh.frame
                case Error():
                    self._give_up(entry)
                    code = reply.error_code
                    if code in (ErrorCode.NOT_A_MEMBER, ErrorCode.UNKNOWN_GROUP):
                        self.store.set_member(group_id, False, client._now_ms())
                        raise SealpostError(
                            code, f"you are no longer in group {group_id.hex()}: {reply.message}"
                        )
                    if code is None:
                        raise SealpostError(
                            LocalErrorCode.BAD_RESPONSE,
                            f"relay error {reply.code}: {reply.message}",
                        )
                    raise SealpostError(code, reply.message)
                case DeviceMismatch():
                    self._give_up(entry)
                    raise SealpostError(
                        LocalErrorCode.BAD_RESPONSE,
                        "the relay answered a GROUP_SEND with DEVICE_MISMATCH",
                    )
        self._give_up(entry)
        raise SealpostError(
            ErrorCode.STALE_ROSTER,
            f"the devices of group {group_id.hex()} kept changing; gave up after "
            f"{MAX_ROSTER_ROUNDS} attempts",
        )

    def _give_up(self, entry: OutboxEntry) -> None:
        client = self._client
        with client.store.transaction():
            client.store.delete_outbox(entry.id)
            if entry.message_id is not None:
                client.store.set_message_status(entry.message_id, STATUS_FAILED)

    async def _reconcile(
        self,
        group_id: bytes,
        info: GroupInfo | None = None,
        extra: Mapping[str, Sequence[bytes]] | None = None,
    ) -> None:
        """Bring our sender key to the group's roster (``info``, else fetched now): a new
        key if any device that held ours left the roster, the key to every device that
        lacks it; ``extra`` contents go pairwise to the named accounts in the same sends.
        Saves the roster as the one our GROUP_SENDs name. Runs under the send lock.

        An account we cannot send to (its identity key changed, say) is skipped and
        logged: it cannot read our group messages until a later send reaches it.
        """
        client = self._client
        if info is None:
            info = await self._get(group_id)
        try:
            digest = roster_digest(info.devices)
        except ProtocolError as exc:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE, f"group {info.id_hex}: the roster: {exc.message}"
            ) from None
        if digest != info.roster_digest:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE,
                f"group {info.id_hex}: the server's roster digest is not the digest of its roster",
            )
        now = client._now_ms()
        others = self._others(info.devices)
        state = self.store.own_sender_key(group_id)
        holders = self.store.key_recipients(group_id, state.key_id) if state else set()
        if state is None or holders - others:
            if state is not None:
                log.info(
                    "group %s: %d device(s) left the roster; new sender key",
                    info.id_hex,
                    len(holders - others),
                )
            state = SenderKeyState.generate(client._rng)
            self.store.save_own_sender_key(group_id, state, now)
            holders = set()
        needing: dict[str, list[RosterEntry]] = {}
        for entry in sorted(others - holders, key=lambda e: (e.username, e.device_id)):
            needing.setdefault(entry.username, []).append(entry)
        key_content = b""
        if needing:
            key_content = _encode(state.distribution(group_id, client.store.next_sent_at(now)))
        for username in sorted(set(needing) | set(extra or {})):
            contents = list((extra or {}).get(username, ()))
            if username in needing:
                contents.append(key_content)
            try:
                given = await self._send_pairwise(username, contents)
            except SealpostError as exc:
                log.warning("group %s: nothing sent to %s: %s", info.id_hex, username, exc)
                continue
            reached = [
                e for e in needing.get(username, ()) if (e.device_id, e.registration_id) in given
            ]
            self.store.add_key_recipients(group_id, state.key_id, reached)
        with client.store.transaction():
            self._save_members(info)
            self.store.save_roster(group_id, info.devices, digest, client._now_ms())

    async def _send_pairwise(
        self, username: str, contents: Sequence[bytes]
    ) -> set[tuple[int, int]]:
        """Send each content to every device of ``username`` over the pairwise sessions
        (our own other devices when it is us), through the outbox, in order. Returns the
        (device_id, registration_id) of the devices addressed."""
        client = self._client
        devices = await client._fetch_devices(username)
        certificates = devices.certificates
        if not certificates:
            if username == client.username:
                return set()  # this is our only device
            raise SealpostError(ErrorCode.UNKNOWN_DEVICE, f"{username} has no devices to send to")
        bundles = await client._claim_bundles(username, certificates)
        now = client._now_ms()
        entry_ids: list[int] = []
        with client.store.transaction():
            for content in contents:
                messages = client._encrypt_for(
                    _Target(username, certificates, bundles), content, now
                )
                bundles = {}  # the sessions exist now: a bundle is used once
                frame = Send(0, username, tuple(messages.values()))
                entry_ids.append(client.store.add_outbox(None, username, content, frame, now))
        for entry_id in entry_ids:
            entry = client.store.outbox_entry(entry_id)
            if entry is not None:
                await client._dispatch(entry)
        return {(c.device_id, c.registration_id) for c in certificates.values()}

    def _own_update(
        self, group_id: bytes, action: GroupAction, name: str, targets: Sequence[str]
    ) -> GroupUpdate:
        """A GROUP_UPDATE of ours, also recorded in our own conversation."""
        client = self._client
        group = self.store.group(group_id)
        now = client._now_ms()
        update = GroupUpdate(
            group_id,
            action,
            name or (group.name if group is not None else ""),
            group.timer_seconds if group is not None else 0,
            tuple(targets),
            client.store.next_sent_at(now),
        )
        self.store.add_group_event(
            group_id, client.username, action, update.name, update.timer_seconds, targets,
            update.sent_at_ms, now,
        )  # fmt: skip
        return update

    # --- receiving (in the envelope's transaction) ------------------------------------------

    @staticmethod
    def is_group_payload(payload: bytes) -> bool:
        """Whether an envelope holds a SenderKeyMessage (first byte 0x13), not a pairwise
        message."""
        return payload[:1] == _SENDER_KEY_TYPE

    def receive(self, frame: Deliver) -> list[Event]:
        """A DELIVER whose payload is a SenderKeyMessage: decrypt with the sender device's
        record, store, return the events. Called by ``Client`` inside its transaction."""
        client = self._client
        sender, device = frame.sender, frame.sender_device
        now = client._now_ms()
        try:
            message = SenderKeyMessage.decode(frame.payload)
        except ProtocolError as exc:
            log.info(
                "undecryptable group envelope %d from %s: %s", frame.seq, sender, exc.code.slug
            )
            return client._store_undecryptable(frame, exc.code, now)
        group_id = message.group_id
        self._heard_of(group_id, now)
        record = self.store.sender_key_record(group_id, sender, device)
        try:
            padded = record.decrypt(message)  # the record changes only if this succeeds
        except ProtocolError as exc:
            if exc.code is ErrorCode.DUPLICATE_MESSAGE:
                log.debug("dropping a duplicate group message from %s device %d", sender, device)
                return []
            return self._undecryptable(frame, group_id, exc.code, now)
        self.store.save_sender_key_record(group_id, sender, device, record, now)
        try:
            content = decode_content(padded)
        except ProtocolError as exc:
            if exc.code is ErrorCode.UNKNOWN_TYPE:  # a newer client's content: not damage
                log.debug("group envelope %d: content this client does not know", frame.seq)
                return []
            return self._undecryptable(frame, group_id, exc.code, now)
        # A disappearing message is taken as what it wraps, then given its expiry: ours
        # (from our other device) counts from its sent_at, another member's from now.
        content, timer = disappearing_.unwrap(content)
        own = sender == client.username
        expires: int | None = None
        if timer:
            expires = disappearing_.expires_at(content.sent_at_ms if own else now, timer)
        match content:
            case Attachment():
                # Downloaded after the ACK (``Client._fetch_attachments``), like a 1:1 file.
                message_id = client.store.add_attachment_message(
                    sender, "out" if own else "in", device, content, state="pending",
                    status=STATUS_SENT if own else STATUS_RECEIVED,
                    server_time_ms=frame.server_time_ms, received_at_ms=now, seq=frame.seq,
                )  # fmt: skip
                self.store.set_message_group(message_id, group_id)
                if expires is not None:
                    client.store.set_message_expiry(message_id, expires, timer)
                return []
            case Text():
                message_id = self.store.add_group_text(
                    group_id,
                    outgoing=own,
                    sender=sender,
                    sender_device=device,
                    text=content.body,
                    sent_at_ms=content.sent_at_ms,
                    status=STATUS_SENT if own else STATUS_RECEIVED,
                    server_time_ms=frame.server_time_ms,
                    received_at_ms=now,
                    seq=frame.seq,
                )
                if expires is not None:
                    client.store.set_message_expiry(message_id, expires, timer)
                return [
                    MessageReceived(
                        sender,
                        device,
                        content.body,
                        content.sent_at_ms,
                        frame.server_time_ms,
                        frame.seq,
                        message_id,
                        expires_at_ms=expires,
                        group=group_id.hex(),
                    )  # fmt: skip
                ]
            case GroupUpdate() if content.group_id == group_id:
                return self._apply_update(sender, device, content, frame.server_time_ms, now)
            case GroupUpdate():
                log.info("group message from %s carries an update for another group", sender)
            case SenderKeyDistribution():
                log.info("a SENDER_KEY from %s in a group message: accepted only pairwise", sender)
            case Typing():
                pass
            case _:
                log.debug("group message from %s: %s not shown", sender, type(content).__name__)
        return []

    def _undecryptable(
        self, frame: Deliver, group_id: bytes, code: ErrorCode, now_ms: int
    ) -> list[Event]:
        log.info("undecryptable group message %d from %s: %s", frame.seq, frame.sender, code.slug)
        message_id = self.store.add_group_undecryptable(
            group_id, frame.sender, frame.sender_device, code, frame.server_time_ms, now_ms,
            frame.seq,
        )  # fmt: skip
        if message_id is None:  # recorded on an earlier delivery of this envelope
            return []
        return [
            UndecryptableMessage(
                frame.sender,
                frame.sender_device,
                code,
                frame.server_time_ms,
                frame.seq,
                message_id,
                group=group_id.hex(),
            )  # fmt: skip
        ]

    def take_pairwise(self, frame: Deliver, content: Content, now_ms: int) -> list[Event]:
        """A SENDER_KEY or GROUP_UPDATE that arrived over a pairwise session (``Client``'s
        transaction): keep the key for the session's peer device, or apply the update."""
        sender, device = frame.sender, frame.sender_device
        match content:
            case SenderKeyDistribution():
                self._heard_of(content.group_id, now_ms)
                record = self.store.sender_key_record(content.group_id, sender, device)
                try:
                    record.process_distribution(content)
                except ProtocolError as exc:
                    log.info("a bad sender key from %s device %d: %s", sender, device, exc)
                    return []
                self.store.save_sender_key_record(content.group_id, sender, device, record, now_ms)
                return []
            case GroupUpdate():
                self._heard_of(content.group_id, now_ms)
                return self._apply_update(sender, device, content, frame.server_time_ms, now_ms)
        return []

    def _heard_of(self, group_id: bytes, now_ms: int) -> None:
        if self.store.ensure_group(group_id, now_ms, needs_fetch=True):
            self._fetch_due = True

    def _apply_update(
        self, sender: str, device: int, update: GroupUpdate, server_time_ms: int, now_ms: int
    ) -> list[Event]:
        """Apply a member's GROUP_UPDATE to the local group (name, timer, member cache) and
        record it for the conversation."""
        group_id = update.group_id
        me = self._client.username
        match update.action:
            case GroupAction.CREATED | GroupAction.SNAPSHOT:
                self.store.set_name(group_id, update.name, update.timer_seconds, now_ms)
                if update.action is GroupAction.SNAPSHOT:
                    self.store.set_member(group_id, True, now_ms)
                self.store.mark_fetch(group_id, now_ms)
                self._fetch_due = True
            case GroupAction.RENAMED:
                self.store.set_name(group_id, update.name, None, now_ms)
            case GroupAction.MEMBERS_ADDED:
                self.store.change_members(group_id, update.targets, (), now_ms)
                if me in update.targets:
                    self.store.set_member(group_id, True, now_ms)
            case GroupAction.MEMBERS_REMOVED:
                self.store.change_members(group_id, (), update.targets, now_ms)
                if me in update.targets:
                    # Any member can send this; the server says whether it is so.
                    self.store.set_member(group_id, False, now_ms)
                    self.store.mark_fetch(group_id, now_ms)
                    self._fetch_due = True
            case GroupAction.LEFT:
                self.store.change_members(group_id, (), (sender,), now_ms)
            case GroupAction.ADMINS_CHANGED:
                self.store.mark_fetch(group_id, now_ms)
                self._fetch_due = True
        event_id = self.store.add_group_event(
            group_id, sender, update.action, update.name, update.timer_seconds, update.targets,
            update.sent_at_ms, now_ms,
        )  # fmt: skip
        return [
            GroupUpdated(
                group=group_id.hex(),
                actor=sender,
                device=device,
                action=ACTION_SLUGS[update.action],
                name=update.name,
                timer_seconds=update.timer_seconds,
                targets=update.targets,
                text=describe_update(sender, update.action, update.name, update.targets),
                sent_at_ms=update.sent_at_ms,
                server_time_ms=server_time_ms,
                event_id=event_id,
            )
        ]

    @property
    def fetch_due(self) -> bool:
        """Whether ``fetch_pending()`` has groups to look up (network round trips)."""
        return self._fetch_due and bool(self.store.groups_to_fetch())

    async def fetch_pending(self) -> None:
        """Look up, on the server, the groups heard of but not yet fetched (after a push,
        outside its transaction). A failure that may pass leaves them for the next push."""
        if not self._fetch_due:
            return
        self._fetch_due = False
        for group_id in self.store.groups_to_fetch():
            try:
                info = await self._get(group_id)
            except SealpostError as exc:
                if exc.code in (ErrorCode.NOT_A_MEMBER, ErrorCode.UNKNOWN_GROUP):
                    self.store.set_member(group_id, False, self._client._now_ms())
                    continue
                log.info("could not look up group %s: %s", group_id.hex(), exc)
                self._fetch_due = True
                continue
            self._save_members(info)

    # --- REST -------------------------------------------------------------------------------

    def _save_members(self, info: GroupInfo) -> None:
        me = self._client.username
        admin = any(m.username == me and m.admin for m in info.members)
        self.store.save_members(info.group_id, info.members, admin, self._client._now_ms())

    async def _get(self, group_id: bytes) -> GroupInfo:
        local = self.store.group(group_id)
        data = await self._request("GET", f"/api/v1/groups/{group_id.hex()}", None, local)
        info = _group_info(data, "GET group")
        if info.group_id != group_id:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE, f"asked for group {group_id.hex()}, got {info.id_hex}"
            )
        return info

    async def _request(
        self,
        method: str,
        path: str,
        body: object,
        local: LocalGroup | None = None,
        *,
        target: str | None = None,
    ) -> Any:
        """One groups API request, its refusals reworded to name the group and the user."""
        try:
            return await self._client._server_api()._request(method, path, json=body)
        except SealpostError as exc:
            raise self._explain(exc, local, target) from None

    def _explain(
        self, exc: SealpostError, local: LocalGroup | None, target: str | None
    ) -> SealpostError:
        if local is None:
            return exc
        where = f"group {local.id_hex}" + (f" (“{local.name}”)" if local.name else "")
        match exc.code:
            case ErrorCode.FORBIDDEN:
                message = f"only an admin of {where} may do that, and you are not one"
            case ErrorCode.NOT_A_MEMBER if exc.status == 404 and target:
                message = f"{target} is not a member of {where}"
            case ErrorCode.NOT_A_MEMBER | ErrorCode.UNKNOWN_GROUP:
                self.store.set_member(local.group_id, False, self._client._now_ms())
                message = f"you are not a member of {where} (any more)"
            case _:
                return exc
        return SealpostError(exc.code, message, status=exc.status, fields=exc.fields)

    # --- the rest --------------------------------------------------------------------------

    def _member_group(self, group: str | bytes) -> LocalGroup:
        local = self.local(group)
        if not local.member:
            raise SealpostError(
                ErrorCode.NOT_A_MEMBER, f"you are no longer a member of group {local.id_hex}"
            )
        return local


def _encode(content: Content) -> bytes:
    try:
        return encode_content(content, hide_length=True)
    except ProtocolError as exc:
        raise SealpostError.from_protocol(exc) from None


def _group_id(group: str | bytes) -> bytes:
    if isinstance(group, bytes):
        if len(group) != GROUP_ID_BYTES:
            raise SealpostError(ErrorCode.INVALID_VALUE, f"a group id is {GROUP_ID_BYTES} bytes")
        return group
    try:
        return parse_group_id(group.strip())
    except ProtocolError:
        raise SealpostError(
            ErrorCode.INVALID_VALUE,
            f"{group[:40]!r} is not a group id (32 lower-case hex digits, as 'sealpost group "
            "list' shows)",
        ) from None


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise SealpostError(ErrorCode.INVALID_VALUE, "the group name is empty")
    size = len(name.encode("utf-8"))
    if size > MAX_GROUP_NAME_BYTES:
        raise SealpostError(
            ErrorCode.TOO_LARGE,
            f"the group name is {size} bytes; the limit is {MAX_GROUP_NAME_BYTES}",
        )
    return name


def _usernames(names: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(_normalize(name) for name in names))
    if len(unique) > MAX_GROUP_MEMBERS:
        raise SealpostError(
            ErrorCode.GROUP_TOO_LARGE,
            f"{len(unique)} accounts; a group has at most {MAX_GROUP_MEMBERS}",
        )
    return unique


def _group_info(data: Any, what: str) -> GroupInfo:
    """Check the shape of a group as the API returns it."""
    obj = _object(data)
    try:
        group_id = parse_group_id(_str(obj, "id"))
        digest = bytes.fromhex(_str(obj, "roster_digest"))
    except (ProtocolError, ValueError):
        raise SealpostError(
            LocalErrorCode.BAD_RESPONSE, f"{what}: a malformed group id or roster digest"
        ) from None
    if len(digest) != ROSTER_DIGEST_BYTES:
        raise SealpostError(
            LocalErrorCode.BAD_RESPONSE, f"{what}: the roster digest is not 16 bytes"
        )
    return GroupInfo(
        group_id=group_id,
        roster_version=_int(obj, "roster_version"),
        members=tuple(
            Member(_str(m, "username"), _bool(m, "admin")) for m in _list_of_objects(obj, "members")
        ),
        devices=tuple(
            RosterEntry(_str(d, "username"), _int(d, "device_id"), _int(d, "registration_id"))
            for d in _list_of_objects(obj, "devices")
        ),
        roster_digest=digest,
    )
