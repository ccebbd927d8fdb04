"""The weak-network proxy shapes what it carries: delay, bandwidth, order, EOF and cuts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from harness.netem import PROFILES, Link, NetemProxy, Profile, running_proxy


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield "127.0.0.1", int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def _round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    echoed = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return echoed, time.monotonic() - started


def test_link_serialises_then_delays() -> None:
    link = Link(8_000, 0.5)  # 1,000 bytes a second
    assert link.schedule(100, now=10.0) == pytest.approx(10.0 + 0.1 + 0.5)
    # Queued behind the first chunk, not sent in parallel with it.
    assert link.schedule(100, now=10.0) == pytest.approx(10.0 + 0.2 + 0.5)
    # An idle link starts sending at once.
    assert link.schedule(100, now=20.0) == pytest.approx(20.0 + 0.1 + 0.5)
    assert Link(None, 0.2).schedule(10**9, now=1.0) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="bits_per_second"):
        Link(0, 0.1)


async def test_delay_each_way_and_bytes_intact(echo_server: tuple[str, int]) -> None:
    profile = Profile("test", None, None, down_delay=0.1, up_delay=0.1)
    proxy = await NetemProxy(echo_server, profile).start()
    try:
        payload = os.urandom(100_000)
        echoed, elapsed = await _round_trip(proxy.port, payload)
    finally:
        await proxy.stop()
    assert echoed == payload
    # The data crosses the link twice: at least 0.2 s, and pipelined chunks do not each
    # pay the delay again.
    assert 0.2 <= elapsed < 1.5


async def test_bandwidth_is_the_bottleneck(echo_server: tuple[str, int]) -> None:
    # 400 kbit/s up, unlimited down: 20,000 bytes take 0.4 s on the way up.
    profile = Profile("test", None, 400_000, down_delay=0.0, up_delay=0.0)
    proxy = await NetemProxy(echo_server, profile).start()
    try:
        echoed, elapsed = await _round_trip(proxy.port, b"x" * 20_000)
    finally:
        await proxy.stop()
    assert len(echoed) == 20_000
    assert 0.35 <= elapsed < 2.0
    assert proxy.up.bytes_carried == 20_000


async def test_periodic_cut_drops_open_connections(echo_server: tuple[str, int]) -> None:
    profile = Profile("test", None, None, 0.0, 0.0, cut_interval=0.3, cut_duration=0.1)
    proxy = await NetemProxy(echo_server, profile).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        # The cut comes within 0.3 s and ends the connection: EOF or a reset.
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
        assert proxy.stats.cuts >= 1
    finally:
        await proxy.stop()


async def test_after_a_cut_new_connections_fail_until_it_ends(
    echo_server: tuple[str, int],
) -> None:
    proxy = await NetemProxy(echo_server, Profile("test", None, None, 0.0, 0.0)).start()
    try:
        proxy.cut(refuse_for=0.4)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"lost")
            await asyncio.wait_for(reader.readexactly(4), 5)
        assert proxy.stats.refused == 1
        await asyncio.sleep(0.45)
        echoed, _ = await _round_trip(proxy.port, b"again")
        assert echoed == b"again"
    finally:
        await proxy.stop()


def test_profiles_and_threaded_runner() -> None:
    assert PROFILES["2g"].down_bps == PROFILES["2g"].up_bps == 50_000
    assert PROFILES["2g"].down_delay == PROFILES["2g"].up_delay == 0.3
    assert PROFILES["2g"].cut_interval == 30.0
    assert PROFILES["2g"].without_cuts().cut_interval == 0.0
    assert PROFILES["intercontinental"].down_bps is None

    async def serve() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read())
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        profile = Profile("test", None, None, 0.05, 0.05)
        with running_proxy(("127.0.0.1", port), profile) as proxy:
            echoed, elapsed = await _round_trip(proxy.port, b"hello")
        server.close()
        assert echoed == b"hello"
        assert elapsed >= 0.1

    asyncio.run(serve())
