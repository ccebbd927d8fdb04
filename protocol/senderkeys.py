"""Sender keys: one encryption per group message, whatever the group's size
(docs/protocol.md, section 17.2).

Each member device has, per group, a sending chain: a random ``key_id`` (1 .. 2**31 - 1),
the ``iteration`` of the next message key, a 32-byte ``chain_key`` and an Ed25519 signing
key pair whose seed never leaves the device. It gives the chain to every other device of
the roster in a SENDER_KEY content (``SenderKeyDistribution``) over the pairwise sessions,
then encrypts each group message once. With ck_i the chain key at iteration i:

    message_seed_i = HMAC-SHA256(ck_i, 0x01)          ck_{i+1} = HMAC-SHA256(ck_i, 0x02)
    key_i | nonce_i = HKDF-SHA256(ikm = message_seed_i, salt = 32 × 0x00,
                                  info = "Sealpost v1 sender key", L = 56)

    SenderKeyMessage = 0x13 | group_id[16] | key_id varint | iteration varint |
                       ciphertext (XChaCha20-Poly1305, AD = the bytes before it) |
                       signature[64]   (Ed25519 over "Sealpost v1 sender key message" |
                                        0x00 | everything before the signature)

The chain gives forward secrecy (a key, once used, is deleted) but no post-compromise
security; that is why the sender makes a new sender key whenever a device leaves the
roster (17.1). The signature, not the AEAD, is what proves which member sent a message:
every member holds the chain key and could forge a message under it.

A receiver keeps a ``SenderKeyRecord`` per (group_id, sender, sender_device): the
MAX_SENDER_KEY_STATES most recent keys of that device, newest first. ``decrypt`` checks,
in order: the encoding, a state holding ``key_id`` (NO_SESSION), the signature
(BAD_SIGNATURE), the iteration (DUPLICATE_MESSAGE, TOO_MANY_SKIPPED), the AEAD
(DECRYPT_FAILED); the record changes only if all of them pass. The plaintext is padded
content (``content.encode_content``), as for a pairwise session.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from . import primitives as p
from .content import (
    CHAIN_KEY_BYTES,
    MAX_SENDER_KEY_ID,
    MAX_SENDER_KEY_ITERATION,
    SenderKeyDistribution,
)
from .encoding import Reader, Writer
from .errors import ErrorCode, ProtocolError
from .groups import GROUP_ID_BYTES
from .keys import Rng
from .limits import MAX_SKIPPED_KEYS
from .messages import MessageKind, message_type_byte, read_type_byte
from .ratchet import ZERO_SALT, SkipBudget, kdf_ck

SENDER_KEY_INFO: Final = b"Sealpost v1 sender key"
LABEL_SENDER_KEY_MESSAGE: Final = b"Sealpost v1 sender key message"
MAX_SENDER_KEY_STATES: Final = 5
RECORD_FORMAT: Final = 1
# A state's iteration after the last key of the chain (iteration 2**32 - 1) was used.
_EXHAUSTED: Final = MAX_SENDER_KEY_ITERATION + 1


def sender_message_key(message_seed: bytes) -> tuple[bytes, bytes]:
    """The AEAD key (32 bytes) and nonce (24 bytes) of one message seed."""
    out = p.hkdf_sha256(message_seed, ZERO_SALT, SENDER_KEY_INFO, 56)
    return out[:32], out[32:]


def _check_key_id(key_id: int) -> None:
    if key_id == 0:
        raise ProtocolError(ErrorCode.INVALID_VALUE, "key_id must not be 0")
    if not 0 < key_id <= MAX_SENDER_KEY_ID:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"key_id {key_id} is above {MAX_SENDER_KEY_ID}")


@dataclass(frozen=True, slots=True)
class SenderKeyMessage:
    group_id: bytes
    key_id: int
    iteration: int
    ciphertext: bytes  # AEAD output, tag included
    signature: bytes

    def header(self) -> bytes:
        """The AEAD's associated data: every byte before the ciphertext."""
        _check_key_id(self.key_id)
        return (
            Writer()
            .u8(message_type_byte(MessageKind.SENDER_KEY))
            .fixed(self.group_id, GROUP_ID_BYTES)
            .varint(self.key_id)
            .varint(self.iteration)
            .getvalue()
        )

    def signed_bytes(self) -> bytes:
        """What the signature covers, label included."""
        return LABEL_SENDER_KEY_MESSAGE + b"\x00" + self.header() + self.ciphertext

    def encode(self) -> bytes:
        return (
            Writer()
            .raw(self.header())
            .raw(self.ciphertext)
            .fixed(self.signature, p.ED25519_SIGNATURE_BYTES)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> SenderKeyMessage:
        r = Reader(data)
        read_type_byte(r, MessageKind.SENDER_KEY)
        group_id = r.fixed(GROUP_ID_BYTES, "group_id")
        key_id = r.varint("key_id", maximum=MAX_SENDER_KEY_ID)
        if key_id == 0:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "key_id must not be 0")
        iteration = r.varint("iteration", maximum=MAX_SENDER_KEY_ITERATION)
        rest = r.rest()
        if len(rest) < p.AEAD_TAG_BYTES + p.ED25519_SIGNATURE_BYTES:
            raise ProtocolError(
                ErrorCode.TRUNCATED,
                f"{len(rest)} bytes after the header; a tag and a signature need "
                f"{p.AEAD_TAG_BYTES + p.ED25519_SIGNATURE_BYTES}",
            )
        split = len(rest) - p.ED25519_SIGNATURE_BYTES
        return cls(group_id, key_id, iteration, rest[:split], rest[split:])


@dataclass(slots=True)
class SenderKeyState:
    """One sending chain of one device: the sender's own (with ``signing_seed``) or a copy
    received in a SenderKeyDistribution (without)."""

    key_id: int
    iteration: int  # the index of the next message key of chain_key
    chain_key: bytes
    signing_public: bytes
    signing_seed: bytes | None = None
    # Message seeds of skipped iterations, in increasing iteration (oldest first).
    skipped: OrderedDict[int, bytes] = field(default_factory=OrderedDict)

    @classmethod
    def generate(cls, rng: Rng = p.random_bytes) -> SenderKeyState:
        """A new sending chain: key_id from 4 random bytes (big-endian, top bit cleared,
        0 replaced by 1), then the chain key, then the signing seed."""
        key_id = (int.from_bytes(rng(4), "big") & MAX_SENDER_KEY_ID) or 1
        chain_key = rng(CHAIN_KEY_BYTES)
        seed = rng(p.ED25519_SEED_BYTES)
        return cls(key_id, 0, chain_key, p.ed25519_public_key(seed), seed)

    @classmethod
    def from_distribution(cls, distribution: SenderKeyDistribution) -> SenderKeyState:
        _check_key_id(distribution.key_id)
        if not 0 <= distribution.iteration <= MAX_SENDER_KEY_ITERATION:
            raise ProtocolError(ErrorCode.TOO_LARGE, "iteration above 2**32 - 1")
        if len(distribution.chain_key) != CHAIN_KEY_BYTES:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "chain_key must be 32 bytes")
        if len(distribution.signing_key) != p.ED25519_PUBLIC_BYTES:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "signing_key must be 32 bytes")
        return cls(
            distribution.key_id,
            distribution.iteration,
            distribution.chain_key,
            distribution.signing_key,
        )

    def clone(self) -> SenderKeyState:
        return SenderKeyState(
            self.key_id,
            self.iteration,
            self.chain_key,
            self.signing_public,
            self.signing_seed,
            OrderedDict(self.skipped),
        )

    # --- sending ------------------------------------------------------------------------

    def distribution(self, group_id: bytes, sent_at_ms: int) -> SenderKeyDistribution:
        """This chain as it stands, for a SENDER_KEY content: the receiver can read what is
        sent from now on, nothing earlier."""
        if self.iteration > MAX_SENDER_KEY_ITERATION:
            raise ProtocolError(ErrorCode.TOO_LARGE, "sender key chain exhausted")
        return SenderKeyDistribution(
            group_id, self.key_id, self.iteration, self.chain_key, self.signing_public, sent_at_ms
        )

    def encrypt(self, group_id: bytes, plaintext: bytes) -> bytes:
        """Encrypt padded content for the group; returns the encoded SenderKeyMessage."""
        if self.signing_seed is None:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "a received sender key cannot send")
        if self.iteration > MAX_SENDER_KEY_ITERATION:
            raise ProtocolError(ErrorCode.TOO_LARGE, "sender key chain exhausted")
        message_seed, next_chain_key = kdf_ck(self.chain_key)
        key, nonce = sender_message_key(message_seed)
        unsigned = SenderKeyMessage(group_id, self.key_id, self.iteration, b"", b"")
        ciphertext = p.aead_encrypt(key, nonce, plaintext, unsigned.header())
        unsigned = SenderKeyMessage(group_id, self.key_id, self.iteration, ciphertext, b"")
        signature = p.ed25519_sign(self.signing_seed, unsigned.signed_bytes())
        encoded = SenderKeyMessage(
            group_id, self.key_id, self.iteration, ciphertext, signature
        ).encode()
        self.chain_key = next_chain_key
        self.iteration += 1
        return encoded

    # --- receiving ----------------------------------------------------------------------

    def take_message_seed(self, iteration: int) -> bytes:
        """The seed of ``iteration``, advancing this state past it (skipped seeds are kept,
        at most MAX_SKIPPED_KEYS; at most MAX_JUMP derived). Call it on a clone: it changes
        the state even if the message then fails to decrypt."""
        if iteration < self.iteration:
            seed = self.skipped.pop(iteration, None)
            if seed is None:
                # The stored form does not record evicted keys, so a message whose skipped
                # key was evicted is reported the same way as a replay.
                raise ProtocolError(
                    ErrorCode.DUPLICATE_MESSAGE,
                    f"iteration {iteration} was already received (or its key was evicted)",
                )
            return seed
        SkipBudget().spend(iteration - self.iteration)
        while self.iteration < iteration:
            seed, self.chain_key = kdf_ck(self.chain_key)
            self.skipped[self.iteration] = seed
            self.iteration += 1
            if len(self.skipped) > MAX_SKIPPED_KEYS:
                self.skipped.popitem(last=False)
        seed, self.chain_key = kdf_ck(self.chain_key)
        self.iteration += 1
        return seed


class SenderKeyRecord:
    """The sender keys of one device in one group, newest first (at most
    MAX_SENDER_KEY_STATES). A receiver keeps one per (group_id, sender, sender_device); the
    sender keeps its own chain in one too (a single state with its signing seed)."""

    __slots__ = ("states",)

    def __init__(self, states: list[SenderKeyState] | None = None) -> None:
        self.states: list[SenderKeyState] = states or []

    def state_for(self, key_id: int) -> SenderKeyState | None:
        for state in self.states:
            if state.key_id == key_id:
                return state
        return None

    def process_distribution(self, distribution: SenderKeyDistribution) -> None:
        """Keep a key received over a pairwise session from the device this record is for.

        The same key again (same key_id and signing key) changes nothing, even if it names
        another iteration: the chain we hold may already have moved past it, and going back
        would let a replayed distribution make old messages decryptable twice. It only
        becomes the newest again. A new key_id is added as the newest; the oldest beyond
        MAX_SENDER_KEY_STATES is dropped.
        """
        incoming = SenderKeyState.from_distribution(distribution)
        existing = self.state_for(incoming.key_id)
        if existing is not None:
            self.states.remove(existing)
            if p.constant_time_equal(existing.signing_public, incoming.signing_public):
                incoming = existing
        self.states.insert(0, incoming)
        del self.states[MAX_SENDER_KEY_STATES:]

    def decrypt(self, message: SenderKeyMessage | bytes) -> bytes:
        """The padded plaintext of a group message; the record is unchanged on any error.

        The caller looks the record up by the message's group_id and the sender and device
        named by the relay's DELIVER.
        """
        if not isinstance(message, SenderKeyMessage):
            message = SenderKeyMessage.decode(message)
        index = next(
            (i for i, state in enumerate(self.states) if state.key_id == message.key_id), None
        )
        if index is None:
            raise ProtocolError(
                ErrorCode.NO_SESSION,
                f"no sender key {message.key_id} for this device: ask the sender for its key",
            )
        state = self.states[index]
        p.ed25519_verify(state.signing_public, message.signed_bytes(), message.signature)
        candidate = state.clone()
        key, nonce = sender_message_key(candidate.take_message_seed(message.iteration))
        plaintext = p.aead_decrypt(key, nonce, message.ciphertext, message.header())
        self.states[index] = candidate
        return plaintext

    # --- stored form --------------------------------------------------------------------

    def encode(self) -> bytes:
        """0x01 | count varint | count × state (docs/protocol.md 17.2). Holds secrets."""
        w = Writer().u8(RECORD_FORMAT).varint(len(self.states))
        for state in self.states:
            w.varint(state.key_id).varint(state.iteration)
            w.fixed(state.chain_key, CHAIN_KEY_BYTES)
            w.fixed(state.signing_public, p.ED25519_PUBLIC_BYTES)
            if state.signing_seed is None:
                w.u8(0)
            else:
                w.u8(1).fixed(state.signing_seed, p.ED25519_SEED_BYTES)
            w.varint(len(state.skipped))
            for iteration, seed in state.skipped.items():
                w.varint(iteration).fixed(seed, 32)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> SenderKeyRecord:
        r = Reader(data)
        if (fmt := r.u8("record format")) != RECORD_FORMAT:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"sender key record format {fmt}")
        states: list[SenderKeyState] = []
        for _ in range(r.varint("state count", maximum=MAX_SENDER_KEY_STATES)):
            key_id = r.varint("key_id", maximum=MAX_SENDER_KEY_ID)
            if key_id == 0:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "key_id must not be 0")
            if any(state.key_id == key_id for state in states):
                raise ProtocolError(ErrorCode.INVALID_VALUE, f"key_id {key_id} is stored twice")
            iteration = r.varint("iteration", maximum=_EXHAUSTED)
            state = SenderKeyState(
                key_id,
                iteration,
                r.fixed(CHAIN_KEY_BYTES, "chain_key"),
                r.fixed(p.ED25519_PUBLIC_BYTES, "signing_public"),
            )
            has_seed = r.u8("has_seed")
            if has_seed > 1:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "has_seed must be 0 or 1")
            if has_seed:
                state.signing_seed = r.fixed(p.ED25519_SEED_BYTES, "signing seed")
            previous = -1
            for _ in range(r.varint("skipped count", maximum=MAX_SKIPPED_KEYS)):
                skipped_iteration = r.varint("skipped iteration", maximum=MAX_SENDER_KEY_ITERATION)
                if not previous < skipped_iteration < iteration:
                    raise ProtocolError(
                        ErrorCode.INVALID_VALUE,
                        "skipped iterations must increase and stay below the state's iteration",
                    )
                state.skipped[skipped_iteration] = r.fixed(32, "skipped message seed")
                previous = skipped_iteration
            states.append(state)
        r.end("sender key record")
        return cls(states)
