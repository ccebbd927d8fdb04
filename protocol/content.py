"""What is inside an encrypted message: typed content, then padding.

    content = type u8 | sent_at varint (milliseconds since the Unix epoch) | body
    plaintext = pad(content)

The sender's clock goes inside the encryption so the server can neither read nor alter it.
A message is named by its sender and its sent_at (as in Signal), which is how receipts
refer to the messages they acknowledge. Bodies by type:

    TEXT (1)     the UTF-8 text itself, to the end (its length is known once the padding
                 is removed)
    RECEIPT (2)  kind u8 (1 delivered, 2 read) | count varint (1..MAX_RECEIPT_ITEMS) |
                 count × sent_at varint of the acknowledged messages
    SENT (3)     to our own other devices, what this device sent to someone:
                 destination str (username) | the text, to the end
    HISTORY (4)  one chunk of conversation history for a newly linked device:
                 transfer_id[16] | index varint | total varint (1..MAX_HISTORY_CHUNKS) |
                 records bytes, where records = count varint | count × HistoryRecord
                 HistoryRecord = peer str | direction u8 (0 in, 1 out) | sent_at varint |
                                 text str

    TYPING (5)        action u8 (0 stopped, 1 started)
    SENDER_KEY (6)    group_id[16] | key_id varint (1..2**31 - 1) | iteration varint |
                      chain_key[32] | signing_key[32]: a group sender key (senderkeys.py)
    ATTACHMENT (7)    the pointer to an encrypted blob (attachments.py): blob_id[16] |
                      key[32] | size varint | digest[32] | flags u8 | content_type str |
                      file_name str | duration_ms varint | width varint | height varint |
                      thumbnail bytes | caption str
    GROUP_UPDATE (8)  group_id[16] | action u8 | name str | timer_seconds varint |
                      targets count varint | targets × username str
    TIMER (9)         timer_seconds varint (0 = off): the conversation's disappearing timer
    EXPIRING (10)     timer_seconds varint | inner type u8 | inner body (TEXT, ATTACHMENT)
    SENT_CONTENT (11) destination str | inner type u8 | inner body (ATTACHMENT, EXPIRING,
                      TIMER): SENT for anything but plain text

An inner content (EXPIRING, SENT_CONTENT) has no sent_at of its own: it shares the outer
one, so the encoder refuses an inner content whose sent_at_ms differs (INVALID_VALUE)
and the decoder gives it the outer one. Limits of each field are in docs/protocol.md,
section 17.4; the encoder enforces the same ones as the decoder, with the same codes.

Receipts are end-to-end encrypted like any message: the server never learns that a
message was delivered or read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from . import primitives as p
from .attachments import (
    ATTACHMENT_DIGEST_BYTES,
    ATTACHMENT_KEY_BYTES,
    BLOB_ID_BYTES,
    MAX_ATTACHMENT_BYTES,
)
from .encoding import Reader, Writer, encode_utf8
from .errors import ErrorCode, ProtocolError
from .groups import GROUP_ID_BYTES, MAX_GROUP_MEMBERS
from .identifiers import check_username
from .limits import MAX_TEXT_BYTES, MAX_TTL_SECONDS, MAX_USERNAME_BYTES
from .padding import pad, unpad

MAX_RECEIPT_ITEMS = 100
MAX_HISTORY_CHUNKS = 10_000
HISTORY_TRANSFER_ID_BYTES = 16
# A history chunk's records stay below this, so a chunk fits one envelope (96 KiB) with
# room for the ratchet header, padding and the frame.
MAX_HISTORY_CHUNK_BYTES = 64 * 1024
MAX_SENDER_KEY_ID = 2**31 - 1
MAX_SENDER_KEY_ITERATION = 2**32 - 1
CHAIN_KEY_BYTES = 32
MAX_GROUP_NAME_BYTES = 256
MAX_CONTENT_TYPE_BYTES = 128
MAX_FILE_NAME_BYTES = 255
MAX_THUMBNAIL_BYTES = 65_536
MAX_CAPTION_BYTES = 4_096


class ContentType(IntEnum):
    TEXT = 1
    RECEIPT = 2
    SENT = 3
    HISTORY = 4
    TYPING = 5
    SENDER_KEY = 6
    ATTACHMENT = 7
    GROUP_UPDATE = 8
    TIMER = 9
    EXPIRING = 10
    SENT_CONTENT = 11


class ReceiptKind(IntEnum):
    DELIVERED = 1
    READ = 2


class TypingAction(IntEnum):
    STOPPED = 0
    STARTED = 1


class AttachmentFlags(IntFlag):
    NONE = 0
    VOICE = 1  # a voice message


# As an int: ~ of an IntFlag stays inside the defined bits, so it would hide unknown ones.
_KNOWN_ATTACHMENT_FLAGS = int(AttachmentFlags.VOICE)


class GroupAction(IntEnum):
    """What the sender of a GROUP_UPDATE did through the REST API."""

    CREATED = 1
    MEMBERS_ADDED = 2
    MEMBERS_REMOVED = 3
    LEFT = 4
    RENAMED = 5
    ADMINS_CHANGED = 6
    SNAPSHOT = 7  # sent to a new member: the current name and timer


@dataclass(frozen=True, slots=True)
class Text:
    body: str
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class Receipt:
    kind: ReceiptKind
    message_sent_at_ms: tuple[int, ...]  # the acknowledged messages' sent_at
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class SentTranscript:
    """A copy, for our own other devices, of a text this device sent to ``destination``."""

    destination: str
    body: str
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    peer: str
    outgoing: bool
    sent_at_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class HistoryChunk:
    transfer_id: bytes
    index: int  # 0-based
    total: int
    records: tuple[HistoryRecord, ...]
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class Typing:
    action: TypingAction
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class SenderKeyDistribution:
    """A sender's group key, sent over the pairwise sessions (senderkeys.py); accepted only
    over a pairwise session, and stored for that session's peer device."""

    group_id: bytes
    key_id: int
    iteration: int
    chain_key: bytes
    signing_key: bytes  # the Ed25519 public key that signs the sender's group messages
    sent_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """The pointer to an uploaded blob: all a receiver needs to fetch and decrypt it."""

    blob_id: bytes
    key: bytes
    size: int  # plaintext bytes
    digest: bytes  # SHA-256 of the whole blob
    content_type: str  # MIME type
    sent_at_ms: int
    flags: AttachmentFlags = AttachmentFlags.NONE
    file_name: str = ""
    duration_ms: int = 0  # voice or video length; 0 if none
    width: int = 0  # image pixels; 0 if none
    height: int = 0
    thumbnail: bytes = b""  # a small JPEG made by the sender
    caption: str = ""


@dataclass(frozen=True, slots=True)
class GroupUpdate:
    """What the sender changed in a group; the roster itself always comes from the server.
    The group's name and timer travel only here."""

    group_id: bytes
    action: GroupAction
    name: str
    timer_seconds: int  # 0 = off
    targets: tuple[str, ...]  # the usernames the action is about (added, removed, admins)
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class TimerUpdate:
    """The notice "X set disappearing messages to T"; 0 turns them off."""

    timer_seconds: int
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class Expiring:
    """A TEXT or an ATTACHMENT that disappears ``timer_seconds`` after it is shown
    (receiver) or sent (sender). ``inner.sent_at_ms`` must equal ``sent_at_ms``."""

    timer_seconds: int
    inner: Text | Attachment
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class SentContent:
    """SENT for anything but plain text: a copy, for our own other devices, of an
    ATTACHMENT, EXPIRING or TIMER this device sent to ``destination``."""

    destination: str
    inner: Attachment | Expiring | TimerUpdate
    sent_at_ms: int


Content = (
    Text
    | Receipt
    | SentTranscript
    | HistoryChunk
    | Typing
    | SenderKeyDistribution
    | Attachment
    | GroupUpdate
    | TimerUpdate
    | Expiring
    | SentContent
)

_EXPIRING_INNER = (ContentType.TEXT, ContentType.ATTACHMENT)
_SENT_CONTENT_INNER = (ContentType.ATTACHMENT, ContentType.EXPIRING, ContentType.TIMER)


def encode_history_records(records: tuple[HistoryRecord, ...]) -> bytes:
    w = Writer().varint(len(records))
    for record in records:
        w.str_(check_username(record.peer)).u8(1 if record.outgoing else 0)
        w.varint(record.sent_at_ms).str_(record.text)
    return w.getvalue()


def split_history(
    records: list[HistoryRecord], transfer_id: bytes, sent_at_ms: int
) -> list[HistoryChunk]:
    """Cut history into chunks whose records stay under MAX_HISTORY_CHUNK_BYTES each, in
    order. A single record larger than that (a text near MAX_TEXT_BYTES) gets its own."""
    groups: list[list[HistoryRecord]] = [[]]
    size = 0
    for record in records:
        record_size = len(encode_history_records((record,)))
        if groups[-1] and size + record_size > MAX_HISTORY_CHUNK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(record)
        size += record_size
    if len(groups) > MAX_HISTORY_CHUNKS:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"history of {len(groups)} chunks")
    return [
        HistoryChunk(transfer_id, index, len(groups), tuple(group), sent_at_ms)
        for index, group in enumerate(groups)
    ]


def encode_content(content: Content, hide_length: bool = False) -> bytes:
    w = Writer()
    match content:
        case Text():
            body = encode_utf8(content.body)
            if len(body) > MAX_TEXT_BYTES:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"text of {len(body)} bytes is above {MAX_TEXT_BYTES}"
                )
            w.u8(ContentType.TEXT).varint(content.sent_at_ms).raw(body)
        case SentTranscript():
            body = encode_utf8(content.body)
            if len(body) > MAX_TEXT_BYTES:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"text of {len(body)} bytes is above {MAX_TEXT_BYTES}"
                )
            w.u8(ContentType.SENT).varint(content.sent_at_ms)
            w.str_(check_username(content.destination)).raw(body)
        case HistoryChunk():
            if len(content.transfer_id) != HISTORY_TRANSFER_ID_BYTES:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "transfer_id must be 16 bytes")
            if not 0 <= content.index < content.total <= MAX_HISTORY_CHUNKS:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "history chunk index out of range")
            w.u8(ContentType.HISTORY).varint(content.sent_at_ms).raw(content.transfer_id)
            w.varint(content.index).varint(content.total)
            w.bytes_(encode_history_records(content.records))
        case Receipt():
            items = content.message_sent_at_ms
            if not 1 <= len(items) <= MAX_RECEIPT_ITEMS:
                raise ProtocolError(
                    ErrorCode.INVALID_VALUE, f"a receipt names 1..{MAX_RECEIPT_ITEMS} messages"
                )
            w.u8(ContentType.RECEIPT).varint(content.sent_at_ms).u8(ReceiptKind(content.kind))
            w.varint(len(items))
            for sent_at in items:
                w.varint(sent_at)
        case _:
            w.u8(_type_of(content)).varint(content.sent_at_ms)
            _write_body(w, content)
    return pad(w.getvalue(), hide_length)


def _type_of(content: Content) -> ContentType:
    match content:
        case Text():
            return ContentType.TEXT
        case Receipt():
            return ContentType.RECEIPT
        case SentTranscript():
            return ContentType.SENT
        case HistoryChunk():
            return ContentType.HISTORY
        case Typing():
            return ContentType.TYPING
        case SenderKeyDistribution():
            return ContentType.SENDER_KEY
        case Attachment():
            return ContentType.ATTACHMENT
        case GroupUpdate():
            return ContentType.GROUP_UPDATE
        case TimerUpdate():
            return ContentType.TIMER
        case Expiring():
            return ContentType.EXPIRING
        case SentContent():
            return ContentType.SENT_CONTENT


def _enum_value(enum: type[IntEnum], value: int, what: str) -> int:
    try:
        return int(enum(value))
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"unknown {what} {value}") from None


def _write_limited(w: Writer, data: bytes, maximum: int, what: str) -> None:
    if len(data) > maximum:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{what} of {len(data)} bytes is above {maximum}")
    w.bytes_(data)


def _check_at_most(value: int, maximum: int, what: str) -> None:
    if value > maximum:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{what}: {value} is above the limit {maximum}")


def _check_timer(timer_seconds: int, allow_off: bool) -> None:
    _check_at_most(timer_seconds, MAX_TTL_SECONDS, "timer_seconds")
    if timer_seconds == 0 and not allow_off:
        raise ProtocolError(ErrorCode.INVALID_VALUE, "timer_seconds must not be 0")


def _write_inner(
    w: Writer, outer: Content, inner: Content, allowed: tuple[ContentType, ...]
) -> None:
    kind = _type_of(inner)
    if kind not in allowed:
        raise ProtocolError(
            ErrorCode.INVALID_VALUE, f"{_type_of(outer).name} cannot hold {kind.name}"
        )
    if inner.sent_at_ms != outer.sent_at_ms:
        raise ProtocolError(ErrorCode.INVALID_VALUE, "an inner content shares the outer sent_at_ms")
    w.u8(kind)
    _write_body(w, inner)


def _write_body(w: Writer, content: Content) -> None:
    """The body of the types of section 17.4 (and TEXT, as an inner content)."""
    match content:
        case Text():
            body = encode_utf8(content.body)
            if len(body) > MAX_TEXT_BYTES:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"text of {len(body)} bytes is above {MAX_TEXT_BYTES}"
                )
            w.raw(body)
        case Typing():
            w.u8(_enum_value(TypingAction, content.action, "typing action"))
        case SenderKeyDistribution():
            w.fixed(content.group_id, GROUP_ID_BYTES)
            if content.key_id == 0:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "key_id must not be 0")
            _check_at_most(content.key_id, MAX_SENDER_KEY_ID, "key_id")
            _check_at_most(content.iteration, MAX_SENDER_KEY_ITERATION, "iteration")
            w.varint(content.key_id).varint(content.iteration)
            w.fixed(content.chain_key, CHAIN_KEY_BYTES)
            w.fixed(content.signing_key, p.ED25519_PUBLIC_BYTES)
        case Attachment():
            w.fixed(content.blob_id, BLOB_ID_BYTES).fixed(content.key, ATTACHMENT_KEY_BYTES)
            _check_at_most(content.size, MAX_ATTACHMENT_BYTES, "attachment size")
            w.varint(content.size).fixed(content.digest, ATTACHMENT_DIGEST_BYTES)
            if int(content.flags) & ~_KNOWN_ATTACHMENT_FLAGS:
                raise ProtocolError(
                    ErrorCode.INVALID_VALUE, f"unknown attachment flags {int(content.flags):#x}"
                )
            w.u8(int(content.flags))
            _write_limited(
                w, encode_utf8(content.content_type), MAX_CONTENT_TYPE_BYTES, "content_type"
            )
            _write_limited(w, encode_utf8(content.file_name), MAX_FILE_NAME_BYTES, "file_name")
            w.varint(content.duration_ms).varint(content.width).varint(content.height)
            _write_limited(w, content.thumbnail, MAX_THUMBNAIL_BYTES, "thumbnail")
            _write_limited(w, encode_utf8(content.caption), MAX_CAPTION_BYTES, "caption")
        case GroupUpdate():
            w.fixed(content.group_id, GROUP_ID_BYTES)
            w.u8(_enum_value(GroupAction, content.action, "group action"))
            _write_limited(w, encode_utf8(content.name), MAX_GROUP_NAME_BYTES, "group name")
            _check_timer(content.timer_seconds, allow_off=True)
            w.varint(content.timer_seconds)
            _check_at_most(len(content.targets), MAX_GROUP_MEMBERS, "target count")
            w.varint(len(content.targets))
            for target in content.targets:
                w.str_(check_username(target))
        case TimerUpdate():
            _check_timer(content.timer_seconds, allow_off=True)
            w.varint(content.timer_seconds)
        case Expiring():
            _check_timer(content.timer_seconds, allow_off=False)
            w.varint(content.timer_seconds)
            _write_inner(w, content, content.inner, _EXPIRING_INNER)
        case SentContent():
            w.str_(check_username(content.destination))
            _write_inner(w, content, content.inner, _SENT_CONTENT_INNER)
        case _:
            raise ProtocolError(
                ErrorCode.INVALID_VALUE, f"{_type_of(content).name} cannot be an inner content"
            )


def decode_content(plaintext: bytes) -> Content:
    r = Reader(unpad(plaintext))
    kind = r.u8("content type")
    sent_at = r.varint("sent_at")
    match kind:
        case ContentType.TEXT:
            body = r.rest()
            if len(body) > MAX_TEXT_BYTES:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"text of {len(body)} bytes")
            try:
                return Text(body.decode("utf-8"), sent_at)
            except UnicodeDecodeError:
                raise ProtocolError(ErrorCode.INVALID_UTF8, "text is not valid UTF-8") from None
        case ContentType.RECEIPT:
            raw_kind = r.u8("receipt kind")
            try:
                receipt_kind = ReceiptKind(raw_kind)
            except ValueError:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_TYPE, f"unknown receipt kind {raw_kind}"
                ) from None
            count = r.varint("receipt count", maximum=MAX_RECEIPT_ITEMS)
            if count == 0:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "a receipt names no message")
            items = tuple(r.varint("receipt sent_at") for _ in range(count))
            r.end("receipt")
            return Receipt(receipt_kind, items, sent_at)
        case ContentType.SENT:
            destination = check_username(r.str_("destination", MAX_USERNAME_BYTES))
            body = r.rest()
            if len(body) > MAX_TEXT_BYTES:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"text of {len(body)} bytes")
            try:
                return SentTranscript(destination, body.decode("utf-8"), sent_at)
            except UnicodeDecodeError:
                raise ProtocolError(ErrorCode.INVALID_UTF8, "text is not valid UTF-8") from None
        case ContentType.HISTORY:
            transfer_id = r.fixed(HISTORY_TRANSFER_ID_BYTES, "transfer_id")
            index = r.varint("chunk index")
            total = r.varint("chunk total", maximum=MAX_HISTORY_CHUNKS)
            if not index < total:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "history chunk index out of range")
            records_reader = Reader(r.bytes_("records", MAX_HISTORY_CHUNK_BYTES + MAX_TEXT_BYTES))
            r.end("history chunk")
            records = []
            for _ in range(records_reader.varint("record count", maximum=MAX_HISTORY_CHUNK_BYTES)):
                peer = check_username(records_reader.str_("peer", MAX_USERNAME_BYTES))
                direction = records_reader.u8("direction")
                if direction > 1:
                    raise ProtocolError(ErrorCode.INVALID_VALUE, "direction must be 0 or 1")
                record_sent_at = records_reader.varint("record sent_at")
                text = records_reader.str_("text", MAX_TEXT_BYTES)
                records.append(HistoryRecord(peer, bool(direction), record_sent_at, text))
            records_reader.end("history records")
            return HistoryChunk(transfer_id, index, total, tuple(records), sent_at)
    try:
        content_type = ContentType(kind)
    except ValueError:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown content type {kind}") from None
    content = _read_body(r, content_type, sent_at)
    r.end(f"{content_type.name} content")
    return content


def _read_text(r: Reader, sent_at: int) -> Text:
    body = r.rest()
    if len(body) > MAX_TEXT_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"text of {len(body)} bytes")
    try:
        return Text(body.decode("utf-8"), sent_at)
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.INVALID_UTF8, "text is not valid UTF-8") from None


def _read_timer(r: Reader, allow_off: bool) -> int:
    timer_seconds = r.varint("timer_seconds", maximum=MAX_TTL_SECONDS)
    if timer_seconds == 0 and not allow_off:
        raise ProtocolError(ErrorCode.INVALID_VALUE, "timer_seconds must not be 0")
    return timer_seconds


def _read_inner_type(
    r: Reader, outer: ContentType, allowed: tuple[ContentType, ...]
) -> ContentType:
    raw = r.u8("inner type")
    if raw not in allowed:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"{outer.name} cannot hold content type {raw}")
    return ContentType(raw)


def _read_body(r: Reader, kind: ContentType, sent_at: int) -> Content:
    """The body of the types of section 17.4 (and TEXT, as an inner content). The caller
    checks for trailing bytes."""
    match kind:
        case ContentType.TEXT:
            return _read_text(r, sent_at)
        case ContentType.TYPING:
            raw_action = r.u8("typing action")
            if raw_action > TypingAction.STARTED:
                raise ProtocolError(ErrorCode.INVALID_VALUE, f"unknown typing action {raw_action}")
            return Typing(TypingAction(raw_action), sent_at)
        case ContentType.SENDER_KEY:
            group_id = r.fixed(GROUP_ID_BYTES, "group_id")
            key_id = r.varint("key_id", maximum=MAX_SENDER_KEY_ID)
            if key_id == 0:
                raise ProtocolError(ErrorCode.INVALID_VALUE, "key_id must not be 0")
            iteration = r.varint("iteration", maximum=MAX_SENDER_KEY_ITERATION)
            chain_key = r.fixed(CHAIN_KEY_BYTES, "chain_key")
            signing_key = r.fixed(p.ED25519_PUBLIC_BYTES, "signing_key")
            return SenderKeyDistribution(
                group_id, key_id, iteration, chain_key, signing_key, sent_at
            )
        case ContentType.ATTACHMENT:
            blob_id = r.fixed(BLOB_ID_BYTES, "blob_id")
            key = r.fixed(ATTACHMENT_KEY_BYTES, "key")
            size = r.varint("attachment size", maximum=MAX_ATTACHMENT_BYTES)
            digest = r.fixed(ATTACHMENT_DIGEST_BYTES, "digest")
            raw_flags = r.u8("attachment flags")
            if raw_flags & ~_KNOWN_ATTACHMENT_FLAGS:
                raise ProtocolError(
                    ErrorCode.INVALID_VALUE, f"unknown attachment flags {raw_flags:#x}"
                )
            return Attachment(
                blob_id=blob_id,
                key=key,
                size=size,
                digest=digest,
                flags=AttachmentFlags(raw_flags),
                content_type=r.str_("content_type", MAX_CONTENT_TYPE_BYTES),
                file_name=r.str_("file_name", MAX_FILE_NAME_BYTES),
                duration_ms=r.varint("duration_ms"),
                width=r.varint("width"),
                height=r.varint("height"),
                thumbnail=r.bytes_("thumbnail", MAX_THUMBNAIL_BYTES),
                caption=r.str_("caption", MAX_CAPTION_BYTES),
                sent_at_ms=sent_at,
            )
        case ContentType.GROUP_UPDATE:
            group_id = r.fixed(GROUP_ID_BYTES, "group_id")
            raw_action = r.u8("group action")
            try:
                action = GroupAction(raw_action)
            except ValueError:
                raise ProtocolError(
                    ErrorCode.INVALID_VALUE, f"unknown group action {raw_action}"
                ) from None
            name = r.str_("group name", MAX_GROUP_NAME_BYTES)
            timer_seconds = _read_timer(r, allow_off=True)
            count = r.varint("target count", maximum=MAX_GROUP_MEMBERS)
            targets = tuple(
                check_username(r.str_("target", MAX_USERNAME_BYTES)) for _ in range(count)
            )
            return GroupUpdate(group_id, action, name, timer_seconds, targets, sent_at)
        case ContentType.TIMER:
            return TimerUpdate(_read_timer(r, allow_off=True), sent_at)
        case ContentType.EXPIRING:
            timer_seconds = _read_timer(r, allow_off=False)
            inner_type = _read_inner_type(r, kind, _EXPIRING_INNER)
            inner = _read_body(r, inner_type, sent_at)
            if not isinstance(inner, Text | Attachment):  # unreachable: _EXPIRING_INNER
                raise ProtocolError(ErrorCode.INVALID_VALUE, "EXPIRING holds a TEXT or ATTACHMENT")
            return Expiring(timer_seconds, inner, sent_at)
        case ContentType.SENT_CONTENT:
            destination = check_username(r.str_("destination", MAX_USERNAME_BYTES))
            inner_type = _read_inner_type(r, kind, _SENT_CONTENT_INNER)
            sent_inner = _read_body(r, inner_type, sent_at)
            if not isinstance(sent_inner, Attachment | Expiring | TimerUpdate):  # unreachable
                raise ProtocolError(ErrorCode.INVALID_VALUE, "SENT_CONTENT cannot hold this")
            return SentContent(destination, sent_inner, sent_at)
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"content type {kind.name} has no body here")
