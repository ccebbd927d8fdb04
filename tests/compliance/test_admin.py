"""The admin: every admin action and log-in lands in the audit log; the consent ledger,
connection logs, requests (with deadlines) and the region policy are shown read-only; no
page shows a message."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from compliance import connections, consent, dsr
from compliance.models import AdminAuditLog, ConsentRecord, DataSubjectRequest
from keys.models import Account, Device
from tests.server.relay_helpers import make_device, queue_envelopes

pytestmark = pytest.mark.django_db
PASSWORD = "operator-password-42"


@pytest.fixture
def operator() -> User:
    return User.objects.create_superuser("operator", "op@example.org", PASSWORD)


@pytest.fixture
def admin_client(operator: User) -> Client:
    client = Client()
    response = client.post(
        "/admin/login/", {"username": "operator", "password": PASSWORD, "next": "/admin/"}
    )
    assert response.status_code == 302, response.content
    return client


def test_logins_to_the_admin_are_audited(operator: User) -> None:
    client = Client()
    client.post("/admin/login/", {"username": "operator", "password": "wrong"})
    client.post("/admin/login/", {"username": "operator", "password": PASSWORD})

    actions = list(AdminAuditLog.objects.order_by("pk").values_list("action", "actor_name"))
    assert actions == [("login_failed", ""), ("login", "operator")]
    failed = AdminAuditLog.objects.get(action="login_failed")
    assert failed.object_repr == "operator" and PASSWORD not in failed.detail


def test_a_change_in_the_admin_is_audited_with_its_subject(admin_client: Client) -> None:
    alice = make_device("alice")

    response = admin_client.post(f"/admin/keys/device/{alice.pk}/change/", {"name": "Work laptop"})

    assert response.status_code == 302
    assert Device.objects.get(pk=alice.pk).name == "Work laptop"
    entry = AdminAuditLog.objects.get(action="change")
    assert entry.actor_name == "operator" and entry.object_type == "keys.device"
    assert entry.object_repr == "alice/1" and "Name" in entry.detail
    assert entry.subject == Account.objects.get(user__username="alice")


def test_bulk_deletions_are_audited_one_by_one(admin_client: Client) -> None:
    groups = [Group.objects.create(name=name) for name in ("a", "b", "c")]

    response = admin_client.post(
        "/admin/auth/group/",
        {
            "action": "delete_selected",
            "_selected_action": [g.pk for g in groups],
            "post": "yes",
        },
    )

    assert response.status_code == 302
    assert not Group.objects.exists()
    deleted = AdminAuditLog.objects.filter(action="delete", object_type="auth.group")
    assert sorted(deleted.values_list("object_repr", flat=True)) == ["a", "b", "c"]


def test_the_compliance_pages_render_read_only(admin_client: Client) -> None:
    alice = make_device("alice")
    account = Account.objects.get(user__username="alice")
    consent.record_consent(account, "service", True, "api")
    connections.record_connection(Device.objects.get(pk=alice.pk), "203.0.113.5")

    for url in (
        "/admin/compliance/consentrecord/",
        "/admin/compliance/connectionlog/",
        "/admin/compliance/adminauditlog/",
        "/admin/compliance/agecheck/",
        "/admin/compliance/datasubjectrequest/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    record = ConsentRecord.objects.get()
    assert (
        admin_client.get(f"/admin/compliance/consentrecord/{record.pk}/delete/").status_code == 403
    )
    assert admin_client.get("/admin/compliance/consentrecord/add/").status_code == 403
    assert b"203.0.113.5" in admin_client.get("/admin/compliance/connectionlog/").content


def test_the_region_policy_page_shows_the_loaded_policy(
    admin_client: Client, settings: Any
) -> None:
    response = admin_client.get("/admin/compliance/regionpolicy/")

    assert response.status_code == 200
    html = response.content.decode()
    assert settings.POLICY.region.name in html
    assert settings.POLICY.version in html
    assert "deploy/regions/eu.yaml" in html
    assert "connection_logs" in html
    assert "<script>" not in html  # the CSP allows no inline script


def test_requests_show_their_deadline_and_an_overdue_one_stands_out(admin_client: Client) -> None:
    make_device("alice")
    account = Account.objects.get(user__username="alice")
    late = dsr.open_request(account, "export", "web", now=timezone.now() - timedelta(days=40))
    dsr.open_request(account, "erasure", "web")

    html = admin_client.get("/admin/compliance/datasubjectrequest/").content.decode()

    assert html.count("dsr-overdue") == 1
    assert f"{late.deadline:%Y-%m-%d}" in html
    assert "compliance/admin.css" in html


def test_an_operator_files_and_answers_a_request(admin_client: Client) -> None:
    make_device("alice")
    account = Account.objects.get(user__username="alice")

    response = admin_client.post(
        "/admin/compliance/datasubjectrequest/add/", {"account": account.pk, "kind": "export"}
    )
    assert response.status_code == 302
    request = DataSubjectRequest.objects.get()
    assert request.channel == "admin" and request.status == "received"
    assert request.deadline > request.received_at

    response = admin_client.post(
        "/admin/compliance/datasubjectrequest/",
        {"action": "answer_now", "_selected_action": [request.pk]},
    )
    assert response.status_code == 302
    request.refresh_from_db()
    assert request.status == "completed"
    assert AdminAuditLog.objects.filter(action="answer export").exists()
    assert AdminAuditLog.objects.filter(action="add", object_type="compliance.datasubjectrequest")

    download = admin_client.get(f"/admin/compliance/datasubjectrequest/{request.pk}/archive")
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    assert AdminAuditLog.objects.filter(action="download export").exists()


def test_no_admin_page_shows_a_message_payload(admin_client: Client) -> None:
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(alice, bob, [b"PAYLOAD-MARKER-0123456789"])
    from messaging.models import Envelope

    envelope = Envelope.objects.get()
    for url in (
        "/admin/messaging/envelope/",
        f"/admin/messaging/envelope/{envelope.pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert b"PAYLOAD-MARKER" not in response.content
        assert b"UEFZTE9BRC1NQVJLRVI" not in response.content  # nor in base64
