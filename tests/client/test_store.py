"""The local SQLite store: file mode, schema version, round trips and transactions."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from client import store as store_module
from client.errors import LocalErrorCode, SealpostError
from client.store import (
    RECEIPT_DELIVERED,
    RECEIPT_READ,
    RETIRED_PREKEY_TTL_MS,
    SCHEMA_VERSION,
    STATUS_FAILED,
    STATUS_SENT,
    Config,
    IdentityCheck,
    StatusChange,
    Store,
    store_path,
)
from protocol.errors import ErrorCode
from protocol.frames import DeviceMessage, Send
from protocol.keys import (
    MAX_KEY_ID,
    AccountIdentity,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    SignedPreKeyPair,
)
from protocol.session import PreKeyStore, SessionRecord

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "home")


def register(store: Store, username: str = "alice") -> DeviceKeys:
    account = AccountIdentity.generate()
    device = DeviceKeys.create(account, 1)
    signed = SignedPreKeyPair.generate(device, 1)
    last_resort = KemPreKeyPair.generate(device, 1, last_resort=True)
    one_time = [OneTimePreKeyPair.generate(i) for i in (1, 2, 3)]
    kem = [KemPreKeyPair.generate(device, i, last_resort=False) for i in (2, 3)]
    store.save_registration(
        Config("https://chat.example", username, 1, "token"),
        account,
        device,
        signed,
        last_resort,
        one_time,
        kem,
        now_ms=1000,
    )
    return device


def a_session(peer_store: Store) -> SessionRecord:
    """A real initiator session with the device registered in ``peer_store``."""
    peer = peer_store.device_keys()
    signed = SignedPreKeyPair.generate(peer, 50)
    kem = KemPreKeyPair.generate(peer, 50, last_resort=True)
    bundle = PreKeyBundle(peer.account_key, peer.certificate, signed.public, None, kem.public)
    own_account = AccountIdentity.generate()
    return SessionRecord.initiate(DeviceKeys.create(own_account, 1), bundle)


def test_file_is_private_wal_and_versioned(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store.open(home)
    path = store_path(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert store.schema_version == SCHEMA_VERSION
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_loose_file_mode_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "home" / "sealpost.sqlite3"
    path.parent.mkdir()
    path.touch()
    os.chmod(path, 0o644)
    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reopening_keeps_everything_and_migrates_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    device = register(store)
    store.close()
    again = Store.open(tmp_path)
    assert again.schema_version == SCHEMA_VERSION
    assert again.device_keys() == device


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SealpostError) as info:
        Store(path)
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


def test_an_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SealpostError) as info:
        Store.open(tmp_path / "file")
    assert info.value.code is LocalErrorCode.STORAGE


def test_registration_round_trip(store: Store) -> None:
    assert store.config() is None
    device = register(store)
    assert store.config() == Config("https://chat.example", "alice", 1, "token")
    assert store.device_keys() == device
    assert store.account_identity().public_key == device.account_key
    own = store.identity("alice")
    assert own is not None and own.verified and own.account_key == device.account_key
    with pytest.raises(SealpostError) as info:
        register(store)
    assert info.value.code is LocalErrorCode.ALREADY_REGISTERED


def test_an_empty_store_has_no_keys(store: Store) -> None:
    with pytest.raises(SealpostError) as info:
        store.device_keys()
    assert info.value.code is LocalErrorCode.NOT_REGISTERED


def test_prekey_lookups_implement_the_protocol(store: Store) -> None:
    register(store)
    prekeys: PreKeyStore = store
    assert prekeys.signed_prekey(1) is not None
    assert prekeys.signed_prekey(2) is None
    assert prekeys.one_time_prekey(3) is not None
    kem = prekeys.kem_prekey(1)
    assert kem is not None and kem[1] is True  # the last-resort key
    kem = prekeys.kem_prekey(2)
    assert kem is not None and kem[1] is False
    store.delete_one_time_prekeys([3])
    store.delete_kem_prekeys([1, 2])  # a last-resort key is never deleted this way
    assert prekeys.one_time_prekey(3) is None
    assert prekeys.kem_prekey(2) is None
    assert prekeys.kem_prekey(1) is not None


def test_retired_prekeys_are_kept_for_seven_days(store: Store) -> None:
    device = register(store)  # signed prekey 1 and last-resort KEM 1, created at 1000
    now = 10 * DAY_MS
    store.add_signed_prekey(SignedPreKeyPair.generate(device, 2), now)
    store.add_kem_prekeys([KemPreKeyPair.generate(device, 9, last_resort=True)], now)
    store.retire_signed_prekeys(keep_key_id=2, now_ms=now)
    store.retire_last_resort_kem_prekeys(keep_key_id=9, now_ms=now)
    current = store.current_signed_prekey()
    assert current is not None and current.key_id == 2
    last_resort = store.current_last_resort_kem_prekey()
    assert last_resort is not None and last_resort.key_id == 9

    assert store.purge_retired_prekeys(now + RETIRED_PREKEY_TTL_MS - 1) == 0
    assert store.signed_prekey(1) is not None and store.kem_prekey(1) is not None
    assert store.purge_retired_prekeys(now + RETIRED_PREKEY_TTL_MS + 1) == 2
    assert store.signed_prekey(1) is None and store.kem_prekey(1) is None
    assert store.signed_prekey(2) is not None and store.kem_prekey(9) is not None


def test_key_ids_count_up_and_wrap(store: Store) -> None:
    assert store.next_key_ids("one_time", 3) == [1, 2, 3]
    assert store.next_key_ids("one_time", 2) == [4, 5]
    assert store.next_key_ids("kem", 1) == [1]  # kinds count separately
    store._set("next_signed_prekey_id", str(MAX_KEY_ID - 1))
    assert store.next_key_ids("signed", 3) == [MAX_KEY_ID - 1, MAX_KEY_ID, 1]
    assert store.next_key_ids("signed", 1) == [2]


def test_session_round_trip(tmp_path: Path, store: Store) -> None:
    peer_store = Store.open(tmp_path / "peer")
    register(peer_store, "bob")
    record = a_session(peer_store)
    store.save_session("bob", 1, record, now_ms=5)
    loaded = store.load_session("bob", 1)
    assert loaded is not None and loaded.encode() == record.encode()
    assert store.session_device_ids("bob") == [1]
    store.delete_session("bob", 1)
    assert store.load_session("bob", 1) is None


def test_a_failed_transaction_writes_nothing(tmp_path: Path, store: Store) -> None:
    """The receive path's unit of work: session + message + consumed prekeys."""
    register(store)
    peer_store = Store.open(tmp_path / "peer")
    register(peer_store, "bob")
    record = a_session(peer_store)
    with pytest.raises(RuntimeError), store.transaction():
        store.save_session("bob", 1, record, now_ms=5)
        store.add_incoming_text("bob", 1, "hi", 1, 2, 3, seq=7)
        store.delete_one_time_prekeys([1])
        raise RuntimeError("crash before commit")
    assert store.load_session("bob", 1) is None
    assert store.messages() == []
    assert store.one_time_prekey(1) is not None
    # Nested blocks join the outer transaction: an inner failure undoes the outer writes.
    with pytest.raises(RuntimeError), store.transaction():
        store.save_session("bob", 1, record, now_ms=5)
        with store.transaction():
            store.add_incoming_text("bob", 1, "hi", 1, 2, 3, seq=7)
            raise RuntimeError("inner")
    assert store.load_session("bob", 1) is None and store.messages() == []
    # And the store is still usable afterwards.
    store.save_session("bob", 1, record, now_ms=5)
    assert store.load_session("bob", 1) is not None


def test_identity_trust_on_first_use_then_change(store: Store) -> None:
    first, second = b"\x01" * 32, b"\x02" * 32
    assert store.observe_identity("bob", first, 10) is IdentityCheck.NEW
    assert store.observe_identity("bob", first, 11) is IdentityCheck.SAME
    assert store.trust_identity("bob", verified=True)
    identity = store.identity("bob")
    assert identity is not None and identity.verified and not identity.changed

    assert store.observe_identity("bob", second, 12) is IdentityCheck.CHANGED
    identity = store.identity("bob")
    assert identity is not None
    assert identity.account_key == second and identity.changed and not identity.verified
    assert store.observe_identity("bob", second, 13) is IdentityCheck.SAME
    assert store.trust_identity("bob")
    identity = store.identity("bob")
    assert identity is not None and not identity.changed and not identity.verified
    assert not store.trust_identity("carol")


def test_messages_history_and_undecryptable_dedup(store: Store) -> None:
    out_id = store.add_outgoing_text("bob", 1, "hello", sent_at_ms=100)
    store.set_message_status(out_id, STATUS_SENT, server_time_ms=101)
    in_id = store.add_incoming_text("bob", 2, "hi", 200, 201, 202, seq=1)
    bad = store.add_undecryptable("bob", 2, ErrorCode.DECRYPT_FAILED, 301, 302, seq=2)
    assert bad is not None
    # The same envelope delivered again is not listed twice.
    assert store.add_undecryptable("bob", 2, ErrorCode.DECRYPT_FAILED, 301, 303, seq=2) is None
    history = store.messages("bob")
    assert [m.id for m in history] == [out_id, in_id, bad]
    assert history[0].direction == "out" and history[0].status == "sent"
    assert history[0].server_time_ms == 101
    assert history[1].text == "hi" and history[1].seq == 1 and history[1].sender_device == 2
    assert history[2].kind == "undecryptable" and history[2].error_code is ErrorCode.DECRYPT_FAILED
    assert [m.id for m in store.messages(limit=2)] == [in_id, bad]
    assert store.messages("carol") == []


def test_outbox_keeps_exact_ciphertexts_in_order(store: Store) -> None:
    message_id = store.add_outgoing_text("bob", 1, "hello", sent_at_ms=100)
    payloads = {device_id: os.urandom(100 + device_id) for device_id in (3, 1, 2)}
    frame = Send(0, "bob", tuple(DeviceMessage(d, 1000 + d, p) for d, p in payloads.items()))
    first = store.add_outbox(message_id, "bob", b"content", frame, now_ms=5)
    second = store.add_outbox(
        message_id, "alice", b"content", Send(0, "alice", frame.messages[:1]), 6
    )
    entries = store.outbox()
    assert [e.id for e in entries] == [first, second]
    stored = entries[0]
    assert stored.recipient == "bob" and stored.content == b"content"
    assert {m.device_id: m.payload for m in stored.frame.messages} == payloads
    assert {m.device_id: m.registration_id for m in stored.frame.messages} == {
        1: 1001,
        2: 1002,
        3: 1003,
    }

    replacement = Send(0, "bob", (DeviceMessage(1, 1001, payloads[1]), DeviceMessage(4, 7, b"x")))
    store.replace_outbox_frame(first, replacement)
    entry = store.outbox_entry(first)
    assert entry is not None and entry.frame.messages == replacement.messages

    store.delete_outbox(first)
    assert [e.id for e in store.outbox()] == [second]
    assert store.outbox_entry(first) is None


# --- receipts -----------------------------------------------------------------------------


def test_version_1_files_migrate_with_their_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:  # a file written by the first release
        patch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
        patch.setattr(store_module, "SCHEMA_VERSION", 1)
        old = Store.open(tmp_path)
        assert old.schema_version == 1
        message_id = old.add_outgoing_text("bob", 1, "queued before the upgrade", 100)
        frame = Send(0, "bob", (DeviceMessage(1, 7, b"ciphertext"),))
        kept = old.add_outbox(message_id, "bob", b"content", frame, 5)
        gone = old.add_outbox(message_id, "bob", b"content", frame, 6)
        old.delete_outbox(gone)
        old.close()

    store = Store.open(tmp_path)
    assert store.schema_version == SCHEMA_VERSION == len(store_module.MIGRATIONS)
    [entry] = store.outbox()
    assert (entry.id, entry.message_id, entry.frame.messages) == (kept, message_id, frame.messages)
    receipt = store.add_outbox(None, "alice", b"receipt", frame, 7)
    assert receipt > gone  # ids are never reused
    assert store.outbox_entry(receipt) is not None
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    store.delete_outbox(kept)  # the payloads still cascade
    count = store._db.execute("SELECT count(*) FROM outbox_payloads").fetchone()[0]
    assert count == 1
    store.close()


def test_sent_at_is_unique_increasing_and_remembered(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    assert [store.next_sent_at(1000) for _ in range(3)] == [1000, 1001, 1002]
    assert store.next_sent_at(500) == 1003  # the clock went back
    assert store.next_sent_at(5000) == 5000
    store.close()
    assert Store.open(tmp_path).next_sent_at(10) == 5001


def test_statuses_only_move_forward(store: Store) -> None:
    message_id = store.add_outgoing_text("bob", 1, "hi", sent_at_ms=100)
    other = store.add_outgoing_text("carol", 1, "hi", sent_at_ms=100)
    incoming = store.add_incoming_text("bob", 1, "hi", 100, 0, 0, seq=1)
    # The receipt overtook the SEND_OK (lost with its connection, then resent).
    assert store.apply_receipt("bob", "delivered", [100, 100, 999]) == [
        StatusChange(message_id, "delivered")
    ]
    store.set_message_status(message_id, STATUS_SENT, server_time_ms=42)
    message = store.message(message_id)
    assert message is not None and (message.status, message.server_time_ms) == ("delivered", 42)
    assert store.apply_receipt("bob", "read", [100]) == [StatusChange(message_id, "read")]
    assert store.apply_receipt("bob", "delivered", [100]) == []
    assert store.apply_receipt("bob", "read", [100]) == []
    statuses = {m.id: m.status for m in store.messages()}
    assert statuses == {message_id: "read", other: "pending", incoming: "received"}

    failed = store.add_outgoing_text("bob", 1, "refused on the retry", sent_at_ms=200)
    store.set_message_status(failed, STATUS_FAILED)
    assert store.apply_receipt("bob", "delivered", [200]) == [StatusChange(failed, "delivered")]


def test_mark_read_and_the_receipts_owed(store: Store) -> None:
    text = store.add_incoming_text("bob", 1, "hi", 100, 0, 0, seq=1)
    bad = store.add_undecryptable("bob", 1, ErrorCode.DECRYPT_FAILED, 0, 0, seq=2)
    store.add_pending_receipts("bob", RECEIPT_DELIVERED, [100, 100], 0)
    assert [(r.peer, r.kind, r.message_sent_at_ms) for r in store.pending_receipts()] == [
        ("bob", RECEIPT_DELIVERED, 100)
    ]
    assert store.mark_read("bob") == [(text, 100), (bad, None)]
    assert store.mark_read("bob") == []
    assert {m.status for m in store.messages()} == {"read"}
    store.add_pending_receipts("bob", RECEIPT_READ, [100], 0)  # replaces the delivered one
    [owed] = store.pending_receipts()
    assert owed.kind == RECEIPT_READ
    assert store.pending_receipt_counts() == {"bob": 1}
    assert store.take_pending_receipts([owed.id, owed.id + 1]) == [owed]
    assert store.take_pending_receipts([owed.id]) == []

    assert store.receipts_enabled()
    store.add_pending_receipts("carol", RECEIPT_DELIVERED, [1], 0)
    store.set_receipts_enabled(False)
    assert not store.receipts_enabled() and store.pending_receipts() == []
    store.set_receipts_enabled(True)
    assert store.receipts_enabled()
