"""The Double Ratchet (Signal specification, revision 4, sections 3.2–3.5).

KDFs (docs/protocol.md, "Double Ratchet"):

    KDF_RK(rk, dh_out) = HKDF-SHA256(ikm=dh_out, salt=rk, info="Sealpost v1 ratchet", 64)
                         -> new root key (first 32 bytes), chain key (last 32)
    KDF_CK(ck)         = message key HMAC-SHA256(ck, 0x01), next chain key HMAC-SHA256(ck, 0x02)
    message key mk     -> HKDF-SHA256(ikm=mk, salt=0x00*32, info="Sealpost v1 message", 56)
                         -> XChaCha20-Poly1305 key (32) and nonce (24)

Each message key is used once, so a nonce derived from it is never reused and need not
travel on the wire. The AEAD's associated data is the session's AD (both sides' account
and device identity keys) followed by the message header, so the header is authenticated.

``decrypt`` never changes the state it is called on unless the message authenticates:
callers work on ``clone()`` and keep the clone only on success (see session.py).

Bounds: at most MAX_SKIPPED_KEYS stored skipped keys (oldest evicted; a message that
arrives after its key was evicted is reported as TOO_MANY_SKIPPED, never silently as a
duplicate), at most MAX_JUMP keys derived for one message across every state a session
record tries, and the last PREVIOUS_CHAINS_KEPT receiving ratchet keys are remembered so a
replay from an old chain is reported as a duplicate.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from . import primitives as p
from .encoding import Reader, Writer
from .errors import ErrorCode, ProtocolError
from .keys import MAX_KEY_ID, DeviceCertificate, Rng
from .limits import MAX_JUMP, MAX_SKIPPED_KEYS
from .messages import MAX_COUNTER, RatchetMessage

ROOT_INFO = b"Sealpost v1 ratchet"
MESSAGE_INFO = b"Sealpost v1 message"
ZERO_SALT = b"\x00" * 32
PREVIOUS_CHAINS_KEPT = 5
MAX_DISCARDED_RANGES = 256  # per chain
STATE_FORMAT = 1


class SkipBudget:
    """How many skipped message keys one decryption may still derive (MAX_JUMP in all)."""

    __slots__ = ("remaining",)

    def __init__(self, remaining: int = MAX_JUMP) -> None:
        self.remaining = remaining

    def spend(self, count: int) -> None:
        if count > self.remaining:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SKIPPED,
                f"message would skip {count} keys; the limit is {MAX_JUMP} per message",
            )
        self.remaining -= count


def kdf_rk(root_key: bytes, dh_output: bytes) -> tuple[bytes, bytes]:
    out = p.hkdf_sha256(dh_output, root_key, ROOT_INFO, 64)
    return out[:32], out[32:]


def kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    """Returns (message key, next chain key)."""
    return p.hmac_sha256(chain_key, b"\x01"), p.hmac_sha256(chain_key, b"\x02")


def message_key_material(message_key: bytes) -> tuple[bytes, bytes]:
    out = p.hkdf_sha256(message_key, ZERO_SALT, MESSAGE_INFO, 56)
    return out[:32], out[32:]


@dataclass(slots=True)
class PendingPreKey:
    """Set on the initiator until the first reply: every message is sent as a PreKeyMessage."""

    sender_account_key: bytes
    sender_certificate: DeviceCertificate
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int
    kem_ciphertext: bytes


@dataclass(slots=True)
class RatchetState:
    associated_data: bytes
    base_key: bytes  # the initiator's ephemeral key: names the session on both sides
    remote_identity_key: bytes
    root_key: bytes
    sending_private: bytes
    sending_public: bytes
    receiving_key: bytes | None = None
    sending_chain: bytes | None = None
    receiving_chain: bytes | None = None
    send_counter: int = 0
    receive_counter: int = 0
    previous_sending_length: int = 0
    skipped: OrderedDict[tuple[bytes, int], bytes] = field(default_factory=OrderedDict)
    previous_receiving_keys: list[bytes] = field(default_factory=list)
    # Per kept receiving chain, the counters whose skipped keys were evicted, as sorted
    # inclusive [start, end] ranges: such a late message is reported as lost
    # (TOO_MANY_SKIPPED), a real replay as DUPLICATE_MESSAGE.
    discarded: dict[bytes, list[list[int]]] = field(default_factory=dict)
    pending_prekey: PendingPreKey | None = None

    # --- construction (Signal spec 3.3) ---------------------------------------------------

    @classmethod
    def initiator(
        cls,
        root_key: bytes,
        associated_data: bytes,
        base_key: bytes,
        remote_identity_key: bytes,
        remote_ratchet_key: bytes,
        pending: PendingPreKey,
        rng: Rng = p.random_bytes,
    ) -> RatchetState:
        sending_private = rng(p.X25519_KEY_BYTES)
        new_root, chain = kdf_rk(root_key, p.x25519(sending_private, remote_ratchet_key))
        return cls(
            associated_data=associated_data,
            base_key=base_key,
            remote_identity_key=remote_identity_key,
            root_key=new_root,
            sending_private=sending_private,
            sending_public=p.x25519_public_key(sending_private),
            receiving_key=remote_ratchet_key,
            sending_chain=chain,
            pending_prekey=pending,
        )

    @classmethod
    def responder(
        cls,
        root_key: bytes,
        associated_data: bytes,
        base_key: bytes,
        remote_identity_key: bytes,
        signed_prekey_private: bytes,
    ) -> RatchetState:
        return cls(
            associated_data=associated_data,
            base_key=base_key,
            remote_identity_key=remote_identity_key,
            root_key=root_key,
            sending_private=signed_prekey_private,
            sending_public=p.x25519_public_key(signed_prekey_private),
        )

    def clone(self) -> RatchetState:
        return RatchetState(
            associated_data=self.associated_data,
            base_key=self.base_key,
            remote_identity_key=self.remote_identity_key,
            root_key=self.root_key,
            sending_private=self.sending_private,
            sending_public=self.sending_public,
            receiving_key=self.receiving_key,
            sending_chain=self.sending_chain,
            receiving_chain=self.receiving_chain,
            send_counter=self.send_counter,
            receive_counter=self.receive_counter,
            previous_sending_length=self.previous_sending_length,
            skipped=OrderedDict(self.skipped),
            previous_receiving_keys=list(self.previous_receiving_keys),
            discarded={k: [list(r) for r in v] for k, v in self.discarded.items()},
            pending_prekey=self.pending_prekey,
        )

    @property
    def can_send(self) -> bool:
        return self.sending_chain is not None

    # --- encrypt / decrypt ----------------------------------------------------------------

    def encrypt(self, plaintext: bytes) -> RatchetMessage:
        if self.sending_chain is None:
            raise ProtocolError(ErrorCode.NO_SESSION, "this session cannot send before it receives")
        if self.send_counter > MAX_COUNTER:
            raise ProtocolError(ErrorCode.TOO_LARGE, "sending chain exhausted")
        message_key, self.sending_chain = kdf_ck(self.sending_chain)
        header_only = RatchetMessage(
            self.sending_public, self.previous_sending_length, self.send_counter, b""
        )
        key, nonce = message_key_material(message_key)
        ciphertext = p.aead_encrypt(
            key, nonce, plaintext, self.associated_data + header_only.header()
        )
        self.send_counter += 1
        return RatchetMessage(
            header_only.ratchet_key,
            header_only.previous_chain_length,
            header_only.counter,
            ciphertext,
        )

    def decrypt(
        self,
        message: RatchetMessage,
        rng: Rng = p.random_bytes,
        budget: SkipBudget | None = None,
    ) -> bytes:
        """Decrypt, advancing this state. On any error this state may be half-advanced:
        call it on a clone and discard the clone on failure.

        ``budget`` bounds the message keys derived for skipped messages; a SessionRecord
        shares one budget across all the states it tries, so one forged message costs at
        most MAX_JUMP key derivations in all.
        """
        budget = budget if budget is not None else SkipBudget()
        slot = (message.ratchet_key, message.counter)
        if slot in self.skipped:
            plaintext = self._open(self.skipped[slot], message)
            del self.skipped[slot]
            return plaintext
        known_chain = message.ratchet_key in self.previous_receiving_keys or (
            message.ratchet_key == self.receiving_key and self.receiving_chain is not None
        )
        if known_chain and (
            message.ratchet_key != self.receiving_key or message.counter < self.receive_counter
        ):
            ranges = self.discarded.get(message.ratchet_key, ())
            if any(start <= message.counter <= end for start, end in ranges):
                raise ProtocolError(
                    ErrorCode.TOO_MANY_SKIPPED,
                    f"message {message.counter} arrived after its key was discarded "
                    f"(more than {MAX_SKIPPED_KEYS} messages were skipped)",
                )
            raise ProtocolError(
                ErrorCode.DUPLICATE_MESSAGE, f"message {message.counter} was already received"
            )
        if not known_chain:
            self._skip_until(message.previous_chain_length, budget)
            self._dh_ratchet(message.ratchet_key, rng)
        self._skip_until(message.counter, budget)
        if self.receiving_chain is None:  # unreachable: _dh_ratchet always sets it
            raise ProtocolError(ErrorCode.NO_SESSION, "no receiving chain")
        message_key, self.receiving_chain = kdf_ck(self.receiving_chain)
        self.receive_counter += 1
        return self._open(message_key, message)

    def _open(self, message_key: bytes, message: RatchetMessage) -> bytes:
        key, nonce = message_key_material(message_key)
        plaintext = p.aead_decrypt(
            key, nonce, message.ciphertext, self.associated_data + message.header()
        )
        # Any authenticated message proves the peer has this session: stop sending prekeys.
        self.pending_prekey = None
        return plaintext

    def _skip_until(self, until: int, budget: SkipBudget) -> None:
        if self.receiving_chain is None or until <= self.receive_counter:
            return
        budget.spend(until - self.receive_counter)
        ratchet_key = self.receiving_key or b""
        while self.receive_counter < until:
            message_key, self.receiving_chain = kdf_ck(self.receiving_chain)
            self.skipped[(ratchet_key, self.receive_counter)] = message_key
            self.receive_counter += 1
            if len(self.skipped) > MAX_SKIPPED_KEYS:
                (old_key, old_counter), _ = self.skipped.popitem(last=False)
                # Only chains we still recognise can be told apart from new ones; a
                # message from an older chain fails as a DH step anyway.
                if old_key == self.receiving_key or old_key in self.previous_receiving_keys:
                    self._note_discarded(old_key, old_counter)

    def _note_discarded(self, ratchet_key: bytes, counter: int) -> None:
        # A chain's keys are evicted in counter order, so a range only ever grows at its end.
        ranges = self.discarded.setdefault(ratchet_key, [])
        if ranges and ranges[-1][1] + 1 == counter:
            ranges[-1][1] = counter
        else:
            ranges.append([counter, counter])
            # Bounded: past the cap the oldest ranges are forgotten, and a replay from them
            # is reported as a duplicate again.
            del ranges[:-MAX_DISCARDED_RANGES]

    def _dh_ratchet(self, remote_ratchet_key: bytes, rng: Rng) -> None:
        if self.receiving_key is not None and self.receiving_chain is not None:
            self.previous_receiving_keys.append(self.receiving_key)
            del self.previous_receiving_keys[:-PREVIOUS_CHAINS_KEPT]
            kept = set(self.previous_receiving_keys)
            self.discarded = {k: v for k, v in self.discarded.items() if k in kept}
        self.previous_sending_length = self.send_counter
        self.send_counter = 0
        self.receive_counter = 0
        self.receiving_key = remote_ratchet_key
        self.root_key, self.receiving_chain = kdf_rk(
            self.root_key, p.x25519(self.sending_private, remote_ratchet_key)
        )
        self.sending_private = rng(p.X25519_KEY_BYTES)
        self.sending_public = p.x25519_public_key(self.sending_private)
        self.root_key, self.sending_chain = kdf_rk(
            self.root_key, p.x25519(self.sending_private, remote_ratchet_key)
        )

    # --- serialisation --------------------------------------------------------------------

    def encode(self) -> bytes:
        """Versioned binary form for the client's local store (holds secrets: keep it local)."""
        w = Writer().u8(STATE_FORMAT).bytes_(self.associated_data)
        w.fixed(self.base_key, 32).fixed(self.remote_identity_key, 32).fixed(self.root_key, 32)
        w.fixed(self.sending_private, 32).fixed(self.sending_public, 32)
        for optional in (self.receiving_key, self.sending_chain, self.receiving_chain):
            if optional is None:
                w.u8(0)
            else:
                w.u8(1).fixed(optional, 32)
        w.varint(self.send_counter).varint(self.receive_counter)
        w.varint(self.previous_sending_length)
        w.varint(len(self.previous_receiving_keys))
        for key in self.previous_receiving_keys:
            w.fixed(key, 32)
        w.varint(len(self.skipped))
        for (ratchet_key, counter), message_key in self.skipped.items():
            w.fixed(ratchet_key, 32).varint(counter).fixed(message_key, 32)
        w.varint(len(self.discarded))
        for ratchet_key, ranges in self.discarded.items():
            w.fixed(ratchet_key, 32).varint(len(ranges))
            for start, end in ranges:
                w.varint(start).varint(end - start)
        pending = self.pending_prekey
        if pending is None:
            w.u8(0)
        else:
            w.u8(1).fixed(pending.sender_account_key, 32).raw(pending.sender_certificate.encode())
            w.varint(pending.signed_prekey_id).varint(pending.one_time_prekey_id or 0)
            w.varint(pending.kem_prekey_id).fixed(
                pending.kem_ciphertext, p.MLKEM768_CIPHERTEXT_BYTES
            )
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> RatchetState:
        r = Reader(data)
        if (fmt := r.u8("state format")) != STATE_FORMAT:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"session state format {fmt}")
        ad = r.bytes_("associated_data", maximum=256)
        state = cls(
            associated_data=ad,
            base_key=r.fixed(32, "base_key"),
            remote_identity_key=r.fixed(32, "remote_identity_key"),
            root_key=r.fixed(32, "root_key"),
            sending_private=r.fixed(32, "sending_private"),
            sending_public=r.fixed(32, "sending_public"),
        )
        optional: list[bytes | None] = []
        for what in ("receiving_key", "sending_chain", "receiving_chain"):
            flag = r.u8(what)
            if flag > 1:
                raise ProtocolError(ErrorCode.INVALID_VALUE, f"{what} flag must be 0 or 1")
            optional.append(r.fixed(32, what) if flag else None)
        state.receiving_key, state.sending_chain, state.receiving_chain = optional
        state.send_counter = r.varint("send_counter", maximum=MAX_COUNTER + 1)
        state.receive_counter = r.varint("receive_counter", maximum=MAX_COUNTER + 1)
        state.previous_sending_length = r.varint("previous_sending_length", maximum=MAX_COUNTER + 1)
        for _ in range(r.varint("previous keys", maximum=PREVIOUS_CHAINS_KEPT)):
            state.previous_receiving_keys.append(r.fixed(32, "previous receiving key"))
        for _ in range(r.varint("skipped keys", maximum=MAX_SKIPPED_KEYS)):
            ratchet_key = r.fixed(32, "skipped ratchet key")
            counter = r.varint("skipped counter", maximum=MAX_COUNTER)
            state.skipped[(ratchet_key, counter)] = r.fixed(32, "skipped message key")
        for _ in range(r.varint("discarded chains", maximum=PREVIOUS_CHAINS_KEPT + 1)):
            ratchet_key = r.fixed(32, "discarded chain key")
            ranges: list[list[int]] = []
            for _ in range(r.varint("discarded ranges", maximum=MAX_DISCARDED_RANGES)):
                start = r.varint("discarded start", maximum=MAX_COUNTER)
                end = start + r.varint("discarded length", maximum=MAX_COUNTER - start)
                ranges.append([start, end])
            state.discarded[ratchet_key] = ranges
        flag = r.u8("pending prekey")
        if flag > 1:
            raise ProtocolError(ErrorCode.INVALID_VALUE, "pending prekey flag must be 0 or 1")
        if flag:
            account_key = r.fixed(32, "pending account key")
            certificate = DeviceCertificate.read(r)
            spk = r.varint("pending signed prekey id", maximum=MAX_KEY_ID)
            opk = r.varint("pending one-time prekey id", maximum=MAX_KEY_ID)
            kem = r.varint("pending kem prekey id", maximum=MAX_KEY_ID)
            ct = r.fixed(p.MLKEM768_CIPHERTEXT_BYTES, "pending kem ciphertext")
            state.pending_prekey = PendingPreKey(
                account_key, certificate, spk, opk or None, kem, ct
            )
        r.end("session state")
        return state
