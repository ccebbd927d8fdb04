"""Abuse limits (keys/throttles.py): sign-ups per address, password log-ins with a lock-out
that grows, is capped and cannot be turned against a victim, and prekey claims that
stop a drain while a legitimate first message still gets through. Each refusal is
``rate_limited`` with HTTP 429 and ``Retry-After``."""

from __future__ import annotations

import base64
from typing import Any
from unittest import mock

import pytest
from rest_framework.test import APIClient

from keys.models import KemPreKey, OneTimePreKey
from project import ratelimit
from protocol.keys import AccountIdentity, PreKeyBundle
from protocol.session import SessionRecord
from tests.server.factories import (
    STRONG_PASSWORD,
    DeviceMaterial,
    SignedUp,
    add_device_body,
    make_device,
    sign_up,
    sign_up_body,
)

pytestmark = pytest.mark.django_db


def _limits(settings: Any, **values: int) -> None:
    settings.SEALPOST = {**settings.SEALPOST, **values}


def _rate_limited(response: Any) -> int:
    """Assert a rate_limited refusal; its Retry-After in seconds."""
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "rate_limited"
    retry_after = int(response["Retry-After"])
    assert retry_after >= 1
    return retry_after


# --- sign-up --------------------------------------------------------------------------------


def _sign_up_from(address: str, username: str) -> Any:
    device = make_device(AccountIdentity.generate(), 1, one_time=0, kem=0)
    return APIClient(REMOTE_ADDR=address).post(
        "/api/v1/accounts", sign_up_body(username, device), format="json"
    )


def test_sign_ups_are_limited_per_address(settings: Any) -> None:
    _limits(settings, SIGNUPS_PER_ADDRESS=3)

    for index in range(3):
        assert _sign_up_from("203.0.113.7", f"user{index}").status_code == 201
    retry_after = _rate_limited(_sign_up_from("203.0.113.7", "user3"))

    assert retry_after <= settings.SEALPOST["SIGNUP_WINDOW_SECONDS"]
    assert _sign_up_from("203.0.113.8", "user4").status_code == 201  # another address


def test_behind_a_trusted_proxy_the_forwarded_address_counts(settings: Any) -> None:
    _limits(settings, SIGNUPS_PER_ADDRESS=1, NUM_PROXIES=1)

    def from_client(client_address: str, username: str, spoofed: str = "") -> Any:
        forwarded = f"{spoofed}, {client_address}" if spoofed else client_address
        device = make_device(AccountIdentity.generate(), 1, one_time=0, kem=0)
        return APIClient(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded).post(
            "/api/v1/accounts", sign_up_body(username, device), format="json"
        )

    assert from_client("198.51.100.1", "first").status_code == 201
    assert from_client("198.51.100.2", "second").status_code == 201  # same proxy, new client
    # A client cannot escape its own count by prepending addresses of its choosing.
    _rate_limited(from_client("198.51.100.1", "third", spoofed="192.0.2.99"))


# --- password log-in ------------------------------------------------------------------------


def _log_in(address: str, username: str, password: str) -> Any:
    return APIClient(REMOTE_ADDR=address).post(
        "/api/v1/session", {"username": username, "password": password}, format="json"
    )


@pytest.fixture
def victim() -> SignedUp:
    return sign_up("victim", one_time=0, kem=0)


def test_failures_lock_the_pair_with_a_growing_capped_lock_out(
    settings: Any, victim: SignedUp
) -> None:
    _limits(settings, LOGIN_FAILURES_PER_ADDRESS=3, LOGIN_FAILURES_PER_USERNAME=1000)
    attacker = "203.0.113.66"
    clock = [1_000_000.0]
    waits = []
    with mock.patch("project.ratelimit.time.time", lambda: clock[0]):
        for _ in range(3):
            assert _log_in(attacker, "victim", "wrong guess").status_code == 401
        for _ in range(8):
            wait = _rate_limited(_log_in(attacker, "victim", "wrong guess"))
            waits.append(wait)
            clock[0] += wait  # sit the lock out, then fail once more
            assert _log_in(attacker, "victim", "wrong guess").status_code == 401
        # While locked even the right password is refused unchecked: no oracle.
        _rate_limited(_log_in(attacker, "victim", STRONG_PASSWORD))

    base, cap = 60, settings.SEALPOST["LOGIN_LOCKOUT_MAX_SECONDS"]
    assert cap <= 15 * 60
    assert waits == [min(cap, base * 2**n) for n in range(8)]  # 60, 120, ..., then 900s
    # The victim, elsewhere, was never held up by any of it.
    assert _log_in("198.51.100.5", "victim", STRONG_PASSWORD).status_code == 200


def test_a_success_resets_the_pair(settings: Any, victim: SignedUp) -> None:
    _limits(settings, LOGIN_FAILURES_PER_ADDRESS=3)
    for _ in range(2):
        assert _log_in("198.51.100.5", "victim", "typo").status_code == 401
    assert _log_in("198.51.100.5", "victim", STRONG_PASSWORD).status_code == 200
    for _ in range(2):
        assert _log_in("198.51.100.5", "victim", "typo").status_code == 401
    assert _log_in("198.51.100.5", "victim", STRONG_PASSWORD).status_code == 200


def test_a_distributed_guess_locks_the_username_but_not_the_victims_known_address(
    settings: Any, victim: SignedUp
) -> None:
    _limits(settings, LOGIN_FAILURES_PER_ADDRESS=5, LOGIN_FAILURES_PER_USERNAME=10)
    home = "198.51.100.5"
    assert _log_in(home, "victim", STRONG_PASSWORD).status_code == 200  # a known address

    for bot in range(10):  # ten addresses, one guess each
        assert _log_in(f"203.0.113.{bot}", "victim", "guess").status_code == 401

    # The username is now locked for every address it has not seen log in ...
    _rate_limited(_log_in("203.0.113.200", "victim", "guess"))
    wait = _rate_limited(_log_in("192.0.2.44", "victim", STRONG_PASSWORD))
    assert wait <= settings.SEALPOST["LOGIN_LOCKOUT_MAX_SECONDS"]
    # ... but not for the victim at home, and other usernames are untouched.
    assert _log_in(home, "victim", STRONG_PASSWORD).status_code == 200
    sign_up("bystander", one_time=0, kem=0)
    assert _log_in("203.0.113.200", "bystander", STRONG_PASSWORD).status_code == 200


def test_the_username_lock_is_capped_and_then_a_new_address_gets_in(
    settings: Any, victim: SignedUp
) -> None:
    _limits(settings, LOGIN_FAILURES_PER_USERNAME=4)
    clock = [2_000_000.0]
    with mock.patch("project.ratelimit.time.time", lambda: clock[0]):
        for bot in range(30):  # far past the threshold: the lock grows to its cap
            _log_in(f"203.0.113.{bot}", "victim", "guess")
        wait = _rate_limited(_log_in("192.0.2.44", "victim", STRONG_PASSWORD))
        assert wait <= settings.SEALPOST["LOGIN_LOCKOUT_MAX_SECONDS"]
        clock[0] += wait
        assert _log_in("192.0.2.44", "victim", STRONG_PASSWORD).status_code == 200


def test_adding_a_device_with_a_password_is_limited_the_same_way(
    settings: Any, victim: SignedUp
) -> None:
    _limits(settings, LOGIN_FAILURES_PER_ADDRESS=2)
    client = APIClient(REMOTE_ADDR="203.0.113.66")
    body = add_device_body(victim, make_device(victim.account, 2))

    for _ in range(2):
        wrong = {**body, "username": "victim", "password": "wrong"}
        assert client.post("/api/v1/devices", wrong, format="json").status_code == 401
    right = {**body, "username": "victim", "password": STRONG_PASSWORD}
    _rate_limited(client.post("/api/v1/devices", right, format="json"))
    # The two endpoints share the count: the session log-in is locked too.
    _rate_limited(_log_in("203.0.113.66", "victim", STRONG_PASSWORD))
    assert (
        APIClient(REMOTE_ADDR="198.51.100.5")
        .post("/api/v1/devices", right, format="json")
        .status_code
        == 201
    )


# --- prekey claims --------------------------------------------------------------------------


class _Store:
    """Bob's private prekeys, as his client keeps them (protocol.session.PreKeyStore)."""

    def __init__(self, device: DeviceMaterial) -> None:
        self._device = device

    def signed_prekey(self, key_id: int) -> bytes | None:
        pair = self._device.signed_prekey
        return pair.private_key if pair.public.key_id == key_id else None

    def one_time_prekey(self, key_id: int) -> bytes | None:
        found = [p.private_key for p in self._device.one_time if p.public.key_id == key_id]
        return found[0] if found else None

    def kem_prekey(self, key_id: int) -> tuple[bytes, bool] | None:
        for pair in (*self._device.kem, self._device.last_resort):
            if pair.public.key_id == key_id:
                return pair.seed, pair.public.last_resort
        return None


def _claim(who: SignedUp, username: str) -> PreKeyBundle:
    response = who.client().post(f"/api/v1/accounts/{username}/bundles", {}, format="json")
    assert response.status_code == 200, response.json()
    [entry] = response.json()["bundles"]
    bundle = PreKeyBundle.decode(base64.b64decode(entry["bundle_b64"]))
    bundle.verify()
    return bundle


def _stock(username: str) -> tuple[int, int]:
    owner = {"device__account__user__username": username}
    return (
        OneTimePreKey.objects.filter(**owner).count(),
        KemPreKey.objects.filter(**owner).count(),
    )


def test_a_prekey_drain_is_stopped_and_a_first_message_still_gets_through(
    settings: Any,
) -> None:
    _limits(settings, PREKEY_CLAIMS_PER_DEVICE_PAIR=3)
    bob = sign_up("bob", one_time=20, kem=20)
    mallory = sign_up("mallory", one_time=0, kem=0)

    drained = [_claim(mallory, "bob") for _ in range(50)]

    with_one_time = [b for b in drained if b.one_time_prekey is not None]
    assert len(with_one_time) == 3
    assert all(b.one_time_prekey is None for b in drained[3:])
    # Beyond the limit: the signed prekey and the last-resort KEM prekey only.
    assert all(b.kem_prekey.last_resort for b in drained[3:])
    assert all(b.signed_prekey == bob.device.signed_prekey.public for b in drained)
    assert _stock("bob") == (17, 17)

    # Carol, a real new contact, gets a one-time prekey and her first message opens.
    carol = sign_up("carol", one_time=0, kem=0)
    bundle = _claim(carol, "bob")
    assert bundle.one_time_prekey is not None
    _first_message_opens(carol, bob, bundle)


def test_beyond_every_limit_the_last_resort_key_still_carries_a_first_message(
    settings: Any,
) -> None:
    _limits(settings, PREKEY_CLAIMS_PER_ACCOUNT=1)
    bob = sign_up("bob", one_time=5, kem=5)
    dave = sign_up("dave", one_time=0, kem=0)
    sign_up("erin", one_time=0, kem=0)

    _claim(dave, "erin")  # dave's whole allowance
    bundle = _claim(dave, "bob")

    assert bundle.one_time_prekey is None and bundle.kem_prekey.last_resort
    assert _stock("bob") == (5, 5)
    _first_message_opens(dave, bob, bundle)


def test_claims_of_one_target_device_are_capped_over_all_requesters(settings: Any) -> None:
    _limits(settings, PREKEY_CLAIMS_PER_TARGET_DEVICE=4)
    sign_up("bob", one_time=20, kem=20)
    sybils = [sign_up(f"sybil{i}", one_time=0, kem=0) for i in range(8)]

    bundles = [_claim(sybil, "bob") for sybil in sybils]

    assert [b.one_time_prekey is not None for b in bundles] == [True] * 4 + [False] * 4
    assert _stock("bob") == (16, 16)


def _first_message_opens(sender: SignedUp, recipient: SignedUp, bundle: PreKeyBundle) -> None:
    session = SessionRecord.initiate(sender.device.keys, bundle)
    ciphertext = session.encrypt(b"hello, first contact")
    opened = SessionRecord().decrypt(ciphertext, recipient.device.keys, _Store(recipient.device))
    assert opened.plaintext == b"hello, first contact"


def test_counters_are_keyed_by_digest_not_by_name() -> None:
    key = ratelimit.subject("victim", "198.51.100.5")
    assert "victim" not in key and "198" not in key and len(key) == 32
