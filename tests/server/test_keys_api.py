"""The keys API (docs/api.md: "Accounts and sessions", "Devices", "Other accounts' keys"),
driven over HTTP with real keys. Every refusal is checked by status and ``code``."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from keys import services
from keys.models import Account, Device, KemPreKey, OneTimePreKey
from messaging.models import Envelope
from protocol.keys import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyPair,
    SignedPreKeyPair,
)
from tests.server.factories import (
    LAST_RESORT_KEM_ID,
    STRONG_PASSWORD,
    SignedUp,
    add_device,
    add_device_body,
    authorized,
    b64,
    kem_prekeys,
    make_device,
    next_list_b64,
    one_time_prekeys,
    revoke_body,
    sign_up,
    sign_up_body,
)

pytestmark = pytest.mark.django_db


def post_sign_up(body: dict[str, Any], client: APIClient | None = None) -> Any:
    return (client or APIClient()).post("/api/v1/accounts", body, format="json")


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> None:
    body = response.json()
    assert response.status_code == status, body
    assert body["code"] == code, body
    assert body["message"]
    if field is not None:
        assert field in body["fields"], body
        assert body["fields"][field][0]["code"] == code, body


def fresh_body(username: str = "alice", **device_kwargs: Any) -> dict[str, Any]:
    return sign_up_body(username, make_device(AccountIdentity.generate(), **device_kwargs))


# --- sign-up -------------------------------------------------------------------------------------


def test_sign_up_creates_the_account_and_its_first_device() -> None:
    account = AccountIdentity.generate()
    device = make_device(account, device_id=7, one_time=3, kem=2)

    response = post_sign_up(sign_up_body("Alice", device))

    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "alice"  # lower-cased
    assert body["device_id"] == 7
    assert len(body["token"]) == 43
    stored = Device.objects.get()
    assert bytes(stored.account.identity_key) == account.public_key
    assert bytes(stored.certificate) == device.keys.certificate.encode()
    assert stored.name == "laptop"
    assert OneTimePreKey.objects.filter(device=stored).count() == 3
    assert KemPreKey.objects.filter(device=stored).count() == 2
    # The token is stored only as its hash, and it works.
    assert body["token"] not in stored.token_hash
    listed = authorized(body["token"]).get("/api/v1/devices")
    assert listed.status_code == 200
    assert [d["device_id"] for d in listed.json()] == [7]


def test_sign_up_without_one_time_prekeys_is_allowed() -> None:
    response = post_sign_up(fresh_body(one_time=0, kem=0))

    assert response.status_code == 201


@pytest.mark.parametrize("username", ["ab", "1alice", "al ice", "alice!", "a" * 33, ""])
def test_sign_up_refuses_an_invalid_username(username: str) -> None:
    response = post_sign_up(fresh_body(username))

    if username == "":
        assert_error(response, 400, "invalid_request", "username")  # blank: a missing field
    else:
        assert_error(response, 400, "invalid_username", "username")
    assert not Account.objects.exists()


def test_sign_up_refuses_a_taken_username_in_any_case() -> None:
    sign_up("alice")

    response = post_sign_up(fresh_body("ALICE"))

    assert_error(response, 409, "username_taken", "username")
    assert Account.objects.count() == 1


def test_sign_up_race_for_one_username_is_decided_by_the_unique_index(monkeypatch: Any) -> None:
    # As if both requests passed the early check before either committed.
    monkeypatch.setattr(services, "_username_taken", lambda username: False)
    sign_up("alice")

    response = post_sign_up(fresh_body("alice"))

    assert_error(response, 409, "username_taken", "username")
    assert Account.objects.count() == 1


@pytest.mark.parametrize("password", ["short", "password123", "12345678901", "alice2024"])
def test_sign_up_refuses_a_weak_password_saying_why(password: str) -> None:
    body = fresh_body("alice")
    body["password"] = password

    response = post_sign_up(body)

    assert_error(response, 400, "weak_password", "password")
    assert "password" in response.json()["message"].lower()
    assert not get_user_model().objects.exists()


def test_sign_up_refuses_an_identity_key_of_the_wrong_length() -> None:
    body = fresh_body()
    body["identity_key_b64"] = b64(b"\x01" * 31)

    assert_error(post_sign_up(body), 400, "bad_key", "identity_key_b64")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("identity_key_b64", "not base64!"),
        ("identity_key_b64", "YWJj"[:3]),  # missing padding
        ("device.certificate_b64", "AAAA\n"),
        ("device.signed_prekey_b64", "€€€€"),
        ("device.kem_prekeys_b64[2]", "***="),
        ("device.one_time_prekeys_b64[0]", "YQ"),
    ],
)
def test_sign_up_refuses_values_that_are_not_strict_base64(field: str, value: str) -> None:
    body = fresh_body()
    set_field(body, field, value)

    assert_error(post_sign_up(body), 400, "malformed", field)


def set_field(body: dict[str, Any], path: str, value: Any) -> None:
    """Set ``device.kem_prekeys_b64[2]``-style paths in a request body."""
    *parents, last = path.split(".")
    target = body
    for name in parents:
        target = target[name]
    if last.endswith("]"):
        name, index = last[:-1].split("[")
        target[name][int(index)] = value
    else:
        target[last] = value


def get_field(body: dict[str, Any], path: str) -> Any:
    *parents, last = path.split(".")
    target = body
    for name in parents:
        target = target[name]
    if last.endswith("]"):
        name, index = last[:-1].split("[")
        return target[name][int(index)]
    return target[last]


def cut(value: str, keep: int) -> str:
    return b64(base64.b64decode(value)[:keep])


@pytest.mark.parametrize(
    ("field", "change", "code"),
    [
        ("device.certificate_b64", lambda v: cut(v, 20), "truncated"),
        ("device.certificate_b64", lambda v: b64(base64.b64decode(v) + b"\x00"), "trailing_bytes"),
        ("device.signed_prekey_b64", lambda v: cut(v, 40), "truncated"),
        ("device.last_resort_kem_prekey_b64", lambda v: b64(b""), "truncated"),
        (
            "device.one_time_prekeys_b64[1]",
            lambda v: b64(base64.b64decode(v) + b"x"),
            "trailing_bytes",
        ),
        ("device.kem_prekeys_b64[3]", lambda v: cut(v, 600), "truncated"),
        # key id 0 is out of range
        ("device.one_time_prekeys_b64[0]", lambda v: b64(b"\x00" + bytes(32)), "invalid_value"),
    ],
)
def test_sign_up_refuses_keys_that_do_not_decode_naming_the_field(
    field: str, change: Any, code: str
) -> None:
    body = fresh_body()
    set_field(body, field, change(get_field(body, field)))

    assert_error(post_sign_up(body), 400, code, field)
    assert not Account.objects.exists()


def test_sign_up_refuses_a_certificate_signed_by_another_account_key() -> None:
    device = make_device(AccountIdentity.generate())
    body = sign_up_body("alice", device)
    body["identity_key_b64"] = b64(AccountIdentity.generate().public_key)

    response = post_sign_up(body)

    assert_error(response, 400, "bad_signature", "device.certificate_b64")
    assert not Account.objects.exists()


def test_sign_up_refuses_a_signed_prekey_signed_by_another_device() -> None:
    account = AccountIdentity.generate()
    device = make_device(account)
    other = DeviceKeys.create(account, 2)
    body = sign_up_body("alice", device)
    body["device"]["signed_prekey_b64"] = b64(SignedPreKeyPair.generate(other, 9).public.encode())

    response = post_sign_up(body)

    assert_error(response, 400, "bad_signature", "device.signed_prekey_b64")
    assert "signed prekey 9" in response.json()["message"]


def test_sign_up_refuses_a_kem_prekey_signed_by_another_device_naming_it() -> None:
    account = AccountIdentity.generate()
    device = make_device(account)
    other = DeviceKeys.create(account, 2)
    forged = KemPreKeyPair.generate(other, 4, last_resort=False).public
    body = sign_up_body("alice", device)
    body["device"]["kem_prekeys_b64"][3] = b64(forged.encode())

    response = post_sign_up(body)

    assert_error(response, 400, "bad_signature", "device.kem_prekeys_b64[3]")
    assert "KEM prekey 4" in response.json()["message"]


def test_sign_up_refuses_a_wrong_last_resort_flag() -> None:
    device = make_device(AccountIdentity.generate())
    one_time_kem = device.kem[0].public.encode()

    body = sign_up_body("alice", device)
    body["device"]["last_resort_kem_prekey_b64"] = b64(one_time_kem)
    assert_error(post_sign_up(body), 400, "invalid_value", "device.last_resort_kem_prekey_b64")

    body = sign_up_body("alice", device)
    body["device"]["kem_prekeys_b64"][1] = b64(device.last_resort.public.encode())
    assert_error(post_sign_up(body), 400, "invalid_value", "device.kem_prekeys_b64[1]")


@pytest.mark.parametrize("field", ["one_time_prekeys_b64", "kem_prekeys_b64"])
def test_sign_up_refuses_more_than_100_prekeys_of_a_kind(field: str) -> None:
    account = AccountIdentity.generate()
    device = make_device(account, one_time=0, kem=0)
    if field == "one_time_prekeys_b64":
        device = device.with_prekeys(one_time_prekeys(1, 101), ())
    else:
        device = device.with_prekeys((), kem_prekeys(device.keys, 1, 101))

    response = post_sign_up(sign_up_body("alice", device))

    assert_error(response, 413, "prekey_batch_too_large", f"device.{field}")


def test_sign_up_accepts_exactly_100_prekeys_of_a_kind() -> None:
    device = make_device(AccountIdentity.generate(), one_time=100, kem=100)

    assert post_sign_up(sign_up_body("alice", device)).status_code == 201


@pytest.mark.parametrize("kind", ["one_time", "kem"])
def test_sign_up_refuses_a_prekey_id_twice(kind: str) -> None:
    device = make_device(AccountIdentity.generate(), one_time=3, kem=3)
    if kind == "one_time":
        device = device.with_prekeys(device.one_time + one_time_prekeys(2, 1), device.kem)
        field = "device.one_time_prekeys_b64[3]"
    else:
        device = device.with_prekeys(device.one_time, device.kem + kem_prekeys(device.keys, 1, 1))
        field = "device.kem_prekeys_b64[3]"

    assert_error(post_sign_up(sign_up_body("alice", device)), 409, "duplicate_prekey_id", field)


def test_sign_up_refuses_a_one_time_kem_prekey_with_the_last_resort_id() -> None:
    device = make_device(AccountIdentity.generate(), kem=0)
    device = device.with_prekeys(device.one_time, kem_prekeys(device.keys, LAST_RESORT_KEM_ID, 1))

    response = post_sign_up(sign_up_body("alice", device))

    assert_error(response, 409, "duplicate_prekey_id", "device.kem_prekeys_b64[0]")


def test_sign_up_names_missing_and_mistyped_fields() -> None:
    body = fresh_body()
    del body["device"]["signed_prekey_b64"]
    body["device"]["one_time_prekeys_b64"] = "not a list"

    response = post_sign_up(body)

    assert_error(response, 400, "invalid_request")
    fields = response.json()["fields"]
    assert "device.signed_prekey_b64" in fields
    assert "device.one_time_prekeys_b64" in fields


def test_sign_up_takes_json_only() -> None:
    response = APIClient().post("/api/v1/accounts", {"username": "alice"})  # multipart

    assert_error(response, 400, "malformed")


# --- sessions and CSRF ---------------------------------------------------------------------------


def browser() -> APIClient:
    """A client that behaves like a browser page: CSRF checks on, a CSRF cookie set."""
    client = APIClient(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "a" * 32
    return client


def test_an_api_client_without_cookies_needs_no_csrf_token() -> None:
    client = APIClient(enforce_csrf_checks=True)

    response = post_sign_up(fresh_body(), client)

    assert response.status_code == 201
    assert "sessionid" not in response.cookies  # and it is not logged in


def test_a_browser_sign_up_needs_the_csrf_token_and_logs_in() -> None:
    client = browser()

    refused = post_sign_up(fresh_body(), client)
    assert_error(refused, 403, "forbidden")
    assert "CSRF" in refused.json()["message"]
    assert not Account.objects.exists()

    response = client.post(
        "/api/v1/accounts", fresh_body(), format="json", HTTP_X_CSRFTOKEN="a" * 32
    )
    assert response.status_code == 201
    assert "sessionid" in response.cookies
    # The session now authenticates the web pages' requests.
    listed = client.get("/api/v1/devices")
    assert listed.status_code == 200
    assert listed.json()[0]["current"] is False  # a session is no device


def test_log_in_and_out_with_a_session() -> None:
    sign_up("alice")
    client = browser()
    csrf = {"HTTP_X_CSRFTOKEN": "a" * 32}

    wrong = client.post(
        "/api/v1/session", {"username": "alice", "password": "nope"}, format="json", **csrf
    )
    assert_error(wrong, 401, "unauthorized")

    no_token = client.post(
        "/api/v1/session", {"username": "alice", "password": STRONG_PASSWORD}, format="json"
    )
    assert_error(no_token, 403, "forbidden")

    response = client.post(
        "/api/v1/session", {"username": "Alice", "password": STRONG_PASSWORD}, format="json", **csrf
    )
    assert response.status_code == 200
    assert response.json() == {"username": "alice"}
    csrf = {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}  # login rotates it
    assert client.get("/api/v1/devices").status_code == 200

    # A session-authenticated write without the CSRF token is refused.
    assert_error(client.delete("/api/v1/devices/1"), 403, "forbidden")
    assert Device.objects.count() == 1

    assert client.delete("/api/v1/session", **csrf).status_code == 204
    assert_error(client.get("/api/v1/devices"), 401, "unauthorized")


def test_session_log_in_refuses_an_unknown_user() -> None:
    response = APIClient().post(
        "/api/v1/session", {"username": "nobody", "password": STRONG_PASSWORD}, format="json"
    )

    assert_error(response, 401, "unauthorized")


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer " + "A" * 43, "Bearer", "Bearer a b", "Token abc"],
)
def test_wrong_or_absent_credentials_are_unauthorized(authorization: str | None) -> None:
    sign_up("alice")
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    for method, path in [
        ("get", "/api/v1/devices"),
        ("get", "/api/v1/devices/self/prekeys"),
        ("get", "/api/v1/accounts/alice/keys"),
        ("post", "/api/v1/accounts/alice/bundles"),
        ("patch", "/api/v1/devices/1"),
        ("delete", "/api/v1/devices/1"),
    ]:
        response = getattr(client, method)(path, {}, format="json")
        assert_error(response, 401, "unauthorized")
    assert OneTimePreKey.objects.count() == 5


# --- devices -------------------------------------------------------------------------------------


def test_add_a_device_with_a_device_token() -> None:
    alice = sign_up("alice")

    device, token = add_device(alice, 2, one_time=4, kem=1)

    listed = authorized(token).get("/api/v1/devices").json()
    assert [(d["device_id"], d["current"]) for d in listed] == [(1, False), (2, True)]
    assert listed[1]["name"] == "laptop"
    assert listed[1]["last_seen_at"] is not None
    counts = authorized(token).get("/api/v1/devices/self/prekeys").json()
    assert counts == {
        "one_time_prekeys": 4,
        "kem_prekeys": 1,
        "low_watermark": 10,
        "max_stored": 1000,
    }


def test_add_a_device_with_username_and_password() -> None:
    alice = sign_up("alice")
    device = make_device(alice.account, 2)

    response = APIClient().post(
        "/api/v1/devices",
        {**add_device_body(alice, device), "username": "alice", "password": STRONG_PASSWORD},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["username"] == "alice"
    assert response.json()["device_id"] == 2


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"username": "alice"},
        {"username": "alice", "password": "wrong"},
        {"username": "bob", "password": STRONG_PASSWORD},
    ],
)
def test_add_a_device_refuses_missing_or_wrong_credentials(credentials: dict[str, str]) -> None:
    alice = sign_up("alice")
    device = make_device(alice.account, 2)

    response = APIClient().post(
        "/api/v1/devices", {**add_device_body(alice, device), **credentials}, format="json"
    )

    assert_error(response, 401, "unauthorized")
    assert Device.objects.count() == 1


def test_add_a_device_also_takes_the_device_object_under_device() -> None:
    alice = sign_up("alice")
    device = make_device(alice.account, 2)

    body = add_device_body(alice, device)
    response = alice.client().post(
        "/api/v1/devices",
        {"device": device.payload(), "device_list_b64": body["device_list_b64"]},
        format="json",
    )
    assert response.status_code == 201

    other = make_device(AccountIdentity.generate(), 3)
    body = add_device_body(alice, other)
    refused = alice.client().post(
        "/api/v1/devices",
        {"device": other.payload(), "device_list_b64": body["device_list_b64"]},
        format="json",
    )
    assert_error(refused, 400, "bad_signature", "device.certificate_b64")


def test_add_a_device_refuses_a_certificate_not_signed_by_the_account_key() -> None:
    alice = sign_up("alice")
    stranger = make_device(AccountIdentity.generate(), 2)

    response = alice.client().post(
        "/api/v1/devices", add_device_body(alice, stranger), format="json"
    )

    assert_error(response, 400, "bad_signature", "certificate_b64")
    assert Device.objects.count() == 1


def test_add_a_device_refuses_a_device_id_in_use() -> None:
    alice = sign_up("alice")
    again = make_device(alice.account, alice.device.device_id)
    device_list = next_list_b64("alice", alice.account, remove=[1], add=[again.keys.certificate])

    response = alice.client().post(
        "/api/v1/devices", {**again.payload(), "device_list_b64": device_list}, format="json"
    )

    assert_error(response, 409, "device_id_taken", "certificate_b64")


def test_the_seventh_device_is_refused() -> None:
    alice = sign_up("alice")
    for device_id in range(2, 7):
        add_device(alice, device_id, one_time=0, kem=0)

    seventh = make_device(alice.account, 7, one_time=0, kem=0)
    response = alice.client().post(
        "/api/v1/devices", add_device_body(alice, seventh), format="json"
    )

    assert_error(response, 422, "device_limit_reached")
    assert Device.objects.count() == 6


def test_the_device_limit_comes_from_settings(settings: Any) -> None:
    settings.SEALPOST = {**settings.SEALPOST, "MAX_DEVICES_PER_ACCOUNT": 2}
    alice = sign_up("alice")
    add_device(alice, 2, one_time=0, kem=0)

    third = make_device(alice.account, 3, one_time=0, kem=0)
    response = alice.client().post("/api/v1/devices", add_device_body(alice, third), format="json")

    assert_error(response, 422, "device_limit_reached")


def test_rename_a_device() -> None:
    alice = sign_up("alice")
    add_device(alice, 2)

    response = alice.client().patch("/api/v1/devices/2", {"name": "phone"}, format="json")

    assert response.status_code == 200
    assert response.json()["name"] == "phone"
    assert response.json()["current"] is False
    assert Device.objects.get(device_id=2).name == "phone"
    too_long = alice.client().patch("/api/v1/devices/2", {"name": "x" * 65}, format="json")
    assert_error(too_long, 400, "invalid_request", "name")


def test_another_accounts_device_is_an_unknown_device() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob", device_id=5)

    renamed = alice.client().patch("/api/v1/devices/5", {"name": "mine"}, format="json")
    revoked = alice.client().delete("/api/v1/devices/5", revoke_body(alice, 5), format="json")
    missing = alice.client().delete("/api/v1/devices/9", revoke_body(alice, 9), format="json")

    assert_error(renamed, 404, "unknown_device")
    assert_error(revoked, 404, "unknown_device")
    assert_error(missing, 404, "unknown_device")
    assert "9" in missing.json()["message"]
    assert Device.objects.get(account__user__username="bob").name == "laptop"
    assert bob.client().get("/api/v1/devices").status_code == 200


def test_revoking_a_device_deletes_its_token_prekeys_and_envelopes_at_once() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob")
    _, token = add_device(alice, 2, one_time=4, kem=3)
    doomed = Device.objects.get(account__user__username="alice", device_id=2)
    Envelope.objects.create(
        device=doomed,
        seq=1,
        sender=Account.objects.get(user__username="bob"),
        sender_device_id=bob.device.device_id,
        server_time_ms=1,
        payload=b"ciphertext",
        expires_at=timezone.now(),
    )
    assert authorized(token).get("/api/v1/devices").status_code == 200

    response = alice.client().delete("/api/v1/devices/2", revoke_body(alice, 2), format="json")

    assert response.status_code == 204
    assert_error(authorized(token).get("/api/v1/devices"), 401, "unauthorized")
    assert not Device.objects.filter(pk=doomed.pk).exists()
    assert not OneTimePreKey.objects.filter(device_id=doomed.pk).exists()
    assert not KemPreKey.objects.filter(device_id=doomed.pk).exists()
    assert not Envelope.objects.filter(device_id=doomed.pk).exists()
    assert alice.client().get("/api/v1/devices").status_code == 200


def test_a_device_can_revoke_itself() -> None:
    alice = sign_up("alice")

    response = alice.client().delete("/api/v1/devices/1", revoke_body(alice, 1), format="json")
    assert response.status_code == 204, response.json()
    assert_error(alice.client().get("/api/v1/devices"), 401, "unauthorized")


# --- prekeys of the calling device ---------------------------------------------------------------


def upload(who: SignedUp, one_time: tuple[Any, ...] = (), kem: tuple[Any, ...] = ()) -> Any:
    return who.client().post(
        "/api/v1/devices/self/prekeys",
        {
            "one_time_prekeys_b64": [b64(p.public.encode()) for p in one_time],
            "kem_prekeys_b64": [b64(p.public.encode()) for p in kem],
        },
        format="json",
    )


def test_upload_prekeys_returns_the_new_counts() -> None:
    alice = sign_up("alice", one_time=5, kem=5)

    response = upload(alice, one_time_prekeys(6, 10), kem_prekeys(alice.device.keys, 6, 3))

    assert response.status_code == 200
    assert response.json() == {
        "one_time_prekeys": 15,
        "kem_prekeys": 8,
        "low_watermark": 10,
        "max_stored": 1000,
    }
    assert upload(alice).json()["one_time_prekeys"] == 15  # both lists may be empty


def test_upload_refuses_an_id_already_stored() -> None:
    alice = sign_up("alice", one_time=5, kem=5)

    one_time = upload(alice, one_time_prekeys(5, 2))
    kem = upload(
        alice, (), kem_prekeys(alice.device.keys, 6, 1) + kem_prekeys(alice.device.keys, 3, 1)
    )

    assert_error(one_time, 409, "duplicate_prekey_id", "one_time_prekeys_b64[0]")
    assert_error(kem, 409, "duplicate_prekey_id", "kem_prekeys_b64[1]")
    assert OneTimePreKey.objects.count() == 5  # all or nothing
    assert KemPreKey.objects.count() == 5


def test_upload_refuses_a_batch_of_101() -> None:
    alice = sign_up("alice")

    response = upload(alice, one_time_prekeys(100, 101))

    assert_error(response, 413, "prekey_batch_too_large", "one_time_prekeys_b64")


def test_upload_refuses_to_store_more_than_the_limit(settings: Any) -> None:
    settings.SEALPOST = {**settings.SEALPOST, "MAX_PREKEYS_STORED": 8}
    alice = sign_up("alice", one_time=5, kem=5)

    assert upload(alice, one_time_prekeys(6, 3)).status_code == 200
    response = upload(alice, one_time_prekeys(9, 1))

    assert_error(response, 422, "prekey_store_full", "one_time_prekeys_b64")
    assert OneTimePreKey.objects.count() == 8


def test_upload_refuses_kem_prekeys_not_signed_by_the_device() -> None:
    alice = sign_up("alice")
    other = DeviceKeys.create(alice.account, 2)

    response = upload(alice, (), kem_prekeys(alice.device.keys, 10, 2) + kem_prekeys(other, 12, 1))

    assert_error(response, 400, "bad_signature", "kem_prekeys_b64[2]")
    assert "KEM prekey 12" in response.json()["message"]
    assert KemPreKey.objects.count() == 5


def test_upload_refuses_a_last_resort_kem_prekey_or_its_id() -> None:
    alice = sign_up("alice")
    keys = alice.device.keys

    flagged = upload(alice, (), (KemPreKeyPair.generate(keys, 50, last_resort=True),))
    same_id = upload(alice, (), kem_prekeys(keys, LAST_RESORT_KEM_ID, 1))

    assert_error(flagged, 400, "invalid_value", "kem_prekeys_b64[0]")
    assert_error(same_id, 409, "duplicate_prekey_id", "kem_prekeys_b64[0]")


def test_upload_refuses_undecodable_prekeys_naming_them() -> None:
    alice = sign_up("alice")

    response = alice.client().post(
        "/api/v1/devices/self/prekeys",
        {"one_time_prekeys_b64": [b64(b"\x01" + bytes(32)), b64(b"\x02" + bytes(31))]},
        format="json",
    )

    assert_error(response, 400, "truncated", "one_time_prekeys_b64[1]")


def test_the_self_endpoints_need_a_device_token() -> None:
    sign_up("alice")
    client = APIClient()
    client.login(username="alice", password=STRONG_PASSWORD)

    assert_error(client.get("/api/v1/devices/self/prekeys"), 403, "forbidden")
    assert client.get("/api/v1/devices").status_code == 200


def test_rotate_the_signed_prekey() -> None:
    alice = sign_up("alice")
    new = SignedPreKeyPair.generate(alice.device.keys, 2).public
    forged = SignedPreKeyPair.generate(DeviceKeys.create(alice.account, 3), 3).public
    path = "/api/v1/devices/self/signed-prekey"

    response = alice.client().put(path, {"signed_prekey_b64": b64(new.encode())}, format="json")
    refused = alice.client().put(path, {"signed_prekey_b64": b64(forged.encode())}, format="json")

    assert response.status_code == 204
    assert_error(refused, 400, "bad_signature", "signed_prekey_b64")
    assert bytes(Device.objects.get().signed_prekey) == new.encode()


def test_rotate_the_last_resort_kem_prekey() -> None:
    alice = sign_up("alice", kem=2)
    keys = alice.device.keys
    path = "/api/v1/devices/self/last-resort-kem-prekey"

    def put(prekey: Any) -> Any:
        return alice.client().put(path, {"kem_prekey_b64": b64(prekey.encode())}, format="json")

    new = KemPreKeyPair.generate(keys, 77, last_resort=True).public
    assert put(new).status_code == 204
    assert bytes(Device.objects.get().last_resort_kem_prekey) == new.encode()
    assert_error(
        put(KemPreKeyPair.generate(keys, 78, last_resort=False).public),
        400,
        "invalid_value",
        "kem_prekey_b64",
    )
    assert_error(
        put(KemPreKeyPair.generate(keys, 2, last_resort=True).public),
        409,
        "duplicate_prekey_id",
        "kem_prekey_b64",
    )
    other = DeviceKeys.create(alice.account, 9)
    assert_error(
        put(KemPreKeyPair.generate(other, 79, last_resort=True).public),
        400,
        "bad_signature",
        "kem_prekey_b64",
    )


# --- other accounts' keys ------------------------------------------------------------------------


def test_account_keys_list_every_device_and_consume_nothing() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob", device_id=3)
    second, _ = add_device(bob, 8)

    response = alice.client().get("/api/v1/accounts/BOB/keys")

    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "bob"
    assert body["identity_key_b64"] == b64(bob.account.public_key)
    assert body["devices"] == [
        {
            "device_id": 3,
            "registration_id": bob.device.keys.certificate.registration_id,
            "certificate_b64": b64(bob.device.keys.certificate.encode()),
        },
        {
            "device_id": 8,
            "registration_id": second.keys.certificate.registration_id,
            "certificate_b64": b64(second.keys.certificate.encode()),
        },
    ]
    assert OneTimePreKey.objects.count() == 15


@pytest.mark.parametrize("username", ["nobody", "not a name", "x" * 100])
def test_keys_of_an_unknown_account(username: str) -> None:
    alice = sign_up("alice")

    response = alice.client().get(f"/api/v1/accounts/{username}/keys")

    assert_error(response, 404, "unknown_account")


def test_a_deactivated_account_is_unknown() -> None:
    alice = sign_up("alice")
    sign_up("bob")
    get_user_model().objects.filter(username="bob").update(is_active=False)

    assert_error(alice.client().get("/api/v1/accounts/bob/keys"), 404, "unknown_account")
    assert_error(alice.client().post("/api/v1/accounts/bob/bundles"), 404, "unknown_account")
