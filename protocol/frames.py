"""Transport frames: what a client and the relay exchange, one per WebSocket binary message.

    frame = version u8 (1) | type u8 | request_id varint | body

The client numbers its requests; the server echoes the number in its answer (SEND_OK,
DEVICE_MISMATCH, ERROR, PONG) and uses 0 for what it pushes unasked (DELIVER,
QUEUE_EMPTY, NOTICE). Bodies, by type (docs/protocol.md, "Frames"):

    SEND            c→s  recipient str | flags u8 | [ttl_seconds varint if EXPIRES] |
                         count varint |
                         count × (device_id varint | registration_id varint | payload bytes)
    SEND_OK         s→c  server_time_ms varint
    DEVICE_MISMATCH s→c  missing list | extra list | stale list   (list = count varint | ids)
    DELIVER         s→c  seq varint | sender str | sender_device varint |
                         server_time_ms varint | payload bytes
    ACK             c→s  count varint | count × seq varint
    QUEUE_EMPTY     s→c  (empty)
    ERROR           s→c  code varint | message str
    NOTICE          s→c  kind varint | value varint
    PING / PONG     both (empty)
    GROUP_SEND      c→s  group_id[16] | flags u8 | [ttl_seconds varint if EXPIRES] |
                         roster_digest[16] | payload bytes          (section 17.3)

``decode_frame`` returns a frame or raises ``ProtocolError``, never anything else.
``FrameStream`` does the same for byte streams, where each frame is preceded by its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .encoding import Reader, Writer, encode_varint
from .errors import ErrorCode, ProtocolError
from .groups import GROUP_ID_BYTES, ROSTER_DIGEST_BYTES
from .identifiers import check_username
from .keys import MAX_REGISTRATION_ID, check_device_id
from .limits import (
    MAX_CIPHERTEXT_BYTES,
    MAX_DEVICE_ID,
    MAX_DEVICES_PER_SEND,
    MAX_FRAME_BYTES,
    MAX_LIST_ITEMS,
    MAX_STRING_BYTES,
    MAX_TTL_SECONDS,
    MAX_USERNAME_BYTES,
    PROTOCOL_VERSION,
)


class FrameType(IntEnum):
    SEND = 1
    SEND_OK = 2
    DEVICE_MISMATCH = 3
    DELIVER = 4
    ACK = 5
    QUEUE_EMPTY = 6
    ERROR = 7
    NOTICE = 8
    PING = 9
    PONG = 10
    GROUP_SEND = 11


class SendFlags(IntFlag):
    NONE = 0
    # Deliver only to devices connected now; never stored (typing indicators).
    EPHEMERAL = 1
    # The relay drops the envelopes ttl_seconds after accepting them (disappearing
    # messages), so its copy never outlives the message. Followed by ttl_seconds.
    EXPIRES = 2


_KNOWN_SEND_FLAGS = int(SendFlags.EPHEMERAL | SendFlags.EXPIRES)


class NoticeKind(IntEnum):
    PREKEYS_LOW = 1  # value: one-time prekeys left on the server for this device


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    device_id: int
    registration_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Send:
    request_id: int
    recipient: str
    messages: tuple[DeviceMessage, ...]
    flags: SendFlags = SendFlags.NONE
    ttl_seconds: int | None = None  # present iff flags has EXPIRES
    type = FrameType.SEND


@dataclass(frozen=True, slots=True)
class GroupSend:
    """One SenderKeyMessage for every device of the group's roster but the sender's."""

    request_id: int
    group_id: bytes  # 16 bytes
    roster_digest: bytes  # 16 bytes, groups.roster_digest of the roster the key went to
    payload: bytes
    flags: SendFlags = SendFlags.NONE
    ttl_seconds: int | None = None  # present iff flags has EXPIRES
    type = FrameType.GROUP_SEND


@dataclass(frozen=True, slots=True)
class SendOk:
    request_id: int
    server_time_ms: int
    type = FrameType.SEND_OK


@dataclass(frozen=True, slots=True)
class DeviceMismatch:
    request_id: int
    missing: tuple[int, ...]
    extra: tuple[int, ...]
    stale: tuple[int, ...]
    type = FrameType.DEVICE_MISMATCH


@dataclass(frozen=True, slots=True)
class Deliver:
    seq: int
    sender: str
    sender_device: int
    server_time_ms: int
    payload: bytes
    request_id: int = 0
    type = FrameType.DELIVER


@dataclass(frozen=True, slots=True)
class Ack:
    request_id: int
    seqs: tuple[int, ...]
    type = FrameType.ACK


@dataclass(frozen=True, slots=True)
class QueueEmpty:
    request_id: int = 0
    type = FrameType.QUEUE_EMPTY


@dataclass(frozen=True, slots=True)
class Error:
    request_id: int
    code: int  # an ErrorCode value; kept as int so a newer peer's code still decodes
    message: str
    type = FrameType.ERROR

    @property
    def error_code(self) -> ErrorCode | None:
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Notice:
    kind: int  # a NoticeKind value; unknown kinds are kept for forward compatibility
    value: int
    request_id: int = 0
    type = FrameType.NOTICE


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: int
    type = FrameType.PING


@dataclass(frozen=True, slots=True)
class Pong:
    request_id: int
    type = FrameType.PONG


Frame = (
    Send
    | SendOk
    | DeviceMismatch
    | Deliver
    | Ack
    | QueueEmpty
    | Error
    | Notice
    | Ping
    | Pong
    | GroupSend
)


# Requests that are answered: their answer must be matched to them by request id, so 0
# (which marks what the server pushes unasked) is not allowed.
_NEEDS_REQUEST_ID = frozenset({FrameType.SEND, FrameType.PING, FrameType.GROUP_SEND})


def _write_ids(w: Writer, ids: tuple[int, ...]) -> None:
    w.varint(len(ids))
    for value in ids:
        w.varint(value)


def _read_ids(r: Reader, what: str, maximum: int, limit: int) -> tuple[int, ...]:
    count = r.varint(f"{what} count", maximum=limit)
    ids = tuple(r.varint(what, maximum=maximum) for _ in range(count))
    if 0 in ids:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"{what} ids start at 1")
    return ids


def _read_payload(r: Reader, whose: str) -> bytes:
    length = r.varint("payload length")
    if length > MAX_CIPHERTEXT_BYTES:
        raise ProtocolError(
            ErrorCode.CIPHERTEXT_TOO_LARGE,
            f"ciphertext {whose} is {length} bytes; the limit is {MAX_CIPHERTEXT_BYTES}",
        )
    payload = r.fixed(length, "payload")
    if not payload:
        raise ProtocolError(ErrorCode.INVALID_VALUE, "empty payload")
    return payload


def _read_send_flags(r: Reader) -> tuple[SendFlags, int | None]:
    raw_flags = r.u8("flags")
    if raw_flags & ~_KNOWN_SEND_FLAGS:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"unknown send flags {raw_flags:#x}")
    flags = SendFlags(raw_flags)
    if not flags & SendFlags.EXPIRES:
        return flags, None
    ttl_seconds = r.varint("ttl_seconds", maximum=MAX_TTL_SECONDS)
    if ttl_seconds == 0:
        raise ProtocolError(ErrorCode.INVALID_VALUE, "ttl_seconds must not be 0")
    return flags, ttl_seconds


def _write_send_flags(w: Writer, flags: SendFlags, ttl_seconds: int | None) -> None:
    # The flag, not the field, says whether ttl_seconds follows; refuse a frame whose two
    # disagree, since it could not decode to itself.
    if bool(flags & SendFlags.EXPIRES) != (ttl_seconds is not None):
        raise ProtocolError(
            ErrorCode.INVALID_VALUE, "ttl_seconds must be given exactly when EXPIRES is set"
        )
    w.u8(int(flags))
    if ttl_seconds is not None:
        w.varint(ttl_seconds)


def encode_frame(frame: Frame) -> bytes:
    """Encode a frame. Whatever this returns decodes to an equal frame: the result is
    checked with ``decode_frame``, so an encoder can never emit what a decoder refuses."""
    encoded = _encode(frame)
    decode_frame(encoded)
    return encoded


def _encode(frame: Frame) -> bytes:
    w = Writer().u8(PROTOCOL_VERSION).u8(frame.type).varint(frame.request_id)
    match frame:
        case Send():
            w.str_(frame.recipient)
            _write_send_flags(w, frame.flags, frame.ttl_seconds)
            w.varint(len(frame.messages))
            for message in frame.messages:
                w.varint(message.device_id).varint(message.registration_id)
                w.bytes_(message.payload)
        case SendOk():
            w.varint(frame.server_time_ms)
        case DeviceMismatch():
            _write_ids(w, frame.missing)
            _write_ids(w, frame.extra)
            _write_ids(w, frame.stale)
        case Deliver():
            w.varint(frame.seq).str_(frame.sender).varint(frame.sender_device)
            w.varint(frame.server_time_ms).bytes_(frame.payload)
        case Ack():
            _write_ids(w, frame.seqs)
        case Error():
            w.varint(frame.code).str_(frame.message)
        case Notice():
            w.varint(frame.kind).varint(frame.value)
        case GroupSend():
            w.fixed(frame.group_id, GROUP_ID_BYTES)
            _write_send_flags(w, frame.flags, frame.ttl_seconds)
            w.fixed(frame.roster_digest, ROSTER_DIGEST_BYTES).bytes_(frame.payload)
        case QueueEmpty() | Ping() | Pong():
            pass
    return w.getvalue()


def decode_frame(data: bytes) -> Frame:
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"frame of {len(data)} bytes is above {MAX_FRAME_BYTES}"
        )
    r = Reader(data)
    version = r.u8("frame version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"frame version {version}; this side speaks {PROTOCOL_VERSION}",
        )
    raw_type = r.u8("frame type")
    try:
        frame_type = FrameType(raw_type)
    except ValueError:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {raw_type}") from None
    request_id = r.varint("request_id")
    if request_id == 0 and frame_type in _NEEDS_REQUEST_ID:
        raise ProtocolError(
            ErrorCode.INVALID_VALUE, f"{frame_type.name} needs a request id of 1 or more"
        )
    frame: Frame
    match frame_type:
        case FrameType.SEND:
            recipient = check_username(r.str_("recipient", MAX_USERNAME_BYTES))
            flags, ttl_seconds = _read_send_flags(r)
            count = r.varint("device count", maximum=MAX_DEVICES_PER_SEND)
            if count == 0:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "a send needs at least one device")
            messages = []
            for _ in range(count):
                device_id = r.varint("device_id", maximum=MAX_DEVICE_ID)
                check_device_id(device_id)
                registration_id = r.varint("registration_id", maximum=MAX_REGISTRATION_ID)
                if registration_id == 0:
                    raise ProtocolError(ErrorCode.INVALID_VALUE, "registration_id must not be 0")
                payload = _read_payload(r, f"for device {device_id}")
                messages.append(DeviceMessage(device_id, registration_id, payload))
            frame = Send(request_id, recipient, tuple(messages), flags, ttl_seconds)
        case FrameType.SEND_OK:
            frame = SendOk(request_id, r.varint("server_time_ms"))
        case FrameType.DEVICE_MISMATCH:
            frame = DeviceMismatch(
                request_id,
                _read_ids(r, "missing", MAX_DEVICE_ID, MAX_DEVICES_PER_SEND),
                _read_ids(r, "extra", MAX_DEVICE_ID, MAX_DEVICES_PER_SEND),
                _read_ids(r, "stale", MAX_DEVICE_ID, MAX_DEVICES_PER_SEND),
            )
        case FrameType.DELIVER:
            seq = r.varint("seq")
            sender = check_username(r.str_("sender", MAX_USERNAME_BYTES))
            sender_device = r.varint("sender_device", maximum=MAX_DEVICE_ID)
            check_device_id(sender_device)
            server_time = r.varint("server_time_ms")
            payload = _read_payload(r, f"from device {sender_device}")
            frame = Deliver(seq, sender, sender_device, server_time, payload, request_id)
        case FrameType.ACK:
            seqs = _read_ids(r, "seq", 2**63 - 1, MAX_LIST_ITEMS)
            if not seqs:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "an ack needs at least one seq")
            frame = Ack(request_id, seqs)
        case FrameType.QUEUE_EMPTY:
            frame = QueueEmpty(request_id)
        case FrameType.ERROR:
            frame = Error(request_id, r.varint("code"), r.str_("message", MAX_STRING_BYTES))
        case FrameType.NOTICE:
            frame = Notice(r.varint("kind"), r.varint("value"), request_id)
        case FrameType.PING:
            frame = Ping(request_id)
        case FrameType.PONG:
            frame = Pong(request_id)
        case FrameType.GROUP_SEND:
            group_id = r.fixed(GROUP_ID_BYTES, "group_id")
            flags, ttl_seconds = _read_send_flags(r)
            roster_digest = r.fixed(ROSTER_DIGEST_BYTES, "roster_digest")
            payload = _read_payload(r, "for the group")
            frame = GroupSend(request_id, group_id, roster_digest, payload, flags, ttl_seconds)
    r.end(f"{frame_type.name} frame")
    return frame


class FrameStream:
    """Sans-I/O decoder for byte streams: each frame is ``length varint | frame``.

    Feed it bytes as they arrive, in any split; it returns the frames completed so far.
    ``feed`` raises on the first bad frame, and frames completed earlier in that same call
    are not returned: after a ProtocolError the stream is unusable (the framing is lost;
    every later ``feed`` raises MALFORMED) and the peer must reconnect anyway.
    """

    __slots__ = ("_buffer", "_broken")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken = False

    @staticmethod
    def encode(frame: Frame) -> bytes:
        data = encode_frame(frame)
        return encode_varint(len(data)) + data

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken:
            raise ProtocolError(ErrorCode.MALFORMED, "stream already failed; reconnect")
        self._buffer += data
        frames: list[Frame] = []
        try:
            while (frame := self._next()) is not None:
                frames.append(frame)
        except ProtocolError:
            self._broken = True
            raise
        return frames

    def _next(self) -> Frame | None:
        length = 0
        for index in range(min(len(self._buffer), 9)):
            byte = self._buffer[index]
            length |= (byte & 0x7F) << (7 * index)
            if byte & 0x80:
                continue
            if byte == 0 and index > 0:
                raise ProtocolError(ErrorCode.NON_MINIMAL_VARINT, "frame length: non-minimal")
            if length > MAX_FRAME_BYTES:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"frame length {length} is too large")
            start = index + 1
            if len(self._buffer) < start + length:
                return None
            body = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            return decode_frame(body)
        if len(self._buffer) >= 9:
            raise ProtocolError(ErrorCode.VARINT_OVERFLOW, "frame length longer than 9 bytes")
        return None
