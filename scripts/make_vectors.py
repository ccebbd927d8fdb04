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

import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kyber_py.ml_kem import ML_KEM_768  # noqa: E402

from protocol import primitives as p  # noqa: E402
from protocol.attachments import (  # noqa: E402
    CHUNK_BYTES,
    blob_size,
    chunk_count,
    chunk_nonce,
    encrypt_attachment,
)
from protocol.content import (  # noqa: E402
    Attachment,
    AttachmentFlags,
    Content,
    Expiring,
    GroupAction,
    GroupUpdate,
    HistoryChunk,
    HistoryRecord,
    Receipt,
    ReceiptKind,
    SenderKeyDistribution,
    SentContent,
    SentTranscript,
    Text,
    TimerUpdate,
    Typing,
    TypingAction,
    encode_content,
    split_history,
)
from protocol.devicelist import SignedDeviceList, certificate_digest, check_devices  # noqa: E402
from protocol.encoding import Writer, encode_varint  # noqa: E402
from protocol.errors import ErrorCode, ProtocolError  # noqa: E402
from protocol.frames import (  # noqa: E402
    Ack,
    Deliver,
    DeviceMessage,
    DeviceMismatch,
    Error,
    Frame,
    FrameStream,
    GroupSend,
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
from protocol.groups import RosterEntry, group_id_hex, roster_digest  # noqa: E402
from protocol.keys import (  # noqa: E402
    AccountIdentity,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    SignedPreKeyPair,
)
from protocol.limits import MAX_JUMP, MAX_SKIPPED_KEYS  # noqa: E402
from protocol.messages import PreKeyMessage  # noqa: E402
from protocol.padding import pad, padme_length  # noqa: E402
from protocol.pqxdh import derive_root_key  # noqa: E402
from protocol.provisioning import LinkCode, ProvisionMessage, open_sealed, seal  # noqa: E402
from protocol.ratchet import kdf_ck, kdf_rk, message_key_material  # noqa: E402
from protocol.safety import safety_number  # noqa: E402
from protocol.senderkeys import (  # noqa: E402
    SenderKeyMessage,
    SenderKeyRecord,
    SenderKeyState,
    sender_message_key,
)
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
        "description": (
            "Padmé lengths; TEXT and SENT content encodings with and without padding; HISTORY "
            "chunks (see history.description); 'receipts': RECEIPT contents (kind 1 delivered, "
            "2 read; items are the acknowledged sent_at values); 'contents': one or more of "
            "each content type 5-11 (docs/protocol.md 17.4), 'type' naming the Python class and "
            "'fields' its fields (bytes as hex, enums as numbers, an inner content as "
            "{type, fields}); 'invalid': content bodies decode_content refuses, padded."
        ),
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
        "sent": [
            {
                "destination": destination,
                "body": body,
                "sent_at_ms": 1_795_000_000_100 + i,
                "hide_length": hide,
                "encoded": h(
                    encode_content(SentTranscript(destination, body, 1_795_000_000_100 + i), hide)
                ),
            }
            for i, (destination, body) in enumerate(
                [("bob", "hello bob"), ("carol", "Grüße, 世界 👋"), ("alice", "")]
            )
            for hide in (False, True)
        ],
        "history": history_vectors(),
        "receipts": receipt_vectors(),
        "contents": [
            {
                "type": type(content).__name__,
                "fields": describe_content(content),
                "hide_length": hide,
                "encoded": h(encode_content(content, hide)),
            }
            for content, hide in contents_of_section_17()
        ],
        "invalid": [
            {"description": description, "encoded": h(pad(raw, False)), "error": error.slug}
            for description, raw, error in invalid_contents()
        ],
    }


def receipt_vectors() -> list[dict[str, Any]]:
    out = []
    cases = [
        (ReceiptKind.DELIVERED, (1_795_000_000_000,), 1_795_000_000_500, False),
        (ReceiptKind.READ, (1_795_000_000_000, 1_795_000_000_001, 127, 128), 0, True),
        (ReceiptKind.READ, tuple(range(100)), 2**63 - 1, False),
    ]
    for kind, items, sent_at, hide in cases:
        encoded = encode_content(Receipt(kind, items, sent_at), hide)
        out.append(
            {
                "kind": int(kind),
                "items": list(items),
                "sent_at_ms": sent_at,
                "hide_length": hide,
                "encoded": h(encoded),
            }
        )
    return out


def section_17_pointer(sent_at: int) -> Attachment:
    return Attachment(
        blob_id=seed("content/blob_id", 16),
        key=seed("content/attachment_key"),
        size=200_000,
        digest=seed("content/digest"),
        content_type="image/jpeg",
        sent_at_ms=sent_at,
        file_name="Grüße.jpg",
        width=640,
        height=480,
        thumbnail=b"\xff\xd8\xff\xe0thumb",
        caption="the view",
    )


def contents_of_section_17() -> list[tuple[Content, bool]]:
    t = 1_795_000_000_200
    group_id = seed("content/group_id", 16)
    voice = Attachment(
        blob_id=bytes(16),
        key=bytes(32),
        size=0,
        digest=bytes(32),
        content_type="audio/ogg",
        sent_at_ms=t + 3,
        flags=AttachmentFlags.VOICE,
        duration_ms=4_500,
    )
    return [
        (Typing(TypingAction.STARTED, t), False),
        (Typing(TypingAction.STOPPED, t + 1), True),
        (
            SenderKeyDistribution(
                group_id, 0x7FFF_FFFF, 3, seed("content/chain"), seed("content/signing"), t + 2
            ),
            False,
        ),
        (section_17_pointer(t + 2), False),
        (voice, True),
        (GroupUpdate(group_id, GroupAction.CREATED, "Climbing 🧗", 0, ("bob", "carol"), t), False),
        (GroupUpdate(group_id, GroupAction.SNAPSHOT, "", 604_800, (), t), True),
        (GroupUpdate(group_id, GroupAction.LEFT, "x" * 256, 31_536_000, ("alice",), t), False),
        (TimerUpdate(0, t), False),
        (TimerUpdate(86_400, t), False),
        (Expiring(3_600, Text("gone soon", t + 4), t + 4), False),
        (Expiring(31_536_000, section_17_pointer(t + 5), t + 5), True),
        (SentContent("bob", section_17_pointer(t + 6), t + 6), False),
        (SentContent("carol", Expiring(60, Text("", t + 7), t + 7), t + 7), False),
        (SentContent("dave", TimerUpdate(0, t + 8), t + 8), True),
    ]


def describe_content(content: Content) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in content.__slots__:
        value = getattr(content, name)
        if isinstance(value, bytes):
            value = h(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, int):
            value = int(value)
        elif not isinstance(value, str):
            value = {"type": type(value).__name__, "fields": describe_content(value)}
        fields[name] = value
    return fields


# History records of content.json: record i is HISTORY_RULE below, with n = HISTORY_LENGTHS[i].
HISTORY_LENGTHS = [2, 0, 500, 15000, 15000, 10000, 32766, 1, 20000, 5]
HISTORY_RULE = (
    "record i: peer 'bob' if i is even else 'carol', outgoing if i % 3 == 0, sent_at_ms "
    "1795000000000 + 1000 * i, text '#<i> ' followed by n times 'é' (U+00E9), n = lengths[i]"
)


def history_records() -> list[HistoryRecord]:
    return [
        HistoryRecord(
            "bob" if i % 2 == 0 else "carol",
            i % 3 == 0,
            1_795_000_000_000 + 1000 * i,
            f"#{i} " + "é" * n,
        )
        for i, n in enumerate(HISTORY_LENGTHS)
    ]


def history_vectors() -> dict[str, Any]:
    records = history_records()
    transfer_id = seed("history/transfer", 16)
    sent_at = 1_795_000_001_000
    chunks = split_history(records, transfer_id, sent_at)
    small = HistoryChunk(transfer_id, 1, 3, tuple(records[:2]), sent_at)
    empty = HistoryChunk(transfer_id, 0, 1, (), sent_at)
    return {
        "description": (
            "HISTORY content. 'records' are built by 'rule' from 'lengths'; split_history cuts "
            "them (transfer_id, sent_at_ms) into 'chunks', each given by its index, total, how "
            "many records it holds (in order), and the SHA-256 and length of its encoding with "
            "hide_length true. 'small' and 'empty' are chunks given in full (unpadded)."
        ),
        "rule": HISTORY_RULE,
        "lengths": HISTORY_LENGTHS,
        "transfer_id": h(transfer_id),
        "sent_at_ms": sent_at,
        "chunks": [
            {
                "index": chunk.index,
                "total": chunk.total,
                "record_count": len(chunk.records),
                "encoded_sha256": h(p.sha256(encode_content(chunk, True))),
                "encoded_length": len(encode_content(chunk, True)),
            }
            for chunk in chunks
        ],
        "small": {
            "index": 1,
            "total": 3,
            "records": "records 0 and 1",
            "encoded": h(encode_content(small)),
        },
        "empty": {"index": 0, "total": 1, "encoded": h(encode_content(empty))},
    }


def invalid_contents() -> list[tuple[str, bytes, ErrorCode]]:
    """Content bodies (before padding) that decode_content refuses."""
    t = 1_795_000_000_000
    transfer = bytes(16)

    def history(index: int, total: int, records: bytes, tail: bytes = b"") -> bytes:
        w = Writer().u8(4).varint(t).raw(transfer).varint(index).varint(total).bytes_(records)
        return w.getvalue() + tail

    record = Writer().varint(1).str_("bob").u8(1).varint(t).str_("hi").getvalue()
    group = bytes(range(16))

    def body(kind: int, *parts: bytes) -> bytes:
        return Writer().u8(kind).varint(t).getvalue() + b"".join(parts)

    def v(value: int) -> bytes:
        return encode_varint(value)

    def s(text: str) -> bytes:
        return Writer().str_(text).getvalue()

    pointer = encode_content(section_17_pointer(t))[1 + len(v(t)) : -1]  # body, unpadded
    pointer_head = bytes(16) + bytes(32) + v(5) + bytes(32)  # blob_id, key, size, digest
    pointer_tail = s("a") + s("") + v(0) * 3 + v(0) + s("")
    return [
        ("content type 12", Writer().u8(12).varint(t).getvalue(), ErrorCode.UNKNOWN_TYPE),
        ("TYPING action 2", body(5, b"\x02"), ErrorCode.INVALID_VALUE),
        ("TYPING without an action", body(5), ErrorCode.TRUNCATED),
        ("TYPING with a byte after the action", body(5, b"\x01\x00"), ErrorCode.TRAILING_BYTES),
        (
            "SENDER_KEY key_id 0",
            body(6, group, v(0), v(0), bytes(32), bytes(32)),
            ErrorCode.INVALID_VALUE,
        ),
        (
            "SENDER_KEY key_id 2**31",
            body(6, group, v(2**31), v(0), bytes(32), bytes(32)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "SENDER_KEY iteration 2**32",
            body(6, group, v(1), v(2**32), bytes(32), bytes(32)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "SENDER_KEY signing key cut short",
            body(6, group, v(1), v(0), bytes(32), bytes(31)),
            ErrorCode.TRUNCATED,
        ),
        (
            "ATTACHMENT size 104,857,601",
            body(7, bytes(48), v(104_857_601)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "ATTACHMENT flag 0x02",
            body(7, pointer_head, b"\x02", pointer_tail),
            ErrorCode.INVALID_VALUE,
        ),
        (
            "ATTACHMENT content_type of 129 bytes",
            body(7, pointer_head, b"\x00", s("a" * 129)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "ATTACHMENT file_name of 256 bytes",
            body(7, pointer_head, b"\x00", s("a"), s("f" * 256)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "ATTACHMENT thumbnail of 65,537 bytes",
            body(7, pointer_head, b"\x00", s("a"), s(""), v(0) * 3, v(65_537)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "ATTACHMENT caption of 4,097 bytes",
            body(7, pointer_head, b"\x00", s("a"), s(""), v(0) * 3, v(0), s("c" * 4097)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "ATTACHMENT with a byte after the caption",
            body(7, pointer, b"\x00"),
            ErrorCode.TRAILING_BYTES,
        ),
        (
            "ATTACHMENT without a caption",
            body(7, pointer_head, b"\x00", s("a"), s(""), v(0) * 3, v(0)),
            ErrorCode.TRUNCATED,
        ),
        (
            "GROUP_UPDATE action 8",
            body(8, group, b"\x08", s("g"), v(0), v(0)),
            ErrorCode.INVALID_VALUE,
        ),
        (
            "GROUP_UPDATE action 0",
            body(8, group, b"\x00", s("g"), v(0), v(0)),
            ErrorCode.INVALID_VALUE,
        ),
        (
            "GROUP_UPDATE name of 257 bytes",
            body(8, group, b"\x01", s("n" * 257)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "GROUP_UPDATE timer 31,536,001",
            body(8, group, b"\x01", s("g"), v(31_536_001)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "GROUP_UPDATE 1,001 targets",
            body(8, group, b"\x02", s("g"), v(0), v(1001)),
            ErrorCode.TOO_LARGE,
        ),
        (
            "GROUP_UPDATE target not a username",
            body(8, group, b"\x02", s("g"), v(0), v(1), s("Bob")),
            ErrorCode.INVALID_USERNAME,
        ),
        (
            "GROUP_UPDATE with fewer targets than counted",
            body(8, group, b"\x02", s("g"), v(0), v(2), s("bob")),
            ErrorCode.TRUNCATED,
        ),
        ("TIMER 31,536,001", body(9, v(31_536_001)), ErrorCode.TOO_LARGE),
        ("TIMER with a byte after it", body(9, v(60), b"\x00"), ErrorCode.TRAILING_BYTES),
        ("EXPIRING timer 0", body(10, v(0), b"\x01hi"), ErrorCode.INVALID_VALUE),
        ("EXPIRING timer 31,536,001", body(10, v(31_536_001), b"\x01hi"), ErrorCode.TOO_LARGE),
        (
            "EXPIRING holding a RECEIPT",
            body(10, v(60), b"\x02\x01\x01\x05"),
            ErrorCode.INVALID_VALUE,
        ),
        (
            "EXPIRING holding an EXPIRING",
            body(10, v(60), b"\x0a", v(60), b"\x01hi"),
            ErrorCode.INVALID_VALUE,
        ),
        ("EXPIRING holding type 99", body(10, v(60), b"\x63"), ErrorCode.INVALID_VALUE),
        ("EXPIRING without an inner type", body(10, v(60)), ErrorCode.TRUNCATED),
        ("EXPIRING text not UTF-8", body(10, v(60), b"\x01\xff"), ErrorCode.INVALID_UTF8),
        ("SENT_CONTENT holding a TEXT", body(11, s("bob"), b"\x01hi"), ErrorCode.INVALID_VALUE),
        ("SENT_CONTENT holding a TYPING", body(11, s("bob"), b"\x05\x01"), ErrorCode.INVALID_VALUE),
        (
            "SENT_CONTENT to an invalid username",
            body(11, s("Bob"), b"\x09\x00"),
            ErrorCode.INVALID_USERNAME,
        ),
        (
            "SENT_CONTENT timer 0 with a byte after it",
            body(11, s("bob"), b"\x09\x00\x00"),
            ErrorCode.TRAILING_BYTES,
        ),
        (
            "SENT_CONTENT of an EXPIRING of a TEXT is fine, but of an EXPIRING timer 0 is not",
            body(11, s("bob"), b"\x0a", v(0), b"\x01hi"),
            ErrorCode.INVALID_VALUE,
        ),
        (
            "SENT to an invalid username",
            Writer().u8(3).varint(t).str_("Bob").raw(b"x").getvalue(),
            ErrorCode.INVALID_USERNAME,
        ),
        (
            "SENT text not UTF-8",
            Writer().u8(3).varint(t).str_("bob").raw(b"\xff").getvalue(),
            ErrorCode.INVALID_UTF8,
        ),
        ("SENT without a destination", Writer().u8(3).varint(t).getvalue(), ErrorCode.TRUNCATED),
        ("HISTORY index equal to total", history(2, 2, record), ErrorCode.INVALID_VALUE),
        ("HISTORY total 0", history(0, 0, record), ErrorCode.INVALID_VALUE),
        ("HISTORY total above MAX_HISTORY_CHUNKS", history(0, 10_001, record), ErrorCode.TOO_LARGE),
        (
            "HISTORY record direction 2",
            history(0, 1, Writer().varint(1).str_("bob").u8(2).varint(t).str_("hi").getvalue()),
            ErrorCode.INVALID_VALUE,
        ),
        (
            "HISTORY record with an invalid peer",
            history(0, 1, Writer().varint(1).str_("9lives").u8(0).varint(t).str_("hi").getvalue()),
            ErrorCode.INVALID_USERNAME,
        ),
        (
            "HISTORY records with a byte left over",
            history(0, 1, record + b"\x00"),
            ErrorCode.TRAILING_BYTES,
        ),
        (
            "HISTORY with a byte after the records",
            history(0, 1, record, b"\x00"),
            ErrorCode.TRAILING_BYTES,
        ),
        (
            "HISTORY with fewer records than counted",
            history(0, 1, Writer().varint(2).str_("bob").u8(0).varint(t).str_("hi").getvalue()),
            ErrorCode.TRUNCATED,
        ),
        (
            "HISTORY with a short transfer_id",
            Writer().u8(4).varint(t).raw(bytes(15)).getvalue(),
            ErrorCode.TRUNCATED,
        ),
    ]


# --- several devices: device lists and linking ----------------------------------------------


def device_list_vectors() -> dict[str, Any]:
    alice, bob = Party("alice", 1, 1111), Party("bob", 1, 2222)
    account = alice.account
    devices = {
        "alice_1": alice.device,
        "alice_2": DeviceKeys.create(
            account, 2, rng=TestStream(b"alice/device2"), registration_id=1112
        ),
        "alice_3": DeviceKeys.create(
            account, 3, rng=TestStream(b"alice/device3"), registration_id=1113
        ),
        # Device 2 again, certified by alice's key but never listed (a server-made twin).
        "alice_2_twin": DeviceKeys.create(
            account, 2, rng=TestStream(b"alice/device2-twin"), registration_id=1112
        ),
        # Certified by bob's key, served as alice's device 4.
        "forged_4": DeviceKeys.create(
            bob.account, 4, rng=TestStream(b"mallory/device4"), registration_id=4444
        ),
    }
    certificates = {name: d.certificate for name, d in devices.items()}
    t = 1_795_000_000_000

    def sign(
        by: AccountIdentity, username: str, version: int, names: list[str]
    ) -> SignedDeviceList:
        return SignedDeviceList.sign(
            by, username, version, t + version, [certificates[n] for n in names]
        )

    lists = {
        "v1": sign(account, "alice", 1, ["alice_1"]),
        "v2": sign(account, "alice", 2, ["alice_2", "alice_1"]),
        "v3": sign(account, "alice", 3, ["alice_1", "alice_3"]),
        "for_bob": sign(account, "bob", 4, ["alice_1"]),
        "by_bob": sign(bob.account, "alice", 5, ["alice_1"]),
    }
    checks = []

    def check(name: str, served: list[str], newest: int = 0, username: str = "alice") -> None:
        case: dict[str, Any] = {
            "list": name,
            "username": username,
            "served": served,
            "newest_seen_version": newest,
        }
        try:
            result = check_devices(
                account.public_key,
                username,
                SignedDeviceList.decode(lists[name].encode()),
                [certificates[n] for n in served],
                newest,
            )
        except ProtocolError as exc:
            case["error"] = exc.code.slug
        else:
            case["accepted"] = [c.device_id for c in result.accepted]
            case["refused"] = list(result.refused)
            case["unlisted_missing"] = list(result.unlisted_missing)
        checks.append(case)

    check("v2", ["alice_1", "alice_2"])
    check("v2", ["alice_1", "alice_2"], newest=2)
    check("v3", ["alice_1", "alice_2", "alice_3"], newest=2)  # 2 revoked, still served
    check("v3", ["alice_1", "alice_2_twin", "alice_3"])  # a twin of a listed device id
    check("v3", ["alice_1", "alice_3", "forged_4"])  # certified by another account
    check("v3", ["alice_1"])  # listed, not served
    check("v2", ["alice_1", "alice_2"], newest=3)  # a replayed older list
    check("for_bob", ["alice_1"])
    check("for_bob", ["alice_1"], username="bob")
    check("by_bob", ["alice_1"])

    def raw_list(username: str, ids: list[int], count: int | None = None) -> bytes:
        w = Writer().str_(username).varint(1).varint(t).varint(len(ids) if count is None else count)
        for device_id in ids:
            w.varint(device_id).varint(1000 + device_id).fixed(bytes(32), 32)
        return w.getvalue() + bytes(64)

    v1 = lists["v1"].encode()
    invalid = [
        ("devices out of order", raw_list("alice", [2, 1]), ErrorCode.INVALID_VALUE),
        ("a device listed twice", raw_list("alice", [1, 1]), ErrorCode.INVALID_VALUE),
        ("device id 0", raw_list("alice", [0]), ErrorCode.INVALID_VALUE),
        ("device id above MAX_DEVICE_ID", raw_list("alice", [0x10000]), ErrorCode.TOO_LARGE),
        ("65 devices", raw_list("alice", [], count=65), ErrorCode.TOO_LARGE),
        ("an invalid username", raw_list("Alice", [1]), ErrorCode.INVALID_USERNAME),
        ("no signature", v1[:-64], ErrorCode.TRUNCATED),
        ("a byte short", v1[:-1], ErrorCode.TRUNCATED),
        ("a byte too many", v1 + b"\x00", ErrorCode.TRAILING_BYTES),
    ]
    for _, data, code in invalid:
        try:
            SignedDeviceList.decode(data)
        except ProtocolError as exc:
            assert exc.code is code, (exc, code)
        else:
            raise AssertionError(f"decoded: {data.hex()}")
    return {
        "description": (
            "Signed device lists of alice's account (keys.json). Each device's keys come from "
            "TestStream(<seed>) with the registration id given; a list is signed with the "
            "account seed of 'signed_by' over the named certificates, issued_at_ms "
            "1795000000000 + version. 'checks' run check_devices with alice's account key: "
            "accepted and refused device ids, ids listed but not served, or the error. "
            "'invalid' are encodings SignedDeviceList.decode refuses."
        ),
        "accounts": {
            "alice": {"seed": h(account.seed), "public_key": h(account.public_key)},
            "bob": {"seed": h(bob.account.seed), "public_key": h(bob.account.public_key)},
        },
        "devices": {
            name: {
                "account": "bob" if name == "forged_4" else "alice",
                "seed": {
                    "alice_1": "alice/device",
                    "alice_2": "alice/device2",
                    "alice_3": "alice/device3",
                    "alice_2_twin": "alice/device2-twin",
                    "forged_4": "mallory/device4",
                }[name],
                "device_id": d.device_id,
                "registration_id": d.certificate.registration_id,
                "certificate": h(d.certificate.encode()),
                "certificate_sha256": h(certificate_digest(d.certificate)),
            }
            for name, d in devices.items()
        },
        "lists": {
            name: {
                "signed_by": "bob" if name == "by_bob" else "alice",
                "username": signed.username,
                "version": signed.version,
                "issued_at_ms": signed.issued_at_ms,
                "devices": [
                    next(
                        n
                        for n, c in certificates.items()
                        if certificate_digest(c) == d.certificate_sha256
                    )
                    for d in signed.devices
                ],
                "encoded": h(signed.encode()),
            }
            for name, signed in lists.items()
        },
        "checks": checks,
        "invalid": [
            {"description": description, "encoded": h(data), "error": code.slug}
            for description, data, code in invalid
        ],
    }


def provisioning_vectors() -> dict[str, Any]:
    alice = AccountIdentity.from_seed(seed("alice/account"))
    ephemeral_private = seed("link/ephemeral")
    code = LinkCode(seed("link/address", 16), p.x25519_public_key(ephemeral_private))
    other_private = seed("link/other-ephemeral")
    other = LinkCode(seed("link/other-address", 16), p.x25519_public_key(other_private))
    moved = LinkCode(other.address, code.ephemeral_public)  # same key, another address
    messages = [
        ProvisionMessage("alice", alice.seed, "tok_" + "A" * 43, send_history=True),
        ProvisionMessage("alice", alice.seed, "", send_history=False),
    ]
    sealed = []
    for i, message in enumerate(messages):
        data = seal(code, message, rng=TestStream(f"link/seal{i}".encode()))
        assert open_sealed(code, ephemeral_private, data) == message
        sealed.append(data)
    first = sealed[0]
    flipped_key = bytearray(first)
    flipped_key[32] |= 0x80  # the top bit of the sender's ephemeral key
    tampered = bytearray(first)
    tampered[-1] ^= 0x01
    invalid_sealed = [
        ("version 2", b"\x02" + first[1:], "link", ErrorCode.UNSUPPORTED_VERSION),
        ("the last byte flipped", bytes(tampered), "link", ErrorCode.DECRYPT_FAILED),
        ("a non-canonical sender key", bytes(flipped_key), "link", ErrorCode.BAD_KEY),
        ("cut after the sender key", first[:33], "link", ErrorCode.DECRYPT_FAILED),
        ("cut inside the sender key", first[:20], "link", ErrorCode.TRUNCATED),
        ("opened with another code", first, "other", ErrorCode.DECRYPT_FAILED),
        ("opened at another address", first, "moved", ErrorCode.DECRYPT_FAILED),
    ]
    codes = {
        "link": (code, ephemeral_private),
        "other": (other, other_private),
        "moved": (moved, ephemeral_private),
    }
    for _, data, which, error in invalid_sealed:
        try:
            open_sealed(codes[which][0], codes[which][1], data)
        except ProtocolError as exc:
            assert exc.code is error, (exc, error)
        else:
            raise AssertionError("opened")
    text = code.text()
    body = text[len("sealpost-link:") :]
    flipped = bytearray(code.encode())
    flipped[-1] |= 0x80
    invalid_texts = [
        ("hello", ErrorCode.MALFORMED),
        ("sealpost-link:!!!", ErrorCode.MALFORMED),
        ("sealpost-link:" + body + "AAA", ErrorCode.MALFORMED),  # 69 characters: 1 mod 4
        ("Sealpost-link:" + body, ErrorCode.MALFORMED),
        ("sealpost-link:AQ", ErrorCode.TRUNCATED),
        ("sealpost-link:Ag" + "A" * 64, ErrorCode.UNSUPPORTED_VERSION),
        ("sealpost-link:" + body + "AA", ErrorCode.TRAILING_BYTES),
        ("sealpost-link:" + base64url(bytes(flipped)), ErrorCode.BAD_KEY),
    ]
    for bad, error in invalid_texts:
        try:
            LinkCode.parse(bad)
        except ProtocolError as exc:
            assert exc.code is error, (bad, exc, error)
        else:
            raise AssertionError(bad)
    valid_texts = [text, f"  {text}\n", f"\t{text}\r\n\u3000", f"sealpost-link:{body}=="]
    assert all(LinkCode.parse(valid) == code for valid in valid_texts)
    invalid_messages = [
        (
            "flags 0x02",
            Writer().str_("alice").fixed(alice.seed, 32).str_("t").u8(2).getvalue(),
            ErrorCode.INVALID_VALUE,
        ),
        (
            "a link token of 129 bytes",
            Writer().str_("alice").fixed(alice.seed, 32).str_("t" * 129).u8(0).getvalue(),
            ErrorCode.TOO_LARGE,
        ),
        ("a byte after the flags", messages[1].encode() + b"\x00", ErrorCode.TRAILING_BYTES),
        (
            "an invalid username",
            Writer().str_("ALICE").fixed(alice.seed, 32).str_("t").u8(0).getvalue(),
            ErrorCode.INVALID_USERNAME,
        ),
    ]
    for _, data, error in invalid_messages:
        try:
            ProvisionMessage.decode(data)
        except ProtocolError as exc:
            assert exc.code is error, (exc, error)
        else:
            raise AssertionError("decoded")
    return {
        "description": (
            "Linking a device (protocol/provisioning.py). The link code's address is "
            "TestStream('link/address')(16), its ephemeral private key "
            "TestStream('link/ephemeral')(32); 'other' is made the same way from "
            "'link/other-address' and 'link/other-ephemeral', and 'moved' is the link code's "
            "key at other's address. Provision message i (alice's account seed from "
            "keys.json) is sealed to the link code drawing the sender's ephemeral private key "
            "from TestStream('link/seal<i>'). 'invalid_sealed' name the code they are opened "
            "with; every invalid entry carries the expected error."
        ),
        "link_code": {
            "address": h(code.address),
            "ephemeral_private": h(ephemeral_private),
            "ephemeral_public": h(code.ephemeral_public),
            "encoded": h(code.encode()),
            "text": text,
            "address_text": code.address_text,
        },
        "other": {
            "address": h(other.address),
            "ephemeral_private": h(other_private),
            "text": other.text(),
        },
        "moved": {"text": moved.text()},
        "valid_texts": valid_texts,
        "invalid_texts": [{"text": bad, "error": error.slug} for bad, error in invalid_texts],
        "messages": [
            {
                "username": m.username,
                "account_seed": h(m.account_seed),
                "link_token": m.link_token,
                "send_history": m.send_history,
                "encoded": h(m.encode()),
                "sealed": h(data),
            }
            for m, data in zip(messages, sealed, strict=True)
        ],
        "invalid_messages": [
            {"description": d, "encoded": h(data), "error": e.slug}
            for d, data, e in invalid_messages
        ],
        "invalid_sealed": [
            {"description": d, "sealed": h(data), "code": which, "error": e.slug}
            for d, data, which, e in invalid_sealed
        ],
    }


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


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
        # Section 17.3. Appended, so the indices above (and 'stream') are unchanged.
        Send(10, "bob", (DeviceMessage(1, 2222, b"\x11" + b"e" * 20),), SendFlags.EXPIRES, 86_400),
        GroupSend(9, bytes(range(16)), bytes(range(0xA0, 0xB0)), b"\x13" + b"g" * 20),
        GroupSend(
            11,
            bytes(range(16)),
            bytes(range(0xA0, 0xB0)),
            b"\x13typing",
            SendFlags.EPHEMERAL | SendFlags.EXPIRES,
            31_536_000,
        ),
    ]
    valid = []
    for frame in frames:
        encoded = encode_frame(frame)
        assert decode_frame(encoded) == frame
        fields = {
            k: (h(v) if isinstance(v, bytes) else v)
            for k, v in ((s, getattr(frame, s)) for s in frame.__slots__)
            # An absent ttl_seconds (no EXPIRES flag) is left out rather than written null.
            if k != "messages" and v is not None
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
        "01010103626f62040101010111": "invalid_value",  # unknown flag 4
        "01010103626f6202": "truncated",  # EXPIRES without its ttl_seconds
        "01010103626f620200010101010111": "invalid_value",  # EXPIRES with ttl 0
        "01010103626f620281e7840f0101010111": "too_large",  # ttl 31,536,001
        "01010103626f620000": "invalid_value",  # no devices
        "01010103626f62000101000111": "invalid_value",  # registration id 0
        "0101010362 6f62 0001 01 01 8380 06".replace(" ", ""): "ciphertext_too_large",
        "01060000": "trailing_bytes",
        "01050000": "invalid_value",  # empty ack
        "0101 8000".replace(" ", ""): "non_minimal_varint",
        "010900": "invalid_value",  # PING needs a request id
        # GROUP_SEND: request id | group_id[16] | flags | [ttl] | roster_digest[16] | payload
        "010b00": "invalid_value",  # GROUP_SEND needs a request id
        "010b01" + "00" * 15: "truncated",  # group_id of 15 bytes
        "010b01" + "00" * 16 + "08": "invalid_value",  # unknown flag 8
        "010b01" + "00" * 16 + "0200": "invalid_value",  # EXPIRES with ttl 0
        "010b01" + "00" * 16 + "00" + "a0" * 15: "truncated",  # roster_digest of 15 bytes
        "010b01" + "00" * 16 + "00" + "a0" * 16 + "00": "invalid_value",  # empty payload
        "010b01" + "00" * 16 + "00" + "a0" * 16 + "838006": "ciphertext_too_large",
        "010b01" + "00" * 16 + "00" + "a0" * 16 + "021311" + "00": "trailing_bytes",
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


# --- groups and attachments (docs/protocol.md section 17) ---------------------------------


def groups_vectors() -> dict[str, Any]:
    rosters = [
        [],
        [RosterEntry("alice", 1, 1111)],
        # Given unsorted: usernames compare as bytes ("bob" < "bobby"), device ids as numbers.
        [
            RosterEntry("carol", 1, 0xFFFF_FFFF),
            RosterEntry("bobby", 1, 5),
            RosterEntry("bob", 10, 2),
            RosterEntry("bob", 2, 3),
            RosterEntry("alice", 65535, 1),
        ],
    ]
    invalid_rosters = [
        ([RosterEntry("bob", 1, 2), RosterEntry("bob", 1, 3)], ErrorCode.INVALID_VALUE),
        ([RosterEntry("bob", 0, 2)], ErrorCode.INVALID_VALUE),
        ([RosterEntry("bob", 65536, 2)], ErrorCode.INVALID_VALUE),
        ([RosterEntry("bob", 1, 0)], ErrorCode.INVALID_VALUE),
        ([RosterEntry("Bob", 1, 2)], ErrorCode.INVALID_USERNAME),
    ]

    def roster(entries: list[RosterEntry]) -> list[dict[str, Any]]:
        return [
            {"username": e.username, "device_id": e.device_id, "registration_id": e.registration_id}
            for e in entries
        ]

    def error_of(entries: list[RosterEntry]) -> str:
        try:
            roster_digest(entries)
        except ProtocolError as exc:
            return exc.code.slug
        raise AssertionError("roster accepted")

    for entries, code in invalid_rosters:
        assert error_of(entries) == code.slug

    # The sender key chain from a recorded chain key (kdf_ck and the sender-key HKDF).
    chain_key = seed("groups/chain_key")
    chain = []
    ck = chain_key
    for iteration in range(4):
        message_seed, next_ck = kdf_ck(ck)
        key, nonce = sender_message_key(message_seed)
        chain.append(
            {
                "iteration": iteration,
                "chain_key": h(ck),
                "message_seed": h(message_seed),
                "key": h(key),
                "nonce": h(nonce),
            }
        )
        ck = next_ck

    # A sender state from recorded values; Ed25519 signatures are deterministic.
    group_id = seed("groups/group_id", 16)
    signing_seed = seed("groups/signing_seed")
    key_id = 0x1234_5678
    sender = SenderKeyState(key_id, 0, chain_key, p.ed25519_public_key(signing_seed), signing_seed)
    sender_record_before = SenderKeyRecord([sender.clone()]).encode()
    distribution = sender.distribution(group_id, 1_795_000_000_000)
    texts = ["hello group", "second", "third, out of order", ""]
    messages = [
        sender.encrypt(group_id, encode_content(Text(text, 1_795_000_000_001 + i)))
        for i, text in enumerate(texts)
    ]
    sender_record_after = SenderKeyRecord([sender]).encode()

    receiver = SenderKeyRecord()
    receiver.process_distribution(distribution)
    initial = receiver.encode()
    steps: list[dict[str, Any]] = []

    def deliver(data: bytes, description: str) -> None:
        before = receiver.encode()
        step: dict[str, Any] = {"description": description, "message": h(data)}
        try:
            step["plaintext"] = h(receiver.decrypt(data))
        except ProtocolError as exc:
            step["error"] = exc.code.slug
            assert receiver.encode() == before
        step["record_after"] = h(receiver.encode())
        steps.append(step)

    def forged(iteration: int, ciphertext: bytes, signer: bytes, kid: int = key_id) -> bytes:
        unsigned = SenderKeyMessage(group_id, kid, iteration, ciphertext, b"")
        signature = p.ed25519_sign(signer, unsigned.signed_bytes())
        return SenderKeyMessage(group_id, kid, iteration, ciphertext, signature).encode()

    deliver(messages[0], "iteration 0, in order")
    deliver(messages[2], "iteration 2: iteration 1 is skipped and its seed kept")
    deliver(messages[2], "iteration 2 again")
    deliver(messages[1], "iteration 1, late: its skipped seed is used and deleted")
    deliver(messages[1], "iteration 1 again")
    flipped = bytearray(messages[3])
    flipped[-1] ^= 0x01
    deliver(bytes(flipped), "iteration 3 with a bit of the signature flipped")
    deliver(forged(3, b"\x00" * 20, signing_seed, key_id + 1), "an unknown key_id")
    deliver(forged(3, b"\x00" * 20, seed("groups/other_signer")), "signed by another key")
    deliver(
        forged(3 + MAX_JUMP + 1, b"\x00" * 20, signing_seed),
        "iteration MAX_JUMP + 1 ahead of the chain, validly signed",
    )
    tampered = SenderKeyMessage.decode(messages[3])
    deliver(
        forged(3, tampered.ciphertext[:-1] + bytes([tampered.ciphertext[-1] ^ 1]), signing_seed),
        "iteration 3 with a ciphertext bit flipped, then re-signed",
    )
    deliver(messages[3], "iteration 3")

    invalid_messages = {
        "": "truncated",
        "23" + "00" * 16: "unsupported_version",
        "11" + "00" * 16: "unknown_type",
        "13" + "00" * 15: "truncated",
        "13" + "00" * 16 + "00" + "00" + "00" * 80: "invalid_value",  # key_id 0
        "13" + "00" * 16 + "8080808008" + "00" + "00" * 80: "too_large",  # key_id 2**31
        "13" + "00" * 16 + "01" + "8080808010" + "00" * 80: "too_large",  # iteration 2**32
        "13" + "00" * 16 + "01" + "00" + "00" * 79: "truncated",  # 79 bytes after the header
        "13" + "00" * 16 + "01" + "8000" + "00" * 80: "non_minimal_varint",
    }
    for encoded, error in invalid_messages.items():
        try:
            SenderKeyMessage.decode(bytes.fromhex(encoded))
        except ProtocolError as exc:
            assert exc.code.slug == error, (encoded, exc)
        else:
            raise AssertionError(encoded)

    state = "01" + "01" + "00" + "00" * 64  # key_id 1, iteration 0, chain and signing key
    invalid_records = {
        "": "truncated",
        "02": "unsupported_version",
        "0106": "too_large",  # 6 states
        "0101" + "00": "invalid_value",  # key_id 0
        "0101" + "01" + "00" + "00" * 64 + "02": "invalid_value",  # has_seed 2
        "0101"
        + "01"
        + "02"
        + "00" * 64
        + "00"
        + "02"
        + "01"
        + "00" * 32
        + "01"
        + "00" * 32: "invalid_value",  # skipped iterations 1, 1: not increasing
        "0101"
        + "01"
        + "01"
        + "00" * 64
        + "00"
        + "01"
        + "01"
        + "00" * 32: "invalid_value",  # skipped iteration 1 not below the state's iteration 1
        "0102" + state + "00" + state + "00": "invalid_value",  # key_id 1 twice
        "0101" + state + "00" + "00": "trailing_bytes",
    }
    for encoded, error in invalid_records.items():
        try:
            SenderKeyRecord.decode(bytes.fromhex(encoded))
        except ProtocolError as exc:
            assert exc.code.slug == error, (encoded, exc)
        else:
            raise AssertionError(encoded)

    group_ids = [bytes(16), bytes(range(16)), seed("groups/group_id", 16)]
    return {
        "description": (
            "Section 17.1-17.2. 'rosters': entries (in the order given, unsorted) and their "
            "roster_digest; 'invalid_rosters': entries roster_digest refuses, with the error. "
            "'group_ids': 16 bytes and their text form; 'invalid_group_ids': texts "
            "parse_group_id refuses (invalid_value). 'chain': from chain_key, for iterations "
            "0-3, the chain key ck_i, message_seed_i and the AEAD key and nonce. 'sender': a "
            "sender state (key_id, chain_key, signing_seed, iteration 0) in group_id, its "
            "stored record before and after encrypting 'texts' (TEXT content, sent_at_ms "
            "1795000000001 + i, unpadded) as 'messages', and its SENDER_KEY 'distribution' "
            "(content, sent_at_ms 1795000000000). 'receiver': the record made from the "
            "distribution ('initial'), then 'steps' applied in order to it: each message "
            "gives 'plaintext' (padded content) or 'error', and 'record_after' (the same as "
            "before on an error). 'invalid_messages' and 'invalid_records': encodings "
            "SenderKeyMessage.decode and SenderKeyRecord.decode refuse, with the error."
        ),
        "rosters": [{"entries": roster(e), "digest": h(roster_digest(e))} for e in rosters],
        "invalid_rosters": [
            {"entries": roster(entries), "error": code.slug} for entries, code in invalid_rosters
        ],
        "group_ids": [{"bytes": h(g), "text": group_id_hex(g)} for g in group_ids],
        "invalid_group_ids": [
            "000102030405060708090A0B0C0D0E0F",
            "000102030405060708090a0b0c0d0e",
            "000102030405060708090a0b0c0d0e0f00",
            "000102030405060708090a0b0c0d0e0g",
            " 000102030405060708090a0b0c0d0e0f",
            "",
        ],
        "chain_key": h(chain_key),
        "chain": chain,
        "sender": {
            "group_id": h(group_id),
            "key_id": key_id,
            "chain_key": h(chain_key),
            "signing_seed": h(signing_seed),
            "signing_public": h(p.ed25519_public_key(signing_seed)),
            "record_before": h(sender_record_before),
            "texts": texts,
            "messages": [h(m) for m in messages],
            "record_after": h(sender_record_after),
            "distribution": h(encode_content(distribution)),
        },
        "receiver": {"initial": h(initial), "steps": steps},
        "invalid_messages": [{"encoded": k, "error": v} for k, v in invalid_messages.items()],
        "invalid_records": [{"encoded": k, "error": v} for k, v in invalid_records.items()],
    }


# Plaintext of an attachments.json file of n bytes: byte j is j mod 251 (a prime, so chunk
# boundaries never line up with the pattern).
ATTACHMENT_RULE = "byte j of a file of n bytes is j mod 251"
ATTACHMENT_SIZES = [0, 1, 65535, 65536, 65537, 200000]


def attachment_plaintext(size: int) -> bytes:
    return bytes(j % 251 for j in range(size))


def attachments_vectors() -> dict[str, Any]:
    key = seed("attachments/key")
    files = []
    for size in ATTACHMENT_SIZES:
        blob, _, digest = encrypt_attachment(attachment_plaintext(size), key)
        assert len(blob) == blob_size(size)
        case: dict[str, Any] = {
            "size": size,
            "chunks": chunk_count(size),
            "blob_size": len(blob),
            "digest": h(digest),
            "blob_head": h(blob[:48]),
            "blob_tail": h(blob[-48:]),
        }
        if size <= 1:
            case["blob"] = h(blob)
        files.append(case)
    small, _, small_digest = encrypt_attachment(b"\x00", key)
    flipped = bytes([small[0] ^ 1]) + small[1:]
    # Each refused, with decrypt_failed: (description, blob, size, digest).
    refused = [
        ("digest of another blob", small, 1, p.sha256(b"x")),
        ("a bit flipped, digest of the flipped blob", flipped, 1, p.sha256(flipped)),
        ("one byte cut, digest of the cut blob", small[:-1], 1, p.sha256(small[:-1])),
        (
            "one byte added, digest of the longer blob",
            small + b"\x00",
            1,
            p.sha256(small + b"\x00"),
        ),
        ("the size of an empty file", small, 0, small_digest),
    ]
    return {
        "description": (
            "Section 17.5. Every file is encrypted under 'key'; its plaintext is given by "
            "'rule'. Per file: size, chunk count, blob size (size + 16 n), the blob's SHA-256 "
            "('digest'), its first and last 48 bytes, and the whole blob for files of at most "
            "1 byte. 'nonces': chunk nonces by index and final flag. 'refused': blobs that "
            "decrypt_attachment refuses with decrypt_failed, with the size and digest given."
        ),
        "chunk_bytes": CHUNK_BYTES,
        "key": h(key),
        "rule": ATTACHMENT_RULE,
        "files": files,
        "nonces": [
            {"index": i, "final": final, "nonce": h(chunk_nonce(i, final))}
            for i, final in [(0, False), (0, True), (1, False), (258, True), (2**64 - 1, True)]
        ],
        "refused": [
            {"description": d, "blob": h(b), "size": n, "digest": h(g), "error": "decrypt_failed"}
            for d, b, n, g in refused
        ],
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
        "devicelist.json": device_list_vectors(),
        "provisioning.json": provisioning_vectors(),
        "session.json": session_vectors(),
        "frames.json": frame_vectors(),
        "groups.json": groups_vectors(),
        "attachments.json": attachments_vectors(),
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
