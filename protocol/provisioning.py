"""Linking a new device: the link code it shows, and the sealed provisioning message.

1. The new device asks the server for a provisioning address (random, expires in 10
   minutes), makes an ephemeral X25519 key pair and shows the link code as a QR code and
   as text:

       LinkCode = version u8 (1) | address[16] | ephemeral_public[32]
       text     = "sealpost-link:" + base64url(LinkCode), no padding

2. An existing device of the account reads the code, asks its user to confirm, and seals
   a ProvisionMessage to the ephemeral key (ECIES with our primitives):

       ProvisionMessage = username str | account_seed[32] | link_token str | flags u8
                          (flags bit 0: the existing device will send history)
       Sealed = version u8 (1) | sender_ephemeral_public[32] | ciphertext
       key, nonce = HKDF-SHA256(ikm = X25519(sender_ephemeral, ephemeral_public),
                                salt = 0x00 * 32, info = "Sealpost v1 provisioning", 56)
       ciphertext = XChaCha20-Poly1305(key, nonce, ProvisionMessage,
                                       ad = 0x01 | address | ephemeral_public |
                                            sender_ephemeral_public)

   The server relays the sealed message to the address; it cannot read it (it never has
   the ephemeral private key) and cannot move it to another address (the address is in
   the associated data).

3. The new device opens it, learns the account identity key and a one-time link token
   with which the server lets it register one device of that account, certifies its own
   device keys with the account key and signs the new device list (devicelist.py).

Whoever can see the QR code can link a device, exactly as with Signal: the existing device
shows the user what is being linked and asks before it seals anything.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from . import primitives as p
from .encoding import Reader, Writer
from .errors import ErrorCode, ProtocolError
from .identifiers import check_username
from .keys import Rng, read_x25519_public_key
from .limits import MAX_USERNAME_BYTES

LINK_CODE_VERSION = 1
LINK_CODE_PREFIX = "sealpost-link:"
ADDRESS_BYTES = 16
SEALED_VERSION = 1
PROVISIONING_INFO = b"Sealpost v1 provisioning"
MAX_LINK_TOKEN_BYTES = 128
FLAG_HISTORY = 0x01


@dataclass(frozen=True, slots=True)
class LinkCode:
    address: bytes
    ephemeral_public: bytes

    def encode(self) -> bytes:
        return (
            Writer()
            .u8(LINK_CODE_VERSION)
            .fixed(self.address, ADDRESS_BYTES)
            .fixed(self.ephemeral_public, p.X25519_KEY_BYTES)
            .getvalue()
        )

    def text(self) -> str:
        return LINK_CODE_PREFIX + base64.urlsafe_b64encode(self.encode()).rstrip(b"=").decode()

    @property
    def address_text(self) -> str:
        """The address as the REST API names it (base64url, no padding)."""
        return base64.urlsafe_b64encode(self.address).rstrip(b"=").decode()

    @classmethod
    def decode(cls, data: bytes) -> LinkCode:
        r = Reader(data)
        version = r.u8("link code version")
        if version != LINK_CODE_VERSION:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"link code version {version}")
        address = r.fixed(ADDRESS_BYTES, "address")
        public = read_x25519_public_key(r, "ephemeral_public")
        r.end("link code")
        return cls(address, public)

    @classmethod
    def parse(cls, text: str) -> LinkCode:
        """Read a link code as typed or pasted (surrounding white space is ignored)."""
        text = text.strip()
        if not text.startswith(LINK_CODE_PREFIX):
            raise ProtocolError(
                ErrorCode.MALFORMED, f"a link code starts with {LINK_CODE_PREFIX!r}"
            )
        body = text[len(LINK_CODE_PREFIX) :]
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(ErrorCode.MALFORMED, "the link code is not base64url") from None
        return cls.decode(raw)


@dataclass(frozen=True, slots=True)
class ProvisionMessage:
    username: str
    account_seed: bytes
    link_token: str
    send_history: bool

    def encode(self) -> bytes:
        return (
            Writer()
            .str_(check_username(self.username))
            .fixed(self.account_seed, p.ED25519_SEED_BYTES)
            .str_(self.link_token)
            .u8(FLAG_HISTORY if self.send_history else 0)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> ProvisionMessage:
        r = Reader(data)
        username = check_username(r.str_("username", MAX_USERNAME_BYTES))
        seed = r.fixed(p.ED25519_SEED_BYTES, "account_seed")
        token = r.str_("link_token", MAX_LINK_TOKEN_BYTES)
        flags = r.u8("flags")
        if flags & ~FLAG_HISTORY:
            raise ProtocolError(ErrorCode.INVALID_VALUE, f"unknown provisioning flags {flags:#x}")
        r.end("provision message")
        return cls(username, seed, token, bool(flags & FLAG_HISTORY))

    def __repr__(self) -> str:  # never print the seed or the token
        return f"ProvisionMessage(username={self.username!r}, send_history={self.send_history})"


def _associated_data(code: LinkCode, sender_public: bytes) -> bytes:
    return bytes((SEALED_VERSION,)) + code.address + code.ephemeral_public + sender_public


def _keys(shared: bytes) -> tuple[bytes, bytes]:
    out = p.hkdf_sha256(shared, b"\x00" * 32, PROVISIONING_INFO, 56)
    return out[:32], out[32:]


def seal(code: LinkCode, message: ProvisionMessage, rng: Rng = p.random_bytes) -> bytes:
    """Encrypt a provisioning message to the device that showed ``code``."""
    sender_private = rng(p.X25519_KEY_BYTES)
    sender_public = p.x25519_public_key(sender_private)
    key, nonce = _keys(p.x25519(sender_private, code.ephemeral_public))
    ciphertext = p.aead_encrypt(key, nonce, message.encode(), _associated_data(code, sender_public))
    return bytes((SEALED_VERSION,)) + sender_public + ciphertext


def open_sealed(code: LinkCode, ephemeral_private: bytes, sealed: bytes) -> ProvisionMessage:
    """Decrypt on the new device; DECRYPT_FAILED if it was not sealed to this code."""
    r = Reader(sealed)
    version = r.u8("sealed version")
    if version != SEALED_VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"sealed provisioning {version}")
    sender_public = read_x25519_public_key(r, "sender_ephemeral_public")
    ciphertext = r.rest()
    key, nonce = _keys(p.x25519(ephemeral_private, sender_public))
    plaintext = p.aead_decrypt(key, nonce, ciphertext, _associated_data(code, sender_public))
    return ProvisionMessage.decode(plaintext)
