"""Request and response shapes of the compliance API. The policy's JSON is built from
compliance.published, which also generates its schema; consent and data-subject requests
are read and written through the serializers here. Request fields are strict JSON types."""

from __future__ import annotations

from typing import Any

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


# --- strict JSON types ---------------------------------------------------------------------
# DRF's fields coerce: CharField takes 123 as "123", BooleanField takes "yes" and 1. The
# schema says string and boolean, so anything else is refused.


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


# --- consent --------------------------------------------------------------------------------


class PurposeStateSerializer(serializers.Serializer):
    purpose = serializers.CharField(source="purpose.id", help_text="the purpose's id")
    description = serializers.CharField(source="purpose.description")
    legal_basis = serializers.CharField(
        source="purpose.legal_basis",
        help_text="contract, consent, legitimate_interests, legal_obligation, notice or "
        "deemed_consent",
    )
    mode = serializers.CharField(source="purpose.mode", help_text="necessary, opt_in or opt_out")
    required = serializers.BooleanField(source="purpose.required")
    granted = serializers.BooleanField(help_text="whether the purpose is on now")
    answered = serializers.BooleanField(help_text="whether the ledger holds an answer for it")
    recorded_at = serializers.DateTimeField(allow_null=True)
    recorded_version = serializers.CharField(
        allow_null=True, help_text="the policy version the latest answer was given under"
    )
    method = serializers.CharField(allow_null=True, help_text="signup, web, api or admin")
    reconsent_required = serializers.BooleanField(
        help_text="granted under an older policy version that asks again: off until answered"
    )
    can_grant = serializers.BooleanField()
    can_withdraw = serializers.BooleanField()
    note = serializers.CharField(help_text="why it cannot change, in words; empty if it can")


class ConsentStateSerializer(serializers.Serializer):
    region = serializers.CharField()
    policy_version = serializers.CharField()
    reconsent_required = serializers.BooleanField(
        help_text="true if any purpose must be answered again under this policy version"
    )
    may_consent = serializers.BooleanField(
        help_text="false below the region's age of self-consent, or when the age was not "
        "stated: then optional purposes stay off"
    )
    self_consent_from = serializers.DateField(allow_null=True)
    purposes = PurposeStateSerializer(many=True)


class ConsentChangeSerializer(serializers.Serializer):
    purpose = StrictCharField(max_length=64, help_text="a purpose id of the region policy")
    granted = StrictBooleanField(help_text="true to give consent, false to withdraw it")


# --- data-subject requests ------------------------------------------------------------------------


class DataRequestCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["export", "erasure"])
    password = StrictCharField(
        required=False,
        write_only=True,
        trim_whitespace=False,
        max_length=4096,
        style={"input_type": "password"},
        help_text="erasure only: the account's password, entered again",
    )


class DataRequestSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["export", "erasure"])
    status = serializers.ChoiceField(choices=["received", "completed", "failed"])
    channel = serializers.ChoiceField(choices=["web", "api", "admin", "command"])
    received_at = serializers.DateTimeField()
    deadline = serializers.DateTimeField(help_text="the region's deadline for answering it")
    completed_at = serializers.DateTimeField(allow_null=True)
    archive_url = serializers.CharField(
        allow_null=True, help_text="a completed export: where to download the zip"
    )
    archive_expires_at = serializers.DateTimeField(allow_null=True)


class DataRequestListSerializer(serializers.Serializer):
    requests = DataRequestSerializer(many=True)


class ErasureStepSerializer(serializers.Serializer):
    label = serializers.CharField(help_text="the kind of record: app.model")
    deleted = serializers.IntegerField()
    kept = serializers.IntegerField()
    reason = serializers.CharField(help_text="why rows were kept (a law, or the audit)")
    until = serializers.DateTimeField(allow_null=True, help_text="kept until, at the latest")


class ErasureReportSerializer(serializers.Serializer):
    username = serializers.CharField()
    pseudonym = serializers.CharField(help_text="what stands for the username in kept rows")
    region = serializers.CharField()
    policy_version = serializers.CharField()
    erased_at = serializers.DateTimeField()
    steps = ErasureStepSerializer(many=True)


class ErasureDoneSerializer(serializers.Serializer):
    request = DataRequestSerializer()
    report = ErasureReportSerializer()
