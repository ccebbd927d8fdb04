"""The transparency page and the sign-up privacy notice say what the region's policy says."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.template import Context, Template
from django.test import Client, override_settings

from compliance.policy import DEFAULT_POLICY_DIR, load_policy
from compliance.services import privacy_notice_context
from compliance.transparency import retention_phrase
from tests.compliance.helpers import SHIPPED_REGIONS


def _page(client: Client, region: str) -> str:
    with override_settings(POLICY=load_policy(region, DEFAULT_POLICY_DIR)):
        response = client.get("/transparency")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode()


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_the_page_shows_the_regions_figures(client: Client, region: str) -> None:
    policy = load_policy(region, DEFAULT_POLICY_DIR)
    retention = policy.retention

    text = _text(_page(client, region))

    assert f"serves {policy.region.name}" in text
    assert f"version {policy.version}" in text
    assert f"In {policy.residency.location}." in text
    assert f"never longer than {retention.undelivered_envelopes.maximum.human()}" in text
    assert f"unused for {retention.idle_devices.maximum.human()}" in text
    assert f"used for {retention.idle_accounts.maximum.human()} is erased" in text
    assert retention_phrase(retention.connection_logs) in text
    assert retention_phrase(retention.attachments) in text
    assert f"You must be at least {policy.age.minimum_signup_age} to sign up." in text
    assert f"within {policy.data_subject_requests.access.deadline.human()}" in text
    assert f"within {policy.breach_notice.authority.deadline.human()}" in text
    for source in policy.sources:
        assert f"[{source.id}] {source.citation}" in text
    for purpose in policy.consent.purposes:
        assert purpose.description in text
    assert "There is no legal hold" in text


def test_the_page_says_what_the_server_cannot_see_and_what_it_does(client: Client) -> None:
    text = _text(_page(client, "eu"))

    for line in (
        "The content of your messages.",
        "The content of your attachments, their file names or their types.",
        "What your contacts write to you or to anyone else.",
        "Your private keys",
        "Who sends a message to whom, and when",
        "The IP address each device connects from (kept for the connection-log period: "
        "at most 7 days)",
    ):
        assert line in text
    assert "XChaCha20-Poly1305" in text


def test_legal_floors_are_explained(client: Client) -> None:
    brazil = _text(_page(client, "br"))
    india = _text(_page(client, "in"))

    assert "Exactly 6 months, as Marco Civil da Internet (Lei 12.965/2014) art. 15 requires" in (
        brazil
    )
    assert "Exactly 180 days, as CERT-In Directions 2022" in india
    assert "We notify CERT-In within 6 hours" in india
    assert "You must be at least 18 to sign up." in india
    assert "Until you are 16, everything that needs your consent stays off." in _text(
        _page(client, "eu")
    )


@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_the_page_has_no_inline_script_or_style(client: Client, region: str) -> None:
    html = _page(client, region)

    assert "<script" not in html
    assert "<style" not in html
    assert " style=" not in html
    assert re.search(r" on[a-z]+=", html) is None
    assert '<link rel="stylesheet" href="/static/compliance/compliance.css">' in html


def test_the_stylesheet_is_served(client: Client) -> None:
    response = client.get("/static/compliance/compliance.css")

    assert response.status_code == 200


def test_the_page_refuses_post(client: Client) -> None:
    assert client.post("/transparency").status_code == 405


# --- the sign-up privacy notice -------------------------------------------------------------------


def _render_notice(region: str) -> str:
    policy = load_policy(region, DEFAULT_POLICY_DIR)
    template = Template('<form>{% include "compliance/privacy_notice.html" %}</form>')
    return template.render(Context(privacy_notice_context(policy)))


def test_the_notice_context_has_what_sign_up_needs() -> None:
    notice = privacy_notice_context(load_policy("eu", DEFAULT_POLICY_DIR))["privacy_notice"]

    assert (notice.region_id, notice.region_name, notice.policy_version) == (
        "eu",
        "European Union",
        "1.0.0",
    )
    assert (notice.minimum_signup_age, notice.self_consent_age) == (13, 16)
    assert [(p.id, p.line.mode, p.needs_input, p.checked, p.required) for p in notice.purposes] == [
        ("service", "necessary", False, False, False),
        ("diagnostics", "opt_in", True, False, False),
        ("product_updates", "opt_in", True, False, False),
    ]
    assert notice.transparency_url == "/transparency"
    assert notice.policy_url == "/api/v1/policy"


def test_the_notice_renders_a_checkbox_per_choice() -> None:
    eu = _render_notice("eu")

    assert 'name="consent" value="diagnostics">' in eu
    assert 'value="service"' not in eu  # necessary: nothing to choose
    assert 'href="/transparency"' in eu
    assert "<script" not in eu and "<style" not in eu and " style=" not in eu
    # Opt-out purposes start ticked; a required consent carries the required attribute.
    assert 'name="consent" value="diagnostics" checked>' in _render_notice("us-ca")
    assert 'name="consent" value="service" required>' in _render_notice("in")
