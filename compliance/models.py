"""What the compliance app records: the consent ledger, each account's age check, connection
logs, data-subject requests and the audit log of admin actions.

Every row here is written by ``compliance.services`` (or ``compliance.subject_data`` for
erasure) and deleted by the retention purge or by an erasure, nothing else. Rows a law
keeps after an erasure (connection logs under a legal floor, the requests and admin
actions that show the law was obeyed) lose their link to the account (``SET_NULL``) and
carry a pseudonym in place of the username (``compliance.subject_data.pseudonym``).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import models

from keys.models import Account


class AppendOnlyError(Exception):
    """An attempt to change or delete a ledger row other than by erasure or the purge."""


class ConsentRecordQuerySet(models.QuerySet["ConsentRecord"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("the consent ledger is append-only: add a record instead")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError(
            "consent records are deleted only by erasure or the retention purge "
            "(ConsentRecord.objects.remove)"
        )

    def remove(self) -> int:
        """Delete these rows: for erasure and the purge only."""
        deleted, _ = models.QuerySet.delete(self)
        return deleted


class ConsentRecord(models.Model):
    """One answer of one person for one purpose: given or withdrawn. The ledger is
    append-only; the current state of a purpose is its latest record."""

    METHODS = (
        ("signup", "at sign-up"),
        ("web", "on the privacy page"),
        ("api", "through the API"),
        ("admin", "by an operator"),
    )

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="consents")
    purpose = models.CharField(max_length=64)
    granted = models.BooleanField()
    policy_version = models.CharField(max_length=32)
    recorded_at = models.DateTimeField(db_index=True)
    method = models.CharField(max_length=16, choices=METHODS)

    objects = ConsentRecordQuerySet.as_manager()

    class Meta:
        ordering = ("account", "purpose", "recorded_at", "pk")
        indexes = [models.Index(fields=["account", "purpose", "recorded_at"])]

    def __str__(self) -> str:
        state = "granted" if self.granted else "withdrawn"
        return f"{self.account}: {self.purpose} {state} ({self.recorded_at:%Y-%m-%d})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("the consent ledger is append-only: add a record instead")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("consent records are deleted only by erasure or the purge")


class AgeCheck(models.Model):
    """How an account's age was checked at sign-up, and until when its holder cannot
    consent for themselves. The birth date itself is never stored: only the day the
    person reaches the region's age of self-consent, which the consent rules need."""

    METHODS = (
        ("birth_date", "birth date given"),
        ("confirmed", "confirmed to be of the age of self-consent"),
        ("not_stated", "not stated"),
    )

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="age_check")
    method = models.CharField(max_length=16, choices=METHODS)
    # The first day the holder may consent for themselves; null once of age at sign-up.
    self_consent_from = models.DateField(null=True, blank=True)
    policy_version = models.CharField(max_length=32)
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"age check of {self.account}: {self.get_method_display()}"


class ConnectionLog(models.Model):
    """One relay connection: which device connected from which address, when. Kept
    exactly as long as the region's ``retention.connection_logs`` says."""

    account = models.ForeignKey(
        Account, on_delete=models.SET_NULL, null=True, blank=True, related_name="connection_logs"
    )
    # The pseudonym of an erased account whose rows a legal floor keeps; empty otherwise.
    subject = models.CharField(max_length=64, blank=True)
    device_id = models.PositiveIntegerField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    connected_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-connected_at", "-pk")

    def __str__(self) -> str:
        who = self.account or self.subject or "?"
        return f"{who}/{self.device_id} from {self.ip} at {self.connected_at:%Y-%m-%d %H:%M}"


class DataSubjectRequest(models.Model):
    """An export or erasure request, its deadline under the region's law, and its outcome.

    Kept (pseudonymised after an erasure) for the audit-record retention: it is the proof
    that the request was answered in time.
    """

    KINDS = (("export", "export (access)"), ("erasure", "erasure"))
    STATUSES = (("received", "received"), ("completed", "completed"), ("failed", "failed"))
    CHANNELS = (("web", "web"), ("api", "API"), ("admin", "admin"), ("command", "command"))

    account = models.ForeignKey(
        Account, on_delete=models.SET_NULL, null=True, blank=True, related_name="data_requests"
    )
    username = models.CharField(
        max_length=64, help_text="as at the request; a pseudonym once erased"
    )
    kind = models.CharField(max_length=16, choices=KINDS)
    status = models.CharField(max_length=16, choices=STATUSES, default="received")
    channel = models.CharField(max_length=16, choices=CHANNELS)
    region = models.CharField(max_length=32)
    policy_version = models.CharField(max_length=32)
    received_at = models.DateTimeField(db_index=True)
    deadline = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    # The export archive (a zip), kept for download until archive_expires_at.
    archive = models.BinaryField(null=True, blank=True, editable=False)
    archive_expires_at = models.DateTimeField(null=True, blank=True)
    # The erasure report (or the export's size), as JSON text: a JSONField would need a
    # database connection for the system checks.
    report = models.TextField(blank=True, default="")

    class Meta:
        ordering = ("-received_at", "-pk")

    def __str__(self) -> str:
        return f"{self.kind} request of {self.username} ({self.received_at:%Y-%m-%d})"

    @property
    def report_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.report) if self.report else {}
        return data


class AdminAuditLog(models.Model):
    """One action of an operator in the admin (or a login to it), copied from Django's
    LogEntry and the auth signals so it survives the actor's or subject's erasure."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=32)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    detail = models.TextField(blank=True)
    # The account the object belongs to, so that its erasure can pseudonymise this row.
    subject = models.ForeignKey(
        Account, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-at", "-pk")
        verbose_name = "admin audit log entry"
        verbose_name_plural = "admin audit log"

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.object_repr}".strip()


class RegionPolicy(models.Model):
    """No table: the admin's read-only page of the loaded region policy
    (``compliance.admin.RegionPolicyAdmin``), which lives in deploy/regions/, not here."""

    class Meta:
        managed = False
        verbose_name = "region policy"
        verbose_name_plural = "region policy"
