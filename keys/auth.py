"""DRF authentication by device bearer token (``Authorization: Bearer <token>``), and, on the
one endpoint a device being linked must read before it has a token, by link token."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .models import LinkToken
from .tokens import device_for_token, hash_token


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    """Sets ``request.user`` to the account's user and ``request.auth`` to the Device."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() != self.keyword.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <token>'")
        device = device_for_token(header[1].decode("latin-1"))
        if device is None:
            raise exceptions.AuthenticationFailed("unknown or revoked device token")
        return device.account.user, device

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class DeviceOrLinkTokenAuthentication(DeviceTokenAuthentication):
    """A device token, or else an unused, unexpired link token (docs/api.md, "Linking a new
    device"): a device being linked reads its own account's keys and signed device list
    with it, to sign the next list. ``request.auth`` is then the LinkToken, and the view
    must let it read nothing but its own account. Reading does not use the token."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).split()
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            if len(header) != 2:  # not "Bearer <token>": no link token either
                raise
            token = header[1]
        link = (
            LinkToken.objects.select_related("account__user")
            .filter(
                token_hash=hash_token(token.decode("latin-1")),
                used_at__isnull=True,
                expires_at__gt=timezone.now(),
                account__user__is_active=True,
            )
            .first()
            if len(token) <= 128
            else None
        )
        if link is None:
            raise exceptions.AuthenticationFailed(
                "unknown or revoked device token (or a used or expired link token)"
            )
        return link.account.user, link
