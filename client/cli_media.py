"""The ``sealpost`` commands for files, typing and disappearing messages (``client.cli``
registers them):

    sealpost send-file USERNAME PATH [--caption TEXT] [--voice] [--content-type TYPE]
    sealpost group send-file GROUP PATH [--caption TEXT] [--voice] [--content-type TYPE]
    sealpost timer USERNAME [SECONDS|off]
    sealpost typing [on|off]
    sealpost send-typing USERNAME [--stop]

``send-file`` shows the upload's progress on stderr: a bar (percent, bytes, rate) when
stderr is a terminal, else a line at each quarter. ``receive`` saves files under
``DIR/downloads/`` (DIR: the home) and prints where (``--json``: ``{"type":
"attachment", ..., "attachment": {"path", "size", "content_type", "file_name", "voice"},
"code"}``, ``code`` null or why nothing was saved, e.g. ``decrypt_failed``). ``timer``
sets the conversation's disappearing-messages timer (``off`` or 0 turns it off; without a
value it shows it); ``receive`` prints timer changes (``{"type": "timer", ...}``) and
gives a disappearing message's ``"expires_at"``. ``typing on|off`` is the stored setting
(off: none sent, none shown); ``send-typing`` sends one indicator, which only a device
connected at that moment sees (``{"type": "typing", "from", "device", "started"}``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from protocol.limits import MAX_TTL_SECONDS

from . import cli
from .core import AttachmentReceived, TimerChanged, TypingChanged
from .errors import LocalErrorCode, SealpostError

UPLOAD_TIMEOUT = 3600.0
BAR_WIDTH = 30
REDRAW_SECONDS = 0.1

MediaEvent = AttachmentReceived | TypingChanged | TimerChanged


def _timer_value(value: str) -> int:
    """SECONDS, or with a unit (30s, 10m, 2h, 7d), or "off" (0)."""
    text = value.strip().lower()
    if text == "off":
        return 0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    factor = units.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in units else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not SECONDS (e.g. 30, 10m, 1d) or off")
    seconds = int(digits) * factor
    if seconds > MAX_TTL_SECONDS:
        raise argparse.ArgumentTypeError(f"{value!r} is above {MAX_TTL_SECONDS} seconds")
    return seconds


def add_commands(
    commands: Any, add_globals: Callable[[argparse.ArgumentParser, Any], None]
) -> None:
    """Register the commands on ``commands`` (the parser's subparsers)."""
    send_file = add_send_file(commands, "send-file", "send a file (end-to-end encrypted)")

    timer = commands.add_parser(
        "timer", help="show or set the disappearing-messages timer of a conversation"
    )
    timer.add_argument("username", metavar="USERNAME")
    timer.add_argument(
        "seconds",
        metavar="SECONDS|off",
        nargs="?",
        type=_timer_value,
        help="30, 10m, 2h, 7d, or off",
    )

    typing = commands.add_parser(
        "typing", help="show, or turn on or off, typing indicators (sent and shown)"
    )
    typing.add_argument("state", metavar="on|off", nargs="?", choices=("on", "off"))

    send_typing = commands.add_parser(
        "send-typing", help="tell someone you are typing (only their connected devices see it)"
    )
    send_typing.add_argument("username", metavar="USERNAME")
    send_typing.add_argument("--stop", action="store_true", help="say you stopped typing")

    for sub in (send_file, timer, typing, send_typing):
        add_globals(sub, argparse.SUPPRESS)


def add_send_file(
    commands: Any, name: str, help_text: str, to: str = "USERNAME"
) -> argparse.ArgumentParser:
    """A send-file command on ``commands``: to a person (``send-file``) or, with ``to``
    "GROUP", to a group (``group send-file``)."""
    send_file: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    send_file.add_argument(to.lower(), metavar=to)
    send_file.add_argument("path", metavar="PATH", type=Path)
    send_file.add_argument("--caption", default="", metavar="TEXT", help="a caption")
    send_file.add_argument("--voice", action="store_true", help="mark it as a voice message")
    send_file.add_argument(
        "--content-type", metavar="TYPE", help="MIME type (default: guessed from the name)"
    )
    send_file.add_argument(
        "--timeout",
        type=cli._seconds,
        default=UPLOAD_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after SECONDS (default {UPLOAD_TIMEOUT:g})",
    )
    return send_file


# --- output -----------------------------------------------------------------------------


def _expiry(expires_at_ms: int | None) -> dict[str, Any]:
    if expires_at_ms is None:
        return {}
    return {"expires_at": cli.iso_ms(expires_at_ms), "expires_at_ms": expires_at_ms}


def expiry_json(expires_at_ms: int | None) -> dict[str, Any]:
    """``"expires_at"`` (and ``_ms``) for a disappearing message; nothing for others."""
    return _expiry(expires_at_ms)


def event_json(event: MediaEvent) -> dict[str, Any]:
    match event:
        case AttachmentReceived():
            server_time = event.server_time_ms or event.sent_at_ms
            return {
                "type": "attachment",
                "id": event.message_id,
                "from": event.from_,
                "device": event.device,
                "text": event.caption,
                "attachment": {
                    "path": None if event.path is None else str(event.path),
                    "size": event.size,
                    "content_type": event.content_type,
                    "file_name": event.file_name,
                    "voice": event.voice,
                },
                "code": None if event.code is None else event.code.slug,
                "sent_at": cli.iso_ms(event.sent_at_ms),
                "sent_at_ms": event.sent_at_ms,
                "server_time": cli.iso_ms(server_time),
                "server_time_ms": server_time,
                **_expiry(event.expires_at_ms),
            }
        case TypingChanged():
            return {
                "type": "typing",
                "from": event.from_,
                "device": event.device,
                "started": event.started,
                "sent_at": cli.iso_ms(event.sent_at_ms),
            }
        case TimerChanged():
            return {
                "type": "timer",
                "id": event.message_id,
                "peer": event.peer,
                "from": event.by,
                "timer_seconds": event.timer_seconds,
                "sent_at": cli.iso_ms(event.sent_at_ms),
            }


def event_line(event: MediaEvent) -> str:
    match event:
        case AttachmentReceived():
            stamp = cli.iso_ms(event.sent_at_ms)
            what = "voice message" if event.voice else "file"
            caption = f" {event.caption}" if event.caption else ""
            if event.path is None:
                slug = event.code.slug if event.code is not None else "failed"
                return (
                    f"{stamp} {event.from_}[{event.device}]: ({what} {event.file_name!r} could "
                    f"not be saved: {slug}){caption}"
                )
            return (
                f"{stamp} {event.from_}[{event.device}]: ({what} {event.file_name!r}, "
                f"{_size(event.size)}, {event.content_type}, saved as {event.path}){caption}"
            )
        case TypingChanged():
            doing = "is typing..." if event.started else "stopped typing"
            return f"{event.from_}[{event.device}] {doing}"
        case TimerChanged():
            return f"{cli.iso_ms(event.sent_at_ms)} {event.by}: {timer_text(event.timer_seconds)}"


def timer_text(seconds: int) -> str:
    if seconds == 0:
        return "disappearing messages are off"
    return f"disappearing messages after {_duration(seconds)}"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


class ProgressBar:
    """Upload progress on ``stream``: a redrawn bar on a terminal, else a plain line at
    each quarter (so a log stays short)."""

    def __init__(self, stream: TextIO, label: str, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self._clock = clock
        self._started = clock()
        self._drawn = 0.0
        self._quarter = -1
        self._last = 0

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        self._last = done
        elapsed = max(now - self._started, 1e-6)
        percent = 100 * done // total if total else 100
        rate = f"{_size(done / elapsed)}/s"
        if self.tty:
            if done < total and now - self._drawn < REDRAW_SECONDS:
                return
            self._drawn = now
            filled = BAR_WIDTH * done // total if total else BAR_WIDTH
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {percent:3d}% {_size(done)} of {_size(total)} {rate}  "
            )
            self.stream.flush()
            return
        quarter = percent // 25
        if quarter > self._quarter:
            self._quarter = quarter
            print(
                f"{self.label}: {percent}% ({_size(done)} of {_size(total)}, {rate})",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


# --- commands ---------------------------------------------------------------------------


async def _send_file(args: argparse.Namespace) -> int:
    return await _upload_and_send(args, group=False)


async def group_send_file(args: argparse.Namespace) -> int:
    """``sealpost group send-file GROUP PATH``."""
    return await _upload_and_send(args, group=True)


async def _upload_and_send(args: argparse.Namespace, *, group: bool) -> int:
    source: Path = args.path
    if not source.is_file():
        raise cli.UsageError(f"{source} is not a file")
    async with cli._registered_client(args) as client:
        bar = ProgressBar(sys.stderr, f"uploading {source.name}")
        options: dict[str, Any] = {
            "content_type": args.content_type,
            "voice": args.voice,
            "caption": args.caption,
            "progress": bar,
        }
        try:
            message_id = await asyncio.wait_for(
                client.groups.send_file(args.group, source, **options)
                if group
                else client.send_file(args.username, source, **options),
                args.timeout,
            )
        except TimeoutError:
            raise SealpostError(
                LocalErrorCode.UNREACHABLE, f"the file was not sent within {args.timeout:g} s"
            ) from None
        finally:
            bar.close()
        if group:
            to = f"group {cli._group_name(client, args.group)}"
        else:
            to = args.username.strip().lower()
        size = _size(source.stat().st_size)
        print(f"sent file {source.name} ({size}) as message {message_id} to {to}")
    return cli.EXIT_OK


async def _timer(args: argparse.Namespace) -> int:
    name = args.username.strip().lower()
    async with cli._registered_client(args) as client:
        if args.seconds is not None:
            await client.set_timer(args.username, args.seconds)
        print(f"{name}: {timer_text(client.timer(args.username))}")
    return cli.EXIT_OK


async def _typing(args: argparse.Namespace) -> int:
    async with cli._registered_client(args) as client:
        if args.state is not None:
            client.set_typing(args.state == "on")
        print(f"typing indicators are {'on' if client.typing else 'off'}")
    return cli.EXIT_OK


async def _send_typing(args: argparse.Namespace) -> int:
    async with cli._registered_client(args) as client:
        if not client.typing:
            print("typing indicators are off ('sealpost typing on' to send them)")
            return cli.EXIT_OK
        sent = await client.send_typing(args.username, started=not args.stop)
        name = args.username.strip().lower()
        what = "stopped typing" if args.stop else "typing"
        print(f"told {name}: {what}" if sent else f"{name} has no device to tell (no session)")
    return cli.EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "send-file": _send_file,
    "timer": _timer,
    "typing": _typing,
    "send-typing": _send_typing,
}
