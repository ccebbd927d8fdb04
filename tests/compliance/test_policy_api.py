"""/api/v1/policy publishes the region policy as the files say it, signed by the deployment
key; the signature verifies with the protocol's primitives against the published key."""

from __future__ import annotations

import base64
import copy
import re
import stat
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from django.core.management import call_command
from django.test import Client, override_settings
from drf_spectacular.drainage import GENERATOR_STATS

from compliance.policy import DEFAULT_POLICY_DIR, load_policy, merge
from compliance.published import public_policy, public_policy_schema
from compliance.signing import (
    CANONICAL_FORM,
    DeploymentKey,
    SigningKeyError,
    canonical_json,
    deployment_key,
    load_deployment_key,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.primitives import ed25519_verify
from tests.compliance.helpers import SHIPPED_REGIONS, shipped

# Fields of the files that are not published (compliance.policy.INTERNAL).
INTERNAL = {("residency", "cloud_region"), ("watch",)}


def _get_policy(client: Client, region: str) -> dict[str, Any]:
    with override_settings(POLICY=load_policy(region, DEFAULT_POLICY_DIR)):
        response = client.get("/api/v1/policy")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def _published_form(document: Any, path: tuple[str, ...] = ()) -> Any:
    """The merged YAML as the endpoint should publish it: id-keyed mappings as lists."""
    if isinstance(document, dict):
        out = {}
        for key, value in document.items():
            if (*path, key) in INTERNAL:
                continue
            if (*path, key) in {("sources",), ("consent", "purposes")}:
                out[key] = [
                    {"id": item_id, **_published_form(item, (*path, key, "*"))}
                    for item_id, item in value.items()
                    if item is not None
                ]
            else:
                out[key] = _published_form(value, (*path, key))
        return out
    if isinstance(document, list):
        return [_published_form(item, path) for item in document]
    if isinstance(document, str):
        return " ".join(document.split())
    return document


def _contains(published: Any, expected: Any, where: str = "policy") -> None:
    """Every value the files give is published as given (the rest are defaults: null, [])."""
    if isinstance(expected, dict):
        assert isinstance(published, dict), where
        for key, value in expected.items():
            assert key in published, f"{where}.{key}"
            _contains(published[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(published, list) and len(published) == len(expected), where
        for index, (got, want) in enumerate(zip(published, expected, strict=True)):
            _contains(got, want, f"{where}[{index}]")
    else:
        assert published == expected, where


@pytest.mark.django_db
@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_the_endpoint_publishes_the_files_values(client: Client, region: str) -> None:
    body = _get_policy(client, region)

    assert set(body) == {"policy", "signature_b64", "public_key_b64", "canonical"}
    assert body["canonical"] == CANONICAL_FORM
    merged = merge(shipped("_defaults"), shipped(region))
    _contains(body["policy"], _published_form(merged))
    assert "cloud_region" not in body["policy"]["residency"]
    assert "watch" not in body["policy"]


@pytest.mark.django_db
@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_the_signature_verifies_against_the_published_key(client: Client, region: str) -> None:
    body = _get_policy(client, region)
    key = client.get("/api/v1/policy/public-key").json()

    assert key == {"public_key_b64": body["public_key_b64"], "algorithm": "ed25519"}
    public_key = base64.b64decode(key["public_key_b64"], validate=True)
    signature = base64.b64decode(body["signature_b64"], validate=True)
    ed25519_verify(public_key, canonical_json(body["policy"]), signature)

    tampered = copy.deepcopy(body["policy"])
    tampered["retention"]["connection_logs"]["maximum"] = "1y"
    with pytest.raises(ProtocolError) as caught:
        ed25519_verify(public_key, canonical_json(tampered), signature)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.django_db
def test_the_policy_is_public_and_cacheable(client: Client) -> None:
    for path in ("/api/v1/policy", "/api/v1/policy/public-key"):
        response = client.get(path, HTTP_AUTHORIZATION="Bearer not-a-token")

        assert response.status_code == 200
        assert "public" in response["Cache-Control"]
    assert client.post("/api/v1/policy", {}).status_code == 405


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_utf8() -> None:
    assert canonical_json({"b": [1, True, None], "a": {"d": "São", "c": ""}}) == (
        '{"a":{"c":"","d":"São"},"b":[1,true,null]}'.encode()
    )
    with pytest.raises(TypeError, match=r"\.x: float has no canonical JSON form"):
        canonical_json({"x": 1.5})
    with pytest.raises(TypeError, match="not a string"):
        canonical_json({1: "a"})


# --- the schema -------------------------------------------------------------------------------


def _json_schema(openapi: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema, to validate responses with jsonschema."""
    if isinstance(openapi, list):
        return [_json_schema(item) for item in openapi]
    if not isinstance(openapi, dict):
        return openapi
    schema = {key: _json_schema(value) for key, value in openapi.items() if key != "nullable"}
    if openapi.get("nullable"):
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path: Path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    GENERATOR_STATS.reset()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_the_schema_documents_both_endpoints_without_auth(openapi: dict[str, Any]) -> None:
    for path, operation_id in (
        ("/api/v1/policy", "get_policy"),
        ("/api/v1/policy/public-key", "get_policy_public_key"),
    ):
        operation = openapi["paths"][path]["get"]
        assert operation["operationId"] == operation_id
        assert "security" not in operation  # no credentials needed
        assert "200" in operation["responses"]
    signed = openapi["components"]["schemas"]["SignedPolicy"]
    assert signed["properties"]["policy"]["allOf"] == [
        {"$ref": "#/components/schemas/RegionPolicy"}
    ]
    assert signed["required"] == ["canonical", "policy", "public_key_b64", "signature_b64"]


@pytest.mark.django_db
@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_each_published_policy_matches_its_schema(
    client: Client, openapi: dict[str, Any], region: str
) -> None:
    body = _get_policy(client, region)

    jsonschema.validate(
        body["policy"], _json_schema(openapi["components"]["schemas"]["RegionPolicy"])
    )
    jsonschema.validate(body["policy"], _json_schema(public_policy_schema()))
    assert body["policy"] == public_policy(load_policy(region, DEFAULT_POLICY_DIR))


# --- the deployment key ----------------------------------------------------------------------


SEED = bytes(range(32))


def test_the_key_comes_from_the_environment(tmp_path: Path) -> None:
    key = load_deployment_key(
        {"DEPLOYMENT_SIGNING_KEY": base64.b64encode(SEED).decode()},
        tmp_path / "key",
        production=True,
    )

    assert key == DeploymentKey.from_seed(SEED)
    assert SEED.hex() not in repr(key) and "seed" not in repr(key)
    assert not (tmp_path / "key").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "DEPLOYMENT_SIGNING_KEY: not standard base64"),
        (base64.b64encode(b"short").decode(), "must be 32 bytes (an Ed25519 seed), got 5"),
    ],
)
def test_a_bad_key_in_the_environment_is_refused(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(SigningKeyError, match=re.escape(message)):
        load_deployment_key({"DEPLOYMENT_SIGNING_KEY": value}, tmp_path / "key", production=False)


def test_production_requires_the_key_in_the_environment(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="PRODUCTION=1 needs DEPLOYMENT_SIGNING_KEY"):
        load_deployment_key({}, tmp_path / "key", production=True)


def test_without_one_a_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "var" / "deployment_signing_key"

    first = load_deployment_key({}, path, production=False)
    second = load_deployment_key({}, path, production=False)

    assert first == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text()) == first.seed
    path.write_text("garbage")
    with pytest.raises(SigningKeyError, match="delete it to generate a new key"):
        load_deployment_key({}, path, production=False)


def test_the_process_signs_with_one_key(client: Client) -> None:
    assert client.get("/api/v1/policy/public-key").json()["public_key_b64"] == (
        deployment_key().public_key_b64
    )
