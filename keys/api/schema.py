"""OpenAPI pieces shared by the keys API: the bearer-token scheme and error responses."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse

from project.errors import HTTP_STATUS
from protocol.errors import ErrorCode

from .serializers import ErrorSerializer


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    """Documents keys.auth.DeviceTokenAuthentication as an HTTP bearer scheme."""

    target_class = "keys.auth.DeviceTokenAuthentication"
    name = "deviceToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return build_bearer_security_scheme_object(
            header_name="AUTHORIZATION",
            token_prefix="Bearer",  # noqa: S106 - the scheme's name, not a secret
            bearer_format="device token: 32 random bytes, base64url without padding",
        )


class DeviceOrLinkTokenScheme(OpenApiAuthenticationExtension):
    """keys.auth.DeviceOrLinkTokenAuthentication: the same header, which may also carry a
    link token (for its own account's keys only)."""

    target_class = "keys.auth.DeviceOrLinkTokenAuthentication"
    name = "deviceOrLinkToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return build_bearer_security_scheme_object(
            header_name="AUTHORIZATION",
            token_prefix="Bearer",  # noqa: S106 - the scheme's name, not a secret
            bearer_format="a device token, or an unused link token of this account",
        )


# Codes every authenticated endpoint can answer with.
AUTHENTICATED = (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.INVALID_REQUEST)
# Codes of a request body that carries keys.
KEY_UPLOAD = (
    ErrorCode.INVALID_REQUEST,
    ErrorCode.MALFORMED,
    ErrorCode.TRUNCATED,
    ErrorCode.TRAILING_BYTES,
    ErrorCode.NON_MINIMAL_VARINT,
    ErrorCode.INVALID_VALUE,
    ErrorCode.BAD_KEY,
    ErrorCode.BAD_SIGNATURE,
    ErrorCode.DUPLICATE_PREKEY_ID,
    ErrorCode.PREKEY_BATCH_TOO_LARGE,
)

# Codes of a request that carries a new signed device list.
DEVICE_LIST = (
    ErrorCode.INVALID_REQUEST,
    ErrorCode.MALFORMED,
    ErrorCode.TRUNCATED,
    ErrorCode.TRAILING_BYTES,
    ErrorCode.INVALID_VALUE,
    ErrorCode.INVALID_USERNAME,
    ErrorCode.BAD_SIGNATURE,
    ErrorCode.DEVICE_MISMATCH,
)


def error_responses(*codes: ErrorCode) -> dict[int, OpenApiResponse]:
    """One documented response per HTTP status, listing the codes that come with it."""
    by_status: dict[int, list[ErrorCode]] = defaultdict(list)
    for code in dict.fromkeys(codes):
        by_status[HTTP_STATUS.get(code, 400)].append(code)
    return {
        status: OpenApiResponse(
            ErrorSerializer,
            description="`code` is one of: " + ", ".join(f"`{c.slug}`" for c in status_codes),
        )
        for status, status_codes in sorted(by_status.items())
    }
