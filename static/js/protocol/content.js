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
 * Groups, attachments, control messages and disappearing messages (docs/protocol.md, 17.4):
 *
 *     TYPING (5)        action u8 (0 stopped, 1 started)
 *     SENDER_KEY (6)    group_id[16] | key_id varint (1..2**31 - 1) | iteration varint |
 *                       chain_key[32] | signing_key[32]            (senderkeys.js; pairwise only)
 *     ATTACHMENT (7)    blob_id[16] | key[32] | size varint (≤ 100 MiB) | digest[32] |
 *                       flags u8 (bit 0 VOICE) | content_type str (≤ 128) |
 *                       file_name str (≤ 255) | duration_ms varint | width varint |
 *                       height varint | thumbnail bytes (≤ 65,536) | caption str (≤ 4,096)
 *     GROUP_UPDATE (8)  group_id[16] | action u8 (1..7) | name str (≤ 256) |
 *                       timer_seconds varint | count varint (≤ 1,000) | count × username str
 *     TIMER (9)         timer_seconds varint (0 = off, else ≤ MAX_TTL_SECONDS)
 *     EXPIRING (10)     timer_seconds varint (1..MAX_TTL_SECONDS) | inner type u8 |
 *                       inner body (TEXT or ATTACHMENT; it shares the outer sent_at)
 *     SENT_CONTENT (11) destination str | inner type u8 | inner body
 *                       (ATTACHMENT, EXPIRING or TIMER sent to `destination`)
 *
 * An inner content has no sent_at of its own: the decoder gives it the outer one, and the
 * encoder refuses one whose sentAtMs differs (INVALID_VALUE). An inner type that is not
 * allowed where it stands is INVALID_VALUE (not UNKNOWN_TYPE: the type may well be known, it
 * is only misplaced). The encoder enforces the decoder's limits, with the same codes.
 *
 * Receipts are end-to-end encrypted like any message: the server never learns that a
 * message was delivered or read.
 */

import {
  ATTACHMENT_DIGEST_BYTES,
  ATTACHMENT_KEY_BYTES,
  BLOB_ID_BYTES,
  MAX_ATTACHMENT_BYTES,
} from './attachments.js';
import { Reader, Writer, utf8Decode, utf8Encode } from './encoding.js';
import { ErrorCode, ProtocolError } from './errors.js';
import { GROUP_ID_BYTES, MAX_GROUP_MEMBERS } from './groups.js';
import { checkUsername } from './identifiers.js';
import { MAX_TEXT_BYTES, MAX_TTL_SECONDS, MAX_USERNAME_BYTES } from './limits.js';
import { pad, unpad } from './padding.js';
import * as p from './primitives.js';

/** @import { Uint64 } from './encoding.js' */

export const MAX_RECEIPT_ITEMS = 100;
export const MAX_HISTORY_CHUNKS = 10_000;
export const HISTORY_TRANSFER_ID_BYTES = 16;
// A history chunk's records stay below this, so a chunk fits one envelope (96 KiB) with
// room for the ratchet header, padding and the frame.
export const MAX_HISTORY_CHUNK_BYTES = 64 * 1024;
export const MAX_SENDER_KEY_ID = 2 ** 31 - 1;
export const MAX_SENDER_KEY_ITERATION = 2 ** 32 - 1;
export const CHAIN_KEY_BYTES = 32;

export const MAX_CONTENT_TYPE_BYTES = 128;
export const MAX_FILE_NAME_BYTES = 255;
export const MAX_THUMBNAIL_BYTES = 65_536;
export const MAX_CAPTION_BYTES = 4_096;
export const MAX_GROUP_NAME_BYTES = 256;

export const ContentType = Object.freeze({
  TEXT: 1,
  RECEIPT: 2,
  SENT: 3,
  HISTORY: 4,
  TYPING: 5,
  SENDER_KEY: 6,
  ATTACHMENT: 7,
  GROUP_UPDATE: 8,
  TIMER: 9,
  EXPIRING: 10,
  SENT_CONTENT: 11,
});

export const ReceiptKind = Object.freeze({ DELIVERED: 1, READ: 2 });

export const TypingAction = Object.freeze({ STOPPED: 0, STARTED: 1 });

export const AttachmentFlags = Object.freeze({ NONE: 0, VOICE: 1 });

export const GroupAction = Object.freeze({
  CREATED: 1,
  MEMBERS_ADDED: 2,
  MEMBERS_REMOVED: 3,
  LEFT: 4,
  RENAMED: 5,
  ADMINS_CHANGED: 6,
  SNAPSHOT: 7, // sent to a new member: the current name and timer
});

/** @type {Set<number>} */
const GROUP_ACTIONS = new Set(Object.values(GroupAction));

// What may stand inside an EXPIRING and inside a SENT_CONTENT.
/** @type {ReadonlySet<number>} */
const EXPIRING_INNER = new Set([ContentType.TEXT, ContentType.ATTACHMENT]);
/** @type {ReadonlySet<number>} */
const SENT_CONTENT_INNER = new Set([ContentType.ATTACHMENT, ContentType.EXPIRING, ContentType.TIMER]);

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

/** Typing started or stopped (EPHEMERAL SEND or GROUP_SEND). */
export class Typing {
  /**
   * @param {number} action a TypingAction value
   * @param {Uint64} sentAtMs
   */
  constructor(action, sentAtMs) {
    /** @readonly */ this.action = action;
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

/**
 * A sender key chain as it stands (senderkeys.js), for one device over a pairwise session;
 * `SenderKeyRecord.processDistribution` takes it.
 */
export class SenderKeyDistribution {
  /**
   * @param {Uint8Array} groupId
   * @param {number} keyId
   * @param {number} iteration
   * @param {Uint8Array} chainKey
   * @param {Uint8Array} signingKey the chain's Ed25519 public key
   * @param {Uint64} sentAtMs
   */
  constructor(groupId, keyId, iteration, chainKey, signingKey, sentAtMs) {
    /** @readonly */ this.groupId = groupId;
    /** @readonly */ this.keyId = keyId;
    /** @readonly */ this.iteration = iteration;
    /** @readonly */ this.chainKey = chainKey;
    /** @readonly */ this.signingKey = signingKey;
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

/**
 * @typedef {{blobId: Uint8Array, key: Uint8Array, size: number, digest: Uint8Array,
 *            flags?: number, contentType: string, fileName?: string, durationMs?: Uint64,
 *            width?: Uint64, height?: Uint64, thumbnail?: Uint8Array, caption?: string,
 *            sentAtMs: Uint64}} AttachmentFields
 */

/** The pointer to an uploaded, encrypted blob (attachments.js), with what to show of it. */
export class Attachment {
  /** @param {AttachmentFields} fields */
  constructor({
    blobId,
    key,
    size,
    digest,
    flags = AttachmentFlags.NONE,
    contentType,
    fileName = '',
    durationMs = 0,
    width = 0,
    height = 0,
    thumbnail = new Uint8Array(0),
    caption = '',
    sentAtMs,
  }) {
    /** @readonly */ this.blobId = blobId;
    /** @readonly */ this.key = key;
    /** @readonly */ this.size = size;
    /** @readonly */ this.digest = digest;
    /** @readonly */ this.flags = flags;
    /** @readonly */ this.contentType = contentType;
    /** @readonly */ this.fileName = fileName;
    /** @readonly */ this.durationMs = durationMs;
    /** @readonly */ this.width = width;
    /** @readonly */ this.height = height;
    /** @readonly */ this.thumbnail = thumbnail;
    /** @readonly */ this.caption = caption;
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }

  get voice() {
    return (this.flags & AttachmentFlags.VOICE) !== 0;
  }
}

/** What its sender did to a group through the REST API; the roster comes from the server. */
export class GroupUpdate {
  /**
   * @param {Uint8Array} groupId
   * @param {number} action a GroupAction value
   * @param {string} name the group's name (end to end only)
   * @param {number} timerSeconds the group's disappearing timer, 0 = off
   * @param {readonly string[]} targets the usernames the action was about
   * @param {Uint64} sentAtMs
   */
  constructor(groupId, action, name, timerSeconds, targets, sentAtMs) {
    /** @readonly */ this.groupId = groupId;
    /** @readonly */ this.action = action;
    /** @readonly */ this.name = name;
    /** @readonly */ this.timerSeconds = timerSeconds;
    /** @readonly */ this.targets = Object.freeze([...targets]);
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

/** The notice "X set disappearing messages to T"; 0 turns them off. */
export class TimerUpdate {
  /**
   * @param {number} timerSeconds
   * @param {Uint64} sentAtMs
   */
  constructor(timerSeconds, sentAtMs) {
    /** @readonly */ this.timerSeconds = timerSeconds;
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

/**
 * A TEXT or an ATTACHMENT that disappears `timerSeconds` after it is shown (receiver) or
 * sent (sender). The inner content has the outer `sentAtMs` (only the outer one travels).
 */
export class Expiring {
  /**
   * @param {number} timerSeconds
   * @param {Text | Attachment} inner
   * @param {Uint64} sentAtMs
   */
  constructor(timerSeconds, inner, sentAtMs) {
    /** @readonly */ this.timerSeconds = timerSeconds;
    /** @readonly */ this.inner = inner;
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

/**
 * SENT for anything but plain text: to our own other devices, an ATTACHMENT, EXPIRING or
 * TIMER this device sent to `destination`. The inner content has the outer `sentAtMs`.
 */
export class SentContent {
  /**
   * @param {string} destination
   * @param {Attachment | Expiring | TimerUpdate} inner
   * @param {Uint64} sentAtMs
   */
  constructor(destination, inner, sentAtMs) {
    /** @readonly */ this.destination = destination;
    /** @readonly */ this.inner = inner;
    /** @readonly */ this.sentAtMs = sentAtMs;
    Object.freeze(this);
  }
}

/**
 * @typedef {Text | Receipt | SentTranscript | HistoryChunk | Typing | SenderKeyDistribution |
 *           Attachment | GroupUpdate | TimerUpdate | Expiring | SentContent} Content
 */

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
 * INVALID_VALUE unless `data` is a Uint8Array of `length` bytes.
 * @param {Uint8Array} data
 * @param {number} length
 * @param {string} what
 */
function checkFixed(data, length, what) {
  if (!(data instanceof Uint8Array) || data.length !== length) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what} must be ${length} bytes`);
  }
}

/**
 * A bounded field, with the decoder's codes: TOO_LARGE above `maximum`, INVALID_VALUE below
 * `minimum` (a zero id, a zero timer) or for what is not an integer.
 * @param {number} value
 * @param {number} minimum
 * @param {number} maximum
 * @param {string} what
 */
function checkRange(value, minimum, maximum, what) {
  if (!Number.isSafeInteger(value)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what} ${value} is not an integer`);
  }
  if (value > maximum) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `${what}: ${value} is above the limit ${maximum}`);
  }
  if (value < minimum) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what} ${value} is below ${minimum}`);
  }
}

/**
 * The UTF-8 of a string field; TOO_LARGE above `maximum` bytes, as the decoder says (the
 * encoder refuses what a decoder would refuse).
 * @param {string} text
 * @param {number} maximum
 * @param {string} what
 */
function boundedUtf8(text, maximum, what) {
  const data = utf8Encode(text, what);
  if (data.length > maximum) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `${what} of ${data.length} bytes is above ${maximum}`);
  }
  return data;
}

/**
 * @param {Writer} w
 * @param {Attachment} a
 */
function writeAttachment(w, a) {
  checkFixed(a.blobId, BLOB_ID_BYTES, 'blob_id');
  checkFixed(a.key, ATTACHMENT_KEY_BYTES, 'attachment key');
  if (!Number.isSafeInteger(a.size) || a.size < 0) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `attachment size ${a.size} is not a byte count`);
  }
  if (a.size > MAX_ATTACHMENT_BYTES) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `attachment of ${a.size} bytes is above ${MAX_ATTACHMENT_BYTES}`);
  }
  checkFixed(a.digest, ATTACHMENT_DIGEST_BYTES, 'digest');
  if (!Number.isInteger(a.flags) || a.flags & ~AttachmentFlags.VOICE) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown attachment flags ${a.flags}`);
  }
  if (!(a.thumbnail instanceof Uint8Array)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, 'thumbnail must be a Uint8Array');
  }
  if (a.thumbnail.length > MAX_THUMBNAIL_BYTES) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `thumbnail of ${a.thumbnail.length} bytes is above ${MAX_THUMBNAIL_BYTES}`);
  }
  w.raw(a.blobId).raw(a.key).varint(a.size).raw(a.digest).u8(a.flags);
  w.bytes(boundedUtf8(a.contentType, MAX_CONTENT_TYPE_BYTES, 'content_type'));
  w.bytes(boundedUtf8(a.fileName, MAX_FILE_NAME_BYTES, 'file_name'));
  w.varint(a.durationMs).varint(a.width).varint(a.height);
  w.bytes(a.thumbnail).bytes(boundedUtf8(a.caption, MAX_CAPTION_BYTES, 'caption'));
}

/** @param {number} timerSeconds */
function checkTimer(timerSeconds) {
  checkRange(timerSeconds, 0, MAX_TTL_SECONDS, 'timer_seconds');
}

/**
 * The type and body of a content that can stand inside EXPIRING or SENT_CONTENT, whose
 * `sentAtMs` must be the outer one (only that one travels).
 * @param {Writer} w
 * @param {Content} inner
 * @param {ReadonlySet<number>} allowed
 * @param {Uint64} sentAtMs
 * @param {string} where
 */
function writeInner(w, inner, allowed, sentAtMs, where) {
  const type = contentTypeOf(inner);
  if (!allowed.has(type)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `content type ${type} cannot stand inside ${where}`);
  }
  if (!sameInstant(inner.sentAtMs, sentAtMs)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `the content inside ${where} must have its sent_at`);
  }
  w.u8(type);
  writeBody(w, inner);
}

/**
 * Whether two sent_at values are equal, whether each is a number or a bigint.
 * @param {Uint64} a
 * @param {Uint64} b
 */
function sameInstant(a, b) {
  if (a === b) return true;
  try {
    return BigInt(a) === BigInt(b);
  } catch {
    return false; // not an integer: refused with the mismatch
  }
}

/**
 * The ContentType of a content object.
 * @param {Content} content
 */
export function contentTypeOf(content) {
  if (content instanceof Text) return ContentType.TEXT;
  if (content instanceof Receipt) return ContentType.RECEIPT;
  if (content instanceof SentTranscript) return ContentType.SENT;
  if (content instanceof HistoryChunk) return ContentType.HISTORY;
  if (content instanceof Typing) return ContentType.TYPING;
  if (content instanceof SenderKeyDistribution) return ContentType.SENDER_KEY;
  if (content instanceof Attachment) return ContentType.ATTACHMENT;
  if (content instanceof GroupUpdate) return ContentType.GROUP_UPDATE;
  if (content instanceof TimerUpdate) return ContentType.TIMER;
  if (content instanceof Expiring) return ContentType.EXPIRING;
  if (content instanceof SentContent) return ContentType.SENT_CONTENT;
  throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, 'not a content');
}

/**
 * The body of a content of types 5..11 or TEXT (what follows type and sent_at).
 * @param {Writer} w
 * @param {Content} content
 */
function writeBody(w, content) {
  if (content instanceof Text) {
    w.raw(textBytes(content.body));
  } else if (content instanceof Typing) {
    if (content.action !== TypingAction.STOPPED && content.action !== TypingAction.STARTED) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown typing action ${content.action}`);
    }
    w.u8(content.action);
  } else if (content instanceof SenderKeyDistribution) {
    checkFixed(content.groupId, GROUP_ID_BYTES, 'group_id');
    checkRange(content.keyId, 1, MAX_SENDER_KEY_ID, 'key_id');
    checkRange(content.iteration, 0, MAX_SENDER_KEY_ITERATION, 'iteration');
    checkFixed(content.chainKey, CHAIN_KEY_BYTES, 'chain_key');
    checkFixed(content.signingKey, p.ED25519_PUBLIC_BYTES, 'signing_key');
    w.raw(content.groupId).varint(content.keyId).varint(content.iteration);
    w.raw(content.chainKey).raw(content.signingKey);
  } else if (content instanceof Attachment) {
    writeAttachment(w, content);
  } else if (content instanceof GroupUpdate) {
    checkFixed(content.groupId, GROUP_ID_BYTES, 'group_id');
    if (!GROUP_ACTIONS.has(content.action)) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown group action ${content.action}`);
    }
    checkTimer(content.timerSeconds);
    if (content.targets.length > MAX_GROUP_MEMBERS) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, `${content.targets.length} targets; the limit is ${MAX_GROUP_MEMBERS}`);
    }
    w.raw(content.groupId).u8(content.action);
    w.bytes(boundedUtf8(content.name, MAX_GROUP_NAME_BYTES, 'group name'));
    w.varint(content.timerSeconds).varint(content.targets.length);
    for (const target of content.targets) w.str(checkUsername(target));
  } else if (content instanceof TimerUpdate) {
    checkTimer(content.timerSeconds);
    w.varint(content.timerSeconds);
  } else if (content instanceof Expiring) {
    checkRange(content.timerSeconds, 1, MAX_TTL_SECONDS, 'timer_seconds');
    w.varint(content.timerSeconds);
    writeInner(w, content.inner, EXPIRING_INNER, content.sentAtMs, 'EXPIRING');
  } else if (content instanceof SentContent) {
    w.str(checkUsername(content.destination));
    writeInner(w, content.inner, SENT_CONTENT_INNER, content.sentAtMs, 'SENT_CONTENT');
  } else {
    throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, 'not a content');
  }
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
  } else if (content instanceof Text) {
    w.u8(ContentType.TEXT).varint(content.sentAtMs).raw(textBytes(content.body));
  } else {
    w.u8(contentTypeOf(content)).varint(content.sentAtMs);
    writeBody(w, content);
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
  if (!BODY_TYPES.has(kind)) throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown content type ${kind}`);
  return readBody(r, kind, sentAt);
}

/** @type {ReadonlySet<number>} */
const BODY_TYPES = new Set([
  ContentType.TYPING,
  ContentType.SENDER_KEY,
  ContentType.ATTACHMENT,
  ContentType.GROUP_UPDATE,
  ContentType.TIMER,
  ContentType.EXPIRING,
  ContentType.SENT_CONTENT,
]);

/**
 * A timer: 0 (off, where `minimum` is 0) .. MAX_TTL_SECONDS; above is TOO_LARGE, below
 * `minimum` INVALID_VALUE.
 * @param {Reader} r
 * @param {number} minimum
 */
function readTimer(r, minimum) {
  const timerSeconds = r.varint('timer_seconds', MAX_TTL_SECONDS);
  if (timerSeconds < minimum) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'timer_seconds must not be 0');
  return timerSeconds;
}

/**
 * The inner type and body of an EXPIRING or SENT_CONTENT; the inner content gets the outer
 * sent_at.
 * @param {Reader} r
 * @param {ReadonlySet<number>} allowed
 * @param {Uint64} sentAt
 * @param {string} where
 */
function readInner(r, allowed, sentAt, where) {
  const kind = r.u8('inner content type');
  if (!allowed.has(kind)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `content type ${kind} cannot stand inside ${where}`);
  }
  return readBody(r, kind, sentAt);
}

/**
 * The body of a TEXT or of a content of types 5..11, to the end of `r`.
 * @param {Reader} r
 * @param {number} kind
 * @param {Uint64} sentAt
 * @returns {Content}
 */
function readBody(r, kind, sentAt) {
  switch (kind) {
    case ContentType.TEXT: {
      const body = r.rest();
      if (body.length > MAX_TEXT_BYTES) {
        throw new ProtocolError(ErrorCode.TOO_LARGE, `text of ${body.length} bytes`);
      }
      return new Text(utf8Decode(body, 'text'), sentAt);
    }
    case ContentType.TYPING: {
      const action = r.u8('typing action');
      if (action !== TypingAction.STOPPED && action !== TypingAction.STARTED) {
        throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown typing action ${action}`);
      }
      r.end('typing');
      return new Typing(action, sentAt);
    }
    case ContentType.SENDER_KEY: {
      const groupId = r.fixed(GROUP_ID_BYTES, 'group_id');
      const keyId = r.varint('key_id', MAX_SENDER_KEY_ID);
      if (keyId === 0) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'key_id must not be 0');
      const iteration = r.varint('iteration', MAX_SENDER_KEY_ITERATION);
      const chainKey = r.fixed(CHAIN_KEY_BYTES, 'chain_key');
      const signingKey = r.fixed(p.ED25519_PUBLIC_BYTES, 'signing_key');
      r.end('sender key');
      return new SenderKeyDistribution(groupId, keyId, iteration, chainKey, signingKey, sentAt);
    }
    case ContentType.ATTACHMENT: {
      const attachment = readAttachment(r, sentAt);
      r.end('attachment');
      return attachment;
    }
    case ContentType.GROUP_UPDATE: {
      const groupId = r.fixed(GROUP_ID_BYTES, 'group_id');
      const action = r.u8('group action');
      if (!GROUP_ACTIONS.has(action)) {
        throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown group action ${action}`);
      }
      const name = r.str('group name', MAX_GROUP_NAME_BYTES);
      const timerSeconds = readTimer(r, 0);
      const count = r.varint('target count', MAX_GROUP_MEMBERS);
      const targets = [];
      for (let i = 0; i < count; i++) targets.push(checkUsername(r.str('target', MAX_USERNAME_BYTES)));
      r.end('group update');
      return new GroupUpdate(groupId, action, name, timerSeconds, targets, sentAt);
    }
    case ContentType.TIMER: {
      const timerSeconds = readTimer(r, 0);
      r.end('timer');
      return new TimerUpdate(timerSeconds, sentAt);
    }
    case ContentType.EXPIRING: {
      const timerSeconds = readTimer(r, 1);
      const inner = /** @type {Text | Attachment} */ (readInner(r, EXPIRING_INNER, sentAt, 'EXPIRING'));
      return new Expiring(timerSeconds, inner, sentAt);
    }
    default: {
      // ContentType.SENT_CONTENT: the callers admit no other type
      const destination = checkUsername(r.str('destination', MAX_USERNAME_BYTES));
      const inner = /** @type {Attachment | Expiring | TimerUpdate} */ (
        readInner(r, SENT_CONTENT_INNER, sentAt, 'SENT_CONTENT')
      );
      return new SentContent(destination, inner, sentAt);
    }
  }
}

/**
 * @param {Reader} r
 * @param {Uint64} sentAtMs
 */
function readAttachment(r, sentAtMs) {
  const blobId = r.fixed(BLOB_ID_BYTES, 'blob_id');
  const key = r.fixed(ATTACHMENT_KEY_BYTES, 'attachment key');
  const size = r.varint('attachment size', MAX_ATTACHMENT_BYTES);
  const digest = r.fixed(ATTACHMENT_DIGEST_BYTES, 'digest');
  const flags = r.u8('attachment flags');
  if (flags & ~AttachmentFlags.VOICE) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown attachment flags 0x${flags.toString(16)}`);
  }
  const contentType = r.str('content_type', MAX_CONTENT_TYPE_BYTES);
  const fileName = r.str('file_name', MAX_FILE_NAME_BYTES);
  const durationMs = r.varint64('duration_ms');
  const width = r.varint64('width');
  const height = r.varint64('height');
  const thumbnail = r.bytes('thumbnail', MAX_THUMBNAIL_BYTES);
  const caption = r.str('caption', MAX_CAPTION_BYTES);
  return new Attachment({
    blobId,
    key,
    size,
    digest,
    flags,
    contentType,
    fileName,
    durationMs,
    width,
    height,
    thumbnail,
    caption,
    sentAtMs,
  });
}
