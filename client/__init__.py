"""Sealpost's Python reference client: a library (``Client``) and the ``sealpost`` command.

It wraps the sans-I/O ``protocol`` package with the three kinds of I/O a device needs: a
local SQLite store (``client.store``), the REST API (``client.api``) and the WebSocket
relay (``client.transport``). ``client.core.Client`` puts them together.

Quick start::

    import asyncio
    from client import Client, MessageReceived

    async def main() -> None:
        async with Client("~/.sealpost-alice") as alice:
            if not alice.registered:
                await alice.register("http://127.0.0.1:8000", "alice", "a long passphrase")
            await alice.send_text("bob", "hello")
            async for event in alice.receive(wait=5):
                if isinstance(event, MessageReceived):
                    print(event.from_, event.text)

    asyncio.run(main())

The ``Client`` API (all network methods are coroutines; every failure is a
``SealpostError`` whose ``code`` is a ``protocol.errors.ErrorCode`` or, for conditions
that never cross the wire, a ``LocalErrorCode``):

``Client(home, *, server_url=None, send_receipts=True, http_transport=None,
ws_connector=..., backoff=None, ping_interval=25.0, clock=time.time, rng=...)``
    Opens (or creates) ``<home>/sealpost.sqlite3``. ``server_url`` overrides the stored
    URL; ``send_receipts=False`` (or setting the ``send_receipts`` attribute) sends no
    receipts from this object, whatever the stored setting; the remaining keywords are
    test seams (an ``httpx.MockTransport``, an in-memory WebSocket connector, fast
    backoff, a fixed clock). Use as an async context manager, or call ``close()``.

``registered``, ``username``, ``device_id``, ``account_key``, ``config``
    Who this home is (the last four raise NOT_REGISTERED before ``register``).

``on_event`` (constructor keyword or attribute)
    Called with events that happen outside ``receive()``: ``DeviceRefused`` while sending.
    Without it they are logged as warnings.

``await register(server_url, username, password, *, device_name="Python client")``
    Generates the account identity key, device 1's keys, a signed prekey, a last-resort
    KEM prekey and 100 one-time prekeys of each kind, and the account's signed device list
    (version 1, naming device 1); signs up; stores everything.

Several devices per account (docs/api.md, "Several devices per account")
    ``await link_new_device(server_url, *, show_code, device_name=..., timeout=600)`` makes
    an empty home another device of an existing account: it hands the link code
    (``protocol.provisioning.LinkCode``: ``.text()`` for text and QR) to ``show_code`` and
    waits for ``await approve_link(code, *, history_bytes=1 MiB, timeout=600)`` on a device
    of the account, which seals the account key and a link token to the code, waits for the
    new device to appear in the signed device list, and sends it the newest texts (up to
    ``history_bytes`` of records; 0: none) as HISTORY chunks, which the new device's
    ``receive()`` imports as one ``HistoryImported``. Returns ``LinkedDevice(username,
    device_id, history_follows)`` / ``LinkApproved(device_ids, history_messages,
    history_chunks)``. ``await list_devices()``, ``await rename_device(id, name)`` and
    ``await revoke_device(id) -> bool`` (True: it was this device, whose home is then
    unusable) manage the account's devices; linking and revoking sign a new device list.
    Every device fetch checks the account's signed device list: only devices it names
    (with the certificate shown) are encrypted to; any other is reported as
    ``DeviceRefused`` and, if the relay insists on it, the send fails with
    UNSIGNED_DEVICE; a list older than one already seen fails the send (INVALID_VALUE).

``await connect()``
    Opens the relay connection (``send_text`` and ``receive`` call it for you), tops up
    prekeys below the server's low watermark, rotates a signed prekey older than 7 days,
    and resends what the outbox kept from an earlier run. Reconnects by itself afterwards.

``await send_text(username, text, *, wait=True) -> int``
    Encrypts once per device of ``username`` (and a SENT transcript once per other device
    of our own account), stores the sessions and the outbox entry in one transaction, sends, and
    returns the local message id once the server accepted it (``wait=False``: once it is
    in the outbox and handed to the connection; up to 32 SENDs are then in flight at once,
    in order; ``await wait_sent(ids)`` waits for their answers, ``await send_many(username,
    texts)`` does both). Device lists are checked once and then reused for a while. Its
    sent_at (the sender's clock, inside the encryption) is ``max(now, previous + 1)``:
    unique per device and increasing, so that (sender, sent_at) names this one message,
    which is how receipts refer to it. Corrects the device set on DEVICE_MISMATCH (at
    most 3 rounds). Raises UNTRUSTED_IDENTITY while the recipient's
    identity key is flagged as changed.

``async for event in receive(*, wait=0.0)``
    Yields ``MessageReceived``, ``UndecryptableMessage``, ``IdentityChanged``,
    ``MessageStatusChanged``, ``SentByMe`` and ``HistoryImported`` as envelopes arrive;
    each is stored before it is yielded (and acknowledged with the others stored so far
    once no other push is waiting: one ACK for a burst). Stops after the server's
    QUEUE_EMPTY plus ``wait`` quiet seconds (``wait=None``: never), once the receipts
    owed are sent (waiting 10 s at most).
    ``handle_push(frame)`` is the same for one frame.

Receipts (end-to-end encrypted like any message; the server cannot tell them apart)
    Each text received from another account owes its sender a DELIVERED receipt. It is
    written in the text's own transaction and sent after the ACK by a background task,
    batched per sender: when the push queue is momentarily empty, when 100 are owed, and
    before ``receive()`` returns; whatever a crash or a disconnect interrupts goes out on
    the next ``connect()``. Receipts go to the sender's account only (all its devices),
    never to our own other devices, never in answer to a receipt, and never hold a text
    up. Receipts to an account whose identity key changed wait until ``trust()``.
    An incoming receipt moves our outgoing messages to that peer with the named sent_at
    forward (``messages()`` status: pending -> sent -> delivered -> read, never back; an
    unknown sent_at is ignored) and yields ``MessageStatusChanged``; it is never stored
    and never yields ``MessageReceived``. Content of a type (or receipt kind) this client
    does not know comes from a newer client: it is acknowledged, logged at debug level,
    and neither stored nor yielded.

``await mark_read(username) -> int``
    Marks the unread incoming messages from ``username`` read (their status goes from
    "received" to "read") and sends one READ receipt per 100 of them; returns how many.

``receipts``, ``set_receipts(enabled)``, ``sending_receipts``
    The stored ``receipts`` setting (default on; ``set_receipts(False)`` also drops the
    receipts owed), and whether this object sends receipts (setting and attribute). With
    receipts off none are sent; incoming ones are still processed.

``await rotate_prekeys()``
    New signed prekey and last-resort KEM prekey; the old private keys stay 7 days.

``await safety_number(username) -> protocol.safety.SafetyNumber``
    ``.groups()`` gives 12 groups of 5 digits; ``.qr_payload`` the bytes for a QR code.

``trust(username, *, verified=False)``, ``identity(username)``
    Accept a changed identity key (sending works again); inspect the identity store.

``messages(peer=None, limit=None) -> list[StoredMessage]``
    Local history, oldest first.

Events are frozen dataclasses: ``MessageReceived(from_, device, text, sent_at_ms,
server_time_ms, seq, message_id)``, ``UndecryptableMessage(from_, device, code,
server_time_ms, seq, message_id)``, ``IdentityChanged(username, device,
server_time_ms)`` and ``MessageStatusChanged(peer, message_id, status)`` (status
"delivered" or "read"). ``sent_at_ms`` is the sender's clock, carried inside the encryption;
``server_time_ms`` is when the relay accepted the envelope; ``message_id`` is the id in
``messages()``. What another device of our own account sends arrives as its SENT transcript:
``SentByMe(destination, text, sent_at_ms, device, message_id)``, stored as our outgoing
message (status "sent") in the conversation with ``destination``. ``HistoryImported(count)``
says the history a linked device was sent is in ``messages()`` (imported messages are not
reported one by one; incoming ones count as read, and they follow, in ``messages()``, what
arrived before the import). ``DeviceRefused(username, device_id, reason)`` goes to
``on_event``.

Groups (``client.groups``, a ``client.groups.Groups``; docs/protocol.md §17.6)
    ``await create(name, members) -> id`` (32 hex digits), ``await send_text(group, text)
    -> message_id`` (one GROUP_SEND, whatever the size), ``await send_file(group, path, *,
    content_type=None, voice=False, caption="", progress=None) -> message_id`` (one upload,
    then one GROUP_SEND of the pointer), ``await add(group, usernames)``,
    ``await remove(group, username)``, ``await leave(group)``, ``await rename(group,
    name)``, ``await set_admin(group, username, admin)``, ``await fetch(group)`` (members,
    admins and roster from the server), and, offline, ``local_groups()``, ``local(group)``,
    ``messages(group)`` and ``events(group)``. ``receive()`` yields group texts as
    ``MessageReceived`` and files as ``AttachmentReceived``, both with ``group`` set (the
    id; None for 1:1), saved under downloads/ like a 1:1 file, and membership or name
    changes as ``GroupUpdated(group, actor, device, action, name, timer_seconds, targets,
    text, sent_at_ms, server_time_ms, event_id)``.

Files (``client.attachments``; docs/protocol.md §17.5, docs/api.md "Attachments")
    ``await send_file(username, path, *, content_type=None, voice=False, caption="",
    progress=None) -> message_id`` encrypts the file with a fresh key into a temporary blob
    under ``<home>/tmp/``, uploads it in chunks (resuming from the server's offset after a
    lost connection, a timeout or a 409; ``upload_stats`` counts bytes and resumes), then
    sends the ATTACHMENT pointer like a text (SENT_CONTENT to our other devices). While
    the conversation has a timer, the blob is announced with it as ``ttl_seconds``, so
    the server drops the file when the message disappears.
    ``receive()`` downloads each file (resuming with ``Range``), checks and decrypts it and
    saves it as ``<home>/downloads/<safe name>``, then yields ``AttachmentReceived(from_,
    device, message_id, file_name, content_type, size, caption, voice, path, code, ...)``:
    ``path`` None and ``code`` DECRYPT_FAILED (tampered), ATTACHMENT_EXPIRED or
    UNKNOWN_ATTACHMENT when nothing was kept. ``messages()`` lists them as kind
    "attachment" with ``.attachment`` (pointer, state, path). Attachments take receipts.

Typing indicators
    ``await send_typing(username, started=True) -> bool``: an EPHEMERAL send over existing
    sessions, never stored by the server; received ones are ``TypingChanged(from_, device,
    started, sent_at_ms)``. ``typing`` / ``set_typing(enabled)``: the stored setting (off:
    none sent, none shown), separate from ``receipts``.

Disappearing messages (``client.disappearing``)
    ``await set_timer(username, seconds)`` (0: off) sends a TIMER and stores the
    conversation's timer (``timer(username)``); either side may set it, and a received
    one is ``TimerChanged(peer, by, timer_seconds, sent_at_ms, message_id)`` and a "timer"
    entry in ``messages()``. While it is set, texts and files go as EXPIRING in EXPIRES
    sends (ttl_seconds = the timer, so the relay drops its copy by then) and are deleted
    here ``timer`` seconds after sending (sender) or arrival (receiver), with the files
    saved for them: ``purge_expired()`` runs on open, on every send and receive and on a
    timer inside ``receive()``, and ``messages()`` never lists an expired message.
    ``MessageReceived.expires_at_ms`` and ``SentByMe.expires_at_ms`` say when.
"""

from .core import (
    AttachmentReceived,
    Client,
    DeviceRefused,
    Event,
    GroupUpdated,
    HistoryImported,
    IdentityChanged,
    LinkApproved,
    LinkedDevice,
    MessageReceived,
    MessageStatusChanged,
    SentByMe,
    TimerChanged,
    TypingChanged,
    UndecryptableMessage,
)
from .errors import LocalErrorCode, SealpostError
from .store import StoredMessage

__all__ = [
    "AttachmentReceived",
    "Client",
    "DeviceRefused",
    "Event",
    "GroupUpdated",
    "HistoryImported",
    "IdentityChanged",
    "LinkApproved",
    "LinkedDevice",
    "LocalErrorCode",
    "MessageReceived",
    "MessageStatusChanged",
    "SealpostError",
    "SentByMe",
    "StoredMessage",
    "TimerChanged",
    "TypingChanged",
    "UndecryptableMessage",
]
