// @ts-check
/**
 * Protocol-wide limits: a copy of protocol/limits.py (each one's reason is given there and
 * in docs/protocol.md). The web client checks the same limits as the server before it sends.
 */

export const PROTOCOL_VERSION = 1;

// Double Ratchet: libsignal's figures. At most this many skipped message keys are kept per
// session (oldest evicted first), and a single message may not skip more than MAX_JUMP keys
// in one chain: each costs one HMAC, so the bound caps the work one forged header can force.
export const MAX_SKIPPED_KEYS = 2_000;
export const MAX_JUMP = 25_000;

// A session record keeps the current ratchet state and this many earlier ones.
export const MAX_ARCHIVED_STATES = 10;

// Server-side limits that clients also check before sending (Signal's figures).
export const MAX_CIPHERTEXT_BYTES = 96 * 1024; // one device's ciphertext in a send
export const MAX_FRAME_BYTES = 4 * 1024 * 1024; // one transport frame
export const MAX_DEVICES_PER_SEND = 1_000;
export const MAX_PREKEYS_PER_UPLOAD = 100;
export const MAX_USERNAME_BYTES = 64;
export const MAX_TEXT_BYTES = 64 * 1024;
export const MAX_LIST_ITEMS = 10_000; // any other list in a frame
export const MAX_STRING_BYTES = 4 * 1024; // any other string in a frame
export const MAX_DEVICE_ID = 0xffff;
// A year: the longest disappearing-message timer, and the longest EXPIRES ttl.
export const MAX_TTL_SECONDS = 31_536_000;
