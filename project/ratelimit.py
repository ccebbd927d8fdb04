"""Counters and locks for rate limits, kept in Django's cache (settings.CACHES).

Why the cache and not the database: a counter is written on every attempt, including the
attempts of an attacker, and must not cost a write transaction (SQLite has one writer).
With ``REDIS_URL`` every server process shares one Redis, so a limit holds across
processes; ``cache.incr`` is Redis's INCR there, atomic under concurrency. The embedded
default runs one process, whose in-memory cache (also locked) is then enough.

Fixed windows: a counter's key carries the window number (``int(now // window)``), so it
starts from zero when the window turns and its cache entry expires with it. A client can
make up to twice the limit across a window boundary; the limits here are set with that
in mind. A lock is an entry holding the time it ends, with the same expiry.

Keys hold a SHA-256 of the subject (a username, an address, a device pk), not the subject
itself: the cache (Redis, a memory dump) never holds a list of who tried to log in from
where.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


@dataclass(frozen=True, slots=True)
class Count:
    """A fixed-window counter after one hit: the count so far and the seconds until the
    window ends (what ``Retry-After`` says when the count is over the limit)."""

    count: int
    resets_in: int


def subject(*parts: object) -> str:
    """A short, stable, non-reversible cache-key part for ``parts``."""
    joined = "\x00".join(str(part) for part in parts)
    return hashlib.sha256(joined.encode("utf-8", errors="replace")).hexdigest()[:32]


def _bump(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout=timeout)
    try:
        return int(cache.incr(key))
    except ValueError:  # evicted (or expired) between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1


def hit(name: str, who: str, window_seconds: int, *, now: float | None = None) -> Count:
    """Count one event of kind ``name`` for ``who`` in the current window."""
    now = time.time() if now is None else now
    window = int(now // window_seconds)
    count = _bump(f"rl.{name}.{window}.{who}", window_seconds * 2)
    resets_in = max(1, math.ceil((window + 1) * window_seconds - now))
    return Count(count, resets_in)


def counter(name: str, who: str, memory_seconds: int) -> int:
    """Count one event in a counter that lives ``memory_seconds`` from its first event
    (not a window: it forgets everything at once when it expires)."""
    return _bump(f"rl.{name}.{who}", memory_seconds)


def peek_counter(name: str, who: str) -> int:
    return int(cache.get(f"rl.{name}.{who}", 0))


def forget(name: str, who: str) -> None:
    cache.delete(f"rl.{name}.{who}")


def lock(name: str, who: str, seconds: int, *, now: float | None = None) -> None:
    """Lock ``who`` out of ``name`` for ``seconds`` (replacing a shorter or longer lock)."""
    now = time.time() if now is None else now
    cache.set(f"rl.lock.{name}.{who}", now + seconds, timeout=seconds)


def locked_for(name: str, who: str, *, now: float | None = None) -> int:
    """Whole seconds left on ``who``'s lock for ``name``; 0 when not locked."""
    until = cache.get(f"rl.lock.{name}.{who}")
    if until is None:
        return 0
    now = time.time() if now is None else now
    return max(0, math.ceil(float(until) - now))


def unlock(name: str, who: str) -> None:
    cache.delete(f"rl.lock.{name}.{who}")


def mark(name: str, who: str, seconds: int) -> None:
    """Remember a fact about ``who`` for ``seconds`` (an address that logged in)."""
    cache.set(f"rl.mark.{name}.{who}", 1, timeout=seconds)


def marked(name: str, who: str) -> bool:
    return cache.get(f"rl.mark.{name}.{who}") is not None


def client_address(request: HttpRequest) -> str:
    """The client's IP address. Behind ``NUM_PROXIES`` trusted proxies (settings) it is
    the entry that the outermost of them appended to X-Forwarded-For; a client can put
    anything in front of that entry, so nothing before it is believed."""
    remote = str(request.META.get("REMOTE_ADDR") or "")
    proxies = int(settings.SEALPOST.get("NUM_PROXIES", 0))
    if proxies <= 0:
        return remote
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR") or "")
    hops = [part.strip() for part in forwarded.split(",") if part.strip()]
    if not hops:
        return remote
    return hops[-min(proxies, len(hops))]
