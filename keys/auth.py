"""DRF authentication by device bearer token (``Authorization: Bearer <token>``)."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .tokens import device_for_token


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
