"""Round trips and robustness of every wire encoding: frames, encrypted messages, keys,
bundles, content and the local session store.

Two properties per format: ``decode(encode(x)) == x`` for every well-formed value, and a
decoder fed anything (random bytes, or a valid encoding with bits flipped, bytes cut,
inserted or overwritten) returns a value or raises ``ProtocolError``, nothing else. Where a
format is canonical, a value decoded from arbitrary bytes also re-encodes to those bytes.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from functools import cache, partial

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol import primitives as p
from protocol.content import Text, decode_content, encode_content
from protocol.encoding import MAX_VARINT, Reader, encode_varint
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Ack,
    Deliver,
    DeviceMessage,
    DeviceMismatch,
    Error,
    Frame,
    FrameStream,
    Notice,
    Ping,
    Pong,
    QueueEmpty,
    Send,
    SendFlags,
    SendOk,
    decode_frame,
    encode_frame,
)
from protocol.identifiers import USERNAME_PATTERN
from protocol.keys import (
    MAX_KEY_ID,
    MAX_REGISTRATION_ID,
    DeviceCertificate,
    KemPreKey,
    OneTimePreKey,
    PreKeyBundle,
    SignedPreKey,
)
from protocol.limits import (
    MAX_ARCHIVED_STATES,
    MAX_CIPHERTEXT_BYTES,
    MAX_DEVICE_ID,
    MAX_DEVICES_PER_SEND,
    MAX_FRAME_BYTES,
    MAX_LIST_ITEMS,
    MAX_STRING_BYTES,
)
from protocol.messages import MAX_COUNTER, PreKeyMessage, RatchetMessage
from protocol.ratchet import PREVIOUS_CHAINS_KEPT, PendingPreKey, RatchetState
from protocol.session import SessionRecord

from .helpers import WIRE_SETTINGS, Party, plaintext, raises_code

# --- strategies ---------------------------------------------------------------------------


def fixed_bytes(length: int) -> st.SearchStrategy[bytes]:
    """Exactly ``length`` bytes; long ones are expanded from a seed (shrinking them is
    useless and drawing them byte by byte wastes Hypothesis's buffer)."""
    if length <= 64:
        return st.binary(min_size=length, max_size=length)
    return st.integers(min_value=0, max_value=2**32).map(
        lambda seed: random.Random(seed).randbytes(length)
    )


usernames = st.from_regex(USERNAME_PATTERN, fullmatch=True)
device_ids = st.integers(min_value=1, max_value=MAX_DEVICE_ID)
varints = st.integers(min_value=0, max_value=MAX_VARINT)
key_ids = st.integers(min_value=1, max_value=MAX_KEY_ID)
counters = st.integers(min_value=0, max_value=MAX_COUNTER)
registration_ids = st.integers(min_value=1, max_value=MAX_REGISTRATION_ID)
key32 = fixed_bytes(32)
# An X25519 public key as the wire carries it: the top bit of its last byte is clear.
x25519_keys = key32.map(lambda key: key[:31] + bytes((key[31] & 0x7F,)))
short_text = st.text(max_size=60)

positive_varints = st.integers(min_value=1, max_value=MAX_VARINT)  # request ids of requests, seqs
device_messages = st.builds(
    DeviceMessage,
    device_id=device_ids,
    registration_id=registration_ids,
    payload=st.binary(min_size=1, max_size=120),
)
frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        Send,
        request_id=positive_varints,
        recipient=usernames,
        messages=st.lists(device_messages, min_size=1, max_size=4).map(tuple),
        flags=st.sampled_from([SendFlags.NONE, SendFlags.EPHEMERAL]),
    ),
    st.builds(SendOk, request_id=varints, server_time_ms=varints),
    st.builds(
        DeviceMismatch,
        request_id=varints,
        missing=st.lists(device_ids, max_size=5).map(tuple),
        extra=st.lists(device_ids, max_size=5).map(tuple),
        stale=st.lists(device_ids, max_size=5).map(tuple),
    ),
    st.builds(
        Deliver,
        seq=varints,
        sender=usernames,
        sender_device=device_ids,
        server_time_ms=varints,
        payload=st.binary(min_size=1, max_size=120),
        request_id=varints,
    ),
    st.builds(
        Ack, request_id=varints, seqs=st.lists(positive_varints, min_size=1, max_size=6).map(tuple)
    ),
    st.builds(QueueEmpty, request_id=varints),
    st.builds(Error, request_id=varints, code=varints, message=st.text(max_size=200)),
    st.builds(Notice, kind=varints, value=varints, request_id=varints),
    st.builds(Ping, request_id=positive_varints),
    st.builds(Pong, request_id=varints),
)

certificates = st.builds(
    DeviceCertificate,
    device_id=device_ids,
    registration_id=registration_ids,
    signing_key=key32,
    identity_key=x25519_keys,
    signature=fixed_bytes(p.ED25519_SIGNATURE_BYTES),
)
signed_prekeys = st.builds(
    SignedPreKey, key_id=key_ids, public_key=x25519_keys, signature=fixed_bytes(64)
)
one_time_prekeys = st.builds(OneTimePreKey, key_id=key_ids, public_key=x25519_keys)
kem_prekeys = st.builds(
    KemPreKey,
    key_id=key_ids,
    last_resort=st.booleans(),
    public_key=fixed_bytes(p.MLKEM768_PUBLIC_BYTES),
    signature=fixed_bytes(64),
)
bundles = st.builds(
    PreKeyBundle,
    account_identity_key=key32,
    certificate=certificates,
    signed_prekey=signed_prekeys,
    one_time_prekey=st.none() | one_time_prekeys,
    kem_prekey=kem_prekeys,
)
ratchet_messages = st.builds(
    RatchetMessage,
    ratchet_key=x25519_keys,
    previous_chain_length=counters,
    counter=counters,
    ciphertext=st.binary(min_size=p.AEAD_TAG_BYTES, max_size=120),
)
prekey_messages = st.builds(
    PreKeyMessage,
    sender_account_key=key32,
    sender_certificate=certificates,
    base_key=x25519_keys,
    signed_prekey_id=key_ids,
    one_time_prekey_id=st.none() | key_ids,
    kem_prekey_id=key_ids,
    kem_ciphertext=fixed_bytes(p.MLKEM768_CIPHERTEXT_BYTES),
    message=ratchet_messages,
)
texts = st.builds(Text, body=st.text(), sent_at_ms=varints)

pending_prekeys = st.builds(
    PendingPreKey,
    sender_account_key=key32,
    sender_certificate=certificates,
    signed_prekey_id=key_ids,
    one_time_prekey_id=st.none() | key_ids,
    kem_prekey_id=key_ids,
    kem_ciphertext=fixed_bytes(p.MLKEM768_CIPHERTEXT_BYTES),
)


@st.composite
def discarded_ranges(draw: st.DrawFn) -> list[list[int]]:
    """Sorted, disjoint, inclusive [start, end] ranges of evicted counters."""
    bounds = sorted(draw(st.sets(counters, max_size=8)))
    return [[bounds[i], bounds[i + 1]] for i in range(0, len(bounds) - 1, 2)]


@st.composite
def ratchet_states(draw: st.DrawFn) -> RatchetState:
    skipped = draw(st.dictionaries(st.tuples(key32, counters), key32, max_size=6))
    return RatchetState(
        associated_data=draw(st.binary(max_size=256)),
        base_key=draw(key32),
        remote_identity_key=draw(key32),
        root_key=draw(key32),
        sending_private=draw(key32),
        sending_public=draw(key32),
        receiving_key=draw(st.none() | key32),
        sending_chain=draw(st.none() | key32),
        receiving_chain=draw(st.none() | key32),
        send_counter=draw(st.integers(0, MAX_COUNTER + 1)),
        receive_counter=draw(st.integers(0, MAX_COUNTER + 1)),
        previous_sending_length=draw(st.integers(0, MAX_COUNTER + 1)),
        skipped=OrderedDict(skipped),
        previous_receiving_keys=draw(st.lists(key32, max_size=PREVIOUS_CHAINS_KEPT)),
        discarded=draw(
            st.dictionaries(key32, discarded_ranges(), max_size=PREVIOUS_CHAINS_KEPT + 1)
        ),
        pending_prekey=draw(st.none() | pending_prekeys),
    )


session_records = st.lists(ratchet_states(), max_size=3).map(SessionRecord)


def read_all[T](read: Callable[[Reader], T], data: bytes) -> T:
    reader = Reader(data)
    value = read(reader)
    reader.end("value")
    return value


# --- round trips --------------------------------------------------------------------------


@WIRE_SETTINGS
@given(frames)
def test_frame_round_trip(frame: Frame) -> None:
    encoded = encode_frame(frame)
    assert decode_frame(encoded) == frame
    assert encoded[0] == 1 and encoded[1] == frame.type


@WIRE_SETTINGS
@given(ratchet_messages)
def test_ratchet_message_round_trip(message: RatchetMessage) -> None:
    encoded = message.encode()
    assert RatchetMessage.decode(encoded) == message
    assert encoded[0] == 0x11
    assert encoded.startswith(message.header())


@WIRE_SETTINGS
@given(prekey_messages)
def test_prekey_message_round_trip(message: PreKeyMessage) -> None:
    encoded = message.encode()
    assert PreKeyMessage.decode(encoded) == message
    assert encoded[0] == 0x12
    assert encoded.endswith(message.message.encode())


@WIRE_SETTINGS
@given(bundles)
def test_bundle_round_trip(bundle: PreKeyBundle) -> None:
    assert PreKeyBundle.decode(bundle.encode()) == bundle


@WIRE_SETTINGS
@given(certificates)
def test_certificate_round_trip(certificate: DeviceCertificate) -> None:
    assert DeviceCertificate.decode(certificate.encode()) == certificate


@WIRE_SETTINGS
@given(signed_prekeys, one_time_prekeys, kem_prekeys)
def test_prekey_round_trips(signed: SignedPreKey, one_time: OneTimePreKey, kem: KemPreKey) -> None:
    assert read_all(SignedPreKey.read, signed.encode()) == signed
    assert read_all(OneTimePreKey.read, one_time.encode()) == one_time
    assert read_all(KemPreKey.read, kem.encode()) == kem


@WIRE_SETTINGS
@given(texts, st.booleans())
@example(Text("", 0), False)
@example(Text("", 0), True)
@example(Text("ends with NULs\x00\x00", 1), True)
def test_text_content_round_trip(text: Text, hide_length: bool) -> None:
    assert decode_content(encode_content(text, hide_length=hide_length)) == text


@settings(WIRE_SETTINGS, max_examples=100)  # large values: fewer examples
@given(ratchet_states())
def test_ratchet_state_round_trip(state: RatchetState) -> None:
    encoded = state.encode()
    decoded = RatchetState.decode(encoded)
    assert decoded == state
    assert decoded.encode() == encoded


@settings(WIRE_SETTINGS, max_examples=100)  # large values: fewer examples
@given(session_records)
def test_session_record_round_trip(record: SessionRecord) -> None:
    encoded = record.encode()
    decoded = SessionRecord.decode(encoded)
    assert decoded.states == record.states
    assert decoded.encode() == encoded


def test_encoder_refuses_what_the_decoder_refuses() -> None:
    cases: list[tuple[Frame, ErrorCode]] = [
        (Send(1, "Not A Name", (DeviceMessage(1, 1, b"x"),)), ErrorCode.INVALID_USERNAME),
        (Send(1, "alice", ()), ErrorCode.INVALID_VALUE),
        (Send(1, "alice", (DeviceMessage(0, 1, b"x"),)), ErrorCode.INVALID_VALUE),
        (Send(1, "alice", (DeviceMessage(1, 0, b"x"),)), ErrorCode.INVALID_VALUE),
        (Send(1, "alice", (DeviceMessage(1, 1, b""),)), ErrorCode.INVALID_VALUE),
        (Send(0, "alice", (DeviceMessage(1, 1, b"x"),)), ErrorCode.INVALID_VALUE),
        (Ping(0), ErrorCode.INVALID_VALUE),
        (Ack(1, ()), ErrorCode.INVALID_VALUE),
        (Ack(1, (0,)), ErrorCode.INVALID_VALUE),
        (DeviceMismatch(1, (0,), (), ()), ErrorCode.INVALID_VALUE),
        (Deliver(1, "alice", 1, 0, b""), ErrorCode.INVALID_VALUE),
        (Deliver(1, "alice", 0, 0, b"x"), ErrorCode.INVALID_VALUE),
        (Deliver(1, "Alice", 1, 0, b"x"), ErrorCode.INVALID_USERNAME),
        (SendOk(1, MAX_VARINT + 1), ErrorCode.VARINT_OVERFLOW),
        (
            Send(1, "alice", (DeviceMessage(1, 1, b"\x01" * (MAX_CIPHERTEXT_BYTES + 1)),)),
            ErrorCode.CIPHERTEXT_TOO_LARGE,
        ),
    ]
    for frame, code in cases:
        with raises_code(code):
            encode_frame(frame)
    assert decode_frame(encode_frame(Ping(1))) == Ping(1)


@cache
def x25519_key_cases() -> dict[str, tuple[Callable[[bytes], object], bytes, bytes, str]]:
    """case: (decoder, a genuine encoding, an X25519 public key in it, the field's name)."""
    alice, bob = Party.create("alice", seed=201), Party.create("bob", seed=202)
    bundle = bob.bundle()
    assert bundle.one_time_prekey is not None
    setup = PreKeyMessage.decode(alice.initiate(bundle).encrypt(b"x"))
    cert, spk, opk = bundle.certificate, bundle.signed_prekey, bundle.one_time_prekey
    identity = (cert.identity_key, "identity_key")
    signed = (spk.public_key, "signed_prekey.public_key")
    one_time = (opk.public_key, "one_time_prekey.public_key")
    ratchet_key = (setup.message.ratchet_key, "ratchet_key")
    return {
        "certificate": (DeviceCertificate.decode, cert.encode(), *identity),
        "signed prekey": (partial(read_all, SignedPreKey.read), spk.encode(), *signed),
        "one-time prekey": (partial(read_all, OneTimePreKey.read), opk.encode(), *one_time),
        "bundle/certificate": (PreKeyBundle.decode, bundle.encode(), *identity),
        "bundle/signed prekey": (PreKeyBundle.decode, bundle.encode(), *signed),
        "bundle/one-time prekey": (PreKeyBundle.decode, bundle.encode(), *one_time),
        "ratchet message": (RatchetMessage.decode, setup.message.encode(), *ratchet_key),
        "prekey message/base key": (
            PreKeyMessage.decode,
            setup.encode(),
            setup.base_key,
            "base_key",
        ),
        "prekey message/certificate": (
            PreKeyMessage.decode,
            setup.encode(),
            alice.device.identity_key,
            "identity_key",
        ),
        "prekey message/ratchet key": (PreKeyMessage.decode, setup.encode(), *ratchet_key),
    }


X25519_KEY_CASES = [
    "certificate",
    "signed prekey",
    "one-time prekey",
    "bundle/certificate",
    "bundle/signed prekey",
    "bundle/one-time prekey",
    "ratchet message",
    "prekey message/base key",
    "prekey message/certificate",
    "prekey message/ratchet key",
]


def flip_bits(data: bytes, index: int, mask: int) -> bytes:
    return data[:index] + bytes((data[index] ^ mask,)) + data[index + 1 :]


@pytest.mark.parametrize("case", X25519_KEY_CASES)
def test_x25519_keys_on_the_wire_must_have_their_top_bit_clear(case: str) -> None:
    """X25519 ignores the top bit of a public key, so a key with it set is a second spelling
    of another key: every decoder refuses one (BAD_KEY, naming the field); the other bits
    of the last byte are the decoder's no concern."""
    assert sorted(x25519_key_cases()) == sorted(X25519_KEY_CASES)
    decode, encoded, key, field = x25519_key_cases()[case]
    assert key[31] & 0x80 == 0, "key generation never sets the top bit"
    last = encoded.index(key) + 31
    decode(encoded)
    with raises_code(ErrorCode.BAD_KEY) as caught:
        decode(flip_bits(encoded, last, 0x80))
    assert caught[0].message == f"{field} is not a canonical X25519 key"
    decode(flip_bits(encoded, last, 0x7F))


def test_decoder_limits() -> None:
    """What only a (misbehaving) peer can send: built by hand, byte by byte."""
    ping = encode_frame(Ping(1))
    with raises_code(ErrorCode.INVALID_VALUE):
        decode_frame(ping[:2] + b"\x00")  # PING with request id 0
    with raises_code(ErrorCode.UNSUPPORTED_VERSION):
        decode_frame(b"\x02" + ping[1:])
    with raises_code(ErrorCode.UNKNOWN_TYPE):
        decode_frame(b"\x01\x63\x00")
    with raises_code(ErrorCode.TRAILING_BYTES):
        decode_frame(ping + b"\x00")
    big = b"\x01" * (MAX_CIPHERTEXT_BYTES + 1)
    deliver = encode_frame(Deliver(1, "alice", 1, 0, b"x"))
    with raises_code(ErrorCode.CIPHERTEXT_TOO_LARGE):
        decode_frame(deliver[:-2] + encode_varint(len(big)) + big)


# Deliberately loose values: some within the limits, some just outside them.
loose_ints = st.one_of(st.integers(0, 3), st.integers(0, 2**64))
loose_names = st.one_of(usernames, st.text(max_size=40), st.just("a" * 65))
loose_device_ids = st.integers(0, MAX_DEVICE_ID + 1)
loose_payloads = st.one_of(st.binary(max_size=8), st.just(b"\x01" * (MAX_CIPHERTEXT_BYTES + 1)))
loose_id_lists = st.one_of(
    st.lists(loose_device_ids, max_size=3).map(tuple),
    st.just((1,) * (MAX_DEVICES_PER_SEND + 1)),
)
loose_frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        Send,
        request_id=loose_ints,
        recipient=loose_names,
        messages=st.one_of(
            st.lists(
                st.builds(
                    DeviceMessage,
                    device_id=loose_device_ids,
                    registration_id=st.integers(0, MAX_REGISTRATION_ID + 1),
                    payload=loose_payloads,
                ),
                max_size=3,
            ).map(tuple),
            st.just((DeviceMessage(1, 1, b"x"),) * (MAX_DEVICES_PER_SEND + 1)),
        ),
        flags=st.integers(0, 3).map(SendFlags),
    ),
    st.builds(SendOk, request_id=loose_ints, server_time_ms=loose_ints),
    st.builds(
        DeviceMismatch,
        request_id=loose_ints,
        missing=loose_id_lists,
        extra=loose_id_lists,
        stale=loose_id_lists,
    ),
    st.builds(
        Deliver,
        seq=loose_ints,
        sender=loose_names,
        sender_device=loose_device_ids,
        server_time_ms=loose_ints,
        payload=loose_payloads,
        request_id=loose_ints,
    ),
    st.builds(
        Ack,
        request_id=loose_ints,
        seqs=st.one_of(
            st.lists(loose_ints, max_size=3).map(tuple), st.just((1,) * (MAX_LIST_ITEMS + 1))
        ),
    ),
    st.builds(
        Error,
        request_id=loose_ints,
        code=loose_ints,
        message=st.one_of(st.text(max_size=20), st.just("x" * (MAX_STRING_BYTES + 1))),
    ),
    st.builds(Notice, kind=loose_ints, value=loose_ints, request_id=loose_ints),
    st.builds(Ping, request_id=loose_ints),
    st.builds(QueueEmpty, request_id=loose_ints),
)


@WIRE_SETTINGS
@given(loose_frames)
def test_whatever_encodes_decodes_to_itself(frame: Frame) -> None:
    """encode_frame refuses (ProtocolError) whatever decode_frame would refuse: a frame
    that encodes always decodes back to itself, so a client never sends, and the server
    never pushes, a frame its peer must reject."""
    try:
        encoded = encode_frame(frame)
    except ProtocolError:
        return
    assert decode_frame(encoded) == frame


def frames_beyond_decoder_limits() -> dict[str, tuple[Frame, ErrorCode]]:
    one = (DeviceMessage(1, 1, b"x"),)
    full = b"\x01" * MAX_CIPHERTEXT_BYTES
    return {
        "unknown send flag": (Send(1, "alice", one, SendFlags(2)), ErrorCode.INVALID_VALUE),
        "too many devices in a send": (
            Send(1, "alice", one * (MAX_DEVICES_PER_SEND + 1)),
            ErrorCode.TOO_LARGE,
        ),
        "registration id above 2**32-1": (
            Send(1, "alice", (DeviceMessage(1, MAX_REGISTRATION_ID + 1, b"x"),)),
            ErrorCode.TOO_LARGE,
        ),
        "too many ids in a device mismatch": (
            DeviceMismatch(1, (1,) * (MAX_DEVICES_PER_SEND + 1), (), ()),
            ErrorCode.TOO_LARGE,
        ),
        "too many seqs in an ack": (Ack(1, (1,) * (MAX_LIST_ITEMS + 1)), ErrorCode.TOO_LARGE),
        "delivered ciphertext above 96 KiB": (
            Deliver(1, "alice", 1, 0, b"\x01" * (MAX_CIPHERTEXT_BYTES + 1)),
            ErrorCode.CIPHERTEXT_TOO_LARGE,
        ),
        "error message above 4 KiB": (
            Error(1, 0, "x" * (MAX_STRING_BYTES + 1)),
            ErrorCode.TOO_LARGE,
        ),
        # Each ciphertext is within its limit; together they exceed MAX_FRAME_BYTES.
        "frame above MAX_FRAME_BYTES": (
            Send(
                1,
                "alice",
                tuple(
                    DeviceMessage(i, 1, full)
                    for i in range(1, MAX_FRAME_BYTES // MAX_CIPHERTEXT_BYTES + 3)
                ),
            ),
            ErrorCode.TOO_LARGE,
        ),
    }


@pytest.mark.parametrize("case", sorted(frames_beyond_decoder_limits()))
def test_encoder_refuses_frames_beyond_decoder_limits(case: str) -> None:
    """encode_frame refuses to encode what decode_frame would refuse (otherwise a server
    Error frame with a long message would break the client's FrameStream)."""
    frame, code = frames_beyond_decoder_limits()[case]
    try:
        encoded = encode_frame(frame)
    except ProtocolError as exc:
        assert exc.code is code
        return
    with raises_code(code):
        decode_frame(encoded)
    pytest.fail(f"encode_frame built a frame ({case}) that decode_frame refuses: {code.name}")


# --- anything in, value or ProtocolError out ------------------------------------------------


def canonical_frame(data: bytes) -> bytes:
    return encode_frame(decode_frame(data))


def canonical_ratchet(data: bytes) -> bytes:
    return RatchetMessage.decode(data).encode()


def canonical_prekey(data: bytes) -> bytes:
    return PreKeyMessage.decode(data).encode()


def canonical_bundle(data: bytes) -> bytes:
    return PreKeyBundle.decode(data).encode()


def canonical_certificate(data: bytes) -> bytes:
    return DeviceCertificate.decode(data).encode()


# Decoders whose format has exactly one encoding per value: a decoded value re-encodes to
# the very bytes it came from (no malleability).
CANONICAL: dict[str, Callable[[bytes], bytes]] = {
    "frame": canonical_frame,
    "ratchet": canonical_ratchet,
    "prekey": canonical_prekey,
    "bundle": canonical_bundle,
    "certificate": canonical_certificate,
}
# Decoders where only "value or ProtocolError" is promised (padding and the local store
# accept more than one spelling of a value).
OTHER: dict[str, Callable[[bytes], object]] = {
    "content": decode_content,
    "record": SessionRecord.decode,
    "state": RatchetState.decode,
}


# Decoders of formats that hold an X25519 public key (the local store does too, in the
# device certificate of a pending prekey state).
X25519_KEY_DECODERS = frozenset({"ratchet", "prekey", "bundle", "certificate", "record", "state"})


def check_decoder(name: str, data: bytes) -> None:
    try:
        if name in CANONICAL:
            assert CANONICAL[name](data) == data, f"{name}: decoded value re-encodes differently"
        else:
            OTHER[name](data)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        # Decoders report format errors (1xx); frames also check usernames, and whatever
        # holds an X25519 public key checks that its top bit is clear.
        allowed_extra = (
            {ErrorCode.INVALID_USERNAME, ErrorCode.CIPHERTEXT_TOO_LARGE}
            if name == "frame"
            else {ErrorCode.BAD_KEY}
            if name in X25519_KEY_DECODERS
            else set()
        )
        assert exc.code < 200 or exc.code in allowed_extra, f"{name}: unexpected {exc.code!r}"


ALL_DECODERS = sorted([*CANONICAL, *OTHER])


@cache
def real_session_encodings() -> tuple[bytes, ...]:
    """Records and states from an actual conversation: pending prekey state, skipped keys."""
    alice, bob = Party.create("alice", seed=101), Party.create("bob", seed=102)
    alice_record = alice.initiate(bob.bundle())
    bob_record = SessionRecord()
    messages = [alice_record.encrypt(plaintext("alice", i)) for i in range(4)]
    bob.decrypt(bob_record, messages[3])  # three skipped keys
    out = [alice_record.encode(), bob_record.encode()]
    out += [state.encode() for state in alice_record.states + bob_record.states]
    return tuple(out)


@st.composite
def valid_encodings(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["frame", "ratchet", "prekey", "bundle", "cert", "content", "state", "real"]
        )
    )
    match kind:
        case "frame":
            return encode_frame(draw(frames))
        case "ratchet":
            return draw(ratchet_messages).encode()
        case "prekey":
            return draw(prekey_messages).encode()
        case "bundle":
            return draw(bundles).encode()
        case "cert":
            return draw(certificates).encode()
        case "content":
            return encode_content(draw(texts), hide_length=draw(st.booleans()))
        case "state":
            return draw(
                st.one_of(
                    ratchet_states().map(RatchetState.encode),
                    session_records.map(SessionRecord.encode),
                )
            )
        case _:
            return draw(st.sampled_from(real_session_encodings()))


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        operation = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if not data:
            operation = "insert"
        match operation:
            case "flip":
                bit = draw(st.integers(0, len(data) * 8 - 1))
                data[bit // 8] ^= 1 << (bit % 8)
            case "truncate":
                del data[draw(st.integers(0, len(data) - 1)) :]
            case "insert":
                at = draw(st.integers(0, len(data)))
                data[at:at] = draw(st.binary(min_size=1, max_size=9))
            case "delete":
                at = draw(st.integers(0, len(data) - 1))
                del data[at : at + draw(st.integers(1, 9))]
            case _:
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@WIRE_SETTINGS
@given(st.sampled_from(ALL_DECODERS), st.binary(max_size=400))
@example("record", b"\x01\x01\x00")
@example("frame", b"\x01\x01\x00\x05alice\x00\x01\x01\x00\x00")
def test_decoders_on_random_bytes(name: str, data: bytes) -> None:
    check_decoder(name, data)


@WIRE_SETTINGS
@given(st.sampled_from(ALL_DECODERS), valid_encodings().flatmap(mutated))
def test_decoders_on_mutated_encodings(name: str, data: bytes) -> None:
    check_decoder(name, data)


@WIRE_SETTINGS
@given(st.sampled_from(ALL_DECODERS), valid_encodings())
def test_decoders_on_valid_encodings_of_other_types(name: str, data: bytes) -> None:
    check_decoder(name, data)


# --- FrameStream --------------------------------------------------------------------------


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Frame]:
    stream = FrameStream()
    out: list[Frame] = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out += stream.feed(data[start:cut])
        start = cut
    return out


@WIRE_SETTINGS
@given(st.lists(frames, max_size=6), st.data())
def test_frame_stream_any_split(sequence: list[Frame], data: st.DataObject) -> None:
    wire = b"".join(FrameStream.encode(frame) for frame in sequence)
    assert FrameStream().feed(wire) == sequence
    byte_by_byte = FrameStream()
    collected: list[Frame] = []
    for index in range(len(wire)):
        collected += byte_by_byte.feed(wire[index : index + 1])
    assert collected == sequence
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10))
    assert feed_in_pieces(wire, cuts) == sequence


def test_frame_stream_length_prefix() -> None:
    frame = Ping(7)
    encoded = encode_frame(frame)
    assert FrameStream.encode(frame) == encode_varint(len(encoded)) + encoded
    stream = FrameStream()
    assert stream.feed(b"") == []
    assert stream.feed(FrameStream.encode(frame)[:-1]) == []
    assert stream.feed(FrameStream.encode(frame)[-1:]) == [frame]


def broken_stream_check(stream: FrameStream) -> None:
    with raises_code(ErrorCode.MALFORMED):
        stream.feed(b"")
    with raises_code(ErrorCode.MALFORMED):
        stream.feed(FrameStream.encode(Ping(1)))


@WIRE_SETTINGS
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(frames, max_size=3).flatmap(
            lambda seq: mutated(b"".join(FrameStream.encode(f) for f in seq) or b"\x00")
        ),
    )
)
@example(b"\x00")  # a zero-length frame
@example(b"\x80\x00")  # a non-minimal length
@example(b"\xff" * 9)  # a length longer than nine bytes
def test_frame_stream_arbitrary_bytes(data: bytes) -> None:
    stream = FrameStream()
    frames_out: list[Frame] = []
    failed = False
    for index in range(len(data)):
        try:
            frames_out += stream.feed(data[index : index + 1])
        except ProtocolError as exc:
            assert isinstance(exc.code, ErrorCode)
            failed = True
            break
    # What came out is exactly what went in, frame for frame.
    consumed = b"".join(FrameStream.encode(frame) for frame in frames_out)
    assert data.startswith(consumed)
    if failed:
        broken_stream_check(stream)


def test_frame_stream_errors_are_sticky() -> None:
    for bad, code in (
        (b"\x00", ErrorCode.TRUNCATED),
        (b"\x80\x00", ErrorCode.NON_MINIMAL_VARINT),
        (b"\xff" * 9, ErrorCode.VARINT_OVERFLOW),
        (encode_varint(4 * 1024 * 1024 + 1), ErrorCode.TOO_LARGE),
        (b"\x03\x01\x63\x00", ErrorCode.UNKNOWN_TYPE),
    ):
        stream = FrameStream()
        with raises_code(code):
            stream.feed(bad)
        broken_stream_check(stream)


def test_a_bad_frame_fails_the_whole_feed_call() -> None:
    """The good frames before a bad one in the same ``feed`` call are not returned (the
    stream is dead after an error); frames returned by earlier calls are unaffected."""
    ping = FrameStream.encode(Ping(7))
    stream = FrameStream()
    assert stream.feed(ping) == [Ping(7)]
    with raises_code(ErrorCode.UNKNOWN_TYPE):
        stream.feed(ping + ping + b"\x03\x01\x63\x00")
    broken_stream_check(stream)


def test_bounded_lists_in_states() -> None:
    """A stored record cannot claim more states than the archive holds."""
    too_many = b"\x01" + encode_varint(MAX_ARCHIVED_STATES + 2)
    with raises_code(ErrorCode.TOO_LARGE):
        SessionRecord.decode(too_many)
