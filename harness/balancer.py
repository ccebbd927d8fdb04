"""A TCP load balancer in one process, for tests of several Daphne processes.

Stands in for the HTTP/WebSocket load balancer of docs/scaling.md (nginx, HAProxy, a cloud
balancer): each new connection goes to the next backend in turn (round robin, counted
separately for WebSocket upgrades and plain HTTP, as a layer-7 balancer sees them, so a
client's long-lived relay connections spread evenly whatever its HTTP calls do); a backend
that refuses the connection is skipped, as a balancer's health check would skip a dead
process, so clients that lose a process reconnect to a survivor through the same address.
It works at the TCP level, so WebSocket upgrades and plain HTTP pass alike.

    with running_balancer([("127.0.0.1", 8001), ("127.0.0.1", 8002)]) as balancer:
        url = f"http://127.0.0.1:{balancer.port}"
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence

from harness.background import running_in_background

Address = tuple[str, int]


class Balancer:
    def __init__(self, backends: Sequence[Address], listen_host: str = "127.0.0.1") -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self.backends = list(backends)
        self.listen_host = listen_host
        self.connections: Counter[Address] = Counter()  # accepted, per backend
        self._next: Counter[str] = Counter()  # per kind of connection: "ws" or "http"
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the balancer is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> Balancer:
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connect_upstream(
        self, kind: str
    ) -> tuple[Address, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            backend = self.backends[self._next[kind] % len(self.backends)]
            self._next[kind] += 1
            try:
                reader, writer = await asyncio.open_connection(*backend)
            except OSError:
                continue  # down: the next one
            return backend, reader, writer
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(65536)  # the request line comes first
        kind = "ws" if first.startswith(b"GET /ws/") else "http"
        upstream = await self._connect_upstream(kind)
        if upstream is None:
            writer.transport.abort()
            return
        backend, upstream_reader, upstream_writer = upstream
        self.connections[backend] += 1
        upstream_writer.write(first)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # A backend that dies resets its side; the client sees its connection drop
            # and reconnects, through us, to a survivor.
            for end in (writer, upstream_writer):
                end.transport.abort()
            if task is not None:
                self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    raise ConnectionResetError("peer closed")  # close both directions at once


@contextlib.contextmanager
def running_balancer(backends: Sequence[Address]) -> Iterator[Balancer]:
    """The balancer in a background thread (for pytest)."""
    with running_in_background(Balancer(backends), "balancer") as balancer:
        yield balancer
