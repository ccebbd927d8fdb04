"""Views of the keys API: each parses the request, decides who is asking, and calls one
service (keys.services). Errors are raised, never built here: project.errors turns them
into ``{code, message, fields}``.

Who may call what:

- Sign-up and the session endpoints need no credentials. When the request comes from a
  browser (it carries our session or CSRF cookie) the CSRF check applies, so another site
  cannot sign a visitor up or log them in or out; an API client that sends no cookies needs
  no CSRF token. The bodies are JSON only, which a cross-site form cannot send.
- Everything else takes a device token (``Authorization: Bearer``) or, for the web pages,
  the session cookie, where DRF's SessionAuthentication enforces CSRF. The
  ``devices/self/...`` endpoints act on the calling device and need a device token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keys import services
from keys.models import Account, Device
from project.errors import ServiceError
from protocol.errors import ErrorCode

from . import serializers as s
from .schema import AUTHENTICATED, KEY_UPLOAD, error_responses

USERNAME_PARAMETER = OpenApiParameter(
    "username", str, OpenApiParameter.PATH, description="the account's username"
)
DEVICE_ID_PARAMETER = OpenApiParameter(
    "device_id", int, OpenApiParameter.PATH, description="the device id (1-65535)"
)


# --- who is asking ---------------------------------------------------------------------------


def _is_browser(request: Request) -> bool:
    cookies = request.COOKIES
    return settings.SESSION_COOKIE_NAME in cookies or settings.CSRF_COOKIE_NAME in cookies


def _check_csrf_if_browser(request: Request) -> bool:
    """Enforce CSRF for browser requests; returns whether the request is from a browser."""
    if not _is_browser(request):
        return False
    try:
        SessionAuthentication().enforce_csrf(request)
    except PermissionDenied as exc:
        raise ServiceError(ErrorCode.FORBIDDEN, str(exc.detail)) from None
    return True


def _account_of_user(user: Any) -> Account:
    account = Account.objects.filter(user=user).first()
    if account is None:
        raise ServiceError(ErrorCode.FORBIDDEN, "this login has no Sealpost account")
    return account


def _caller_account(request: Request) -> Account:
    if isinstance(request.auth, Device):
        return request.auth.account
    return _account_of_user(request.user)


def _caller_device(request: Request) -> Device:
    if not isinstance(request.auth, Device):
        raise ServiceError(
            ErrorCode.FORBIDDEN, "this endpoint acts on the calling device: use its device token"
        )
    return request.auth


def _account_by_password(username: str | None, password: str | None) -> Account:
    if not username or password is None:
        raise ServiceError(
            ErrorCode.UNAUTHORIZED,
            "send a device token, or username and password in the body",
        )
    user = authenticate(username=username.strip().lower(), password=password)
    account = Account.objects.filter(user=user).first() if user is not None else None
    if account is None:
        raise ServiceError(ErrorCode.UNAUTHORIZED, "wrong username or password")
    return account


class KeysAPIView(APIView):
    # JSON bodies only (docs/api.md, "Conventions"). (No docstring: the schema would show
    # it as every operation's description.)
    parser_classes = (JSONParser,)


# --- accounts and sessions ----------------------------------------------------------------------


class AccountsView(KeysAPIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    @extend_schema(
        operation_id="sign_up",
        summary="Sign up: create an account and its first device",
        description=(
            "A request from a browser (it carries the session or CSRF cookie) must pass the "
            "CSRF check and is also logged in."
        ),
        request=s.SignUpSerializer,
        responses={
            201: s.AccountCreatedSerializer,
            **error_responses(
                *KEY_UPLOAD,
                ErrorCode.INVALID_USERNAME,
                ErrorCode.WEAK_PASSWORD,
                ErrorCode.USERNAME_TAKEN,
                ErrorCode.FORBIDDEN,
            ),
        },
        auth=[],
        tags=["accounts"],
    )
    def post(self, request: Request) -> Response:
        browser = _check_csrf_if_browser(request)
        serializer = s.SignUpSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        device, token = services.register_account(
            data["username"],
            data["password"],
            data["identity_key_b64"],
            data["device"]["device_input"],
        )
        if browser:
            login(
                request._request,
                device.account.user,
                backend="django.contrib.auth.backends.ModelBackend",
            )
        body = {"username": device.account.username, "device_id": device.device_id, "token": token}
        return Response(s.AccountCreatedSerializer(body).data, status=status.HTTP_201_CREATED)


class SessionView(KeysAPIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    @extend_schema(
        operation_id="log_in",
        summary="Log in (web pages): sets the session cookie",
        request=s.SessionRequestSerializer,
        responses={
            200: s.SessionSerializer,
            **error_responses(
                ErrorCode.INVALID_REQUEST, ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN
            ),
        },
        auth=[],
        tags=["accounts"],
    )
    def post(self, request: Request) -> Response:
        _check_csrf_if_browser(request)
        serializer = s.SessionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = _account_by_password(
            serializer.validated_data["username"], serializer.validated_data["password"]
        )
        login(request._request, account.user, backend="django.contrib.auth.backends.ModelBackend")
        return Response(s.SessionSerializer({"username": account.username}).data)

    @extend_schema(
        operation_id="log_out",
        summary="Log out (web pages)",
        request=None,
        responses={204: None, **error_responses(ErrorCode.FORBIDDEN)},
        auth=[],
        tags=["accounts"],
    )
    def delete(self, request: Request) -> Response:
        _check_csrf_if_browser(request)
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- devices -------------------------------------------------------------------------------------


class DevicesView(KeysAPIView):
    def get_permissions(self) -> list[Any]:
        # Adding a device may authenticate with username and password in the body instead.
        if self.request.method == "POST":
            return [AllowAny()]
        return super().get_permissions()

    @extend_schema(
        operation_id="list_devices",
        summary="The caller's account's devices",
        responses={200: s.DeviceInfoSerializer(many=True), **error_responses(*AUTHENTICATED)},
        tags=["devices"],
    )
    def get(self, request: Request) -> Response:
        devices = services.list_devices(_caller_account(request))
        current_pk = request.auth.pk if isinstance(request.auth, Device) else None
        return Response(
            s.DeviceInfoSerializer(devices, many=True, context={"current_pk": current_pk}).data
        )

    @extend_schema(
        operation_id="add_device",
        summary="Add a device to an account",
        description=(
            "Authenticated as an existing device of the account (bearer token), or with "
            "`username` and `password` in the body. The certificate must be signed by the "
            "account's identity key on file. The device fields may also be sent under "
            '`"device"`, as in sign-up.'
        ),
        request=s.AddDeviceSerializer,
        responses={
            201: s.AccountCreatedSerializer,
            **error_responses(
                *KEY_UPLOAD,
                *AUTHENTICATED,
                ErrorCode.DEVICE_ID_TAKEN,
                ErrorCode.DEVICE_LIMIT_REACHED,
            ),
        },
        tags=["devices"],
    )
    def post(self, request: Request) -> Response:
        data = request.data
        wrapped = (
            isinstance(data, Mapping)
            and isinstance(data.get("device"), Mapping)
            and "certificate_b64" not in data
        )
        serializer: Any = (
            s.WrappedAddDeviceSerializer(data=data) if wrapped else s.AddDeviceSerializer(data=data)
        )
        serializer.is_valid(raise_exception=True)
        fields = serializer.validated_data
        if request.auth is not None or request.user.is_authenticated:
            account = _caller_account(request)
        else:
            account = _account_by_password(fields.get("username"), fields.get("password"))
        device_input = (fields["device"] if wrapped else fields)["device_input"]
        device, token = services.add_device(
            account, device_input, field_prefix="device." if wrapped else ""
        )
        body = {"username": account.username, "device_id": device.device_id, "token": token}
        return Response(s.AccountCreatedSerializer(body).data, status=status.HTTP_201_CREATED)


class DeviceView(KeysAPIView):
    @extend_schema(
        operation_id="rename_device",
        summary="Rename a device of the caller's account",
        parameters=[DEVICE_ID_PARAMETER],
        request=s.DeviceRenameSerializer,
        responses={
            200: s.DeviceInfoSerializer,
            **error_responses(*AUTHENTICATED, ErrorCode.UNKNOWN_DEVICE, ErrorCode.INVALID_VALUE),
        },
        tags=["devices"],
    )
    def patch(self, request: Request, device_id: int) -> Response:
        serializer = s.DeviceRenameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device = services.rename_device(
            _caller_account(request), device_id, serializer.validated_data["name"]
        )
        current_pk = request.auth.pk if isinstance(request.auth, Device) else None
        return Response(s.DeviceInfoSerializer(device, context={"current_pk": current_pk}).data)

    @extend_schema(
        operation_id="revoke_device",
        summary="Revoke a device: its token, prekeys and queued envelopes are deleted at once",
        parameters=[DEVICE_ID_PARAMETER],
        request=None,
        responses={204: None, **error_responses(*AUTHENTICATED, ErrorCode.UNKNOWN_DEVICE)},
        tags=["devices"],
    )
    def delete(self, request: Request, device_id: int) -> Response:
        services.revoke_device(_caller_account(request), device_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- prekeys of the calling device ----------------------------------------------------------------


class PreKeysView(KeysAPIView):
    @extend_schema(
        operation_id="count_prekeys",
        summary="How many one-time prekeys of each kind the server holds for this device",
        responses={200: s.PreKeyCountsSerializer, **error_responses(*AUTHENTICATED)},
        tags=["prekeys"],
    )
    def get(self, request: Request) -> Response:
        counts = services.prekey_counts(_caller_device(request))
        return Response(s.PreKeyCountsSerializer(counts).data)

    @extend_schema(
        operation_id="upload_prekeys",
        summary="Upload one-time prekeys; returns the new counts",
        request=s.PreKeyUploadSerializer,
        responses={
            200: s.PreKeyCountsSerializer,
            **error_responses(*KEY_UPLOAD, *AUTHENTICATED, ErrorCode.PREKEY_STORE_FULL),
        },
        tags=["prekeys"],
    )
    def post(self, request: Request) -> Response:
        device = _caller_device(request)
        serializer = s.PreKeyUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        counts = services.upload_prekeys(
            device, serializer.validated_data["one_time"], serializer.validated_data["kem"]
        )
        return Response(s.PreKeyCountsSerializer(counts).data)


class SignedPreKeyView(KeysAPIView):
    @extend_schema(
        operation_id="rotate_signed_prekey",
        summary="Replace this device's signed prekey",
        request=s.SignedPreKeyRotationSerializer,
        responses={204: None, **error_responses(*KEY_UPLOAD, *AUTHENTICATED)},
        tags=["prekeys"],
    )
    def put(self, request: Request) -> Response:
        device = _caller_device(request)
        serializer = s.SignedPreKeyRotationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.rotate_signed_prekey(device, serializer.validated_data["prekey"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class LastResortKemPreKeyView(KeysAPIView):
    @extend_schema(
        operation_id="rotate_last_resort_kem_prekey",
        summary="Replace this device's last-resort KEM prekey",
        request=s.LastResortKemPreKeyRotationSerializer,
        responses={204: None, **error_responses(*KEY_UPLOAD, *AUTHENTICATED)},
        tags=["prekeys"],
    )
    def put(self, request: Request) -> Response:
        device = _caller_device(request)
        serializer = s.LastResortKemPreKeyRotationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.rotate_last_resort_kem_prekey(device, serializer.validated_data["prekey"])
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- other accounts' keys ---------------------------------------------------------------------


class AccountKeysView(KeysAPIView):
    @extend_schema(
        operation_id="get_account_keys",
        summary="An account's identity key and device certificates (consumes nothing)",
        parameters=[USERNAME_PARAMETER],
        responses={
            200: s.AccountKeysSerializer,
            **error_responses(*AUTHENTICATED, ErrorCode.UNKNOWN_ACCOUNT),
        },
        tags=["keys"],
    )
    def get(self, request: Request, username: str) -> Response:
        _caller_account(request)
        return Response(s.AccountKeysSerializer(services.account_keys(username)).data)


class BundlesView(KeysAPIView):
    @extend_schema(
        operation_id="claim_bundles",
        summary="Claim prekey bundles: one per device, each one-time prekey handed out once",
        description=(
            "Without `device_ids`, every device of the account, except the calling device "
            "when it belongs to that account. A device with no one-time prekeys left gets a "
            "bundle without a one-time X25519 prekey, carrying its last-resort KEM prekey."
        ),
        parameters=[USERNAME_PARAMETER],
        request=s.BundleClaimSerializer,
        responses={
            200: s.ClaimedBundlesSerializer,
            **error_responses(*AUTHENTICATED, ErrorCode.UNKNOWN_ACCOUNT, ErrorCode.UNKNOWN_DEVICE),
        },
        tags=["keys"],
    )
    def post(self, request: Request, username: str) -> Response:
        _caller_account(request)
        serializer = s.BundleClaimSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        requester = request.auth if isinstance(request.auth, Device) else None
        claimed = services.claim_bundles(
            requester, username, serializer.validated_data.get("device_ids")
        )
        return Response(s.ClaimedBundlesSerializer(claimed).data)
