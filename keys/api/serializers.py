"""Request and response shapes of the keys API (docs/api.md).

Decoding happens here, at the edge: ``*_b64`` values become bytes (standard base64 with
padding, strictly) and key encodings become protocol objects. A value that does not
decode is refused with its own code (``malformed``, ``truncated``, ``trailing_bytes``...)
and the path of the field it came from, e.g. ``device.kem_prekeys_b64[3]``. Such errors
are raised as ``ServiceError`` rather than DRF validation errors so that the response's
top-level ``code`` is the specific one, as the contract promises. Whatever needs the
account or the database (signatures, flags, ids, limits) is checked by keys.services.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from compliance.api.serializers import StrictBooleanField, StrictCharField
from keys.services import MAX_DEVICE_NAME, DeviceInput, decode_exact
from project.errors import ServiceError
from protocol.devicelist import SignedDeviceList
from protocol.encoding import Reader
from protocol.errors import ErrorCode, ProtocolError
from protocol.keys import DeviceCertificate, KemPreKey, OneTimePreKey, SignedPreKey
from protocol.limits import MAX_DEVICE_ID, MAX_DEVICES_PER_SEND
from protocol.provisioning import MAX_LINK_TOKEN_BYTES

# --- decoding helpers ----------------------------------------------------------------------


def field_path(field: serializers.Field) -> str:
    """Where a bound field sits in the request body: ``device.signed_prekey_b64``."""
    names: list[str] = []
    node: Any = field
    while node is not None:
        name = getattr(node, "field_name", None)
        if name:
            names.append(str(name))
        node = getattr(node, "parent", None)
    return ".".join(reversed(names))


def _prefix(serializer: serializers.Field) -> str:
    path = field_path(serializer)
    return f"{path}." if path else ""


def decode_b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
        message = "not standard base64 with padding"
        raise ServiceError(
            ErrorCode.MALFORMED,
            f"{field}: {message}",
            fields={field: [{"code": ErrorCode.MALFORMED.slug, "message": message}]},
        ) from None


def decode_key[T](read: Callable[[Reader], T], data: bytes, field: str, what: str) -> T:
    try:
        return decode_exact(read, data, what)
    except ProtocolError as exc:
        raise ServiceError.from_protocol(exc, field=field) from None


def decode_device_list(data: bytes, field: str) -> SignedDeviceList:
    try:
        return SignedDeviceList.decode(bytes(data))
    except ProtocolError as exc:
        raise ServiceError.from_protocol(exc, field=field) from None


@extend_schema_field(OpenApiTypes.BYTE)
class Base64TextField(serializers.CharField):
    """A ``*_b64`` string as it arrives (decoded by its container)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        # "" is valid base64 (no bytes); the decoder then says what is missing.
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)


@extend_schema_field(OpenApiTypes.BYTE)
class Base64Field(Base64TextField):
    """Standard base64 with padding in JSON; bytes inside."""

    def run_validation(self, data: Any = serializers.empty) -> Any:
        value = super().run_validation(data)
        return b"" if value == "" else value  # CharField returns "" without decoding it

    def to_internal_value(self, data: Any) -> bytes:
        return decode_b64(super().to_internal_value(data), field_path(self))

    def to_representation(self, value: Any) -> str:
        return base64.b64encode(bytes(value)).decode("ascii")


class PreKeyListField(serializers.ListField):
    """A list of base64 prekey encodings; an oversized batch is refused before decoding."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("child", Base64TextField())
        kwargs.setdefault("default", list)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list[bytes]:
        path = field_path(self)
        limit = int(settings.SEALPOST["MAX_PREKEYS_PER_UPLOAD"])
        if isinstance(data, list) and len(data) > limit:
            message = f"{len(data)} prekeys in one upload; at most {limit} of a kind"
            raise ServiceError(
                ErrorCode.PREKEY_BATCH_TOO_LARGE,
                f"{path}: {message}",
                fields={
                    path: [{"code": ErrorCode.PREKEY_BATCH_TOO_LARGE.slug, "message": message}]
                },
            )
        texts = super().to_internal_value(data)
        return [decode_b64(text, f"{path}[{index}]") for index, text in enumerate(texts)]


# --- errors ---------------------------------------------------------------------------------

ERROR_CODES = [code.slug for code in ErrorCode]


class FieldErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=ERROR_CODES)
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    """Every error response: a stable code, a message naming the offending value, and the
    request fields at fault."""

    code = serializers.ChoiceField(choices=ERROR_CODES)
    message = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.ListField(child=FieldErrorSerializer()),
        required=False,
        help_text='Per request field, e.g. "device.kem_prekeys_b64[3]".',
    )


# --- devices and sign-up ----------------------------------------------------------------------


class DeviceUploadSerializer(serializers.Serializer):
    """A new device's public keys."""

    # validate() adds "device_input": the decoded keys as a services.DeviceInput.

    certificate_b64 = Base64Field(help_text="DeviceCertificate signed by the account identity key")
    name = serializers.CharField(max_length=MAX_DEVICE_NAME, allow_blank=True, default="")
    signed_prekey_b64 = Base64Field(help_text="SignedPreKey signed by the device signing key")
    last_resort_kem_prekey_b64 = Base64Field(help_text="KemPreKey with last_resort = 1")
    one_time_prekeys_b64 = PreKeyListField(help_text="OneTimePreKey encodings, at most 100")
    kem_prekeys_b64 = PreKeyListField(
        help_text="KemPreKey encodings with last_resort = 0, at most 100"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        prefix = _prefix(self)
        attrs["device_input"] = DeviceInput(
            certificate=decode_key(
                DeviceCertificate.read,
                attrs["certificate_b64"],
                prefix + "certificate_b64",
                "device certificate",
            ),
            signed_prekey=decode_key(
                SignedPreKey.read,
                attrs["signed_prekey_b64"],
                prefix + "signed_prekey_b64",
                "signed prekey",
            ),
            last_resort_kem_prekey=decode_key(
                KemPreKey.read,
                attrs["last_resort_kem_prekey_b64"],
                prefix + "last_resort_kem_prekey_b64",
                "KEM prekey",
            ),
            one_time_prekeys=_decode_all(
                OneTimePreKey.read,
                attrs["one_time_prekeys_b64"],
                prefix,
                "one_time_prekeys_b64",
                "one-time prekey",
            ),
            kem_prekeys=_decode_all(
                KemPreKey.read, attrs["kem_prekeys_b64"], prefix, "kem_prekeys_b64", "KEM prekey"
            ),
            name=attrs["name"],
        )
        return attrs


def _decode_all[T](
    read: Callable[[Reader], T], items: list[bytes], prefix: str, field: str, what: str
) -> tuple[T, ...]:
    return tuple(
        decode_key(read, item, f"{prefix}{field}[{index}]", what)
        for index, item in enumerate(items)
    )


class WithDeviceList(serializers.Serializer):
    """A request that changes the account's devices carries its new signed device list."""

    # validate() adds "device_list": the decoded protocol.devicelist.SignedDeviceList.

    device_list_b64 = Base64Field(
        help_text="SignedDeviceList signed by the account identity key: a version above the "
        "stored one, naming exactly the account's devices after this change"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        attrs["device_list"] = decode_device_list(
            attrs["device_list_b64"], _prefix(self) + "device_list_b64"
        )
        return attrs


class SignUpSerializer(WithDeviceList):
    username = serializers.CharField(help_text="3-32 characters; lower-cased by the server")
    password = serializers.CharField(
        write_only=True, trim_whitespace=False, max_length=4096, style={"input_type": "password"}
    )
    identity_key_b64 = Base64Field(help_text="the account identity key: Ed25519 public, 32 bytes")
    device = DeviceUploadSerializer()
    # The age rule and consent of the region policy (compliance.consent.check_sign_up).
    birth_date = serializers.DateField(
        required=False,
        input_formats=["%Y-%m-%d"],
        help_text="YYYY-MM-DD; below the region's minimum sign-up age the answer is under_age. "
        "Not stored: only the day the person reaches the age of self-consent is.",
    )
    age_confirmed = StrictBooleanField(
        required=False,
        help_text="instead of birth_date: true states the person is at least the region's "
        "age of self-consent. With neither, optional purposes stay off (and a region whose "
        "service rests on consent refuses the sign-up)",
    )
    consents = serializers.ListField(
        child=StrictCharField(max_length=64),
        required=False,
        max_length=32,
        help_text="ids of the consent purposes (GET /api/v1/policy) the person agreed to; "
        "necessary ones are recorded anyway, optional ones left out are recorded as refused",
    )


class _OptionalCredentials(serializers.Serializer):
    username = serializers.CharField(
        required=False,
        help_text="with password or link_token: when the request carries no device token",
    )
    password = serializers.CharField(
        required=False,
        write_only=True,
        trim_whitespace=False,
        max_length=4096,
        style={"input_type": "password"},
    )
    link_token = serializers.CharField(
        required=False,
        write_only=True,
        max_length=MAX_LINK_TOKEN_BYTES,
        help_text="a single-use link token from POST /api/v1/devices/link-tokens, with username",
    )


class AddDeviceSerializer(_OptionalCredentials, WithDeviceList, DeviceUploadSerializer):
    """The device object of sign-up and the new device list, plus credentials when there
    is no device token."""


class WrappedAddDeviceSerializer(_OptionalCredentials, WithDeviceList):
    """The same, with the device fields under ``device`` as in sign-up (also accepted)."""

    device = DeviceUploadSerializer()


class RevokeDeviceSerializer(WithDeviceList):
    """The account's new device list, naming exactly the devices that remain."""


class LinkTokenSerializer(serializers.Serializer):
    link_token = serializers.CharField(
        help_text="single use, for 10 minutes; sealed to the new device, never shown to a user"
    )
    expires_at = serializers.DateTimeField()


class ProvisioningAddressSerializer(serializers.Serializer):
    address = serializers.CharField(help_text="16 random bytes, base64url without padding")
    expires_at = serializers.DateTimeField()


class SealedSerializer(serializers.Serializer):
    sealed_b64 = Base64Field(help_text="a sealed ProvisionMessage (protocol/provisioning.py)")


class AccountCreatedSerializer(serializers.Serializer):
    username = serializers.CharField()
    device_id = serializers.IntegerField()
    token = serializers.CharField(help_text="the device's bearer token; shown only this once")


class SessionRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(
        write_only=True, trim_whitespace=False, max_length=4096, style={"input_type": "password"}
    )


class SessionSerializer(serializers.Serializer):
    username = serializers.CharField()


class DeviceInfoSerializer(serializers.Serializer):
    """One of the caller's devices; ``current`` marks the device making the request."""

    device_id = serializers.IntegerField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField(allow_null=True)
    current = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_current(self, device: Any) -> bool:
        return bool(device.pk == self.context.get("current_pk"))


class DeviceRenameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=MAX_DEVICE_NAME, allow_blank=True)


# --- prekeys of the calling device --------------------------------------------------------------


class PreKeyCountsSerializer(serializers.Serializer):
    one_time_prekeys = serializers.IntegerField()
    kem_prekeys = serializers.IntegerField()
    low_watermark = serializers.SerializerMethodField()
    max_stored = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.INT)
    def get_low_watermark(self, counts: Any) -> int:
        return int(settings.SEALPOST["PREKEY_LOW_WATERMARK"])

    @extend_schema_field(OpenApiTypes.INT)
    def get_max_stored(self, counts: Any) -> int:
        return int(settings.SEALPOST["MAX_PREKEYS_STORED"])


class PreKeyUploadSerializer(serializers.Serializer):
    """More one-time prekeys for the calling device; either list may be empty."""

    # validate() adds "one_time" and "kem": tuples of decoded protocol prekeys.

    one_time_prekeys_b64 = PreKeyListField(help_text="OneTimePreKey encodings, at most 100")
    kem_prekeys_b64 = PreKeyListField(
        help_text="KemPreKey encodings with last_resort = 0, at most 100"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["one_time"] = _decode_all(
            OneTimePreKey.read,
            attrs["one_time_prekeys_b64"],
            "",
            "one_time_prekeys_b64",
            "one-time prekey",
        )
        attrs["kem"] = _decode_all(
            KemPreKey.read, attrs["kem_prekeys_b64"], "", "kem_prekeys_b64", "KEM prekey"
        )
        return attrs


class SignedPreKeyRotationSerializer(serializers.Serializer):
    signed_prekey_b64 = Base64Field(help_text="SignedPreKey signed by the device signing key")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["prekey"] = decode_key(
            SignedPreKey.read, attrs["signed_prekey_b64"], "signed_prekey_b64", "signed prekey"
        )
        return attrs


class LastResortKemPreKeyRotationSerializer(serializers.Serializer):
    kem_prekey_b64 = Base64Field(help_text="KemPreKey with last_resort = 1")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["prekey"] = decode_key(
            KemPreKey.read, attrs["kem_prekey_b64"], "kem_prekey_b64", "KEM prekey"
        )
        return attrs


# --- other accounts' keys -------------------------------------------------------------------


class PublishedDeviceSerializer(serializers.Serializer):
    device_id = serializers.IntegerField()
    registration_id = serializers.IntegerField()
    certificate_b64 = Base64Field(source="certificate", help_text="encoded DeviceCertificate")


class AccountKeysSerializer(serializers.Serializer):
    username = serializers.CharField()
    identity_key_b64 = Base64Field(source="identity_key", help_text="Ed25519 public, 32 bytes")
    device_list_b64 = Base64Field(
        source="device_list",
        help_text="the newest SignedDeviceList the account key signed (empty: the account "
        "has none)",
    )
    devices = PublishedDeviceSerializer(many=True)


class BundleClaimSerializer(serializers.Serializer):
    device_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_DEVICE_ID),
        required=False,
        allow_null=True,
        max_length=MAX_DEVICES_PER_SEND,
        help_text="the devices to claim for; absent or null: every device",
    )


class ClaimedBundleSerializer(serializers.Serializer):
    device_id = serializers.IntegerField()
    registration_id = serializers.IntegerField()
    bundle_b64 = Base64Field(source="bundle", help_text="encoded PreKeyBundle")


class ClaimedBundlesSerializer(serializers.Serializer):
    username = serializers.CharField()
    identity_key_b64 = Base64Field(source="identity_key", help_text="Ed25519 public, 32 bytes")
    bundles = ClaimedBundleSerializer(many=True)
