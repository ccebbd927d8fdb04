// @ts-check
/**
 * "Link this browser to an account you use elsewhere" (the log-in page): the link code as a
 * QR code and as copyable text, a countdown while a device of the account is asked to
 * approve it (long polls of 25 s, for up to 10 minutes), then this browser's keys are made
 * and registered, and the chat opens (history, if the other device sends some, arrives by
 * itself).
 */

import { utf8Encode } from '../protocol/encoding.js';
import { byId, listen, show } from './dom.js';
import { describeError } from './errors.js';
import { drawQr } from './qr.js';

/**
 * @param {any} client a WebClient that holds no device
 * @param {() => void} done called once linked
 */
export function linkSection(client, done) {
  const form = /** @type {HTMLFormElement} */ (byId('link-form'));
  const offer = byId('link-offer');
  const code = /** @type {HTMLInputElement} */ (byId('link-code'));
  const time = /** @type {HTMLProgressElement} */ (byId('link-time'));
  const status = byId('link-status');
  const error = byId('link-error');
  const again = byId('link-again');
  const keygen = byId('link-keygen');
  const bar = /** @type {HTMLProgressElement} */ (byId('link-keygen-bar'));
  const label = byId('link-keygen-label');
  /** @type {AbortController | null} */
  let controller = null;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  let ticker;

  listen(client, 'progress', (/** @type {{done: number, total: number}} */ p) => {
    show(offer, false);
    show(keygen, true);
    bar.max = p.total || 1;
    bar.value = p.done;
    label.textContent = `Approved. Generating this browser's keys… ${p.done} of ${p.total}`;
  });

  /** @param {number} expiresAt */
  function countdown(expiresAt) {
    clearInterval(ticker);
    const tick = () => {
      const left = Math.max(0, expiresAt - Date.now());
      time.value = left / 1000;
      const minutes = Math.floor(left / 60000);
      const seconds = String(Math.floor((left % 60000) / 1000)).padStart(2, '0');
      status.textContent = left
        ? `Waiting for approval from your other device… ${minutes}:${seconds} left`
        : 'The code has expired.';
      if (!left) clearInterval(ticker);
    };
    tick();
    ticker = setInterval(tick, 1000);
  }

  async function start() {
    error.textContent = '';
    show(again, false);
    controller?.abort();
    const mine = new AbortController();
    controller = mine;
    setBusy(true);
    try {
      const link = await client.beginLink();
      code.value = link.text;
      byId('link-fingerprint').textContent = link.fingerprint;
      void drawQr(/** @type {HTMLCanvasElement} */ (byId('link-qr')), utf8Encode(link.text), 240);
      time.max = Math.max(1, (link.expiresAt - Date.now()) / 1000);
      show(offer, true);
      offer.scrollIntoView({ block: 'start' }); // the code, whole, on a phone's screen
      countdown(link.expiresAt);
      offer.dataset.state = 'waiting';
      const deviceName = /** @type {HTMLInputElement} */ (byId('link-device-name')).value.trim() || 'Web browser';
      const linked = await client.completeLink({ deviceName, signal: mine.signal });
      clearInterval(ticker);
      label.textContent = `Linked as ${linked.username}. Opening your chats…`;
      done();
    } catch (failure) {
      if (controller !== mine) return; // replaced by a newer attempt
      clearInterval(ticker);
      const code = /** @type {any} */ (failure)?.code;
      show(keygen, false);
      if (code === 'closed') {
        show(offer, false);
      } else {
        offer.dataset.state = 'failed';
        status.textContent = code === 'link_expired' ? 'The code has expired.' : 'Not linked.';
        error.textContent = describeError(failure);
        show(again, true);
      }
      setBusy(false);
    }
  }

  /** @param {boolean} busy */
  function setBusy(busy) {
    form.setAttribute('aria-busy', String(busy));
    for (const control of form.elements) {
      if (control instanceof HTMLInputElement || control instanceof HTMLButtonElement) control.disabled = busy;
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void start();
  });
  again.addEventListener('click', () => void start());
  byId('link-cancel').addEventListener('click', () => {
    controller?.abort();
    controller = null;
    client.cancelLink();
    clearInterval(ticker);
    show(offer, false);
    setBusy(false);
  });
  byId('link-copy').addEventListener('click', async () => {
    code.select();
    try {
      await navigator.clipboard.writeText(code.value);
      status.textContent = 'Link code copied. Paste it on your other device.';
    } catch {
      status.textContent = 'Select the code and copy it.';
    }
  });
}
