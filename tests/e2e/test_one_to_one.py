"""The 1:1 path end to end: a real Daphne process, real reference clients, a restart.

Bob is offline while Alice's first messages queue up; the server is stopped and started
again mid-stream (once gracefully, once killed); every message arrives exactly once and in
its sender's order; afterwards neither the server's SQLite files nor its log hold any of
the plaintexts.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client, MessageReceived
from harness.live_server import LiveServer
from tests.e2e.helpers import FAST, PASSWORD, cli, receive_until

pytestmark = pytest.mark.e2e

PER_DIRECTION = 200


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "server") as live:
        yield live


def _texts(tag: str, count: int) -> list[str]:
    # A random marker in every text, so a search of the server's files cannot match by
    # accident and a hit can only be a leaked plaintext.
    marker = secrets.token_hex(6)
    return [f"{tag} {index:03d} {marker} ünïcödé ✓" for index in range(count)]


async def _conversation(server: LiveServer, homes: Path) -> tuple[list[str], list[str]]:
    a_to_b = _texts("alice→bob", PER_DIRECTION)
    b_to_a = _texts("bob→alice", PER_DIRECTION)
    alice = Client(homes / "alice", backoff=FAST)
    bob = Client(homes / "bob", backoff=FAST)
    try:
        await alice.register(server.url, "alice", PASSWORD)
        await bob.register(server.url, "bob", PASSWORD)

        # Bob is offline: Alice's messages wait in his queue, across a graceful restart.
        for text in a_to_b[: PER_DIRECTION // 2]:
            await alice.send_text("bob", text)
        await asyncio.to_thread(server.restart)
        for text in a_to_b[PER_DIRECTION // 2 :]:
            await alice.send_text("bob", text)

        got_by_bob = await receive_until(bob, PER_DIRECTION, timeout=120)
        assert [m.text for m in got_by_bob] == a_to_b
        assert {m.from_ for m in got_by_bob} == {"alice"}

        # Both online: Bob sends while Alice receives; the server is killed mid-stream.
        receiving = asyncio.create_task(receive_until(alice, PER_DIRECTION, timeout=180))
        for index, text in enumerate(b_to_a):
            if index == PER_DIRECTION // 2:
                await asyncio.to_thread(server.restart, True)
            await bob.send_text("alice", text)
        got_by_alice = await receiving
        assert [m.text for m in got_by_alice] == b_to_a

        # Nothing more arrives: every message was delivered exactly once.
        extra_bob = [e async for e in bob.receive(wait=1.0) if isinstance(e, MessageReceived)]
        extra_alice = [e async for e in alice.receive(wait=1.0) if isinstance(e, MessageReceived)]
        assert extra_bob == [] and extra_alice == []
        assert [m.text for m in bob.messages("alice") if m.direction == "in"] == a_to_b
        assert [m.text for m in alice.messages("bob") if m.direction == "in"] == b_to_a
    finally:
        await alice.close()
        await bob.close()
    return a_to_b, b_to_a


def test_two_clients_exactly_once_across_restarts(server: LiveServer, tmp_path: Path) -> None:
    a_to_b, b_to_a = asyncio.run(_conversation(server, tmp_path / "homes"))
    server.stop()

    stored = server.stored_bytes()
    log = server.log_path.read_bytes()
    assert len(stored) > 10_000 and b"alice" in stored  # the search reads the real files
    for text in a_to_b + b_to_a:
        needle = text.encode()
        marker = text.split()[2].encode()
        assert needle not in stored and marker not in stored, "plaintext in the database"
        assert needle not in log and marker not in log, "plaintext in the server log"


def test_cli_register_send_receive_safety_number(server: LiveServer, tmp_path: Path) -> None:
    carol, dave = tmp_path / "carol", tmp_path / "dave"
    assert (
        cli(carol, "register", "carol", "--password", PASSWORD, server=server.url).returncode == 0
    )
    assert cli(dave, "register", "dave", "--password", PASSWORD, server=server.url).returncode == 0

    for text in ("hi dave", "second line"):
        sent = cli(carol, "send", "dave", text)
        assert sent.returncode == 0, sent.stderr

    received = cli(dave, "receive", "--wait", "1", "--json")
    assert received.returncode == 0, received.stderr
    lines = [json.loads(line) for line in received.stdout.splitlines() if line.strip()]
    assert [(m["from"], m["text"]) for m in lines] == [
        ("carol", "hi dave"),
        ("carol", "second line"),
    ]
    assert all(m["sent_at"].endswith("Z") and m["type"] == "message" for m in lines)

    carol_number = cli(carol, "safety-number", "dave")
    dave_number = cli(dave, "safety-number", "carol")
    assert carol_number.returncode == 0 and dave_number.returncode == 0
    digits = carol_number.stdout.splitlines()[0]
    assert digits == dave_number.stdout.splitlines()[0]
    assert len(digits.replace(" ", "")) == 60

    unknown = cli(carol, "send", "nobody_here", "hello?")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [unknown.stderr.strip()]  # one line
    assert "unknown_account" in unknown.stderr

    unregistered = cli(tmp_path / "empty", "send", "dave", "hello")
    assert unregistered.returncode == 1 and "not_registered" in unregistered.stderr
