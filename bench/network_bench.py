"""Message delivery over weak networks: ``make bench-network``.

For each profile of harness/netem.py ("2g", "3g", "intercontinental"), two reference
clients reach a real Daphne server (the embedded default) through the shaping proxy, and
the bench times

- a first message: Alice's ``send_text`` to Bob, whom she has never written to (a new
  session: Bob's keys fetched, a bundle claimed, a prekey message), from the call until
  Bob's client has decrypted it (Bob online, receiving);
- a burst of 10 messages on that session, sent pipelined (``send_many``: the device lists
  are cached by then and all 10 SENDs are in flight at once), from the call until Bob has
  decrypted the tenth.

Each figure is the median of ``--rounds`` fresh pairs (default 3). The profiles' periodic
cuts are off here (``--cuts`` turns them on): a cut landing in one round would measure the
cut, not the link; tests/e2e/test_weak_network.py covers delivery across cuts. Accounts
are registered directly with the server, not through the proxy. Every wait is bounded
(``--timeout`` seconds per figure).

    python -m bench.network_bench [--profiles 2g,3g,intercontinental] [--rounds 3]
        [--json var/bench/network.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from client import Client, MessageReceived
from client.transport import Backoff
from harness.live_server import ROOT, LiveServer
from harness.netem import PROFILES, running_proxy

SERVER_DIR = ROOT / "var" / "bench" / "network-server"
PASSWORD = secrets.token_urlsafe(24)  # throwaway accounts
BURST = 10


@dataclass(frozen=True, slots=True)
class Figures:
    profile: str
    rounds: int
    first_message_s: float  # median
    burst_10_s: float  # median
    first_message_all_s: list[float]
    burst_10_all_s: list[float]
    connections: int  # TCP connections the proxy carried (HTTP and WebSocket)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _one_round(
    server: LiveServer, homes: Path, proxy_url: str, tag: str, timeout: float
) -> tuple[float, float]:
    for name in (f"alice{tag}", f"bob{tag}"):
        client = Client(homes / name)
        await client.register(server.url, name, PASSWORD)
        await client.close()
    backoff = Backoff(base=0.2, cap=4.0)
    alice = Client(homes / f"alice{tag}", server_url=proxy_url, backoff=backoff)
    bob = Client(homes / f"bob{tag}", server_url=proxy_url, backoff=backoff)
    arrivals: list[float] = []
    got_one = asyncio.Event()
    got_all = asyncio.Event()

    async def receive() -> None:
        async for event in bob.receive(wait=None):
            if isinstance(event, MessageReceived):
                arrivals.append(time.perf_counter())
                got_one.set()
                if len(arrivals) >= 1 + BURST:
                    got_all.set()
                    return

    try:
        await bob.connect()
        receiving = asyncio.create_task(receive())
        began = time.perf_counter()
        await asyncio.wait_for(alice.send_text(f"bob{tag}", "first message"), timeout)
        await asyncio.wait_for(got_one.wait(), timeout)
        first = arrivals[0] - began

        began = time.perf_counter()

        texts = [f"burst {index}" for index in range(BURST)]
        await asyncio.wait_for(alice.send_many(f"bob{tag}", texts), timeout)
        await asyncio.wait_for(got_all.wait(), timeout)
        burst_seconds = arrivals[-1] - began
        receiving.cancel()
        return first, burst_seconds
    finally:
        await alice.close()
        await bob.close()


def measure(profile_name: str, rounds: int, cuts: bool, timeout: float) -> Figures:
    profile = PROFILES[profile_name]
    if not cuts:
        profile = profile.without_cuts()
    firsts: list[float] = []
    bursts: list[float] = []
    workdir = SERVER_DIR / profile_name
    shutil.rmtree(workdir, ignore_errors=True)
    with LiveServer(workdir, name=f"bench-{profile_name}") as server:
        with running_proxy(("127.0.0.1", server.port), profile) as proxy:
            url = f"http://127.0.0.1:{proxy.port}"
            for round_no in range(rounds):
                first, burst = asyncio.run(
                    _one_round(server, workdir / "homes", url, str(round_no), timeout)
                )
                log(
                    f"{profile_name} round {round_no + 1}: first {first:.2f} s, burst {burst:.2f} s"
                )
                firsts.append(first)
                bursts.append(burst)
            connections = proxy.stats.connections
    return Figures(
        profile_name,
        rounds,
        round(statistics.median(firsts), 2),
        round(statistics.median(bursts), 2),
        [round(x, 2) for x in firsts],
        [round(x, 2) for x in bursts],
        connections,
    )


def table(results: list[Figures]) -> str:
    lines = [
        "| profile | first message (new session) | 10-message burst | rounds |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.profile} | {r.first_message_s:.2f} s | {r.burst_10_s:.2f} s | {r.rounds} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default="2g,3g,intercontinental")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cuts", action="store_true", help="keep the profiles' periodic cuts")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per figure")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.profiles.split(",") if name.strip()]
    for name in names:
        if name not in PROFILES:
            parser.error(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    results = [measure(name, args.rounds, args.cuts, args.timeout) for name in names]
    print(table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {
            "command": "make bench-network",
            "cuts": args.cuts,
            "profiles": {name: asdict(PROFILES[name]) for name in names},
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
