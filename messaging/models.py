"""Queued envelopes: opaque ciphertext waiting for one device to acknowledge it.

An envelope row exists from the moment its send is accepted (it is written before the
sender hears SEND_OK and before any fan-out) until the recipient device acknowledges it or
it expires. The payload is ciphertext the server cannot read.
"""

from __future__ import annotations

from django.db import models

from keys.models import Account, Device


class Envelope(models.Model):
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="envelopes")
    seq = models.PositiveBigIntegerField(help_text="per-device delivery order")
    sender = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="sent_envelopes")
    sender_device_id = models.PositiveIntegerField()
    server_time_ms = models.BigIntegerField()
    payload = models.BinaryField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "seq"], name="unique_envelope_seq"),
        ]

    def __str__(self) -> str:
        return f"envelope {self.seq} for {self.device}"
