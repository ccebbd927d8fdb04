// @ts-check
/**
 * Primitive binary encodings shared by every message and frame (protocol/encoding.py).
 *
 * - varint: unsigned LEB128, at most 9 bytes (values up to 2**63 - 1), minimal form only;
 *   a non-minimal varint is rejected so that every value has exactly one encoding.
 * - bytes: varint length, then the bytes.
 * - str: bytes holding UTF-8 (strict: no surrogates, no byte-order mark stripped).
 * - fixed: raw bytes of a length known from the context (keys, tags).
 *
 * Numbers: a varint that may exceed 2**53 - 1 (request ids, sequence numbers, timestamps)
 * is a `Uint64`: a `number` while it is a safe integer, a `bigint` above that, so the
 * common case stays a plain number and no value loses precision. Bounded fields (ids,
 * counters, lengths) are always numbers.
 *
 * `Reader` throws only `ProtocolError`; it never reads past its buffer.
 */

import { ErrorCode, ProtocolError } from './errors.js';

/** @typedef {number | bigint} Uint64 a varint: a number up to 2**53 - 1, a bigint above */

export const MAX_VARINT = (1n << 63n) - 1n;
const TWO_49 = 2 ** 49;

// --- bytes and text -------------------------------------------------------------------

/**
 * @param {readonly Uint8Array[]} parts
 * @returns {Uint8Array}
 */
export function concatBytes(...parts) {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Plain (not constant-time) equality, for public values such as ratchet keys.
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** @param {Uint8Array} data */
export function toHex(data) {
  let out = '';
  for (const byte of data) out += byte.toString(16).padStart(2, '0');
  return out;
}

/** @param {string} hex */
export function fromHex(hex) {
  if (hex.length % 2 || /[^0-9a-fA-F]/.test(hex)) {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, 'hex: not an even number of hex digits');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const ENCODER = new TextEncoder();
// fatal: malformed UTF-8 (overlong forms, surrogates, above U+10FFFF, cut sequences) throws,
// as Python's strict codec does; ignoreBOM: a leading U+FEFF is text, not a marker to drop.
const DECODER = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * UTF-8 of a string. A lone surrogate has no UTF-8 form: INVALID_UTF8 (TextEncoder would
 * silently write U+FFFD instead; Python refuses to encode it).
 * @param {string} text
 * @param {string} [what]
 */
export function utf8Encode(text, what = 'text') {
  if (typeof text !== 'string') throw new ProtocolError(ErrorCode.INVALID_VALUE, `${what}: not a string`);
  if (LONE_SURROGATE.test(text)) {
    throw new ProtocolError(ErrorCode.INVALID_UTF8, `${what}: lone surrogate has no UTF-8 form`);
  }
  return ENCODER.encode(text);
}

/**
 * @param {Uint8Array} data
 * @param {string} [what]
 */
export function utf8Decode(data, what = 'text') {
  try {
    return DECODER.decode(data);
  } catch {
    throw new ProtocolError(ErrorCode.INVALID_UTF8, `${what}: not valid UTF-8`);
  }
}

// --- varints --------------------------------------------------------------------------

/**
 * A number or bigint as a Uint64 in canonical form (number when safe), or VARINT_OVERFLOW.
 * @param {Uint64} value
 * @returns {Uint64}
 */
export function toUint64(value) {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `varint must be an integer: ${value}`);
    }
    if (value < 0) throw new ProtocolError(ErrorCode.VARINT_OVERFLOW, `varint out of range: ${value}`);
    if (value <= Number.MAX_SAFE_INTEGER) return value;
    value = BigInt(value);
  }
  if (typeof value !== 'bigint') {
    throw new ProtocolError(ErrorCode.INVALID_VALUE, `varint must be an integer: ${String(value)}`);
  }
  if (value < 0n || value > MAX_VARINT) {
    throw new ProtocolError(ErrorCode.VARINT_OVERFLOW, `varint out of range: ${value}`);
  }
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

/**
 * @param {Uint64} value 0 ..= 2**63 - 1
 * @returns {Uint8Array}
 */
export function encodeVarint(value) {
  const v = toUint64(value);
  /** @type {number[]} */
  const out = [];
  if (typeof v === 'number') {
    let n = v;
    while (n >= 0x80) {
      out.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    out.push(n);
  } else {
    let n = v;
    while (n >= 0x80n) {
      out.push(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    out.push(Number(n));
  }
  return Uint8Array.from(out);
}

// --- Writer ---------------------------------------------------------------------------

/** Appends encoded fields to a buffer. */
export class Writer {
  constructor() {
    /** @type {Uint8Array[]} */
    this._parts = [];
  }

  /** @param {number} value */
  u8(value) {
    if (!Number.isInteger(value) || value < 0 || value > 0xff) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `u8 out of range: ${value}`);
    }
    this._parts.push(Uint8Array.of(value));
    return this;
  }

  /** @param {Uint64} value */
  varint(value) {
    this._parts.push(encodeVarint(value));
    return this;
  }

  /**
   * @param {Uint8Array} data
   * @param {number} length
   */
  fixed(data, length) {
    if (!(data instanceof Uint8Array) || data.length !== length) {
      const got = data instanceof Uint8Array ? data.length : typeof data;
      throw new ProtocolError(ErrorCode.INVALID_VALUE, `expected ${length} bytes, got ${got}`);
    }
    this._parts.push(data.slice());
    return this;
  }

  /** @param {Uint8Array} data */
  raw(data) {
    this._parts.push(data.slice());
    return this;
  }

  /** @param {Uint8Array} data */
  bytes(data) {
    this._parts.push(encodeVarint(data.length), data.slice());
    return this;
  }

  /** @param {string} text */
  str(text) {
    return this.bytes(utf8Encode(text));
  }

  /** @returns {Uint8Array} */
  getValue() {
    return concatBytes(...this._parts);
  }
}

// --- Reader ---------------------------------------------------------------------------

/** Reads encoded fields from a buffer; every method throws only `ProtocolError`. */
export class Reader {
  /** @param {Uint8Array} data */
  constructor(data) {
    if (!(data instanceof Uint8Array)) {
      throw new ProtocolError(ErrorCode.INVALID_VALUE, 'reader input must be a Uint8Array');
    }
    this._data = data.slice(); // our own copy: the caller may reuse its buffer
    this._pos = 0;
  }

  get remaining() {
    return this._data.length - this._pos;
  }

  /**
   * @param {number} length
   * @param {string} what
   */
  _take(length, what) {
    if (length > this.remaining) {
      throw new ProtocolError(
        ErrorCode.TRUNCATED,
        `${what}: needs ${length} bytes, ${this.remaining} left`,
      );
    }
    const start = this._pos;
    this._pos += length;
    return this._data.slice(start, this._pos);
  }

  /** @param {string} what */
  u8(what) {
    if (this.remaining < 1) {
      throw new ProtocolError(ErrorCode.TRUNCATED, `${what}: needs 1 bytes, 0 left`);
    }
    return this._data[this._pos++];
  }

  /**
   * Any varint (up to 2**63 - 1): a number when it is a safe integer, else a bigint.
   * @param {string} what
   * @returns {Uint64}
   */
  varint64(what) {
    let low = 0; // bits 0..48: exact in a double
    let high = 0; // bits 49..62
    for (let index = 0; index < 9; index++) {
      const byte = this.u8(what);
      if (index < 7) low += (byte & 0x7f) * 2 ** (7 * index);
      else high += (byte & 0x7f) * 2 ** (7 * (index - 7));
      if (!(byte & 0x80)) {
        if (byte === 0 && index > 0) {
          throw new ProtocolError(ErrorCode.NON_MINIMAL_VARINT, `${what}: non-minimal varint`);
        }
        if (high === 0) return low;
        const value = low + high * TWO_49; // rounds only when the exact value is above 2**53
        if (value <= Number.MAX_SAFE_INTEGER) return value;
        return BigInt(low) + (BigInt(high) << 49n);
      }
    }
    throw new ProtocolError(ErrorCode.VARINT_OVERFLOW, `${what}: varint longer than 9 bytes`);
  }

  /**
   * A varint no larger than `maximum` (a safe integer): TOO_LARGE above it. As in Python,
   * the whole varint is read before the bound is checked.
   * @param {string} what
   * @param {number} maximum
   * @returns {number}
   */
  varint(what, maximum) {
    const value = this.varint64(what);
    if (value > maximum) {
      throw new ProtocolError(ErrorCode.TOO_LARGE, `${what}: ${value} is above the limit ${maximum}`);
    }
    return /** @type {number} */ (value);
  }

  /**
   * @param {number} length
   * @param {string} what
   */
  fixed(length, what) {
    return this._take(length, what);
  }

  /**
   * @param {string} what
   * @param {number} maximum
   */
  bytes(what, maximum) {
    const length = this.varint(what, maximum);
    return this._take(length, what);
  }

  /**
   * @param {string} what
   * @param {number} maximum the limit in bytes of the UTF-8 form
   */
  str(what, maximum) {
    return utf8Decode(this.bytes(what, maximum), what);
  }

  rest() {
    return this._take(this.remaining, 'rest');
  }

  /** @param {string} what */
  end(what) {
    if (this.remaining) {
      throw new ProtocolError(
        ErrorCode.TRAILING_BYTES,
        `${what}: ${this.remaining} unexpected trailing bytes`,
      );
    }
  }
}
