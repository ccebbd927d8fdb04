"""Two reference clients talking through a 2G link that keeps dropping (harness/netem.py).

Alice and Bob register directly with a real Daphne server, then reach it only through the
"2g" profile: 50 kbit/s and 300 ms each way, every connection cut (every 12 s here rather
than the profile's 30, so a ~50 s exchange meets several cuts; new ones refused for a
second). Both send at once, each receiving concurrently; every message
must arrive exactly once and in its sender's order, across every cut. The clients
reconnect with exponential backoff and full jitter (client/transport.py) and resume: a
SEND not yet answered is written again on the next connection, in order, and the server
redelivers every envelope not yet acknowledged (a SEND stored but whose SEND_OK was lost
arrives twice, and the receiver drops the copy as a duplicate and acknowledges it).

Each client sends with ``send_text(wait=False)``: the device lists are checked once and
then reused, and up to 32 SENDs are in flight at once, so the wall time is bound by the
link's bandwidth (each SEND and DELIVER is about 400 bytes; the two clients share one 50
kbit/s link each way), not by round trips. WEAK_NETWORK_MESSAGES sets the count each way:
1,000 by default, the issue's figure (about a minute here). The test prints the time it
took.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client, MessageReceived, SealpostError
from client.transport import Backoff
from harness.live_server import LiveServer
from harness.netem import PROFILES, running_proxy
from tests.e2e.helpers import PASSWORD, receive_until

pytestmark = pytest.mark.e2e

PER_DIRECTION = int(os.environ.get("WEAK_NETWORK_MESSAGES", "1000"))
CUT_EVERY_SECONDS = 12.0
# Seconds per message allowed before the test gives up: generous, the link is 2G.
SECONDS_PER_MESSAGE = 0.6
# A send that fails before the message was stored (an HTTP request cut mid-way) is
# tried again, at most this many times in a row.
MAX_RETRIES = 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "server") as live:
        yield live


async def _send_all(client: Client, to: str, texts: list[str]) -> int:
    """Send every text in order, pipelined; a failure before the message was stored (the
    first device-list lookup cut mid-way) is retried. Once stored, the client resends a
    message itself until the server answers; then wait for every answer."""

    def sent() -> int:
        return sum(m.direction == "out" for m in client.messages(to))

    retries = 0
    for text in texts:
        for attempt in range(MAX_RETRIES):
            stored = sent()
            try:
                await client.send_text(to, text, wait=False)
                break
            except SealpostError:
                if sent() != stored:
                    raise  # stored, then refused: not a network failure
                retries += 1
                await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
        else:
            raise AssertionError(f"{text!r} was never accepted")
    await client.wait_sent()
    assert {m.status for m in client.messages(to) if m.direction == "out"} <= {
        "sent",
        "delivered",
        "read",
    }
    return retries


async def _exchange(server: LiveServer, homes: Path, proxy_url: str) -> dict[str, float]:
    for name in ("alice", "bob"):
        client = Client(homes / name)
        await client.register(server.url, name, PASSWORD)
        await client.close()
    backoff = Backoff(base=0.2, cap=4.0)  # full jitter: U(0, min(cap, base * 2**n))
    alice = Client(homes / "alice", server_url=proxy_url, backoff=backoff)
    bob = Client(homes / "bob", server_url=proxy_url, backoff=backoff)
    marker = secrets.token_hex(4)
    a_to_b = [f"a→b {i:04d} {marker}" for i in range(PER_DIRECTION)]
    b_to_a = [f"b→a {i:04d} {marker}" for i in range(PER_DIRECTION)]
    timeout = 120 + PER_DIRECTION * SECONDS_PER_MESSAGE
    try:
        began = time.monotonic()
        results = await asyncio.gather(
            _send_all(alice, "bob", a_to_b),
            _send_all(bob, "alice", b_to_a),
            receive_until(bob, PER_DIRECTION, timeout),
            receive_until(alice, PER_DIRECTION, timeout),
        )
        elapsed = time.monotonic() - began
        retries_a, retries_b, got_by_bob, got_by_alice = results
        assert isinstance(got_by_bob, list) and isinstance(got_by_alice, list)
        assert [m.text for m in got_by_bob] == a_to_b  # exactly once, in order
        assert [m.text for m in got_by_alice] == b_to_a
        # Nothing more comes: no duplicate was held back.
        extra = [e async for e in bob.receive(wait=2.0) if isinstance(e, MessageReceived)]
        extra += [e async for e in alice.receive(wait=2.0) if isinstance(e, MessageReceived)]
        assert extra == []
        return {"seconds": elapsed, "retries": float(retries_a) + float(retries_b)}
    finally:
        await alice.close()
        await bob.close()


def test_messages_both_ways_over_2g_with_cuts_arrive_exactly_once_in_order(
    server: LiveServer, tmp_path: Path
) -> None:
    # The 2g link, cut every 12 s instead of 30: the exchange takes about 50 s, and it must
    # live through several cuts, in both directions' streams, not one at most.
    profile = PROFILES["2g"].with_cut_interval(CUT_EVERY_SECONDS)
    with running_proxy(("127.0.0.1", server.port), profile) as proxy:
        figures = asyncio.run(
            _exchange(server, tmp_path / "homes", f"http://127.0.0.1:{proxy.port}")
        )
        cuts = proxy.stats.cuts
    expected_cuts = int(figures["seconds"] // profile.cut_interval)
    print(
        f"\n{PER_DIRECTION} messages each way over 2g: {figures['seconds']:.0f} s, "
        f"{cuts} cuts, {figures['retries']:.0f} sends retried"
    )
    assert cuts >= expected_cuts >= 0
    assert cuts >= 2, "the exchange must live through several cuts"
