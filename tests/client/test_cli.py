"""The ``sealpost`` command: argument errors, the one-line error format, output shapes."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from client import cli
from client.api import Api
from client.cli import event_json, event_line, iso_ms, main
from client.core import (
    Client,
    DeviceRefused,
    HistoryImported,
    IdentityChanged,
    LinkedDevice,
    MessageReceived,
    MessageStatusChanged,
    SentByMe,
    UndecryptableMessage,
)
from client.store import Store
from protocol import primitives as p
from protocol.errors import ErrorCode
from protocol.keys import AccountIdentity, DeviceKeys
from protocol.provisioning import LinkCode, ProvisionMessage, seal

from .fakes import SERVER_URL, FakeServer, Provisioning, make_client

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PASSWORD = "correct horse battery"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, code: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {code}: "), err
    assert "Traceback" not in err


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SEALPOST_HOME", "SEALPOST_SERVER", "SEALPOST_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # never touch the real ~/.sealpost


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()

    def open_client(home: Path, server_url: str | None = None) -> Client:
        return make_client(fake, home, server_url=server_url)

    monkeypatch.setattr(cli, "open_client", open_client)
    return fake


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["send", "bob"],
        ["receive", "--wait", "-1"],
        ["receive", "--wait", "soon"],
        ["receive", "--wait", "nan"],
        ["safety-number"],
        ["register", "alice", "--password", PASSWORD],  # no server anywhere
        ["--home"],
        ["receipts", "maybe"],
        ["read"],
        ["link"],  # no server anywhere
        ["approve-link"],
        ["approve-link", "sealpost-link:x", "--history-bytes", "-1"],
        ["approve-link", "sealpost-link:x", "--history-bytes", "lots"],
        ["revoke"],
        ["revoke", "two"],
        ["revoke", "0"],
        ["rename", "2"],
        ["devices", "extra"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_error_line(err, "usage")


def test_register_without_a_password_and_no_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code, _, err = run(capsys, "--home", str(tmp_path), "--server", SERVER_URL, "register", "al")
    assert code == 2
    assert_one_error_line(err, "usage")
    assert "--password" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in (
        "register", "send", "receive", "read", "receipts", "safety-number", "trust", "link",
        "approve-link", "devices", "revoke", "rename",
    ):  # fmt: skip
        assert command in out


def test_python_dash_m_client_runs_the_command() -> None:
    result = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "client", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sealpost")


# --- expected failures --------------------------------------------------------------------


def test_a_home_without_an_account(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    home = tmp_path / "nobody"
    for argv in (["send", "bob", "hi"], ["receive"], ["safety-number", "bob"], ["trust", "bob"]):
        code, out, err = run(capsys, "--home", str(home), *argv)
        assert code == 1 and out == ""
        assert_one_error_line(err, "not_registered")
        assert "register" in err
    assert not home.exists()  # asking did not create it


def test_an_unreachable_server(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    argv = ["--home", str(tmp_path), "--server", server, "register", "alice"]
    code, _, err = run(capsys, *argv, "--password", PASSWORD)
    assert code == 1
    assert_one_error_line(err, "unreachable")
    assert server in err


def test_a_bad_server_url(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["--home", str(tmp_path), "--server", "chat.example", "register", "alice"]
    code, _, err = run(capsys, *argv, "--password", PASSWORD)
    assert code == 1
    assert_one_error_line(err, "invalid_value")


# --- against the in-memory server ---------------------------------------------------------


def register(capsys: pytest.CaptureFixture[str], home: Path, username: str) -> None:
    # Global options may come after the command as well as before it.
    code, out, err = run(
        capsys, "register", username, "--home", str(home), "--server", SERVER_URL,
        "--password", PASSWORD,
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert out == f"registered {username} (device 1) on {SERVER_URL}\n"


def test_a_conversation_on_the_command_line(
    capsys: pytest.CaptureFixture[str], server: FakeServer, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    register(capsys, alice, "alice")
    register(capsys, bob, "bob")

    code, out, err = run(capsys, "--home", str(alice), "send", "bob", "hello", "world")
    assert (code, err) == (0, "")
    assert out == "sent message 1 to bob\n"

    code, out, err = run(capsys, "--home", str(bob), "receive", "--json")
    assert (code, err) == (0, "")
    [line] = out.splitlines()
    message = json.loads(line)
    assert message["type"] == "message"
    assert (message["from"], message["device"], message["text"]) == ("alice", 1, "hello world")
    assert ISO_MS.fullmatch(message["sent_at"])
    assert message["sent_at"] == iso_ms(message["sent_at_ms"])

    run(capsys, "--home", str(bob), "send", "alice", "hi there")
    code, out, err = run(capsys, "--home", str(alice), "receive", "--wait", "0.05")
    assert (code, err) == (0, "")
    # Bob's receive sent a delivered receipt for "hello world" before he wrote back.
    status, line = out.splitlines()
    assert status == "bob: (message 1 delivered)"
    assert re.fullmatch(ISO_MS.pattern + r" bob\[1\]: hi there", line)

    code, out, _ = run(capsys, "--home", str(alice), "receive")
    assert (code, out) == (0, "")  # nothing new

    code, out, err = run(capsys, "--home", str(alice), "safety-number", "bob")
    assert (code, err) == (0, "")
    groups, qr = out.splitlines()
    assert re.fullmatch(r"\d{5}( \d{5}){11}", groups)
    assert re.fullmatch(r"[0-9a-f]{130}", qr)
    code, theirs, _ = run(capsys, "--home", str(bob), "safety-number", "alice")
    assert theirs == out
    code, drawn, _ = run(capsys, "--home", str(bob), "safety-number", "alice", "--qr")
    assert code == 0 and drawn.startswith(out) and len(drawn.splitlines()) > 10

    code, _, err = run(capsys, "--home", str(alice), "trust", "carol")
    assert code == 1
    assert_one_error_line(err, "unknown_account")
    code, _, err = run(capsys, "--home", str(alice), "send", "carol", "hi")
    assert code == 1
    assert_one_error_line(err, "unknown_account")


def test_an_identity_change_on_the_command_line(
    capsys: pytest.CaptureFixture[str], server: FakeServer, tmp_path: Path
) -> None:
    alice, bob, new_bob = tmp_path / "alice", tmp_path / "bob", tmp_path / "new-bob"
    register(capsys, alice, "alice")
    register(capsys, bob, "bob")
    assert run(capsys, "--home", str(bob), "send", "alice", "old phone")[0] == 0
    assert run(capsys, "--home", str(alice), "receive")[0] == 0

    server.delete_account("bob")
    register(capsys, new_bob, "bob")
    assert run(capsys, "--home", str(new_bob), "send", "alice", "new phone")[0] == 0

    code, out, err = run(capsys, "--home", str(alice), "receive", "--json")
    assert (code, err) == (0, "")
    changed, message = (json.loads(line) for line in out.splitlines())
    assert changed["type"] == "identity_changed" and changed["from"] == "bob"
    assert changed["text"] is None and ISO_MS.fullmatch(changed["sent_at"])
    assert message["type"] == "message" and message["text"] == "new phone"

    code, _, err = run(capsys, "--home", str(alice), "send", "bob", "prove it")
    assert code == 1
    assert_one_error_line(err, "untrusted_identity")
    code, out, _ = run(capsys, "--home", str(alice), "trust", "bob", "--verified")
    assert code == 0 and "bob" in out
    assert run(capsys, "--home", str(alice), "send", "bob", "prove it")[0] == 0


def test_receipts_on_the_command_line(
    capsys: pytest.CaptureFixture[str], server: FakeServer, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    register(capsys, alice, "alice")
    register(capsys, bob, "bob")
    assert run(capsys, "--home", str(bob), "receipts") == (0, "receipts are on\n", "")

    # --no-receipts: this run sends none.
    assert run(capsys, "--home", str(alice), "send", "bob", "one")[0] == 0
    code, out, _ = run(capsys, "--home", str(bob), "receive", "--no-receipts")
    assert code == 0 and out.endswith(": one\n")
    assert [sender for sender, _ in server.sends] == ["alice"]

    # receipts off: stored, so no run sends any until it is turned on again.
    assert run(capsys, "--home", str(bob), "receipts", "off") == (0, "receipts are off\n", "")
    assert run(capsys, "--home", str(alice), "send", "bob", "two")[0] == 0
    assert run(capsys, "--home", str(bob), "receive")[0] == 0
    assert run(capsys, "--home", str(bob), "read", "alice") == (
        0,
        "marked 2 messages from alice read\n",
        "",
    )
    assert [sender for sender, _ in server.sends] == ["alice", "alice"]

    assert run(capsys, "--home", str(bob), "receipts", "on") == (0, "receipts are on\n", "")
    assert run(capsys, "--home", str(alice), "send", "bob", "three")[0] == 0
    assert run(capsys, "--home", str(bob), "receive")[0] == 0  # a delivered receipt
    assert run(capsys, "--home", str(bob), "read", "alice")[1] == (
        "marked 1 message from alice read\n"
    )
    code, out, err = run(capsys, "--home", str(alice), "receive", "--json")
    assert (code, err) == (0, "")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"type": "status", "peer": "bob", "message_id": 3, "status": "delivered"},
        {"type": "status", "peer": "bob", "message_id": 3, "status": "read"},
    ]


def test_a_stored_server_can_be_overridden(
    capsys: pytest.CaptureFixture[str], server: FakeServer, tmp_path: Path
) -> None:
    register(capsys, tmp_path / "alice", "alice")
    code, _, err = run(
        capsys, "--home", str(tmp_path / "alice"), "--server", "ftp://elsewhere", "receive"
    )
    assert code == 1
    assert_one_error_line(err, "invalid_value")


# --- output formats -------------------------------------------------------------------------


def test_iso_ms() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1_795_000_000_123) == (
        datetime.fromtimestamp(1_795_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".123Z"
    )
    assert iso_ms(999) == "1970-01-01T00:00:00.999Z"


def test_json_shapes() -> None:
    message = event_json(MessageReceived("bob", 2, "hi", 1_000, 2_000, seq=5, message_id=7))
    assert message == {
        "type": "message",
        "id": 7,
        "from": "bob",
        "device": 2,
        "text": "hi",
        "sent_at": "1970-01-01T00:00:01.000Z",
        "sent_at_ms": 1_000,
        "server_time": "1970-01-01T00:00:02.000Z",
        "server_time_ms": 2_000,
        "seq": 5,
    }
    bad = event_json(UndecryptableMessage("bob", 2, ErrorCode.DECRYPT_FAILED, 3_000, 6, 8))
    assert bad["type"] == "undecryptable" and bad["code"] == "decrypt_failed"
    assert bad["text"] is None and bad["sent_at"] == "1970-01-01T00:00:03.000Z"
    changed = event_json(IdentityChanged("bob", 2, 4_000))
    assert changed["type"] == "identity_changed" and changed["from"] == "bob"
    for shape in (message, bad, changed):
        assert {"type", "from", "device", "text", "sent_at", "sent_at_ms"} <= shape.keys()
        json.dumps(shape)


def test_human_lines() -> None:
    line = event_line(UndecryptableMessage("bob", 2, ErrorCode.NO_SESSION, 3_000, 6, 8))
    assert line == (
        "1970-01-01T00:00:03.000Z bob[2]: (a message that could not be decrypted: no_session)"
    )
    assert "sealpost trust bob" in event_line(IdentityChanged("bob", 2, 4_000))
    assert event_line(MessageStatusChanged("bob", 12, "read")) == "bob: (message 12 read)"


def test_status_json_shape() -> None:
    shape = event_json(MessageStatusChanged("bob", 12, "delivered"))
    assert shape == {"type": "status", "peer": "bob", "message_id": 12, "status": "delivered"}


# --- several devices ----------------------------------------------------------------------


def test_new_event_shapes() -> None:
    assert event_json(SentByMe("bob", "hi", 1_000, 2, 9)) == {
        "type": "sent",
        "to": "bob",
        "text": "hi",
        "sent_at": "1970-01-01T00:00:01.000Z",
        "device": 2,
    }
    assert event_json(HistoryImported(3)) == {"type": "history", "count": 3}
    assert event_line(SentByMe("bob", "hi", 1_000, 2, 9)) == (
        "1970-01-01T00:00:01.000Z me[2] to bob: hi"
    )
    assert event_line(HistoryImported(1)) == "(imported 1 message of history)"
    assert event_line(DeviceRefused("bob", 7, "not in bob's signed device list")) == (
        "warning: bob's device 7 is not in bob's signed device list; not sending to it"
    )


def _account_of(home: Path) -> AccountIdentity:
    store = Store.open(home)
    try:
        return store.account_identity()
    finally:
        store.close()


def test_linking_on_the_command_line(
    capsys: pytest.CaptureFixture[str], server: FakeServer, tmp_path: Path
) -> None:
    alice, bob, laptop = tmp_path / "alice", tmp_path / "bob", tmp_path / "laptop"
    register(capsys, alice, "alice")
    register(capsys, bob, "bob")
    account = _account_of(alice)
    shown: list[str] = []

    def approve(address: str) -> None:
        # What approve-link does on alice's phone, done by hand: the link command runs on
        # this event loop, so the test seals to the code it printed.
        if shown:
            return
        shown.append(capsys.readouterr().out)
        [code_line] = [line for line in shown[0].splitlines() if line.startswith("sealpost-link:")]
        code = LinkCode.parse(code_line)
        assert code.address_text == address
        token = server.issue_link_token("alice")
        message = ProvisionMessage("alice", account.seed, token, send_history=False)
        server.provisioning[address].sealed = seal(code, message)
        server.provisioning[address].arrived.set()

    server.on_provisioning_poll = approve
    code, out, err = run(
        capsys, "--home", str(laptop), "--server", SERVER_URL, "link", "--name", "laptop"
    )
    assert (code, err) == (0, ""), err
    assert out == "linked as alice device 2\n"
    printed = shown[0].splitlines()
    assert printed[0] == "On a device of your account, run:"
    assert re.fullmatch(r"Fingerprint: [0-9a-f]{4}( [0-9a-f]{4}){3}", printed[4])
    assert len(printed) > 15  # the QR code
    assert printed[-1].startswith("Waiting for the approval")

    code, out, err = run(capsys, "--home", str(alice), "devices")
    assert (code, err) == (0, "")
    first, second = out.splitlines()
    assert re.fullmatch(r"1  Python client  created \S+  last seen never  \(this device\)", first)
    assert re.fullmatch(r"2  laptop  created \S+  last seen never", second)

    # What alice sends from her phone shows up on the laptop as sent.
    assert run(capsys, "--home", str(alice), "send", "bob", "from the phone")[0] == 0
    code, out, err = run(capsys, "--home", str(laptop), "receive", "--json")
    assert (code, err) == (0, "")
    [sent] = [json.loads(line) for line in out.splitlines()]
    assert sent == {
        "type": "sent",
        "to": "bob",
        "text": "from the phone",
        "sent_at": sent["sent_at"],
        "device": 1,
    }
    assert ISO_MS.fullmatch(sent["sent_at"])

    assert run(capsys, "--home", str(alice), "rename", "2", "old laptop") == (
        0,
        "device 2 is now called old laptop\n",
        "",
    )
    code, _, err = run(capsys, "--home", str(alice), "revoke", "2")  # stdin is no terminal
    assert code == 2
    assert_one_error_line(err, "usage")
    assert "--yes" in err
    code, out, err = run(capsys, "--home", str(alice), "revoke", "2", "--yes")
    assert (code, out, err) == (0, "revoked device 2\n", "")
    code, _, err = run(capsys, "--home", str(laptop), "receive")
    assert code == 1
    assert_one_error_line(err, "unauthorized")
    code, _, err = run(capsys, "--home", str(alice), "revoke", "2", "--yes")
    assert code == 1
    assert_one_error_line(err, "unknown_device")

    code, _, err = run(capsys, "--home", str(alice), "--server", SERVER_URL, "link")
    assert code == 1
    assert_one_error_line(err, "already_registered")


def test_approving_a_link_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
    server: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bob, tablet = tmp_path / "alice", tmp_path / "bob", tmp_path / "tablet"
    register(capsys, alice, "alice")
    register(capsys, bob, "bob")
    assert run(capsys, "--home", str(alice), "send", "bob", "history 1")[0] == 0
    assert run(capsys, "--home", str(bob), "receive")[0] == 0
    assert run(capsys, "--home", str(bob), "send", "alice", "history 2")[0] == 0
    assert run(capsys, "--home", str(alice), "receive")[0] == 0

    # The tablet shows a code (its address made on the fake server directly).
    private = p.random_bytes(32)
    address = p.random_bytes(16)
    code = LinkCode(address, p.x25519_public_key(private))
    server.provisioning[code.address_text] = Provisioning(code.address_text, server.time_ms)
    tasks: list[asyncio.Task[LinkedDevice]] = []

    def tablet_opens_it(address: str) -> None:
        new = make_client(server, tablet)

        async def complete() -> LinkedDevice:
            try:
                async with Api(SERVER_URL, transport=server.http) as api:
                    return await new._complete_link(
                        api, code, private, device_name="tablet", timeout=5
                    )
            finally:
                await new.close()

        tasks.append(asyncio.get_running_loop().create_task(complete()))

    server.on_provisioning_put = tablet_opens_it

    # Asked, and told no: nothing is sealed.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdin, "readline", lambda: "n\n")
    code_text = code.text()
    result, out, err = run(capsys, "--home", str(alice), "approve-link", code_text)
    assert (result, err) == (1, "")
    assert "join alice" in out and out.endswith("not linked\n")
    assert f"fingerprint: {cli.link_fingerprint(code)}" in out
    assert not tasks and not any(r.startswith("PUT /api/v1/provisioning") for r in server.requests)

    monkeypatch.setattr(sys.stdin, "readline", lambda: "yes\n")
    result, out, err = run(
        capsys, "--home", str(alice), "approve-link", code_text, "--history-bytes", "100000"
    )
    assert (result, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[-2:] == ["linked device 2", "sent 2 messages of history (1 chunk)"]
    assert tasks[0].done() and tasks[0].result() == LinkedDevice("alice", 2, True)

    code_out = run(capsys, "--home", str(tablet), "receive", "--json")
    assert code_out[0] == 0 and json.loads(code_out[1]) == {"type": "history", "count": 2}
    client = make_client(server, tablet)
    assert [(m.direction, m.text) for m in client.messages()] == [
        ("out", "history 1"),
        ("in", "history 2"),
    ]
    client.store.close()

    result, _, err = run(capsys, "--home", str(alice), "approve-link", "sealpost-link:AQ")
    assert result == 1
    assert_one_error_line(err, "truncated")


def test_a_refused_device_is_a_warning_on_the_command_line(
    capsys: pytest.CaptureFixture[str], server: FakeServer, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    register(capsys, alice, "alice")
    register(capsys, bob, "bob")
    server.add_rogue_device("bob", DeviceKeys.create(_account_of(bob), 7))
    code, out, err = run(capsys, "--home", str(alice), "send", "bob", "hello")
    assert (code, out) == (0, "sent message 1 to bob\n")
    assert err == "warning: bob's device 7 is not in bob's signed device list; not sending to it\n"

    server.relay_expects_unlisted = True
    code, out, err = run(capsys, "--home", str(alice), "send", "bob", "hello?")
    assert code == 1 and out == ""
    warning, error = err.splitlines()
    assert warning.startswith("warning: bob's device 7")
    assert error.startswith("error: unsigned_device: ")
