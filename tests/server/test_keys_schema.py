"""The OpenAPI schema documents every keys endpoint, with its errors, and generates
without a single warning; the admin shows keys only as fingerprints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from drf_spectacular.drainage import GENERATOR_STATS

from keys.models import Device
from tests.server.factories import sign_up

# Every path and method of docs/api.md's keys sections.
DOCUMENTED = {
    "/api/v1/accounts": {"post"},
    "/api/v1/session": {"post", "delete"},
    "/api/v1/devices": {"get", "post"},
    "/api/v1/devices/{device_id}": {"patch", "delete"},
    "/api/v1/devices/self/prekeys": {"get", "post"},
    "/api/v1/devices/self/signed-prekey": {"put"},
    "/api/v1/devices/self/last-resort-kem-prekey": {"put"},
    "/api/v1/accounts/{username}/keys": {"get"},
    "/api/v1/accounts/{username}/bundles": {"post"},
    "/api/v1/devices/link-tokens": {"post"},
    "/api/v1/provisioning": {"post"},
    "/api/v1/provisioning/{address}": {"get", "put"},
}
ERROR_REF = "#/components/schemas/Error"


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path: Path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    GENERATOR_STATS.reset()  # warnings are counted process-wide
    # --fail-on-warn raises if generation warned or errored; --validate checks the result
    # against the OpenAPI 3 JSON schema.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_every_documented_path_and_method_is_in_the_schema(schema: dict[str, Any]) -> None:
    for path, methods in DOCUMENTED.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), (path, set(schema["paths"][path]))


def test_every_keys_operation_documents_its_success_and_its_errors(
    schema: dict[str, Any],
) -> None:
    for path, methods in DOCUMENTED.items():
        for method in methods:
            operation = schema["paths"][path][method]
            responses = operation["responses"]
            assert any(status.startswith("2") for status in responses), (path, method)
            errors = {s: r for s, r in responses.items() if s.startswith(("4", "5"))}
            assert errors, (path, method)
            for status, response in errors.items():
                content = response["content"]["application/json"]["schema"]
                assert content == {"$ref": ERROR_REF}, (path, method, status)
                assert "`" in response["description"], (path, method, status)  # lists codes


def test_error_codes_are_documented_where_the_contract_puts_them(
    schema: dict[str, Any],
) -> None:
    def codes(path: str, method: str, status: str) -> str:
        return str(schema["paths"][path][method]["responses"][status]["description"])

    assert "`username_taken`" in codes("/api/v1/accounts", "post", "409")
    assert "`prekey_batch_too_large`" in codes("/api/v1/accounts", "post", "413")
    assert "`device_limit_reached`" in codes("/api/v1/devices", "post", "422")
    assert "`prekey_store_full`" in codes("/api/v1/devices/self/prekeys", "post", "422")
    assert "`unknown_device`" in codes("/api/v1/devices/{device_id}", "delete", "404")
    assert "`unknown_device`" in codes("/api/v1/accounts/{username}/bundles", "post", "404")
    assert "`device_mismatch`" in codes("/api/v1/accounts", "post", "409")
    assert "`device_mismatch`" in codes("/api/v1/devices", "post", "409")
    assert "`device_mismatch`" in codes("/api/v1/devices/{device_id}", "delete", "409")
    assert "`link_not_found`" in codes("/api/v1/devices", "post", "404")
    assert "`link_expired`" in codes("/api/v1/devices", "post", "410")
    assert "`rate_limited`" in codes("/api/v1/provisioning", "post", "429")
    slot = "/api/v1/provisioning/{address}"
    assert "`invalid_request`" in codes(slot, "put", "409")
    assert "`too_large`" in codes(slot, "put", "413")
    assert "`link_expired`" in codes(slot, "get", "410")
    assert "204" in schema["paths"][slot]["get"]["responses"]
    assert [p["name"] for p in schema["paths"][slot]["get"]["parameters"]] == ["address", "wait"]
    keys = schema["components"]["schemas"]["AccountKeys"]
    assert "device_list_b64" in keys["properties"]
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "message"}


def test_sign_up_and_log_in_need_no_credentials_and_the_rest_take_a_device_token(
    schema: dict[str, Any],
) -> None:
    paths = schema["paths"]
    assert paths["/api/v1/accounts"]["post"].get("security", []) in ([], [{}])
    assert paths["/api/v1/session"]["post"].get("security", []) in ([], [{}])
    assert paths["/api/v1/provisioning"]["post"].get("security", []) in ([], [{}])
    assert paths["/api/v1/provisioning/{address}"]["get"].get("security", []) in ([], [{}])
    slot_put = paths["/api/v1/provisioning/{address}"]["put"]
    assert {"deviceToken": []} in slot_put["security"]
    assert paths["/api/v1/devices/link-tokens"]["post"]["security"] == [{"deviceToken": []}]
    assert {"deviceToken": []} in paths["/api/v1/devices/self/prekeys"]["get"]["security"]
    scheme = schema["components"]["securitySchemes"]["deviceToken"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"


@pytest.mark.django_db
def test_the_admin_shows_fingerprints_and_counts_but_no_token_hash(client: Client) -> None:
    alice = sign_up("alice", one_time=4, kem=2)
    get_user_model().objects.create_superuser("root", password="root-password-1")
    client.login(username="root", password="root-password-1")
    device = Device.objects.get()

    accounts = client.get("/admin/keys/account/")
    devices = client.get("/admin/keys/device/")
    page = client.get(f"/admin/keys/device/{device.pk}/change/")

    assert accounts.status_code == devices.status_code == page.status_code == 200
    html = page.content.decode()
    assert device.token_hash not in html
    assert alice.device.keys.certificate.identity_key.hex()[:16] in html
    assert alice.device.keys.certificate.identity_key.hex() not in html  # a prefix only
    assert alice.account.public_key.hex()[:16] in accounts.content.decode()
    assert '<td class="field-device_count">1</td>' in accounts.content.decode()
    assert "one-time prekeys" in html.lower()


@pytest.mark.django_db
def test_renaming_and_deleting_in_the_admin_go_through_the_services(client: Client) -> None:
    sign_up("alice")
    get_user_model().objects.create_superuser("root", password="root-password-1")
    client.login(username="root", password="root-password-1")
    device = Device.objects.get()

    renamed = client.post(f"/admin/keys/device/{device.pk}/change/", {"name": "desk"})
    assert renamed.status_code == 302
    assert Device.objects.get().name == "desk"

    deleted = client.post(f"/admin/keys/device/{device.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not Device.objects.exists()
