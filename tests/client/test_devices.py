"""Several devices per account, against the in-memory server: the signed device list,
refused devices, SENT transcripts, linking (with history) and revoking."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client import core
from client.core import (
    Client,
    DeviceRefused,
    Event,
    HistoryImported,
    LinkApproved,
    LinkedDevice,
    MessageReceived,
    SentByMe,
    _Target,
)
from client.errors import LocalErrorCode, SealpostError
from protocol import primitives as p
from protocol.content import (
    Content,
    HistoryRecord,
    SentTranscript,
    encode_content,
    encode_history_records,
    split_history,
)
from protocol.devicelist import SignedDeviceList
from protocol.errors import ErrorCode
from protocol.frames import Send
from protocol.keys import AccountIdentity, DeviceKeys
from protocol.provisioning import LinkCode

from .fakes import SERVER_URL, FakeServer, link_device, make_client, registered


async def collect(client: Client, wait: float = 0.05) -> list[Event]:
    return [event async for event in client.receive(wait=wait)]


def texts(events: list[Event]) -> list[str]:
    return [event.text for event in events if isinstance(event, MessageReceived)]


def sends_by(server: FakeServer, username: str) -> list[Send]:
    return [frame for sender, frame in server.sends if sender == username]


def account_of(client: Client) -> AccountIdentity:
    return client.store.account_identity()


async def link(
    server: FakeServer,
    existing: Client,
    home: Path,
    history_bytes: int = 0,
    name: str = "laptop",
) -> tuple[Client, LinkedDevice, LinkApproved]:
    """The whole link flow: a new home shows a code, ``existing`` approves it."""
    new = make_client(server, home)
    codes: asyncio.Queue[LinkCode] = asyncio.Queue()
    linking = asyncio.create_task(
        new.link_new_device(SERVER_URL, show_code=codes.put_nowait, device_name=name, timeout=5)
    )
    code = await asyncio.wait_for(codes.get(), 5)
    approving = asyncio.create_task(
        existing.approve_link(
            code.text(), history_bytes=history_bytes, timeout=5, poll_interval=0.01
        )
    )
    try:
        linked = await linking
    except BaseException:
        approving.cancel()
        await new.close()
        raise
    return new, linked, await approving


async def send_content(sender: Client, username: str, content: Content) -> None:
    """Encrypt ``content`` to every device of ``username`` through the sender's real
    outbox, as the client does for its own content types."""
    await sender.connect()
    devices = (await sender._fetch_devices(username)).certificates
    bundles = await sender._claim_bundles(username, devices)
    encoded = encode_content(content, hide_length=True)
    now = sender._now_ms()
    with sender.store.transaction():
        messages = sender._encrypt_for(_Target(username, devices, bundles), encoded, now)
        frame = Send(0, username, tuple(messages.values()))
        entry_id = sender.store.add_outbox(None, username, encoded, frame, now)
    entry = sender.store.outbox_entry(entry_id)
    assert entry is not None
    await sender._dispatch(entry)


# --- the signed device list -------------------------------------------------------------------


async def test_sign_up_sends_a_first_device_list(server: FakeServer, alice: Client) -> None:
    served = server.accounts["alice"].device_list
    assert served is not None and served.version == 1 and served.username == "alice"
    assert [d.device_id for d in served.devices] == [1]
    assert served.admits(alice.store.device_keys().certificate)
    served.verify(alice.account_key, "alice")
    stored = alice.store.device_list("alice")
    assert stored is not None and stored.device_list == served
    assert stored.account_key == alice.account_key


async def test_a_device_the_list_does_not_name_is_never_encrypted_to(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    # Two device rows inserted behind bob's back: one with a certificate bob's account key
    # really signed (an old one, say) but his list does not name, one certified by a
    # stranger's key.
    server.add_rogue_device("bob", DeviceKeys.create(account_of(bob), 7))
    server.add_rogue_device("bob", DeviceKeys.create(AccountIdentity.generate(), 8))
    reported: list[Event] = []
    alice.on_event = reported.append

    await alice.send_text("bob", "hello")
    await alice.send_text("bob", "again")
    assert reported == [
        DeviceRefused("bob", 7, "not in bob's signed device list"),
        DeviceRefused("bob", 8, "not certified by bob's account key"),
    ]  # each once per Client object
    assert [[m.device_id for m in f.messages] for f in sends_by(server, "alice")] == [[1], [1]]
    assert texts(await collect(bob)) == ["hello", "again"]
    assert 7 not in alice.store.peer_devices("bob")

    # A relay that insists on device 7 gets a clear refusal, not a loop.
    server.relay_expects_unlisted = True
    before = len(sends_by(server, "alice"))
    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "and now?")
    assert info.value.code is ErrorCode.UNSIGNED_DEVICE
    assert "device 7" in info.value.message
    assert len(sends_by(server, "alice")) == before + 1
    assert all(m.device_id == 1 for f in sends_by(server, "alice") for m in f.messages)
    assert alice.messages("bob")[-1].status == "failed"
    assert alice.store.outbox() == []
    assert server.device("bob", 7).queue == {} and server.device("bob", 8).queue == {}


async def test_without_a_listener_a_refused_device_is_logged(
    server: FakeServer, alice: Client, bob: Client, caplog: pytest.LogCaptureFixture
) -> None:
    server.add_rogue_device("bob", DeviceKeys.create(account_of(bob), 7))
    await alice.send_text("bob", "hello")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "bob's device 7 is not in bob's signed device list; not sending to it" in warnings


async def test_an_older_list_than_one_seen_is_refused(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_list = server.accounts["bob"].device_list
    assert first_list is not None
    bob2 = link_device(server, bob, tmp_path / "bob2", 2)
    await alice.send_text("bob", "to both")
    stored = alice.store.device_list("bob")
    assert stored is not None and stored.device_list.version == 2

    # The server replays the list from before device 2 (or before a revocation). Alice
    # would reuse the list she checked for a while; here she looks again at every send.
    monkeypatch.setattr(core, "DEVICE_CACHE_SECONDS", 0.0)
    server.served_lists["bob"] = first_list.encode()
    sends = len(server.sends)
    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "replayed")
    assert info.value.code is ErrorCode.INVALID_VALUE
    assert "older" in info.value.message and "version 1" in info.value.message
    assert len(server.sends) == sends
    assert [m.text for m in alice.messages("bob")] == ["to both"]

    # A list bob's key never signed.
    forged = SignedDeviceList.sign(AccountIdentity.generate(), "bob", 9, 0, [])
    server.served_lists["bob"] = forged.encode()
    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "forged")
    assert info.value.code is ErrorCode.BAD_SIGNATURE

    # No list at all (a server that does not follow the contract).
    del server.served_lists["bob"]
    server.accounts["bob"].device_list = None
    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "no list")
    assert info.value.code is LocalErrorCode.BAD_RESPONSE
    assert len(server.sends) == sends
    await bob2.close()


async def test_receipts_go_only_to_listed_devices(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    await bob.send_text("alice", "one")
    await collect(alice)
    await collect(bob)
    # Alice somehow learnt a device of bob's his list does not name (it sent her a
    # PreKeyMessage, say): her next receipt must not go there.
    rogue = DeviceKeys.create(account_of(bob), 7)
    server.add_rogue_device("bob", rogue)
    alice.store.save_peer_device("bob", rogue.certificate)
    reported: list[Event] = []
    alice.on_event = reported.append
    await bob.send_text("alice", "two")
    await collect(alice)
    receipts = sends_by(server, "alice")
    assert [[m.device_id for m in f.messages] for f in receipts] == [[1], [1]]
    assert reported == [DeviceRefused("bob", 7, "not in bob's signed device list")]
    assert list(alice.store.peer_devices("bob")) == [1]


# --- SENT transcripts -------------------------------------------------------------------------


async def test_a_note_to_self_reaches_our_other_devices_as_sent(
    server: FakeServer, alice: Client, tmp_path: Path
) -> None:
    alice2 = link_device(server, alice, tmp_path / "alice2", 2)
    message_id = await alice.send_text("alice", "buy milk")
    assert alice.messages()[0].status == "sent"
    [frame] = sends_by(server, "alice")
    assert frame.recipient == "alice" and [m.device_id for m in frame.messages] == [2]
    [event] = await collect(alice2)
    assert isinstance(event, SentByMe)
    assert (event.destination, event.text, event.device) == ("alice", "buy milk", 1)
    [stored] = alice2.messages("alice")
    assert (stored.direction, stored.status, stored.text) == ("out", "sent", "buy milk")
    assert message_id == alice.messages()[0].id
    await alice2.close()


async def test_transcripts_and_history_from_another_account_are_ignored(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    alice.store.set_history_expected(True)
    await send_content(bob, "alice", SentTranscript("carol", "forged", 5))
    chunk = split_history([HistoryRecord("carol", True, 5, "forged")], bytes(16), 6)[0]
    await send_content(bob, "alice", chunk)
    assert await collect(alice) == []
    assert alice.messages() == []
    assert server.device("alice").queue == {}


# --- linking ----------------------------------------------------------------------------------


@pytest.mark.parametrize("keys_for_link_token", [True, False])
async def test_linking_a_device_end_to_end(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path, keys_for_link_token: bool
) -> None:
    # The new device reads its account's keys with its link token, or (a server that
    # serves keys to anyone) with no credentials.
    server.keys_for_link_token = keys_for_link_token
    server.keys_without_auth = not keys_for_link_token
    await alice.send_text("bob", "before 1")
    await collect(bob)
    await bob.send_text("alice", "before 2")
    await collect(alice)

    alice2, linked, approved = await link(server, alice, tmp_path / "alice2", history_bytes=1 << 20)
    assert linked == LinkedDevice("alice", 2, history_follows=True)
    assert approved == LinkApproved((2,), history_messages=2, history_chunks=1)
    assert (alice2.username, alice2.device_id) == ("alice", 2)
    assert alice2.account_key == alice.account_key
    served = server.accounts["alice"].device_list
    assert served is not None and served.version == 2
    assert [d.device_id for d in served.devices] == [1, 2]
    for client in (alice, alice2):
        stored = client.store.device_list("alice")
        assert stored is not None and stored.device_list == served
    assert [d.name for d in await alice.list_devices()] == ["Python client", "laptop"]

    # The history arrives as one event, and no message is reported as new.
    events = await collect(alice2)
    assert events == [HistoryImported(2)]
    assert [(m.direction, m.peer, m.text, m.status) for m in alice2.messages()] == [
        ("out", "bob", "before 1", "sent"),
        ("in", "bob", "before 2", "read"),
    ]
    assert [m.sent_at_ms for m in alice2.messages()] == [m.sent_at_ms for m in alice.messages()]
    assert not alice2.store.history_expected()

    # From now on both devices get bob's messages, and each sees what the other sends.
    await bob.send_text("alice", "after")
    assert texts(await collect(alice)) == ["after"]
    assert texts(await collect(alice2)) == ["after"]
    await alice2.send_text("bob", "from the laptop")
    assert [e.text for e in await collect(alice) if isinstance(e, SentByMe)] == ["from the laptop"]
    assert texts(await collect(bob)) == ["from the laptop"]
    later = await collect(alice2)  # bob's receipt; nothing is imported twice
    assert not any(isinstance(e, HistoryImported | MessageReceived) for e in later)
    assert len(alice2.messages()) == 4
    await alice2.close()


async def test_linking_without_history_and_the_lowest_free_id(
    server: FakeServer, alice: Client, tmp_path: Path
) -> None:
    await alice.send_text("alice", "a note")
    alice2 = link_device(server, alice, tmp_path / "alice2", 2)
    alice3 = link_device(server, alice, tmp_path / "alice3", 3)
    await alice.revoke_device(2)
    new, linked, approved = await link(server, alice, tmp_path / "new")
    assert (linked.device_id, linked.history_follows) == (2, False)
    assert approved == LinkApproved((2,), 0, 0)
    assert await collect(new) == []
    assert new.messages() == []
    served = server.accounts["alice"].device_list
    assert served is not None and [d.device_id for d in served.devices] == [1, 2, 3]
    assert served.version == 5  # sign-up, two devices, the revocation, the link
    for client in (new, alice2, alice3):
        await client.close()


async def test_history_chunks_in_any_order_with_duplicates(
    server: FakeServer, alice: Client, tmp_path: Path
) -> None:
    alice2 = link_device(server, alice, tmp_path / "alice2", 2)
    alice2.store.set_history_expected(True)
    records = [
        HistoryRecord("bob" if i % 2 else "carol", i % 3 == 0, 1_000 + i, f"{i} " + "x" * 30_000)
        for i in range(6)
    ]
    chunks = split_history(records, p.random_bytes(16), 2_000)
    assert len(chunks) == 3
    # One record is already here (it arrived live): it is not stored twice.
    alice2.store.add_outgoing_text("carol", 1, records[0].text, 1_000, status="sent")

    await send_content(alice, "alice", chunks[2])
    await send_content(alice, "alice", chunks[0])
    await send_content(alice, "alice", chunks[2])  # a duplicate, encrypted afresh
    assert await collect(alice2) == []
    assert [c.index for c in alice2.store.history_chunks(chunks[0].transfer_id)] == [0, 2]

    alice2 = await restart(server, alice2)  # partial transfers survive a restart
    await send_content(alice, "alice", chunks[1])
    await send_content(alice, "alice", chunks[0])  # after the import: ignored
    assert await collect(alice2) == [HistoryImported(5)]
    history = alice2.messages()
    assert [(m.peer, m.direction == "out", m.sent_at_ms, m.text) for m in history] == [
        (r.peer, r.outgoing, r.sent_at_ms, r.text) for r in records
    ]
    assert alice2.store.history_chunks(chunks[0].transfer_id) == []
    assert alice2.store.history_transfer_done(chunks[0].transfer_id)

    # A second transfer is not taken: the one this device was linked for is done.
    again = split_history(records[:1], p.random_bytes(16), 3_000)
    await send_content(alice, "alice", again[0])
    assert await collect(alice2) == []
    await alice2.close()


async def restart(server: FakeServer, client: Client) -> Client:
    home = client.home
    await client.close()
    return make_client(server, home)


async def test_history_is_the_newest_messages_that_fit(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    for index in range(10):
        await alice.send_text("bob", f"message {index:02d}")
    await collect(bob)
    sent_at = alice.messages()[-1].sent_at_ms
    assert sent_at is not None
    record = HistoryRecord("bob", True, sent_at, "message 09")
    record_bytes = len(encode_history_records((record,))) - 1  # less the record count
    alice2, _, approved = await link(
        server, alice, tmp_path / "alice2", history_bytes=3 * record_bytes
    )
    assert approved.history_messages == 3
    assert await collect(alice2) == [HistoryImported(3)]
    assert [m.text for m in alice2.messages()] == ["message 07", "message 08", "message 09"]
    await alice2.close()


async def test_history_resumes_after_a_dropped_connection(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    for index in range(4):
        await alice.send_text("bob", f"{index} " + "y" * 40_000)
    await collect(bob)
    dropped: list[int] = []

    def drop_second_chunk(conn: object, frame: Send) -> bool:
        if frame.recipient == "alice" and len(dropped) == 1:
            dropped.append(len(server.sends))
            server.drop_all()  # the SEND is lost with the connection
            return True
        if frame.recipient == "alice":
            dropped.append(0)
        return False

    server.before_send = drop_second_chunk
    alice2, _, approved = await link(server, alice, tmp_path / "alice2", history_bytes=1 << 20)
    assert approved.history_chunks == 4 and len(dropped) >= 2
    assert await collect(alice2) == [HistoryImported(4)]
    assert len(alice2.messages()) == 4
    assert alice.store.outbox() == []
    await alice2.close()


async def test_a_link_code_nobody_approves_expires(server: FakeServer, tmp_path: Path) -> None:
    server.max_provisioning_wait = 0.05
    new = make_client(server, tmp_path / "new")
    shown: list[LinkCode] = []
    with pytest.raises(SealpostError) as info:
        await new.link_new_device(SERVER_URL, show_code=shown.append, timeout=0.3)
    assert info.value.code is ErrorCode.LINK_EXPIRED
    assert len(shown) == 1 and not new.registered

    # The server expires the address first.
    def ten_minutes_pass(code: LinkCode) -> None:
        server.time_ms += 11 * 60 * 1000

    with pytest.raises(SealpostError) as info:
        await new.link_new_device(SERVER_URL, show_code=ten_minutes_pass, timeout=5)
    assert info.value.code is ErrorCode.LINK_EXPIRED and "expired" in info.value.message
    assert not new.registered
    await new.close()


async def test_the_seventh_device_is_refused(
    server: FakeServer, alice: Client, tmp_path: Path
) -> None:
    others = [link_device(server, alice, tmp_path / f"alice{i}", i) for i in range(2, 7)]
    new = make_client(server, tmp_path / "seventh")
    codes: asyncio.Queue[LinkCode] = asyncio.Queue()
    linking = asyncio.create_task(new.link_new_device(SERVER_URL, show_code=codes.put_nowait))
    code = await codes.get()
    approving = asyncio.create_task(alice.approve_link(code, timeout=0.3, poll_interval=0.01))
    with pytest.raises(SealpostError) as info:
        await linking
    assert info.value.code is ErrorCode.DEVICE_LIMIT_REACHED
    assert not new.registered
    with pytest.raises(SealpostError) as info:
        await approving
    assert info.value.code is ErrorCode.LINK_EXPIRED  # no device joined
    for client in (*others, new):
        await client.close()


async def test_a_server_that_hides_the_keys_from_a_linking_device(
    server: FakeServer, alice: Client, tmp_path: Path
) -> None:
    server.keys_for_link_token = False
    with pytest.raises(SealpostError) as info:
        await link(server, alice, tmp_path / "new")
    assert info.value.code is ErrorCode.UNAUTHORIZED
    assert "link token" in info.value.message
    assert list(server.accounts["alice"].devices) == [1]


async def test_a_home_with_an_account_cannot_link(server: FakeServer, alice: Client) -> None:
    with pytest.raises(SealpostError) as info:
        await alice.link_new_device(SERVER_URL, show_code=lambda code: None)
    assert info.value.code is LocalErrorCode.ALREADY_REGISTERED


async def test_approve_link_refuses_bad_input(alice: Client) -> None:
    with pytest.raises(SealpostError) as info:
        await alice.approve_link("sealpost-link:nonsense!")
    assert info.value.code is ErrorCode.MALFORMED
    with pytest.raises(SealpostError) as info:
        await alice.approve_link("x", history_bytes=-1)
    assert info.value.code is ErrorCode.INVALID_VALUE


# --- managing devices -------------------------------------------------------------------------


async def test_revoking_a_device(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    alice2, _, _ = await link(server, alice, tmp_path / "alice2")
    await alice.send_text("bob", "to both of mine")
    assert [e.text for e in await collect(alice2) if isinstance(e, SentByMe)] == ["to both of mine"]

    assert await alice.revoke_device(2) is False
    served = server.accounts["alice"].device_list
    assert served is not None and served.version == 3
    assert [d.device_id for d in served.devices] == [1]
    assert 2 not in server.accounts["alice"].devices
    stored = alice.store.device_list("alice")
    assert stored is not None and stored.device_list == served
    assert alice.store.session_device_ids("alice") == []

    # Nothing more is encrypted to it; its token is refused.
    sends = len(server.sends)
    await alice.send_text("bob", "after the revocation")
    assert [f.recipient for _, f in server.sends[sends:]] == ["bob"]
    await bob.send_text("alice", "hi alice")
    assert [[m.device_id for m in f.messages] for f in sends_by(server, "bob")][-1] == [1]
    with pytest.raises(SealpostError) as info:
        await collect(alice2)
    assert info.value.code is ErrorCode.UNAUTHORIZED, info.value
    with pytest.raises(SealpostError) as info:
        await alice.revoke_device(2)
    assert info.value.code is ErrorCode.UNKNOWN_DEVICE
    await alice2.close()


async def test_revoking_this_device_and_renaming(
    server: FakeServer, alice: Client, tmp_path: Path
) -> None:
    alice2 = link_device(server, alice, tmp_path / "alice2", 2)
    renamed = await alice2.rename_device(1, "phone")
    assert (renamed.device_id, renamed.name, renamed.current) == (1, "phone", False)
    listing = await alice2.list_devices()
    assert [(d.device_id, d.name, d.current) for d in listing] == [
        (1, "phone", False),
        (2, "Python client", True),
    ]
    assert await alice2.revoke_device(2) is True
    assert list(server.accounts["alice"].devices) == [1]
    with pytest.raises(SealpostError) as info:
        await alice2.list_devices()
    assert info.value.code is ErrorCode.UNAUTHORIZED
    await alice2.close()


async def test_a_rogue_device_can_be_revoked_too(
    server: FakeServer, alice: Client, bob: Client
) -> None:
    server.add_rogue_device("alice", DeviceKeys.create(AccountIdentity.generate(), 5))
    alice.on_event = lambda event: None
    assert await alice.revoke_device(5) is False
    assert list(server.accounts["alice"].devices) == [1]
    served = server.accounts["alice"].device_list
    assert served is not None and served.version == 2


async def test_a_fresh_account_key_starts_the_version_count_again(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    link_device(server, bob, tmp_path / "bob2", 2)  # bob's list is at version 2
    await alice.send_text("bob", "hi")
    server.delete_account("bob")
    await registered(server, tmp_path / "new-bob", "bob")  # version 1, another key
    alice.trust("bob")  # not needed yet: the change is only seen on the next fetch
    with pytest.raises(SealpostError) as info:
        await alice.send_text("bob", "who are you?")
    assert info.value.code is ErrorCode.UNTRUSTED_IDENTITY
    alice.trust("bob")
    await alice.send_text("bob", "hello again")
    stored = alice.store.device_list("bob")
    assert stored is not None and stored.device_list.version == 1


async def test_history_for_one_device_on_an_exact_relay_reaches_only_it_usefully(
    server: FakeServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    """The relay wants every other device of ours in a SEND to our own account: the chunks
    then reach the older devices too, which were not linked with history and drop them."""
    await alice.send_text("bob", "old news")
    alice2 = link_device(server, alice, tmp_path / "alice2", 2)
    assert await collect(alice2) == []  # it came after "old news"
    alice3, _, approved = await link(server, alice, tmp_path / "alice3", history_bytes=4096)
    assert approved == LinkApproved((3,), 1, 1)
    history_sends = [f for f in sends_by(server, "alice") if f.recipient == "alice"]
    assert [[m.device_id for m in f.messages] for f in history_sends] == [[3], [2, 3]]
    assert await collect(alice3) == [HistoryImported(1)]
    assert await collect(alice2) == []
    assert alice2.messages() == []
    await alice2.close()
    await alice3.close()
