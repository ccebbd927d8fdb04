"""Set-up shared by the server tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Django's real hasher takes most of a second per password by design; tests that make
    accounts would spend their time there. Password checks behave the same with MD5."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _close_relay_writers() -> Iterator[None]:
    """The relay's writer keeps its database connection open between batches; a test's
    event loop ends with the test, so its writer is closed after it (on PostgreSQL an open
    connection would keep the test database from being dropped)."""
    yield
    from messaging.writer import close_writers

    close_writers()
