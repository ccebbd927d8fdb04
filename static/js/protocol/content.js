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
 *
 * Receipts are end-to-end encrypted like any message: the server never learns that a
 * message was delivered or read.
 */

import { Reader, Writer, utf8Decode, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { MAX_TEXT_BYTES } from './limits.js';
import { pad, unpad } from './padding.js';

/** @import { Uint64 } from './encoding.js' */

export const MAX_RECEIPT_ITEMS = 100;

export const ContentType = Object.freeze({ TEXT: 1, RECEIPT: 2 });

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

/** @typedef {Text | Receipt} Content */

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
  } else {
    const body = utf8Encode(content.body, 'text');
    if (body.length > MAX_TEXT_BYTES) {
      throw new ProtocolError(
        ErrorCode.TOO_LARGE,
        `text of ${body.length} bytes is above ${MAX_TEXT_BYTES}`,
      );
    }
    w.u8(ContentType.TEXT).varint(content.sentAtMs).raw(body);
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
  throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown content type ${kind}`);
}
