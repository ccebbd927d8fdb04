"""Queued envelopes: opaque ciphertext waiting for one device to acknowledge it.

An envelope row exists from the moment its send is accepted (it is written before the
sender hears SEND_OK and before any fan-out) until the recipient device acknowledges it or
it expires. The payload is ciphertext the server cannot read.

A group send (GROUP_SEND) carries one payload for every device of the roster: it is
stored once, as a SharedPayload, and each of its envelopes points at it instead of holding
a copy. The shared row is deleted with the last envelope that points at it
(messaging.services).
"""

from __future__ import annotations

from django.db import models

from keys.models import Account, Device


class SharedPayload(models.Model):
    """The one stored copy of a group message's ciphertext."""

    payload = models.BinaryField()

    def __str__(self) -> str:
        return f"shared payload {self.pk}"


class Envelope(models.Model):
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="envelopes")
    seq = models.PositiveBigIntegerField(help_text="per-device delivery order")
    sender = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="sent_envelopes")
    sender_device_id = models.PositiveIntegerField()
    server_time_ms = models.BigIntegerField()
    # Exactly one of the two holds the ciphertext: ``payload`` for a 1:1 send, ``shared``
    # for a group send. DO_NOTHING: the database's foreign key refuses to delete a shared
    # payload that an envelope still points at, and Django need not look for any (the
    # services delete only unreferenced ones, in one statement).
    payload = models.BinaryField(null=True, blank=True)
    shared = models.ForeignKey(
        SharedPayload,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="envelopes",
    )
    # When the envelope stops being delivered and the purge deletes it: the retention
    # maximum, or sooner for a disappearing message (EXPIRES, ttl_seconds).
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "seq"], name="unique_envelope_seq"),
            models.CheckConstraint(
                condition=(
                    models.Q(payload__isnull=False, shared__isnull=True)
                    | models.Q(payload__isnull=True, shared__isnull=False)
                ),
                name="envelope_payload_xor_shared",
            ),
        ]

    def __str__(self) -> str:
        return f"envelope {self.seq} for {self.device}"
