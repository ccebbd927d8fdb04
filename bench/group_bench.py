"""Group figure: bytes a sender uploads for one group message to N devices, against the
same text sent pairwise to each of them (issue #6).

    .venv/bin/python -m bench.group_bench [--members 50] [--json FILE]

A real Daphne process (``harness.bench_settings``: MD5 password hashing for the throwaway
sign-ups; sign-up and prekey-claim limits lifted) and real reference clients. The sender
and ``members`` other accounts (one device each) sign up; the sender creates a group of
all of them (the GROUP_UPDATE "created" and its sender key go pairwise to every member:
set-up, counted apart), then sends one text to the group, then the same text pairwise to
every member twice: first while the pairwise sessions still carry the PreKeyMessage
header (nobody has answered the sender yet), then once every member's delivered receipt
has come back and the sessions are plain ratchet sessions (the steady state).

What is counted is what the sender's client writes: every WebSocket binary message (the
frame bytes, and with the client's WebSocket header: 2 bytes, 2 more from 126 bytes, 8
more from 64 KiB, plus the 4-byte mask) and every REST request (request line, headers and
body, as HTTP/1.1 would send them; the TLS and TCP layers are left out for both). A group
send needs no REST call; a pairwise send looks the recipient's devices up first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from client import Client
from client.core import MessageReceived, MessageStatusChanged
from client.transport import Backoff, Connection, websocket_connector
from harness.live_server import LiveServer
from protocol.frames import FrameType

PASSWORD = "correct horse battery staple 42"  # noqa: S105 (throwaway bench accounts)
TEXT = "Dinner at eight on Friday? Bring the map; we leave from the station at nine sharp."
FAST = Backoff(base=0.05, cap=0.5)
# Sign-ups and bundle claims from one address are what the server's abuse limits stop.
SERVER_ENV = {
    "SIGNUPS_PER_ADDRESS": "1000000",
    "PREKEY_CLAIMS_PER_ACCOUNT": "1000000",
    "PREKEY_CLAIMS_PER_DEVICE_PAIR": "1000000",
    "PREKEY_CLAIMS_PER_TARGET_DEVICE": "1000000",
    "WS_FRAMES_PER_SECOND": "1000000",
    "SENDS_PER_DEVICE_PER_SECOND": "1000000",
    "WS_FRAME_BURST": "1000000",
}


def websocket_header_bytes(length: int) -> int:
    """A client's WebSocket frame header for a binary message of ``length`` bytes (RFC
    6455: masked)."""
    extended = 0 if length < 126 else 2 if length < 65_536 else 8
    return 2 + extended + 4


@dataclass
class Upload:
    """What one client wrote while counting was on."""

    frames: Counter[str] = field(default_factory=Counter)  # frame type -> count
    frame_bytes: int = 0
    websocket_bytes: int = 0  # frame bytes with their WebSocket headers
    rest_requests: int = 0
    rest_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.websocket_bytes + self.rest_bytes

    def figures(self) -> dict[str, Any]:
        return {
            "frames": dict(self.frames),
            "frame_bytes": self.frame_bytes,
            "websocket_bytes": self.websocket_bytes,
            "rest_requests": self.rest_requests,
            "rest_bytes": self.rest_bytes,
            "total_bytes": self.total_bytes,
        }


class Meter:
    """Counts a client's uploads while ``on``; ``take()`` returns them and starts over."""

    def __init__(self) -> None:
        self.on = False
        self.upload = Upload()

    def frame(self, data: bytes) -> None:
        if not self.on:
            return
        kind = FrameType(data[1]).name if len(data) > 1 and data[1] in FrameType else "?"
        self.upload.frames[kind] += 1
        self.upload.frame_bytes += len(data)
        self.upload.websocket_bytes += len(data) + websocket_header_bytes(len(data))

    def request(self, request: httpx.Request) -> None:
        if not self.on:
            return
        head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
        headers = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
        self.upload.rest_requests += 1
        self.upload.rest_bytes += len(head) + headers + 2 + len(request.content)

    def take(self) -> Upload:
        upload, self.upload = self.upload, Upload()
        return upload


class _CountingConnection:
    def __init__(self, inner: Connection, meter: Meter) -> None:
        self._inner = inner
        self._meter = meter

    async def send(self, data: bytes) -> None:
        self._meter.frame(data)
        await self._inner.send(data)

    async def recv(self) -> bytes:
        return await self._inner.recv()

    async def close(self) -> None:
        await self._inner.close()


class _CountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self._meter = meter

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._meter.request(request)
        return await super().handle_async_request(request)


def metered_client(home: Path, meter: Meter) -> Client:
    """A Client whose WebSocket frames and REST requests ``meter`` counts."""

    async def connect(url: str, subprotocols: Sequence[str], origin: str) -> Connection:
        return _CountingConnection(await websocket_connector(url, subprotocols, origin), meter)

    return Client(
        home, ws_connector=connect, http_transport=_CountingTransport(meter), backoff=FAST
    )


@dataclass
class GroupFigures:
    members: int  # receiving devices (one per member account; the sender's not counted)
    group_send: dict[str, Any]
    pairwise_first: dict[str, Any]  # sessions still announcing themselves (PreKeyMessage)
    pairwise_steady: dict[str, Any]  # after every member answered (RatchetMessage)
    setup: dict[str, Any]  # create: GROUP_UPDATE + sender key pairwise to every member
    delivered_to: int  # members that decrypted the group message
    seconds: dict[str, float]


async def _until(client: Client, wanted: Any, count: int, timeout: float) -> list[Any]:
    got: list[Any] = []

    async def run() -> None:
        async for event in client.receive(wait=None):
            if wanted(event):
                got.append(event)
                if len(got) >= count:
                    return

    await asyncio.wait_for(run(), timeout)
    return got


async def measure(server_url: str, homes: Path, members: int = 50) -> GroupFigures:
    """Sign up ``members`` + 1 accounts on ``server_url`` and measure (see the module)."""
    meter = Meter()
    sender = metered_client(homes / "sender", meter)
    others = [Client(homes / f"m{index:03d}", backoff=FAST) for index in range(members)]
    names = [f"member{index:03d}" for index in range(members)]
    seconds: dict[str, float] = {}
    try:
        started = time.perf_counter()
        await asyncio.gather(
            sender.register(server_url, "sender", PASSWORD),
            *(c.register(server_url, n, PASSWORD) for c, n in zip(others, names, strict=True)),
        )
        await sender.connect()
        seconds["sign_up"] = time.perf_counter() - started

        started = time.perf_counter()
        meter.on = True
        group = await sender.groups.create("bench", names)
        setup = meter.take()
        seconds["create"] = time.perf_counter() - started

        started = time.perf_counter()
        await sender.groups.send_text(group, TEXT)
        group_send = meter.take()
        meter.on = False
        seconds["group_send"] = time.perf_counter() - started

        started = time.perf_counter()

        def in_group(event: Any) -> bool:
            return isinstance(event, MessageReceived) and event.group == group

        received = await asyncio.gather(*(_until(c, in_group, 1, 60) for c in others))
        delivered = sum(1 for events in received if events and events[0].text == TEXT)
        seconds["group_receive"] = time.perf_counter() - started

        started = time.perf_counter()
        meter.on = True
        for name in names:
            await sender.send_text(name, TEXT)
        pairwise_first = meter.take()
        meter.on = False
        seconds["pairwise_first"] = time.perf_counter() - started

        # Every member reads it and answers with a delivered receipt: the sender's
        # sessions become ordinary ratchet sessions.
        def direct(event: Any) -> bool:
            return isinstance(event, MessageReceived) and event.group is None

        await asyncio.gather(*(_until(c, direct, 1, 60) for c in others))
        await _until(sender, lambda e: isinstance(e, MessageStatusChanged), members, 60)

        started = time.perf_counter()
        meter.on = True
        for name in names:
            await sender.send_text(name, TEXT)
        pairwise_steady = meter.take()
        meter.on = False
        seconds["pairwise_steady"] = time.perf_counter() - started
    finally:
        await asyncio.gather(sender.close(), *(c.close() for c in others))
    return GroupFigures(
        members=members,
        group_send=group_send.figures(),
        pairwise_first=pairwise_first.figures(),
        pairwise_steady=pairwise_steady.figures(),
        setup=setup.figures(),
        delivered_to=delivered,
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )


def bench_server(workdir: Path) -> LiveServer:
    return LiveServer(
        workdir, settings_module="harness.bench_settings", extra_env=SERVER_ENV, name="groups"
    )


def report(figures: GroupFigures) -> str:
    g, first, steady = figures.group_send, figures.pairwise_first, figures.pairwise_steady
    lines = [
        f"one text of {len(TEXT)} bytes to {figures.members} devices "
        f"(delivered to {figures.delivered_to}):",
        f"  group send:        {g['total_bytes']:>7} bytes ({g['frames']}, "
        f"{g['rest_requests']} REST requests)",
        f"  pairwise, steady:  {steady['total_bytes']:>7} bytes ({steady['frames']}, "
        f"{steady['websocket_bytes']} of them WebSocket, {steady['rest_requests']} REST requests)",
        f"  pairwise, first:   {first['total_bytes']:>7} bytes (sessions not yet answered: "
        f"PreKeyMessages; {first['websocket_bytes']} WebSocket)",
        f"  ratio pairwise/group: {steady['total_bytes'] / g['total_bytes']:.1f}x steady, "
        f"{steady['websocket_bytes'] / g['websocket_bytes']:.1f}x WebSocket only",
        f"  set-up (create: name + sender key pairwise to every member): "
        f"{figures.setup['total_bytes']} bytes, {figures.setup['frames']}",
        f"  seconds: {figures.seconds}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.group_bench")
    parser.add_argument("--members", type=int, default=50, help="receiving devices (default 50)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="group-bench-") as tmp:
        with bench_server(Path(tmp) / "server") as server:
            figures = asyncio.run(measure(server.url, Path(tmp) / "homes", args.members))
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
