"""The committed known-answer vectors (protocol/vectors/*.json) against the Python protocol.

Two kinds of check: the committed files equal a fresh run of scripts/make_vectors.py (so
they are reproducible and current), and each file is replayed from its recorded inputs
through the public API, the way the JavaScript client's tests read them. The session
replay decapsulates with pyca/cryptography ciphertexts that the generator made with
kyber-py, so the two ML-KEM implementations are checked against each other.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from protocol import primitives as p
from protocol.content import (
    HistoryChunk,
    HistoryRecord,
    SentTranscript,
    Text,
    decode_content,
    encode_content,
    split_history,
)
from protocol.devicelist import SignedDeviceList, certificate_digest, check_devices
from protocol.encoding import Reader, encode_varint
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import FrameStream, decode_frame, encode_frame
from protocol.keys import (
    AccountIdentity,
    DeviceCertificate,
    DeviceKeys,
    KemPreKey,
    OneTimePreKey,
    PreKeyBundle,
    SignedPreKey,
)
from protocol.limits import MAX_SKIPPED_KEYS
from protocol.messages import PreKeyMessage, RatchetMessage
from protocol.padding import pad, padme_length
from protocol.pqxdh import derive_root_key
from protocol.provisioning import LinkCode, ProvisionMessage, open_sealed, seal
from protocol.ratchet import kdf_ck, kdf_rk, message_key_material
from protocol.safety import safety_number
from protocol.session import SessionRecord

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocol" / "vectors"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts/make_vectors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_vectors_equal_a_fresh_run() -> None:
    gen = generator()
    built = gen.build()
    assert sorted(built) == sorted(path.name for path in VECTORS.glob("*.json"))
    for name, document in built.items():
        assert (VECTORS / name).read_text(encoding="utf-8") == gen.render(document), name


def test_encoding() -> None:
    doc = load("encoding.json")
    for case in doc["varints"]:
        assert encode_varint(case["value"]).hex() == case["encoded"]
        assert Reader(bytes.fromhex(case["encoded"])).varint("v") == case["value"]
    for case in doc["invalid_varints"]:
        with pytest.raises(ProtocolError) as info:
            Reader(bytes.fromhex(case["encoded"])).varint("v")
        assert info.value.code.slug == case["error"]


def test_kdfs() -> None:
    doc = load("kdf.json")
    rk = doc["kdf_rk"]
    new_root, chain = kdf_rk(bytes.fromhex(rk["root_key"]), bytes.fromhex(rk["dh_output"]))
    assert (new_root.hex(), chain.hex()) == (rk["new_root_key"], rk["chain_key"])
    ck = doc["kdf_ck"]
    message_key, next_chain = kdf_ck(bytes.fromhex(ck["chain_key"]))
    assert (message_key.hex(), next_chain.hex()) == (ck["message_key"], ck["next_chain_key"])
    mk = doc["message_keys"]
    key, nonce = message_key_material(bytes.fromhex(mk["message_key"]))
    assert (key.hex(), nonce.hex()) == (mk["aead_key"], mk["nonce"])
    for case in doc["pqxdh_root_key"]:
        dhs = [bytes.fromhex(x) for x in case["dh_outputs"]]
        root = derive_root_key(dhs, bytes.fromhex(case["kem_shared_secret"]))
        assert root.hex() == case["root_key"]


def test_keys_and_bundles() -> None:
    for party in load("keys.json")["parties"]:
        account_key = p.ed25519_public_key(bytes.fromhex(party["account_seed"]))
        assert account_key.hex() == party["account_public_key"]
        cert = DeviceCertificate.decode(bytes.fromhex(party["device_certificate"]))
        cert.verify(account_key)
        assert cert.device_id == party["device_id"]
        assert cert.registration_id == party["registration_id"]
        assert cert.signing_key == p.ed25519_public_key(bytes.fromhex(party["device_signing_seed"]))
        assert cert.identity_key == p.x25519_public_key(
            bytes.fromhex(party["device_identity_private"])
        )
        spk = SignedPreKey.read(Reader(bytes.fromhex(party["signed_prekey"]["encoded"])))
        spk.verify(cert.signing_key)
        assert spk.public_key == p.x25519_public_key(
            bytes.fromhex(party["signed_prekey"]["private"])
        )
        opk = OneTimePreKey.read(Reader(bytes.fromhex(party["one_time_prekey"]["encoded"])))
        assert opk.public_key == p.x25519_public_key(
            bytes.fromhex(party["one_time_prekey"]["private"])
        )
        for field, last_resort in (("kem_prekey", False), ("last_resort_kem_prekey", True)):
            kem = KemPreKey.read(Reader(bytes.fromhex(party[field]["encoded"])))
            kem.verify(cert.signing_key)
            assert kem.last_resort is last_resort
            assert kem.public_key == p.mlkem768_public_key(bytes.fromhex(party[field]["seed"]))
        for field in ("bundle", "bundle_without_one_time_last_resort"):
            bundle = PreKeyBundle.decode(bytes.fromhex(party[field]))
            bundle.verify()
            assert bundle.encode().hex() == party[field]


def test_content_and_padding() -> None:
    doc = load("content.json")
    for case in doc["padme"]:
        assert padme_length(case["length"]) == case["padded"]
    for case in doc["pad"]:
        assert pad(bytes.fromhex(case["data"]), case["hide_length"]).hex() == case["padded"]
    for case in doc["text"]:
        decoded = decode_content(bytes.fromhex(case["encoded"]))
        assert (decoded.body, decoded.sent_at_ms) == (case["body"], case["sent_at_ms"])
        assert encode_content(decoded, case["hide_length"]).hex() == case["encoded"]


def test_sent_transcripts() -> None:
    cases = load("content.json")["sent"]
    assert len(cases) == 6
    for case in cases:
        decoded = decode_content(bytes.fromhex(case["encoded"]))
        expected = SentTranscript(case["destination"], case["body"], case["sent_at_ms"])
        assert decoded == expected
        assert encode_content(expected, case["hide_length"]).hex() == case["encoded"]


def _history_records(doc: dict[str, Any]) -> list[HistoryRecord]:
    """The records of content.json's history, rebuilt by its rule."""
    return [
        HistoryRecord(
            "bob" if i % 2 == 0 else "carol",
            i % 3 == 0,
            1_795_000_000_000 + 1000 * i,
            f"#{i} " + "é" * n,
        )
        for i, n in enumerate(doc["lengths"])
    ]


def test_history_chunks() -> None:
    doc = load("content.json")["history"]
    records = _history_records(doc)
    transfer_id = bytes.fromhex(doc["transfer_id"])
    chunks = split_history(records, transfer_id, doc["sent_at_ms"])
    assert len(chunks) == len(doc["chunks"]) >= 3
    position = 0
    for chunk, case in zip(chunks, doc["chunks"], strict=True):
        assert (chunk.index, chunk.total, len(chunk.records)) == (
            case["index"],
            case["total"],
            case["record_count"],
        )
        assert list(chunk.records) == records[position : position + len(chunk.records)]
        position += len(chunk.records)
        encoded = encode_content(chunk, True)
        assert (p.sha256(encoded).hex(), len(encoded)) == (
            case["encoded_sha256"],
            case["encoded_length"],
        )
        assert decode_content(encoded) == chunk
    assert position == len(records)
    small = HistoryChunk(transfer_id, 1, 3, tuple(records[:2]), doc["sent_at_ms"])
    assert encode_content(small).hex() == doc["small"]["encoded"]
    assert decode_content(bytes.fromhex(doc["small"]["encoded"])) == small
    empty = HistoryChunk(transfer_id, 0, 1, (), doc["sent_at_ms"])
    assert encode_content(empty).hex() == doc["empty"]["encoded"]


def test_invalid_contents_are_refused() -> None:
    cases = load("content.json")["invalid"]
    assert len(cases) >= 10
    for case in cases:
        with pytest.raises(ProtocolError) as info:
            decode_content(bytes.fromhex(case["encoded"]))
        assert info.value.code.slug == case["error"], case["description"]


def test_device_lists() -> None:
    doc = load("devicelist.json")
    accounts = {
        name: AccountIdentity.from_seed(bytes.fromhex(a["seed"]))
        for name, a in doc["accounts"].items()
    }
    for name, account in accounts.items():
        assert account.public_key.hex() == doc["accounts"][name]["public_key"]
    certificates = {}
    for name, d in doc["devices"].items():
        keys = DeviceKeys.create(
            accounts[d["account"]],
            d["device_id"],
            rng=generator().TestStream(d["seed"].encode()),
            registration_id=d["registration_id"],
        )
        assert keys.certificate.encode().hex() == d["certificate"]
        assert certificate_digest(keys.certificate).hex() == d["certificate_sha256"]
        certificates[name] = keys.certificate
    lists = {}
    for name, case in doc["lists"].items():
        signed = SignedDeviceList.sign(
            accounts[case["signed_by"]],
            case["username"],
            case["version"],
            case["issued_at_ms"],
            [certificates[n] for n in case["devices"]],
        )
        assert signed.encode().hex() == case["encoded"]
        assert SignedDeviceList.decode(bytes.fromhex(case["encoded"])) == signed
        lists[name] = signed
    alice = accounts["alice"].public_key
    for case in doc["checks"]:
        served = [certificates[n] for n in case["served"]]
        args = (alice, case["username"], lists[case["list"]], served, case["newest_seen_version"])
        if "error" in case:
            with pytest.raises(ProtocolError) as info:
                check_devices(*args)
            assert info.value.code.slug == case["error"], case
        else:
            result = check_devices(*args)
            assert [c.device_id for c in result.accepted] == case["accepted"], case
            assert list(result.refused) == case["refused"], case
            assert list(result.unlisted_missing) == case["unlisted_missing"], case
    for case in doc["invalid"]:
        with pytest.raises(ProtocolError) as info:
            SignedDeviceList.decode(bytes.fromhex(case["encoded"]))
        assert info.value.code.slug == case["error"], case["description"]


def test_provisioning() -> None:
    doc = load("provisioning.json")
    gen = generator()
    link = doc["link_code"]
    private = bytes.fromhex(link["ephemeral_private"])
    code = LinkCode(bytes.fromhex(link["address"]), p.x25519_public_key(private))
    assert code.ephemeral_public.hex() == link["ephemeral_public"]
    assert code.encode().hex() == link["encoded"]
    assert (code.text(), code.address_text) == (link["text"], link["address_text"])
    for text in doc["valid_texts"]:
        assert LinkCode.parse(text) == code
    for case in doc["invalid_texts"]:
        with pytest.raises(ProtocolError) as info:
            LinkCode.parse(case["text"])
        assert info.value.code.slug == case["error"], case
    codes = {
        "link": (code, private),
        "other": (
            LinkCode.parse(doc["other"]["text"]),
            bytes.fromhex(doc["other"]["ephemeral_private"]),
        ),
        "moved": (LinkCode.parse(doc["moved"]["text"]), private),
    }
    for i, case in enumerate(doc["messages"]):
        message = ProvisionMessage(
            case["username"],
            bytes.fromhex(case["account_seed"]),
            case["link_token"],
            case["send_history"],
        )
        assert message.encode().hex() == case["encoded"]
        assert ProvisionMessage.decode(bytes.fromhex(case["encoded"])) == message
        sealed = seal(code, message, rng=gen.TestStream(f"link/seal{i}".encode()))
        assert sealed.hex() == case["sealed"]
        assert open_sealed(code, private, bytes.fromhex(case["sealed"])) == message
    for case in doc["invalid_messages"]:
        with pytest.raises(ProtocolError) as info:
            ProvisionMessage.decode(bytes.fromhex(case["encoded"]))
        assert info.value.code.slug == case["error"], case["description"]
    for case in doc["invalid_sealed"]:
        which, key = codes[case["code"]]
        with pytest.raises(ProtocolError) as info:
            open_sealed(which, key, bytes.fromhex(case["sealed"]))
        assert info.value.code.slug == case["error"], case["description"]


class _Bob:
    """Bob's prekey store rebuilt from keys.json, deleting one-time keys once used."""

    def __init__(self, party: dict[str, Any]) -> None:
        def key_id(field: str) -> int:
            return Reader(bytes.fromhex(party[field]["encoded"])).varint("id")

        self.signed = {key_id("signed_prekey"): bytes.fromhex(party["signed_prekey"]["private"])}
        self.one_time = {
            key_id("one_time_prekey"): bytes.fromhex(party["one_time_prekey"]["private"])
        }
        self.kem = {
            key_id("kem_prekey"): (bytes.fromhex(party["kem_prekey"]["seed"]), False),
            key_id("last_resort_kem_prekey"): (
                bytes.fromhex(party["last_resort_kem_prekey"]["seed"]),
                True,
            ),
        }

    def signed_prekey(self, key_id: int) -> bytes | None:
        return self.signed.get(key_id)

    def one_time_prekey(self, key_id: int) -> bytes | None:
        return self.one_time.get(key_id)

    def kem_prekey(self, key_id: int) -> tuple[bytes, bool] | None:
        return self.kem.get(key_id)


def test_session_replays_on_the_receiving_side() -> None:
    """Bob's half of the conversation, from recorded messages only: every plaintext and
    every error matches, and his final record is byte-identical."""
    gen = generator()
    bob_party = next(x for x in load("keys.json")["parties"] if x["username"] == "bob")
    bob_device = gen.Party("bob", 1, 2222).device  # private keys from the recorded seeds
    assert bob_device.certificate.encode().hex() == bob_party["device_certificate"]
    store = _Bob(bob_party)
    record = SessionRecord()
    stream = gen.TestStream(b"bob/session")
    doc = load("session.json")
    messages = {
        s["index"]: bytes.fromhex(s["message"]) for s in doc["steps"] if s["op"] == "encrypt"
    }
    checked = 0
    for step in doc["steps"]:
        if step["op"] == "encrypt" and step["by"] == "bob":
            assert record.encrypt(bytes.fromhex(step["plaintext"])).hex() == step["message"]
        elif step["op"] == "decrypt" and step["by"] == "bob":
            if "error" in step:
                with pytest.raises(ProtocolError) as info:
                    record.decrypt(messages[step["index"]], bob_device, store, rng=stream)
                assert info.value.code.slug == step["error"]
            else:
                result = record.decrypt(messages[step["index"]], bob_device, store, rng=stream)
                assert result.plaintext.hex() == step["plaintext"]
                if result.consumed_one_time_prekey_id is not None:
                    del store.one_time[result.consumed_one_time_prekey_id]
            checked += 1
    assert checked >= 5
    assert record.encode().hex() == doc["final_records"]["bob"]


def _second_conversation() -> dict[str, Any]:
    doc: dict[str, Any] = load("session.json")["eviction_and_archive"]
    return doc


def test_invalid_messages_are_refused_by_the_decoders() -> None:
    """Each invalid message is a delivered one with the top bit of one X25519 key set."""
    doc = _second_conversation()
    assert len(doc["invalid_messages"]) >= 2
    delivered = {int(k): bytes.fromhex(v) for k, v in doc["messages"].items()}
    for case in doc["invalid_messages"]:
        data = bytes.fromhex(case["encoded"])
        decode = PreKeyMessage.decode if case["kind"] == "prekey" else RatchetMessage.decode
        with pytest.raises(ProtocolError) as info:
            decode(data)
        assert (info.value.code.slug, info.value.message) == (case["error"], case["message"])
        original = delivered[case["of"]]
        difference = [i for i in range(len(data)) if data[i] != original[i]]
        assert len(difference) == 1 and data[difference[0]] ^ original[difference[0]] == 0x80
        with pytest.raises(ProtocolError) as info:
            SessionRecord().decrypt(data, generator().Party("bob", 1, 2222).device, _NoPrekeys())
        assert info.value.code.slug == case["error"]


class _NoPrekeys:
    def signed_prekey(self, key_id: int) -> bytes | None:
        return None

    def one_time_prekey(self, key_id: int) -> bytes | None:
        return None

    def kem_prekey(self, key_id: int) -> tuple[bytes, bool] | None:
        return None


def test_second_conversation_replays_on_the_receiving_side() -> None:
    """Bob's half of the second conversation (evicted skipped keys, an archived state,
    promotion, non-canonical keys), from recorded messages only: every plaintext, every
    error (leaving the record unchanged), each of his encryption batches, and his final
    record's SHA-256, length, states and discarded ranges."""
    gen = generator()
    doc = _second_conversation()
    assert doc["max_skipped_keys"] == MAX_SKIPPED_KEYS
    bob_party = next(x for x in load("keys.json")["parties"] if x["username"] == "bob")
    bob_device = gen.Party("bob", 1, 2222).device
    store = _Bob(bob_party)
    record = SessionRecord()
    stream = gen.TestStream(b"bob/session2")
    messages = {int(k): bytes.fromhex(v) for k, v in doc["messages"].items()}
    invalid = [bytes.fromhex(case["encoded"]) for case in doc["invalid_messages"]]

    def plaintext(index: int) -> bytes:
        text = Text(f"bob {index}", doc["first_sent_at_ms"] + index)
        return encode_content(text, hide_length=index % 2 == 1)

    errors: set[str] = set()
    for step in doc["steps"]:
        if step["by"] != "bob":
            continue
        if step["op"] == "encrypt":
            first, count = step["first_index"], step["count"]
            batch = [record.encrypt(plaintext(first + i)) for i in range(count)]
            assert p.sha256(b"".join(batch)).hex() == step["sha256"]
            for i, data in enumerate(batch):
                assert messages.get(first + i, data) == data
            continue
        data = messages[step["index"]] if "index" in step else invalid[step["invalid"]]
        if "error" in step:
            before = record.encode()
            with pytest.raises(ProtocolError) as info:
                record.decrypt(data, bob_device, store, rng=stream)
            assert info.value.code.slug == step["error"], step
            assert record.encode() == before, "a failed decryption changed the record"
            errors.add(step["error"])
        else:
            result = record.decrypt(data, bob_device, store, rng=stream)
            assert result.plaintext.hex() == step["plaintext"], step
            if result.consumed_one_time_prekey_id is not None:
                del store.one_time[result.consumed_one_time_prekey_id]
            if result.consumed_kem_prekey_id is not None:
                del store.kem[result.consumed_kem_prekey_id]
    assert errors == {"too_many_skipped", "duplicate_message", "bad_key"}
    final = doc["final"]
    encoded = record.encode()
    assert (p.sha256(encoded).hex(), len(encoded)) == (
        final["bob_record_sha256"],
        final["bob_record_length"],
    )
    assert len(record.states) == final["bob_states"] == 2
    current = record.states[0]
    assert current.base_key.hex() == final["bob_current_base_key"]
    assert [
        {"chain": chain.hex(), "ranges": ranges} for chain, ranges in current.discarded.items()
    ] == final["bob_current_discarded"]
    assert SessionRecord.decode(encoded).encode() == encoded


def test_frames() -> None:
    doc = load("frames.json")
    decoded = []
    for case in doc["valid"]:
        frame = decode_frame(bytes.fromhex(case["encoded"]))
        assert frame.type.name == case["type"]
        assert encode_frame(frame).hex() == case["encoded"]
        for field, value in case["fields"].items():
            if field == "messages":
                continue
            actual = getattr(frame, field)
            if isinstance(actual, bytes):
                actual = actual.hex()
            elif isinstance(actual, tuple):
                actual = list(actual)
            assert actual == value, (case["type"], field)
        decoded.append(frame)
    for case in doc["invalid"]:
        with pytest.raises(ProtocolError) as info:
            decode_frame(bytes.fromhex(case["encoded"]))
        assert info.value.code.slug == case["error"], case
    stream = bytes.fromhex(doc["stream"])
    assert FrameStream().feed(stream) == decoded[:3]


def test_safety_number() -> None:
    for case in load("safety_number.json")["cases"]:
        number = safety_number(
            case["own_username"],
            bytes.fromhex(case["own_account_key"]),
            case["their_username"],
            bytes.fromhex(case["their_account_key"]),
        )
        assert number.digits == case["digits"]
        assert number.qr_payload.hex() == case["qr_payload"]


def test_error_codes_match_the_enum() -> None:
    codes = load("error_codes.json")["codes"]
    assert [(c["code"], c["slug"]) for c in codes] == [(int(e), e.slug) for e in ErrorCode]
    assert len({c["code"] for c in codes}) == len(codes)
    assert ErrorCode.from_slug("bad_signature") is ErrorCode.BAD_SIGNATURE
