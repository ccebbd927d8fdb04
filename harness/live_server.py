"""Run a real Daphne process of Sealpost on a free loopback port.

Each ``LiveServer`` gets its own database, its own secret key and a log file, so tests can
read exactly what the server logged and what it stored. The database is a SQLite file in
its work directory (the embedded default) unless the environment says otherwise: with
``DATABASE_URL`` naming a PostgreSQL server (the scale-out test run, ``make test-scale``)
each LiveServer creates a fresh database there and drops it when it stops for good, and
with ``REDIS_URL`` it uses the Redis channel layer under a key prefix of its own. Explicit
``database_url``/``redis_url`` arguments (several processes of one deployment) win.
``query()`` and ``stored_bytes()`` read what the server stored, whichever the backend.
``restart()`` stops the process (SIGTERM, or SIGKILL with ``crash=True``) and starts a new
one on the same port and database. ``settings_module`` runs the server
(and its migrate) with another Django settings module, e.g. ``harness.bench_settings``;
the default is the project's own. ``pid`` and ``rss_bytes()`` let a benchmark read the
server process's memory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
        # A database this object created (and drops in cleanup()).
        self._owned_database: str | None = None
        if database_url is None:
            database_url = f"sqlite:///{self.db_path}"
            outer = os.environ.get("DATABASE_URL", "")
            if outer.startswith(("postgres://", "postgresql://")):
                self._owned_database = f"sealpost_live_{secrets.token_hex(6)}"
                database_url = _with_database(outer, self._owned_database)
        self.database_url = database_url
        inherited = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env = {
            **inherited,
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        if redis_url is None and os.environ.get("REDIS_URL"):
            redis_url = os.environ["REDIS_URL"]
            # Servers of different tests share the Redis: device group names repeat.
            self.env.setdefault("CHANNEL_LAYER_PREFIX", f"live-{secrets.token_hex(6)}")
        self.redis_url = redis_url
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        if settings_module:
            self.env["DJANGO_SETTINGS_MODULE"] = settings_module
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self.database_url.startswith("sqlite") else "postgresql"

    def migrate(self) -> None:
        if self._owned_database is not None:
            _admin_execute(self.database_url, f'CREATE DATABASE "{self._owned_database}"')
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

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the server's database (``?`` placeholders, as sqlite3)
        and return its rows, committed — a test reading or tampering with what is stored."""
        if self.backend == "sqlite":
            with sqlite3.connect(self.db_path) as db:
                return db.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as db:
            cursor = db.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def stored_bytes(self) -> bytes:
        """Everything the database holds, as raw bytes: the SQLite files (with WAL), or on
        PostgreSQL every value of every table, binary columns as their bytes, so a search
        for a plaintext cannot miss one hidden in hex-escaped output."""
        if self.backend == "sqlite":
            return b"".join(
                path.read_bytes()
                for path in self.workdir.glob("sealpost.sqlite3*")
                if path.is_file()
            )
        tables = self.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        chunks: list[bytes] = []
        for (table,) in tables:
            for row in self.query(f'SELECT * FROM "{table}"'):  # noqa: S608 - our own names
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        chunks.append(bytes(value))
                    elif value is not None:
                        chunks.append(str(value).encode())
        return b"\n".join(chunks)

    def cleanup(self) -> None:
        """Stop the server and drop the database it created, if any."""
        self.stop()
        if self._owned_database is not None:
            _admin_execute(
                self.database_url, f'DROP DATABASE IF EXISTS "{self._owned_database}" WITH (FORCE)'
            )
            self._owned_database = None

    def __enter__(self) -> LiveServer:
        self.migrate()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url``, dropped on exit:
    the URL of one deployment's database, for several LiveServers to share."""
    name = f"sealpost_live_{secrets.token_hex(6)}"
    url = _with_database(server_url, name)
    _admin_execute(url, f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        _admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def _admin_execute(database_url: str, statement: str) -> None:
    """CREATE/DROP DATABASE, from the server's maintenance database ``postgres``."""
    import psycopg

    with psycopg.connect(_with_database(database_url, "postgres"), autocommit=True) as db:
        db.execute(statement)


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
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
