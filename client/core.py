"""``Client``: an account's device, put together from the store, the REST API and the relay.

The rules this module keeps (the reasons are in the methods):

* Nothing is acknowledged before it is stored. A DELIVER is decrypted, and the new session
  state, the message and the deletion of consumed prekeys commit in one transaction; only
  then does the ACK go out. A crash in between leaves the envelope on the server and
  nothing written here, so the next delivery decrypts it afresh.
* Nothing is encrypted twice. A send is encrypted once per device and the SEND frame goes
  into the outbox, in the same transaction as the advanced sessions; resending (after a
  disconnect or a restart) reuses those exact ciphertexts. Only devices the server reports
  missing or stale get a new encryption.
* Sessions are read, advanced and written with no ``await`` in between and inside one
  transaction, so a send and a receive running at once (on one event loop, or in two
  processes sharing a home) never overwrite each other's ratchet state.
* Trust on first use, then loudly: an account key seen for the first time is stored; a
  different key later is stored too but flagged ``changed``. Receiving from it goes on (as
  in Signal) and emits ``IdentityChanged``; sending to it is refused with
  UNTRUSTED_IDENTITY until the user calls ``trust()``.
* Events reach the application only after their transaction has committed.
* (sender, sent_at) names one message. Every message this device encrypts (texts and
  receipts) gets a sent_at of ``max(now, last + 1)``, remembered in the store.
* Receipts ride on the same rails as texts and never hold texts up. A received text from
  another account owes its sender a DELIVERED receipt, written to ``pending_receipts`` in
  the text's own transaction (so a crash cannot lose it) and sent only after the ACK. A
  background task sends what is owed, per sender and in batches of up to 100, whenever
  the push queue is momentarily empty or a sender is owed 100, and ``receive()`` waits
  for it (a bounded time) before it returns; ``connect()`` sends what an earlier run left
  behind. A receipt send uses the device list and sessions we already have (the relay's
  DEVICE_MISMATCH corrects them), goes through the outbox like a text, and is never
  copied to our own other devices. None is sent for a receipt, or for a message from our
  own account.
* An incoming receipt moves our outgoing texts to that peer forward only (sent ->
  delivered -> read; OUTGOING_RANK in the store) and yields ``MessageStatusChanged``; it
  is never stored as a message. A sent_at we do not know changes nothing.
* Encrypt only to devices the account vouches for. Every device fetch checks the account's
  signed device list (``protocol.devicelist``): its signature under the account key, a
  version no older than the newest seen for that key (kept in the store, our own account
  included), and that it names each device with the certificate the server shows. Any
  other device is refused (``DeviceRefused``, once per Client object), never encrypted to,
  and its session forgotten; a relay that insists on it fails the send with
  UNSIGNED_DEVICE rather than going round again. Receipts use the devices we know only
  while the newest list we hold names them all.
* A checked device list is reused for sends (DEVICE_CACHE_SECONDS, in memory), never
  beyond what checked it: only while the identity store still trusts the key it was
  checked under and no newer list is stored. DEVICE_MISMATCH, a message from a device it
  lacks, a revocation or ``trust()`` have it fetched again.
* Sends are pipelined and stay in order: under the send lock a message is encrypted, put
  in the outbox and handed to the transport, which writes SENDs in that order (and again,
  in that order, after a reconnection); the answer is awaited outside the lock. At most
  SEND_WINDOW messages are in flight, and UNCONFIRMED_WINDOW to an account whose session
  still carries a prekey header. DEVICE_MISMATCH corrections run one at a time, in the
  order the answers came.
* ACKs are batched: every envelope stored so far, once no other push is waiting (or 100
  are owed, or before a download); never one not yet stored.
* Our other devices are told of what we send by a SENT transcript (not a copy of the text),
  stored there as our outgoing message. SENT and HISTORY content is accepted only from our
  own account, and HISTORY only by a device linked with history to follow, once: chunks
  are kept until the transfer is complete (any order, duplicates ignored), then imported
  in one transaction with the last chunk's envelope.
* Forward compatibility: content of a type (or receipt kind) this client does not know is
  a newer client's, not damage. Its session state is kept, nothing is stored, nothing is
  yielded, it is logged at debug level and acknowledged. (Storing it as undecryptable
  would flood the history with entries for, say, typing indicators.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from protocol import primitives as p
from protocol.attachments import MAX_ATTACHMENT_BYTES, blob_size, new_attachment_key
from protocol.content import (
    HISTORY_TRANSFER_ID_BYTES,
    MAX_RECEIPT_ITEMS,
    Attachment,
    AttachmentFlags,
    Content,
    GroupUpdate,
    HistoryChunk,
    HistoryRecord,
    Receipt,
    ReceiptKind,
    SenderKeyDistribution,
    SentContent,
    SentTranscript,
    Text,
    TimerUpdate,
    Typing,
    TypingAction,
    decode_content,
    encode_content,
    encode_history_records,
    split_history,
)
from protocol.devicelist import SignedDeviceList, check_devices
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Deliver,
    DeviceMessage,
    DeviceMismatch,
    Error,
    GroupSend,
    Notice,
    NoticeKind,
    QueueEmpty,
    Send,
    SendFlags,
    SendOk,
)
from protocol.identifiers import normalize_username
from protocol.keys import (
    AccountIdentity,
    DeviceCertificate,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    Rng,
    SignedPreKeyPair,
)
from protocol.limits import MAX_PREKEYS_PER_UPLOAD, MAX_TEXT_BYTES, MAX_TTL_SECONDS
from protocol.provisioning import ADDRESS_BYTES, LinkCode, ProvisionMessage, open_sealed, seal
from protocol.safety import SafetyNumber, safety_number
from protocol.session import Decrypted, SessionRecord

from . import attachments as files
from . import disappearing as disappearing_
from .api import AccountKeys, Api, DeviceUpload, OwnDevice, normalize_server_url
from .errors import LocalErrorCode, SealpostError
from .store import (
    RECEIPT_DELIVERED,
    RECEIPT_READ,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_READ,
    STATUS_RECEIVED,
    STATUS_SENT,
    Config,
    Direction,
    Identity,
    IdentityCheck,
    OutboxEntry,
    PendingReceipt,
    StatusChange,
    Store,
    StoredMessage,
)
from .transport import Backoff, Connector, Push, Reply, Transport, websocket_connector

log = logging.getLogger(__name__)

DEVICE_ID = 1  # sign-up creates device 1; linked devices take the lowest free id
DEFAULT_DEVICE_NAME = "Python client"
LINK_TIMEOUT = 600.0  # a provisioning address and a link token live 10 minutes
PROVISIONING_WAIT = 25.0  # seconds per long poll for the sealed provisioning message
LINK_POLL_INTERVAL = 2.0  # how often the approving device looks for the new device
DEFAULT_HISTORY_BYTES = 1024 * 1024  # history sent to a newly linked device by default
PREKEY_BATCH = MAX_PREKEYS_PER_UPLOAD  # 100 of each kind at sign-up and per top-up
MAX_MISMATCH_ROUNDS = 3
SIGNED_PREKEY_MAX_AGE_MS = 7 * 24 * 3600 * 1000  # rotated on connect once this old
TYPING_TIMEOUT = 10.0  # a typing indicator the server has not taken by then is moot
RECEIPT_SETTLE_TIMEOUT = 10.0  # how long receive() and mark_read() wait for receipts to go
RECEIPT_STATUS = {ReceiptKind.DELIVERED: STATUS_DELIVERED, ReceiptKind.READ: STATUS_READ}
# A checked device list is reused this long for sends (the relay's DEVICE_MISMATCH corrects
# it sooner); then fetched again, or reused while a fetch fails for a reason that may pass.
DEVICE_CACHE_SECONDS = 300.0
ACK_BATCH = 100  # envelopes per ACK at most (the relay holds back after 256 unacknowledged)
RATE_LIMIT_ROUNDS = 5  # a SEND the relay dropped as rate_limited is written again this often
RATE_LIMIT_WAIT = 1.0  # seconds before the first rewrite; doubling
# Messages of one Client in flight (encrypted, not yet answered) at most: a send waits for
# room before it is encrypted. While our session with the recipient still carries a
# prekey header (about 1.3 KB, against about 100 bytes once they have answered on it),
# only UNCONFIRMED_WINDOW to that account are in flight, so a burst to a new contact does
# not encrypt hundreds of messages with that header before the first answer arrives.
SEND_WINDOW = 32
UNCONFIRMED_WINDOW = 2


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A text message, stored locally as ``message_id``. ``sent_at_ms`` is the sender's
    clock (inside the encryption); ``server_time_ms`` the relay's, when it queued it."""

    from_: str
    device: int
    text: str
    sent_at_ms: int
    server_time_ms: int
    seq: int  # the relay's sequence number (0: an ephemeral envelope)
    message_id: int
    expires_at_ms: int | None = None  # a disappearing message: deleted here at this time
    group: str | None = None  # a group message: the group's id (hex); None: 1:1


@dataclass(frozen=True, slots=True)
class UndecryptableMessage:
    """An envelope that could not be read; ``code`` says why (e.g. DECRYPT_FAILED,
    PREKEY_NOT_FOUND, NO_SESSION). It is stored and acknowledged like a message."""

    from_: str
    device: int
    code: ErrorCode
    server_time_ms: int
    seq: int
    message_id: int
    group: str | None = None  # a group message: the group's id (hex)


@dataclass(frozen=True, slots=True)
class IdentityChanged:
    """``username`` now uses a different account identity key (first seen on ``device``).
    Their messages are still received; sending to them waits for ``Client.trust()``."""

    username: str
    device: int
    server_time_ms: int


@dataclass(frozen=True, slots=True)
class MessageStatusChanged:
    """A receipt from ``peer`` moved our message ``message_id`` (see ``messages()``) to
    ``status``: "delivered" (it reached one of their devices) or "read". Statuses only
    move forward, so a message goes sent -> delivered -> read, or straight to read."""

    peer: str
    message_id: int
    status: str


@dataclass(frozen=True, slots=True)
class SentByMe:
    """Another device of our account (``device``) sent ``text`` to ``destination``; its
    SENT transcript is stored as our outgoing message ``message_id`` (status "sent")."""

    destination: str
    text: str
    sent_at_ms: int
    device: int
    message_id: int
    file_name: str | None = None  # an attachment (``text`` is then its caption)
    expires_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryImported:
    """The history our other device sent when it linked this one is in: ``count``
    messages were added to ``messages()`` (none of them is reported as MessageReceived)."""

    count: int


@dataclass(frozen=True, slots=True)
class DeviceRefused:
    """The server showed ``username``'s device ``device_id``, but it is ``reason`` (e.g.
    "not in bob's signed device list"): nothing is encrypted to it. Reported through
    ``Client.on_event`` (or logged as a warning), once per device and Client object."""

    username: str
    device_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class AttachmentReceived:
    """A file from ``from_``, stored as message ``message_id`` (kind "attachment"). Yielded
    once the download is over: ``path`` is the decrypted file under ``<home>/downloads/``;
    or ``path`` is None and ``code`` says why nothing was kept: DECRYPT_FAILED (the blob
    does not match its pointer: tampered, truncated or substituted), ATTACHMENT_EXPIRED
    or UNKNOWN_ATTACHMENT (the server no longer has it)."""

    from_: str
    device: int
    message_id: int
    file_name: str  # as the sender named it (``path`` has the sanitised name)
    content_type: str
    size: int
    caption: str
    voice: bool
    path: Path | None
    code: ErrorCode | None
    sent_at_ms: int
    server_time_ms: int | None
    expires_at_ms: int | None = None
    group: str | None = None  # a group message: the group's id (hex); None: 1:1


@dataclass(frozen=True, slots=True)
class TypingChanged:
    """``from_`` started or stopped typing to us (never stored; shown only while the
    ``typing`` setting is on)."""

    from_: str
    device: int
    started: bool
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class TimerChanged:
    """The disappearing-messages timer of the conversation with ``peer`` is now
    ``timer_seconds`` (0: off), set by ``by`` (``peer``, or our own username when another
    device of ours set it). Stored as message ``message_id`` (kind "timer")."""

    peer: str
    by: str
    timer_seconds: int
    sent_at_ms: int
    message_id: int


@dataclass(frozen=True, slots=True)
class GroupUpdated:
    """``actor`` (from ``device``) changed group ``group`` (hex id): a GROUP_UPDATE, stored
    for the group's conversation as event ``event_id`` (``Client.groups.events()``).
    ``action``: "created", "added", "removed", "left", "renamed", "admins_changed" or
    "snapshot" (we were added; the name and timer so far); ``targets`` the usernames it
    is about; ``text`` how the conversation shows it ("alice added carol")."""

    group: str
    actor: str
    device: int
    action: str
    name: str
    timer_seconds: int
    targets: tuple[str, ...]
    text: str
    sent_at_ms: int
    server_time_ms: int
    event_id: int


Event = (
    MessageReceived
    | UndecryptableMessage
    | IdentityChanged
    | MessageStatusChanged
    | SentByMe
    | HistoryImported
    | DeviceRefused
    | AttachmentReceived
    | TypingChanged
    | TimerChanged
    | GroupUpdated
)


@dataclass(frozen=True, slots=True)
class LinkedDevice:
    """What ``link_new_device()`` made: this home is now ``username``'s ``device_id``.
    ``history_follows``: the approving device will send recent history (``receive()``
    imports it)."""

    username: str
    device_id: int
    history_follows: bool


@dataclass(frozen=True, slots=True)
class LinkApproved:
    """What ``approve_link()`` did: the device(s) that joined, and the history sent to
    them (``history_messages`` texts in ``history_chunks`` envelopes)."""

    device_ids: tuple[int, ...]
    history_messages: int
    history_chunks: int


@dataclass(frozen=True, slots=True)
class _Devices:
    """An account's devices as the server showed them, checked against its signed list."""

    device_list: SignedDeviceList
    accepted: dict[int, DeviceCertificate]  # certified and listed (ours included)
    refused: dict[int, str]  # served, but not to be encrypted to: id -> reason
    certificates: dict[int, DeviceCertificate]  # accepted, without this device: encrypt to these
    account_key: bytes  # the identity key the list was checked under
    fetched_at: float  # time.monotonic() of the fetch


@dataclass(frozen=True, slots=True)
class _NewDevice:
    """A device's keys and first prekeys, made before the server has heard of it."""

    keys: DeviceKeys
    signed: SignedPreKeyPair
    last_resort: KemPreKeyPair
    one_time: list[OneTimePreKeyPair]
    kem: list[KemPreKeyPair]

    def upload(self, name: str) -> DeviceUpload:
        return DeviceUpload(
            certificate=self.keys.certificate.encode(),
            name=name,
            signed_prekey=self.signed.public.encode(),
            last_resort_kem_prekey=self.last_resort.public.encode(),
            one_time_prekeys=[pair.public.encode() for pair in self.one_time],
            kem_prekeys=[pair.public.encode() for pair in self.kem],
        )


@dataclass(frozen=True, slots=True)
class _Target:
    """One SEND to prepare: an account and the verified certificates of its devices."""

    username: str
    certificates: dict[int, DeviceCertificate]
    bundles: dict[int, PreKeyBundle]


# --- the client -------------------------------------------------------------------------


class Client:
    """An end-to-end encrypted messaging device whose state lives in ``home``.

    ``server_url`` overrides the stored server URL for this object's lifetime (the same
    server under another name). ``send_receipts=False`` (also the public attribute of
    that name) sends no receipts from this object, whatever the stored ``receipts``
    setting says; incoming receipts are still processed. ``http_transport``,
    ``ws_connector``, ``backoff``, ``ping_interval``, ``clock`` and ``rng`` exist for tests
    (an in-memory server, fast reconnects, fixed clocks); the defaults talk to the network.
    Use it as ``async with Client(home) as client: ...``.
    """

    def __init__(
        self,
        home: str | PathLike[str],
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
        ws_connector: Connector = websocket_connector,
        backoff: Backoff | None = None,
        ping_interval: float = 25.0,
        server_url: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: Rng = p.random_bytes,
        send_receipts: bool = True,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.home = Path(home).expanduser()
        self._server_url = None if server_url is None else normalize_server_url(server_url)
        self.store = Store.open(self.home)
        self._http_transport = http_transport
        self._ws_connector = ws_connector
        self._backoff = backoff or Backoff()
        self._ping_interval = ping_interval
        self._clock = clock
        self._rng = rng
        self._api: Api | None = None
        self._transport: Transport | None = None
        self._connect_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()  # messages are made, and SENDs handed over, in order
        self._correct_lock = asyncio.Lock()  # DEVICE_MISMATCH answers are corrected in order
        self._sending: dict[int, asyncio.Task[None]] = {}  # message id -> waiting for SEND_OK
        self._sending_to: dict[int, str] = {}  # message id -> its recipient, while in flight
        self._room = asyncio.Event()  # a send in flight ended (SEND_WINDOW)
        self._device_cache: dict[str, _Devices] = {}  # checked lists, for sends (see above)
        self._unacked: list[int] = []  # stored envelopes whose ACK has not gone out yet
        self._set_up = False  # prekeys looked after and outbox flushed on this connection
        self._closed = False
        self.send_receipts = send_receipts
        self._receipt_task: asyncio.Task[None] | None = None
        self._receipts_again = False  # more became due while the task was running
        self._receipts_owed = False  # pending receipts written since the task last looked
        self._owed_counts: dict[str, int] = {}  # per sender, since the task last looked
        # Told of what happens outside receive() (DeviceRefused while sending); None: logged.
        self.on_event = on_event
        self._reported: set[tuple[str, int, str]] = set()  # DeviceRefused already told
        self._downloads_deferred: set[int] = set()  # failed for now; tried on a later run
        self.upload_stats = files.TransferStats()  # what send_file() uploaded, retries included
        self.transfer_retry = files.Retry()  # backoff of uploads and downloads (tests: faster)
        self.purge_expired()
        from .groups import Groups  # here, not at the top: client.groups builds on this module

        self.groups = Groups(self)  # groups: create, send, manage (client.groups)

    # --- who we are ---------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        return self.store.config() is not None

    @property
    def config(self) -> Config:
        config = self.store.config()
        if config is None:
            raise SealpostError(
                LocalErrorCode.NOT_REGISTERED,
                f"{self.home} holds no account yet; register first",
            )
        if self._server_url is not None:
            return dataclasses.replace(config, server_url=self._server_url)
        return config

    @property
    def username(self) -> str:
        return self.config.username

    @property
    def device_id(self) -> int:
        return self.config.device_id

    @property
    def account_key(self) -> bytes:
        return self.store.account_identity().public_key

    @property
    def transport(self) -> Transport | None:
        """The relay connection, once ``connect()`` has made it."""
        return self._transport

    @property
    def receipts(self) -> bool:
        """The stored ``receipts`` setting (default on); see ``set_receipts()``."""
        return self.store.receipts_enabled()

    def set_receipts(self, enabled: bool) -> None:
        """Store whether this device sends delivered and read receipts. Turning them off
        also drops the ones owed and not yet sent. Incoming receipts are always processed."""
        self.store.set_receipts_enabled(enabled)
        if not enabled:
            self._receipts_owed = False
            self._owed_counts.clear()

    @property
    def sending_receipts(self) -> bool:
        """Whether receipts go out: the ``send_receipts`` attribute and the stored setting."""
        return self.send_receipts and self.store.receipts_enabled()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the relay connection, the HTTP client and the store. Unsent messages stay
        in the outbox and go out on the next ``connect()``."""
        if self._closed:
            return
        self._closed = True
        sending = [send for send in self._sending.values() if not send.done()]
        for send in sending:  # what they wait for stays in the outbox for the next run
            send.cancel()
        if sending:
            await asyncio.wait(sending)
        with contextlib.suppress(SealpostError):
            await self._flush_acks()  # best effort: an envelope not acked comes again
        task = self._receipt_task
        if task is not None and not task.done():
            # Whatever it had not finished stays owed (or in the outbox) for the next run.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            await self._transport.close()
        if self._api is not None:
            await self._api.close()
        self.store.close()

    def _server_api(self) -> Api:
        if self._api is None:
            config = self.config
            self._api = Api(config.server_url, config.token, transport=self._http_transport)
        return self._api

    def _relay(self) -> Transport:
        if self._transport is None:
            raise SealpostError(LocalErrorCode.CLOSED, "not connected to the relay")
        return self._transport

    # --- sign-up ------------------------------------------------------------------------

    async def register(
        self,
        server_url: str,
        username: str,
        password: str,
        *,
        device_name: str = DEFAULT_DEVICE_NAME,
        birth_date: date | None = None,
        age_confirmed: bool | None = None,
        consents: Sequence[str] | None = None,
    ) -> None:
        """Create the account and this device (device 1) on ``server_url``.

        Generates the account identity key, the device keys and certificate, a signed
        prekey, a last-resort KEM prekey and 100 one-time prekeys of each kind, signs up,
        and stores it all (with the server URL and the device token) in one transaction.
        ``birth_date`` or ``age_confirmed`` answer the region's age rule and ``consents``
        names the purposes agreed to; each is sent only when given (docs/api.md).
        """
        if self.store.config() is not None:
            raise SealpostError(
                LocalErrorCode.ALREADY_REGISTERED,
                f"{self.home} already holds the account {self.username!r}",
            )
        username = _normalize(username)
        server_url = normalize_server_url(server_url)
        account = AccountIdentity.generate(self._rng)
        device = self._make_device(account, DEVICE_ID)
        now = self._now_ms()
        device_list = SignedDeviceList.sign(account, username, 1, now, [device.keys.certificate])
        async with Api(server_url, transport=self._http_transport) as api:
            registration = await api.create_account(
                username, password, account.public_key, device.upload(device_name),
                device_list.encode(), birth_date=birth_date, age_confirmed=age_confirmed,
                consents=consents,
            )  # fmt: skip
        if registration.username != username or registration.device_id != DEVICE_ID:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE,
                f"sign-up answered for {registration.username!r} device "
                f"{registration.device_id}, not {username!r} device {DEVICE_ID}",
            )
        self._save_device(
            Config(server_url, username, DEVICE_ID, registration.token), account, device,
            device_list, history_expected=False,
        )  # fmt: skip

    def _make_device(self, account: AccountIdentity, device_id: int) -> _NewDevice:
        """Device keys certified by ``account``, a signed prekey, a last-resort KEM prekey
        and PREKEY_BATCH one-time prekeys of each kind (key ids reserved in the store)."""
        rng = self._rng
        keys = DeviceKeys.create(account, device_id, rng)
        [signed_id] = self.store.next_key_ids("signed", 1)
        kem_ids = self.store.next_key_ids("kem", PREKEY_BATCH + 1)
        one_time_ids = self.store.next_key_ids("one_time", PREKEY_BATCH)
        return _NewDevice(
            keys=keys,
            signed=SignedPreKeyPair.generate(keys, signed_id, rng),
            last_resort=KemPreKeyPair.generate(keys, kem_ids[0], last_resort=True, rng=rng),
            one_time=[OneTimePreKeyPair.generate(i, rng) for i in one_time_ids],
            kem=[KemPreKeyPair.generate(keys, i, last_resort=False, rng=rng) for i in kem_ids[1:]],
        )

    def _save_device(
        self,
        config: Config,
        account: AccountIdentity,
        device: _NewDevice,
        device_list: SignedDeviceList,
        *,
        history_expected: bool,
    ) -> None:
        now = self._now_ms()
        with self.store.transaction():
            self.store.save_registration(
                config, account, device.keys, device.signed, device.last_resort,
                device.one_time, device.kem, now,
            )  # fmt: skip
            self.store.save_device_list(config.username, account.public_key, device_list, now)
            self.store.set_history_expected(history_expected)

    # --- linking a new device ------------------------------------------------------------

    async def link_new_device(
        self,
        server_url: str,
        *,
        show_code: Callable[[LinkCode], None],
        device_name: str = DEFAULT_DEVICE_NAME,
        timeout: float = LINK_TIMEOUT,
    ) -> LinkedDevice:
        """Make this (empty) home a further device of an existing account.

        Asks the server for a provisioning address, makes an ephemeral X25519 key and hands
        the link code to ``show_code`` (to show as text and QR code), then waits (at most
        ``timeout`` seconds) for a device of the account to approve it with
        ``approve_link()``. Opens the sealed provisioning message (username, account key,
        link token), takes the lowest device id the account does not use, makes and
        certifies this device's keys, signs the account's new device list (the current
        one's devices plus this one, version + 1) and registers with the link token.
        Raises LINK_EXPIRED when nobody approved in time.
        """
        if self.store.config() is not None:
            raise SealpostError(
                LocalErrorCode.ALREADY_REGISTERED,
                f"{self.home} already holds the account {self.username!r}",
            )
        server_url = normalize_server_url(server_url)
        async with Api(server_url, transport=self._http_transport) as api:
            code, ephemeral_private = await self._start_link(api)
            show_code(code)
            return await self._complete_link(
                api, code, ephemeral_private, device_name=device_name, timeout=timeout
            )

    async def _start_link(self, api: Api) -> tuple[LinkCode, bytes]:
        """A provisioning address and an ephemeral key: the link code, and its private key."""
        ephemeral_private = self._rng(p.X25519_KEY_BYTES)
        provisioning = await api.create_provisioning_address()
        address = _base64url(provisioning.value)
        if address is None or len(address) != ADDRESS_BYTES:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE,
                f"the provisioning address {provisioning.value!r} is not "
                f"{ADDRESS_BYTES} bytes of base64url",
            )
        return LinkCode(address, p.x25519_public_key(ephemeral_private)), ephemeral_private

    async def _complete_link(
        self,
        api: Api,
        code: LinkCode,
        ephemeral_private: bytes,
        *,
        device_name: str,
        timeout: float,
    ) -> LinkedDevice:
        """Wait for the sealed provisioning message at ``code``'s address, then register
        this device with it and store everything."""
        sealed = await _wait_for_provisioning(api, code.address_text, timeout)
        try:
            message = open_sealed(code, ephemeral_private, sealed)
        except ProtocolError as exc:
            raise SealpostError.from_protocol(exc, "the provisioning message") from None
        account = AccountIdentity.from_seed(message.account_seed)
        username = message.username
        keys = await _own_keys_for_linking(api, username, message.link_token)
        if keys.username != username:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE, f"asked for {username!r}, got {keys.username!r}"
            )
        if not p.constant_time_equal(keys.identity_key, account.public_key):
            raise SealpostError(
                ErrorCode.UNTRUSTED_IDENTITY,
                f"the server lists another identity key for {username} than the one your "
                "other device sent",
            )
        current, accepted, refused = _check_served_devices(username, keys, 0)
        taken = set(accepted) | set(refused) | {d.device_id for d in current.devices}
        taken |= {entry.device_id for entry in keys.devices}
        device_id = next(i for i in range(1, len(taken) + 2) if i not in taken)
        device = self._make_device(account, device_id)
        device_list = SignedDeviceList.sign(
            account,
            username,
            current.version + 1,
            self._now_ms(),
            [*accepted.values(), device.keys.certificate],
        )
        registration = await api.add_linked_device(
            username, message.link_token, device.upload(device_name), device_list.encode()
        )
        if registration.username != username or registration.device_id != device_id:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE,
                f"linking answered for {registration.username!r} device "
                f"{registration.device_id}, not {username!r} device {device_id}",
            )
        self._save_device(
            Config(api.server_url, username, device_id, registration.token),
            account,
            device,
            device_list,
            history_expected=message.send_history,
        )
        return LinkedDevice(username, device_id, message.send_history)

    async def approve_link(
        self,
        code: str | LinkCode,
        *,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        timeout: float = LINK_TIMEOUT,
        poll_interval: float = LINK_POLL_INTERVAL,
    ) -> LinkApproved:
        """Let the device showing ``code`` join this account (ask the user first: whoever
        holds the code gets the account key).

        Gets a link token, seals the username, account key and token to the code and leaves
        them at its provisioning address; then waits (at most ``timeout`` seconds) until a
        new device appears in the account's signed device list. If ``history_bytes`` > 0,
        sends it the newest texts, up to that many bytes of records, as HISTORY chunks: each
        one an outbox entry, so an interrupted transfer resumes with the next connection.
        """
        if history_bytes < 0:
            raise SealpostError(ErrorCode.INVALID_VALUE, "history_bytes must be 0 or more")
        try:
            link = code if isinstance(code, LinkCode) else LinkCode.parse(code)
        except ProtocolError as exc:
            raise SealpostError.from_protocol(exc, "the link code") from None
        config = self.config
        api = self._server_api()
        before = await self._fetch_devices(config.username)
        known = set(before.accepted) | set(before.refused) | {config.device_id}
        token = await api.create_link_token()
        message = ProvisionMessage(
            config.username, self.store.account_identity().seed, token.value, history_bytes > 0
        )
        await api.put_provisioning(link.address_text, seal(link, message, self._rng))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                devices = await self._fetch_devices(config.username)
            except SealpostError as exc:
                if not _may_pass(exc):
                    raise
                log.info("looking for the new device: %s", exc)
            else:
                new = {i: c for i, c in devices.certificates.items() if i not in known}
                if new:
                    break
            if loop.time() >= deadline:
                raise SealpostError(
                    ErrorCode.LINK_EXPIRED,
                    f"no new device joined {config.username} within {timeout:g} s",
                )
            await asyncio.sleep(min(poll_interval, max(0.0, deadline - loop.time())))
        log.info("device(s) %s joined %s", sorted(new), config.username)
        if history_bytes == 0:
            return LinkApproved(tuple(sorted(new)), 0, 0)
        records = self._history_records(history_bytes)
        chunks = await self._send_history(new, records)
        return LinkApproved(tuple(sorted(new)), len(records), chunks)

    def _history_records(self, max_bytes: int) -> list[HistoryRecord]:
        """The newest texts whose records fit ``max_bytes`` together, oldest first."""
        records: list[HistoryRecord] = []
        size = 0
        for message in self.store.recent_texts():
            if message.text is None:
                continue
            record = HistoryRecord(
                message.peer, message.direction == "out", message.sent_at_ms or 0, message.text
            )
            size += len(encode_history_records((record,))) - 1  # less the count byte
            if size > max_bytes:
                break
            records.append(record)
        records.reverse()
        return records

    async def _send_history(
        self, devices: dict[int, DeviceCertificate], records: list[HistoryRecord]
    ) -> int:
        """Queue ``records`` as HISTORY chunks for our own ``devices`` (all in one
        transaction, so a transfer is queued whole or not at all), then send them in
        order. Returns the number of chunks."""
        own = self.username
        await self.connect()
        async with self._send_lock:
            bundles = await self._claim_bundles(own, devices)
            now = self._now_ms()
            transfer_id = self._rng(HISTORY_TRANSFER_ID_BYTES)
            try:
                chunks = split_history(records, transfer_id, self.store.next_sent_at(now))
            except ProtocolError as exc:
                raise SealpostError.from_protocol(exc, "history") from None
            entry_ids: list[int] = []
            with self.store.transaction():
                for chunk in chunks:
                    content = encode_content(chunk, hide_length=True)
                    messages = self._encrypt_for(_Target(own, devices, bundles), content, now)
                    bundles = {}  # the sessions exist now: a bundle is used once
                    frame = Send(0, own, tuple(messages.values()))
                    entry_ids.append(self.store.add_outbox(None, own, content, frame, now))
            for entry_id in entry_ids:
                entry = self.store.outbox_entry(entry_id)
                if entry is not None:
                    await self._dispatch(entry)
        log.info("sent %d history records in %d chunks", len(records), len(chunks))
        return len(chunks)

    # --- this account's devices ------------------------------------------------------------

    async def list_devices(self) -> list[OwnDevice]:
        """This account's devices as the server lists them (``current``: this one)."""
        return await self._server_api().devices()

    async def rename_device(self, device_id: int, name: str) -> OwnDevice:
        return await self._server_api().rename_device(device_id, name)

    async def revoke_device(self, device_id: int) -> bool:
        """Revoke a device of this account: sign a device list without it and have the
        server delete it (its token, prekeys and queue). Returns True if it was this
        device, whose home can then no longer reach the server."""
        config = self.config
        devices = await self._fetch_devices(config.username)
        if device_id not in devices.accepted and device_id not in devices.refused:
            raise SealpostError(
                ErrorCode.UNKNOWN_DEVICE, f"{config.username} has no device {device_id}"
            )
        account = self.store.account_identity()
        remaining = [c for i, c in devices.accepted.items() if i != device_id]
        version = max(
            devices.device_list.version,
            self.store.device_list_version(config.username, account.public_key),
        )
        device_list = SignedDeviceList.sign(
            account, config.username, version + 1, self._now_ms(), remaining
        )
        await self._server_api().revoke_device(device_id, device_list.encode())
        with self.store.transaction():
            self.store.save_device_list(
                config.username, account.public_key, device_list, self._now_ms()
            )
            self.store.forget_peer_device(config.username, device_id)
        self._forget_devices(config.username)
        return device_id == config.device_id

    # --- connecting ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the relay connection (once; later calls return at once), then look after
        prekeys (purge retired ones, rotate old ones, top up low stocks) and resend what
        the outbox still holds from an earlier run, in order."""
        async with self._connect_lock:
            if self._transport is None:
                if self._closed:
                    raise SealpostError(LocalErrorCode.CLOSED, "this client was closed")
                config = self.config
                transport = Transport(
                    config.server_url,
                    config.token,
                    connector=self._ws_connector,
                    backoff=self._backoff,
                    ping_interval=self._ping_interval,
                )
                await transport.start()
                self._transport = transport
                self._set_up = False
            if not self._set_up:
                # Under the lock, so that no send_text() can overtake the outbox.
                try:
                    await self._maintain_prekeys()
                except SealpostError as exc:
                    log.warning("prekey maintenance failed: %s", exc)
                await self._flush_outbox()
                self._set_up = True
                if self.store.pending_receipt_counts():  # left behind by an earlier run
                    self._receipts_owed = True
                    self._schedule_receipts()

    async def _flush_outbox(self) -> None:
        """Resend what an earlier run left in the outbox, in order: runs of SENDs are
        pipelined; a GROUP_SEND waits for the SENDs before it (its sender key may be in
        one of them)."""

        async def settle(batch: list[tuple[OutboxEntry, asyncio.Future[Reply]]]) -> None:
            for entry, reply in batch:
                try:
                    await self._settle(entry, reply)
                except SealpostError as exc:
                    what = entry.message_id or "(a receipt)"
                    log.warning("message %s to %s failed: %s", what, entry.recipient, exc)
            batch.clear()

        async with self._send_lock:
            batch: list[tuple[OutboxEntry, asyncio.Future[Reply]]] = []
            for entry in self.store.outbox():
                if isinstance(entry.frame, Send):
                    batch.append((entry, self._relay().submit(entry.frame)))
                    continue
                await settle(batch)
                try:
                    await self._dispatch(entry)
                except SealpostError as exc:
                    log.warning("group message %s failed: %s", entry.message_id, exc)
            await settle(batch)

    # --- sending ------------------------------------------------------------------------

    async def send_text(self, username: str, text: str, *, wait: bool = True) -> int:
        """Send ``text`` to every device of ``username`` (and to this account's other
        devices); return the local message id once the server has accepted it.

        ``wait=False`` returns as soon as the message is encrypted, in the outbox and
        handed to the relay connection: several SENDs are then in flight at once, still
        in order (``wait_sent()`` waits for their answers; a message that fails later gets
        the status "failed" and is logged). Either way, once stored the message is resent
        by the client itself, across reconnections and restarts, until the server answers.

        Raises SealpostError: UNTRUSTED_IDENTITY if their identity key changed and was not
        yet accepted with ``trust()``; UNKNOWN_ACCOUNT; TOO_LARGE; DEVICE_MISMATCH if the
        device list kept changing for three rounds; whatever else the server refuses.
        """
        username = _normalize(username)
        self._check_text(text)
        device_id = self.config.device_id
        return await self._send_message(
            username,
            lambda sent_at_ms: Text(text, sent_at_ms),
            lambda sent_at_ms: self.store.add_outgoing_text(username, device_id, text, sent_at_ms),
            wait=wait,
        )

    async def send_many(self, username: str, texts: Sequence[str]) -> list[int]:
        """Send ``texts`` to ``username`` in order, pipelined (``send_text(wait=False)``
        for each), and return their message ids once the server has accepted them all.
        Raises the first failure, after every send has been answered."""
        username = _normalize(username)
        for text in texts:
            self._check_text(text)
        ids = [await self.send_text(username, text, wait=False) for text in texts]
        await self.wait_sent(ids)
        return ids

    async def wait_sent(self, message_ids: Collection[int] | None = None) -> None:
        """Wait until the server has answered the sends of ``message_ids`` (default: every
        send of this object still in flight). Raises the first failure among them, once
        all are settled; a message not in flight (answered already) is not waited for."""
        wanted = self._sending if message_ids is None else message_ids
        tasks = [self._sending[i] for i in wanted if i in self._sending]
        if not tasks:
            return
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc

    def _check_text(self, text: str) -> None:
        if not text:
            raise SealpostError(ErrorCode.INVALID_VALUE, "the message text is empty")
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise SealpostError(
                ErrorCode.TOO_LARGE,
                f"the message is {len(text.encode('utf-8'))} bytes; the limit is {MAX_TEXT_BYTES}",
            )

    async def _send_message(
        self,
        username: str,
        build: Callable[[int], Text | Attachment | TimerUpdate],
        record: Callable[[int], int],
        *,
        disappearing: bool = True,
        wait: bool = True,
    ) -> int:
        """Send what ``build(sent_at_ms)`` makes to ``username``'s devices, and its copy
        (a SENT transcript, or SENT_CONTENT) to our own other devices; ``record(sent_at_ms)``
        stores our message (in the transaction that encrypts it) and returns its id.

        Under the send lock: the device lists (cached, ``_devices_for_sending``), the
        encryption, the outbox entries and the hand-over of the SEND to the relay
        connection, so SENDs go out in the order their messages were made. The answer is
        awaited outside it (``_complete_send``), so the next message need not wait for
        it; ``wait=False`` returns without awaiting it at all.

        While the conversation has a disappearing timer (and ``disappearing``), a text or
        attachment goes as EXPIRING in EXPIRES sends with ttl_seconds = the timer, and the
        message is stored to expire ``timer`` seconds after it was sent.
        """
        config = self.config
        await self.connect()
        self.purge_expired()
        async with self._send_lock:
            await self._room_for(username)
            sent_at_ms = self.store.next_sent_at(self._now_ms())
            inner = build(sent_at_ms)
            timer = self.store.conversation_timer(username) if disappearing else 0
            outgoing = inner if isinstance(inner, TimerUpdate) else disappearing_.wrap(inner, timer)
            flags, ttl_seconds = disappearing_.send_flags(timer)
            try:
                content = encode_content(outgoing, hide_length=True)
            except ProtocolError as exc:
                raise SealpostError.from_protocol(exc) from None

            # Network first (device lists, bundles); then one synchronous transaction.
            targets: list[tuple[_Target, bytes]] = []
            own_name = config.username
            if username != own_name:
                recipient = await self._devices_for_sending(username)
                if not recipient.certificates:
                    code = (
                        ErrorCode.UNSIGNED_DEVICE if recipient.refused else ErrorCode.UNKNOWN_DEVICE
                    )
                    raise SealpostError(code, f"{username} has no devices to send to")
                bundles = await self._claim_bundles(username, recipient.certificates)
                targets.append((_Target(username, recipient.certificates, bundles), content))
            own = await self._devices_for_sending(own_name)
            if own.certificates:  # skipped when this is the account's only device
                # Our other devices get a SENT transcript (SENT_CONTENT for anything but a
                # plain text): they show it as sent by us in the conversation with
                # ``username`` (a note to self included).
                try:
                    transcript = encode_content(
                        disappearing_.transcript(username, outgoing), hide_length=True
                    )
                except ProtocolError as exc:
                    raise SealpostError.from_protocol(exc) from None
                bundles = await self._claim_bundles(own_name, own.certificates)
                targets.append((_Target(own_name, own.certificates, bundles), transcript))

            now = self._now_ms()
            entry_ids: list[int] = []
            with self.store.transaction():
                message_id = record(sent_at_ms)
                if timer:
                    expires = disappearing_.expires_at(sent_at_ms, timer)
                    self.store.set_message_expiry(message_id, expires, timer)
                for target, target_content in targets:
                    messages = self._encrypt_for(target, target_content, now)
                    frame = Send(0, target.username, tuple(messages.values()), flags, ttl_seconds)
                    entry_ids.append(
                        self.store.add_outbox(
                            message_id, target.username, target_content, frame, now
                        )
                    )
                if not targets:  # a note to self on an account with only this device
                    self.store.set_message_status(message_id, STATUS_SENT)

            # The first entry is the send to ``username`` (to our own devices for a note
            # to self); a copy for our other devices goes only once it was accepted.
            first = self.store.outbox_entry(entry_ids[0]) if entry_ids else None
            reply = None if first is None else self._relay().submit(first.frame)
            task = asyncio.create_task(
                self._complete_send(message_id, first, reply, entry_ids[1:]),
                name=f"sealpost-send-{message_id}",
            )
            self._sending[message_id] = task
            self._sending_to[message_id] = username
            task.add_done_callback(lambda done: self._sent(message_id, done))
        if wait:
            await task
        return message_id

    async def _complete_send(
        self,
        message_id: int,
        first: OutboxEntry | None,
        reply: asyncio.Future[Reply] | None,
        copies: Sequence[int],
    ) -> None:
        """Wait for the answer to a message's first SEND (correcting it as need be), then
        send its copies for our other devices."""
        if first is not None and reply is not None:
            try:
                await self._settle(first, reply)
            except SealpostError:
                if self.store.outbox_entry(first.id) is None:  # failed for good: our other
                    for other in copies:  # devices must not hear of a message never sent
                        self.store.delete_outbox(other)
                raise
        for entry_id in copies:
            entry = self.store.outbox_entry(entry_id)
            if entry is None:
                continue
            try:
                await self._dispatch(entry)
            except SealpostError:
                log.warning("copy of message %d for our other devices failed", message_id)

    def _sent(self, message_id: int, task: asyncio.Task[None]) -> None:
        """A send task ended: forget it, and report a failure nobody may be waiting for."""
        if self._sending.get(message_id) is task:
            del self._sending[message_id]
            self._sending_to.pop(message_id, None)
            self._room.set()
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so asyncio never complains of it
        if exc is not None:
            log.warning("message %d was not sent: %s", message_id, exc)

    async def _room_for(self, username: str) -> None:
        """Wait (under the send lock) until another message to ``username`` may be put in
        flight: fewer than SEND_WINDOW in all, and fewer than UNCONFIRMED_WINDOW to
        ``username`` while our session with one of its devices is still unanswered."""
        while True:
            to_them = sum(peer == username for peer in self._sending_to.values())
            if len(self._sending) < SEND_WINDOW and (
                to_them < UNCONFIRMED_WINDOW or not self._unconfirmed(username)
            ):
                return
            self._room.clear()
            await self._room.wait()

    def _unconfirmed(self, username: str) -> bool:
        """Whether a message to ``username`` now would carry a prekey header for one of
        its devices (no session yet, or one they have not answered on)."""
        cached = self._device_cache.get(username)
        device_ids = list(cached.certificates if cached else self.store.peer_devices(username))
        if not device_ids:
            return username != self.username  # a first message (or: we are alone)
        for device_id in device_ids:
            record = self.store.load_session(username, device_id)
            state = record.current if record is not None else None
            if state is None or state.pending_prekey is not None:
                return True
        return False

    async def _dispatch(self, entry: OutboxEntry) -> None:
        """Send one outbox entry until the server accepts it (``_settle``)."""
        if isinstance(entry.frame, GroupSend):
            await self.groups.dispatch(entry)
            return
        await self._settle(entry, self._relay().submit(entry.frame))

    async def _settle(self, entry: OutboxEntry, pending: Awaitable[Reply]) -> None:
        """Wait for the answer to an outbox entry's SEND (``pending``) and act on it:
        SEND_OK deletes the entry; DEVICE_MISMATCH corrects its device set and sends again
        (at most MAX_MISMATCH_ROUNDS sends, corrections one at a time so that pipelined
        SENDs stay in order); rate_limited (the relay dropped the frame unread) sends it
        again after a pause; any other error deletes it and raises."""
        assert isinstance(entry.frame, Send)  # noqa: S101 (GROUP_SENDs go to groups.dispatch)
        frame = entry.frame
        primary = self._is_primary(entry)
        attempt = 1
        throttled = 0
        while True:
            reply = await pending
            answered = time.monotonic()
            match reply:
                case SendOk():
                    with self.store.transaction():
                        self.store.delete_outbox(entry.id)
                        if primary and entry.message_id is not None:
                            self.store.set_message_status(
                                entry.message_id, STATUS_SENT, reply.server_time_ms
                            )
                    return
                case DeviceMismatch():
                    log.info(
                        "device mismatch for %s: missing %s, extra %s, stale %s",
                        entry.recipient,
                        reply.missing,
                        reply.extra,
                        reply.stale,
                    )
                    if attempt == MAX_MISMATCH_ROUNDS:
                        break
                    attempt += 1
                    async with self._correct_lock:
                        try:
                            frame = await self._correct_devices(entry, frame, reply, answered)
                        except SealpostError:
                            self._give_up(entry, primary)
                            raise
                        pending = self._relay().submit(frame)
                case Error() if (
                    reply.error_code is ErrorCode.RATE_LIMITED and throttled < RATE_LIMIT_ROUNDS
                ):
                    await asyncio.sleep(RATE_LIMIT_WAIT * 2**throttled)
                    throttled += 1
                    pending = self._relay().submit(frame)
                case Error():
                    self._give_up(entry, primary)
                    code = reply.error_code
                    if code is None:
                        raise SealpostError(
                            LocalErrorCode.BAD_RESPONSE,
                            f"relay error {reply.code}: {reply.message}",
                        )
                    raise SealpostError(code, reply.message)
        self._give_up(entry, primary)
        raise SealpostError(
            ErrorCode.DEVICE_MISMATCH,
            f"the devices of {entry.recipient} kept changing; gave up after "
            f"{MAX_MISMATCH_ROUNDS} attempts",
        )

    def _is_primary(self, entry: OutboxEntry) -> bool:
        """Whether this entry is the send to the conversation partner (not the copy for
        our own other devices, nor a receipt, which has no message)."""
        if entry.message_id is None:
            return False
        message = self.store.message(entry.message_id)
        return message is not None and message.peer == entry.recipient

    def _give_up(self, entry: OutboxEntry, primary: bool) -> None:
        with self.store.transaction():
            self.store.delete_outbox(entry.id)
            if primary and entry.message_id is not None:
                self.store.set_message_status(entry.message_id, STATUS_FAILED)

    async def _correct_devices(
        self, entry: OutboxEntry, frame: Send, mismatch: DeviceMismatch, answered: float
    ) -> Send:
        """Answer a DEVICE_MISMATCH (received at ``answered``, monotonic): forget extra
        devices, restart sessions with stale ones, start sessions with missing ones; keep
        every other ciphertext as it was. The device list is fetched again unless one was
        fetched after the answer came (for an earlier pipelined SEND). The corrected frame
        replaces the outbox entry in the same transaction as the new sessions."""
        recipient = frame.recipient
        cached = self._device_cache.get(recipient)
        if cached is not None and cached.fetched_at >= answered:
            devices = cached
        else:
            devices = await self._fetch_devices(recipient)
        certificates = devices.certificates
        if insisted := sorted(
            (set(mismatch.missing) | set(mismatch.stale)) & devices.refused.keys()
        ):
            # The relay wants a ciphertext for a device the account never listed: that is
            # the attack the signed list exists for. Fail rather than go round again.
            names = ", ".join(str(device_id) for device_id in insisted)
            raise SealpostError(
                ErrorCode.UNSIGNED_DEVICE,
                f"the server insists on {recipient}'s device {names}, which is "
                f"{devices.refused[insisted[0]]}; not sending to it",
            )
        stale = set(mismatch.stale)
        wanted = {
            device_id: certificates[device_id]
            for device_id in sorted(set(mismatch.missing) | stale)
            if device_id in certificates  # else the list changed again: the next round says
        }
        bundles = await self._claim_bundles(recipient, wanted, fresh=stale)
        now = self._now_ms()
        with self.store.transaction():
            messages = {
                message.device_id: message
                for message in frame.messages
                if message.device_id not in mismatch.extra and message.device_id not in stale
            }
            for device_id in mismatch.extra:
                self.store.forget_peer_device(recipient, device_id)
            for device_id in stale:
                self.store.delete_session(recipient, device_id)
            target = _Target(recipient, wanted, bundles)
            messages.update(self._encrypt_for(target, entry.content, now))
            # The flags and ttl_seconds (EXPIRES) stay: only the devices change.
            corrected = dataclasses.replace(
                frame, request_id=0, messages=tuple(messages[d] for d in sorted(messages))
            )
            if not corrected.messages:
                raise SealpostError(ErrorCode.UNKNOWN_DEVICE, f"{recipient} has no devices left")
            self.store.replace_outbox_frame(entry.id, corrected)
        return corrected

    async def _fetch_devices(self, username: str) -> _Devices:
        """The account's devices as the server shows them now, checked: its identity key
        against the identity store, its signed device list against that key and against
        the newest version seen (an older one is refused), each certificate against the
        key and the list. Only ``certificates`` (our own device left out) may be encrypted
        to; ``refused`` devices are reported (DeviceRefused) and their sessions dropped."""
        config = self.config
        keys = await self._server_api().account_keys(username)
        if keys.username != username:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE, f"asked for {username!r}, got {keys.username!r}"
            )
        self._check_identity_for_sending(username, keys.identity_key)
        newest = self.store.device_list_version(username, keys.identity_key)
        device_list, accepted, refused = _check_served_devices(username, keys, newest)
        self.store.save_device_list(username, keys.identity_key, device_list, self._now_ms())
        own = username == config.username
        certificates = {
            device_id: certificate
            for device_id, certificate in accepted.items()
            if not (own and device_id == config.device_id)
        }
        # A device we knew that is no longer listed (revoked) or now refused: forget it, so
        # that nothing (a receipt either) is encrypted to it again.
        with self.store.transaction():
            for device_id in self.store.peer_devices(username):
                if device_id not in certificates:
                    self.store.forget_peer_device(username, device_id)
        for device_id, reason in refused.items():
            self._report(DeviceRefused(username, device_id, reason))
        devices = _Devices(
            device_list, accepted, refused, certificates, keys.identity_key, time.monotonic()
        )
        self._device_cache[username] = devices
        return devices

    async def _devices_for_sending(self, username: str) -> _Devices:
        """The devices to encrypt a message to: the list checked by the last fetch (by
        ``_fetch_devices``, so every rule of the signed device list held then) if it is
        younger than DEVICE_CACHE_SECONDS and the identity store still trusts the key it
        was checked under; else a fresh fetch. A fetch that fails for a reason that may
        pass (no connection) falls back to the cached list: the relay still answers
        DEVICE_MISMATCH if it is out of date, and that is always fetched afresh.

        Without the cache each message cost two HTTP round trips before its SEND (the
        recipient's list and our own), which on a slow link was most of its cost."""
        cached = self._device_cache.get(username)
        if cached is not None and not self._still_trusted(username, cached):
            del self._device_cache[username]
            cached = None
        if cached is not None and time.monotonic() - cached.fetched_at < DEVICE_CACHE_SECONDS:
            return cached
        try:
            return await self._fetch_devices(username)
        except SealpostError as exc:
            if cached is None or not _may_pass(exc):
                raise
            log.info("using %s's device list from before: %s", username, exc)
            return cached

    def _still_trusted(self, username: str, devices: _Devices) -> bool:
        """Whether a cached list may still be used: no newer list is stored, and its key
        is the one the identity store holds, not flagged as changed (sending to a changed
        key waits for ``trust()``)."""
        if devices.device_list.version < self.store.device_list_version(
            username, devices.account_key
        ):
            # Another Client on this home stored a newer list (it approved a link, say): a
            # device alone in its account hears of a new one only this way, as it sends
            # no copies that the relay could answer with DEVICE_MISMATCH.
            return False
        if username == self.username:
            return p.constant_time_equal(devices.account_key, self.account_key)
        identity = self.store.identity(username)
        return (
            identity is not None
            and not identity.changed
            and p.constant_time_equal(identity.account_key, devices.account_key)
        )

    def _forget_devices(self, username: str, device_id: int | None = None) -> None:
        """Drop the cached device list of ``username`` (only if it does not name
        ``device_id``, when given): the next send fetches it again."""
        cached = self._device_cache.get(username)
        if cached is not None and (device_id is None or device_id not in cached.accepted):
            del self._device_cache[username]

    async def _known_devices(self, username: str) -> dict[int, DeviceCertificate]:
        """The devices to encrypt a receipt to: those we know, if the newest signed list we
        hold names every one of them; else a fresh, checked fetch."""
        known = self.store.peer_devices(username)
        stored = self.store.device_list(username)
        identity = self.store.identity(username)
        if (
            known
            and stored is not None
            and identity is not None
            and p.constant_time_equal(stored.account_key, identity.account_key)
            and all(stored.device_list.admits(d.certificate) for d in known.values())
        ):
            return {device_id: device.certificate for device_id, device in known.items()}
        return (await self._fetch_devices(username)).certificates

    def _report(self, event: Event) -> None:
        """Tell the application of an event that happened outside receive() (once per
        Client object): through ``on_event``, or as a logged warning."""
        if isinstance(event, DeviceRefused):
            key = (event.username, event.device_id, event.reason)
            if key in self._reported:
                return
            self._reported.add(key)
            message = (
                f"{event.username}'s device {event.device_id} is {event.reason}; not sending to it"
            )
        else:  # pragma: no cover - only DeviceRefused is reported this way
            message = repr(event)
        if self.on_event is None:
            log.warning("%s", message)
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("on_event failed for %s", message)

    def _check_identity_for_sending(self, username: str, account_key: bytes) -> None:
        if username == self.config.username:
            if not p.constant_time_equal(account_key, self.account_key):
                raise SealpostError(
                    ErrorCode.UNTRUSTED_IDENTITY,
                    "the server lists another identity key for your own account",
                )
            return
        if len(account_key) != p.ED25519_PUBLIC_BYTES:
            raise SealpostError(ErrorCode.BAD_KEY, f"{username}'s identity key is not 32 bytes")
        check = self.store.observe_identity(username, account_key, self._now_ms())
        identity = self.store.identity(username)
        if check is IdentityCheck.CHANGED or (identity is not None and identity.changed):
            raise SealpostError(
                ErrorCode.UNTRUSTED_IDENTITY,
                f"{username}'s identity key has changed; compare safety numbers, then "
                f"trust {username} to send again",
            )

    def _has_usable_session(self, username: str, certificate: DeviceCertificate) -> bool:
        record = self.store.load_session(username, certificate.device_id)
        state = record.current if record is not None else None
        return (
            state is not None
            and state.can_send
            and p.constant_time_equal(state.remote_identity_key, certificate.identity_key)
        )

    async def _claim_bundles(
        self,
        username: str,
        certificates: dict[int, DeviceCertificate],
        fresh: Collection[int] = (),
    ) -> dict[int, PreKeyBundle]:
        """Verified bundles for the devices without a usable session (and for ``fresh``)."""
        needed = [
            device_id
            for device_id, certificate in certificates.items()
            if device_id in fresh or not self._has_usable_session(username, certificate)
        ]
        if not needed:
            return {}
        claimed = await self._server_api().claim_bundles(username, needed)
        trusted = self.store.identity(username)
        account_key = self.account_key if username == self.username else None
        if trusted is not None and account_key is None:
            account_key = trusted.account_key
        bundles: dict[int, PreKeyBundle] = {}
        for item in claimed.bundles:
            where = f"bundle for {username} device {item.device_id}"
            certificate = certificates.get(item.device_id)
            if certificate is None:
                continue  # not asked for
            try:
                bundle = PreKeyBundle.decode(item.bundle)
                bundle.verify()
            except ProtocolError as exc:
                raise SealpostError.from_protocol(exc, where) from None
            if account_key is None or not p.constant_time_equal(
                bundle.account_identity_key, account_key
            ):
                raise SealpostError(ErrorCode.INVALID_BUNDLE, f"{where}: another account key")
            if bundle.certificate.encode() != certificate.encode():
                raise SealpostError(
                    ErrorCode.INVALID_BUNDLE, f"{where}: not the certificate of the device list"
                )
            bundles[item.device_id] = bundle
        if missing := [device_id for device_id in needed if device_id not in bundles]:
            raise SealpostError(
                ErrorCode.UNKNOWN_DEVICE, f"no prekey bundle for {username} device(s) {missing}"
            )
        return bundles

    def _encrypt_for(
        self, target: _Target, content: bytes, now_ms: int
    ) -> dict[int, DeviceMessage]:
        """Encrypt ``content`` once per device of ``target`` and save the sessions.

        Synchronous on purpose, and called inside the caller's transaction: the sessions
        are loaded, advanced and saved with no other task in between.
        """
        own_device = self.store.device_keys()
        messages: dict[int, DeviceMessage] = {}
        for device_id, certificate in target.certificates.items():
            record = self.store.load_session(target.username, device_id)
            bundle = target.bundles.get(device_id)
            if bundle is not None:
                # Keep the old states only if they belong to the same device keys: a
                # PreKeyMessage sent on them may still be on its way to us.
                keep = record is not None and any(
                    p.constant_time_equal(state.remote_identity_key, certificate.identity_key)
                    for state in record.states
                )
                record = SessionRecord.initiate(
                    own_device, bundle, existing=record if keep else None, rng=self._rng
                )
            elif record is None:
                raise SealpostError(
                    ErrorCode.NO_SESSION, f"no session with {target.username} device {device_id}"
                )
            try:
                payload = record.encrypt(content)
            except ProtocolError as exc:
                raise SealpostError.from_protocol(
                    exc, f"{target.username} device {device_id}"
                ) from None
            self.store.save_session(target.username, device_id, record, now_ms)
            self.store.save_peer_device(target.username, certificate)
            messages[device_id] = DeviceMessage(device_id, certificate.registration_id, payload)
        return messages

    # --- receiving ----------------------------------------------------------------------

    async def receive(self, *, wait: float | None = 0.0) -> AsyncIterator[Event]:
        """Yield events as envelopes arrive.

        Stops once the server has sent QUEUE_EMPTY (everything queued while we were away
        has been handled) and then ``wait`` seconds pass without a frame; ``wait=None``
        never stops. Each envelope is stored before its event is yielded, and acknowledged
        with the others stored so far once no other push is waiting (one ACK for a burst).
        Before it stops, it waits (at most RECEIPT_SETTLE_TIMEOUT) for the receipts owed
        to be sent; what is not sent by then stays owed and goes out on a later run.
        """
        await self.connect()
        transport = self._relay()
        for event in await self._fetch_attachments():  # left pending by an earlier run
            yield event
        loop = asyncio.get_running_loop()
        drained = False
        quiet_since = loop.time()
        while True:
            # Once the backlog is through, only quiet ends the loop (even across a
            # reconnection); before that, wait as long as it takes. Either way it wakes
            # when a disappearing message is due, to delete it on time.
            drained = drained or transport.backlog_delivered
            quiet: float | None = None
            if drained and wait is not None:
                quiet = max(0.0, wait - (loop.time() - quiet_since))
            push = await transport.poll_push(_sooner(quiet, self._seconds_to_next_expiry()))
            if push is None:
                await self._flush_acks()
                self.purge_expired()
                if quiet is not None and loop.time() - quiet_since >= (wait or 0.0):
                    break
                continue
            for event in await self.handle_push(push):
                yield event
            quiet_since = loop.time()
        await self._flush_acks()
        await self._settle_receipts()

    async def handle_push(self, push: Push) -> list[Event]:
        """Process one pushed frame (what ``receive()`` does per frame)."""
        events: list[Event] = []
        match push:
            case Deliver():
                events = self._process_deliver(push)
                if push.seq != 0:  # seq 0: an ephemeral envelope, never stored, never acked
                    self._unacked.append(push.seq)
                # ACKs are batched: one for every envelope stored so far, sent once no other
                # push is waiting (a burst is over), ACK_BATCH are owed, or before anything
                # that may take long (looking up a group, downloading a file).
                if (
                    len(self._unacked) >= ACK_BATCH
                    or self._relay().queued_pushes == 0
                    or self.groups.fetch_due
                    or self._downloads_due()
                ):
                    await self._flush_acks()
                await self.groups.fetch_pending()  # groups first heard of in this envelope
                events.extend(await self._fetch_attachments())  # after the ACK: may be long
                self.purge_expired()
            case QueueEmpty():
                await self._flush_acks()
            case Notice() if push.kind == NoticeKind.PREKEYS_LOW:
                try:
                    await self._top_up_prekeys(force=True)
                except SealpostError as exc:
                    log.warning("could not top up prekeys: %s", exc)
            case Notice():
                log.info("ignoring notice of unknown kind %d", push.kind)
        self._receipts_due()
        return events

    async def _flush_acks(self) -> None:
        """Acknowledge every envelope stored and not yet acknowledged, in one ACK. Best
        effort: one lost with its connection comes again, and is dropped as a duplicate
        (and acknowledged then)."""
        seqs, self._unacked = self._unacked, []
        transport = self._transport
        if seqs and transport is not None:
            await transport.ack(seqs)

    def _downloads_due(self) -> bool:
        return any(i not in self._downloads_deferred for i in self.store.pending_downloads())

    def _process_deliver(self, frame: Deliver) -> list[Event]:
        """Decrypt, store and commit one envelope; the ACK follows.

        One BEGIN IMMEDIATE transaction from loading the session to storing the message:
        synchronous, so no task on this loop interleaves, and holding SQLite's write lock,
        so a second process on the same home waits instead of decrypting the same envelope
        from the same state. The events are returned only once the commit succeeded.
        """
        with self.store.transaction():
            if self.groups.is_group_payload(frame.payload):
                return self.groups.receive(frame)
            return self._decrypt_and_store(frame)

    def _decrypt_and_store(self, frame: Deliver) -> list[Event]:
        sender, device = frame.sender, frame.sender_device
        self._forget_devices(sender, device)  # a device the cached list lacks: fetch again
        now = self._now_ms()
        record = self.store.load_session(sender, device) or SessionRecord()
        try:
            # The account key is checked below, against the identity store, so that a
            # changed key can be accepted and flagged instead of refused.
            result = record.decrypt(
                frame.payload, self.store.device_keys(), self.store, None, rng=self._rng
            )
            if result.sender_certificate is not None:
                self._check_new_session(frame, result)
        except ProtocolError as exc:
            if exc.code is ErrorCode.DUPLICATE_MESSAGE:
                log.debug("dropping a duplicate from %s device %d", sender, device)
                return []
            log.info("undecryptable envelope %d from %s: %s", frame.seq, sender, exc.code.slug)
            return self._store_undecryptable(frame, exc.code, now)

        content: Content | None = None
        content_error = ErrorCode.INTERNAL
        try:
            content = decode_content(result.plaintext)
        except ProtocolError as exc:
            content_error = exc.code
        # A disappearing message is processed as what it wraps, then given its expiry: the
        # receiver's clock starts now, a copy of what our other device sent at its sent_at.
        timer = 0
        if content is not None:
            content, timer = disappearing_.unwrap(content)
        expires: int | None = None
        if timer and content is not None:
            copy = isinstance(content, SentTranscript | SentContent)
            expires = disappearing_.expires_at(content.sent_at_ms if copy else now, timer)
        own_account = sender == self.username
        owe_receipt = (
            isinstance(content, Text | Attachment) and not own_account and self.sending_receipts
        )
        media: list[Event] | None = None  # attachments, timers, typing: their events

        check = IdentityCheck.SAME
        message_id: int | None = None
        changes: list[StatusChange] = []
        imported: int | None = None
        group_events: list[Event] = []
        with self.store.transaction():
            if result.sender_certificate is not None and result.sender_account_key is not None:
                check = self.store.observe_identity(sender, result.sender_account_key, now)
                self.store.save_peer_device(sender, result.sender_certificate)
            self.store.save_session(sender, device, record, now)
            if result.consumed_one_time_prekey_id is not None:
                self.store.delete_one_time_prekeys([result.consumed_one_time_prekey_id])
            if result.consumed_kem_prekey_id is not None:
                self.store.delete_kem_prekeys([result.consumed_kem_prekey_id])
            match content:
                case Text():
                    message_id = self.store.add_incoming_text(
                        sender,
                        device,
                        content.body,
                        content.sent_at_ms,
                        frame.server_time_ms,
                        now,
                        frame.seq,
                    )
                    if owe_receipt:  # in this transaction: a crash cannot lose it
                        self.store.add_pending_receipts(
                            sender, RECEIPT_DELIVERED, [content.sent_at_ms], now
                        )
                case SentTranscript() if own_account:
                    message_id = self.store.add_outgoing_text(
                        content.destination,
                        device,
                        content.body,
                        content.sent_at_ms,
                        status=STATUS_SENT,
                        received_at_ms=now,
                    )
                case HistoryChunk() if own_account:
                    imported = self._take_history_chunk(content, device, now)
                case SentTranscript() | HistoryChunk():
                    log.info(
                        "ignoring a %s from %s device %d: only our own devices send those",
                        type(content).__name__,
                        sender,
                        device,
                    )
                case Receipt() if own_account:
                    log.debug("ignoring a receipt from our own device %d", device)
                case Receipt():
                    changes = self.store.apply_receipt(
                        sender, RECEIPT_STATUS[content.kind], content.message_sent_at_ms
                    )
                case SenderKeyDistribution() | GroupUpdate():  # pairwise group traffic
                    group_events = self.groups.take_pairwise(frame, content, now)
                case Attachment() | SentContent() | TimerUpdate() | Typing():
                    message_id, media = self._take_media(content, frame, expires, now)
                    if owe_receipt and message_id is not None:
                        self.store.add_pending_receipts(
                            sender, RECEIPT_DELIVERED, [content.sent_at_ms], now
                        )
                case None if content_error is ErrorCode.UNKNOWN_TYPE:
                    log.debug(
                        "envelope %d from %s device %d: content this client does not know; "
                        "acknowledged, not stored",
                        frame.seq,
                        sender,
                        device,
                    )
                case None:
                    message_id = self.store.add_undecryptable(
                        sender, device, content_error, frame.server_time_ms, now, frame.seq
                    )
            if expires is not None and message_id is not None:
                self.store.set_message_expiry(message_id, expires, timer)

        events: list[Event] = []
        if check is IdentityCheck.CHANGED:
            events.append(IdentityChanged(sender, device, frame.server_time_ms))
        events.extend(
            MessageStatusChanged(sender, change.message_id, change.status) for change in changes
        )
        if imported is not None:
            events.append(HistoryImported(imported))
        events.extend(group_events)
        if media is not None:
            if owe_receipt and message_id is not None:
                self._receipts_owed = True
                self._owed_counts[sender] = self._owed_counts.get(sender, 0) + 1
            events.extend(media)
            return events
        if message_id is None:
            return events
        if isinstance(content, SentTranscript):
            events.append(
                SentByMe(
                    content.destination,
                    content.body,
                    content.sent_at_ms,
                    device,
                    message_id,
                    expires_at_ms=expires,
                )
            )
            return events
        if isinstance(content, Text):
            if owe_receipt:
                self._receipts_owed = True
                self._owed_counts[sender] = self._owed_counts.get(sender, 0) + 1
            events.append(
                MessageReceived(
                    sender,
                    device,
                    content.body,
                    content.sent_at_ms,
                    frame.server_time_ms,
                    frame.seq,
                    message_id,
                    expires_at_ms=expires,
                )
            )
        else:
            events.append(
                UndecryptableMessage(
                    sender, device, content_error, frame.server_time_ms, frame.seq, message_id
                )
            )
        return events

    def _take_history_chunk(self, chunk: HistoryChunk, device: int, now_ms: int) -> int | None:
        """Keep one HISTORY chunk from our own ``device``; once every chunk of its transfer
        is here (in any order, duplicates ignored), import the records and return how many
        were added. Runs in the envelope's transaction. History is taken only by a device
        linked with history to follow, and only once."""
        transfer = chunk.transfer_id
        if not self.store.history_expected():
            log.info("history chunk from our device %d: none expected; dropped", device)
            return None
        if self.store.history_transfer_done(transfer):
            log.debug("history chunk %d of a transfer already imported; dropped", chunk.index)
            return None
        held = self.store.history_chunks(transfer)
        if held and held[0].total != chunk.total:
            log.warning(
                "history chunk %d says %d chunks, earlier ones %d; dropped",
                chunk.index,
                chunk.total,
                held[0].total,
            )
            return None
        if not self.store.add_history_chunk(
            transfer, chunk.index, chunk.total, device, chunk.records, now_ms
        ):
            return None  # a duplicate
        held = self.store.history_chunks(transfer)
        if len(held) < chunk.total:
            log.debug("history: %d of %d chunks", len(held), chunk.total)
            return None
        records = [record for stored in held for record in stored.records]
        imported = self.store.add_history_messages(records, device, now_ms)
        self.store.finish_history_transfer(transfer, imported, now_ms)
        log.info("imported %d of %d history records from device %d", imported, len(records), device)
        return imported

    def _check_new_session(self, frame: Deliver, result: Decrypted) -> None:
        """A PreKeyMessage set up a session: it must come from the device the relay names.
        (Its certificate's signature by the sender's account key was checked by the
        protocol before decryption.)"""
        certificate = result.sender_certificate
        account_key = result.sender_account_key
        assert certificate is not None and account_key is not None  # noqa: S101 (by contract)
        if certificate.device_id != frame.sender_device:
            raise ProtocolError(
                ErrorCode.INVALID_VALUE,
                f"certificate of device {certificate.device_id} on an envelope from device "
                f"{frame.sender_device}",
            )
        if frame.sender == self.username and not p.constant_time_equal(
            account_key, self.account_key
        ):
            raise ProtocolError(
                ErrorCode.UNTRUSTED_IDENTITY, "a message from our own account under another key"
            )

    def _store_undecryptable(self, frame: Deliver, code: ErrorCode, now_ms: int) -> list[Event]:
        message_id = self.store.add_undecryptable(
            frame.sender, frame.sender_device, code, frame.server_time_ms, now_ms, frame.seq
        )
        if message_id is None:  # recorded on an earlier delivery of this envelope
            return []
        return [
            UndecryptableMessage(
                frame.sender, frame.sender_device, code, frame.server_time_ms, frame.seq, message_id
            )
        ]

    # --- receipts -----------------------------------------------------------------------

    async def mark_read(self, username: str) -> int:
        """Mark every unread incoming message from ``username`` read, and send them one
        READ receipt (per 100 messages) unless receipts are off. Returns how many messages
        were marked.

        The local change and the receipts owed commit together first; then this waits (at
        most RECEIPT_SETTLE_TIMEOUT) for the receipts to go out. A receipt that cannot be
        sent now stays owed and goes out on a later run, so only a failure to connect is
        raised.
        """
        username = _normalize(username)
        # No receipts to our own account: those are copies of what our other devices sent.
        owe = username != self.username and self.sending_receipts
        with self.store.transaction():
            marked = self.store.mark_read(username)
            sent_at = [sent_at for _, sent_at in marked if sent_at is not None]
            if owe and sent_at:
                self.store.add_pending_receipts(username, RECEIPT_READ, sent_at, self._now_ms())
        if owe and sent_at:
            self._receipts_owed = True
            await self.connect()
            await self._settle_receipts()
        return len(marked)

    def _receipts_due(self) -> None:
        """After each push: start sending the receipts owed once the push queue is
        momentarily empty (a burst is over), or at once when a sender is owed a full
        receipt's worth."""
        if not self._receipts_owed:
            return
        transport = self._transport
        idle = transport is None or transport.queued_pushes == 0
        if idle or max(self._owed_counts.values(), default=0) >= MAX_RECEIPT_ITEMS:
            self._schedule_receipts()

    def _schedule_receipts(self) -> None:
        """Start the background task that sends what ``pending_receipts`` holds, or have
        the running one go round once more (it may have read the table already)."""
        if self._closed:
            return
        self._receipts_owed = False
        self._owed_counts.clear()
        task = self._receipt_task
        if task is not None and not task.done():
            self._receipts_again = True
            return
        self._receipts_again = False
        self._receipt_task = asyncio.create_task(self._receipt_loop(), name="sealpost-receipts")

    async def _receipt_loop(self) -> None:
        while True:
            self._receipts_again = False
            try:
                await self._flush_receipts()
            except SealpostError as exc:  # e.g. the transport closed for good
                log.info("receipts not sent: %s", exc)
                return
            except Exception:  # a bug: report it, and keep receiving
                log.exception("sending receipts failed")
                return
            if not self._receipts_again:
                return

    async def _settle_receipts(self) -> None:
        """Have everything owed sent (including what waited for a trust() or a server
        that was away), waiting at most RECEIPT_SETTLE_TIMEOUT. Never raises: what is
        not sent stays owed, or in the outbox."""
        if self._receipts_owed or self.store.pending_receipt_counts():
            self._schedule_receipts()
        task = self._receipt_task
        if task is None or task.done():
            return
        # asyncio.wait neither cancels the task on timeout nor raises if close() cancels it.
        done, _ = await asyncio.wait({task}, timeout=RECEIPT_SETTLE_TIMEOUT)
        if not done:
            log.info("receipts still on their way after %.0f s", RECEIPT_SETTLE_TIMEOUT)

    async def _flush_receipts(self) -> None:
        """Send every receipt owed: per peer, one message per kind and 100 messages named.

        Receipts to a peer whose identity key changed wait until ``trust()``. A failure
        that may pass (no connection, a server error) keeps them owed; a refusal that will
        not (the account is gone) drops them.
        """
        if not self.sending_receipts:
            return  # held, not dropped: off for this object only (set_receipts drops them)
        # Not under _send_lock: that lock keeps texts in order, and a receipt waiting for
        # its SEND_OK must not hold a text up. Only this task sends receipts, and sessions
        # are read, advanced and written synchronously, so sharing them with a concurrent
        # send_text() is safe (at worst both start a session with a new device; the older
        # one is archived and still decrypts).
        by_peer: dict[str, list[PendingReceipt]] = {}
        for receipt in self.store.pending_receipts():
            by_peer.setdefault(receipt.peer, []).append(receipt)
        for peer, receipts in by_peer.items():
            identity = self.store.identity(peer)
            if identity is not None and identity.changed:
                log.info("receipts to %s wait until their new key is trusted", peer)
                continue
            try:
                await self._send_receipts(peer, receipts)
            except SealpostError as exc:
                if _receipts_may_wait(exc):
                    log.info("receipts to %s stay owed: %s", peer, exc)
                else:
                    dropped = self.store.discard_pending_receipts(peer)
                    log.warning("dropped %d receipts to %s: %s", dropped, peer, exc)

    async def _send_receipts(self, peer: str, receipts: list[PendingReceipt]) -> None:
        """Encrypt and send ``receipts`` (all owed to ``peer``) to ``peer``'s devices only.

        The device list is the one we know (the relay corrects it with DEVICE_MISMATCH, as
        for any send); only an account we know no device of is looked up first. Each
        receipt commits with its sessions, its outbox entry and the deletion of the rows
        it covers in one transaction, so it is encrypted exactly once.
        """
        certificates = await self._known_devices(peer)
        if not certificates:
            raise SealpostError(ErrorCode.UNKNOWN_DEVICE, f"{peer} has no devices")
        bundles = await self._claim_bundles(peer, certificates)
        batches: list[tuple[ReceiptKind, list[PendingReceipt]]] = []
        for kind in (ReceiptKind.DELIVERED, ReceiptKind.READ):
            of_kind = [receipt for receipt in receipts if receipt.kind == kind]
            for start in range(0, len(of_kind), MAX_RECEIPT_ITEMS):
                batches.append((kind, of_kind[start : start + MAX_RECEIPT_ITEMS]))
        for kind, batch in batches:
            now = self._now_ms()
            with self.store.transaction():
                taken = self.store.take_pending_receipts(receipt.id for receipt in batch)
                if not taken:  # another process on this home sent them
                    continue
                receipt = Receipt(
                    kind,
                    tuple(item.message_sent_at_ms for item in taken),
                    self.store.next_sent_at(now),
                )
                content = encode_content(receipt, hide_length=True)
                target = _Target(peer, certificates, bundles)
                messages = self._encrypt_for(target, content, now)
                frame = Send(0, peer, tuple(messages.values()))
                entry_id = self.store.add_outbox(None, peer, content, frame, now)
            bundles = {}  # the sessions exist now: a bundle is used once
            entry = self.store.outbox_entry(entry_id)
            if entry is not None:
                await self._dispatch(entry)
            log.debug("sent a %s receipt for %d messages to %s", kind.name, len(taken), peer)

    # --- prekeys ------------------------------------------------------------------------

    async def _maintain_prekeys(self) -> None:
        now = self._now_ms()
        self.store.purge_retired_prekeys(now)
        current = self.store.current_signed_prekey()
        if current is None or now - current.created_at_ms >= SIGNED_PREKEY_MAX_AGE_MS:
            await self.rotate_prekeys()
        await self._top_up_prekeys(force=False)

    async def _top_up_prekeys(self, force: bool) -> None:
        """Upload 100 one-time prekeys of each kind that runs low: below the server's low
        watermark, or (``force``, after a PREKEYS_LOW notice) below 100, so that a second
        notice already answered uploads nothing. Never past the server's maximum."""
        api = self._server_api()
        counts = await api.prekey_counts()

        def wanted(have: int) -> int:
            if have >= (PREKEY_BATCH if force else counts.low_watermark):
                return 0
            return max(0, min(PREKEY_BATCH, counts.max_stored - have))

        one_time_count = wanted(counts.one_time_prekeys)
        kem_count = wanted(counts.kem_prekeys)
        if not one_time_count and not kem_count:
            return
        device = self.store.device_keys()
        one_time = [
            OneTimePreKeyPair.generate(key_id, self._rng)
            for key_id in self.store.next_key_ids("one_time", one_time_count)
        ]
        kem = [
            KemPreKeyPair.generate(device, key_id, last_resort=False, rng=self._rng)
            for key_id in self.store.next_key_ids("kem", kem_count)
        ]
        # Private halves first: the server may hand out a public half the moment it has it.
        with self.store.transaction():
            self.store.add_one_time_prekeys(one_time)
            self.store.add_kem_prekeys(kem, self._now_ms())
        try:
            await api.upload_prekeys(
                [pair.public.encode() for pair in one_time], [pair.public.encode() for pair in kem]
            )
        except SealpostError as exc:
            if _refused(exc):  # the server certainly holds none of them
                with self.store.transaction():
                    self.store.delete_one_time_prekeys(pair.public.key_id for pair in one_time)
                    self.store.delete_kem_prekeys(pair.public.key_id for pair in kem)
            raise
        log.info("uploaded %d one-time and %d KEM prekeys", len(one_time), len(kem))

    async def rotate_prekeys(self) -> None:
        """Replace the signed prekey and the last-resort KEM prekey.

        The replaced private keys stay for 7 days, for PreKeyMessages made from a bundle
        claimed before the rotation; ``connect()`` purges them afterwards.
        """
        api = self._server_api()
        device = self.store.device_keys()
        [signed_id] = self.store.next_key_ids("signed", 1)
        [kem_id] = self.store.next_key_ids("kem", 1)
        signed = SignedPreKeyPair.generate(device, signed_id, self._rng)
        last_resort = KemPreKeyPair.generate(device, kem_id, last_resort=True, rng=self._rng)
        now = self._now_ms()
        with self.store.transaction():
            self.store.add_signed_prekey(signed, now)
            self.store.add_kem_prekeys([last_resort], now)
        try:
            await api.put_signed_prekey(signed.public.encode())
        except SealpostError as exc:
            if _refused(exc):
                self.store.delete_signed_prekey(signed_id)
            raise
        self.store.retire_signed_prekeys(signed_id, now)
        await api.put_last_resort_kem_prekey(last_resort.public.encode())
        self.store.retire_last_resort_kem_prekeys(kem_id, now)
        self.store.purge_retired_prekeys(now)

    # --- identities ---------------------------------------------------------------------

    def identity(self, username: str) -> Identity | None:
        """What the identity store holds for ``username`` (None: never seen)."""
        return self.store.identity(_normalize(username))

    async def safety_number(self, username: str) -> SafetyNumber:
        """The safety number with ``username``, for comparing in person or by QR code.

        Uses the stored identity key; an account never seen before is looked up on the
        server first (and its key stored, as on first contact).
        """
        username = _normalize(username)
        config = self.config
        if username == config.username:
            raise SealpostError(
                ErrorCode.INVALID_VALUE, "a safety number needs another account than your own"
            )
        identity = self.store.identity(username)
        if identity is None:
            await self._fetch_devices(username)
            identity = self.store.identity(username)
        if identity is None:  # pragma: no cover - _fetch_devices stored it or raised
            raise SealpostError(ErrorCode.UNKNOWN_ACCOUNT, f"no identity key for {username}")
        return safety_number(config.username, self.account_key, username, identity.account_key)

    def trust(self, username: str, *, verified: bool = False) -> None:
        """Accept ``username``'s current identity key: clears the changed flag, so sending
        to them works again. ``verified=True`` also records that safety numbers matched."""
        username = _normalize(username)
        if not self.store.trust_identity(username, True if verified else None):
            raise SealpostError(
                ErrorCode.UNKNOWN_ACCOUNT,
                f"no identity key on record for {username}; send to them or look up "
                "the safety number first",
            )
        self._forget_devices(username)
        if self.store.pending_receipts(username):  # held while the key was not trusted
            self._receipts_owed = True

    # --- attachments, typing, disappearing messages -------------------------------------

    @property
    def typing(self) -> bool:
        """The stored ``typing`` setting (default on): off, this device sends no typing
        indicators and does not report other people's."""
        return self.store.typing_enabled()

    def set_typing(self, enabled: bool) -> None:
        self.store.set_typing_enabled(enabled)

    def timer(self, username: str) -> int:
        """The disappearing-messages timer of the conversation with ``username`` (0: off)."""
        return self.store.conversation_timer(_normalize(username))

    async def set_timer(self, username: str, seconds: int) -> int:
        """Set the conversation's disappearing-messages timer (0: off) and tell ``username``
        (and our other devices) with a TIMER content, which is stored as the "timer" notice
        ``message_id`` (returned). Afterwards texts and files to them disappear ``seconds``
        after they were sent (here) or arrived (there), and the server drops its copies by
        then too."""
        username = _normalize(username)
        if not 0 <= seconds <= MAX_TTL_SECONDS:
            raise SealpostError(
                ErrorCode.INVALID_VALUE, f"the timer must be 0 to {MAX_TTL_SECONDS} seconds"
            )
        device_id = self.config.device_id

        def record(sent_at_ms: int) -> int:
            self.store.set_conversation_timer(username, seconds, sent_at_ms)
            return self.store.add_timer_notice(
                username, "out", device_id, seconds, sent_at_ms, status=STATUS_PENDING
            )

        return await self._send_message(
            username,
            lambda sent_at_ms: TimerUpdate(seconds, sent_at_ms),
            record,
            disappearing=False,
        )

    async def send_typing(self, username: str, started: bool = True) -> bool:
        """Tell ``username`` that we started (or stopped) typing: an EPHEMERAL send, which
        the server never stores and passes only to their devices connected now. Best
        effort: only devices we already have a session with get it, a device mismatch is
        not corrected, and nothing is sent while the ``typing`` setting is off or their
        identity key changed. Returns whether the server took it."""
        username = _normalize(username)
        if not self.typing or username == self.username:
            return False
        identity = self.store.identity(username)
        if identity is None or identity.changed:
            return False
        await self.connect()
        certificates = {
            device_id: known.certificate
            for device_id, known in self.store.peer_devices(username).items()
            if self._has_usable_session(username, known.certificate)
        }
        if not certificates:
            return False
        now = self._now_ms()
        action = TypingAction.STARTED if started else TypingAction.STOPPED
        with self.store.transaction():
            content = encode_content(Typing(action, self.store.next_sent_at(now)))
            messages = self._encrypt_for(_Target(username, certificates, {}), content, now)
        frame = Send(0, username, tuple(messages.values()), SendFlags.EPHEMERAL)
        try:
            reply = await asyncio.wait_for(self._relay().request(frame), TYPING_TIMEOUT)
        except TimeoutError:
            return False
        if isinstance(reply, Error):
            log.info("typing indicator to %s refused: %s", username, reply.message)
        return isinstance(reply, SendOk)

    async def send_file(
        self,
        username: str,
        path: str | PathLike[str],
        *,
        content_type: str | None = None,
        voice: bool = False,
        caption: str = "",
        progress: files.Progress | None = None,
    ) -> int:
        """Encrypt the file at ``path`` with a fresh key, upload the blob (resuming after
        a lost connection), then send its pointer (ATTACHMENT, or EXPIRING while the
        conversation has a timer) to ``username`` and to our other devices. Returns the
        local message id (kind "attachment") once the server accepted the pointer.

        ``content_type`` defaults to a guess from the file name; ``progress(done, total)``
        is called with the blob bytes the server holds as the upload advances. Raises
        ATTACHMENT_TOO_LARGE above 100 MiB, and what ``send_text`` raises.

        While the conversation has a timer, the blob is announced with it as its
        ``ttl_seconds``: the server drops the file when the message disappears.
        """
        username = _normalize(username)
        source = _file_to_send(path)
        # Fail before a long upload, not after: an unknown account, a changed key.
        if username != self.username:
            await self._devices_for_sending(username)
        timer = self.store.conversation_timer(username)
        pointer = await self._upload_file(
            source,
            content_type=content_type,
            voice=voice,
            caption=caption,
            progress=progress,
            ttl_seconds=timer or None,
        )
        device_id = self.config.device_id
        where = str(source.resolve())

        def record(sent_at_ms: int) -> int:
            return self.store.add_attachment_message(
                username,
                "out",
                device_id,
                dataclasses.replace(pointer, sent_at_ms=sent_at_ms),
                state="sent",
                status=STATUS_PENDING,
                path=where,
            )

        return await self._send_message(
            username, lambda sent_at_ms: dataclasses.replace(pointer, sent_at_ms=sent_at_ms), record
        )

    async def _upload_file(
        self,
        source: Path,
        *,
        content_type: str | None,
        voice: bool,
        caption: str,
        progress: files.Progress | None,
        ttl_seconds: int | None,
    ) -> Attachment:
        """Encrypt ``source`` with a fresh key and upload the blob (resuming after a lost
        connection); the pointer to send, its ``sent_at_ms`` still 0. ``ttl_seconds``: a
        disappearing message's file, dropped by the server that long after the upload."""
        key = new_attachment_key(self._rng)
        temp = files.private_dir(self.home, files.TEMP_DIR)
        blob = await asyncio.to_thread(files.encrypt_file, source, key, temp)
        try:
            blob_id = await files.upload_blob(
                self._server_api(),
                blob,
                progress=progress,
                retry=self.transfer_retry,
                stats=self.upload_stats,
                ttl_seconds=ttl_seconds,
            )
        finally:
            files.remove_quietly(blob.path)
        return Attachment(
            blob_id=bytes.fromhex(blob_id),
            key=key,
            size=blob.size,
            digest=blob.digest,
            content_type=content_type or files.guess_content_type(source),
            sent_at_ms=0,
            flags=AttachmentFlags.VOICE if voice else AttachmentFlags.NONE,
            file_name=source.name,
            caption=caption,
        )

    def purge_expired(self) -> int:
        """Delete the disappearing messages whose time is up (and the files saved for
        them); returns how many. Runs on open, on every send and receive, and on a timer
        in ``receive()``; ``messages()`` calls it first, so it never lists one."""
        expired = self.store.purge_expired(self._now_ms())
        if expired.files:
            disappearing_.delete_saved_files(expired.files, self.home / files.DOWNLOADS_DIR)
        if expired.message_ids:
            log.info("%d disappearing message(s) expired", len(expired.message_ids))
        return len(expired.message_ids)

    def _seconds_to_next_expiry(self) -> float | None:
        due = self.store.next_expiry_ms()
        return None if due is None else max(0.0, (due - self._now_ms()) / 1000)

    def _take_media(
        self,
        content: Attachment | SentContent | TimerUpdate | Typing,
        frame: Deliver,
        expires: int | None,
        now_ms: int,
    ) -> tuple[int | None, list[Event]]:
        """Store an ATTACHMENT, SENT_CONTENT or TIMER in the envelope's transaction (a
        TYPING is only reported). Returns the message stored and the events to yield once
        it commits; an attachment's event comes after its download (``_fetch_attachments``,
        after the ACK)."""
        sender, device = frame.sender, frame.sender_device
        own_account = sender == self.username
        match content:
            case Typing():
                if own_account or not self.typing:
                    return None, []
                started = content.action is TypingAction.STARTED
                return None, [TypingChanged(sender, device, started, content.sent_at_ms)]
            case Attachment():
                message_id = self.store.add_attachment_message(
                    sender, "in", device, content, state="pending", status=STATUS_RECEIVED,
                    server_time_ms=frame.server_time_ms, received_at_ms=now_ms, seq=frame.seq,
                )  # fmt: skip
                return message_id, []
            case TimerUpdate():
                return self._take_timer(sender, sender, "in", content, frame, now_ms)
            case SentContent() if not own_account:
                log.info("ignoring a SENT_CONTENT from %s: only our own devices send those", sender)
                return None, []
            case SentContent(inner=TimerUpdate() as update):
                return self._take_timer(content.destination, sender, "out", update, frame, now_ms)
            case SentContent(inner=Attachment() as pointer):
                message_id = self.store.add_attachment_message(
                    content.destination, "out", device, pointer, state="pending",
                    status=STATUS_SENT, received_at_ms=now_ms,
                )  # fmt: skip
                event = SentByMe(
                    content.destination,
                    pointer.caption,
                    pointer.sent_at_ms,
                    device,
                    message_id,
                    file_name=pointer.file_name,
                    expires_at_ms=expires,
                )
                return message_id, [event]
        log.info("ignoring a %s from %s device %d", type(content).__name__, sender, device)
        return None, []

    def _take_timer(
        self,
        peer: str,
        by: str,
        direction: Direction,
        update: TimerUpdate,
        frame: Deliver,
        now_ms: int,
    ) -> tuple[int | None, list[Event]]:
        if not self.store.set_conversation_timer(peer, update.timer_seconds, update.sent_at_ms):
            log.info("a timer change older than the one in force for %s; ignored", peer)
            return None, []
        message_id = self.store.add_timer_notice(
            peer, direction, frame.sender_device, update.timer_seconds, update.sent_at_ms,
            status=STATUS_READ if direction == "in" else STATUS_SENT,
            server_time_ms=frame.server_time_ms, received_at_ms=now_ms, seq=frame.seq,
        )  # fmt: skip
        return message_id, [
            TimerChanged(peer, by, update.timer_seconds, update.sent_at_ms, message_id)
        ]

    async def _fetch_attachments(self) -> list[Event]:
        """Download, check and save every attachment still pending (this envelope's, or
        one an earlier run did not finish); one AttachmentReceived per incoming file. A
        download that fails for a reason that may pass stays pending for a later run."""
        events: list[Event] = []
        for message_id in self.store.pending_downloads():
            if message_id in self._downloads_deferred:
                continue
            event = await self._fetch_attachment(message_id)
            if event is not None:
                events.append(event)
        return events

    async def _fetch_attachment(self, message_id: int) -> AttachmentReceived | None:
        message = self.store.message(message_id)
        pointer = None if message is None else message.attachment
        if message is None or pointer is None or pointer.state != "pending":
            return None
        temp = files.private_dir(self.home, files.TEMP_DIR)
        downloads = files.private_dir(self.home, files.DOWNLOADS_DIR)
        blob_path = temp / f"{pointer.blob_id.hex()}.download"
        saved: Path | None = None
        failure: ErrorCode | None = None
        try:
            await files.download_blob(
                self._server_api(),
                pointer.blob_id.hex(),
                blob_size(pointer.size),
                blob_path,
                retry=self.transfer_retry,
            )
            decrypted = await asyncio.to_thread(
                files.decrypt_file, blob_path, pointer.key, pointer.size, pointer.digest, temp
            )
            try:
                name = files.safe_file_name(pointer.file_name, pointer.content_type)
                saved = files.save_download(decrypted, downloads, name)
            finally:
                files.remove_quietly(decrypted)
        except ProtocolError as exc:  # from the decryptor: always DECRYPT_FAILED
            log.warning("attachment %d from %s: %s", message_id, message.peer, exc.code.slug)
            failure = exc.code
        except SealpostError as exc:
            if files.transient(exc) or not isinstance(exc.code, ErrorCode):
                log.warning("attachment %d not downloaded yet: %s", message_id, exc)
                self._downloads_deferred.add(message_id)
                return None
            log.warning("attachment %d from %s: %s", message_id, message.peer, exc)
            failure = exc.code
        if saved is not None or failure is not None:
            files.remove_quietly(blob_path)  # else kept: the next try resumes from it
        with self.store.transaction():
            gone = self.store.message(message_id) is None  # it disappeared meanwhile
            if not gone:
                self.store.set_attachment_state(
                    message_id,
                    "saved" if saved is not None else "failed",
                    path=None if saved is None else str(saved),
                    failure=failure,
                )
        if gone:
            if saved is not None:
                disappearing_.delete_saved_files([str(saved)], downloads)
            return None
        if message.direction != "in":
            return None
        group = self.groups.store.message_group(message_id)
        return AttachmentReceived(
            from_=message.peer,
            device=message.sender_device,
            message_id=message_id,
            file_name=pointer.file_name,
            content_type=pointer.content_type,
            size=pointer.size,
            caption=message.text or "",
            voice=bool(pointer.flags & AttachmentFlags.VOICE),
            path=saved,
            code=failure,
            sent_at_ms=message.sent_at_ms or 0,
            server_time_ms=message.server_time_ms,
            expires_at_ms=message.expires_at_ms,
            group=None if group is None else group.hex(),
        )

    # --- history ------------------------------------------------------------------------

    def messages(self, peer: str | None = None, limit: int | None = None) -> list[StoredMessage]:
        """Local history, oldest first; only the conversation with ``peer`` if given.
        Disappearing messages whose time is up are deleted first, never listed."""
        self.purge_expired()
        return self.store.messages(None if peer is None else _normalize(peer), limit)


async def _wait_for_provisioning(api: Api, address: str, timeout: float) -> bytes:
    """Long-poll the provisioning address until the sealed message is there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise SealpostError(
                ErrorCode.LINK_EXPIRED,
                f"no device approved the link within {timeout:g} s; run link again for a new code",
            )
        try:
            sealed = await api.wait_for_provisioning(address, min(PROVISIONING_WAIT, remaining))
        except SealpostError as exc:
            if exc.code is ErrorCode.LINK_EXPIRED:
                raise SealpostError(
                    ErrorCode.LINK_EXPIRED,
                    "the link code expired before a device approved it; run link again "
                    "for a new code",
                ) from None
            if _may_pass(exc):
                log.info("waiting for the provisioning message: %s", exc)
                await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
                continue
            raise
        if sealed is not None:
            return sealed


async def _own_keys_for_linking(api: Api, username: str, link_token: str) -> AccountKeys:
    """The account's keys and device list, for a device that has no device token yet: the
    server takes the link token as the bearer for its own account's keys. (A server that
    serves keys to anyone is asked without credentials if it refuses the link token.)"""
    refused = (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN)
    try:
        return await api.account_keys(username, bearer=link_token)
    except SealpostError as exc:
        if exc.code not in refused:
            raise
        first = exc
    try:
        return await api.account_keys(username)
    except SealpostError as exc:
        if exc.code not in refused:
            raise
    raise SealpostError(
        first.code,
        f"the server does not let this device read {username}'s device list with its link "
        f"token: {first.message}",
        status=first.status,
    ) from None


def _file_to_send(path: str | PathLike[str]) -> Path:
    """``path`` as a file that may be sent: readable, a regular file, at most 100 MiB."""
    source = Path(path)
    try:
        size = source.stat().st_size
    except OSError as exc:
        raise SealpostError(
            ErrorCode.INVALID_VALUE, f"cannot read {source}: {exc.strerror}"
        ) from None
    if not source.is_file():
        raise SealpostError(ErrorCode.INVALID_VALUE, f"{source} is not a file")
    if size > MAX_ATTACHMENT_BYTES:
        raise SealpostError(
            ErrorCode.ATTACHMENT_TOO_LARGE,
            f"{source.name} is {size} bytes; the limit is {MAX_ATTACHMENT_BYTES}",
        )
    return source


def _may_pass(exc: SealpostError) -> bool:
    """A failure worth waiting out while polling: no connection, a busy or failing server."""
    return exc.code in (
        LocalErrorCode.UNREACHABLE,
        ErrorCode.SERVER_BUSY,
        ErrorCode.RATE_LIMITED,
    ) or (exc.status is not None and exc.status >= 500)


def _base64url(text: str) -> bytes | None:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None


def _check_served_devices(
    username: str, keys: AccountKeys, newest_seen_version: int
) -> tuple[SignedDeviceList, dict[int, DeviceCertificate], dict[int, str]]:
    """Check what the server says ``username``'s devices are against the account's signed
    device list (``protocol.devicelist.check_devices``). Returns the list, the accepted
    certificates by device id and the refused device ids with the reason. Raises for a
    missing or forged list, and for one older than ``newest_seen_version``."""
    if keys.device_list is None:
        raise SealpostError(
            LocalErrorCode.BAD_RESPONSE,
            f"the server sent no signed device list for {username}; nothing can be "
            "encrypted to devices the account does not vouch for",
        )
    try:
        device_list = SignedDeviceList.decode(keys.device_list)
    except ProtocolError as exc:
        raise SealpostError.from_protocol(exc, f"{username}'s device list") from None
    refused: dict[int, str] = {}
    served: list[DeviceCertificate] = []
    for entry in keys.devices:
        try:
            certificate = DeviceCertificate.decode(entry.certificate)
        except ProtocolError:
            refused[entry.device_id] = "served with a malformed certificate"
            continue
        if (certificate.device_id, certificate.registration_id) != (
            entry.device_id,
            entry.registration_id,
        ):
            refused[entry.device_id] = (
                f"served with the certificate of device {certificate.device_id} "
                f"(registration {certificate.registration_id})"
            )
            continue
        served.append(certificate)
    try:
        checked = check_devices(
            keys.identity_key, username, device_list, served, newest_seen_version
        )
    except ProtocolError as exc:
        if exc.code is ErrorCode.INVALID_VALUE:
            raise SealpostError(
                ErrorCode.INVALID_VALUE,
                f"{exc.message}: the server is showing an old device list (a replay from "
                f"before a change?); not sending to {username}",
            ) from None
        raise SealpostError.from_protocol(exc, f"{username}'s device list") from None
    by_id = {certificate.device_id: certificate for certificate in served}
    for device_id in checked.refused:
        try:
            by_id[device_id].verify(keys.identity_key)
        except ProtocolError:
            refused[device_id] = f"not certified by {username}'s account key"
        else:
            refused[device_id] = f"not in {username}'s signed device list"
    accepted = {certificate.device_id: certificate for certificate in checked.accepted}
    return device_list, dict(sorted(accepted.items())), dict(sorted(refused.items()))


def _sooner(first: float | None, second: float | None) -> float | None:
    """The shorter of two timeouts (None: no limit)."""
    if first is None:
        return second
    return first if second is None else min(first, second)


def _normalize(username: str) -> str:
    try:
        return normalize_username(username)
    except ProtocolError as exc:
        raise SealpostError.from_protocol(exc) from None


def _receipts_may_wait(exc: SealpostError) -> bool:
    """Whether receipts that failed with ``exc`` should stay owed (it may pass) rather
    than be dropped (the server refused for good: an account or device that is gone)."""
    if exc.code in (ErrorCode.RATE_LIMITED, ErrorCode.SERVER_BUSY, ErrorCode.QUEUE_FULL):
        return True
    if exc.code in (ErrorCode.UNKNOWN_ACCOUNT, ErrorCode.UNKNOWN_DEVICE):
        return False
    return not _refused(exc)


def _refused(exc: SealpostError) -> bool:
    """True when the server definitely answered no (a 4xx): nothing of the request stuck."""
    return exc.status is not None and 400 <= exc.status < 500
