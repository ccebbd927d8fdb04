"""Sending on slow links: cached device lists, pipelined SENDs, batched ACKs (the fake
server of tests/client/fakes.py)."""

from __future__ import annotations

import asyncio

import pytest

from client import core
from client.core import Client
from client.errors import SealpostError
from protocol.errors import ErrorCode
from protocol.frames import Ack, Error, Send

from .fakes import FakeConnection, FakeServer
from .test_client import collect, sends_by, texts


def keys_lookups(server: FakeServer, username: str) -> int:
    return server.requests.count(f"GET /api/v1/accounts/{username}/keys")


async def answered(alice: Client, bob: Client) -> None:
    """Alice writes first and Bob answers: her session with him carries no prekey header
    any more, so the full SEND_WINDOW applies to him."""
    await alice.send_text("bob", "first")
    await collect(bob)
    await bob.send_text("alice", "reply")
    await collect(alice)


def hold_sends(server: FakeServer) -> list[tuple[FakeConnection, Send]]:
    """Make the server take every SEND without answering it; returns what it took."""
    held: list[tuple[FakeConnection, Send]] = []

    def hold(conn: FakeConnection, frame: Send) -> bool:
        held.append((conn, frame))
        return True

    server.before_send = hold
    return held


async def test_device_lists_are_checked_once_for_many_sends(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    for n in range(5):
        await alice.send_text("bob", f"message {n}")
    assert keys_lookups(server, "bob") == 1 and keys_lookups(server, "alice") == 1
    assert texts(await collect(bob)) == [f"message {n}" for n in range(5)]


async def test_an_old_cached_list_is_fetched_again(
    server: FakeServer, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await alice.send_text("bob", "one")
    monkeypatch.setattr(core, "DEVICE_CACHE_SECONDS", 0.0)
    await alice.send_text("bob", "two")
    assert keys_lookups(server, "bob") == 2


async def test_pipelined_sends_are_in_flight_together_and_arrive_in_order(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await answered(alice, bob)  # the session and the cached device lists
    held = hold_sends(server)
    ids = [await alice.send_text("bob", f"pipelined {n}", wait=False) for n in range(5)]
    await alice.wait_sent([])  # nothing named: returns at once
    while len(held) < 5:
        await _tick()
    outgoing = [m for m in alice.messages("bob") if m.direction == "out"]
    assert [m.status for m in outgoing][1:] == ["pending"] * 5
    server.before_send = None
    for conn, frame in held:
        server._handle_send(conn, frame)
    await alice.wait_sent(ids)
    outgoing = [m for m in alice.messages("bob") if m.direction == "out"]
    assert [m.status for m in outgoing][1:] == ["sent"] * 5
    assert alice.store.outbox() == []
    assert texts(await collect(bob)) == [f"pipelined {n}" for n in range(5)]


async def test_to_a_new_contact_only_two_are_in_flight_until_they_answer(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    held = hold_sends(server)
    sending = asyncio.ensure_future(alice.send_many("bob", [f"new {n}" for n in range(4)]))
    while len(held) < 2:
        await _tick()
    await asyncio.sleep(0.02)
    assert len(held) == 2 and len(alice.messages("bob")) == 2  # the third waits for room
    server.before_send = None
    for conn, frame in held:
        server._handle_send(conn, frame)
    await sending
    assert texts(await collect(bob)) == [f"new {n}" for n in range(4)]


async def test_send_many_returns_once_all_are_accepted(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    ids = await alice.send_many("bob", ["a", "b", "c"])
    assert [m.id for m in alice.messages("bob")] == ids
    assert {m.status for m in alice.messages("bob")} == {"sent"}
    with pytest.raises(SealpostError) as info:
        await alice.send_many("bob", ["fine", ""])  # checked before anything is sent
    assert info.value.code is ErrorCode.INVALID_VALUE
    assert len(alice.messages("bob")) == 3


async def test_a_lost_send_ok_after_a_cut_is_resent_in_order_and_dropped_once(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await answered(alice, bob)
    held = hold_sends(server)
    ids = [await alice.send_text("bob", f"cut {n}", wait=False) for n in range(4)]
    while len(held) < 4:
        await _tick()
    [conn] = server.live("alice")
    conn.drop()
    # The server had stored the first two; their SEND_OKs were lost with the connection.
    server.before_send = None
    for old_conn, frame in held[:2]:
        server._handle_send(old_conn, frame)
    await alice.wait_sent(ids)
    resent = sends_by(server, "alice")[-4:]
    assert [f.messages for f in resent] == [f.messages for _, f in held]  # same bytes, order
    # Alice's receipt for "reply", then the four texts, two of them stored twice.
    assert len(server.device("bob").queue) == 1 + 2 + 4
    got = texts(await collect(bob))
    assert got == [f"cut {n}" for n in range(4)]  # the copies were dropped
    assert server.device("bob").queue == {}  # ...and acknowledged


async def test_a_rate_limited_send_is_written_again(
    server: FakeServer, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "RATE_LIMIT_WAIT", 0.001)
    refused = []

    def throttle(conn: FakeConnection, frame: Send) -> bool:
        if refused:
            return False
        refused.append(frame)
        conn.push(Error(frame.request_id, int(ErrorCode.RATE_LIMITED), "slow down"))
        return True

    server.before_send = throttle
    await alice.send_text("bob", "patience")
    assert len(sends_by(server, "alice")) == 2
    assert texts(await collect(bob)) == ["patience"]


async def test_a_pipelined_failure_marks_the_message_and_wait_sent_raises(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await alice.send_text("bob", "first")

    def refuse(conn: FakeConnection, frame: Send) -> bool:
        conn.push(Error(frame.request_id, int(ErrorCode.QUEUE_FULL), "full"))
        return True

    server.before_send = refuse
    message_id = await alice.send_text("bob", "too many", wait=False)
    with pytest.raises(SealpostError) as info:
        await alice.wait_sent()
    assert info.value.code is ErrorCode.QUEUE_FULL
    assert alice.store.message(message_id) is not None
    assert [m.status for m in alice.messages("bob")] == ["sent", "failed"]


async def test_acks_for_a_backlog_are_batched(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await alice.send_many("bob", [f"queued {n}" for n in range(6)])
    await bob.connect()  # the six are queued and delivered at once
    assert len(texts(await collect(bob))) == 6
    [conn] = server.live("bob")
    acks = [frame for frame in conn.received if isinstance(frame, Ack)]
    assert sorted(seq for ack in acks for seq in ack.seqs) == [1, 2, 3, 4, 5, 6]
    assert len(acks) < 6
    assert server.device("bob").queue == {}


async def _tick() -> None:
    await asyncio.sleep(0.001)
