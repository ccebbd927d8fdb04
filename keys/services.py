"""Accounts, devices and prekeys: every write of the keys app happens here.

Views parse and authorise, then call one function of this module; nothing else writes to
the keys tables. Every refusal is a ``ServiceError`` carrying a code from
``protocol.errors`` and naming the offending request field (docs/api.md).

What this module deletes, and why nothing else:

- ``revoke_device`` deletes one device row. The database cascades to its one-time and KEM
  prekeys and to its queued envelopes (messaging.Envelope), and the token hash lives on
  the row, so the token stops working with the same commit. ``remove_device`` (the admin)
  and ``purge_idle_devices`` (the retention purge) delete device rows the same way, but
  without a new signed list: the stored list then names a device that is no longer served.
  Nothing here deletes an account, a user or another account's rows.
- The purge also deletes expired link tokens and provisioning slots; a provisioning slot
  is deleted as well when its new device takes the sealed message.
- ``claim_bundles`` deletes the one-time prekeys it hands out, one row per kind and
  device, each with a single ``DELETE ... RETURNING`` statement: the database picks the
  row and removes it in one step, so two concurrent claims can never both read the same
  key (a SELECT followed by a DELETE could). On PostgreSQL the inner SELECT takes the row
  ``FOR UPDATE SKIP LOCKED``: a concurrent claim skips a row another transaction has
  already taken instead of waiting for it and then finding it gone. SQLite has one writer
  at a time (settings: BEGIN IMMEDIATE), so the plain statement is already atomic.
  The last-resort KEM prekey lives on the device row and is never deleted by a claim.

Signed device lists (protocol/devicelist.py). Every change of an account's devices (sign-up,
adding, revoking) brings the new list, signed by the account key: it must verify with the
key on file for this username, have a version above the stored one, and name exactly the
devices the account has after the change. It is stored in the transaction that changes the
devices, under the account row lock, so two changes cannot both build on one version.

Link tokens are used with one ``UPDATE ... WHERE used_at IS NULL`` inside the transaction
that adds the device: of two concurrent registrations with one token exactly one updates
the row, and a registration that fails for another reason rolls the use back with it.

Channel-layer events (``prekeys.low``, ``device.revoked``) go out only after the
transaction commits, and are hints: group sends are at-most-once, the database is the
truth.
"""

from __future__ import annotations

import base64
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from project.errors import ServiceError
from protocol import primitives
from protocol.devicelist import SignedDeviceList
from protocol.encoding import Reader
from protocol.errors import ErrorCode, ProtocolError
from protocol.identifiers import normalize_username
from protocol.keys import (
    DeviceCertificate,
    KemPreKey,
    OneTimePreKey,
    PreKeyBundle,
    SignedPreKey,
)
from protocol.provisioning import ADDRESS_BYTES

from . import models, throttles
from .tokens import generate_token, hash_token

MAX_DEVICE_NAME = 64
DEVICE_LIST_FIELD: Final = "device_list_b64"
# Linking (docs/api.md, "Linking a new device").
LINK_TOKEN_TTL: Final = timedelta(minutes=10)
PROVISIONING_TTL: Final = timedelta(minutes=10)
MAX_SEALED_BYTES: Final = 4096
MAX_PROVISIONING_WAIT_SECONDS: Final = 30
# New provisioning addresses per client IP address and minute (rate_limited beyond).
PROVISIONING_RATE: Final = 10
PROVISIONING_WINDOW_SECONDS: Final = 60


# --- what callers hand in and get back ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceInput:
    """A new device as the API decoded it: protocol objects, not yet checked against the
    account (signatures, flags, limits and ids are checked here, in the service)."""

    certificate: DeviceCertificate
    signed_prekey: SignedPreKey
    last_resort_kem_prekey: KemPreKey
    one_time_prekeys: tuple[OneTimePreKey, ...] = ()
    kem_prekeys: tuple[KemPreKey, ...] = ()
    name: str = ""


@dataclass(frozen=True, slots=True)
class PreKeyCounts:
    """Unclaimed one-time prekeys stored for one device, per kind."""

    one_time_prekeys: int
    kem_prekeys: int


@dataclass(frozen=True, slots=True)
class PublishedDevice:
    device_id: int
    registration_id: int
    certificate: bytes  # encoded DeviceCertificate


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """An account's identity key, its signed device list and its devices' certificates;
    reading it consumes nothing."""

    username: str
    identity_key: bytes
    device_list: bytes  # encoded SignedDeviceList; empty for an account that has none
    devices: tuple[PublishedDevice, ...]


@dataclass(frozen=True, slots=True)
class IssuedLinkToken:
    link_token: str  # shown once; only its hash is stored
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewProvisioningSlot:
    address: str  # base64url without padding
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ClaimedBundle:
    device_id: int
    registration_id: int
    bundle: bytes  # encoded PreKeyBundle


@dataclass(frozen=True, slots=True)
class ClaimedBundles:
    username: str
    identity_key: bytes
    bundles: tuple[ClaimedBundle, ...]


# --- helpers ------------------------------------------------------------------------------


def device_group(device_pk: int) -> str:
    """The channel-layer group of one device's relay connections (the relay joins it)."""
    return f"device.{device_pk}"


def decode_exact[T](read: Callable[[Reader], T], data: bytes, what: str) -> T:
    """Decode one protocol value that must fill ``data`` exactly (no trailing bytes)."""
    reader = Reader(bytes(data))
    value = read(reader)
    reader.end(what)
    return value


def _limit(name: str) -> int:
    return int(settings.SEALPOST[name])


def _refusal(code: ErrorCode, message: str, field: str | None = None) -> ServiceError:
    """A ServiceError whose message, and ``fields`` entry, name the request field."""
    if field is None:
        return ServiceError(code, message)
    return ServiceError(
        code, f"{field}: {message}", fields={field: [{"code": code.slug, "message": message}]}
    )


class ConflictError(ServiceError):
    """A refusal answered with 409 whatever its code: a provisioning slot filled twice
    is an ``invalid_request`` (docs/api.md), but one that conflicts with the stored state."""

    @property
    def http_status(self) -> int:
        return 409


def _send_after_commit(device_pk: int, message: dict[str, Any]) -> None:
    """Tell the device's relay connections something once (and only if) this commits."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(device_group(device_pk), message)

    # robust: a channel layer that is down must not turn a committed write into a 500.
    transaction.on_commit(send, robust=True)


def _stored_certificate(device: models.Device) -> DeviceCertificate:
    return decode_exact(DeviceCertificate.read, device.certificate, "device certificate")


def _stored_last_resort(device: models.Device) -> KemPreKey:
    return decode_exact(KemPreKey.read, device.last_resort_kem_prekey, "KEM prekey")


# --- validation of keys the server can check ----------------------------------------------


def _check_signed_prekey(signing_key: bytes, prekey: SignedPreKey, field: str) -> None:
    try:
        prekey.verify(signing_key)
    except ProtocolError as exc:
        raise _refusal(
            exc.code,
            f"signed prekey {prekey.key_id}: signature does not verify with the device signing key",
            field,
        ) from None


def _check_kem_prekey(
    signing_key: bytes, prekey: KemPreKey, *, last_resort: bool, field: str
) -> None:
    if prekey.last_resort != last_resort:
        expected = "a last-resort" if last_resort else "a one-time"
        raise _refusal(
            ErrorCode.INVALID_VALUE,
            f"KEM prekey {prekey.key_id} has last_resort = {int(prekey.last_resort)}; "
            f"this field takes {expected} KEM prekey",
            field,
        )
    try:
        prekey.verify(signing_key)
    except ProtocolError as exc:
        raise _refusal(
            exc.code,
            f"KEM prekey {prekey.key_id}: signature does not verify with the device signing key",
            field,
        ) from None


def _check_prekey_batch(
    signing_key: bytes,
    one_time: Sequence[OneTimePreKey],
    kem: Sequence[KemPreKey],
    last_resort_kem_id: int,
    prefix: str,
) -> None:
    """Sizes, flags, signatures and ids within one upload. Ids already stored are checked
    by the caller, inside its transaction."""
    limit = _limit("MAX_PREKEYS_PER_UPLOAD")
    for field, batch in (("one_time_prekeys_b64", one_time), ("kem_prekeys_b64", kem)):
        if len(batch) > limit:
            raise _refusal(
                ErrorCode.PREKEY_BATCH_TOO_LARGE,
                f"{len(batch)} prekeys in one upload; at most {limit} of a kind",
                prefix + field,
            )
    for index, prekey in enumerate(kem):
        _check_kem_prekey(
            signing_key, prekey, last_resort=False, field=f"{prefix}kem_prekeys_b64[{index}]"
        )
    _check_unique_ids(one_time, prefix + "one_time_prekeys_b64", "one-time prekey")
    _check_unique_ids(kem, prefix + "kem_prekeys_b64", "KEM prekey")
    # Clients look KEM prekeys up by id in one table (protocol.session.PreKeyStore), so a
    # one-time KEM prekey may not share its id with the last-resort one.
    for index, prekey in enumerate(kem):
        if prekey.key_id == last_resort_kem_id:
            raise _refusal(
                ErrorCode.DUPLICATE_PREKEY_ID,
                f"KEM prekey id {prekey.key_id} is the last-resort KEM prekey's id",
                f"{prefix}kem_prekeys_b64[{index}]",
            )


def _check_unique_ids(prekeys: Sequence[OneTimePreKey | KemPreKey], field: str, what: str) -> None:
    seen: set[int] = set()
    for index, prekey in enumerate(prekeys):
        if prekey.key_id in seen:
            raise _refusal(
                ErrorCode.DUPLICATE_PREKEY_ID,
                f"{what} id {prekey.key_id} appears twice in this upload",
                f"{field}[{index}]",
            )
        seen.add(prekey.key_id)


def _check_not_stored(
    device_pk: int,
    one_time: Sequence[OneTimePreKey],
    kem: Sequence[KemPreKey],
    prefix: str,
) -> None:
    max_stored = _limit("MAX_PREKEYS_STORED")
    kinds: tuple[tuple[Any, Sequence[OneTimePreKey | KemPreKey], str, str], ...] = (
        (models.OneTimePreKey, one_time, "one_time_prekeys_b64", "one-time prekey"),
        (models.KemPreKey, kem, "kem_prekeys_b64", "KEM prekey"),
    )
    for model, batch, field, what in kinds:
        if not batch:
            continue
        stored = model.objects.filter(device_id=device_pk)
        count = stored.count()
        if count + len(batch) > max_stored:
            raise _refusal(
                ErrorCode.PREKEY_STORE_FULL,
                f"{count} {what}s are stored and {len(batch)} more would exceed the limit of "
                f"{max_stored}",
                prefix + field,
            )
        ids = [prekey.key_id for prekey in batch]
        taken = set(stored.filter(key_id__in=ids).values_list("key_id", flat=True))
        for index, key_id in enumerate(ids):
            if key_id in taken:
                raise _refusal(
                    ErrorCode.DUPLICATE_PREKEY_ID,
                    f"{what} id {key_id} is already stored",
                    f"{prefix}{field}[{index}]",
                )


def _check_device_input(account_key: bytes, device: DeviceInput, prefix: str) -> None:
    """Everything about a new device that needs no database: the chain of signatures from
    the account identity key down to every prekey, the flags and the ids."""
    certificate = device.certificate
    try:
        certificate.verify(account_key)
    except ProtocolError as exc:
        raise _refusal(
            exc.code,
            f"certificate of device {certificate.device_id} is not signed by the account "
            "identity key",
            prefix + "certificate_b64",
        ) from None
    signing_key = certificate.signing_key
    _check_signed_prekey(signing_key, device.signed_prekey, prefix + "signed_prekey_b64")
    _check_kem_prekey(
        signing_key,
        device.last_resort_kem_prekey,
        last_resort=True,
        field=prefix + "last_resort_kem_prekey_b64",
    )
    _check_prekey_batch(
        signing_key,
        device.one_time_prekeys,
        device.kem_prekeys,
        device.last_resort_kem_prekey.key_id,
        prefix,
    )
    if len(device.name) > MAX_DEVICE_NAME:
        raise _refusal(
            ErrorCode.INVALID_VALUE,
            f"a device name has at most {MAX_DEVICE_NAME} characters",
            prefix + "name",
        )


# --- signed device lists --------------------------------------------------------------------


def _verify_device_list(account_key: bytes, username: str, device_list: SignedDeviceList) -> None:
    """The list must be signed by the account key for this username (no database)."""
    try:
        device_list.verify(account_key, username)
    except ProtocolError as exc:
        message = exc.message
        if device_list.username == username:
            message = "the device list is not signed by the account identity key"
        raise _refusal(exc.code, message, DEVICE_LIST_FIELD) from None


def _check_device_list_version(device_list: SignedDeviceList, stored_version: int) -> None:
    if device_list.version <= stored_version:
        least = stored_version + 1
        raise _refusal(
            ErrorCode.INVALID_VALUE,
            f"device list version {device_list.version} is not above the stored version "
            f"{stored_version}; send version {least} or higher",
            DEVICE_LIST_FIELD,
        )


def _ids(ids: Sequence[int]) -> str:
    return ("device " if len(ids) == 1 else "devices ") + ", ".join(str(i) for i in ids)


def _check_device_list_names(
    device_list: SignedDeviceList,
    username: str,
    devices: Sequence[tuple[int, DeviceCertificate | None]],
) -> None:
    """DEVICE_MISMATCH unless the list names exactly ``devices`` (device id, registration
    id and certificate digest: SignedDeviceList.admits). A stored certificate that does
    not decode (None) can never be named."""
    listed = {entry.device_id for entry in device_list.devices}
    wanted = dict(devices)
    missing = sorted(wanted.keys() - listed)
    extra = sorted(listed - wanted.keys())
    differs = sorted(
        device_id
        for device_id in wanted.keys() & listed
        if (certificate := wanted[device_id]) is None or not device_list.admits(certificate)
    )
    if not (missing or extra or differs):
        return
    parts = []
    if missing:
        parts.append(f"leaves out {_ids(missing)}")
    if extra:
        parts.append(f"names {_ids(extra)}, which the account would not have")
    if differs:
        parts.append(f"names {_ids(differs)} with another registration id or certificate")
    raise _refusal(
        ErrorCode.DEVICE_MISMATCH,
        f"device list version {device_list.version} does not name exactly the devices "
        f"{username!r} has after this change: it " + "; it ".join(parts),
        DEVICE_LIST_FIELD,
    )


def _account_devices(account: models.Account) -> list[tuple[int, DeviceCertificate | None]]:
    """The account's devices as a device list names them: (device id, certificate)."""
    out: list[tuple[int, DeviceCertificate | None]] = []
    for device_id, encoded in (
        models.Device.objects.filter(account=account)
        .order_by("device_id")
        .values_list("device_id", "certificate")
    ):
        try:
            certificate: DeviceCertificate | None = DeviceCertificate.decode(bytes(encoded))
        except ProtocolError:
            certificate = None
        out.append((device_id, certificate))
    return out


def _store_device_list(account_pk: int, device_list: SignedDeviceList) -> None:
    # Decoding refused every non-canonical encoding, so this is byte for byte what the
    # client signed and sent.
    models.Account.objects.filter(pk=account_pk).update(
        device_list=device_list.encode(), device_list_version=device_list.version
    )


def _create_device(account: models.Account, device: DeviceInput) -> tuple[models.Device, str]:
    """Insert a checked device and its prekeys (the caller holds the transaction)."""
    token, token_hash = generate_token()
    certificate = device.certificate
    row = models.Device.objects.create(
        account=account,
        device_id=certificate.device_id,
        registration_id=certificate.registration_id,
        certificate=certificate.encode(),
        identity_key=certificate.identity_key,
        name=device.name,
        token_hash=token_hash,
        signed_prekey=device.signed_prekey.encode(),
        last_resort_kem_prekey=device.last_resort_kem_prekey.encode(),
    )
    _store_prekeys(row.pk, device.one_time_prekeys, device.kem_prekeys)
    return row, token


def _store_prekeys(
    device_pk: int, one_time: Sequence[OneTimePreKey], kem: Sequence[KemPreKey]
) -> None:
    # bulk_create keeps the upload's order in the primary keys, which is the order a
    # claim hands the keys out in.
    models.OneTimePreKey.objects.bulk_create(
        models.OneTimePreKey(device_id=device_pk, key_id=p.key_id, encoded=p.encode())
        for p in one_time
    )
    models.KemPreKey.objects.bulk_create(
        models.KemPreKey(device_id=device_pk, key_id=p.key_id, encoded=p.encode()) for p in kem
    )


def _live_account(username: str) -> models.Account:
    try:
        name = normalize_username(username)
    except ProtocolError:
        name = None
    account = (
        models.Account.objects.select_related("user")
        .filter(user__username=name, user__is_active=True)
        .first()
        if name
        else None
    )
    if account is None:
        raise _refusal(ErrorCode.UNKNOWN_ACCOUNT, f"there is no account {username[:40]!r}")
    return account


def _username_taken(username: str) -> bool:
    # Case-insensitive: a user made outside the API (createsuperuser) may have capitals.
    return bool(get_user_model().objects.filter(username__iexact=username).exists())


def _device_of(account: models.Account, device_id: int) -> models.Device:
    device = models.Device.objects.filter(account=account, device_id=device_id).first()
    if device is None:
        # Another account's device looks exactly like a device that does not exist.
        raise _refusal(
            ErrorCode.UNKNOWN_DEVICE, f"account {account.username!r} has no device {device_id}"
        )
    return device


# --- accounts and devices -----------------------------------------------------------------


def register_account(
    username: str,
    password: str,
    identity_key: bytes,
    device: DeviceInput,
    device_list: SignedDeviceList,
    *,
    then: Callable[[models.Account], None] | None = None,
) -> tuple[models.Device, str]:
    """Create an account (Django user + identity key + signed device list) and its first
    device, in one step. The list must be signed by ``identity_key`` for this username,
    have a version of at least 1 and name exactly the first device. ``then`` runs in the
    same transaction once the account exists (sign-up records consent and the age check).

    Returns the device and its bearer token, which is never stored and cannot be shown
    again.
    """
    try:
        username = normalize_username(username)
    except ProtocolError as exc:
        raise _refusal(exc.code, exc.message, "username") from None
    if len(identity_key) != primitives.ED25519_PUBLIC_BYTES:
        raise _refusal(
            ErrorCode.BAD_KEY,
            f"an Ed25519 public key is {primitives.ED25519_PUBLIC_BYTES} bytes, "
            f"got {len(identity_key)}",
            "identity_key_b64",
        )
    _check_device_input(identity_key, device, "device.")
    _verify_device_list(identity_key, username, device_list)
    _check_device_list_version(device_list, 0)
    _check_device_list_names(
        device_list, username, [(device.certificate.device_id, device.certificate)]
    )

    user_model = get_user_model()
    user = user_model(username=username)
    try:
        password_validation.validate_password(password, user=user)
    except DjangoValidationError as exc:
        messages = [str(message) for message in exc.messages]
        raise ServiceError(
            ErrorCode.WEAK_PASSWORD,
            " ".join(messages),
            fields={
                "password": [
                    {"code": ErrorCode.WEAK_PASSWORD.slug, "message": message}
                    for message in messages
                ]
            },
        ) from None
    # Hashing is deliberately slow: do it before the transaction takes the write lock.
    user.set_password(password)

    taken = _refusal(ErrorCode.USERNAME_TAKEN, f"username {username!r} is taken", "username")
    if _username_taken(username):
        raise taken
    try:
        with transaction.atomic():
            user.save()
            account = models.Account.objects.create(
                user=user,
                identity_key=identity_key,
                device_list=device_list.encode(),
                device_list_version=device_list.version,
            )
            created = _create_device(account, device)
            if then is not None:
                then(account)
            return created
    except IntegrityError:
        # Two sign-ups for one name at once: the unique index decided.
        if user_model.objects.filter(username=username).exists():
            raise taken from None
        raise


def add_device(
    account: models.Account,
    device: DeviceInput,
    device_list: SignedDeviceList,
    *,
    field_prefix: str = "",
    link_token: str | None = None,
) -> tuple[models.Device, str]:
    """Add a device to an account, with the account's new signed device list.

    The certificate must be signed by the identity key on file; the list must be signed by
    it for this username, have a version above the stored one and name exactly the
    existing devices and the new one. With ``link_token`` (the caller authenticated with
    nothing else) the token must be the account's, unused and unexpired, and is used in
    the transaction that adds the device. ``field_prefix`` is where the device's fields
    sit in the request body.
    """
    token_hash = None
    if link_token is not None:
        token_hash = hash_token(link_token)
        _check_link_token(account, token_hash)  # before any other work: it authenticates
    _check_device_input(bytes(account.identity_key), device, field_prefix)
    _verify_device_list(bytes(account.identity_key), account.username, device_list)
    device_id = device.certificate.device_id
    id_taken = _refusal(
        ErrorCode.DEVICE_ID_TAKEN,
        f"account {account.username!r} already has a device {device_id}",
        field_prefix + "certificate_b64",
    )
    try:
        with transaction.atomic():
            # The account row lock serialises concurrent additions, so the device count
            # cannot be exceeded by two requests that each saw room for one more, and two
            # lists cannot both build on one stored version.
            locked = models.Account.objects.select_for_update().get(pk=account.pk)
            if token_hash is not None:
                _use_link_token(locked, token_hash)
            limit = _limit("MAX_DEVICES_PER_ACCOUNT")
            if locked.devices.count() >= limit:
                raise _refusal(
                    ErrorCode.DEVICE_LIMIT_REACHED,
                    f"account {account.username!r} already has {limit} devices, the maximum",
                )
            if locked.devices.filter(device_id=device_id).exists():
                raise id_taken
            _check_device_list_version(device_list, locked.device_list_version)
            _check_device_list_names(
                device_list,
                account.username,
                [*_account_devices(locked), (device_id, device.certificate)],
            )
            created = _create_device(locked, device)
            _store_device_list(locked.pk, device_list)
            return created
    except IntegrityError:
        if models.Device.objects.filter(account=account, device_id=device_id).exists():
            raise id_taken from None
        raise


def add_linked_device(
    username: str,
    link_token: str,
    device: DeviceInput,
    device_list: SignedDeviceList,
    *,
    field_prefix: str = "",
) -> tuple[models.Device, str]:
    """Register a device with a link token (docs/api.md, "Linking a new device"): the
    token is the only credential. A token for no account, or another, is not found."""
    try:
        account = _live_account(username)
    except ServiceError:
        raise _link_not_found() from None
    return add_device(
        account, device, device_list, field_prefix=field_prefix, link_token=link_token
    )


def list_devices(account: models.Account) -> list[models.Device]:
    return list(models.Device.objects.filter(account=account).order_by("device_id"))


def rename_device(account: models.Account, device_id: int, name: str) -> models.Device:
    if len(name) > MAX_DEVICE_NAME:
        raise _refusal(
            ErrorCode.INVALID_VALUE,
            f"a device name has at most {MAX_DEVICE_NAME} characters",
            "name",
        )
    device = _device_of(account, device_id)
    models.Device.objects.filter(pk=device.pk).update(name=name)
    device.name = name
    return device


def revoke_device(account: models.Account, device_id: int, device_list: SignedDeviceList) -> None:
    """Delete a device: its token, prekeys and queued envelopes go with the row, at once.

    ``device_list`` is the account's new signed list: signed by the account key, a version
    above the stored one, naming exactly the devices that remain (a device may revoke
    itself). It is stored in the same transaction. The device's open relay connections are
    told after the commit (``device.revoked``), so the relay can close them (docs/api.md:
    close code 4403).
    """
    with transaction.atomic():
        locked = (
            models.Account.objects.select_for_update(of=("self",))
            .select_related("user")
            .get(pk=account.pk)
        )
        device = _device_of(locked, device_id)
        _verify_device_list(bytes(locked.identity_key), locked.username, device_list)
        _check_device_list_version(device_list, locked.device_list_version)
        remaining = [entry for entry in _account_devices(locked) if entry[0] != device_id]
        _check_device_list_names(device_list, locked.username, remaining)
        device_pk = device.pk
        device.delete()
        _store_device_list(locked.pk, device_list)
        _send_after_commit(device_pk, {"type": "device.revoked"})


def remove_device(device: models.Device) -> None:
    """Delete a device without a new signed list (the admin's delete): as revoking, but the
    stored list keeps naming the device, which clients then see is no longer served and
    skip. Only the account key can sign a list; the server never can."""
    with transaction.atomic():
        device_pk = device.pk
        if models.Device.objects.filter(pk=device_pk).delete()[0]:
            _send_after_commit(device_pk, {"type": "device.revoked"})


# --- linking a new device ---------------------------------------------------------------------


def _link_not_found() -> ServiceError:
    return ServiceError(ErrorCode.LINK_NOT_FOUND, "no such link token, or it was used already")


def _link_expired() -> ServiceError:
    return ServiceError(ErrorCode.LINK_EXPIRED, "the link token has expired; ask for a new one")


def create_link_token(device: models.Device) -> IssuedLinkToken:
    """A single-use permission, for 10 minutes, to register one device of ``device``'s
    account; only its hash is stored."""
    token, token_hash = generate_token()
    expires_at = timezone.now() + LINK_TOKEN_TTL
    models.LinkToken.objects.create(
        account_id=device.account_id, token_hash=token_hash, expires_at=expires_at
    )
    return IssuedLinkToken(token, expires_at)


def _link_token_refusal(account: models.Account, token_hash: str) -> ServiceError:
    """Why this account's token cannot be used now: never issued or used, or expired."""
    row = (
        models.LinkToken.objects.filter(account=account, token_hash=token_hash)
        .only("used_at", "expires_at")
        .first()
    )
    if row is None or row.used_at is not None:
        return _link_not_found()
    return _link_expired()


def _check_link_token(account: models.Account, token_hash: str) -> None:
    """Refuse early, before any key is checked; the token is used only by _use_link_token."""
    usable = models.LinkToken.objects.filter(
        account=account, token_hash=token_hash, used_at__isnull=True, expires_at__gt=timezone.now()
    )
    if not usable.exists():
        raise _link_token_refusal(account, token_hash)


def _use_link_token(account: models.Account, token_hash: str) -> None:
    """Mark the token used, inside the caller's transaction: one conditional UPDATE, so of
    two registrations racing with one token exactly one changes the row (no read first)."""
    used = models.LinkToken.objects.filter(
        account=account, token_hash=token_hash, used_at__isnull=True, expires_at__gt=timezone.now()
    ).update(used_at=timezone.now())
    if used != 1:
        raise _link_token_refusal(account, token_hash)


def _check_provisioning_rate(client: str) -> None:
    """At most PROVISIONING_RATE new addresses per client address and minute (a fixed
    window in Django's cache; each server process has its own with the default cache)."""
    now = time.time()
    window = int(now // PROVISIONING_WINDOW_SECONDS)
    key = f"sealpost.provisioning.{window}.{client or '-'}"
    cache.add(key, 0, timeout=PROVISIONING_WINDOW_SECONDS * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=PROVISIONING_WINDOW_SECONDS * 2)
        count = 1
    if count > PROVISIONING_RATE:
        retry_after = max(1, math.ceil((window + 1) * PROVISIONING_WINDOW_SECONDS - now))
        raise ServiceError(
            ErrorCode.RATE_LIMITED,
            f"more than {PROVISIONING_RATE} provisioning addresses a minute from this "
            f"address; retry in {retry_after} s",
            retry_after=retry_after,
        )


def create_provisioning_slot(client: str) -> NewProvisioningSlot:
    """A new address (16 random bytes, base64url) for a sealed ProvisionMessage, for 10
    minutes. ``client`` is the caller's IP address, for the rate limit."""
    _check_provisioning_rate(client)
    address = base64.urlsafe_b64encode(secrets.token_bytes(ADDRESS_BYTES)).rstrip(b"=").decode()
    expires_at = timezone.now() + PROVISIONING_TTL
    models.ProvisioningSlot.objects.create(address=address, expires_at=expires_at)
    return NewProvisioningSlot(address, expires_at)


def _slot_not_found(address: str) -> ServiceError:
    return ServiceError(
        ErrorCode.LINK_NOT_FOUND,
        f"no provisioning address {address[:24]!r} (never made, taken already or purged)",
    )


def _slot_expired() -> ServiceError:
    return ServiceError(ErrorCode.LINK_EXPIRED, "the provisioning address has expired")


def fill_provisioning_slot(address: str, sealed: bytes) -> None:
    """Put the sealed ProvisionMessage at ``address``, once (one conditional UPDATE)."""
    field = "sealed_b64"
    if not sealed:
        raise _refusal(ErrorCode.INVALID_VALUE, "the sealed message is empty", field)
    if len(sealed) > MAX_SEALED_BYTES:
        raise _refusal(
            ErrorCode.TOO_LARGE,
            f"the sealed message is {len(sealed)} bytes; at most {MAX_SEALED_BYTES}",
            field,
        )
    now = timezone.now()
    filled = models.ProvisioningSlot.objects.filter(
        address=address, sealed__isnull=True, expires_at__gt=now
    ).update(sealed=sealed)
    if filled:
        return
    slot = models.ProvisioningSlot.objects.filter(address=address).only("expires_at").first()
    if slot is None:
        raise _slot_not_found(address)
    if slot.expires_at <= now:
        raise _slot_expired()
    raise ConflictError(
        ErrorCode.INVALID_REQUEST,
        "this provisioning address already holds a sealed message; ask the new device for a "
        "new link code",
    )


def take_provisioning_message(address: str) -> bytes | None:
    """The sealed message at ``address`` if it is there, deleting the slot in the same
    transaction (so it is handed out once); None while it is empty. LINK_NOT_FOUND and
    LINK_EXPIRED as for filling it.

    Called about four times a second by a waiting poll: the empty case only reads, and
    takes no write lock.
    """
    slot = (
        models.ProvisioningSlot.objects.filter(address=address).only("expires_at", "sealed").first()
    )
    if slot is None:
        raise _slot_not_found(address)
    if slot.expires_at <= timezone.now():
        raise _slot_expired()
    if slot.sealed is None:
        return None
    with transaction.atomic():
        row = (
            models.ProvisioningSlot.objects.select_for_update()
            .filter(pk=slot.pk, sealed__isnull=False)
            .only("sealed")
            .first()
        )
        if row is None or row.sealed is None:  # another poll took it first
            raise _slot_not_found(address)
        sealed = bytes(row.sealed)
        models.ProvisioningSlot.objects.filter(pk=row.pk).delete()
    return sealed


# --- retention purgers (run by compliance.services.purge_expired) ----------------------------


def _delete_in_batches(
    select: Callable[[], QuerySet[Any]],
    batch: int,
    after: Callable[[list[int]], None] | None = None,
) -> int:
    """Delete the rows ``select()`` matches, ``batch`` at a time, each batch its own
    transaction; the number of rows deleted (cascades not counted). A batch's rows are
    locked as they are picked (PostgreSQL; SQLite holds the write lock), so a row that
    stops matching meanwhile (a device seen again) is not picked, and what is picked is
    what is deleted. ``after`` gets each batch's primary keys inside its transaction."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    total = 0
    while True:
        with transaction.atomic():
            queryset = select()
            ids = list(
                queryset.select_for_update().order_by("pk").values_list("pk", flat=True)[:batch]
            )
            if not ids:
                return total
            model = queryset.model
            _, per_model = model.objects.filter(pk__in=ids).delete()
            if after is not None:
                after(ids)
        total += per_model.get(model._meta.label, 0)


def idle_devices(now: datetime) -> QuerySet[models.Device]:
    """Devices unused (``last_seen_at``, else ``created_at``) for at least the policy's
    idle-device expiry as of ``now``."""
    cutoff = now - timedelta(seconds=_limit("IDLE_DEVICE_EXPIRY_SECONDS"))
    return models.Device.objects.filter(
        Q(last_seen_at__lte=cutoff) | Q(last_seen_at__isnull=True, created_at__lte=cutoff)
    )


def purge_idle_devices(now: datetime, batch: int) -> int:
    """Delete idle devices with their prekeys and queued envelopes (the database cascades);
    their relay connections are told after each batch commits (``device.revoked``)."""

    def tell(pks: list[int]) -> None:
        for pk in pks:
            _send_after_commit(pk, {"type": "device.revoked"})

    return _delete_in_batches(lambda: idle_devices(now), batch, tell)


def purge_expired_link_tokens(now: datetime, batch: int) -> int:
    return _delete_in_batches(lambda: models.LinkToken.objects.filter(expires_at__lte=now), batch)


def purge_expired_provisioning_slots(now: datetime, batch: int) -> int:
    return _delete_in_batches(
        lambda: models.ProvisioningSlot.objects.filter(expires_at__lte=now), batch
    )


# --- prekeys of one device ------------------------------------------------------------------


def prekey_counts(device: models.Device) -> PreKeyCounts:
    return PreKeyCounts(
        one_time_prekeys=models.OneTimePreKey.objects.filter(device_id=device.pk).count(),
        kem_prekeys=models.KemPreKey.objects.filter(device_id=device.pk).count(),
    )


def upload_prekeys(
    device: models.Device,
    one_time: Sequence[OneTimePreKey],
    kem: Sequence[KemPreKey],
    *,
    field_prefix: str = "",
) -> PreKeyCounts:
    """Store more one-time prekeys (all or none of them); returns the new counts."""
    _check_prekey_batch(
        _stored_certificate(device).signing_key,
        one_time,
        kem,
        _stored_last_resort(device).key_id,
        field_prefix,
    )
    try:
        with transaction.atomic():
            # Serialises uploads of one device, so the stored limit holds.
            models.Device.objects.select_for_update().filter(pk=device.pk).first()
            _check_not_stored(device.pk, one_time, kem, field_prefix)
            _store_prekeys(device.pk, one_time, kem)
            return prekey_counts(device)
    except IntegrityError:
        raise _refusal(
            ErrorCode.DUPLICATE_PREKEY_ID, "a prekey id in this upload is already stored"
        ) from None


def rotate_signed_prekey(device: models.Device, prekey: SignedPreKey) -> None:
    _check_signed_prekey(_stored_certificate(device).signing_key, prekey, "signed_prekey_b64")
    models.Device.objects.filter(pk=device.pk).update(signed_prekey=prekey.encode())


def rotate_last_resort_kem_prekey(device: models.Device, prekey: KemPreKey) -> None:
    field = "kem_prekey_b64"
    signing_key = _stored_certificate(device).signing_key
    _check_kem_prekey(signing_key, prekey, last_resort=True, field=field)
    with transaction.atomic():
        models.Device.objects.select_for_update().filter(pk=device.pk).first()
        if models.KemPreKey.objects.filter(device_id=device.pk, key_id=prekey.key_id).exists():
            raise _refusal(
                ErrorCode.DUPLICATE_PREKEY_ID,
                f"KEM prekey id {prekey.key_id} is already a stored one-time KEM prekey",
                field,
            )
        models.Device.objects.filter(pk=device.pk).update(last_resort_kem_prekey=prekey.encode())


# --- other accounts' keys --------------------------------------------------------------------


def account_keys(username: str) -> AccountKeys:
    account = _live_account(username)
    devices = models.Device.objects.filter(account=account).order_by("device_id")
    return AccountKeys(
        username=account.username,
        identity_key=bytes(account.identity_key),
        device_list=bytes(account.device_list),
        devices=tuple(
            PublishedDevice(d.device_id, d.registration_id, bytes(d.certificate)) for d in devices
        ),
    )


def _take_oldest_prekey(model: Any, device_pk: int) -> bytes | None:
    """Remove the device's oldest unclaimed prekey of one kind and return its encoding.

    One statement picks and deletes the row, so it is handed out at most once (see the
    module docstring).
    """
    if connection.vendor == "postgresql":
        lock = " FOR UPDATE SKIP LOCKED"
    elif connection.vendor == "sqlite":
        lock = ""
    else:  # pragma: no cover - settings only offer SQLite and PostgreSQL
        raise NotImplementedError(f"prekey claims are not implemented for {connection.vendor}")
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    pk = quote(meta.pk.column)
    device = quote(meta.get_field("device").column)
    encoded = quote(meta.get_field("encoded").column)
    # Every interpolated name comes from the model's metadata, never from a request.
    sql = (
        f"DELETE FROM {table} WHERE {pk} = "  # noqa: S608
        f"(SELECT {pk} FROM {table} WHERE {device} = %s ORDER BY {pk} LIMIT 1{lock}) "
        f"RETURNING {encoded}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [device_pk])
        row = cursor.fetchone()
    return None if row is None else bytes(row[0])


def _claim_one(
    identity_key: bytes, device: models.Device, requester_account_pk: int | None
) -> ClaimedBundle:
    # Beyond the claim limits the bundle carries no one-time prekey of either kind: the
    # signed prekey and the last-resort KEM prekey only (keys.throttles).
    if throttles.one_time_prekeys_allowed(requester_account_pk, device.pk):
        one_time = _take_oldest_prekey(models.OneTimePreKey, device.pk)
        kem = _take_oldest_prekey(models.KemPreKey, device.pk)
    else:
        one_time = kem = None
    bundle = PreKeyBundle(
        account_identity_key=identity_key,
        certificate=_stored_certificate(device),
        signed_prekey=decode_exact(SignedPreKey.read, device.signed_prekey, "signed prekey"),
        one_time_prekey=(
            None
            if one_time is None
            else decode_exact(OneTimePreKey.read, one_time, "one-time prekey")
        ),
        kem_prekey=(
            _stored_last_resort(device)
            if kem is None
            else decode_exact(KemPreKey.read, kem, "KEM prekey")
        ),
    )
    left = prekey_counts(device)
    fewest = min(left.one_time_prekeys, left.kem_prekeys)
    if fewest < _limit("PREKEY_LOW_WATERMARK"):
        _send_after_commit(device.pk, {"type": "prekeys.low", "count": fewest})
    return ClaimedBundle(device.device_id, device.registration_id, bundle.encode())


def claim_bundles(
    requester: models.Device | None,
    username: str,
    device_ids: Sequence[int] | None,
    *,
    requester_account_pk: int | None = None,
) -> ClaimedBundles:
    """Hand out one prekey bundle per device of ``username``'s account.

    ``device_ids=None`` means every device, except the requesting device itself when it
    belongs to that account (a device never starts a session with itself). Unknown ids
    are refused before anything is consumed; the claim is one transaction. Each bundle
    counts against the claim limits of ``requester_account_pk`` (the requester's account
    when None is given) and of its device (keys.throttles).
    """
    if requester_account_pk is None and requester is not None:
        requester_account_pk = requester.account_id
    account = _live_account(username)
    identity_key = bytes(account.identity_key)
    with transaction.atomic():
        devices = list(models.Device.objects.filter(account=account).order_by("device_id"))
        if device_ids is None:
            targets = [d for d in devices if requester is None or d.pk != requester.pk]
        else:
            by_id = {d.device_id: d for d in devices}
            targets = []
            for index, device_id in enumerate(device_ids):
                if device_id not in by_id:
                    raise _refusal(
                        ErrorCode.UNKNOWN_DEVICE,
                        f"account {account.username!r} has no device {device_id}",
                        f"device_ids[{index}]",
                    )
                if by_id[device_id] not in targets:
                    targets.append(by_id[device_id])
        bundles = tuple(
            _claim_one(identity_key, device, requester_account_pk) for device in targets
        )
    return ClaimedBundles(account.username, identity_key, bundles)
