"""Delivered and read receipts against the in-memory server: one receipt per received text,
batched; statuses that only move forward; the setting; nothing lost to a crash; receipts
never stored or shown as messages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import core
from client.core import (
    Client,
    Event,
    MessageReceived,
    MessageStatusChanged,
    SentByMe,
    UndecryptableMessage,
)
from client.store import RECEIPT_DELIVERED
from protocol.content import Content, Receipt, ReceiptKind, Text
from protocol.encoding import Writer
from protocol.frames import Send
from protocol.padding import pad

from .fakes import FakeConnection, FakeServer, link_device, make_client, registered

NOW_MS = 1_795_000_000_000


async def collect(client: Client, wait: float = 0.05) -> list[Event]:
    return [event async for event in client.receive(wait=wait)]


def texts(events: list[Event]) -> list[str]:
    return [event.text for event in events if isinstance(event, MessageReceived)]


def statuses(events: list[Event]) -> list[tuple[str, int, str]]:
    return [
        (event.peer, event.message_id, event.status)
        for event in events
        if isinstance(event, MessageStatusChanged)
    ]


def sends_by(server: FakeServer, username: str) -> list[Send]:
    return [frame for sender, frame in server.sends if sender == username]


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Content]]:
    """Every content the clients encrypt, in order (a spy on the encoder)."""
    seen: list[Content] = []
    original = core.encode_content

    def spy(content: Content, hide_length: bool = False) -> bytes:
        seen.append(content)
        return original(content, hide_length)

    monkeypatch.setattr(core, "encode_content", spy)
    yield seen


def receipts_in(seen: list[Content]) -> list[Receipt]:
    return [content for content in seen if isinstance(content, Receipt)]


@pytest.fixture(autouse=True)
def _short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """receive() waits at most this long for receipts stuck on their way."""
    monkeypatch.setattr(core, "RECEIPT_SETTLE_TIMEOUT", 0.2)


async def restart(server: FakeServer, client: Client) -> Client:
    await client.close()
    return make_client(server, client.home)


# --- delivered ------------------------------------------------------------------------------


async def test_a_received_text_sends_one_delivered_receipt_and_no_message(
    server: FakeServer, alice: Client, bob: Client, encoded: list[Content]
) -> None:
    message_id = await alice.send_text("bob", "hello")
    [sent] = alice.messages()
    assert sent.status == "sent"

    assert texts(await collect(bob)) == ["hello"]
    [frame] = sends_by(server, "bob")  # exactly one receipt, to alice's devices only
    assert frame.recipient == "alice" and [m.device_id for m in frame.messages] == [1]
    [receipt] = receipts_in(encoded)
    assert receipt.kind is ReceiptKind.DELIVERED
    assert receipt.message_sent_at_ms == (sent.sent_at_ms,)
    assert bob.store.pending_receipts() == [] and bob.store.outbox() == []

    events = await collect(alice)
    assert events == [MessageStatusChanged("bob", message_id, "delivered")]
    assert [(m.id, m.status) for m in alice.messages()] == [(message_id, "delivered")]
    # The receipt is no message on either side, and nothing answers it.
    assert [m.text for m in bob.messages()] == ["hello"]
    assert len(alice.messages()) == 1
    assert len(sends_by(server, "alice")) == 1  # the text; no receipt for a receipt
    assert await collect(bob) == []
    assert len(receipts_in(encoded)) == 1


async def test_a_burst_is_acknowledged_in_one_or_two_receipts(
    server: FakeServer, alice: Client, bob: Client, encoded: list[Content]
) -> None:
    for index in range(50):
        await alice.send_text("bob", f"message {index}")
    sent_at = [m.sent_at_ms for m in alice.messages()]
    assert sent_at == sorted(set(sent_at))  # unique and increasing

    assert texts(await collect(bob)) == [f"message {index}" for index in range(50)]
    receipts = receipts_in(encoded)
    assert 1 <= len(receipts) <= 2 and len(sends_by(server, "bob")) == len(receipts)
    assert sorted(s for r in receipts for s in r.message_sent_at_ms) == sent_at

    events = await collect(alice)
    assert sorted(message_id for _, message_id, _ in statuses(events)) == [
        m.id for m in alice.messages()
    ]
    assert {m.status for m in alice.messages()} == {"delivered"}


async def test_a_receipt_stuck_on_its_way_holds_up_no_text(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await alice.send_text("bob", "first")
    swallowed: list[Send] = []

    def swallow_the_receipt(conn: FakeConnection, frame: Send) -> bool:
        if conn.account.username == "bob" and not swallowed:
            swallowed.append(frame)  # bob's first SEND, the receipt: never answered
            return True
        return False

    server.before_send = swallow_the_receipt
    assert texts(await collect(bob)) == ["first"]  # returns though the receipt hangs
    assert len(swallowed) == 1
    await alice.send_text("bob", "second")
    assert texts(await collect(bob)) == ["second"]
    await bob.send_text("alice", "and a text of mine")  # not queued behind the receipt
    events = await collect(alice)
    assert texts(events) == ["and a text of mine"]
    assert statuses(events) == []  # the first receipt never arrived...
    await bob.close()  # ...and is still in bob's outbox, resent on the next run
    restarted = make_client(server, bob.home)
    await restarted.connect()
    assert restarted.store.outbox() == []
    assert len(statuses(await collect(alice))) == 2
    await restarted.close()


async def test_the_hundredth_receipt_is_sent_without_waiting_for_the_burst_to_end(
    server: FakeServer, alice: Client, bob: Client, encoded: list[Content]
) -> None:
    for index in range(120):
        await alice.send_text("bob", f"{index}")
    seen = 0
    mid_burst: list[int] = []
    async for event in bob.receive(wait=0.05):  # the 120 are all queued: never idle
        if isinstance(event, MessageReceived):
            seen += 1
            await asyncio.sleep(0.001)  # an application doing something with each one
            if seen == 110:
                mid_burst = [len(r.message_sent_at_ms) for r in receipts_in(encoded)]
    assert seen == 120
    assert mid_burst == [100]  # went out while the burst was still being handled
    assert [len(r.message_sent_at_ms) for r in receipts_in(encoded)] == [100, 20]
    assert len(statuses(await collect(alice))) == 120


# --- read, and the order of statuses --------------------------------------------------------


async def test_status_goes_sent_delivered_read_and_never_back(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    first = await alice.send_text("bob", "one")
    second = await alice.send_text("bob", "two")
    assert texts(await collect(bob)) == ["one", "two"]
    assert statuses(await collect(alice)) == [
        ("bob", first, "delivered"),
        ("bob", second, "delivered"),
    ]
    assert [m.status for m in bob.messages()] == ["received", "received"]

    assert await bob.mark_read("Alice") == 2
    assert [m.status for m in bob.messages()] == ["read", "read"]
    assert statuses(await collect(alice)) == [("bob", first, "read"), ("bob", second, "read")]
    assert await bob.mark_read("alice") == 0  # nothing unread: nothing sent
    assert len(sends_by(server, "bob")) == 2

    # A late delivered receipt (owed from before, sent after a restart) changes nothing.
    sent_at = [m.sent_at_ms for m in alice.messages()]
    bob.store.add_pending_receipts("alice", RECEIPT_DELIVERED, [s for s in sent_at if s], 0)
    restarted = await restart(server, bob)
    await collect(restarted)
    assert len(sends_by(server, "bob")) == 3
    assert await collect(alice) == []
    assert [m.status for m in alice.messages()] == ["read", "read"]
    await restarted.close()


async def test_read_before_the_delivered_receipt_went_out_sends_only_read(
    server: FakeServer, alice: Client, bob: Client, encoded: list[Content]
) -> None:
    message_id = await alice.send_text("bob", "read at once")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bob, "_schedule_receipts", lambda: None)  # nothing goes out yet
        assert texts(await collect(bob)) == ["read at once"]
    assert [r.kind for r in bob.store.pending_receipts()] == [RECEIPT_DELIVERED]

    assert await bob.mark_read("alice") == 1
    assert [r.kind for r in receipts_in(encoded)] == [ReceiptKind.READ]
    assert statuses(await collect(alice)) == [("bob", message_id, "read")]  # sent -> read


async def test_a_read_receipt_names_at_most_a_hundred_messages(
    server: FakeServer, alice: Client, bob: Client, encoded: list[Content]
) -> None:
    await alice.send_text("bob", "start a session")
    await collect(bob)
    for index in range(250):  # as if received earlier
        bob.store.add_incoming_text("alice", 1, f"{index}", NOW_MS + index, 0, 0, 100 + index)
    assert await bob.mark_read("alice") == 251
    read = [r for r in receipts_in(encoded) if r.kind is ReceiptKind.READ]
    assert [len(r.message_sent_at_ms) for r in read] == [100, 100, 51]
    assert len({r.sent_at_ms for r in receipts_in(encoded)}) == len(receipts_in(encoded))
    assert len(statuses(await collect(alice))) == 2  # delivered, then read, for the real one


async def test_a_receipt_for_an_unknown_message_is_ignored(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    message_id = await alice.send_text("bob", "known")
    assert texts(await collect(bob)) == ["known"]
    assert statuses(await collect(alice)) == [("bob", message_id, "delivered")]
    [sent] = alice.messages()
    assert sent.sent_at_ms is not None
    bob.store.add_pending_receipts("alice", 2, [sent.sent_at_ms + 1, 12_345], 0)
    restarted = await restart(server, bob)
    await collect(restarted)

    assert await collect(alice) == []
    assert [(m.id, m.status) for m in alice.messages()] == [(message_id, "delivered")]
    await restarted.close()


async def test_a_receipt_from_another_account_does_not_touch_messages_to_others(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    carol = await registered(server, tmp_path / "carol", "carol")
    to_bob = await alice.send_text("bob", "for bob")
    to_carol = await alice.send_text("carol", "for carol")
    [to_bob_row, to_carol_row] = alice.messages()
    assert to_bob_row.sent_at_ms is not None
    # carol names the sent_at of alice's message to bob: it is not hers to acknowledge.
    await collect(carol)
    carol.store.add_pending_receipts("alice", 2, [to_bob_row.sent_at_ms], 0)
    carol = await restart(server, carol)
    await collect(carol)
    assert statuses(await collect(alice)) == [("carol", to_carol, "delivered")]
    assert alice.messages()[0].id == to_bob and alice.messages()[0].status == "sent"
    await carol.close()


# --- the setting ------------------------------------------------------------------------------


async def test_receipts_off_for_one_client_sends_none_but_reads_incoming_ones(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    bob.send_receipts = False
    assert bob.receipts and not bob.sending_receipts
    await alice.send_text("bob", "quiet")
    assert texts(await collect(bob)) == ["quiet"]
    assert await bob.mark_read("alice") == 1
    assert sends_by(server, "bob") == [] and bob.store.pending_receipts() == []
    assert bob.messages()[0].status == "read"

    reply = await bob.send_text("alice", "but I still get yours")
    assert texts(await collect(alice)) == ["but I still get yours"]
    assert statuses(await collect(bob)) == [("alice", reply, "delivered")]


async def test_the_stored_setting(server: FakeServer, alice: Client, bob: Client) -> None:
    assert bob.receipts
    bob.set_receipts(False)
    bob = await restart(server, bob)  # the constructor's default does not override it
    assert not bob.receipts and not bob.sending_receipts
    message_id = await alice.send_text("bob", "hello")
    assert texts(await collect(bob)) == ["hello"]
    assert sends_by(server, "bob") == []

    bob.set_receipts(True)
    await alice.send_text("bob", "again")
    assert texts(await collect(bob)) == ["again"]  # only this one is acknowledged
    assert statuses(await collect(alice)) == [("bob", message_id + 1, "delivered")]
    await bob.close()


async def test_turning_receipts_off_drops_the_ones_owed(
    server: FakeServer, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await alice.send_text("bob", "hello")
    monkeypatch.setattr(bob, "_schedule_receipts", lambda: None)
    await collect(bob)
    assert len(bob.store.pending_receipts()) == 1
    assert bob.sending_receipts
    bob.set_receipts(False)
    assert bob.store.pending_receipts() == []


# --- crashes and restarts -----------------------------------------------------------------


async def test_a_crash_after_storing_the_text_sends_the_receipt_on_the_next_run(
    server: FakeServer, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    message_id = await alice.send_text("bob", "survives")

    def power_cut() -> None:
        raise RuntimeError("power cut after the ack, before the receipt")

    monkeypatch.setattr(bob, "_schedule_receipts", power_cut)
    with pytest.raises(RuntimeError):
        await collect(bob)
    assert [m.text for m in bob.messages()] == ["survives"]
    assert server.device("bob").queue == {}  # acknowledged: the server will not resend
    assert len(bob.store.pending_receipts()) == 1
    assert sends_by(server, "bob") == []
    monkeypatch.undo()
    await bob.close()

    restarted = make_client(server, bob.home)
    assert await collect(restarted) == []
    assert restarted.store.pending_receipts() == []
    assert len(sends_by(server, "bob")) == 1
    assert statuses(await collect(alice)) == [("bob", message_id, "delivered")]
    await restarted.close()


async def test_a_crash_before_the_commit_stores_neither_text_nor_receipt(
    server: FakeServer, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await alice.send_text("bob", "all or nothing")

    def power_cut(*args: object) -> None:
        raise RuntimeError("power cut while writing the receipt owed")

    monkeypatch.setattr(bob.store, "add_pending_receipts", power_cut)
    with pytest.raises(RuntimeError):
        await collect(bob)
    assert bob.messages() == [] and list(server.device("bob").queue) == [1]
    monkeypatch.undo()
    await bob.close()

    restarted = make_client(server, bob.home)
    assert texts(await collect(restarted)) == ["all or nothing"]
    assert len(sends_by(server, "bob")) == 1
    await restarted.close()


async def test_an_unanswered_receipt_is_resent_from_the_outbox_on_the_next_run(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    message_id = await alice.send_text("bob", "hello")

    def swallow(conn: FakeConnection, frame: Send) -> bool:
        return True  # taken, never answered

    server.before_send = swallow
    assert texts(await collect(bob)) == ["hello"]  # gives up waiting after a bounded time
    [entry] = bob.store.outbox()
    assert entry.message_id is None and entry.recipient == "alice"
    assert bob.store.pending_receipts() == []
    await bob.close()

    server.before_send = None
    restarted = make_client(server, bob.home)
    await restarted.connect()
    assert restarted.store.outbox() == []
    first, second = sends_by(server, "bob")
    assert first.messages == second.messages  # the same ciphertext, not a new receipt
    assert statuses(await collect(alice)) == [("bob", message_id, "delivered")]
    await restarted.close()


# --- whom receipts go to ---------------------------------------------------------------------


async def test_no_receipts_to_our_own_devices_and_all_of_the_senders(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path, encoded: list[Content]
) -> None:
    alice2 = link_device(server, alice, tmp_path / "alice2", 2)
    bob2 = link_device(server, bob, tmp_path / "bob2", 2)
    message_id = await alice.send_text("bob", "to all of bob")
    assert [f.recipient for f in sends_by(server, "alice")] == ["bob", "alice"]

    # alice's second device gets the SENT transcript: no receipt for our own account.
    [copy] = await collect(alice2)
    assert isinstance(copy, SentByMe) and copy.text == "to all of bob"
    assert receipts_in(encoded) == [] and len(sends_by(server, "alice")) == 2

    # bob's devices each acknowledge, to alice's account only (both her devices).
    assert texts(await collect(bob)) == ["to all of bob"]
    assert texts(await collect(bob2)) == ["to all of bob"]
    receipt_sends = sends_by(server, "bob")
    assert {f.recipient for f in receipt_sends} == {"alice"}
    accepted = [f for f in receipt_sends if [m.device_id for m in f.messages] == [1, 2]]
    assert len(accepted) == 2
    assert statuses(await collect(alice)) == [("bob", message_id, "delivered")]
    # The transcript is an outgoing message on alice's second device too: it moves along.
    assert statuses(await collect(alice2)) == [("bob", copy.message_id, "delivered")]
    await alice2.close()
    await bob2.close()


async def test_a_receipt_from_our_own_account_is_ignored(
    server: FakeServer, alice: Client, tmp_path: Path, bob: Client
) -> None:
    alice2 = link_device(server, alice, tmp_path / "alice2", 2)
    await alice.send_text("bob", "x")
    [sent] = alice.messages()
    assert sent.sent_at_ms is not None
    await collect(alice2)
    # A (misbehaving) device of our own account acknowledges our message.
    alice2.store.add_pending_receipts("alice", 2, [sent.sent_at_ms], 0)
    alice2 = await restart(server, alice2)
    await collect(alice2)
    assert await collect(alice) == []
    assert alice.messages()[0].status == "sent"
    await alice2.close()


async def test_receipts_to_a_changed_identity_wait_until_it_is_trusted(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    await bob.send_text("alice", "old phone")
    await collect(alice)
    server.delete_account("bob")
    new_bob = await registered(server, tmp_path / "new-bob", "bob")
    message_id = await new_bob.send_text("alice", "new phone")
    sends = len(sends_by(server, "alice"))

    assert texts(await collect(alice)) == ["new phone"]
    assert len(sends_by(server, "alice")) == sends  # held: nothing goes to an unknown key
    assert len(alice.store.pending_receipts("bob")) == 1
    assert await collect(new_bob) == []

    alice.trust("bob")
    await collect(alice)
    assert len(sends_by(server, "alice")) == sends + 1
    assert statuses(await collect(new_bob)) == [("alice", message_id, "delivered")]
    await new_bob.close()


# --- content this client does not know ---------------------------------------------------------


async def test_unknown_content_is_acknowledged_and_not_stored(
    server: FakeServer, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    future = [
        pad(Writer().u8(99).varint(NOW_MS).raw(b"a future content type").getvalue(), True),
        pad(Writer().u8(2).varint(NOW_MS).u8(9).varint(1).varint(5).getvalue(), True),
    ]

    def encode_future(content: Content, hide_length: bool = False) -> bytes:
        assert isinstance(content, Text)
        return future.pop(0)

    monkeypatch.setattr(core, "encode_content", encode_future)
    await alice.send_text("bob", "type 99")
    await alice.send_text("bob", "receipt kind 9")
    monkeypatch.undo()
    await alice.send_text("bob", "a text after them")

    events = await collect(bob)
    assert texts(events) == ["a text after them"]  # the session went on
    assert not any(isinstance(e, UndecryptableMessage) for e in events)
    assert [m.text for m in bob.messages()] == ["a text after them"]
    assert server.device("bob").queue == {}
    assert len(sends_by(server, "bob")) == 1  # a receipt for the text only


# --- sent_at ----------------------------------------------------------------------------------


async def test_sent_at_is_unique_and_increasing_when_the_clock_stands_still_or_goes_back(
    server: FakeServer, bob: Client, tmp_path: Path
) -> None:
    alice = await registered(server, tmp_path / "alice", "alice", clock=lambda: NOW_MS / 1000)
    for text in ("a", "b", "c"):
        await alice.send_text("bob", text)
    await alice.close()
    earlier = make_client(server, alice.home, clock=lambda: NOW_MS / 1000 - 60)
    await earlier.send_text("bob", "d")
    assert [m.sent_at_ms for m in earlier.messages()] == [NOW_MS + i for i in range(4)]
    events = await collect(bob)
    assert [e.sent_at_ms for e in events if isinstance(e, MessageReceived)] == [
        NOW_MS + i for i in range(4)
    ]
    assert len(statuses(await collect(earlier))) == 4
    await earlier.close()
