"""Schemathesis against the served OpenAPI schema (/api/v1/schema/), in process.

Every operation of the schema is called with generated requests through the WSGI
application (Django's real middleware, URLs, views and error handler; no network), as
an authenticated device of a fresh account, and every response is checked: no 5xx, a
status the schema documents for the operation, the documented content type, and a body
and headers that match the documented schemas. Generated requests that should be refused
must be refused (negative data), and well-formed ones must not be answered as if invalid
only where the schema can say what "well-formed" means (see the excluded checks below).

Nothing is excluded from the schema. The long poll's ``wait`` is the only generated value
changed before sending: ``wait`` seconds is a real wait (up to 30), so a valid value is
sent as 0 — the values the endpoint must refuse are still sent as generated.

Budget: ``SCHEMA_FUZZ_EXAMPLES`` examples per operation, no deadline per example; about
40 s for the whole schema (34 operations) here.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import checks as st_checks
from schemathesis.config import SchemathesisConfig

from tests.server.factories import sign_up

EXAMPLES = int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "60"))

# Attachment chunks (PATCH /api/v1/attachments/{id}, tus-style) are raw bytes.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

# A refusal of negative data may also be 413 (a key or list above its limit: too_large,
# prekey_batch_too_large...), which the API documents where it can happen.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
            }
        }
    }
)
schema = schemathesis.openapi.from_wsgi(
    "/api/v1/schema/?format=json", get_wsgi_application(), config=CONFIG
)

# Checks left out, each with its reason:
# - positive_data_acceptance: the schema can say "base64 of a key", not "a key signed by
#   this account's identity key" or "a device list that names exactly these devices", so
#   schema-valid requests are rightly refused with a documented 4xx (bad_signature,
#   device_mismatch...). The 4xx still has to be a documented status with the documented
#   error body, which the other checks verify.
# - missing_required_header: Authorization is not a schema parameter but a security
#   scheme; the unauthenticated case is covered by test_access_control.py (401 for every
#   route).
EXCLUDED_CHECKS = [st_checks.positive_data_acceptance, st_checks.missing_required_header]


@pytest.fixture
def token(settings: Any) -> str:
    # Fast hashing and no sign-up or log-in limits here: their refusals are tested in
    # test_abuse_limits.py, and a 429 would only cut the exploration short.
    settings.SEALPOST = {
        **settings.SEALPOST,
        "SIGNUPS_PER_ADDRESS": 10**6,
        "LOGIN_FAILURES_PER_ADDRESS": 10**6,
        "LOGIN_FAILURES_PER_USERNAME": 10**6,
    }
    return sign_up("fuzzer", one_time=3, kem=3).token


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=False,
)
def test_every_operation_honours_its_schema(case: Any, token: str) -> None:
    if case.operation.path == "/api/v1/provisioning/{address}" and case.method == "GET":
        wait = (case.query or {}).get("wait")
        if isinstance(wait, int) and 0 <= wait <= 30:
            case.query["wait"] = 0
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"}, excluded_checks=EXCLUDED_CHECKS
    )
