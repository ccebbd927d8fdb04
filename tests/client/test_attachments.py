"""Attachments in the client against the in-memory server (blob_fakes): sending with
resume, receiving with resume, tampered and expired blobs, names made safe."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.attachments import (
    DEFAULT_CHUNK_BYTES,
    Retry,
    TransferStats,
    encrypt_file,
    safe_file_name,
    save_download,
    upload_blob,
)
from client.core import AttachmentReceived, Client, Event, MessageStatusChanged, SentByMe
from client.errors import LocalErrorCode, SealpostError
from protocol.attachments import MAX_ATTACHMENT_BYTES, blob_size, new_attachment_key
from protocol.errors import ErrorCode

from .blob_fakes import BlobServer
from .fakes import link_device, make_client, registered


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def server() -> BlobServer:
    return BlobServer()


@pytest.fixture
async def alice(server: BlobServer, tmp_path: Path) -> AsyncIterator[Client]:
    client = await registered(server, tmp_path / "alice", "alice")
    yield client
    await client.close()


@pytest.fixture
async def bob(server: BlobServer, tmp_path: Path) -> AsyncIterator[Client]:
    client = await registered(server, tmp_path / "bob", "bob")
    yield client
    await client.close()


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


async def _events(client: Client) -> list[Event]:
    return [event async for event in client.receive(wait=0.05)]


async def test_a_file_arrives_intact_and_is_saved_under_downloads(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    source = _file(tmp_path, "holiday photo.jpg", 300_000)
    progress: list[tuple[int, int]] = []
    message_id = await alice.send_file(
        "bob", source, caption="look", progress=lambda d, t: progress.append((d, t))
    )
    total = blob_size(300_000)
    assert progress[-1] == (total, total)
    [blob] = server.blobs.values()
    assert len(blob.data) == total and source.read_bytes() not in bytes(blob.data)
    assert blob.ttl_seconds is None  # no timer: the server's usual retention

    events = await _events(bob)
    [event] = [e for e in events if isinstance(e, AttachmentReceived)]
    assert (event.from_, event.file_name, event.content_type, event.size) == (
        "alice",
        "holiday photo.jpg",
        "image/jpeg",
        300_000,
    )
    assert event.caption == "look" and not event.voice and event.code is None
    assert event.path == tmp_path / "bob" / "downloads" / "holiday photo.jpg"
    assert event.path.read_bytes() == source.read_bytes()
    assert not any((tmp_path / "bob" / "tmp").iterdir())

    [stored] = bob.messages("alice")
    assert stored.kind == "attachment" and stored.text == "look" and stored.status == "received"
    assert stored.attachment is not None and stored.attachment.state == "saved"
    [mine] = alice.messages("bob")
    assert mine.id == message_id and mine.kind == "attachment" and mine.status == "sent"
    assert mine.attachment is not None and mine.attachment.path == str(source.resolve())

    # Attachments take receipts like texts.
    changes = [e for e in await _events(alice) if isinstance(e, MessageStatusChanged)]
    assert [(c.message_id, c.status) for c in changes] == [(message_id, "delivered")]
    assert await bob.mark_read("alice") == 1
    changes = [e for e in await _events(alice) if isinstance(e, MessageStatusChanged)]
    assert [(c.message_id, c.status) for c in changes] == [(message_id, "read")]


async def test_a_voice_message_and_an_empty_file(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    voice = _file(tmp_path, "note.ogg", 5_000)
    empty = _file(tmp_path, "empty", 0)
    await alice.send_file("bob", voice, voice=True)
    await alice.send_file("bob", empty, content_type="application/x-nothing")
    events = [e for e in await _events(bob) if isinstance(e, AttachmentReceived)]
    assert [(e.file_name, e.voice, e.size, e.content_type) for e in events] == [
        ("note.ogg", True, 5_000, "audio/ogg"),
        ("empty", False, 0, "application/x-nothing"),
    ]
    assert events[1].path is not None and events[1].path.read_bytes() == b""


async def test_an_upload_cut_twice_resumes_where_the_server_is(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    size = 3 * DEFAULT_CHUNK_BYTES + 12_345
    source = _file(tmp_path, "big.bin", size)
    server.fail_patches = 2
    alice.transfer_retry = Retry(sleep=_no_sleep)
    await alice.send_file("bob", source)
    total = blob_size(size)
    assert alice.upload_stats.resumes == 2
    # Each failed PATCH cost one chunk; nothing was sent again beyond that.
    assert server.patched_bytes <= total + 2 * DEFAULT_CHUNK_BYTES
    assert server.requests.count(f"HEAD /api/v1/attachments/{next(iter(server.blobs))}") == 2
    [event] = [e for e in await _events(bob) if isinstance(e, AttachmentReceived)]
    assert event.path is not None and event.path.read_bytes() == source.read_bytes()


async def test_an_upload_gives_up_after_too_many_failures_in_a_row(
    server: BlobServer, alice: Client, tmp_path: Path
) -> None:
    source = _file(tmp_path, "big.bin", 200_000)
    blob = encrypt_file(source, new_attachment_key(), tmp_path)
    server.fail_patches = 100
    stats = TransferStats()
    with pytest.raises(SealpostError) as caught:
        await upload_blob(
            alice._server_api(), blob, retry=Retry(max_failures=4, sleep=_no_sleep), stats=stats
        )
    assert caught.value.code is LocalErrorCode.UNREACHABLE
    assert "gave up after 4 failures" in caught.value.message
    assert stats.resumes == 3


async def test_a_mismatched_offset_resumes_from_the_servers_offset(
    server: BlobServer, alice: Client, tmp_path: Path
) -> None:
    source = _file(tmp_path, "file.bin", 2 * DEFAULT_CHUNK_BYTES)
    blob = encrypt_file(source, new_attachment_key(), tmp_path)
    api = alice._server_api()
    original = api.upload_chunk
    calls = 0

    async def lose_the_answer(blob_id: str, offset: int, chunk: bytes) -> int:
        nonlocal calls
        calls += 1
        result = await original(blob_id, offset, chunk)
        if calls == 1:  # stored, but the answer never came: the retry meets a 409
            raise SealpostError(LocalErrorCode.UNREACHABLE, "answer lost")
        return result

    api.upload_chunk = lose_the_answer  # type: ignore[method-assign]
    blob_id = await upload_blob(api, blob, retry=Retry(sleep=_no_sleep))
    assert bytes(server.blobs[blob_id].data) == blob.path.read_bytes()


async def test_a_download_cut_off_resumes_with_a_range(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    source = _file(tmp_path, "data.csv", 500_000)
    await alice.send_file("bob", source)
    server.cut_download_after = 100_000
    [event] = [e for e in await _events(bob) if isinstance(e, AttachmentReceived)]
    assert event.path is not None and event.path.read_bytes() == source.read_bytes()
    gets = [r for r in server.requests if r.startswith("GET /api/v1/attachments/")]
    assert len(gets) == 2


async def test_a_tampered_blob_is_decrypt_failed_and_nothing_is_kept(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    source = _file(tmp_path, "contract.pdf", 150_000)
    await alice.send_file("bob", source)
    [blob] = server.blobs.values()
    blob.data[70_000] ^= 0x80
    [event] = [e for e in await _events(bob) if isinstance(e, AttachmentReceived)]
    assert event.code is ErrorCode.DECRYPT_FAILED and event.path is None
    downloads = tmp_path / "bob" / "downloads"
    assert not any(downloads.iterdir()) and not any((tmp_path / "bob" / "tmp").iterdir())
    [stored] = bob.messages("alice")
    assert stored.attachment is not None and stored.attachment.state == "failed"
    assert stored.attachment.failure is ErrorCode.DECRYPT_FAILED


async def test_a_blob_longer_than_its_pointer_says_is_decrypt_failed(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    await alice.send_file("bob", _file(tmp_path, "a.bin", 1_000))
    [blob] = server.blobs.values()
    blob.data += b"\x00" * 10
    blob.size += 10
    [event] = [e for e in await _events(bob) if isinstance(e, AttachmentReceived)]
    assert event.code is ErrorCode.DECRYPT_FAILED


async def test_an_expired_blob_is_reported_clearly(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    await alice.send_file("bob", _file(tmp_path, "old.txt", 1_000))
    server.expired.update(server.blobs)
    [event] = [e for e in await _events(bob) if isinstance(e, AttachmentReceived)]
    assert event.code is ErrorCode.ATTACHMENT_EXPIRED and event.path is None


async def test_a_download_that_fails_for_now_is_retried_on_the_next_run(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    source = _file(tmp_path, "later.bin", 20_000)
    await alice.send_file("bob", source)
    server.downloads_down = True
    bob.transfer_retry = Retry(max_failures=3, sleep=_no_sleep)
    assert not [e for e in await _events(bob) if isinstance(e, AttachmentReceived)]
    [stored] = bob.messages("alice")
    assert stored.attachment is not None and stored.attachment.state == "pending"
    await bob.close()

    server.downloads_down = False
    again = make_client(server, bob.home)
    try:
        [event] = [e for e in await _events(again) if isinstance(e, AttachmentReceived)]
        assert event.path is not None and event.path.read_bytes() == source.read_bytes()
    finally:
        await again.close()


async def test_too_large_and_missing_files_are_refused_before_any_upload(
    server: BlobServer, alice: Client, tmp_path: Path
) -> None:
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as out:
        out.truncate(MAX_ATTACHMENT_BYTES + 1)
    with pytest.raises(SealpostError) as caught:
        await alice.send_file("bob", huge)
    assert caught.value.code is ErrorCode.ATTACHMENT_TOO_LARGE
    with pytest.raises(SealpostError) as missing:
        await alice.send_file("bob", tmp_path / "nope")
    assert missing.value.code is ErrorCode.INVALID_VALUE
    assert not server.blobs


async def test_our_other_device_sees_the_file_as_sent_by_us(
    server: BlobServer, alice: Client, bob: Client, tmp_path: Path
) -> None:
    laptop = link_device(server, alice, tmp_path / "alice-laptop", 2)
    try:
        source = _file(tmp_path, "slides.pdf", 10_000)
        await alice.send_file("bob", source, caption="v2")
        events = await _events(laptop)
        [sent] = [e for e in events if isinstance(e, SentByMe)]
        assert (sent.destination, sent.text, sent.file_name) == ("bob", "v2", "slides.pdf")
        [copy] = laptop.messages("bob")
        assert copy.kind == "attachment" and copy.direction == "out"
        assert copy.attachment is not None and copy.attachment.state == "saved"
        assert Path(copy.attachment.path or "").read_bytes() == source.read_bytes()
    finally:
        await laptop.close()


def test_file_names_are_made_safe() -> None:
    assert safe_file_name("report.pdf") == "report.pdf"
    assert safe_file_name("../../etc/passwd") == "_.._etc_passwd"
    assert safe_file_name("..\\..\\boot.ini") == "_.._boot.ini"
    assert safe_file_name(".bashrc") == "bashrc"
    assert safe_file_name("...") == "attachment"
    assert safe_file_name("", "image/png") == "attachment.png"
    assert safe_file_name("evil\u202egnp.exe") == "evil_gnp.exe"  # no bidi override
    assert safe_file_name("line\nbreak\x00.txt") == "line_break_.txt"
    long = safe_file_name("é" * 300 + ".txt")
    assert long.endswith(".txt") and len(long.encode()) <= 200


def test_saving_never_overwrites(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    saved = []
    for index in range(3):
        part = tmp_path / f"part{index}"
        part.write_bytes(bytes([index]))
        saved.append(save_download(part, downloads, "a.txt"))
    assert [p.name for p in saved] == ["a.txt", "a (1).txt", "a (2).txt"]
    assert [p.read_bytes() for p in saved] == [b"\x00", b"\x01", b"\x02"]
    assert hashlib.sha256(saved[0].read_bytes()).digest()
