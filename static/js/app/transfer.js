// @ts-check
/**
 * Attachment blobs over the REST API (docs/api.md "Attachments", protocol.md §17.5), the
 * browser's client/attachments.py.
 *
 * Upload: the file is read in slices (Blob.slice + arrayBuffer, one slice in memory at a
 * time), encrypted as it is read, and appended to the blob in pieces of about the server's
 * `chunk_bytes`. A piece the server did not confirm is kept until it has: after a failure
 * that may pass (no connection, a busy server, an offset that moved) the server is asked
 * where it is (HEAD) and the upload continues from there, never re-sending an accepted
 * piece and never encrypting anything twice. Download: the blob streams through the
 * AttachmentDecryptor (a lost connection resumes with a Range request); its plaintext is
 * handed out only after `finalize` has checked the length and the digest, so a tampered
 * blob gives `decrypt_failed` and never a partial file.
 */

import {
  AttachmentDecryptor,
  AttachmentEncryptor,
  CHUNK_BYTES,
  MAX_ATTACHMENT_BYTES,
  ProtocolError,
  blobSize,
  concatBytes,
  newAttachmentKey,
} from '../protocol/index.js';
import { ClientError, LocalCode } from './errors.js';

/** @import { Api } from './api.js' */

const SLICE_BYTES = 16 * CHUNK_BYTES; // plaintext read per step: 1 MiB
const MAX_PIECE_BYTES = 4 * 1024 * 1024; // the server's limit for one PATCH
const MAX_FAILURES = 8; // in a row, before an upload or download gives up
const RETRY_BASE_MS = 250;
const RETRY_CAP_MS = 8000;

/** @typedef {(done: number, total: number) => void} Progress */
/**
 * @typedef {{blobId: Uint8Array, key: Uint8Array, size: number, digest: Uint8Array}} Uploaded
 */

/**
 * A failure worth trying again after a pause (client/attachments.py transient).
 * @param {unknown} error
 */
export function transient(error) {
  if (!(error instanceof ClientError)) return false;
  if ([LocalCode.UNREACHABLE, 'server_busy', 'upload_offset_mismatch', 'truncated'].includes(error.code)) return true;
  return error.status !== null && error.status >= 500;
}

/**
 * @param {number} failures
 * @param {AbortSignal} [signal]
 */
function backoff(failures, signal) {
  const ms = Math.random() * Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** failures);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(cancelled());
    });
  });
}

function cancelled() {
  return new ClientError(LocalCode.CLOSED, 'cancelled');
}

/** @param {string} hex */
function hexBytes(hex) {
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new ClientError(LocalCode.BAD_RESPONSE, `blob id ${hex} is not 32 hex digits`);
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

/** @param {Uint8Array} bytes */
export function blobIdHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Encrypt `file` under a fresh key and upload the blob. Resolves once the server holds
 * every byte, with what the ATTACHMENT pointer needs.
 * @param {Api} api
 * @param {Blob} file
 * @param {{onProgress?: Progress, signal?: AbortSignal}} [options]
 * @returns {Promise<Uploaded>}
 */
export async function uploadFile(api, file, { onProgress, signal } = {}) {
  const size = file.size;
  if (size > MAX_ATTACHMENT_BYTES) {
    throw new ClientError(
      'attachment_too_large',
      `the file is ${size} bytes; the limit is ${MAX_ATTACHMENT_BYTES} (100 MiB)`,
    );
  }
  const total = blobSize(size);
  const key = newAttachmentKey();
  const encryptor = new AttachmentEncryptor(key);
  const created = await retrying(() => api.createBlob(total), signal);
  if (created.size !== total) {
    throw new ClientError(LocalCode.BAD_RESPONSE, `announced ${total} bytes, the server has ${created.size}`);
  }
  const pieceBytes = Math.min(MAX_PIECE_BYTES, Math.max(CHUNK_BYTES, created.chunkBytes || SLICE_BYTES));
  let offset = created.offset; // where the server is
  let sent = 0; // blob bytes produced and handed to `pending` so far
  /** @type {Uint8Array[]} */
  let pending = [];
  let pendingBytes = 0;
  onProgress?.(offset, total);

  /** Send what `pending` holds (all of it when `all`, else whole pieces). */
  const flush = async (/** @type {boolean} */ all) => {
    while (pendingBytes >= pieceBytes || (all && pendingBytes > 0)) {
      const joined = concatBytes(...pending);
      const piece = joined.subarray(0, Math.min(pieceBytes, joined.length));
      const start = sent - pendingBytes; // the blob offset of `piece`
      await putPiece(piece, start);
      const rest = joined.slice(piece.length);
      pending = rest.length ? [rest] : [];
      pendingBytes = rest.length;
    }
  };

  /**
   * @param {Uint8Array} piece
   * @param {number} start
   */
  const putPiece = async (piece, start) => {
    let failures = 0;
    for (;;) {
      if (signal?.aborted) throw cancelled();
      try {
        if (offset === start) {
          offset = await api.uploadChunk(created.id, start, piece, signal);
        }
        if (offset === start + piece.length) {
          onProgress?.(offset, total);
          return;
        }
        throw new ClientError(LocalCode.BAD_RESPONSE, `the server is at ${offset}; this piece covers ${start}..${start + piece.length}`);
      } catch (error) {
        if (signal?.aborted) throw cancelled();
        if (!transient(error)) throw error;
        failures += 1;
        if (failures >= MAX_FAILURES) throw error;
        await backoff(failures, signal);
        // Where did the server get to? Then continue from there.
        offset = await retrying(() => api.uploadOffset(created.id, signal), signal);
        if (offset < start || offset > start + piece.length) {
          throw new ClientError(LocalCode.BAD_RESPONSE, `the server holds ${offset} bytes; expected ${start}..${start + piece.length}`);
        }
      }
    }
  };

  for (let at = 0; at < size; at += SLICE_BYTES) {
    if (signal?.aborted) throw cancelled();
    const slice = new Uint8Array(await file.slice(at, Math.min(size, at + SLICE_BYTES)).arrayBuffer());
    const out = encryptor.update(slice);
    if (out.length) {
      pending.push(out);
      pendingBytes += out.length;
      sent += out.length;
    }
    await flush(false);
  }
  const last = encryptor.finalize();
  pending.push(last);
  pendingBytes += last.length;
  sent += last.length;
  await flush(true);
  return { blobId: hexBytes(created.id), key, size, digest: encryptor.digest };
}

/**
 * Call `fn` until it succeeds or fails for good.
 * @template T
 * @param {() => Promise<T>} fn
 * @param {AbortSignal} [signal]
 * @returns {Promise<T>}
 */
async function retrying(fn, signal) {
  for (let failures = 0; ; ) {
    try {
      return await fn();
    } catch (error) {
      if (signal?.aborted) throw cancelled();
      const code = error instanceof ClientError ? error.code : '';
      if (!transient(error) || code === 'upload_offset_mismatch' || ++failures >= MAX_FAILURES) throw error;
      await backoff(failures, signal);
    }
  }
}

/**
 * Download the blob a pointer names, check it and decrypt it: the file as a Blob of
 * `contentType`. Throws ClientError decrypt_failed (tampered, truncated or substituted),
 * attachment_expired or unknown_attachment (gone from the server), or what the network did.
 * @param {Api} api
 * @param {{blobId: Uint8Array, key: Uint8Array, size: number, digest: Uint8Array, contentType: string}} pointer
 * @param {{onProgress?: Progress, signal?: AbortSignal}} [options]
 */
export async function downloadFile(api, pointer, { onProgress, signal } = {}) {
  const total = blobSize(pointer.size);
  let decryptor;
  try {
    decryptor = new AttachmentDecryptor(pointer.key, pointer.size, pointer.digest);
  } catch (error) {
    throw error instanceof ProtocolError ? ClientError.fromProtocol(error, 'the attachment') : error;
  }
  /** @type {Uint8Array[]} */
  const parts = [];
  let received = 0;
  let failures = 0;
  const id = blobIdHex(pointer.blobId);
  try {
    while (received <= total) {
      try {
        const response = await api.downloadBlob(id, received, signal);
        if (response.status === 200 && received) {
          throw new ClientError(LocalCode.BAD_RESPONSE, 'the server ignored the Range of a resumed download');
        }
        const reader = /** @type {ReadableStream<Uint8Array>} */ (response.body).getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          // At most one byte past the blob: a longer one fails in the decryptor.
          const piece = value.subarray(0, total + 1 - received);
          received += piece.length;
          parts.push(decryptor.update(piece));
          onProgress?.(Math.min(received, total), total);
          failures = 0;
          if (received > total) break;
        }
        if (received < total) {
          throw new ClientError(LocalCode.UNREACHABLE, `the download ended after ${received} of ${total} bytes`);
        }
        break;
      } catch (error) {
        if (signal?.aborted) throw cancelled();
        if (error instanceof ProtocolError) throw error;
        const wrapped = error instanceof ClientError ? error : new ClientError(LocalCode.UNREACHABLE, String(error));
        if (wrapped.status === 416) {
          // Nothing past what we have: the blob is shorter than its pointer says.
          throw new ClientError('decrypt_failed', `the attachment: the blob ends after ${received} of ${total} bytes`);
        }
        if (!transient(wrapped) || ++failures >= MAX_FAILURES) throw wrapped;
        await backoff(failures, signal);
      }
    }
    decryptor.finalize();
  } catch (error) {
    if (error instanceof ProtocolError) throw ClientError.fromProtocol(error, 'the attachment');
    throw error;
  }
  return new Blob(/** @type {BlobPart[]} */ (parts), { type: pointer.contentType || 'application/octet-stream' });
}
