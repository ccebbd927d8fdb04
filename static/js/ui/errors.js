// @ts-check
/**
 * Plain-language text for the error codes a person can meet in the web client. The code
 * itself is always shown too (in brackets), so a report names it exactly.
 */

/** @type {Record<string, string>} */
const TEXT = {
  username_taken: 'That username is taken. Try another one.',
  invalid_username: 'A username is 3–32 characters: a lower-case letter, then lower-case letters, digits or _.',
  weak_password: 'That password is too weak.',
  unauthorized: 'Wrong username or password.',
  not_linked:
    'This browser holds no keys for that account. Link it to your account below (from a device where you are signed in), or sign up for a new account here.',
  unsigned_device:
    'Not sent: the server asked to encrypt to a device this account has not signed for. Nothing was sent to it.',
  unknown_device: 'That device is not (or no longer) part of the account.',
  link_expired: 'The link code expired before it was used. Make a new one and try again.',
  link_not_found: 'That link code is not (or no longer) valid. Make a new one on the new device.',
  device_limit_reached: 'This account already has as many devices as it may. Remove one first.',
  unknown_account: 'There is no Sealpost account with that username.',
  untrusted_identity:
    'Not sent: this contact’s safety number has changed. Review the new safety number to continue.',
  rate_limited: 'Too many requests. Wait a moment and try again.',
  unreachable: 'The server cannot be reached. Check your connection.',
  queue_full: 'Their device has too many undelivered messages. Try again later.',
  ciphertext_too_large: 'That message is too long.',
  forbidden: 'This request was refused. Reload the page and try again.',
  too_large: 'That message is too long.',
  logged_out: 'You are logged out. Log in again to continue.',
  not_registered: 'This browser holds no account yet. Sign up first.',
  already_registered: 'This browser already holds an account. Log in instead.',
  device_mismatch: 'Their list of devices kept changing. Try again in a moment.',
  storage: 'This browser could not store your keys or messages (is private browsing on, or the disk full?).',
  closed: 'The connection closed before the server answered. It will be retried.',
  attachment_too_large: 'That file is too large: files can be at most 100 MB.',
  attachment_expired: 'That file has expired: the server no longer has it.',
  unknown_attachment: 'That file is no longer on the server.',
  decrypt_failed: 'That could not be decrypted: it was damaged or tampered with on the way.',
};

/**
 * @param {any} error a ClientError ({code, message}) or anything thrown
 * @returns {string}
 */
export function describeError(error) {
  const code = typeof error?.code === 'string' ? error.code : '';
  const fallback = typeof error?.message === 'string' && error.message ? error.message : String(error);
  let text = TEXT[code] ?? fallback;
  if (code === 'weak_password' && error?.message) text = `${TEXT[code]} ${stripCode(error.message, code)}`;
  return code ? `${text} (${code})` : text;
}

/**
 * "weak_password: This password is too short." -> "This password is too short."
 * @param {string} message
 * @param {string} code
 */
function stripCode(message, code) {
  return message.startsWith(`${code}: `) ? message.slice(code.length + 2) : message;
}
