"""The compliance app's verbs: the retention purge, and what a sign-up page must show.

Retention purge. ``purge_expired`` runs one purger per kind of record, each deleting in
bounded batches, every batch its own transaction (all or nothing), so a large purge never
holds the write lock for long and a crash loses at most the batch in flight, which the
next run deletes. Each kind's own app owns its purger; this module only runs them in a
fixed order and reports counts.

What the purge deletes, and what it never deletes:

* Envelopes whose ``expires_at`` has passed (``messaging.services.purge_expired``). The
  expiry is stamped when the envelope is queued, from the policy's undelivered-envelope
  maximum (``SEALPOST["ENVELOPE_TTL_SECONDS"]``), or sooner for a disappearing message
  (EXPIRES ``ttl_seconds``); and the shared group payloads no envelope points at any more.
* Idle devices (``keys.services.purge_idle_devices``): devices unused (last seen, or
  created if never seen) for the policy's idle-device maximum
  (``SEALPOST["IDLE_DEVICE_EXPIRY_SECONDS"]``), with their prekeys and queued envelopes;
  their relay connections are told (``device.revoked``) after each batch commits. The
  account's signed device list still names them (only the account key can sign a new
  one); clients skip a listed device the server no longer serves.
* Link tokens and provisioning slots whose ten minutes have passed (``keys.services``).
* Attachment blobs past their ``expires_at`` (``attachments.services.purge_expired_blobs``):
  24 hours after creation while the upload is incomplete, else creation plus the policy's
  attachment maximum (``SEALPOST["ATTACHMENT_TTL_SECONDS"]``). Their stored objects are
  deleted after each batch commits.
* Connection logs older than the region's ``retention.connection_logs`` maximum
  (``compliance.connections``); the minimum, a legal floor in Brazil and India, is never
  cut short, since the policy checks minimum <= maximum.
* Audit records older than the ``retention.audit_records`` maximum: admin audit entries,
  answered data-subject requests, and consent records a newer answer for the same
  purpose has replaced (``compliance.dsr``). The answer in force is never purged.
* Export archives past their download window; the request row stays (``compliance.dsr``).
* Nothing younger than its deadline, nothing that a legal floor still covers, and no
  account (idle accounts get their purger with their model).

It runs as ``manage.py purge_expired`` and inside the server every
``PURGE_INTERVAL_SECONDS`` (``compliance.scheduler``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from attachments import services as attachments_services
from compliance import connections, dsr
from compliance.policy import Policy
from compliance.transparency import PurposeLine, age_phrase, purpose_line
from keys import services as keys_services
from messaging import services as messaging_services

DEFAULT_BATCH_SIZE: Final = 1000


@dataclass(frozen=True, slots=True)
class Purger:
    """One kind of record the purge deletes: ``purge(now, batch_size)`` -> rows deleted."""

    kind: str
    singular: str
    plural: str
    purge: Callable[[datetime, int], int]

    def describe(self, count: int) -> str:
        return f"{count} expired {self.singular if count == 1 else self.plural}"


def _purge_envelopes(now: datetime, batch_size: int) -> int:
    return messaging_services.purge_expired(now=now, batch=batch_size)


def _purge_idle_devices(now: datetime, batch_size: int) -> int:
    return keys_services.purge_idle_devices(now, batch_size)


def _purge_link_tokens(now: datetime, batch_size: int) -> int:
    return keys_services.purge_expired_link_tokens(now, batch_size)


def _purge_provisioning_slots(now: datetime, batch_size: int) -> int:
    return keys_services.purge_expired_provisioning_slots(now, batch_size)


def _purge_attachments(now: datetime, batch_size: int) -> int:
    return attachments_services.purge_expired_blobs(now, batch_size)


PURGERS: Final[tuple[Purger, ...]] = (
    Purger("envelopes", "envelope", "envelopes", _purge_envelopes),
    Purger("idle_devices", "idle device", "idle devices", _purge_idle_devices),
    Purger("link_tokens", "link token", "link tokens", _purge_link_tokens),
    Purger(
        "provisioning_slots", "provisioning slot", "provisioning slots", _purge_provisioning_slots
    ),
    Purger("attachments", "attachment", "attachments", _purge_attachments),
    Purger(
        "connection_logs",
        "connection log",
        "connection logs",
        connections.purge_connection_logs,
    ),
    Purger("audit_records", "audit record", "audit records", dsr.purge_audit_records),
    Purger("export_archives", "export archive", "export archives", dsr.purge_export_archives),
)


def purge_expired(
    now: datetime | None = None, batch_size: int = DEFAULT_BATCH_SIZE
) -> dict[str, int]:
    """Delete every record past its retention as of ``now``: {kind: rows deleted}.

    ``now`` defaults to the current time; all kinds compare against the same instant.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    moment = now or timezone.now()
    return {purger.kind: purger.purge(moment, batch_size) for purger in PURGERS}


# --- the sign-up page's privacy notice -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoticePurpose:
    """A consent purpose as the sign-up form shows it.

    ``needs_input``: the form shows a checkbox (named ``consent``, value the purpose id);
    ``checked``: ticked to begin with (opt-out purposes); ``required``: sign-up is refused
    without it (the checkbox carries ``required``).
    """

    line: PurposeLine
    needs_input: bool
    checked: bool
    required: bool

    @property
    def id(self) -> str:
        return self.line.id


@dataclass(frozen=True, slots=True)
class PrivacyNotice:
    region_id: str
    region_name: str
    policy_version: str
    location: str
    minimum_signup_age: int
    self_consent_age: int
    age: str  # in words
    purposes: tuple[NoticePurpose, ...]
    transparency_url: str
    policy_url: str


def _notice_purpose(line: PurposeLine) -> NoticePurpose:
    needs_input = line.mode != "necessary"
    return NoticePurpose(
        line=line,
        needs_input=needs_input,
        checked=line.mode == "opt_out",
        required=needs_input and line.required,
    )


def privacy_notice(policy: Policy | None = None) -> PrivacyNotice:
    policy = policy or settings.POLICY
    return PrivacyNotice(
        region_id=policy.region.id,
        region_name=policy.region.name,
        policy_version=policy.version,
        location=policy.residency.location,
        minimum_signup_age=policy.age.minimum_signup_age,
        self_consent_age=policy.age.self_consent_age,
        age=age_phrase(policy),
        purposes=tuple(_notice_purpose(purpose_line(p)) for p in policy.consent.purposes),
        transparency_url=reverse("compliance:transparency"),
        policy_url=reverse("compliance-api:policy"),
    )


def privacy_notice_context(policy: Policy | None = None) -> dict[str, Any]:
    """Template context for ``compliance/privacy_notice.html``: ``{"privacy_notice": ...}``.

    A sign-up view merges it into its own context and includes the template inside its
    form; the ticked ``consent`` checkboxes arrive as ``request.POST.getlist("consent")``.
    """
    return {"privacy_notice": privacy_notice(policy)}


# --- data-subject requests ---------------------------------------------------------------------
# The verbs live in compliance.dsr (and consent in compliance.consent); these two are the
# ones other code and the management commands name.

export_user = dsr.export_user
erase_user = dsr.erase_user
