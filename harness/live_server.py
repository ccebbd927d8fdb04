"""Run a real Daphne process of Sealpost on a free loopback port.

Each ``LiveServer`` gets its own SQLite file (or the DATABASE_URL/REDIS_URL it is given),
its own secret key and a log file, so tests can read exactly what the server logged and
what it stored. ``restart()`` stops the process (SIGTERM, or SIGKILL with ``crash=True``)
and starts a new one on the same port and database. ``settings_module`` runs the server
(and its migrate) with another Django settings module, e.g. ``harness.bench_settings``;
the default is the project's own. ``pid`` and ``rss_bytes()`` let a benchmark read the
server process's memory.
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
        settings_module: str | None = None,
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
        if settings_module:
            self.env["DJANGO_SETTINGS_MODULE"] = settings_module
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

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def rss_bytes(self) -> int:
        """The server process's resident set size (VmRSS in /proc/<pid>/status; Linux)."""
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                value, unit = line.split()[1:3]
                if unit != "kB":
                    raise RuntimeError(f"unexpected VmRSS unit {unit!r}")
                return int(value) * 1024
        raise RuntimeError(f"no VmRSS in /proc/{self.pid}/status")

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> LiveServer:
        self.migrate()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.live_server --workdir DIR [--port N]``: migrate, start, print
    ``READY <url>`` as one line on stdout, and serve until SIGTERM or SIGINT. For test
    suites in other languages (tests/js/app) that need a real server."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.live_server")
    parser.add_argument("--workdir", required=True, type=Path, help="database and log go here")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    args = parser.parse_args(argv)
    server = LiveServer(args.workdir, port=args.port)
    stopping: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.migrate()
    server.start()
    print(f"READY {server.url}", flush=True)
    try:
        while not stopping:
            if server.process is not None and server.process.poll() is not None:
                print(f"server exited; see {server.log_path}", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
