"""Reading the stored signed device lists: which devices an account's own key names.

Pure functions over stored bytes, cached by those bytes (a stored list or certificate
never changes under the same bytes), so the relay's per-SEND check costs a dictionary
lookup once the account's list and devices have been seen. Checking a list that a client
submits (signature, version, exact device set) is keys.services' job; this module only
reads lists that were checked when they were stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from protocol.devicelist import SignedDeviceList, certificate_digest
from protocol.errors import ProtocolError
from protocol.keys import DeviceCertificate

# (device_id, registration_id, SHA-256 of the encoded certificate)
ListedKey = tuple[int, int, bytes]


@lru_cache(maxsize=8192)
def certificate_sha256(encoded: bytes) -> bytes | None:
    """The digest a device list names a stored certificate by; None if it does not decode
    (such a device can never be listed)."""
    try:
        certificate = DeviceCertificate.decode(encoded)
    except ProtocolError:
        return None
    return certificate_digest(certificate)


@lru_cache(maxsize=2048)
def listed_keys(encoded_list: bytes) -> frozenset[ListedKey]:
    """The devices a stored list names; empty for no list (or one that no longer decodes)."""
    if not encoded_list:
        return frozenset()
    try:
        device_list = SignedDeviceList.decode(encoded_list)
    except ProtocolError:
        return frozenset()
    return frozenset(
        (d.device_id, d.registration_id, d.certificate_sha256) for d in device_list.devices
    )


def device_key(device_id: int, registration_id: int, certificate: bytes) -> ListedKey | None:
    digest = certificate_sha256(bytes(certificate))
    return None if digest is None else (device_id, registration_id, digest)


def listed_device_ids(encoded_list: bytes, devices: Iterable[tuple[int, int, bytes]]) -> set[int]:
    """Of ``devices`` (device_id, registration_id, encoded certificate), the ids that the
    stored list names with exactly that registration id and certificate."""
    listed = listed_keys(bytes(encoded_list))
    if not listed:
        return set()
    return {
        device_id
        for device_id, registration_id, certificate in devices
        if device_key(device_id, registration_id, certificate) in listed
    }
