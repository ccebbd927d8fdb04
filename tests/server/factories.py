"""Real keys (made with protocol.keys) for the keys API tests, and request bodies from them.

Every certificate and prekey here is genuine and correctly signed, so a test that wants a
bad one changes exactly one thing (another signer, a flipped flag, a cut encoding).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from typing import Any

from rest_framework.test import APIClient

from keys.services import DeviceInput
from protocol.keys import (
    AccountIdentity,
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


def sign_up_body(
    username: str, device: DeviceMaterial, password: str = STRONG_PASSWORD
) -> dict[str, Any]:
    return {
        "username": username,
        "password": password,
        "identity_key_b64": b64(device.account.public_key),
        "device": device.payload(),
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


def add_device(
    owner: SignedUp, device_id: int, *, one_time: int = 5, kem: int = 5
) -> tuple[DeviceMaterial, str]:
    """Add a device to ``owner``'s account with its first device's token; returns the new
    device's keys and token."""
    device = make_device(owner.account, device_id, one_time=one_time, kem=kem)
    response = owner.client().post("/api/v1/devices", device.payload(), format="json")
    assert response.status_code == 201, response.json()
    return device, response.json()["token"]
