"""Disappearing messages in the client (docs/protocol.md, sections 17.3 and 17.4).

A conversation has a timer (0: off), set by either side with a TIMER content and kept in
the store (``conversation_timers``). While it is set, every text or attachment goes out as
EXPIRING(timer, inner) in a SEND with the EXPIRES flag and ``ttl_seconds`` = timer, so the
relay drops its copy by then whether it was delivered or not. Each side deletes the
message on its own clock: the sender ``timer`` seconds after sending it, the receiver
``timer`` seconds after it arrived (a command-line client shows what it receives at once).

What is deleted, and what never is: an expired message's row, its attachment row, any send
of it still in the outbox, and the file *we* saved for it under ``<home>/downloads/``. A
file the user sent is theirs and is never deleted, and no path outside the downloads
directory is ever unlinked, whatever the store says.

This module holds the pure parts (wrapping and unwrapping contents, the SEND flags) and
the file deletion; ``Client`` calls them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from protocol.content import (
    Attachment,
    Content,
    Expiring,
    SentContent,
    SentTranscript,
    Text,
    TimerUpdate,
)
from protocol.frames import SendFlags

log = logging.getLogger(__name__)


def wrap(inner: Text | Attachment, timer_seconds: int) -> Text | Attachment | Expiring:
    """What goes to the conversation partner: EXPIRING(timer, inner) while a timer is set."""
    if timer_seconds <= 0:
        return inner
    return Expiring(timer_seconds, inner, inner.sent_at_ms)


def transcript(
    destination: str, content: Text | Attachment | Expiring | TimerUpdate
) -> SentTranscript | SentContent:
    """The copy for our own other devices: SENT for a plain text, SENT_CONTENT otherwise."""
    if isinstance(content, Text):
        return SentTranscript(destination, content.body, content.sent_at_ms)
    return SentContent(destination, content, content.sent_at_ms)


def unwrap(content: Content) -> tuple[Content, int]:
    """Take the EXPIRING layer off (also inside a SENT_CONTENT): the content to process as
    if it had none, and its timer (0: not a disappearing message). A SENT_CONTENT of an
    expiring text becomes the SENT transcript of that text."""
    match content:
        case Expiring(timer_seconds=timer, inner=inner):
            return inner, timer
        case SentContent(destination=destination, inner=Expiring(timer_seconds=timer, inner=inner)):
            if isinstance(inner, Text):
                return SentTranscript(destination, inner.body, content.sent_at_ms), timer
            return SentContent(destination, inner, content.sent_at_ms), timer
    return content, 0


def send_flags(timer_seconds: int) -> tuple[SendFlags, int | None]:
    """The SEND flags and ttl_seconds for a message sent under ``timer_seconds``."""
    if timer_seconds <= 0:
        return SendFlags.NONE, None
    return SendFlags.EXPIRES, timer_seconds


def expires_at(start_ms: int, timer_seconds: int) -> int:
    return start_ms + timer_seconds * 1000


def delete_saved_files(paths: Iterable[str], downloads: Path) -> int:
    """Unlink the files of expired attachments; only ever inside ``downloads``. Returns how
    many were deleted (a file the user already removed is no error)."""
    root = downloads.resolve()
    deleted = 0
    for raw in paths:
        path = Path(raw)
        try:
            inside = path.resolve().is_relative_to(root) and path.parent.resolve() == root
        except OSError:
            inside = False
        if not inside:
            log.warning("not deleting %s: it is not in %s", path, root)
            continue
        try:
            os.unlink(path)
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete the expired file %s: %s", path, exc)
    return deleted
