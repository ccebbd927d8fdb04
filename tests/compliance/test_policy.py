"""The region policy loader: every shipped policy validates; every kind of broken policy is
refused with the file and field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compliance.policy import (
    DEFAULT_POLICY_DIR,
    FEATURES,
    LEGAL_FLOORS,
    SERVER_SUITE,
    Policy,
    PolicyError,
    known_regions,
    load_policy,
    retention_settings,
)
from protocol.errors import ErrorCode
from tests.compliance.helpers import SHIPPED_REGIONS, put, write_region


def _refused(
    tmp_path: Path, change: Any, based_on: str = "eu", name: str = "broken"
) -> PolicyError:
    path = write_region(tmp_path, name, based_on, change)
    with pytest.raises(PolicyError) as caught:
        load_policy(name, tmp_path)
    assert caught.value.file == str(path)
    return caught.value


# --- the shipped policies --------------------------------------------------------------------


def test_the_five_launch_regions_ship() -> None:
    assert known_regions(DEFAULT_POLICY_DIR) == sorted(SHIPPED_REGIONS)


@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_each_shipped_policy_validates(region: str) -> None:
    policy = load_policy(region, DEFAULT_POLICY_DIR)

    assert isinstance(policy, Policy)
    assert policy.region.id == region
    assert policy.file == f"deploy/regions/{region}.yaml"
    assert policy.crypto.e2ee_allowed
    assert SERVER_SUITE in policy.crypto.suites
    assert policy.legal_hold.mode == "off"
    for feature in FEATURES:
        policy.consent.purpose_for_feature(feature)  # every feature has its purpose


@pytest.mark.parametrize("region", SHIPPED_REGIONS)
def test_each_shipped_figure_that_law_sets_cites_a_source(region: str) -> None:
    policy = load_policy(region, DEFAULT_POLICY_DIR)
    requests = policy.data_subject_requests
    notices = policy.breach_notice
    for item in (requests.access, requests.erasure, notices.authority, notices.individuals):
        if item.basis == "law":
            assert item.sources, item
    assert policy.age.sources
    cited = {source.id for source in policy.sources}
    for _, rule in policy.retention.rules():
        assert set(rule.sources) <= cited


def test_shipped_figures_match_the_research() -> None:
    br, india, eu = (load_policy(r, DEFAULT_POLICY_DIR) for r in ("br", "in", "eu"))

    assert str(br.retention.connection_logs.minimum) == "6mo"
    assert br.retention.connection_logs.legal_floor is not None
    assert br.retention.connection_logs.legal_floor.sources == ("B5",)
    assert str(india.retention.connection_logs.minimum) == "180d"
    assert india.residency.country == "IN"
    assert [str(n.deadline) for n in india.breach_notice.additional] == ["6h"]
    assert str(eu.retention.connection_logs.minimum) == "0d"
    assert str(eu.breach_notice.authority.deadline) == "72h"
    assert (eu.age.minimum_signup_age, eu.age.self_consent_age) == (13, 16)
    assert (india.age.minimum_signup_age, india.age.self_consent_age) == (18, 18)


def test_regions_inherit_the_defaults_and_override_them() -> None:
    eu, us = load_policy("eu", DEFAULT_POLICY_DIR), load_policy("us-ca", DEFAULT_POLICY_DIR)

    assert str(eu.retention.undelivered_envelopes.maximum) == "30d"  # from _defaults.yaml
    assert eu.consent.purpose("diagnostics").mode == "opt_in"
    assert us.consent.purpose("diagnostics").mode == "opt_out"  # us-ca overrides one key
    assert us.consent.purpose("diagnostics").gates == ("crash_reports", "usage_metrics")
    assert {s.id for s in eu.sources} >= {"SIG4", "E1"}  # both files' sources


# --- broken policies, each refused with the field named ------------------------------------------


def test_connection_log_minimum_above_maximum_is_refused(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        put(doc, "retention.connection_logs", minimum="200d", maximum="30d")

    error = _refused(tmp_path, change)

    assert error.field_path == "retention.connection_logs"
    assert error.code is ErrorCode.INVALID_POLICY
    assert str(error) == (
        f"{tmp_path / 'broken.yaml'}: retention.connection_logs: minimum 200d is above maximum 30d"
    )


@pytest.mark.parametrize("minimum", ["90d", "180d", "5mo"])
def test_brazils_six_month_floor_must_be_met(tmp_path: Path, minimum: str) -> None:
    def change(doc: dict[str, Any]) -> None:
        logs = doc["retention"]["connection_logs"]
        logs.update(minimum=minimum)
        logs.pop("legal_floor")  # even without the floor written down, the code knows it

    error = _refused(tmp_path, change, based_on="br", name="br")

    assert error.field_path == "retention.connection_logs"
    assert error.message == (
        f"minimum {minimum} is below the legal floor of 6mo in br "
        "(Marco Civil da Internet art. 15 [B5])"
    )


def test_brazils_floor_must_be_stated_in_the_file(tmp_path: Path) -> None:
    error = _refused(
        tmp_path,
        lambda doc: doc["retention"]["connection_logs"].pop("legal_floor"),
        based_on="br",
        name="br",
    )

    assert error.field_path == "retention.connection_logs.legal_floor"
    assert "6mo" in error.message


def test_a_minimum_below_the_files_own_floor_is_refused(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["retention"]["connection_logs"]["legal_floor"]["duration"] = "1y"
        doc["retention"]["connection_logs"]["maximum"] = "1y"

    error = _refused(tmp_path, change, based_on="br", name="br")

    assert error.field_path == "retention.connection_logs"
    assert error.message.startswith("minimum 6mo is below its legal floor 1y")


def test_indias_180_day_floor_and_residency_are_enforced(tmp_path: Path) -> None:
    def short(doc: dict[str, Any]) -> None:
        put(doc, "retention.connection_logs", minimum="179d")
        doc["retention"]["connection_logs"]["legal_floor"]["duration"] = "179d"

    error = _refused(tmp_path / "a", short, based_on="in", name="in")
    assert error.field_path == "retention.connection_logs"
    assert "legal floor of 180d in in (CERT-In Directions 2022 [I1])" in error.message

    def abroad(doc: dict[str, Any]) -> None:
        put(doc, "residency", country="SG", allowed_storage=["SG"])

    error = _refused(tmp_path / "b", abroad, based_on="in", name="in")
    assert error.field_path == "residency.country"


def test_floors_are_legal_figures_from_the_research() -> None:
    assert {key: floor.duration for key, floor in LEGAL_FLOORS.items()} == {
        ("br", "connection_logs"): "6mo",
        ("in", "connection_logs"): "180d",
    }


@pytest.mark.parametrize(
    ("where", "key", "expected_path"),
    [
        (("retention", "connection_logs"), "maximun", "retention.connection_logs.maximun"),
        ((), "retention_days", "retention_days"),
        (("age",), "minimum_age", "age.minimum_age"),
        (("crypto",), "e2ee", "crypto.e2ee"),
    ],
)
def test_an_unknown_key_is_refused(
    tmp_path: Path, where: tuple[str, ...], key: str, expected_path: str
) -> None:
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for part in where:
            target = target[part]
        target[key] = "30d"

    error = _refused(tmp_path, change)

    assert error.field_path == expected_path
    assert error.message.startswith("unknown key; expected one of: ")


@pytest.mark.parametrize("bad", ["P30D", "30 days", "30", "1.5d", "30D", "-1d", "30m", ""])
def test_a_bad_duration_is_refused(tmp_path: Path, bad: str) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["retention"]["connection_logs"]["maximum"] = bad

    error = _refused(tmp_path, change)

    assert error.field_path == "retention.connection_logs.maximum"
    assert f"bad duration {bad!r}" in error.message


def test_a_duration_written_as_a_number_is_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, lambda doc: put(doc, "retention.connection_logs", maximum=7))

    assert error.field_path == "retention.connection_logs.maximum"
    assert error.message == "expected a duration such as 30d or 6mo, got 7"


def test_a_bad_deadline_is_refused(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["breach_notice"]["authority"]["deadline"] = "0h"

    error = _refused(tmp_path, change)

    assert error.field_path == "breach_notice.authority.deadline"
    assert "bad deadline '0h'" in error.message


def test_a_policy_that_forbids_e2ee_stops_the_server(tmp_path: Path) -> None:
    error = _refused(tmp_path, lambda doc: put(doc, "crypto", e2ee_allowed=False))

    assert error.field_path == "crypto.e2ee_allowed"
    assert error.code is ErrorCode.E2EE_NOT_ALLOWED


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"key_escrow_required": True}, "crypto.key_escrow_required"),
        ({"server_side_scanning": True}, "crypto.server_side_scanning"),
        ({"traceability_demand": "in_force"}, "crypto.traceability_demand"),
    ],
)
def test_demands_the_server_cannot_meet_are_e2ee_not_allowed(
    tmp_path: Path, change: dict[str, Any], path: str
) -> None:
    error = _refused(tmp_path, lambda doc: put(doc, "crypto", **change))

    assert (error.field_path, error.code) == (path, ErrorCode.E2EE_NOT_ALLOWED)


def test_suites_must_be_known_and_include_the_servers(tmp_path: Path) -> None:
    error = _refused(tmp_path / "a", lambda doc: put(doc, "crypto", suites=["mls-128"]))
    assert error.field_path == "crypto.suites[0]"
    assert "unknown suite 'mls-128'" in error.message

    error = _refused(tmp_path / "b", lambda doc: put(doc, "crypto", suites=[]))
    assert error.field_path == "crypto.suites"


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            lambda doc: doc.update(version="one"),
            "version",
            "'one' is neither a semantic version (1.2.0) nor a date (2026-07-01)",
        ),
        (
            lambda doc: doc.update(version="2026-02-30"),
            "version",
            "'2026-02-30' is not a valid date",
        ),
        (
            lambda doc: put(doc, "region", id="fr"),
            "region.id",
            "'fr' does not match the file name (region 'broken')",
        ),
        (
            lambda doc: put(doc, "age", minimum_signup_age=12),
            "age.minimum_signup_age",
            "12: below 13 needs verified parental consent (COPPA), which Sealpost does not offer",
        ),
        (
            lambda doc: put(doc, "age", self_consent_age=40),
            "age.self_consent_age",
            "40 is not between 1 and 21",
        ),
        (
            lambda doc: put(doc, "age", minimum_signup_age="13"),
            "age.minimum_signup_age",
            "expected a whole number, got '13'",
        ),
        (
            lambda doc: put(doc, "data_subject_requests.access", sources=[]),
            "data_subject_requests.access.sources",
            "a figure set by law must cite at least one source",
        ),
        (
            lambda doc: put(doc, "retention.connection_logs", sources=["X9"]),
            "retention.connection_logs.sources[0]",
            "unknown source 'X9'",
        ),
        (
            lambda doc: put(doc, "retention.undelivered_envelopes", minimum="0d", maximum="0d"),
            "retention.undelivered_envelopes.maximum",
            "must be longer than 0",
        ),
        (
            lambda doc: put(
                doc, "retention.delivered_envelope_remnants", minimum="1d", maximum="1d"
            ),
            "retention.delivered_envelope_remnants.minimum",
            "1d: the server deletes an envelope",
        ),
        (
            lambda doc: put(doc, "consent.purposes.diagnostics", mode="opt_out"),
            "consent.purposes.diagnostics.mode",
            "opt_out: consent is always opt_in",
        ),
        (
            lambda doc: put(doc, "consent.purposes.diagnostics", gates=["telemetry"]),
            "consent.purposes.diagnostics.gates[0]",
            "unknown feature 'telemetry'",
        ),
        (
            lambda doc: put(doc, "consent.purposes", product_updates=None),
            "consent.purposes",
            "no purpose gates the feature 'product_update_notices'",
        ),
        (
            lambda doc: put(
                doc,
                "consent.purposes",
                service={
                    "required": False,
                    "mode": "opt_in",
                    "legal_basis": "consent",
                },
            ),
            "consent.purposes.service.required",
            "it gates 'messaging', without which the service cannot work",
        ),
        (
            lambda doc: put(doc, "legal_hold", mode="always"),
            "legal_hold.mode",
            "'always' is not one of: off, visible_device",
        ),
        (
            lambda doc: put(doc, "residency", allowed_storage=["US"]),
            "residency.country",
            "EU is not in allowed_storage (US)",
        ),
    ],
)
def test_each_field_is_validated(tmp_path: Path, change: Any, path: str, message: str) -> None:
    error = _refused(tmp_path, change)

    assert error.field_path == path
    assert message in error.message


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    error = _refused(tmp_path, lambda doc: doc.pop("age"))

    assert (error.field_path, error.message) == ("age.minimum_signup_age", "missing")


def test_an_unknown_region_lists_the_known_ones(tmp_path: Path) -> None:
    write_region(tmp_path, "eu")
    write_region(tmp_path, "br", based_on="br")

    with pytest.raises(PolicyError) as caught:
        load_policy("zz", tmp_path)

    assert caught.value.field_path == "REGION"
    assert caught.value.message.endswith("(known regions: br, eu)")
    with pytest.raises(PolicyError, match="not a region id"):
        load_policy("../eu", tmp_path)


# --- reading YAML strictly ------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> None:
    write_region(tmp_path, "broken")
    (tmp_path / "broken.yaml").write_text(text)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "region: {id: broken, name: A}\nregion: {id: broken, name: B}\n")

    with pytest.raises(PolicyError, match=r"broken.yaml: not valid YAML: line 2: duplicate key"):
        load_policy("broken", tmp_path)


def test_yaml_1_1_booleans_and_dates_stay_strings(tmp_path: Path) -> None:
    # Unquoted off, yes and 2026-07-01 are a boolean, a boolean and a date in YAML 1.1.
    path = write_region(tmp_path, "broken")
    text = path.read_text().replace("version: 1.0.0", "version: 2026-07-01")
    path.write_text(text + "legal_hold:\n  mode: off\n")

    policy = load_policy("broken", tmp_path)

    assert policy.version == "2026-07-01"
    assert policy.legal_hold.mode == "off"

    path = write_region(tmp_path, "broken", change=lambda doc: put(doc, "crypto", e2ee_allowed="X"))
    path.write_text(path.read_text().replace("e2ee_allowed: X", "e2ee_allowed: yes"))
    with pytest.raises(PolicyError) as caught:
        load_policy("broken", tmp_path)
    assert caught.value.field_path == "crypto.e2ee_allowed"
    assert caught.value.message == "expected true or false, got 'yes'"


def test_unparseable_yaml_names_the_line(tmp_path: Path) -> None:
    _write(tmp_path, "region:\n  id: [broken\n")

    with pytest.raises(PolicyError, match=r"broken.yaml: not valid YAML: line \d+"):
        load_policy("broken", tmp_path)


# --- settings derived from the policy -------------------------------------------------------------


def test_retention_settings_are_the_policys_maximums() -> None:
    policy = load_policy("eu", DEFAULT_POLICY_DIR)

    derived = retention_settings(policy, {})

    assert derived.envelope_ttl_seconds == 30 * 86400
    assert derived.attachment_ttl_seconds == 30 * 86400
    assert derived.idle_device_expiry_seconds == 180 * 86400
    assert derived.idle_account_expiry_seconds == 2 * 365 * 86400


def test_the_envelope_ttl_may_be_lowered_within_the_policy() -> None:
    policy = load_policy("eu", DEFAULT_POLICY_DIR)

    assert retention_settings(policy, {"ENVELOPE_TTL_SECONDS": "86400"}).envelope_ttl_seconds == (
        86400
    )
    for outside in ("86399", str(30 * 86400 + 1), "0"):
        with pytest.raises(PolicyError) as caught:
            retention_settings(policy, {"ENVELOPE_TTL_SECONDS": outside})
        assert str(caught.value) == (
            f"deploy/regions/eu.yaml: retention.undelivered_envelopes: ENVELOPE_TTL_SECONDS="
            f"{outside} is outside this policy's [1d, 30d] = [86400, 2592000] s"
        )
    with pytest.raises(PolicyError, match="is not a whole number"):
        retention_settings(policy, {"ENVELOPE_TTL_SECONDS": "30d"})
