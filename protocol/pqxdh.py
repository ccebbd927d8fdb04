"""Hybrid session setup: X3DH plus an ML-KEM-768 encapsulation, in the manner of PQXDH.

Follows Signal's PQXDH specification (revision 3, sections 2.2 and 3.3) with our
primitives. The initiator A, holding B's verified bundle, computes

    DH1 = X25519(IK_A, SPK_B)      DH2 = X25519(EK_A, IK_B)
    DH3 = X25519(EK_A, SPK_B)      DH4 = X25519(EK_A, OPK_B)   (only with a one-time prekey)
    (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
    SK = HKDF-SHA256(ikm = 0xFF * 32 || DH1 || DH2 || DH3 [|| DH4] || SS,
                     salt = 0x00 * 32, info = KDF_INFO, length = 32)
    AD = AK_A || IK_A || AK_B || IK_B

where AK is each side's account identity key (Ed25519), IK each device's X25519 identity
key (from its certificate), EK_A an ephemeral key ("base key"), SPK_B the signed prekey and
PQPK_B a one-time or last-resort KEM prekey. The account keys are in AD so that a relay
cannot re-sign a device certificate under another account key and pass one person's
session off as another's (X3DH section 4.8, "identity binding"): both sides must agree on
both account keys or no message decrypts.
The 32 0xFF bytes keep the input from ever being a valid X25519 output prefix (X3DH 2.2).
An attacker must break both X25519 and ML-KEM-768 to learn SK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import primitives as p
from .errors import ErrorCode, ProtocolError
from .keys import DeviceKeys, PreKeyBundle, Rng
from .messages import PreKeyMessage

KDF_INFO = b"Sealpost v1 PQXDH X25519 ML-KEM-768 SHA-256"
KDF_PREFIX = b"\xff" * 32
KDF_SALT = b"\x00" * 32

Encapsulate = Callable[[bytes], tuple[bytes, bytes]]


def derive_root_key(dh_outputs: list[bytes], kem_secret: bytes) -> bytes:
    return p.hkdf_sha256(KDF_PREFIX + b"".join(dh_outputs) + kem_secret, KDF_SALT, KDF_INFO, 32)


def associated_data(
    initiator_account_key: bytes,
    initiator_identity_key: bytes,
    responder_account_key: bytes,
    responder_identity_key: bytes,
) -> bytes:
    return (
        initiator_account_key
        + initiator_identity_key
        + responder_account_key
        + responder_identity_key
    )


@dataclass(frozen=True, slots=True)
class InitiatedSession:
    """What the initiator keeps from the setup: secrets and the fields of its PreKeyMessage."""

    root_key: bytes
    associated_data: bytes
    base_key: bytes
    remote_signed_prekey: bytes
    remote_identity_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int
    kem_ciphertext: bytes


def initiate(
    own: DeviceKeys,
    bundle: PreKeyBundle,
    rng: Rng = p.random_bytes,
    encapsulate: Encapsulate = p.mlkem768_encapsulate,
) -> InitiatedSession:
    """Run the initiator's half against a bundle, after verifying its signatures."""
    bundle.verify()
    base_private = rng(p.X25519_KEY_BYTES)
    spk = bundle.signed_prekey.public_key
    dh = [
        p.x25519(own.identity_private, spk),
        p.x25519(base_private, bundle.certificate.identity_key),
        p.x25519(base_private, spk),
    ]
    if bundle.one_time_prekey is not None:
        dh.append(p.x25519(base_private, bundle.one_time_prekey.public_key))
    kem_ciphertext, kem_secret = encapsulate(bundle.kem_prekey.public_key)
    return InitiatedSession(
        root_key=derive_root_key(dh, kem_secret),
        associated_data=associated_data(
            own.account_key,
            own.identity_key,
            bundle.account_identity_key,
            bundle.certificate.identity_key,
        ),
        base_key=p.x25519_public_key(base_private),
        remote_signed_prekey=spk,
        remote_identity_key=bundle.certificate.identity_key,
        signed_prekey_id=bundle.signed_prekey.key_id,
        one_time_prekey_id=(
            bundle.one_time_prekey.key_id if bundle.one_time_prekey is not None else None
        ),
        kem_prekey_id=bundle.kem_prekey.key_id,
        kem_ciphertext=kem_ciphertext,
    )


def respond(
    own: DeviceKeys,
    message: PreKeyMessage,
    signed_prekey_private: bytes,
    one_time_prekey_private: bytes | None,
    kem_prekey_seed: bytes,
) -> tuple[bytes, bytes]:
    """Run the responder's half; returns (root key, associated data).

    The sender's device certificate must carry its account key's signature.
    """
    try:
        message.sender_certificate.verify(message.sender_account_key)
    except ProtocolError:
        raise ProtocolError(
            ErrorCode.BAD_SIGNATURE, "sender device certificate is not signed by its account key"
        ) from None
    if (message.one_time_prekey_id is None) != (one_time_prekey_private is None):
        raise ProtocolError(ErrorCode.PREKEY_NOT_FOUND, "one-time prekey mismatch")
    sender_identity = message.sender_certificate.identity_key
    dh = [
        p.x25519(signed_prekey_private, sender_identity),
        p.x25519(own.identity_private, message.base_key),
        p.x25519(signed_prekey_private, message.base_key),
    ]
    if one_time_prekey_private is not None:
        dh.append(p.x25519(one_time_prekey_private, message.base_key))
    kem_secret = p.mlkem768_decapsulate(kem_prekey_seed, message.kem_ciphertext)
    return (
        derive_root_key(dh, kem_secret),
        associated_data(
            message.sender_account_key, sender_identity, own.account_key, own.identity_key
        ),
    )
