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

Receipts are end-to-end encrypted like any message: the server never learns that a
message was delivered or read. Later types (attachments, group control) add their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .encoding import Reader, Writer, encode_utf8
from .errors import ErrorCode, ProtocolError
from .identifiers import check_username
from .limits import MAX_TEXT_BYTES, MAX_USERNAME_BYTES
from .padding import pad, unpad

MAX_RECEIPT_ITEMS = 100
MAX_HISTORY_CHUNKS = 10_000
HISTORY_TRANSFER_ID_BYTES = 16
# A history chunk's records stay below this, so a chunk fits one envelope (96 KiB) with
# room for the ratchet header, padding and the frame.
MAX_HISTORY_CHUNK_BYTES = 64 * 1024


class ContentType(IntEnum):
    TEXT = 1
    RECEIPT = 2
    SENT = 3
    HISTORY = 4


class ReceiptKind(IntEnum):
    DELIVERED = 1
    READ = 2


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


Content = Text | Receipt | SentTranscript | HistoryChunk


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
    return pad(w.getvalue(), hide_length)


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
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown content type {kind}")
