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
