"""Consent: sign-up records the necessary purposes and the ticked ones; the ledger is
append-only; withdrawing switches a purpose off and the API shows it; a necessary purpose
cannot be withdrawn; a new policy version that asks again turns old grants off until they
are given again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from compliance import consent
from compliance.models import AppendOnlyError, ConsentRecord
from compliance.policy import load_policy
from tests.compliance.conftest import SignUp, account
from tests.compliance.helpers import write_region

pytestmark = pytest.mark.django_db


def _client(response: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    return client


def _purposes(client: APIClient) -> dict[str, dict[str, Any]]:
    response = client.get("/api/v1/consent")
    assert response.status_code == 200, response.json()
    return {item["purpose"]: item for item in response.json()["purposes"]}


def test_sign_up_records_the_necessary_purposes_and_the_ticked_ones(
    post_sign_up: SignUp,
) -> None:
    response = post_sign_up("alice", age_confirmed=True, consents=["diagnostics"])
    assert response.status_code == 201, response.json()

    ledger = {
        r.purpose: (r.granted, r.method, r.policy_version)
        for r in ConsentRecord.objects.filter(account=account("alice"))
    }
    assert ledger == {
        "service": (True, "signup", "1.0.0"),
        "diagnostics": (True, "signup", "1.0.0"),
        "product_updates": (False, "signup", "1.0.0"),
    }
    purposes = _purposes(_client(response))
    assert purposes["service"]["granted"] and not purposes["service"]["can_withdraw"]
    assert purposes["service"]["legal_basis"] == "contract"
    assert purposes["diagnostics"]["granted"] and purposes["diagnostics"]["mode"] == "opt_in"
    assert not purposes["product_updates"]["granted"]
    assert purposes["product_updates"]["can_grant"]


def test_optional_purposes_stay_off_until_granted(post_sign_up: SignUp) -> None:
    response = post_sign_up("alice", age_confirmed=True)  # an API client that asked nothing

    purposes = _purposes(_client(response))
    assert purposes["service"]["granted"]
    assert not purposes["diagnostics"]["granted"] and not purposes["diagnostics"]["answered"]
    assert not consent.has_consent(account("alice"), "crash_reports")
    assert consent.has_consent(account("alice"), "messaging")


def test_withdrawal_switches_a_purpose_off_and_the_api_shows_it(post_sign_up: SignUp) -> None:
    client = _client(post_sign_up("alice", age_confirmed=True, consents=["diagnostics"]))
    assert consent.has_consent(account("alice"), "usage_metrics")

    response = client.post(
        "/api/v1/consent", {"purpose": "diagnostics", "granted": False}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["granted"] is False and response.json()["method"] == "api"
    assert _purposes(client)["diagnostics"]["granted"] is False
    assert not consent.has_consent(account("alice"), "usage_metrics")
    # Append-only: the grant is still there, the withdrawal came after it.
    answers = ConsentRecord.objects.filter(account=account("alice"), purpose="diagnostics")
    assert [r.granted for r in answers.order_by("recorded_at", "pk")] == [True, False]

    client.post("/api/v1/consent", {"purpose": "diagnostics", "granted": True}, format="json")
    assert _purposes(client)["diagnostics"]["granted"] is True


def test_a_necessary_purpose_cannot_be_withdrawn(post_sign_up: SignUp) -> None:
    client = _client(post_sign_up("alice", age_confirmed=True))

    response = client.post(
        "/api/v1/consent", {"purpose": "service", "granted": False}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert "erasure" in response.json()["message"]
    assert _purposes(client)["service"]["granted"] is True


def test_an_unknown_purpose_is_named(post_sign_up: SignUp) -> None:
    client = _client(post_sign_up("alice", age_confirmed=True))

    response = client.post("/api/v1/consent", {"purpose": "ads", "granted": True}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert "purpose" in response.json()["fields"]
    assert "'ads'" in response.json()["message"]


def test_consent_needs_credentials() -> None:
    assert APIClient().get("/api/v1/consent").status_code == 401


def test_the_ledger_is_append_only(post_sign_up: SignUp) -> None:
    post_sign_up("alice", age_confirmed=True)
    record = ConsentRecord.objects.filter(account=account("alice")).first()
    assert record is not None

    record.granted = not record.granted
    with pytest.raises(AppendOnlyError):
        record.save()
    with pytest.raises(AppendOnlyError):
        record.delete()
    with pytest.raises(AppendOnlyError):
        ConsentRecord.objects.filter(pk=record.pk).update(granted=False)
    with pytest.raises(AppendOnlyError):
        ConsentRecord.objects.filter(pk=record.pk).delete()


def test_opt_out_purposes_are_on_for_adults_until_withdrawn(
    post_sign_up: SignUp, use_region: Any
) -> None:
    use_region("us-ca")  # diagnostics: notice and opt-out
    client = _client(post_sign_up("alice", age_confirmed=True))

    assert _purposes(client)["diagnostics"]["granted"] is True
    client.post("/api/v1/consent", {"purpose": "diagnostics", "granted": False}, format="json")
    assert _purposes(client)["diagnostics"]["granted"] is False


# --- a new policy version ------------------------------------------------------------------------


def test_a_new_version_that_asks_again_turns_old_grants_off(
    post_sign_up: SignUp, settings: Any, tmp_path: Path
) -> None:
    client = _client(post_sign_up("alice", age_confirmed=True, consents=["diagnostics"]))
    assert _purposes(client)["diagnostics"]["granted"]

    write_region(tmp_path, "eu", change=lambda doc: doc.update(version="1.1.0"))
    settings.POLICY = load_policy("eu", tmp_path)
    assert settings.POLICY.consent.reconsent.on_version_change

    body = client.get("/api/v1/consent").json()
    assert body["policy_version"] == "1.1.0" and body["reconsent_required"] is True
    purposes = {item["purpose"]: item for item in body["purposes"]}
    assert purposes["diagnostics"]["reconsent_required"] is True
    assert purposes["diagnostics"]["granted"] is False
    assert purposes["diagnostics"]["can_grant"] is True
    # Contract needs no consent; a refusal stays a refusal.
    assert purposes["service"]["granted"] and not purposes["service"]["reconsent_required"]
    assert not purposes["product_updates"]["reconsent_required"]
    assert not consent.has_consent(account("alice"), "crash_reports")

    response = client.post(
        "/api/v1/consent", {"purpose": "diagnostics", "granted": True}, format="json"
    )
    assert response.json()["recorded_version"] == "1.1.0"
    body = client.get("/api/v1/consent").json()
    assert body["reconsent_required"] is False


def test_a_region_that_does_not_ask_again_keeps_the_grant(
    post_sign_up: SignUp, settings: Any
) -> None:
    client = _client(post_sign_up("alice", age_confirmed=True, consents=["diagnostics"]))
    policy = settings.POLICY
    settings.POLICY = dataclasses.replace(
        policy,
        version="1.1.0",
        consent=dataclasses.replace(
            policy.consent,
            reconsent=dataclasses.replace(policy.consent.reconsent, on_version_change=False),
        ),
    )

    body = client.get("/api/v1/consent").json()
    assert body["reconsent_required"] is False
    assert {p["purpose"]: p["granted"] for p in body["purposes"]}["diagnostics"] is True


def test_the_reconsent_flag_is_validated(tmp_path: Path) -> None:
    from compliance.policy import PolicyError

    write_region(
        tmp_path,
        "eu",
        change=lambda doc: doc["consent"].update(reconsent={"on_version_change": "yes"}),
    )
    with pytest.raises(PolicyError) as caught:
        load_policy("eu", tmp_path)
    assert caught.value.field_path == "consent.reconsent.on_version_change"


def test_no_user_is_made_when_consent_is_refused(post_sign_up: SignUp, use_region: Any) -> None:
    use_region("in")  # the service itself rests on consent

    response = post_sign_up("alice", age_confirmed=True)

    assert response.status_code == 403
    assert response.json()["code"] == "consent_required"
    assert not User.objects.filter(username="alice").exists()
    assert post_sign_up("alice", age_confirmed=True, consents=["service"]).status_code == 201


@pytest.mark.parametrize("granted", ["yes", 1, "true", None])
def test_granted_must_be_a_json_boolean(post_sign_up: SignUp, granted: Any) -> None:
    client = _client(post_sign_up("alice", age_confirmed=True))

    response = client.post(
        "/api/v1/consent", {"purpose": "diagnostics", "granted": granted}, format="json"
    )

    assert response.status_code == 400 and "granted" in response.json()["fields"]
