"""Attachment blobs (protocol/attachments.py, docs/protocol.md 17.5): the attachments.json
vectors, round trips at the chunk boundaries, streaming equal to one-shot, and every way
of damaging a blob (a flipped byte, a cut, an extension, reordered chunks, a wrong digest)
refused with DECRYPT_FAILED."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import primitives as p
from protocol.attachments import (
    CHUNK_BYTES,
    MAX_ATTACHMENT_BYTES,
    AttachmentDecryptor,
    AttachmentEncryptor,
    blob_size,
    chunk_count,
    chunk_nonce,
    decrypt_attachment,
    encrypt_attachment,
    new_attachment_key,
)
from protocol.errors import ErrorCode

from .helpers import CRYPTO_SETTINGS, raises_code

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
KEY = bytes(range(32))
SIZES = [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 200_000]
SEALED = CHUNK_BYTES + 16


def load() -> dict[str, Any]:
    return json.loads((VECTORS / "attachments.json").read_text(encoding="utf-8"))


def plaintext_by_rule(size: int) -> bytes:
    return bytes(j % 251 for j in range(size))


def test_vectors() -> None:
    doc = load()
    assert doc["chunk_bytes"] == CHUNK_BYTES
    key = bytes.fromhex(doc["key"])
    assert [f["size"] for f in doc["files"]] == SIZES
    for case in doc["files"]:
        data = plaintext_by_rule(case["size"])
        blob, _, digest = encrypt_attachment(data, key)
        assert (chunk_count(case["size"]), len(blob)) == (case["chunks"], case["blob_size"])
        assert digest.hex() == case["digest"]
        assert (blob[:48].hex(), blob[-48:].hex()) == (case["blob_head"], case["blob_tail"])
        if "blob" in case:
            assert blob.hex() == case["blob"]
        assert decrypt_attachment(blob, key, case["size"], digest) == data
    for case in doc["nonces"]:
        assert chunk_nonce(case["index"], case["final"]).hex() == case["nonce"]
    for case in doc["refused"]:
        with raises_code(ErrorCode.DECRYPT_FAILED):
            decrypt_attachment(
                bytes.fromhex(case["blob"]), key, case["size"], bytes.fromhex(case["digest"])
            )


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_sizes(size: int) -> None:
    data = random.Random(size).randbytes(size)
    blob, key, digest = encrypt_attachment(data)
    assert len(key) == 32 and digest == p.sha256(blob)
    assert len(blob) == blob_size(size) == size + 16 * max(1, -(-size // CHUNK_BYTES))
    assert decrypt_attachment(blob, key, size, digest) == data


def test_nonce_layout() -> None:
    assert chunk_nonce(0, False) == bytes(24)
    assert chunk_nonce(1, True) == bytes(15) + (1).to_bytes(8, "big") + b"\x01"
    with raises_code(ErrorCode.INVALID_VALUE):
        chunk_nonce(2**64, False)


def test_size_limits() -> None:
    assert chunk_count(0) == 1 and chunk_count(MAX_ATTACHMENT_BYTES) == 1600
    with raises_code(ErrorCode.TOO_LARGE):
        blob_size(MAX_ATTACHMENT_BYTES + 1)
    with raises_code(ErrorCode.INVALID_VALUE):
        blob_size(-1)
    with raises_code(ErrorCode.BAD_KEY):
        AttachmentEncryptor(bytes(31))
    with raises_code(ErrorCode.INVALID_VALUE):
        AttachmentDecryptor(KEY, 1, bytes(31))


def refused(blob: bytes, size: int, digest: bytes | None = None) -> None:
    """The blob is refused even with a digest that matches it, i.e. by the AEAD or length."""
    with raises_code(ErrorCode.DECRYPT_FAILED):
        decrypt_attachment(blob, KEY, size, p.sha256(blob) if digest is None else digest)


def test_a_flipped_byte_anywhere_is_refused() -> None:
    data = random.Random(7).randbytes(CHUNK_BYTES + 100)
    blob, _, digest = encrypt_attachment(data, KEY)
    positions = [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, SEALED - 1, SEALED, len(blob) - 1]
    positions += random.Random(8).sample(range(len(blob)), 40)
    for position in positions:
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        refused(bytes(damaged), len(data))  # the AEAD catches it
        refused(bytes(damaged), len(data), digest)  # so does the digest


def test_truncated_extended_and_reordered_blobs_are_refused() -> None:
    data = random.Random(9).randbytes(3 * CHUNK_BYTES + 5)
    blob, _, digest = encrypt_attachment(data, KEY)
    chunks = [blob[i : i + SEALED] for i in range(0, len(blob), SEALED)]
    assert len(chunks) == 4
    refused(b"".join(chunks[:3]), len(data))  # last chunk dropped
    refused(b"".join(chunks[:3]), 3 * CHUNK_BYTES)  # ... even claiming the shorter size
    refused(blob[:-1], len(data))
    refused(blob + b"\x00", len(data))
    refused(blob + chunks[0], len(data) + CHUNK_BYTES)  # a chunk appended after the final one
    refused(chunks[1] + chunks[0] + chunks[2] + chunks[3], len(data))
    refused(chunks[0] + chunks[1] + chunks[3] + chunks[2], len(data))
    refused(blob, len(data) + 1)
    refused(blob, len(data) - 1)
    # A single-chunk file whose only chunk claims to be the first of several.
    small, _, _ = encrypt_attachment(b"x" * 10, KEY)
    refused(small + small, 20)
    # The digest is checked first: a correct blob with another digest is refused.
    with raises_code(ErrorCode.DECRYPT_FAILED):
        decrypt_attachment(blob, KEY, len(data), bytes(32))
    with raises_code(ErrorCode.DECRYPT_FAILED):
        decrypt_attachment(blob, bytes(32), len(data), digest)  # wrong key


def split_points(rng: random.Random, length: int) -> list[int]:
    points = sorted(rng.sample(range(length + 1), min(length + 1, 6)))
    return [0, *points, length]


@CRYPTO_SETTINGS
@given(
    size=st.sampled_from([0, 1, 1000, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 140_000]),
    seed=st.integers(0, 2**32),
)
def test_streaming_equals_one_shot(size: int, seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    blob, _, digest = encrypt_attachment(data, KEY)
    encryptor = AttachmentEncryptor(KEY)
    points = split_points(rng, size)
    pieces = [encryptor.update(data[a:b]) for a, b in zip(points, points[1:], strict=False)]
    streamed = b"".join(pieces) + encryptor.finalize()
    assert (streamed, encryptor.digest, encryptor.size) == (blob, digest, size)
    decryptor = AttachmentDecryptor(KEY, size, digest)
    points = split_points(rng, len(blob))
    out = b"".join(decryptor.update(blob[a:b]) for a, b in zip(points, points[1:], strict=False))
    decryptor.finalize()
    assert out == data


def test_streaming_decryptor_refuses_and_stays_refused() -> None:
    data = b"y" * (CHUNK_BYTES + 1)
    blob, _, digest = encrypt_attachment(data, KEY)
    short = AttachmentDecryptor(KEY, len(data), digest)
    assert short.update(blob[:SEALED]) == data[:CHUNK_BYTES]  # first chunk authenticates
    with raises_code(ErrorCode.DECRYPT_FAILED):
        short.finalize()  # the final chunk never came
    with raises_code(ErrorCode.DECRYPT_FAILED):
        short.update(blob[SEALED:])
    long = AttachmentDecryptor(KEY, len(data), digest)
    with raises_code(ErrorCode.DECRYPT_FAILED):
        long.update(blob + b"\x00")
    wrong_digest = AttachmentDecryptor(KEY, len(data), bytes(32))
    assert wrong_digest.update(blob) == data
    with raises_code(ErrorCode.DECRYPT_FAILED):
        wrong_digest.finalize()
    encryptor = AttachmentEncryptor(KEY)
    with raises_code(ErrorCode.INVALID_VALUE):
        _ = encryptor.digest
    encryptor.finalize()
    with raises_code(ErrorCode.INVALID_VALUE):
        encryptor.update(b"more")


def test_fresh_keys_differ() -> None:
    assert new_attachment_key() != new_attachment_key()
    assert encrypt_attachment(b"same")[0] != encrypt_attachment(b"same")[0]
