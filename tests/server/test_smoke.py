"""The skeleton answers: health check, OpenAPI schema and docs, admin, system checks."""

import io

import pytest
import yaml
from django.core.management import call_command
from django.test import Client


def test_healthz_answers_ok_json(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}


def test_healthz_refuses_post(client: Client) -> None:
    assert client.post("/healthz").status_code == 405


def test_openapi_schema_is_served(client: Client) -> None:
    response = client.get("/api/v1/schema/")

    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert str(schema["openapi"]).startswith("3.")
    assert schema["info"]["title"] == "Sealpost API"


def test_api_docs_load_nothing_from_a_cdn(client: Client) -> None:
    page = client.get("/api/v1/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html
    # No inline code: the start-up script is a separate request, the styles a file.
    assert "<script>" not in html
    assert "<style>" not in html
    script = client.get("/api/v1/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/v1/schema/" in script.content.decode()


@pytest.mark.django_db
def test_admin_login_page_renders(client: Client) -> None:
    response = client.get("/admin/login/")

    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_system_checks_pass() -> None:
    out = io.StringIO()
    call_command("check", fail_level="WARNING", stdout=out)

    assert "System check identified no issues" in out.getvalue()


def test_static_files_are_served(client: Client) -> None:
    response = client.get("/static/api-docs.css")

    assert response.status_code == 200
    assert b"box-sizing" in b"".join(response.streaming_content)
