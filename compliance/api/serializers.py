"""Response shapes of the compliance API, for the OpenAPI schema (the views build the JSON
from compliance.published, which also generates the policy's schema)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from compliance.published import public_policy_schema
from compliance.signing import CANONICAL_FORM


@extend_schema_field(public_policy_schema(), component_name="RegionPolicy")
class PolicyDocumentField(serializers.JSONField):
    """The deployment's region policy (deploy/regions/), as published."""


class SignedPolicySerializer(serializers.Serializer):
    policy = PolicyDocumentField(
        help_text="The region policy. Durations are written like 30d or 6mo, deadlines "
        "like 72h or 3bd (business days); sources are cited by id."
    )
    signature_b64 = serializers.CharField(
        help_text="Ed25519 signature, by the deployment key, of the canonical JSON of `policy`"
    )
    public_key_b64 = serializers.CharField(
        help_text="The deployment's Ed25519 public key (32 bytes)"
    )
    canonical = serializers.ChoiceField(
        choices=[CANONICAL_FORM],
        help_text="How `policy` was serialised before signing: keys sorted by code point, "
        "no whitespace, UTF-8 (docs/deploy.md)",
    )


class DeploymentKeySerializer(serializers.Serializer):
    public_key_b64 = serializers.CharField(
        help_text="The deployment's Ed25519 public key (32 bytes)"
    )
    algorithm = serializers.ChoiceField(choices=["ed25519"])
