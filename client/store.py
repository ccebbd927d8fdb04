"""The client's local state: one SQLite file, ``<home>/sealpost.sqlite3``.

What it holds, and why it is one file: the account and device private keys, the private
halves of every prekey the server may still hand out, the ratchet sessions, what we know
about other people's identity keys and devices, the local message history, and the outbox.
Receiving a message changes several of these at once (the session advances, the message
is stored, a one-time prekey is consumed); those changes commit together in one SQLite
transaction *before* the envelope is acknowledged, so a crash at any point either leaves
the envelope unacknowledged with nothing written (the server delivers it again) or fully
stored (the repeat is then a DUPLICATE_MESSAGE and dropped).

Receipts (protocol.content.Receipt) are never messages here. An incoming one only moves
the status of our outgoing messages forward; an outgoing one is first a row of
``pending_receipts``, written in the same transaction as the message it acknowledges (or
as ``mark_read``), and becomes an outbox entry without a message (``message_id`` NULL) in
the transaction that encrypts it, which also deletes the pending rows. So a receipt is
never lost and never encrypted twice, whatever crashes in between.

Several devices per account: ``device_lists`` keeps the newest signed device list seen per
account (our own included) with the account key it verified under, so that an older one is
refused; ``history_chunks`` keeps the HISTORY chunks of a transfer until all are here, and
``history_transfers`` the transfers imported, so that a late duplicate imports nothing.

What it never deletes early: a signed prekey or last-resort KEM prekey that was replaced
by a rotation stays for ``RETIRED_PREKEY_TTL_MS`` (7 days), because a sender may have
claimed the old bundle just before the rotation and its PreKeyMessage may still be queued.
Outbox entries are deleted only once the server has answered them (SEND_OK, or an ERROR
that makes the send final); until then they are resent with the *same* ciphertexts.

The file is created with mode 0600 inside a 0700 home; the schema version lives in
``PRAGMA user_version`` and ``MIGRATIONS`` brings older files forward. All methods are
synchronous: sessions are read, changed and written without an ``await`` in between, so
concurrent tasks on one event loop never overwrite each other's ratchet state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from protocol import primitives as p
from protocol.content import Attachment, AttachmentFlags, HistoryRecord
from protocol.devicelist import SignedDeviceList
from protocol.errors import ErrorCode
from protocol.frames import DeviceMessage, GroupSend, Send, SendFlags
from protocol.keys import (
    MAX_KEY_ID,
    AccountIdentity,
    DeviceCertificate,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    SignedPreKeyPair,
)
from protocol.session import SessionRecord

from .errors import LocalErrorCode, SealpostError

STORE_FILENAME = "sealpost.sqlite3"
RETIRED_PREKEY_TTL_MS = 7 * 24 * 3600 * 1000

Direction = Literal["in", "out"]
MessageKind = Literal["text", "undecryptable", "attachment", "timer"]
AttachmentState = Literal["pending", "saved", "failed", "sent"]
KeyKind = Literal["signed", "one_time", "kem"]

# Outgoing: pending (in the outbox) -> sent (SEND_OK) or failed (a final ERROR), then
# delivered and read as the recipient's receipts arrive. Receipts only ever move a message
# forward (OUTGOING_RANK): a late SEND_OK or a delivered receipt after a read one changes
# nothing. failed ranks with pending: a receipt proves the message arrived after all (its
# SEND_OK was lost, and the retry was refused).
# Incoming: received (unread) -> read (mark_read).
STATUS_PENDING = "pending"
STATUS_SENT = "sent"
STATUS_FAILED = "failed"
STATUS_DELIVERED = "delivered"
STATUS_READ = "read"
STATUS_RECEIVED = "received"
OUTGOING_RANK = {
    STATUS_PENDING: 0,
    STATUS_FAILED: 0,
    STATUS_SENT: 1,
    STATUS_DELIVERED: 2,
    STATUS_READ: 3,
}

# protocol.content.ReceiptKind values, as stored in pending_receipts.kind.
RECEIPT_DELIVERED = 1
RECEIPT_READ = 2

_SCHEMA_V1 = """
CREATE TABLE config (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- The account identity key pair and this device's keys: one row.
CREATE TABLE own_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    account_seed BLOB NOT NULL,
    account_public_key BLOB NOT NULL,
    device_signing_seed BLOB NOT NULL,
    device_identity_private BLOB NOT NULL,
    device_certificate BLOB NOT NULL
) STRICT;

-- retired_at_ms is set when a rotation replaced the key; it is purged 7 days later.
CREATE TABLE signed_prekeys (
    key_id INTEGER PRIMARY KEY,
    private_key BLOB NOT NULL,
    public BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    retired_at_ms INTEGER
) STRICT;

CREATE TABLE one_time_prekeys (
    key_id INTEGER PRIMARY KEY,
    private_key BLOB NOT NULL
) STRICT;

-- One-time and last-resort ML-KEM prekeys share one id space (a PreKeyMessage names the
-- KEM prekey by id alone).
CREATE TABLE kem_prekeys (
    key_id INTEGER PRIMARY KEY,
    seed BLOB NOT NULL,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
    public BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    retired_at_ms INTEGER
) STRICT;

CREATE TABLE sessions (
    peer TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    record BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, device_id)
) STRICT;

CREATE TABLE identities (
    username TEXT PRIMARY KEY,
    account_key BLOB NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    changed INTEGER NOT NULL DEFAULT 0 CHECK (changed IN (0, 1)),
    verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1))
) STRICT;

CREATE TABLE peer_devices (
    username TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    registration_id INTEGER NOT NULL,
    certificate BLOB NOT NULL,
    PRIMARY KEY (username, device_id)
) STRICT;

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'undecryptable')),
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    body TEXT,
    error_code INTEGER,
    sent_at_ms INTEGER,
    server_time_ms INTEGER,
    received_at_ms INTEGER,
    status TEXT NOT NULL,
    seq INTEGER
) STRICT;

-- A redelivered envelope that failed to decrypt must not be listed twice. (A redelivered
-- envelope that did decrypt never gets here: the ratchet rejects it as a duplicate.)
CREATE UNIQUE INDEX messages_undecryptable_seq
    ON messages (seq) WHERE kind = 'undecryptable' AND seq > 0;

-- One row per send (to one account), in send order, until the server has answered it.
-- content: the padded plaintext, needed only to encrypt for a device the server reports
-- missing or stale; every other device's ciphertext is resent exactly as stored in
-- outbox_payloads. The request id is not stored: it names a request on one connection,
-- and the transport gives each transmission its own.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages (id),
    recipient TEXT NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0,
    content BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE outbox_payloads (
    entry_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL,
    registration_id INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (entry_id, device_id)
) STRICT;
"""

# Receipts. The outbox also carries receipts, which are no message: message_id becomes
# nullable, which SQLite can only do by rebuilding the table (the runner turns foreign keys
# off around each step, so dropping the old table cascades nothing, and checks them before
# committing). The AUTOINCREMENT counter is carried over so that ids are never reused.
_SCHEMA_V2 = """
CREATE TABLE outbox_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER REFERENCES messages (id),  -- NULL: a receipt
    recipient TEXT NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0,
    content BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;
INSERT INTO outbox_v2 (id, message_id, recipient, flags, content, created_at_ms)
    SELECT id, message_id, recipient, flags, content, created_at_ms FROM outbox;
DELETE FROM sqlite_sequence WHERE name = 'outbox_v2';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_v2', seq FROM sqlite_sequence WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;

-- Receipts owed but not yet encrypted: one row per acknowledged message and kind (1
-- delivered, 2 read), by the acknowledged message's sender and sent_at.
CREATE TABLE pending_receipts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    kind INTEGER NOT NULL CHECK (kind IN (1, 2)),
    message_sent_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (peer, kind, message_sent_at_ms)
) STRICT;

-- A receipt names messages by (peer, sent_at); mark_read looks up a peer's messages.
CREATE INDEX messages_peer_sent_at ON messages (peer, sent_at_ms);
"""

# Several devices per account.
_SCHEMA_V3 = """
-- The newest signed device list seen per account (our own included), with the account key
-- it verified under. A list older than this one is refused: a server replaying the list
-- from before a revocation. A new account key (the contact signed up again) starts over.
CREATE TABLE device_lists (
    username TEXT PRIMARY KEY,
    account_key BLOB NOT NULL,
    version INTEGER NOT NULL,
    list BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;

-- HISTORY chunks of a transfer from our own other device, until all `total` are here.
-- records: JSON [[peer, outgoing 0/1, sent_at_ms, text], ...] in the chunk's order.
CREATE TABLE history_chunks (
    transfer_id BLOB NOT NULL,
    chunk_index INTEGER NOT NULL,
    total INTEGER NOT NULL,
    sender_device INTEGER NOT NULL,
    records TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (transfer_id, chunk_index)
) STRICT;

-- Transfers already imported, so that a late duplicate chunk imports nothing twice.
CREATE TABLE history_transfers (
    transfer_id BLOB PRIMARY KEY,
    imported INTEGER NOT NULL,
    imported_at_ms INTEGER NOT NULL
) STRICT;
"""

# Groups: sender keys, rosters, group messages and group sends in the outbox.
_SCHEMA_V4 = """
-- The groups this device knows of (client.groupstore). The name and the timer travel only
-- end to end (GROUP_UPDATE); members (JSON [[username, admin 0/1], ...]) and roster (JSON
-- [[username, device_id, registration_id], ...], NULL: never fetched) are what the server
-- last showed, roster_digest that roster's digest. member: 0 once we left or were removed.
-- needs_fetch: heard of (a message, a key) but not yet looked up on the server.
CREATE TABLE chat_groups (
    group_id BLOB PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    timer_seconds INTEGER NOT NULL DEFAULT 0,
    admin INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    member INTEGER NOT NULL DEFAULT 1 CHECK (member IN (0, 1)),
    members TEXT NOT NULL DEFAULT '[]',
    roster TEXT,
    roster_digest BLOB,
    needs_fetch INTEGER NOT NULL DEFAULT 0 CHECK (needs_fetch IN (0, 1)),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;

-- This device's sending chain per group: a SenderKeyRecord holding one state, with its
-- signing seed. Replaced (never edited back) when a device leaves the roster.
CREATE TABLE own_sender_keys (
    group_id BLOB PRIMARY KEY,
    key_id INTEGER NOT NULL,
    record BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

-- The devices that were given the chain own_sender_keys.key_id (a SENDER_KEY content in
-- the outbox counts: the outbox goes out in order, before any group send after it).
CREATE TABLE sender_key_recipients (
    group_id BLOB NOT NULL,
    key_id INTEGER NOT NULL,
    username TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    registration_id INTEGER NOT NULL,
    PRIMARY KEY (group_id, key_id, username, device_id)
) STRICT;

-- Other devices' chains: one SenderKeyRecord per (group, sender, sender device).
CREATE TABLE sender_keys (
    group_id BLOB NOT NULL,
    sender TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    record BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, sender, device_id)
) STRICT;

-- A group message is a message with its group (NULL: a 1:1 conversation).
ALTER TABLE messages ADD COLUMN group_id BLOB;
CREATE INDEX messages_group ON messages (group_id, id) WHERE group_id IS NOT NULL;

-- What members did, shown in the group's conversation ("alice added carol"): GROUP_UPDATE
-- contents, ours included. targets: JSON list of usernames.
CREATE TABLE group_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    actor TEXT NOT NULL,
    action INTEGER NOT NULL,
    name TEXT NOT NULL,
    timer_seconds INTEGER NOT NULL,
    targets TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX group_events_group ON group_events (group_id, id);

-- An outbox entry with a row here is a GROUP_SEND (recipient: the group id in hex, no
-- outbox_payloads): one SenderKeyMessage, resent byte for byte like any entry.
CREATE TABLE outbox_group_sends (
    entry_id INTEGER PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
    group_id BLOB NOT NULL,
    roster_digest BLOB NOT NULL,
    ttl_seconds INTEGER,
    payload BLOB NOT NULL
) STRICT;
"""

# Attachments, typing and disappearing messages.
_SCHEMA_V5 = """
-- Two more kinds of message: 'attachment' (a file; body is its caption) and 'timer' (the
-- notice "X set disappearing messages to T"). SQLite cannot alter a CHECK constraint, and
-- rebuilding messages would have to repeat every column earlier steps added; so the CHECK
-- is widened in place, by the procedure of https://sqlite.org/lang_altertable.html
-- section 7 for loosening a constraint (every stored row satisfies the wider one). The
-- DDL below changes the schema cookie, so other connections re-read the schema.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
    SET sql = replace(sql, '''undecryptable''', '''undecryptable'', ''attachment'', ''timer''')
    WHERE type = 'table' AND name = 'messages';
PRAGMA writable_schema = RESET;

-- Disappearing messages: the time a message is deleted here (sender: sent + timer;
-- receiver: received + timer), and the timer it carried.
ALTER TABLE messages ADD COLUMN expires_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN timer_seconds INTEGER;
CREATE INDEX messages_expires_at ON messages (expires_at_ms) WHERE expires_at_ms IS NOT NULL;

-- The pointer of an attachment message (protocol.content.Attachment) and where its file
-- is. state: 'pending' (to download), 'saved' (path is our copy under downloads/),
-- 'failed' (failure_code says why; nothing kept), 'sent' (path is the file we sent,
-- which is the user's and never deleted here).
CREATE TABLE attachments (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    blob_id BLOB NOT NULL,
    file_key BLOB NOT NULL,
    size INTEGER NOT NULL,
    digest BLOB NOT NULL,
    content_type TEXT NOT NULL,
    file_name TEXT NOT NULL,
    attachment_flags INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'saved', 'failed', 'sent')),
    path TEXT,
    failure_code INTEGER
) STRICT;

-- The disappearing-messages timer per conversation (0: off), with the sent_at of the TIMER
-- that set it: a TIMER older than the one applied changes nothing.
CREATE TABLE conversation_timers (
    peer TEXT PRIMARY KEY,
    timer_seconds INTEGER NOT NULL,
    changed_at_ms INTEGER NOT NULL
) STRICT;

-- An EXPIRES send keeps its ttl_seconds for resending (NULL: no EXPIRES).
ALTER TABLE outbox ADD COLUMN ttl_seconds INTEGER;
"""

# Index i upgrades a file from user_version i to i + 1. Append; never edit a shipped step.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4, _SCHEMA_V5)
SCHEMA_VERSION = len(MIGRATIONS)

_NEXT_ID_KEYS: dict[KeyKind, str] = {
    "signed": "next_signed_prekey_id",
    "one_time": "next_one_time_prekey_id",
    "kem": "next_kem_prekey_id",
}


@dataclass(frozen=True, slots=True)
class Config:
    server_url: str
    username: str
    device_id: int
    token: str


@dataclass(frozen=True, slots=True)
class Identity:
    """What we know about another account's identity key."""

    username: str
    account_key: bytes
    first_seen_ms: int
    changed: bool  # the key changed and the user has not yet accepted it with trust()
    verified: bool  # the user compared safety numbers for this key


class IdentityCheck(Enum):
    NEW = "new"  # first contact: stored (trust on first use)
    SAME = "same"
    CHANGED = "changed"  # stored as the new key, flagged changed, verified cleared


@dataclass(frozen=True, slots=True)
class PeerDevice:
    username: str
    device_id: int
    registration_id: int
    certificate: DeviceCertificate


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    kind: MessageKind
    direction: Direction
    peer: str
    sender_device: int
    text: str | None
    error_code: ErrorCode | None
    sent_at_ms: int | None
    server_time_ms: int | None
    received_at_ms: int | None
    status: str
    seq: int | None
    expires_at_ms: int | None = None  # a disappearing message: deleted at this time
    timer_seconds: int | None = None  # its timer; for a "timer" notice, the new timer
    attachment: StoredAttachment | None = None  # kind "attachment": the file


@dataclass(frozen=True, slots=True)
class StoredAttachment:
    """An attachment message's pointer and file. ``path``: our copy under downloads/
    (state "saved"), or the file we sent (state "sent"); None while "pending" and when
    "failed" (``failure`` says why: decrypt_failed, attachment_expired, ...)."""

    blob_id: bytes
    key: bytes
    size: int
    digest: bytes
    content_type: str
    file_name: str
    flags: AttachmentFlags
    duration_ms: int
    width: int
    height: int
    state: AttachmentState
    path: str | None
    failure: ErrorCode | None


@dataclass(frozen=True, slots=True)
class ExpiredMessages:
    """What ``purge_expired`` deleted: the message ids, and the saved files to delete."""

    message_ids: tuple[int, ...]
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    message_id: int | None  # None: a receipt
    recipient: str  # a username; for a GROUP_SEND, the group id in hex
    content: bytes
    frame: Send | GroupSend
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class PendingReceipt:
    id: int
    peer: str
    kind: int  # RECEIPT_DELIVERED or RECEIPT_READ
    message_sent_at_ms: int


@dataclass(frozen=True, slots=True)
class StatusChange:
    message_id: int
    status: str


@dataclass(frozen=True, slots=True)
class StoredDeviceList:
    """The newest signed device list seen for an account, and the key it verified under."""

    username: str
    account_key: bytes
    device_list: SignedDeviceList


@dataclass(frozen=True, slots=True)
class StoredHistoryChunk:
    index: int
    total: int
    sender_device: int
    records: tuple[HistoryRecord, ...]


@dataclass(frozen=True, slots=True)
class PreKeyInfo:
    key_id: int
    created_at_ms: int


def store_path(home: Path) -> Path:
    return home / STORE_FILENAME


class Store:
    """The SQLite store. Implements ``protocol.session.PreKeyStore``.

    Every write method runs in a transaction of its own, or joins the one opened by an
    enclosing ``with store.transaction():`` — which is how a caller makes several writes
    commit (or roll back) together.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._depth = 0
        try:
            self._db = self._connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise SealpostError(LocalErrorCode.STORAGE, f"cannot open {path}: {exc}") from None
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Create the file ourselves so that it is 0600 from its first byte; SQLite gives
        # the -wal and -shm files the database file's permissions.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        # isolation_level=None: no implicit transactions; transaction() says BEGIN itself.
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
            # An envelope is acknowledged right after its transaction commits; FULL makes
            # the commit durable against power loss too, not just against a crash.
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def open(cls, home: Path) -> Store:
        return cls(store_path(home))

    def close(self) -> None:
        self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for modules that keep tables of their own in this file
        (client.groupstore). They write only inside ``transaction()``, as this class does."""
        return self._db

    # --- transactions and schema --------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises. Nested blocks join
        the outermost transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # e.g. locked by another process for 5 s
            raise SealpostError(LocalErrorCode.STORAGE, f"{self.path}: {exc}") from None
        self._depth = 1
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    @property
    def schema_version(self) -> int:
        row = self._db.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise SealpostError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"{self.path} has schema version {version}; this client knows up to "
                f"{SCHEMA_VERSION} (upgrade the client)",
            )
        if version == SCHEMA_VERSION:
            return
        # A step may rebuild a table that others reference; with foreign keys on, dropping
        # the old table would cascade. (The pragma is a no-op inside a transaction.)
        self._db.execute("PRAGMA foreign_keys = OFF")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                script = MIGRATIONS[target - 1]
                try:
                    self._db.executescript(f"BEGIN IMMEDIATE;\n{script}")
                    if problems := self._db.execute("PRAGMA foreign_key_check").fetchall():
                        raise SealpostError(
                            LocalErrorCode.STORAGE,
                            f"{self.path}: migration to version {target} broke foreign keys: "
                            f"{problems[:5]}",
                        )
                    self._db.execute(f"PRAGMA user_version = {target}")
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
        finally:
            self._db.execute("PRAGMA foreign_keys = ON")

    # --- configuration and own keys -----------------------------------------------------

    def _get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM config WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO config (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def config(self) -> Config | None:
        """The registration, or None if this home has no account yet."""
        values = {
            str(key): str(value)
            for key, value in self._db.execute(
                "SELECT key, value FROM config WHERE key IN "
                "('server_url', 'username', 'device_id', 'token')"
            )
        }
        if len(values) < 4:
            return None
        return Config(
            server_url=values["server_url"],
            username=values["username"],
            device_id=int(values["device_id"]),
            token=values["token"],
        )

    def save_registration(
        self,
        config: Config,
        account: AccountIdentity,
        device: DeviceKeys,
        signed_prekey: SignedPreKeyPair,
        last_resort: KemPreKeyPair,
        one_time_prekeys: Iterable[OneTimePreKeyPair],
        kem_prekeys: Iterable[KemPreKeyPair],
        now_ms: int,
    ) -> None:
        """Everything sign-up created, in one transaction. Our own identity goes into the
        identity table as verified, so a message claiming to come from our own account
        under another key is caught like any other identity change."""
        with self.transaction():
            if self.config() is not None:
                raise SealpostError(
                    LocalErrorCode.ALREADY_REGISTERED, f"{self.path} already holds an account"
                )
            self._db.execute(
                "INSERT INTO own_keys (id, account_seed, account_public_key, "
                "device_signing_seed, device_identity_private, device_certificate) "
                "VALUES (1, ?, ?, ?, ?, ?)",
                (
                    account.seed,
                    account.public_key,
                    device.signing_seed,
                    device.identity_private,
                    device.certificate.encode(),
                ),
            )
            self.add_signed_prekey(signed_prekey, now_ms)
            self.add_kem_prekeys([last_resort], now_ms)
            self.add_one_time_prekeys(one_time_prekeys)
            self.add_kem_prekeys(kem_prekeys, now_ms)
            self._db.execute(
                "INSERT INTO identities (username, account_key, first_seen_ms, changed, "
                "verified) VALUES (?, ?, ?, 0, 1)",
                (config.username, account.public_key, now_ms),
            )
            self._set("server_url", config.server_url)
            self._set("username", config.username)
            self._set("device_id", str(config.device_id))
            self._set("token", config.token)

    def next_key_ids(self, kind: KeyKind, count: int) -> list[int]:
        """Reserve ``count`` fresh key ids of one kind (ids run 1..MAX_KEY_ID, then wrap)."""
        with self.transaction():
            first = int(self._get(_NEXT_ID_KEYS[kind]) or "1")
            ids = [(first - 1 + offset) % MAX_KEY_ID + 1 for offset in range(count)]
            self._set(_NEXT_ID_KEYS[kind], str(ids[-1] % MAX_KEY_ID + 1 if ids else first))
            return ids

    def receipts_enabled(self) -> bool:
        """The ``receipts`` setting: whether this device sends receipts (default on)."""
        return self._get("receipts") != "off"

    def set_receipts_enabled(self, enabled: bool) -> None:
        """Turning receipts off also forgets the ones owed and not yet sent: off means
        that nothing more goes out, not "later"."""
        with self.transaction():
            self._set("receipts", "on" if enabled else "off")
            if not enabled:
                self._db.execute("DELETE FROM pending_receipts")

    def next_sent_at(self, now_ms: int) -> int:
        """The sent_at for the next message this device encrypts: ``max(now_ms, last + 1)``,
        remembered, so that (sender, sent_at) names exactly one message even when the clock
        stands still or goes back."""
        with self.transaction():
            last = int(self._get("last_sent_at_ms") or "0")
            sent_at = max(now_ms, last + 1)
            self._set("last_sent_at_ms", str(sent_at))
            return sent_at

    def account_identity(self) -> AccountIdentity:
        row = self._own_keys("account_seed")
        return AccountIdentity.from_seed(bytes(row[0]))

    def device_keys(self) -> DeviceKeys:
        row = self._own_keys(
            "device_signing_seed, device_identity_private, device_certificate, account_public_key"
        )
        return DeviceKeys(
            signing_seed=bytes(row[0]),
            identity_private=bytes(row[1]),
            certificate=DeviceCertificate.decode(bytes(row[2])),
            account_key=bytes(row[3]),
        )

    def _own_keys(self, columns: str) -> tuple[bytes, ...]:
        query = f"SELECT {columns} FROM own_keys WHERE id = 1"  # noqa: S608 (fixed names)
        row = self._db.execute(query).fetchone()
        if row is None:
            raise SealpostError(LocalErrorCode.NOT_REGISTERED, f"{self.path} holds no account")
        return tuple(row)

    # --- prekeys (protocol.session.PreKeyStore) ------------------------------------------

    def signed_prekey(self, key_id: int) -> bytes | None:
        row = self._db.execute(
            "SELECT private_key FROM signed_prekeys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def one_time_prekey(self, key_id: int) -> bytes | None:
        row = self._db.execute(
            "SELECT private_key FROM one_time_prekeys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def kem_prekey(self, key_id: int) -> tuple[bytes, bool] | None:
        row = self._db.execute(
            "SELECT seed, last_resort FROM kem_prekeys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bool(row[1]))

    def add_signed_prekey(self, pair: SignedPreKeyPair, now_ms: int) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO signed_prekeys (key_id, private_key, public, created_at_ms) "
                "VALUES (?, ?, ?, ?)",
                (pair.public.key_id, pair.private_key, pair.public.encode(), now_ms),
            )

    def add_one_time_prekeys(self, pairs: Iterable[OneTimePreKeyPair]) -> None:
        with self.transaction():
            self._db.executemany(
                "INSERT INTO one_time_prekeys (key_id, private_key) VALUES (?, ?)",
                [(pair.public.key_id, pair.private_key) for pair in pairs],
            )

    def add_kem_prekeys(self, pairs: Iterable[KemPreKeyPair], now_ms: int) -> None:
        with self.transaction():
            self._db.executemany(
                "INSERT INTO kem_prekeys (key_id, seed, last_resort, public, created_at_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (pair.public.key_id, pair.seed, int(pair.public.last_resort),
                     pair.public.encode(), now_ms)
                    for pair in pairs
                ],
            )  # fmt: skip

    def delete_one_time_prekeys(self, key_ids: Iterable[int]) -> None:
        with self.transaction():
            self._db.executemany(
                "DELETE FROM one_time_prekeys WHERE key_id = ?", [(i,) for i in key_ids]
            )

    def delete_kem_prekeys(self, key_ids: Iterable[int]) -> None:
        """Delete one-time KEM prekeys; a last-resort key is only ever retired."""
        with self.transaction():
            self._db.executemany(
                "DELETE FROM kem_prekeys WHERE key_id = ? AND last_resort = 0",
                [(i,) for i in key_ids],
            )

    def delete_signed_prekey(self, key_id: int) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM signed_prekeys WHERE key_id = ?", (key_id,))

    def current_signed_prekey(self) -> PreKeyInfo | None:
        row = self._db.execute(
            "SELECT key_id, created_at_ms FROM signed_prekeys WHERE retired_at_ms IS NULL "
            "ORDER BY created_at_ms DESC, key_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else PreKeyInfo(int(row[0]), int(row[1]))

    def current_last_resort_kem_prekey(self) -> PreKeyInfo | None:
        row = self._db.execute(
            "SELECT key_id, created_at_ms FROM kem_prekeys "
            "WHERE last_resort = 1 AND retired_at_ms IS NULL "
            "ORDER BY created_at_ms DESC, key_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else PreKeyInfo(int(row[0]), int(row[1]))

    def retire_signed_prekeys(self, keep_key_id: int, now_ms: int) -> None:
        """After a rotation: every other live signed prekey starts its 7 days of grace."""
        with self.transaction():
            self._db.execute(
                "UPDATE signed_prekeys SET retired_at_ms = ? "
                "WHERE retired_at_ms IS NULL AND key_id != ?",
                (now_ms, keep_key_id),
            )

    def retire_last_resort_kem_prekeys(self, keep_key_id: int, now_ms: int) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE kem_prekeys SET retired_at_ms = ? "
                "WHERE last_resort = 1 AND retired_at_ms IS NULL AND key_id != ?",
                (now_ms, keep_key_id),
            )

    def purge_retired_prekeys(self, now_ms: int) -> int:
        """Delete signed and last-resort prekeys retired more than 7 days ago."""
        cutoff = now_ms - RETIRED_PREKEY_TTL_MS
        with self.transaction():
            signed = self._db.execute(
                "DELETE FROM signed_prekeys WHERE retired_at_ms IS NOT NULL AND retired_at_ms < ?",
                (cutoff,),
            ).rowcount
            kem = self._db.execute(
                "DELETE FROM kem_prekeys WHERE retired_at_ms IS NOT NULL AND retired_at_ms < ?",
                (cutoff,),
            ).rowcount
        return int(signed) + int(kem)

    def prekey_counts(self) -> dict[str, int]:
        """Private halves held locally, by kind (for tests and diagnostics)."""
        query = {
            "signed": "SELECT count(*) FROM signed_prekeys",
            "one_time": "SELECT count(*) FROM one_time_prekeys",
            "kem": "SELECT count(*) FROM kem_prekeys WHERE last_resort = 0",
            "last_resort": "SELECT count(*) FROM kem_prekeys WHERE last_resort = 1",
        }
        return {kind: int(self._db.execute(sql).fetchone()[0]) for kind, sql in query.items()}

    # --- sessions -----------------------------------------------------------------------

    def load_session(self, peer: str, device_id: int) -> SessionRecord | None:
        row = self._db.execute(
            "SELECT record FROM sessions WHERE peer = ? AND device_id = ?", (peer, device_id)
        ).fetchone()
        return None if row is None else SessionRecord.decode(bytes(row[0]))

    def save_session(self, peer: str, device_id: int, record: SessionRecord, now_ms: int) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO sessions (peer, device_id, record, updated_at_ms) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (peer, device_id) DO UPDATE SET "
                "record = excluded.record, updated_at_ms = excluded.updated_at_ms",
                (peer, device_id, record.encode(), now_ms),
            )

    def delete_session(self, peer: str, device_id: int) -> None:
        with self.transaction():
            self._db.execute(
                "DELETE FROM sessions WHERE peer = ? AND device_id = ?", (peer, device_id)
            )

    def session_device_ids(self, peer: str) -> list[int]:
        rows = self._db.execute(
            "SELECT device_id FROM sessions WHERE peer = ? ORDER BY device_id", (peer,)
        )
        return [int(row[0]) for row in rows]

    # --- identities ---------------------------------------------------------------------

    def identity(self, username: str) -> Identity | None:
        row = self._db.execute(
            "SELECT account_key, first_seen_ms, changed, verified FROM identities "
            "WHERE username = ?",
            (username,),
        ).fetchone()
        if row is None:
            return None
        return Identity(username, bytes(row[0]), int(row[1]), bool(row[2]), bool(row[3]))

    def observe_identity(self, username: str, account_key: bytes, now_ms: int) -> IdentityCheck:
        """Record the account key we just saw for ``username``.

        First contact stores it (trust on first use). A different key replaces the stored
        one and is flagged ``changed`` (and no longer ``verified``) until ``trust()``.
        """
        with self.transaction():
            known = self.identity(username)
            if known is None:
                self._db.execute(
                    "INSERT INTO identities (username, account_key, first_seen_ms) "
                    "VALUES (?, ?, ?)",
                    (username, account_key, now_ms),
                )
                return IdentityCheck.NEW
            if p.constant_time_equal(known.account_key, account_key):
                return IdentityCheck.SAME
            self._db.execute(
                "UPDATE identities SET account_key = ?, first_seen_ms = ?, changed = 1, "
                "verified = 0 WHERE username = ?",
                (account_key, now_ms, username),
            )
            return IdentityCheck.CHANGED

    def trust_identity(self, username: str, verified: bool | None = None) -> bool:
        """Clear the changed flag (and set ``verified`` if given); False if unknown."""
        with self.transaction():
            cursor = self._db.execute(
                "UPDATE identities SET changed = 0, verified = coalesce(?, verified) "
                "WHERE username = ?",
                (None if verified is None else int(verified), username),
            )
            return bool(cursor.rowcount)

    # --- other accounts' devices --------------------------------------------------------

    def peer_devices(self, username: str) -> dict[int, PeerDevice]:
        rows = self._db.execute(
            "SELECT device_id, registration_id, certificate FROM peer_devices "
            "WHERE username = ? ORDER BY device_id",
            (username,),
        )
        return {
            int(row[0]): PeerDevice(
                username, int(row[0]), int(row[1]), DeviceCertificate.decode(bytes(row[2]))
            )
            for row in rows
        }

    def save_peer_device(self, username: str, certificate: DeviceCertificate) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO peer_devices (username, device_id, registration_id, certificate) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (username, device_id) DO UPDATE SET "
                "registration_id = excluded.registration_id, certificate = excluded.certificate",
                (
                    username,
                    certificate.device_id,
                    certificate.registration_id,
                    certificate.encode(),
                ),
            )

    def forget_peer_device(self, username: str, device_id: int) -> None:
        """The device is gone: drop what we stored for it, session included."""
        with self.transaction():
            self._db.execute(
                "DELETE FROM peer_devices WHERE username = ? AND device_id = ?",
                (username, device_id),
            )
            self.delete_session(username, device_id)

    # --- signed device lists -----------------------------------------------------------

    def device_list(self, username: str) -> StoredDeviceList | None:
        row = self._db.execute(
            "SELECT account_key, list FROM device_lists WHERE username = ?", (username,)
        ).fetchone()
        if row is None:
            return None
        return StoredDeviceList(username, bytes(row[0]), SignedDeviceList.decode(bytes(row[1])))

    def device_list_version(self, username: str, account_key: bytes) -> int:
        """The newest version seen for ``username`` under ``account_key`` (0: none)."""
        stored = self.device_list(username)
        if stored is None or not p.constant_time_equal(stored.account_key, account_key):
            return 0
        return stored.device_list.version

    def save_device_list(
        self, username: str, account_key: bytes, device_list: SignedDeviceList, now_ms: int
    ) -> None:
        """Remember ``device_list`` (already verified under ``account_key``) unless a newer
        one under the same key is stored."""
        with self.transaction():
            if self.device_list_version(username, account_key) > device_list.version:
                return
            self._db.execute(
                "INSERT INTO device_lists (username, account_key, version, list, updated_at_ms) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
                "account_key = excluded.account_key, version = excluded.version, "
                "list = excluded.list, updated_at_ms = excluded.updated_at_ms",
                (username, account_key, device_list.version, device_list.encode(), now_ms),
            )

    # --- history from our other devices -------------------------------------------------

    def history_expected(self) -> bool:
        """Whether this device was linked with history to follow and has not imported it."""
        return self._get("history_expected") == "1"

    def set_history_expected(self, expected: bool) -> None:
        with self.transaction():
            self._set("history_expected", "1" if expected else "0")

    def history_transfer_done(self, transfer_id: bytes) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM history_transfers WHERE transfer_id = ?", (transfer_id,)
        ).fetchone()
        return row is not None

    def add_history_chunk(
        self,
        transfer_id: bytes,
        index: int,
        total: int,
        sender_device: int,
        records: Iterable[HistoryRecord],
        now_ms: int,
    ) -> bool:
        """Keep one chunk until its transfer is complete; False if it was here already."""
        encoded = json.dumps(
            [[r.peer, int(r.outgoing), r.sent_at_ms, r.text] for r in records],
            ensure_ascii=False,
        )
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO history_chunks (transfer_id, chunk_index, total, "
                "sender_device, records, received_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (transfer_id, index, total, sender_device, encoded, now_ms),
            )
            return bool(cursor.rowcount)

    def history_chunks(self, transfer_id: bytes) -> list[StoredHistoryChunk]:
        """The chunks of a transfer received so far, by index."""
        rows = self._db.execute(
            "SELECT chunk_index, total, sender_device, records FROM history_chunks "
            "WHERE transfer_id = ? ORDER BY chunk_index",
            (transfer_id,),
        )
        return [
            StoredHistoryChunk(
                int(row[0]),
                int(row[1]),
                int(row[2]),
                tuple(
                    HistoryRecord(str(peer), bool(outgoing), int(sent_at), str(text))
                    for peer, outgoing, sent_at, text in json.loads(str(row[3]))
                ),
            )
            for row in rows
        ]

    def finish_history_transfer(self, transfer_id: bytes, imported: int, now_ms: int) -> None:
        """The transfer is imported: drop its chunks, remember it, expect no more history."""
        with self.transaction():
            self._db.execute("DELETE FROM history_chunks WHERE transfer_id = ?", (transfer_id,))
            self._db.execute(
                "INSERT OR IGNORE INTO history_transfers (transfer_id, imported, imported_at_ms) "
                "VALUES (?, ?, ?)",
                (transfer_id, imported, now_ms),
            )
            self._set("history_expected", "0")

    def add_history_messages(
        self, records: Iterable[HistoryRecord], sender_device: int, now_ms: int
    ) -> int:
        """Insert history records as texts; a record already in the history (same peer,
        direction, sent_at and text) is skipped. Incoming ones count as read (no receipt is
        owed for them) and outgoing ones as sent; ``sender_device`` is 0 for incoming
        records and the device that sent the history for outgoing ones. Returns how many
        were inserted."""
        inserted = 0
        with self.transaction():
            for record in records:
                direction = "out" if record.outgoing else "in"
                known = self._db.execute(
                    "SELECT 1 FROM messages WHERE peer = ? AND sent_at_ms = ? AND direction = ? "
                    "AND kind = 'text' AND body = ?",
                    (record.peer, record.sent_at_ms, direction, record.text),
                ).fetchone()
                if known is not None:
                    continue
                self._db.execute(
                    "INSERT INTO messages (kind, direction, peer, sender_device, body, "
                    "sent_at_ms, received_at_ms, status) VALUES ('text', ?, ?, ?, ?, ?, ?, ?)",
                    (direction, record.peer, sender_device if record.outgoing else 0,
                     record.text, record.sent_at_ms, now_ms,
                     STATUS_SENT if record.outgoing else STATUS_READ),
                )  # fmt: skip
                inserted += 1
        return inserted

    def recent_texts(self) -> Iterator[StoredMessage]:
        """Text messages, newest first (failed sends left out), read lazily: a history
        transfer stops once it has enough."""
        query = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages "  # noqa: S608 (fixed clauses)
            "WHERE kind = 'text' AND status != ? AND group_id IS NULL "
            "AND expires_at_ms IS NULL ORDER BY id DESC"  # disappearing ones are no history
        )
        for row in self._db.execute(query, (STATUS_FAILED,)):
            yield _message(row)

    # --- messages -----------------------------------------------------------------------

    def add_incoming_text(
        self,
        peer: str,
        sender_device: int,
        text: str,
        sent_at_ms: int,
        server_time_ms: int,
        received_at_ms: int,
        seq: int,
    ) -> int:
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO messages (kind, direction, peer, sender_device, body, sent_at_ms, "
                "server_time_ms, received_at_ms, status, seq) "
                "VALUES ('text', 'in', ?, ?, ?, ?, ?, ?, ?, ?)",
                (peer, sender_device, text, sent_at_ms, server_time_ms, received_at_ms,
                 STATUS_RECEIVED, seq),
            )  # fmt: skip
            return _rowid(cursor)

    def add_undecryptable(
        self,
        peer: str,
        sender_device: int,
        code: ErrorCode,
        server_time_ms: int,
        received_at_ms: int,
        seq: int,
    ) -> int | None:
        """Record an envelope we could not read; None if this seq was recorded already."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO messages (kind, direction, peer, sender_device, "
                "error_code, server_time_ms, received_at_ms, status, seq) "
                "VALUES ('undecryptable', 'in', ?, ?, ?, ?, ?, ?, ?)",
                (peer, sender_device, int(code), server_time_ms, received_at_ms,
                 STATUS_RECEIVED, seq),
            )  # fmt: skip
            return _rowid(cursor) if cursor.rowcount else None

    def add_outgoing_text(
        self,
        peer: str,
        sender_device: int,
        text: str,
        sent_at_ms: int,
        status: str = STATUS_PENDING,
        received_at_ms: int | None = None,
    ) -> int:
        """An outgoing text: one this device sends (pending until the server has it), or
        one another device of ours sent (its SENT transcript: already sent)."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO messages (kind, direction, peer, sender_device, body, sent_at_ms, "
                "received_at_ms, status) VALUES ('text', 'out', ?, ?, ?, ?, ?, ?)",
                (peer, sender_device, text, sent_at_ms, received_at_ms, status),
            )
            return _rowid(cursor)

    def set_message_status(
        self, message_id: int, status: str, server_time_ms: int | None = None
    ) -> None:
        """Settle a pending outgoing message as sent or failed. A message that is no longer
        pending (a receipt got there first) keeps its status; the server time is kept
        either way."""
        with self.transaction():
            self._db.execute(
                "UPDATE messages SET server_time_ms = coalesce(?, server_time_ms), "
                "status = CASE WHEN status = ? THEN ? ELSE status END WHERE id = ?",
                (server_time_ms, STATUS_PENDING, status, message_id),
            )

    def apply_receipt(
        self, peer: str, status: str, sent_at_ms: Iterable[int]
    ) -> list[StatusChange]:
        """Move our outgoing texts to ``peer`` with these sent_at forward to ``status``
        (delivered or read); never backwards. Returns what changed. An unknown sent_at
        changes nothing."""
        rank = OUTGOING_RANK[status]
        lower = [name for name, value in OUTGOING_RANK.items() if value < rank]
        marks = ", ".join("?" * len(lower))
        changes: list[StatusChange] = []
        with self.transaction():
            for sent_at in dict.fromkeys(sent_at_ms):
                rows = self._db.execute(
                    "SELECT id FROM messages WHERE peer = ? AND sent_at_ms = ? "  # noqa: S608
                    "AND direction = 'out' AND kind IN ('text', 'attachment') "
                    f"AND status IN ({marks}) ORDER BY id",
                    (peer, sent_at, *lower),
                ).fetchall()
                for (message_id,) in rows:
                    self._db.execute(
                        "UPDATE messages SET status = ? WHERE id = ?", (status, message_id)
                    )
                    changes.append(StatusChange(int(message_id), status))
        return changes

    def mark_read(self, peer: str) -> list[tuple[int, int | None]]:
        """Mark every unread incoming message from ``peer`` read. Returns them, oldest
        first, as (message id, sent_at): sent_at is what a read receipt names, None for an
        envelope that could not be decrypted (it has none)."""
        with self.transaction():
            rows = self._db.execute(
                "SELECT id, kind, sent_at_ms FROM messages "
                "WHERE peer = ? AND direction = 'in' AND status = ? AND group_id IS NULL "
                "ORDER BY id",
                (peer, STATUS_RECEIVED),
            ).fetchall()
            self._db.executemany(
                "UPDATE messages SET status = ? WHERE id = ?",
                [(STATUS_READ, row[0]) for row in rows],
            )
        return [
            (
                int(row[0]),
                int(row[2]) if row[1] in ("text", "attachment") and row[2] is not None else None,
            )
            for row in rows
        ]

    # --- receipts owed --------------------------------------------------------------------

    def add_pending_receipts(
        self, peer: str, kind: int, sent_at_ms: Iterable[int], now_ms: int
    ) -> None:
        """Owe ``peer`` a receipt of ``kind`` for these messages (once per message)."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO pending_receipts (peer, kind, message_sent_at_ms, "
                "created_at_ms) VALUES (?, ?, ?, ?)",
                [(peer, kind, sent_at, now_ms) for sent_at in sent_at_ms],
            )
            if kind == RECEIPT_READ:  # read implies delivered: one receipt is enough
                self._db.executemany(
                    "DELETE FROM pending_receipts WHERE peer = ? AND kind = ? "
                    "AND message_sent_at_ms = ?",
                    [(peer, RECEIPT_DELIVERED, sent_at) for sent_at in sent_at_ms],
                )

    def pending_receipts(self, peer: str | None = None) -> list[PendingReceipt]:
        """Receipts owed, oldest first (only those to ``peer`` if given)."""
        where, params = ("WHERE peer = ?", (peer,)) if peer is not None else ("", ())
        rows = self._db.execute(
            "SELECT id, peer, kind, message_sent_at_ms FROM pending_receipts "  # noqa: S608
            f"{where} ORDER BY id",
            params,
        )
        return [PendingReceipt(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    def pending_receipt_counts(self) -> dict[str, int]:
        """How many receipts each peer is owed."""
        rows = self._db.execute("SELECT peer, count(*) FROM pending_receipts GROUP BY peer")
        return {str(peer): int(count) for peer, count in rows}

    def take_pending_receipts(self, ids: Iterable[int]) -> list[PendingReceipt]:
        """Delete these pending receipts and return those that were still there (another
        process on this home may have sent some meanwhile). Call it in the transaction
        that queues the receipt in the outbox."""
        taken: list[PendingReceipt] = []
        with self.transaction():
            for receipt_id in ids:
                row = self._db.execute(
                    "DELETE FROM pending_receipts WHERE id = ? "
                    "RETURNING id, peer, kind, message_sent_at_ms",
                    (receipt_id,),
                ).fetchone()
                if row is not None:
                    taken.append(PendingReceipt(int(row[0]), str(row[1]), int(row[2]), int(row[3])))
        return taken

    def discard_pending_receipts(self, peer: str) -> int:
        with self.transaction():
            cursor = self._db.execute("DELETE FROM pending_receipts WHERE peer = ?", (peer,))
            return int(cursor.rowcount)

    def message(self, message_id: int) -> StoredMessage | None:
        rows = self._messages("WHERE id = ?", (message_id,))
        return rows[0] if rows else None

    def messages(self, peer: str | None = None, limit: int | None = None) -> list[StoredMessage]:
        """Local history, oldest first (the last ``limit`` if given). With ``peer``, the
        1:1 conversation only (group messages: client.groupstore)."""
        where, params = (
            ("WHERE peer = ? AND group_id IS NULL", (peer,)) if peer is not None else ("", ())
        )
        rows = self._messages(where + " ORDER BY id DESC LIMIT ?", (*params, limit or -1))
        return rows[::-1]

    def _messages(self, tail: str, params: tuple[object, ...]) -> list[StoredMessage]:
        query = f"SELECT {_MESSAGE_COLUMNS} FROM messages {tail}"  # noqa: S608 (fixed clauses)
        messages = [_message(row) for row in self._db.execute(query, params)]
        return [
            dataclasses.replace(message, attachment=self.attachment(message.id))
            if message.kind == "attachment"
            else message
            for message in messages
        ]

    # --- attachments, timers and disappearing messages ---------------------------------

    def typing_enabled(self) -> bool:
        """The ``typing`` setting: whether this device sends typing indicators and shows
        other people's (default on)."""
        return self._get("typing") != "off"

    def set_typing_enabled(self, enabled: bool) -> None:
        with self.transaction():
            self._set("typing", "on" if enabled else "off")

    def conversation_timer(self, peer: str) -> int:
        """The disappearing-messages timer of the conversation with ``peer`` (0: off)."""
        row = self._db.execute(
            "SELECT timer_seconds FROM conversation_timers WHERE peer = ?", (peer,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def set_conversation_timer(self, peer: str, timer_seconds: int, changed_at_ms: int) -> bool:
        """Apply a TIMER sent at ``changed_at_ms``; False (nothing changed) if a later one
        was applied already, so two people setting it at once end up with the same."""
        with self.transaction():
            row = self._db.execute(
                "SELECT changed_at_ms FROM conversation_timers WHERE peer = ?", (peer,)
            ).fetchone()
            if row is not None and int(row[0]) > changed_at_ms:
                return False
            self._db.execute(
                "INSERT INTO conversation_timers (peer, timer_seconds, changed_at_ms) "
                "VALUES (?, ?, ?) ON CONFLICT (peer) DO UPDATE SET "
                "timer_seconds = excluded.timer_seconds, changed_at_ms = excluded.changed_at_ms",
                (peer, timer_seconds, changed_at_ms),
            )
            return True

    def add_timer_notice(
        self,
        peer: str,
        direction: Direction,
        sender_device: int,
        timer_seconds: int,
        sent_at_ms: int,
        *,
        status: str,
        server_time_ms: int | None = None,
        received_at_ms: int | None = None,
        seq: int | None = None,
    ) -> int:
        """The notice "disappearing messages set to T" in the conversation with ``peer``."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO messages (kind, direction, peer, sender_device, sent_at_ms, "
                "server_time_ms, received_at_ms, status, seq, timer_seconds) "
                "VALUES ('timer', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (direction, peer, sender_device, sent_at_ms, server_time_ms, received_at_ms,
                 status, seq, timer_seconds),
            )  # fmt: skip
            return _rowid(cursor)

    def set_message_expiry(self, message_id: int, expires_at_ms: int, timer_seconds: int) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE messages SET expires_at_ms = ?, timer_seconds = ? WHERE id = ?",
                (expires_at_ms, timer_seconds, message_id),
            )

    def add_attachment_message(
        self,
        peer: str,
        direction: Direction,
        sender_device: int,
        pointer: Attachment,
        *,
        state: AttachmentState,
        status: str,
        path: str | None = None,
        server_time_ms: int | None = None,
        received_at_ms: int | None = None,
        seq: int | None = None,
    ) -> int:
        """An attachment message (its caption as the body) with its pointer."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO messages (kind, direction, peer, sender_device, body, sent_at_ms, "
                "server_time_ms, received_at_ms, status, seq) "
                "VALUES ('attachment', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (direction, peer, sender_device, pointer.caption, pointer.sent_at_ms,
                 server_time_ms, received_at_ms, status, seq),
            )  # fmt: skip
            message_id = _rowid(cursor)
            self._db.execute(
                "INSERT INTO attachments (message_id, blob_id, file_key, size, digest, "
                "content_type, file_name, attachment_flags, duration_ms, width, height, state, "
                "path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (message_id, pointer.blob_id, pointer.key, pointer.size, pointer.digest,
                 pointer.content_type, pointer.file_name, int(pointer.flags),
                 pointer.duration_ms, pointer.width, pointer.height, state, path),
            )  # fmt: skip
            return message_id

    def attachment(self, message_id: int) -> StoredAttachment | None:
        row = self._db.execute(
            f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE message_id = ?",  # noqa: S608
            (message_id,),
        ).fetchone()
        return None if row is None else _attachment(row)

    def pending_downloads(self) -> list[int]:
        """Attachment messages whose file is still to be fetched, oldest first."""
        rows = self._db.execute(
            "SELECT message_id FROM attachments WHERE state = 'pending' ORDER BY message_id"
        )
        return [int(row[0]) for row in rows]

    def set_attachment_state(
        self,
        message_id: int,
        state: AttachmentState,
        *,
        path: str | None = None,
        failure: ErrorCode | None = None,
    ) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE attachments SET state = ?, path = ?, failure_code = ? WHERE message_id = ?",
                (state, path, None if failure is None else int(failure), message_id),
            )

    def next_expiry_ms(self) -> int | None:
        """When the next disappearing message is due (None: none is)."""
        row = self._db.execute(
            "SELECT min(expires_at_ms) FROM messages WHERE expires_at_ms IS NOT NULL"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def purge_expired(self, now_ms: int) -> ExpiredMessages:
        """Delete every message whose time is up, with its attachment row and any send of
        it still in the outbox (sending it now would make the server's copy outlive it).
        Returns their ids and the files saved for them, which the caller deletes once this
        has committed (a file deleted first could not come back on a rollback)."""
        with self.transaction():
            rows = self._db.execute(
                "SELECT m.id, a.state, a.path FROM messages m "
                "LEFT JOIN attachments a ON a.message_id = m.id "
                "WHERE m.expires_at_ms IS NOT NULL AND m.expires_at_ms <= ?",
                (now_ms,),
            ).fetchall()
            ids = [int(row[0]) for row in rows]
            for message_id in ids:
                self._db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))
                self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        files = tuple(str(row[2]) for row in rows if row[1] == "saved" and row[2] is not None)
        return ExpiredMessages(tuple(ids), files)

    # --- outbox -------------------------------------------------------------------------

    def add_outbox(
        self,
        message_id: int | None,
        recipient: str,
        content: bytes,
        frame: Send | GroupSend,
        now_ms: int,
    ) -> int:
        """Queue a send: the frame's recipient, flags and per-device ciphertexts (a
        GROUP_SEND: its group, roster digest and one payload). ``message_id`` None: a
        receipt or another control content, which is no message."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO outbox (message_id, recipient, flags, content, created_at_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (message_id, recipient, int(frame.flags), content, now_ms),
            )
            entry_id = _rowid(cursor)
            if isinstance(frame, Send) and frame.ttl_seconds is not None:  # EXPIRES
                self._db.execute(
                    "UPDATE outbox SET ttl_seconds = ? WHERE id = ?", (frame.ttl_seconds, entry_id)
                )
            self._write_payloads(entry_id, frame)
            return entry_id

    def replace_outbox_frame(self, entry_id: int, frame: Send | GroupSend) -> None:
        """After a device-mismatch correction: the entry now addresses these devices. (A
        GROUP_SEND after a stale roster: a new digest, and a payload under the new key.)"""
        with self.transaction():
            self._db.execute("DELETE FROM outbox_payloads WHERE entry_id = ?", (entry_id,))
            self._db.execute("DELETE FROM outbox_group_sends WHERE entry_id = ?", (entry_id,))
            self._write_payloads(entry_id, frame)

    def _write_payloads(self, entry_id: int, frame: Send | GroupSend) -> None:
        if isinstance(frame, GroupSend):
            self._db.execute(
                "INSERT INTO outbox_group_sends (entry_id, group_id, roster_digest, "
                "ttl_seconds, payload) VALUES (?, ?, ?, ?, ?)",
                (entry_id, frame.group_id, frame.roster_digest, frame.ttl_seconds, frame.payload),
            )
            return
        self._db.executemany(
            "INSERT INTO outbox_payloads (entry_id, device_id, registration_id, payload) "
            "VALUES (?, ?, ?, ?)",
            [(entry_id, m.device_id, m.registration_id, m.payload) for m in frame.messages],
        )

    def delete_outbox(self, entry_id: int) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))

    def outbox(self) -> list[OutboxEntry]:
        """Unanswered sends, in the order they were made."""
        rows = self._db.execute(
            "SELECT id, message_id, recipient, flags, content, created_at_ms, ttl_seconds "
            "FROM outbox "
            "ORDER BY id"
        ).fetchall()
        return [self._outbox_entry(row) for row in rows]

    def outbox_entry(self, entry_id: int) -> OutboxEntry | None:
        row = self._db.execute(
            "SELECT id, message_id, recipient, flags, content, created_at_ms, ttl_seconds "
            "FROM outbox "
            "WHERE id = ?",
            (entry_id,),
        ).fetchone()
        return None if row is None else self._outbox_entry(row)

    def _outbox_entry(self, row: tuple[object, ...]) -> OutboxEntry:
        entry_id = int(str(row[0]))
        payloads = self._db.execute(
            "SELECT device_id, registration_id, payload FROM outbox_payloads "
            "WHERE entry_id = ? ORDER BY device_id",
            (entry_id,),
        )
        messages = tuple(
            DeviceMessage(int(device_id), int(registration_id), bytes(payload))
            for device_id, registration_id, payload in payloads
        )
        recipient = str(row[2])
        # Request id 0 until the transport stamps its own on each transmission.
        ttl = None if row[6] is None else int(str(row[6]))
        frame: Send | GroupSend = Send(0, recipient, messages, SendFlags(int(str(row[3]))), ttl)
        group_send = self._db.execute(
            "SELECT group_id, roster_digest, ttl_seconds, payload FROM outbox_group_sends "
            "WHERE entry_id = ?",
            (entry_id,),
        ).fetchone()
        if group_send is not None:
            group_id, digest, ttl_seconds, payload = group_send
            frame = GroupSend(
                0, bytes(group_id), bytes(digest), bytes(payload), frame.flags, ttl_seconds
            )
        return OutboxEntry(
            id=entry_id,
            message_id=None if row[1] is None else int(str(row[1])),
            recipient=recipient,
            content=bytes(row[4]),  # type: ignore[call-overload]
            frame=frame,
            created_at_ms=int(str(row[5])),
        )


_MESSAGE_COLUMNS = (
    "id, kind, direction, peer, sender_device, body, error_code, sent_at_ms, "
    "server_time_ms, received_at_ms, status, seq, expires_at_ms, timer_seconds"
)
_MESSAGE_KINDS: dict[object, MessageKind] = {
    "text": "text",
    "attachment": "attachment",
    "timer": "timer",
}
_ATTACHMENT_COLUMNS = (
    "blob_id, file_key, size, digest, content_type, file_name, attachment_flags, duration_ms, "
    "width, height, state, path, failure_code"
)
_ATTACHMENT_STATES: dict[object, AttachmentState] = {
    "pending": "pending",
    "saved": "saved",
    "failed": "failed",
    "sent": "sent",
}


def _message(row: tuple[Any, ...]) -> StoredMessage:
    return StoredMessage(
        id=int(row[0]),
        kind=_MESSAGE_KINDS.get(row[1], "undecryptable"),
        direction="in" if row[2] == "in" else "out",
        peer=str(row[3]),
        sender_device=int(row[4]),
        text=row[5],
        error_code=_error_code(row[6]),
        sent_at_ms=row[7],
        server_time_ms=row[8],
        received_at_ms=row[9],
        status=str(row[10]),
        seq=row[11],
        expires_at_ms=row[12],
        timer_seconds=row[13],
    )


def _attachment(row: tuple[Any, ...]) -> StoredAttachment:
    return StoredAttachment(
        blob_id=bytes(row[0]),
        key=bytes(row[1]),
        size=int(row[2]),
        digest=bytes(row[3]),
        content_type=str(row[4]),
        file_name=str(row[5]),
        flags=AttachmentFlags(int(row[6])),
        duration_ms=int(row[7]),
        width=int(row[8]),
        height=int(row[9]),
        state=_ATTACHMENT_STATES[row[10]],
        path=None if row[11] is None else str(row[11]),
        failure=_error_code(row[12]),
    )


def _rowid(cursor: sqlite3.Cursor) -> int:
    if cursor.lastrowid is None:  # pragma: no cover - sqlite3 always sets it after INSERT
        raise RuntimeError("INSERT without a rowid")
    return cursor.lastrowid


def _error_code(value: object) -> ErrorCode | None:
    if value is None:
        return None
    try:
        return ErrorCode(int(str(value)))
    except ValueError:
        return ErrorCode.INTERNAL
