"""The web client's privacy page (/privacy) and the sign-up form's age and consent parts:
consent toggles, export and erasure with plain CSRF-checked forms, the strict CSP, and the
re-consent notice after a policy version that asks again."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from compliance import consent
from compliance.models import ConsentRecord, DataSubjectRequest
from keys.models import Account
from tests.server.relay_helpers import make_device

PASSWORD = "violet-anchor-tundra-42"


@pytest.fixture
def alice(settings: Any) -> Account:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    make_device("alice")
    account = Account.objects.select_related("user").get(user__username="alice")
    account.user.set_password(PASSWORD)
    account.user.save()
    consent.record_sign_up(account, consent.check_sign_up(None, True, ["diagnostics"]))
    return account


@pytest.fixture
def browser(alice: Account) -> Client:
    """A logged-in browser whose posts must carry the CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user)
    return client


def _post(client: Client, data: dict[str, str]) -> Any:
    client.get("/privacy")
    token = client.cookies["csrftoken"].value
    return client.post("/privacy", {**data, "csrfmiddlewaretoken": token})


@pytest.mark.django_db
def test_a_visitor_is_sent_to_log_in(client: Client) -> None:
    response = client.get("/privacy")

    assert response.status_code == 302 and response["Location"].startswith("/login")


@pytest.mark.django_db
def test_the_page_lists_each_purpose_under_the_strict_policy(browser: Client) -> None:
    response = browser.get("/privacy")

    assert response.status_code == 200
    html = response.content.decode()
    for purpose in ("service", "diagnostics", "product_updates"):
        assert f'id="purpose-{purpose}"' in html
    assert 'data-granted="true"' in html and "Turn off" in html and "Turn on" in html
    assert "unsafe" not in response["Content-Security-Policy"]
    assert not re.search(r"<script|<style\b|\sstyle=|\son[a-z]+=", html, re.IGNORECASE)
    for form in re.findall(r"<form\b[^>]*>", html):
        assert 'method="post"' in form
    assert html.count("csrfmiddlewaretoken") == html.count("<form")


@pytest.mark.django_db
def test_a_toggle_withdraws_consent_through_the_ledger(browser: Client, alice: Account) -> None:
    response = _post(browser, {"action": "consent", "purpose": "diagnostics", "granted": "off"})

    assert response.status_code == 302
    latest = ConsentRecord.objects.filter(account=alice, purpose="diagnostics").last()
    assert latest is not None and not latest.granted and latest.method == "web"
    assert (
        'id="purpose-diagnostics" data-granted="false"' in browser.get("/privacy").content.decode()
    )


@pytest.mark.django_db
def test_posts_without_the_csrf_token_are_refused(browser: Client) -> None:
    response = browser.post("/privacy", {"action": "export"})

    assert response.status_code == 403
    assert not DataSubjectRequest.objects.exists()


@pytest.mark.django_db
def test_a_necessary_purpose_cannot_be_withdrawn_here_either(browser: Client) -> None:
    _post(browser, {"action": "consent", "purpose": "service", "granted": "off"})

    html = browser.get("/privacy").content.decode()
    assert "cannot be withdrawn" in html
    assert 'id="purpose-service" data-granted="true"' in html


@pytest.mark.django_db
def test_an_export_is_offered_for_download(browser: Client) -> None:
    assert _post(browser, {"action": "export"}).status_code == 302

    html = browser.get("/privacy").content.decode()
    request = DataSubjectRequest.objects.get()
    assert f'href="/api/v1/data-requests/{request.pk}/archive"' in html
    download = browser.get(f"/api/v1/data-requests/{request.pk}/archive")
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"


@pytest.mark.django_db
def test_erasure_needs_the_password_and_clears_the_browser(browser: Client) -> None:
    wrong = _post(browser, {"action": "erasure", "password": "nope"})
    assert wrong.status_code == 302
    assert User.objects.filter(username="alice").exists()

    response = _post(browser, {"action": "erasure", "password": PASSWORD})

    assert response.status_code == 200
    assert response["Clear-Site-Data"] == '"cache", "cookies", "storage"'
    assert "has been erased" in response.content.decode()
    assert not User.objects.filter(username="alice").exists()
    assert browser.get("/privacy").status_code == 302  # logged out


@pytest.mark.django_db
def test_a_policy_that_asks_again_shows_on_the_chat_and_privacy_pages(
    browser: Client, settings: Any
) -> None:
    assert 'id="reconsent-banner"' not in browser.get("/chat").content.decode()
    settings.POLICY = dataclasses.replace(settings.POLICY, version="1.1.0")

    assert 'id="reconsent-banner"' in browser.get("/chat").content.decode()
    html = browser.get("/privacy").content.decode()
    assert 'id="reconsent"' in html and "version 1.1.0" in html

    _post(browser, {"action": "consent", "purpose": "diagnostics", "granted": "on"})
    assert 'id="reconsent-banner"' not in browser.get("/chat").content.decode()


@pytest.mark.django_db
def test_the_chat_page_links_the_privacy_page(browser: Client) -> None:
    assert 'href="/privacy"' in browser.get("/chat").content.decode()


def test_sign_up_asks_for_the_age_and_each_optional_consent(client: Client) -> None:
    html = client.get("/signup").content.decode()

    assert 'id="birth-date"' in html and 'type="date"' in html
    assert 'name="consent" value="diagnostics"' in html
    assert 'name="consent" value="service"' not in html  # necessary: no choice to make
    assert "16 or older" in html  # the EU's age of self-consent
