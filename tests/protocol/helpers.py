"""Shared helpers for the protocol tests: parties, an in-memory prekey store, seeded rngs.

Everything random here comes from ``seeded_rng`` so that a failing test can be re-run
with the same keys (the one exception is ML-KEM encapsulation, whose randomness
pyca/cryptography draws itself; it changes a KEM ciphertext, never an outcome).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings

from protocol.errors import ErrorCode, ProtocolError
from protocol.keys import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    Rng,
    SignedPreKeyPair,
)
from protocol.session import Decrypted, SessionRecord

# Crypto-heavy property tests: no deadline (a slow CI box must not flake) and few examples,
# so that the whole tests/protocol suite stays far below a minute on two cores.
CRYPTO_SETTINGS = settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Pure-encoding property tests: cheap, so more examples.
WIRE_SETTINGS = settings(deadline=None, max_examples=300)


def seeded_rng(seed: int | str) -> Rng:
    """A deterministic ``rng(n) -> bytes`` for keys and ratchet steps (tests only)."""
    return random.Random(seed).randbytes


@contextmanager
def raises_code(*codes: ErrorCode) -> Iterator[list[ProtocolError]]:
    """Like ``pytest.raises(ProtocolError)``, and the error's code must be one of ``codes``.

    Yields a list that holds the caught error afterwards.
    """
    caught: list[ProtocolError] = []
    with pytest.raises(ProtocolError) as info:
        yield caught
    caught.append(info.value)
    assert info.value.code in codes, f"expected {codes}, got {info.value.code!r}: {info.value}"


def error_of(call: Callable[[], object]) -> ProtocolError | None:
    """Run ``call``; return the ProtocolError it raised, or None. Anything else propagates."""
    try:
        call()
    except ProtocolError as exc:
        return exc
    return None


# --- the responder's private prekeys ---------------------------------------------------


@dataclass
class MemoryPreKeyStore:
    """A dict-backed ``protocol.session.PreKeyStore``.

    ``apply`` plays the client's part after a successful decryption: it deletes the
    one-time prekeys a ``Decrypted`` reports as consumed (a last-resort KEM prekey is
    never reported, so it stays).
    """

    signed: dict[int, bytes] = field(default_factory=dict)
    one_time: dict[int, bytes] = field(default_factory=dict)
    kem: dict[int, tuple[bytes, bool]] = field(default_factory=dict)

    def signed_prekey(self, key_id: int) -> bytes | None:
        return self.signed.get(key_id)

    def one_time_prekey(self, key_id: int) -> bytes | None:
        return self.one_time.get(key_id)

    def kem_prekey(self, key_id: int) -> tuple[bytes, bool] | None:
        return self.kem.get(key_id)

    def apply(self, result: Decrypted) -> None:
        if result.consumed_one_time_prekey_id is not None:
            del self.one_time[result.consumed_one_time_prekey_id]
        if result.consumed_kem_prekey_id is not None:
            seed_and_flag = self.kem.pop(result.consumed_kem_prekey_id)
            assert not seed_and_flag[1], "a last-resort KEM prekey was reported as consumed"


# --- a person's device ----------------------------------------------------------------


@dataclass
class Party:
    """One device of one account, with its prekeys and a seeded rng.

    ``bundle()`` hands out a fresh one-time X25519 prekey and a fresh one-time KEM prekey
    each time (ids count up from 1, per kind), as the server would; ``one_time=False``
    leaves the OPK out and ``kem_one_time=False`` hands out the last-resort KEM prekey.
    """

    username: str
    account: AccountIdentity
    device: DeviceKeys
    rng: Rng
    signed: SignedPreKeyPair
    last_resort: KemPreKeyPair
    store: MemoryPreKeyStore
    next_one_time_id: int = 1
    next_kem_id: int = 2  # id 1 is the last-resort KEM prekey

    @classmethod
    def create(
        cls,
        username: str,
        seed: int | str | None = None,
        device_id: int = 1,
        account: AccountIdentity | None = None,
    ) -> Party:
        rng = seeded_rng(f"{username}/{device_id}" if seed is None else seed)
        account = account or AccountIdentity.generate(rng)
        device = DeviceKeys.create(account, device_id, rng)
        signed = SignedPreKeyPair.generate(device, 1, rng)
        last_resort = KemPreKeyPair.generate(device, 1, last_resort=True, rng=rng)
        store = MemoryPreKeyStore(signed={1: signed.private_key}, kem={1: (last_resort.seed, True)})
        return cls(username, account, device, rng, signed, last_resort, store)

    def add_device(self, device_id: int, seed: int | str | None = None) -> Party:
        """Another device of the same account (same account identity key)."""
        return Party.create(self.username, seed=seed, device_id=device_id, account=self.account)

    @property
    def account_key(self) -> bytes:
        return self.account.public_key

    def bundle(self, one_time: bool = True, kem_one_time: bool = True) -> PreKeyBundle:
        opk = None
        if one_time:
            pair = OneTimePreKeyPair.generate(self.next_one_time_id, self.rng)
            self.next_one_time_id += 1
            self.store.one_time[pair.public.key_id] = pair.private_key
            opk = pair.public
        if kem_one_time:
            kem = KemPreKeyPair.generate(self.device, self.next_kem_id, False, self.rng)
            self.next_kem_id += 1
            self.store.kem[kem.public.key_id] = (kem.seed, False)
        else:
            kem = self.last_resort
        return PreKeyBundle(
            account_identity_key=self.account_key,
            certificate=self.device.certificate,
            signed_prekey=self.signed.public,
            one_time_prekey=opk,
            kem_prekey=kem.public,
        )

    def initiate(
        self, bundle: PreKeyBundle, existing: SessionRecord | None = None
    ) -> SessionRecord:
        return SessionRecord.initiate(self.device, bundle, existing=existing, rng=self.rng)

    def decrypt(
        self, record: SessionRecord, data: bytes, trusted_account_key: bytes | None = None
    ) -> Decrypted:
        """Decrypt into ``record`` and, on success, delete the consumed prekeys."""
        result = record.decrypt(
            data, self.device, self.store, trusted_account_key=trusted_account_key, rng=self.rng
        )
        self.store.apply(result)
        return result


def plaintext(sender: str, index: int) -> bytes:
    """A recognisable, distinct plaintext per message."""
    return f"{sender}#{index}".encode()


def start_conversation(
    alice: Party, bob: Party, one_time: bool = True, kem_one_time: bool = True
) -> tuple[SessionRecord, SessionRecord]:
    """Alice initiates from Bob's bundle, Bob decrypts her first message and replies, Alice
    decrypts the reply: both records are then past the prekey stage."""
    alice_record = alice.initiate(bob.bundle(one_time=one_time, kem_one_time=kem_one_time))
    bob_record = SessionRecord()
    first = alice_record.encrypt(b"hello bob")
    assert bob.decrypt(bob_record, first).plaintext == b"hello bob"
    reply = bob_record.encrypt(b"hello alice")
    assert alice.decrypt(alice_record, reply).plaintext == b"hello alice"
    return alice_record, bob_record


def copy_record(record: SessionRecord) -> SessionRecord:
    return SessionRecord.decode(record.encode())
