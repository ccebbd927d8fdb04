"""``manage.py export_user USERNAME [--output FILE]``: everything the server holds about one
account, as the zip a data-subject access request gets (compliance.dsr). The export is
recorded as a completed request, so its deadline and answer show in the admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from compliance import dsr
from keys.models import Account


def account_named(username: str) -> Account:
    account = Account.objects.select_related("user").filter(user__username=username.lower()).first()
    if account is None:
        raise CommandError(f"no account {username!r}")
    return account


class Command(BaseCommand):
    help = "Export everything held about one account as a zip (a data-subject access request)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--output",
            "-o",
            help="where to write the zip (default: sealpost-export-USERNAME-DATE.zip here)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        account = account_named(options["username"])
        output = Path(
            options["output"]
            or f"sealpost-export-{account.username}-{timezone.now().date().isoformat()}.zip"
        )
        if output.exists():
            raise CommandError(f"{output} exists: choose another --output")
        self.stdout.write(f"Exporting {account.username}...")
        request = dsr.open_request(account, "export", "command")
        self.stdout.write(
            f"Request {request.pk} received; due by {request.deadline:%Y-%m-%d %H:%M} UTC."
        )
        done = dsr.run_request(request, progress=self.stdout.write)
        archive = bytes(done.archive or b"")
        output.write_bytes(archive)
        output.chmod(0o600)
        self.stdout.write(f"Wrote {output} ({len(archive)} bytes).")
