"""Every Wycheproof vector for our primitives, run against ``protocol.primitives``.

Origin of the vectors: Project Wycheproof (https://github.com/C2SP/wycheproof, now
maintained by C2SP, started at Google), licensed under the Apache License 2.0; the
licence text is the ``LICENSE`` file beside the vectors. They are not vendored in this
repository: they live in ``shared/vectors/wycheproof/`` of the ``shared`` checkout that
sits beside the repository (``../shared`` from the repo root), locally and in CI. If that
folder or one of its files is missing, the tests FAIL with a message saying where the
vectors were expected; they are never skipped.

Each vector is its own test, with an id like ``x25519-tc17`` (file stem, then ``tcId``).
Every vector of each file runs, whatever its result (``valid``, ``acceptable`` or
``invalid``); a result or a kind of vector these tests do not know makes the test fail,
so that a new vector forces a decision rather than passing silently. Semantics:

* x25519: valid and acceptable vectors give the expected shared secret, except those
  flagged ``ZeroSharedSecret`` (a low-order public key), for which ``x25519`` raises
  ``BAD_KEY``; invalid ones raise ``BAD_KEY``.
* ed25519: valid signatures verify; invalid ones raise ``BAD_SIGNATURE`` (or ``BAD_KEY``
  when the public key has the wrong length).
* xchacha20_poly1305: valid vectors encrypt to ``ct || tag`` and decrypt back; invalid
  ones raise ``BAD_KEY`` for a wrong-length nonce or key (on encryption and decryption)
  and ``DECRYPT_FAILED`` otherwise (a modified tag).
* hkdf_sha256: valid vectors derive ``okm``; invalid ones (``SizeTooLarge``) raise
  ``INVALID_VALUE``.
* hmac_sha256: the first ``tagSize / 8`` bytes of the full HMAC match the tag exactly
  when the vector is valid.
* mlkem_768: the encapsulation key derived from ``seed`` equals ``ek`` where given;
  valid vectors decapsulate ``c`` to ``K`` (including the implicit-rejection ones) and
  round-trip a fresh encapsulation to ``ek``; invalid ones raise ``BAD_KEY`` for a
  wrong-length seed and ``DECRYPT_FAILED`` for a wrong-length ciphertext.

``chacha20_poly1305_test.json`` (96-bit nonces) sits beside these but is not run: the
protocol has no wrapper for the IETF ChaCha20-Poly1305 construction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import ErrorCode, ProtocolError
from protocol.primitives import (
    AEAD_KEY_BYTES,
    AEAD_NONCE_BYTES,
    AEAD_TAG_BYTES,
    ED25519_PUBLIC_BYTES,
    ED25519_SIGNATURE_BYTES,
    MLKEM768_CIPHERTEXT_BYTES,
    MLKEM768_PUBLIC_BYTES,
    MLKEM768_SEED_BYTES,
    MLKEM768_SHARED_BYTES,
    X25519_KEY_BYTES,
    aead_decrypt,
    aead_encrypt,
    constant_time_equal,
    ed25519_public_key,
    ed25519_sign,
    ed25519_verify,
    hkdf_sha256,
    hmac_sha256,
    mlkem768_decapsulate,
    mlkem768_encapsulate,
    mlkem768_public_key,
    random_bytes,
    sha256,
    sha512,
    x25519,
    x25519_public_key,
)

VECTORS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "wycheproof"

# File stem -> the "algorithm" the file must declare (guards against a swapped file).
FILES: Mapping[str, str] = {
    "x25519": "XDH",
    "ed25519": "EDDSA",
    "xchacha20_poly1305": "XCHACHA20-POLY1305",
    "hkdf_sha256": "HKDF-SHA-256",
    "hmac_sha256": "HMACSHA256",
    "mlkem_768": "ML-KEM",
}


def _missing_message(path: Path) -> str:
    return (
        f"Wycheproof vectors not found: expected {path}. The tests read them from "
        "shared/vectors/wycheproof/ in the 'shared' checkout that must sit beside the "
        f"repository (here: {VECTORS_DIR.parents[1]}). Check it out there; these tests "
        "never skip."
    )


@dataclass(frozen=True)
class Vector:
    """One Wycheproof test case together with its test group."""

    group: Mapping[str, Any]
    test: Mapping[str, Any]

    @property
    def result(self) -> str:
        return str(self.test["result"])

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(self.test.get("flags", ()))

    def hex(self, field: str) -> bytes:
        return bytes.fromhex(self.test[field])


def _path(stem: str) -> Path:
    return VECTORS_DIR / f"{stem}_test.json"


def _vectors(stem: str) -> list[Any]:
    """One pytest param per vector of ``{stem}_test.json``, or one failing param if absent."""
    path = _path(stem)
    if not path.is_file():
        return [pytest.param(None, id=f"{stem}-vectors-missing")]
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        pytest.param(Vector(group, test), id=f"{stem}-tc{test['tcId']}")
        for group in data["testGroups"]
        for test in group["tests"]
    ]


def _need(vector: Vector | None, stem: str) -> Vector:
    if vector is None:
        pytest.fail(_missing_message(_path(stem)))
    return vector


def _unknown(vector: Vector) -> None:
    pytest.fail(
        f"tc{vector.test['tcId']}: result {vector.result!r} with flags {sorted(vector.flags)} "
        "is not a kind of vector these tests know; decide its semantics"
    )


@contextmanager
def _raises(code: ErrorCode) -> Iterator[None]:
    with pytest.raises(ProtocolError) as info:
        yield
    assert info.value.code is code, f"expected {code.name}, got {info.value.code.name}"


# --- the files themselves -----------------------------------------------------------------


@pytest.mark.parametrize("stem", list(FILES))
def test_vector_file_present_and_complete(stem: str) -> None:
    path = _path(stem)
    if not path.is_file():
        pytest.fail(_missing_message(path))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["algorithm"] == FILES[stem]
    ids = [test["tcId"] for group in data["testGroups"] for test in group["tests"]]
    assert len(ids) == data["numberOfTests"], "numberOfTests disagrees with the tests present"
    assert len(set(ids)) == len(ids), "duplicate tcId"
    assert len(_vectors(stem)) == len(ids)


# --- X25519 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors("x25519"))
def test_x25519(vector: Vector | None) -> None:
    v = _need(vector, "x25519")
    private, public, shared = v.hex("private"), v.hex("public"), v.hex("shared")
    if v.result == "invalid":
        with _raises(ErrorCode.BAD_KEY):
            x25519(private, public)
    elif "ZeroSharedSecret" in v.flags:
        assert v.result in ("valid", "acceptable")
        assert shared == bytes(X25519_KEY_BYTES), "ZeroSharedSecret vector with nonzero secret"
        with _raises(ErrorCode.BAD_KEY):
            x25519(private, public)
    elif v.result in ("valid", "acceptable"):
        assert x25519(private, public) == shared
    else:
        _unknown(v)


# --- Ed25519 --------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors("ed25519"))
def test_ed25519(vector: Vector | None) -> None:
    v = _need(vector, "ed25519")
    public_key = bytes.fromhex(v.group["publicKey"]["pk"])
    message, signature = v.hex("msg"), v.hex("sig")
    if v.result == "valid":
        ed25519_verify(public_key, message, signature)  # raises if rejected
    elif v.result == "invalid":
        wrong_key = len(public_key) != ED25519_PUBLIC_BYTES
        with _raises(ErrorCode.BAD_KEY if wrong_key else ErrorCode.BAD_SIGNATURE):
            ed25519_verify(public_key, message, signature)
    else:
        _unknown(v)


# --- XChaCha20-Poly1305 ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors("xchacha20_poly1305"))
def test_xchacha20_poly1305(vector: Vector | None) -> None:
    v = _need(vector, "xchacha20_poly1305")
    key, nonce, aad = v.hex("key"), v.hex("iv"), v.hex("aad")
    message, sealed = v.hex("msg"), v.hex("ct") + v.hex("tag")
    bad_lengths = len(key) != AEAD_KEY_BYTES or len(nonce) != AEAD_NONCE_BYTES
    if v.result == "valid":
        assert aead_encrypt(key, nonce, message, aad) == sealed
        assert aead_decrypt(key, nonce, sealed, aad) == message
    elif v.result == "invalid" and bad_lengths:
        with _raises(ErrorCode.BAD_KEY):
            aead_decrypt(key, nonce, sealed, aad)
        with _raises(ErrorCode.BAD_KEY):
            aead_encrypt(key, nonce, message, aad)
    elif v.result == "invalid":
        with _raises(ErrorCode.DECRYPT_FAILED):
            aead_decrypt(key, nonce, sealed, aad)
        assert aead_encrypt(key, nonce, message, aad) != sealed
    else:
        _unknown(v)


# --- HKDF-SHA-256 ---------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors("hkdf_sha256"))
def test_hkdf_sha256(vector: Vector | None) -> None:
    v = _need(vector, "hkdf_sha256")
    ikm, salt, info, size = v.hex("ikm"), v.hex("salt"), v.hex("info"), int(v.test["size"])
    if v.result == "valid":
        okm = v.hex("okm")
        assert len(okm) == size
        assert hkdf_sha256(ikm, salt, info, size) == okm
    elif v.result == "invalid":
        with _raises(ErrorCode.INVALID_VALUE):
            hkdf_sha256(ikm, salt, info, size)
    else:
        _unknown(v)


# --- HMAC-SHA-256 ---------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors("hmac_sha256"))
def test_hmac_sha256(vector: Vector | None) -> None:
    v = _need(vector, "hmac_sha256")
    tag_bytes = int(v.group["tagSize"]) // 8
    key, message, tag = v.hex("key"), v.hex("msg"), v.hex("tag")
    full = hmac_sha256(key, message)
    assert len(full) == 32
    matches = len(tag) == tag_bytes and constant_time_equal(full[:tag_bytes], tag)
    if v.result == "valid":
        assert matches
    elif v.result == "invalid":
        assert not matches
    else:
        _unknown(v)


# --- ML-KEM-768 -----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors("mlkem_768"))
def test_mlkem_768(vector: Vector | None) -> None:
    v = _need(vector, "mlkem_768")
    assert v.group["parameterSet"] == "ML-KEM-768"
    seed, ciphertext = v.hex("seed"), v.hex("c")
    ek = v.hex("ek") if v.test.get("ek") else None
    if len(seed) == MLKEM768_SEED_BYTES and ek is not None:
        assert mlkem768_public_key(seed) == ek
    if v.result == "valid":
        assert ek is not None
        assert mlkem768_decapsulate(seed, ciphertext) == v.hex("K")
        fresh_ciphertext, shared = mlkem768_encapsulate(ek)
        assert mlkem768_decapsulate(seed, fresh_ciphertext) == shared
    elif v.result == "invalid" and len(seed) != MLKEM768_SEED_BYTES:
        with _raises(ErrorCode.BAD_KEY):
            mlkem768_public_key(seed)
        with _raises(ErrorCode.BAD_KEY):
            mlkem768_decapsulate(seed, ciphertext)
    elif v.result == "invalid" and len(ciphertext) != MLKEM768_CIPHERTEXT_BYTES:
        with _raises(ErrorCode.DECRYPT_FAILED):
            mlkem768_decapsulate(seed, ciphertext)
    else:
        _unknown(v)


# --- a few checks that are not Wycheproof vectors -------------------------------------------


def test_aead_round_trip_and_every_single_bit_flip_fails() -> None:
    key, nonce = random_bytes(AEAD_KEY_BYTES), random_bytes(AEAD_NONCE_BYTES)
    plaintext, aad = b"meet me at the usual place", b"header v1"
    sealed = aead_encrypt(key, nonce, plaintext, aad)
    assert len(sealed) == len(plaintext) + AEAD_TAG_BYTES
    assert aead_decrypt(key, nonce, sealed, aad) == plaintext

    def flipped(data: bytes, bit: int) -> bytes:
        out = bytearray(data)
        out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)

    for bit in range(len(sealed) * 8):  # ciphertext and tag
        with _raises(ErrorCode.DECRYPT_FAILED):
            aead_decrypt(key, nonce, flipped(sealed, bit), aad)
    for bit in range(len(aad) * 8):
        with _raises(ErrorCode.DECRYPT_FAILED):
            aead_decrypt(key, nonce, sealed, flipped(aad, bit))
    for bit in range(len(nonce) * 8):
        with _raises(ErrorCode.DECRYPT_FAILED):
            aead_decrypt(key, flipped(nonce, bit), sealed, aad)
    for length in range(len(sealed)):  # every truncation, including below the tag size
        with _raises(ErrorCode.DECRYPT_FAILED):
            aead_decrypt(key, nonce, sealed[:length], aad)
    with _raises(ErrorCode.DECRYPT_FAILED):
        aead_decrypt(key, nonce, sealed + b"\x00", aad)
    with _raises(ErrorCode.DECRYPT_FAILED):
        aead_decrypt(key, nonce, sealed, b"")

    empty = aead_encrypt(key, nonce, b"", b"")
    assert len(empty) == AEAD_TAG_BYTES
    assert aead_decrypt(key, nonce, empty, b"") == b""


def test_aead_rejects_wrong_key_and_nonce_lengths() -> None:
    key, nonce = random_bytes(AEAD_KEY_BYTES), random_bytes(AEAD_NONCE_BYTES)
    sealed = aead_encrypt(key, nonce, b"x", b"")
    for bad_key in (key[:-1], key + b"\x00", b""):
        with _raises(ErrorCode.BAD_KEY):
            aead_encrypt(bad_key, nonce, b"x", b"")
        with _raises(ErrorCode.BAD_KEY):
            aead_decrypt(bad_key, nonce, sealed, b"")
    for bad_nonce in (nonce[:12], nonce + b"\x00"):
        with _raises(ErrorCode.BAD_KEY):
            aead_encrypt(key, bad_nonce, b"x", b"")
        with _raises(ErrorCode.BAD_KEY):
            aead_decrypt(key, bad_nonce, sealed, b"")


def test_mlkem768_encapsulate_decapsulate_round_trip() -> None:
    seed = random_bytes(MLKEM768_SEED_BYTES)
    public_key = mlkem768_public_key(seed)
    assert len(public_key) == MLKEM768_PUBLIC_BYTES
    ciphertext, shared = mlkem768_encapsulate(public_key)
    assert len(ciphertext) == MLKEM768_CIPHERTEXT_BYTES
    assert len(shared) == MLKEM768_SHARED_BYTES
    assert mlkem768_decapsulate(seed, ciphertext) == shared
    # The wrong private key does not fail: implicit rejection gives an unrelated secret.
    other = mlkem768_decapsulate(random_bytes(MLKEM768_SEED_BYTES), ciphertext)
    assert len(other) == MLKEM768_SHARED_BYTES
    assert other != shared


def test_mlkem768_encapsulate_rejects_malformed_public_keys() -> None:
    public_key = mlkem768_public_key(random_bytes(MLKEM768_SEED_BYTES))
    for wrong_length in (public_key[:-1], public_key + b"\x00", b""):
        with _raises(ErrorCode.BAD_KEY):
            mlkem768_encapsulate(wrong_length)
    # FIPS 203 input check: the first 12-bit coefficient set to q = 3329 (0xD01).
    out_of_range = bytearray(public_key)
    out_of_range[0] = 0x01
    out_of_range[1] = (out_of_range[1] & 0xF0) | 0x0D
    with _raises(ErrorCode.BAD_KEY):
        mlkem768_encapsulate(bytes(out_of_range))


def test_ed25519_rfc8032_test_1_and_round_trip() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public_key = ed25519_public_key(seed)
    assert public_key.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    signature = ed25519_sign(seed, b"")
    assert signature.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    ed25519_verify(public_key, b"", signature)

    message = b"an ordinary message"
    signature = ed25519_sign(seed, message)
    assert len(signature) == ED25519_SIGNATURE_BYTES
    ed25519_verify(public_key, message, signature)
    with _raises(ErrorCode.BAD_SIGNATURE):
        ed25519_verify(public_key, message + b"!", signature)
    with _raises(ErrorCode.BAD_SIGNATURE):
        ed25519_verify(public_key, message, signature[:-1])
    with _raises(ErrorCode.BAD_KEY):
        ed25519_verify(public_key[:-1], message, signature)
    with _raises(ErrorCode.BAD_KEY):
        ed25519_sign(seed[:-1], message)


def test_x25519_rfc7748_and_bad_inputs() -> None:
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_public, bob_public = x25519_public_key(alice), x25519_public_key(bob)
    assert alice_public.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert bob_public.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert x25519(alice, bob_public).hex() == shared
    assert x25519(bob, alice_public).hex() == shared
    with _raises(ErrorCode.BAD_KEY):
        x25519(alice, bytes(X25519_KEY_BYTES))  # the zero point: low order
    with _raises(ErrorCode.BAD_KEY):
        x25519(alice, bob_public[:-1])
    with _raises(ErrorCode.BAD_KEY):
        x25519(alice[:-1], bob_public)
    with _raises(ErrorCode.BAD_KEY):
        x25519_public_key(alice + b"\x00")


def test_hashes_hkdf_and_helpers() -> None:
    for data in (b"", b"abc", bytes(range(256)) * 5):
        assert sha256(data) == hashlib.sha256(data).digest()
        assert sha512(data) == hashlib.sha512(data).digest()
    # RFC 5869: an absent salt is HashLen zero bytes.
    assert hkdf_sha256(b"ikm", b"", b"info", 42) == hkdf_sha256(b"ikm", bytes(32), b"info", 42)
    for bad_length in (0, -1, 255 * 32 + 1):
        with _raises(ErrorCode.INVALID_VALUE):
            hkdf_sha256(b"ikm", b"", b"", bad_length)
    assert len(hkdf_sha256(b"ikm", b"", b"", 255 * 32)) == 255 * 32
    assert constant_time_equal(b"same", b"same")
    assert not constant_time_equal(b"same", b"sane")
    assert not constant_time_equal(b"same", b"same!")
    assert len(random_bytes(0)) == 0
    assert len(random_bytes(33)) == 33
    with _raises(ErrorCode.INVALID_VALUE):
        random_bytes(-1)
