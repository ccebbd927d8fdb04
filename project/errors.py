"""Errors as clients see them: one shape, one code enum (protocol.errors.ErrorCode).

HTTP:      {"code": "bad_signature", "message": "...", "fields": {"field": [{code, message}]}}
WebSocket: an ERROR frame carrying the same code (numeric) and message.

Services raise ``ServiceError``; views never build error responses by hand. The message
names the offending field or value and never carries a key, token or ciphertext.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from protocol.errors import ErrorCode, ProtocolError

# The HTTP status for each code a view can return; anything unlisted is 400.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.FORBIDDEN: status.HTTP_403_FORBIDDEN,
    ErrorCode.NOT_A_MEMBER: status.HTTP_403_FORBIDDEN,
    ErrorCode.BAD_ORIGIN: status.HTTP_403_FORBIDDEN,
    ErrorCode.CONSENT_REQUIRED: status.HTTP_403_FORBIDDEN,
    ErrorCode.UNDER_AGE: status.HTTP_403_FORBIDDEN,
    ErrorCode.NOT_FOUND: status.HTTP_404_NOT_FOUND,
    ErrorCode.UNKNOWN_ACCOUNT: status.HTTP_404_NOT_FOUND,
    ErrorCode.UNKNOWN_DEVICE: status.HTTP_404_NOT_FOUND,
    ErrorCode.UNKNOWN_ENVELOPE: status.HTTP_404_NOT_FOUND,
    ErrorCode.UNKNOWN_ATTACHMENT: status.HTTP_404_NOT_FOUND,
    ErrorCode.UNKNOWN_GROUP: status.HTTP_404_NOT_FOUND,
    ErrorCode.LINK_NOT_FOUND: status.HTTP_404_NOT_FOUND,
    ErrorCode.USERNAME_TAKEN: status.HTTP_409_CONFLICT,
    ErrorCode.DEVICE_ID_TAKEN: status.HTTP_409_CONFLICT,
    ErrorCode.DUPLICATE_PREKEY_ID: status.HTTP_409_CONFLICT,
    ErrorCode.DEVICE_MISMATCH: status.HTTP_409_CONFLICT,
    ErrorCode.UPLOAD_OFFSET_MISMATCH: status.HTTP_409_CONFLICT,
    ErrorCode.UPLOAD_INCOMPLETE: status.HTTP_409_CONFLICT,
    ErrorCode.LINK_EXPIRED: status.HTTP_410_GONE,
    ErrorCode.ATTACHMENT_EXPIRED: status.HTTP_410_GONE,
    ErrorCode.CIPHERTEXT_TOO_LARGE: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.ATTACHMENT_TOO_LARGE: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.PREKEY_BATCH_TOO_LARGE: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.TOO_LARGE: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.PREKEY_STORE_FULL: status.HTTP_422_UNPROCESSABLE_ENTITY,
    ErrorCode.DEVICE_LIMIT_REACHED: status.HTTP_422_UNPROCESSABLE_ENTITY,
    ErrorCode.GROUP_TOO_LARGE: status.HTTP_422_UNPROCESSABLE_ENTITY,
    ErrorCode.QUEUE_FULL: status.HTTP_422_UNPROCESSABLE_ENTITY,
    ErrorCode.NO_PREKEYS: status.HTTP_422_UNPROCESSABLE_ENTITY,
    ErrorCode.RATE_LIMITED: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.SERVER_BUSY: status.HTTP_503_SERVICE_UNAVAILABLE,
    ErrorCode.INTERNAL: status.HTTP_500_INTERNAL_SERVER_ERROR,
}


class ServiceError(Exception):
    """A refusal with a stable code, raised by services and turned into a response here."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        fields: dict[str, list[dict[str, str]]] | None = None,
        retry_after: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code.slug}: {message}")
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.retry_after = retry_after
        self.details = details or {}

    @classmethod
    def from_protocol(cls, exc: ProtocolError, field: str | None = None) -> ServiceError:
        """A protocol decode/verify failure, attributed to the request field it came from."""
        message = f"{field}: {exc.message}" if field else exc.message
        fields = {field: [{"code": exc.code.slug, "message": exc.message}]} if field else None
        return cls(exc.code, message, fields=fields)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, status.HTTP_400_BAD_REQUEST)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.slug, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        body.update(self.details)
        return body


def _field_errors(detail: Any, prefix: str = "") -> dict[str, list[dict[str, str]]]:
    """Flatten DRF's nested ValidationError detail into {"a.b": [{code, message}]}."""
    out: dict[str, list[dict[str, str]]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_field_errors(value, name))
    elif isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) for item in detail):
            out[prefix or "non_field_errors"] = [
                {"code": _slug_for(item.code), "message": str(item)} for item in detail
            ]
        else:
            for index, item in enumerate(detail):
                out.update(_field_errors(item, f"{prefix}[{index}]"))
    elif isinstance(detail, exceptions.ErrorDetail):
        out[prefix or "non_field_errors"] = [
            {"code": _slug_for(detail.code), "message": str(detail)}
        ]
    return out


def _slug_for(drf_code: str | None) -> str:
    """DRF's own codes (required, invalid, max_length...) become ours where one fits."""
    if drf_code:
        try:
            return ErrorCode.from_slug(drf_code).slug
        except KeyError:
            pass
    return ErrorCode.INVALID_REQUEST.slug


def to_service_error(exc: Exception) -> ServiceError | None:
    match exc:
        case ServiceError():
            return exc
        case ProtocolError():
            return ServiceError.from_protocol(exc)
        case exceptions.ValidationError():
            fields = _field_errors(exc.detail)
            names = ", ".join(sorted(fields)) or "request"
            first = next(iter(fields.values()))[0]["message"] if fields else "invalid request"
            return ServiceError(
                ErrorCode.INVALID_REQUEST, f"invalid {names}: {first}", fields=fields
            )
        case exceptions.NotAuthenticated() | exceptions.AuthenticationFailed():
            return ServiceError(ErrorCode.UNAUTHORIZED, str(exc.detail))
        case exceptions.PermissionDenied() | DjangoPermissionDenied():
            return ServiceError(ErrorCode.FORBIDDEN, "you may not do this")
        case exceptions.NotFound() | Http404():
            return ServiceError(ErrorCode.NOT_FOUND, "no such resource")
        case exceptions.Throttled():
            wait = int(exc.wait or 1)
            return ServiceError(
                ErrorCode.RATE_LIMITED, f"too many requests; retry in {wait} s", retry_after=wait
            )
        case exceptions.ParseError() | exceptions.UnsupportedMediaType():
            return ServiceError(ErrorCode.MALFORMED, str(exc.detail))
        case exceptions.MethodNotAllowed():
            return ServiceError(ErrorCode.INVALID_REQUEST, str(exc.detail))
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error leaves as {code, message, fields}."""
    error = to_service_error(exc)
    if error is None:
        return None  # a real bug: Django's 500 handling takes over
    status_code = error.http_status
    if isinstance(exc, exceptions.MethodNotAllowed):
        status_code = status.HTTP_405_METHOD_NOT_ALLOWED
    response = Response(error.body(), status=status_code)
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    # A 401 names the scheme to authenticate with (RFC 9110 §11.6.1), as DRF's own handler
    # does: APIView puts it on the exception.
    auth_header = getattr(exc, "auth_header", None)
    if auth_header and status_code == status.HTTP_401_UNAUTHORIZED:
        response["WWW-Authenticate"] = auth_header
    return response
