"""Set-up shared by the server tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Django's real hasher takes most of a second per password by design; tests that make
    accounts would spend their time there. Password checks behave the same with MD5."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
