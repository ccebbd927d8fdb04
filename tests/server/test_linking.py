"""Linking a new device (docs/api.md, "Linking a new device"): link tokens, the provisioning
relay with its long poll, and registering with a link token alone."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from keys import services
from keys.models import Device, LinkToken, ProvisioningSlot
from keys.tokens import hash_token
from protocol import primitives as p
from protocol.keys import AccountIdentity
from protocol.provisioning import LinkCode, ProvisionMessage, open_sealed, seal
from tests.server.factories import (
    SignedUp,
    add_device,
    authorized,
    b64,
    make_device,
    next_list_b64,
    sign_up,
)
from tests.server.test_keys_api import assert_error
from tests.server.test_prekey_claims import run_in_threads


@pytest.fixture(autouse=True)
def _fresh_rate_limit() -> Iterator[None]:
    cache.clear()  # the provisioning rate limit counts in the cache
    yield
    cache.clear()


def issue_link_token(owner: SignedUp) -> dict[str, Any]:
    response = owner.client().post("/api/v1/devices/link-tokens")
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    return body


def link_body(owner: SignedUp, device_id: int, link_token: str) -> dict[str, Any]:
    """What a new device sends: username, link token, its keys and the new list."""
    device = make_device(owner.account, device_id)
    return {
        "username": owner.username,
        "link_token": link_token,
        "device": device.payload(),
        "device_list_b64": next_list_b64(
            owner.username, owner.account, add=[device.keys.certificate]
        ),
    }


def register(body: dict[str, Any], client: APIClient | None = None) -> Any:
    return (client or APIClient()).post("/api/v1/devices", body, format="json")


def new_slot(client: APIClient | None = None) -> Any:
    return (client or APIClient()).post("/api/v1/provisioning")


# --- link tokens -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_link_token_is_issued_to_a_device_for_ten_minutes_and_stored_hashed() -> None:
    alice = sign_up("alice")

    body = issue_link_token(alice)

    assert len(body["link_token"]) == 43
    stored = LinkToken.objects.get()
    assert stored.token_hash == hash_token(body["link_token"])
    assert body["link_token"] not in stored.token_hash
    assert stored.used_at is None
    assert abs(stored.expires_at - (timezone.now() + timedelta(minutes=10))) < timedelta(seconds=5)
    assert body["expires_at"].startswith(stored.expires_at.isoformat()[:19])


@pytest.mark.django_db
def test_a_link_token_needs_a_device_token() -> None:
    sign_up("alice")
    client = APIClient()
    assert_error(client.post("/api/v1/devices/link-tokens"), 401, "unauthorized")
    client.login(username="alice", password="violet-anchor-tundra-42")  # a session is no device
    assert_error(client.post("/api/v1/devices/link-tokens"), 401, "unauthorized")
    assert not LinkToken.objects.exists()


@pytest.mark.django_db
def test_a_device_being_linked_reads_its_own_accounts_keys_with_the_link_token() -> None:
    alice = sign_up("alice")
    sign_up("bob")
    token = issue_link_token(alice)["link_token"]
    with_link = authorized(token)

    own = with_link.get("/api/v1/accounts/alice/keys")

    assert own.status_code == 200
    assert own.json() == alice.client().get("/api/v1/accounts/alice/keys").json()
    assert own.json()["device_list_b64"]
    assert LinkToken.objects.get().used_at is None  # reading does not use it
    # Its own account's keys only, and nothing else.
    assert_error(with_link.get("/api/v1/accounts/bob/keys"), 403, "forbidden")
    assert_error(with_link.get("/api/v1/devices"), 401, "unauthorized")
    assert_error(with_link.post("/api/v1/accounts/alice/bundles", {}), 401, "unauthorized")
    assert_error(APIClient().get("/api/v1/accounts/alice/keys"), 401, "unauthorized")


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["used", "expired"])
def test_a_used_or_expired_link_token_reads_nothing(state: str) -> None:
    alice = sign_up("alice")
    token = issue_link_token(alice)["link_token"]
    if state == "used":
        assert register(link_body(alice, 2, token)).status_code == 201
    else:
        LinkToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    response = authorized(token).get("/api/v1/accounts/alice/keys")

    assert_error(response, 401, "unauthorized")


@pytest.mark.django_db
def test_a_new_device_registers_with_the_link_token_alone_once() -> None:
    alice = sign_up("alice")
    token = issue_link_token(alice)["link_token"]
    body = link_body(alice, 2, token)

    response = register(body)

    assert response.status_code == 201, response.json()
    assert response.json()["username"] == "alice"
    assert response.json()["device_id"] == 2
    assert authorized(response.json()["token"]).get("/api/v1/devices").status_code == 200
    assert LinkToken.objects.get().used_at is not None
    # Used: not found, even for a perfectly good next registration.
    again = register(link_body(alice, 3, token))
    assert_error(again, 404, "link_not_found")
    assert Device.objects.count() == 2


@pytest.mark.django_db
def test_an_unknown_link_token_or_another_accounts_is_not_found() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob")
    bobs = issue_link_token(bob)["link_token"]

    assert_error(register(link_body(alice, 2, "A" * 43)), 404, "link_not_found")
    assert_error(register(link_body(alice, 2, bobs)), 404, "link_not_found")
    body = link_body(alice, 2, bobs)
    body["username"] = "nobody"
    assert_error(register(body), 404, "link_not_found")
    assert Device.objects.count() == 2
    assert LinkToken.objects.get().used_at is None


@pytest.mark.django_db
def test_an_expired_link_token_is_gone() -> None:
    alice = sign_up("alice")
    token = issue_link_token(alice)["link_token"]
    LinkToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert_error(register(link_body(alice, 2, token)), 410, "link_expired")
    assert Device.objects.count() == 1


@pytest.mark.django_db
def test_a_refused_registration_does_not_use_the_token() -> None:
    alice = sign_up("alice")
    token = issue_link_token(alice)["link_token"]
    body = link_body(alice, 2, token)
    stale = {**body, "device_list_b64": next_list_b64("alice", alice.account, version=1)}

    assert_error(register(stale), 400, "invalid_value", "device_list_b64")
    assert LinkToken.objects.get().used_at is None

    assert register(body).status_code == 201


@pytest.mark.django_db
def test_a_link_token_goes_with_the_username() -> None:
    alice = sign_up("alice")
    body = link_body(alice, 2, issue_link_token(alice)["link_token"])
    del body["username"]

    assert_error(register(body), 400, "invalid_request", "username")


@pytest.mark.django_db
def test_the_seventh_device_is_refused_with_a_link_token_too() -> None:
    alice = sign_up("alice")
    for device_id in range(2, 7):
        add_device(alice, device_id, one_time=0, kem=0)
    token = issue_link_token(alice)["link_token"]

    assert_error(register(link_body(alice, 7, token)), 422, "device_limit_reached")
    assert Device.objects.count() == 6
    assert LinkToken.objects.get().used_at is None


@pytest.mark.django_db(transaction=True)
def test_a_link_token_is_used_once_under_concurrent_registrations() -> None:
    alice = sign_up("alice")
    token = issue_link_token(alice)["link_token"]
    # Two different new devices, each with a list naming the existing device and itself.
    bodies = [link_body(alice, 2, token), link_body(alice, 3, token)]
    lock = threading.Lock()

    def one_registration() -> tuple[int, str]:
        with lock:
            body = bodies.pop()
        response = register(body)
        return response.status_code, response.json().get("code", "")

    outcomes = run_in_threads(2, one_registration)

    assert sorted(outcomes) == [(201, ""), (404, "link_not_found")]
    assert Device.objects.filter(account__user__username="alice").count() == 2
    assert LinkToken.objects.get().used_at is not None


# --- provisioning slots --------------------------------------------------------------------


def address_bytes(address: str) -> bytes:
    return base64.urlsafe_b64decode(address + "=" * (-len(address) % 4))


@pytest.mark.django_db
def test_a_provisioning_address_is_16_random_bytes_for_ten_minutes() -> None:
    first = new_slot()
    second = new_slot()

    assert first.status_code == second.status_code == 201
    address = first.json()["address"]
    assert len(address) == 22 and "=" not in address
    assert len(address_bytes(address)) == 16
    assert address != second.json()["address"]
    slot = ProvisioningSlot.objects.get(address=address)
    assert slot.sealed is None
    assert abs(slot.expires_at - (timezone.now() + timedelta(minutes=10))) < timedelta(seconds=5)


@pytest.mark.django_db
def test_provisioning_addresses_are_rate_limited_per_client_address() -> None:
    for _ in range(services.PROVISIONING_RATE):
        assert new_slot().status_code == 201

    refused = new_slot()

    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused["Retry-After"]) <= 60
    other = APIClient(REMOTE_ADDR="192.0.2.7")
    assert new_slot(other).status_code == 201
    assert ProvisioningSlot.objects.count() == services.PROVISIONING_RATE + 1


@pytest.mark.django_db
def test_filling_an_address_takes_a_device_token_and_happens_once() -> None:
    alice = sign_up("alice")
    address = new_slot().json()["address"]
    path = f"/api/v1/provisioning/{address}"
    sealed = {"sealed_b64": b64(b"sealed message")}

    assert_error(APIClient().put(path, sealed, format="json"), 401, "unauthorized")
    assert alice.client().put(path, sealed, format="json").status_code == 204
    assert bytes(ProvisioningSlot.objects.get().sealed or b"") == b"sealed message"

    again = alice.client().put(path, {"sealed_b64": b64(b"another")}, format="json")

    assert_error(again, 409, "invalid_request")
    assert bytes(ProvisioningSlot.objects.get().sealed or b"") == b"sealed message"


@pytest.mark.django_db
def test_a_sealed_message_is_at_most_4_kib_and_not_empty() -> None:
    alice = sign_up("alice")
    path = f"/api/v1/provisioning/{new_slot().json()['address']}"

    too_big = alice.client().put(path, {"sealed_b64": b64(b"x" * 4097)}, format="json")
    empty = alice.client().put(path, {"sealed_b64": ""}, format="json")
    mangled = alice.client().put(path, {"sealed_b64": "@@"}, format="json")

    assert_error(too_big, 413, "too_large", "sealed_b64")
    assert_error(empty, 400, "invalid_value", "sealed_b64")
    assert_error(mangled, 400, "malformed", "sealed_b64")
    assert (
        alice.client().put(path, {"sealed_b64": b64(b"x" * 4096)}, format="json").status_code == 204
    )


@pytest.mark.django_db
def test_unknown_and_expired_addresses() -> None:
    alice = sign_up("alice")
    address = new_slot().json()["address"]
    ProvisioningSlot.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    sealed = {"sealed_b64": b64(b"sealed")}

    for path, status, code in [
        ("/api/v1/provisioning/AAAAAAAAAAAAAAAAAAAAAA", 404, "link_not_found"),
        (f"/api/v1/provisioning/{address}", 410, "link_expired"),
    ]:
        assert_error(alice.client().put(path, sealed, format="json"), status, code)
        assert_error(APIClient().get(path), status, code)


@pytest.mark.django_db
def test_taking_the_message_hands_it_out_once_and_deletes_the_slot() -> None:
    alice = sign_up("alice")
    address = new_slot().json()["address"]
    path = f"/api/v1/provisioning/{address}"

    empty = APIClient().get(path)
    assert empty.status_code == 204
    assert (
        alice.client().put(path, {"sealed_b64": b64(b"sealed")}, format="json").status_code == 204
    )

    taken = APIClient().get(f"{path}?wait=0")

    assert taken.status_code == 200
    assert taken.json() == {"sealed_b64": b64(b"sealed")}
    assert taken["Cache-Control"] == "no-store"
    assert not ProvisioningSlot.objects.exists()
    assert_error(APIClient().get(path), 404, "link_not_found")


@pytest.mark.django_db
@pytest.mark.parametrize("wait", ["31", "-1", "soon", "1.5"])
def test_wait_is_a_whole_number_of_seconds_up_to_30(wait: str) -> None:
    address = new_slot().json()["address"]

    response = APIClient().get(f"/api/v1/provisioning/{address}?wait={wait}")

    assert_error(response, 400, "invalid_request", "wait")


@pytest.mark.django_db
def test_linking_end_to_end_through_the_server() -> None:
    """The whole flow of docs/api.md with real keys: the server relays a sealed message it
    cannot read, and the new device registers with what it found inside."""
    alice = sign_up("alice")
    # 1. The new device: an address, and its link code.
    address = new_slot().json()["address"]
    ephemeral = p.random_bytes(32)
    code = LinkCode.parse(LinkCode(address_bytes(address), p.x25519_public_key(ephemeral)).text())
    # 2. The existing device: a link token, sealed with the account seed to the code.
    token = issue_link_token(alice)["link_token"]
    message = ProvisionMessage("alice", alice.account.seed, token, send_history=False)
    sealed = seal(code, message)
    put = alice.client().put(
        f"/api/v1/provisioning/{code.address_text}", {"sealed_b64": b64(sealed)}, format="json"
    )
    assert put.status_code == 204
    # 3. The new device: takes the message, opens it, registers.
    taken = APIClient().get(f"/api/v1/provisioning/{address}?wait=1")
    opened = open_sealed(code, ephemeral, base64.b64decode(taken.json()["sealed_b64"]))
    account = AccountIdentity.from_seed(opened.account_seed)
    assert account.public_key == alice.account.public_key
    device = make_device(account, 2)

    response = register(
        {
            **device.payload(),
            "device_list_b64": next_list_b64(
                opened.username, account, add=[device.keys.certificate]
            ),
            "username": opened.username,
            "link_token": opened.link_token,
        }
    )

    assert response.status_code == 201, response.json()
    assert response.json()["device_id"] == 2


# --- the long poll, through the ASGI application ------------------------------------------------
# Through project.asgi (Django's ASGIHandler, as under Daphne), not django.test.AsyncClient:
# the handler gives every request its own thread-sensitive context, so a waiting GET does
# not hold up the PUT's synchronous parts (WhiteNoise's middleware is synchronous, so each
# request's middleware chain runs in a thread of its own context).


def asgi_client() -> httpx.AsyncClient:
    from project.asgi import application

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://localhost"
    )


# database_sync_to_async (not sync_to_async, nor the ORM's a* methods) closes the
# connection its thread opened, so none is left open when the test database is dropped.


@database_sync_to_async
def _prepare() -> tuple[str, str]:
    alice = sign_up("alice")
    return new_slot().json()["address"], alice.token


@database_sync_to_async
def _slot_exists() -> bool:
    return bool(ProvisioningSlot.objects.exists())


@pytest.mark.django_db(transaction=True)
async def test_the_long_poll_answers_as_soon_as_the_message_is_put() -> None:
    address, token = await _prepare()
    path = f"/api/v1/provisioning/{address}"
    async with asgi_client() as client:
        waiting = asyncio.create_task(client.get(path, params={"wait": 20}))
        await asyncio.sleep(0.6)
        assert not waiting.done()  # it is waiting, not answering at once
        put = await client.put(
            path,
            json={"sealed_b64": b64(b"sealed")},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert put.status_code == 204, put.text
        put_at = time.monotonic()

        response = await asyncio.wait_for(waiting, 5)

    assert time.monotonic() - put_at < 1.5  # one poll interval (0.25 s) and change
    assert response.status_code == 200
    assert response.json() == {"sealed_b64": b64(b"sealed")}
    assert response.headers["cache-control"] == "no-store"
    assert not await _slot_exists()


@pytest.mark.django_db(transaction=True)
async def test_the_long_poll_answers_204_when_the_wait_is_over() -> None:
    address, _ = await _prepare()
    started = time.monotonic()

    async with asgi_client() as client:
        response = await client.get(f"/api/v1/provisioning/{address}", params={"wait": 1})

    elapsed = time.monotonic() - started
    assert response.status_code == 204
    assert 1 <= elapsed < 3
    assert await _slot_exists()  # still waiting for its message


@pytest.mark.django_db(transaction=True)
async def test_the_long_poll_reports_errors_in_the_usual_shape() -> None:
    await _prepare()

    async with asgi_client() as client:
        unknown = await client.get("/api/v1/provisioning/nothing-here", params={"wait": 5})
        too_long = await client.get("/api/v1/provisioning/nothing-here", params={"wait": 31})

    assert unknown.status_code == 404
    assert unknown.json()["code"] == "link_not_found"
    assert unknown.json()["message"]
    assert too_long.status_code == 400
    assert too_long.json()["code"] == "invalid_request"
    assert "wait" in too_long.json()["fields"]
