"""``manage.py purge_expired``: delete envelopes past their retention (ENVELOPE_TTL_SECONDS).

Run it on a schedule (at least hourly, so nothing expired outlives its deadline by more
than an hour). It deletes only expired envelopes; see ``messaging.services.purge_expired``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging.services import purge_expired


class Command(BaseCommand):
    help = "Delete queued envelopes whose retention has ended, in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch",
            type=int,
            default=1000,
            help="rows deleted per transaction (default 1000)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        deleted = purge_expired(batch=options["batch"])
        self.stdout.write(f"Deleted {deleted} expired envelope{'' if deleted == 1 else 's'}.")
