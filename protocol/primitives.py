"""The cryptographic primitives of Sealpost: thin, typed wrappers and nothing more.

Why these libraries: PyNaCl binds libsodium, whose X25519, Ed25519 and
XChaCha20-Poly1305 are constant-time, widely audited and fast, and whose IETF
XChaCha20-Poly1305 is the one AEAD whose random 192-bit nonces never need a counter.
pyca/cryptography (backed by OpenSSL) supplies what libsodium lacks or does not expose
here: HKDF, the SHA-2 hashes and HMAC that the ratchet's KDF chains use, and FIPS 203
ML-KEM-768 with input checking of encapsulation keys. Both are the de facto standard
Python bindings, and ``tests/protocol/test_wycheproof.py`` runs every Wycheproof vector
for these algorithms against the functions below.

This module is the only place in the project that may import ``nacl`` or
``cryptography``: everything else calls these functions, so that lengths are checked,
failures become ``ProtocolError`` and a library can be swapped in one file.

Conventions: every value is raw ``bytes``. An X25519 private key is its 32-byte
scalar, an Ed25519 private key its 32-byte seed, an ML-KEM-768 private key its
64-byte seed ``d || z``. Bad input or failed cryptography raises only ``ProtocolError``
(``BAD_KEY``, ``BAD_SIGNATURE``, ``DECRYPT_FAILED`` or ``INVALID_VALUE``) whose
message names the field and never holds key material; library errors are not chained.
A missing backend (``UnsupportedAlgorithm``) is a broken install, not bad input, and
is left to propagate. Nothing that holds a secret is cached at module level.

PyNaCl 1.6.2 has no bindings for ``crypto_sign_detached`` or
``crypto_sign_verify_detached``, so signing uses ``crypto_sign`` (signature || message)
and keeps the first 64 bytes, and verification uses ``crypto_sign_open`` on
signature || message; libsodium's checks are the same (S < L, canonical non-small-order
R and public key).

ML-KEM-768 decapsulation of a ciphertext of the wrong length raises ``DECRYPT_FAILED``
(not ``BAD_KEY``): like a tampered ciphertext of the right length, which ML-KEM
implicitly rejects with a pseudorandom secret so that the following AEAD fails with
``DECRYPT_FAILED``, it is a corrupted message, not a bad key.
"""

from __future__ import annotations

from hmac import compare_digest
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.utils
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as pyca_hmac
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import ErrorCode, ProtocolError

X25519_KEY_BYTES: Final = 32
ED25519_SEED_BYTES: Final = 32
ED25519_PUBLIC_BYTES: Final = 32
ED25519_SIGNATURE_BYTES: Final = 64
AEAD_KEY_BYTES: Final = 32
AEAD_NONCE_BYTES: Final = 24
AEAD_TAG_BYTES: Final = 16
MLKEM768_SEED_BYTES: Final = 64
MLKEM768_PUBLIC_BYTES: Final = 1184
MLKEM768_CIPHERTEXT_BYTES: Final = 1088
MLKEM768_SHARED_BYTES: Final = 32

_HKDF_SHA256_MAX_BYTES: Final = 255 * 32  # RFC 5869: L <= 255 * HashLen
_ZERO_X25519: Final = bytes(X25519_KEY_BYTES)
_SHA256: Final = hashes.SHA256()  # a stateless algorithm descriptor, no secret in it
_SHA512: Final = hashes.SHA512()

# Local references: the ratchet calls these per message.
_scalarmult = nacl.bindings.crypto_scalarmult
_scalarmult_base = nacl.bindings.crypto_scalarmult_base
_sign_seed_keypair = nacl.bindings.crypto_sign_seed_keypair
_sign = nacl.bindings.crypto_sign
_sign_open = nacl.bindings.crypto_sign_open
_aead_encrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
_aead_decrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
_NaclError = nacl.exceptions.CryptoError  # base of every exception PyNaCl raises


def _check_length(value: bytes, expected: int, what: str, code: ErrorCode) -> None:
    """Raise ``code`` unless ``value`` is exactly ``expected`` bytes long."""
    if len(value) != expected:
        raise ProtocolError(code, f"{what} must be {expected} bytes, got {len(value)}")


def random_bytes(length: int) -> bytes:
    """Return ``length`` bytes from the operating system's CSPRNG (via libsodium)."""
    if length < 0:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"random length must be >= 0: {length}")
    return nacl.utils.random(length)


def x25519_public_key(private_key: bytes) -> bytes:
    """Return the X25519 public key of a 32-byte private scalar."""
    _check_length(private_key, X25519_KEY_BYTES, "x25519 private key", ErrorCode.BAD_KEY)
    try:
        return _scalarmult_base(private_key)
    except _NaclError:
        raise ProtocolError(ErrorCode.BAD_KEY, "x25519 public key derivation failed") from None


def x25519(private_key: bytes, public_key: bytes) -> bytes:
    """Return the X25519 shared secret; BAD_KEY for a low-order peer key (all-zero result)."""
    _check_length(private_key, X25519_KEY_BYTES, "x25519 private key", ErrorCode.BAD_KEY)
    _check_length(public_key, X25519_KEY_BYTES, "x25519 public key", ErrorCode.BAD_KEY)
    try:
        shared = _scalarmult(private_key, public_key)
    except _NaclError:  # libsodium returns -1 when the result is all zeros
        raise ProtocolError(ErrorCode.BAD_KEY, "x25519 public key has low order") from None
    if compare_digest(shared, _ZERO_X25519):  # belt and braces: never return zeros
        raise ProtocolError(ErrorCode.BAD_KEY, "x25519 public key has low order")
    return shared


def ed25519_public_key(seed: bytes) -> bytes:
    """Return the Ed25519 public key of a 32-byte seed."""
    _check_length(seed, ED25519_SEED_BYTES, "ed25519 seed", ErrorCode.BAD_KEY)
    try:
        public_key, _ = _sign_seed_keypair(seed)
    except _NaclError:
        raise ProtocolError(ErrorCode.BAD_KEY, "ed25519 key derivation failed") from None
    return public_key


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Return the 64-byte detached Ed25519 signature of ``message`` by the key of ``seed``."""
    _check_length(seed, ED25519_SEED_BYTES, "ed25519 seed", ErrorCode.BAD_KEY)
    try:
        _, secret_key = _sign_seed_keypair(seed)
        signed = _sign(message, secret_key)
    except _NaclError:
        raise ProtocolError(ErrorCode.BAD_KEY, "ed25519 signing failed") from None
    return signed[:ED25519_SIGNATURE_BYTES]


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Return if ``signature`` is valid for ``message``; raise BAD_SIGNATURE otherwise."""
    _check_length(public_key, ED25519_PUBLIC_BYTES, "ed25519 public key", ErrorCode.BAD_KEY)
    _check_length(signature, ED25519_SIGNATURE_BYTES, "ed25519 signature", ErrorCode.BAD_SIGNATURE)
    try:
        _sign_open(signature + message, public_key)
    except _NaclError:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "ed25519 signature is invalid") from None


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt with XChaCha20-Poly1305 (IETF); return ciphertext || 16-byte tag."""
    _check_length(key, AEAD_KEY_BYTES, "aead key", ErrorCode.BAD_KEY)
    _check_length(nonce, AEAD_NONCE_BYTES, "aead nonce", ErrorCode.BAD_KEY)
    try:
        return _aead_encrypt(plaintext, associated_data, nonce, key)
    except _NaclError:
        raise ProtocolError(ErrorCode.INVALID_VALUE, "aead encryption failed") from None


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Decrypt ciphertext || tag with XChaCha20-Poly1305 (IETF); DECRYPT_FAILED if forged."""
    _check_length(key, AEAD_KEY_BYTES, "aead key", ErrorCode.BAD_KEY)
    _check_length(nonce, AEAD_NONCE_BYTES, "aead nonce", ErrorCode.BAD_KEY)
    if len(ciphertext) < AEAD_TAG_BYTES:
        raise ProtocolError(
            ErrorCode.DECRYPT_FAILED,
            f"aead ciphertext shorter than its {AEAD_TAG_BYTES}-byte tag: {len(ciphertext)}",
        )
    try:
        return _aead_decrypt(ciphertext, associated_data, nonce, key)
    except _NaclError:
        raise ProtocolError(ErrorCode.DECRYPT_FAILED, "aead authentication failed") from None


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """Return ``length`` bytes of HKDF-SHA-256 (RFC 5869); an empty salt means HashLen zeros."""
    if not 1 <= length <= _HKDF_SHA256_MAX_BYTES:
        raise ProtocolError(
            ErrorCode.INVALID_VALUE,
            f"hkdf length must be 1..{_HKDF_SHA256_MAX_BYTES}, got {length}",
        )
    try:
        return HKDF(algorithm=_SHA256, length=length, salt=salt or None, info=info).derive(ikm)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_VALUE, "hkdf parameters rejected") from None


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """Return the 32-byte HMAC-SHA-256 of ``data`` under ``key``."""
    mac = pyca_hmac.HMAC(key, _SHA256)
    mac.update(data)
    return mac.finalize()


def sha256(data: bytes) -> bytes:
    """Return the SHA-256 digest of ``data``."""
    digest = hashes.Hash(_SHA256)
    digest.update(data)
    return digest.finalize()


def sha512(data: bytes) -> bytes:
    """Return the SHA-512 digest of ``data``."""
    digest = hashes.Hash(_SHA512)
    digest.update(data)
    return digest.finalize()


def _mlkem768_private_key(seed: bytes) -> MLKEM768PrivateKey:
    """Expand a 64-byte ML-KEM-768 seed ``d || z`` into a private key object."""
    _check_length(seed, MLKEM768_SEED_BYTES, "ml-kem-768 seed", ErrorCode.BAD_KEY)
    try:
        return MLKEM768PrivateKey.from_seed_bytes(seed)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_KEY, "ml-kem-768 seed rejected") from None


def mlkem768_public_key(seed: bytes) -> bytes:
    """Return the 1184-byte ML-KEM-768 encapsulation key of a 64-byte seed ``d || z``."""
    return _mlkem768_private_key(seed).public_key().public_bytes_raw()


def mlkem768_encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    """Return (ciphertext, shared_secret); BAD_KEY for a malformed encapsulation key."""
    _check_length(public_key, MLKEM768_PUBLIC_BYTES, "ml-kem-768 public key", ErrorCode.BAD_KEY)
    try:  # from_public_bytes also runs the FIPS 203 modulus check on the coefficients
        key = MLKEM768PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_KEY, "ml-kem-768 public key is malformed") from None
    shared_secret, ciphertext = key.encapsulate()
    return ciphertext, shared_secret


def mlkem768_decapsulate(seed: bytes, ciphertext: bytes) -> bytes:
    """Return the 32-byte shared secret; DECRYPT_FAILED for a ciphertext of the wrong length."""
    _check_length(seed, MLKEM768_SEED_BYTES, "ml-kem-768 seed", ErrorCode.BAD_KEY)
    _check_length(
        ciphertext, MLKEM768_CIPHERTEXT_BYTES, "ml-kem-768 ciphertext", ErrorCode.DECRYPT_FAILED
    )
    private_key = _mlkem768_private_key(seed)
    try:
        return private_key.decapsulate(ciphertext)
    except ValueError:
        raise ProtocolError(ErrorCode.DECRYPT_FAILED, "ml-kem-768 ciphertext rejected") from None


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of their contents (not their lengths)."""
    return compare_digest(a, b)
