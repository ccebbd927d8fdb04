"""The policy in plain words: what the transparency page and the sign-up notice say.

Everything a person reads about retention, consent and their rights is generated here
from the loaded policy, so the page can never promise what the policy does not say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from compliance.durations import Duration
from compliance.policy import (
    KNOWN_SUITES,
    Notice,
    Policy,
    Purpose,
    RequestDeadline,
    RetentionRule,
    Source,
)

LEGAL_BASIS_WORDS: Final = {
    "contract": "needed to provide the service you signed up for",
    "consent": "your consent",
    "legitimate_interests": "our legitimate interests",
    "legal_obligation": "a legal obligation",
    "notice": "notice to you, with the right to opt out",
    "deemed_consent": "deemed consent after notice to you, with the right to opt out",
}
TRANSFER_WORDS: Final = {
    "adequacy": "an adequacy decision",
    "eu_scc": "EU standard contractual clauses",
    "anpd_scc": "ANPD standard contractual clauses",
    "tlo_contract": "legally enforceable contracts",
    "tlo_certification": "recognised certifications",
}
CLOCK_WORDS: Final = {
    "awareness": "of becoming aware of it",
    "discovery": "of discovering it",
    "assessment_complete": "of finishing the assessment of it",
    "individual_notice": "of notifying the affected people",
}


def _duration(duration: Duration) -> str:
    return duration.human()


def retention_phrase(rule: RetentionRule) -> str:
    """How long, in words: 'At most 30 days.' / 'At least 6 months ... and at most ...'."""
    if rule.maximum.is_zero:
        return "Not kept: deleted at once."
    if rule.legal_floor is not None:
        floor = rule.legal_floor
        if rule.minimum == rule.maximum:
            return f"Exactly {_duration(rule.maximum)}, as {floor.law} requires; then deleted."
        return (
            f"At least {_duration(rule.minimum)}, as {floor.law} requires, and at most "
            f"{_duration(rule.maximum)}."
        )
    if rule.minimum.is_zero:
        return f"At most {_duration(rule.maximum)}."
    return f"At least {_duration(rule.minimum)} and at most {_duration(rule.maximum)}."


@dataclass(frozen=True, slots=True)
class StoredItem:
    what: str
    details: str
    kept: str


@dataclass(frozen=True, slots=True)
class PurposeLine:
    id: str
    description: str
    legal_basis: str  # in words
    mode: str  # necessary, opt_in, opt_out
    required: bool
    choice: str  # what the person can do, in words


@dataclass(frozen=True, slots=True)
class TransparencyPage:
    region_id: str
    region_name: str
    policy_version: str
    location: str
    country: str
    transfers: str
    stored: tuple[StoredItem, ...]
    can_see: tuple[str, ...]
    cannot_see: tuple[str, ...]
    purposes: tuple[PurposeLine, ...]
    age: str
    rights: tuple[str, ...]
    breach: tuple[str, ...]
    encryption: str
    legal_hold: str
    sources: tuple[Source, ...]


def purpose_line(purpose: Purpose) -> PurposeLine:
    if purpose.mode == "necessary":
        choice = "Always on: the service cannot work without it."
    elif purpose.required:
        choice = "You must agree to this to use the service; you are asked separately."
    elif purpose.mode == "opt_in":
        choice = "Off unless you turn it on. You can turn it off again at any time."
    else:
        choice = "On unless you turn it off, which you can do at any time."
    return PurposeLine(
        id=purpose.id,
        description=purpose.description,
        legal_basis=LEGAL_BASIS_WORDS[purpose.legal_basis],
        mode=purpose.mode,
        required=purpose.required,
        choice=choice,
    )


def age_phrase(policy: Policy) -> str:
    age = policy.age
    text = f"You must be at least {age.minimum_signup_age} to sign up."
    if age.self_consent_age > age.minimum_signup_age:
        text += (
            f" Until you are {age.self_consent_age}, everything that needs your consent stays off."
        )
    return text


def _request_phrase(label: str, request: RequestDeadline) -> str:
    text = f"{label}: answered within {request.deadline.human()}"
    if request.extension is not None:
        text += f", or {request.extension.human()} more for a complex request (we tell you why)"
    if request.acknowledge is not None:
        text += f"; we confirm receipt within {request.acknowledge.human()}"
    return text + "."


def _notice_phrase(notice: Notice) -> str:
    return (
        f"We notify {notice.to} within {notice.deadline.human()} "
        f"{CLOCK_WORDS[notice.clock]}, {notice.condition}."
    )


def _transfers(policy: Policy) -> str:
    mechanisms = policy.residency.transfer_mechanisms
    if not mechanisms:
        return "Your data is not transferred out of this region."
    return (
        "Your data is transferred out of this region only under the safeguards the law "
        f"provides: {', '.join(TRANSFER_WORDS.get(m, m.replace('_', ' ')) for m in mechanisms)}."
    )


def transparency_page(policy: Policy) -> TransparencyPage:
    retention = policy.retention
    requests = policy.data_subject_requests
    breach = policy.breach_notice
    logs = retention.connection_logs
    stored = (
        StoredItem(
            "Your account",
            "Your username, a hash of your password, your account's public identity key "
            "and when the account was created.",
            "Until you delete your account. An account no device has used for "
            f"{_duration(retention.idle_accounts.maximum)} is erased.",
        ),
        StoredItem(
            "Your devices and their public keys",
            "For each device: the name you give it, its public keys and certificate, and "
            "when it was last connected.",
            "Until you remove the device. A device unused for "
            f"{_duration(retention.idle_devices.maximum)} is removed with its keys.",
        ),
        StoredItem(
            "Prekeys",
            "Public one-time keys your devices upload so that others can start an "
            "encrypted conversation with you while you are offline.",
            "Until someone uses one to start a conversation, or until the device is removed.",
        ),
        StoredItem(
            "Messages waiting for your devices",
            "Encrypted envelopes: the ciphertext, who sent it, to which of your devices, "
            "when, and its size.",
            "Until your device confirms it received them, and never longer than "
            f"{_duration(retention.undelivered_envelopes.maximum)}: then they are deleted "
            "unread.",
        ),
        StoredItem(
            "Delivered messages",
            "Messages your device has confirmed receiving.",
            retention_phrase(retention.delivered_envelope_remnants),
        ),
        StoredItem(
            "Attachments",
            "Encrypted files, stored as opaque blobs the server cannot open.",
            retention_phrase(retention.attachments),
        ),
        StoredItem(
            "Connection logs",
            "The IP address you connect from and the time of the connection.",
            retention_phrase(logs),
        ),
        StoredItem(
            "Consent records",
            "Each choice you make about the purposes below: which, when, and under which "
            "version of this policy.",
            retention_phrase(retention.audit_records),
        ),
        StoredItem(
            "Audit records",
            "Requests you make about your data, and every action an administrator takes "
            "on your account.",
            retention_phrase(retention.audit_records),
        ),
    )
    logs_period = (
        "not kept"
        if logs.maximum.is_zero
        else f"kept for the connection-log period: {retention_phrase(logs).lower()}"
    )
    can_see = (
        "Who sends a message to whom, and when: the sender's account and device, the "
        "recipient's device, the time and the size of the encrypted message.",
        f"The IP address each device connects from ({logs_period.rstrip('.')}).",
        "Your username, the names you give your devices, and when each device last connected.",
    )
    cannot_see = (
        "The content of your messages.",
        "The content of your attachments, their file names or their types.",
        "What your contacts write to you or to anyone else.",
        "Your private keys: they are made on your devices and never leave them.",
    )
    rights = [
        _request_phrase("A copy of everything the server holds about you", requests.access),
        _request_phrase("Erasure of your data", requests.erasure),
    ]
    if requests.grievance is not None:
        rights.append(
            _request_phrase("A complaint about how your data is handled", requests.grievance)
        )
    suites = "; ".join(f"{KNOWN_SUITES[suite]} ({suite})" for suite in policy.crypto.suites)
    legal_hold = (
        "There is no legal hold: nobody, the operator included, can add a device to your "
        "conversations or read them."
        if policy.legal_hold.mode == "off"
        else "A legal hold, where it applies, is an extra device that the person concerned "
        "must agree to and that everyone in the conversation can see."
    )
    return TransparencyPage(
        region_id=policy.region.id,
        region_name=policy.region.name,
        policy_version=policy.version,
        location=policy.residency.location,
        country=policy.residency.country,
        transfers=_transfers(policy),
        stored=stored,
        can_see=can_see,
        cannot_see=cannot_see,
        purposes=tuple(purpose_line(p) for p in policy.consent.purposes),
        age=age_phrase(policy),
        rights=tuple(rights),
        breach=tuple(
            _notice_phrase(n) for n in (breach.authority, breach.individuals, *breach.additional)
        ),
        encryption=(
            "Messages and attachments are end-to-end encrypted on your devices with "
            f"{suites}. The server only ever stores and forwards ciphertext."
        ),
        legal_hold=legal_hold,
        sources=policy.sources,
    )
