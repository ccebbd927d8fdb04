// @ts-check
/**
 * Transport frames: what a client and the relay exchange, one per WebSocket binary message
 * (protocol/frames.py; docs/protocol.md, "Frames").
 *
 *     frame = version u8 (1) | type u8 | request_id varint | body
 *
 * The client numbers its requests; the server echoes the number in its answer (SEND_OK,
 * DEVICE_MISMATCH, ERROR, PONG) and uses 0 for what it pushes unasked (DELIVER,
 * QUEUE_EMPTY, NOTICE). Bodies, by type:
 *
 *     SEND            c→s  recipient str | flags u8 | [ttl_seconds varint if EXPIRES] |
 *                          count varint |
 *                          count × (device_id varint | registration_id varint | payload bytes)
 *     SEND_OK         s→c  server_time_ms varint
 *     DEVICE_MISMATCH s→c  missing list | extra list | stale list   (list = count varint | ids)
 *     DELIVER         s→c  seq varint | sender str | sender_device varint |
 *                          server_time_ms varint | payload bytes
 *     ACK             c→s  count varint | count × seq varint
 *     QUEUE_EMPTY     s→c  (empty)
 *     ERROR           s→c  code varint | message str
 *     NOTICE          s→c  kind varint | value varint
 *     PING / PONG     both (empty)
 *     GROUP_SEND      c→s  group_id[16] | flags u8 | [ttl_seconds varint if EXPIRES] |
 *                          roster_digest[16] | payload bytes   (docs/protocol.md, 17.3)
 *
 * GROUP_SEND carries one SenderKeyMessage for every device of the group's roster but the
 * sending one; the relay refuses it with STALE_ROSTER when `roster_digest` (groups.js) is
 * not that of the group's devices now. The flag EXPIRES (SEND and GROUP_SEND) makes the
 * relay keep the envelopes at most `ttl_seconds` (1 .. MAX_TTL_SECONDS) after accepting
 * them.
 *
 * `decodeFrame` returns a frame or throws `ProtocolError`, never anything else.
 * `FrameStream` does the same for byte streams, where each frame is preceded by its length.
 * Fields that may hold any varint (request ids, seqs, times, codes) are `Uint64`s: numbers
 * while safe, bigints above 2**53 - 1.
 */

import { Reader, Writer, encodeVarint, concatBytes } from './encoding.js';
import { ErrorCode, ProtocolError, errorSlug } from './errors.js';
import { GROUP_ID_BYTES, ROSTER_DIGEST_BYTES } from './groups.js';
import { checkUsername } from './identifiers.js';
import { MAX_REGISTRATION_ID, checkDeviceId } from './keys.js';
import {
  MAX_CIPHERTEXT_BYTES,
  MAX_DEVICE_ID,
  MAX_DEVICES_PER_SEND,
  MAX_FRAME_BYTES,
  MAX_LIST_ITEMS,
  MAX_STRING_BYTES,
  MAX_TTL_SECONDS,
  MAX_USERNAME_BYTES,
  PROTOCOL_VERSION,
} from './limits.js';

/** @import { Uint64 } from './encoding.js' */

export const FrameType = Object.freeze({
  SEND: 1,
  SEND_OK: 2,
  DEVICE_MISMATCH: 3,
  DELIVER: 4,
  ACK: 5,
  QUEUE_EMPTY: 6,
  ERROR: 7,
  NOTICE: 8,
  PING: 9,
  PONG: 10,
  GROUP_SEND: 11,
});

/** @type {ReadonlyMap<number, string>} */
const FRAME_TYPE_NAMES = new Map(Object.entries(FrameType).map(([name, value]) => [value, name]));

/** @param {number} type */
export function frameTypeName(type) {
  return FRAME_TYPE_NAMES.get(type);
}

export const SendFlags = Object.freeze({
  NONE: 0,
  // Deliver only to devices connected now; never stored (typing indicators).
  EPHEMERAL: 1,
  // ttl_seconds follows the flags byte; the relay keeps the envelopes at most that long.
  EXPIRES: 2,
});

const KNOWN_SEND_FLAGS = SendFlags.EPHEMERAL | SendFlags.EXPIRES;

// Re-exported: callers that build SEND frames find the ttl bound here.
export { MAX_TTL_SECONDS };

export const NoticeKind = Object.freeze({
  PREKEYS_LOW: 1, // value: one-time prekeys left on the server for this device
});

export class DeviceMessage {
  /**
   * @param {number} deviceId
   * @param {number} registrationId
   * @param {Uint8Array} payload
   */
  constructor(deviceId, registrationId, payload) {
    /** @readonly */ this.deviceId = deviceId;
    /** @readonly */ this.registrationId = registrationId;
    /** @readonly */ this.payload = payload;
    Object.freeze(this);
  }
}

export class Send {
  /**
   * `ttlSeconds` is set exactly when `flags` has EXPIRES.
   * @param {{requestId: Uint64, recipient: string, messages: readonly DeviceMessage[],
   *          flags?: number, ttlSeconds?: number | null}} fields
   */
  constructor({ requestId, recipient, messages, flags = SendFlags.NONE, ttlSeconds = null }) {
    /** @readonly */ this.requestId = requestId;
    /** @readonly */ this.recipient = recipient;
    /** @readonly */ this.messages = Object.freeze([...messages]);
    /** @readonly */ this.flags = flags;
    /** @readonly */ this.ttlSeconds = ttlSeconds;
    Object.freeze(this);
  }

  get type() {
    return FrameType.SEND;
  }
}

export class SendOk {
  /** @param {{requestId: Uint64, serverTimeMs: Uint64}} fields */
  constructor({ requestId, serverTimeMs }) {
    /** @readonly */ this.requestId = requestId;
    /** @readonly */ this.serverTimeMs = serverTimeMs;
    Object.freeze(this);
  }

  get type() {
    return FrameType.SEND_OK;
  }
}

export class DeviceMismatch {
  /**
   * @param {{requestId: Uint64, missing: readonly number[], extra: readonly number[],
   *          stale: readonly number[]}} fields
   */
  constructor({ requestId, missing, extra, stale }) {
    /** @readonly */ this.requestId = requestId;
    /** @readonly */ this.missing = Object.freeze([...missing]);
    /** @readonly */ this.extra = Object.freeze([...extra]);
    /** @readonly */ this.stale = Object.freeze([...stale]);
    Object.freeze(this);
  }

  get type() {
    return FrameType.DEVICE_MISMATCH;
  }
}

export class Deliver {
  /**
   * @param {{seq: Uint64, sender: string, senderDevice: number, serverTimeMs: Uint64,
   *          payload: Uint8Array, requestId?: Uint64}} fields
   */
  constructor({ seq, sender, senderDevice, serverTimeMs, payload, requestId = 0 }) {
    /** @readonly */ this.seq = seq;
    /** @readonly */ this.sender = sender;
    /** @readonly */ this.senderDevice = senderDevice;
    /** @readonly */ this.serverTimeMs = serverTimeMs;
    /** @readonly */ this.payload = payload;
    /** @readonly */ this.requestId = requestId;
    Object.freeze(this);
  }

  get type() {
    return FrameType.DELIVER;
  }
}

export class Ack {
  /** @param {{requestId: Uint64, seqs: readonly Uint64[]}} fields */
  constructor({ requestId, seqs }) {
    /** @readonly */ this.requestId = requestId;
    /** @readonly */ this.seqs = Object.freeze([...seqs]);
    Object.freeze(this);
  }

  get type() {
    return FrameType.ACK;
  }
}

export class QueueEmpty {
  /** @param {{requestId?: Uint64}} [fields] */
  constructor({ requestId = 0 } = {}) {
    /** @readonly */ this.requestId = requestId;
    Object.freeze(this);
  }

  get type() {
    return FrameType.QUEUE_EMPTY;
  }
}

export class ErrorFrame {
  /**
   * `code` is an ErrorCode value, kept as a number so that a newer peer's code still
   * decodes; `errorCode` is null for a code this side does not know.
   * @param {{requestId: Uint64, code: Uint64, message: string}} fields
   */
  constructor({ requestId, code, message }) {
    /** @readonly */ this.requestId = requestId;
    /** @readonly */ this.code = code;
    /** @readonly */ this.message = message;
    Object.freeze(this);
  }

  get type() {
    return FrameType.ERROR;
  }

  /** `code` if this side knows it (an ErrorCode value), else null. */
  get errorCode() {
    return typeof this.code === 'number' && errorSlug(this.code) !== undefined ? this.code : null;
  }
}

export class Notice {
  /**
   * `kind` is a NoticeKind value; unknown kinds are kept for forward compatibility.
   * @param {{kind: Uint64, value: Uint64, requestId?: Uint64}} fields
   */
  constructor({ kind, value, requestId = 0 }) {
    /** @readonly */ this.kind = kind;
    /** @readonly */ this.value = value;
    /** @readonly */ this.requestId = requestId;
    Object.freeze(this);
  }

  get type() {
    return FrameType.NOTICE;
  }
}

export class Ping {
  /** @param {{requestId: Uint64}} fields */
  constructor({ requestId }) {
    /** @readonly */ this.requestId = requestId;
    Object.freeze(this);
  }

  get type() {
    return FrameType.PING;
  }
}

export class Pong {
  /** @param {{requestId: Uint64}} fields */
  constructor({ requestId }) {
    /** @readonly */ this.requestId = requestId;
    Object.freeze(this);
  }

  get type() {
    return FrameType.PONG;
  }
}

/** One SenderKeyMessage for every device of a group's roster but the sending one (17.3). */
export class GroupSend {
  /**
   * `ttlSeconds` is set exactly when `flags` has EXPIRES.
   * @param {{requestId: Uint64, groupId: Uint8Array, rosterDigest: Uint8Array,
   *          payload: Uint8Array, flags?: number, ttlSeconds?: number | null}} fields
   */
  constructor({ requestId, groupId, rosterDigest, payload, flags = SendFlags.NONE, ttlSeconds = null }) {
    /** @readonly */ this.requestId = requestId;
    /** @readonly */ this.groupId = groupId;
    /** @readonly */ this.flags = flags;
    /** @readonly */ this.ttlSeconds = ttlSeconds;
    /** @readonly */ this.rosterDigest = rosterDigest;
    /** @readonly */ this.payload = payload;
    Object.freeze(this);
  }

  get type() {
    return FrameType.GROUP_SEND;
  }
}

const FRAME_CLASSES = [
  Send,
  SendOk,
  DeviceMismatch,
  Deliver,
  Ack,
  QueueEmpty,
  ErrorFrame,
  Notice,
  Ping,
  Pong,
  GroupSend,
];

/**
 * @typedef {Send | SendOk | DeviceMismatch | Deliver | Ack | QueueEmpty | ErrorFrame |
 *           Notice | Ping | Pong | GroupSend} Frame
 */

// Requests that are answered: their answer must be matched to them by request id, so 0
// (which marks what the server pushes unasked) is not allowed.
/** @type {ReadonlySet<number>} */
const NEEDS_REQUEST_ID = new Set([FrameType.SEND, FrameType.PING, FrameType.GROUP_SEND]);

/** @param {Uint64} value */
const isZero = (value) => value === 0 || value === 0n;

/**
 * @param {Writer} w
 * @param {readonly Uint64[]} ids
 */
function writeIds(w, ids) {
  w.varint(ids.length);
  for (const value of ids) w.varint(value);
}

/**
 * @param {Reader} r
 * @param {string} what
 * @param {number} maximum
 * @param {number} limit
 * @returns {number[]}
 */
function readIds(r, what, maximum, limit) {
  const count = r.varint(`${what} count`, limit);
  const out = [];
  for (let i = 0; i < count; i++) out.push(r.varint(what, maximum));
  if (out.includes(0)) throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what} ids start at 1`);
  return out;
}

/**
 * @param {Reader} r
 * @param {string} what
 * @param {number} limit
 * @returns {Uint64[]}
 */
function readBigIds(r, what, limit) {
  const count = r.varint(`${what} count`, limit);
  const out = [];
  for (let i = 0; i < count; i++) out.push(r.varint64(what));
  if (out.some(isZero)) throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what} ids start at 1`);
  return out;
}

/**
 * @param {Reader} r
 * @param {string} owner whose ciphertext it is, for the message ("device 2", "group")
 */
function readPayload(r, owner) {
  const length = r.varint64('payload length');
  if (length > MAX_CIPHERTEXT_BYTES) {
    throw new ProtocolError(
      ErrorCode.CIPHERTEXT_TOO_LARGE,
      `ciphertext for ${owner} is ${length} bytes; the limit is ${MAX_CIPHERTEXT_BYTES}`,
    );
  }
  return r.fixed(/** @type {number} */ (length), 'payload');
}

/**
 * The flags byte and, with EXPIRES, the ttl that follows it (SEND and GROUP_SEND).
 * @param {Reader} r
 * @returns {[number, number | null]} [flags, ttlSeconds]
 */
function readFlags(r) {
  const flags = r.u8('flags');
  if (flags & ~KNOWN_SEND_FLAGS) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `unknown send flags 0x${flags.toString(16)}`);
  }
  if (!(flags & SendFlags.EXPIRES)) return [flags, null];
  const ttlSeconds = r.varint('ttl_seconds', MAX_TTL_SECONDS);
  if (ttlSeconds === 0) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'ttl_seconds must not be 0');
  return [flags, ttlSeconds];
}

/**
 * @param {Writer} w
 * @param {Send | GroupSend} frame
 */
function writeFlags(w, frame) {
  const expires = (frame.flags & SendFlags.EXPIRES) !== 0;
  if (expires !== (frame.ttlSeconds !== null)) {
    throw new ProtocolError(
      ErrorCode.INVALID_VALUE,
      'ttl_seconds must be given exactly when the flags have EXPIRES',
    );
  }
  w.u8(frame.flags);
  if (frame.ttlSeconds !== null) w.varint(frame.ttlSeconds);
}

/**
 * Encode a frame. Whatever this returns decodes to an equal frame: the result is checked
 * with `decodeFrame`, so an encoder can never emit what a decoder refuses (the error is the
 * decoder's).
 * @param {Frame} frame
 * @returns {Uint8Array}
 */
export function encodeFrame(frame) {
  const encoded = encode(frame);
  decodeFrame(encoded);
  return encoded;
}

/**
 * @param {Frame} frame
 * @returns {Uint8Array}
 */
function encode(frame) {
  if (!FRAME_CLASSES.some((cls) => frame instanceof cls)) {
    throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, 'not a frame');
  }
  const w = new Writer().u8(PROTOCOL_VERSION).u8(frame.type).varint(frame.requestId);
  if (frame instanceof Send) {
    w.str(frame.recipient);
    writeFlags(w, frame);
    w.varint(frame.messages.length);
    for (const message of frame.messages) {
      w.varint(message.deviceId).varint(message.registrationId);
      w.bytes(message.payload);
    }
  } else if (frame instanceof SendOk) {
    w.varint(frame.serverTimeMs);
  } else if (frame instanceof DeviceMismatch) {
    writeIds(w, frame.missing);
    writeIds(w, frame.extra);
    writeIds(w, frame.stale);
  } else if (frame instanceof Deliver) {
    w.varint(frame.seq).str(frame.sender).varint(frame.senderDevice);
    w.varint(frame.serverTimeMs).bytes(frame.payload);
  } else if (frame instanceof Ack) {
    writeIds(w, frame.seqs);
  } else if (frame instanceof ErrorFrame) {
    w.varint(frame.code).str(frame.message);
  } else if (frame instanceof Notice) {
    w.varint(frame.kind).varint(frame.value);
  } else if (frame instanceof GroupSend) {
    w.fixed(frame.groupId, GROUP_ID_BYTES);
    writeFlags(w, frame);
    w.fixed(frame.rosterDigest, ROSTER_DIGEST_BYTES).bytes(frame.payload);
  } // QueueEmpty, Ping and Pong have no body
  return w.getValue();
}

/**
 * @param {Uint8Array} data
 * @returns {Frame}
 */
export function decodeFrame(data) {
  if (data.length > MAX_FRAME_BYTES) {
    throw new ProtocolError(
      ErrorCode.TOO_LARGE,
      `frame of ${data.length} bytes is above ${MAX_FRAME_BYTES}`,
    );
  }
  const r = new Reader(data);
  const version = r.u8('frame version');
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      ErrorCode.UNSUPPORTED_VERSION,
      `frame version ${version}; this side speaks ${PROTOCOL_VERSION}`,
    );
  }
  const rawType = r.u8('frame type');
  const typeName = FRAME_TYPE_NAMES.get(rawType);
  if (typeName === undefined) {
    throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown frame type ${rawType}`);
  }
  const requestId = r.varint64('request_id');
  if (isZero(requestId) && NEEDS_REQUEST_ID.has(rawType)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `${typeName} needs a request id of 1 or more`);
  }
  /** @type {Frame} */
  let frame;
  switch (rawType) {
    case FrameType.SEND: {
      const recipient = checkUsername(r.str('recipient', MAX_USERNAME_BYTES));
      const [flags, ttlSeconds] = readFlags(r);
      const count = r.varint('device count', MAX_DEVICES_PER_SEND);
      if (count === 0) {
        throw new ProtocolError(ErrorCode.INVALID_VALUE, 'a send needs at least one device');
      }
      const messages = [];
      for (let i = 0; i < count; i++) {
        const deviceId = r.varint('device_id', MAX_DEVICE_ID);
        checkDeviceId(deviceId);
        const registrationId = r.varint('registration_id', MAX_REGISTRATION_ID);
        if (registrationId === 0) {
          throw new ProtocolError(ErrorCode.INVALID_VALUE, 'registration_id must not be 0');
        }
        const payload = readPayload(r, `device ${deviceId}`);
        if (!payload.length) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'empty payload');
        messages.push(new DeviceMessage(deviceId, registrationId, payload));
      }
      frame = new Send({ requestId, recipient, messages, flags, ttlSeconds });
      break;
    }
    case FrameType.SEND_OK:
      frame = new SendOk({ requestId, serverTimeMs: r.varint64('server_time_ms') });
      break;
    case FrameType.DEVICE_MISMATCH: {
      const missing = readIds(r, 'missing', MAX_DEVICE_ID, MAX_DEVICES_PER_SEND);
      const extra = readIds(r, 'extra', MAX_DEVICE_ID, MAX_DEVICES_PER_SEND);
      const stale = readIds(r, 'stale', MAX_DEVICE_ID, MAX_DEVICES_PER_SEND);
      frame = new DeviceMismatch({ requestId, missing, extra, stale });
      break;
    }
    case FrameType.DELIVER: {
      const seq = r.varint64('seq');
      const sender = checkUsername(r.str('sender', MAX_USERNAME_BYTES));
      const senderDevice = r.varint('sender_device', MAX_DEVICE_ID);
      checkDeviceId(senderDevice);
      const serverTimeMs = r.varint64('server_time_ms');
      const payload = readPayload(r, `device ${senderDevice}`);
      if (!payload.length) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'empty payload');
      frame = new Deliver({ seq, sender, senderDevice, serverTimeMs, payload, requestId });
      break;
    }
    case FrameType.ACK: {
      const seqs = readBigIds(r, 'seq', MAX_LIST_ITEMS);
      if (!seqs.length) {
        throw new ProtocolError(ErrorCode.INVALID_VALUE, 'an ack needs at least one seq');
      }
      frame = new Ack({ requestId, seqs });
      break;
    }
    case FrameType.QUEUE_EMPTY:
      frame = new QueueEmpty({ requestId });
      break;
    case FrameType.ERROR: {
      const code = r.varint64('code');
      frame = new ErrorFrame({ requestId, code, message: r.str('message', MAX_STRING_BYTES) });
      break;
    }
    case FrameType.NOTICE: {
      const kind = r.varint64('kind');
      frame = new Notice({ kind, value: r.varint64('value'), requestId });
      break;
    }
    case FrameType.PING:
      frame = new Ping({ requestId });
      break;
    case FrameType.GROUP_SEND: {
      const groupId = r.fixed(GROUP_ID_BYTES, 'group_id');
      const [flags, ttlSeconds] = readFlags(r);
      const rosterDigest = r.fixed(ROSTER_DIGEST_BYTES, 'roster_digest');
      const payload = readPayload(r, 'group');
      if (!payload.length) throw new ProtocolError(ErrorCode.INVALID_VALUE, 'empty payload');
      frame = new GroupSend({ requestId, groupId, rosterDigest, payload, flags, ttlSeconds });
      break;
    }
    default: // FrameType.PONG: the lookup above admits no other value
      frame = new Pong({ requestId });
  }
  r.end(`${typeName} frame`);
  return frame;
}

/**
 * Sans-I/O decoder for byte streams: each frame is `length varint | frame`.
 *
 * Feed it bytes as they arrive, in any split; it returns the frames completed so far.
 * `feed` throws on the first bad frame, and frames completed earlier in that same call are
 * not returned (as in Python): after a ProtocolError the stream is unusable (the framing is
 * lost; every later `feed` throws MALFORMED) and the peer must reconnect anyway.
 */
export class FrameStream {
  constructor() {
    // Unconsumed bytes are _storage[_start.._end]; the storage grows by doubling, so
    // feeding a large frame byte by byte stays linear.
    this._storage = new Uint8Array(256);
    this._start = 0;
    this._end = 0;
    this._broken = false;
  }

  /** @param {Frame} frame */
  static encode(frame) {
    const data = encodeFrame(frame);
    return concatBytes(encodeVarint(data.length), data);
  }

  /**
   * @param {Uint8Array} data
   * @returns {Frame[]}
   */
  feed(data) {
    if (this._broken) throw new ProtocolError(ErrorCode.MALFORMED, 'stream already failed; reconnect');
    this._append(data);
    /** @type {Frame[]} */
    const frames = [];
    try {
      for (let frame = this._next(); frame !== null; frame = this._next()) frames.push(frame);
    } catch (error) {
      this._broken = true;
      throw error;
    }
    return frames;
  }

  /** @param {Uint8Array} data */
  _append(data) {
    const live = this._end - this._start;
    if (this._end + data.length > this._storage.length) {
      const needed = live + data.length;
      const storage =
        needed <= this._storage.length
          ? this._storage
          : new Uint8Array(Math.max(needed, 2 * this._storage.length));
      storage.set(this._storage.subarray(this._start, this._end));
      this._storage = storage;
      this._start = 0;
      this._end = live;
    }
    this._storage.set(data, this._end);
    this._end += data.length;
  }

  /** @returns {Frame | null} */
  _next() {
    const buffer = this._storage.subarray(this._start, this._end);
    let length = 0; // inexact above 2**53, but then far above MAX_FRAME_BYTES anyway
    for (let index = 0; index < Math.min(buffer.length, 9); index++) {
      const byte = buffer[index];
      length += (byte & 0x7f) * 2 ** (7 * index);
      if (byte & 0x80) continue;
      if (byte === 0 && index > 0) {
        throw new ProtocolError(ErrorCode.NON_MINIMAL_VARINT, 'frame length: non-minimal');
      }
      if (length > MAX_FRAME_BYTES) {
        throw new ProtocolError(ErrorCode.TOO_LARGE, `frame length ${length} is too large`);
      }
      const start = index + 1;
      if (buffer.length < start + length) return null;
      this._start += start + length;
      return decodeFrame(buffer.subarray(start, start + length)); // the Reader copies it
    }
    if (buffer.length >= 9) {
      throw new ProtocolError(ErrorCode.VARINT_OVERFLOW, 'frame length longer than 9 bytes');
    }
    return null;
  }
}
