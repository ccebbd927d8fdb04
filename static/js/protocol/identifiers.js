// @ts-check
/**
 * Usernames: the one account identifier users type, shared by the server and clients
 * (protocol/identifiers.py).
 */

import { ErrorCode, ProtocolError } from './errors.js';

export const USERNAME_PATTERN = /^[a-z][a-z0-9_]{2,31}$/;
export const USERNAME_RULE =
  '3 to 32 characters: a lower-case letter, then lower-case letters, digits or _';

// Only ASCII whitespace is stripped (space, tab, CR, LF), and only ASCII is lower-cased:
// Unicode lower-casing would turn the Kelvin sign U+212A into "k", which another
// implementation might not do (docs/protocol.md, section 10).
const STRIP = /^[ \t\r\n]+|[ \t\r\n]+$/g;
const ASCII = /^[\x00-\x7f]*$/;

/** @param {string} name */
function invalid(name) {
  const shown = JSON.stringify([...String(name)].slice(0, 40).join(''));
  return new ProtocolError(ErrorCode.INVALID_USERNAME, `username ${shown} is not ${USERNAME_RULE}`);
}

/**
 * Lower-case a username and check it; throws INVALID_USERNAME naming the rule.
 * @param {string} name
 */
export function normalizeUsername(name) {
  if (typeof name !== 'string') throw invalid(String(name));
  const stripped = name.replace(STRIP, '');
  const candidate = ASCII.test(stripped) ? stripped.toLowerCase() : stripped;
  if (!USERNAME_PATTERN.test(candidate)) throw invalid(name);
  return candidate;
}

/**
 * Accept only an already-normalised username (what travels on the wire).
 * @param {string} name
 */
export function checkUsername(name) {
  if (typeof name !== 'string' || !USERNAME_PATTERN.test(name)) throw invalid(String(name));
  return name;
}
