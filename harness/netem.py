"""A weak network in one process: a TCP proxy that shapes what passes through it.

The kernel here has no netem qdisc (and tests do not run as a network admin), so this
stands in for it: an asyncio proxy between a client (a browser, the Python client) and a
server, where each direction is a link with a bandwidth, a one-way delay, and optionally a
cut every so often that drops every connection at once, as a phone on a train does.

Link model, per direction, shared by all connections through the proxy (one phone, one
radio link): bytes are read in chunks of at most ``CHUNK`` bytes; a chunk waits for the
link to be free, occupies it for ``len * 8 / rate`` seconds (serialisation), then arrives
``delay`` seconds later (propagation). Chunks are delivered in order and pipelined, so the
delay adds latency without cutting throughput, as on a real link. The queue in front of the
link is bounded: when it is full the proxy stops reading, and TCP flow control pushes back
on the sender, as a modem's buffer does.

    python -m harness.netem --listen 9000 --target 127.0.0.1:8000 --profile 2g [--no-cuts]

prints ``READY 127.0.0.1:<port>`` once listening and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from harness.background import running_in_background

CHUNK = 512  # bytes read at a time: at 50 kbit/s one chunk holds the link for 82 ms
QUEUE_CHUNKS = 32  # chunks waiting for one direction of one connection before reads stop


@dataclass(frozen=True, slots=True)
class Profile:
    """A network's shape. Rates are bits per second (``None``: not limited); delays are
    one-way seconds; ``cut_interval`` seconds between cuts (0: never), each dropping every
    open connection and refusing new ones for ``cut_duration`` seconds."""

    name: str
    down_bps: int | None
    up_bps: int | None
    down_delay: float
    up_delay: float
    cut_interval: float = 0.0
    cut_duration: float = 1.0

    def without_cuts(self) -> Profile:
        return dataclasses.replace(self, cut_interval=0.0)

    def with_cut_interval(self, seconds: float) -> Profile:
        return dataclasses.replace(self, cut_interval=seconds)


PROFILES: dict[str, Profile] = {
    # A GPRS/EDGE phone at the edge of coverage: every kilobyte costs 160 ms.
    "2g": Profile("2g", 50_000, 50_000, 0.300, 0.300, cut_interval=30.0),
    "3g": Profile("3g", 750_000, 250_000, 0.100, 0.100),
    # A fast line to a server on another continent: latency only.
    "intercontinental": Profile("intercontinental", None, None, 0.150, 0.150),
    # No shaping at all: the same address as a shaped run, at full speed (set-up steps).
    "none": Profile("none", None, None, 0.0, 0.0),
}


class Link:
    """One direction of the shaped network: a bandwidth and a delay, shared by every
    connection that sends that way."""

    def __init__(self, bits_per_second: int | None, delay: float) -> None:
        if bits_per_second is not None and bits_per_second <= 0:
            raise ValueError(f"bits_per_second must be positive, not {bits_per_second}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, not {delay}")
        self.bits_per_second = bits_per_second
        self.delay = delay
        self._free_at = 0.0  # loop time when the link finishes what it is sending
        self.bytes_carried = 0

    def schedule(self, size: int, now: float) -> float:
        """Put ``size`` bytes on the link at ``now``; return when they arrive."""
        start = max(now, self._free_at)
        busy = size * 8 / self.bits_per_second if self.bits_per_second else 0.0
        self._free_at = start + busy
        self.bytes_carried += size
        return self._free_at + self.delay


@dataclass(slots=True)
class Stats:
    connections: int = 0
    cuts: int = 0
    refused: int = 0


class NetemProxy:
    """``await proxy.start()`` listens on ``listen_host:listen_port`` (0: a free port, read
    ``port`` afterwards) and forwards to ``target`` through the profile's links."""

    def __init__(
        self,
        target: tuple[str, int],
        profile: Profile,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target = target
        self.profile = profile
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.down = Link(profile.down_bps, profile.down_delay)
        self.up = Link(profile.up_bps, profile.up_delay)
        self.stats = Stats()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut_until = 0.0
        self._cutter: asyncio.Task[None] | None = None
        # Called on the proxy's loop after each chunk a link carries (tests count bytes and
        # cut the connections at chosen points with it).
        self.on_carried: Callable[[Link], None] | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> NetemProxy:
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port)
        if self.profile.cut_interval > 0:
            self._cutter = asyncio.create_task(self._cut_periodically())
        return self

    async def stop(self) -> None:
        if self._cutter is not None:
            self._cutter.cancel()
        if self._server is not None:
            self._server.close()
        self.cut(refuse_for=0.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def cut(self, refuse_for: float | None = None) -> None:
        """Drop every open connection now (a reset, as when the radio link goes), and
        refuse new ones for ``refuse_for`` seconds (default: the profile's)."""
        loop = asyncio.get_running_loop()
        duration = self.profile.cut_duration if refuse_for is None else refuse_for
        self._cut_until = loop.time() + duration
        self.stats.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _cut_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.profile.cut_interval)
            self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._cut_until:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.connections += 1
        self._writers.update((writer, upstream_writer))
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer, self.up),
                self._pipe(upstream_reader, writer, self.down),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in (writer, upstream_writer):
                self._writers.discard(end)
                end.transport.abort()
            if task is not None:
                self._tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link
    ) -> None:
        """Carry one direction of one connection across ``link``; EOF is passed on after
        the last byte arrives."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def deliver() -> None:
            while True:
                arrive_at, data = await queue.get()
                wait = arrive_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((link.schedule(len(data), loop.time()), data))
                if self.on_carried is not None:
                    self.on_carried(link)
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()


@contextlib.contextmanager
def running_proxy(target: tuple[str, int], profile: Profile) -> Iterator[NetemProxy]:
    """The proxy in a background thread, for synchronous callers (pytest, benchmarks).
    Yields once it listens; stops it on exit."""
    with running_in_background(NetemProxy(target, profile), "netem") as proxy:
        yield proxy


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.netem", description="A TCP proxy that makes a weak network."
    )
    parser.add_argument("--listen", type=int, default=0, metavar="PORT", help="default: free")
    parser.add_argument("--listen-host", default="127.0.0.1", metavar="HOST")
    parser.add_argument("--target", type=_host_port, required=True, metavar="HOST:PORT")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="2g")
    cuts = parser.add_mutually_exclusive_group()
    cuts.add_argument("--no-cuts", action="store_true", help="never drop the connections")
    cuts.add_argument(
        "--cut-interval", type=float, metavar="SECONDS", help="seconds between cuts (0: never)"
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    profile = PROFILES[args.profile]
    if args.no_cuts:
        profile = profile.without_cuts()
    elif args.cut_interval is not None:
        profile = profile.with_cut_interval(args.cut_interval)
    proxy = NetemProxy(args.target, profile, args.listen_host, args.listen)
    await proxy.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(f"READY {args.listen_host}:{proxy.port}", flush=True)
    started = time.monotonic()
    await stopping.wait()
    await proxy.stop()
    print(
        f"stopped after {time.monotonic() - started:.1f} s: {proxy.stats.connections} "
        f"connections, {proxy.stats.cuts} cuts, {proxy.up.bytes_carried} bytes up, "
        f"{proxy.down.bytes_carried} bytes down",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
