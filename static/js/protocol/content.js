// @ts-check
/**
 * What is inside an encrypted message: typed content, then padding (protocol/content.py).
 *
 *     content = type u8 | sent_at varint (milliseconds since the Unix epoch) | body
 *     plaintext = pad(content)
 *
 * The sender's clock goes inside the encryption so the server can neither read nor alter
 * it. A message is named by its sender and its sent_at (as in Signal), which is how
 * receipts refer to the messages they acknowledge. Bodies by type:
 *
 *     TEXT (1)     the UTF-8 text itself, to the end (its length is known once the padding
 *                  is removed)
 *     RECEIPT (2)  kind u8 (1 delivered, 2 read) | count varint (1..MAX_RECEIPT_ITEMS) |
 *                  count × sent_at varint of the acknowledged messages
 *     SENT (3)     to our own other devices, what this device sent to someone:
 *                  destination str (username) | the text, to the end
 *     HISTORY (4)  one chunk of conversation history for a newly linked device:
 *                  transfer_id[16] | index varint | total varint (1..MAX_HISTORY_CHUNKS) |
 *                  records bytes, where records = count varint | count × HistoryRecord
 *                  HistoryRecord = peer str | direction u8 (0 in, 1 out) | sent_at varint |
 *                                  text str
 *
 * Receipts are end-to-end encrypted like any message: the server never learns that a
 * message was delivered or read.
 */

import { Reader, Writer, utf8Decode, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { checkUsername } from './identifiers.js';
import { MAX_TEXT_BYTES, MAX_USERNAME_BYTES } from './limits.js';
import { pad, unpad } from './padding.js';

/** @import { Uint64 } from './encoding.js' */

export const MAX_RECEIPT_ITEMS = 100;
export const MAX_HISTORY_CHUNKS = 10_000;
export const HISTORY_TRANSFER_ID_BYTES = 16;
// A history chunk's records stay below this, so a chunk fits one envelope (96 KiB) with
// room for the ratchet header, padding and the frame.
export const MAX_HISTORY_CHUNK_BYTES = 64 * 1024;

export const ContentType = Object.freeze({ TEXT: 1, RECEIPT: 2, SENT: 3, HISTORY: 4 });

export const ReceiptKind = Object.freeze({ DELIVERED: 1, READ: 2 });

/** @type {Set<number>} */
const RECEIPT_KINDS = new Set(Object.values(ReceiptKind));

export class Text {
  /**
   * @param {string} body
   * @param {Uint64} sentAtMs
   */
  constructor(body, sentAtMs) {
    /** @readonly */ this.body = body;
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

export class Receipt {
  /**
   * @param {number} kind a ReceiptKind value
   * @param {readonly Uint64[]} messageSentAtMs the acknowledged messages' sent_at
   * @param {Uint64} sentAtMs
   */
  constructor(kind, messageSentAtMs, sentAtMs) {
    /** @readonly */ this.kind = kind;
    /** @readonly */ this.messageSentAtMs = Object.freeze([...messageSentAtMs]);
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

/** A copy, for our own other devices, of a text this device sent to `destination`. */
export class SentTranscript {
  /**
   * @param {string} destination
   * @param {string} body
   * @param {Uint64} sentAtMs
   */
  constructor(destination, body, sentAtMs) {
    /** @readonly */ this.destination = destination;
    /** @readonly */ this.body = body;
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

export class HistoryRecord {
  /**
   * @param {string} peer
   * @param {boolean} outgoing
   * @param {Uint64} sentAtMs
   * @param {string} text
   */
  constructor(peer, outgoing, sentAtMs, text) {
    /** @readonly */ this.peer = peer;
    /** @readonly */ this.outgoing = outgoing;
    /** @readonly */ this.sentAtMs = sentAtMs;
    /** @readonly */ this.text = text;
    Object.freeze(this);
  }
}

export class HistoryChunk {
  /**
   * @param {Uint8Array} transferId
   * @param {number} index 0-based
   * @param {number} total
   * @param {readonly HistoryRecord[]} records
   * @param {Uint64} sentAtMs
   */
  constructor(transferId, index, total, records, sentAtMs) {
    /** @readonly */ this.transferId = transferId;
    /** @readonly */ this.index = index;
    /** @readonly */ this.total = total;
    /** @readonly */ this.records = Object.freeze([...records]);
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

/** @typedef {Text | Receipt | SentTranscript | HistoryChunk} Content */

/**
 * `records = count varint | count × HistoryRecord`.
 * @param {readonly HistoryRecord[]} records
 */
export function encodeHistoryRecords(records) {
  const w = new Writer().varint(records.length);
  for (const record of records) {
    w.str(checkUsername(record.peer)).u8(record.outgoing ? 1 : 0);
    w.varint(record.sentAtMs).str(record.text);
  }
  return w.getValue();
}

/**
 * Cut history into chunks whose records stay under MAX_HISTORY_CHUNK_BYTES each, in
 * order. A single record larger than that (a text near MAX_TEXT_BYTES) gets its own.
 * @param {readonly HistoryRecord[]} records
 * @param {Uint8Array} transferId
 * @param {Uint64} sentAtMs
 */
export function splitHistory(records, transferId, sentAtMs) {
  /** @type {HistoryRecord[][]} */
  const groups = [[]];
  let size = 0;
  for (const record of records) {
    const recordSize = encodeHistoryRecords([record]).length;
    if (groups[groups.length - 1].length && size + recordSize > MAX_HISTORY_CHUNK_BYTES) {
      groups.push([]);
      size = 0;
    }
    groups[groups.length - 1].push(record);
    size += recordSize;
  }
  if (groups.length > MAX_HISTORY_CHUNKS) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `history of ${groups.length} chunks`);
  }
  return groups.map((group, index) => new HistoryChunk(transferId, index, groups.length, group, sentAtMs));
}

/**
 * @param {string} text
 */
function textBytes(text) {
  const body = utf8Encode(text, 'text');
  if (body.length > MAX_TEXT_BYTES) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `text of ${body.length} bytes is above ${MAX_TEXT_BYTES}`);
  }
  return body;
}

/**
 * @param {Content} content
 * @param {boolean} [hideLength]
 */
export function encodeContent(content, hideLength = false) {
  const w = new Writer();
  if (content instanceof Receipt) {
    const items = content.messageSentAtMs;
    if (items.length < 1 || items.length > MAX_RECEIPT_ITEMS) {
      throw new ProtocolError(
        ErrorCode.INVALID_VALUE,
        `a receipt names 1..${MAX_RECEIPT_ITEMS} messages`,
      );
    }
    if (!RECEIPT_KINDS.has(content.kind)) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown receipt kind ${content.kind}`);
    }
    w.u8(ContentType.RECEIPT).varint(content.sentAtMs).u8(content.kind).varint(items.length);
    for (const sentAt of items) w.varint(sentAt);
  } else if (content instanceof SentTranscript) {
    const body = textBytes(content.body);
    w.u8(ContentType.SENT).varint(content.sentAtMs);
    w.str(checkUsername(content.destination)).raw(body);
  } else if (content instanceof HistoryChunk) {
    if (!(content.transferId instanceof Uint8Array) || content.transferId.length !== HISTORY_TRANSFER_ID_BYTES) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'transfer_id must be 16 bytes');
    }
    const { index, total } = content;
    if (!Number.isInteger(index) || !Number.isInteger(total) || !(0 <= index && index < total && total <= MAX_HISTORY_CHUNKS)) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'history chunk index out of range');
    }
    w.u8(ContentType.HISTORY).varint(content.sentAtMs).raw(content.transferId);
    w.varint(index).varint(total);
    w.bytes(encodeHistoryRecords(content.records));
  } else {
    w.u8(ContentType.TEXT).varint(content.sentAtMs).raw(textBytes(content.body));
  }
  return pad(w.getValue(), hideLength);
}

/**
 * @param {Uint8Array} plaintext
 * @returns {Content}
 */
export function decodeContent(plaintext) {
  const r = new Reader(unpad(plaintext));
  const kind = r.u8('content type');
  const sentAt = r.varint64('sent_at');
  if (kind === ContentType.TEXT) {
    const body = r.rest();
    if (body.length > MAX_TEXT_BYTES) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, `text of ${body.length} bytes`);
    }
    return new Text(utf8Decode(body, 'text'), sentAt);
  }
  if (kind === ContentType.RECEIPT) {
    const receiptKind = r.u8('receipt kind');
    if (!RECEIPT_KINDS.has(receiptKind)) {
      throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown receipt kind ${receiptKind}`);
    }
    const count = r.varint('receipt count', MAX_RECEIPT_ITEMS);
    if (count === 0) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'a receipt names no message');
    const items = [];
    for (let i = 0; i < count; i++) items.push(r.varint64('receipt sent_at'));
    r.end('receipt');
    return new Receipt(receiptKind, items, sentAt);
  }
  if (kind === ContentType.SENT) {
    const destination = checkUsername(r.str('destination', MAX_USERNAME_BYTES));
    const body = r.rest();
    if (body.length > MAX_TEXT_BYTES) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, `text of ${body.length} bytes`);
    }
    return new SentTranscript(destination, utf8Decode(body, 'text'), sentAt);
  }
  if (kind === ContentType.HISTORY) {
    const transferId = r.fixed(HISTORY_TRANSFER_ID_BYTES, 'transfer_id');
    const index = r.varint64('chunk index');
    const total = r.varint('chunk total', MAX_HISTORY_CHUNKS);
    if (!(index < total)) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'history chunk index out of range');
    }
    const recordsReader = new Reader(r.bytes('records', MAX_HISTORY_CHUNK_BYTES + MAX_TEXT_BYTES));
    r.end('history chunk');
    const records = [];
    const count = recordsReader.varint('record count', MAX_HISTORY_CHUNK_BYTES);
    for (let i = 0; i < count; i++) {
      const peer = checkUsername(recordsReader.str('peer', MAX_USERNAME_BYTES));
      const direction = recordsReader.u8('direction');
      if (direction > 1) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'direction must be 0 or 1');
      const recordSentAt = recordsReader.varint64('record sent_at');
      const text = recordsReader.str('text', MAX_TEXT_BYTES);
      records.push(new HistoryRecord(peer, direction === 1, recordSentAt, text));
    }
    recordsReader.end('history records');
    return new HistoryChunk(transferId, Number(index), total, records, sentAt);
  }
  throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown content type ${kind}`);
}
