"""Accounts, devices and prekeys: every write of the keys app happens here.

Views parse and authorise, then call one function of this module; nothing else writes to
the keys tables. Every refusal is a ``ServiceError`` carrying a code from
``protocol.errors`` and naming the offending request field (docs/api.md).

What this module deletes, and why nothing else:

- ``revoke_device`` deletes one device row. The database cascades to its one-time and KEM
  prekeys and to its queued envelopes (messaging.Envelope), and the token hash lives on
  the row, so the token stops working with the same commit. Nothing here deletes an
  account, a user or another account's rows.
- ``claim_bundles`` deletes the one-time prekeys it hands out, one row per kind and
  device, each with a single ``DELETE ... RETURNING`` statement: the database picks the
  row and removes it in one step, so two concurrent claims can never both read the same
  key (a SELECT followed by a DELETE could). On PostgreSQL the inner SELECT takes the row
  ``FOR UPDATE SKIP LOCKED``: a concurrent claim skips a row another transaction has
  already taken instead of waiting for it and then finding it gone. SQLite has one writer
  at a time (settings: BEGIN IMMEDIATE), so the plain statement is already atomic.
  The last-resort KEM prekey lives on the device row and is never deleted by a claim.

Channel-layer events (``prekeys.low``, ``device.revoked``) go out only after the
transaction commits, and are hints: group sends are at-most-once, the database is the
truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connection, transaction

from project.errors import ServiceError
from protocol import primitives
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

from . import models
from .tokens import generate_token

MAX_DEVICE_NAME = 64


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
    """An account's identity key and its devices' certificates; reading it consumes nothing."""

    username: str
    identity_key: bytes
    devices: tuple[PublishedDevice, ...]


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
    username: str, password: str, identity_key: bytes, device: DeviceInput
) -> tuple[models.Device, str]:
    """Create an account (Django user + identity key) and its first device, in one step.

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
            account = models.Account.objects.create(user=user, identity_key=identity_key)
            return _create_device(account, device)
    except IntegrityError:
        # Two sign-ups for one name at once: the unique index decided.
        if user_model.objects.filter(username=username).exists():
            raise taken from None
        raise


def add_device(
    account: models.Account, device: DeviceInput, *, field_prefix: str = ""
) -> tuple[models.Device, str]:
    """Add a device to an account. Its certificate must be signed by the identity key on
    file. ``field_prefix`` is where the device's fields sit in the request body."""
    _check_device_input(bytes(account.identity_key), device, field_prefix)
    device_id = device.certificate.device_id
    id_taken = _refusal(
        ErrorCode.DEVICE_ID_TAKEN,
        f"account {account.username!r} already has a device {device_id}",
        field_prefix + "certificate_b64",
    )
    try:
        with transaction.atomic():
            # The account row lock serialises concurrent additions, so the device count
            # cannot be exceeded by two requests that each saw room for one more.
            locked = models.Account.objects.select_for_update().get(pk=account.pk)
            limit = _limit("MAX_DEVICES_PER_ACCOUNT")
            if locked.devices.count() >= limit:
                raise _refusal(
                    ErrorCode.DEVICE_LIMIT_REACHED,
                    f"account {account.username!r} already has {limit} devices, the maximum",
                )
            if locked.devices.filter(device_id=device_id).exists():
                raise id_taken
            return _create_device(locked, device)
    except IntegrityError:
        if models.Device.objects.filter(account=account, device_id=device_id).exists():
            raise id_taken from None
        raise


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


def revoke_device(account: models.Account, device_id: int) -> None:
    """Delete a device: its token, prekeys and queued envelopes go with the row, at once.

    Its open relay connections are told after the commit (``device.revoked``), so the
    relay can close them (docs/api.md: close code 4403).
    """
    with transaction.atomic():
        device = _device_of(account, device_id)
        device_pk = device.pk
        device.delete()
        _send_after_commit(device_pk, {"type": "device.revoked"})


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


def _claim_one(identity_key: bytes, device: models.Device) -> ClaimedBundle:
    one_time = _take_oldest_prekey(models.OneTimePreKey, device.pk)
    kem = _take_oldest_prekey(models.KemPreKey, device.pk)
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
    requester: models.Device | None, username: str, device_ids: Sequence[int] | None
) -> ClaimedBundles:
    """Hand out one prekey bundle per device of ``username``'s account.

    ``device_ids=None`` means every device, except the requesting device itself when it
    belongs to that account (a device never starts a session with itself). Unknown ids
    are refused before anything is consumed; the claim is one transaction.
    """
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
        bundles = tuple(_claim_one(identity_key, device) for device in targets)
    return ClaimedBundles(account.username, identity_key, bundles)
