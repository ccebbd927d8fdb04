"""Claiming prekey bundles: every bundle verifies, each one-time prekey goes out at most
once (also under concurrent claims, in real threads with their own database connections),
and a device running low hears about it after the claim commits. Also: concurrent sign-ups
for one username make one account."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connections
from rest_framework.test import APIClient

from keys import services
from keys.models import Account, Device, KemPreKey, OneTimePreKey
from protocol.keys import AccountIdentity, PreKeyBundle
from tests.server.factories import (
    LAST_RESORT_KEM_ID,
    SignedUp,
    add_device,
    authorized,
    b64,
    make_device,
    revoke_body,
    sign_up,
    sign_up_body,
)

CLAIMS = 20
STOCK = 10


@pytest.fixture(autouse=True)
def _no_claim_limits(settings: Any) -> None:
    """These tests are about handing each prekey out once; the claim limits, which hold
    one-time prekeys back from a claimer who asks too often, have their own tests
    (tests/server/test_abuse_limits.py)."""
    settings.SEALPOST = {
        **settings.SEALPOST,
        "PREKEY_CLAIMS_PER_ACCOUNT": 10**6,
        "PREKEY_CLAIMS_PER_DEVICE_PAIR": 10**6,
        "PREKEY_CLAIMS_PER_TARGET_DEVICE": 10**6,
    }


def claim(who: SignedUp, username: str, device_ids: list[int] | None = None) -> Any:
    body = {} if device_ids is None else {"device_ids": device_ids}
    return who.client().post(f"/api/v1/accounts/{username}/bundles", body, format="json")


def bundles_of(response: Any) -> list[PreKeyBundle]:
    assert response.status_code == 200, response.json()
    return [
        PreKeyBundle.decode(base64.b64decode(b["bundle_b64"])) for b in response.json()["bundles"]
    ]


def device_pk(username: str, device_id: int = 1) -> int:
    return int(Device.objects.get(account__user__username=username, device_id=device_id).pk)


# --- one claimer ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_claimed_bundle_verifies_and_carries_the_devices_keys() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob", device_id=4)

    response = claim(alice, "bob")

    body = response.json()
    assert body["username"] == "bob"
    assert body["identity_key_b64"] == b64(bob.account.public_key)
    [entry] = body["bundles"]
    assert entry["device_id"] == 4
    assert entry["registration_id"] == bob.device.keys.certificate.registration_id
    [bundle] = bundles_of(response)
    bundle.verify()
    assert bundle.account_identity_key == bob.account.public_key
    assert bundle.certificate == bob.device.keys.certificate
    assert bundle.signed_prekey == bob.device.signed_prekey.public
    assert bundle.one_time_prekey == bob.device.one_time[0].public
    assert bundle.kem_prekey == bob.device.kem[0].public


@pytest.mark.django_db
def test_one_time_prekeys_go_out_in_order_never_twice_then_the_last_resort() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob", one_time=3, kem=2)

    bundles = [bundles_of(claim(alice, "bob"))[0] for _ in range(5)]

    for bundle in bundles:
        bundle.verify()
    assert [b.one_time_prekey.key_id if b.one_time_prekey else None for b in bundles] == [
        1,
        2,
        3,
        None,
        None,
    ]
    assert [b.kem_prekey.key_id for b in bundles] == [
        1,
        2,
        LAST_RESORT_KEM_ID,
        LAST_RESORT_KEM_ID,
        LAST_RESORT_KEM_ID,
    ]
    assert [b.kem_prekey.last_resort for b in bundles] == [False, False, True, True, True]
    assert bundles[-1].kem_prekey == bob.device.last_resort.public
    assert not OneTimePreKey.objects.filter(device_id=device_pk("bob")).exists()
    assert not KemPreKey.objects.filter(device_id=device_pk("bob")).exists()


@pytest.mark.django_db
def test_a_claim_covers_every_device_or_the_ones_named() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob", device_id=1)
    add_device(bob, 2)
    add_device(bob, 3)

    every = claim(alice, "bob").json()["bundles"]
    named = claim(alice, "bob", [3, 1, 3]).json()["bundles"]
    none = claim(alice, "bob", []).json()["bundles"]

    assert [b["device_id"] for b in every] == [1, 2, 3]
    assert [b["device_id"] for b in named] == [3, 1]  # as asked, each once
    assert none == []


@pytest.mark.django_db
def test_an_unknown_device_is_named_and_nothing_is_consumed() -> None:
    alice = sign_up("alice")
    sign_up("bob")

    response = claim(alice, "bob", [1, 9])

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_device"
    assert "device_ids[1]" in response.json()["fields"]
    assert "9" in response.json()["message"]
    assert OneTimePreKey.objects.filter(device_id=device_pk("bob")).count() == 5


@pytest.mark.django_db
def test_claiming_an_unknown_account() -> None:
    alice = sign_up("alice")

    response = claim(alice, "nobody")

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_account"


@pytest.mark.django_db
def test_claiming_for_ones_own_account_skips_the_calling_device() -> None:
    alice = sign_up("alice")
    add_device(alice, 2)

    every = claim(alice, "alice").json()["bundles"]
    named = claim(alice, "alice", [1]).json()["bundles"]

    assert [b["device_id"] for b in every] == [2]
    assert [b["device_id"] for b in named] == [1]


@pytest.mark.django_db
def test_device_ids_are_checked() -> None:
    alice = sign_up("alice")
    sign_up("bob")

    for bad in ([0], [70000], "1", [None], [1.5], {"1": 1}):
        response = alice.client().post(
            "/api/v1/accounts/bob/bundles", {"device_ids": bad}, format="json"
        )
        assert response.status_code == 400, bad
        assert response.json()["code"] == "invalid_request", bad


# --- concurrent claims -----------------------------------------------------------------------
# On SQLite one transaction writes at a time (BEGIN IMMEDIATE), so there these tests show
# that concurrent claims neither fail nor time out; a read-then-delete claim would pass
# too. The race they guard against is PostgreSQL's: run with DATABASE_URL set to one
# (as CI's PostgreSQL job does), a claim without DELETE ... RETURNING hands key 1 to every
# thread, and one without SKIP LOCKED leaves most threads with no key while keys remain.


def run_in_threads[T](count: int, work: Callable[[], T]) -> list[T]:
    """Run ``work`` in ``count`` threads released together; each thread has its own
    database connection, closed when it ends. Any exception fails the test."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a claim never finished"
    assert not errors, errors
    return [result for result in results if result is not None]


def assert_handed_out_once(bundles: list[PreKeyBundle]) -> None:
    assert len(bundles) == CLAIMS
    for bundle in bundles:
        bundle.verify()
    one_time = [b.one_time_prekey.key_id for b in bundles if b.one_time_prekey is not None]
    assert sorted(one_time) == list(range(1, STOCK + 1))  # exactly 10, all distinct
    assert sum(b.one_time_prekey is None for b in bundles) == CLAIMS - STOCK
    kem = [b.kem_prekey.key_id for b in bundles if not b.kem_prekey.last_resort]
    assert sorted(kem) == list(range(1, STOCK + 1))
    assert sum(b.kem_prekey.key_id == LAST_RESORT_KEM_ID for b in bundles) == CLAIMS - STOCK
    assert not OneTimePreKey.objects.filter(device_id=device_pk("bob")).exists()
    assert not KemPreKey.objects.filter(device_id=device_pk("bob")).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_over_http_hand_each_one_time_prekey_out_once() -> None:
    alice = sign_up("alice")
    sign_up("bob", one_time=STOCK, kem=STOCK)

    def one_claim() -> PreKeyBundle:
        response = authorized(alice.token).post("/api/v1/accounts/bob/bundles", {}, format="json")
        [bundle] = bundles_of(response)
        return bundle

    assert_handed_out_once(run_in_threads(CLAIMS, one_claim))


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_through_the_service_hand_each_one_time_prekey_out_once() -> None:
    sign_up("bob", one_time=STOCK, kem=STOCK)

    def one_claim() -> PreKeyBundle:
        [claimed] = services.claim_bundles(None, "bob", None).bundles
        return PreKeyBundle.decode(claimed.bundle)

    assert_handed_out_once(run_in_threads(CLAIMS, one_claim))


# --- the low-stock notice ------------------------------------------------------------------------


async def receive_within(channel: str, seconds: float) -> dict[str, Any] | None:
    try:
        message: dict[str, Any] = await asyncio.wait_for(
            get_channel_layer().receive(channel), seconds
        )
    except TimeoutError:
        return None
    return message


@pytest.fixture
def in_memory_layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return get_channel_layer()


def join_group(layer: Any, device: int) -> str:
    channel: str = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(services.device_group(device), channel)
    return channel


@pytest.mark.django_db
def test_a_device_running_low_is_told_after_the_claim_commits(
    in_memory_layer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    alice = sign_up("alice")
    sign_up("bob", one_time=STOCK + 1, kem=STOCK + 5)
    channel = join_group(in_memory_layer, device_pk("bob"))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert claim(alice, "bob").status_code == 200  # leaves 10 of each: not low
    assert callbacks == []
    assert async_to_sync(receive_within)(channel, 0.1) is None

    with django_capture_on_commit_callbacks() as callbacks:
        assert claim(alice, "bob").status_code == 200  # leaves 9 one-time prekeys
    assert len(callbacks) == 1
    assert async_to_sync(receive_within)(channel, 0.1) is None  # nothing before the commit

    callbacks[0]()  # the commit

    message = async_to_sync(receive_within)(channel, 2)
    assert message == {"type": "prekeys.low", "count": STOCK - 1}


def test_the_device_group_name() -> None:
    assert services.device_group(42) == "device.42"


@pytest.mark.django_db
def test_revoking_a_device_tells_its_connections_after_the_commit(
    in_memory_layer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    alice = sign_up("alice")
    add_device(alice, 2)
    channel = join_group(in_memory_layer, device_pk("alice", 2))

    with django_capture_on_commit_callbacks() as callbacks:
        response = alice.client().delete("/api/v1/devices/2", revoke_body(alice, 2), format="json")
        assert response.status_code == 204
    assert async_to_sync(receive_within)(channel, 0.1) is None
    for callback in callbacks:
        callback()

    assert async_to_sync(receive_within)(channel, 2) == {"type": "device.revoked"}


@pytest.mark.django_db(transaction=True)  # a real commit runs the real on_commit hooks
def test_a_failing_channel_layer_does_not_fail_the_claim(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "tests.server.test_prekey_claims.BrokenLayer"}
    }
    alice = sign_up("alice")
    sign_up("bob", one_time=1, kem=1)

    response = claim(alice, "bob")

    assert response.status_code == 200


class BrokenLayer:
    """A channel layer whose every send fails, as a Redis that is down would."""

    extensions = ["groups"]

    def __init__(self, **kwargs: Any) -> None:
        pass

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        raise ConnectionError("channel layer is down")


@pytest.mark.django_db(transaction=True)
def test_concurrent_sign_ups_for_one_username_create_one_account() -> None:
    def one_sign_up() -> int:
        body = sign_up_body("carol", make_device(AccountIdentity.generate()))
        response = APIClient().post("/api/v1/accounts", body, format="json")
        assert response.status_code in (201, 409), response.json()
        if response.status_code == 409:
            assert response.json()["code"] == "username_taken"
        return int(response.status_code)

    statuses = run_in_threads(8, one_sign_up)

    assert sorted(statuses) == [201] + [409] * 7
    assert Account.objects.filter(user__username="carol").count() == 1
