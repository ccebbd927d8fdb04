"""Attachments end to end: a real Daphne, real clients, the blob storage on disk.

* A 20 MB file goes through a proxy that cuts every connection twice during the upload
  (after 5 MB and 12 MB have gone up); it arrives intact (the receiver's decryptor checks
  the digest; the bytes are compared too) and the upload resumed rather than started over:
  the bytes through the proxy stay below the blob's size plus two chunks.
* A blob flipped by one byte in the server's storage is refused by the receiver with
  decrypt_failed, and nothing is saved.
* The CLI: ``send-file`` with its progress lines, ``receive --json`` with the saved path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client
from client.attachments import DEFAULT_CHUNK_BYTES
from client.core import AttachmentReceived, MessageReceived
from harness.live_server import LiveServer
from harness.netem import Link, Profile, running_proxy
from protocol.attachments import blob_size
from protocol.errors import ErrorCode
from tests.e2e.helpers import FAST, PASSWORD, cli

pytestmark = pytest.mark.e2e

BIG_FILE_BYTES = 20_000_000
CUTS_AT = (5_000_000, 12_000_000)  # bytes gone up through the proxy when it cuts


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    blobs = tmp_path / "blobs"
    with LiveServer(tmp_path / "server", extra_env={"ATTACHMENTS_DIR": str(blobs)}) as live:
        yield live


def _blob_parts(server: LiveServer) -> list[Path]:
    root = Path(server.env["ATTACHMENTS_DIR"]) / "blobs"
    return sorted(path for path in root.rglob("*") if path.is_file())


async def _registered(home: Path, username: str, server: LiveServer) -> Client:
    client = Client(home, backoff=FAST)
    await client.register(server.url, username, PASSWORD)
    return client


async def _next_attachment(client: Client, timeout: float = 60) -> AttachmentReceived:
    async def run() -> AttachmentReceived:
        async for event in client.receive(wait=None):
            if isinstance(event, AttachmentReceived):
                return event
        raise AssertionError("receive() ended")

    return await asyncio.wait_for(run(), timeout)


async def _upload_through_cuts(server: LiveServer, homes: Path, source: Path) -> None:
    alice = await _registered(homes / "alice", "alice", server)
    bob = await _registered(homes / "bob", "bob", server)
    await alice.close()
    profile = Profile("loopback", None, None, 0.0, 0.0, cut_duration=0.2)
    try:
        with running_proxy(("127.0.0.1", server.port), profile) as proxy:
            pending = list(CUTS_AT)

            def cut_when_due(link: Link) -> None:  # on the proxy's loop
                if link is proxy.up and pending and link.bytes_carried >= pending[0]:
                    pending.pop(0)
                    proxy.cut(refuse_for=0.2)

            proxy.on_carried = cut_when_due
            via_proxy = Client(
                homes / "alice", server_url=f"http://127.0.0.1:{proxy.port}", backoff=FAST
            )
            seen: list[int] = []
            try:
                message_id = await via_proxy.send_file(
                    "bob", source, caption="the big one", progress=lambda d, t: seen.append(d)
                )
                stats = via_proxy.upload_stats
            finally:
                await via_proxy.close()
            uploaded = proxy.up.bytes_carried
            assert proxy.stats.cuts == 2, "the proxy did not cut twice during the upload"

        total = blob_size(BIG_FILE_BYTES)
        assert stats.resumes >= 2
        # Resumed, not restarted: each cut lost at most the chunk in flight.
        assert uploaded < total + 2 * DEFAULT_CHUNK_BYTES, (uploaded, total)
        # The client counts each chunk cut off as sent whole: at most two of them.
        assert stats.bytes <= total + 2 * DEFAULT_CHUNK_BYTES
        assert seen[-1] == total

        event = await _next_attachment(bob)
        assert event.code is None and event.path is not None
        assert event.path.parent == homes / "bob" / "downloads"
        assert event.path.name == source.name and event.size == BIG_FILE_BYTES
        assert event.caption == "the big one" and event.content_type == "application/zip"
        assert (
            hashlib.sha256(event.path.read_bytes()).digest()
            == hashlib.sha256(source.read_bytes()).digest()
        )
        [stored] = [m for m in bob.messages("alice") if m.kind == "attachment"]
        assert stored.attachment is not None and stored.attachment.path == str(event.path)
        alice = Client(homes / "alice")
        try:
            [sent] = [m for m in alice.messages("bob") if m.kind == "attachment"]
        finally:
            await alice.close()
        assert sent.id == message_id and sent.status == "sent" and sent.text == "the big one"
        assert sent.attachment is not None and sent.attachment.path == str(source.resolve())
        assert not any((homes / "bob" / "tmp").iterdir())  # temporary files are gone
        assert not any((homes / "alice" / "tmp").iterdir())
    finally:
        await bob.close()


def test_twenty_megabytes_through_two_cuts_resume_and_arrive_intact(
    server: LiveServer, tmp_path: Path
) -> None:
    source = tmp_path / "archive.zip"
    source.write_bytes(os.urandom(BIG_FILE_BYTES))
    asyncio.run(_upload_through_cuts(server, tmp_path / "homes", source))
    stored = sum(part.stat().st_size for part in _blob_parts(server))
    assert stored == blob_size(BIG_FILE_BYTES)  # one blob, every byte once


async def _tampered(server: LiveServer, homes: Path, source: Path) -> None:
    alice = await _registered(homes / "alice", "alice", server)
    bob = await _registered(homes / "bob", "bob", server)
    try:
        await alice.send_text("bob", "a file follows")
        await alice.send_file("bob", source)
        parts = _blob_parts(server)
        assert parts, "no blob in the server's storage"
        victim = parts[len(parts) // 2]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))

        texts: list[MessageReceived] = []

        async def run() -> AttachmentReceived:
            async for event in bob.receive(wait=None):
                if isinstance(event, MessageReceived):
                    texts.append(event)
                if isinstance(event, AttachmentReceived):
                    return event
            raise AssertionError("receive() ended")

        event = await asyncio.wait_for(run(), 60)
        assert [t.text for t in texts] == ["a file follows"]
        assert event.code is ErrorCode.DECRYPT_FAILED and event.path is None
        downloads = homes / "bob" / "downloads"
        assert not downloads.exists() or not any(downloads.iterdir())
        assert not any((homes / "bob" / "tmp").iterdir())
        [stored] = [m for m in bob.messages("alice") if m.kind == "attachment"]
        assert stored.attachment is not None
        assert stored.attachment.state == "failed"
        assert stored.attachment.failure is ErrorCode.DECRYPT_FAILED
        assert stored.attachment.path is None
    finally:
        await alice.close()
        await bob.close()


def test_a_tampered_blob_is_refused_and_nothing_is_saved(
    server: LiveServer, tmp_path: Path
) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(os.urandom(300_000))
    asyncio.run(_tampered(server, tmp_path / "homes", source))


def test_cli_send_file_and_receive_json(server: LiveServer, tmp_path: Path) -> None:
    carol, dave = tmp_path / "carol", tmp_path / "dave"
    for home, name in ((carol, "carol"), (dave, "dave")):
        registered = cli(home, "register", name, "--password", PASSWORD, server=server.url)
        assert registered.returncode == 0, registered.stderr
    source = tmp_path / ".hidden notes.txt"
    source.write_text("meet at noon\n" * 10_000)

    sent = cli(carol, "send-file", "dave", str(source), "--caption", "notes")
    assert sent.returncode == 0, sent.stderr
    assert "sent file .hidden notes.txt" in sent.stdout
    progress = [line for line in sent.stderr.splitlines() if line.startswith("uploading")]
    assert progress and progress[-1].startswith("uploading .hidden notes.txt: 100%")
    assert len(progress) <= 5  # not a TTY: a few plain lines, no bar

    received = cli(dave, "receive", "--wait", "1", "--json")
    assert received.returncode == 0, received.stderr
    [line] = [json.loads(line) for line in received.stdout.splitlines() if line.strip()]
    assert line["type"] == "attachment" and line["from"] == "carol" and line["code"] is None
    assert line["text"] == "notes"
    attachment = line["attachment"]
    assert attachment["file_name"] == ".hidden notes.txt"
    assert attachment["content_type"] == "text/plain"
    assert attachment["size"] == source.stat().st_size
    saved = Path(attachment["path"])
    assert saved == dave / "downloads" / "hidden notes.txt"  # no leading dot
    assert saved.read_bytes() == source.read_bytes()
