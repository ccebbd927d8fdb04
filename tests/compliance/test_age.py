"""The age rule at sign-up, by region: below the minimum the answer is ``under_age``
(HTTP 403) naming the region's minimum and nothing is stored; between the minimum and the
age of self-consent the account is made with every optional purpose off (or refused where
the service itself rests on consent); the birth date is never stored."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from compliance.consent import age_on
from compliance.models import AgeCheck, ConsentRecord
from tests.compliance.conftest import SignUp, account
from tests.compliance.helpers import SHIPPED_REGIONS

pytestmark = pytest.mark.django_db

TODAY = date.today()


def _born(years: int, days: int = 0) -> str:
    """The birth date of someone ``years`` old today, ``days`` short of that birthday."""
    try:
        birthday = TODAY.replace(year=TODAY.year - years)
    except ValueError:  # 29 February
        birthday = date(TODAY.year - years, 3, 1)
    return (birthday + timedelta(days=days)).isoformat()


def _extra(region: str) -> dict[str, Any]:
    return {"consents": ["service"]} if region == "in" else {}


@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_a_day_under_the_minimum_is_refused_naming_it(
    post_sign_up: SignUp, use_region: Any, region: str
) -> None:
    minimum = use_region(region).age.minimum_signup_age

    response = post_sign_up("alice", birth_date=_born(minimum, days=1), **_extra(region))

    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "under_age"
    assert body["minimum_age"] == minimum and body["region"] == region
    assert f"aged {minimum} or over" in body["message"]
    assert "birth_date" in body["fields"]
    assert not User.objects.filter(username="alice").exists()


@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_the_minimum_age_itself_may_sign_up(
    post_sign_up: SignUp, use_region: Any, region: str
) -> None:
    minimum = use_region(region).age.minimum_signup_age

    response = post_sign_up("alice", birth_date=_born(minimum), **_extra(region))

    assert response.status_code == 201, response.json()


def test_the_same_age_is_refused_in_one_region_and_let_in_in_another(
    post_sign_up: SignUp, use_region: Any
) -> None:
    use_region("in")  # 18
    refused = post_sign_up("alice", birth_date=_born(16), consents=["service"])
    assert refused.status_code == 403 and refused.json()["minimum_age"] == 18

    use_region("us-ca")  # 13
    assert post_sign_up("alice", birth_date=_born(16)).status_code == 201


def test_below_the_age_of_self_consent_optional_purposes_stay_off(
    post_sign_up: SignUp,
) -> None:
    # EU: 13 may sign up, 16 consents for themselves.
    response = post_sign_up("alice", birth_date=_born(14), consents=["diagnostics"])
    assert response.status_code == 201, response.json()

    check = AgeCheck.objects.get(account=account("alice"))
    assert check.method == "birth_date"
    born = date.fromisoformat(_born(14))
    sixteenth = born.replace(year=born.year + 16) if (born.month, born.day) != (2, 29) else None
    assert check.self_consent_from == (sixteenth or date(born.year + 16, 3, 1))
    assert {r.purpose for r in ConsentRecord.objects.filter(account=account("alice"))} == {
        "service"
    }
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    body = client.get("/api/v1/consent").json()
    assert body["may_consent"] is False
    diagnostics = next(p for p in body["purposes"] if p["purpose"] == "diagnostics")
    assert diagnostics["granted"] is False and diagnostics["can_grant"] is False

    refused = client.post(
        "/api/v1/consent", {"purpose": "diagnostics", "granted": True}, format="json"
    )
    assert refused.status_code == 403 and refused.json()["code"] == "under_age"


def test_the_birth_date_is_not_stored(post_sign_up: SignUp) -> None:
    born = _born(20)
    post_sign_up("alice", birth_date=born)

    check = AgeCheck.objects.get(account=account("alice"))
    assert check.self_consent_from is None  # of age: nothing about the date is kept
    assert born not in str(list(AgeCheck.objects.values()))


def test_age_confirmed_states_the_age_of_self_consent(post_sign_up: SignUp) -> None:
    assert post_sign_up("alice", age_confirmed=True).status_code == 201
    assert AgeCheck.objects.get(account=account("alice")).method == "confirmed"

    response = post_sign_up("bob", age_confirmed=False)
    assert response.status_code == 400 and "age_confirmed" in response.json()["fields"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"birth_date": (TODAY + timedelta(days=1)).isoformat()}, "birth_date"),
        ({"birth_date": "1990-13-01"}, "birth_date"),
        ({"birth_date": "1800-01-01"}, "birth_date"),
        ({"birth_date": _born(30), "age_confirmed": True}, "age_confirmed"),
        ({"age_confirmed": True, "consents": ["ads"]}, "consents[0]"),
    ],
)
def test_bad_answers_are_named(post_sign_up: SignUp, extra: dict[str, Any], field: str) -> None:
    response = post_sign_up("alice", **extra)

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid_request"
    assert field in response.json()["fields"]
    assert not User.objects.filter(username="alice").exists()


def test_an_age_not_stated_is_let_in_only_where_the_service_needs_no_consent(
    post_sign_up: SignUp, use_region: Any
) -> None:
    response = post_sign_up("alice")  # EU, an API client that sends no age
    assert response.status_code == 201
    assert AgeCheck.objects.get(account=account("alice")).method == "not_stated"

    use_region("in")
    refused = post_sign_up("bob", consents=["service"])
    assert refused.status_code == 400 and "birth_date" in refused.json()["fields"]


def test_in_india_under_18_needs_a_parent_and_is_refused(
    post_sign_up: SignUp, use_region: Any, settings: Any
) -> None:
    import dataclasses

    policy = use_region("in")
    # Even with a lower minimum, the service's consent could not be given under 18.
    settings.POLICY = dataclasses.replace(
        policy, age=dataclasses.replace(policy.age, minimum_signup_age=13)
    )

    response = post_sign_up("alice", birth_date=_born(16), consents=["service"])

    assert response.status_code == 403 and response.json()["code"] == "under_age"
    assert "parent" in response.json()["message"]


def test_age_on_counts_birthdays() -> None:
    assert age_on(date(2000, 6, 15), date(2016, 6, 14)) == 15
    assert age_on(date(2000, 6, 15), date(2016, 6, 15)) == 16
    assert age_on(date(2000, 2, 29), date(2016, 2, 28)) == 15
