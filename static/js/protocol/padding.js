// @ts-check
/**
 * Length hiding: Padmé padding (protocol/padding.py; Nikitin et al., "Reducing Metadata
 * Leakage from Encrypted Files and Communication with PURBs", PETS 2019, section 4).
 *
 * Every plaintext ends with a 0x80 terminator followed by zero bytes (ISO/IEC 7816-4), so
 * unpadding needs no length field. With padding on, the total is rounded up to the Padmé
 * length: at most about 12% larger. With padding off the cost is the terminator byte.
 */

import { ErrorCode, ProtocolError } from './errors.js';

export const TERMINATOR = 0x80;

/**
 * floor(log2 n) for a positive safe integer, exactly (no floating-point log).
 * @param {number} n
 */
function floorLog2(n) {
  let exponent = 0;
  while (2 ** (exponent + 1) <= n) exponent += 1;
  return exponent;
}

/**
 * The Padmé-rounded size for a plaintext of `length` bytes (length >= 1).
 * @param {number} length
 */
export function padmeLength(length) {
  if (length < 2) return length;
  const exponent = floorLog2(length); // floor(log2 L)
  const significant = floorLog2(exponent) + 1; // floor(log2 E) + 1, E's bit length
  const lowBits = exponent - significant;
  const step = 2 ** lowBits; // mask + 1: (L + mask) & ~mask rounds up to a multiple of it
  return Math.ceil(length / step) * step;
}

/**
 * @param {Uint8Array} data
 * @param {boolean} hideLength
 */
export function pad(data, hideLength) {
  const unpadded = data.length + 1;
  const total = hideLength ? padmeLength(unpadded) : unpadded;
  const out = new Uint8Array(total); // zero-filled after the terminator
  out.set(data);
  out[data.length] = TERMINATOR;
  return out;
}

/** @param {Uint8Array} data */
export function unpad(data) {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end -= 1;
  if (end === 0 || data[end - 1] !== TERMINATOR) {
    throw new ProtocolError(ErrorCode.INVALID_PADDING, 'plaintext has no padding terminator');
  }
  return data.slice(0, end - 1);
}
