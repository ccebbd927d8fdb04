"""The ``sealpost`` command (also ``python -m client``): a thin shell over ``Client``.

    sealpost [--home DIR] [--server URL] register USERNAME [--password PW]
                                 [--birth-date YYYY-MM-DD] [--consent PURPOSE]...
    sealpost send USERNAME TEXT...
    sealpost receive [--wait SECONDS] [--json] [--no-receipts]
    sealpost read USERNAME
    sealpost receipts [on|off]
    sealpost safety-number USERNAME [--qr]
    sealpost trust USERNAME [--verified]
    sealpost --home NEWDIR --server URL link [--name NAME] [--no-qr]
    sealpost approve-link CODE [--history-bytes N] [--yes]
    sealpost devices
    sealpost revoke DEVICE_ID [--yes]
    sealpost rename DEVICE_ID NAME
    sealpost group create NAME [USER...]      (prints the new group's id on its last line)
    sealpost group send GROUP TEXT...
    sealpost group send-file GROUP PATH [--caption TEXT] [--voice] [--content-type TYPE]
    sealpost group add GROUP USER...
    sealpost group remove GROUP USER
    sealpost group leave GROUP
    sealpost group rename GROUP NAME
    sealpost group admin GROUP USER [--remove]
    sealpost group list
    sealpost group show GROUP
    sealpost send-file USERNAME PATH [--caption TEXT] [--voice] [--content-type TYPE]
    sealpost timer USERNAME [SECONDS|off]
    sealpost typing [on|off]
    sealpost send-typing USERNAME [--stop]

Files, typing indicators and disappearing messages: see ``client.cli_media``. ``receive``
saves files under ``DIR/downloads/`` and gives a disappearing message's ``"expires_at"``.

Several devices per account: ``link`` (in a new home) shows a link code, as text on a line
of its own and as a QR code, and waits up to 10 minutes; ``approve-link CODE`` on a device
of the account asks for confirmation (``--yes`` skips it; without a terminal it is
required), lets the new device in and sends it the newest messages (``--history-bytes``,
default 1 MiB, 0 for none), which its first ``receive`` imports. What a device sends shows
up on the others as sent (``--json``: ``{"type": "sent", "to", "text", "sent_at",
"device"}``). A device the server shows but the account's signed device list does not name
is never encrypted to: a ``warning: ...`` line on stderr says so.

``register`` answers the region's age rule and consent (docs/api.md, sign-up): with
``--birth-date`` the server checks it against the region's minimum age (``under_age``
below it) and never stores it; without it the age is "not stated", which the server
accepts only where using the service needs no consent, with every optional purpose off.
``--consent PURPOSE`` (repeatable) agrees to a purpose of the region policy
(``GET /api/v1/policy``); change answers later with ``/api/v1/consent``.

``receive`` prints messages and, as their recipients' receipts arrive, the status changes
of messages sent from this home (``--json``: ``{"type": "status", "peer", "message_id",
"status"}``). It sends a delivered receipt for each message received, unless
``--no-receipts`` or ``sealpost receipts off`` (stored in the home) says not to; ``read``
marks a conversation read and sends the read receipt.

Groups (docs/protocol.md §17): GROUP is the group's id, 32 hex digits (``group list``
shows them). A group message is encrypted once with this device's sender key and uploaded
once; the server fans it out. ``receive`` shows group messages and membership changes
(``--json``: a message has ``"group"``; a change is ``{"type": "group_update", "group",
"from", "action", "name", "targets", "text", ...}``). Adding, removing and making
admins take an admin; anyone may rename the group or leave it.

The home (default ``~/.sealpost``, or ``$SEALPOST_HOME``) remembers the server and the
device's credentials after ``register``; ``--server`` on a later command overrides the
stored URL for that run. ``--home`` and ``--server`` may come before or after the command.

An expected failure prints one line, ``error: <code>: <message>``, on stderr and exits 1
(2 for a usage error): no tracebacks for an unreachable server, an unknown user, an
untrusted identity or a home that holds no account yet.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn

from protocol import primitives as p
from protocol.errors import ProtocolError
from protocol.provisioning import LinkCode

from . import cli_media
from .core import (
    DEFAULT_HISTORY_BYTES,
    LINK_TIMEOUT,
    AttachmentReceived,
    Client,
    DeviceRefused,
    Event,
    GroupUpdated,
    HistoryImported,
    IdentityChanged,
    MessageReceived,
    MessageStatusChanged,
    SentByMe,
    TimerChanged,
    TypingChanged,
    UndecryptableMessage,
)
from .errors import LocalErrorCode, SealpostError
from .store import store_path

DEFAULT_HOME = "~/.sealpost"
HOME_ENV = "SEALPOST_HOME"
SERVER_ENV = "SEALPOST_SERVER"
PASSWORD_ENV = "SEALPOST_PASSWORD"  # noqa: S105 (a variable name, not a secret)
SEND_TIMEOUT = 30.0

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number >= 0")
    return seconds


def _byte_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of bytes") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be 0 or more")
    return count


def _device_id(value: str) -> int:
    try:
        device_id = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a device id") from None
    if not 1 <= device_id <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{value!r} is not a device id (1..65535)")
    return device_id


def _birth_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sealpost",
        description="Sealpost reference client: end-to-end encrypted messages.",
    )

    def add_globals(target: argparse.ArgumentParser, default: Any) -> None:
        target.add_argument(
            "--home",
            default=default,
            metavar="DIR",
            help=f"where this device's keys and messages live (default ${HOME_ENV} or "
            f"{DEFAULT_HOME})",
        )
        target.add_argument(
            "--server",
            default=default,
            metavar="URL",
            help="server URL, e.g. https://chat.example (register stores it)",
        )
        target.add_argument(
            "-v", "--verbose", action="store_true", default=default, help="log what happens"
        )

    add_globals(parser, None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # Each command accepts the global options too; SUPPRESS keeps a value given before
    # the command from being overwritten by the command's default.
    register = commands.add_parser("register", help="create an account and this device")
    register.add_argument("username", metavar="USERNAME")
    register.add_argument(
        "--password", help=f"account password (else ${PASSWORD_ENV}, else asked for)"
    )
    register.add_argument("--device-name", default="Python client", help="a name for this device")
    register.add_argument(
        "--birth-date",
        type=_birth_date,
        metavar="YYYY-MM-DD",
        help="checked against the region's minimum age and not stored; without it the age "
        "is not stated and optional purposes stay off",
    )
    register.add_argument(
        "--consent",
        action="append",
        default=[],
        metavar="PURPOSE",
        help="agree to a consent purpose of the region policy (repeatable)",
    )

    send = commands.add_parser("send", help="send a text message")
    send.add_argument("username", metavar="USERNAME")
    send.add_argument("text", metavar="TEXT", nargs="+", help="the message (words are joined)")
    send.add_argument(
        "--timeout",
        type=_seconds,
        default=SEND_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the server to accept it (default {SEND_TIMEOUT:g})",
    )

    receive = commands.add_parser("receive", help="print messages as they arrive")
    receive.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="after the queued messages, stop once SECONDS pass without one (default 0)",
    )
    receive.add_argument("--json", action="store_true", help="one JSON object per line")
    receive.add_argument(
        "--no-receipts",
        action="store_true",
        help="send no delivered receipts this time (see also 'sealpost receipts off')",
    )

    read = commands.add_parser(
        "read", help="mark the messages from someone read (and send a read receipt)"
    )
    read.add_argument("username", metavar="USERNAME")

    receipts = commands.add_parser(
        "receipts", help="show, or turn on or off, sending delivered and read receipts"
    )
    receipts.add_argument("state", metavar="on|off", nargs="?", choices=("on", "off"))

    safety = commands.add_parser("safety-number", help="show the safety number with someone")
    safety.add_argument("username", metavar="USERNAME")
    safety.add_argument("--qr", action="store_true", help="also draw the QR code")

    trust = commands.add_parser("trust", help="accept someone's changed identity key")
    trust.add_argument("username", metavar="USERNAME")
    trust.add_argument(
        "--verified", action="store_true", help="record that you compared safety numbers"
    )

    link = commands.add_parser(
        "link", help="make this (new) home another device of an existing account"
    )
    link.add_argument("--name", default="Python client", help="a name for this device")
    link.add_argument("--no-qr", action="store_true", help="show the link code as text only")
    link.add_argument(
        "--timeout",
        type=_seconds,
        default=LINK_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the approval (default {LINK_TIMEOUT:g})",
    )

    approve = commands.add_parser(
        "approve-link", help="let the device showing a link code join this account"
    )
    approve.add_argument("code", metavar="CODE", help="the link code (sealpost-link:...)")
    approve.add_argument(
        "--history-bytes",
        type=_byte_count,
        default=DEFAULT_HISTORY_BYTES,
        metavar="N",
        help=f"send it up to N bytes of recent messages (default {DEFAULT_HISTORY_BYTES}; 0: none)",
    )
    approve.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    approve.add_argument(
        "--timeout",
        type=_seconds,
        default=LINK_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the new device (default {LINK_TIMEOUT:g})",
    )

    devices = commands.add_parser("devices", help="list this account's devices")

    revoke = commands.add_parser("revoke", help="remove a device from this account")
    revoke.add_argument("device_id", metavar="DEVICE_ID", type=_device_id)
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    rename = commands.add_parser("rename", help="rename a device of this account")
    rename.add_argument("device_id", metavar="DEVICE_ID", type=_device_id)
    rename.add_argument("name", metavar="NAME")

    group = commands.add_parser(
        "group",
        help="group chats: create, send, send-file, add, remove, leave, rename, admin, list, show",
    )
    group_commands = group.add_subparsers(
        dest="group_command", metavar="GROUP_COMMAND", required=True
    )
    g_create = group_commands.add_parser(
        "create", help="create a group (you are its admin); prints its id last"
    )
    g_create.add_argument("name", metavar="NAME")
    g_create.add_argument("users", metavar="USER", nargs="*", help="the other members")
    g_send = group_commands.add_parser("send", help="send a text message to a group")
    g_send.add_argument("group", metavar="GROUP")
    g_send.add_argument("text", metavar="TEXT", nargs="+", help="the message (words are joined)")
    g_send.add_argument(
        "--timeout",
        type=_seconds,
        default=SEND_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the server to accept it (default {SEND_TIMEOUT:g})",
    )
    g_send_file = cli_media.add_send_file(
        group_commands, "send-file", "send a file to a group (end-to-end encrypted)", "GROUP"
    )
    g_add = group_commands.add_parser("add", help="add members (admins)")
    g_add.add_argument("group", metavar="GROUP")
    g_add.add_argument("users", metavar="USER", nargs="+")
    g_remove = group_commands.add_parser("remove", help="remove a member (admins)")
    g_remove.add_argument("group", metavar="GROUP")
    g_remove.add_argument("user", metavar="USER")
    g_leave = group_commands.add_parser("leave", help="leave a group")
    g_leave.add_argument("group", metavar="GROUP")
    g_rename = group_commands.add_parser("rename", help="give a group a new name")
    g_rename.add_argument("group", metavar="GROUP")
    g_rename.add_argument("name", metavar="NAME", nargs="+", help="the name (words are joined)")
    g_admin = group_commands.add_parser("admin", help="make a member an admin (admins)")
    g_admin.add_argument("group", metavar="GROUP")
    g_admin.add_argument("user", metavar="USER")
    g_admin.add_argument("--remove", action="store_true", help="make an admin a member again")
    g_list = group_commands.add_parser("list", help="the groups this device knows")
    g_show = group_commands.add_parser("show", help="a group's name, members and admins")
    g_show.add_argument("group", metavar="GROUP")
    for sub in (
        group,
        g_create,
        g_send,
        g_send_file,
        g_add,
        g_remove,
        g_leave,
        g_rename,
        g_admin,
        g_list,
        g_show,
    ):
        add_globals(sub, argparse.SUPPRESS)

    for sub in (
        register, send, receive, read, receipts, safety, trust, link, approve, devices, revoke,
        rename,
    ):  # fmt: skip
        add_globals(sub, argparse.SUPPRESS)
    cli_media.add_commands(commands, add_globals)
    return parser


# --- output -----------------------------------------------------------------------------


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds: ...T01:02:03.456Z."""
    seconds, millis = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


def event_json(event: Event) -> dict[str, Any]:
    """The --json object for an event. "sent_at" is the sender's clock for a message; for
    the other types, which carry no readable content, it is the server's time."""
    match event:
        case MessageReceived():
            return _in_group(
                event.group,
                {
                    "type": "message",
                    "id": event.message_id,
                    "from": event.from_,
                    "device": event.device,
                    "text": event.text,
                    "sent_at": iso_ms(event.sent_at_ms),
                    "sent_at_ms": event.sent_at_ms,
                    "server_time": iso_ms(event.server_time_ms),
                    "server_time_ms": event.server_time_ms,
                    "seq": event.seq,
                    **cli_media.expiry_json(event.expires_at_ms),
                },
            )
        case UndecryptableMessage():
            return _in_group(
                event.group,
                {
                    "type": "undecryptable",
                    "id": event.message_id,
                    "from": event.from_,
                    "device": event.device,
                    "text": None,
                    "code": event.code.slug,
                    "sent_at": iso_ms(event.server_time_ms),
                    "sent_at_ms": event.server_time_ms,
                    "server_time": iso_ms(event.server_time_ms),
                    "server_time_ms": event.server_time_ms,
                    "seq": event.seq,
                },
            )
        case IdentityChanged():
            return {
                "type": "identity_changed",
                "from": event.username,
                "device": event.device,
                "text": None,
                "sent_at": iso_ms(event.server_time_ms),
                "sent_at_ms": event.server_time_ms,
                "server_time": iso_ms(event.server_time_ms),
                "server_time_ms": event.server_time_ms,
            }
        case MessageStatusChanged():
            return {
                "type": "status",
                "peer": event.peer,
                "message_id": event.message_id,
                "status": event.status,
            }
        case SentByMe():
            return {
                "type": "sent",
                "to": event.destination,
                "text": event.text,
                "sent_at": iso_ms(event.sent_at_ms),
                "device": event.device,
                **({"file_name": event.file_name} if event.file_name is not None else {}),
                **cli_media.expiry_json(event.expires_at_ms),
            }
        case HistoryImported():
            return {"type": "history", "count": event.count}
        case DeviceRefused():
            return {
                "type": "device_refused",
                "username": event.username,
                "device": event.device_id,
                "reason": event.reason,
            }
        case GroupUpdated():
            return {
                "type": "group_update",
                "id": event.event_id,
                "group": event.group,
                "from": event.actor,
                "device": event.device,
                "action": event.action,
                "name": event.name,
                "targets": list(event.targets),
                "text": event.text,
                "sent_at": iso_ms(event.sent_at_ms),
                "sent_at_ms": event.sent_at_ms,
                "server_time": iso_ms(event.server_time_ms),
                "server_time_ms": event.server_time_ms,
            }
        case AttachmentReceived():
            return _in_group(event.group, cli_media.event_json(event))
        case TypingChanged() | TimerChanged():
            return cli_media.event_json(event)


def event_line(event: Event, group_names: Mapping[str, str] | None = None) -> str:
    """One line for a person. A group message or change names its group: by name when
    ``group_names`` (id -> name) knows it, else by the start of its id."""
    match event:
        case MessageReceived():
            where = _group_label(event.group, group_names)
            return f"{iso_ms(event.sent_at_ms)} {where}{event.from_}[{event.device}]: {event.text}"
        case UndecryptableMessage():
            return (
                f"{iso_ms(event.server_time_ms)} {_group_label(event.group, group_names)}"
                f"{event.from_}[{event.device}]: "
                f"(a message that could not be decrypted: {event.code.slug})"
            )
        case IdentityChanged():
            return (
                f"{iso_ms(event.server_time_ms)} {event.username}[{event.device}]: (the safety "
                f"number with {event.username} has changed; compare it with 'sealpost "
                f"safety-number {event.username}', then run 'sealpost trust {event.username}')"
            )
        case MessageStatusChanged():
            return f"{event.peer}: (message {event.message_id} {event.status})"
        case SentByMe():
            stamp = iso_ms(event.sent_at_ms)
            text = event.text
            if event.file_name is not None:
                text = f"(file {event.file_name!r}) {text}"
            return f"{stamp} me[{event.device}] to {event.destination}: {text}"
        case HistoryImported():
            count = event.count
            return f"(imported {count} message{'' if count == 1 else 's'} of history)"
        case DeviceRefused():
            return warning_text(event)
        case GroupUpdated():
            where = _group_label(event.group, group_names)
            return f"{iso_ms(event.sent_at_ms)} {where}({event.text})"
        case AttachmentReceived():
            line = cli_media.event_line(event)
            stamp, _, rest = line.partition(" ")
            return f"{stamp} {_group_label(event.group, group_names)}{rest}"
        case TypingChanged() | TimerChanged():
            return cli_media.event_line(event)


def _in_group(group: str | None, shape: dict[str, Any]) -> dict[str, Any]:
    """A message's --json object, with \"group\" (the id) for a group message."""
    if group is not None:
        shape["group"] = group
    return shape


def _group_label(group: str | None, names: Mapping[str, str] | None) -> str:
    if group is None:
        return ""
    name = (names or {}).get(group)
    return f"[{name or 'group ' + group[:8]}] "


def warning_text(event: DeviceRefused) -> str:
    return (
        f"warning: {event.username}'s device {event.device_id} is {event.reason}; not sending to it"
    )


def print_warning(event: Event) -> None:
    """Client.on_event for the commands: what happens outside receive() goes to stderr."""
    if isinstance(event, DeviceRefused):
        print(warning_text(event), file=sys.stderr, flush=True)


def print_error(code: str, message: str) -> None:
    one_line = " ".join(message.split())
    print(f"error: {code}: {one_line}", file=sys.stderr, flush=True)


# --- commands ---------------------------------------------------------------------------


def open_client(home: Path, server_url: str | None = None) -> Client:
    """The Client the commands use (tests replace this to run against a fake server)."""
    return Client(home, server_url=server_url)


def _client(home: Path, server_url: str | None = None) -> Client:
    client = open_client(home, server_url)
    client.on_event = print_warning
    return client


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def _registered_client(args: argparse.Namespace) -> Client:
    home = _home(args)
    hint = f"run 'sealpost --home {home} --server URL register USERNAME' first"
    if not store_path(home).exists():
        raise SealpostError(LocalErrorCode.NOT_REGISTERED, f"no account in {home}; {hint}")
    client = _client(home, args.server)
    if not client.registered:
        client.store.close()
        raise SealpostError(LocalErrorCode.NOT_REGISTERED, f"no account in {home}; {hint}")
    return client


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if env := os.environ.get(PASSWORD_ENV):
        return env
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    raise UsageError(f"register needs --password (or ${PASSWORD_ENV})")


async def _register(args: argparse.Namespace) -> int:
    server = args.server or os.environ.get(SERVER_ENV)
    if not server:
        raise UsageError(f"register needs --server URL (or ${SERVER_ENV})")
    password = _password(args)
    async with open_client(_home(args)) as client:
        await client.register(
            server,
            args.username,
            password,
            device_name=args.device_name,
            birth_date=args.birth_date,
            consents=args.consent,
        )
        print(f"registered {client.username} (device {client.device_id}) on {server}")
    return EXIT_OK


async def _accepted(sending: Awaitable[int], timeout: float) -> int:
    """The local id of a message the server accepted within ``timeout`` seconds; past that,
    an error (the message stays queued)."""
    try:
        return await asyncio.wait_for(sending, timeout)
    except TimeoutError:
        raise SealpostError(
            LocalErrorCode.UNREACHABLE,
            f"the server did not accept the message within {timeout:g} s; it stays "
            "queued and is sent on the next connection",
        ) from None


async def _send(args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    async with _registered_client(args) as client:
        message_id = await _accepted(client.send_text(args.username, text), args.timeout)
        print(f"sent message {message_id} to {args.username.strip().lower()}")
    return EXIT_OK


async def _receive(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        if args.no_receipts:
            client.send_receipts = False
        async for event in client.receive(wait=args.wait):
            if args.json:
                print(json.dumps(event_json(event), ensure_ascii=False), flush=True)
            else:
                names = {g.id_hex: g.name for g in client.groups.local_groups() if g.name}
                print(event_line(event, names), flush=True)
    return EXIT_OK


async def _read(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        count = await client.mark_read(args.username)
        name = args.username.strip().lower()
        print(f"marked {count} message{'' if count == 1 else 's'} from {name} read")
    return EXIT_OK


async def _receipts(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        if args.state is not None:
            client.set_receipts(args.state == "on")
        print(f"receipts are {'on' if client.receipts else 'off'}")
    return EXIT_OK


async def _safety_number(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        number = await client.safety_number(args.username)
    print(" ".join(number.groups()))
    print(number.qr_payload.hex())
    if args.qr:
        import segno  # only here: drawing is optional

        segno.make(number.qr_payload, mode="byte", error="m").terminal(compact=True)
    return EXIT_OK


async def _trust(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        client.trust(args.username, verified=args.verified)
        name = args.username.strip().lower()
        print(f"accepted {name}'s identity key" + (" as verified" if args.verified else ""))
    return EXIT_OK


def link_fingerprint(code: LinkCode) -> str:
    """Four groups of four hex digits of the link code, shown on both devices so that the
    user can tell the approving device is letting in the device in their hand."""
    digest = p.sha256(code.encode()).hex()[:16]
    return " ".join(digest[i : i + 4] for i in range(0, 16, 4))


async def _link(args: argparse.Namespace) -> int:
    server = args.server or os.environ.get(SERVER_ENV)
    if not server:
        raise UsageError(f"link needs --server URL (or ${SERVER_ENV})")
    home = _home(args)

    def show(code: LinkCode) -> None:
        print("On a device of your account, run:", flush=True)
        print(f"  sealpost approve-link {code.text()}", flush=True)
        print("Link code:", flush=True)
        print(code.text(), flush=True)
        print(f"Fingerprint: {link_fingerprint(code)}", flush=True)
        if not args.no_qr:
            import segno  # only here: drawing is optional

            segno.make(code.text(), mode="byte", error="m").terminal(compact=True)
        minutes = args.timeout / 60
        print(f"Waiting for the approval (up to {minutes:g} minutes)...", flush=True)

    async with _client(home) as client:
        linked = await client.link_new_device(
            server, show_code=show, device_name=args.name, timeout=args.timeout
        )
        print(f"linked as {linked.username} device {linked.device_id}", flush=True)
        if linked.history_follows:
            print("recent messages follow: run 'sealpost receive' to import them", flush=True)
    return EXIT_OK


def _confirm(question: str, yes: bool, what: str) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{what} asks for confirmation; without a terminal, pass --yes")
    print(question, end=" ", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


async def _approve_link(args: argparse.Namespace) -> int:
    try:
        code = LinkCode.parse(args.code)
    except ProtocolError as exc:
        raise SealpostError.from_protocol(exc, "the link code") from None
    async with _registered_client(args) as client:
        print(
            f"A new device asks to join {client.username}. Once linked it can read every new "
            f"message to and from {client.username}, and send as {client.username}.",
            flush=True,
        )
        print(f"Its link code's fingerprint: {link_fingerprint(code)}", flush=True)
        if args.history_bytes:
            print(f"It will get up to {args.history_bytes} bytes of recent messages.", flush=True)
        question = "Link it? Only say yes to a device you hold yourself. [y/N]"
        if not _confirm(question, args.yes, "approve-link"):
            print("not linked", flush=True)
            return EXIT_ERROR
        print("approved; waiting for the new device to register...", flush=True)
        approved = await client.approve_link(
            code, history_bytes=args.history_bytes, timeout=args.timeout
        )
        ids = ", ".join(str(device_id) for device_id in approved.device_ids)
        print(f"linked device {ids}", flush=True)
        if args.history_bytes:
            count = approved.history_messages
            print(
                f"sent {count} message{'' if count == 1 else 's'} of history "
                f"({approved.history_chunks} chunk{'' if approved.history_chunks == 1 else 's'})",
                flush=True,
            )
    return EXIT_OK


async def _devices(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        devices = await client.list_devices()
    for device in sorted(devices, key=lambda d: d.device_id):
        line = (
            f"{device.device_id}  {device.name}  created {device.created_at}  "
            f"last seen {device.last_seen_at or 'never'}"
        )
        print(line + ("  (this device)" if device.current else ""))
    return EXIT_OK


async def _revoke(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        own = args.device_id == client.device_id
        warning = (
            " This is THIS device: afterwards this home can no longer send or receive."
            if own
            else ""
        )
        question = f"Revoke device {args.device_id} of {client.username}?{warning} [y/N]"
        if not _confirm(question, args.yes, "revoke"):
            print("not revoked", flush=True)
            return EXIT_ERROR
        await client.revoke_device(args.device_id)
    print(f"revoked device {args.device_id}")
    if own:
        print(
            "that was this device: this home is no longer usable; link a new home with "
            "'sealpost link' to use this computer again"
        )
    return EXIT_OK


async def _rename(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name:
        raise UsageError("the device name is empty")
    async with _registered_client(args) as client:
        device = await client.rename_device(args.device_id, name)
    print(f"device {device.device_id} is now called {device.name}")
    return EXIT_OK


# --- groups -----------------------------------------------------------------------------


async def _group(args: argparse.Namespace) -> int:
    return await GROUP_COMMANDS[args.group_command](args)


def _group_name(client: Client, group_id: str) -> str:
    name = client.groups.local(group_id).name
    return f"“{name}” ({group_id})" if name else group_id


async def _group_create(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        group_id = await client.groups.create(args.name, args.users)
        others = [m.username for m in client.groups.local(group_id).members]
        others = [name for name in others if name != client.username]
        print(f"created group “{args.name.strip()}” with {', '.join(others) or 'nobody else'}")
        print(group_id)  # the last line: scripts read the id from here
    return EXIT_OK


async def _group_send(args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    async with _registered_client(args) as client:
        message_id = await _accepted(client.groups.send_text(args.group, text), args.timeout)
        print(f"sent message {message_id} to group {_group_name(client, args.group)}")
    return EXIT_OK


async def _group_add(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        added = await client.groups.add(args.group, args.users)
        where = _group_name(client, args.group)
        if added:
            print(f"added {', '.join(added)} to group {where}")
        else:
            print(f"nobody added: {', '.join(args.users)} already in group {where}")
    return EXIT_OK


async def _group_remove(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        await client.groups.remove(args.group, args.user)
        print(f"removed {args.user.strip().lower()} from group {_group_name(client, args.group)}")
    return EXIT_OK


async def _group_leave(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        await client.groups.leave(args.group)
        print(f"left group {_group_name(client, args.group)}")
    return EXIT_OK


async def _group_rename(args: argparse.Namespace) -> int:
    name = " ".join(args.name)
    async with _registered_client(args) as client:
        await client.groups.rename(args.group, name)
        print(f"renamed group {args.group} to “{name.strip()}”")
    return EXIT_OK


async def _group_admin(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        await client.groups.set_admin(args.group, args.user, not args.remove)
        user = args.user.strip().lower()
        what = "no longer an admin" if args.remove else "an admin"
        print(f"{user} is now {what} of group {_group_name(client, args.group)}")
    return EXIT_OK


async def _group_list(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        groups = client.groups.local_groups()
    if not groups:
        print("no groups yet")
    for group in groups:
        count = len(group.members)
        notes = [f"{count} member{'' if count == 1 else 's'}"]
        if group.admin and group.member:
            notes.append("admin")
        if not group.member:
            notes.append("left")
        print(f"{group.id_hex}  {group.name or '(no name yet)'}  ({', '.join(notes)})")
    return EXIT_OK


async def _group_show(args: argparse.Namespace) -> int:
    async with _registered_client(args) as client:
        info = await client.groups.fetch(args.group)
        local = client.groups.local(info.group_id)
    print(f"group {info.id_hex}")
    print(f"name: {local.name or '(no name yet)'}")
    print(f"members ({len(info.members)}):")
    for member in info.members:
        print(f"  {member.username}" + ("  (admin)" if member.admin else ""))
    print(f"admins: {', '.join(info.admins)}")
    print(f"devices: {len(info.devices)}  roster version: {info.roster_version}")
    return EXIT_OK


GROUP_COMMANDS = {
    "create": _group_create,
    "send": _group_send,
    "send-file": cli_media.group_send_file,
    "add": _group_add,
    "remove": _group_remove,
    "leave": _group_leave,
    "rename": _group_rename,
    "admin": _group_admin,
    "list": _group_list,
    "show": _group_show,
}


COMMANDS = {
    "register": _register,
    "send": _send,
    "receive": _receive,
    "read": _read,
    "receipts": _receipts,
    "safety-number": _safety_number,
    "trust": _trust,
    "link": _link,
    "approve-link": _approve_link,
    "devices": _devices,
    "revoke": _revoke,
    "rename": _rename,
    "group": _group,
    **cli_media.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print_error("usage", f"{exc} (see 'sealpost --help')")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(name)s: %(message)s",
    )
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except UsageError as exc:
        print_error("usage", f"{exc} (see 'sealpost --help')")
        return EXIT_USAGE
    except SealpostError as exc:
        print_error(exc.slug, exc.message)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
