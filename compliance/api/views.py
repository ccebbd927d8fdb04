"""Views of the compliance API. The policy is public: anyone may read what a deployment
promises, before signing up, with no credentials and no cookies. Consent and data-subject
requests act on the caller's own account: a device token, or the web pages' session
cookie (where DRF enforces CSRF); each view parses, then calls one verb of
compliance.consent or compliance.dsr."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance import consent, dsr
from compliance.models import DataSubjectRequest
from compliance.published import signed_policy
from compliance.signing import deployment_key
from keys.api.schema import AUTHENTICATED, error_responses
from keys.models import Account, Device
from project.errors import ServiceError
from protocol.errors import ErrorCode

from . import serializers as s

# The policy changes only with a deployment; let caches hold it for a while.
CACHE_SECONDS = 300


class PublicView(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)


class PolicyView(PublicView):
    @extend_schema(
        operation_id="get_policy",
        summary="The deployment's region policy, signed by the deployment key",
        description=(
            "Retention, consent purposes, ages, deadlines, residency and crypto rules of "
            "this deployment's region. `signature_b64` is an Ed25519 signature by "
            "`public_key_b64` over the canonical JSON of `policy` (`canonical`)."
        ),
        responses={200: s.SignedPolicySerializer},
        auth=[],
        tags=["compliance"],
    )
    def get(self, request: Request) -> Response:
        response = Response(signed_policy(settings.POLICY).as_json("policy"))
        patch_cache_control(response, public=True, max_age=CACHE_SECONDS)
        return response


class PolicyKeyView(PublicView):
    @extend_schema(
        operation_id="get_policy_public_key",
        summary="The deployment's signing key (Ed25519 public key)",
        responses={200: s.DeploymentKeySerializer},
        auth=[],
        tags=["compliance"],
    )
    def get(self, request: Request) -> Response:
        body = {"public_key_b64": deployment_key().public_key_b64, "algorithm": "ed25519"}
        response = Response(body)
        patch_cache_control(response, public=True, max_age=CACHE_SECONDS)
        return response


# --- the caller's own account ---------------------------------------------------------------


def caller_account(request: Request) -> Account:
    if isinstance(request.auth, Device):
        return request.auth.account
    account = Account.objects.filter(user=request.user).first()
    if account is None:
        raise ServiceError(ErrorCode.FORBIDDEN, "this login has no Sealpost account")
    return account


def _method(request: Request) -> consent.Method:
    """How an answer was given: the web pages use the session, clients a device token."""
    return "api" if isinstance(request.auth, Device) else "web"


def _channel(request: Request) -> dsr.Channel:
    return "api" if isinstance(request.auth, Device) else "web"


class OwnView(APIView):
    parser_classes = (JSONParser,)


def consent_json(account: Account) -> dict[str, Any]:
    state = consent.consent_state(account)
    body = {
        "region": settings.POLICY.region.id,
        "policy_version": state.policy_version,
        "reconsent_required": state.reconsent_required,
        "may_consent": state.may_consent,
        "self_consent_from": state.self_consent_from,
        "purposes": state.purposes,
    }
    return dict(s.ConsentStateSerializer(body).data)


class ConsentView(OwnView):
    @extend_schema(
        operation_id="get_consent",
        summary="Each consent purpose of the region, and where this account stands",
        responses={200: s.ConsentStateSerializer, **error_responses(*AUTHENTICATED)},
        tags=["compliance"],
    )
    def get(self, request: Request) -> Response:
        return Response(consent_json(caller_account(request)))

    @extend_schema(
        operation_id="set_consent",
        summary="Give or withdraw consent for one purpose (a new ledger record)",
        description=(
            "A necessary or required purpose cannot be withdrawn (`forbidden`): that means "
            "closing the account. Below the region's age of self-consent optional purposes "
            "cannot be given (`under_age`)."
        ),
        request=s.ConsentChangeSerializer,
        responses={
            200: s.PurposeStateSerializer,
            **error_responses(*AUTHENTICATED, ErrorCode.UNDER_AGE),
        },
        tags=["compliance"],
    )
    def post(self, request: Request) -> Response:
        serializer = s.ConsentChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        state = consent.record_consent(
            caller_account(request), data["purpose"], data["granted"], _method(request)
        )
        return Response(s.PurposeStateSerializer(state).data)


def request_json(request: DataSubjectRequest) -> dict[str, Any]:
    downloadable = (
        request.kind == "export"
        and request.status == "completed"
        and request.archive_expires_at is not None
        and request.archive_expires_at > timezone.now()
    )
    body = {
        "id": request.pk,
        "kind": request.kind,
        "status": request.status,
        "channel": request.channel,
        "received_at": request.received_at,
        "deadline": request.deadline,
        "completed_at": request.completed_at,
        "archive_url": (
            reverse("compliance-api:data-request-archive", args=[request.pk])
            if downloadable
            else None
        ),
        "archive_expires_at": request.archive_expires_at if downloadable else None,
    }
    return dict(s.DataRequestSerializer(body).data)


class DataRequestsView(OwnView):
    @extend_schema(
        operation_id="list_data_requests",
        summary="This account's export and erasure requests, newest first",
        responses={200: s.DataRequestListSerializer, **error_responses(*AUTHENTICATED)},
        tags=["compliance"],
    )
    def get(self, request: Request) -> Response:
        account = caller_account(request)
        requests = DataSubjectRequest.objects.filter(account=account).defer("archive")
        return Response({"requests": [request_json(r) for r in requests]})

    @extend_schema(
        operation_id="create_data_request",
        summary="Ask for an export of everything the server holds, or for erasure",
        description=(
            "`export`: 202 with the request; once `status` is `completed` (the server answers "
            "at once), `archive_url` downloads a zip of JSON files and attachment ciphertext. "
            "`erasure` needs `password`: it deletes the account and everything about it but "
            "what a law keeps, and answers 200 with the request and the erasure report."
        ),
        request=s.DataRequestCreateSerializer,
        responses={
            200: s.ErasureDoneSerializer,
            202: s.DataRequestSerializer,
            **error_responses(*AUTHENTICATED),
        },
        tags=["compliance"],
    )
    def post(self, request: Request) -> Response:
        serializer = s.DataRequestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        account = caller_account(request)
        if data["kind"] == "export":
            opened = dsr.open_request(account, "export", _channel(request))
            done = dsr.run_request(opened)
            return Response(request_json(done), status=status.HTTP_202_ACCEPTED)
        password = data.get("password")
        if not password or not account.user.check_password(password):
            raise ServiceError(
                ErrorCode.UNAUTHORIZED,
                "erasure needs the account's password, entered again",
                fields={"password": [{"code": "unauthorized", "message": "wrong or missing"}]},
            )
        opened = dsr.open_request(account, "erasure", _channel(request))
        done = dsr.run_request(opened)
        if not isinstance(request.auth, Device):
            logout(request._request)
        return Response({"request": request_json(done), "report": done.report_data})


class DataRequestArchiveView(OwnView):
    @extend_schema(
        operation_id="download_data_request_archive",
        summary="Download a completed export (application/zip)",
        parameters=[
            OpenApiParameter("request_id", int, OpenApiParameter.PATH, description="the id")
        ],
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="manifest.json and one JSON file per model"
            ),
            **error_responses(*AUTHENTICATED, ErrorCode.NOT_FOUND),
        },
        tags=["compliance"],
    )
    def get(self, request: Request, request_id: int) -> HttpResponse:
        account = caller_account(request)
        archive = dsr.archive_of(account, request_id)
        day = timezone.now().date().isoformat()
        response = HttpResponse(archive, content_type="application/zip")
        response["Content-Disposition"] = (
            f'attachment; filename="sealpost-export-{account.username}-{day}.zip"'
        )
        response["Cache-Control"] = "no-store"
        return response
