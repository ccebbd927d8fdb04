"""Write protocol/vectors/*.json: known-answer vectors for every layout and KDF.

Deterministic: run it twice and the files are byte-identical (tests/protocol/test_vectors.py
checks that the committed files equal a fresh run). Another implementation (the web
client) proves byte-exact agreement by reproducing every output from the recorded inputs.

Randomness. Every key is made from recorded seeds. Where the protocol draws randomness
mid-flight (the initiator's base key, the ML-KEM encapsulation message m, each new ratchet
key) it draws from a test stream, consumed in order, 32 bytes per draw:

    block_i = SHA-256(stream_seed | u64be(i)), i = 0, 1, ...; the stream is their concatenation

ML-KEM encapsulation is deterministic given m (FIPS 203, ML-KEM.Encaps_internal). pyca/
cryptography does not expose that, so this script alone uses kyber-py for it; the tests
check each recorded ciphertext with pyca's decapsulation.

Usage: python scripts/make_vectors.py [--check]   (--check: exit 1 if the files differ)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kyber_py.ml_kem import ML_KEM_768  # noqa: E402

from protocol import primitives as p  # noqa: E402
from protocol.content import Text, encode_content  # noqa: E402
from protocol.encoding import encode_varint  # noqa: E402
from protocol.errors import ErrorCode, ProtocolError  # noqa: E402
from protocol.frames import (  # noqa: E402
    Ack,
    Deliver,
    DeviceMessage,
    DeviceMismatch,
    Error,
    Frame,
    FrameStream,
    Notice,
    NoticeKind,
    Ping,
    Pong,
    QueueEmpty,
    Send,
    SendFlags,
    SendOk,
    decode_frame,
    encode_frame,
)
from protocol.keys import (  # noqa: E402
    AccountIdentity,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    SignedPreKeyPair,
)
from protocol.limits import MAX_SKIPPED_KEYS  # noqa: E402
from protocol.messages import PreKeyMessage  # noqa: E402
from protocol.padding import pad, padme_length  # noqa: E402
from protocol.pqxdh import derive_root_key  # noqa: E402
from protocol.ratchet import kdf_ck, kdf_rk, message_key_material  # noqa: E402
from protocol.safety import safety_number  # noqa: E402
from protocol.session import SessionRecord  # noqa: E402

OUT = ROOT / "protocol" / "vectors"


class TestStream:
    """The deterministic randomness stream described in the module docstring."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.index = 0
        self.buffer = b""

    def __call__(self, length: int) -> bytes:
        while len(self.buffer) < length:
            self.buffer += p.sha256(self.seed + self.index.to_bytes(8, "big"))
            self.index += 1
        out, self.buffer = self.buffer[:length], self.buffer[length:]
        return out


def seed(label: str, length: int = 32) -> bytes:
    """A fixed input derived from a readable label, so the vectors need no magic hex."""
    return TestStream(label.encode())(length)


def deterministic_encapsulate(stream: TestStream) -> Callable[[bytes], tuple[bytes, bytes]]:
    def encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
        m = stream(32)
        shared, ciphertext = ML_KEM_768._encaps_internal(public_key, m)
        return ciphertext, shared

    return encapsulate


def h(data: bytes) -> str:
    return data.hex()


# --- parties ----------------------------------------------------------------------------


class Party:
    """A device with recorded seeds for every key, and an in-memory prekey store."""

    def __init__(self, name: str, device_id: int, registration_id: int) -> None:
        self.name = name
        self.account = AccountIdentity.from_seed(seed(f"{name}/account"))
        device_seeds = TestStream(f"{name}/device".encode())
        self.device = DeviceKeys.create(
            self.account, device_id, rng=device_seeds, registration_id=registration_id
        )
        self.signed = SignedPreKeyPair.generate(
            self.device, 1, rng=TestStream(f"{name}/spk".encode())
        )
        self.one_time = OneTimePreKeyPair.generate(100, rng=TestStream(f"{name}/opk".encode()))
        self.kem = KemPreKeyPair.generate(
            self.device, 200, last_resort=False, rng=TestStream(f"{name}/kem".encode())
        )
        self.last_resort = KemPreKeyPair.generate(
            self.device, 201, last_resort=True, rng=TestStream(f"{name}/kem-lr".encode())
        )
        self.used: set[int] = set()

    def bundle(self, with_one_time: bool = True, last_resort: bool = False) -> PreKeyBundle:
        return PreKeyBundle(
            self.account.public_key,
            self.device.certificate,
            self.signed.public,
            self.one_time.public if with_one_time else None,
            (self.last_resort if last_resort else self.kem).public,
        )

    # PreKeyStore
    def signed_prekey(self, key_id: int) -> bytes | None:
        return self.signed.private_key if key_id == self.signed.public.key_id else None

    def one_time_prekey(self, key_id: int) -> bytes | None:
        if key_id == self.one_time.public.key_id and key_id not in self.used:
            return self.one_time.private_key
        return None

    def kem_prekey(self, key_id: int) -> tuple[bytes, bool] | None:
        for pair in (self.kem, self.last_resort):
            if key_id == pair.public.key_id and key_id not in self.used:
                return pair.seed, pair.public.last_resort
        return None

    def describe(self) -> dict[str, Any]:
        d = self.device
        return {
            "username": self.name,
            "account_seed": h(self.account.seed),
            "account_public_key": h(self.account.public_key),
            "device_id": d.device_id,
            "registration_id": d.certificate.registration_id,
            "device_signing_seed": h(d.signing_seed),
            "device_identity_private": h(d.identity_private),
            "device_certificate": h(d.certificate.encode()),
            "signed_prekey": {
                "private": h(self.signed.private_key),
                "encoded": h(self.signed.public.encode()),
            },
            "one_time_prekey": {
                "private": h(self.one_time.private_key),
                "encoded": h(self.one_time.public.encode()),
            },
            "kem_prekey": {"seed": h(self.kem.seed), "encoded": h(self.kem.public.encode())},
            "last_resort_kem_prekey": {
                "seed": h(self.last_resort.seed),
                "encoded": h(self.last_resort.public.encode()),
            },
            "bundle": h(self.bundle().encode()),
            "bundle_without_one_time_last_resort": h(
                self.bundle(with_one_time=False, last_resort=True).encode()
            ),
        }


# --- vector files -----------------------------------------------------------------------


def encoding_vectors() -> dict[str, Any]:
    values = [0, 1, 127, 128, 255, 300, 16383, 16384, 2**32 - 1, 2**63 - 1]
    invalid = {
        "8000": "non_minimal_varint",
        "ff00": "non_minimal_varint",
        "80": "truncated",
        "ffffffffffffffffff01": "varint_overflow",
        "ffffffffffffffff80": "varint_overflow",
    }
    return {
        "description": "Unsigned LEB128 varints, minimal form, at most 9 bytes (2**63 - 1).",
        "varints": [{"value": v, "encoded": h(encode_varint(v))} for v in values],
        "invalid_varints": [{"encoded": k, "error": v} for k, v in invalid.items()],
    }


def kdf_vectors() -> dict[str, Any]:
    root, dh = seed("kdf/root"), seed("kdf/dh")
    new_root, chain = kdf_rk(root, dh)
    message_key, next_chain = kdf_ck(chain)
    key, nonce = message_key_material(message_key)
    dhs = [seed(f"kdf/dh{i}") for i in range(1, 5)]
    kem_secret = seed("kdf/kem")
    return {
        "description": "Ratchet and session-setup KDFs (docs/protocol.md, sections 5 and 6).",
        "kdf_rk": {
            "root_key": h(root),
            "dh_output": h(dh),
            "new_root_key": h(new_root),
            "chain_key": h(chain),
        },
        "kdf_ck": {
            "chain_key": h(chain),
            "message_key": h(message_key),
            "next_chain_key": h(next_chain),
        },
        "message_keys": {"message_key": h(message_key), "aead_key": h(key), "nonce": h(nonce)},
        "pqxdh_root_key": [
            {
                "dh_outputs": [h(x) for x in dhs[:3]],
                "kem_shared_secret": h(kem_secret),
                "root_key": h(derive_root_key(dhs[:3], kem_secret)),
            },
            {
                "dh_outputs": [h(x) for x in dhs],
                "kem_shared_secret": h(kem_secret),
                "root_key": h(derive_root_key(dhs, kem_secret)),
            },
        ],
    }


def keys_vectors(alice: Party, bob: Party) -> dict[str, Any]:
    return {
        "description": (
            "Keys from seeds, certificates, prekeys and bundles. Private keys are raw: "
            "X25519 scalar, Ed25519 32-byte seed, ML-KEM-768 64-byte seed. Each party's "
            "device keys come from TestStream('<name>/device'): signing seed, then identity "
            "private key."
        ),
        "parties": [alice.describe(), bob.describe()],
    }


def content_vectors() -> dict[str, Any]:
    lengths = [1, 2, 3, 9, 16, 17, 100, 255, 1000, 4097, 65537]
    texts = ["", "hello", "Grüße, 世界 👋", "x" * 300]
    return {
        "description": "Padmé lengths, and TEXT content encodings with and without padding.",
        "padme": [{"length": n, "padded": padme_length(n)} for n in lengths],
        "pad": [
            {"data": h(b"abc"), "hide_length": False, "padded": h(pad(b"abc", False))},
            {"data": h(b"a" * 20), "hide_length": True, "padded": h(pad(b"a" * 20, True))},
        ],
        "text": [
            {
                "body": text,
                "sent_at_ms": 1_795_000_000_000 + i,
                "hide_length": hide,
                "encoded": h(encode_content(Text(text, 1_795_000_000_000 + i), hide)),
            }
            for i, text in enumerate(texts)
            for hide in (False, True)
        ],
    }


def session_vectors() -> dict[str, Any]:
    """A full conversation, with out-of-order delivery both ways; and a second one
    (``eviction_and_archive_conversation``) for evicted keys and archived states."""
    alice, bob = Party("alice", 1, 1111), Party("bob", 1, 2222)
    alice_stream, bob_stream = TestStream(b"alice/session"), TestStream(b"bob/session")
    alice_record = SessionRecord.initiate(
        alice.device,
        bob.bundle(),
        rng=alice_stream,
        encapsulate=deterministic_encapsulate(alice_stream),
    )
    bob_record = SessionRecord()
    records = {"alice": alice_record, "bob": bob_record}
    parties = {"alice": alice, "bob": bob}
    streams = {"alice": alice_stream, "bob": bob_stream}
    sent: list[bytes] = []
    steps: list[dict[str, Any]] = []

    def send(who: str, text: str, at: int) -> None:
        plaintext = encode_content(Text(text, at), hide_length=len(sent) % 2 == 1)
        message = records[who].encrypt(plaintext)
        steps.append(
            {
                "op": "encrypt",
                "by": who,
                "index": len(sent),
                "plaintext": h(plaintext),
                "message": h(message),
            }
        )
        sent.append(message)

    def receive(who: str, index: int, expect_error: ErrorCode | None = None) -> None:
        step: dict[str, Any] = {"op": "decrypt", "by": who, "index": index}
        try:
            result = records[who].decrypt(
                sent[index], parties[who].device, parties[who], rng=streams[who]
            )
        except ProtocolError as exc:
            assert exc.code is expect_error, (exc, expect_error)
            step["error"] = exc.code.slug
        else:
            assert expect_error is None
            step["plaintext"] = h(result.plaintext)
            for used in (result.consumed_one_time_prekey_id, result.consumed_kem_prekey_id):
                if used is not None:
                    parties[who].used.add(used)
        steps.append(step)

    t = 1_795_000_000_000
    send("alice", "hello bob", t)  # 0: prekey message
    send("alice", "are you there?", t + 1)  # 1: prekey message
    receive("bob", 1)  # out of order: the second sets up the session
    receive("bob", 0)
    receive("bob", 0, ErrorCode.DUPLICATE_MESSAGE)
    send("bob", "hi alice", t + 2)  # 2
    send("bob", "yes", t + 3)  # 3
    send("bob", "three", t + 4)  # 4
    receive("alice", 4)
    receive("alice", 2)
    send("alice", "ratchet message now", t + 5)  # 5: ratchet message (a reply arrived)
    receive("bob", 5)
    receive("alice", 3)
    send("alice", "two", t + 6)  # 6
    send("alice", "turns", t + 7)  # 7
    send("bob", "crossing", t + 8)  # 8
    receive("alice", 8)
    receive("bob", 7)
    receive("bob", 6)
    receive("bob", 6, ErrorCode.DUPLICATE_MESSAGE)
    send("bob", "done", t + 9)  # 9
    receive("alice", 9)
    return {
        "description": (
            "A conversation between alice and bob (parties as in keys.json). Alice initiates "
            "from bob's bundle (with one-time prekey 100 and one-time KEM prekey 200). Each "
            "party draws randomness from TestStream('<name>/session'): alice's initiation "
            "draws the base key, then the ML-KEM message m, then her first ratchet key; each "
            "DH ratchet step on receipt draws the new ratchet key. Plaintexts alternate "
            "unpadded/padded. Replay steps carry the expected error."
        ),
        "alice_bundle_used": "bundle of bob in keys.json",
        "steps": steps,
        "final_records": {
            "alice": h(records["alice"].encode()),
            "bob": h(records["bob"].encode()),
        },
        "eviction_and_archive": eviction_and_archive_conversation(),
    }


def flip_top_bit(data: bytes, offset: int) -> bytes:
    """``data`` with the top bit of the X25519 key at ``offset`` set (it is always clear)."""
    out = bytearray(data)
    out[offset + 31] |= 0x80
    return bytes(out)


def eviction_and_archive_conversation() -> dict[str, Any]:
    """A second conversation: skipped keys evicted (too_many_skipped, ranges in
    ``discarded``), a second session from a second bundle (an archived state), promotion of
    the archived state on both sides, and messages whose X25519 keys are not canonical.

    Only delivered messages are recorded; every encryption is recorded as a batch (how many
    messages, SHA-256 of their concatenation), which is enough to reproduce and check it.
    """
    alice, bob = Party("alice", 1, 1111), Party("bob", 1, 2222)
    streams = {"alice": TestStream(b"alice/session2"), "bob": TestStream(b"bob/session2")}
    parties = {"alice": alice, "bob": bob}
    records = {"alice": SessionRecord(), "bob": SessionRecord()}
    sent: list[bytes] = []
    delivered: dict[str, str] = {}
    invalid: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    start_ms = 1_795_000_100_000

    def plaintext(who: str, index: int) -> bytes:
        return encode_content(Text(f"{who} {index}", start_ms + index), hide_length=index % 2 == 1)

    def initiate(bundle: str) -> None:
        chosen = bob.bundle() if bundle == "bundle" else bob.bundle(False, last_resort=True)
        records["alice"] = SessionRecord.initiate(
            alice.device,
            chosen,
            existing=records["alice"],
            rng=streams["alice"],
            encapsulate=deterministic_encapsulate(streams["alice"]),
        )
        steps.append({"op": "initiate", "by": "alice", "bundle": bundle})

    def send(who: str, count: int) -> None:
        first = len(sent)
        batch = [records[who].encrypt(plaintext(who, first + i)) for i in range(count)]
        sent.extend(batch)
        steps.append(
            {
                "op": "encrypt",
                "by": who,
                "first_index": first,
                "count": count,
                "sha256": h(p.sha256(b"".join(batch))),
            }
        )

    def receive(who: str, index: int, expect_error: ErrorCode | None = None) -> None:
        step: dict[str, Any] = {"op": "decrypt", "by": who, "index": index}
        delivered[str(index)] = h(sent[index])
        deliver(who, sent[index], step, expect_error)

    def receive_invalid(who: str, of: int, field: str, offset: int) -> None:
        """A copy of message ``of`` whose ``field`` (an X25519 key) has its top bit set."""
        data = flip_top_bit(sent[of], offset)
        invalid.append(
            {
                "description": f"message {of} with the top bit of its {field} set",
                "of": of,
                "kind": "prekey" if data[0] == 0x12 else "ratchet",
                "encoded": h(data),
                "error": ErrorCode.BAD_KEY.slug,
                "message": f"{field} is not a canonical X25519 key",
            }
        )
        step = {"op": "decrypt", "by": who, "invalid": len(invalid) - 1}
        deliver(who, data, step, ErrorCode.BAD_KEY)

    def deliver(
        who: str, data: bytes, step: dict[str, Any], expect_error: ErrorCode | None
    ) -> None:
        before = records[who].encode()
        try:
            result = records[who].decrypt(data, parties[who].device, parties[who], rng=streams[who])
        except ProtocolError as exc:
            assert exc.code is expect_error, (exc, expect_error)
            assert records[who].encode() == before
            step["error"] = exc.code.slug
        else:
            assert expect_error is None, step
            step["plaintext"] = h(result.plaintext)
            for used in (result.consumed_one_time_prekey_id, result.consumed_kem_prekey_id):
                if used is not None:
                    parties[who].used.add(used)
        steps.append(step)

    total = MAX_SKIPPED_KEYS + 3
    # Session 1, from bob's bundle with one-time prekeys. The last message first: it skips
    # total - 1 keys, and the two oldest (0 and 1) are evicted.
    initiate("bundle")
    send("alice", total)  # 0 .. 2002, all PreKeyMessages
    receive("bob", total - 1)
    receive("bob", 0, ErrorCode.TOO_MANY_SKIPPED)  # its key was evicted
    receive("bob", 2)  # a kept skipped key
    receive("bob", 2, ErrorCode.DUPLICATE_MESSAGE)
    # Session 2, from the bundle without a one-time X25519 or KEM prekey: nothing is
    # consumed, so only the base key tells a repeat from a new setup. Bob archives session 1.
    initiate("bundle_without_one_time_last_resort")
    send("alice", 1)  # 2003
    receive("bob", total)
    # 0x12 | sender_account_key[32] | certificate | base_key[32] | ...
    base_key_offset = 1 + 32 + len(alice.device.certificate.encode())
    assert sent[total][base_key_offset:][:32] == PreKeyMessage.decode(sent[total]).base_key
    receive_invalid("bob", total, "base_key", base_key_offset)  # was accepted as a new session
    receive("bob", total, ErrorCode.DUPLICATE_MESSAGE)
    send("bob", 1)  # 2004
    receive("alice", total + 1)
    send("alice", 1)  # 2005, a RatchetMessage
    receive("bob", total + 2)
    receive_invalid("bob", total + 2, "ratchet_key", 1)
    # A late message of session 1: Bob's archived state decrypts it and becomes current;
    # his reply on it makes Alice promote her archived state too.
    receive("bob", 1000)
    send("bob", 1)  # 2006
    receive("alice", total + 3)
    # Alice's new chain on session 1: 5 messages, the last first. Its 4 skipped keys evict
    # the two oldest of session 1's first chain (3 and 4; 2 was used): a second range.
    send("alice", 5)  # 2007 .. 2011
    receive("bob", total + 8)
    receive("bob", 3, ErrorCode.TOO_MANY_SKIPPED)
    receive("bob", 5)
    receive("bob", total + 5)
    receive("bob", total + 5, ErrorCode.DUPLICATE_MESSAGE)

    bob_record = records["bob"].encode()
    current = records["bob"].current
    assert current is not None and len(records["bob"].states) == 2
    chain, ranges = next(iter(current.discarded.items()))
    assert ranges == [[0, 1], [3, 4]], ranges
    return {
        "description": (
            "A second conversation, as the first (parties of keys.json) but with randomness "
            "from TestStream('<name>/session2'). Alice sends MAX_SKIPPED_KEYS + 3 messages; bob "
            "receives the last first (the two oldest skipped keys are evicted), an evicted one "
            "(too_many_skipped), a kept one, and a replay. Alice then starts a second session "
            "from bob's bundle without one-time prekeys (bob archives the first); bob promotes "
            "the first session again when a late message of it arrives, alice when his answer "
            "on it arrives. Each "
            "'initiate' step makes alice start a session from the named bundle of bob's in "
            "keys.json, archiving her current one: it draws the base key, the ML-KEM message "
            "m, then her first ratchet key. Message i by sender s has as plaintext the TEXT "
            "content '<s> <i>' with sent_at_ms first_sent_at_ms + i, padded when i is odd. "
            "An 'encrypt' step encrypts 'count' messages in turn, numbered from "
            "'first_index'; 'sha256' is the SHA-256 of their concatenation. 'messages' holds "
            "every delivered message by index; a 'decrypt' step with 'invalid' delivers that "
            "entry of 'invalid_messages' (a delivered message with the top bit of an X25519 "
            "key set) instead. Bob's final record is given as the SHA-256 of its encoding "
            "(it holds about 2,000 skipped keys), its length, and its current state's "
            "discarded ranges."
        ),
        "max_skipped_keys": MAX_SKIPPED_KEYS,
        "first_sent_at_ms": start_ms,
        "steps": steps,
        "messages": delivered,
        "invalid_messages": invalid,
        "final": {
            "bob_record_sha256": h(p.sha256(bob_record)),
            "bob_record_length": len(bob_record),
            "bob_states": len(records["bob"].states),
            "bob_current_base_key": h(current.base_key),
            "bob_current_discarded": [{"chain": h(chain), "ranges": ranges}],
            "alice_record_sha256": h(p.sha256(records["alice"].encode())),
        },
    }


def frame_vectors() -> dict[str, Any]:
    frames: list[Frame] = [
        Send(
            7,
            "bob",
            (DeviceMessage(1, 2222, b"\x11" + b"c" * 60), DeviceMessage(2, 3333, b"\x12abc")),
        ),
        Send(8, "bob", (DeviceMessage(1, 2222, b"typing"),), SendFlags.EPHEMERAL),
        SendOk(7, 1_795_000_000_123),
        DeviceMismatch(7, (3,), (2,), (1,)),
        Deliver(42, "alice", 1, 1_795_000_000_456, b"\x11payload"),
        Ack(0, (42, 43, 1000)),
        QueueEmpty(),
        Error(9, ErrorCode.CIPHERTEXT_TOO_LARGE, "payload for device 1 is 98305 bytes"),
        Notice(NoticeKind.PREKEYS_LOW, 9),
        Ping(5),
        Pong(5),
    ]
    valid = []
    for frame in frames:
        encoded = encode_frame(frame)
        assert decode_frame(encoded) == frame
        fields = {
            k: (h(v) if isinstance(v, bytes) else v)
            for k, v in ((s, getattr(frame, s)) for s in frame.__slots__)
            if k != "messages"
        }
        if isinstance(frame, Send):
            fields["messages"] = [
                {
                    "device_id": m.device_id,
                    "registration_id": m.registration_id,
                    "payload": h(m.payload),
                }
                for m in frame.messages
            ]
        for key, value in list(fields.items()):
            if isinstance(value, tuple):
                fields[key] = list(value)
            elif hasattr(value, "value"):
                fields[key] = int(value)
        valid.append({"type": frame.type.name, "fields": fields, "encoded": h(encoded)})
    # (hex, expected error): version | type | request_id | body
    invalid = {
        "": "truncated",
        "02": "unsupported_version",
        "0163": "unknown_type",
        "0101": "truncated",
        "010100": "invalid_value",  # SEND needs a request id
        "010101034d617202": "invalid_username",  # "Mar": upper case
        "01010103626f62020101010111": "invalid_value",  # unknown flag 2
        "01010103626f620000": "invalid_value",  # no devices
        "01010103626f62000101000111": "invalid_value",  # registration id 0
        "0101010362 6f62 0001 01 01 8380 06".replace(" ", ""): "ciphertext_too_large",
        "01060000": "trailing_bytes",
        "01050000": "invalid_value",  # empty ack
        "0101 8000".replace(" ", ""): "non_minimal_varint",
        "010900": "invalid_value",  # PING needs a request id
    }
    stream = b"".join(FrameStream.encode(f) for f in frames[:3])
    return {
        "description": (
            "Transport frames: version u8 | type u8 | request_id varint | body. 'invalid' "
            "lists encodings that must be rejected, with the error. 'stream' is frames 0-2 "
            "length-prefixed as on a byte stream."
        ),
        "valid": valid,
        "invalid": [{"encoded": k, "error": v} for k, v in invalid.items()],
        "stream": h(stream),
    }


def safety_vectors() -> dict[str, Any]:
    alice = AccountIdentity.from_seed(seed("alice/account"))
    bob = AccountIdentity.from_seed(seed("bob/account"))
    number = safety_number("alice", alice.public_key, "bob", bob.public_key)
    return {
        "description": "Safety number of alice and bob's account keys (keys.json).",
        "cases": [
            {
                "own_username": "alice",
                "own_account_key": h(alice.public_key),
                "their_username": "bob",
                "their_account_key": h(bob.public_key),
                "digits": number.digits,
                "qr_payload": h(number.qr_payload),
            }
        ],
    }


def error_code_vectors() -> dict[str, Any]:
    return {
        "description": "The ErrorCode enum (protocol/errors.py): number and slug.",
        "codes": [{"code": int(c), "slug": c.slug} for c in ErrorCode],
    }


def build() -> dict[str, dict[str, Any]]:
    alice, bob = Party("alice", 1, 1111), Party("bob", 1, 2222)
    return {
        "encoding.json": encoding_vectors(),
        "kdf.json": kdf_vectors(),
        "keys.json": keys_vectors(alice, bob),
        "content.json": content_vectors(),
        "session.json": session_vectors(),
        "frames.json": frame_vectors(),
        "safety_number.json": safety_vectors(),
        "error_codes.json": error_code_vectors(),
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, document in build().items():
        path = OUT / name
        text = render(document)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)} ({len(text):,} bytes)")
    if stale:
        print(f"stale vectors (run `make vectors`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
