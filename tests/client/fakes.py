"""An in-memory Sealpost server for the client tests: REST (as an ``httpx.MockTransport``)
and the relay (as a ``client.transport.Connector``), both following docs/api.md.

It keeps only what the client can observe: accounts with their identity keys and devices,
the devices' prekeys, per-device envelope queues with seqs, and ACKs. Fault injection:
``before_send`` runs on every SEND before the server looks at it (change the device list,
answer for the server, drop the connection), ``after_store`` after the envelopes are
queued and before SEND_OK (drop the connection there to lose the SEND_OK).
Several devices per account: signed device lists (checked at sign-up, on adding and on
revoking a device, served with the keys), provisioning addresses with a real long poll,
link tokens, rename and revoke. The relay expects only devices the stored list names;
``relay_expects_unlisted`` makes it insist on every device row instead (a malicious
server), and ``add_rogue_device`` puts a device on an account without touching its list
(a row inserted straight into the database).
Nothing here is a reference for the server: it exists so that the client's real Api,
Transport and Client code run end to end without Django.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from client.api import normalize_server_url
from client.core import Client
from client.store import Config, Store
from client.transport import (
    SUBPROTOCOL,
    TOKEN_SUBPROTOCOL_PREFIX,
    Backoff,
    ConnectFailed,
    Connection,
    ConnectionLost,
)
from protocol.devicelist import SignedDeviceList
from protocol.encoding import Reader
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Ack,
    Deliver,
    DeviceMismatch,
    Error,
    Frame,
    Notice,
    NoticeKind,
    Ping,
    Pong,
    QueueEmpty,
    Send,
    SendOk,
    decode_frame,
    encode_frame,
)
from protocol.keys import (
    AccountIdentity,
    DeviceCertificate,
    DeviceKeys,
    KemPreKey,
    KemPreKeyPair,
    OneTimePreKey,
    OneTimePreKeyPair,
    PreKeyBundle,
    SignedPreKey,
    SignedPreKeyPair,
)

SERVER_URL = "http://sealpost.test"
FAST_BACKOFF = Backoff(base=0.001, cap=0.005)


def _read[T](data: bytes, reader: Callable[[Reader], T], what: str) -> T:
    r = Reader(data)
    value = reader(r)
    r.end(what)
    return value


@dataclass
class Envelope:
    seq: int
    sender: str
    sender_device: int
    server_time_ms: int
    payload: bytes


@dataclass
class FakeDevice:
    device_id: int
    certificate: DeviceCertificate
    token: str
    signed_prekey: SignedPreKey
    last_resort: KemPreKey
    one_time: list[OneTimePreKey] = field(default_factory=list)
    kem: list[KemPreKey] = field(default_factory=list)
    queue: dict[int, Envelope] = field(default_factory=dict)
    next_seq: int = 1
    connections: list[FakeConnection] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    name: str = "Python client"

    @property
    def registration_id(self) -> int:
        return self.certificate.registration_id


@dataclass
class FakeAccount:
    username: str
    password: str
    identity_key: bytes
    devices: dict[int, FakeDevice] = field(default_factory=dict)
    device_list: SignedDeviceList | None = None

    def listed(self, device: FakeDevice) -> bool:
        return self.device_list is not None and self.device_list.admits(device.certificate)


@dataclass
class Provisioning:
    address: str
    created_ms: int
    sealed: bytes | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class LinkToken:
    username: str
    created_ms: int
    used: bool = False


class HttpError(Exception):
    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class FakeConnection:
    """One relay connection of one device. ``drop()`` is the server hanging up."""

    def __init__(self, server: FakeServer, account: FakeAccount, device: FakeDevice) -> None:
        self.server = server
        self.account = account
        self.device = device
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        self.close_code: int | None = None
        self.received: list[Frame] = []

    def push(self, frame: Frame) -> None:
        if not self.closed:
            self.inbox.put_nowait(encode_frame(frame))

    def drop(self, code: int | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.inbox.put_nowait(None)
        if self in self.device.connections:
            self.device.connections.remove(self)

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionLost(self.close_code)
        self.server.handle_frame(self, data)

    async def recv(self) -> bytes:
        if self.closed and self.inbox.empty():
            raise ConnectionLost(self.close_code)
        item = await self.inbox.get()
        if item is None:
            raise ConnectionLost(self.close_code)
        return item

    async def close(self) -> None:
        self.drop(1000)


class FakeServer:
    def __init__(self) -> None:
        self.accounts: dict[str, FakeAccount] = {}
        self.low_watermark = 10
        self.max_stored = 1000
        self.time_ms = 1_795_000_000_000
        self.http = httpx.MockTransport(self._handle_http)
        self.requests: list[str] = []  # "METHOD /path" of every REST call
        self.sends: list[tuple[str, Send]] = []  # (sender, frame) of every SEND received
        self.connections: list[FakeConnection] = []
        self.refuse_connections = False
        self.before_send: Callable[[FakeConnection, Send], bool] | None = None
        self.after_store: Callable[[FakeConnection, Send], None] | None = None
        self.origins: list[str] = []
        self.max_devices = 6
        self.link_ttl_ms = 10 * 60 * 1000
        self.provisioning: dict[str, Provisioning] = {}
        self.link_tokens: dict[str, LinkToken] = {}
        self.relay_expects_unlisted = False  # a malicious relay: every device row counts
        # GET keys: a link token may read its own account's keys (as the real server
        # allows); keys_without_auth also serves requests that carry no credentials.
        self.keys_for_link_token = True
        self.keys_without_auth = False
        self.served_lists: dict[str, bytes] = {}  # GET keys serves these instead (a replay)
        self.max_provisioning_wait = 30.0
        # Called (address) when a device starts a long poll / leaves a sealed message.
        self.on_provisioning_poll: Callable[[str], None] | None = None
        self.on_provisioning_put: Callable[[str], None] | None = None

    # --- helpers for tests ----------------------------------------------------------------

    def clock(self) -> int:
        self.time_ms += 1
        return self.time_ms

    def device(self, username: str, device_id: int = 1) -> FakeDevice:
        return self.accounts[username].devices[device_id]

    def add_device(
        self,
        username: str,
        keys: DeviceKeys,
        signed: SignedPreKeyPair,
        last_resort: KemPreKeyPair,
        one_time: Sequence[OneTimePreKeyPair] = (),
        kem: Sequence[KemPreKeyPair] = (),
    ) -> str:
        """Put a device on an account directly (as POST /api/v1/devices would)."""
        account = self.accounts[username]
        keys.certificate.verify(account.identity_key)
        token = secrets.token_urlsafe(32)
        account.devices[keys.device_id] = FakeDevice(
            device_id=keys.device_id,
            certificate=keys.certificate,
            token=token,
            signed_prekey=signed.public,
            last_resort=last_resort.public,
            one_time=[pair.public for pair in one_time],
            kem=[pair.public for pair in kem],
        )
        return token

    def add_rogue_device(self, username: str, keys: DeviceKeys) -> FakeDevice:
        """A device row the account never listed (inserted straight into the database),
        with prekeys so that a bundle can be claimed for it."""
        account = self.accounts[username]
        signed = SignedPreKeyPair.generate(keys, 1)
        last_resort = KemPreKeyPair.generate(keys, 2, last_resort=True)
        device = FakeDevice(
            device_id=keys.device_id,
            certificate=keys.certificate,
            token=secrets.token_urlsafe(32),
            signed_prekey=signed.public,
            last_resort=last_resort.public,
        )
        account.devices[keys.device_id] = device
        return device

    def issue_link_token(self, username: str) -> str:
        """What POST /api/v1/devices/link-tokens gives a device of ``username``."""
        token = secrets.token_urlsafe(32)
        self.link_tokens[token] = LinkToken(username, self.time_ms)
        return token

    def set_device_list(self, username: str, device_list: SignedDeviceList) -> None:
        self.accounts[username].device_list = device_list

    def remove_device(self, username: str, device_id: int) -> None:
        device = self.accounts[username].devices.pop(device_id)
        for conn in list(device.connections):
            conn.drop(4403)

    def delete_account(self, username: str) -> None:
        for device_id in list(self.accounts[username].devices):
            self.remove_device(username, device_id)
        del self.accounts[username]

    def enqueue(self, recipient: str, device_id: int, sender: str, sender_device: int,
                payload: bytes) -> Envelope:  # fmt: skip
        """Queue an envelope (and push it to connected devices), as an accepted SEND does."""
        device = self.device(recipient, device_id)
        envelope = Envelope(device.next_seq, sender, sender_device, self.clock(), payload)
        device.next_seq += 1
        device.queue[envelope.seq] = envelope
        for conn in device.connections:
            conn.push(_deliver(envelope))
        return envelope

    def drop_all(self, code: int | None = None) -> None:
        for conn in list(self.connections):
            conn.drop(code)

    def live(self, username: str, device_id: int = 1) -> list[FakeConnection]:
        return [c for c in self.device(username, device_id).connections if not c.closed]

    # --- the relay ------------------------------------------------------------------------

    async def connect(self, url: str, subprotocols: Sequence[str], origin: str) -> Connection:
        if self.refuse_connections:
            raise ConnectFailed("connection refused")
        assert url == "ws://sealpost.test/ws/v1/", url
        assert subprotocols[0] == SUBPROTOCOL
        self.origins.append(origin)
        token = subprotocols[1].removeprefix(TOKEN_SUBPROTOCOL_PREFIX)
        found = self._device_for_token(token)
        if found is None:
            raise ConnectFailed("the server refused the WebSocket (HTTP 403)", 403)
        account, device = found
        conn = FakeConnection(self, account, device)
        device.connections.append(conn)
        self.connections.append(conn)
        for envelope in device.queue.values():
            conn.push(_deliver(envelope))
        conn.push(QueueEmpty())
        return conn

    def handle_frame(self, conn: FakeConnection, data: bytes) -> None:
        try:
            frame = decode_frame(data)
        except ProtocolError as exc:
            conn.push(Error(0, int(exc.code), exc.message))
            return
        conn.received.append(frame)
        match frame:
            case Send():
                self._handle_send(conn, frame)
            case Ack():
                unknown = [seq for seq in frame.seqs if seq not in conn.device.queue]
                for seq in frame.seqs:
                    conn.device.queue.pop(seq, None)
                conn.device.acked.extend(frame.seqs)
                if unknown:
                    conn.push(
                        Error(frame.request_id, int(ErrorCode.UNKNOWN_ENVELOPE), f"{unknown}")
                    )
            case Ping():
                conn.push(Pong(frame.request_id))
            case _:
                conn.push(Error(frame.request_id, int(ErrorCode.INVALID_REQUEST), "server only"))

    def _handle_send(self, conn: FakeConnection, frame: Send) -> None:
        self.sends.append((conn.account.username, frame))
        if self.before_send is not None and self.before_send(conn, frame):
            return  # the hook answered (or dropped the connection)
        account = self.accounts.get(frame.recipient)
        if account is None:
            conn.push(Error(frame.request_id, int(ErrorCode.UNKNOWN_ACCOUNT), frame.recipient))
            return
        devices = {
            device_id: device
            for device_id, device in account.devices.items()
            if not (account is conn.account and device is conn.device)
            and (self.relay_expects_unlisted or account.listed(device))
        }
        addressed = {message.device_id: message for message in frame.messages}
        missing = tuple(sorted(set(devices) - set(addressed)))
        extra = tuple(sorted(set(addressed) - set(devices)))
        stale = tuple(
            sorted(
                device_id
                for device_id, message in addressed.items()
                if device_id in devices
                and devices[device_id].registration_id != message.registration_id
            )
        )
        if missing or extra or stale:
            conn.push(DeviceMismatch(frame.request_id, missing, extra, stale))
            return
        for device_id, message in addressed.items():
            self.enqueue(
                frame.recipient,
                device_id,
                conn.account.username,
                conn.device.device_id,
                message.payload,
            )
        if self.after_store is not None:
            self.after_store(conn, frame)
        conn.push(SendOk(frame.request_id, self.time_ms))

    def _device_for_token(self, token: str) -> tuple[FakeAccount, FakeDevice] | None:
        for account in self.accounts.values():
            for device in account.devices.values():
                if device.token == token:
                    return account, device
        return None

    # --- REST -----------------------------------------------------------------------------

    async def _handle_http(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        try:
            if request.method == "GET" and (
                match := re.fullmatch(r"/api/v1/provisioning/([^/]+)", path)
            ):
                status, body = await self._wait_provisioning(match[1], request)
            else:
                status, body = self._route(request, path)
        except HttpError as exc:
            return httpx.Response(exc.status, json={"code": exc.code.slug, "message": exc.message})
        except ProtocolError as exc:
            return httpx.Response(400, json={"code": exc.code.slug, "message": exc.message})
        if body is None:
            return httpx.Response(status)
        return httpx.Response(status, json=body)

    def _route(self, request: httpx.Request, path: str) -> tuple[int, Any]:
        method = request.method
        body = json.loads(request.content) if request.content else {}
        if method == "POST" and path == "/api/v1/accounts":
            return 201, self._sign_up(body)
        if method == "POST" and path == "/api/v1/provisioning":
            address = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
            self.provisioning[address] = Provisioning(address, self.time_ms)
            return 201, {"address": address, "expires_at": "2026-11-27T00:10:00Z"}
        if method == "POST" and path == "/api/v1/devices" and "link_token" in body:
            return 201, self._add_linked_device(body)
        keys_match = re.fullmatch(r"/api/v1/accounts/([^/]+)/keys", path)
        if keys_match and method == "GET":
            target = self._account(keys_match[1])
            anonymous = "Authorization" not in request.headers and self.keys_without_auth
            by_link = self.keys_for_link_token and self._link_token_for(request, target)
            if not anonymous and not by_link:
                self._authenticate(request)
            return 200, self._keys(target)
        account, device = self._authenticate(request)
        if match := re.fullmatch(r"/api/v1/provisioning/([^/]+)", path):
            if method != "PUT":
                raise HttpError(405, ErrorCode.INVALID_REQUEST, "method not allowed")
            provisioning = self._provisioning(match[1])
            provisioning.sealed = _unb64(body["sealed_b64"])
            provisioning.arrived.set()
            if self.on_provisioning_put is not None:
                self.on_provisioning_put(match[1])
            return 204, None
        if path == "/api/v1/devices/link-tokens" and method == "POST":
            token = self.issue_link_token(account.username)
            return 201, {"link_token": token, "expires_at": "2026-11-27T00:10:00Z"}
        if match := re.fullmatch(r"/api/v1/devices/(\d+)", path):
            target_device = account.devices.get(int(match[1]))
            if target_device is None:
                raise HttpError(404, ErrorCode.UNKNOWN_DEVICE, f"no device {match[1]}")
            if method == "PATCH":
                target_device.name = body["name"]
                return 200, self._device_info(target_device, device)
            if method == "DELETE":
                remaining = [d for d in account.devices.values() if d is not target_device]
                account.device_list = self._check_list(
                    account, body.get("device_list_b64"), remaining
                )
                self.remove_device(account.username, target_device.device_id)
                return 204, None
        if match := re.fullmatch(r"/api/v1/accounts/([^/]+)/bundles", path):
            return 200, self._claim(self._account(match[1]), body.get("device_ids"))
        if path == "/api/v1/devices/self/prekeys":
            if method == "POST":
                one_time = [
                    _read(_unb64(v), OneTimePreKey.read, "otpk")
                    for v in body["one_time_prekeys_b64"]
                ]
                kem = [_read(_unb64(v), KemPreKey.read, "kem") for v in body["kem_prekeys_b64"]]
                for key in kem:
                    key.verify(device.certificate.signing_key)
                if len(device.one_time) + len(one_time) > self.max_stored:
                    raise HttpError(422, ErrorCode.PREKEY_STORE_FULL, "full")
                device.one_time.extend(one_time)
                device.kem.extend(kem)
            return 200, self._counts(device)
        if path == "/api/v1/devices/self/signed-prekey" and method == "PUT":
            signed = _read(_unb64(body["signed_prekey_b64"]), SignedPreKey.read, "spk")
            signed.verify(device.certificate.signing_key)
            device.signed_prekey = signed
            return 204, None
        if path == "/api/v1/devices/self/last-resort-kem-prekey" and method == "PUT":
            kem_key = _read(_unb64(body["kem_prekey_b64"]), KemPreKey.read, "kem")
            kem_key.verify(device.certificate.signing_key)
            device.last_resort = kem_key
            return 204, None
        if path == "/api/v1/devices" and method == "GET":
            return 200, [self._device_info(d, device) for d in account.devices.values()]
        raise HttpError(404, ErrorCode.NOT_FOUND, f"no route {method} {path}")

    def _keys(self, target: FakeAccount) -> dict[str, Any]:
        served = self.served_lists.get(target.username)
        if served is None and target.device_list is not None:
            served = target.device_list.encode()
        return {
            "username": target.username,
            "identity_key_b64": _b64(target.identity_key),
            "devices": [
                {
                    "device_id": d.device_id,
                    "registration_id": d.registration_id,
                    "certificate_b64": _b64(d.certificate.encode()),
                }
                for d in target.devices.values()
            ],
            "device_list_b64": None if served is None else _b64(served),
        }

    @staticmethod
    def _device_info(d: FakeDevice, caller: FakeDevice) -> dict[str, Any]:
        return {
            "device_id": d.device_id,
            "name": d.name,
            "created_at": "2026-11-27T00:00:00Z",
            "last_seen_at": None,
            "current": d is caller,
        }

    def _link_token_for(self, request: httpx.Request, account: FakeAccount) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        link = self.link_tokens.get(token)
        return link is not None and not link.used and link.username == account.username

    def _provisioning(self, address: str) -> Provisioning:
        provisioning = self.provisioning.get(address)
        if provisioning is None:
            raise HttpError(404, ErrorCode.LINK_NOT_FOUND, "no such provisioning address")
        if self.time_ms - provisioning.created_ms > self.link_ttl_ms:
            raise HttpError(410, ErrorCode.LINK_EXPIRED, "the provisioning address expired")
        return provisioning

    async def _wait_provisioning(self, address: str, request: httpx.Request) -> tuple[int, Any]:
        wait = float(request.url.params.get("wait", "0"))
        if not 0 <= wait <= 30:
            raise HttpError(400, ErrorCode.INVALID_VALUE, "wait is at most 30")
        provisioning = self._provisioning(address)
        if self.on_provisioning_poll is not None:
            self.on_provisioning_poll(address)
        if provisioning.sealed is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    provisioning.arrived.wait(), min(wait, self.max_provisioning_wait)
                )
        provisioning = self._provisioning(address)
        if provisioning.sealed is None:
            return 204, None
        del self.provisioning[address]
        return 200, {"sealed_b64": _b64(provisioning.sealed)}

    def _check_list(
        self, account: FakeAccount, encoded: str | None, devices: list[FakeDevice]
    ) -> SignedDeviceList:
        """What the server checks of a new device list (docs/api.md)."""
        if not isinstance(encoded, str):
            raise HttpError(400, ErrorCode.INVALID_REQUEST, "device_list_b64 is required")
        device_list = SignedDeviceList.decode(_unb64(encoded))
        device_list.verify(account.identity_key, account.username)
        stored = account.device_list.version if account.device_list is not None else 0
        if device_list.version <= stored:
            raise HttpError(400, ErrorCode.INVALID_VALUE, "the version is not above the stored one")
        if len(device_list.devices) != len(devices) or not all(
            device_list.admits(d.certificate) for d in devices
        ):
            raise HttpError(409, ErrorCode.DEVICE_MISMATCH, "the list does not name the devices")
        return device_list

    def _add_linked_device(self, body: dict[str, Any]) -> dict[str, Any]:
        account = self._account(body["username"])
        link = self.link_tokens.get(body["link_token"])
        if link is None or link.used or link.username != account.username:
            raise HttpError(404, ErrorCode.LINK_NOT_FOUND, "no such link token")
        if self.time_ms - link.created_ms > self.link_ttl_ms:
            raise HttpError(410, ErrorCode.LINK_EXPIRED, "the link token expired")
        if len(account.devices) >= self.max_devices:
            raise HttpError(422, ErrorCode.DEVICE_LIMIT_REACHED, f"at most {self.max_devices}")
        device = self._device_from_upload(body["device"], account.identity_key)
        if device.device_id in account.devices:
            raise HttpError(409, ErrorCode.DEVICE_ID_TAKEN, f"device {device.device_id} exists")
        listed = [d for d in account.devices.values() if account.listed(d)]
        account.device_list = self._check_list(
            account, body.get("device_list_b64"), [*listed, device]
        )
        link.used = True
        account.devices[device.device_id] = device
        return {"username": account.username, "device_id": device.device_id, "token": device.token}

    def _authenticate(self, request: httpx.Request) -> tuple[FakeAccount, FakeDevice]:
        header = request.headers.get("Authorization", "")
        found = self._device_for_token(header.removeprefix("Bearer "))
        if not header.startswith("Bearer ") or found is None:
            raise HttpError(401, ErrorCode.UNAUTHORIZED, "unknown or revoked device token")
        return found

    def _account(self, username: str) -> FakeAccount:
        account = self.accounts.get(username.lower())
        if account is None:
            raise HttpError(404, ErrorCode.UNKNOWN_ACCOUNT, f"no account {username!r}")
        return account

    def _sign_up(self, body: dict[str, Any]) -> dict[str, Any]:
        username = body["username"].lower()
        if username in self.accounts:
            raise HttpError(409, ErrorCode.USERNAME_TAKEN, f"{username!r} is taken")
        if len(body["password"]) < 8:
            raise HttpError(400, ErrorCode.WEAK_PASSWORD, "This password is too short.")
        identity_key = _unb64(body["identity_key_b64"])
        device = self._device_from_upload(body["device"], identity_key)
        account = FakeAccount(username, body["password"], identity_key)
        account.device_list = self._check_list(account, body.get("device_list_b64"), [device])
        account.devices[device.device_id] = device
        self.accounts[username] = account
        return {"username": username, "device_id": device.device_id, "token": device.token}

    def _device_from_upload(self, upload: dict[str, Any], identity_key: bytes) -> FakeDevice:
        certificate = DeviceCertificate.decode(_unb64(upload["certificate_b64"]))
        certificate.verify(identity_key)
        signed = _read(_unb64(upload["signed_prekey_b64"]), SignedPreKey.read, "spk")
        signed.verify(certificate.signing_key)
        last_resort = _read(_unb64(upload["last_resort_kem_prekey_b64"]), KemPreKey.read, "lr")
        assert last_resort.last_resort
        one_time = [
            _read(_unb64(v), OneTimePreKey.read, "otpk") for v in upload["one_time_prekeys_b64"]
        ]
        kem = [_read(_unb64(v), KemPreKey.read, "kem") for v in upload["kem_prekeys_b64"]]
        if len(one_time) > 100 or len(kem) > 100:
            raise HttpError(413, ErrorCode.PREKEY_BATCH_TOO_LARGE, "too many")
        device = FakeDevice(
            certificate.device_id,
            certificate,
            secrets.token_urlsafe(32),
            signed,
            last_resort,
            one_time,
            kem,
        )
        device.name = upload.get("name", device.name)
        return device

    def _claim(self, account: FakeAccount, device_ids: list[int] | None) -> dict[str, Any]:
        ids = device_ids if device_ids is not None else list(account.devices)
        bundles = []
        for device_id in ids:
            device = account.devices.get(device_id)
            if device is None:
                raise HttpError(404, ErrorCode.UNKNOWN_DEVICE, f"no device {device_id}")
            one_time = device.one_time.pop(0) if device.one_time else None
            kem = device.kem.pop(0) if device.kem else device.last_resort
            if len(device.one_time) < self.low_watermark:
                for conn in device.connections:
                    conn.push(Notice(int(NoticeKind.PREKEYS_LOW), len(device.one_time)))
            bundle = PreKeyBundle(
                account.identity_key, device.certificate, device.signed_prekey, one_time, kem
            )
            bundles.append(
                {
                    "device_id": device_id,
                    "registration_id": device.registration_id,
                    "bundle_b64": _b64(bundle.encode()),
                }
            )
        return {
            "username": account.username,
            "identity_key_b64": _b64(account.identity_key),
            "bundles": bundles,
        }

    def _counts(self, device: FakeDevice) -> dict[str, int]:
        return {
            "one_time_prekeys": len(device.one_time),
            "kem_prekeys": len(device.kem),
            "low_watermark": self.low_watermark,
            "max_stored": self.max_stored,
        }


def _deliver(envelope: Envelope) -> Deliver:
    return Deliver(
        envelope.seq,
        envelope.sender,
        envelope.sender_device,
        envelope.server_time_ms,
        envelope.payload,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


# --- clients on the fake server -----------------------------------------------------------


def make_client(server: FakeServer, home: Path, **kwargs: Any) -> Client:
    kwargs.setdefault("http_transport", server.http)
    kwargs.setdefault("ws_connector", server.connect)
    kwargs.setdefault("backoff", FAST_BACKOFF)
    return Client(home, **kwargs)


async def registered(server: FakeServer, home: Path, username: str, **kwargs: Any) -> Client:
    client = make_client(server, home, **kwargs)
    await client.register(SERVER_URL, username, "correct horse battery")
    return client


def link_device(server: FakeServer, first: Client, home: Path, device_id: int) -> Client:
    """A further device of ``first``'s account, set up by hand (quicker than the link
    flow): same account key, its own device keys, prekeys on the fake server, and a new
    signed device list naming it (replacing a device with the same id)."""
    account = AccountIdentity.from_seed(first.store.account_identity().seed)
    keys = DeviceKeys.create(account, device_id)
    signed = SignedPreKeyPair.generate(keys, 1)
    last_resort = KemPreKeyPair.generate(keys, 1, last_resort=True)
    one_time = [OneTimePreKeyPair.generate(i) for i in range(1, 21)]
    kem = [KemPreKeyPair.generate(keys, i, last_resort=False) for i in range(2, 22)]
    token = server.add_device(first.username, keys, signed, last_resort, one_time, kem)
    device_list = sign_list(server, account, first.username)
    # The approving device sees the new list (approve_link waits for it), so ``first``'s
    # store holds it, as after the real flow: its cached device list is out of date then.
    first.store.save_device_list(first.username, account.public_key, device_list, 0)
    store = Store.open(home)
    store.next_key_ids("signed", 1)
    store.next_key_ids("one_time", 20)
    store.next_key_ids("kem", 21)
    config = Config(normalize_server_url(SERVER_URL), first.username, device_id, token)
    store.save_registration(config, account, keys, signed, last_resort, one_time, kem, 0)
    store.close()
    return make_client(server, home)


def sign_list(server: FakeServer, account: AccountIdentity, username: str) -> SignedDeviceList:
    """Sign (with the account key) a list naming exactly the account's device rows now,
    one version up, and store it on the server, as a real device would when it links."""
    fake = server.accounts[username]
    version = fake.device_list.version + 1 if fake.device_list is not None else 1
    device_list = SignedDeviceList.sign(
        account,
        username,
        version,
        server.time_ms,
        [device.certificate for device in fake.devices.values()],
    )
    server.set_device_list(username, device_list)
    return device_list
