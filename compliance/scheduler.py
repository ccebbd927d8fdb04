"""The retention purge's schedule inside the deployment: one daemon thread per server process.

Why a thread started from ``AppConfig.ready()``: Daphne implements no ASGI lifespan
events, so an asyncio task has no start-up hook to hang on short of wrapping the ASGI
application, and a task in Daphne's event loop would have to hand every batch to a thread
anyway (the ORM is synchronous). A daemon thread needs no hook, runs the same code as
``manage.py purge_expired``, and dies with the process.

When it runs (``PURGE_SCHEDULER``): ``auto`` (the default) starts it only in a server
process, that is Daphne, or ``manage.py runserver`` in the child that serves (the
autoreloader's parent only watches files); never in tests or other management commands.
``on`` starts it in every process that sets Django up, ``off`` in none (run
``manage.py purge_expired`` from cron instead).

Every ``PURGE_INTERVAL_SECONDS`` (600 by default, at most 3600): the first run is at start,
so an expired row outlives its deadline by at most one interval plus one run. Several
Daphne processes each run the loop; the deletes are idempotent (a row deleted by one is
simply not found by the other), so that costs only duplicate queries.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from django.db import connections

logger = logging.getLogger(__name__)

THREAD_NAME = "sealpost-purge"


def is_server_process(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether this process serves requests: Daphne, or runserver's serving child."""
    if not argv:
        return False
    program = Path(argv[0])
    if program.name == "daphne" or (
        program.name == "__main__.py" and program.parent.name == "daphne"
    ):
        return True
    if len(argv) > 1 and argv[1] == "runserver":
        return environ.get("RUN_MAIN") == "true" or "--noreload" in argv
    return False


def should_start(mode: str, argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    if mode == "on":
        return True
    if mode == "off":
        return False
    return is_server_process(argv, environ)


def run_once(purge: Callable[[], Mapping[str, int]]) -> Mapping[str, int] | None:
    """One purge run; errors are logged, never raised (the next run tries again)."""
    try:
        counts = purge()
    except Exception:
        logger.exception("retention purge failed; retrying at the next interval")
        return None
    finally:
        # This thread's connections: never left open (or broken) between runs.
        connections.close_all()
    deleted = {kind: count for kind, count in counts.items() if count}
    if deleted:
        logger.info(
            "retention purge deleted %s",
            " ".join(f"{kind}={count}" for kind, count in deleted.items()),
        )
    return counts


def run_loop(
    stop: threading.Event, interval: float, purge: Callable[[], Mapping[str, int]]
) -> None:
    """Purge now, then every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        run_once(purge)
        stop.wait(interval)


class PurgeScheduler:
    def __init__(self, interval: float, purge: Callable[[], Mapping[str, int]]) -> None:
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=run_loop, args=(self.stop_event, interval, purge), name=THREAD_NAME, daemon=True
        )

    def start(self) -> PurgeScheduler:
        self.thread.start()
        logger.info("retention purge scheduled every %s s", self.interval)
        return self

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        self.thread.join(timeout)


_started: PurgeScheduler | None = None
_lock = threading.Lock()


def start_if_configured(
    mode: str,
    interval: float,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PurgeScheduler | None:
    """Start the one scheduler of this process if ``mode`` says so (see the module doc)."""
    global _started
    if not should_start(
        mode, sys.argv if argv is None else argv, os.environ if environ is None else environ
    ):
        return None
    from compliance.services import purge_expired

    with _lock:
        if _started is None:
            _started = PurgeScheduler(interval, purge_expired).start()
        return _started
