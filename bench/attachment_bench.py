"""Attachment throughput on loopback: a real Daphne, the reference client's own code.

    .venv/bin/python -m bench.attachment_bench [--megabytes 50] [--json FILE] [--timeout 300]

Starts its own server (``harness.live_server.LiveServer``, SQLite and the filesystem
storage in a temporary directory), registers two accounts, makes a file of random bytes
and measures, each on its own:

* encrypt: ``client.attachments.encrypt_file`` (the file to a temporary blob on disk);
* upload: ``client.attachments.upload_blob`` (POST, then 1 MiB PATCHes: what
  ``Client.send_file`` does after encrypting);
* download: ``client.attachments.download_blob`` (one streamed GET);
* decrypt: ``client.attachments.decrypt_file`` (digest, length and every chunk's tag);
* end to end: ``Client.send_file`` (encrypt + upload + the pointer message) and the
  receiver's ``receive()`` until the file is saved (download + decrypt + save).

MB/s is 10^6 bytes of file per second. Everything (client, server, disk) shares this
machine, so the figures are an upper bound for one client on a real network and a lower
bound for the server alone. The run is bounded by ``--timeout`` seconds in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from client import Client
from client.attachments import (
    decrypt_file,
    download_blob,
    encrypt_file,
    private_dir,
    upload_blob,
)
from client.core import AttachmentReceived
from harness.live_server import LiveServer
from protocol.attachments import new_attachment_key

PASSWORD = "correct horse battery staple 42"  # noqa: S105 (a throwaway bench account)


def _rate(size: int, seconds: float) -> float:
    return size / 1e6 / seconds if seconds > 0 else float("inf")


async def _measure(server: LiveServer, work: Path, size: int) -> dict[str, Any]:
    source = work / "bench.bin"
    with open(source, "wb") as out:
        for _ in range(size // (1 << 20)):
            out.write(os.urandom(1 << 20))
        out.write(os.urandom(size % (1 << 20)))
    alice = Client(work / "alice")
    bob = Client(work / "bob")
    figures: dict[str, Any] = {"file_bytes": size}
    try:
        await alice.register(server.url, "alice", PASSWORD)
        await bob.register(server.url, "bob", PASSWORD)
        temp = private_dir(work / "alice", "tmp")
        key = new_attachment_key()

        started = time.perf_counter()
        blob = await asyncio.to_thread(encrypt_file, source, key, temp)
        figures["encrypt_s"] = time.perf_counter() - started

        api = alice._server_api()
        started = time.perf_counter()
        blob_id = await upload_blob(api, blob)
        figures["upload_s"] = time.perf_counter() - started

        downloaded = temp / "downloaded.blob"
        started = time.perf_counter()
        await download_blob(api, blob_id, blob.blob_size, downloaded)
        figures["download_s"] = time.perf_counter() - started

        started = time.perf_counter()
        plain = await asyncio.to_thread(decrypt_file, downloaded, key, blob.size, blob.digest, temp)
        figures["decrypt_s"] = time.perf_counter() - started
        for path in (plain, downloaded, blob.path):
            path.unlink()

        started = time.perf_counter()
        await alice.send_file("bob", source)
        figures["send_file_s"] = time.perf_counter() - started
        started = time.perf_counter()
        async for event in bob.receive(wait=None):
            if isinstance(event, AttachmentReceived):
                if event.path is None or event.path.stat().st_size != size:
                    raise RuntimeError(f"the file did not arrive whole: {event}")
                break
        figures["receive_file_s"] = time.perf_counter() - started
    finally:
        await alice.close()
        await bob.close()
    for name in ("encrypt", "upload", "download", "decrypt", "send_file", "receive_file"):
        figures[f"{name}_mb_per_s"] = round(_rate(size, figures[f"{name}_s"]), 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attachment_bench")
    parser.add_argument("--megabytes", type=int, default=50, help="file size (default 50)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for it all")
    args = parser.parse_args(argv)
    size = args.megabytes * 1_000_000
    with tempfile.TemporaryDirectory(prefix="attachment-bench-") as raw:
        work = Path(raw)
        env = {"ATTACHMENTS_DIR": str(work / "blobs"), "LOG_LEVEL": "WARNING"}
        with LiveServer(work / "server", extra_env=env) as server:
            figures = asyncio.run(asyncio.wait_for(_measure(server, work, size), args.timeout))
    print(f"attachment throughput on loopback, {args.megabytes} MB file (MB/s = 10^6 bytes/s)")
    for name in ("encrypt", "upload", "download", "decrypt", "send_file", "receive_file"):
        seconds = figures[f"{name}_s"]
        rate = figures[f"{name}_mb_per_s"]
        print(f"  {name:<13} {seconds:7.2f} s  {rate:8.1f} MB/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
