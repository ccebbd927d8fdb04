"""Disappearing messages and typing indicators in the client, against the in-memory
server (blob_fakes): timers on both sides, EXPIRING contents in EXPIRES sends, deletion on
each side's clock, files of expired attachments, EPHEMERAL typing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.core import (
    AttachmentReceived,
    Client,
    Event,
    MessageReceived,
    SentByMe,
    TimerChanged,
    TypingChanged,
)
from client.errors import SealpostError
from client.store import Store
from protocol.errors import ErrorCode
from protocol.frames import DeviceMessage, Send, SendFlags

from .blob_fakes import BlobServer
from .fakes import link_device, registered


class Clock:
    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> BlobServer:
    return BlobServer()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def alice(server: BlobServer, tmp_path: Path, clock: Clock) -> AsyncIterator[Client]:
    client = await registered(server, tmp_path / "alice", "alice", clock=clock)
    yield client
    await client.close()


@pytest.fixture
async def bob(server: BlobServer, tmp_path: Path, clock: Clock) -> AsyncIterator[Client]:
    client = await registered(server, tmp_path / "bob", "bob", clock=clock)
    yield client
    await client.close()


async def _events(client: Client) -> list[Event]:
    return [event async for event in client.receive(wait=0.05)]


async def test_a_timer_is_set_on_both_sides_and_messages_expire_on_each_clock(
    server: BlobServer, alice: Client, bob: Client, clock: Clock, tmp_path: Path
) -> None:
    await alice.send_text("bob", "hello")  # no timer: kept
    notice = await alice.set_timer("bob", 60)
    assert alice.timer("bob") == 60
    await alice.send_text("bob", "gone in a minute")
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG" + bytes(3000))
    await alice.send_file("bob", photo)

    sends = [frame for sender, frame in server.sends if sender == "alice"]
    assert [(f.flags, f.ttl_seconds) for f in sends] == [
        (SendFlags.NONE, None),  # hello
        (SendFlags.NONE, None),  # the TIMER itself does not disappear
        (SendFlags.EXPIRES, 60),
        (SendFlags.EXPIRES, 60),
    ]
    [blob] = server.blobs.values()
    assert blob.ttl_seconds == 60  # the server drops the file with the message
    [_, timer_row, text_row, file_row] = alice.messages("bob")
    assert timer_row.id == notice and timer_row.kind == "timer" and timer_row.timer_seconds == 60
    sent_at = text_row.sent_at_ms or 0
    assert text_row.expires_at_ms == sent_at + 60_000 and file_row.expires_at_ms is not None

    clock.now += 30  # bob's copy runs from when it arrives
    events = await _events(bob)
    [changed] = [e for e in events if isinstance(e, TimerChanged)]
    assert (changed.peer, changed.by, changed.timer_seconds) == ("alice", "alice", 60)
    assert bob.timer("alice") == 60
    texts = [e for e in events if isinstance(e, MessageReceived)]
    arrived = int(clock.now * 1000)
    assert [(t.text, t.expires_at_ms) for t in texts] == [
        ("hello", None),
        ("gone in a minute", arrived + 60_000),
    ]
    [file] = [e for e in events if isinstance(e, AttachmentReceived)]
    assert file.path is not None and file.path.exists()
    assert file.expires_at_ms == arrived + 60_000

    clock.now += 31  # past alice's minute, not bob's
    assert [m.kind for m in alice.messages("bob")] == ["text", "timer"]
    assert [m.kind for m in bob.messages("alice")] == ["text", "timer", "text", "attachment"]
    assert photo.exists()  # the file alice sent is hers: never deleted

    clock.now += 30
    assert [m.kind for m in bob.messages("alice")] == ["text", "timer"]
    assert not file.path.exists()

    # Either side turns it off; afterwards nothing expires.
    await bob.set_timer("alice", 0)
    [off] = [e for e in await _events(alice) if isinstance(e, TimerChanged)]
    assert (off.by, off.timer_seconds) == ("bob", 0) and alice.timer("bob") == 0
    await alice.send_text("bob", "kept again")
    assert server.sends[-1][1].flags == SendFlags.NONE


async def test_the_receive_loop_deletes_what_expires_while_it_waits(
    server: BlobServer, tmp_path: Path
) -> None:
    alice = await registered(server, tmp_path / "alice", "alice")
    bob = await registered(server, tmp_path / "bob", "bob")
    try:
        await alice.set_timer("bob", 1)
        await alice.send_text("bob", "one second")
        seen = [e async for e in bob.receive(wait=1.6)]
        assert any(isinstance(e, MessageReceived) for e in seen)
        # Read the store itself: messages() would purge on its own.
        assert [m.kind for m in bob.store.messages("alice")] == ["timer"]
    finally:
        await alice.close()
        await bob.close()


async def test_an_older_timer_change_does_not_undo_a_newer_one(
    server: BlobServer, alice: Client, bob: Client, clock: Clock
) -> None:
    await alice.set_timer("bob", 30)
    clock.now += 1
    await bob.set_timer("alice", 300)  # later: both end at 300
    await _events(alice)
    await _events(bob)
    assert alice.timer("bob") == bob.timer("alice") == 300


async def test_our_other_device_learns_the_timer_and_expires_the_copy(
    server: BlobServer, alice: Client, bob: Client, clock: Clock, tmp_path: Path
) -> None:
    laptop = link_device(server, alice, tmp_path / "laptop", 2)
    laptop._clock = clock
    try:
        await alice.set_timer("bob", 10)
        await alice.send_text("bob", "brief")
        clock.now += 5
        events = await _events(laptop)
        [changed] = [e for e in events if isinstance(e, TimerChanged)]
        assert (changed.peer, changed.by) == ("bob", "alice")
        assert laptop.timer("bob") == 10
        [sent] = [e for e in events if isinstance(e, SentByMe)]
        # The copy disappears when alice's does: sent_at + 10 s.
        assert sent.text == "brief" and sent.expires_at_ms == sent.sent_at_ms + 10_000
        clock.now += 6
        assert [m.kind for m in laptop.messages("bob")] == ["timer"]
    finally:
        await laptop.close()


async def test_an_expired_message_still_in_the_outbox_is_never_sent(
    server: BlobServer, alice: Client, clock: Clock, tmp_path: Path
) -> None:
    await registered(server, tmp_path / "bob", "bob")
    await alice.set_timer("bob", 5)
    server.refuse_connections = True
    server.drop_all()
    sending = asyncio.create_task(alice.send_text("bob", "stuck"))
    await asyncio.sleep(0.05)
    assert len(alice.store.outbox()) == 1
    sending.cancel()
    clock.now += 6
    assert alice.purge_expired() == 1
    assert alice.store.outbox() == [] and [m.kind for m in alice.messages("bob")] == ["timer"]


def test_the_outbox_keeps_ttl_seconds(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    message_id = store.add_outgoing_text("bob", 1, "x", 100)
    frame = Send(0, "bob", (DeviceMessage(1, 7, b"c"),), SendFlags.EXPIRES, 30)
    entry_id = store.add_outbox(message_id, "bob", b"content", frame, 5)
    entry = store.outbox_entry(entry_id)
    assert entry is not None and entry.frame == frame
    store.close()


async def test_a_bad_timer_is_refused(alice: Client) -> None:
    with pytest.raises(SealpostError) as caught:
        await alice.set_timer("bob", 31_536_001)
    assert caught.value.code is ErrorCode.INVALID_VALUE


async def test_typing_is_ephemeral_and_reaches_only_connected_devices(
    server: BlobServer, alice: Client, bob: Client
) -> None:
    assert not await alice.send_typing("bob")  # no session yet: nothing is sent
    await alice.send_text("bob", "hi")
    await _events(bob)  # bob is connected from here on
    assert await alice.send_typing("bob")
    assert await alice.send_typing("bob", started=False)
    assert [f.flags for f in server.ephemeral_sends] == [SendFlags.EPHEMERAL] * 2
    events = [e for e in await _events(bob) if isinstance(e, TypingChanged)]
    assert [(e.from_, e.started) for e in events] == [("alice", True), ("alice", False)]
    assert not server.device("bob").queue  # never queued
    assert [m.text for m in bob.messages("alice")] == ["hi"]  # never stored

    # Offline: lost, as it may be; the next text still decrypts.
    await bob.close()
    assert await alice.send_typing("bob")
    assert not server.device("bob").queue


async def test_typing_turned_off_sends_none_and_shows_none(
    server: BlobServer, alice: Client, bob: Client
) -> None:
    await alice.send_text("bob", "hi")
    await bob.send_text("alice", "hello")
    await _events(alice)
    await _events(bob)
    alice.set_typing(False)
    assert not alice.typing
    assert not await alice.send_typing("bob")
    assert server.ephemeral_sends == []
    assert await bob.send_typing("alice")
    assert not [e for e in await _events(alice) if isinstance(e, TypingChanged)]
    alice.set_typing(True)
    assert alice.typing and alice.sending_receipts  # separate settings


def test_disappearing_texts_are_never_sent_as_history(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    kept = store.add_outgoing_text("bob", 1, "kept", 100, status="sent")
    brief = store.add_outgoing_text("bob", 1, "brief", 101, status="sent")
    store.set_message_expiry(brief, 10_000, 10)
    assert [m.id for m in store.recent_texts()] == [kept]
    store.close()
