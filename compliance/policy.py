"""The region policy: its schema, a strict loader and the invariants every policy must meet.

A deployment serves one region (``REGION``, default ``eu``) and reads its policy from
``deploy/regions/<region>.yaml``, deep-merged over ``deploy/regions/_defaults.yaml``
(mappings merge key by key, the region winning; lists and scalars are replaced; a
purpose set to ``null`` is removed). ``POLICY_DIR`` points elsewhere, for tests.

Strict on purpose: an unknown key, a missing key, a bad duration or a broken invariant
raises ``PolicyError(field_path, message)``, and ``project/settings.py`` turns that into
one line on stderr and a refusal to start. A policy is law turned into configuration; a
typo silently ignored (``maximun: 30d``) would keep data longer than the law allows.

The YAML is read with YAML 1.2's core scalars only: ``off``, ``no`` and ``yes`` stay
strings (YAML 1.1 would make ``legal_hold.mode: off`` a boolean), dates stay strings
(``version: 2026-07-01``), there are no floats or sexagesimal numbers, and a key given
twice in one mapping is an error rather than last-one-wins.

Durations (``30d``, ``6mo``) and deadlines (``72h``, ``3bd``) are described in
``compliance.durations``.

Only this module decides what a valid policy is; nothing here imports Django, so
settings can load it before Django is set up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml

from compliance.durations import Deadline, Duration
from protocol.errors import ErrorCode
from protocol.limits import PROTOCOL_VERSION

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_DIR: Final = ROOT / "deploy" / "regions"
DEFAULTS_FILE: Final = "_defaults.yaml"
POLICY_SUFFIX: Final = ".yaml"

# Field metadata: fields marked INTERNAL are left out of the published policy
# (/api/v1/policy): operational detail and the team's legal watch list.
INTERNAL: Final = {"public": False}

# --- what the code knows, which a policy may refer to ---------------------------------------

# The cipher suites this server speaks (docs/protocol.md), in words for the transparency
# page. A deployment must allow the one it runs.
SERVER_SUITE: Final = f"sealpost-v{PROTOCOL_VERSION}"
KNOWN_SUITES: Final[Mapping[str, str]] = {
    "sealpost-v1": "X25519 + ML-KEM-768 key agreement, Ed25519 signatures, "
    "XChaCha20-Poly1305 encryption, HKDF-SHA256 key derivation",
}

# Features that need a purpose: every one must be gated by exactly one consent purpose, so
# code can always ask which consent a feature needs.
FEATURES: Final[Mapping[str, str]] = {
    "messaging": "sending and receiving messages",
    "attachments": "sending and receiving attachments",
    "crash_reports": "crash reports from the apps",
    "usage_metrics": "performance and usage measurements",
    "product_update_notices": "in-app notices about new features",
}
# The feature without which the product does not work: its purpose must be required.
CORE_FEATURE: Final = "messaging"


@dataclass(frozen=True, slots=True)
class _Floor:
    duration: str
    law: str
    source: str


# Statutory minimums, kept in code so that an edit of a YAML file cannot lower them.
LEGAL_FLOORS: Final[Mapping[tuple[str, str], _Floor]] = {
    ("br", "connection_logs"): _Floor("6mo", "Marco Civil da Internet art. 15", "B5"),
    ("in", "connection_logs"): _Floor("180d", "CERT-In Directions 2022", "I1"),
}
# Where the law requires the data to be: CERT-In's logs must be kept in India.
REQUIRED_RESIDENCY: Final[Mapping[str, tuple[str, str]]] = {
    "in": ("IN", "CERT-In Directions 2022 require the logs to be kept in India [I1]"),
}

# Retention kinds whose maximum may be zero (deleted at once, or not collected).
MAY_BE_ZERO: Final = frozenset({"delivered_envelope_remnants", "connection_logs"})

# --- value types ----------------------------------------------------------------------------

LegalBasis = Literal[
    "contract",
    "consent",
    "legitimate_interests",
    "legal_obligation",
    "notice",
    "deemed_consent",
]
ConsentMode = Literal["necessary", "opt_in", "opt_out"]
Basis = Literal["law", "design"]
Clock = Literal["awareness", "discovery", "assessment_complete", "individual_notice"]
LegalHoldMode = Literal["off", "visible_device"]
Traceability = Literal["none", "pending_litigation", "in_force"]


class PolicyError(Exception):
    """A policy that must not be used: the field (dotted path) and what is wrong with it."""

    def __init__(
        self,
        field_path: str,
        message: str,
        *,
        file: str | None = None,
        code: ErrorCode = ErrorCode.INVALID_POLICY,
    ) -> None:
        self.field_path = field_path
        self.message = message
        self.file = file
        self.code = code
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [part for part in (self.file, self.field_path) if part]
        return ": ".join([*parts, self.message])

    def in_file(self, file: str) -> PolicyError:
        return PolicyError(self.field_path, self.message, file=file, code=self.code)


# --- the policy -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """A citation from shared/research/compliance.md, by its tag there (``B5``)."""

    id: str
    citation: str
    urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Region:
    id: str
    name: str
    jurisdictions: tuple[str, ...]
    frameworks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Residency:
    country: str  # ISO 3166-1 alpha-2, or EU
    location: str  # in words, for people
    cloud_region: str = field(metadata=INTERNAL)
    allowed_storage: tuple[str, ...]
    transfer_mechanisms: tuple[str, ...]
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class LegalFloor:
    """The least time a law requires a kind of record to be kept."""

    duration: Duration
    law: str
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Kept at least ``minimum`` (a law's or our promise), deleted by ``maximum``."""

    minimum: Duration
    maximum: Duration
    legal_floor: LegalFloor | None
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Retention:
    undelivered_envelopes: RetentionRule
    attachments: RetentionRule
    delivered_envelope_remnants: RetentionRule
    connection_logs: RetentionRule
    idle_devices: RetentionRule
    idle_accounts: RetentionRule
    audit_records: RetentionRule

    def rules(self) -> tuple[tuple[str, RetentionRule], ...]:
        return tuple((f.name, getattr(self, f.name)) for f in fields(self))


@dataclass(frozen=True, slots=True)
class Purpose:
    id: str
    description: str
    legal_basis: LegalBasis
    mode: ConsentMode
    required: bool
    gates: tuple[str, ...]
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Reconsent:
    """Whether consent given under an older policy version must be given again: then a
    purpose whose latest record names another version counts as not consented until the
    person answers again (``compliance.services.consent_states``)."""

    on_version_change: bool
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Consent:
    purposes: tuple[Purpose, ...]
    reconsent: Reconsent

    def purpose(self, purpose_id: str) -> Purpose:
        for purpose in self.purposes:
            if purpose.id == purpose_id:
                return purpose
        raise KeyError(purpose_id)

    def purpose_for_feature(self, feature: str) -> Purpose:
        """The purpose whose consent ``feature`` needs (every feature has exactly one)."""
        for purpose in self.purposes:
            if feature in purpose.gates:
                return purpose
        raise KeyError(feature)


@dataclass(frozen=True, slots=True)
class AgeRules:
    minimum_signup_age: int
    self_consent_age: int  # below it, consent-based purposes stay off
    parental_consent_flow: bool
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class RequestDeadline:
    """How long a data-subject request may take: ``deadline``, plus ``extension`` when the
    law allows one; ``acknowledge`` where the law sets a first reply."""

    deadline: Deadline
    extension: Deadline | None
    acknowledge: Deadline | None
    basis: Basis
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class DataSubjectRequests:
    access: RequestDeadline
    erasure: RequestDeadline
    grievance: RequestDeadline | None


@dataclass(frozen=True, slots=True)
class Notice:
    """A breach notice: to whom, within what, counted from which moment, when due."""

    to: str
    deadline: Deadline
    clock: Clock
    condition: str
    basis: Basis
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class BreachNotice:
    authority: Notice
    individuals: Notice
    additional: tuple[Notice, ...]


@dataclass(frozen=True, slots=True)
class Crypto:
    e2ee_allowed: bool
    suites: tuple[str, ...]
    key_escrow_required: bool
    server_side_scanning: bool
    traceability_demand: Traceability
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class LegalHold:
    mode: LegalHoldMode
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Policy:
    region: Region
    version: str
    residency: Residency
    retention: Retention
    consent: Consent
    age: AgeRules
    data_subject_requests: DataSubjectRequests
    breach_notice: BreachNotice
    crypto: Crypto
    legal_hold: LegalHold
    sources: tuple[Source, ...]
    watch: tuple[str, ...] = field(metadata=INTERNAL)
    file: str = field(metadata=INTERNAL)  # where it was read from, for messages

    def source(self, source_id: str) -> Source:
        for source in self.sources:
            if source.id == source_id:
                return source
        raise KeyError(source_id)


# --- reading YAML ---------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and no duplicate keys (see the module doc)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|false)$", "tf"),
    ("tag:yaml.org,2002:int", r"^-?(?:0|[1-9][0-9]*)$", "-0123456789"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|)$", ["~", "n", ""]),
):
    _StrictLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _read_yaml(path: Path, shown: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError("", f"cannot read: {exc.strerror}", file=shown) from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError("", f"not valid YAML: {where}{problem}", file=shown) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise PolicyError("", "expected a mapping at the top level", file=shown)
    return document


def merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` deep-merged over ``defaults``: mappings merge, anything else replaces."""
    merged = dict(defaults)
    for key, value in overrides.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(base, value)
        else:
            merged[key] = value
    return merged


# --- validating, field by field ---------------------------------------------------------------


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class _Reader:
    """Turns the merged document into dataclasses, naming the field of every error."""

    def __init__(self, source_ids: Iterable[str] = ()) -> None:
        self.source_ids = frozenset(source_ids)

    def mapping(
        self,
        value: object,
        path: str,
        required: Iterable[str],
        optional: Iterable[str] = (),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise PolicyError(path or "(top level)", f"expected a mapping, got {_describe(value)}")
        required = tuple(required)
        allowed = (*required, *optional)
        for key in value:
            if key not in allowed:
                raise PolicyError(
                    _join(path, key), f"unknown key; expected one of: {', '.join(allowed)}"
                )
        for key in required:
            if key not in value:
                raise PolicyError(_join(path, key), "missing")
        return value

    def entries(self, value: object, path: str) -> dict[Any, Any]:
        """A mapping whose keys are ids chosen by the policy (sources, purposes)."""
        if not isinstance(value, dict):
            raise PolicyError(path, f"expected a mapping, got {_describe(value)}")
        return value

    def text(self, value: object, path: str, pattern: str | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise PolicyError(path, f"expected a non-empty string, got {_describe(value)}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise PolicyError(path, f"{value!r} is not of the form {pattern}")
        return value.strip()

    def note(self, value: object, path: str) -> str:
        return "" if value is None else " ".join(self.text(value, path).split())

    def integer(self, value: object, path: str, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise PolicyError(path, f"expected a whole number, got {_describe(value)}")
        if not low <= value <= high:
            raise PolicyError(path, f"{value} is not between {low} and {high}")
        return value

    def boolean(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise PolicyError(path, f"expected true or false, got {_describe(value)}")
        return value

    def choice(self, value: object, path: str, literal: Any) -> Any:
        choices = get_args(literal)
        if value not in choices:
            raise PolicyError(
                path, f"{_describe(value)} is not one of: {', '.join(map(str, choices))}"
            )
        return value

    def strings(self, value: object, path: str, pattern: str | None = None) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise PolicyError(path, f"expected a list, got {_describe(value)}")
        items = tuple(self.text(item, f"{path}[{i}]", pattern) for i, item in enumerate(value))
        for index, item in enumerate(items):
            if item in items[:index]:
                raise PolicyError(f"{path}[{index}]", f"{item!r} is listed twice")
        return items

    def duration(self, value: object, path: str) -> Duration:
        if not isinstance(value, str):
            raise PolicyError(
                path, f"expected a duration such as 30d or 6mo, got {_describe(value)}"
            )
        try:
            return Duration.parse(value)
        except ValueError as exc:
            raise PolicyError(path, str(exc)) from None

    def deadline(self, value: object, path: str) -> Deadline:
        if not isinstance(value, str):
            raise PolicyError(
                path, f"expected a deadline such as 72h or 3bd, got {_describe(value)}"
            )
        try:
            return Deadline.parse(value)
        except ValueError as exc:
            raise PolicyError(path, str(exc)) from None

    def refs(self, value: object, path: str, *, required: bool = False) -> tuple[str, ...]:
        refs = self.strings(value, path)
        for index, ref in enumerate(refs):
            if ref not in self.source_ids:
                known = ", ".join(sorted(self.source_ids)) or "none"
                raise PolicyError(f"{path}[{index}]", f"unknown source {ref!r} (sources: {known})")
        if required and not refs:
            raise PolicyError(path, "a figure set by law must cite at least one source")
        return refs

    def optional[T](self, value: object, path: str, read: Callable[[object, str], T]) -> T | None:
        return None if value is None else read(value, path)


_SLUG = r"[a-z][a-z0-9_]*"
_SOURCE_ID = r"[A-Z]{1,4}[0-9]{0,2}[a-z]?"
_REGION_ID = r"[a-z]{2,12}(?:-[a-z0-9]{2,8})?"
_COUNTRY = r"[A-Z]{2,3}"
_SEMVER = r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"


def _read_sources(value: object, reader: _Reader) -> tuple[Source, ...]:
    entries = reader.entries(value, "sources")
    sources = []
    for key, entry in entries.items():
        path = _join("sources", key)
        source_id = reader.text(key, path, _SOURCE_ID)
        body = reader.mapping(entry, path, ("citation",), ("urls",))
        urls = reader.strings(body.get("urls"), f"{path}.urls", r"https?://\S+")
        sources.append(Source(source_id, reader.note(body["citation"], f"{path}.citation"), urls))
    if not sources:
        raise PolicyError("sources", "a policy must cite its sources")
    return tuple(sources)


def _read_region(value: object, reader: _Reader, expected_id: str) -> Region:
    body = reader.mapping(value, "region", ("id", "name"), ("jurisdictions", "frameworks"))
    region_id = reader.text(body["id"], "region.id", _REGION_ID)
    if region_id != expected_id:
        raise PolicyError(
            "region.id", f"{region_id!r} does not match the file name (region {expected_id!r})"
        )
    return Region(
        id=region_id,
        name=reader.text(body["name"], "region.name"),
        jurisdictions=reader.strings(body.get("jurisdictions"), "region.jurisdictions"),
        frameworks=reader.strings(body.get("frameworks"), "region.frameworks"),
    )


def _read_version(value: object, reader: _Reader) -> str:
    version = reader.text(value, "version")
    if re.fullmatch(_SEMVER, version):
        return version
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", version):
        try:
            date.fromisoformat(version)
        except ValueError:
            raise PolicyError("version", f"{version!r} is not a valid date") from None
        return version
    raise PolicyError(
        "version", f"{version!r} is neither a semantic version (1.2.0) nor a date (2026-07-01)"
    )


def _read_residency(value: object, reader: _Reader) -> Residency:
    path = "residency"
    body = reader.mapping(
        value,
        path,
        ("country", "location", "cloud_region", "allowed_storage"),
        ("transfer_mechanisms", "sources", "note"),
    )
    residency = Residency(
        country=reader.text(body["country"], f"{path}.country", _COUNTRY),
        location=reader.text(body["location"], f"{path}.location"),
        cloud_region=reader.text(body["cloud_region"], f"{path}.cloud_region"),
        allowed_storage=reader.strings(
            body["allowed_storage"], f"{path}.allowed_storage", _COUNTRY
        ),
        transfer_mechanisms=reader.strings(
            body.get("transfer_mechanisms"), f"{path}.transfer_mechanisms", _SLUG
        ),
        sources=reader.refs(body.get("sources"), f"{path}.sources"),
        note=reader.note(body.get("note"), f"{path}.note"),
    )
    if residency.country not in residency.allowed_storage:
        raise PolicyError(
            f"{path}.country",
            f"{residency.country} is not in allowed_storage "
            f"({', '.join(residency.allowed_storage) or 'empty'})",
        )
    return residency


def _read_floor(value: object, path: str, reader: _Reader) -> LegalFloor:
    body = reader.mapping(value, path, ("duration", "law", "sources"))
    return LegalFloor(
        duration=reader.duration(body["duration"], f"{path}.duration"),
        law=reader.note(body["law"], f"{path}.law"),
        sources=reader.refs(body["sources"], f"{path}.sources", required=True),
    )


def _read_rule(value: object, path: str, reader: _Reader) -> RetentionRule:
    body = reader.mapping(value, path, ("minimum", "maximum"), ("legal_floor", "sources", "note"))
    return RetentionRule(
        minimum=reader.duration(body["minimum"], f"{path}.minimum"),
        maximum=reader.duration(body["maximum"], f"{path}.maximum"),
        legal_floor=reader.optional(
            body.get("legal_floor"),
            f"{path}.legal_floor",
            lambda v, p: _read_floor(v, p, reader),
        ),
        sources=reader.refs(body.get("sources"), f"{path}.sources"),
        note=reader.note(body.get("note"), f"{path}.note"),
    )


def _read_retention(value: object, reader: _Reader) -> Retention:
    kinds = [f.name for f in fields(Retention)]
    body = reader.mapping(value, "retention", kinds)
    return Retention(
        **{kind: _read_rule(body[kind], f"retention.{kind}", reader) for kind in kinds}
    )


def _read_reconsent(value: object, reader: _Reader) -> Reconsent:
    path = "consent.reconsent"
    body = reader.mapping(value, path, ("on_version_change",), ("sources", "note"))
    return Reconsent(
        on_version_change=reader.boolean(body["on_version_change"], f"{path}.on_version_change"),
        sources=reader.refs(body.get("sources"), f"{path}.sources"),
        note=reader.note(body.get("note"), f"{path}.note"),
    )


def _read_consent(value: object, reader: _Reader) -> Consent:
    body = reader.mapping(value, "consent", ("purposes", "reconsent"))
    entries = reader.entries(body["purposes"], "consent.purposes")
    purposes = []
    for key, entry in entries.items():
        path = _join("consent.purposes", key)
        if entry is None:  # removed by the region
            continue
        purpose_id = reader.text(key, path, _SLUG)
        item = reader.mapping(
            entry,
            path,
            ("description", "legal_basis", "mode", "required", "gates"),
            ("sources", "note"),
        )
        purposes.append(
            Purpose(
                id=purpose_id,
                description=reader.note(item["description"], f"{path}.description"),
                legal_basis=reader.choice(item["legal_basis"], f"{path}.legal_basis", LegalBasis),
                mode=reader.choice(item["mode"], f"{path}.mode", ConsentMode),
                required=reader.boolean(item["required"], f"{path}.required"),
                gates=reader.strings(item["gates"], f"{path}.gates"),
                sources=reader.refs(item.get("sources"), f"{path}.sources"),
                note=reader.note(item.get("note"), f"{path}.note"),
            )
        )
    return Consent(tuple(purposes), _read_reconsent(body["reconsent"], reader))


def _read_age(value: object, reader: _Reader) -> AgeRules:
    path = "age"
    body = reader.mapping(
        value,
        path,
        ("minimum_signup_age", "self_consent_age", "parental_consent_flow", "sources"),
        ("note",),
    )
    return AgeRules(
        minimum_signup_age=reader.integer(
            body["minimum_signup_age"], f"{path}.minimum_signup_age", 1, 21
        ),
        self_consent_age=reader.integer(
            body["self_consent_age"], f"{path}.self_consent_age", 1, 21
        ),
        parental_consent_flow=reader.boolean(
            body["parental_consent_flow"], f"{path}.parental_consent_flow"
        ),
        sources=reader.refs(body["sources"], f"{path}.sources", required=True),
        note=reader.note(body.get("note"), f"{path}.note"),
    )


def _read_request(value: object, path: str, reader: _Reader) -> RequestDeadline:
    body = reader.mapping(
        value, path, ("deadline", "basis"), ("extension", "acknowledge", "sources", "note")
    )
    basis = reader.choice(body["basis"], f"{path}.basis", Basis)
    return RequestDeadline(
        deadline=reader.deadline(body["deadline"], f"{path}.deadline"),
        extension=reader.optional(body.get("extension"), f"{path}.extension", reader.deadline),
        acknowledge=reader.optional(
            body.get("acknowledge"), f"{path}.acknowledge", reader.deadline
        ),
        basis=basis,
        sources=reader.refs(body.get("sources"), f"{path}.sources", required=basis == "law"),
        note=reader.note(body.get("note"), f"{path}.note"),
    )


def _read_requests(value: object, reader: _Reader) -> DataSubjectRequests:
    path = "data_subject_requests"
    body = reader.mapping(value, path, ("access", "erasure"), ("grievance",))
    return DataSubjectRequests(
        access=_read_request(body["access"], f"{path}.access", reader),
        erasure=_read_request(body["erasure"], f"{path}.erasure", reader),
        grievance=reader.optional(
            body.get("grievance"),
            f"{path}.grievance",
            lambda v, p: _read_request(v, p, reader),
        ),
    )


def _read_notice(value: object, path: str, reader: _Reader) -> Notice:
    body = reader.mapping(
        value, path, ("to", "deadline", "clock", "condition", "basis"), ("sources", "note")
    )
    basis = reader.choice(body["basis"], f"{path}.basis", Basis)
    return Notice(
        to=reader.text(body["to"], f"{path}.to"),
        deadline=reader.deadline(body["deadline"], f"{path}.deadline"),
        clock=reader.choice(body["clock"], f"{path}.clock", Clock),
        condition=reader.note(body["condition"], f"{path}.condition"),
        basis=basis,
        sources=reader.refs(body.get("sources"), f"{path}.sources", required=basis == "law"),
        note=reader.note(body.get("note"), f"{path}.note"),
    )


def _read_breach(value: object, reader: _Reader) -> BreachNotice:
    path = "breach_notice"
    body = reader.mapping(value, path, ("authority", "individuals"), ("additional",))
    additional = body.get("additional") or []
    if not isinstance(additional, list):
        raise PolicyError(f"{path}.additional", f"expected a list, got {_describe(additional)}")
    return BreachNotice(
        authority=_read_notice(body["authority"], f"{path}.authority", reader),
        individuals=_read_notice(body["individuals"], f"{path}.individuals", reader),
        additional=tuple(
            _read_notice(item, f"{path}.additional[{i}]", reader)
            for i, item in enumerate(additional)
        ),
    )


def _read_crypto(value: object, reader: _Reader) -> Crypto:
    path = "crypto"
    body = reader.mapping(
        value,
        path,
        (
            "e2ee_allowed",
            "suites",
            "key_escrow_required",
            "server_side_scanning",
            "traceability_demand",
        ),
        ("sources", "note"),
    )
    return Crypto(
        e2ee_allowed=reader.boolean(body["e2ee_allowed"], f"{path}.e2ee_allowed"),
        suites=reader.strings(body["suites"], f"{path}.suites"),
        key_escrow_required=reader.boolean(
            body["key_escrow_required"], f"{path}.key_escrow_required"
        ),
        server_side_scanning=reader.boolean(
            body["server_side_scanning"], f"{path}.server_side_scanning"
        ),
        traceability_demand=reader.choice(
            body["traceability_demand"], f"{path}.traceability_demand", Traceability
        ),
        sources=reader.refs(body.get("sources"), f"{path}.sources"),
        note=reader.note(body.get("note"), f"{path}.note"),
    )


def _read_legal_hold(value: object, reader: _Reader) -> LegalHold:
    body = reader.mapping(value, "legal_hold", ("mode",), ("sources", "note"))
    return LegalHold(
        mode=reader.choice(body["mode"], "legal_hold.mode", LegalHoldMode),
        sources=reader.refs(body.get("sources"), "legal_hold.sources"),
        note=reader.note(body.get("note"), "legal_hold.note"),
    )


_TOP_LEVEL: Final = (
    "region",
    "version",
    "residency",
    "retention",
    "consent",
    "age",
    "data_subject_requests",
    "breach_notice",
    "crypto",
    "legal_hold",
    "sources",
)


def parse_policy(document: Mapping[str, Any], region: str, file: str) -> Policy:
    """Validate a merged policy document; raises PolicyError naming the field."""
    body = _Reader().mapping(dict(document), "", _TOP_LEVEL, ("watch",))
    # Sources first: every other section cites them by id.
    sources = _read_sources(body["sources"], _Reader())
    reader = _Reader(source.id for source in sources)
    policy = Policy(
        region=_read_region(body["region"], reader, region),
        version=_read_version(body["version"], reader),
        residency=_read_residency(body["residency"], reader),
        retention=_read_retention(body["retention"], reader),
        consent=_read_consent(body["consent"], reader),
        age=_read_age(body["age"], reader),
        data_subject_requests=_read_requests(body["data_subject_requests"], reader),
        breach_notice=_read_breach(body["breach_notice"], reader),
        crypto=_read_crypto(body["crypto"], reader),
        legal_hold=_read_legal_hold(body["legal_hold"], reader),
        sources=sources,
        watch=reader.strings(body.get("watch"), "watch"),
        file=file,
    )
    check_invariants(policy)
    return policy


# --- invariants -----------------------------------------------------------------------------


def check_invariants(policy: Policy) -> None:
    """The rules across fields: legal floors, consent coverage, E2EE. Raises PolicyError."""
    _check_retention(policy)
    _check_residency(policy)
    _check_consent(policy)
    _check_age(policy)
    _check_crypto(policy)


def _check_retention(policy: Policy) -> None:
    for kind, rule in policy.retention.rules():
        path = f"retention.{kind}"
        if not rule.minimum.at_most(rule.maximum):
            raise PolicyError(path, f"minimum {rule.minimum} is above maximum {rule.maximum}")
        if rule.maximum.is_zero and kind not in MAY_BE_ZERO:
            raise PolicyError(f"{path}.maximum", "must be longer than 0")
        floor = rule.legal_floor
        if floor is not None and not floor.duration.at_most(rule.minimum):
            raise PolicyError(
                path,
                f"minimum {rule.minimum} is below its legal floor {floor.duration} ({floor.law})",
            )
        statutory = LEGAL_FLOORS.get((policy.region.id, kind))
        if statutory is None:
            continue
        required = Duration.parse(statutory.duration)
        cite = f"{statutory.law} [{statutory.source}]"
        if not required.at_most(rule.minimum):
            raise PolicyError(
                path,
                f"minimum {rule.minimum} is below the legal floor of {required} "
                f"in {policy.region.id} ({cite})",
            )
        if floor is None or not required.at_most(floor.duration):
            raise PolicyError(
                f"{path}.legal_floor", f"must state the legal floor of at least {required} ({cite})"
            )
    remnants = policy.retention.delivered_envelope_remnants
    if not remnants.minimum.is_zero:
        raise PolicyError(
            "retention.delivered_envelope_remnants.minimum",
            f"{remnants.minimum}: the server deletes an envelope when its device "
            "acknowledges it, so this minimum must be 0d",
        )


def _check_residency(policy: Policy) -> None:
    required = REQUIRED_RESIDENCY.get(policy.region.id)
    if required is not None and policy.residency.country != required[0]:
        raise PolicyError(
            "residency.country",
            f"{policy.residency.country}: must be {required[0]}: {required[1]}",
        )


def _check_consent(policy: Policy) -> None:
    gated: dict[str, str] = {}
    for purpose in policy.consent.purposes:
        path = f"consent.purposes.{purpose.id}"
        if purpose.mode == "necessary":
            if not purpose.required:
                raise PolicyError(f"{path}.required", "a necessary purpose must be required")
            if purpose.legal_basis not in ("contract", "legal_obligation"):
                raise PolicyError(
                    f"{path}.legal_basis",
                    f"{purpose.legal_basis}: a necessary purpose rests on contract or "
                    "legal_obligation",
                )
        if purpose.legal_basis == "consent" and purpose.mode != "opt_in":
            raise PolicyError(f"{path}.mode", f"{purpose.mode}: consent is always opt_in")
        if purpose.mode == "opt_out" and purpose.required:
            raise PolicyError(f"{path}.required", "an opt_out purpose cannot be required")
        for index, feature in enumerate(purpose.gates):
            if feature not in FEATURES:
                raise PolicyError(
                    f"{path}.gates[{index}]",
                    f"unknown feature {feature!r} (features: {', '.join(FEATURES)})",
                )
            if feature in gated:
                raise PolicyError(
                    f"{path}.gates[{index}]", f"{feature!r} is already gated by {gated[feature]!r}"
                )
            gated[feature] = purpose.id
    for feature in FEATURES:
        if feature not in gated:
            raise PolicyError("consent.purposes", f"no purpose gates the feature {feature!r}")
    core = policy.consent.purpose_for_feature(CORE_FEATURE)
    if not core.required:
        raise PolicyError(
            f"consent.purposes.{core.id}.required",
            f"it gates {CORE_FEATURE!r}, without which the service cannot work",
        )


def _check_age(policy: Policy) -> None:
    age = policy.age
    if age.parental_consent_flow:
        raise PolicyError(
            "age.parental_consent_flow",
            "true, but Sealpost has no verified parental-consent flow yet",
        )
    if age.minimum_signup_age < 13:
        raise PolicyError(
            "age.minimum_signup_age",
            f"{age.minimum_signup_age}: below 13 needs verified parental consent (COPPA), "
            "which Sealpost does not offer",
        )


def _check_crypto(policy: Policy) -> None:
    crypto = policy.crypto
    refuse = ErrorCode.E2EE_NOT_ALLOWED
    if not crypto.e2ee_allowed:
        raise PolicyError(
            "crypto.e2ee_allowed",
            "false, but Sealpost is end-to-end encrypted and cannot run without it "
            "(e2ee_not_allowed)",
            code=refuse,
        )
    for name in ("key_escrow_required", "server_side_scanning"):
        if getattr(crypto, name):
            raise PolicyError(
                f"crypto.{name}",
                "true, but the server never holds keys or plaintext (e2ee_not_allowed)",
                code=refuse,
            )
    if crypto.traceability_demand == "in_force":
        raise PolicyError(
            "crypto.traceability_demand",
            "in_force: the server cannot trace message originators (e2ee_not_allowed)",
            code=refuse,
        )
    for index, suite in enumerate(crypto.suites):
        if suite not in KNOWN_SUITES:
            raise PolicyError(
                f"crypto.suites[{index}]",
                f"unknown suite {suite!r} (known: {', '.join(KNOWN_SUITES)})",
            )
    if SERVER_SUITE not in crypto.suites:
        raise PolicyError(
            "crypto.suites", f"must allow {SERVER_SUITE!r}, the only suite this server speaks"
        )


# --- loading --------------------------------------------------------------------------------


def default_policy_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ["POLICY_DIR"]) if environ.get("POLICY_DIR") else DEFAULT_POLICY_DIR


def shown_path(path: Path) -> str:
    """``path`` as messages show it: relative to the project when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(ROOT))
    except ValueError:
        return str(resolved)


def known_regions(directory: Path) -> list[str]:
    return sorted(
        path.name.removesuffix(POLICY_SUFFIX)
        for path in directory.glob(f"*{POLICY_SUFFIX}")
        if not path.name.startswith("_")
    )


def load_policy(region: str, directory: Path | str | None = None) -> Policy:
    """Read, merge and validate the policy of ``region``; raises PolicyError."""
    directory = Path(directory) if directory is not None else default_policy_dir()
    known = ", ".join(known_regions(directory)) or "none"
    if not re.fullmatch(_REGION_ID, region):
        raise PolicyError("REGION", f"{region!r} is not a region id (known regions: {known})")
    path = directory / f"{region}{POLICY_SUFFIX}"
    if not path.is_file():
        raise PolicyError(
            "REGION",
            f"no policy for region {region!r} in {shown_path(directory)} (known regions: {known})",
        )
    shown = shown_path(path)
    defaults_path = directory / DEFAULTS_FILE
    defaults = (
        _read_yaml(defaults_path, shown_path(defaults_path)) if defaults_path.is_file() else {}
    )
    document = merge(defaults, _read_yaml(path, shown))
    try:
        return parse_policy(document, region, shown)
    except PolicyError as exc:
        raise exc.in_file(shown) from None


# --- settings derived from the policy ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """The retention figures code reads from ``settings.SEALPOST``, in seconds."""

    envelope_ttl_seconds: int
    attachment_ttl_seconds: int
    idle_device_expiry_seconds: int
    idle_account_expiry_seconds: int


def _seconds_at_most(duration: Duration) -> int:
    return int(duration.shortest().total_seconds())


def retention_settings(policy: Policy, environ: Mapping[str, str]) -> RetentionSettings:
    """Each kind's maximum, in seconds (never longer than the maximum on any date).

    ``ENVELOPE_TTL_SECONDS`` in the environment still sets the envelope TTL (tests use it),
    but only within the policy's [minimum, maximum]: otherwise PolicyError.
    """
    retention = policy.retention
    envelopes = retention.undelivered_envelopes
    envelope_ttl = _seconds_at_most(envelopes.maximum)
    raw = environ.get("ENVELOPE_TTL_SECONDS")
    if raw is not None:
        path = "retention.undelivered_envelopes"
        try:
            override = int(raw)
        except ValueError:
            raise PolicyError(
                path, f"ENVELOPE_TTL_SECONDS={raw!r} is not a whole number", file=policy.file
            ) from None
        least = max(int(envelopes.minimum.longest().total_seconds()), 1)
        if not least <= override <= envelope_ttl:
            raise PolicyError(
                path,
                f"ENVELOPE_TTL_SECONDS={override} is outside this policy's "
                f"[{envelopes.minimum}, {envelopes.maximum}] = [{least}, {envelope_ttl}] s",
                file=policy.file,
            )
        envelope_ttl = override
    return RetentionSettings(
        envelope_ttl_seconds=envelope_ttl,
        attachment_ttl_seconds=_seconds_at_most(retention.attachments.maximum),
        idle_device_expiry_seconds=_seconds_at_most(retention.idle_devices.maximum),
        idle_account_expiry_seconds=_seconds_at_most(retention.idle_accounts.maximum),
    )
