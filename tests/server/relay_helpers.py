"""Factories and a WebSocket client for the relay and envelope tests.

Accounts and devices are made directly with the ORM. The relay expects only devices the
account's signed device list names by certificate, so each device gets a real certificate
and the account a real list, re-signed with every device added; prekeys, which the relay
never opens, are placeholder bytes. ``make_device(..., listed=False)`` inserts a row the
way a compromised database would: not in the list.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.utils import timezone

from keys.models import Account, Device, KemPreKey, OneTimePreKey
from keys.tokens import generate_token
from messaging.models import Envelope
from protocol.devicelist import SignedDeviceList
from protocol.encoding import Writer
from protocol.frames import (
    Deliver,
    DeviceMessage,
    Error,
    Frame,
    FrameType,
    Ping,
    Pong,
    QueueEmpty,
    Send,
    SendFlags,
    decode_frame,
    encode_frame,
)
from protocol.keys import AccountIdentity, DeviceCertificate, DeviceKeys
from protocol.limits import PROTOCOL_VERSION

# Generous: a slow CI machine must not turn into a flaky failure. Waiting for silence
# (``nothing``) is shorter, since every passing test pays it.
TIMEOUT = 5
SILENCE = 0.3
ORIGIN = (b"origin", b"http://localhost")

_registration_ids = itertools.count(1000)


@dataclass(frozen=True, slots=True)
class TestDevice:
    __test__ = False  # not a pytest test class

    pk: int
    username: str
    device_id: int
    registration_id: int
    token: str

    def message(self, payload: bytes = b"ciphertext") -> DeviceMessage:
        return DeviceMessage(self.device_id, self.registration_id, payload)

    def model(self) -> Device:
        return Device.objects.select_related("account__user").get(pk=self.pk)


# The account keys of the accounts made here, by username (a test database starts empty,
# so a name is made afresh, with a new key, in every test that uses it).
_account_keys: dict[str, AccountIdentity] = {}


def make_account(username: str) -> Account:
    user = get_user_model().objects.create_user(username=username, password=None)
    identity = AccountIdentity.generate()
    _account_keys[username] = identity
    return Account.objects.create(user=user, identity_key=identity.public_key)


def resign_device_list(account: Account) -> None:
    """Sign and store a new list naming every device row the account has now."""
    identity = _account_keys[account.username]
    certificates = [
        DeviceCertificate.decode(bytes(encoded))
        for encoded in Device.objects.filter(account=account).values_list("certificate", flat=True)
    ]
    version = int(account.device_list_version) + 1
    device_list = SignedDeviceList.sign(
        identity, account.username, version, int(timezone.now().timestamp() * 1000), certificates
    )
    Account.objects.filter(pk=account.pk).update(
        device_list=device_list.encode(), device_list_version=version
    )
    account.device_list_version = version


def make_device(
    username: str,
    device_id: int = 1,
    *,
    prekeys: int = 10,
    registration_id: int | None = None,
    listed: bool = True,
) -> TestDevice:
    """A device of ``username`` (the account is made on first use) with ``prekeys``
    one-time prekeys of each kind (10, the low watermark, means no PREKEYS_LOW notice).
    The account's signed list is re-signed to name it, unless ``listed`` is False."""
    account = Account.objects.select_related("user").filter(
        user__username=username
    ).first() or make_account(username)
    keys = DeviceKeys.create(
        _account_keys[username],
        device_id,
        registration_id=registration_id or next(_registration_ids),
    )
    token, token_hash = generate_token()
    device = Device.objects.create(
        account=account,
        device_id=device_id,
        registration_id=keys.certificate.registration_id,
        certificate=keys.certificate.encode(),
        identity_key=keys.identity_key,
        token_hash=token_hash,
        signed_prekey=b"signed prekey",
        last_resort_kem_prekey=b"last resort",
    )
    if listed:
        resign_device_list(account)
    OneTimePreKey.objects.bulk_create(
        OneTimePreKey(device=device, key_id=i, encoded=b"otk") for i in range(prekeys)
    )
    KemPreKey.objects.bulk_create(
        KemPreKey(device=device, key_id=i, encoded=b"kem") for i in range(prekeys)
    )
    return TestDevice(device.pk, username, device_id, device.registration_id, token)


def queue_envelopes(sender: TestDevice, recipient: TestDevice, payloads: list[bytes]) -> list[int]:
    """Store envelopes for one device as committed sends would, but with no fan-out (as
    if every channel event were lost): their seqs."""
    from messaging.services import SendAccepted, enqueue_send

    seqs = []
    for payload in payloads:
        result = enqueue_send(
            sender.model(), recipient.username, (recipient.message(payload),), False
        )
        assert isinstance(result, SendAccepted), result
        seqs.append(result.deliveries[0].seq)
    return seqs


def envelope_seqs(device: TestDevice) -> list[int]:
    return list(
        Envelope.objects.filter(device_id=device.pk).order_by("seq").values_list("seq", flat=True)
    )


def expire_all(device: TestDevice) -> None:
    Envelope.objects.filter(device_id=device.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )


amake_device = database_sync_to_async(make_device)
aqueue_envelopes = database_sync_to_async(queue_envelopes)
aenvelope_seqs = database_sync_to_async(envelope_seqs)


def send_frame(
    request_id: int, recipient: str, *messages: DeviceMessage, ephemeral: bool = False
) -> Send:
    flags = SendFlags.EPHEMERAL if ephemeral else SendFlags.NONE
    return Send(request_id, recipient, tuple(messages), flags)


def raw_send(request_id: int, recipient: str, message: DeviceMessage) -> bytes:
    """A SEND frame encoded by hand, skipping encode_frame's own checks (which refuse,
    for instance, a ciphertext above the limit): what a faulty client might send."""
    w = Writer().u8(PROTOCOL_VERSION).u8(FrameType.SEND).varint(request_id)
    w.str_(recipient).u8(0).varint(1)
    w.varint(message.device_id).varint(message.registration_id).bytes_(message.payload)
    return w.getvalue()


def communicator(subprotocols: list[str]) -> WebsocketCommunicator:
    from project.asgi import application

    return WebsocketCommunicator(
        application, "/ws/v1/", headers=[ORIGIN], subprotocols=subprotocols
    )


class Socket:
    """One client connection, speaking frames."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm

    async def send(self, frame: Frame) -> None:
        await self.comm.send_to(bytes_data=encode_frame(frame))

    async def send_raw(self, data: bytes) -> None:
        await self.comm.send_to(bytes_data=data)

    async def send_text(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def recv(self) -> Frame:
        data = await self.comm.receive_from(timeout=TIMEOUT)
        assert isinstance(data, bytes), f"expected a binary frame, got {data!r}"
        return decode_frame(data)

    async def expect[F](self, kind: type[F]) -> F:
        frame = await self.recv()
        assert isinstance(frame, kind), f"expected {kind.__name__}, got {frame!r}"
        return frame

    async def error(self) -> Error:
        return await self.expect(Error)

    async def deliveries(self, count: int) -> list[Deliver]:
        return [await self.expect(Deliver) for _ in range(count)]

    async def nothing(self) -> None:
        assert await self.comm.receive_nothing(timeout=SILENCE), "unexpected output"

    async def closed(self) -> int:
        """Wait for the server to close the socket; its close code."""
        message: dict[str, Any] = await self.comm.receive_output(timeout=TIMEOUT)
        assert message["type"] == "websocket.close", f"expected a close, got {message!r}"
        return int(message.get("code", 1000))

    async def still_works(self, request_id: int = 99) -> None:
        await self.send(Ping(request_id))
        assert await self.expect(Pong) == Pong(request_id)

    async def drain_connect(self) -> None:
        """Read past an empty backlog."""
        await self.expect(QueueEmpty)


@asynccontextmanager
async def connected(token: str, *, backlog_empty: bool = False) -> AsyncIterator[Socket]:
    """A connected socket for this device token, disconnected on exit. With
    ``backlog_empty`` the QUEUE_EMPTY of an empty queue is read first."""
    comm = communicator(["sealpost.v1", f"sealpost.token.{token}"])
    accepted, subprotocol = await comm.connect(timeout=TIMEOUT)
    assert accepted, f"handshake refused ({subprotocol})"
    assert subprotocol == "sealpost.v1"
    socket = Socket(comm)
    try:
        if backlog_empty:
            await socket.drain_connect()
        yield socket
    finally:
        await comm.disconnect(timeout=TIMEOUT)
