"""Groups in the client, on the in-memory server: sender keys, one GROUP_SEND per message,
stale rosters, rotation on removal, the outbox, membership changes in the conversation,
and the errors a user sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client import cli
from client.core import Client, Event, GroupUpdated, MessageReceived, UndecryptableMessage
from client.errors import SealpostError
from client.store import STATUS_SENT, Store
from protocol.content import GroupAction
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import GroupSend
from protocol.senderkeys import SenderKeyMessage

from .fake_groups import GroupFakeServer
from .fakes import FakeConnection, link_device, make_client, registered

PASSWORD = "correct horse battery"


@pytest.fixture
def server() -> GroupFakeServer:  # replaces conftest's: alice and bob live on this one
    return GroupFakeServer()


@pytest.fixture
async def carol(server: GroupFakeServer, tmp_path: Path) -> AsyncIterator[Client]:
    client = await registered(server, tmp_path / "carol", "carol")
    yield client
    await client.close()


async def drain(client: Client) -> list[Event]:
    return [event async for event in client.receive(wait=0.05)]


def texts(events: list[Event]) -> list[tuple[str | None, str, str]]:
    return [(e.group, e.from_, e.text) for e in events if isinstance(e, MessageReceived)]


def updates(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, GroupUpdated)]


async def test_a_group_message_is_one_upload_read_by_every_member(
    server: GroupFakeServer, alice: Client, bob: Client, carol: Client
) -> None:
    group = await alice.groups.create("climbing", ["bob", "carol"])
    assert len(group) == 32

    bob_events = await drain(bob)
    assert updates(bob_events) == ["alice created the group “climbing” with bob, carol"]
    assert bob.groups.local(group).name == "climbing"
    assert [m.username for m in bob.groups.local(group).members] == ["alice", "bob", "carol"]
    await drain(carol)

    before = len(server.sends)
    await alice.groups.send_text(group, "hello group")
    assert [frame.group_id.hex() for _, frame in server.group_sends] == [group]
    assert len(server.sends) == before  # the keys went with the GROUP_UPDATE at creation

    assert texts(await drain(bob)) == [(group, "alice", "hello group")]
    assert texts(await drain(carol)) == [(group, "alice", "hello group")]
    [sent] = alice.groups.messages(group)
    assert (sent.direction, sent.text, sent.status) == ("out", "hello group", STATUS_SENT)

    await bob.groups.send_text(group, "hi from bob")
    assert texts(await drain(alice)) == [(group, "bob", "hi from bob")]
    assert texts(await drain(carol)) == [(group, "bob", "hi from bob")]
    # Group messages stay out of the 1:1 conversations.
    assert alice.messages("bob") == []


async def test_a_removed_member_gets_nothing_more_and_cannot_read_it(
    server: GroupFakeServer, alice: Client, bob: Client, carol: Client
) -> None:
    group = await alice.groups.create("team", ["bob", "carol"])
    await alice.groups.send_text(group, "before")
    assert texts(await drain(carol))[-1] == (group, "alice", "before")
    await drain(bob)
    old_key = alice.groups.store.own_sender_key(bytes.fromhex(group))
    assert old_key is not None

    await alice.groups.remove(group, "carol")
    new_key = alice.groups.store.own_sender_key(bytes.fromhex(group))
    assert new_key is not None and new_key.key_id != old_key.key_id  # rotated

    carol_events = await drain(carol)
    assert updates(carol_events) == ["alice removed carol"]
    assert not carol.groups.local(group).member
    bob_events = await drain(bob)
    assert updates(bob_events) == ["alice removed carol"]

    await alice.groups.send_text(group, "after")
    assert texts(await drain(bob)) == [(group, "alice", "after")]
    assert await drain(carol) == []
    payload = server.group_sends[-1][1].payload
    record = carol.groups.store.sender_key_record(bytes.fromhex(group), "alice", 1)
    with pytest.raises(ProtocolError) as refused:
        record.decrypt(SenderKeyMessage.decode(payload))
    assert refused.value.code is ErrorCode.NO_SESSION
    # The conversation shows the change on each side.
    for client in (alice, bob):
        events = client.groups.events(group)
        assert [(e.actor, e.action, e.targets) for e in events][-1] == (
            "alice",
            GroupAction.MEMBERS_REMOVED,
            ("carol",),
        )


async def test_a_new_device_gets_the_key_after_stale_roster_without_rotation(
    server: GroupFakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    group = await alice.groups.create("pair", ["bob"])
    await alice.groups.send_text(group, "one")
    await drain(bob)
    key = alice.groups.store.own_sender_key(bytes.fromhex(group))
    assert key is not None

    bob2 = link_device(server, bob, tmp_path / "bob2", 2)
    try:
        rounds = len(server.group_sends)
        await alice.groups.send_text(group, "two")
        replies = server.group_sends[rounds:]
        assert len(replies) == 2  # stale_roster, then accepted
        assert replies[0][1].roster_digest != replies[1][1].roster_digest
        again = alice.groups.store.own_sender_key(bytes.fromhex(group))
        assert again is not None and again.key_id == key.key_id  # joined: no new key
        assert texts(await drain(bob2))[-1] == (group, "alice", "two")
        assert texts(await drain(bob)) == [(group, "alice", "two")]
    finally:
        await bob2.close()


async def test_adding_a_member_and_renaming(
    server: GroupFakeServer, alice: Client, bob: Client, carol: Client
) -> None:
    group = await alice.groups.create("first name", ["bob"])
    await drain(bob)
    assert await alice.groups.add(group, ["carol", "bob"]) == ["carol"]
    carol_events = await drain(carol)
    assert updates(carol_events) == ["alice added you to “first name”", "alice added carol"]
    assert carol.groups.local(group).name == "first name"
    assert updates(await drain(bob)) == ["alice added carol"]

    await carol.groups.rename(group, "second name")
    for client in (alice, bob):
        assert updates(await drain(client)) == ["carol renamed the group to “second name”"]
        assert client.groups.local(group).name == "second name"
    await carol.groups.send_text(group, "thanks")
    assert texts(await drain(alice)) == [(group, "carol", "thanks")]


async def test_leaving(server: GroupFakeServer, alice: Client, bob: Client) -> None:
    group = await alice.groups.create("g", ["bob"])
    await drain(bob)
    await bob.groups.leave(group)
    assert not bob.groups.local(group).member
    assert updates(await drain(alice)) == ["bob left"]
    with pytest.raises(SealpostError) as refused:
        await bob.groups.send_text(group, "still here?")
    assert refused.value.code is ErrorCode.NOT_A_MEMBER
    await alice.groups.send_text(group, "alone now")  # rotation: bob's device left
    assert await drain(bob) == []


async def test_a_group_send_is_resent_byte_for_byte_when_its_ok_is_lost(
    server: GroupFakeServer, alice: Client, bob: Client
) -> None:
    group = await alice.groups.create("g", ["bob"])
    await alice.groups.send_text(group, "warm up")
    await drain(bob)
    dropped: list[bool] = []

    def lose_the_ok(conn: FakeConnection, frame: GroupSend) -> None:
        if not dropped:
            dropped.append(True)
            conn.drop()

    server.after_group_store = lose_the_ok
    rounds = len(server.group_sends)
    await alice.groups.send_text(group, "once")
    first, second = (frame for _, frame in server.group_sends[rounds:])
    assert first.payload == second.payload and first.roster_digest == second.roster_digest
    # Queued twice by the relay; shown once (the second is a duplicate).
    assert texts(await drain(bob)) == [(group, "alice", "once")]


async def test_a_group_send_in_the_outbox_goes_out_on_the_next_run(
    server: GroupFakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    group = await alice.groups.create("g", ["bob"])
    await alice.groups.send_text(group, "warm up")
    await drain(bob)

    def never(conn: FakeConnection, frame: GroupSend) -> None:
        conn.drop()
        server.refuse_connections = True

    server.after_group_store = never
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(alice.groups.send_text(group, "later"), 0.5)
    [entry] = alice.store.outbox()
    assert isinstance(entry.frame, GroupSend)
    payload = entry.frame.payload
    await alice.close()

    server.after_group_store = None
    server.refuse_connections = False
    again = make_client(server, tmp_path / "alice")
    try:
        await again.connect()
        assert again.store.outbox() == []
        assert server.group_sends[-1][1].payload == payload
    finally:
        await again.close()
    # The relay queued it twice (once before the drop); bob sees it once.
    assert texts(await drain(bob)) == [(group, "alice", "later")]


async def test_a_message_of_a_group_never_heard_of_is_fetched_and_kept(
    server: GroupFakeServer, alice: Client, bob: Client
) -> None:
    group = await alice.groups.create("g", ["bob"])
    gid = bytes.fromhex(group)
    # Bob's device loses everything it knew of the group (say, a restore).
    with bob.store.transaction():
        bob.store.db.execute("DELETE FROM chat_groups")
    await alice.groups.send_text(group, "can you read this?")
    # Alice's key reached bob with the creation update, before his store forgot the group.
    events = await drain(bob)
    assert texts(events)[-1] == (group, "alice", "can you read this?")
    assert bob.groups.local(group).members  # looked up on the server

    # A message under a key bob never got: stored as undecryptable, acknowledged.
    with bob.store.transaction():
        bob.store.db.execute("DELETE FROM sender_keys")
    await alice.groups.send_text(group, "and this?")
    [bad] = [e for e in await drain(bob) if isinstance(e, UndecryptableMessage)]
    assert (bad.group, bad.code) == (group, ErrorCode.NO_SESSION)
    assert server.device("bob").queue == {}
    assert gid in {g.group_id for g in bob.groups.local_groups()}


async def test_errors_name_the_problem(
    server: GroupFakeServer, alice: Client, bob: Client, carol: Client
) -> None:
    with pytest.raises(SealpostError) as unknown_user:
        await alice.groups.create("g", ["bob", "nobody"])
    assert unknown_user.value.code is ErrorCode.UNKNOWN_ACCOUNT
    assert "nobody" in unknown_user.value.message

    group = await alice.groups.create("g", ["bob"])
    await drain(bob)
    with pytest.raises(SealpostError) as not_admin:
        await bob.groups.add(group, ["carol"])
    assert not_admin.value.code is ErrorCode.FORBIDDEN
    assert "admin" in not_admin.value.message and group in not_admin.value.message

    with pytest.raises(SealpostError) as unknown_group:
        await alice.groups.send_text("0" * 32, "hi")
    assert unknown_group.value.code is ErrorCode.UNKNOWN_GROUP
    with pytest.raises(SealpostError) as malformed:
        await alice.groups.send_text("not-a-group", "hi")
    assert malformed.value.code is ErrorCode.INVALID_VALUE
    with pytest.raises(SealpostError) as outsider:
        await carol.groups.fetch(group)
    assert outsider.value.code is ErrorCode.NOT_A_MEMBER
    with pytest.raises(SealpostError) as not_in:
        await alice.groups.remove(group, "carol")
    assert not_in.value.code is ErrorCode.NOT_A_MEMBER and "carol" in not_in.value.message
    with pytest.raises(SealpostError) as empty:
        await alice.groups.rename(group, "  ")
    assert empty.value.code is ErrorCode.INVALID_VALUE


async def test_the_outbox_keeps_group_sends(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        frame = GroupSend(0, bytes(range(16)), bytes(range(16, 32)), b"\x13payload")
        entry_id = store.add_outbox(None, bytes(range(16)).hex(), b"content", frame, 1)
        [entry] = store.outbox()
        assert (entry.id, entry.frame, entry.content) == (entry_id, frame, b"content")
        moved = GroupSend(0, frame.group_id, bytes(16), b"\x13again")
        store.replace_outbox_frame(entry_id, moved)
        assert store.outbox_entry(entry_id) == type(entry)(
            entry_id, None, entry.recipient, b"content", moved, 1
        )
        store.delete_outbox(entry_id)
        assert store.outbox() == []
        assert store.db.execute("SELECT count(*) FROM outbox_group_sends").fetchone() == (0,)
    finally:
        store.close()


# --- the command line -----------------------------------------------------------------------


def test_groups_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    server: GroupFakeServer,
    tmp_path: Path,
) -> None:
    def open_client(home: Path, server_url: str | None = None) -> Client:
        return make_client(server, home, server_url=server_url)

    monkeypatch.setattr(cli, "open_client", open_client)

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    homes = {name: str(tmp_path / name) for name in ("alice", "bob", "carol")}
    for name, home in homes.items():
        code, _, err = run("--home", home, "--server", "http://sealpost.test", "register", name,
                           "--password", PASSWORD)  # fmt: skip
        assert code == 0, err

    code, out, err = run("--home", homes["alice"], "group", "create", "Book club", "bob", "carol")
    assert (code, err) == (0, "")
    group = out.splitlines()[-1]
    assert len(group) == 32 and out.splitlines()[0] == "created group “Book club” with bob, carol"

    code, out, err = run("--home", homes["alice"], "group", "send", group, "first", "chapter")
    assert (code, err) == (0, "") and out.startswith("sent message ")
    code, out, err = run("--home", homes["bob"], "receive", "--json")
    assert (code, err) == (0, "")
    shown = [json.loads(line) for line in out.splitlines()]
    assert [(m["type"], m.get("group"), m["text"]) for m in shown] == [
        ("group_update", group, "alice created the group “Book club” with bob, carol"),
        ("message", group, "first chapter"),
    ]

    code, out, _ = run("--home", homes["carol"], "receive")
    assert code == 0 and out.splitlines()[-1].endswith("[Book club] alice[1]: first chapter")

    code, out, _ = run("--home", homes["bob"], "group", "list")
    assert out == f"{group}  Book club  (3 members)\n"
    code, out, _ = run("--home", homes["bob"], "group", "show", group)
    assert "name: Book club" in out and "  alice  (admin)" in out and "admins: alice" in out

    code, _, err = run("--home", homes["bob"], "group", "remove", group, "carol")
    assert code == 1 and err.startswith("error: forbidden: only an admin of group ")
    code, _, err = run("--home", homes["bob"], "group", "send", "f" * 32, "hi")
    assert code == 1 and err.startswith("error: unknown_group: ")
    code, _, err = run("--home", homes["alice"], "group", "add", group, "zed")
    assert code == 1 and err.startswith("error: unknown_account: ")
    code, _, err = run("--home", homes["alice"], "group", "send", "xyz", "hi")
    assert code == 1 and err.startswith("error: invalid_value: ")
    code, _, err = run("--home", homes["alice"], "group", "create")
    assert code == 2 and err.startswith("error: usage: ")

    code, out, err = run("--home", homes["alice"], "group", "remove", group, "carol")
    assert (code, err) == (0, "") and out.startswith("removed carol from group “Book club”")
    code, out, _ = run("--home", homes["carol"], "receive", "--json")
    [removed] = [json.loads(line) for line in out.splitlines()]
    assert (removed["action"], removed["targets"]) == ("removed", ["carol"])
    code, out, _ = run("--home", homes["carol"], "group", "list")
    assert out.endswith("(2 members, left)\n")


def test_event_json_carries_the_group() -> None:
    one_to_one = cli.event_json(MessageReceived("bob", 1, "hi", 1_000, 2_000, 3, 4))
    assert "group" not in one_to_one
    grouped = cli.event_json(MessageReceived("bob", 1, "hi", 1_000, 2_000, 3, 4, group="ab" * 16))
    assert grouped["group"] == "ab" * 16
    line = cli.event_line(
        MessageReceived("bob", 1, "hi", 1_000, 2_000, 3, 4, group="ab" * 16), {"ab" * 16: "Club"}
    )
    assert line.endswith(" [Club] bob[1]: hi")
