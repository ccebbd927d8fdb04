"""Several devices per account, end to end: a real Daphne process and real clients.

Alice has two devices, the second linked on the command line (``link`` in a subprocess
showing its code, ``approve-link`` on the first); Bob has one. Bob's messages reach both of
Alice's devices, what one of hers sends shows up on the other as sent, and the linked
device starts with the history from before it existed. A device row inserted straight into
the server's database is never encrypted to (and Alice is told), a revoked device gets
nothing more, and a seventh device is refused.
"""

from __future__ import annotations

import asyncio
import json
import queue
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client, MessageReceived, SealpostError
from client.core import DeviceRefused, Event, HistoryImported, SentByMe
from harness.live_server import ROOT, LiveServer
from protocol.errors import ErrorCode
from protocol.keys import AccountIdentity, DeviceKeys
from protocol.provisioning import LinkCode
from tests.e2e.helpers import FAST, PASSWORD, cli, cli_command, ok

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "server") as live:
        yield live


def _events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _read_lines(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)
    lines.put(None)


# --- two devices, linked on the command line ----------------------------------------------------


def test_alice_links_a_second_device_on_the_command_line(
    server: LiveServer, tmp_path: Path
) -> None:
    phone, laptop, bob = tmp_path / "alice-phone", tmp_path / "alice-laptop", tmp_path / "bob"
    ok(cli(phone, "register", "alice", "--password", PASSWORD, server=server.url))
    ok(cli(bob, "register", "bob", "--password", PASSWORD, server=server.url))
    ok(cli(phone, "send", "bob", "before the laptop"))
    ok(cli(bob, "receive", "--wait", "0.5"))
    ok(cli(bob, "send", "alice", "hi alice, before the laptop"))
    ok(cli(phone, "receive", "--wait", "0.5"))

    # The laptop shows a link code and waits; the phone approves it.
    linking = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        cli_command(laptop, "link", "--name", "laptop", "--no-qr", server=server.url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    approving: subprocess.Popen[str] | None = None
    try:
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read_lines, args=(linking.stdout, lines), daemon=True).start()
        code = None
        while code is None:
            line = lines.get(timeout=60)
            assert line is not None, f"link exited early: {linking.stderr}"
            if line.startswith("sealpost-link:"):
                code = line.strip()
        approving = subprocess.Popen(  # noqa: S603
            cli_command(phone, "approve-link", code, "--yes", "--history-bytes", "100000"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        linked = linking.wait(timeout=90)
        link_errors = linking.stderr.read() if linking.stderr else ""
        if linked != 0:
            approving.kill()
        approved, approve_errors = approving.communicate(timeout=60)
        assert linked == 0, f"link failed: {link_errors}"
        assert approving.returncode == 0, f"approve-link failed: {approve_errors}"
        assert "linked device 2" in approved
        assert "sent 2 messages of history (1 chunk)" in approved
        rest = []
        while (line := lines.get(timeout=10)) is not None:
            rest.append(line)
        assert "linked as alice device 2\n" in rest
    finally:
        for process in (linking, approving):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    devices = ok(cli(phone, "devices")).splitlines()
    assert [line.split()[:2] for line in devices] == [["1", "Python"], ["2", "laptop"]]
    assert devices[0].endswith("(this device)")

    # The laptop's first receive imports the history, reported once, as no new message.
    first = _events(ok(cli(laptop, "receive", "--json", "--wait", "0.5")))
    assert first == [{"type": "history", "count": 2}]

    # Bob's message reaches both of Alice's devices.
    ok(cli(bob, "send", "alice", "to both of your devices"))
    for home in (phone, laptop):
        got = _events(ok(cli(home, "receive", "--json", "--wait", "0.5")))
        assert [(e["type"], e.get("text")) for e in got if e["type"] == "message"] == [
            ("message", "to both of your devices")
        ]

    # What the laptop sends shows up on the phone as sent by Alice.
    ok(cli(laptop, "send", "bob", "from the laptop"))
    on_phone = _events(ok(cli(phone, "receive", "--json", "--wait", "0.5")))
    sent = [e for e in on_phone if e["type"] == "sent"]
    assert len(sent) == 1
    assert (sent[0]["to"], sent[0]["text"], sent[0]["device"]) == ("bob", "from the laptop", 2)
    got_by_bob = _events(ok(cli(bob, "receive", "--json", "--wait", "0.5")))
    assert [e["text"] for e in got_by_bob if e["type"] == "message"] == ["from the laptop"]

    async def histories() -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
        async with Client(laptop) as on_laptop, Client(phone) as on_phone:
            return (
                [(m.direction, m.text) for m in on_laptop.messages("bob")],
                [(m.direction, m.text) for m in on_phone.messages("bob")],
            )

    laptop_history, phone_history = asyncio.run(histories())
    assert laptop_history == [
        ("out", "before the laptop"),
        ("in", "hi alice, before the laptop"),
        ("in", "to both of your devices"),
        ("out", "from the laptop"),
    ]
    assert phone_history == laptop_history


# --- the library flow -----------------------------------------------------------------------------


async def _link(
    server_url: str, existing: Client, home: Path, history_bytes: int = 0, timeout: float = 60
) -> Client:
    new = Client(home, backoff=FAST)
    codes: asyncio.Queue[LinkCode] = asyncio.Queue()
    linking = asyncio.create_task(
        new.link_new_device(server_url, show_code=codes.put_nowait, timeout=timeout)
    )
    approving: asyncio.Task[object] | None = None
    try:
        code = await asyncio.wait_for(codes.get(), timeout)
        approving = asyncio.create_task(
            existing.approve_link(
                code, history_bytes=history_bytes, timeout=timeout, poll_interval=0.2
            )
        )
        await linking
        await approving
    except BaseException:
        for task in (linking, approving):
            if task is not None:
                task.cancel()
        await new.close()
        raise
    return new


async def _receive(client: Client, wait: float = 0.5) -> list[Event]:
    return [event async for event in client.receive(wait=wait)]


def _insert_device(server: LiveServer, username: str, keys: DeviceKeys) -> None:
    """A device row written straight into the server's database, as an attacker with
    database access would: the account's signed list knows nothing of it."""
    ((account_id,),) = server.query(
        "SELECT keys_account.id FROM keys_account JOIN auth_user "
        "ON keys_account.user_id = auth_user.id WHERE auth_user.username = ?",
        (username,),
    )
    server.query(
        "INSERT INTO keys_device (account_id, device_id, registration_id, certificate, "
        "identity_key, name, token_hash, signed_prekey, last_resort_kem_prekey, next_seq, "
        "created_at) VALUES (?, ?, ?, ?, ?, 'rogue', ?, ?, ?, 1, '2026-11-27 00:00:00')",
        (
            account_id,
            keys.device_id,
            keys.certificate.registration_id,
            keys.certificate.encode(),
            keys.identity_key,
            secrets.token_hex(32),
            b"",
            b"",
        ),
    )


def _envelopes_for(server: LiveServer, username: str, device_id: int) -> int:
    ((count,),) = server.query(
        "SELECT count(*) FROM messaging_envelope JOIN keys_device "
        "ON messaging_envelope.device_id = keys_device.id "
        "JOIN keys_account ON keys_device.account_id = keys_account.id "
        "JOIN auth_user ON keys_account.user_id = auth_user.id "
        "WHERE auth_user.username = ? AND keys_device.device_id = ?",
        (username, device_id),
    )
    return int(count)


def test_a_device_inserted_into_the_database_is_never_encrypted_to(
    server: LiveServer, tmp_path: Path
) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"

    async def scenario() -> None:
        reported: list[Event] = []
        async with (
            Client(alice_home, backoff=FAST, on_event=reported.append) as alice,
            Client(bob_home, backoff=FAST) as bob,
        ):
            await alice.register(server.url, "alice", PASSWORD)
            await bob.register(server.url, "bob", PASSWORD)
            bob_account = AccountIdentity.from_seed(bob.store.account_identity().seed)
            # A real certificate of bob's account key, and one of a stranger's key.
            _insert_device(server, "bob", DeviceKeys.create(bob_account, 7))
            _insert_device(server, "bob", DeviceKeys.create(AccountIdentity.generate(), 8))

            await alice.send_text("bob", "only for bob's real device")
            assert {(e.device_id, e.reason) for e in reported if isinstance(e, DeviceRefused)} == {
                (7, "not in bob's signed device list"),
                (8, "not certified by bob's account key"),
            }
            events = await _receive(bob)
            assert [e.text for e in events if isinstance(e, MessageReceived)] == [
                "only for bob's real device"
            ]
            assert 7 not in alice.store.peer_devices("bob")
            assert alice.store.session_device_ids("bob") == [1]

    asyncio.run(scenario())
    assert _envelopes_for(server, "bob", 7) == 0 and _envelopes_for(server, "bob", 8) == 0

    # The command line says so on stderr, and sends all the same.
    result = cli(alice_home, "send", "bob", "again")
    assert result.returncode == 0, result.stderr
    assert (
        "warning: bob's device 7 is not in bob's signed device list; not sending to it"
        in result.stderr.splitlines()
    )
    assert _envelopes_for(server, "bob", 7) == 0


def test_revocation_and_the_device_limit(server: LiveServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            Client(tmp_path / "alice1", backoff=FAST) as alice,
            Client(tmp_path / "bob", backoff=FAST) as bob,
        ):
            await alice.register(server.url, "alice", PASSWORD)
            await bob.register(server.url, "bob", PASSWORD)
            await alice.send_text("bob", "history for the second device")
            alice2 = await _link(server.url, alice, tmp_path / "alice2", history_bytes=10_000)
            try:
                assert alice2.device_id == 2
                assert await _receive(alice2) == [HistoryImported(1)]
                await bob.send_text("alice", "to both")
                for device in (alice, alice2):
                    got = await _receive(device)
                    assert [e.text for e in got if isinstance(e, MessageReceived)] == ["to both"]
                await alice2.send_text("bob", "from device 2")
                mine = [e for e in await _receive(alice) if isinstance(e, SentByMe)]
                assert [(e.destination, e.text, e.device) for e in mine] == [
                    ("bob", "from device 2", 2)
                ]

                # Revoked: its token is refused, and nothing more is encrypted to it.
                assert await alice.revoke_device(2) is False
                with pytest.raises(SealpostError) as info:
                    await alice2.list_devices()
                assert info.value.code is ErrorCode.UNAUTHORIZED
            finally:
                await alice2.close()
            await bob.send_text("alice", "after the revocation")
            assert bob.store.session_device_ids("alice") == [1]
            assert 2 not in bob.store.peer_devices("alice")
            got = await _receive(alice)
            assert [e.text for e in got if isinstance(e, MessageReceived)] == [
                "after the revocation"
            ]
            assert _envelopes_for(server, "alice", 2) == 0

            # Up to six devices; the seventh is refused.
            others = []
            try:
                for index in range(2, 7):
                    others.append(await _link(server.url, alice, tmp_path / f"alice{index}b"))
                assert [c.device_id for c in others] == [2, 3, 4, 5, 6]
                with pytest.raises(SealpostError) as info:
                    await _link(server.url, alice, tmp_path / "alice7", timeout=10)
                assert info.value.code is ErrorCode.DEVICE_LIMIT_REACHED
            finally:
                for client in others:
                    await client.close()
            listing = await alice.list_devices()
            assert [d.device_id for d in listing] == [1, 2, 3, 4, 5, 6]

    asyncio.run(scenario())
