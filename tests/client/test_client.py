"""Client behaviour end to end against the in-memory server (tests/client/fakes.py): the
real Api, Transport, Store and protocol code, with only the network replaced."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from client.core import (
    Client,
    Event,
    IdentityChanged,
    MessageReceived,
    SentByMe,
    UndecryptableMessage,
)
from client.errors import LocalErrorCode, SealpostError
from protocol import primitives as p
from protocol.errors import ErrorCode
from protocol.frames import Ack, Deliver, DeviceMismatch, Error, Notice, NoticeKind, Send, SendOk

from .fakes import SERVER_URL, FakeConnection, FakeServer, link_device, make_client, registered

DAY = 24 * 3600.0
# A well-formed RatchetMessage (version 1, kind 1; ratchet key; counters 0; 24 bytes of
# "ciphertext") for a session nobody has.
RATCHET_MESSAGE = b"\x11" + bytes(32) + b"\x00\x00" + bytes(24)


async def collect(client: Client, wait: float = 0.05) -> list[Event]:
    return [event async for event in client.receive(wait=wait)]


def texts(events: list[Event]) -> list[str]:
    return [event.text for event in events if isinstance(event, MessageReceived)]


def sends_by(server: FakeServer, username: str) -> list[Send]:
    return [frame for sender, frame in server.sends if sender == username]


def swallow(conn: FakeConnection, frame: Send) -> bool:
    """A before_send hook: the server takes the SEND and never answers."""
    return True


# --- sign-up ----------------------------------------------------------------------------------


async def test_register_uploads_public_halves_and_keeps_private_ones(
    server: FakeServer, tmp_path: Path
) -> None:
    alice = await registered(server, tmp_path / "alice", "  Alice ")
    assert (alice.username, alice.device_id, alice.registered) == ("alice", 1, True)
    assert alice.config.server_url == SERVER_URL
    device = server.device("alice")
    assert len(device.one_time) == 100 and len(device.kem) == 100
    assert device.last_resort.last_resort
    assert alice.store.prekey_counts() == {
        "signed": 1,
        "one_time": 100,
        "kem": 100,
        "last_resort": 1,
    }
    for public in device.one_time:
        private = alice.store.one_time_prekey(public.key_id)
        assert private is not None and p.x25519_public_key(private) == public.public_key
    assert server.accounts["alice"].identity_key == alice.account_key

    with pytest.raises(SealpostError) as info:
        await alice.register(SERVER_URL, "alice2", "correct horse battery")
    assert info.value.code is LocalErrorCode.ALREADY_REGISTERED
    await alice.close()


async def test_a_refused_sign_up_stores_nothing(
    server: FakeServer, bob: Client, tmp_path: Path
) -> None:
    client = make_client(server, tmp_path / "other")
    for username, password, code in [
        ("bob", "correct horse battery", ErrorCode.USERNAME_TAKEN),
        ("carol", "short", ErrorCode.WEAK_PASSWORD),
        ("9lives", "correct horse battery", ErrorCode.INVALID_USERNAME),
    ]:
        with pytest.raises(SealpostError) as info:
            await client.register(SERVER_URL, username, password)
        assert info.value.code is code
        assert not client.registered
    assert sum(r.endswith("/accounts") for r in server.requests) == 3  # 9lives never left
    await client.register(SERVER_URL, "carol", "correct horse battery")
    assert client.username == "carol"
    await client.close()


async def test_commands_need_an_account(server: FakeServer, tmp_path: Path) -> None:
    client = make_client(server, tmp_path / "empty")
    with pytest.raises(SealpostError) as info:
        await client.send_text("bob", "hi")
    assert info.value.code is LocalErrorCode.NOT_REGISTERED
    await client.close()


# --- a conversation -------------------------------------------------------------------------


async def test_messages_go_both_ways_and_are_acknowledged(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    before = int(time.time() * 1000)
    message_id = await alice.send_text("Bob", "hello bob")
    [event] = await collect(bob)
    assert isinstance(event, MessageReceived)
    assert (event.from_, event.device, event.text, event.seq) == ("alice", 1, "hello bob", 1)
    assert before <= event.sent_at_ms <= time.time() * 1000
    assert server.device("bob").queue == {} and server.device("bob").acked == [1]
    # Bob's one-time prekeys of both kinds were used once and are gone.
    assert bob.store.prekey_counts()["one_time"] == 99
    assert bob.store.prekey_counts()["kem"] == 99
    identity = bob.identity("alice")
    assert identity is not None and identity.account_key == alice.account_key
    assert not identity.changed

    await bob.send_text("alice", "hello alice")
    assert texts(await collect(alice)) == ["hello alice"]
    await alice.send_text("bob", "second")
    assert texts(await collect(bob)) == ["second"]

    [sent, received] = alice.messages("bob")[:2]
    assert (sent.id, sent.direction, sent.status, sent.text) == (
        message_id,
        "out",
        "delivered",  # bob's receipt came in with his reply
        "hello bob",
    )
    assert (received.direction, received.status) == ("in", "received")
    assert received.text == "hello alice"
    assert [m.text for m in bob.messages()] == ["hello bob", "hello alice", "second"]
    assert alice.store.outbox() == [] and bob.store.outbox() == []


async def test_send_refusals(server: FakeServer, alice: Client, bob: Client) -> None:
    for args, code in [
        (("nobody", "hi"), ErrorCode.UNKNOWN_ACCOUNT),
        (("bob", ""), ErrorCode.INVALID_VALUE),
        (("bob", "x" * 65537), ErrorCode.TOO_LARGE),
        (("B!", "hi"), ErrorCode.INVALID_USERNAME),
    ]:
        with pytest.raises(SealpostError) as info:
            await alice.send_text(*args)
        assert info.value.code is code, args
    assert sends_by(server, "alice") == []


async def test_a_note_to_self_without_other_devices_stays_local(
    server: FakeServer, alice: Client
) -> None:
    message_id = await alice.send_text("alice", "remember the milk")
    assert sends_by(server, "alice") == []
    [message] = alice.messages()
    assert message.id == message_id and message.status == "sent"


async def test_a_relay_error_fails_the_message(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    def queue_full(conn: FakeConnection, frame: Send) -> bool:
        conn.push(Error(frame.request_id, int(ErrorCode.QUEUE_FULL), "bob device 1 is full"))
        return True

    server.before_send = queue_full
    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "hello")
    assert info.value.code is ErrorCode.QUEUE_FULL
    assert info.value.message == "bob device 1 is full"
    assert alice.messages()[0].status == "failed"
    assert alice.store.outbox() == []


# --- storing before acknowledging ------------------------------------------------------------


async def test_a_crash_between_decrypt_and_ack_writes_nothing(
    server: FakeServer, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await alice.send_text("bob", "first")
    counts = bob.store.prekey_counts()

    def power_cut(*args: object, **kwargs: object) -> int:
        raise RuntimeError("power cut after decrypting")

    monkeypatch.setattr(bob.store, "add_incoming_text", power_cut)
    with pytest.raises(RuntimeError):
        await collect(bob)
    # The decryption advanced a session and consumed prekeys in memory only.
    assert bob.store.load_session("alice", 1) is None
    assert bob.store.prekey_counts() == counts
    assert bob.store.identity("alice") is None
    assert bob.store.peer_devices("alice") == {}
    assert bob.messages() == []
    assert list(server.device("bob").queue) == [1] and server.device("bob").acked == []

    monkeypatch.undo()
    await bob.close()
    restarted = make_client(server, bob.home)
    assert texts(await collect(restarted)) == ["first"]
    assert server.device("bob").queue == {}
    await restarted.close()


async def test_a_redelivered_envelope_is_dropped_as_a_duplicate(
    server: FakeServer, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await alice.send_text("bob", "exactly once")
    await bob.connect()
    assert bob.transport is not None

    async def lost_ack(seqs: list[int]) -> bool:
        return False  # stored, but the ack never reached the server

    monkeypatch.setattr(bob.transport, "ack", lost_ack)
    assert texts(await collect(bob)) == ["exactly once"]
    assert list(server.device("bob").queue) == [1]
    await bob.close()

    restarted = make_client(server, bob.home)
    assert await collect(restarted) == []  # DUPLICATE_MESSAGE never reaches the app
    assert server.device("bob").queue == {}  # but it was acknowledged
    assert [m.text for m in restarted.messages()] == ["exactly once"]
    await restarted.close()


# --- the outbox --------------------------------------------------------------------------------


async def test_a_send_cut_off_by_a_disconnect_is_resent_with_the_same_ciphertexts(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    def lose_the_send_ok(conn: FakeConnection, frame: Send) -> None:
        server.after_store = None
        conn.drop()  # stored, but the SEND_OK is lost with the connection

    server.after_store = lose_the_send_ok
    message_id = await alice.send_text("bob", "hello once")
    first, second = sends_by(server, "alice")
    assert first.messages == second.messages  # not re-encrypted
    assert alice.store.outbox() == [] and alice.messages()[0].status == "sent"
    assert len(server.device("bob").queue) == 2  # the server stored it twice...
    assert texts(await collect(bob)) == ["hello once"]  # ...bob sees it once
    assert server.device("bob").queue == {}
    assert [m.id for m in alice.messages()] == [message_id]


async def test_unanswered_sends_survive_a_restart(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    server.before_send = swallow
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(alice.send_text("bob", "eventually"), 0.2)
    [entry] = alice.store.outbox()
    [message] = alice.messages()
    assert message.status == "pending"
    await alice.close()

    server.before_send = None
    restarted = make_client(server, alice.home)
    await restarted.connect()  # resends the outbox in order
    assert sends_by(server, "alice")[-1].messages == entry.frame.messages
    assert restarted.store.outbox() == []
    assert restarted.messages()[0].status == "sent"
    assert texts(await collect(bob)) == ["eventually"]
    await restarted.close()


# --- device mismatch ---------------------------------------------------------------------------


async def test_a_missing_device_is_added_and_other_ciphertexts_kept(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    await alice.send_text("bob", "one device")
    linked: list[Client] = []

    def bob_links_a_device(conn: FakeConnection, frame: Send) -> bool:
        if not linked:  # between alice's device-list fetch and her SEND
            linked.append(link_device(server, bob, tmp_path / "bob2", 2))
        return False

    server.before_send = bob_links_a_device
    await alice.send_text("bob", "two devices")
    refused, accepted = sends_by(server, "alice")[1:]
    assert [m.device_id for m in refused.messages] == [1]
    assert [m.device_id for m in accepted.messages] == [1, 2]
    assert accepted.messages[0] == refused.messages[0]  # device 1's ciphertext kept
    assert alice.store.load_session("bob", 2) is not None

    assert texts(await collect(bob)) == ["one device", "two devices"]
    assert texts(await collect(linked[0])) == ["two devices"]
    await linked[0].close()


async def test_a_stale_device_gets_a_new_session(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    await alice.send_text("bob", "to the old phone")
    assert texts(await collect(bob)) == ["to the old phone"]
    old_session = alice.store.load_session("bob", 1)
    reinstalled: list[Client] = []

    def bob_reinstalls(conn: FakeConnection, frame: Send) -> bool:
        if not reinstalled:  # device 1 comes back with new keys and registration id
            reinstalled.append(link_device(server, bob, tmp_path / "bob-new", 1))
        return False

    server.before_send = bob_reinstalls
    await alice.send_text("bob", "to the new phone")
    refused, accepted = sends_by(server, "alice")[1:]
    assert refused.messages[0].registration_id != accepted.messages[0].registration_id
    assert refused.messages[0].payload != accepted.messages[0].payload
    new_session = alice.store.load_session("bob", 1)
    assert old_session is not None and new_session is not None
    assert new_session.encode() != old_session.encode()
    assert texts(await collect(reinstalled[0])) == ["to the new phone"]
    await reinstalled[0].close()


async def test_an_extra_device_is_forgotten(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    bob2 = link_device(server, bob, tmp_path / "bob2", 2)
    await alice.send_text("bob", "both")
    assert alice.store.session_device_ids("bob") == [1, 2]

    def bob_revokes_device_2(conn: FakeConnection, frame: Send) -> bool:
        if 2 in server.accounts["bob"].devices:
            server.remove_device("bob", 2)
        return False

    server.before_send = bob_revokes_device_2
    await alice.send_text("bob", "only one")
    refused, accepted = sends_by(server, "alice")[1:]
    assert [m.device_id for m in accepted.messages] == [1]
    assert accepted.messages[0] == refused.messages[0]
    assert alice.store.session_device_ids("bob") == [1]
    assert 2 not in alice.store.peer_devices("bob")
    await bob2.close()


async def test_a_device_set_that_never_settles_gives_up_after_three_rounds(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    def always_mismatch(conn: FakeConnection, frame: Send) -> bool:
        conn.push(DeviceMismatch(frame.request_id, (9,), (), ()))
        return True

    server.before_send = always_mismatch
    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "hello")
    assert info.value.code is ErrorCode.DEVICE_MISMATCH
    assert len(sends_by(server, "alice")) == 3
    assert alice.store.outbox() == []
    assert alice.messages()[0].status == "failed"


# --- our own other devices ---------------------------------------------------------------------


async def test_our_other_devices_get_a_copy(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    await alice.send_text("bob", "before the second device")
    assert [f.recipient for f in sends_by(server, "alice")] == ["bob"]

    alice2 = link_device(server, alice, tmp_path / "alice2", 2)
    await alice.send_text("bob", "after")
    assert [f.recipient for f in sends_by(server, "alice")] == ["bob", "bob", "alice"]
    [copy] = await collect(alice2)
    assert isinstance(copy, SentByMe)
    assert (copy.destination, copy.device, copy.text) == ("bob", 1, "after")
    [stored] = alice2.messages()
    assert (stored.id, stored.direction, stored.peer, stored.status) == (
        copy.message_id,
        "out",
        "bob",
        "sent",
    )
    assert (stored.sender_device, stored.sent_at_ms) == (1, copy.sent_at_ms)
    assert copy.sent_at_ms == alice.messages()[-1].sent_at_ms

    # And the other way round: device 2's sends reach bob and device 1.
    await alice2.send_text("bob", "from my laptop")
    assert texts(await collect(bob)) == ["before the second device", "after", "from my laptop"]
    events = await collect(alice)
    assert [(e.destination, e.text, e.device) for e in events if isinstance(e, SentByMe)] == [
        ("bob", "from my laptop", 2)
    ]
    assert not any(isinstance(e, MessageReceived) for e in events)
    assert [(m.direction, m.text) for m in alice.messages("bob")][-1] == ("out", "from my laptop")
    await alice2.close()


# --- identities ---------------------------------------------------------------------------------


async def test_a_changed_identity_blocks_sending_until_trusted(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    await alice.send_text("bob", "hi")
    before = await alice.safety_number("bob")
    # Bob loses his phone and signs up again under the same name.
    server.delete_account("bob")
    new_bob = await registered(server, tmp_path / "new-bob", "bob")
    sends = len(server.sends)

    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "is that you?")
    assert info.value.code is ErrorCode.UNTRUSTED_IDENTITY
    # Alice's cached device list still named the old device: the relay refused that SEND
    # (DEVICE_MISMATCH, nothing stored), she looked again and found the new key. Nothing
    # reached the new device; the message is marked failed.
    [(_, refused)] = server.sends[sends:]
    assert refused.messages[0].registration_id != server.device("bob").registration_id
    assert [m.status for m in alice.messages()] == ["sent", "failed"]
    sends = len(server.sends)
    identity = alice.identity("bob")
    assert identity is not None and identity.changed and not identity.verified
    assert identity.account_key == new_bob.account_key
    after = await alice.safety_number("bob")
    assert after.digits != before.digits
    with pytest.raises(SealpostError):  # still blocked: nothing was accepted yet
        await alice.send_text("bob", "is that you?")
    assert len(server.sends) == sends and len(alice.messages()) == 2

    alice.trust("bob")
    await alice.send_text("bob", "is that you?")
    assert texts(await collect(new_bob)) == ["is that you?"]
    await new_bob.close()


async def test_a_changed_identity_on_receive_is_accepted_and_flagged(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    await bob.send_text("alice", "old phone")
    assert texts(await collect(alice)) == ["old phone"]
    server.delete_account("bob")
    new_bob = await registered(server, tmp_path / "new-bob", "bob")
    await new_bob.send_text("alice", "new phone")

    changed, message = await collect(alice)
    assert isinstance(changed, IdentityChanged) and changed.username == "bob"
    assert changed.device == 1
    assert isinstance(message, MessageReceived) and message.text == "new phone"
    identity = alice.identity("bob")
    assert identity is not None and identity.changed
    assert identity.account_key == new_bob.account_key

    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "prove it")
    assert info.value.code is ErrorCode.UNTRUSTED_IDENTITY
    alice.trust("bob", verified=True)
    identity = alice.identity("bob")
    assert identity is not None and identity.verified and not identity.changed
    await alice.send_text("bob", "prove it")
    assert texts(await collect(new_bob)) == ["prove it"]
    await new_bob.close()


async def test_safety_numbers_match_on_both_sides(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    ours = await alice.safety_number("bob")  # looks bob up: first contact
    theirs = await bob.safety_number("alice")
    assert ours == theirs and len(ours.groups()) == 12
    identity = alice.identity("bob")
    assert identity is not None and not identity.changed
    with pytest.raises(SealpostError) as info:
        await alice.safety_number("alice")
    assert info.value.code is ErrorCode.INVALID_VALUE
    with pytest.raises(SealpostError) as info:
        alice.trust("carol")
    assert info.value.code is ErrorCode.UNKNOWN_ACCOUNT


# --- what cannot be read -----------------------------------------------------------------------


async def test_unreadable_envelopes_are_stored_reported_and_acked(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await alice.send_text("bob", "tampered")
    envelope = server.device("bob").queue[1]
    envelope.payload = envelope.payload[:-1] + bytes([envelope.payload[-1] ^ 1])
    server.enqueue("bob", 1, "alice", 1, RATCHET_MESSAGE)  # a session bob does not have
    server.enqueue("bob", 1, "alice", 1, b"\x31garbage")  # protocol version 3
    counts = bob.store.prekey_counts()

    events = await collect(bob)
    assert [type(e) for e in events] == [UndecryptableMessage] * 3
    assert [e.code for e in events if isinstance(e, UndecryptableMessage)] == [
        ErrorCode.DECRYPT_FAILED,
        ErrorCode.NO_SESSION,
        ErrorCode.UNSUPPORTED_VERSION,
    ]
    assert server.device("bob").queue == {}
    assert bob.store.prekey_counts() == counts  # a failed setup consumes nothing
    assert [m.kind for m in bob.messages()] == ["undecryptable"] * 3

    # The untampered retry that alice's next message carries still sets the session up.
    await alice.send_text("bob", "retry")
    assert texts(await collect(bob)) == ["retry"]


async def test_ephemeral_envelopes_are_not_acknowledged(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await bob.connect()
    [conn] = server.live("bob")
    conn.push(Deliver(0, "alice", 1, server.clock(), RATCHET_MESSAGE))
    [event] = await collect(bob)
    assert isinstance(event, UndecryptableMessage) and event.seq == 0
    assert not any(isinstance(frame, Ack) for frame in conn.received)


# --- prekeys -----------------------------------------------------------------------------------


async def test_a_prekeys_low_notice_uploads_a_hundred_of_each(
    server: FakeServer, bob: Client
) -> None:
    await bob.connect()
    device = server.device("bob")
    del device.one_time[3:]  # claimed by others
    del device.kem[3:]
    [conn] = server.live("bob")
    conn.push(Notice(int(NoticeKind.PREKEYS_LOW), 3))
    conn.push(Notice(int(NoticeKind.PREKEYS_LOW), 3))  # a repeat is already answered
    await collect(bob)
    assert len(device.one_time) == 103 and len(device.kem) == 103
    assert bob.store.prekey_counts()["one_time"] == 200  # the claimed ones are kept
    ids = [key.key_id for key in device.one_time]
    assert len(set(ids)) == 103  # fresh ids, never reused
    assert set(ids[3:]).isdisjoint(range(1, 101))


async def test_connect_tops_up_a_low_stock(server: FakeServer, bob: Client) -> None:
    device = server.device("bob")
    del device.one_time[5:]  # claimed by others while bob was away
    await bob.connect()
    assert len(device.one_time) == 105
    assert len(device.kem) == 100  # not low: left alone


async def test_rotation_keeps_the_old_keys_for_messages_in_flight(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await alice.send_text("bob", "made from the old bundle")
    device = server.device("bob")
    old_signed, old_last_resort = device.signed_prekey.key_id, device.last_resort.key_id
    await bob.rotate_prekeys()
    assert device.signed_prekey.key_id != old_signed
    assert device.last_resort.key_id != old_last_resort and device.last_resort.last_resort
    assert bob.store.signed_prekey(old_signed) is not None
    assert texts(await collect(bob)) == ["made from the old bundle"]
    await bob.close()

    # Eight days later the retired keys are purged (and the current ones rotated again).
    later = make_client(server, bob.home, clock=lambda: time.time() + 8 * DAY)
    await later.connect()
    assert later.store.signed_prekey(old_signed) is None
    assert later.store.kem_prekey(old_last_resort) is None
    assert later.store.prekey_counts()["signed"] == 2  # the current one and its predecessor
    await later.close()


async def test_prekey_messages_after_the_last_one_time_keys_use_the_last_resort_key(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    device = server.device("bob")
    device.one_time.clear()
    device.kem.clear()
    await alice.send_text("bob", "no one-time keys left")
    assert texts(await collect(bob)) == ["no one-time keys left"]
    assert bob.store.current_last_resort_kem_prekey() is not None


async def test_send_ok_reports_the_server_time(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    def stamp(conn: FakeConnection, frame: Send) -> bool:
        server.before_send = None
        conn.push(SendOk(frame.request_id, 1_234))
        return True

    server.before_send = stamp
    await alice.send_text("bob", "when?")
    assert alice.messages()[0].server_time_ms == 1_234
