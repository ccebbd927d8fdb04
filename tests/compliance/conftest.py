"""Set-up shared by the compliance tests: fast password hashing, a fresh attachments
storage, and a way to sign up through the API with the region's age and consent
answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from compliance.policy import DEFAULT_POLICY_DIR, Policy, load_policy
from keys.models import Account
from protocol.keys import AccountIdentity
from tests.server.factories import make_device, sign_up_body


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _attachments_storage(settings: Any, tmp_path: Path) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "attachments")},
        },
    }


@pytest.fixture
def use_region(settings: Any) -> Callable[[str], Policy]:
    """Switch this test's deployment to a shipped region's policy."""

    def use(region: str) -> Policy:
        policy = load_policy(region, DEFAULT_POLICY_DIR)
        settings.POLICY = policy
        return policy

    return use


SignUp = Callable[..., Any]


@pytest.fixture
def post_sign_up() -> SignUp:
    """POST /api/v1/accounts with real keys and ``extra`` fields; the response."""

    def post(username: str, client: APIClient | None = None, **extra: Any) -> Any:
        device = make_device(AccountIdentity.generate(), 1, one_time=2, kem=2)
        body = {**sign_up_body(username, device), **extra}
        return (client or APIClient()).post("/api/v1/accounts", body, format="json")

    return post


def account(username: str) -> Account:
    return Account.objects.select_related("user").get(user__username=username)
