"""A session with one remote device: the ratchet states and the rules around them.

A ``SessionRecord`` holds the current ratchet state and up to MAX_ARCHIVED_STATES earlier
ones. Two devices that start sessions with each other at the same moment end up with two
states each; decryption tries every state, and the one that works becomes current, so the
pair converges on one session without losing a message (as libsignal does).

Until the initiator receives a reply, it sends every message as a PreKeyMessage carrying
the same setup fields, so that any one of them, in any order, can establish the session on
the responder even if the first is lost. The responder recognises repeats by the base key
and decrypts them with the session they already set up; that needs the base key to have
one spelling, so decoders refuse one with its top bit set (``keys.read_x25519_public_key``).

Failure never changes the record: decryption runs on a clone of a state and the clone is
kept only if the AEAD accepts the message. What the caller must do after a successful
decryption (delete a consumed one-time prekey, warn about a new identity) comes back in
``Decrypted``: this module performs no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from . import primitives as p
from .encoding import Reader, Writer
from .errors import ErrorCode, ProtocolError
from .keys import DeviceCertificate, DeviceKeys, PreKeyBundle, Rng
from .limits import MAX_ARCHIVED_STATES
from .messages import MessageKind, PreKeyMessage, RatchetMessage, peek_kind
from .pqxdh import Encapsulate, initiate, respond
from .ratchet import PendingPreKey, RatchetState, SkipBudget

RECORD_FORMAT = 1


class PreKeyStore(Protocol):
    """The responder's private prekeys, looked up by id (implemented by the client's store)."""

    def signed_prekey(self, key_id: int) -> bytes | None: ...

    def one_time_prekey(self, key_id: int) -> bytes | None: ...

    def kem_prekey(self, key_id: int) -> tuple[bytes, bool] | None:
        """(seed, is_last_resort) or None."""
        ...


@dataclass(frozen=True, slots=True)
class Decrypted:
    plaintext: bytes
    # Set when this message set up a new session from a PreKeyMessage:
    sender_account_key: bytes | None = None
    sender_certificate: DeviceCertificate | None = None
    # Prekeys the caller must now delete (one-time keys are never used twice):
    consumed_one_time_prekey_id: int | None = None
    consumed_kem_prekey_id: int | None = None


class SessionRecord:
    __slots__ = ("states",)

    def __init__(self, states: list[RatchetState] | None = None) -> None:
        self.states: list[RatchetState] = states or []

    @property
    def current(self) -> RatchetState | None:
        return self.states[0] if self.states else None

    def _promote(self, index: int, state: RatchetState) -> None:
        del self.states[index]
        self.states.insert(0, state)
        del self.states[1 + MAX_ARCHIVED_STATES :]

    def _add(self, state: RatchetState) -> None:
        self.states.insert(0, state)
        del self.states[1 + MAX_ARCHIVED_STATES :]

    # --- starting ---------------------------------------------------------------------

    @classmethod
    def initiate(
        cls,
        own_device: DeviceKeys,
        bundle: PreKeyBundle,
        existing: SessionRecord | None = None,
        rng: Rng = p.random_bytes,
        encapsulate: Encapsulate = p.mlkem768_encapsulate,
    ) -> SessionRecord:
        """Start a new session from a (verified here) bundle; earlier states are archived."""
        setup = initiate(own_device, bundle, rng=rng, encapsulate=encapsulate)
        pending = PendingPreKey(
            sender_account_key=own_device.account_key,
            sender_certificate=own_device.certificate,
            signed_prekey_id=setup.signed_prekey_id,
            one_time_prekey_id=setup.one_time_prekey_id,
            kem_prekey_id=setup.kem_prekey_id,
            kem_ciphertext=setup.kem_ciphertext,
        )
        state = RatchetState.initiator(
            setup.root_key,
            setup.associated_data,
            setup.base_key,
            setup.remote_identity_key,
            setup.remote_signed_prekey,
            pending,
            rng=rng,
        )
        record = cls(list(existing.states) if existing else [])
        record._add(state)
        return record

    # --- sending ----------------------------------------------------------------------

    def encrypt(self, plaintext: bytes) -> bytes:
        state = self.current
        if state is None:
            raise ProtocolError(ErrorCode.NO_SESSION, "no session with this device")
        message = state.encrypt(plaintext)
        pending = state.pending_prekey
        if pending is None:
            return message.encode()
        return PreKeyMessage(
            sender_account_key=pending.sender_account_key,
            sender_certificate=pending.sender_certificate,
            base_key=state.base_key,
            signed_prekey_id=pending.signed_prekey_id,
            one_time_prekey_id=pending.one_time_prekey_id,
            kem_prekey_id=pending.kem_prekey_id,
            kem_ciphertext=pending.kem_ciphertext,
            message=message,
        ).encode()

    # --- receiving --------------------------------------------------------------------

    def decrypt(
        self,
        data: bytes,
        own_device: DeviceKeys,
        prekeys: PreKeyStore,
        trusted_account_key: bytes | None = None,
        rng: Rng = p.random_bytes,
    ) -> Decrypted:
        """Decrypt one message from the remote device; the record changes only on success.

        ``trusted_account_key`` is the sender's account key the caller already trusts (None
        on first contact); a PreKeyMessage signed by another key raises UNTRUSTED_IDENTITY.
        """
        kind = peek_kind(data)
        if kind is MessageKind.RATCHET:
            return Decrypted(self._decrypt_with_states(RatchetMessage.decode(data), rng))
        prekey_message = PreKeyMessage.decode(data)
        if trusted_account_key is not None and not p.constant_time_equal(
            trusted_account_key, prekey_message.sender_account_key
        ):
            raise ProtocolError(
                ErrorCode.UNTRUSTED_IDENTITY, "the sender's account identity key has changed"
            )
        for state in self.states:
            if p.constant_time_equal(state.base_key, prekey_message.base_key):
                # A repeat of a setup we already accepted: plain ratchet decryption.
                return Decrypted(self._decrypt_with_states(prekey_message.message, rng))
        return self._accept_new_session(prekey_message, own_device, prekeys, rng)

    def _decrypt_with_states(self, message: RatchetMessage, rng: Rng) -> bytes:
        if not self.states:
            raise ProtocolError(ErrorCode.NO_SESSION, "no session with this device")
        first_error: ProtocolError | None = None
        budget = SkipBudget()
        for index, state in enumerate(self.states):
            candidate = state.clone()
            try:
                plaintext = candidate.decrypt(message, rng, budget)
            except ProtocolError as exc:
                if exc.code is ErrorCode.DUPLICATE_MESSAGE:
                    # Some state already received it: that is the answer, whatever the
                    # states before it said (libsignal does the same).
                    raise
                first_error = first_error or exc
                continue
            if index == 0:
                self.states[0] = candidate
            else:
                self._promote(index, candidate)
            return plaintext
        raise first_error or ProtocolError(ErrorCode.NO_SESSION, "no session")

    def _accept_new_session(
        self, message: PreKeyMessage, own_device: DeviceKeys, prekeys: PreKeyStore, rng: Rng
    ) -> Decrypted:
        signed = prekeys.signed_prekey(message.signed_prekey_id)
        if signed is None:
            raise ProtocolError(
                ErrorCode.PREKEY_NOT_FOUND, f"signed prekey {message.signed_prekey_id} is unknown"
            )
        one_time = None
        if message.one_time_prekey_id is not None:
            one_time = prekeys.one_time_prekey(message.one_time_prekey_id)
            if one_time is None:
                raise ProtocolError(
                    ErrorCode.PREKEY_NOT_FOUND,
                    f"one-time prekey {message.one_time_prekey_id} is unknown or already used",
                )
        kem = prekeys.kem_prekey(message.kem_prekey_id)
        if kem is None:
            raise ProtocolError(
                ErrorCode.PREKEY_NOT_FOUND,
                f"KEM prekey {message.kem_prekey_id} is unknown or already used",
            )
        kem_seed, last_resort = kem
        root_key, associated_data = respond(own_device, message, signed, one_time, kem_seed)
        state = RatchetState.responder(
            root_key,
            associated_data,
            message.base_key,
            message.sender_certificate.identity_key,
            signed,
        )
        plaintext = state.decrypt(message.message, rng)  # raises before anything is kept
        self._add(state)
        return Decrypted(
            plaintext,
            sender_account_key=message.sender_account_key,
            sender_certificate=message.sender_certificate,
            consumed_one_time_prekey_id=message.one_time_prekey_id,
            consumed_kem_prekey_id=None if last_resort else message.kem_prekey_id,
        )

    # --- serialisation ----------------------------------------------------------------

    def encode(self) -> bytes:
        w = Writer().u8(RECORD_FORMAT).varint(len(self.states))
        for state in self.states:
            w.bytes_(state.encode())
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> SessionRecord:
        r = Reader(data)
        if (fmt := r.u8("record format")) != RECORD_FORMAT:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"session record format {fmt}")
        count = r.varint("state count", maximum=1 + MAX_ARCHIVED_STATES)
        states = [RatchetState.decode(r.bytes_("state", maximum=1 << 20)) for _ in range(count)]
        r.end("session record")
        return cls(states)
