"""Admin pages of the keys app: who has which devices, and nothing an operator should copy.

Keys appear only as short hex fingerprints, prekeys only as counts, and the token hash not
at all. Accounts and devices are made by the API (the keys are the clients'), so there is
no "add" here; renaming and removing a device go through keys.services like the API, so a
removed device's relay connections are told. The account's signed device list shows only as
its version; link tokens and provisioning slots (short-lived, and the slots hold sealed
messages) have no pages at all.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from protocol.errors import ProtocolError
from protocol.keys import KemPreKey, SignedPreKey

from . import services
from .models import Account, Device

FINGERPRINT_BYTES = 8


def fingerprint(key: bytes | memoryview | None) -> str:
    """The first bytes of a public key in hex, enough to tell keys apart at a glance."""
    if not key:
        return "-"
    return bytes(key)[:FINGERPRINT_BYTES].hex() + "…"


def _prekey_summary(read: Any, data: bytes | memoryview, what: str) -> str:
    try:
        prekey = services.decode_exact(read, bytes(data), what)
    except ProtocolError:
        return "undecodable"
    return f"id {prekey.key_id}, {fingerprint(prekey.public_key)}"


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = (
        "username",
        "identity_key_fingerprint",
        "created_at",
        "device_count",
        "device_list_version",
    )
    search_fields = ("user__username",)
    ordering = ("user__username",)
    fields = (
        "user",
        "identity_key_fingerprint",
        "created_at",
        "device_count",
        "device_list_version",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        queryset = super().get_queryset(request).select_related("user")
        return queryset.annotate(_device_count=Count("devices"))

    @admin.display(description="username", ordering="user__username")
    def username(self, account: Account) -> str:
        return account.username

    @admin.display(description="identity key")
    def identity_key_fingerprint(self, account: Account) -> str:
        return fingerprint(account.identity_key)

    @admin.display(description="devices", ordering="_device_count")
    def device_count(self, account: Account) -> int:
        return int(getattr(account, "_device_count", None) or account.devices.count())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting an account belongs in a service that tells its devices' relay
        # connections; until there is one, an account is not deleted from here.
        return False


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("__str__", "device_id", "name", "created_at", "last_seen_at")
    list_select_related = ("account__user",)
    search_fields = ("account__user__username", "name")
    ordering = ("account__user__username", "device_id")
    fields = (
        "account",
        "device_id",
        "registration_id",
        "name",
        "created_at",
        "last_seen_at",
        "identity_key_fingerprint",
        "signed_prekey_summary",
        "last_resort_kem_prekey_summary",
        "one_time_prekey_count",
        "kem_prekey_count",
    )
    readonly_fields = tuple(field for field in fields if field != "name")

    @admin.display(description="identity key (X25519)")
    def identity_key_fingerprint(self, device: Device) -> str:
        return fingerprint(device.identity_key)

    @admin.display(description="signed prekey")
    def signed_prekey_summary(self, device: Device) -> str:
        return _prekey_summary(SignedPreKey.read, device.signed_prekey, "signed prekey")

    @admin.display(description="last-resort KEM prekey")
    def last_resort_kem_prekey_summary(self, device: Device) -> str:
        return _prekey_summary(KemPreKey.read, device.last_resort_kem_prekey, "KEM prekey")

    @admin.display(description="one-time prekeys")
    def one_time_prekey_count(self, device: Device) -> int:
        return services.prekey_counts(device).one_time_prekeys

    @admin.display(description="one-time KEM prekeys")
    def kem_prekey_count(self, device: Device) -> int:
        return services.prekey_counts(device).kem_prekeys

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        services.rename_device(obj.account, obj.device_id, obj.name)

    # Only the account key can sign a new device list, so the admin removes a device
    # without one (services.remove_device): the stored list keeps naming it, and clients,
    # which see it is no longer served, skip it.
    def delete_model(self, request: HttpRequest, obj: Device) -> None:
        services.remove_device(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        for device in queryset:
            services.remove_device(device)
