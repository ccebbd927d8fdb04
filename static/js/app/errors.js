// @ts-check
/**
 * The one error type the web client throws (client/errors.py's SealpostError).
 *
 * `code` is a slug: a protocol ErrorCode's (`untrusted_identity`, `unknown_account`, ...,
 * from the server's `{code, message, fields}` or an ERROR frame) or a local one from
 * `LocalCode`, for conditions that never cross the wire.
 */

import { ProtocolError } from '../protocol/index.js';

export const LocalCode = Object.freeze({
  UNREACHABLE: 'unreachable', // no connection to the server
  NOT_REGISTERED: 'not_registered', // this browser holds no device yet
  NOT_LINKED: 'not_linked', // login() for an account this browser holds no device of
  LOGGED_OUT: 'logged_out', // the device is here, but logout() was called: login() first
  ALREADY_REGISTERED: 'already_registered',
  BAD_RESPONSE: 'bad_response', // the server answered outside the contract
  CLOSED: 'closed', // close() was called while a request was waiting
  STORAGE: 'storage', // IndexedDB or WebCrypto failed
});

export class ClientError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{status?: number | null, fields?: Record<string, unknown>, retryAfter?: number | null}} [extra]
   */
  constructor(code, message, { status = null, fields = {}, retryAfter = null } = {}) {
    super(message);
    this.name = 'ClientError';
    /** @type {string} */
    this.code = code;
    /** @type {number | null} the HTTP status, for REST errors */
    this.status = status;
    /** @type {Record<string, unknown>} per-field errors the server listed */
    this.fields = fields;
    /** @type {number | null} seconds a 429 asked to wait */
    this.retryAfter = retryAfter;
  }

  /**
   * @param {ProtocolError} error
   * @param {string} [context]
   */
  static fromProtocol(error, context) {
    return new ClientError(error.slug, context ? `${context}: ${error.detail}` : error.detail);
  }
}

/**
 * Any failure as a ClientError: protocol errors keep their code; anything else (a bug, an
 * IndexedDB or WebCrypto failure) becomes `storage` unless `fallback` says otherwise.
 * @param {unknown} error
 * @param {string} [fallback]
 */
export function asClientError(error, fallback = LocalCode.STORAGE) {
  if (error instanceof ClientError) return error;
  if (error instanceof ProtocolError) return ClientError.fromProtocol(error);
  return new ClientError(fallback, error instanceof Error ? error.message : String(error));
}
