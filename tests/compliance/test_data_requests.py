"""Data-subject requests through the API and the management commands: an export is a zip
of everything held (never a message payload) with its deadline tracked per region; an
erasure needs the password again and leaves a pseudonymised request behind."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from compliance.models import DataSubjectRequest
from compliance.subject_data import pseudonym
from keys.models import Account
from tests.compliance.conftest import SignUp
from tests.server.factories import STRONG_PASSWORD
from tests.server.relay_helpers import make_device, queue_envelopes

pytestmark = pytest.mark.django_db


def _signed_up(post_sign_up: SignUp, username: str = "alice") -> APIClient:
    response = post_sign_up(username, age_confirmed=True, consents=["diagnostics"])
    assert response.status_code == 201, response.json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    return client


@pytest.mark.parametrize(("region", "days"), [("eu", (28, 31)), ("us-ca", (45, 45))])
def test_an_export_is_answered_with_a_zip_and_its_deadline(
    post_sign_up: SignUp, use_region: Any, region: str, days: tuple[int, int]
) -> None:
    use_region(region)
    client = _signed_up(post_sign_up)

    response = client.post("/api/v1/data-requests", {"kind": "export"}, format="json")

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["kind"] == "export" and body["status"] == "completed"
    assert body["channel"] == "api"
    request = DataSubjectRequest.objects.get(pk=body["id"])
    assert days[0] <= (request.deadline - request.received_at).days <= days[1]
    download = client.get(body["archive_url"])
    assert download.status_code == 200
    assert download["Content-Type"] == "application/zip"
    assert "attachment" in download["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    devices = json.loads(archive.read("keys.device.json"))
    assert [d["device_id"] for d in devices] == [1] and devices[0]["identity_key_b64"]
    assert "token_hash" not in devices[0]
    consents = json.loads(archive.read("compliance.consentrecord.json"))
    assert {c["purpose"] for c in consents} == {"service", "diagnostics", "product_updates"}
    users = json.loads(archive.read("auth.user.json"))
    assert users[0]["username"] == "alice" and "password" not in users[0]

    listed = client.get("/api/v1/data-requests").json()["requests"]
    assert [r["id"] for r in listed] == [body["id"]]


def test_the_export_carries_envelope_metadata_never_payloads() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(bob, alice, [b"top secret ciphertext"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice.token}")

    url = client.post("/api/v1/data-requests", {"kind": "export"}, format="json").json()[
        "archive_url"
    ]
    archive = zipfile.ZipFile(io.BytesIO(client.get(url).content))

    (envelope,) = json.loads(archive.read("messaging.envelope.json"))
    assert envelope["sender"] == "bob" and envelope["seq"] == 1
    assert envelope["size_bytes"] == len(b"top secret ciphertext")
    assert "payload" not in envelope
    assert all(b"top secret" not in archive.read(name) for name in archive.namelist())


def test_nobody_else_downloads_an_export(post_sign_up: SignUp) -> None:
    alice = _signed_up(post_sign_up, "alice")
    mallory = _signed_up(post_sign_up, "mallory")
    url = alice.post("/api/v1/data-requests", {"kind": "export"}, format="json").json()[
        "archive_url"
    ]

    assert mallory.get(url).status_code == 404
    assert APIClient().get(url).status_code == 401


@pytest.mark.parametrize("password", [None, "wrong password"])
def test_erasure_needs_the_password_again(post_sign_up: SignUp, password: str | None) -> None:
    client = _signed_up(post_sign_up)
    body = {"kind": "erasure", **({"password": password} if password else {})}

    response = client.post("/api/v1/data-requests", body, format="json")

    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert "password" in response.json()["fields"]
    assert Account.objects.filter(user__username="alice").exists()
    assert not DataSubjectRequest.objects.exists()


def test_erasure_deletes_the_account_and_reports_what_it_kept(post_sign_up: SignUp) -> None:
    client = _signed_up(post_sign_up)

    response = client.post(
        "/api/v1/data-requests", {"kind": "erasure", "password": STRONG_PASSWORD}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["request"]["status"] == "completed"
    report = body["report"]
    assert report["username"] == "alice" and report["pseudonym"] == pseudonym("alice")
    kept = {s["label"]: s for s in report["steps"] if s["kept"]}
    assert set(kept) == {"compliance.datasubjectrequest"}  # EU: no connection log floor
    assert kept["compliance.datasubjectrequest"]["until"]
    assert not User.objects.filter(username="alice").exists()
    request = DataSubjectRequest.objects.get()
    assert request.username == pseudonym("alice") and request.account is None
    assert client.get("/api/v1/consent").status_code == 401  # the token is gone too


def test_an_unknown_kind_is_named(post_sign_up: SignUp) -> None:
    client = _signed_up(post_sign_up)

    response = client.post("/api/v1/data-requests", {"kind": "rectify"}, format="json")

    assert response.status_code == 400 and "kind" in response.json()["fields"]


# --- the management commands ----------------------------------------------------------------------


def test_export_user_writes_the_zip_and_prints_each_step(tmp_path: Path) -> None:
    make_device("alice")
    output = tmp_path / "alice.zip"
    out = io.StringIO()

    call_command("export_user", "alice", "--output", str(output), stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0] == "Exporting alice..."
    assert any(line.startswith("exported keys.device.json: 1 rows") for line in lines)
    assert lines[-1].startswith(f"Wrote {output}")
    assert "manifest.json" in zipfile.ZipFile(output).namelist()
    assert DataSubjectRequest.objects.get().channel == "command"


def test_erase_user_prints_each_step_and_the_report() -> None:
    make_device("alice")
    out = io.StringIO()

    call_command("erase_user", "alice", "--yes", stdout=out)

    text = out.getvalue()
    assert text.startswith("Erasing alice...")
    assert "erased keys.device: 1 deleted" in text
    assert "Report:" in text and pseudonym("alice") in text
    assert "compliance.datasubjectrequest: 0 deleted, 1 kept until" in text
    assert not Account.objects.exists()


def test_the_commands_refuse_an_unknown_user(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no account 'nobody'"):
        call_command("export_user", "nobody", "--output", str(tmp_path / "x.zip"))
    with pytest.raises(CommandError, match="no account 'nobody'"):
        call_command("erase_user", "nobody", "--yes")


def test_erase_user_asks_first(monkeypatch: pytest.MonkeyPatch) -> None:
    make_device("alice")
    monkeypatch.setattr("builtins.input", lambda prompt: "no")

    with pytest.raises(CommandError, match="not erased"):
        call_command("erase_user", "alice", stdout=io.StringIO())
    assert Account.objects.exists()


@pytest.mark.parametrize("body", [{"kind": "export", "password": 123}, {"kind": 1}])
def test_values_of_the_wrong_json_type_are_refused(
    post_sign_up: SignUp, body: dict[str, Any]
) -> None:
    client = _signed_up(post_sign_up)

    response = client.post("/api/v1/data-requests", body, format="json")

    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    assert not DataSubjectRequest.objects.exists()
