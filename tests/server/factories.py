"""Real keys (made with protocol.keys) for the keys API tests, and request bodies from them.

Every certificate, prekey and device list here is genuine and correctly signed, so a test
that wants a bad one changes exactly one thing (another signer, a flipped flag, a cut
encoding, an older version). Device lists for a change are built from what the server has
stored, as a client builds them from what it knows.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from rest_framework.test import APIClient

from keys.models import Account
from keys.services import DeviceInput
from protocol.devicelist import SignedDeviceList
from protocol.errors import ProtocolError
from protocol.identifiers import normalize_username
from protocol.keys import (
    AccountIdentity,
    DeviceCertificate,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    SignedPreKeyPair,
)

STRONG_PASSWORD = "violet-anchor-tundra-42"
# Outside the range of one-time KEM prekey ids the tests use: the server refuses a
# one-time KEM prekey that shares its id with the last-resort one.
LAST_RESORT_KEM_ID = 1_000_000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def one_time_prekeys(first_id: int, count: int) -> tuple[OneTimePreKeyPair, ...]:
    return tuple(OneTimePreKeyPair.generate(key_id) for key_id in range(first_id, first_id + count))


def kem_prekeys(device: DeviceKeys, first_id: int, count: int) -> tuple[KemPreKeyPair, ...]:
    return tuple(
        KemPreKeyPair.generate(device, key_id, last_resort=False)
        for key_id in range(first_id, first_id + count)
    )


@dataclass(frozen=True, slots=True)
class DeviceMaterial:
    """A device's private keys as its client would hold them, and the upload made of them."""

    account: AccountIdentity
    keys: DeviceKeys
    signed_prekey: SignedPreKeyPair
    last_resort: KemPreKeyPair
    one_time: tuple[OneTimePreKeyPair, ...]
    kem: tuple[KemPreKeyPair, ...]
    name: str = "laptop"

    @property
    def device_id(self) -> int:
        return self.keys.device_id

    def payload(self) -> dict[str, Any]:
        """The ``device`` object of sign-up (docs/api.md)."""
        return {
            "certificate_b64": b64(self.keys.certificate.encode()),
            "name": self.name,
            "signed_prekey_b64": b64(self.signed_prekey.public.encode()),
            "last_resort_kem_prekey_b64": b64(self.last_resort.public.encode()),
            "one_time_prekeys_b64": [b64(p.public.encode()) for p in self.one_time],
            "kem_prekeys_b64": [b64(p.public.encode()) for p in self.kem],
        }

    def device_input(self) -> DeviceInput:
        """The same, as keys.services takes it."""
        return DeviceInput(
            certificate=self.keys.certificate,
            signed_prekey=self.signed_prekey.public,
            last_resort_kem_prekey=self.last_resort.public,
            one_time_prekeys=tuple(p.public for p in self.one_time),
            kem_prekeys=tuple(p.public for p in self.kem),
            name=self.name,
        )

    def with_prekeys(
        self, one_time: tuple[OneTimePreKeyPair, ...], kem: tuple[KemPreKeyPair, ...]
    ) -> DeviceMaterial:
        return replace(self, one_time=one_time, kem=kem)


def make_device(
    account: AccountIdentity,
    device_id: int = 1,
    *,
    one_time: int = 5,
    kem: int = 5,
    name: str = "laptop",
) -> DeviceMaterial:
    """A device of ``account`` with one-time prekeys of each kind numbered from 1."""
    keys = DeviceKeys.create(account, device_id)
    return DeviceMaterial(
        account=account,
        keys=keys,
        signed_prekey=SignedPreKeyPair.generate(keys, 1),
        last_resort=KemPreKeyPair.generate(keys, LAST_RESORT_KEM_ID, last_resort=True),
        one_time=one_time_prekeys(1, one_time),
        kem=kem_prekeys(keys, 1, kem),
        name=name,
    )


def signed_list(
    account: AccountIdentity,
    username: str,
    version: int,
    certificates: Iterable[DeviceCertificate],
) -> SignedDeviceList:
    return SignedDeviceList.sign(
        account, username, version, int(time.time() * 1000), list(certificates)
    )


def list_b64(
    account: AccountIdentity,
    username: str,
    version: int,
    certificates: Iterable[DeviceCertificate],
) -> str:
    return b64(signed_list(account, username, version, certificates).encode())


def stored_certificates(username: str) -> list[DeviceCertificate]:
    """The certificates of the account's devices, as the server has them."""
    account = Account.objects.get(user__username=username)
    return [
        DeviceCertificate.decode(bytes(encoded))
        for encoded in account.devices.order_by("device_id").values_list("certificate", flat=True)
    ]


def stored_version(username: str) -> int:
    return int(Account.objects.get(user__username=username).device_list_version)


def next_list_b64(
    username: str,
    account: AccountIdentity,
    *,
    add: Iterable[DeviceCertificate] = (),
    remove: Iterable[int] = (),
    version: int | None = None,
) -> str:
    """The list a client would sign for a change: the stored devices, plus ``add``, less
    the ids in ``remove``, at the stored version + 1 (or ``version``)."""
    removed = set(remove)
    certificates = [c for c in stored_certificates(username) if c.device_id not in removed]
    certificates += list(add)
    return list_b64(
        account,
        username,
        stored_version(username) + 1 if version is None else version,
        certificates,
    )


def sign_up_body(
    username: str,
    device: DeviceMaterial,
    password: str = STRONG_PASSWORD,
    *,
    device_list_b64: str | None = None,
) -> dict[str, Any]:
    """A sign-up request; its device list names the device, version 1, unless given."""
    if device_list_b64 is None:
        try:
            listed_as = normalize_username(username)
        except ProtocolError:  # no list can name it; the server refuses the username first
            listed_as = "someone"
        device_list_b64 = list_b64(device.account, listed_as, 1, [device.keys.certificate])
    return {
        "username": username,
        "password": password,
        "identity_key_b64": b64(device.account.public_key),
        "device": device.payload(),
        "device_list_b64": device_list_b64,
    }


@dataclass(frozen=True, slots=True)
class SignedUp:
    """An account made through the API, with its first device's keys and token."""

    username: str
    account: AccountIdentity
    device: DeviceMaterial
    token: str

    def client(self) -> APIClient:
        return authorized(self.token)


def authorized(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def sign_up(username: str, *, one_time: int = 5, kem: int = 5, device_id: int = 1) -> SignedUp:
    """Sign ``username`` up through the API (asserting it worked)."""
    account = AccountIdentity.generate()
    device = make_device(account, device_id, one_time=one_time, kem=kem)
    response = APIClient().post("/api/v1/accounts", sign_up_body(username, device), format="json")
    assert response.status_code == 201, response.json()
    return SignedUp(username, account, device, response.json()["token"])


def add_device_body(owner: SignedUp, device: DeviceMaterial) -> dict[str, Any]:
    """The device object and the next device list naming it beside the stored devices."""
    return {
        **device.payload(),
        "device_list_b64": next_list_b64(
            owner.username, owner.account, add=[device.keys.certificate]
        ),
    }


def add_device(
    owner: SignedUp, device_id: int, *, one_time: int = 5, kem: int = 5
) -> tuple[DeviceMaterial, str]:
    """Add a device to ``owner``'s account with its first device's token; returns the new
    device's keys and token."""
    device = make_device(owner.account, device_id, one_time=one_time, kem=kem)
    response = owner.client().post("/api/v1/devices", add_device_body(owner, device), format="json")
    assert response.status_code == 201, response.json()
    return device, response.json()["token"]


def revoke_body(owner: SignedUp, device_id: int, **kwargs: Any) -> dict[str, Any]:
    """A revocation's body: the next list, without ``device_id``."""
    return {
        "device_list_b64": next_list_b64(
            owner.username, owner.account, remove=[device_id], **kwargs
        )
    }
