"""``manage.py purge_expired``: delete every record past its retention, kind by kind.

The server runs the same purge every PURGE_INTERVAL_SECONDS (compliance.scheduler); this
command is for a deployment that runs it from cron instead (PURGE_SCHEDULER=off), and for
operators. It deletes only what ``compliance.services.purge_expired`` deletes.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.services import DEFAULT_BATCH_SIZE, PURGERS, purge_expired


class Command(BaseCommand):
    help = "Delete records whose retention has ended (envelopes, ...), in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch",
            "--batch-size",
            dest="batch",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"rows deleted per transaction (default {DEFAULT_BATCH_SIZE})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        counts = purge_expired(batch_size=options["batch"])
        for purger in PURGERS:
            self.stdout.write(f"Deleted {purger.describe(counts[purger.kind])}.")
