"""Usernames: the one account identifier users type, shared by the server and clients."""

from __future__ import annotations

import re

from .errors import ErrorCode, ProtocolError

USERNAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{2,31}")
USERNAME_RULE = "3 to 32 characters: a lower-case letter, then lower-case letters, digits or _"


def normalize_username(name: str) -> str:
    """Lower-case a username and check it; raises INVALID_USERNAME naming the rule."""
    candidate = name.strip(" \t\r\n")
    # ASCII first: str.lower() maps some non-ASCII letters (the Kelvin sign) to ASCII ones,
    # which another implementation's lower-casing might not do.
    candidate = candidate.lower() if candidate.isascii() else candidate
    if not USERNAME_PATTERN.fullmatch(candidate):
        raise ProtocolError(
            ErrorCode.INVALID_USERNAME, f"username {name[:40]!r} is not {USERNAME_RULE}"
        )
    return candidate


def check_username(name: str) -> str:
    """Accept only an already-normalised username (what travels on the wire)."""
    if not USERNAME_PATTERN.fullmatch(name):
        raise ProtocolError(
            ErrorCode.INVALID_USERNAME, f"username {name[:40]!r} is not {USERNAME_RULE}"
        )
    return name
