"""An invalid policy stops every entry point (manage.py check and migrate, Daphne) at once,
with one line on stderr naming the file and field; a valid one starts."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.compliance.helpers import put, write_region

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIMEOUT = 60


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REGION", "POLICY_DIR", "ENVELOPE_TTL_SECONDS", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        SECRET_KEY="x" * 50,
        DEPLOYMENT_SIGNING_KEY=base64.b64encode(bytes(range(32))).decode(),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def _broken(tmp_path: Path) -> tuple[Path, str]:
    def change(doc: dict[str, Any]) -> None:
        put(doc, "retention.connection_logs", minimum="200d", maximum="30d")

    policies = tmp_path / "regions"
    path = write_region(policies, "broken", change=change)
    return policies, f"{path}: retention.connection_logs: minimum 200d is above maximum 30d"


COMMANDS = {
    "check": [str(BIN / "python"), "manage.py", "check"],
    "migrate": [str(BIN / "python"), "manage.py", "migrate", "--noinput"],
    "daphne": [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", "0", "project.asgi:application"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_invalid_policy_stops_each_entry_point_with_one_line(
    tmp_path: Path, command: str
) -> None:
    policies, line = _broken(tmp_path)

    result = _run(COMMANDS[command], _env(tmp_path, REGION="broken", POLICY_DIR=str(policies)))

    assert result.returncode == 1
    assert result.stderr == line + "\n"
    assert not (tmp_path / "db.sqlite3").exists()  # nothing ran


def test_an_unknown_region_lists_the_known_ones(tmp_path: Path) -> None:
    policies, _ = _broken(tmp_path)

    result = _run(COMMANDS["check"], _env(tmp_path, REGION="mars", POLICY_DIR=str(policies)))

    assert result.returncode == 1
    assert result.stderr == (
        f"REGION: no policy for region 'mars' in {policies} (known regions: broken)\n"
    )


def test_an_envelope_ttl_outside_the_policy_stops_the_server(tmp_path: Path) -> None:
    result = _run(COMMANDS["check"], _env(tmp_path, REGION="br", ENVELOPE_TTL_SECONDS="60"))

    assert result.returncode == 1
    assert result.stderr == (
        "deploy/regions/br.yaml: retention.undelivered_envelopes: ENVELOPE_TTL_SECONDS=60 is "
        "outside this policy's [1d, 30d] = [86400, 2592000] s\n"
    )


def test_a_bad_signing_key_stops_the_server(tmp_path: Path) -> None:
    result = _run(COMMANDS["check"], _env(tmp_path, DEPLOYMENT_SIGNING_KEY="c2hvcnQ="))

    assert result.returncode == 1
    assert result.stderr == ("DEPLOYMENT_SIGNING_KEY: must be 32 bytes (an Ed25519 seed), got 5\n")


@pytest.mark.parametrize("region", ["eu", "us-ca", "br", "in", "sg"])
def test_each_shipped_region_passes_the_checks(tmp_path: Path, region: str) -> None:
    result = _run(COMMANDS["check"], _env(tmp_path, REGION=region))

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
