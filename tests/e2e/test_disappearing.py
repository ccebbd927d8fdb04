"""Disappearing messages and typing indicators end to end, with a real Daphne.

* With a 3-second timer, a text and a file are gone from both clients' stores (and the
  receiver's downloads) after the timer, and from the server's database: delivered ones
  are acknowledged away, and ones whose receiver stays offline past the timer are dropped
  by the relay undelivered (the purge runs every second here). The file's blob, announced
  with the timer as its ``ttl_seconds``, is purged too: its row and its stored parts.
* Typing between two CLI clients: the receiver's ``receive`` shows it, and the server never
  stores it (an EPHEMERAL send).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from client import Client, MessageReceived
from client.core import AttachmentReceived, Event, TimerChanged
from harness.live_server import ROOT, LiveServer
from tests.e2e.helpers import FAST, PASSWORD, cli

pytestmark = pytest.mark.e2e

TIMER = 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    env = {
        "ATTACHMENTS_DIR": str(tmp_path / "blobs"),
        "PURGE_INTERVAL_SECONDS": "1",  # the scheduler runs in Daphne (PURGE_SCHEDULER=auto)
    }
    with LiveServer(tmp_path / "server", extra_env=env) as live:
        yield live


def _envelopes(server: LiveServer) -> int:
    return int(server.query("SELECT count(*) FROM messaging_envelope")[0][0])


def _next_seq(server: LiveServer, username: str) -> int:
    """The seq the next envelope stored for ``username``'s device 1 would get."""
    rows = server.query(
        "SELECT d.next_seq FROM keys_device d JOIN keys_account a ON a.id = d.account_id "
        "JOIN auth_user u ON u.id = a.user_id WHERE u.username = ? AND d.device_id = 1",
        (username,),
    )
    return int(rows[0][0])


def _payloads(server: LiveServer) -> int:
    return int(server.query("SELECT count(*) FROM messaging_sharedpayload")[0][0])


def _blobs(server: LiveServer) -> list[tuple[str, int | None]]:
    rows = server.query("SELECT id, ttl_seconds FROM attachments_blob")
    return [(str(row[0]), None if row[1] is None else int(row[1])) for row in rows]


def _stored_parts(blobs_dir: Path) -> list[Path]:
    return [path for path in blobs_dir.rglob("*") if path.is_file()]


async def _collect(client: Client, until: type, count: int, timeout: float = 30) -> list[Event]:
    events: list[Event] = []

    async def run() -> None:
        seen = 0
        async for event in client.receive(wait=None):
            events.append(event)
            if isinstance(event, until):
                seen += 1
                if seen >= count:
                    return

    await asyncio.wait_for(run(), timeout)
    return events


async def _delivered_then_gone(
    server: LiveServer, homes: Path, source: Path, blobs_dir: Path
) -> None:
    alice = Client(homes / "alice", backoff=FAST)
    bob = Client(homes / "bob", backoff=FAST)
    try:
        await alice.register(server.url, "alice", PASSWORD)
        await bob.register(server.url, "bob", PASSWORD)
        await alice.send_text("bob", "before the timer")
        await alice.set_timer("bob", TIMER)
        assert alice.timer("bob") == TIMER
        await alice.send_text("bob", "this one disappears")
        await alice.send_file("bob", source)
        sent_at = time.time()
        [(blob_id, ttl)] = _blobs(server)
        assert ttl == TIMER
        assert any(blob_id in str(part) for part in _stored_parts(blobs_dir))

        events = await _collect(bob, AttachmentReceived, 1)
        [changed] = [e for e in events if isinstance(e, TimerChanged)]
        assert (changed.peer, changed.by, changed.timer_seconds) == ("alice", "alice", TIMER)
        assert bob.timer("alice") == TIMER
        texts = [e for e in events if isinstance(e, MessageReceived)]
        assert [(t.text, t.expires_at_ms is not None) for t in texts] == [
            ("before the timer", False),
            ("this one disappears", True),
        ]
        [file] = [e for e in events if isinstance(e, AttachmentReceived)]
        assert file.path is not None and file.path.exists() and file.expires_at_ms is not None
        kinds = [m.kind for m in bob.messages("alice")]
        assert kinds == ["text", "timer", "text", "attachment"]
        assert _envelopes(server) == 0  # delivered and acknowledged

        await asyncio.sleep(max(0.0, sent_at + TIMER + 0.5 - time.time()))
        assert [m.text for m in alice.messages("bob")] == ["before the timer", None]
        assert [m.kind for m in bob.messages("alice")] == ["text", "timer"]
        assert not file.path.exists(), "the expired file is still in downloads"
        assert source.exists(), "the sender's own file must never be deleted"

        # The server's copy of the file: expired with the message, purged within a
        # purge interval (1 s here).
        deadline = sent_at + TIMER + 5
        while _blobs(server) and time.time() < deadline:
            await asyncio.sleep(0.2)
        assert _blobs(server) == [], "the blob outlived its disappearing message"
        assert _stored_parts(blobs_dir) == [], "the blob's parts are still stored"
    finally:
        await alice.close()
        await bob.close()


def test_a_delivered_disappearing_message_is_gone_everywhere_after_its_timer(
    server: LiveServer, tmp_path: Path
) -> None:
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"\xff\xd8" + bytes(50_000))
    asyncio.run(_delivered_then_gone(server, tmp_path / "homes", source, tmp_path / "blobs"))
    assert _envelopes(server) == 0 and _payloads(server) == 0


async def _offline_receiver(server: LiveServer, homes: Path) -> None:
    alice = Client(homes / "alice", backoff=FAST)
    bob = Client(homes / "bob", backoff=FAST)
    try:
        await alice.register(server.url, "alice", PASSWORD)
        await bob.register(server.url, "bob", PASSWORD)
        await bob.close()  # offline from here on
        await alice.set_timer("bob", TIMER)
        await alice.send_text("bob", "you will never read this")
        sent_at = time.time()
        assert _envelopes(server) == 2  # the TIMER (kept) and the expiring text
        soon = datetime.now(UTC) + timedelta(seconds=10)
        stored = [
            _utc(value) for (value,) in server.query("SELECT expires_at FROM messaging_envelope")
        ]
        assert sum(1 for expires_at in stored if expires_at <= soon) == 1

        deadline = sent_at + TIMER + 5  # the timer, then at most a purge interval or so
        while _envelopes(server) > 1 and time.time() < deadline:
            await asyncio.sleep(0.2)
        assert _envelopes(server) == 1, "the relay kept an expired envelope"
        assert [m.kind for m in alice.messages("bob")] == ["timer"]
    finally:
        await alice.close()

    late = Client(homes / "bob", backoff=FAST)
    try:
        events = [e async for e in late.receive(wait=1.0)]
        assert [type(e) for e in events] == [TimerChanged]
        assert [m.kind for m in late.messages("alice")] == ["timer"]
    finally:
        await late.close()


def _utc(value: datetime | str) -> datetime:
    """A stored timestamp as an aware UTC datetime: PostgreSQL gives one; SQLite gives
    Django's text form of UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_an_undelivered_disappearing_message_is_dropped_by_the_server(
    server: LiveServer, tmp_path: Path
) -> None:
    asyncio.run(_offline_receiver(server, tmp_path / "homes"))
    assert _envelopes(server) == 0


def test_typing_between_two_cli_clients_is_never_stored(server: LiveServer, tmp_path: Path) -> None:
    erin, frank = tmp_path / "erin", tmp_path / "frank"
    for home, name in ((erin, "erin"), (frank, "frank")):
        registered = cli(home, "register", name, "--password", PASSWORD, server=server.url)
        assert registered.returncode == 0, registered.stderr
    # A first message sets the session up (typing goes only over existing sessions).
    assert cli(erin, "send", "frank", "hello").returncode == 0
    assert cli(frank, "receive", "--wait", "0.5").returncode == 0
    assert cli(frank, "send", "erin", "hi").returncode == 0

    receiver = subprocess.Popen(
        [sys.executable, "-m", "client", "--home", str(erin), "receive", "--wait", "4", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        while True:  # connected once the queued "hi" is out (a receipt's status may come first)
            first = json.loads(receiver.stdout.readline())
            if first["type"] == "message":
                break
        assert first["text"] == "hi"
        before = _next_seq(server, "erin")
        typing = cli(frank, "send-typing", "erin")
        assert typing.returncode == 0, typing.stderr
        assert "told erin: typing" in typing.stdout
        stopped = cli(frank, "send-typing", "erin", "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert _next_seq(server, "erin") == before  # ephemeral: nothing queued for erin
        out, err = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    typing_lines = [(line["from"], line["started"]) for line in lines if line["type"] == "typing"]
    assert typing_lines == [("frank", True), ("frank", False)], (lines, err)

    # Turned off: nothing is sent.
    assert "off" in cli(frank, "typing", "off").stdout
    quiet = cli(frank, "send-typing", "erin")
    assert quiet.returncode == 0 and "typing indicators are off" in quiet.stdout
    assert cli(frank, "typing").stdout.strip() == "typing indicators are off"
    timer = cli(frank, "timer", "erin", "10m")
    assert timer.returncode == 0 and "after 10m" in timer.stdout
    shown = cli(erin, "receive", "--wait", "0.5", "--json")
    [line] = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    assert (line["type"], line["from"], line["timer_seconds"]) == ("timer", "frank", 600)
    assert "after 10m" in cli(erin, "timer", "frank").stdout
