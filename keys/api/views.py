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
- Linking: a new device creates and polls its provisioning address with no credentials
  (the address is 16 random bytes); filling it and asking for a link token take a device
  token; the new device then registers with the link token alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance import consent
from keys import services, throttles
from keys.auth import DeviceOrLinkTokenAuthentication, DeviceTokenAuthentication
from keys.models import Account, Device, LinkToken
from project.errors import ServiceError
from project.ratelimit import client_address
from protocol.errors import ErrorCode

from . import serializers as s
from .schema import AUTHENTICATED, DEVICE_LIST, KEY_UPLOAD, error_responses

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


def _account_by_password(request: Request, username: str | None, password: str | None) -> Account:
    """The account whose password this is, within the log-in limits (keys.throttles)."""
    if not username or password is None:
        raise ServiceError(
            ErrorCode.UNAUTHORIZED,
            "send a device token, or username and password in the body",
        )
    username = username.strip().lower()
    address = client_address(request)
    throttles.check_login(username, address)
    user = authenticate(username=username, password=password)
    account = Account.objects.filter(user=user).first() if user is not None else None
    if account is None:
        throttles.login_failed(username, address)
        raise ServiceError(ErrorCode.UNAUTHORIZED, "wrong username or password")
    throttles.login_succeeded(username, address)
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
            "CSRF check and is also logged in. The region's age rule and consent purposes "
            "apply (`birth_date` or `age_confirmed`, and `consents`; docs/api.md)."
        ),
        request=s.SignUpSerializer,
        responses={
            201: s.AccountCreatedSerializer,
            **error_responses(
                *KEY_UPLOAD,
                *DEVICE_LIST,
                ErrorCode.INVALID_USERNAME,
                ErrorCode.WEAK_PASSWORD,
                ErrorCode.USERNAME_TAKEN,
                ErrorCode.FORBIDDEN,
                ErrorCode.RATE_LIMITED,
                ErrorCode.UNDER_AGE,
                ErrorCode.CONSENT_REQUIRED,
            ),
        },
        auth=[],
        tags=["accounts"],
    )
    def post(self, request: Request) -> Response:
        browser = _check_csrf_if_browser(request)
        throttles.check_sign_up(client_address(request))
        serializer = s.SignUpSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # The region's age rule first: an under-age sign-up leaves nothing behind.
        answers = consent.check_sign_up(
            data.get("birth_date"), data.get("age_confirmed"), data.get("consents")
        )
        device, token = services.register_account(
            data["username"],
            data["password"],
            data["identity_key_b64"],
            data["device"]["device_input"],
            data["device_list"],
            then=lambda account: consent.record_sign_up(account, answers),
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
                ErrorCode.INVALID_REQUEST,
                ErrorCode.UNAUTHORIZED,
                ErrorCode.FORBIDDEN,
                ErrorCode.RATE_LIMITED,
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
            request, serializer.validated_data["username"], serializer.validated_data["password"]
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
            "Authenticated in one of three ways: as an existing device of the account "
            "(bearer token), with `username` and `password` in the body, or with `username` "
            'and a single-use `link_token` (docs/api.md, "Linking a new device"). The '
            "certificate must be signed by the account's identity key on file, and "
            "`device_list_b64` must be the account's new signed device list: a version above "
            "the stored one, naming exactly the existing devices and the new one. The device "
            'fields may also be sent under `"device"`, as in sign-up.'
        ),
        request=s.AddDeviceSerializer,
        responses={
            201: s.AccountCreatedSerializer,
            **error_responses(
                *KEY_UPLOAD,
                *DEVICE_LIST,
                *AUTHENTICATED,
                ErrorCode.DEVICE_ID_TAKEN,
                ErrorCode.DEVICE_LIMIT_REACHED,
                ErrorCode.LINK_NOT_FOUND,
                ErrorCode.LINK_EXPIRED,
                ErrorCode.RATE_LIMITED,
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
        device_input = (fields["device"] if wrapped else fields)["device_input"]
        prefix = "device." if wrapped else ""
        if "link_token" in fields:
            # The link token is the credential, whatever else the request carries.
            username = fields.get("username")
            if not username:
                raise ServiceError(
                    ErrorCode.INVALID_REQUEST,
                    "username: a link token is sent with the account's username",
                    fields={
                        "username": [
                            {
                                "code": ErrorCode.INVALID_REQUEST.slug,
                                "message": "required with link_token",
                            }
                        ]
                    },
                )
            device, token = services.add_linked_device(
                username,
                fields["link_token"],
                device_input,
                fields["device_list"],
                field_prefix=prefix,
            )
            account = device.account
        else:
            if request.auth is not None or request.user.is_authenticated:
                account = _caller_account(request)
            else:
                account = _account_by_password(
                    request, fields.get("username"), fields.get("password")
                )
            device, token = services.add_device(
                account, device_input, fields["device_list"], field_prefix=prefix
            )
        body = {"username": account.username, "device_id": device.device_id, "token": token}
        return Response(s.AccountCreatedSerializer(body).data, status=status.HTTP_201_CREATED)


class LinkTokensView(KeysAPIView):
    # Bearer only: the device that approves a link must be a device of the account.
    authentication_classes = (DeviceTokenAuthentication,)

    @extend_schema(
        operation_id="create_link_token",
        summary="A single-use token with which one new device may register (10 minutes)",
        description=(
            "The calling device seals it to the new device's link code in a "
            "ProvisionMessage; the new device sends it with `username` to "
            "`POST /api/v1/devices`. Only its hash is stored."
        ),
        request=None,
        responses={201: s.LinkTokenSerializer, **error_responses(*AUTHENTICATED)},
        tags=["linking"],
    )
    def post(self, request: Request) -> Response:
        issued = services.create_link_token(_caller_device(request))
        return Response(s.LinkTokenSerializer(issued).data, status=status.HTTP_201_CREATED)


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
        description=(
            'JSON body `{"device_list_b64"}`: the account\'s new signed device list, a '
            "version above the stored one naming exactly the devices that remain (a device "
            "may revoke itself). (OpenAPI 3.0 cannot describe a DELETE body, hence here.)"
        ),
        parameters=[DEVICE_ID_PARAMETER],
        request=None,
        responses={
            204: None,
            **error_responses(
                *AUTHENTICATED, *DEVICE_LIST, ErrorCode.MALFORMED, ErrorCode.UNKNOWN_DEVICE
            ),
        },
        tags=["devices"],
    )
    def delete(self, request: Request, device_id: int) -> Response:
        account = _caller_account(request)
        serializer = s.RevokeDeviceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.revoke_device(account, device_id, serializer.validated_data["device_list"])
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- provisioning: the relay of the sealed message to a new device ---------------------------

ADDRESS_PARAMETER = OpenApiParameter(
    "address",
    str,
    OpenApiParameter.PATH,
    description="the provisioning address: 16 bytes, base64url without padding",
)
WAIT_PARAMETER = OpenApiParameter(
    "wait",
    int,
    OpenApiParameter.QUERY,
    required=False,
    description=(
        f"seconds to wait for the sealed message (0-{services.MAX_PROVISIONING_WAIT_SECONDS}, "
        "default 0)"
    ),
)
# How often a waiting GET looks at the database.
POLL_INTERVAL_SECONDS = 0.25


class ProvisioningView(KeysAPIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    @extend_schema(
        operation_id="create_provisioning_address",
        summary="A provisioning address for a new device's link code (10 minutes)",
        description=(
            f"No authentication; at most {services.PROVISIONING_RATE} a minute per client address."
        ),
        request=None,
        responses={
            201: s.ProvisioningAddressSerializer,
            **error_responses(ErrorCode.RATE_LIMITED),
        },
        auth=[],
        tags=["linking"],
    )
    def post(self, request: Request) -> Response:
        slot = services.create_provisioning_slot(client_address(request))
        return Response(s.ProvisioningAddressSerializer(slot).data, status=status.HTTP_201_CREATED)


class ProvisioningSlotView(KeysAPIView):
    """PUT is served here; GET by the asynchronous ``provisioning_slot`` below, which this
    class also describes to the OpenAPI schema."""

    authentication_classes = (DeviceTokenAuthentication,)

    def get_permissions(self) -> list[Any]:
        if self.request.method == "GET":
            return [AllowAny()]
        return super().get_permissions()

    @extend_schema(
        operation_id="fill_provisioning_address",
        summary="Put the sealed ProvisionMessage at a new device's provisioning address",
        description=(
            f"Once per address; at most {services.MAX_SEALED_BYTES} bytes. The server cannot "
            "open it."
        ),
        parameters=[ADDRESS_PARAMETER],
        request=s.SealedSerializer,
        responses={
            204: None,
            **error_responses(
                *AUTHENTICATED,
                ErrorCode.MALFORMED,
                ErrorCode.INVALID_VALUE,
                ErrorCode.TOO_LARGE,
                ErrorCode.LINK_NOT_FOUND,
                ErrorCode.LINK_EXPIRED,
            ),
            409: OpenApiResponse(
                s.ErrorSerializer,
                description="`code` is one of: `invalid_request` (the address already holds "
                "a sealed message)",
            ),
        },
        tags=["linking"],
    )
    def put(self, request: Request, address: str) -> Response:
        _caller_device(request)
        serializer = s.SealedSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.fill_provisioning_slot(address, serializer.validated_data["sealed_b64"])
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="take_provisioning_message",
        summary="Wait for the sealed ProvisionMessage; it is deleted once handed out",
        description=(
            "No authentication. Answers 200 as soon as the message is there (the address is "
            "then deleted), or 204 once `wait` seconds passed without it."
        ),
        parameters=[ADDRESS_PARAMETER, WAIT_PARAMETER],
        request=None,
        responses={
            200: s.SealedSerializer,
            204: None,
            **error_responses(
                ErrorCode.INVALID_REQUEST, ErrorCode.LINK_NOT_FOUND, ErrorCode.LINK_EXPIRED
            ),
        },
        auth=[],
        tags=["linking"],
    )
    def get(self, request: Request, address: str) -> Response:
        # Not routed (provisioning_slot serves GET); kept correct for wait=0 all the same.
        sealed = services.take_provisioning_message(address)
        if sealed is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(s.SealedSerializer({"sealed_b64": sealed}).data)


def _error_response(error: ServiceError) -> JsonResponse:
    """The same {code, message, fields} shape and status as project.errors gives DRF."""
    response = JsonResponse(error.body(), status=error.http_status)
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    return response


def _wait_seconds(request: HttpRequest) -> int:
    raw = request.GET.get("wait", "0")
    limit = services.MAX_PROVISIONING_WAIT_SECONDS
    try:
        wait = int(raw)
    except ValueError:
        wait = -1
    if not 0 <= wait <= limit:
        message = f"wait is a whole number of seconds from 0 to {limit}"
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"wait: {message}",
            fields={"wait": [{"code": ErrorCode.INVALID_REQUEST.slug, "message": message}]},
        )
    return wait


async def _long_poll(request: HttpRequest, address: str) -> HttpResponse:
    """Look for the sealed message every POLL_INTERVAL_SECONDS until it is there or
    ``wait`` has passed. Sleeping holds no thread and no database connection; a client
    that goes away cancels the wait (Django's ASGI handler cancels the view)."""
    try:
        wait = _wait_seconds(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        take = sync_to_async(services.take_provisioning_message)
        while True:
            sealed = await take(address)
            if sealed is not None:
                response: HttpResponse = JsonResponse(
                    s.SealedSerializer({"sealed_b64": sealed}).data
                )
                response["Cache-Control"] = "no-store"
                return response
            remaining = deadline - loop.time()
            if remaining <= 0:
                return HttpResponse(status=status.HTTP_204_NO_CONTENT)
            await asyncio.sleep(min(POLL_INTERVAL_SECONDS, remaining))
    except ServiceError as error:
        return _error_response(error)


_provisioning_slot_view = ProvisioningSlotView.as_view()


@csrf_exempt  # PUT takes only a bearer token (no cookie to ride on); GET needs no CSRF check
async def provisioning_slot(request: HttpRequest, address: str) -> HttpResponse:
    """``/api/v1/provisioning/{address}``: GET is a long poll, served asynchronously (a
    waiting client holds no worker thread); everything else goes to the DRF view."""
    if request.method == "GET":
        return await _long_poll(request, address)
    response: HttpResponse = await sync_to_async(_provisioning_slot_view)(request, address=address)
    return response


# drf-spectacular documents the operations of the DRF view that a URL pattern's callback
# names (as APIView.as_view() does), GET included: this one documents ProvisioningSlotView.
provisioning_slot.cls = ProvisioningSlotView
provisioning_slot.initkwargs = {}


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
    authentication_classes = (DeviceOrLinkTokenAuthentication, SessionAuthentication)

    @extend_schema(
        operation_id="get_account_keys",
        summary="An account's identity key, signed device list and device certificates "
        "(consumes nothing)",
        description=(
            "The bearer may also be an unused, unexpired link token, for its own account "
            "only: a device being linked reads the list it must extend before it has a "
            "device token."
        ),
        parameters=[USERNAME_PARAMETER],
        responses={
            200: s.AccountKeysSerializer,
            **error_responses(*AUTHENTICATED, ErrorCode.UNKNOWN_ACCOUNT),
        },
        tags=["keys"],
    )
    def get(self, request: Request, username: str) -> Response:
        if isinstance(request.auth, LinkToken):
            if username.strip().lower() != request.auth.account.username:
                raise ServiceError(
                    ErrorCode.FORBIDDEN, "a link token reads only its own account's keys"
                )
        else:
            _caller_account(request)
        return Response(s.AccountKeysSerializer(services.account_keys(username)).data)


class BundlesView(KeysAPIView):
    @extend_schema(
        operation_id="claim_bundles",
        summary="Claim prekey bundles: one per device, each one-time prekey handed out once",
        description=(
            "Without `device_ids`, every device of the account, except the calling device "
            "when it belongs to that account. A device with no one-time prekeys left gets a "
            "bundle without a one-time X25519 prekey, carrying its last-resort KEM prekey. "
            "So does every bundle beyond the claim limits (per requesting account, per "
            "account and target device, per target device; docs/api.md): a claim is never "
            "refused for them, it just hands out no one-time prekeys."
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
        caller = _caller_account(request)
        serializer = s.BundleClaimSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        requester = request.auth if isinstance(request.auth, Device) else None
        claimed = services.claim_bundles(
            requester,
            username,
            serializer.validated_data.get("device_ids"),
            requester_account_pk=caller.pk,
        )
        return Response(s.ClaimedBundlesSerializer(claimed).data)
