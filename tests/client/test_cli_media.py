"""The CLI's side of files, typing and timers: argument parsing, --json shapes, progress."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from client import cli, cli_media
from client.core import AttachmentReceived, MessageReceived, TimerChanged, TypingChanged
from protocol.errors import ErrorCode


def test_timer_values() -> None:
    assert [cli_media._timer_value(v) for v in ("off", "0", "30", "10m", "2h", "7d")] == [
        0,
        0,
        30,
        600,
        7200,
        604800,
    ]
    for bad in ("soon", "-5", "400d"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_media._timer_value(bad)


def test_the_commands_parse() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["send-file", "bob", "a.txt", "--caption", "hi", "--voice"])
    assert (args.command, args.username, args.path, args.caption, args.voice) == (
        "send-file",
        "bob",
        Path("a.txt"),
        "hi",
        True,
    )
    assert parser.parse_args(["timer", "bob", "off"]).seconds == 0
    assert parser.parse_args(["timer", "bob"]).seconds is None
    assert parser.parse_args(["typing", "off"]).state == "off"
    assert parser.parse_args(["send-typing", "bob", "--stop", "--home", "x"]).stop is True


def test_json_of_the_new_events() -> None:
    saved = AttachmentReceived(
        "alice", 1, 7, "a.pdf", "application/pdf", 10, "cap", False, Path("/h/downloads/a.pdf"),
        None, 1_795_000_000_000, 1_795_000_000_100, 1_795_000_060_000,
    )  # fmt: skip
    shape = cli.event_json(saved)
    assert shape["type"] == "attachment" and shape["code"] is None and shape["text"] == "cap"
    assert shape["attachment"] == {
        "path": "/h/downloads/a.pdf",
        "size": 10,
        "content_type": "application/pdf",
        "file_name": "a.pdf",
        "voice": False,
    }
    assert shape["expires_at"] == "2026-11-18T11:07:40.000Z"
    failed = AttachmentReceived(
        "alice", 1, 8, "a.pdf", "application/pdf", 10, "", False, None,
        ErrorCode.DECRYPT_FAILED, 1_795_000_000_000, None,
    )  # fmt: skip
    assert cli.event_json(failed)["code"] == "decrypt_failed"
    assert "could not be saved: decrypt_failed" in cli.event_line(failed)
    assert "expires_at" not in cli.event_json(failed)
    typing = cli.event_json(TypingChanged("bob", 2, True, 1_795_000_000_000))
    assert (typing["type"], typing["from"], typing["started"]) == ("typing", "bob", True)
    timer = cli.event_json(TimerChanged("bob", "alice", 3600, 1_795_000_000_000, 9))
    assert (timer["type"], timer["peer"], timer["from"], timer["timer_seconds"]) == (
        "timer",
        "bob",
        "alice",
        3600,
    )
    assert "disappearing messages after 1h" in cli.event_line(
        TimerChanged("bob", "alice", 3600, 1_795_000_000_000, 9)
    )
    text = MessageReceived("bob", 1, "hi", 1, 2, 3, 4, expires_at_ms=1_795_000_000_000)
    assert cli.event_json(text)["expires_at_ms"] == 1_795_000_000_000
    assert "expires_at" not in cli.event_json(MessageReceived("bob", 1, "hi", 1, 2, 3, 4))


def test_progress_without_a_terminal_is_a_few_plain_lines() -> None:
    stream = io.StringIO()
    ticks = iter(float(i) for i in range(100))
    bar = cli_media.ProgressBar(stream, "uploading x", clock=lambda: next(ticks))
    for done in range(0, 10_000_001, 1_000_000):
        bar(done, 10_000_000)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["0%", "30%", "50%", "80%", "100%"]
    assert lines[-1].startswith("uploading x: 100% (10.0 MB of 10.0 MB, ")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_redrawn_bar() -> None:
    stream = _Tty()
    ticks = iter(float(i) for i in range(100))
    bar = cli_media.ProgressBar(stream, "up", clock=lambda: next(ticks))
    bar(500_000, 1_000_000)
    bar(1_000_000, 1_000_000)
    bar.close()
    out = stream.getvalue()
    assert out.count("\r") == 2 and out.endswith("\n")
    assert "[###############...............]  50%" in out and "100%" in out
