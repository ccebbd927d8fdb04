"""Long-term and medium-term keys: account identity, device certificates, prekeys, bundles.

The trust chain (docs/protocol.md, "Keys"):

    account identity key (Ed25519, one per account, held by every device of it)
      └─ signs a DeviceCertificate per device:
           device id, registration id, device signing key (Ed25519),
           device identity key (X25519, used in the key agreement)
             └─ the device signing key signs the device's signed prekey (X25519)
                and each ML-KEM-768 prekey (one-time and last-resort).

One-time X25519 prekeys are unsigned, as in X3DH: a forged one can only make a session
fail, not let anyone read it. Every signature covers a domain-separation label, so a
signature made for one purpose can never be replayed as another.

Private keys are raw bytes (X25519 scalar, Ed25519 seed, ML-KEM-768 seed d||z). Nothing
here performs I/O; randomness comes from an injectable ``rng`` so that the vector
generator can make every key deterministically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import primitives as p
from .encoding import Reader, Writer
from .errors import ErrorCode, ProtocolError
from .limits import MAX_DEVICE_ID

Rng = Callable[[int], bytes]

MAX_KEY_ID = 0xFFFF_FFFF
MAX_REGISTRATION_ID = 0xFFFF_FFFF

LABEL_DEVICE_CERTIFICATE = b"Sealpost v1 device certificate"
LABEL_SIGNED_PREKEY = b"Sealpost v1 signed prekey"
LABEL_KEM_PREKEY = b"Sealpost v1 kem prekey"


def signed_payload(label: bytes, body: bytes) -> bytes:
    """What a signature covers: the purpose label, a zero byte, then the encoded body."""
    return label + b"\x00" + body


def _check_key_id(key_id: int, what: str) -> None:
    if not 1 <= key_id <= MAX_KEY_ID:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"{what} must be 1..{MAX_KEY_ID}")


def read_x25519_public_key(reader: Reader, what: str) -> bytes:
    """Read an X25519 public key from the wire: 32 bytes whose top bit (0x80 of byte 31) is
    clear, else BAD_KEY.

    X25519 ignores that bit (RFC 7748, section 5), so two encodings that differ only there
    give the same shared secrets. Where a key's bytes also name something (the base key that
    identifies a session, the ratchet key that identifies a chain), the twin would pass as a
    different key: a copy of a PreKeyMessage with its base key's top bit flipped was accepted
    as a new session. Every X25519 public key this package produces has the bit clear (an
    X25519 output is reduced modulo 2**255 - 19), so only a forged or corrupted key is refused.
    Every X25519 public key that is decoded from the wire goes through here.
    """
    key = reader.fixed(p.X25519_KEY_BYTES, what)
    if key[31] & 0x80:
        raise ProtocolError(ErrorCode.BAD_KEY, f"{what} is not a canonical X25519 key")
    return key


def check_device_id(device_id: int) -> None:
    if not 1 <= device_id <= MAX_DEVICE_ID:
        raise ProtocolError(
            ErrorCode.INVALID_VALUE, f"device id {device_id} is outside 1..{MAX_DEVICE_ID}"
        )


# --- account identity -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountIdentity:
    """The account's Ed25519 identity key pair. Safety numbers derive from its public key."""

    seed: bytes
    public_key: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> AccountIdentity:
        return cls(seed=bytes(seed), public_key=p.ed25519_public_key(seed))

    @classmethod
    def generate(cls, rng: Rng = p.random_bytes) -> AccountIdentity:
        return cls.from_seed(rng(p.ED25519_SEED_BYTES))

    def sign(self, message: bytes) -> bytes:
        return p.ed25519_sign(self.seed, message)

    def __repr__(self) -> str:  # never print the seed
        return f"AccountIdentity(public_key={self.public_key.hex()[:16]}…)"


# --- devices ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """A device's public keys, signed by its account identity key.

    Encoding: device_id varint | registration_id varint | signing_key[32] |
    identity_key[32] | signature[64]. The signature covers
    ``signed_payload(LABEL_DEVICE_CERTIFICATE, <everything before the signature>)``.
    """

    device_id: int
    registration_id: int
    signing_key: bytes
    identity_key: bytes
    signature: bytes

    def body(self) -> bytes:
        return (
            Writer()
            .varint(self.device_id)
            .varint(self.registration_id)
            .fixed(self.signing_key, p.ED25519_PUBLIC_BYTES)
            .fixed(self.identity_key, p.X25519_KEY_BYTES)
            .getvalue()
        )

    def encode(self) -> bytes:
        return self.body() + self.signature

    @classmethod
    def read(cls, reader: Reader) -> DeviceCertificate:
        device_id = reader.varint("device_id", maximum=MAX_DEVICE_ID)
        check_device_id(device_id)
        registration_id = reader.varint("registration_id", maximum=MAX_REGISTRATION_ID)
        if registration_id == 0:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "registration_id must not be 0")
        return cls(
            device_id=device_id,
            registration_id=registration_id,
            signing_key=reader.fixed(p.ED25519_PUBLIC_BYTES, "signing_key"),
            identity_key=read_x25519_public_key(reader, "identity_key"),
            signature=reader.fixed(p.ED25519_SIGNATURE_BYTES, "certificate signature"),
        )

    @classmethod
    def decode(cls, data: bytes) -> DeviceCertificate:
        reader = Reader(data)
        cert = cls.read(reader)
        reader.end("device certificate")
        return cert

    def verify(self, account_public_key: bytes) -> None:
        """Raise BAD_SIGNATURE unless the account identity key signed this certificate."""
        p.ed25519_verify(
            account_public_key,
            signed_payload(LABEL_DEVICE_CERTIFICATE, self.body()),
            self.signature,
        )


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """The private half of a device: its signing seed, X25519 identity key and certificate,
    and the public key of the account that certified it."""

    signing_seed: bytes
    identity_private: bytes
    certificate: DeviceCertificate
    account_key: bytes

    @property
    def device_id(self) -> int:
        return self.certificate.device_id

    @property
    def identity_key(self) -> bytes:
        return self.certificate.identity_key

    @classmethod
    def create(
        cls,
        account: AccountIdentity,
        device_id: int,
        rng: Rng = p.random_bytes,
        registration_id: int | None = None,
    ) -> DeviceKeys:
        """Make a device's keys and have the account identity key certify them."""
        check_device_id(device_id)
        signing_seed = rng(p.ED25519_SEED_BYTES)
        identity_private = rng(p.X25519_KEY_BYTES)
        if registration_id is None:
            registration_id = int.from_bytes(rng(4), "big") or 1
        unsigned = DeviceCertificate(
            device_id=device_id,
            registration_id=registration_id,
            signing_key=p.ed25519_public_key(signing_seed),
            identity_key=p.x25519_public_key(identity_private),
            signature=b"",
        )
        signature = account.sign(signed_payload(LABEL_DEVICE_CERTIFICATE, unsigned.body()))
        certificate = DeviceCertificate(
            device_id=unsigned.device_id,
            registration_id=unsigned.registration_id,
            signing_key=unsigned.signing_key,
            identity_key=unsigned.identity_key,
            signature=signature,
        )
        return cls(signing_seed, identity_private, certificate, account.public_key)

    def sign(self, message: bytes) -> bytes:
        return p.ed25519_sign(self.signing_seed, message)

    def __repr__(self) -> str:
        return f"DeviceKeys(device_id={self.device_id})"


# --- prekeys (public halves travel to the server; private halves stay on the device) ----


@dataclass(frozen=True, slots=True)
class SignedPreKey:
    """Medium-term X25519 prekey. Encoding: key_id varint | public_key[32] | signature[64]."""

    key_id: int
    public_key: bytes
    signature: bytes

    def body(self) -> bytes:
        return Writer().varint(self.key_id).fixed(self.public_key, p.X25519_KEY_BYTES).getvalue()

    def encode(self) -> bytes:
        return self.body() + self.signature

    @classmethod
    def read(cls, reader: Reader) -> SignedPreKey:
        key_id = reader.varint("signed_prekey.key_id", maximum=MAX_KEY_ID)
        _check_key_id(key_id, "signed prekey id")
        return cls(
            key_id,
            read_x25519_public_key(reader, "signed_prekey.public_key"),
            reader.fixed(p.ED25519_SIGNATURE_BYTES, "signed_prekey.signature"),
        )

    def verify(self, device_signing_key: bytes) -> None:
        p.ed25519_verify(
            device_signing_key, signed_payload(LABEL_SIGNED_PREKEY, self.body()), self.signature
        )


@dataclass(frozen=True, slots=True)
class OneTimePreKey:
    """Single-use X25519 prekey. Encoding: key_id varint | public_key[32]."""

    key_id: int
    public_key: bytes

    def encode(self) -> bytes:
        return Writer().varint(self.key_id).fixed(self.public_key, p.X25519_KEY_BYTES).getvalue()

    @classmethod
    def read(cls, reader: Reader) -> OneTimePreKey:
        key_id = reader.varint("one_time_prekey.key_id", maximum=MAX_KEY_ID)
        _check_key_id(key_id, "one-time prekey id")
        return cls(key_id, read_x25519_public_key(reader, "one_time_prekey.public_key"))


@dataclass(frozen=True, slots=True)
class KemPreKey:
    """ML-KEM-768 prekey, one-time or last-resort, signed by the device.

    Encoding: key_id varint | last_resort u8 (0/1) | public_key[1184] | signature[64].
    """

    key_id: int
    last_resort: bool
    public_key: bytes
    signature: bytes

    def body(self) -> bytes:
        return (
            Writer()
            .varint(self.key_id)
            .u8(1 if self.last_resort else 0)
            .fixed(self.public_key, p.MLKEM768_PUBLIC_BYTES)
            .getvalue()
        )

    def encode(self) -> bytes:
        return self.body() + self.signature

    @classmethod
    def read(cls, reader: Reader) -> KemPreKey:
        key_id = reader.varint("kem_prekey.key_id", maximum=MAX_KEY_ID)
        _check_key_id(key_id, "KEM prekey id")
        flag = reader.u8("kem_prekey.last_resort")
        if flag > 1:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "kem_prekey.last_resort must be 0 or 1")
        return cls(
            key_id,
            bool(flag),
            reader.fixed(p.MLKEM768_PUBLIC_BYTES, "kem_prekey.public_key"),
            reader.fixed(p.ED25519_SIGNATURE_BYTES, "kem_prekey.signature"),
        )

    def verify(self, device_signing_key: bytes) -> None:
        p.ed25519_verify(
            device_signing_key, signed_payload(LABEL_KEM_PREKEY, self.body()), self.signature
        )


@dataclass(frozen=True, slots=True)
class SignedPreKeyPair:
    private_key: bytes
    public: SignedPreKey

    @classmethod
    def generate(
        cls, device: DeviceKeys, key_id: int, rng: Rng = p.random_bytes
    ) -> SignedPreKeyPair:
        _check_key_id(key_id, "signed prekey id")
        private_key = rng(p.X25519_KEY_BYTES)
        unsigned = SignedPreKey(key_id, p.x25519_public_key(private_key), b"")
        signature = device.sign(signed_payload(LABEL_SIGNED_PREKEY, unsigned.body()))
        return cls(private_key, SignedPreKey(key_id, unsigned.public_key, signature))


@dataclass(frozen=True, slots=True)
class OneTimePreKeyPair:
    private_key: bytes
    public: OneTimePreKey

    @classmethod
    def generate(cls, key_id: int, rng: Rng = p.random_bytes) -> OneTimePreKeyPair:
        _check_key_id(key_id, "one-time prekey id")
        private_key = rng(p.X25519_KEY_BYTES)
        return cls(private_key, OneTimePreKey(key_id, p.x25519_public_key(private_key)))


@dataclass(frozen=True, slots=True)
class KemPreKeyPair:
    seed: bytes
    public: KemPreKey

    @classmethod
    def generate(
        cls, device: DeviceKeys, key_id: int, last_resort: bool, rng: Rng = p.random_bytes
    ) -> KemPreKeyPair:
        _check_key_id(key_id, "KEM prekey id")
        seed = rng(p.MLKEM768_SEED_BYTES)
        unsigned = KemPreKey(key_id, last_resort, p.mlkem768_public_key(seed), b"")
        signature = device.sign(signed_payload(LABEL_KEM_PREKEY, unsigned.body()))
        return cls(seed, KemPreKey(key_id, last_resort, unsigned.public_key, signature))


# --- the bundle a sender claims from the server -----------------------------------------


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """Everything needed to start a session with one device while it is offline.

    Encoding: account_identity_key[32] | certificate | signed_prekey |
    has_one_time u8 (0/1) | [one_time_prekey] | kem_prekey.
    """

    account_identity_key: bytes
    certificate: DeviceCertificate
    signed_prekey: SignedPreKey
    one_time_prekey: OneTimePreKey | None
    kem_prekey: KemPreKey

    def encode(self) -> bytes:
        w = Writer().fixed(self.account_identity_key, p.ED25519_PUBLIC_BYTES)
        w.raw(self.certificate.encode()).raw(self.signed_prekey.encode())
        if self.one_time_prekey is None:
            w.u8(0)
        else:
            w.u8(1).raw(self.one_time_prekey.encode())
        return w.raw(self.kem_prekey.encode()).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> PreKeyBundle:
        r = Reader(data)
        account_key = r.fixed(p.ED25519_PUBLIC_BYTES, "account_identity_key")
        certificate = DeviceCertificate.read(r)
        signed_prekey = SignedPreKey.read(r)
        flag = r.u8("has_one_time_prekey")
        if flag > 1:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "has_one_time_prekey must be 0 or 1")
        one_time = OneTimePreKey.read(r) if flag else None
        kem = KemPreKey.read(r)
        r.end("prekey bundle")
        return cls(account_key, certificate, signed_prekey, one_time, kem)

    def verify(self) -> None:
        """Check the whole chain: account → device certificate → signed and KEM prekeys.

        Raises ProtocolError(INVALID_BUNDLE) naming the link that failed.
        """
        checks: tuple[tuple[str, bytes, bytes, bytes], ...] = (
            (
                "device certificate",
                self.account_identity_key,
                signed_payload(LABEL_DEVICE_CERTIFICATE, self.certificate.body()),
                self.certificate.signature,
            ),
            (
                "signed prekey",
                self.certificate.signing_key,
                signed_payload(LABEL_SIGNED_PREKEY, self.signed_prekey.body()),
                self.signed_prekey.signature,
            ),
            (
                "KEM prekey",
                self.certificate.signing_key,
                signed_payload(LABEL_KEM_PREKEY, self.kem_prekey.body()),
                self.kem_prekey.signature,
            ),
        )
        for what, public_key, message, signature in checks:
            try:
                p.ed25519_verify(public_key, message, signature)
            except ProtocolError as exc:
                raise ProtocolError(
                    ErrorCode.INVALID_BUNDLE, f"{what} signature does not verify ({exc.code.slug})"
                ) from None
