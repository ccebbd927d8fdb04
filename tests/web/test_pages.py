"""The web client's pages: each renders, carries the strict Content-Security-Policy, links
its code from static files only, and shows what the issue asks of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import override_settings

PAGES = ["/signup", "/login", "/chat", "/security"]


def _directives(policy: str) -> dict[str, str]:
    out = {}
    for part in policy.split(";"):
        name, _, values = part.strip().partition(" ")
        out[name] = values
    return out


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_with_a_strict_policy(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    policy = _directives(response["Content-Security-Policy"])
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' data: blob:"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["form-action"] == "'self'"
    assert "unsafe" not in response["Content-Security-Policy"]


@pytest.mark.parametrize("path", PAGES)
def test_page_has_no_inline_code_and_the_e2ee_indicator(client: Client, path: str) -> None:
    html = client.get(path).content.decode()

    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.IGNORECASE)
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'type="module"' in tag
        assert 'src="/static/dist/sealpost.js"' in tag
    assert html.count("<script") <= 1
    assert '<link rel="stylesheet" href="/static/css/app.css">' in html
    # The indicator is in the page itself, not added by script, and links the explanation.
    assert re.search(r'<a class="e2ee" id="e2ee" href="/security"', html)
    assert "End-to-end encrypted" in html


@pytest.mark.parametrize("path", ["/signup", "/login", "/chat"])
def test_no_form_can_be_submitted_before_the_script_runs(client: Client, path: str) -> None:
    """A form submitted natively would put a password or a message in a URL (and so in
    access logs). Every submit button starts disabled (the script enables it) and every
    form posts, so even a forced submission keeps its fields out of the URL."""
    html = client.get(path).content.decode()

    buttons = re.findall(r'<button type="submit"[^>]*>', html)
    assert buttons
    for button in buttons:
        assert "disabled" in button and "data-needs-script" in button, button
    for form in re.findall(r"<form\b[^>]*>", html):
        assert 'method="post"' in form, form


def test_security_page_explains_both_sides_without_script(client: Client) -> None:
    html = client.get("/security").content.decode()

    assert "<script" not in html
    assert "What it protects" in html
    assert "What it does not protect" in html
    for phrase in ("the people who run it", "Who talks to whom", "unlocked phone", "screenshot"):
        assert phrase in html


@override_settings(REGION="us")
def test_signup_shows_the_region_privacy_notice(client: Client) -> None:
    html = client.get("/signup").content.decode()

    assert 'id="privacy-notice"' in html
    assert '<span id="region">us</span>' in html
    assert 'id="accept"' in html


def test_pages_that_call_the_api_set_the_csrf_cookie(client: Client) -> None:
    for path in ("/signup", "/login", "/chat"):
        assert "csrftoken" in client.get(path).cookies, path


def test_home_sends_a_visitor_to_signup(client: Client) -> None:
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/signup"


@pytest.mark.django_db
def test_home_sends_a_logged_in_user_to_chat(client: Client) -> None:
    client.force_login(User.objects.create_user("alice"))

    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/chat"


@pytest.mark.parametrize("path", ["/", *PAGES])
def test_pages_refuse_post(client: Client, path: str) -> None:
    assert client.post(path).status_code == 405


def test_the_web_client_never_parses_strings_as_html_or_code() -> None:
    """Messages, usernames and errors reach the page through textContent only: no HTML
    sink and no string-to-code API anywhere in the browser's JavaScript (the CSP would
    stop eval, but an HTML sink with a message in it needs no script to do harm)."""
    root = Path(__file__).resolve().parents[2] / "static" / "js"
    sinks = re.compile(
        r"\.innerHTML\b|\.outerHTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function\("
        r"|createContextualFragment|DOMParser"
    )
    files = [
        root / "app.js",
        *sorted((root / "ui").glob("*.js")),
        *sorted((root / "app").glob("*.js")),
    ]
    assert len(files) > 5
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not sinks.search(line), f"{path.relative_to(root)}:{number}: {line.strip()}"
