"""Set-up shared by the end-to-end tests: the command-line client as a subprocess, and a
reference client that receives until it has a given number of messages."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from client import Client, MessageReceived
from client.transport import Backoff
from harness.live_server import ROOT

PASSWORD = "correct horse battery staple 42"
FAST = Backoff(base=0.05, cap=0.5)


def cli_command(home: Path, *args: str, server: str | None = None) -> list[str]:
    """The argv that runs the command-line client on `home`."""
    command = [sys.executable, "-m", "client", "--home", str(home)]
    if server:
        command += ["--server", server]
    return [*command, *args]


def cli(home: Path, *args: str, server: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the command-line client to completion and captures its output."""
    return subprocess.run(
        cli_command(home, *args, server=server),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The standard output of a run that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


async def receive_until(client: Client, count: int, timeout: float) -> list[MessageReceived]:
    """Receives until `count` messages have arrived, or fails after `timeout` seconds."""
    received: list[MessageReceived] = []

    async def run() -> None:
        async for event in client.receive(wait=None):
            if isinstance(event, MessageReceived):
                received.append(event)
                if len(received) >= count:
                    return

    await asyncio.wait_for(run(), timeout)
    return received
