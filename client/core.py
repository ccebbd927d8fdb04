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
* Forward compatibility: content of a type (or receipt kind) this client does not know is
  a newer client's, not damage. Its session state is kept, nothing is stored, nothing is
  yielded, it is logged at debug level and acknowledged. (Storing it as undecryptable
  would flood the history with entries for, say, typing indicators.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from protocol import primitives as p
from protocol.content import (
    MAX_RECEIPT_ITEMS,
    Content,
    Receipt,
    ReceiptKind,
    Text,
    decode_content,
    encode_content,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Deliver,
    DeviceMessage,
    DeviceMismatch,
    Error,
    Notice,
    NoticeKind,
    QueueEmpty,
    Send,
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
from protocol.limits import MAX_PREKEYS_PER_UPLOAD, MAX_TEXT_BYTES
from protocol.safety import SafetyNumber, safety_number
from protocol.session import Decrypted, SessionRecord

from .api import Api, DeviceUpload, normalize_server_url
from .errors import LocalErrorCode, SealpostError
from .store import (
    RECEIPT_DELIVERED,
    RECEIPT_READ,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_READ,
    STATUS_SENT,
    Config,
    Identity,
    IdentityCheck,
    OutboxEntry,
    PendingReceipt,
    StatusChange,
    Store,
    StoredMessage,
)
from .transport import Backoff, Connector, Push, Transport, websocket_connector

log = logging.getLogger(__name__)

DEVICE_ID = 1  # sign-up creates device 1; linking further devices is not built yet
DEFAULT_DEVICE_NAME = "Python client"
PREKEY_BATCH = MAX_PREKEYS_PER_UPLOAD  # 100 of each kind at sign-up and per top-up
MAX_MISMATCH_ROUNDS = 3
SIGNED_PREKEY_MAX_AGE_MS = 7 * 24 * 3600 * 1000  # rotated on connect once this old
RECEIPT_SETTLE_TIMEOUT = 10.0  # how long receive() and mark_read() wait for receipts to go
RECEIPT_STATUS = {ReceiptKind.DELIVERED: STATUS_DELIVERED, ReceiptKind.READ: STATUS_READ}


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


Event = MessageReceived | UndecryptableMessage | IdentityChanged | MessageStatusChanged


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
        self._send_lock = asyncio.Lock()
        self._set_up = False  # prekeys looked after and outbox flushed on this connection
        self._closed = False
        self.send_receipts = send_receipts
        self._receipt_task: asyncio.Task[None] | None = None
        self._receipts_again = False  # more became due while the task was running
        self._receipts_owed = False  # pending receipts written since the task last looked
        self._owed_counts: dict[str, int] = {}  # per sender, since the task last looked

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
    ) -> None:
        """Create the account and this device (device 1) on ``server_url``.

        Generates the account identity key, the device keys and certificate, a signed
        prekey, a last-resort KEM prekey and 100 one-time prekeys of each kind, signs up,
        and stores it all (with the server URL and the device token) in one transaction.
        """
        if self.store.config() is not None:
            raise SealpostError(
                LocalErrorCode.ALREADY_REGISTERED,
                f"{self.home} already holds the account {self.username!r}",
            )
        username = _normalize(username)
        server_url = normalize_server_url(server_url)
        rng = self._rng
        account = AccountIdentity.generate(rng)
        device = DeviceKeys.create(account, DEVICE_ID, rng)
        [signed_id] = self.store.next_key_ids("signed", 1)
        kem_ids = self.store.next_key_ids("kem", PREKEY_BATCH + 1)
        one_time_ids = self.store.next_key_ids("one_time", PREKEY_BATCH)
        signed = SignedPreKeyPair.generate(device, signed_id, rng)
        last_resort = KemPreKeyPair.generate(device, kem_ids[0], last_resort=True, rng=rng)
        kem = [KemPreKeyPair.generate(device, i, last_resort=False, rng=rng) for i in kem_ids[1:]]
        one_time = [OneTimePreKeyPair.generate(i, rng) for i in one_time_ids]
        upload = DeviceUpload(
            certificate=device.certificate.encode(),
            name=device_name,
            signed_prekey=signed.public.encode(),
            last_resort_kem_prekey=last_resort.public.encode(),
            one_time_prekeys=[pair.public.encode() for pair in one_time],
            kem_prekeys=[pair.public.encode() for pair in kem],
        )
        async with Api(server_url, transport=self._http_transport) as api:
            registration = await api.create_account(username, password, account.public_key, upload)
        if registration.username != username or registration.device_id != DEVICE_ID:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE,
                f"sign-up answered for {registration.username!r} device "
                f"{registration.device_id}, not {username!r} device {DEVICE_ID}",
            )
        self.store.save_registration(
            Config(server_url, username, DEVICE_ID, registration.token),
            account,
            device,
            signed,
            last_resort,
            one_time,
            kem,
            self._now_ms(),
        )

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
        async with self._send_lock:
            for entry in self.store.outbox():
                try:
                    await self._dispatch(entry)
                except SealpostError as exc:
                    what = entry.message_id or "(a receipt)"
                    log.warning("message %s to %s failed: %s", what, entry.recipient, exc)

    # --- sending ------------------------------------------------------------------------

    async def send_text(self, username: str, text: str) -> int:
        """Send ``text`` to every device of ``username`` (and to this account's other
        devices); return the local message id once the server has accepted it.

        Raises SealpostError: UNTRUSTED_IDENTITY if their identity key changed and was not
        yet accepted with ``trust()``; UNKNOWN_ACCOUNT; TOO_LARGE; DEVICE_MISMATCH if the
        device list kept changing for three rounds; whatever else the server refuses.
        """
        username = _normalize(username)
        if not text:
            raise SealpostError(ErrorCode.INVALID_VALUE, "the message text is empty")
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise SealpostError(
                ErrorCode.TOO_LARGE,
                f"the message is {len(text.encode('utf-8'))} bytes; the limit is {MAX_TEXT_BYTES}",
            )
        config = self.config
        await self.connect()
        async with self._send_lock:
            sent_at_ms = self.store.next_sent_at(self._now_ms())
            try:
                content = encode_content(Text(text, sent_at_ms), hide_length=True)
            except ProtocolError as exc:
                raise SealpostError.from_protocol(exc) from None

            # Network first (device lists, bundles); then one synchronous transaction.
            targets: list[_Target] = []
            own_name = config.username
            certificates = await self._fetch_devices(username)
            if username != own_name and not certificates:
                raise SealpostError(
                    ErrorCode.UNKNOWN_DEVICE, f"{username} has no devices to send to"
                )
            if certificates:
                bundles = await self._claim_bundles(username, certificates)
                targets.append(_Target(username, certificates, bundles))
            if username != own_name:
                own = await self._fetch_devices(own_name)
                if own:  # our other devices get a copy; skipped when this is the only one
                    bundles = await self._claim_bundles(own_name, own)
                    targets.append(_Target(own_name, own, bundles))

            now = self._now_ms()
            entry_ids: list[int] = []
            with self.store.transaction():
                message_id = self.store.add_outgoing_text(
                    username, config.device_id, text, sent_at_ms
                )
                for target in targets:
                    messages = self._encrypt_for(target, content, now)
                    frame = Send(0, target.username, tuple(messages.values()))
                    entry_ids.append(
                        self.store.add_outbox(message_id, target.username, content, frame, now)
                    )
                if not targets:  # a note to self on an account with only this device
                    self.store.set_message_status(message_id, STATUS_SENT)

            for entry_id in entry_ids:
                entry = self.store.outbox_entry(entry_id)
                if entry is None:
                    continue
                try:
                    await self._dispatch(entry)
                except SealpostError:
                    if entry.recipient == username:
                        if self.store.outbox_entry(entry.id) is None:  # failed for good:
                            # our other devices must not hear of a message never sent.
                            for other in entry_ids:
                                self.store.delete_outbox(other)
                        raise
                    log.warning("copy of message %d for our other devices failed", message_id)
            return message_id

    async def _dispatch(self, entry: OutboxEntry) -> None:
        """Send one outbox entry until the server accepts it, correcting its device set
        on DEVICE_MISMATCH (at most MAX_MISMATCH_ROUNDS sends)."""
        frame = entry.frame
        primary = self._is_primary(entry)
        for attempt in range(1, MAX_MISMATCH_ROUNDS + 1):
            reply = await self._relay().request(frame)
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
                    try:
                        frame = await self._correct_devices(entry, frame, reply)
                    except SealpostError:
                        self._give_up(entry, primary)
                        raise
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
        self, entry: OutboxEntry, frame: Send, mismatch: DeviceMismatch
    ) -> Send:
        """Answer a DEVICE_MISMATCH: forget extra devices, restart sessions with stale
        ones, start sessions with missing ones; keep every other ciphertext as it was.
        The corrected frame replaces the outbox entry in the same transaction as the new
        sessions."""
        recipient = frame.recipient
        certificates = await self._fetch_devices(recipient)
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
            corrected = Send(0, recipient, tuple(messages[d] for d in sorted(messages)))
            if not corrected.messages:
                raise SealpostError(ErrorCode.UNKNOWN_DEVICE, f"{recipient} has no devices left")
            self.store.replace_outbox_frame(entry.id, corrected)
        return corrected

    async def _fetch_devices(self, username: str) -> dict[int, DeviceCertificate]:
        """The account's devices, each certificate verified against its account key, after
        checking that key against the identity store (our own device left out)."""
        config = self.config
        keys = await self._server_api().account_keys(username)
        if keys.username != username:
            raise SealpostError(
                LocalErrorCode.BAD_RESPONSE, f"asked for {username!r}, got {keys.username!r}"
            )
        self._check_identity_for_sending(username, keys.identity_key)
        certificates: dict[int, DeviceCertificate] = {}
        for entry in keys.devices:
            where = f"{username} device {entry.device_id}"
            try:
                certificate = DeviceCertificate.decode(entry.certificate)
                certificate.verify(keys.identity_key)
            except ProtocolError as exc:
                raise SealpostError.from_protocol(exc, f"certificate of {where}") from None
            if (certificate.device_id, certificate.registration_id) != (
                entry.device_id,
                entry.registration_id,
            ):
                raise SealpostError(
                    ErrorCode.INVALID_VALUE,
                    f"{where}: the certificate is for device {certificate.device_id} "
                    f"(registration {certificate.registration_id})",
                )
            certificates[certificate.device_id] = certificate
        if username == config.username:
            certificates.pop(config.device_id, None)
        return dict(sorted(certificates.items()))

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
        never stops. Each envelope is stored and acknowledged before its event is yielded.
        Before it stops, it waits (at most RECEIPT_SETTLE_TIMEOUT) for the receipts owed
        to be sent; what is not sent by then stays owed and goes out on a later run.
        """
        await self.connect()
        transport = self._relay()
        drained = False
        while True:
            # Once the backlog is through, only quiet ends the loop (even across a
            # reconnection); before that, wait as long as it takes.
            drained = drained or transport.backlog_delivered
            push = await transport.poll_push(wait if drained else None)
            if push is None:
                break
            for event in await self.handle_push(push):
                yield event
        await self._settle_receipts()

    async def handle_push(self, push: Push) -> list[Event]:
        """Process one pushed frame (what ``receive()`` does per frame)."""
        events: list[Event] = []
        match push:
            case Deliver():
                events = self._process_deliver(push)
                if push.seq != 0:  # seq 0: an ephemeral envelope, never stored, never acked
                    await self._relay().ack([push.seq])
            case Notice() if push.kind == NoticeKind.PREKEYS_LOW:
                try:
                    await self._top_up_prekeys(force=True)
                except SealpostError as exc:
                    log.warning("could not top up prekeys: %s", exc)
            case Notice():
                log.info("ignoring notice of unknown kind %d", push.kind)
            case QueueEmpty():
                pass
        self._receipts_due()
        return events

    def _process_deliver(self, frame: Deliver) -> list[Event]:
        """Decrypt, store and commit one envelope; the ACK follows.

        One BEGIN IMMEDIATE transaction from loading the session to storing the message:
        synchronous, so no task on this loop interleaves, and holding SQLite's write lock,
        so a second process on the same home waits instead of decrypting the same envelope
        from the same state. The events are returned only once the commit succeeded.
        """
        with self.store.transaction():
            return self._decrypt_and_store(frame)

    def _decrypt_and_store(self, frame: Deliver) -> list[Event]:
        sender, device = frame.sender, frame.sender_device
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
        own_account = sender == self.username
        owe_receipt = isinstance(content, Text) and not own_account and self.sending_receipts

        check = IdentityCheck.SAME
        message_id: int | None = None
        changes: list[StatusChange] = []
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
                case Receipt() if own_account:
                    log.debug("ignoring a receipt from our own device %d", device)
                case Receipt():
                    changes = self.store.apply_receipt(
                        sender, RECEIPT_STATUS[content.kind], content.message_sent_at_ms
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

        events: list[Event] = []
        if check is IdentityCheck.CHANGED:
            events.append(IdentityChanged(sender, device, frame.server_time_ms))
        events.extend(
            MessageStatusChanged(sender, change.message_id, change.status) for change in changes
        )
        if message_id is None:
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
                )
            )
        else:
            events.append(
                UndecryptableMessage(
                    sender, device, content_error, frame.server_time_ms, frame.seq, message_id
                )
            )
        return events

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
        certificates = {
            device_id: device.certificate
            for device_id, device in self.store.peer_devices(peer).items()
        }
        if not certificates:
            certificates = await self._fetch_devices(peer)
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
        if self.store.pending_receipts(username):  # held while the key was not trusted
            self._receipts_owed = True

    # --- history ------------------------------------------------------------------------

    def messages(self, peer: str | None = None, limit: int | None = None) -> list[StoredMessage]:
        """Local history, oldest first; only the conversation with ``peer`` if given."""
        return self.store.messages(None if peer is None else _normalize(peer), limit)


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
