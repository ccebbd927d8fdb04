"""Views of the compliance API. The policy is public: anyone may read what a deployment
promises, before signing up, with no credentials and no cookies."""

from __future__ import annotations

from django.conf import settings
from django.utils.cache import patch_cache_control
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.published import signed_policy
from compliance.signing import deployment_key

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
