"""Attachment blobs: a file encrypted under its own key, chunk by chunk (docs/protocol.md,
section 17.5).

The plaintext is cut into chunks of CHUNK_BYTES (the last one 0 .. CHUNK_BYTES bytes; an
empty file is one empty chunk, so n = max(1, ceil(size / CHUNK_BYTES))), each sealed as

    nonce_i = 15 × 0x00 | i as u64 big-endian | final u8 (1 for the last chunk, else 0)
    chunk_i = XChaCha20-Poly1305(key, nonce_i, plaintext chunk i, AD = empty)
    blob    = chunk_0 | … | chunk_{n-1}                    (|blob| = size + 16 n)

This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015): a chunk
moved elsewhere, a blob cut short after a chunk or extended past its final one all fail
authentication. The nonce prefix can be zero because a key encrypts one file only. The
ATTACHMENT content (content.py) carries the key, the plaintext size and the SHA-256 of the
whole blob, which the receiver compares in constant time.

Files are up to 100 MiB, so both directions stream: ``AttachmentEncryptor`` and
``AttachmentDecryptor`` take pieces of any size and return the whole chunks they complete.
``encrypt_attachment`` and ``decrypt_attachment`` do a whole file at once. Every failure to
decrypt, whatever its cause (digest, length, tag), is DECRYPT_FAILED.

hashlib (stdlib, OpenSSL's SHA-256) is used directly: the blob digest must be computed
incrementally, which primitives.sha256 does in one shot only.
"""

from __future__ import annotations

import hashlib
from typing import Final, NoReturn

from . import primitives as p
from .errors import ErrorCode, ProtocolError
from .keys import Rng

CHUNK_BYTES: Final = 65_536
MAX_ATTACHMENT_BYTES: Final = 104_857_600  # 100 MiB of plaintext
ATTACHMENT_KEY_BYTES: Final = 32
ATTACHMENT_DIGEST_BYTES: Final = 32
BLOB_ID_BYTES: Final = 16

_SEALED_CHUNK_BYTES: Final = CHUNK_BYTES + p.AEAD_TAG_BYTES
_NO_AD: Final = b""


def _check_size(size: int) -> None:
    if size < 0:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"attachment size {size} is negative")
    if size > MAX_ATTACHMENT_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"attachment of {size} bytes is above {MAX_ATTACHMENT_BYTES}"
        )


def _check_key(key: bytes) -> None:
    if len(key) != ATTACHMENT_KEY_BYTES:
        raise ProtocolError(
            ErrorCode.BAD_KEY, f"attachment key must be {ATTACHMENT_KEY_BYTES} bytes"
        )


def chunk_count(size: int) -> int:
    """n = max(1, ceil(size / CHUNK_BYTES)): an empty file is one empty chunk."""
    _check_size(size)
    return max(1, -(-size // CHUNK_BYTES))


def blob_size(size: int) -> int:
    """The length of the blob of a ``size``-byte file: size + 16 n."""
    return size + p.AEAD_TAG_BYTES * chunk_count(size)


def chunk_nonce(index: int, final: bool) -> bytes:
    """15 zero bytes | index as u64 big-endian | 1 if this is the last chunk, else 0."""
    if not 0 <= index < 2**64:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"chunk index {index} is not a u64")
    return bytes(15) + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def new_attachment_key(rng: Rng = p.random_bytes) -> bytes:
    """A fresh file key; never use one for two files (the nonces would repeat)."""
    return rng(ATTACHMENT_KEY_BYTES)


class AttachmentEncryptor:
    """Encrypts a file fed in pieces of any size.

    ``update`` returns the blob bytes of the chunks it completed; it always holds back the
    last chunk, which is sealed as final only by ``finalize``. Afterwards ``size`` is the
    plaintext length and ``digest`` the SHA-256 of the whole blob: with the key, what the
    ATTACHMENT content needs.
    """

    __slots__ = ("_digest", "_hash", "_index", "_key", "_pending", "_size")

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._key = bytes(key)
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self._index = 0
        self._size = 0
        self._digest: bytes | None = None

    @property
    def size(self) -> int:
        """Plaintext bytes taken so far."""
        return self._size

    @property
    def digest(self) -> bytes:
        """SHA-256 of the blob; known once ``finalize`` has returned."""
        if self._digest is None:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "the blob digest is known after finalize")
        return self._digest

    def update(self, data: bytes) -> bytes:
        self._check_open()
        _check_size(self._size + len(data))
        self._size += len(data)
        self._pending += data
        sealed = []
        # Strictly more than one chunk held: the first is then known not to be the last.
        offset = 0
        while len(self._pending) - offset > CHUNK_BYTES:
            sealed.append(self._seal(bytes(self._pending[offset : offset + CHUNK_BYTES]), False))
            offset += CHUNK_BYTES
        del self._pending[:offset]
        return b"".join(sealed)

    def finalize(self) -> bytes:
        """The last chunk (0 .. CHUNK_BYTES bytes of plaintext), sealed as final."""
        self._check_open()
        last = self._seal(bytes(self._pending), True)
        self._pending.clear()
        self._digest = self._hash.digest()
        return last

    def _check_open(self) -> None:
        if self._digest is not None:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "the encryptor has already finished")

    def _seal(self, chunk: bytes, final: bool) -> bytes:
        sealed = p.aead_encrypt(self._key, chunk_nonce(self._index, final), chunk, _NO_AD)
        self._index += 1
        self._hash.update(sealed)
        return sealed


class AttachmentDecryptor:
    """Decrypts a blob fed in pieces of any size, for the ``size`` and ``digest`` of its
    ATTACHMENT content.

    ``update`` returns the plaintext of each chunk it completed; ``finalize`` checks that the
    blob was exactly size + 16 n bytes and that its SHA-256 equals ``digest`` (constant
    time). Every failure is DECRYPT_FAILED, and the decryptor then refuses more input.
    Plaintext returned by ``update`` is authenticated chunk by chunk, but it is the whole
    file the sender named only once ``finalize`` has returned: keep it apart until then.
    """

    __slots__ = (
        "_count",
        "_digest",
        "_done",
        "_expected",
        "_hash",
        "_index",
        "_key",
        "_pending",
        "_received",
        "_size",
    )

    def __init__(self, key: bytes, size: int, digest: bytes) -> None:
        _check_key(key)
        _check_size(size)
        if len(digest) != ATTACHMENT_DIGEST_BYTES:
            raise ProtocolError(
                ErrorCode.INVALID_VALUE, f"digest must be {ATTACHMENT_DIGEST_BYTES} bytes"
            )
        self._key = bytes(key)
        self._size = size
        self._digest = bytes(digest)
        self._count = chunk_count(size)
        self._expected = blob_size(size)
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self._received = 0
        self._index = 0
        self._done = False

    def update(self, data: bytes) -> bytes:
        self._check_open()
        if self._received + len(data) > self._expected:
            self._fail(
                f"blob is longer than the {self._expected} bytes of a {self._size}-byte file"
            )
        self._received += len(data)
        self._hash.update(data)
        self._pending += data
        opened = []
        offset = 0
        while (length := self._sealed_length(self._index)) is not None:
            if len(self._pending) - offset < length:
                break
            opened.append(self._open(bytes(self._pending[offset : offset + length])))
            offset += length
        del self._pending[:offset]
        return b"".join(opened)

    def finalize(self) -> None:
        """Check that the blob was complete and is the one the digest names."""
        self._check_open()
        if self._received != self._expected or self._index != self._count:
            self._fail(
                f"blob of {self._received} bytes; a {self._size}-byte file gives {self._expected}"
            )
        if not p.constant_time_equal(self._hash.digest(), self._digest):
            self._fail("blob does not match its digest")
        self._done = True

    def _sealed_length(self, index: int) -> int | None:
        if index >= self._count:
            return None
        if index < self._count - 1:
            return _SEALED_CHUNK_BYTES
        return self._size - CHUNK_BYTES * (self._count - 1) + p.AEAD_TAG_BYTES

    def _open(self, sealed: bytes) -> bytes:
        final = self._index == self._count - 1
        try:
            plaintext = p.aead_decrypt(self._key, chunk_nonce(self._index, final), sealed, _NO_AD)
        except ProtocolError:
            self._fail(f"chunk {self._index} does not authenticate")
        self._index += 1
        return plaintext

    def _check_open(self) -> None:
        if self._done:
            raise ProtocolError(ErrorCode.DECRYPT_FAILED, "the decryptor has finished or failed")

    def _fail(self, detail: str) -> NoReturn:
        self._done = True
        self._pending.clear()
        raise ProtocolError(ErrorCode.DECRYPT_FAILED, detail)


def encrypt_attachment(data: bytes, key: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """Encrypt a whole file under ``key`` (a fresh one if None): (blob, key, digest)."""
    key = new_attachment_key() if key is None else key
    encryptor = AttachmentEncryptor(key)
    blob = encryptor.update(data) + encryptor.finalize()
    return blob, key, encryptor.digest


def decrypt_attachment(blob: bytes, key: bytes, size: int, digest: bytes) -> bytes:
    """Decrypt a whole blob in the order of section 17.5: its SHA-256 against ``digest``
    (constant time), its length against size + 16 n, then chunk by chunk. Every failure is
    DECRYPT_FAILED."""
    decryptor = AttachmentDecryptor(key, size, digest)  # checks the arguments
    if not p.constant_time_equal(p.sha256(blob), digest):
        raise ProtocolError(ErrorCode.DECRYPT_FAILED, "blob does not match its digest")
    if len(blob) != blob_size(size):
        raise ProtocolError(
            ErrorCode.DECRYPT_FAILED,
            f"blob of {len(blob)} bytes; a {size}-byte file gives {blob_size(size)}",
        )
    plaintext = decryptor.update(blob)
    decryptor.finalize()
    return plaintext
