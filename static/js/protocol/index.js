// @ts-check
/**
 * Sealpost's sans-I/O protocol for the browser: the wire format and the crypto protocol,
 * a byte-exact reimplementation of the Python package protocol/ (tests/js replays every
 * file of protocol/vectors/ against it). Nothing here performs I/O or touches the DOM:
 * bytes in, values or `ProtocolError` out; everything is synchronous.
 *
 * Names follow the Python modules in camelCase. Python tuples are arrays here
 * (`const [rootKey, chainKey] = kdfRk(...)`), `None` is `null`, keyword arguments that
 * inject randomness or options are a trailing options object (`{ rng }`), and the
 * transport frame Python calls `Error` is `ErrorFrame` (so as not to shadow `Error`).
 */

export * from './errors.js';
export * from './limits.js';
export {
  MAX_VARINT,
  Reader,
  Writer,
  bytesEqual,
  concatBytes,
  encodeVarint,
  fromHex,
  toHex,
  toUint64,
  utf8Decode,
  utf8Encode,
} from './encoding.js';
export * as primitives from './primitives.js';
export { randomBytes, constantTimeEqual } from './primitives.js';
export * from './keys.js';
export * from './messages.js';
export * as pqxdh from './pqxdh.js';
export * as ratchet from './ratchet.js';
export { PendingPreKey, RatchetState } from './ratchet.js';
export * from './session.js';
export * from './padding.js';
export * from './content.js';
export * from './identifiers.js';
export * from './frames.js';
export * from './safety.js';
export * from './devicelist.js';
export * from './provisioning.js';
export * from './groups.js';
export * from './senderkeys.js';
export * from './attachments.js';
