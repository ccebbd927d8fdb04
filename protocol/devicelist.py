"""The signed device list: which devices an account has, in the account's own words.

Each device certificate is signed by the account identity key, so the server cannot invent
a device. A certificate stays valid after its device is revoked, though, so a server could
keep serving (or re-insert) a revoked device. The device list closes that gap: the account
identity key signs the complete set of devices with a version that only ever increases,
and a client accepts a device only if the newest list it has seen names it, with the
certificate it is being shown.

    DeviceList = username str | version varint | issued_at_ms varint |
                 count varint | count × (device_id varint | registration_id varint |
                                         certificate_sha256[32])
    SignedDeviceList = DeviceList | signature[64]
    signature = Ed25519(account key, "Sealpost v1 device list" | 0x00 | DeviceList)

Entries are sorted by device id, each id at most once. Any device holding the account
identity key (every linked device does) signs a new list when it links or revokes one.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import primitives as p
from .encoding import Reader, Writer
from .errors import ErrorCode, ProtocolError
from .identifiers import check_username
from .keys import MAX_REGISTRATION_ID, AccountIdentity, DeviceCertificate, check_device_id
from .limits import MAX_DEVICE_ID, MAX_USERNAME_BYTES

LABEL_DEVICE_LIST = b"Sealpost v1 device list"
MAX_LISTED_DEVICES = 64


def certificate_digest(certificate: DeviceCertificate) -> bytes:
    return p.sha256(certificate.encode())


@dataclass(frozen=True, slots=True)
class ListedDevice:
    device_id: int
    registration_id: int
    certificate_sha256: bytes


@dataclass(frozen=True, slots=True)
class SignedDeviceList:
    username: str
    version: int
    issued_at_ms: int
    devices: tuple[ListedDevice, ...]
    signature: bytes

    def body(self) -> bytes:
        ids = [d.device_id for d in self.devices]
        if ids != sorted(set(ids)):
            raise ProtocolError(ErrorCode.INVALID_VALUE, "device list must be sorted, no repeats")
        if len(ids) > MAX_LISTED_DEVICES:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"more than {MAX_LISTED_DEVICES} devices")
        w = Writer().str_(check_username(self.username)).varint(self.version)
        w.varint(self.issued_at_ms).varint(len(self.devices))
        for device in self.devices:
            check_device_id(device.device_id)
            w.varint(device.device_id).varint(device.registration_id)
            w.fixed(device.certificate_sha256, 32)
        return w.getvalue()

    def encode(self) -> bytes:
        return self.body() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignedDeviceList:
        r = Reader(data)
        username = check_username(r.str_("username", MAX_USERNAME_BYTES))
        version = r.varint("version")
        issued_at = r.varint("issued_at_ms")
        count = r.varint("device count", maximum=MAX_LISTED_DEVICES)
        devices = []
        for _ in range(count):
            device_id = r.varint("device_id", maximum=MAX_DEVICE_ID)
            check_device_id(device_id)
            registration_id = r.varint("registration_id", maximum=MAX_REGISTRATION_ID)
            devices.append(ListedDevice(device_id, registration_id, r.fixed(32, "certificate")))
        signature = r.fixed(p.ED25519_SIGNATURE_BYTES, "device list signature")
        r.end("device list")
        signed = cls(username, version, issued_at, tuple(devices), signature)
        signed.body()  # checks the ordering rule
        return signed

    @classmethod
    def sign(
        cls,
        account: AccountIdentity,
        username: str,
        version: int,
        issued_at_ms: int,
        certificates: list[DeviceCertificate],
    ) -> SignedDeviceList:
        devices = tuple(
            ListedDevice(c.device_id, c.registration_id, certificate_digest(c))
            for c in sorted(certificates, key=lambda c: c.device_id)
        )
        unsigned = cls(username, version, issued_at_ms, devices, b"")
        signature = account.sign(_signed_payload(unsigned.body()))
        return cls(username, version, issued_at_ms, devices, signature)

    def verify(self, account_public_key: bytes, username: str) -> None:
        """Raise BAD_SIGNATURE unless this account key signed this list for ``username``."""
        if self.username != username:
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE, f"device list is for {self.username!r}, not {username!r}"
            )
        p.ed25519_verify(account_public_key, _signed_payload(self.body()), self.signature)

    def admits(self, certificate: DeviceCertificate) -> bool:
        """Whether this list names exactly this certificate."""
        digest = certificate_digest(certificate)
        return any(
            d.device_id == certificate.device_id
            and d.registration_id == certificate.registration_id
            and p.constant_time_equal(d.certificate_sha256, digest)
            for d in self.devices
        )


def _signed_payload(body: bytes) -> bytes:
    return LABEL_DEVICE_LIST + b"\x00" + body


@dataclass(frozen=True, slots=True)
class CheckedDevices:
    """The outcome of checking what a server says an account's devices are."""

    device_list: SignedDeviceList
    accepted: tuple[DeviceCertificate, ...]  # certified and listed: encrypt to these
    refused: tuple[int, ...]  # device ids served without a valid certificate or listing
    unlisted_missing: tuple[int, ...]  # listed, but the server did not serve them


def check_devices(
    account_public_key: bytes,
    username: str,
    device_list: SignedDeviceList,
    certificates: list[DeviceCertificate],
    newest_seen_version: int = 0,
) -> CheckedDevices:
    """Verify a served device set against the account's signed list.

    Raises BAD_SIGNATURE for a list not signed by the account key and INVALID_VALUE for a
    list older than one already seen (a server replaying a list from before a revocation).
    Devices whose certificate does not verify or that the list does not name are returned
    in ``refused``: the caller must not encrypt to them and should warn the user.
    """
    device_list.verify(account_public_key, username)
    if device_list.version < newest_seen_version:
        raise ProtocolError(
            ErrorCode.INVALID_VALUE,
            f"device list version {device_list.version} is older than version "
            f"{newest_seen_version} already seen for {username}",
        )
    accepted: list[DeviceCertificate] = []
    refused: list[int] = []
    for certificate in certificates:
        try:
            certificate.verify(account_public_key)
        except ProtocolError:
            refused.append(certificate.device_id)
            continue
        if device_list.admits(certificate):
            accepted.append(certificate)
        else:
            refused.append(certificate.device_id)
    served = {c.device_id for c in certificates}
    missing = tuple(d.device_id for d in device_list.devices if d.device_id not in served)
    return CheckedDevices(device_list, tuple(accepted), tuple(sorted(refused)), missing)
