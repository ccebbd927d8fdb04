"""Attachment files in the client: encrypt, upload with resume, download with resume,
decrypt, save (docs/protocol.md section 17.5; docs/api.md, "Attachments").

Sending. The file is read in pieces and encrypted with ``protocol.attachments
.AttachmentEncryptor`` into a temporary file under ``<home>/tmp/`` (never the whole file
in memory): resuming an upload must send exactly the bytes the server already has the
beginning of, and a file key encrypts one file once, so the blob is made once and kept
until the upload is done, then deleted. The upload announces the blob's size and appends
chunks (the server's ``chunk_bytes``, 1 MiB by default) at the offset the server has
reached. On a lost connection, a timeout, a server error or an offset mismatch it asks
the server for its offset (HEAD) and continues from there after a backoff; it gives up
after ``MAX_TRANSFER_FAILURES`` failures in a row with no progress in between.

Receiving. The blob is downloaded into ``<home>/tmp/`` (resuming with ``Range`` from the
bytes already there), then decrypted chunk by chunk with ``AttachmentDecryptor`` into a
second temporary file; only once ``finalize`` has checked the length and the digest is
that file moved to ``<home>/downloads/<name>``. So a tampered, truncated or substituted
blob leaves nothing in downloads (every such failure is DECRYPT_FAILED), and the saved
name comes from ``safe_file_name``: no path separators or control characters, no leading
dot, at most 200 bytes, never an existing file's name (" (1)", " (2)", ... is added).

Nothing here logs a key, a digest or file contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import random
import tempfile
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol.attachments import (
    AttachmentDecryptor,
    AttachmentEncryptor,
    blob_size,
)
from protocol.errors import ErrorCode

from .api import Api
from .errors import LocalErrorCode, SealpostError

log = logging.getLogger(__name__)

DOWNLOADS_DIR: Final = "downloads"
TEMP_DIR: Final = "tmp"
READ_BYTES: Final = 1024 * 1024  # file pieces read at a time
DEFAULT_CHUNK_BYTES: Final = 1024 * 1024
MIN_CHUNK_BYTES: Final = 64 * 1024
MAX_CHUNK_BYTES: Final = 4 * 1024 * 1024  # the server's limit per PATCH
MAX_TRANSFER_FAILURES: Final = 8  # failures in a row, with no progress, before giving up
RETRY_BASE: Final = 0.25  # seconds; doubled per failure, with full jitter
RETRY_CAP: Final = 8.0
MAX_NAME_BYTES: Final = 200  # room for " (123)" within the usual 255-byte limit
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"

# (bytes of the blob the server holds, the blob's size)
Progress = Callable[[int, int], None]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class EncryptedFile:
    """A file encrypted into a temporary blob, with what the ATTACHMENT pointer needs."""

    path: Path
    size: int  # plaintext bytes
    blob_size: int
    digest: bytes


@dataclass(slots=True)
class TransferStats:
    """What an upload or a download cost: ``bytes`` sent (or received) in all attempts,
    chunks cut off included, and ``resumes``: how often it asked where to continue."""

    bytes: int = 0
    resumes: int = 0


@dataclass(frozen=True, slots=True)
class Retry:
    """Backoff between attempts; ``sleep`` and ``uniform`` are seams for tests."""

    max_failures: int = MAX_TRANSFER_FAILURES
    base: float = RETRY_BASE
    cap: float = RETRY_CAP
    sleep: Sleep = asyncio.sleep
    uniform: Callable[[], float] = random.random

    def delay(self, failures: int) -> float:
        return float(self.uniform() * min(self.cap, self.base * 2.0 ** (failures - 1)))


def guess_content_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def private_dir(home: Path, name: str) -> Path:
    directory = home / name
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def encrypt_file(source: Path, key: bytes, temp_dir: Path) -> EncryptedFile:
    """Encrypt ``source`` under ``key`` into a new file in ``temp_dir`` (blocking: run it
    in a thread). The caller deletes ``path`` when the upload is over."""
    fd, name = _temp_file(temp_dir, ".blob")
    path = Path(name)
    try:
        encryptor = AttachmentEncryptor(key)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as plain:
            while piece := plain.read(READ_BYTES):
                out.write(encryptor.update(piece))
            out.write(encryptor.finalize())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return EncryptedFile(path, encryptor.size, blob_size(encryptor.size), encryptor.digest)


async def upload_blob(
    api: Api,
    blob: EncryptedFile,
    *,
    progress: Progress | None = None,
    retry: Retry | None = None,
    stats: TransferStats | None = None,
    ttl_seconds: int | None = None,
) -> str:
    """Upload ``blob`` with resume; returns the blob id (32 hex digits) once the server
    holds every byte. ``ttl_seconds``: a disappearing message's blob, which the server
    keeps at most that long after the upload completes."""
    retry = retry or Retry()
    stats = stats if stats is not None else TransferStats()
    total = blob.blob_size
    created = await _retrying(
        lambda: api.create_blob(total, ttl_seconds), retry, "announcing the blob"
    )
    if created.size != total:
        raise SealpostError(
            LocalErrorCode.BAD_RESPONSE, f"announced {total} bytes, the server has {created.size}"
        )
    chunk_bytes = min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, created.chunk_bytes))
    offset: int | None = created.offset
    failures = 0
    with open(blob.path, "rb") as source:
        while True:
            try:
                if offset is None:  # after a failure: ask where the server is
                    stats.resumes += 1
                    offset = await api.upload_offset(created.id)
                    if not 0 <= offset <= total:
                        raise SealpostError(
                            LocalErrorCode.BAD_RESPONSE,
                            f"the server holds {offset} bytes of a {total}-byte blob",
                        )
                    _report(progress, offset, total)
                if offset >= total:
                    return created.id
                source.seek(offset)
                chunk = source.read(min(chunk_bytes, total - offset))
                stats.bytes += len(chunk)
                new_offset = await api.upload_chunk(created.id, offset, chunk)
                if new_offset != offset + len(chunk):
                    log.info("after a chunk the server is at %d, not %d", new_offset, offset)
                offset = new_offset
                failures = 0
                _report(progress, offset, total)
            except SealpostError as exc:
                if not transient(exc):
                    raise
                failures += 1
                if failures >= retry.max_failures:
                    raise SealpostError(
                        exc.code,
                        f"upload gave up after {failures} failures in a row: {exc.message}",
                        status=exc.status,
                    ) from None
                log.info("upload interrupted at %s: %s; resuming", offset, exc)
                offset = None
                await retry.sleep(retry.delay(failures))


async def download_blob(
    api: Api,
    blob_id: str,
    size: int,
    destination: Path,
    *,
    retry: Retry | None = None,
    stats: TransferStats | None = None,
) -> None:
    """Download the ``size``-byte blob into ``destination``, resuming from what it holds
    already. Reads at most one byte past ``size`` (a longer blob fails decryption)."""
    retry = retry or Retry()
    stats = stats if stats is not None else TransferStats()
    failures = 0
    with open(destination, "ab") as out:
        while True:
            have = out.tell()
            if have > size:
                return
            try:
                async for piece in api.download_blob(blob_id, have):
                    piece = piece[: size + 1 - out.tell()]
                    out.write(piece)
                    stats.bytes += len(piece)
                    failures = 0
                    if out.tell() > size:
                        break
                if out.tell() < size:
                    raise SealpostError(
                        LocalErrorCode.UNREACHABLE,
                        f"the download of {blob_id} ended after {out.tell()} of {size} bytes",
                    )
                return
            except SealpostError as exc:
                if not transient(exc):
                    raise
                failures += 1
                if failures >= retry.max_failures:
                    raise
                stats.resumes += 1
                log.info("download interrupted at %d: %s; resuming", out.tell(), exc)
                out.flush()
                await retry.sleep(retry.delay(failures))


def decrypt_file(blob_path: Path, key: bytes, size: int, digest: bytes, temp_dir: Path) -> Path:
    """Decrypt a downloaded blob into a new temporary file (blocking: run it in a thread).
    Returns that file only once the decryptor's ``finalize`` has passed; on any failure
    (DECRYPT_FAILED) the partial output is deleted."""
    fd, name = _temp_file(temp_dir, ".part")
    path = Path(name)
    try:
        decryptor = AttachmentDecryptor(key, size, digest)
        with os.fdopen(fd, "wb") as out, open(blob_path, "rb") as blob:
            while piece := blob.read(READ_BYTES):
                out.write(decryptor.update(piece))
            decryptor.finalize()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def safe_file_name(name: str, content_type: str = "") -> str:
    """A file name that is safe to create in the downloads directory: the sender's name
    without path separators, control or formatting characters (bidirectional overrides
    included), leading dots or spaces, cut to MAX_NAME_BYTES; "attachment" plus an
    extension for the content type if nothing is left."""
    cleaned = "".join(
        "_" if char in "/\\" or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp")
        else char
        for char in unicodedata.normalize("NFC", name)
    )  # fmt: skip
    cleaned = cleaned.strip().lstrip(".").strip()
    if not cleaned.strip("_"):
        extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
        cleaned = f"attachment{extension}"
    stem, suffix = _split_suffix(cleaned)
    if len(suffix.encode()) > 20:  # not an extension worth keeping
        stem, suffix = cleaned, ""
    while len((stem + suffix).encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return (stem.rstrip() or "attachment") + suffix


def save_download(decrypted: Path, downloads: Path, name: str) -> Path:
    """Move a decrypted file into ``downloads`` under ``name``, or ``name (1)``, ... if
    that exists: the name is claimed with O_EXCL first, so nothing is ever overwritten."""
    stem, suffix = _split_suffix(name)
    for number in range(10_000):
        candidate = downloads / (name if number == 0 else f"{stem} ({number}){suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        try:
            os.replace(decrypted, candidate)
        except BaseException:
            candidate.unlink(missing_ok=True)
            raise
        return candidate
    raise SealpostError(LocalErrorCode.STORAGE, f"no free name for {name!r} in {downloads}")


def transient(exc: SealpostError) -> bool:
    """A failure worth trying again after a pause: the connection, a busy or failing
    server, a chunk cut short, an offset that moved under us."""
    if exc.code in (
        LocalErrorCode.UNREACHABLE,
        ErrorCode.SERVER_BUSY,
        ErrorCode.UPLOAD_OFFSET_MISMATCH,
        ErrorCode.TRUNCATED,
    ):
        return True
    return exc.status is not None and exc.status >= 500


async def _retrying[T](call: Callable[[], Awaitable[T]], retry: Retry, what: str) -> T:
    failures = 0
    while True:
        try:
            return await call()
        except SealpostError as exc:
            if not transient(exc) or exc.code is ErrorCode.UPLOAD_OFFSET_MISMATCH:
                raise
            failures += 1
            if failures >= retry.max_failures:
                raise
            log.info("%s failed: %s; trying again", what, exc)
            await retry.sleep(retry.delay(failures))


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is None:
        return
    try:
        progress(done, total)
    except Exception:
        log.exception("the progress callback failed")


def _split_suffix(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def _temp_file(directory: Path, suffix: str) -> tuple[int, str]:
    return tempfile.mkstemp(suffix=suffix, dir=directory)


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
