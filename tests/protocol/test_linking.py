"""Device linking (provisioning) and the signed device list."""

from __future__ import annotations

import pytest

from protocol import primitives as p
from protocol.devicelist import SignedDeviceList, check_devices
from protocol.errors import ErrorCode, ProtocolError
from protocol.keys import AccountIdentity, DeviceKeys
from protocol.provisioning import LinkCode, ProvisionMessage, open_sealed, seal


def _code() -> tuple[LinkCode, bytes]:
    private = p.random_bytes(32)
    return LinkCode(p.random_bytes(16), p.x25519_public_key(private)), private


def test_link_code_text_round_trip() -> None:
    code, _ = _code()
    text = code.text()
    assert text.startswith("sealpost-link:") and "=" not in text
    assert LinkCode.parse(f"  {text}\n") == code


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("hello", ErrorCode.MALFORMED),
        ("sealpost-link:!!!", ErrorCode.MALFORMED),
        ("sealpost-link:AQ", ErrorCode.TRUNCATED),
        ("sealpost-link:Ag" + "A" * 64, ErrorCode.UNSUPPORTED_VERSION),
    ],
)
def test_bad_link_codes_are_refused(text: str, error: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        LinkCode.parse(text)
    assert info.value.code is error


def test_sealed_provisioning_opens_only_for_its_code() -> None:
    code, private = _code()
    seed = p.random_bytes(32)
    message = ProvisionMessage("alice", seed, "tok_123", send_history=True)
    sealed = seal(code, message)
    assert seed not in sealed and b"tok_123" not in sealed
    assert open_sealed(code, private, sealed) == message
    assert "tok_123" not in repr(message) and seed.hex() not in repr(message)

    other, other_private = _code()
    with pytest.raises(ProtocolError) as info:
        open_sealed(other, other_private, sealed)
    assert info.value.code is ErrorCode.DECRYPT_FAILED
    moved = LinkCode(p.random_bytes(16), code.ephemeral_public)  # same key, other address
    with pytest.raises(ProtocolError) as info:
        open_sealed(moved, private, sealed)
    assert info.value.code is ErrorCode.DECRYPT_FAILED
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(ProtocolError):
            open_sealed(code, private, bytes(tampered))


def _account_with_devices(count: int) -> tuple[AccountIdentity, list[DeviceKeys]]:
    account = AccountIdentity.generate()
    return account, [DeviceKeys.create(account, i + 1) for i in range(count)]


def test_device_list_admits_exactly_its_certificates() -> None:
    account, devices = _account_with_devices(3)
    certificates = [d.certificate for d in devices]
    signed = SignedDeviceList.sign(account, "alice", 2, 1_000, certificates)
    assert SignedDeviceList.decode(signed.encode()) == signed

    checked = check_devices(account.public_key, "alice", signed, certificates, 1)
    assert [c.device_id for c in checked.accepted] == [1, 2, 3]
    assert checked.refused == () and checked.unlisted_missing == ()

    # A device the server inserted: a certificate the account never listed is refused, even
    # one properly signed (a revoked device), and so is one signed by another key.
    revoked = DeviceKeys.create(account, 4).certificate
    forged = DeviceKeys.create(AccountIdentity.generate(), 5).certificate
    checked = check_devices(
        account.public_key, "alice", signed, [*certificates[:2], revoked, forged]
    )
    assert [c.device_id for c in checked.accepted] == [1, 2]
    assert checked.refused == (4, 5)
    assert checked.unlisted_missing == (3,)


def test_device_list_signature_username_and_version_are_checked() -> None:
    account, devices = _account_with_devices(1)
    signed = SignedDeviceList.sign(account, "alice", 5, 1_000, [devices[0].certificate])
    with pytest.raises(ProtocolError) as info:
        check_devices(AccountIdentity.generate().public_key, "alice", signed, [])
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(ProtocolError) as info:
        check_devices(account.public_key, "bob", signed, [])
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(ProtocolError) as info:
        check_devices(account.public_key, "alice", signed, [], newest_seen_version=6)
    assert info.value.code is ErrorCode.INVALID_VALUE
    tampered = bytearray(signed.encode())
    tampered[-70] ^= 0x01  # inside the last certificate digest
    with pytest.raises(ProtocolError) as info:
        SignedDeviceList.decode(bytes(tampered)).verify(account.public_key, "alice")
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_device_list_must_be_sorted_without_repeats() -> None:
    account, devices = _account_with_devices(2)
    signed = SignedDeviceList.sign(account, "alice", 1, 0, [d.certificate for d in devices])
    swapped = SignedDeviceList(signed.username, 1, 0, signed.devices[::-1], signed.signature)
    with pytest.raises(ProtocolError) as info:
        swapped.encode()
    assert info.value.code is ErrorCode.INVALID_VALUE


def test_sent_transcripts_and_history_chunks_round_trip() -> None:
    from protocol.content import (
        MAX_HISTORY_CHUNK_BYTES,
        HistoryRecord,
        SentTranscript,
        decode_content,
        encode_content,
        split_history,
    )

    sent = SentTranscript("bob", "hi bob ✓", 1_795_000_000_000)
    assert decode_content(encode_content(sent, hide_length=True)) == sent

    records = [
        HistoryRecord("bob" if i % 2 else "carol", bool(i % 3), 1_795_000_000_000 + i, "x" * 900)
        for i in range(300)
    ]
    chunks = split_history(records, b"T" * 16, 1_795_000_000_999)
    assert len(chunks) > 1 and {c.total for c in chunks} == {len(chunks)}
    assert [c.index for c in chunks] == list(range(len(chunks)))
    rebuilt = []
    for chunk in chunks:
        encoded = encode_content(chunk)
        assert len(encoded) < MAX_HISTORY_CHUNK_BYTES + 1024
        decoded = decode_content(encoded)
        assert decoded == chunk
        rebuilt.extend(decoded.records)  # type: ignore[union-attr]
    assert rebuilt == records
