"""Run a real Daphne process of Sealpost on a free loopback port.

Each ``LiveServer`` gets its own SQLite file (or the DATABASE_URL/REDIS_URL it is given),
its own secret key and a log file, so tests can read exactly what the server logged and
what it stored. ``restart()`` stops the process (SIGTERM, or SIGKILL with ``crash=True``)
and starts a new one on the same port and database.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        database_url: str | None = None,
        redis_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        name: str = "server",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.name = name
        self.db_path = self.workdir / "sealpost.sqlite3"
        self.log_path = self.workdir / f"{name}.log"
        self.database_url = database_url or f"sqlite:///{self.db_path}"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def migrate(self) -> None:
        subprocess.run(
            [str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )

    def start(self, timeout: float = 30.0) -> LiveServer:
        if self.process is not None:
            raise RuntimeError("already running")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process for its life
        self.process = subprocess.Popen(
            [
                str(BIN / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "project.asgi:application",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /healthz in {timeout} s")

    def stop(self, crash: bool = False) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, crash: bool = False) -> None:
        self.stop(crash=crash)
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> LiveServer:
        self.migrate()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
