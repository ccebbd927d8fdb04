"""The groups API (docs/api.md, "Groups"): members, admins, the roster and its digest.
Every refusal is checked by status and ``code``."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from groups.models import Group, Membership
from keys.models import Device
from protocol.groups import RosterEntry, roster_digest
from tests.server.factories import add_device, authorized, revoke_body, sign_up
from tests.server.relay_helpers import TestDevice, make_device

pytestmark = pytest.mark.django_db

OTHER_GROUP = "00" * 16


def client_of(device: TestDevice) -> APIClient:
    return authorized(device.token)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == status, body
    assert body["code"] == code, body
    assert body["message"]
    return body


def create(client: APIClient, *members: str) -> dict[str, Any]:
    response = client.post("/api/v1/groups", {"members": list(members)}, format="json")
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    return body


def get(client: APIClient, group_id: str) -> Any:
    return client.get(f"/api/v1/groups/{group_id}")


def add(client: APIClient, group_id: str, *usernames: str) -> Any:
    return client.post(
        f"/api/v1/groups/{group_id}/members", {"add": list(usernames)}, format="json"
    )


def remove(client: APIClient, group_id: str, username: str) -> Any:
    return client.delete(f"/api/v1/groups/{group_id}/members/{username}")


def admins(body: dict[str, Any]) -> set[str]:
    return {m["username"] for m in body["members"] if m["admin"]}


def members(body: dict[str, Any]) -> list[str]:
    return [m["username"] for m in body["members"]]


def expected_digest(body: dict[str, Any]) -> str:
    entries = [
        RosterEntry(d["username"], d["device_id"], d["registration_id"]) for d in body["devices"]
    ]
    return roster_digest(entries).hex()


@pytest.fixture
def trio() -> tuple[TestDevice, TestDevice, TestDevice]:
    return make_device("alice"), make_device("bob"), make_device("carol")


# --- creating and reading -------------------------------------------------------------------


def test_create_makes_the_creator_admin_and_lists_every_device(trio: Any) -> None:
    alice, bob, carol = trio
    bob2 = make_device("bob", 2)

    body = create(client_of(alice), "bob", "carol")

    assert len(body["id"]) == 32 and body["id"] == body["id"].lower()
    assert body["roster_version"] == 1
    assert body["members"] == [
        {"username": "alice", "admin": True},
        {"username": "bob", "admin": False},
        {"username": "carol", "admin": False},
    ]
    assert [(d["username"], d["device_id"]) for d in body["devices"]] == [
        ("alice", 1),
        ("bob", 1),
        ("bob", 2),
        ("carol", 1),
    ]
    assert {d["registration_id"] for d in body["devices"]} == {
        alice.registration_id,
        bob.registration_id,
        bob2.registration_id,
        carol.registration_id,
    }
    assert body["roster_digest"] == expected_digest(body)
    assert get(client_of(carol), body["id"]).json() == body


def test_create_ignores_the_creator_and_repeats_and_normalises_names(trio: Any) -> None:
    alice, _, _ = trio

    body = create(client_of(alice), "alice", "Bob", "bob", " carol ")

    assert members(body) == ["alice", "bob", "carol"]
    assert Membership.objects.count() == 3


def test_create_alone_is_allowed(trio: Any) -> None:
    body = create(client_of(trio[0]))

    assert members(body) == ["alice"]


def test_create_names_every_unknown_account_and_stores_nothing(trio: Any) -> None:
    alice, _, _ = trio

    response = client_of(alice).post(
        "/api/v1/groups", {"members": ["bob", "nobody", "Not A Name!"]}, format="json"
    )

    body = assert_error(response, 404, "unknown_account")
    assert "'nobody'" in body["message"] and "'Not A Name!'" in body["message"]
    assert body["fields"]["members"][0]["code"] == "unknown_account"
    assert not Group.objects.exists()


def test_create_refuses_more_members_than_the_limit(trio: Any, settings: Any) -> None:
    settings.SEALPOST = {**settings.SEALPOST, "MAX_GROUP_MEMBERS": 2}

    response = client_of(trio[0]).post(
        "/api/v1/groups", {"members": ["bob", "carol"]}, format="json"
    )

    assert_error(response, 422, "group_too_large")
    assert not Group.objects.exists()


def test_the_setting_cannot_raise_the_protocol_limit(trio: Any, settings: Any) -> None:
    from groups.services import max_members

    settings.SEALPOST = {**settings.SEALPOST, "MAX_GROUP_MEMBERS": 5000}

    assert max_members() == 1000


@pytest.mark.parametrize(
    "body",
    [{}, {"members": "bob"}, {"members": [1]}, {"members": ["x" * 65]}],
    ids=["missing", "not-a-list", "not-strings", "too-long"],
)
def test_create_refuses_a_malformed_body(trio: Any, body: dict[str, Any]) -> None:
    response = client_of(trio[0]).post("/api/v1/groups", body, format="json")

    assert_error(response, 400, "invalid_request")


def test_list_shows_only_my_groups(trio: Any) -> None:
    alice, bob, carol = trio
    first = create(client_of(alice), "bob")
    second = create(client_of(bob), "carol")

    mine = client_of(bob).get("/api/v1/groups").json()

    assert mine == [
        {"id": first["id"], "roster_version": 1, "admin": False, "member_count": 2},
        {"id": second["id"], "roster_version": 1, "admin": True, "member_count": 2},
    ]
    assert [g["id"] for g in client_of(alice).get("/api/v1/groups").json()] == [first["id"]]


def test_unauthenticated_requests_are_refused(trio: Any) -> None:
    group = create(client_of(trio[0]), "bob")

    assert_error(APIClient().get("/api/v1/groups"), 401, "unauthorized")
    assert_error(APIClient().get(f"/api/v1/groups/{group['id']}"), 401, "unauthorized")
    assert_error(authorized("not-a-token").get("/api/v1/groups"), 401, "unauthorized")


@pytest.mark.parametrize(
    "group_id",
    [OTHER_GROUP, "ab" * 15, "AB" * 16, "zz" * 16, "ab" * 17],
    ids=["unknown", "short", "upper-case", "not-hex", "long"],
)
def test_an_unknown_or_malformed_group_id_is_unknown_group(trio: Any, group_id: str) -> None:
    alice = trio[0]
    create(client_of(alice), "bob")

    assert_error(get(client_of(alice), group_id), 404, "unknown_group")
    assert_error(add(client_of(alice), group_id, "carol"), 404, "unknown_group")
    assert_error(remove(client_of(alice), group_id, "alice"), 404, "unknown_group")


# --- cross-account access ---------------------------------------------------------------------


def test_a_member_of_one_group_cannot_read_or_change_another(trio: Any) -> None:
    alice, bob, carol = trio
    dave = make_device("dave")
    group_a = create(client_of(alice), "bob")
    group_b = create(client_of(carol), "dave")
    b_id = group_b["id"]
    alice_client = client_of(alice)

    assert_error(get(alice_client, b_id), 403, "not_a_member")
    assert_error(add(alice_client, b_id, "alice"), 403, "not_a_member")
    assert_error(remove(alice_client, b_id, "dave"), 403, "not_a_member")
    assert_error(remove(alice_client, b_id, "alice"), 403, "not_a_member")
    assert_error(alice_client.put(f"/api/v1/groups/{b_id}/admins/alice"), 403, "not_a_member")
    assert_error(alice_client.delete(f"/api/v1/groups/{b_id}/admins/carol"), 403, "not_a_member")
    # Group B is exactly as it was; group A too.
    assert get(client_of(dave), b_id).json() == group_b
    assert get(client_of(bob), group_a["id"]).json() == group_a


# --- adding and removing ----------------------------------------------------------------------


def test_an_admin_adds_members_and_the_roster_changes(trio: Any) -> None:
    alice, _, carol = trio
    group = create(client_of(alice), "bob")

    response = add(client_of(alice), group["id"], "carol", "bob")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert members(body) == ["alice", "bob", "carol"]
    assert body["roster_version"] == 2
    assert body["roster_digest"] != group["roster_digest"]
    assert body["roster_digest"] == expected_digest(body)
    assert get(client_of(carol), group["id"]).status_code == 200


def test_adding_only_present_members_changes_nothing(trio: Any) -> None:
    alice, _, _ = trio
    group = create(client_of(alice), "bob")

    body = add(client_of(alice), group["id"], "bob", "alice").json()

    assert body == group


def test_only_admins_add_members(trio: Any) -> None:
    alice, bob, _ = trio
    group = create(client_of(alice), "bob")

    assert_error(add(client_of(bob), group["id"], "carol"), 403, "forbidden")
    assert members(get(client_of(alice), group["id"]).json()) == ["alice", "bob"]


def test_adding_unknown_accounts_or_past_the_limit_is_refused(trio: Any, settings: Any) -> None:
    alice, _, _ = trio
    group = create(client_of(alice), "bob")

    body = assert_error(
        add(client_of(alice), group["id"], "carol", "ghost"), 404, "unknown_account"
    )
    assert "fields" in body and "add" in body["fields"]
    settings.SEALPOST = {**settings.SEALPOST, "MAX_GROUP_MEMBERS": 2}
    assert_error(add(client_of(alice), group["id"], "carol"), 422, "group_too_large")
    assert_error(
        client_of(alice).post(f"/api/v1/groups/{group['id']}/members", {"add": []}, format="json"),
        400,
        "invalid_request",
    )
    assert members(get(client_of(alice), group["id"]).json()) == ["alice", "bob"]


def test_an_admin_removes_a_member(trio: Any) -> None:
    alice, bob, _ = trio
    group = create(client_of(alice), "bob", "carol")

    response = remove(client_of(alice), group["id"], "bob")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert members(body) == ["alice", "carol"]
    assert body["roster_version"] == 2
    assert "bob" not in {d["username"] for d in body["devices"]}
    assert body["roster_digest"] == expected_digest(body)
    assert_error(get(client_of(bob), group["id"]), 403, "not_a_member")


def test_only_admins_remove_others(trio: Any) -> None:
    alice, bob, _ = trio
    group = create(client_of(alice), "bob", "carol")

    assert_error(remove(client_of(bob), group["id"], "carol"), 403, "forbidden")
    assert_error(remove(client_of(bob), group["id"], "alice"), 403, "forbidden")
    assert members(get(client_of(alice), group["id"]).json()) == ["alice", "bob", "carol"]


def test_removing_someone_not_in_the_group_is_not_a_member_404(trio: Any) -> None:
    alice, _, _ = trio
    group = create(client_of(alice), "bob")

    assert_error(remove(client_of(alice), group["id"], "carol"), 404, "not_a_member")
    assert_error(remove(client_of(alice), group["id"], "no one"), 404, "not_a_member")


def test_a_member_leaves(trio: Any) -> None:
    alice, bob, _ = trio
    group = create(client_of(alice), "bob", "carol")

    response = remove(client_of(bob), group["id"], "bob")

    assert response.status_code == 204
    assert members(get(client_of(alice), group["id"]).json()) == ["alice", "carol"]
    assert client_of(bob).get("/api/v1/groups").json() == []


def test_the_last_admin_leaving_promotes_the_longest_standing_member(trio: Any) -> None:
    alice, bob, carol = trio
    group = create(client_of(alice), "bob")
    add(client_of(alice), group["id"], "carol")  # carol joins after bob

    assert remove(client_of(alice), group["id"], "alice").status_code == 204

    body = get(client_of(carol), group["id"]).json()
    assert admins(body) == {"bob"}
    assert add(client_of(bob), group["id"], "alice").status_code == 200


def test_another_admin_remaining_means_no_promotion(trio: Any) -> None:
    alice, _, carol = trio
    group = create(client_of(alice), "bob", "carol")
    client_of(alice).put(f"/api/v1/groups/{group['id']}/admins/carol")

    remove(client_of(alice), group["id"], "alice")

    assert admins(get(client_of(carol), group["id"]).json()) == {"carol"}


def test_the_last_member_leaving_deletes_the_group(trio: Any) -> None:
    alice, _, _ = trio
    group = create(client_of(alice))

    assert remove(client_of(alice), group["id"], "alice").status_code == 204

    assert not Group.objects.exists()
    assert_error(get(client_of(alice), group["id"]), 404, "unknown_group")


# --- admins -----------------------------------------------------------------------------------


def test_an_admin_makes_and_unmakes_admins(trio: Any) -> None:
    alice, bob, _ = trio
    group = create(client_of(alice), "bob")
    url = f"/api/v1/groups/{group['id']}/admins/bob"

    made = client_of(alice).put(url)
    assert made.status_code == 200, made.json()
    assert admins(made.json()) == {"alice", "bob"}
    assert made.json()["roster_version"] == 2
    assert made.json()["roster_digest"] == group["roster_digest"]  # devices unchanged
    again = client_of(alice).put(url).json()
    assert again["roster_version"] == 2  # no change, no new version

    unmade = client_of(bob).delete(f"/api/v1/groups/{group['id']}/admins/alice")
    assert unmade.status_code == 200, unmade.json()
    assert admins(unmade.json()) == {"bob"}


def test_only_admins_change_admins(trio: Any) -> None:
    alice, bob, _ = trio
    group = create(client_of(alice), "bob", "carol")

    assert_error(client_of(bob).put(f"/api/v1/groups/{group['id']}/admins/bob"), 403, "forbidden")
    assert_error(
        client_of(bob).delete(f"/api/v1/groups/{group['id']}/admins/alice"), 403, "forbidden"
    )
    assert admins(get(client_of(alice), group["id"]).json()) == {"alice"}


def test_the_last_admin_cannot_step_down(trio: Any) -> None:
    alice, _, _ = trio
    group = create(client_of(alice), "bob")

    response = client_of(alice).delete(f"/api/v1/groups/{group['id']}/admins/alice")

    assert_error(response, 400, "invalid_request")
    assert admins(get(client_of(alice), group["id"]).json()) == {"alice"}


def test_admin_of_a_non_member_is_not_a_member_404(trio: Any) -> None:
    alice, _, _ = trio
    group = create(client_of(alice), "bob")

    assert_error(
        client_of(alice).put(f"/api/v1/groups/{group['id']}/admins/carol"), 404, "not_a_member"
    )


# --- the roster follows the members' devices ------------------------------------------------


def test_roster_and_digest_change_when_a_member_links_or_revokes_a_device() -> None:
    alice = sign_up("alice")
    bob = sign_up("bob")
    group = create(alice.client(), "bob")
    url = f"/api/v1/groups/{group['id']}"

    _, bob2_token = add_device(bob, 2)
    linked = alice.client().get(url).json()
    assert [(d["username"], d["device_id"]) for d in linked["devices"]] == [
        ("alice", 1),
        ("bob", 1),
        ("bob", 2),
    ]
    assert linked["roster_digest"] != group["roster_digest"]
    assert linked["roster_digest"] == expected_digest(linked)
    assert linked["roster_version"] == group["roster_version"]  # members did not change

    response = bob.client().delete("/api/v1/devices/2", revoke_body(bob, 2), format="json")
    assert response.status_code == 204, response.content
    revoked = alice.client().get(url).json()
    assert [(d["username"], d["device_id"]) for d in revoked["devices"]] == [
        ("alice", 1),
        ("bob", 1),
    ]
    assert revoked["roster_digest"] == group["roster_digest"]
    assert_error(authorized(bob2_token).get(url), 401, "unauthorized")


def test_a_device_the_signed_list_does_not_name_is_not_in_the_roster(trio: Any) -> None:
    alice, _, _ = trio
    make_device("bob", 7, listed=False)
    group = create(client_of(alice), "bob")

    assert ("bob", 7) not in {(d["username"], d["device_id"]) for d in group["devices"]}
    assert Device.objects.filter(account__user__username="bob", device_id=7).exists()


def test_the_schema_documents_the_groups_endpoints() -> None:
    response = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    paths = response.json()["paths"]

    assert set(paths["/api/v1/groups"]) >= {"get", "post"}
    assert "get" in paths["/api/v1/groups/{group_id}"]
    assert "post" in paths["/api/v1/groups/{group_id}/members"]
    assert "delete" in paths["/api/v1/groups/{group_id}/members/{username}"]
    assert set(paths["/api/v1/groups/{group_id}/admins/{username}"]) >= {"put", "delete"}
