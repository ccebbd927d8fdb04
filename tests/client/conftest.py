"""Fixtures for the client tests: an in-memory server and two registered people on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.core import Client

from .fakes import FakeServer, registered


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def alice(server: FakeServer, tmp_path: Path) -> AsyncIterator[Client]:
    client = await registered(server, tmp_path / "alice", "alice")
    yield client
    await client.close()


@pytest.fixture
async def bob(server: FakeServer, tmp_path: Path) -> AsyncIterator[Client]:
    client = await registered(server, tmp_path / "bob", "bob")
    yield client
    await client.close()
