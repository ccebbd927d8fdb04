"""Sessions end to end: PQXDH setup, the Double Ratchet, and the rules of SessionRecord.

Every failure is checked for its exact ``ErrorCode`` and for leaving the record exactly as
it was (``record.encode()`` before and after); every tampered or replayed message is
followed by the genuine one still decrypting.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from functools import cache, partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import primitives as p
from protocol.encoding import encode_varint
from protocol.errors import ErrorCode, ProtocolError
from protocol.keys import (
    LABEL_DEVICE_CERTIFICATE,
    AccountIdentity,
    DeviceCertificate,
    KemPreKeyPair,
    PreKeyBundle,
    SignedPreKeyPair,
    signed_payload,
)
from protocol.limits import MAX_ARCHIVED_STATES, MAX_JUMP, MAX_SKIPPED_KEYS
from protocol.messages import MessageKind, PreKeyMessage, RatchetMessage, peek_kind
from protocol.ratchet import PREVIOUS_CHAINS_KEPT, RatchetState, kdf_ck
from protocol.session import Decrypted, SessionRecord

from .helpers import (
    CRYPTO_SETTINGS,
    MemoryPreKeyStore,
    Party,
    copy_record,
    plaintext,
    raises_code,
    seeded_rng,
    start_conversation,
)

# Errors a decoder can raise when a length or varint field is corrupted.
FORMAT_CODES = frozenset(
    {
        ErrorCode.TRUNCATED,
        ErrorCode.TRAILING_BYTES,
        ErrorCode.NON_MINIMAL_VARINT,
        ErrorCode.VARINT_OVERFLOW,
        ErrorCode.TOO_LARGE,
        ErrorCode.INVALID_VALUE,
        ErrorCode.UNKNOWN_TYPE,
        ErrorCode.UNSUPPORTED_VERSION,
    }
)
# Anything a corrupted *varint* can lead to: it shifts every field after it.
ANY_DECRYPT_ERROR = FORMAT_CODES | {
    ErrorCode.BAD_KEY,
    ErrorCode.BAD_SIGNATURE,
    ErrorCode.DECRYPT_FAILED,
    ErrorCode.DUPLICATE_MESSAGE,
    ErrorCode.TOO_MANY_SKIPPED,
    ErrorCode.PREKEY_NOT_FOUND,
    ErrorCode.UNTRUSTED_IDENTITY,
}
TYPE_BYTE_CODES = frozenset({ErrorCode.UNSUPPORTED_VERSION, ErrorCode.UNKNOWN_TYPE})


def assert_rejected(
    record: SessionRecord, call: Callable[[], object], *codes: ErrorCode
) -> ProtocolError:
    """``call`` must raise one of ``codes`` and leave ``record`` byte-for-byte unchanged."""
    before = record.encode()
    with raises_code(*codes) as caught:
        call()
    assert record.encode() == before, "a failed decryption changed the session record"
    return caught[0]


def store_snapshot(store: MemoryPreKeyStore) -> tuple[dict[int, bytes], ...]:
    return (dict(store.signed), dict(store.one_time), {k: v[0] for k, v in store.kem.items()})


# --- the basic exchange ----------------------------------------------------------------------


@pytest.mark.parametrize("one_time", [True, False], ids=["opk", "no-opk"])
@pytest.mark.parametrize("kem_one_time", [True, False], ids=["one-time-kem", "last-resort-kem"])
def test_basic_conversation(one_time: bool, kem_one_time: bool) -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    bundle = bob.bundle(one_time=one_time, kem_one_time=kem_one_time)
    assert (bundle.one_time_prekey is not None) is one_time
    assert bundle.kem_prekey.last_resort is not kem_one_time

    alice_record = alice.initiate(bundle)
    first = [alice_record.encrypt(plaintext("alice", i)) for i in range(3)]
    assert all(peek_kind(data) is MessageKind.PREKEY for data in first)
    parsed = PreKeyMessage.decode(first[0])
    assert parsed.sender_account_key == alice.account_key
    assert parsed.sender_certificate == alice.device.certificate
    assert parsed.one_time_prekey_id == (
        bundle.one_time_prekey.key_id if bundle.one_time_prekey else None
    )
    assert parsed.kem_prekey_id == bundle.kem_prekey.key_id
    assert parsed.signed_prekey_id == bundle.signed_prekey.key_id
    # Every message before a reply carries the same setup.
    assert {PreKeyMessage.decode(d).base_key for d in first} == {parsed.base_key}

    bob_record = SessionRecord()
    with raises_code(ErrorCode.NO_SESSION):
        bob_record.encrypt(b"too early")

    result = bob.decrypt(bob_record, first[1])  # the first one to arrive need not be the first
    assert result.plaintext == plaintext("alice", 1)
    assert result.sender_account_key == alice.account_key
    assert result.sender_certificate == alice.device.certificate
    if one_time:
        assert bundle.one_time_prekey is not None
        assert result.consumed_one_time_prekey_id == bundle.one_time_prekey.key_id
        assert bundle.one_time_prekey.key_id not in bob.store.one_time
    else:
        assert result.consumed_one_time_prekey_id is None
    if kem_one_time:
        assert result.consumed_kem_prekey_id == bundle.kem_prekey.key_id
        assert bundle.kem_prekey.key_id not in bob.store.kem
    else:
        assert result.consumed_kem_prekey_id is None
        assert bob.store.kem_prekey(bundle.kem_prekey.key_id) is not None  # last resort stays

    # Repeats of the setup are plain ratchet messages for Bob: nothing more is consumed.
    for index in (2, 0):
        repeat = bob.decrypt(bob_record, first[index])
        assert repeat == Decrypted(plaintext("alice", index))
    assert len(bob_record.states) == 1

    reply = bob_record.encrypt(b"hi alice")
    assert peek_kind(reply) is MessageKind.RATCHET
    # Alice has not heard back yet: she still sends prekey messages.
    late = alice_record.encrypt(b"still prekey")
    assert peek_kind(late) is MessageKind.PREKEY
    assert alice.decrypt(alice_record, reply) == Decrypted(b"hi alice")
    assert alice_record.current is not None and alice_record.current.pending_prekey is None
    for i in range(3):
        data = alice_record.encrypt(plaintext("alice-ratchet", i))
        assert peek_kind(data) is MessageKind.RATCHET
        assert bob.decrypt(bob_record, data).plaintext == plaintext("alice-ratchet", i)
    assert bob.decrypt(bob_record, late).plaintext == b"still prekey"
    back = bob_record.encrypt(b"and back")
    assert alice.decrypt(alice_record, back).plaintext == b"and back"


def test_session_records_the_right_identities() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    assert alice_record.current is not None and bob_record.current is not None
    assert alice_record.current.remote_identity_key == bob.device.identity_key
    assert bob_record.current.remote_identity_key == alice.device.identity_key
    assert alice_record.current.base_key == bob_record.current.base_key
    assert alice_record.current.associated_data == bob_record.current.associated_data
    assert alice.device.account_key == alice.account_key
    # AD binds both account keys and both device identity keys, initiator first.
    assert alice_record.current.associated_data == (
        alice.account_key + alice.device.identity_key + bob.account_key + bob.device.identity_key
    )


def test_empty_record_cannot_send_or_receive() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, _ = start_conversation(alice, bob)
    data = alice_record.encrypt(b"x")
    with raises_code(ErrorCode.NO_SESSION):
        SessionRecord().encrypt(b"x")
    empty = SessionRecord()
    assert_rejected(empty, lambda: bob.decrypt(empty, data), ErrorCode.NO_SESSION)


# --- bundle verification --------------------------------------------------------------------


def flip(data: bytes, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def bad_bundles() -> dict[str, Callable[[Party, Party], PreKeyBundle]]:
    def wrong_cert_signature(bob: Party, mallory: Party) -> PreKeyBundle:
        b = bob.bundle()
        cert = dataclasses.replace(b.certificate, signature=flip(b.certificate.signature, 9))
        return dataclasses.replace(b, certificate=cert)

    def cert_of_another_account(bob: Party, mallory: Party) -> PreKeyBundle:
        # Bob's device and prekeys, presented under Mallory's account key.
        return dataclasses.replace(bob.bundle(), account_identity_key=mallory.account_key)

    def cert_signed_by_another_account(bob: Party, mallory: Party) -> PreKeyBundle:
        # Bob's very certificate body, but signed by Mallory's account key.
        cert = bob.device.certificate
        signature = mallory.account.sign(signed_payload(LABEL_DEVICE_CERTIFICATE, cert.body()))
        return dataclasses.replace(
            bob.bundle(), certificate=dataclasses.replace(cert, signature=signature)
        )

    def device_of_another_account(bob: Party, mallory: Party) -> PreKeyBundle:
        # Mallory's genuine device and prekeys, claimed for Bob's account key.
        return dataclasses.replace(mallory.bundle(), account_identity_key=bob.account_key)

    def cert_field_changed(bob: Party, mallory: Party) -> PreKeyBundle:
        b = bob.bundle()
        cert = dataclasses.replace(b.certificate, device_id=b.certificate.device_id + 1)
        return dataclasses.replace(b, certificate=cert)

    def wrong_signed_prekey_signature(bob: Party, mallory: Party) -> PreKeyBundle:
        b = bob.bundle()
        spk = dataclasses.replace(b.signed_prekey, signature=flip(b.signed_prekey.signature))
        return dataclasses.replace(b, signed_prekey=spk)

    def signed_prekey_by_another_device(bob: Party, mallory: Party) -> PreKeyBundle:
        other = SignedPreKeyPair.generate(mallory.device, 1, seeded_rng("spk"))
        return dataclasses.replace(bob.bundle(), signed_prekey=other.public)

    def signed_prekey_swapped_key(bob: Party, mallory: Party) -> PreKeyBundle:
        b = bob.bundle()
        spk = dataclasses.replace(b.signed_prekey, public_key=mallory.signed.public.public_key)
        return dataclasses.replace(b, signed_prekey=spk)

    def wrong_kem_signature(bob: Party, mallory: Party) -> PreKeyBundle:
        b = bob.bundle()
        kem = dataclasses.replace(b.kem_prekey, signature=flip(b.kem_prekey.signature, 100))
        return dataclasses.replace(b, kem_prekey=kem)

    def kem_prekey_by_another_device(bob: Party, mallory: Party) -> PreKeyBundle:
        other = KemPreKeyPair.generate(mallory.device, 7, False, seeded_rng("kem"))
        return dataclasses.replace(bob.bundle(), kem_prekey=other.public)

    def kem_last_resort_flag_flipped(bob: Party, mallory: Party) -> PreKeyBundle:
        b = bob.bundle()
        kem = dataclasses.replace(b.kem_prekey, last_resort=not b.kem_prekey.last_resort)
        return dataclasses.replace(b, kem_prekey=kem)

    def signed_prekey_signature_reused_for_kem(bob: Party, mallory: Party) -> PreKeyBundle:
        b = bob.bundle()
        kem = dataclasses.replace(b.kem_prekey, signature=b.signed_prekey.signature)
        return dataclasses.replace(b, kem_prekey=kem)

    return {
        f.__name__: f
        for f in (
            wrong_cert_signature,
            cert_of_another_account,
            cert_signed_by_another_account,
            device_of_another_account,
            cert_field_changed,
            wrong_signed_prekey_signature,
            signed_prekey_by_another_device,
            signed_prekey_swapped_key,
            wrong_kem_signature,
            kem_prekey_by_another_device,
            kem_last_resort_flag_flipped,
            signed_prekey_signature_reused_for_kem,
        )
    }


@pytest.mark.parametrize("case", sorted(bad_bundles()))
def test_bad_bundle_rejected_before_any_state(case: str) -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    mallory = Party.create("mallory")
    bundle = bad_bundles()[case](bob, mallory)
    with raises_code(ErrorCode.INVALID_BUNDLE):
        bundle.verify()
    # Nothing is drawn from the rng or encapsulated before the bundle verifies.
    rng_calls: list[int] = []
    encapsulations: list[bytes] = []

    def rng(n: int) -> bytes:
        rng_calls.append(n)
        return bytes(n)

    def encapsulate(key: bytes) -> tuple[bytes, bytes]:
        encapsulations.append(key)
        return p.mlkem768_encapsulate(key)

    existing, _ = start_conversation(alice, Party.create("bob", seed="bob-2"))
    before = existing.encode()
    with raises_code(ErrorCode.INVALID_BUNDLE):
        SessionRecord.initiate(
            alice.device,
            bundle,
            existing=existing,
            rng=rng,
            encapsulate=encapsulate,
        )
    assert rng_calls == [] and encapsulations == []
    assert existing.encode() == before
    # The bundle survives a round trip unchanged, so the server cannot "fix" it either.
    with raises_code(ErrorCode.INVALID_BUNDLE):
        PreKeyBundle.decode(bundle.encode()).verify()


def test_good_bundle_verifies() -> None:
    bob = Party.create("bob")
    for one_time in (True, False):
        for kem_one_time in (True, False):
            bundle = bob.bundle(one_time=one_time, kem_one_time=kem_one_time)
            bundle.verify()
            PreKeyBundle.decode(bundle.encode()).verify()


# --- tampering ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """A message for Bob, and Bob's state just before it arrives (as bytes, so that every
    attempt starts from the same state)."""

    name: str
    data: bytes
    expected: bytes
    record: bytes
    bob: Party
    trusted: bytes | None
    # (start, end, allowed codes) for each region of the message; the end of the message
    # is the AEAD ciphertext and tag.
    regions: tuple[tuple[str, int, int, frozenset[ErrorCode]], ...]
    repeat: bool = False  # a repeated PreKeyMessage: Bob already has its session

    def fresh(self) -> tuple[SessionRecord, MemoryPreKeyStore]:
        signed, one_time, _ = store_snapshot(self.bob.store)
        store = MemoryPreKeyStore(signed, one_time, dict(self.bob.store.kem))
        return SessionRecord.decode(self.record), store

    def decrypt(self, record: SessionRecord, store: MemoryPreKeyStore, data: bytes) -> Decrypted:
        return record.decrypt(
            data, self.bob.device, store, trusted_account_key=self.trusted, rng=seeded_rng(5)
        )

    def region_of(self, bit: int) -> tuple[str, frozenset[ErrorCode]]:
        for name, start, end, codes in self.regions:
            if start <= bit // 8 < end:
                if name in X25519_KEY_REGIONS and bit == (start + 31) * 8 + 7:
                    # The top bit of an X25519 key: refused by the decoder, whatever else.
                    return f"{name} (top bit)", frozenset({ErrorCode.BAD_KEY})
                return name, codes
        raise AssertionError(bit)


# Message fields holding an X25519 public key: their top bit must be clear (BAD_KEY).
X25519_KEY_REGIONS = frozenset({"ratchet key", "certificate identity key", "base key"})


def ratchet_regions(
    message: RatchetMessage, offset: int, total: int
) -> list[tuple[str, int, int, frozenset[ErrorCode]]]:
    pn = len(encode_varint(message.previous_chain_length))
    counter = len(encode_varint(message.counter))
    key_end = offset + 1 + 32
    header_end = key_end + pn + counter
    return [
        ("message type", offset, offset + 1, TYPE_BYTE_CODES),
        ("ratchet key", offset + 1, key_end, frozenset({ErrorCode.DECRYPT_FAILED})),
        ("previous chain length", key_end, key_end + pn, ANY_DECRYPT_ERROR),
        ("counter", key_end + pn, header_end, ANY_DECRYPT_ERROR),
        ("ciphertext and tag", header_end, total, frozenset({ErrorCode.DECRYPT_FAILED})),
    ]


def prekey_regions(
    message: PreKeyMessage, total: int, repeat: bool
) -> list[tuple[str, int, int, frozenset[ErrorCode]]]:
    cert = message.sender_certificate
    cert_varints = len(encode_varint(cert.device_id)) + len(encode_varint(cert.registration_id))
    bad_sig = frozenset({ErrorCode.BAD_SIGNATURE})
    regions = [("message type", 0, 1, TYPE_BYTE_CODES)]
    at = 1
    for name, size, codes in (
        ("sender account key", 32, frozenset({ErrorCode.UNTRUSTED_IDENTITY})),
        ("certificate ids", cert_varints, ANY_DECRYPT_ERROR),
        ("certificate signing key", 32, bad_sig),
        ("certificate identity key", 32, bad_sig),
        ("certificate signature", 64, bad_sig),
        ("base key", 32, frozenset({ErrorCode.DECRYPT_FAILED, ErrorCode.PREKEY_NOT_FOUND})),
        ("signed prekey id", len(encode_varint(message.signed_prekey_id)), ANY_DECRYPT_ERROR),
        (
            "one-time prekey id",
            len(encode_varint(message.one_time_prekey_id or 0)),
            ANY_DECRYPT_ERROR,
        ),
        ("kem prekey id", len(encode_varint(message.kem_prekey_id)), ANY_DECRYPT_ERROR),
        ("kem ciphertext", p.MLKEM768_CIPHERTEXT_BYTES, frozenset({ErrorCode.DECRYPT_FAILED})),
    ):
        regions.append((name, at, at + size, codes))
        at += size
    if repeat:
        # Bob already has this session: only the base key selects it (see the note in
        # test_tampered_repeat_prekey_message_cannot_change_the_outcome).
        regions = [(name, s, e, ANY_DECRYPT_ERROR) for name, s, e, _ in regions]
        regions[0] = ("message type", 0, 1, TYPE_BYTE_CODES)
    return regions + ratchet_regions(message.message, at, total)


@cache
def targets() -> dict[str, Target]:
    alice, bob = Party.create("alice", seed=11), Party.create("bob", seed=12)
    alice_record, bob_record = start_conversation(alice, bob)
    for turn in range(2):
        bob.decrypt(bob_record, alice_record.encrypt(plaintext("turn-a", turn)))
        alice.decrypt(alice_record, bob_record.encrypt(plaintext("turn-b", turn)))
    chain = [alice_record.encrypt(plaintext("chain", i)) for i in range(6)]
    bob.decrypt(bob_record, chain[0])
    bob.decrypt(bob_record, chain[4])  # skipped keys for 1, 2, 3
    alice.decrypt(alice_record, bob_record.encrypt(b"new chain please"))
    new_chain = alice_record.encrypt(b"first of a new chain")
    assert bob_record.current is not None and len(bob_record.current.skipped) == 3

    out: dict[str, Target] = {}
    saved = bob_record.encode()
    for name, data, expected in (
        ("skipped", chain[2], plaintext("chain", 2)),
        ("current", chain[5], plaintext("chain", 5)),
        ("new-chain", new_chain, b"first of a new chain"),
    ):
        regions = ratchet_regions(RatchetMessage.decode(data), 0, len(data))
        out[name] = Target(name, data, expected, saved, bob, None, tuple(regions))

    # Alice starts over with a fresh bundle (say she reinstalled): Bob keeps the old state.
    bob2 = Party.create("bob", seed=13)
    old_alice_record, bob2_record = start_conversation(alice, bob2)
    new_alice_record = alice.initiate(bob2.bundle(), existing=old_alice_record)
    setup = [new_alice_record.encrypt(plaintext("setup", i)) for i in range(2)]
    message = PreKeyMessage.decode(setup[0])
    out["prekey-new"] = Target(
        "prekey-new",
        setup[0],
        plaintext("setup", 0),
        bob2_record.encode(),
        bob2,
        alice.account_key,
        tuple(prekey_regions(message, len(setup[0]), repeat=False)),
    )
    # The same setup again, once Bob has accepted it (a repeat: Bob saw setup[0]).
    bob3 = Party.create("bob", seed=14)
    alice3 = Party.create("alice", seed=15)
    record3 = alice3.initiate(bob3.bundle())
    setup3 = [record3.encrypt(plaintext("setup3", i)) for i in range(2)]
    bob3_record = SessionRecord()
    bob3.decrypt(bob3_record, setup3[0])
    out["prekey-repeat"] = Target(
        "prekey-repeat",
        setup3[1],
        plaintext("setup3", 1),
        bob3_record.encode(),
        bob3,
        None,
        tuple(prekey_regions(PreKeyMessage.decode(setup3[1]), len(setup3[1]), repeat=True)),
        repeat=True,
    )
    return out


TARGET_NAMES = ["skipped", "current", "new-chain", "prekey-new", "prekey-repeat"]


SETUP_FIELDS = frozenset(
    {
        "sender account key",
        "certificate ids",
        "certificate signing key",
        "certificate identity key",
        "certificate signature",
        "signed prekey id",
        "one-time prekey id",
        "kem prekey id",
        "kem ciphertext",
    }
)


def check_flip(target: Target, record: SessionRecord, store: MemoryPreKeyStore, bit: int) -> bool:
    """Flip one bit of the target message and decrypt it. Returns True if it decrypted
    (then ``record`` has moved on and the caller must start from a fresh one)."""
    tampered = flip(target.data, bit)
    region, codes = target.region_of(bit)
    before = record.encode()
    before_store = store_snapshot(store)
    try:
        result = target.decrypt(record, store, tampered)
    except ProtocolError as exc:
        assert exc.code in codes, f"{target.name}/{region} bit {bit}: {exc.code!r} not in {codes}"
        assert record.encode() == before, f"{target.name}/{region}: record changed on failure"
        assert store_snapshot(store) == before_store
        return False
    # Only the setup fields of a repeated prekey message are not re-checked; the outcome
    # must then be exactly what the genuine message gives.
    assert target.repeat and region in SETUP_FIELDS, (
        f"{target.name}: bit {bit} flipped in the {region} and the message still decrypted"
    )
    genuine_record, genuine_store = target.fresh()
    genuine = target.decrypt(genuine_record, genuine_store, target.data)
    assert result == genuine
    assert result.consumed_one_time_prekey_id is None and result.consumed_kem_prekey_id is None
    assert record.encode() == genuine_record.encode()
    return True


def check_genuine_still_decrypts(
    target: Target, record: SessionRecord, store: MemoryPreKeyStore
) -> None:
    assert target.decrypt(record, store, target.data).plaintext == target.expected


@pytest.mark.parametrize("name", ["skipped", "current", "new-chain"])
def test_every_bit_flip_of_a_ratchet_message_is_rejected(name: str) -> None:
    target = targets()[name]
    record, store = target.fresh()
    for bit in range(len(target.data) * 8):
        assert not check_flip(target, record, store, bit)
    check_genuine_still_decrypts(target, record, store)


@pytest.mark.parametrize("name", ["prekey-new", "prekey-repeat"])
def test_a_bit_flip_in_every_byte_of_a_prekey_message(name: str) -> None:
    target = targets()[name]
    record, store = target.fresh()
    # The top bit of each X25519 key (BAD_KEY), then one bit per byte, all bit positions
    # in turn.
    top_bits = [
        (start + 31) * 8 + 7
        for region, start, _, _ in target.regions
        if region in X25519_KEY_REGIONS
    ]
    assert len(top_bits) == 3
    for bit in top_bits + [index * 8 + (index * 3) % 8 for index in range(len(target.data))]:
        if check_flip(target, record, store, bit):
            record, store = target.fresh()
    check_genuine_still_decrypts(target, record, store)


@CRYPTO_SETTINGS
@given(st.sampled_from(TARGET_NAMES), st.integers(min_value=0, max_value=2**24), st.data())
def test_random_bit_flip_is_rejected(name: str, raw_bit: int, data: st.DataObject) -> None:
    target = targets()[name]
    # Half the examples aim at the header and setup fields, which are short.
    if data.draw(st.booleans()):
        header_end = target.regions[-1][1]
        bit = raw_bit % (header_end * 8)
    else:
        bit = raw_bit % (len(target.data) * 8)
    record, store = target.fresh()
    if check_flip(target, record, store, bit):
        record, store = target.fresh()
    check_genuine_still_decrypts(target, record, store)


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_truncation_at_every_length_is_rejected(name: str) -> None:
    target = targets()[name]
    record, store = target.fresh()
    ciphertext_start = target.regions[-1][1]
    for length in range(len(target.data)):
        expected = (
            ErrorCode.TRUNCATED
            if length < ciphertext_start + p.AEAD_TAG_BYTES
            else ErrorCode.DECRYPT_FAILED
        )
        assert_rejected(
            record,
            partial(target.decrypt, record, store, target.data[:length]),
            expected,
        )
    check_genuine_still_decrypts(target, record, store)


def test_appended_bytes_are_rejected() -> None:
    for name in TARGET_NAMES:
        target = targets()[name]
        record, store = target.fresh()
        for extra in (b"\x00", b"\x01" * 16):
            tampered = target.data + extra
            with raises_code(ErrorCode.DECRYPT_FAILED):
                target.decrypt(record, store, tampered)
            assert record.encode() == target.record
        check_genuine_still_decrypts(target, record, store)


def test_tampered_repeat_prekey_message_cannot_change_the_outcome() -> None:
    """Note on the protocol: once Bob has the session a PreKeyMessage set up, a repeat of it
    is looked up by its base key alone and its other setup fields (sender account key,
    certificate, prekey ids, KEM ciphertext) are not compared with that session. A
    tampered repeat may therefore still decrypt; this test pins down that it can only ever
    give the genuine plaintext and report no sender or consumed prekeys."""
    target = targets()["prekey-repeat"]
    message = PreKeyMessage.decode(target.data)
    other = Party.create("mallory", seed=99)
    forged = dataclasses.replace(
        message,
        sender_account_key=other.account_key,
        sender_certificate=other.device.certificate,
        signed_prekey_id=77,
        one_time_prekey_id=None,
    ).encode()
    record, store = target.fresh()
    before = record.encode()
    try:
        result = target.decrypt(record, store, forged)
    except ProtocolError:
        assert record.encode() == before
    else:
        assert result == Decrypted(target.expected)  # no sender key, nothing consumed


# --- replays ----------------------------------------------------------------------------------


def test_replay_of_a_ratchet_message_is_a_duplicate() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    data = alice_record.encrypt(b"once")
    later = alice_record.encrypt(b"twice")
    assert bob.decrypt(bob_record, data).plaintext == b"once"
    assert_rejected(bob_record, lambda: bob.decrypt(bob_record, data), ErrorCode.DUPLICATE_MESSAGE)
    assert_rejected(bob_record, lambda: bob.decrypt(bob_record, data), ErrorCode.DUPLICATE_MESSAGE)
    assert bob.decrypt(bob_record, later).plaintext == b"twice"
    # A message that was decrypted with a skipped key is a duplicate too.
    skipped = [alice_record.encrypt(plaintext("s", i)) for i in range(3)]
    bob.decrypt(bob_record, skipped[2])
    bob.decrypt(bob_record, skipped[0])
    for data in (skipped[0], skipped[2]):
        assert_rejected(
            bob_record, partial(bob.decrypt, bob_record, data), ErrorCode.DUPLICATE_MESSAGE
        )
    assert bob.decrypt(bob_record, skipped[1]).plaintext == plaintext("s", 1)


@pytest.mark.parametrize("turns", range(1, PREVIOUS_CHAINS_KEPT))
def test_replay_from_an_earlier_chain_is_a_duplicate(turns: int) -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    old = [alice_record.encrypt(plaintext("old", i)) for i in range(3)]
    for data in old:
        bob.decrypt(bob_record, data)
    for turn in range(turns):
        alice.decrypt(alice_record, bob_record.encrypt(plaintext("b", turn)))
        bob.decrypt(bob_record, alice_record.encrypt(plaintext("a", turn)))
    for data in old:
        assert_rejected(
            bob_record, partial(bob.decrypt, bob_record, data), ErrorCode.DUPLICATE_MESSAGE
        )
    assert bob.decrypt(bob_record, alice_record.encrypt(b"fine")).plaintext == b"fine"


def test_replay_from_a_chain_older_than_the_window_is_still_rejected() -> None:
    """Only PREVIOUS_CHAINS_KEPT earlier receiving chains are remembered (documented in
    ratchet.py, as in libsignal); a replay from before them cannot be *named* a duplicate
    but must still fail, without changing the record."""
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    old = alice_record.encrypt(b"old")
    bob.decrypt(bob_record, old)
    for turn in range(PREVIOUS_CHAINS_KEPT + 2):
        alice.decrypt(alice_record, bob_record.encrypt(plaintext("b", turn)))
        bob.decrypt(bob_record, alice_record.encrypt(plaintext("a", turn)))
    assert_rejected(
        bob_record,
        lambda: bob.decrypt(bob_record, old),
        ErrorCode.DUPLICATE_MESSAGE,
        ErrorCode.DECRYPT_FAILED,
    )


def test_replay_of_prekey_message_after_reply_is_a_duplicate_not_a_new_session() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    # A last-resort KEM prekey and no OPK: nothing is consumed, so only the session itself
    # can tell a replay from a new setup.
    alice_record = alice.initiate(bob.bundle(one_time=False, kem_one_time=False))
    setup = [alice_record.encrypt(plaintext("setup", i)) for i in range(2)]
    bob_record = SessionRecord()
    bob.decrypt(bob_record, setup[0])
    assert_rejected(
        bob_record, lambda: bob.decrypt(bob_record, setup[0]), ErrorCode.DUPLICATE_MESSAGE
    )
    reply = bob_record.encrypt(b"reply")
    assert_rejected(
        bob_record, lambda: bob.decrypt(bob_record, setup[0]), ErrorCode.DUPLICATE_MESSAGE
    )
    alice.decrypt(alice_record, reply)
    for turn in range(3):
        bob.decrypt(bob_record, alice_record.encrypt(plaintext("a", turn)))
        alice.decrypt(alice_record, bob_record.encrypt(plaintext("b", turn)))
    for data in setup[:1]:
        assert_rejected(
            bob_record, partial(bob.decrypt, bob_record, data), ErrorCode.DUPLICATE_MESSAGE
        )
    assert len(bob_record.states) == 1
    assert bob.decrypt(bob_record, setup[1]).plaintext == plaintext("setup", 1)  # late, fine


def with_top_bit_flipped(key: bytes) -> bytes:
    return key[:31] + bytes((key[31] ^ 0x80,))


@pytest.mark.parametrize("replied", [False, True], ids=["before-reply", "after-reply"])
def test_replay_with_the_base_key_top_bit_flipped_is_bad_key(replied: bool) -> None:
    """X25519 ignores the top bit of a u-coordinate, and the base key enters the session
    only through DH outputs: a copy of a PreKeyMessage whose base key differs only in that
    bit gives the very same keys, yet is another "base key" for the repeat check. Without a
    one-time X25519 or KEM prekey nothing is consumed, so such a copy used to be accepted
    again as a new session (a replay). Decoders now refuse the non-canonical key."""
    alice, bob = Party.create("alice", seed=31), Party.create("bob", seed=32)
    alice_record = alice.initiate(bob.bundle(one_time=False, kem_one_time=False))
    data = alice_record.encrypt(b"pay 100")
    bob_record = SessionRecord()
    assert bob.decrypt(bob_record, data).plaintext == b"pay 100"
    if replied:
        alice.decrypt(alice_record, bob_record.encrypt(b"ok"))
    message = PreKeyMessage.decode(data)
    flipped = dataclasses.replace(message, base_key=with_top_bit_flipped(message.base_key))
    error = assert_rejected(
        bob_record, lambda: bob.decrypt(bob_record, flipped.encode()), ErrorCode.BAD_KEY
    )
    assert error.message == "base_key is not a canonical X25519 key"
    # Also on an empty record (Bob lost his session) and with a trusted sender.
    empty = SessionRecord()
    assert_rejected(
        empty,
        lambda: bob.decrypt(empty, flipped.encode(), trusted_account_key=alice.account_key),
        ErrorCode.BAD_KEY,
    )
    assert len(bob_record.states) == 1
    assert_rejected(bob_record, lambda: bob.decrypt(bob_record, data), ErrorCode.DUPLICATE_MESSAGE)


def test_ratchet_key_with_its_top_bit_flipped_is_bad_key() -> None:
    """The same for the ratchet key, which names a receiving chain: a twin would derive the
    same chain under another name (new DH step, skipped-key slots, duplicate detection)."""
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    data = alice_record.encrypt(b"once")
    assert bob.decrypt(bob_record, data).plaintext == b"once"
    message = RatchetMessage.decode(data)
    twin = dataclasses.replace(message, ratchet_key=with_top_bit_flipped(message.ratchet_key))
    error = assert_rejected(
        bob_record, lambda: bob.decrypt(bob_record, twin.encode()), ErrorCode.BAD_KEY
    )
    assert error.message == "ratchet_key is not a canonical X25519 key"


def test_replay_of_a_message_of_an_archived_session_is_a_duplicate() -> None:
    """Alice starts a second session (a reinstall, or both sides initiating at once): Bob
    keeps the old state archived. A replay of a message the old state already decrypted
    must be reported as DUPLICATE_MESSAGE, as it is while the state is current, even
    though the current state (tried first) fails it with DECRYPT_FAILED."""
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    old = alice_record.encrypt(b"old session")
    assert bob.decrypt(bob_record, old).plaintext == b"old session"
    assert_rejected(bob_record, lambda: bob.decrypt(bob_record, old), ErrorCode.DUPLICATE_MESSAGE)

    alice_record = alice.initiate(bob.bundle(), existing=alice_record)
    assert bob.decrypt(bob_record, alice_record.encrypt(b"new session")).plaintext == (
        b"new session"
    )
    assert len(bob_record.states) == 2
    assert_rejected(bob_record, lambda: bob.decrypt(bob_record, old), ErrorCode.DUPLICATE_MESSAGE)


# --- misrouted messages -------------------------------------------------------------------------


def test_message_for_another_device_is_rejected() -> None:
    alice = Party.create("alice")
    bob = Party.create("bob", seed="bob-main")
    carol = Party.create("carol", seed="carol-main")  # same prekey ids as Bob
    alice_bob, bob_record = start_conversation(alice, bob)
    alice_carol, carol_record = start_conversation(alice, carol)

    # An established session's ratchet message, delivered to Carol instead of Bob.
    for_bob = alice_bob.encrypt(b"for bob only")
    assert_rejected(
        carol_record, lambda: carol.decrypt(carol_record, for_bob), ErrorCode.DECRYPT_FAILED
    )
    empty = SessionRecord()
    assert_rejected(empty, lambda: carol.decrypt(empty, for_bob), ErrorCode.NO_SESSION)

    # A prekey message for Bob's bundle, delivered to Carol: her prekeys have the same ids,
    # so she gets as far as the AEAD, which fails.
    setup = alice.initiate(bob.bundle()).encrypt(b"setup for bob")
    msg = PreKeyMessage.decode(setup)
    assert carol.store.one_time_prekey(msg.one_time_prekey_id or 0) is None
    carol.bundle()  # Carol now holds one-time prekeys with the ids Bob's bundle named
    assert carol.store.one_time_prekey(msg.one_time_prekey_id or 0) is not None
    assert carol.store.kem_prekey(msg.kem_prekey_id) is not None
    before_store = store_snapshot(carol.store)
    assert_rejected(
        carol_record, lambda: carol.decrypt(carol_record, setup), ErrorCode.DECRYPT_FAILED
    )
    assert store_snapshot(carol.store) == before_store

    # Both still work with their own messages.
    assert bob.decrypt(bob_record, for_bob).plaintext == b"for bob only"
    assert bob.decrypt(bob_record, setup).plaintext == b"setup for bob"
    ok = alice_carol.encrypt(b"for carol")
    assert carol.decrypt(carol_record, ok).plaintext == b"for carol"


def test_messages_between_the_two_directions_do_not_mix() -> None:
    """A message Alice sent is not accepted by Alice herself (reflection)."""
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    own = alice_record.encrypt(b"mine")
    assert_rejected(
        alice_record, lambda: alice.decrypt(alice_record, own), ErrorCode.DECRYPT_FAILED
    )
    assert bob.decrypt(bob_record, own).plaintext == b"mine"


# --- identity and prekeys ---------------------------------------------------------------------


def test_untrusted_identity() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    setup = alice.initiate(bob.bundle()).encrypt(b"hello")
    stranger = AccountIdentity.generate(seeded_rng("stranger")).public_key
    record = SessionRecord()
    before_store = store_snapshot(bob.store)
    assert_rejected(
        record,
        lambda: bob.decrypt(record, setup, trusted_account_key=stranger),
        ErrorCode.UNTRUSTED_IDENTITY,
    )
    assert store_snapshot(bob.store) == before_store
    result = bob.decrypt(record, setup, trusted_account_key=alice.account_key)
    assert result.plaintext == b"hello" and result.sender_account_key == alice.account_key


def test_untrusted_identity_on_an_existing_session() -> None:
    """Alice's account key changed (a new account under the same name): Bob, who trusts the
    old key, refuses her new session and keeps the old one."""
    alice, bob = Party.create("alice"), Party.create("bob")
    _, bob_record = start_conversation(alice, bob)
    new_alice = Party.create("alice", seed="alice-new-account")
    setup = new_alice.initiate(bob.bundle()).encrypt(b"it's me")
    assert_rejected(
        bob_record,
        lambda: bob.decrypt(bob_record, setup, trusted_account_key=alice.account_key),
        ErrorCode.UNTRUSTED_IDENTITY,
    )


def test_certificate_not_signed_by_the_sender_account() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    setup = PreKeyMessage.decode(alice.initiate(bob.bundle()).encrypt(b"x"))
    mallory = Party.create("mallory")
    forged = dataclasses.replace(setup, sender_account_key=mallory.account_key).encode()
    record = SessionRecord()
    assert_rejected(record, lambda: bob.decrypt(record, forged), ErrorCode.BAD_SIGNATURE)
    bad_cert = dataclasses.replace(
        setup.sender_certificate, registration_id=setup.sender_certificate.registration_id ^ 1
    )
    forged = dataclasses.replace(setup, sender_certificate=bad_cert).encode()
    assert_rejected(record, lambda: bob.decrypt(record, forged), ErrorCode.BAD_SIGNATURE)


def test_session_cannot_be_passed_off_under_another_account() -> None:
    """Identity misbinding (X3DH section 4.8): Mallory certifies Alice's device keys under
    her own account and swaps that certificate and account key into Alice's PreKeyMessage.
    The key agreement is unchanged, so only the account keys in the AD stop Bob from
    accepting Alice's words as Mallory's."""
    alice, bob, mallory = Party.create("alice"), Party.create("bob"), Party.create("mallory")
    setup = PreKeyMessage.decode(alice.initiate(bob.bundle()).encrypt(b"I owe Bob 100"))
    cert = setup.sender_certificate
    resigned = dataclasses.replace(
        cert,
        signature=mallory.account.sign(signed_payload(LABEL_DEVICE_CERTIFICATE, cert.body())),
    )
    resigned.verify(mallory.account_key)  # a valid certificate, as far as it goes
    forged = dataclasses.replace(
        setup, sender_account_key=mallory.account_key, sender_certificate=resigned
    ).encode()
    record = SessionRecord()
    assert_rejected(record, lambda: bob.decrypt(record, forged), ErrorCode.DECRYPT_FAILED)
    assert bob.decrypt(record, setup.encode()).sender_account_key == alice.account_key


def test_used_one_time_prekey_is_not_found() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    carol = Party.create("carol")
    bundle = bob.bundle()
    bob_from_alice, bob_from_carol = SessionRecord(), SessionRecord()
    bob.decrypt(bob_from_alice, alice.initiate(bundle).encrypt(b"first"))
    # Carol got the same bundle (a server bug or a race): its one-time prekey is gone.
    stale = carol.initiate(bundle).encrypt(b"second")
    err = assert_rejected(
        bob_from_carol, lambda: bob.decrypt(bob_from_carol, stale), ErrorCode.PREKEY_NOT_FOUND
    )
    assert "one-time" in err.message


@pytest.mark.parametrize("which", ["signed", "one_time", "kem"])
def test_unknown_prekey_is_not_found(which: str) -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    bundle = bob.bundle()
    setup = alice.initiate(bundle).encrypt(b"x")
    getattr(bob.store, which).clear()
    record = SessionRecord()
    assert_rejected(record, lambda: bob.decrypt(record, setup), ErrorCode.PREKEY_NOT_FOUND)


def test_prekey_message_naming_an_unknown_one_time_prekey_id() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    setup = PreKeyMessage.decode(alice.initiate(bob.bundle()).encrypt(b"x"))
    record = SessionRecord()
    for bad_id in (12345, (setup.one_time_prekey_id or 0) + 1):
        forged = dataclasses.replace(setup, one_time_prekey_id=bad_id).encode()
        assert_rejected(record, partial(bob.decrypt, record, forged), ErrorCode.PREKEY_NOT_FOUND)
    # Dropping the one-time prekey from the message changes the key agreement.
    forged = dataclasses.replace(setup, one_time_prekey_id=None).encode()
    assert_rejected(record, lambda: bob.decrypt(record, forged), ErrorCode.DECRYPT_FAILED)
    assert bob.decrypt(record, setup.encode()).plaintext == b"x"


# --- skipped message keys -----------------------------------------------------------------------


def advance_sending_chain(record: SessionRecord, steps: int) -> None:
    """White box: as if ``steps`` messages had been sent and lost (one HMAC pair each
    instead of a full encryption)."""
    state = record.current
    assert state is not None and state.sending_chain is not None
    chain = state.sending_chain
    for _ in range(steps):
        _, chain = kdf_ck(chain)
    state.sending_chain = chain
    state.send_counter += steps


def test_jump_of_exactly_max_jump_is_accepted() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    # Alice's current chain is new to Bob: its counter starts at 0 on his side.
    advance_sending_chain(alice_record, MAX_JUMP)
    data = alice_record.encrypt(b"far ahead")
    assert RatchetMessage.decode(data).counter == MAX_JUMP
    assert bob.decrypt(bob_record, data).plaintext == b"far ahead"
    assert bob_record.current is not None
    assert len(bob_record.current.skipped) == MAX_SKIPPED_KEYS


def test_jump_above_max_jump_is_refused() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    ahead = copy_record(alice_record)
    advance_sending_chain(ahead, MAX_JUMP + 1)
    data = ahead.encrypt(b"too far ahead")
    assert_rejected(bob_record, lambda: bob.decrypt(bob_record, data), ErrorCode.TOO_MANY_SKIPPED)
    # Same chain, in reach: fine.
    assert bob.decrypt(bob_record, alice_record.encrypt(b"near")).plaintext == b"near"
    # And within the current receiving chain.
    ahead = copy_record(alice_record)
    advance_sending_chain(ahead, MAX_JUMP + 1)  # Bob is at counter 1 of this chain
    assert_rejected(
        bob_record,
        lambda: bob.decrypt(bob_record, ahead.encrypt(b"x")),
        ErrorCode.TOO_MANY_SKIPPED,
    )
    ok = copy_record(alice_record)
    advance_sending_chain(ok, MAX_JUMP)
    assert bob.decrypt(bob_record, ok.encrypt(b"just in reach")).plaintext == b"just in reach"


@pytest.mark.parametrize(("extra", "accepted"), [(0, True), (1, False)])
def test_previous_chain_length_jump_is_bounded(extra: int, accepted: bool) -> None:
    """The jump a new chain's ``previous_chain_length`` forces on the old chain is bounded
    as well."""
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record = alice.initiate(bob.bundle())
    bob_record = SessionRecord()
    bob.decrypt(bob_record, alice_record.encrypt(b"first"))  # Bob is at 1 on this chain
    advance_sending_chain(alice_record, MAX_JUMP + extra)  # Alice's first chain is long
    alice.decrypt(alice_record, bob_record.encrypt(b"reply"))
    data = alice_record.encrypt(b"new chain")
    assert RatchetMessage.decode(data).previous_chain_length == MAX_JUMP + 1 + extra
    if accepted:
        assert bob.decrypt(bob_record, data).plaintext == b"new chain"
    else:
        assert_rejected(
            bob_record, lambda: bob.decrypt(bob_record, data), ErrorCode.TOO_MANY_SKIPPED
        )


def test_skipped_key_store_is_bounded_and_evicts_the_oldest() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    total = MAX_SKIPPED_KEYS + 500
    sent = [alice_record.encrypt(plaintext("m", i)) for i in range(total)]
    assert bob.decrypt(bob_record, sent[-1]).plaintext == plaintext("m", total - 1)
    state = bob_record.current
    assert state is not None
    assert len(state.skipped) == MAX_SKIPPED_KEYS
    evicted = total - 1 - MAX_SKIPPED_KEYS  # messages 0 .. evicted-1 lost their keys
    for index in (0, 1, evicted // 2, evicted - 1):
        assert_rejected(
            bob_record,
            partial(bob.decrypt, bob_record, sent[index]),
            ErrorCode.TOO_MANY_SKIPPED,  # lost to the bound, not a replay
        )
    for index in (evicted, evicted + 1, total // 2, total - 3, total - 2):
        assert bob.decrypt(bob_record, sent[index]).plaintext == plaintext("m", index)
    # A replay of a message whose skipped key was *used* is a duplicate, not a loss.
    assert_rejected(
        bob_record, lambda: bob.decrypt(bob_record, sent[evicted]), ErrorCode.DUPLICATE_MESSAGE
    )
    assert bob_record.current is not None
    assert len(bob_record.current.skipped) == MAX_SKIPPED_KEYS - 5
    # The record, skipped keys and all, survives serialisation.
    assert copy_record(bob_record).encode() == bob_record.encode()


def test_skipped_key_store_is_bounded_across_chains() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    batch_size, turns = 900, 4
    kept: dict[tuple[int, int], bytes] = {}
    for turn in range(turns):
        batch = [alice_record.encrypt(plaintext(f"t{turn}", i)) for i in range(batch_size)]
        bob.decrypt(bob_record, batch[-1])  # skips batch_size - 1 keys of this chain
        kept[(turn, 0)], kept[(turn, batch_size - 2)] = batch[0], batch[-2]
        assert bob_record.current is not None
        assert len(bob_record.current.skipped) <= MAX_SKIPPED_KEYS
        alice.decrypt(alice_record, bob_record.encrypt(plaintext("reply", turn)))
    assert bob_record.current is not None
    assert len(bob_record.current.skipped) == MAX_SKIPPED_KEYS
    # Oldest first: all of chain 0 and the start of chain 1 are gone.
    evicted = turns * (batch_size - 1) - MAX_SKIPPED_KEYS
    assert batch_size - 1 < evicted < 2 * (batch_size - 1) - 1
    for (turn, index), data in sorted(kept.items(), reverse=True):
        if turn * (batch_size - 1) + index < evicted:
            assert_rejected(
                bob_record,
                partial(bob.decrypt, bob_record, data),
                ErrorCode.TOO_MANY_SKIPPED,
            )
        else:
            assert bob.decrypt(bob_record, data).plaintext == plaintext(f"t{turn}", index)


def test_replay_of_a_decrypted_message_stays_a_duplicate_after_evictions() -> None:
    """Evicting skipped keys of a chain must not turn the replay of a message that *was*
    decrypted (in order, or with its skipped key before the eviction) into a report that
    it was lost: ``RatchetState.discarded`` records the evicted counters themselves, not
    a high-water mark."""
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    sent = [alice_record.encrypt(plaintext("m", i)) for i in range(MAX_SKIPPED_KEYS + 500)]
    bob.decrypt(bob_record, sent[10])  # keys 0..9 skipped
    bob.decrypt(bob_record, sent[2])  # with its skipped key
    bob.decrypt(bob_record, sent[-1])  # keys 11.. skipped; the oldest ones evicted
    assert_rejected(
        bob_record, lambda: bob.decrypt(bob_record, sent[3]), ErrorCode.TOO_MANY_SKIPPED
    )
    for index in (2, 10):
        assert_rejected(
            bob_record,
            partial(bob.decrypt, bob_record, sent[index]),
            ErrorCode.DUPLICATE_MESSAGE,
        )


def test_record_stays_decodable_when_many_old_chains_are_evicted_at_once() -> None:
    """Skipped keys outlive their chain's place among the PREVIOUS_CHAINS_KEPT remembered
    receiving keys. When one long jump evicts the keys of many old chains at once, the
    record must still be storable: ``SessionRecord.decode(record.encode())`` must work
    (``decode`` accepts at most PREVIOUS_CHAINS_KEPT + 1 ``discarded`` entries, while such
    a jump evicts keys of 2 * PREVIOUS_CHAINS_KEPT chains)."""
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    chains = 2 * PREVIOUS_CHAINS_KEPT
    per_chain = MAX_SKIPPED_KEYS // (chains + 2)
    for turn in range(chains):
        batch = [alice_record.encrypt(plaintext(f"t{turn}", i)) for i in range(per_chain + 1)]
        bob.decrypt(bob_record, batch[-1])
        alice.decrypt(alice_record, bob_record.encrypt(plaintext("reply", turn)))
    assert bob_record.current is not None
    assert len(bob_record.current.skipped) == chains * per_chain
    jump = [alice_record.encrypt(plaintext("jump", i)) for i in range(MAX_SKIPPED_KEYS)]
    bob.decrypt(bob_record, jump[-1])  # evicts the keys of every earlier chain
    encoded = bob_record.encode()
    restored = SessionRecord.decode(encoded)
    assert restored.encode() == encoded
    assert bob.decrypt(restored, jump[5]).plaintext == plaintext("jump", 5)


# --- a long, lossy, reordered conversation -----------------------------------------------------


@dataclasses.dataclass
class InFlight:
    number: int
    sender: str
    data: bytes
    plaintext: bytes
    sent_round: int


def run_lossy_conversation(seed: int, simultaneous: bool, replays: bool) -> None:
    rnd = random.Random(seed)
    parties = {
        "alice": Party.create("alice", seed=f"{seed}-alice"),
        "bob": Party.create("bob", seed=f"{seed}-bob"),
    }
    peer = {"alice": "bob", "bob": "alice"}
    records = {"alice": parties["alice"].initiate(parties["bob"].bundle())}
    if simultaneous:
        records["bob"] = parties["bob"].initiate(parties["alice"].bundle())
    else:
        records["bob"] = SessionRecord()

    total, sent, lost = 1000, 0, 0
    network: list[InFlight] = []
    decrypted: set[int] = set()
    delivered: dict[int, InFlight] = {}
    replayed = 0
    round_number = 0

    def deliver(message: InFlight) -> None:
        receiver = peer[message.sender]
        result = parties[receiver].decrypt(records[receiver], message.data)
        assert result.plaintext == message.plaintext
        assert message.number not in decrypted
        decrypted.add(message.number)
        delivered[message.number] = message

    while sent < total:
        round_number += 1
        for sender in ("alice", "bob"):
            state = records[sender].current
            if state is None or not state.can_send:
                continue  # Bob waits for Alice's first message
            for _ in range(min(rnd.randint(1, 30), total - sent)):
                text = f"{sender} {sent} {rnd.random()}".encode()
                message = InFlight(sent, sender, records[sender].encrypt(text), text, round_number)
                sent += 1
                if rnd.random() < 0.10:
                    lost += 1
                else:
                    network.append(message)
        rnd.shuffle(network)
        waiting: list[InFlight] = []
        for message in network:
            if rnd.random() < 0.6:
                deliver(message)
            else:
                waiting.append(message)  # arrives in a later round, across ratchet turns
        network = waiting
        if replays:
            # Re-deliver messages sent in the last few rounds (so that their chain is one of
            # the PREVIOUS_CHAINS_KEPT the receiver remembers): every one is a duplicate.
            recent = [
                number
                for number, message in delivered.items()
                if message.sent_round >= round_number - 3
            ]
            for number in rnd.sample(recent, min(len(recent), 5)):
                message = delivered[number]
                receiver = peer[message.sender]
                assert_rejected(
                    records[receiver],
                    partial(parties[receiver].decrypt, records[receiver], message.data),
                    ErrorCode.DUPLICATE_MESSAGE,
                )
                replayed += 1
    rnd.shuffle(network)
    for message in network:
        deliver(message)

    assert sent == total
    assert len(decrypted) == total - lost
    assert 50 <= lost <= 150  # about 10%
    if replays:
        assert replayed > 50
    # Converged: one more exchange and both sides use the same session.
    for sender in ("alice", "bob", "alice"):
        receiver = peer[sender]
        data = records[sender].encrypt(b"final")
        assert parties[receiver].decrypt(records[receiver], data).plaintext == b"final"
    for record in records.values():  # whatever happened, the records can be stored
        encoded = record.encode()
        assert SessionRecord.decode(encoded).encode() == encoded
    alice_state, bob_state = records["alice"].current, records["bob"].current
    assert alice_state is not None and bob_state is not None
    assert alice_state.base_key == bob_state.base_key
    assert alice_state.pending_prekey is None and bob_state.pending_prekey is None


def test_lossy_reordered_conversation() -> None:
    run_lossy_conversation(seed=2024, simultaneous=False, replays=True)


def test_simultaneous_initiation_converges() -> None:
    run_lossy_conversation(seed=2025, simultaneous=True, replays=False)


def test_simultaneous_initiation_replays_are_duplicates() -> None:
    """As test_replay_of_a_message_of_an_archived_session_is_a_duplicate, after both sides
    initiated at once: a replay decrypted by the non-current state is a duplicate."""
    run_lossy_conversation(seed=2026, simultaneous=True, replays=True)


def test_simultaneous_initiation_small() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record = alice.initiate(bob.bundle())
    bob_record = bob.initiate(alice.bundle())
    from_alice = alice_record.encrypt(b"hi from alice")
    from_bob = bob_record.encrypt(b"hi from bob")
    assert peek_kind(from_alice) is peek_kind(from_bob) is MessageKind.PREKEY
    assert bob.decrypt(bob_record, from_alice).plaintext == b"hi from alice"
    assert alice.decrypt(alice_record, from_bob).plaintext == b"hi from bob"
    assert len(alice_record.states) == len(bob_record.states) == 2
    for _ in range(3):
        data = alice_record.encrypt(b"a")
        assert bob.decrypt(bob_record, data).plaintext == b"a"
        data = bob_record.encrypt(b"b")
        assert alice.decrypt(alice_record, data).plaintext == b"b"
    assert alice_record.current is not None and bob_record.current is not None
    assert alice_record.current.base_key == bob_record.current.base_key


# --- serialisation ----------------------------------------------------------------------------


def continue_conversation(
    alice: Party,
    bob: Party,
    alice_record: SessionRecord,
    bob_record: SessionRecord,
    pending: list[bytes],
    seed: int,
) -> list[bytes]:
    """A fixed continuation; returns everything observable (plaintexts, ciphertexts and the
    records' encodings at the end). Uses its own seeded rng, so that two runs from equal
    records are byte-for-byte equal."""
    rng = seeded_rng(seed)
    out: list[bytes] = []

    def to_bob(data: bytes) -> None:
        out.append(bob_record.decrypt(data, bob.device, bob.store, rng=rng).plaintext)

    def to_alice(data: bytes) -> None:
        out.append(alice_record.decrypt(data, alice.device, alice.store, rng=rng).plaintext)

    to_bob(pending[2])
    to_bob(pending[0])
    reply = bob_record.encrypt(b"reply after restore")
    out.append(reply)
    still_prekey = alice_record.encrypt(b"alice before the reply")
    assert peek_kind(still_prekey) is MessageKind.PREKEY
    out.append(still_prekey)
    to_alice(reply)
    after = alice_record.encrypt(b"alice after the reply")
    assert peek_kind(after) is MessageKind.RATCHET
    out.append(after)
    to_bob(after)
    to_bob(pending[3])  # an old chain's skipped key, after a ratchet turn
    to_bob(still_prekey)
    to_bob(pending[1])
    out += [alice_record.encode(), bob_record.encode()]
    return out


def test_restored_records_continue_identically() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record = alice.initiate(bob.bundle())
    setup = [alice_record.encrypt(plaintext("setup", i)) for i in range(6)]
    bob_record = SessionRecord()
    bob.decrypt(bob_record, setup[5])  # keys 0..4 skipped
    pending = setup[:5]
    bob.decrypt(bob_record, pending.pop(4))
    assert alice_record.current is not None and alice_record.current.pending_prekey is not None
    assert bob_record.current is not None and len(bob_record.current.skipped) == 4

    saved = (alice_record.encode(), bob_record.encode())
    restored = (SessionRecord.decode(saved[0]), SessionRecord.decode(saved[1]))
    # Stable: decode then encode gives the same bytes, state by state.
    assert (restored[0].encode(), restored[1].encode()) == saved
    assert restored[0].states == alice_record.states and restored[1].states == bob_record.states
    for state in alice_record.states + bob_record.states:
        assert RatchetState.decode(state.encode()) == state

    original_run = continue_conversation(alice, bob, alice_record, bob_record, pending, seed=7)
    restored_run = continue_conversation(alice, bob, *restored, pending, seed=7)
    assert restored_run == original_run
    assert original_run[:2] == [plaintext("setup", 2), plaintext("setup", 0)]


def test_record_with_archived_states_round_trips() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    for _ in range(3):
        alice_record = alice.initiate(bob.bundle(), existing=alice_record)
        bob.decrypt(bob_record, alice_record.encrypt(b"again"))
    assert len(bob_record.states) == 4
    for record in (alice_record, bob_record):
        encoded = record.encode()
        assert SessionRecord.decode(encoded).encode() == encoded
        assert SessionRecord.decode(encoded).states == record.states
    restored = SessionRecord.decode(bob_record.encode())
    data = alice_record.encrypt(b"to the restored record")
    assert bob.decrypt(restored, data).plaintext == b"to the restored record"


def test_archive_is_bounded() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    alice_record, bob_record = start_conversation(alice, bob)
    for _ in range(MAX_ARCHIVED_STATES + 3):
        alice_record = alice.initiate(bob.bundle(), existing=alice_record)
        bob.decrypt(bob_record, alice_record.encrypt(b"again"))
    assert len(alice_record.states) == len(bob_record.states) == 1 + MAX_ARCHIVED_STATES
    assert copy_record(bob_record).encode() == bob_record.encode()


def test_certificate_in_pending_state_is_the_senders() -> None:
    alice, bob = Party.create("alice"), Party.create("bob")
    record = alice.initiate(bob.bundle())
    state = record.current
    assert state is not None and state.pending_prekey is not None
    assert state.pending_prekey.sender_certificate == alice.device.certificate
    assert DeviceCertificate.decode(alice.device.certificate.encode()) == alice.device.certificate
    alice.device.certificate.verify(alice.account_key)
