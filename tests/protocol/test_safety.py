"""Safety numbers and their QR payload (protocol/safety.py)."""

from __future__ import annotations

import inspect
from functools import cache

import pytest

from protocol.errors import ErrorCode
from protocol.safety import QR_VERSION, SafetyNumber, safety_number

from .helpers import Party, raises_code


@cache
def people() -> dict[str, Party]:
    return {
        "alice": Party.create("alice", seed="safety-alice"),
        "bob": Party.create("bob", seed="safety-bob"),
        "alice-new-key": Party.create("alice", seed="safety-alice-rekeyed"),
        "bob-new-key": Party.create("bob", seed="safety-bob-rekeyed"),
    }


@cache
def number(own: str, their: str) -> SafetyNumber:
    me, them = people()[own], people()[their]
    return safety_number(me.username, me.account_key, them.username, them.account_key)


def test_format() -> None:
    sn = number("alice", "bob")
    assert len(sn.digits) == 60 and sn.digits.isascii() and sn.digits.isdigit()
    groups = sn.groups()
    assert len(groups) == 12
    assert all(len(group) == 5 and group.isdigit() for group in groups)
    assert "".join(groups) == sn.digits
    assert len(sn.qr_payload) == 65
    assert sn.qr_payload[0] == QR_VERSION == 1


def test_both_sides_see_the_same_number() -> None:
    mine, theirs = number("alice", "bob"), number("bob", "alice")
    assert mine.digits == theirs.digits
    assert mine.qr_payload == theirs.qr_payload
    assert mine == theirs


def test_each_half_belongs_to_one_person() -> None:
    """The number is the two people's 30-digit halves, smaller first: Alice's half is the
    same whoever she compares with."""
    with_bob = number("alice", "bob")
    with_rekeyed_bob = number("alice", "bob-new-key")
    halves_bob = {with_bob.digits[:30], with_bob.digits[30:]}
    halves_rekeyed = {with_rekeyed_bob.digits[:30], with_rekeyed_bob.digits[30:]}
    assert len(halves_bob & halves_rekeyed) == 1  # Alice's half
    assert with_bob.digits[:30] <= with_bob.digits[30:]


def test_scan_matches_only_the_same_keys() -> None:
    alice_view, bob_view = number("alice", "bob"), number("bob", "alice")
    assert alice_view.matches_scan(bob_view.qr_payload)
    assert bob_view.matches_scan(alice_view.qr_payload)
    for changed in (number("bob-new-key", "alice"), number("bob", "alice-new-key")):
        assert not alice_view.matches_scan(changed.qr_payload)
        assert not changed.matches_scan(alice_view.qr_payload)
    payload = alice_view.qr_payload
    for index in (0, 1, 33, 64):
        tampered = payload[:index] + bytes((payload[index] ^ 1,)) + payload[index + 1 :]
        assert not alice_view.matches_scan(tampered)
    assert not alice_view.matches_scan(payload[:-1])
    assert not alice_view.matches_scan(b"")


@pytest.mark.parametrize("rekeyed", ["alice-new-key", "bob-new-key"])
def test_changes_when_either_account_key_changes(rekeyed: str) -> None:
    before = number("alice", "bob")
    after = number("alice", "bob-new-key") if rekeyed == "bob-new-key" else number(rekeyed, "bob")
    assert after.digits != before.digits
    assert after.qr_payload != before.qr_payload
    assert after.groups() != before.groups()


def test_changes_with_the_username() -> None:
    alice, bob = people()["alice"], people()["bob"]
    base = number("alice", "bob")
    renamed = safety_number("alicia", alice.account_key, bob.username, bob.account_key)
    assert renamed.digits != base.digits


def test_depends_only_on_account_keys_and_usernames() -> None:
    """Devices come and go without changing the number: nothing about a device is an input,
    and a new device of the same account yields the same number."""
    assert list(inspect.signature(safety_number).parameters) == [
        "own_username",
        "own_account_key",
        "their_username",
        "their_account_key",
    ]
    alice, bob = people()["alice"], people()["bob"]
    bob_phone = bob.add_device(2, seed="safety-bob-phone")
    assert bob_phone.account_key == bob.account_key
    assert bob_phone.device.identity_key != bob.device.identity_key
    via_new_device = safety_number(
        alice.username, alice.account_key, bob_phone.username, bob_phone.account_key
    )
    assert via_new_device == number("alice", "bob")


def test_deterministic() -> None:
    alice, bob = people()["alice"], people()["bob"]
    again = safety_number(alice.username, alice.account_key, bob.username, bob.account_key)
    assert again == number("alice", "bob")


@pytest.mark.parametrize("bad_key", [b"", b"\x00" * 31, b"\x00" * 33])
def test_wrong_key_length(bad_key: bytes) -> None:
    bob = people()["bob"]
    with raises_code(ErrorCode.BAD_KEY):
        safety_number("alice", bad_key, bob.username, bob.account_key)
    with raises_code(ErrorCode.BAD_KEY):
        safety_number(bob.username, bob.account_key, "alice", bad_key)
