"""Access control, endpoint by endpoint and frame by frame.

Two registries make "every endpoint and every frame" checkable: ``CROSS_ACCOUNT`` maps
every URL pattern under /api/v1/ (found by walking Django's resolver, so a new route
fails ``test_every_api_route_has_a_cross_account_test`` until it gets an entry) to a
check that one account's device cannot read, change, acknowledge, delete or claim
anything of another's; ``FRAME_CHECKS`` does the same for every relay frame type.
Public routes say why they are public. Beside them: unauthenticated requests get 401;
tokens are random, only hashed at rest and revocable; the relay checks the Origin; the
session-cookie endpoints enforce CSRF; and production mode is clean under
``manage.py check --deploy`` with secure cookies and HSTS.
"""

from __future__ import annotations

import base64
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from harness.live_server import ROOT
from keys.models import Device, OneTimePreKey
from keys.tokens import TOKEN_BYTES, generate_token, hash_token
from messaging.models import Envelope
from protocol.errors import ErrorCode
from protocol.frames import (
    Ack,
    Deliver,
    DeviceMismatch,
    Error,
    Frame,
    FrameType,
    GroupSend,
    Notice,
    Ping,
    Pong,
    QueueEmpty,
    SendOk,
)
from tests.conftest import fresh_channel_layers
from tests.server.factories import (
    STRONG_PASSWORD,
    SignedUp,
    authorized,
    make_device,
    revoke_body,
    sign_up,
)
from tests.server.relay_helpers import (
    ORIGIN,
    TIMEOUT,
    communicator,
    connected,
    queue_envelopes,
    send_frame,
)
from tests.server.relay_helpers import make_device as make_relay_device

pytestmark = pytest.mark.django_db(transaction=True)

API_PREFIX = "api/v1/"


# --- the accounts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    """Alice (the attacker's account, device 1) and Bob (the victim, devices 1 and 7)."""

    alice: SignedUp
    bob: SignedUp
    bob_token_7: str

    @property
    def mallory(self) -> APIClient:
        return self.alice.client()


@pytest.fixture
def world() -> World:
    alice = sign_up("alice", one_time=3, kem=3)
    bob = sign_up("bob", one_time=3, kem=3)
    from tests.server.factories import add_device

    _, token_7 = add_device(bob, 7, one_time=3, kem=3)
    return World(alice, bob, token_7)


def _code(response: Any) -> str:
    return str(response.json()["code"])


def _bob_devices() -> list[tuple[int, str]]:
    return list(
        Device.objects.filter(account__user__username="bob")
        .order_by("device_id")
        .values_list("device_id", "name")
    )


def _bob_stock() -> int:
    return OneTimePreKey.objects.filter(device__account__user__username="bob").count()


# --- one check per API route ----------------------------------------------------------------


def check_accounts(w: World) -> None:
    # Sign-up makes a new account; it cannot add to or take over an existing one.
    body = {"username": "bob", "password": STRONG_PASSWORD}
    response = w.mallory.post("/api/v1/accounts", body, format="json")
    assert response.status_code == 400
    assert _bob_devices() == [(1, "laptop"), (7, "laptop")]


def check_account_keys(w: World) -> None:
    # Public keys are readable by any device (that is how a session starts), and reading
    # consumes nothing; a link token reads only its own account's keys.
    before = _bob_stock()
    assert w.mallory.get("/api/v1/accounts/bob/keys").status_code == 200
    assert _bob_stock() == before
    link = w.mallory.post("/api/v1/devices/link-tokens").json()["link_token"]
    response = authorized(link).get("/api/v1/accounts/bob/keys")
    assert response.status_code == 403 and _code(response) == "forbidden"


def check_account_bundles(w: World) -> None:
    # Claiming Bob's bundles is what starting a session is; a claim names devices of the
    # named account only, and is bounded by the claim limits (test_abuse_limits.py).
    response = w.mallory.post("/api/v1/accounts/alice/bundles", {"device_ids": [7]}, format="json")
    assert response.status_code == 404 and _code(response) == "unknown_device"
    assert _bob_stock() == 6


def check_session(w: World) -> None:
    response = APIClient().post(
        "/api/v1/session", {"username": "bob", "password": "alice's password"}, format="json"
    )
    assert response.status_code == 401
    # Logging out ends the caller's own session only.
    assert APIClient().delete("/api/v1/session").status_code == 204


def check_devices(w: World) -> None:
    listed = w.mallory.get("/api/v1/devices").json()
    assert [d["device_id"] for d in listed] == [1]  # Alice's own, nothing of Bob's
    # A device made with Bob's keys cannot join Bob's account on Alice's token.
    from tests.server.factories import add_device_body

    intruder = make_device(w.bob.account, 9)
    response = w.mallory.post("/api/v1/devices", add_device_body(w.bob, intruder), format="json")
    assert response.status_code in (400, 409), response.json()
    response = APIClient().post(
        "/api/v1/devices",
        {**add_device_body(w.bob, intruder), "username": "bob", "password": "guess"},
        format="json",
    )
    assert response.status_code == 401
    assert [d for d, _ in _bob_devices()] == [1, 7]


def check_device_prekeys(w: World) -> None:
    counts = w.mallory.get("/api/v1/devices/self/prekeys").json()
    assert (counts["one_time_prekeys"], counts["kem_prekeys"]) == (3, 3)  # Alice's only
    assert _bob_stock() == 6


def check_device_signed_prekey(w: World) -> None:
    # Acts on the calling device only: Bob's signed prekeys cannot be named at all.
    signed = dict(
        Device.objects.filter(account__user__username="bob").values_list("pk", "signed_prekey")
    )
    response = w.mallory.put("/api/v1/devices/self/signed-prekey", {}, format="json")
    assert response.status_code == 400
    after = Device.objects.filter(account__user__username="bob").values_list("pk", "signed_prekey")
    assert dict(after) == signed


def check_device_last_resort(w: World) -> None:
    before = list(
        Device.objects.filter(account__user__username="bob").values_list("last_resort_kem_prekey")
    )
    response = w.mallory.put("/api/v1/devices/self/last-resort-kem-prekey", {}, format="json")
    assert response.status_code == 400
    after = Device.objects.filter(account__user__username="bob").values_list(
        "last_resort_kem_prekey"
    )
    assert list(after) == before


def check_link_tokens(w: World) -> None:
    # Alice's link token adds a device to Alice's account only.
    from tests.server.factories import add_device_body

    link = w.mallory.post("/api/v1/devices/link-tokens").json()["link_token"]
    intruder = make_device(w.bob.account, 9)
    response = APIClient().post(
        "/api/v1/devices",
        {**add_device_body(w.bob, intruder), "username": "bob", "link_token": link},
        format="json",
    )
    assert response.status_code in (401, 404), response.json()
    assert [d for d, _ in _bob_devices()] == [1, 7]


def check_device(w: World) -> None:
    # Device ids are per account: Alice's token names her own devices.
    renamed = w.mallory.patch("/api/v1/devices/7", {"name": "pwned"}, format="json")
    assert renamed.status_code == 404 and _code(renamed) == "unknown_device"
    revoked = w.mallory.delete(
        "/api/v1/devices/7", revoke_body(w.bob, 7), format="json"
    )  # Bob's own, correctly signed list: still not Alice's to send
    assert revoked.status_code in (400, 404), revoked.json()
    assert _bob_devices() == [(1, "laptop"), (7, "laptop")]
    assert authorized(w.bob_token_7).get("/api/v1/devices").status_code == 200


def check_provisioning(w: World) -> None:
    # Public by design (a new device has no credentials yet); an address is 16 random
    # bytes and holds nothing of any account until a device fills it.
    first = APIClient().post("/api/v1/provisioning").json()["address"]
    second = APIClient().post("/api/v1/provisioning").json()["address"]
    assert first != second and len(base64.urlsafe_b64decode(first + "==")) == 16


def check_provisioning_slot(w: World) -> None:
    # A filled address cannot be overwritten by another account's device.
    address = APIClient().post("/api/v1/provisioning").json()["address"]
    sealed = {"sealed_b64": base64.b64encode(b"sealed by bob").decode()}
    assert (
        w.bob.client().put(f"/api/v1/provisioning/{address}", sealed, format="json").status_code
        == 204
    )
    overwrite = {"sealed_b64": base64.b64encode(b"sealed by alice").decode()}
    response = w.mallory.put(f"/api/v1/provisioning/{address}", overwrite, format="json")
    assert response.status_code == 409
    taken = APIClient().get(f"/api/v1/provisioning/{address}")
    assert base64.b64decode(taken.json()["sealed_b64"]) == b"sealed by bob"


def _bobs_group(w: World) -> str:
    response = w.bob.client().post("/api/v1/groups", {"members": []}, format="json")
    assert response.status_code == 201, response.json()
    return str(response.json()["id"])


def _refused_for_outsider(response: Any) -> None:
    assert response.status_code in (403, 404), response.content
    assert _code(response) in ("unknown_group", "not_a_member", "forbidden")


def check_groups(w: World) -> None:
    group_id = _bobs_group(w)
    assert group_id not in {g["id"] for g in w.mallory.get("/api/v1/groups").json()}


def check_group(w: World) -> None:
    _refused_for_outsider(w.mallory.get(f"/api/v1/groups/{_bobs_group(w)}"))


def check_group_members(w: World) -> None:
    group_id = _bobs_group(w)
    _refused_for_outsider(
        w.mallory.post(f"/api/v1/groups/{group_id}/members", {"add": ["alice"]}, format="json")
    )
    members = w.bob.client().get(f"/api/v1/groups/{group_id}").json()["members"]
    assert [m["username"] for m in members] == ["bob"]


def check_group_member(w: World) -> None:
    group_id = _bobs_group(w)
    _refused_for_outsider(w.mallory.delete(f"/api/v1/groups/{group_id}/members/bob"))
    assert w.bob.client().get(f"/api/v1/groups/{group_id}").status_code == 200


def check_group_admin(w: World) -> None:
    group_id = _bobs_group(w)
    _refused_for_outsider(w.mallory.put(f"/api/v1/groups/{group_id}/admins/alice"))
    _refused_for_outsider(w.mallory.delete(f"/api/v1/groups/{group_id}/admins/bob"))


def check_attachments(w: World) -> None:
    # Creating a blob creates the caller's own; the daily quota is per account.
    response = w.mallory.post("/api/v1/attachments", {"size": 10}, format="json")
    assert response.status_code == 201


def check_attachment(w: World) -> None:
    # Only the uploading device may write; reading is by the unguessable id (128 bits),
    # a capability shared inside an end-to-end encrypted message, and yields ciphertext.
    blob_id = w.bob.client().post("/api/v1/attachments", {"size": 4}, format="json").json()["id"]
    chunk = w.mallory.generic(
        "PATCH",
        f"/api/v1/attachments/{blob_id}",
        b"evil",
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET="0",
    )
    assert chunk.status_code == 403 and _code(chunk) == "forbidden"
    assert len(bytes.fromhex(blob_id)) == 16


def check_policy(w: World) -> None:
    # Public: the signed region policy, the same for everyone.
    assert APIClient().get("/api/v1/policy").content == w.mallory.get("/api/v1/policy").content


def check_policy_public_key(w: World) -> None:
    first = APIClient().get("/api/v1/policy/public-key")
    assert (
        first.status_code == 200
        and first.content == w.mallory.get("/api/v1/policy/public-key").content
    )


def check_consent(w: World) -> None:
    # No account in the URL: the caller's own consent only.
    mine = w.mallory.get("/api/v1/consent")
    theirs = w.bob.client().get("/api/v1/consent")
    assert mine.status_code == theirs.status_code == 200


def check_data_requests(w: World) -> None:
    made = w.bob.client().post("/api/v1/data-requests", {"kind": "export"}, format="json")
    assert made.status_code == 202, made.content
    listed = w.mallory.get("/api/v1/data-requests").json()
    assert made.json()["id"] not in {r["id"] for r in _requests(listed)}
    # Erasure of Bob's account is not Alice's to ask: it needs the caller's own password.
    erase = w.mallory.post(
        "/api/v1/data-requests", {"kind": "erasure", "password": "guess"}, format="json"
    )
    assert erase.status_code == 401
    assert len(_bob_devices()) == 2


def _requests(listed: Any) -> list[dict[str, Any]]:
    if isinstance(listed, dict):
        for value in listed.values():
            if isinstance(value, list):
                return value
    return list(listed)


def check_data_request_archive(w: World) -> None:
    made = w.bob.client().post("/api/v1/data-requests", {"kind": "export"}, format="json")
    request_id = made.json()["id"]
    stolen = w.mallory.get(f"/api/v1/data-requests/{request_id}/archive")
    assert stolen.status_code == 404
    assert w.bob.client().get(f"/api/v1/data-requests/{request_id}/archive").status_code == 200


def check_schema(w: World) -> None:
    # Public: the API's description, the same for everyone.
    assert APIClient().get("/api/v1/schema/").status_code == 200


def check_docs(w: World) -> None:
    assert APIClient().get("/api/v1/docs/").status_code == 200


CROSS_ACCOUNT: dict[str, Callable[[World], None]] = {
    ":schema": check_schema,
    ":docs": check_docs,
    "keys:accounts": check_accounts,
    "keys:account-keys": check_account_keys,
    "keys:account-bundles": check_account_bundles,
    "keys:session": check_session,
    "keys:devices": check_devices,
    "keys:device-prekeys": check_device_prekeys,
    "keys:device-signed-prekey": check_device_signed_prekey,
    "keys:device-last-resort-kem-prekey": check_device_last_resort,
    "keys:link-tokens": check_link_tokens,
    "keys:device": check_device,
    "keys:provisioning": check_provisioning,
    "keys:provisioning-slot": check_provisioning_slot,
    "groups:groups": check_groups,
    "groups:group": check_group,
    "groups:group-members": check_group_members,
    "groups:group-member": check_group_member,
    "groups:group-admin": check_group_admin,
    "attachments:attachments": check_attachments,
    "attachments:attachment": check_attachment,
    "compliance-api:policy": check_policy,
    "compliance-api:policy-public-key": check_policy_public_key,
    "compliance-api:consent": check_consent,
    "compliance-api:data-requests": check_data_requests,
    "compliance-api:data-request-archive": check_data_request_archive,
}

# Routes any client may call without credentials, and why.
PUBLIC: dict[str, str] = {
    ":schema": "the API description",
    ":docs": "the API description, browsable",
    "keys:accounts": "sign-up: there is no account yet (limited per address)",
    "keys:session": "log-in and log-out: the password is the credential",
    "keys:provisioning": "a new device has no credentials yet (limited per address)",
    "keys:provisioning-slot": "GET: the new device waits there by its secret address",
    "keys:devices": "POST: a device joins with a password or link token in the body",
    "compliance-api:policy": "the signed region policy, public by law",
    "compliance-api:policy-public-key": "the key that signs the policy",
}


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    pattern: str
    methods: tuple[str, ...]


def _api_routes() -> Iterator[Route]:
    def walk(
        patterns: list[URLPattern | URLResolver], prefix: str, namespace: str
    ) -> Iterator[Route]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                inner = entry.namespace or namespace
                yield from walk(entry.url_patterns, prefix + str(entry.pattern), inner)
            elif (prefix + str(entry.pattern)).startswith(API_PREFIX):
                view = getattr(entry.callback, "cls", None) or getattr(
                    entry.callback, "view_class", None
                )
                names = getattr(view, "http_method_names", ["get"])
                methods = tuple(
                    m.upper()
                    for m in names
                    if m not in ("options", "head", "trace") and hasattr(view, m)
                )
                yield Route(f"{namespace}:{entry.name}", prefix + str(entry.pattern), methods)

    yield from walk(get_resolver().url_patterns, "", "")


def test_every_api_route_has_a_cross_account_test() -> None:
    names = [route.name for route in _api_routes()]
    assert len(names) == len(set(names)), Counter(names)
    missing = sorted(set(names) - set(CROSS_ACCOUNT))
    stale = sorted(set(CROSS_ACCOUNT) - set(names))
    assert not missing, f"routes without a cross-account test: {missing}"
    assert not stale, f"tests for routes that no longer exist: {stale}"


@pytest.mark.parametrize("name", sorted(CROSS_ACCOUNT))
def test_a_device_cannot_touch_another_accounts_data(name: str, world: World) -> None:
    CROSS_ACCOUNT[name](world)


def _sample_path(pattern: str) -> str:
    path = "/" + pattern
    for converter, value in (
        ("<int:device_id>", "7"),
        ("<int:request_id>", "1"),
        ("<str:username>", "bob"),
        ("<str:address>", "A" * 22),
        ("<str:group_id>", "00" * 16),
        ("<str:blob_id>", "00" * 16),
    ):
        path = path.replace(converter, value)
    assert "<" not in path, f"add a sample value for {path}"
    return path


def _unauthenticated_cases() -> list[tuple[str, str, str]]:
    cases = []
    for route in _api_routes():
        for method in route.methods:
            cases.append((route.name, method, _sample_path(route.pattern)))
    return cases


@pytest.mark.parametrize(("name", "method", "path"), _unauthenticated_cases())
@pytest.mark.django_db
def test_without_credentials_every_private_route_answers_401(
    name: str, method: str, path: str
) -> None:
    sign_up("bob", one_time=0, kem=0)
    for client in (APIClient(), authorized("not-a-token"), authorized(generate_token()[0])):
        response = client.generic(method, path, "{}", content_type="application/json")
        assert response.status_code < 500, (name, method, response.content)
        if name in PUBLIC:
            continue  # public by design, the reason in PUBLIC; a bad token may still be 401
        assert response.status_code == 401, (name, method, response.content)
        assert response.json()["code"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")


# --- every relay frame ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Relay:
    alice: Any
    bob: Any
    bob_seqs: list[int]


def _relay_world() -> Relay:
    alice = make_relay_device("alice")
    bob = make_relay_device("bob")
    carol = make_relay_device("carol")
    seqs = queue_envelopes(carol, bob, [b"for bob"] * 2)
    return Relay(alice, bob, seqs)


def _bob_queue(relay: Relay) -> list[int]:
    return list(
        Envelope.objects.filter(device_id=relay.bob.pk)
        .order_by("seq")
        .values_list("seq", flat=True)
    )


def _server_only(frame_type: FrameType) -> Callable[[Relay], None]:
    frames: dict[FrameType, Frame] = {
        FrameType.SEND_OK: SendOk(5, 1),
        FrameType.DEVICE_MISMATCH: DeviceMismatch(5, (1,), (), ()),
        FrameType.DELIVER: Deliver(1, "bob", 1, 1, b"forged"),
        FrameType.QUEUE_EMPTY: QueueEmpty(),
        FrameType.ERROR: Error(5, int(ErrorCode.INTERNAL), "forged"),
        FrameType.NOTICE: Notice(1, 0),
    }

    def check(relay: Relay) -> None:
        # A client cannot push server frames (a forged DELIVER to anyone, its own
        # included): refused, nothing stored, nothing forwarded.
        async def run() -> None:
            async with connected(relay.alice.token, backlog_empty=True) as socket:
                frame = frames[frame_type]
                await socket.send(frame)
                error = await socket.error()
                assert error.error_code is ErrorCode.INVALID_REQUEST
                await socket.still_works()

        async_to_sync(run)()
        assert _bob_queue(relay) == relay.bob_seqs

    return check


def frame_send(relay: Relay) -> None:
    # The sender is the token's device, never a name in the frame: Bob sees Alice.
    async def run() -> None:
        async with connected(relay.alice.token, backlog_empty=True) as socket:
            await socket.send(send_frame(3, "bob", relay.bob.message(b"hi")))
            assert isinstance(await socket.recv(), SendOk)

    async_to_sync(run)()
    newest = (
        Envelope.objects.filter(device_id=relay.bob.pk)
        .select_related("sender__user")
        .order_by("-seq")
        .first()
    )
    assert newest is not None
    assert (newest.sender.username, newest.sender_device_id) == ("alice", 1)


def frame_ack(relay: Relay) -> None:
    # Acknowledging (deleting) Bob's envelopes from Alice's connection: refused by name.
    async def run() -> None:
        async with connected(relay.alice.token, backlog_empty=True) as socket:
            await socket.send(Ack(4, tuple(relay.bob_seqs)))
            error = await socket.error()
            assert error.error_code is ErrorCode.UNKNOWN_ENVELOPE

    async_to_sync(run)()
    assert _bob_queue(relay) == relay.bob_seqs


def frame_group_send(relay: Relay) -> None:
    # Sending to a group one is not a member of: refused, nothing queued for anyone.
    before = Envelope.objects.count()

    async def run() -> None:
        async with connected(relay.alice.token, backlog_empty=True) as socket:
            await socket.send(GroupSend(6, b"\x01" * 16, b"\x02" * 16, b"payload"))
            error = await socket.error()
            assert error.error_code in (ErrorCode.UNKNOWN_GROUP, ErrorCode.NOT_A_MEMBER)

    async_to_sync(run)()
    assert Envelope.objects.count() == before


def frame_ping_pong(relay: Relay) -> None:
    # Liveness only: answered to the asking connection, carrying nothing of anyone's.
    async def run() -> None:
        async with connected(relay.alice.token, backlog_empty=True) as socket:
            await socket.send(Ping(8))
            assert await socket.recv() == Pong(8)
            await socket.send(Pong(9))
            await socket.still_works()

    async_to_sync(run)()


FRAME_CHECKS: dict[FrameType, Callable[[Relay], None]] = {
    FrameType.SEND: frame_send,
    FrameType.ACK: frame_ack,
    FrameType.GROUP_SEND: frame_group_send,
    FrameType.PING: frame_ping_pong,
    FrameType.PONG: frame_ping_pong,
    **{
        kind: _server_only(kind)
        for kind in (
            FrameType.SEND_OK,
            FrameType.DEVICE_MISMATCH,
            FrameType.DELIVER,
            FrameType.QUEUE_EMPTY,
            FrameType.ERROR,
            FrameType.NOTICE,
        )
    },
}


def test_every_frame_type_has_a_cross_account_test() -> None:
    assert set(FRAME_CHECKS) == set(FrameType)


@pytest.mark.parametrize("frame_type", sorted(FRAME_CHECKS), ids=lambda t: FrameType(t).name)
def test_a_frame_cannot_touch_another_accounts_data(frame_type: FrameType) -> None:
    with override_settings(CHANNEL_LAYERS=fresh_channel_layers()):
        FRAME_CHECKS[frame_type](_relay_world())


def test_the_relay_refuses_a_foreign_or_missing_origin() -> None:
    alice = make_relay_device("alice")
    protocols = ["sealpost.v1", f"sealpost.token.{alice.token}"]

    async def attempt(headers: list[tuple[bytes, bytes]]) -> bool:
        from project.asgi import application

        comm = WebsocketCommunicator(
            application, "/ws/v1/", headers=headers, subprotocols=protocols
        )
        accepted, _ = await comm.connect(timeout=TIMEOUT)
        if accepted:
            await comm.disconnect()
        return bool(accepted)

    with override_settings(CHANNEL_LAYERS=fresh_channel_layers()):
        assert async_to_sync(attempt)([ORIGIN])
        assert not async_to_sync(attempt)([(b"origin", b"https://evil.example")])
        assert not async_to_sync(attempt)([(b"origin", b"http://localhost.evil.example")])
        assert not async_to_sync(attempt)([])


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_are_random_and_long() -> None:
    tokens = [generate_token()[0] for _ in range(200)]
    assert len(set(tokens)) == len(tokens)
    assert TOKEN_BYTES >= 32
    for token in tokens:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) == TOKEN_BYTES
    # Shannon entropy of the characters over all tokens: close to 6 bits (base64url).
    counts = Counter("".join(tokens))
    total = sum(counts.values())
    entropy = -sum(n / total * math.log2(n / total) for n in counts.values())
    assert entropy > 5.9, entropy


def _database_text() -> bytes:
    """Every table's rows, as bytes (ciphertext and hashes included)."""
    dump = bytearray()
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    dump += value if isinstance(value, bytes | memoryview) else str(value).encode()
                    dump += b"\x00"
    return bytes(dump)


def test_tokens_are_only_hashed_at_rest(world: World) -> None:
    link = world.mallory.post("/api/v1/devices/link-tokens").json()["link_token"]
    stored = _database_text()

    for token in (world.alice.token, world.bob.token, world.bob_token_7, link):
        assert token.encode() not in stored
        assert hash_token(token).encode() in stored


def test_a_revoked_token_stops_working_at_once(world: World) -> None:
    revoked = world.bob.client().delete(
        "/api/v1/devices/7", revoke_body(world.bob, 7), format="json"
    )
    assert revoked.status_code == 204, revoked.content

    response = authorized(world.bob_token_7).get("/api/v1/devices")
    assert response.status_code == 401

    async def handshake() -> bool:
        comm = communicator(["sealpost.v1", f"sealpost.token.{world.bob_token_7}"])
        accepted, _ = await comm.connect(timeout=TIMEOUT)
        return bool(accepted)

    with override_settings(CHANNEL_LAYERS=fresh_channel_layers()):
        assert not async_to_sync(handshake)()
    assert world.bob.client().get("/api/v1/devices").status_code == 200


# --- CSRF on the session-cookie requests ----------------------------------------------------


def _browser() -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    assert client.get("/signup").status_code == 200  # sets the CSRF cookie, as the page does
    return client


def test_the_web_pages_posts_need_the_csrf_token(world: World) -> None:
    from tests.server.factories import sign_up_body

    body = sign_up_body("carol", make_device(world.alice.account, 1, one_time=0, kem=0))
    browser = _browser()
    assert browser.post("/api/v1/accounts", body, format="json").status_code == 403
    login = {"username": "bob", "password": STRONG_PASSWORD}
    assert browser.post("/api/v1/session", login, format="json").status_code == 403

    token = browser.cookies["csrftoken"].value
    logged_in = browser.post("/api/v1/session", login, format="json", HTTP_X_CSRFTOKEN=token)
    assert logged_in.status_code == 200
    # With the session cookie, a change needs the token too; log-out likewise.
    rename = browser.patch("/api/v1/devices/1", {"name": "x"}, format="json")
    assert rename.status_code == 403
    assert browser.delete("/api/v1/session").status_code == 403
    token = browser.cookies["csrftoken"].value
    assert (
        browser.patch("/api/v1/devices/1", {"name": "x"}, format="json", HTTP_X_CSRFTOKEN=token)
    ).status_code == 200


@pytest.mark.parametrize("page", ["/", "/signup", "/login", "/chat", "/security"])
def test_the_web_pages_take_no_posts(page: str) -> None:
    assert APIClient(enforce_csrf_checks=True).post(page).status_code in (403, 405)


# --- production mode ------------------------------------------------------------------------


def _production_env(tmp_path: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DJANGO_SETTINGS_MODULE")}
    env.update(
        PRODUCTION="1",
        SECRET_KEY=base64.b64encode(os.urandom(48)).decode(),
        ALLOWED_HOSTS="chat.example",
        DEPLOYMENT_SIGNING_KEY=base64.b64encode(os.urandom(32)).decode(),
        DATABASE_URL=f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
    )
    return env


def test_check_deploy_is_clean_in_production_mode(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_mode_sets_secure_cookies_and_hsts(tmp_path: Any) -> None:
    names = [
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SESSION_COOKIE_HTTPONLY",
    ]
    script = f"from django.conf import settings as s; print([getattr(s, n) for n in {names!r}])"
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {script}"],
        cwd=ROOT,
        env={**_production_env(tmp_path), "DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    values = eval(result.stdout.strip())  # noqa: S307 - our own subprocess's repr of a list
    secure, csrf_secure, redirect, hsts, subdomains, preload, httponly = values
    assert secure and csrf_secure and redirect and subdomains and preload and httponly
    assert hsts >= 31_536_000
