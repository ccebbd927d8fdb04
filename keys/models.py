"""Accounts, devices and their public keys. Nothing here is secret except token hashes.

Binary columns hold exactly the protocol's encodings (protocol/keys.py), so what the server
hands out is byte for byte what the owning device signed; parsed copies of a few fields
(device id, registration id, identity key) exist only to query by them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Account(models.Model):
    """A person's account: the login (Django user) plus the account identity key."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account"
    )
    identity_key = models.BinaryField(max_length=32, help_text="Ed25519 public key (32 bytes)")
    # The newest SignedDeviceList (protocol/devicelist.py) the account's key signed, exactly
    # as encoded, and its version: every device change must bring a list of a higher
    # version naming exactly the devices after the change (keys.services). Empty, version
    # 0, for an account made before device lists existed: it then has no listed device.
    device_list = models.BinaryField(default=b"", blank=True, help_text="encoded SignedDeviceList")
    device_list_version = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.user.username

    @property
    def username(self) -> str:
        return str(self.user.username)


class Device(models.Model):
    """One device of an account, certified by the account identity key.

    ``device_id`` is chosen by the client and signed inside its certificate, so the server
    cannot renumber devices; it is unique within the account.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="devices")
    device_id = models.PositiveIntegerField()
    registration_id = models.PositiveBigIntegerField()
    certificate = models.BinaryField(help_text="encoded DeviceCertificate")
    identity_key = models.BinaryField(max_length=32, help_text="X25519 public key")
    name = models.CharField(max_length=64, blank=True)
    # SHA-256 of the device's bearer token, hex. The token itself is shown once, at creation.
    token_hash = models.CharField(max_length=64, unique=True)
    signed_prekey = models.BinaryField(help_text="encoded SignedPreKey")
    last_resort_kem_prekey = models.BinaryField(help_text="encoded KemPreKey (last resort)")
    # The sequence number the next envelope queued for this device will get.
    next_seq = models.PositiveBigIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "device_id"], name="unique_device_id"),
        ]

    def __str__(self) -> str:
        return f"{self.account}/{self.device_id}"


class OneTimePreKey(models.Model):
    """An unclaimed one-time X25519 prekey; claiming deletes it."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="one_time_prekeys")
    key_id = models.PositiveBigIntegerField()
    encoded = models.BinaryField(help_text="encoded OneTimePreKey")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "key_id"], name="unique_one_time_prekey"),
        ]


class KemPreKey(models.Model):
    """An unclaimed one-time ML-KEM-768 prekey; claiming deletes it. (The last-resort key
    lives on the device row and is never deleted by a claim.)"""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="kem_prekeys")
    key_id = models.PositiveBigIntegerField()
    encoded = models.BinaryField(help_text="encoded KemPreKey")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "key_id"], name="unique_kem_prekey"),
        ]


class LinkToken(models.Model):
    """A one-time permission to register one device of an account (docs/api.md, "Linking a
    new device"). An existing device asks for it and seals it to the new device; only its
    SHA-256 is stored. Used (``used_at``) in the transaction that adds the device."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="link_tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"link token of {self.account}"


class ProvisioningSlot(models.Model):
    """A mailbox for one sealed ProvisionMessage on its way to a new device.

    The new device creates it (no account yet) and polls it; an existing device fills it
    once. The server cannot open ``sealed`` (protocol/provisioning.py). The slot is deleted
    when the new device takes the message, or by the purge once it expires.
    """

    address = models.CharField(
        max_length=22, unique=True, help_text="16 random bytes, base64url without padding"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    sealed = models.BinaryField(null=True, blank=True, help_text="the sealed ProvisionMessage")

    def __str__(self) -> str:
        return f"provisioning slot {self.address[:6]}…"
