"""Signed device lists (docs/api.md, "Several devices per account"): sign-up, adding and
revoking a device each bring the account's new list, which the server checks (signed by
the account key for this username, a version above the stored one, naming exactly the
devices after the change) and stores with the change; the keys endpoint hands it out."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from keys.models import Account, Device, KemPreKey, OneTimePreKey
from messaging.models import Envelope
from protocol.devicelist import SignedDeviceList, check_devices
from protocol.keys import AccountIdentity, DeviceCertificate
from tests.server.factories import (
    STRONG_PASSWORD,
    add_device,
    add_device_body,
    authorized,
    b64,
    list_b64,
    make_device,
    next_list_b64,
    revoke_body,
    sign_up,
    sign_up_body,
    stored_certificates,
)
from tests.server.test_keys_api import assert_error, post_sign_up

pytestmark = pytest.mark.django_db


def stored(username: str) -> tuple[bytes, int]:
    account = Account.objects.get(user__username=username)
    return bytes(account.device_list), int(account.device_list_version)


# --- sign-up ----------------------------------------------------------------------------------


def test_sign_up_stores_the_list_and_the_keys_endpoint_hands_it_out() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob")

    response = bob.client().get("/api/v1/accounts/alice/keys")

    assert response.status_code == 200
    body = response.json()
    served = SignedDeviceList.decode(base64.b64decode(body["device_list_b64"]))
    assert (served.username, served.version) == ("alice", 1)
    assert bytes(served.encode()) == stored("alice")[0]
    certificates = [
        DeviceCertificate.decode(base64.b64decode(d["certificate_b64"])) for d in body["devices"]
    ]
    checked = check_devices(alice.account.public_key, "alice", served, certificates)
    assert checked.accepted == (alice.device.keys.certificate,)
    assert checked.refused == ()


def test_sign_up_requires_a_device_list() -> None:
    body = sign_up_body("alice", make_device(AccountIdentity.generate()))
    del body["device_list_b64"]

    assert_error(post_sign_up(body), 400, "invalid_request", "device_list_b64")
    assert not Account.objects.exists()


@pytest.mark.parametrize(
    ("change", "code"),
    [("cut", "truncated"), ("extend", "trailing_bytes"), ("not_base64", "malformed")],
)
def test_sign_up_refuses_a_list_that_does_not_decode(change: str, code: str) -> None:
    device = make_device(AccountIdentity.generate())
    good = base64.b64decode(sign_up_body("alice", device)["device_list_b64"])
    value = {
        "cut": b64(good[:-1]),
        "extend": b64(good + b"\x00"),
        "not_base64": "not base64!",
    }[change]

    response = post_sign_up(sign_up_body("alice", device, device_list_b64=value))

    assert_error(response, 400, code, "device_list_b64")


def test_sign_up_refuses_a_list_not_signed_by_the_identity_key() -> None:
    device = make_device(AccountIdentity.generate())
    forged = list_b64(AccountIdentity.generate(), "alice", 1, [device.keys.certificate])

    response = post_sign_up(sign_up_body("alice", device, device_list_b64=forged))

    assert_error(response, 400, "bad_signature", "device_list_b64")
    assert "not signed by the account identity key" in response.json()["message"]
    assert not Account.objects.exists()


def test_sign_up_refuses_a_list_for_another_username() -> None:
    device = make_device(AccountIdentity.generate())
    for_bob = list_b64(device.account, "bob", 1, [device.keys.certificate])

    response = post_sign_up(sign_up_body("alice", device, device_list_b64=for_bob))

    assert_error(response, 400, "bad_signature", "device_list_b64")
    assert "'bob'" in response.json()["message"]


def test_sign_up_refuses_list_version_zero() -> None:
    device = make_device(AccountIdentity.generate())
    version_zero = list_b64(device.account, "alice", 0, [device.keys.certificate])

    response = post_sign_up(sign_up_body("alice", device, device_list_b64=version_zero))

    assert_error(response, 400, "invalid_value", "device_list_b64")


@pytest.mark.parametrize("wrong", ["empty", "another_certificate", "extra_device"])
def test_sign_up_refuses_a_list_not_naming_exactly_the_first_device(wrong: str) -> None:
    account = AccountIdentity.generate()
    device = make_device(account, 1)
    same_id = make_device(account, 1)  # same device id, other keys and registration id
    second = make_device(account, 2)
    certificates = {
        "empty": [],
        "another_certificate": [same_id.keys.certificate],
        "extra_device": [device.keys.certificate, second.keys.certificate],
    }[wrong]
    device_list = list_b64(account, "alice", 1, certificates)

    response = post_sign_up(sign_up_body("alice", device, device_list_b64=device_list))

    assert_error(response, 409, "device_mismatch", "device_list_b64")
    message = response.json()["message"]
    expected = {
        "empty": "leaves out device 1",
        "another_certificate": "names device 1 with another registration id or certificate",
        "extra_device": "names device 2, which the account would not have",
    }[wrong]
    assert expected in message, message
    assert not Account.objects.exists()


# --- adding a device -----------------------------------------------------------------------------


def test_adding_a_device_stores_its_list_in_the_same_step() -> None:
    alice = sign_up("alice")

    device, _ = add_device(alice, 2)

    encoded, version = stored("alice")
    assert version == 2
    device_list = SignedDeviceList.decode(encoded)
    assert [d.device_id for d in device_list.devices] == [1, 2]
    assert device_list.admits(device.keys.certificate)
    assert device_list.admits(alice.device.keys.certificate)


def test_every_way_of_adding_a_device_requires_the_list() -> None:
    alice = sign_up("alice")
    device = make_device(alice.account, 2)
    issued = alice.client().post("/api/v1/devices/link-tokens").json()["link_token"]

    for client, extra in [
        (alice.client(), {}),
        (APIClient(), {"username": "alice", "password": STRONG_PASSWORD}),
        (APIClient(), {"username": "alice", "link_token": issued}),
    ]:
        response = client.post("/api/v1/devices", {**device.payload(), **extra}, format="json")
        assert_error(response, 400, "invalid_request", "device_list_b64")
    assert Device.objects.count() == 1


def test_adding_refuses_a_list_not_signed_by_the_account_key() -> None:
    alice = sign_up("alice")
    device = make_device(alice.account, 2)
    forged = list_b64(
        AccountIdentity.generate(),
        "alice",
        2,
        [alice.device.keys.certificate, device.keys.certificate],
    )

    response = alice.client().post(
        "/api/v1/devices", {**device.payload(), "device_list_b64": forged}, format="json"
    )

    assert_error(response, 400, "bad_signature", "device_list_b64")
    assert Device.objects.count() == 1
    assert stored("alice")[1] == 1


def test_adding_refuses_a_list_for_another_username() -> None:
    alice = sign_up("alice")
    device = make_device(alice.account, 2)
    for_bob = list_b64(
        alice.account, "bob", 2, [alice.device.keys.certificate, device.keys.certificate]
    )

    response = alice.client().post(
        "/api/v1/devices", {**device.payload(), "device_list_b64": for_bob}, format="json"
    )

    assert_error(response, 400, "bad_signature", "device_list_b64")


@pytest.mark.parametrize("version", [0, 1])
def test_adding_refuses_a_list_whose_version_is_not_above_the_stored_one(version: int) -> None:
    alice = sign_up("alice")
    device = make_device(alice.account, 2)
    old = next_list_b64("alice", alice.account, add=[device.keys.certificate], version=version)

    response = alice.client().post(
        "/api/v1/devices", {**device.payload(), "device_list_b64": old}, format="json"
    )

    assert_error(response, 400, "invalid_value", "device_list_b64")
    assert "stored version 1" in response.json()["message"]
    assert Device.objects.count() == 1


def test_adding_refuses_a_list_that_leaves_out_an_existing_device() -> None:
    alice = sign_up("alice")
    add_device(alice, 2)
    device = make_device(alice.account, 3)
    without_2 = next_list_b64("alice", alice.account, remove=[2], add=[device.keys.certificate])

    response = alice.client().post(
        "/api/v1/devices", {**device.payload(), "device_list_b64": without_2}, format="json"
    )

    assert_error(response, 409, "device_mismatch", "device_list_b64")
    assert "leaves out device 2" in response.json()["message"]
    assert Device.objects.count() == 2
    assert stored("alice")[1] == 2


def test_adding_refuses_a_list_that_does_not_name_the_new_device() -> None:
    alice = sign_up("alice")
    device = make_device(alice.account, 2)
    unchanged = next_list_b64("alice", alice.account)

    response = alice.client().post(
        "/api/v1/devices", {**device.payload(), "device_list_b64": unchanged}, format="json"
    )

    assert_error(response, 409, "device_mismatch", "device_list_b64")
    assert "leaves out device 2" in response.json()["message"]


def test_the_seventh_device_is_refused_even_with_a_good_list() -> None:
    alice = sign_up("alice")
    for device_id in range(2, 7):
        add_device(alice, device_id, one_time=0, kem=0)
    seventh = make_device(alice.account, 7, one_time=0, kem=0)

    response = alice.client().post(
        "/api/v1/devices", add_device_body(alice, seventh), format="json"
    )

    assert_error(response, 422, "device_limit_reached")
    assert Device.objects.count() == 6
    assert stored("alice")[1] == 6


# --- revoking a device ---------------------------------------------------------------------------


def queue_for(device_pk: int, sender: str) -> None:
    Envelope.objects.create(
        device_id=device_pk,
        seq=1,
        sender=Account.objects.get(user__username=sender),
        sender_device_id=1,
        server_time_ms=1,
        payload=b"ciphertext",
        expires_at=timezone.now() + timedelta(days=1),
    )


def test_revoking_requires_a_valid_list_and_then_cuts_the_device_off_at_once() -> None:
    alice = sign_up("alice")
    sign_up("bob")
    _, token = add_device(alice, 2, one_time=4, kem=3)
    doomed = Device.objects.get(account__user__username="alice", device_id=2)
    queue_for(doomed.pk, "bob")

    def revoke(body: dict[str, Any]) -> Any:
        return alice.client().delete("/api/v1/devices/2", body, format="json")

    assert_error(revoke({}), 400, "invalid_request", "device_list_b64")
    still_naming_it = next_list_b64("alice", alice.account)
    assert_error(revoke({"device_list_b64": still_naming_it}), 409, "device_mismatch")
    assert (
        "names device 2, which the account would not have"
        in (revoke({"device_list_b64": still_naming_it}).json()["message"])
    )
    forged = list_b64(AccountIdentity.generate(), "alice", 3, [alice.device.keys.certificate])
    assert_error(revoke({"device_list_b64": forged}), 400, "bad_signature", "device_list_b64")
    assert_error(revoke(revoke_body(alice, 2, version=2)), 400, "invalid_value")
    # Nothing of the device went while its revocation was refused.
    assert authorized(token).get("/api/v1/devices").status_code == 200
    assert stored("alice")[1] == 2

    good = revoke_body(alice, 2)
    response = revoke(good)

    assert response.status_code == 204
    assert_error(authorized(token).get("/api/v1/devices"), 401, "unauthorized")
    assert not Device.objects.filter(pk=doomed.pk).exists()
    assert not OneTimePreKey.objects.filter(device_id=doomed.pk).exists()
    assert not KemPreKey.objects.filter(device_id=doomed.pk).exists()
    assert not Envelope.objects.filter(device_id=doomed.pk).exists()
    assert stored("alice") == (base64.b64decode(good["device_list_b64"]), 3)
    assert [c.device_id for c in stored_certificates("alice")] == [1]


def test_a_device_revoking_itself_leaves_an_empty_list() -> None:
    alice = sign_up("alice")
    add_device(alice, 2)

    response = alice.client().delete("/api/v1/devices/1", revoke_body(alice, 1), format="json")

    assert response.status_code == 204
    assert_error(alice.client().get("/api/v1/devices"), 401, "unauthorized")
    device_list = SignedDeviceList.decode(stored("alice")[0])
    assert [d.device_id for d in device_list.devices] == [2]


def test_revoking_an_unknown_device_is_unknown_whatever_the_list() -> None:
    alice = sign_up("alice")

    response = alice.client().delete("/api/v1/devices/4", revoke_body(alice, 4), format="json")

    assert_error(response, 404, "unknown_device")
    assert stored("alice")[1] == 1


def test_the_admin_shows_the_list_version_and_removes_without_a_list(client: Any) -> None:
    from django.contrib.auth import get_user_model

    alice = sign_up("alice")
    add_device(alice, 2)
    get_user_model().objects.create_superuser("root", password="root-password-1")
    client.login(username="root", password="root-password-1")

    accounts = client.get("/admin/keys/account/").content.decode()
    assert '<td class="field-device_list_version">2</td>' in accounts
    assert client.get("/admin/keys/linktoken/").status_code == 404
    assert client.get("/admin/keys/provisioningslot/").status_code == 404

    device = Device.objects.get(device_id=2)
    deleted = client.post(f"/admin/keys/device/{device.pk}/delete/", {"post": "yes"})

    assert deleted.status_code == 302
    assert not Device.objects.filter(pk=device.pk).exists()
    # The server cannot sign a list: the old one stays, naming a device no longer served.
    assert stored("alice")[1] == 2
    assert [d.device_id for d in SignedDeviceList.decode(stored("alice")[0]).devices] == [1, 2]
