"""Device bearer tokens: 32 random bytes, base64url; only their SHA-256 is stored.

A lookup by hash needs no constant-time comparison: the attacker would have to find a
token whose SHA-256 matches a stored one, which is a preimage search, and the token itself
never reaches the database or the logs.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from django.utils import timezone

from .models import Device

TOKEN_BYTES = 32


def generate_token() -> tuple[str, str]:
    """A new token and the hash to store: (token, token_hash)."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", errors="replace")).hexdigest()


def device_for_token(token: str, touch: bool = True) -> Device | None:
    """The live device this token belongs to, or None. Marks the device as seen."""
    if not token or len(token) > 128:
        return None
    device = (
        Device.objects.select_related("account__user")
        .filter(token_hash=hash_token(token), account__user__is_active=True)
        .first()
    )
    if device is not None and touch:
        now = timezone.now()
        # At most one write a minute per device: last_seen_at is coarse on purpose.
        if device.last_seen_at is None or (now - device.last_seen_at).total_seconds() > 60:
            Device.objects.filter(pk=device.pk).update(last_seen_at=now)
            device.last_seen_at = now
    return device
