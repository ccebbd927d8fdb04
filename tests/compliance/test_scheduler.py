"""The purge runs inside the server on its interval, survives a failing run, and stays out
of tests and management commands."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from compliance import scheduler
from compliance.services import purge_expired
from harness.live_server import ROOT, LiveServer
from messaging.models import Envelope
from tests.server.relay_helpers import expire_all, make_device, queue_envelopes


@pytest.mark.parametrize(
    ("argv", "environ", "serves"),
    [
        (["/srv/.venv/bin/daphne", "-b", "127.0.0.1", "project.asgi:application"], {}, True),
        (["/usr/lib/python3/site-packages/daphne/__main__.py", "project.asgi:app"], {}, True),
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, True),  # the reloader's child
        (["manage.py", "runserver"], {}, False),  # the reloader itself
        (["manage.py", "runserver", "--noreload"], {}, True),
        (["manage.py", "migrate"], {}, False),
        (["manage.py", "purge_expired"], {}, False),
        (["/srv/.venv/bin/pytest", "tests"], {}, False),
        ([], {}, False),
    ],
)
def test_auto_starts_only_in_a_serving_process(
    argv: list[str], environ: dict[str, str], serves: bool
) -> None:
    assert scheduler.should_start("auto", argv, environ) is serves
    assert scheduler.should_start("on", argv, environ) is True
    assert scheduler.should_start("off", argv, environ) is False


def test_it_does_not_run_during_tests() -> None:
    assert all(thread.name != scheduler.THREAD_NAME for thread in threading.enumerate())


def test_the_loop_purges_at_once_and_then_every_interval() -> None:
    stop = threading.Event()
    runs: list[float] = []

    def purge() -> Mapping[str, int]:
        runs.append(time.monotonic())
        if len(runs) == 4:
            stop.set()
        return {"envelopes": 0}

    started = time.monotonic()
    scheduler.run_loop(stop, 0.05, purge)

    assert len(runs) == 4
    assert runs[0] - started < 0.05  # the first run does not wait
    gaps = [later - earlier for earlier, later in zip(runs, runs[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps), gaps


def test_a_failing_run_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    runs = 0

    def purge() -> Mapping[str, int]:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("database is locked")
        stop.set()
        return {"envelopes": 3}

    with caplog.at_level(logging.INFO, logger="compliance.scheduler"):
        scheduler.run_loop(stop, 0.01, purge)

    assert runs == 2
    messages = [record.getMessage() for record in caplog.records]
    assert "retention purge failed; retrying at the next interval" in messages
    assert "retention purge deleted envelopes=3" in messages


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_thread_purges_expired_envelopes() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    queue_envelopes(alice, bob, [b"old", b"older"])
    expire_all(bob)
    queue_envelopes(alice, bob, [b"fresh"])
    purger = scheduler.PurgeScheduler(0.05, purge_expired).start()
    try:
        deadline = time.monotonic() + 10
        while Envelope.objects.count() > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        purger.stop(timeout=5)

    assert not purger.thread.is_alive()
    assert list(Envelope.objects.values_list("seq", flat=True)) == [3]


SEED_EXPIRED_ENVELOPE = """
import django
django.setup()
from tests.server.relay_helpers import expire_all, make_device, queue_envelopes
alice, bob = make_device("alice"), make_device("bob")
queue_envelopes(alice, bob, [b"expired"])
expire_all(bob)
queue_envelopes(alice, bob, [b"fresh"])
"""


@pytest.mark.e2e
def test_daphne_runs_the_purge_on_its_interval(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seed = base64.b64encode(bytes(32)).decode()
    server = LiveServer(
        tmp_path, extra_env={"PURGE_INTERVAL_SECONDS": "1", "DEPLOYMENT_SIGNING_KEY": seed}
    )
    request.addfinalizer(server.cleanup)
    server.migrate()
    subprocess.run(
        [sys.executable, "-c", SEED_EXPIRED_ENVELOPE],
        cwd=ROOT,
        env={**server.env, "DJANGO_SETTINGS_MODULE": "project.settings"},
        check=True,
    )

    def envelopes() -> int:
        ((count,),) = server.query("SELECT COUNT(*) FROM messaging_envelope")
        return int(count)

    assert envelopes() == 2
    server.start()
    try:
        deadline = time.monotonic() + 15
        while envelopes() > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.stop()
    log = server.log_text()

    assert envelopes() == 1
    assert "retention purge scheduled every 1 s" in log
    assert "retention purge deleted envelopes=1" in log
    assert "retention purge failed" not in log
