"""``manage.py erase_user USERNAME [--yes]``: erase one account and everything about it but
what a law keeps (compliance.dsr), printing a line per kind of record and the report. The
erasure is recorded as a completed request (pseudonymised), so it shows in the admin."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance import dsr
from compliance.management.commands.export_user import account_named


class Command(BaseCommand):
    help = "Erase one account and everything held about it, except what a law keeps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args: Any, **options: Any) -> None:
        account = account_named(options["username"])
        if not options["yes"]:
            answer = input(f"Erase {account.username} and everything about it? Type its name: ")
            if answer.strip().lower() != account.username:
                raise CommandError("not erased")
        self.stdout.write(f"Erasing {account.username}...")
        request = dsr.open_request(account, "erasure", "command")
        self.stdout.write(
            f"Request {request.pk} received; due by {request.deadline:%Y-%m-%d %H:%M} UTC."
        )
        done = dsr.run_request(request, progress=self.stdout.write)
        self.stdout.write("Report:")
        for line in report_lines(done.report_data):
            self.stdout.write(f"  {line}")


def report_lines(report: dict[str, Any]) -> list[str]:
    """The stored erasure report (ErasureReport.as_json) in words."""
    lines = [f"{report['username']} erased; kept records name {report['pseudonym']}."]
    for step in report["steps"]:
        line = f"{step['label']}: {step['deleted']} deleted"
        if step["kept"]:
            until = f" until {step['until'][:10]}" if step["until"] else ""
            line += f", {step['kept']} kept{until}: {step['reason']}"
        lines.append(line)
    return lines
