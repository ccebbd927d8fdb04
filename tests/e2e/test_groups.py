"""Groups end to end: a real Daphne process and real reference clients (issue #6).

* Alice, Bob and Carol talk in a group; Alice removes Carol. The next group message is
  queued for Bob's device and not for Carol's, and Carol's own sender-key record, which
  read every earlier message, cannot decrypt its stored ciphertext (NO_SESSION: Alice's
  key was replaced before she sent it). The removal shows in each conversation.
* One message to a group of 50 member devices is one GROUP_SEND from the sender, read by
  all 50; the bytes it uploads are printed next to those of 50 pairwise sends
  (bench/group_bench.py measures the same).
* The command line: ``group create`` prints the id last, ``group send``, ``group
  send-file`` (the file is saved under the receiver's downloads/), and ``receive --json``
  shows "group".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.group_bench import bench_server, measure, report
from client import Client, MessageReceived
from client.core import Event, GroupUpdated
from harness.live_server import LiveServer
from protocol.errors import ErrorCode, ProtocolError
from tests.e2e.helpers import FAST, PASSWORD, cli, ok

pytestmark = pytest.mark.e2e


# The envelopes queued for the newest group message, and whose devices they are for.
RECIPIENTS_OF_NEWEST = """
SELECT u.username, d.device_id FROM messaging_envelope e
  JOIN keys_device d ON d.id = e.device_id
  JOIN keys_account a ON a.id = d.account_id
  JOIN auth_user u ON u.id = a.user_id
 WHERE e.shared_id = (SELECT max(id) FROM messaging_sharedpayload)
 ORDER BY u.username, d.device_id
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "server") as live:
        yield live


async def _drain(client: Client) -> list[Event]:
    return [event async for event in client.receive(wait=0.5)]


def _texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageReceived)]


def _updates(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, GroupUpdated)]


async def _removal(server: LiveServer, homes: Path) -> None:
    alice, bob, carol = (Client(homes / n, backoff=FAST) for n in ("alice", "bob", "carol"))
    try:
        for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            await client.register(server.url, name, PASSWORD)
        group = await alice.groups.create("hiking", ["bob", "carol"])
        gid = bytes.fromhex(group)
        await alice.groups.send_text(group, "trip on saturday?")
        bob_saw = await _drain(bob)
        assert _updates(bob_saw) == ["alice created the group “hiking” with bob, carol"]
        assert _texts(bob_saw) == ["trip on saturday?"]
        await bob.groups.send_text(group, "in!")

        carol_saw = await _drain(carol)
        assert _texts(carol_saw) == ["trip on saturday?", "in!"]
        assert all(e.group == group for e in carol_saw if isinstance(e, MessageReceived))
        await carol.groups.send_text(group, "me too")
        assert _texts(await _drain(bob)) == ["me too"]
        assert _texts(await _drain(alice)) == ["in!", "me too"]

        await alice.groups.remove(group, "carol")
        await alice.groups.send_text(group, "carol is out: new plan")

        # The relay stored the message once, for Bob's device only.
        assert server.query(RECIPIENTS_OF_NEWEST) == [("bob", 1)]
        [(ciphertext,)] = server.query(
            "SELECT payload FROM messaging_sharedpayload ORDER BY id DESC LIMIT 1"
        )
        # Carol hears of her removal (pairwise) and gets nothing else.
        carol_after = await _drain(carol)
        assert _updates(carol_after) == ["alice removed carol"]
        assert _texts(carol_after) == []
        assert not carol.groups.local(group).member
        # Her record for Alice's device read everything before; not this.
        record = carol.groups.store.sender_key_record(gid, "alice", 1)
        with pytest.raises(ProtocolError) as refused:
            record.decrypt(bytes(ciphertext))
        assert refused.value.code is ErrorCode.NO_SESSION

        bob_after = await _drain(bob)
        assert _updates(bob_after) == ["alice removed carol"]
        assert _texts(bob_after) == ["carol is out: new plan"]
        # Bob's own next message is also out of Carol's reach: his device left the roster
        # for him too, so he draws a new key on the stale roster.
        await bob.groups.send_text(group, "ok")
        assert server.query(RECIPIENTS_OF_NEWEST) == [("alice", 1)]
        assert _texts(await _drain(alice)) == ["ok"]
        assert _texts(await _drain(carol)) == []

        for client in (alice, bob):
            shown = [(e.actor, e.action.name, e.targets) for e in client.groups.events(group)]
            assert shown == [
                ("alice", "CREATED", ("bob", "carol")),
                ("alice", "MEMBERS_REMOVED", ("carol",)),
            ]
        assert [m.text for m in bob.groups.messages(group)] == [
            "trip on saturday?",
            "in!",
            "me too",
            "carol is out: new plan",
            "ok",
        ]
    finally:
        await asyncio.gather(alice.close(), bob.close(), carol.close())


def test_a_removed_member_cannot_read_the_next_message(server: LiveServer, tmp_path: Path) -> None:
    asyncio.run(_removal(server, tmp_path / "homes"))


def test_one_upload_reaches_fifty_devices(tmp_path: Path) -> None:
    with bench_server(tmp_path / "server") as live:
        figures = asyncio.run(measure(live.url, tmp_path / "homes", members=50))
    print()
    print(report(figures))
    assert figures.delivered_to == 50
    assert figures.group_send["frames"] == {"GROUP_SEND": 1}
    assert figures.group_send["rest_requests"] == 0
    assert figures.pairwise_steady["frames"] == {"SEND": 50}
    assert figures.pairwise_steady["websocket_bytes"] > 20 * figures.group_send["websocket_bytes"]


def test_groups_on_the_command_line(server: LiveServer, tmp_path: Path) -> None:
    homes = {name: tmp_path / name for name in ("dora", "eve", "finn")}
    for name, home in homes.items():
        ok(cli(home, "register", name, "--password", PASSWORD, server=server.url))

    created = ok(cli(homes["dora"], "group", "create", "Choir", "eve", "finn"))
    group = created.splitlines()[-1]
    assert len(group) == 32 and int(group, 16) >= 0
    ok(cli(homes["dora"], "group", "send", group, "rehearsal", "at", "seven"))

    received = ok(cli(homes["eve"], "receive", "--wait", "0.5", "--json"))
    lines = [json.loads(line) for line in received.splitlines() if line.strip()]
    assert [(m["type"], m["group"], m["from"], m["text"]) for m in lines] == [
        ("group_update", group, "dora", "dora created the group “Choir” with eve, finn"),
        ("message", group, "dora", "rehearsal at seven"),
    ]
    shown = ok(cli(homes["eve"], "group", "show", group))
    assert "name: Choir" in shown and "admins: dora" in shown

    ok(cli(homes["eve"], "group", "send", group, "see you"))
    plain = ok(cli(homes["finn"], "receive", "--wait", "0.5"))
    assert plain.splitlines()[-1].endswith("[Choir] eve[1]: see you")

    refused = cli(homes["eve"], "group", "add", group, "finn")
    assert refused.returncode == 1 and refused.stderr.startswith("error: forbidden: ")
    unknown = cli(homes["dora"], "group", "add", group, "nobody_here")
    assert unknown.returncode == 1 and "unknown_account" in unknown.stderr

    # A file to the group: one upload, one GROUP_SEND of its pointer; finn saves it.
    score = tmp_path / "score.pdf"
    score.write_bytes(bytes(range(256)) * 300)
    sent = ok(cli(homes["dora"], "group", "send-file", group, str(score), "--caption", "p. 3"))
    assert sent.startswith("sent file score.pdf (76.8 KB) as message ")
    received = ok(cli(homes["finn"], "receive", "--wait", "0.5", "--json"))
    [file] = [m for m in map(json.loads, received.splitlines()) if m["type"] == "attachment"]
    assert (file["group"], file["from"], file["text"]) == (group, "dora", "p. 3")
    assert file["code"] is None
    saved = Path(file["attachment"]["path"])
    assert saved.parent == homes["finn"] / "downloads" and saved.read_bytes() == score.read_bytes()
