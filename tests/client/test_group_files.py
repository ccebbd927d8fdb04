"""Files in groups (``client.groups.send_file``): one upload, one GROUP_SEND of the pointer,
each member downloads it; disappearing in a group with a timer; ``group send-file``."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client import cli
from client.core import AttachmentReceived, Client, Event
from client.store import STATUS_SENT
from protocol.errors import ErrorCode
from protocol.frames import SendFlags

from .blob_fakes import BlobServer
from .fake_groups import GroupFakeServer
from .fakes import make_client, registered

PASSWORD = "correct horse battery"


class GroupBlobServer(GroupFakeServer, BlobServer):
    """Groups and attachment blobs on one in-memory server."""


@pytest.fixture
def server() -> GroupBlobServer:
    return GroupBlobServer()


@pytest.fixture
async def carol(server: GroupBlobServer, tmp_path: Path) -> AsyncIterator[Client]:
    client = await registered(server, tmp_path / "carol", "carol")
    yield client
    await client.close()


async def drain(client: Client) -> list[Event]:
    return [event async for event in client.receive(wait=0.05)]


def files(events: list[Event]) -> list[AttachmentReceived]:
    return [e for e in events if isinstance(e, AttachmentReceived)]


async def test_a_group_file_is_uploaded_once_and_saved_by_every_member(
    server: GroupBlobServer, alice: Client, bob: Client, carol: Client, tmp_path: Path
) -> None:
    group = await alice.groups.create("photos", ["bob", "carol"])
    await drain(bob)
    await drain(carol)
    source = tmp_path / "summit.jpg"
    source.write_bytes(os.urandom(70_000))

    message_id = await alice.groups.send_file(group, source, caption="we made it")
    assert len(server.blobs) == 1 and len(server.group_sends) == 1
    [(_, frame)] = server.group_sends
    assert frame.flags == SendFlags.NONE  # no timer: an ordinary GROUP_SEND
    [mine] = alice.groups.messages(group)
    assert (mine.id, mine.kind, mine.direction, mine.status) == (
        message_id, "attachment", "out", STATUS_SENT,
    )  # fmt: skip
    assert alice.messages("bob") == []  # not in a 1:1 conversation

    for member in (bob, carol):
        [event] = files(await drain(member))
        assert (event.group, event.from_, event.file_name, event.caption) == (
            group, "alice", "summit.jpg", "we made it",
        )  # fmt: skip
        assert event.code is None and event.path is not None
        assert event.path.parent == member.home / "downloads"
        assert event.path.read_bytes() == source.read_bytes()
        [stored] = member.groups.messages(group)
        assert stored.kind == "attachment" and stored.attachment is not None
        assert stored.attachment.state == "saved"


async def test_a_group_file_disappears_with_the_groups_timer(
    server: GroupBlobServer, alice: Client, bob: Client, carol: Client, tmp_path: Path
) -> None:
    group = await alice.groups.create("secrets", ["bob", "carol"])
    await drain(bob)
    await drain(carol)
    # The timer comes from GROUP_UPDATE contents; set it here as one would have.
    alice.groups.store.set_name(bytes.fromhex(group), "secrets", 60, 0)
    source = tmp_path / "note.txt"
    source.write_text("burn after reading")

    message_id = await alice.groups.send_file(group, source)
    [blob] = server.blobs.values()
    assert blob.ttl_seconds == 60  # the server drops its copy with the message
    [(_, frame)] = server.group_sends
    assert frame.flags & SendFlags.EXPIRES and frame.ttl_seconds == 60
    mine = alice.store.message(message_id)
    assert mine is not None and mine.timer_seconds == 60 and mine.expires_at_ms is not None

    [event] = files(await drain(bob))
    assert event.group == group and event.expires_at_ms is not None
    assert event.path is not None and event.path.read_text() == "burn after reading"

    await alice.groups.send_text(group, "also this")
    received = [e for e in await drain(carol) if not isinstance(e, AttachmentReceived)]
    assert [getattr(e, "expires_at_ms", None) is not None for e in received] == [True]


async def test_a_group_file_whose_blob_is_gone_is_reported(
    server: GroupBlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    group = await alice.groups.create("late", ["bob"])
    await drain(bob)
    source = tmp_path / "old.bin"
    source.write_bytes(b"x" * 100)
    await alice.groups.send_file(group, source)
    server.expired.update(server.blobs)
    [event] = files(await drain(bob))
    assert event.group == group and event.path is None
    assert event.code is ErrorCode.ATTACHMENT_EXPIRED


def test_group_send_file_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    server: GroupBlobServer,
    tmp_path: Path,
) -> None:
    def open_client(home: Path, server_url: str | None = None) -> Client:
        return make_client(server, home, server_url=server_url)

    monkeypatch.setattr(cli, "open_client", open_client)

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    homes = {name: str(tmp_path / name) for name in ("alice", "bob")}
    for name, home in homes.items():
        code, _, err = run("--home", home, "--server", "http://sealpost.test", "register", name,
                           "--password", PASSWORD)  # fmt: skip
        assert code == 0, err
    code, out, _ = run("--home", homes["alice"], "group", "create", "Band", "bob")
    group = out.splitlines()[-1]
    source = tmp_path / "demo.ogg"
    source.write_bytes(b"\x00" * 2048)

    code, out, err = run(
        "--home", homes["alice"], "group", "send-file", group, str(source), "--voice",
        "--caption", "take 2",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("sent file demo.ogg (2.0 KB) as message ")
    assert out.rstrip().endswith("to group “Band” (" + group + ")")

    code, out, err = run("--home", homes["bob"], "receive", "--json")
    assert (code, err) == (0, "")
    shown = [json.loads(line) for line in out.splitlines()]
    [attachment] = [m for m in shown if m["type"] == "attachment"]
    assert (attachment["group"], attachment["from"], attachment["text"]) == (
        group, "alice", "take 2",
    )  # fmt: skip
    assert attachment["attachment"]["voice"] and attachment["attachment"]["size"] == 2048
    assert Path(attachment["attachment"]["path"]).read_bytes() == source.read_bytes()

    code, _, err = run("--home", homes["alice"], "group", "send-file", group, str(tmp_path))
    assert code == 2 and "is not a file" in err
