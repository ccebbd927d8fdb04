// @ts-check
/**
 * The safety-number view: twelve groups of five digits and the QR code. Used by the
 * safety pane and by the identity-change warning.
 */

import { el } from './dom.js';
import { drawQr } from './qr.js';

/**
 * @param {HTMLElement} container emptied and refilled
 * @param {{digits: string, groups?: string[], qrPayload: Uint8Array}} number
 * @param {string} peer
 */
export function renderSafetyNumber(container, number, peer) {
  const groups = number.groups ?? splitGroups(number.digits);
  const digits = el(
    'div',
    { class: 'digits', attrs: { role: 'group', 'aria-label': `Safety number with ${peer}` } },
    groups.map((group) => el('span', { class: 'group', text: group })),
  );
  const canvas = el('canvas', {
    class: 'qr',
    attrs: { role: 'img', 'aria-label': `QR code of the safety number with ${peer}` },
  });
  container.replaceChildren(digits, canvas);
  container.dataset.digits = number.digits;
  void drawQr(canvas, number.qrPayload);
}

/** @param {string} digits */
function splitGroups(digits) {
  const out = [];
  for (let i = 0; i < digits.length; i += 5) out.push(digits.slice(i, i + 5));
  return out;
}
